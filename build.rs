//! Build script: link the system's shared LuaJIT and generate the ATS bindings.
//!
//! LuaJIT: tslua.so loads libluajit-5.1.so.2 privately (RTLD_LOCAL) and traffic_server exports
//! no `lua_*` symbols, so ts_ffi.so must name the same shared library itself (DT_NEEDED); the
//! dynamic loader then reuses the copy tslua.so already loaded. Never a second, static LuaJIT.
//!
//! ATS: the TS* functions live in the traffic_server executable. The bindings are generated
//! from the installed `ts/ts.h` as a table of function pointers that `src/api.rs` fills at run
//! time from the running process, so the module also loads in plain luajit (and under busted).

use std::env;
use std::path::PathBuf;

/// Every TS* function ts_ffi may call. A function missing from the running ATS is reported by
/// name when a script needs it, never at load time.
const TS_FUNCTIONS: &[&str] = &[
    "TSTrafficServerVersionGet",
    "TSTrafficServerVersionGetMajor",
    "TSTrafficServerVersionGetMinor",
    "TSTrafficServerVersionGetPatch",
    "TSInstallDirGet",
    "TSConfigDirGet",
    "TSRuntimeDirGet",
    "TSPluginDirGet",
    "TSHttpTxnIdGet",
    "TSHttpTxnClientFdGet",
    "TSHttpTxnServerFdGet",
    "TSHttpTxnSsnGet",
    "TSHttpSsnIdGet",
    "TSHttpTxnAborted",
    "TSHttpTxnNextHopAddrGet",
    "TSHttpTxnOutgoingAddrSet",
    "TSRemapFromUrlGet",
    "TSRemapToUrlGet",
    "TSUrlStringGet",
    "TSIOBufferWaterMarkGet",
    "TSIOBufferWaterMarkSet",
    "TSVConnWriteVIOGet",
    "TSVIOBufferGet",
    "TSTransformCreate",
    "TSTransformOutputVConnGet",
    "TSHttpTxnHookAdd",
    "TSContDataGet",
    "TSContDataSet",
    "TSContDestroy",
    "TSContCreate",
    "TSContCall",
    "TSContMutexGet",
    "TSHttpTxnCachedRespGet",
    "TSHttpTxnCacheLookupStatusGet",
    "TSMutexLockTry",
    "TSVConnClosedGet",
    "TSVConnShutdown",
    "TSVConnWrite",
    "TSVConnClose",
    "TSVIOContGet",
    "TSVIOReaderGet",
    "TSVIONTodoGet",
    "TSVIONDoneGet",
    "TSVIONDoneSet",
    "TSVIONBytesSet",
    "TSVIOReenable",
    "TSIOBufferCreate",
    "TSIOBufferDestroy",
    "TSIOBufferReaderAlloc",
    "TSIOBufferReaderAvail",
    "TSIOBufferReaderConsume",
    "TSIOBufferReaderStart",
    "TSIOBufferBlockReadStart",
    "TSIOBufferBlockNext",
    "TSIOBufferWrite",
    "TSMutexLock",
    "TSMutexUnlock",
    "TSError",
    "TSHttpTxnServerRespGet",
    "TSHandleMLocRelease",
    "TSHttpTxnReenable",
    "_TSmalloc",
    "_TSfree",
    "TSMutexLock",
    "TSMutexUnlock",
    "TSContCreate",
    "TSContDestroy",
    "TSContDataSet",
    "TSContDataGet",
    "TSContCall",
    "TSActionCancel",
    "TSActionDone",
    "TSHostLookup",
    "TSHostLookupResultAddrGet",
    "TSNote",
    "TSContScheduleOnPool",
    "TSContScheduleOnThread",
    "TSEventThreadSelf",
    "TSMutexCreate",
    "TSHttpTxnStatusSet",
    "TSHttpTxnErrorBodySet",
    "_TSstrdup",
    "TSHttpTxnClientReqGet",
    "TSHttpTxnClientRespGet",
    "TSHttpTxnClientAddrGet",
    "TSHttpTxnIncomingAddrGet",
    "TSHttpHdrMethodGet",
    "TSHttpHdrVersionGet",
    "TSHttpHdrUrlGet",
    "TSHttpHdrStatusGet",
    "TSHttpHdrStatusSet",
    "TSHttpHdrReasonSet",
    "TSHttpHdrReasonLookup",
    "TSUrlPathGet",
    "TSUrlHttpParamsGet",
    "TSUrlHttpQueryGet",
    "TSMimeHdrFieldsCount",
    "TSMimeHdrFieldGet",
    "TSMimeHdrFieldNameGet",
    "TSMimeHdrFieldValueStringGet",
    "TSMimeHdrFieldFind",
    "TSMimeHdrFieldDestroy",
    "TSMimeHdrFieldCreateNamed",
    "TSMimeHdrFieldValueStringInsert",
    "TSMimeHdrFieldAppend",
    "TSTextLogObjectCreate",
    "TSTextLogObjectWrite",
    "TSHttpTxnConfigIntSet",
    "TSHttpTxnPostBufferReaderGet",
    "TSIOBufferReaderCopy",
    "TSIOBufferReaderFree",
    "TSMgmtIntGet",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");

    // Link libluajit-5.1.so (shared), found with pkg-config.
    pkg_config::Config::new()
        .atleast_version("2.1")
        .probe("luajit")
        .expect("LuaJIT development files not found (Debian: apt-get install libluajit-5.1-dev pkg-config)");

    let header = ["/usr/include/ts/ts.h", "/usr/local/include/ts/ts.h"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("ts/ts.h not found (Debian: apt-get install trafficserver-dev)");
    println!("cargo:rerun-if-changed={header}");

    let mut builder = bindgen::Builder::default()
        .header(*header)
        .dynamic_library_name("TsApi")
        .dynamic_link_require_all(false)
        .allowlist_type("TS.*")
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for f in TS_FUNCTIONS {
        builder = builder.allowlist_function(f);
    }
    let bindings = builder.generate().expect("bindgen failed on ts/ts.h");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("ts_bindings.rs");
    bindings.write_to_file(out).expect("cannot write ts_bindings.rs");
}
