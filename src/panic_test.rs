//! Panic triggers for the test build only (`cargo build --features panic-test`, see
//! `make panic-build`): never compiled into the shipped module (the rockspec builds without
//! features). They show that a Rust panic on each kind of entry point comes back to Lua as
//! an error and leaves the process running: a flat `extern "C"` function (through
//! `codes::guard`), a native function answered through `crate::native_fn`, and a bare mlua
//! callback (mlua's own catch, for functions that do not use the helper).

use crate::codes::{Code, guard};
use crate::ctx::CtxRec;
use mlua::{Lua, Result as LuaResult, Table};
use std::os::raw::c_int;

fn boom() -> Result<i64, Code> {
    let v: Vec<i64> = Vec::new();
    // An out-of-bounds index: the kind of bug the rules forbid, made on purpose.
    Ok(v[std::hint::black_box(3)])
}

/// A flat function whose body panics.
#[unsafe(no_mangle)]
pub extern "C" fn ts_ffi_test_panic(_rec: *const CtxRec, out: *mut i64) -> c_int {
    guard(|| crate::txn::put(out, boom()?))
}

pub fn register(lua: &Lua, m: &Table) -> LuaResult<()> {
    m.set("test_panic_native", crate::native_fn(lua, boom)?)?;
    m.set("test_panic_callback", lua.create_function(|_, ()| boom().map_err(|_| mlua::Error::runtime("unreachable")))?)?;
    Ok(())
}
