//! The ATS C API, resolved once per process from the running executable.
//!
//! traffic_server exports the TS* functions; LuaJIT loads C modules with RTLD_NOW, so ts_ffi.so
//! must not leave them undefined. They are looked up with dlsym on the process's global scope
//! instead: inside traffic_server they are there, in plain luajit they are not (every call then
//! answers `Code::NotInAts`), and under busted the test double provides them.

use crate::codes::Code;
use crate::sys::TsApi;
use std::sync::OnceLock;

static API: OnceLock<Option<TsApi>> = OnceLock::new();

/// The resolved API, or `NotInAts` when this process is not traffic_server.
pub fn api() -> Result<&'static TsApi, Code> {
    API.get_or_init(resolve).as_ref().ok_or(Code::NotInAts)
}

fn resolve() -> Option<TsApi> {
    let this = libloading::os::unix::Library::this();
    // SAFETY: resolving symbols runs no code; each field is checked before every call.
    let api = unsafe { TsApi::from_library(this) }.ok()?;
    // Every ATS has this one; without it the process is not traffic_server.
    api.TSTrafficServerVersionGet.is_ok().then_some(api)
}

thread_local! {
    /// The TS* function this thread last found missing, for the error message
    /// (`native.last_missing()`, read by `base.lua` right after the failed call).
    static LAST_MISSING: std::cell::Cell<&'static str> = const { std::cell::Cell::new("") };
}

/// Notes `name` as missing from this traffic_server and returns `MissingFn`.
pub fn missing(name: &'static str) -> Code {
    LAST_MISSING.with(|c| c.set(name));
    Code::MissingFn
}

/// The TS* function this thread last found missing ("" if none).
pub fn last_missing() -> &'static str {
    LAST_MISSING.with(|c| c.get())
}

/// `ts_fn!(TSHttpTxnIdGet)`: the resolved function pointer, or an early `Err` with
/// `NotInAts` / `MissingFn` (naming the function). Use it inside functions returning
/// `Result<_, Code>`.
macro_rules! ts_fn {
    ($name:ident) => {
        *$crate::api::api()?
            .$name
            .as_ref()
            .map_err(|_| $crate::api::missing(stringify!($name)))?
    };
}
pub(crate) use ts_fn;
