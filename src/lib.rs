//! ts_ffi: safe, fast access to the Apache Traffic Server C API for ATS Lua (tslua.so) scripts.
//!
//! `require "ts_ffi"` opens this native module; scripts use the Lua wrappers
//! (`ts_ffi.info`, `ts_ffi.txn`, `ts_ffi.ssn`) that call it. The layout:
//! - `api`: the TS* functions, resolved from the running process.
//! - `ctx`: ts_lua's transaction context, checked on every use (the only unsafe layouts).
//! - `codes`: return codes of the flat functions and the panic guard.
//! - `addr`: socket addresses between text and `sockaddr`.
//! - one file per ATS area (`info`, `txn`, `ssn`, `dns`, `tcpinfo`, `geoip`, `transform`
//!   with `body`, ts_ffi's own transform engine), mirrored by `lua/ts_ffi/<area>.lua`.

// Every entry point catches panics (codes::guard, native_fn, mlua's callbacks); with
// panic=abort they would take traffic_server down instead.
#[cfg(not(panic = "unwind"))]
compile_error!("ts_ffi must be built with panic=unwind: panics are caught at the FFI boundary");

mod addr;
mod api;
mod body;
mod codes;
mod ctx;
mod dns;
mod fast;
mod info;
mod ssn;
mod sys;
mod transform;
mod txn;
#[cfg(feature = "panic-test")]
mod panic_test;
mod tcpinfo;
mod geoip;
mod msc;
mod waf;

use codes::Code;
use mlua::{IntoLuaMulti, Lua, MultiValue, Result as LuaResult, Table, Value};
use std::ffi::{CStr, CString};

/// A native function's answer: its values, or `nil, code_name` for the Lua wrapper to turn
/// into an error or `nil, err`.
pub(crate) fn reply<T: IntoLuaMulti>(lua: &Lua, r: Result<T, Code>) -> LuaResult<MultiValue> {
    match r {
        Ok(v) => v.into_lua_multi(lua),
        Err(code) => (Value::Nil, code.name()).into_lua_multi(lua),
    }
}

/// A native function without arguments answering `f()` through `reply`; a panic in `f` is
/// caught here and answered as `nil, "internal"` (the wrapper raises it with its name).
pub(crate) fn native_fn<T, F>(lua: &Lua, f: F) -> LuaResult<mlua::Function>
where
    T: IntoLuaMulti,
    F: Fn() -> Result<T, Code> + Send + 'static,
{
    lua.create_function(move |lua, ()| {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&f));
        reply(lua, r.unwrap_or(Err(Code::Internal)))
    })
}

pub(crate) fn cstr_name(code: Code) -> CString {
    CString::new(code.name()).unwrap_or_default()
}

/// `reply` for raw lua_CFunctions: pushes a number, or `nil, code_name`; returns the count.
///
/// SAFETY: `l` is the running Lua state.
pub(crate) unsafe fn push_reply(l: *mut mlua::ffi::lua_State, r: Result<f64, Code>) -> std::os::raw::c_int {
    unsafe {
        match r {
            Ok(n) => {
                mlua::ffi::lua_pushnumber(l, n);
                1
            }
            Err(code) => {
                mlua::ffi::lua_pushnil(l);
                mlua::ffi::lua_pushstring(l, cstr_name(code).as_ptr());
                2
            }
        }
    }
}

/// The path of this shared object (for `ffi.load`), pinned in memory: ts_lua's contexts keep
/// pointers to `ctx`'s release callback, so the code must outlive any Lua VM that loaded it.
fn self_path_pinned() -> Option<String> {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let addr = ctx::ts_ffi_ctx_release as *const libc::c_void;
    // SAFETY: dladdr only reads the loader's tables.
    if unsafe { libc::dladdr(addr, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated path owned by the loader.
    let path = unsafe { CStr::from_ptr(info.dli_fname) };
    // SAFETY: RTLD_NOLOAD only takes another reference to the already loaded object.
    unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE) };
    Some(path.to_string_lossy().into_owned())
}

/// `native.ts_addr(name)`: the address of a TS* (or _TS*, as _TSfree) function in this process
/// (light userdata), or nil. For the JIT path of the cheapest calls, which call it through a typed FFI function
/// pointer (no global `ffi.cdef` of TS* names that a script's own cdefs could clash with).
fn ts_addr(name: &[u8]) -> LuaResult<Value> {
    if !(name.starts_with(b"TS") || name.starts_with(b"_TS")) || name.contains(&0) {
        return Ok(Value::Nil);
    }
    let Ok(cname) = CString::new(name) else { return Ok(Value::Nil) };
    // SAFETY: dlsym only reads the loader's tables.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, cname.as_ptr()) };
    Ok(if p.is_null() { Value::Nil } else { Value::LightUserData(mlua::LightUserData(p)) })
}

#[mlua::lua_module(name = "ts_ffi")]
fn ts_ffi(lua: &Lua) -> LuaResult<Table> {
    let m = lua.create_table()?;
    m.set("path", self_path_pinned())?;
    // SAFETY: a plain lua_CFunction that never raises.
    m.set("ctx_acquire", unsafe { lua.create_c_function(ctx::lua_ctx_acquire)? })?;
    let names = lua.create_table()?;
    for code in codes::ALL {
        names.raw_set(code.as_int(), code.name())?;
    }
    m.set("code_names", names)?;
    // SAFETY: as ctx_acquire.
    m.set("transform_watermark", unsafe { lua.create_c_function(transform::lua_transform_watermark)? })?;
    m.set("max_watermark", transform::MAX_WATERMARK)?;
    // SAFETY: as ctx_acquire.
    m.set("transform_add", unsafe { lua.create_c_function(body::lua_transform_add)? })?;
    m.set("max_min_chunk", body::MAX_MIN_CHUNK)?;
    m.set("tcpinfo_fields", tcpinfo::fields_table(lua)?)?;
    m.set("assume_env", ctx::ASSUME_ENV)?;
    // SAFETY: a plain lua_CFunction; raises only memory errors.
    m.set("bind", unsafe { lua.create_c_function(fast::lua_bind)? })?;
    m.set("box_key", fast::BOX_KEY.to_str().unwrap_or_default())?;
    info::register(lua, &m)?;
    m.set("ts_addr", lua.create_function(|_, name: mlua::LuaString| ts_addr(&name.as_bytes()))?)?;
    m.set("ctx_watched", lua.create_function(|_, ()| Ok(ctx::watched()))?)?;
    m.set("last_missing", lua.create_function(|_, ()| Ok(api::last_missing()))?)?;
    #[cfg(feature = "panic-test")]
    panic_test::register(lua, &m)?;
    // SAFETY: a plain lua_CFunction that never raises.
    m.set("dns_lookup", unsafe { lua.create_c_function(dns::lua_dns_lookup)? })?;
    geoip::register(lua, &m)?;
    waf::register(lua, &m)?;
    Ok(m)
}
