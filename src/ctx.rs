//! The transaction context: the only place that knows ts_lua's private structures.
//!
//! ts_lua keeps its per-transaction `ts_lua_http_ctx` as the light userdata `__ts_http_ctx`,
//! raw-set in the globals table (environment) of the coroutine it creates for the
//! transaction. Threads made from that coroutine (transforms, intercepts, the script's own
//! coroutines) share the table. Two hazards shape this module:
//!
//! * The context can dangle: ts_lua frees it after `do_remap` when the script registered no
//!   `ts.hook`, while a transform still sees the pointer, and the memory is then reused by
//!   other transactions. So a context is trusted only after a check that does not rely on it
//!   being alive (see `validate`), and from then on through a `CtxRec` that ts_lua itself
//!   marks dead when it releases the context (an item on the context's async chain, whose
//!   cleanup ts_lua runs in `ts_lua_release_cont_info`, before freeing it).
//! * Layouts are private: they are used only when the running ATS is a version whose layout
//!   was measured (`layout_for`), or the operator explicitly opts in.
//!
//! All Lua code runs under ts_lua's per-VM mutex, and ts_lua releases contexts under the same
//! mutex, so a record's `alive` flag cannot change between a check and the call it guards.

use crate::api::{api, ts_fn};
use crate::codes::Code;
use crate::sys::TSHttpTxn;
use mlua::ffi as lua;
use std::ffi::CStr;
use std::os::raw::{c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Byte offsets into ts_lua's private structs for one family of ATS versions (x86-64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// `ts_lua_http_ctx.cinfo.routine.lua`: the transaction's coroutine.
    pub routine_lua: usize,
    /// `ts_lua_http_ctx.cinfo.routine.ref`: its reference in the registry.
    pub routine_ref: usize,
    /// `ts_lua_http_ctx.cinfo.async_chain`: head of the async item list.
    pub async_chain: usize,
    /// `ts_lua_http_ctx.txnp`.
    pub txnp: usize,
    /// `sizeof(ts_lua_async_item)`; fields next, cinfo, contp, data, cleanup, deleted.
    pub async_item_size: usize,
}

/// ts_lua in ATS 9.2.x (plugins/lua/ts_lua_common.h, ts_lua_coroutine.h), measured on 9.2.9.
pub const LAYOUT_9_2: Layout = Layout {
    routine_lua: 8,
    routine_ref: 16,
    async_chain: 40,
    txnp: 48,
    async_item_size: 48,
};

/// Environment variable naming an untested `major.minor` the operator allows ts_ffi to treat
/// as 9.2 (e.g. `TS_FFI_ASSUME_ATS=9.1`). Read by traffic_server's process.
pub const ASSUME_ENV: &str = "TS_FFI_ASSUME_ATS";

/// The layout for a running ATS version, if known; `assume` is the operator's opt-in.
pub fn layout_for(major: i32, minor: i32, assume: Option<&str>) -> Option<Layout> {
    if (major, minor) == (9, 2) {
        return Some(LAYOUT_9_2);
    }
    let wanted = format!("{major}.{minor}");
    (assume.map(str::trim) == Some(wanted.as_str())).then_some(LAYOUT_9_2)
}

/// The layout of the running traffic_server, or why there is none.
pub fn layout() -> Result<Layout, Code> {
    let major = ts_fn!(TSTrafficServerVersionGetMajor);
    let minor = ts_fn!(TSTrafficServerVersionGetMinor);
    // SAFETY: plain getters without arguments.
    let (major, minor) = unsafe { (major(), minor()) };
    // SAFETY: getenv's result is read at once; nothing in ts_ffi calls setenv.
    let assume = unsafe {
        let p = libc::getenv(c"TS_FFI_ASSUME_ATS".as_ptr());
        (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
    };
    layout_for(major, minor, assume.as_deref()).ok_or(Code::UnsupportedVersion)
}

/// ts_ffi's record of one live ts_lua context. Lua holds it (as FFI cdata, released by
/// `ts_ffi_ctx_release` when collected), and so does the async item on the context's chain
/// until ts_lua releases the context.
pub struct CtxRec {
    alive: AtomicBool,
    ctx: *mut u8,
    layout: Layout,
}

// SAFETY: `ctx` is only dereferenced while `alive`, under ts_lua's VM mutex (module docs).
unsafe impl Send for CtxRec {}
unsafe impl Sync for CtxRec {}

impl CtxRec {
    /// The transaction handle, read afresh from the live context on every call.
    pub fn txn(&self) -> Result<TSHttpTxn, Code> {
        if !self.alive.load(Ordering::Acquire) {
            return Err(Code::Gone);
        }
        // SAFETY: alive means ts_lua has not released the context (module docs).
        let txn = unsafe { read_ptr(self.ctx, self.layout.txnp) } as TSHttpTxn;
        if txn.is_null() { Err(Code::NoTxn) } else { Ok(txn) }
    }
}

/// The transaction of the record a Lua wrapper passes to a flat function.
pub fn txn_of(rec: *const CtxRec) -> Result<TSHttpTxn, Code> {
    // SAFETY: records come only from `ts_ffi_ctx_acquire` and stay allocated while Lua
    // holds them (the cdata's finalizer releases Lua's reference).
    match unsafe { rec.as_ref() } {
        Some(rec) => rec.txn(),
        None => Err(Code::NoTxn),
    }
}

unsafe fn read_ptr(base: *const u8, offset: usize) -> *mut c_void {
    unsafe { std::ptr::read_unaligned(base.add(offset) as *const *mut c_void) }
}

/// Reads `N` bytes at `addr` without faulting if the memory is gone: the first look at a
/// context may find one that ts_lua already freed. process_vm_readv answers EFAULT instead
/// of crashing; where the kernel forbids it (some seccomp profiles), fall back to a plain
/// read of heap memory that the allocator keeps mapped for small blocks.
fn probe<const N: usize>(addr: usize) -> Option<[u8; N]> {
    use std::sync::atomic::AtomicU8;
    static MODE: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 syscall works, 2 plain reads
    let mut buf = [0u8; N];
    if MODE.load(Ordering::Relaxed) != 2 {
        let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: N };
        let remote = libc::iovec { iov_base: addr as *mut c_void, iov_len: N };
        // SAFETY: the kernel checks the remote range; `buf` is ours.
        let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        if n == N as isize {
            MODE.store(1, Ordering::Relaxed);
            return Some(buf);
        }
        let err = std::io::Error::last_os_error().raw_os_error();
        if err == Some(libc::EFAULT) || MODE.load(Ordering::Relaxed) == 1 {
            return None;
        }
        MODE.store(2, Ordering::Relaxed);
    }
    // SAFETY: see the function comment.
    unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), N) };
    Some(buf)
}

/// Checks that `ctx`, found in the environment table at stack index `env` of `l`, is a live
/// ts_lua context owned by that environment, without trusting its memory: the registry slot
/// it names must hold the coroutine it names, and that coroutine's environment must be `env`.
/// A freed context fails: ts_lua unrefs the coroutine before freeing, and the environment we
/// hold is alive, so no other coroutine can have it. A reused one names another coroutine.
///
/// SAFETY: `l` is the running Lua state and `env` a valid absolute index on its stack.
unsafe fn validate(l: *mut lua::lua_State, env: c_int, ctx: *mut u8, layout: Layout) -> bool {
    let Some(words) = probe::<16>(ctx as usize + layout.routine_lua) else {
        return false;
    };
    let (lua_bytes, ref_bytes) = words.split_at(8);
    let co = usize::from_ne_bytes(lua_bytes.try_into().unwrap_or([0; 8]));
    let reg_ref = i32::from_ne_bytes(ref_bytes[..4].try_into().unwrap_or([0; 4]));
    if co == 0 || reg_ref <= 0 {
        return false;
    }
    unsafe {
        lua::lua_rawgeti(l, lua::LUA_REGISTRYINDEX, reg_ref.into());
        let ok = lua::lua_type(l, -1) == lua::LUA_TTHREAD
            && lua::lua_tothread(l, -1) as usize == co
            && {
                lua::lua_getfenv(l, -1);
                let same = lua::lua_rawequal(l, -1, env) != 0;
                lua::lua_pop(l, 1);
                same
            };
        lua::lua_pop(l, 1);
        ok
    }
}

/// ts_lua's `ts_lua_async_item` (9.2 layout), allocated with TSmalloc because ts_lua frees it.
#[repr(C)]
struct AsyncItem {
    next: *mut AsyncItem,
    cinfo: *mut c_void,
    contp: *mut c_void,
    data: *mut c_void,
    cleanup: Option<unsafe extern "C" fn(*mut AsyncItem) -> c_int>,
    deleted: u32,
}

const _: () = assert!(std::mem::size_of::<AsyncItem>() == LAYOUT_9_2.async_item_size);

/// Called by ts_lua while it releases the context (VM mutex held): the record dies first.
unsafe extern "C" fn on_ctx_release(item: *mut AsyncItem) -> c_int {
    let result = std::panic::catch_unwind(|| {
        // SAFETY: ts_lua passes the item we linked; `data` is the record's reference we gave it.
        unsafe {
            if let Some(item) = item.as_mut() {
                let rec = std::mem::replace(&mut item.data, std::ptr::null_mut());
                if !rec.is_null() {
                    let rec = Arc::from_raw(rec as *const CtxRec);
                    rec.alive.store(false, Ordering::Release);
                }
            }
        }
    });
    if result.is_ok() { 0 } else { -1 }
}

/// Links `rec` into the context's async chain so ts_lua tells us when it releases it.
///
/// SAFETY: `ctx` was just validated as live and the VM mutex is held.
unsafe fn watch_release(ctx: *mut u8, layout: Layout, rec: &Arc<CtxRec>) -> Result<(), Code> {
    let malloc = ts_fn!(_TSmalloc);
    unsafe {
        let item = malloc(layout.async_item_size, c"ts_ffi".as_ptr()) as *mut AsyncItem;
        if item.is_null() {
            return Err(Code::Internal);
        }
        let head = ctx.add(layout.async_chain) as *mut *mut AsyncItem;
        item.write(AsyncItem {
            next: *head,
            cinfo: ctx.cast(),
            contp: std::ptr::null_mut(),
            data: Arc::into_raw(Arc::clone(rec)) as *mut c_void,
            cleanup: Some(on_ctx_release),
            deleted: 0,
        });
        *head = item;
    }
    Ok(())
}

/// Finds and checks the running transaction's context; on success a new record whose one
/// reference is the caller's.
///
/// SAFETY: `l` is the running Lua state (a lua_CFunction's argument).
unsafe fn acquire(l: *mut lua::lua_State) -> Result<*const CtxRec, Code> {
    api()?;
    let layout = layout()?;
    unsafe {
        lua::lua_pushvalue(l, lua::LUA_GLOBALSINDEX);
        let env = lua::lua_gettop(l);
        lua::lua_pushstring(l, c"__ts_http_ctx".as_ptr());
        lua::lua_rawget(l, env);
        let ctx = if lua::lua_type(l, -1) == lua::LUA_TLIGHTUSERDATA {
            lua::lua_touserdata(l, -1) as *mut u8
        } else {
            std::ptr::null_mut()
        };
        lua::lua_pop(l, 1);
        let live = !ctx.is_null() && validate(l, env, ctx, layout);
        lua::lua_pop(l, 1);
        if ctx.is_null() {
            return Err(Code::NoTxn);
        }
        if !live {
            return Err(Code::Gone);
        }
        let rec = Arc::new(CtxRec { alive: AtomicBool::new(true), ctx, layout });
        watch_release(ctx, layout, &rec)?;
        Ok(Arc::into_raw(rec))
    }
}

/// `native.ctx_acquire()` → light userdata record (one reference, for the FFI cdata), box
/// (its own reference, for the interpreted path: `fast.rs`) | `nil, code`. Raises nothing but
/// memory errors: errors are raised by the Lua wrapper, with the public function's name.
pub unsafe extern "C-unwind" fn lua_ctx_acquire(l: *mut lua::lua_State) -> c_int {
    let result = std::panic::catch_unwind(|| unsafe { acquire(l) })
        .unwrap_or(Err(Code::Internal));
    unsafe {
        match result {
            Ok(rec) => {
                lua::lua_pushlightuserdata(l, rec as *mut c_void);
                crate::fast::push_box(l, rec);
                2
            }
            Err(code) => {
                lua::lua_pushnil(l);
                lua::lua_pushstring(l, crate::cstr_name(code).as_ptr());
                2
            }
        }
    }
}

/// Releases Lua's reference to a record (the FFI cdata's finalizer).
#[unsafe(no_mangle)]
pub extern "C" fn ts_ffi_ctx_release(rec: *const CtxRec) {
    if !rec.is_null() {
        // SAFETY: Lua's one reference, handed out by `acquire`, released once by ffi.gc.
        drop(unsafe { Arc::from_raw(rec) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_9_2_is_known() {
        assert_eq!(layout_for(9, 2, None), Some(LAYOUT_9_2));
        assert_eq!(layout_for(10, 0, None), None);
        assert_eq!(layout_for(9, 1, None), None);
        assert_eq!(layout_for(8, 1, Some("9.2")), None);
    }

    #[test]
    fn opt_in_names_the_exact_version() {
        assert_eq!(layout_for(10, 0, Some("10.0")), Some(LAYOUT_9_2));
        assert_eq!(layout_for(10, 0, Some(" 10.0 ")), Some(LAYOUT_9_2));
        assert_eq!(layout_for(10, 1, Some("10.0")), None);
        assert_eq!(layout_for(10, 0, Some("10")), None);
        assert_eq!(layout_for(10, 0, Some("")), None);
    }

    #[test]
    fn async_item_matches_ts_lua() {
        assert_eq!(std::mem::size_of::<AsyncItem>(), LAYOUT_9_2.async_item_size);
        assert_eq!(std::mem::offset_of!(AsyncItem, data), 24);
        assert_eq!(std::mem::offset_of!(AsyncItem, cleanup), 32);
    }

    #[test]
    fn probe_reads_live_memory_and_refuses_unmapped() {
        let v: [u64; 2] = [7, 9];
        let got = probe::<16>(v.as_ptr() as usize).expect("readable");
        assert_eq!(u64::from_ne_bytes(got[..8].try_into().unwrap()), 7);
        // Page 0 is never mapped for user space.
        assert!(probe::<8>(16).is_none());
    }

    #[test]
    fn dead_record_is_gone_and_null_is_no_txn() {
        let mut fake = [0u8; 64];
        let rec = CtxRec { alive: AtomicBool::new(false), ctx: fake.as_mut_ptr(), layout: LAYOUT_9_2 };
        assert_eq!(rec.txn(), Err(Code::Gone));
        rec.alive.store(true, Ordering::Release);
        assert_eq!(rec.txn(), Err(Code::NoTxn));
        fake[48] = 1;
        let rec = CtxRec { alive: AtomicBool::new(true), ctx: fake.as_mut_ptr(), layout: LAYOUT_9_2 };
        assert_eq!(rec.txn().map(|t| t as usize), Ok(1));
        assert_eq!(txn_of(std::ptr::null()), Err(Code::NoTxn));
    }
}
