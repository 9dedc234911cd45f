//! `ts_ffi.transform`: the input watermark of the running ts_lua transform.

use crate::api::ts_fn;
use crate::codes::Code;
use crate::ctx::running_ts_lua_transform;
use mlua::ffi as lua;
use std::os::raw::c_int;

/// Largest watermark accepted (1 GiB): more only makes ATS buffer without bound.
pub const MAX_WATERMARK: i64 = 1 << 30;

/// Reads, and with `set` first sets, the watermark of the running transform's input buffer.
/// The value is also stored where ts_lua keeps its own setting, which ts_lua re-applies each
/// time it enters the handler (it would otherwise reset ours to its default, 0).
///
/// SAFETY: `l` is the running Lua state.
unsafe fn watermark(l: *mut lua::lua_State, set: Option<i64>) -> Result<i64, Code> {
    let (tctx, layout) = unsafe { running_ts_lua_transform(l)? };
    let write_vio = ts_fn!(TSVConnWriteVIOGet);
    let vio_buffer = ts_fn!(TSVIOBufferGet);
    let get = ts_fn!(TSIOBufferWaterMarkGet);
    let put = ts_fn!(TSIOBufferWaterMarkSet);
    unsafe {
        // SAFETY: the transform context is live (its handler is running) and its contp is the
        // transform VConn ts_lua created.
        let contp = std::ptr::read(tctx.add(layout.cont_contp) as *const crate::sys::TSVConn);
        let vio = write_vio(contp);
        let buffer = if vio.is_null() { std::ptr::null_mut() } else { vio_buffer(vio) };
        if buffer.is_null() {
            return Err(Code::Declined);
        }
        if let Some(bytes) = set {
            if !(0..=MAX_WATERMARK).contains(&bytes) {
                return Err(Code::BadArg);
            }
            put(buffer, bytes);
            std::ptr::write(tctx.add(layout.transform_watermark) as *mut i64, bytes);
        }
        Ok(get(buffer))
    }
}

/// `native.transform_watermark([bytes])` → watermark | `nil, code`. Never raises.
pub unsafe extern "C-unwind" fn lua_transform_watermark(l: *mut lua::lua_State) -> c_int {
    let set = unsafe {
        (lua::lua_type(l, 1) == lua::LUA_TNUMBER).then(|| lua::lua_tonumber(l, 1) as i64)
    };
    let result = std::panic::catch_unwind(|| unsafe { watermark(l, set) }).unwrap_or(Err(Code::Internal));
    unsafe { crate::push_reply(l, result.map(|n| n as f64)) }
}
