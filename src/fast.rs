//! The interpreted path of the hot calls: plain `lua_CFunction`s, used instead of the FFI
//! wrappers when LuaJIT's JIT compiler is off (an interpreted FFI call costs ~60 ns more than a
//! C function call; a compiled one ~1 ns).
//!
//! `ts_ffi.base` picks the path when it is loaded (`jit.status()`): with the JIT on, the
//! public functions are the Lua/FFI wrappers; with it off, each is a C closure made by
//! `native.bind(name, lua_wrapper)`. The closure does the whole call itself when it can:
//! no arguments, the record box of the running coroutine's environment (`__ts_ffi_box`,
//! stored there by `base.get_ctx` next to the FFI record, checked to be ts_ffi's by size and
//! magic), the record alive, the TS* call succeeding. Anything else (the first call of
//! a transaction, arguments, a released context, `nil, err` conditions, errors) goes to the Lua
//! wrapper with the same arguments, which answers exactly as in JIT mode.
//!
//! Upvalues of a bound closure: 1 the Lua wrapper, 2 the key `__ts_ffi_box`, 3 and 4 the
//! strings "inet" and "inet6" (address families, answered by next_hop_addr), 5 tcpinfo's
//! table builder (tcpinfo closures only). A script reaches them only through the debug
//! library; replaced, the closures answer through the wrapper or raise a Lua error.

use crate::codes::Code;
use crate::ctx::{CtxRec, txn_of};
use crate::sys::TSHttpTxn;
use mlua::ffi as lua;
use std::ffi::CStr;
use std::os::raw::c_int;
use std::sync::Arc;

/// Where `base.get_ctx` keeps the box in the transaction's environment (interpreted mode).
pub const BOX_KEY: &CStr = c"__ts_ffi_box";
const BOX_MT: &CStr = c"ts_ffi.ctx_box";
const BOX_MAGIC: u64 = 0x7473_5f66_6669_6278; // "ts_ffibx"

/// The payload of a box: one reference to a record, owned by the box (released by `__gc`).
#[repr(C)]
struct CtxBox {
    magic: u64,
    rec: *const CtxRec,
}

/// A hot call's answer, pushed as Lua values.
pub enum Val {
    Num(f64),
    Bool(bool),
    /// A string ATS allocated: pushed, then freed with TSfree.
    TsStr(*mut std::os::raw::c_char, usize),
    /// `ip, port, family` (`"inet"` / `"inet6"`).
    Addr(std::net::SocketAddr),
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Num(v as f64)
    }
}

impl From<c_int> for Val {
    fn from(v: c_int) -> Self {
        Val::Num(v.into())
    }
}

impl From<bool> for Val {
    fn from(v: bool) -> Self {
        Val::Bool(v)
    }
}

/// Pushes the box metatable (made once per Lua VM).
///
/// SAFETY: `l` is a running Lua state with room on its stack.
unsafe fn push_box_mt(l: *mut lua::lua_State) {
    unsafe {
        if lua::luaL_newmetatable(l, BOX_MT.as_ptr()) != 0 {
            lua::lua_pushcfunction(l, box_gc);
            lua::lua_setfield(l, -2, c"__gc".as_ptr());
            lua::lua_pushboolean(l, 0);
            lua::lua_setfield(l, -2, c"__metatable".as_ptr());
        }
    }
}

unsafe extern "C-unwind" fn box_gc(l: *mut lua::lua_State) -> c_int {
    unsafe {
        if lua::lua_type(l, 1) == lua::LUA_TUSERDATA
            && lua::lua_objlen(l, 1) == std::mem::size_of::<CtxBox>()
        {
            let b = lua::lua_touserdata(l, 1) as *mut CtxBox;
            if !b.is_null() && (*b).magic == BOX_MAGIC {
                let rec = std::mem::replace(&mut (*b).rec, std::ptr::null());
                if !rec.is_null() {
                    // SAFETY: the box's own reference, taken in `push_box`, released once.
                    drop(Arc::from_raw(rec));
                }
            }
        }
    }
    0
}

/// Pushes a new box holding its own reference to `rec` (called by `ctx::lua_ctx_acquire`).
///
/// SAFETY: `rec` is a live record from `ctx::acquire` (one reference held by the caller).
pub unsafe fn push_box(l: *mut lua::lua_State, rec: *const CtxRec) {
    unsafe {
        let b = lua::lua_newuserdata(l, std::mem::size_of::<CtxBox>()) as *mut CtxBox;
        b.write(CtxBox { magic: 0, rec: std::ptr::null() });
        push_box_mt(l);
        lua::lua_setmetatable(l, -2);
        Arc::increment_strong_count(rec);
        b.write(CtxBox { magic: BOX_MAGIC, rec });
    }
}

/// The record of the running coroutine's box, if it has a genuine one (a full userdata of a
/// box's size starting with the magic, which Lua code cannot write). It leaves the box (or
/// whatever the environment holds) on top of the call's arguments: the fast answer is pushed
/// above it (a C function returns its top values) and the fallback (`call_wrapper`) resets
/// the stack to the arguments first. Raises nothing.
///
/// SAFETY: `l` is running a closure made by `bind`, with room for one more value.
#[inline(always)]
pub(crate) unsafe fn boxed_rec(l: *mut lua::lua_State) -> *const CtxRec {
    unsafe {
        lua::lua_pushvalue(l, lua::lua_upvalueindex(2));
        lua::lua_rawget_(l, lua::LUA_GLOBALSINDEX);
        // NULL for anything but userdata; a light userdata's length is 0.
        let b = lua::lua_touserdata(l, -1) as *const CtxBox;
        if !b.is_null()
            && lua::lua_objlen(l, -1) == std::mem::size_of::<CtxBox>()
            && (*b).magic == BOX_MAGIC
        {
            (*b).rec
        } else {
            std::ptr::null()
        }
    }
}

/// The Lua wrapper's answer, with the call's own `nargs` arguments (without the box lookup).
/// No Rust value with a destructor is live in the callers: a Lua error raised by the wrapper
/// unwinds through their `C-unwind` frames as LuaJIT's own (DWARF) exception.
///
/// SAFETY: `l` is running a closure made by `bind`, which had `nargs` arguments.
#[inline(never)]
pub(crate) unsafe fn call_wrapper(l: *mut lua::lua_State, nargs: c_int) -> c_int {
    unsafe {
        lua::lua_settop(l, nargs);
        lua::lua_pushvalue(l, lua::lua_upvalueindex(1));
        lua::lua_insert(l, 1);
        lua::lua_call(l, nargs, lua::LUA_MULTRET);
        lua::lua_gettop(l)
    }
}

/// The body of every bound closure: the fast answer, or the Lua wrapper's.
///
/// SAFETY: `l` is running a closure made by `bind`.
#[inline(always)]
pub unsafe fn run<F: Fn(TSHttpTxn) -> Result<Val, Code>>(l: *mut lua::lua_State, core: F) -> c_int {
    let nargs = unsafe { lua::lua_gettop(l) };
    let fast = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
        if nargs != 0 {
            return None;
        }
        core(txn_of(boxed_rec(l)).ok()?).ok()
    }));
    // Pushes below use lua_pushlstring_ (LuaJIT's own): mlua's lua_pushlstring also calls
    // lua_tolstring on the result, a measurable part of a ~50 ns call.
    unsafe {
        match fast {
            Ok(Some(Val::Num(v))) => {
                lua::lua_pushnumber(l, v);
                1
            }
            Ok(Some(Val::Bool(v))) => {
                lua::lua_pushboolean(l, v.into());
                1
            }
            Ok(Some(Val::TsStr(p, n))) => {
                lua::lua_pushlstring_(l, p, n);
                if let Ok(free) = crate::api::api().map(|a| &a._TSfree)
                    && let Ok(free) = free
                {
                    free(p.cast());
                }
                1
            }
            Ok(Some(Val::Addr(a))) => {
                let mut buf = [0u8; 64];
                // always fits: an address text is at most 45 bytes
                let n = crate::addr::write_text(a.ip(), &mut buf).unwrap_or(0);
                lua::lua_pushlstring_(l, buf.as_ptr() as *const std::os::raw::c_char, n);
                lua::lua_pushnumber(l, a.port().into());
                // the family names are upvalues 3 and 4: interning them per call costs more
                // than the rest of the call
                lua::lua_pushvalue(l, lua::lua_upvalueindex(if a.is_ipv4() { 3 } else { 4 }));
                3
            }
            _ => call_wrapper(l, nargs),
        }
    }
}

/// `fast_fn!(name, core)`: a `lua_CFunction` for `bind`, answering with `core(txn)`.
macro_rules! fast_fn {
    ($name:ident, $core:expr) => {
        pub unsafe extern "C-unwind" fn $name(l: *mut mlua::ffi::lua_State) -> std::os::raw::c_int {
            unsafe { $crate::fast::run(l, $core) }
        }
    };
}
pub(crate) use fast_fn;

/// The bindable functions, by the name `lua/ts_ffi/*.lua` passes to `base.fast`.
fn lookup(name: &[u8]) -> Option<lua::lua_CFunction> {
    Some(match name {
        b"txn_id" => crate::txn::fast_id,
        b"txn_client_fd" => crate::txn::fast_client_fd,
        b"txn_server_fd" => crate::txn::fast_server_fd,
        b"txn_is_aborted" => crate::txn::fast_is_aborted,
        b"txn_next_hop_addr" => crate::txn::fast_next_hop_addr,
        b"txn_remap_from_url" => crate::txn::fast_remap_from_url,
        b"txn_remap_to_url" => crate::txn::fast_remap_to_url,
        b"ssn_id" => crate::ssn::fast_id,
        b"tcpinfo_client" => crate::tcpinfo::fast_client,
        b"tcpinfo_server" => crate::tcpinfo::fast_server,
        _ => return None,
    })
}

/// Upvalue 5: tcpinfo's table builder (`tcpinfo::builder_source`) for the tcpinfo closures,
/// nil for the others (and if it could not be made: the closure then answers through the
/// wrapper).
///
/// SAFETY: `l` is a running Lua state with room for 2 more values.
unsafe fn push_builder(l: *mut lua::lua_State, name: &[u8]) {
    unsafe {
        if name.starts_with(b"tcpinfo_") {
            let src = crate::tcpinfo::builder_source();
            let chunk = c"=ts_ffi.tcpinfo builder";
            if lua::luaL_loadbuffer(l, src.as_ptr().cast(), src.len(), chunk.as_ptr()) == 0
                && lua::lua_pcall(l, 0, 1, 0) == 0
            {
                return;
            }
            lua::lua_pop(l, 1); // the error message
        }
        lua::lua_pushnil(l);
    }
}

/// `native.bind(name, lua_wrapper)` → the C closure, or `nil, "unknown"` for a name without a
/// fast function (the wrapper is then used as it is).
pub unsafe extern "C-unwind" fn lua_bind(l: *mut lua::lua_State) -> c_int {
    unsafe {
        let mut len = 0usize;
        let p = lua::lua_tolstring(l, 1, &mut len);
        let f = if p.is_null() || lua::lua_type(l, 2) != lua::LUA_TFUNCTION {
            None
        } else {
            lookup(std::slice::from_raw_parts(p as *const u8, len))
        };
        let Some(f) = f else {
            lua::lua_pushnil(l);
            lua::lua_pushstring(l, c"unknown".as_ptr());
            return 2;
        };
        lua::lua_pushvalue(l, 2);
        lua::lua_pushstring(l, BOX_KEY.as_ptr());
        lua::lua_pushstring(l, c"inet".as_ptr());
        lua::lua_pushstring(l, c"inet6".as_ptr());
        // `p` is arg 1's text, which stays on the stack (f is Some: p is not null)
        push_builder(l, std::slice::from_raw_parts(p as *const u8, len));
        lua::lua_pushcclosure(l, f, 5);
        1
    }
}
