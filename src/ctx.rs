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
//! The same structure is ts_lua's continuation info for the coroutine it runs `ts.hook`
//! functions in: `Resumable` lets an asynchronous call (ts_ffi.dns) hang an item on its
//! async chain and resume the coroutine the way ts_lua's own `ts.sleep` does.
//!
//! All Lua code runs under ts_lua's per-VM mutex, and ts_lua releases contexts under the same
//! mutex, so a record's `alive` flag cannot change between a check and the call it guards.

use crate::api::{api, ts_fn};
use crate::codes::Code;
use crate::sys::{TSCont, TSEvent, TSHttpTxn, TSMutex};
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
    /// `ts_lua_http_ctx.cinfo.routine.mctx`: the Lua VM's `ts_lua_main_ctx`.
    pub routine_mctx: usize,
    /// `ts_lua_http_ctx.cinfo.contp`: the continuation that resumes the coroutine on
    /// `TS_LUA_EVENT_COROUTINE_CONT`.
    pub cont_contp: usize,
    /// `ts_lua_http_ctx.cinfo.mutex`: the transaction's mutex.
    pub cont_mutex: usize,
    /// `ts_lua_main_ctx.mutexp`: the VM lock.
    pub mctx_mutexp: usize,
    /// `ts_lua_http_transform_ctx.upstream_watermark_bytes`.
    pub transform_watermark: usize,
    /// `ts_lua_http_ctx.has_hook` (int): ts_lua keeps the context until TXN_CLOSE when set.
    pub http_has_hook: usize,
}

/// ts_lua in ATS 9.2.x (plugins/lua/ts_lua_common.h, ts_lua_coroutine.h), measured on 9.2.9.
pub const LAYOUT_9_2: Layout = Layout {
    routine_lua: 8,
    routine_ref: 16,
    async_chain: 40,
    txnp: 48,
    async_item_size: 48,
    routine_mctx: 0,
    cont_contp: 24,
    cont_mutex: 32,
    mctx_mutexp: 8,
    transform_watermark: 112,
    http_has_hook: 160,
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
///
/// `repr(C)`: the JIT path of the cheapest calls (`lua/ts_ffi/base.lua`, `ts_ffi_ctx`) reads
/// `alive` and `txn_slot` itself and calls the TS* function through LuaJIT FFI, with the same
/// two checks as `txn()` below.
#[repr(C)]
pub struct CtxRec {
    alive: AtomicBool,
    /// Where the context keeps its TSHttpTxn (`ctx + layout.txnp`).
    txn_slot: *const TSHttpTxn,
    ctx: *mut u8,
    layout: Layout,
}

impl CtxRec {
    fn new(ctx: *mut u8, layout: Layout, alive: bool) -> Self {
        // SAFETY: only an address computation; it is read while `alive` only.
        let txn_slot = unsafe { ctx.add(layout.txnp) } as *const TSHttpTxn;
        CtxRec { alive: AtomicBool::new(alive), txn_slot, ctx, layout }
    }
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
        let txn = unsafe { std::ptr::read_unaligned(self.txn_slot) };
        if txn.is_null() { Err(Code::NoTxn) } else { Ok(txn) }
    }
}

impl CtxRec {
    /// The live ts_lua context and its layout (`Gone` once ts_lua released it).
    pub fn context(&self) -> Result<(*mut u8, Layout), Code> {
        if self.alive.load(Ordering::Acquire) { Ok((self.ctx, self.layout)) } else { Err(Code::Gone) }
    }

    /// Whether ts_lua still holds the context.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
}

/// The running transaction's checked context, for native code that needs more than the
/// transaction handle (the caller owns the returned record).
///
/// SAFETY: `l` is the running Lua state.
pub unsafe fn current(l: *mut lua::lua_State) -> Result<Arc<CtxRec>, Code> {
    // SAFETY: `acquire` hands out one reference, which becomes this Arc.
    unsafe { acquire(l).map(|rec| Arc::from_raw(rec)) }
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

/// Who must own the coroutine a ts_lua continuation info names, for `validate`.
enum Owner {
    /// A coroutine whose environment is the table at this stack index.
    Env(c_int),
    /// Exactly the running coroutine.
    Running,
}

/// Checks that the `ts_lua_cont_info` at `ci` (the head of every ts_lua context) is live and
/// belongs to `owner`, without trusting its memory: the registry slot it names must hold the
/// coroutine it names, and that coroutine must be the owner. A freed context fails: ts_lua
/// unrefs the coroutine before freeing, and the owner (an environment or coroutine we hold)
/// is alive, so no other context can name it. A reused one names another coroutine.
///
/// SAFETY: `l` is the running Lua state; an `Env` index is valid on its stack.
unsafe fn validate(l: *mut lua::lua_State, ci: *mut u8, layout: Layout, owner: Owner) -> bool {
    let Some(words) = probe::<16>(ci as usize + layout.routine_lua) else {
        return false;
    };
    let [l0, l1, l2, l3, l4, l5, l6, l7, r0, r1, r2, r3, ..] = words;
    let co = usize::from_ne_bytes([l0, l1, l2, l3, l4, l5, l6, l7]);
    let reg_ref = i32::from_ne_bytes([r0, r1, r2, r3]);
    if co == 0 || reg_ref <= 0 {
        return false;
    }
    unsafe {
        lua::lua_rawgeti(l, lua::LUA_REGISTRYINDEX, reg_ref.into());
        let ok = lua::lua_type(l, -1) == lua::LUA_TTHREAD
            && lua::lua_tothread(l, -1) as usize == co
            && match owner {
                Owner::Running => co == l as usize,
                Owner::Env(env) => {
                    lua::lua_getfenv(l, -1);
                    let same = lua::lua_rawequal(l, -1, env) != 0;
                    lua::lua_pop(l, 1);
                    same
                }
            };
        lua::lua_pop(l, 1);
        ok
    }
}

/// The light userdata at `key` in the running coroutine's environment, or null.
///
/// SAFETY: `l` is the running Lua state.
unsafe fn env_pointer(l: *mut lua::lua_State, key: &CStr) -> *mut u8 {
    unsafe {
        lua::lua_pushstring(l, key.as_ptr());
        lua::lua_rawget(l, lua::LUA_GLOBALSINDEX);
        let p = if lua::lua_type(l, -1) == lua::LUA_TLIGHTUSERDATA {
            lua::lua_touserdata(l, -1) as *mut u8
        } else {
            std::ptr::null_mut()
        };
        lua::lua_pop(l, 1);
        p
    }
}

/// The ts_lua transform context whose handler is running on `l`: ts_lua sets
/// `__ts_cont_info` to the transform's continuation info (the head of its context) before it
/// resumes the handler, and keys the handler function by that pointer in the environment.
/// `__ts_http_transform_ctx` is not used: the transaction's transforms share one environment,
/// so it names the last transform created, not the running one. Returns the context and the
/// layout, or `NoTxn` when no ts_lua transform handler is running on `l`.
///
/// SAFETY: `l` is the running Lua state.
pub unsafe fn running_ts_lua_transform(l: *mut lua::lua_State) -> Result<(*mut u8, Layout), Code> {
    api()?;
    let layout = layout()?;
    unsafe {
        let ci = env_pointer(l, c"__ts_cont_info");
        if ci.is_null() {
            return Err(Code::NoTxn);
        }
        lua::lua_pushlightuserdata(l, ci.cast());
        lua::lua_rawget(l, lua::LUA_GLOBALSINDEX);
        let is_transform = lua::lua_type(l, -1) == lua::LUA_TFUNCTION;
        lua::lua_pop(l, 1);
        if !is_transform || !validate(l, ci, layout, Owner::Running) {
            return Err(Code::NoTxn);
        }
        Ok((ci, layout))
    }
}

/// ts_lua's `ts_lua_async_item` (9.2 layout), allocated with TSmalloc because ts_lua frees it.
/// ts_lua runs `cleanup` (unless `deleted`) when it releases the continuation info the item
/// is chained on, under the VM lock, then frees the item; until then the item stays linked.
#[repr(C)]
pub struct AsyncItem {
    next: *mut AsyncItem,
    cinfo: *mut c_void,
    contp: *mut c_void,
    data: *mut c_void,
    cleanup: Option<ItemCleanup>,
    deleted: u32,
}

/// An async item's cleanup, run by ts_lua when it releases the continuation info.
pub type ItemCleanup = unsafe extern "C" fn(*mut AsyncItem) -> c_int;

const _: () = assert!(std::mem::size_of::<AsyncItem>() == LAYOUT_9_2.async_item_size);

/// Contexts ts_ffi watches now: acquired, not yet released by ts_lua (process-wide, every VM
/// and thread). Goes back to 0 when no transaction is open; the reload and concurrency specs
/// check it (`native.ctx_watched()`).
static WATCHED: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

pub fn watched() -> isize {
    WATCHED.load(Ordering::Relaxed)
}

impl AsyncItem {
    /// Takes the item's data pointer, leaving null: whoever takes it owns what it points to.
    ///
    /// SAFETY: `item` is an item linked by this module and not yet freed by ts_lua.
    pub unsafe fn take_data(item: *mut AsyncItem) -> *mut c_void {
        match unsafe { item.as_mut() } {
            Some(item) => std::mem::replace(&mut item.data, std::ptr::null_mut()),
            None => std::ptr::null_mut(),
        }
    }

    /// Marks the item done: ts_lua will not run its cleanup, and frees it later.
    ///
    /// SAFETY: as for `take_data`.
    pub unsafe fn finish(item: *mut AsyncItem) {
        if let Some(item) = unsafe { item.as_mut() } {
            item.data = std::ptr::null_mut();
            item.deleted = 1;
        }
    }
}

/// Links a new item onto the async chain of the continuation info at `ci`.
///
/// SAFETY: `ci` is a live `ts_lua_cont_info` (checked by the caller) and the VM lock is held.
unsafe fn link_item(
    ci: *mut u8,
    layout: Layout,
    contp: *mut c_void,
    data: *mut c_void,
    cleanup: ItemCleanup,
) -> Result<*mut AsyncItem, Code> {
    let malloc = ts_fn!(_TSmalloc);
    unsafe {
        let item = malloc(layout.async_item_size, c"ts_ffi".as_ptr()) as *mut AsyncItem;
        if item.is_null() {
            return Err(Code::Internal);
        }
        let head = ci.add(layout.async_chain) as *mut *mut AsyncItem;
        item.write(AsyncItem { next: *head, cinfo: ci.cast(), contp, data, cleanup: Some(cleanup), deleted: 0 });
        *head = item;
        Ok(item)
    }
}

/// Called by ts_lua while it releases the context (VM mutex held): the record dies first.
unsafe extern "C" fn on_ctx_release(item: *mut AsyncItem) -> c_int {
    let result = std::panic::catch_unwind(|| {
        // SAFETY: ts_lua passes the item we linked; `data` is the record's reference we gave it.
        unsafe {
            let rec = AsyncItem::take_data(item);
            if !rec.is_null() {
                let rec = Arc::from_raw(rec as *const CtxRec);
                rec.alive.store(false, Ordering::Release);
                WATCHED.fetch_sub(1, Ordering::Relaxed);
            }
        }
    });
    if result.is_ok() { 0 } else { -1 }
}

/// Links `rec` into the context's async chain so ts_lua tells us when it releases it.
///
/// SAFETY: `ctx` was just validated as live and the VM mutex is held.
unsafe fn watch_release(ctx: *mut u8, layout: Layout, rec: &Arc<CtxRec>) -> Result<(), Code> {
    let data = Arc::into_raw(Arc::clone(rec)) as *mut c_void;
    match unsafe { link_item(ctx, layout, std::ptr::null_mut(), data, on_ctx_release) } {
        Ok(_) => {
            WATCHED.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(code) => {
            // SAFETY: the reference made above, never handed out.
            drop(unsafe { Arc::from_raw(data as *const CtxRec) });
            Err(code)
        }
    }
}

/// The running thread's transaction context, found in its environment and checked live.
///
/// SAFETY: `l` is the running Lua state (a lua_CFunction's argument).
unsafe fn find_live(l: *mut lua::lua_State, layout: Layout) -> Result<*mut u8, Code> {
    unsafe {
        let ctx = env_pointer(l, c"__ts_http_ctx");
        lua::lua_pushvalue(l, lua::LUA_GLOBALSINDEX);
        let env = lua::lua_gettop(l);
        let live = !ctx.is_null() && validate(l, ctx, layout, Owner::Env(env));
        lua::lua_pop(l, 1);
        if ctx.is_null() {
            return Err(Code::NoTxn);
        }
        if !live {
            return Err(Code::Gone);
        }
        Ok(ctx)
    }
}

/// Finds and checks the running transaction's context; on success a new record whose one
/// reference is the caller's.
///
/// SAFETY: `l` is the running Lua state (a lua_CFunction's argument).
unsafe fn acquire(l: *mut lua::lua_State) -> Result<*const CtxRec, Code> {
    api()?;
    let layout = layout()?;
    let ctx = unsafe { find_live(l, layout) }?;
    let rec = Arc::new(CtxRec::new(ctx, layout, true));
    unsafe { watch_release(ctx, layout, &rec) }?;
    Ok(Arc::into_raw(rec))
}

/// ts_lua's event that resumes a coroutine suspended in an asynchronous call
/// (`TS_LUA_EVENT_COROUTINE_CONT`; event data: the number of values pushed on it).
const EVENT_COROUTINE_CONT: TSEvent = 20000;

/// The continuation info of the coroutine ts_lua runs the transaction's `ts.hook` functions
/// in, found when the running thread is that coroutine. ts_lua resumes it on
/// `EVENT_COROUTINE_CONT` sent to its continuation, which runs under the transaction's mutex.
///
/// Valid while ts_lua has not released it: an owner links an async item (`link_item`) and
/// uses this only until the item's cleanup runs or the owner finishes the item.
#[derive(Debug, Clone, Copy)]
pub struct Resumable {
    ci: *mut u8,
    layout: Layout,
}

/// The running thread as a coroutine ts_lua will resume, or why not: `NoTxn`/`Gone` without
/// a live transaction context, `NotResumable` when the running thread is another one (a
/// coroutine the script created, a transform, an intercept). Whether the thread can yield
/// right now (not under lua_pcall from C) is for the caller to check.
///
/// SAFETY: `l` is the running Lua state (a lua_CFunction's argument).
pub unsafe fn resumable(l: *mut lua::lua_State) -> Result<Resumable, Code> {
    api()?;
    let layout = layout()?;
    // Everything `resume` needs must exist before anything is started.
    let _ = (ts_fn!(TSMutexLock), ts_fn!(TSMutexUnlock), ts_fn!(TSContCall));
    let ci = unsafe { find_live(l, layout) }?;
    // SAFETY: `ci` was just checked live; the VM lock is held (Lua is running).
    unsafe {
        let co = read_ptr(ci, layout.routine_lua);
        let mctx = read_ptr(ci, layout.routine_mctx);
        if co != l.cast()
            || mctx.is_null()
            || read_ptr(mctx.cast(), layout.mctx_mutexp).is_null()
            || read_ptr(ci, layout.cont_contp).is_null()
            || read_ptr(ci, layout.cont_mutex).is_null()
        {
            return Err(Code::NotResumable);
        }
    }
    Ok(Resumable { ci, layout })
}

impl Resumable {
    /// The transaction's mutex, for the continuations of asynchronous calls.
    pub fn mutex(&self) -> TSMutex {
        // SAFETY: see the type's docs.
        unsafe { read_ptr(self.ci, self.layout.cont_mutex) as TSMutex }
    }

    /// Links an async item whose cleanup ts_lua runs if it releases the coroutine first.
    ///
    /// SAFETY: called from the running coroutine (VM lock held).
    pub unsafe fn link_item(
        &self,
        contp: TSCont,
        data: *mut c_void,
        cleanup: ItemCleanup,
    ) -> Result<*mut AsyncItem, Code> {
        unsafe { link_item(self.ci, self.layout, contp.cast(), data, cleanup) }
    }

    /// Resumes the coroutine if it is suspended in the yield that waits for this call: its
    /// status is LUA_YIELD and the one value it yielded is `token` (which the caller's
    /// Lua side yields). The token is replaced by the values `push` leaves on the coroutine
    /// (it returns how many) and ts_lua resumes it with them, all under the VM lock.
    /// Otherwise (the script called the native start without yielding, or the coroutine
    /// waits for something else) nothing is touched and the answer is `Declined`.
    /// Afterwards the continuation info may be gone: the transaction can end in the resume.
    ///
    /// SAFETY: called under the transaction's mutex (from a continuation created with
    /// `mutex()`), before the item linked for this call was cleaned up.
    pub unsafe fn resume(
        self,
        token: *mut c_void,
        push: impl FnOnce(*mut lua::lua_State) -> c_int,
    ) -> Result<(), Code> {
        let (lock, unlock, call) = (ts_fn!(TSMutexLock), ts_fn!(TSMutexUnlock), ts_fn!(TSContCall));
        unsafe {
            let co = read_ptr(self.ci, self.layout.routine_lua) as *mut lua::lua_State;
            let contp = read_ptr(self.ci, self.layout.cont_contp) as TSCont;
            let mctx = read_ptr(self.ci, self.layout.routine_mctx);
            let vm = read_ptr(mctx.cast(), self.layout.mctx_mutexp) as TSMutex;
            lock(vm);
            let waiting = lua::lua_status(co) == lua::LUA_YIELD
                && lua::lua_gettop(co) == 1
                && lua::lua_type(co, -1) == lua::LUA_TLIGHTUSERDATA
                && lua::lua_touserdata(co, -1) == token;
            if waiting {
                lua::lua_settop(co, 0);
                let n = push(co);
                call(contp, EVENT_COROUTINE_CONT, n as isize as *mut c_void);
            }
            unlock(vm);
            if waiting { Ok(()) } else { Err(Code::Declined) }
        }
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
            Err(code) => crate::push_reply(l, Err(code)),
        }
    }
}

/// Releases Lua's reference to a record (the FFI cdata's finalizer).
#[unsafe(no_mangle)]
pub extern "C" fn ts_ffi_ctx_release(rec: *const CtxRec) {
    if !rec.is_null() {
        // SAFETY: Lua's one reference, handed out by `acquire`, released once by ffi.gc.
        // Dropping a CtxRec runs no code that can panic; the guard keeps it that way.
        let _ = std::panic::catch_unwind(|| drop(unsafe { Arc::from_raw(rec) }));
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
    fn record_head_matches_the_lua_view() {
        // lua/ts_ffi/base.lua: struct ts_ffi_ctx { uint8_t alive; void **txn_slot; }
        assert_eq!(std::mem::offset_of!(CtxRec, alive), 0);
        assert_eq!(std::mem::offset_of!(CtxRec, txn_slot), 8);
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
        let rec = CtxRec::new(fake.as_mut_ptr(), LAYOUT_9_2, false);
        assert_eq!(rec.txn(), Err(Code::Gone));
        rec.alive.store(true, Ordering::Release);
        assert_eq!(rec.txn(), Err(Code::NoTxn));
        fake[48] = 1;
        let rec = CtxRec::new(fake.as_mut_ptr(), LAYOUT_9_2, true);
        assert_eq!(rec.txn().map(|t| t as usize), Ok(1));
        assert_eq!(txn_of(std::ptr::null()), Err(Code::NoTxn));
    }
}
