//! `ts_ffi.info`: the running traffic_server's version and directories. No transaction
//! needed; valid anywhere inside traffic_server, including script load time.

use crate::api::{api, ts_fn};
use crate::codes::Code;
use crate::native_fn;
use mlua::{Lua, Result as LuaResult, Table};
use std::ffi::CStr;
use std::os::raw::c_char;

fn text(p: *const c_char) -> Result<String, Code> {
    if p.is_null() {
        return Err(Code::Declined);
    }
    // SAFETY: ATS returns NUL-terminated strings it owns for the process's life.
    Ok(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

fn version() -> Result<String, Code> {
    let f = ts_fn!(TSTrafficServerVersionGet);
    text(unsafe { f() })
}

fn version_number() -> Result<(i32, i32, i32), Code> {
    let (major, minor, patch) = (
        ts_fn!(TSTrafficServerVersionGetMajor),
        ts_fn!(TSTrafficServerVersionGetMinor),
        ts_fn!(TSTrafficServerVersionGetPatch),
    );
    // SAFETY: plain getters without arguments.
    Ok(unsafe { (major(), minor(), patch()) })
}

/// Adds the `info_*` functions to the native module table.
pub fn register(lua: &Lua, m: &Table) -> LuaResult<()> {
    m.set("info_version", native_fn(lua, version)?)?;
    m.set("info_version_number", native_fn(lua, version_number)?)?;
    let dirs: [(&str, fn() -> Result<String, Code>); 4] = [
        ("info_install_dir", || text(unsafe { ts_fn!(TSInstallDirGet)() })),
        ("info_config_dir", || text(unsafe { ts_fn!(TSConfigDirGet)() })),
        ("info_runtime_dir", || text(unsafe { ts_fn!(TSRuntimeDirGet)() })),
        ("info_plugin_dir", || text(unsafe { ts_fn!(TSPluginDirGet)() })),
    ];
    for (name, get) in dirs {
        m.set(name, native_fn(lua, get)?)?;
    }
    // Whether the TS* API is present at all (plain luajit: false).
    m.set("in_traffic_server", api().is_ok())?;
    Ok(())
}
