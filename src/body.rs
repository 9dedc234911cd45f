//! ts_ffi's own body transform (`ts_ffi.transform.response` / `.request`): a TSTransform
//! VConn that hands the body to a Lua handler in pieces of at least `min_chunk` bytes and
//! tells it about the end exactly once, also for empty and chunked bodies.
//!
//! Threads and locks: the VConn runs on the transaction's mutex (TSTransformCreate), so its
//! events never overlap. The Lua handler runs in a coroutine of ts_ffi's own (made from the
//! script's transaction coroutine, so it shares its environment) with `lua_pcall`, holding the
//! VM's mutex as every ts_lua entry does; `lua_pcall` also makes it impossible to yield there.
//!
//! Lifetimes: registering sets ts_lua's `has_hook`, so ts_lua keeps the transaction context
//! (and `ts.*` works in the handler) until TXN_CLOSE. Before each handler call the checked
//! record of that context must still be alive; otherwise, and after a handler error, the body
//! passes through unchanged. The VConn is destroyed when ATS closes it; a VConn ATS never used
//! (registered too late, or no body) is closed by ts_ffi's TXN_CLOSE continuation.

use crate::api::ts_fn;
use crate::codes::Code;
use crate::ctx::{self, CtxRec};
use crate::sys::{self, TSCont, TSEvent, TSHttpTxn, TSIOBuffer, TSIOBufferReader, TSMutex, TSVIO};
use mlua::ffi as lua;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Largest `min_chunk` (64 MiB): larger only holds a whole body in memory.
pub const MAX_MIN_CHUNK: i64 = 64 << 20;

/// State shared by the VConn and the TXN_CLOSE continuation (both on the transaction mutex).
struct Shared {
    started: AtomicBool,
    destroyed: AtomicBool,
}

struct Transform {
    vm_lock: TSMutex,
    /// ts_ffi's coroutine for the handler, kept alive by `thread_ref`.
    thread: *mut lua::lua_State,
    thread_ref: c_int,
    handler_ref: c_int,
    /// Where the handler was defined, for error logs.
    origin: String,
    rec: Arc<CtxRec>,
    shared: Arc<Shared>,
    min_chunk: usize,
    pending: Vec<u8>,
    out_buffer: TSIOBuffer,
    out_reader: TSIOBufferReader,
    out_vio: TSVIO,
    out_total: i64,
    eos_delivered: bool,
    failed: bool,
}

/// Outcome of one handler call.
enum Handled {
    Output(Vec<u8>),
    Failed(String),
}

impl Transform {
    /// Runs the handler on `data` under the VM lock; never raises.
    fn call_handler(&mut self, data: &[u8], eos: bool) -> Handled {
        self.try_call(data, eos).unwrap_or_else(|code| Handled::Failed(code.name().into()))
    }

    fn try_call(&mut self, data: &[u8], eos: bool) -> Result<Handled, Code> {
        let (lock, unlock) = (ts_fn!(TSMutexLock), ts_fn!(TSMutexUnlock));
        // SAFETY: the thread is kept alive by `thread_ref`; the VM lock serializes every use of
        // the VM; the thread's stack is left empty between calls.
        unsafe {
            lock(self.vm_lock);
            let t = self.thread;
            let result = if !self.rec.is_alive() {
                Handled::Failed("the transaction's context was released".into())
            } else {
                lua::lua_settop(t, 0);
                lua::lua_rawgeti(t, lua::LUA_REGISTRYINDEX, self.handler_ref.into());
                lua::lua_pushlstring(t, data.as_ptr() as *const c_char, data.len());
                lua::lua_pushboolean(t, c_int::from(eos));
                if lua::lua_pcall(t, 2, 1, 0) != 0 {
                    Handled::Failed(lua_text(t, -1).unwrap_or_else(|| "(error object is not a string)".into()))
                } else {
                    match lua::lua_type(t, -1) {
                        lua::LUA_TNIL => Handled::Output(Vec::new()),
                        lua::LUA_TSTRING => Handled::Output(lua_text_bytes(t, -1)),
                        other => Handled::Failed(format!(
                            "handler returned a {} (a string or nil expected)",
                            type_name(other)
                        )),
                    }
                }
            };
            lua::lua_settop(t, 0);
            unlock(self.vm_lock);
            Ok(result)
        }
    }

    fn log_failure(&self, why: &str) {
        let _ = (|| -> Result<(), Code> {
            let error = ts_fn!(TSError);
            let msg = format!(
                "[ts_ffi] transform handler defined at {} failed: {}; the rest of the body passes through unchanged",
                self.origin, why
            );
            if let Ok(msg) = std::ffi::CString::new(msg.replace('\0', "\\0")) {
                // SAFETY: a "%s" format with one C string.
                unsafe { error(c"%s".as_ptr(), msg.as_ptr()) };
            }
            Ok(())
        })();
    }

    /// Hands `pending` to the handler (or passes it through after a failure) and writes what
    /// comes back to the output; true if the output grew.
    fn flush(&mut self, eos: bool) -> Result<bool, Code> {
        let data = std::mem::take(&mut self.pending);
        let out = if self.failed {
            data
        } else {
            match self.call_handler(&data, eos) {
                Handled::Output(out) => out,
                Handled::Failed(why) => {
                    self.failed = true;
                    self.log_failure(&why);
                    data
                }
            }
        };
        if eos {
            self.eos_delivered = true;
        }
        if out.is_empty() {
            return Ok(false);
        }
        let write = ts_fn!(TSIOBufferWrite);
        // SAFETY: our own output buffer.
        let n = unsafe { write(self.out_buffer, out.as_ptr() as *const c_void, out.len() as i64) };
        self.out_total += n;
        Ok(n > 0)
    }
}

/// # Safety: a Lua string (or number) at `idx`.
unsafe fn lua_text_bytes(l: *mut lua::lua_State, idx: c_int) -> Vec<u8> {
    let mut len = 0usize;
    let p = unsafe { lua::lua_tolstring(l, idx, &mut len) };
    if p.is_null() { Vec::new() } else { unsafe { std::slice::from_raw_parts(p as *const u8, len) }.to_vec() }
}

unsafe fn lua_text(l: *mut lua::lua_State, idx: c_int) -> Option<String> {
    if unsafe { lua::lua_type(l, idx) } != lua::LUA_TSTRING {
        return None;
    }
    Some(String::from_utf8_lossy(&unsafe { lua_text_bytes(l, idx) }).into_owned())
}

fn type_name(t: c_int) -> &'static str {
    match t {
        lua::LUA_TBOOLEAN => "boolean",
        lua::LUA_TNUMBER => "number",
        lua::LUA_TTABLE => "table",
        lua::LUA_TFUNCTION => "function",
        lua::LUA_TUSERDATA | lua::LUA_TLIGHTUSERDATA => "userdata",
        lua::LUA_TTHREAD => "thread",
        _ => "value",
    }
}

/// Moves what the input VIO has ready (at most `max` bytes) into `into`; returns the bytes
/// taken.
unsafe fn take_input(into: &mut Vec<u8>, input: TSVIO, max: i64) -> Result<i64, Code> {
    let (todo, reader_of, avail, start, block_read, next, consume, done_get, done_set) = (
        ts_fn!(TSVIONTodoGet),
        ts_fn!(TSVIOReaderGet),
        ts_fn!(TSIOBufferReaderAvail),
        ts_fn!(TSIOBufferReaderStart),
        ts_fn!(TSIOBufferBlockReadStart),
        ts_fn!(TSIOBufferBlockNext),
        ts_fn!(TSIOBufferReaderConsume),
        ts_fn!(TSVIONDoneGet),
        ts_fn!(TSVIONDoneSet),
    );
    unsafe {
        let reader = reader_of(input);
        let want = todo(input).min(avail(reader)).min(max);
        if want <= 0 {
            return Ok(0);
        }
        let mut left = want;
        let mut block = start(reader);
        while left > 0 && !block.is_null() {
            let mut len: i64 = 0;
            let p = block_read(block, reader, &mut len);
            let n = len.min(left);
            if !p.is_null() && n > 0 {
                into.extend_from_slice(std::slice::from_raw_parts(p as *const u8, n as usize));
                left -= n;
            }
            block = next(block);
        }
        let taken = want - left;
        consume(reader, taken);
        done_set(input, done_get(input) + taken);
        Ok(taken)
    }
}

/// One event of the transform VConn (the usual TSTransform shape).
unsafe fn on_event(contp: TSCont, event: TSEvent) -> Result<(), Code> {
    let (closed_get, data_get) = (ts_fn!(TSVConnClosedGet), ts_fn!(TSContDataGet));
    unsafe {
        let t_ptr = data_get(contp) as *mut Transform;
        if closed_get(contp) != 0 {
            return destroy(contp, t_ptr);
        }
        let Some(t) = t_ptr.as_mut() else { return Ok(()) };
        t.shared.started.store(true, Ordering::Release);
        if !common_event(contp, event)? {
            transform(contp, t)?;
        }
    }
    Ok(())
}

/// The events every transform VConn answers alike (an upstream error, the output done);
/// false for the others.
unsafe fn common_event(contp: TSCont, event: TSEvent) -> Result<bool, Code> {
    let (write_vio_get, vio_cont, call) = (ts_fn!(TSVConnWriteVIOGet), ts_fn!(TSVIOContGet), ts_fn!(TSContCall));
    // SAFETY: the VConn's own VIOs, on its mutex.
    unsafe {
        match event {
            sys::TSEvent_TS_EVENT_ERROR => {
                let input = write_vio_get(contp);
                call(vio_cont(input), sys::TSEvent_TS_EVENT_ERROR, input as *mut c_void);
            }
            sys::TSEvent_TS_EVENT_VCONN_WRITE_COMPLETE => {
                ts_fn!(TSVConnShutdown)(ts_fn!(TSTransformOutputVConnGet)(contp), 0, 1);
            }
            _ => return Ok(false),
        }
    }
    Ok(true)
}

unsafe fn transform(contp: TSCont, t: &mut Transform) -> Result<(), Code> {
    let (write_vio_get, vio_buffer, todo, vio_cont, call, reenable, nbytes_set) = (
        ts_fn!(TSVConnWriteVIOGet),
        ts_fn!(TSVIOBufferGet),
        ts_fn!(TSVIONTodoGet),
        ts_fn!(TSVIOContGet),
        ts_fn!(TSContCall),
        ts_fn!(TSVIOReenable),
        ts_fn!(TSVIONBytesSet),
    );
    unsafe {
        if t.out_vio.is_null() {
            // Length unknown until the end: INT64_MAX, fixed with TSVIONBytesSet at the end.
            (t.out_buffer, t.out_reader, t.out_vio) = start_output(contp, i64::MAX)?;
        }
        if t.eos_delivered {
            return Ok(());
        }
        let input = write_vio_get(contp);
        // A null buffer: the writer shut the write side down; no more data will come.
        let finished_writer = input.is_null() || vio_buffer(input).is_null();
        let taken = if finished_writer { 0 } else { take_input(&mut t.pending, input, i64::MAX)? };
        let eos = finished_writer || todo(input) <= 0;
        let wrote = if eos || (!t.pending.is_empty() && t.pending.len() >= t.min_chunk) {
            t.flush(eos)?
        } else {
            false
        };
        if eos {
            nbytes_set(t.out_vio, t.out_total);
            reenable(t.out_vio);
            if !finished_writer {
                call(vio_cont(input), sys::TSEvent_TS_EVENT_VCONN_WRITE_COMPLETE, input as *mut c_void);
            }
        } else {
            // Wake the reader only for new output: a WRITE_READY from it comes back here, and
            // answering each one with a reenable would spin (measured with a ts_lua transform
            // after ours).
            if wrote {
                reenable(t.out_vio);
            }
            if taken > 0 {
                call(vio_cont(input), sys::TSEvent_TS_EVENT_VCONN_WRITE_READY, input as *mut c_void);
            }
        }
    }
    Ok(())
}

/// Starts writing the transform's output (`nbytes` in all): buffer, reader, VIO. HttpSM sends
/// the response header when a response transform first does this.
unsafe fn start_output(contp: TSCont, nbytes: i64) -> Result<(TSIOBuffer, TSIOBufferReader, TSVIO), Code> {
    let (create, reader_alloc, output_get, write) = (
        ts_fn!(TSIOBufferCreate),
        ts_fn!(TSIOBufferReaderAlloc),
        ts_fn!(TSTransformOutputVConnGet),
        ts_fn!(TSVConnWrite),
    );
    // SAFETY: the transform's own output VConn; the buffer is freed by the transform's destroy.
    unsafe {
        let buffer = create();
        let reader = reader_alloc(buffer);
        let vio = write(output_get(contp), contp, reader, nbytes);
        Ok((buffer, reader, vio))
    }
}

/// Frees everything the transform owns, Lua references under the VM lock.
unsafe fn destroy(contp: TSCont, t_ptr: *mut Transform) -> Result<(), Code> {
    let (lock, unlock, buffer_destroy, cont_destroy) = (
        ts_fn!(TSMutexLock),
        ts_fn!(TSMutexUnlock),
        ts_fn!(TSIOBufferDestroy),
        ts_fn!(TSContDestroy),
    );
    unsafe {
        if !t_ptr.is_null() {
            let t = Box::from_raw(t_ptr);
            t.shared.destroyed.store(true, Ordering::Release);
            lock(t.vm_lock);
            lua::luaL_unref(t.thread, lua::LUA_REGISTRYINDEX, t.handler_ref);
            lua::luaL_unref(t.thread, lua::LUA_REGISTRYINDEX, t.thread_ref);
            unlock(t.vm_lock);
            if !t.out_buffer.is_null() {
                buffer_destroy(t.out_buffer);
            }
        }
        cont_destroy(contp);
    }
    Ok(())
}

unsafe extern "C" fn vconn_handler(contp: TSCont, event: TSEvent, _edata: *mut c_void) -> c_int {
    let _ = std::panic::catch_unwind(|| unsafe { on_event(contp, event) });
    0
}

/// TXN_CLOSE: closes the VConn if ATS never used it (then its close event destroys it).
struct CloseGuard {
    vconn: TSCont,
    shared: Arc<Shared>,
}

unsafe extern "C" fn close_handler(contp: TSCont, _event: TSEvent, edata: *mut c_void) -> c_int {
    let _ = std::panic::catch_unwind(|| unsafe {
        let data_get = ts_fn!(TSContDataGet);
        let guard = data_get(contp) as *mut CloseGuard;
        if !guard.is_null() {
            let guard = Box::from_raw(guard);
            let s = &guard.shared;
            if !s.started.load(Ordering::Acquire) && !s.destroyed.load(Ordering::Acquire) {
                ts_fn!(TSVConnClose)(guard.vconn);
            }
        }
        ts_fn!(TSContDestroy)(contp);
        ts_fn!(TSHttpTxnReenable)(edata as TSHttpTxn, sys::TSEvent_TS_EVENT_HTTP_CONTINUE);
        Ok::<(), Code>(())
    });
    0
}

/// Whether the body this transform would see has already started to flow.
unsafe fn too_late(txn: TSHttpTxn, response: bool) -> Result<bool, Code> {
    unsafe {
        if response {
            let get = ts_fn!(TSHttpTxnServerRespGet);
            let mut buf: sys::TSMBuffer = std::ptr::null_mut();
            let mut loc: sys::TSMLoc = std::ptr::null_mut();
            if get(txn, &mut buf, &mut loc) == sys::TSReturnCode_TS_SUCCESS {
                ts_fn!(TSHandleMLocRelease)(buf, std::ptr::null_mut(), loc);
                return Ok(true);
            }
            Ok(false)
        } else {
            let get = ts_fn!(TSHttpTxnServerFdGet);
            let mut fd: c_int = -1;
            Ok(get(txn, &mut fd) == sys::TSReturnCode_TS_SUCCESS && fd >= 0)
        }
    }
}

/// Registers the transform; the handler function is at stack index 2.
unsafe fn add(l: *mut lua::lua_State, response: bool, min_chunk: usize) -> Result<(), Code> {
    let rec = unsafe { ctx::current(l)? };
    let (http_ctx, layout) = rec.context()?;
    let txn = rec.txn()?;
    let (create, data_set, hook_add) = (ts_fn!(TSTransformCreate), ts_fn!(TSContDataSet), ts_fn!(TSHttpTxnHookAdd));
    // Checked now so that the handler calls cannot fail on them later.
    let _ = (ts_fn!(TSMutexLock), ts_fn!(TSMutexUnlock));
    unsafe {
        if too_late(txn, response)? {
            return Err(Code::Declined);
        }
        // SAFETY: the context is live (checked just now, VM lock held by ts_lua).
        let mctx = std::ptr::read(http_ctx as *const *const u8);
        if mctx.is_null() {
            return Err(Code::NoTxn);
        }
        let vm_lock = std::ptr::read(mctx.add(layout.mctx_mutexp) as *const TSMutex);
        let mut ar: lua::lua_Debug = std::mem::zeroed();
        lua::lua_pushvalue(l, 2);
        let origin = if lua::lua_getinfo(l, c">S".as_ptr(), &mut ar) != 0  {
            let src = std::ffi::CStr::from_ptr(ar.short_src.as_ptr()).to_string_lossy();
            format!("{}:{}", src, ar.linedefined)
        } else {
            "?".into()
        };
        let thread = lua::lua_newthread(l);
        let thread_ref = lua::luaL_ref(l, lua::LUA_REGISTRYINDEX);
        lua::lua_pushvalue(l, 2);
        let handler_ref = lua::luaL_ref(l, lua::LUA_REGISTRYINDEX);

        // Keep ts_lua's context (and so `ts.*` in the handler) until TXN_CLOSE.
        std::ptr::write(http_ctx.add(layout.http_has_hook) as *mut c_int, 1);

        let shared = Arc::new(Shared { started: AtomicBool::new(false), destroyed: AtomicBool::new(false) });
        let vconn = create(Some(vconn_handler), txn);
        let state = Box::new(Transform {
            vm_lock,
            thread,
            thread_ref,
            handler_ref,
            origin,
            rec,
            shared: Arc::clone(&shared),
            min_chunk,
            pending: Vec::new(),
            out_buffer: std::ptr::null_mut(),
            out_reader: std::ptr::null_mut(),
            out_vio: std::ptr::null_mut(),
            out_total: 0,
            eos_delivered: false,
            failed: false,
        });
        data_set(vconn, Box::into_raw(state) as *mut c_void);
        let hook = if response {
            sys::TSHttpHookID_TS_HTTP_RESPONSE_TRANSFORM_HOOK
        } else {
            sys::TSHttpHookID_TS_HTTP_REQUEST_TRANSFORM_HOOK
        };
        hook_add(txn, hook, vconn);

        close_at_txn_close(txn, vconn, shared)?;
    }
    Ok(())
}

/// Makes sure `vconn` is closed by TXN_CLOSE if ATS never used it.
unsafe fn close_at_txn_close(txn: TSHttpTxn, vconn: TSCont, shared: Arc<Shared>) -> Result<(), Code> {
    let (cont_create, mutex_get, data_set, hook_add) =
        (ts_fn!(TSContCreate), ts_fn!(TSContMutexGet), ts_fn!(TSContDataSet), ts_fn!(TSHttpTxnHookAdd));
    // SAFETY: a continuation on the transaction's mutex owning the guard until TXN_CLOSE.
    unsafe {
        let close = cont_create(Some(close_handler), mutex_get(txn as TSCont));
        data_set(close, Box::into_raw(Box::new(CloseGuard { vconn, shared })) as *mut c_void);
        hook_add(txn, sys::TSHttpHookID_TS_HTTP_TXN_CLOSE_HOOK, close);
    }
    Ok(())
}

/// `native.transform_add(is_response, handler, min_chunk)` → true | `nil, code`. Never raises;
/// the Lua wrapper checks the arguments.
pub unsafe extern "C-unwind" fn lua_transform_add(l: *mut lua::lua_State) -> c_int {
    let result = std::panic::catch_unwind(|| unsafe {
        if lua::lua_type(l, 2) != lua::LUA_TFUNCTION || lua::lua_type(l, 3) != lua::LUA_TNUMBER {
            return Err(Code::BadArg);
        }
        let min_chunk = lua::lua_tonumber(l, 3);
        if !(0.0..=MAX_MIN_CHUNK as f64).contains(&min_chunk) {
            return Err(Code::BadArg);
        }
        add(l, lua::lua_toboolean(l, 1) != 0, min_chunk as usize)
    })
    .unwrap_or(Err(Code::Internal));
    unsafe { crate::push_reply(l, result.map(|()| 1.0)) }
}

// ---------------------------------------------------------------------------------------------
// Held bodies: a native inspector (the WAF) sees the first bytes of a response body before any
// of it, or the response header, reaches the client, and decides what the client gets.
//
// Nothing is written to the output until the decision: HttpSM sends the response header only
// when the transform starts its output, so a SEND_RESPONSE_HDR hook can still rewrite status
// and headers for a replaced body.
//
// The decision may come from any thread (`Resume`). It is stored, then the VConn is woken with
// TSVIOReenable on its input VIO, which schedules the VConn on its own thread without taking
// any lock (TSContSchedule* would hold the VConn's mutex while waking that thread, and a thread
// that then misses the lock retries 10 ms later). `Delivery` says how far the delivery is; the
// VConn is never destroyed between PENDING and DONE, so the wake-up always meets a live VConn
// (ATS frees it only once the events it counts have run).

/// How far a decision's delivery is (`Held::delivery`).
const IDLE: u8 = 0;
/// The inspector has the head; a decision will come.
const PENDING: u8 = 1;
/// The decision is stored; the wake-up is being sent.
const READY: u8 = 2;
/// The wake-up is sent; nothing more comes from the inspector's side.
const DONE: u8 = 3;

/// What an inspector decided.
pub enum Decision {
    /// The body as it came: the held bytes, then the rest.
    Pass,
    /// This body instead; the rest of the original is read and dropped.
    Replace(Vec<u8>),
}

/// A consumer of the first bytes of a response body.
pub trait Inspector: Send {
    /// Called once, on the transaction's thread, with the first bytes of the body (at most the
    /// limit; `complete`: that is the whole body). `resume` must be used once, from any thread.
    fn inspect(self: Box<Self>, head: Vec<u8>, complete: bool, resume: Resume);
}

/// The decision and how far its delivery is, shared by the VConn and its `Resume`.
#[derive(Default)]
struct Delivery {
    decision: std::sync::Mutex<Option<Decision>>,
    state: std::sync::atomic::AtomicU8,
}

type Slot = Arc<Delivery>;

/// The way back from an inspector to its transform. Dropped without `resume` (a bug), it
/// replaces the body with nothing, so that a transform never waits forever and nothing
/// uninspected reaches the client.
pub struct Resume {
    vconn: usize,
    slot: Slot,
}

impl Resume {
    pub fn resume(mut self, decision: Decision) {
        self.deliver(decision);
    }

    fn deliver(&mut self, decision: Decision) {
        if self.vconn == 0 {
            return;
        }
        let vconn = std::mem::replace(&mut self.vconn, 0) as TSCont;
        *self.slot.decision.lock().unwrap_or_else(|p| p.into_inner()) = Some(decision);
        self.slot.state.store(READY, Ordering::SeqCst);
        let _ = (|| -> Result<(), Code> {
            let (write_vio_get, reenable) = (ts_fn!(TSVConnWriteVIOGet), ts_fn!(TSVIOReenable));
            // SAFETY: the VConn is not destroyed before DONE (see above); INKVConnInternal's
            // reenable counts the event it schedules, so ATS keeps the VConn until it has run.
            unsafe { reenable(write_vio_get(vconn)) };
            Ok(())
        })();
        self.slot.state.store(DONE, Ordering::SeqCst);
    }
}

impl Drop for Resume {
    fn drop(&mut self) {
        self.deliver(Decision::Replace(Vec::new()));
    }
}

#[derive(PartialEq)]
enum Stage {
    /// Reading the head (up to the limit or the end).
    Reading,
    /// The inspector has the head; input and output wait.
    Waiting,
    /// Passing the held head and the rest through.
    Passing,
    /// The replacement is written; the rest of the input is dropped.
    Replacing,
}

struct Held {
    inspector: Option<Box<dyn Inspector>>,
    limit: usize,
    head: Vec<u8>,
    stage: Stage,
    slot: Slot,
    shared: Arc<Shared>,
    /// All input was read (and the writer told so).
    input_done: bool,
    out_buffer: TSIOBuffer,
    out_vio: TSVIO,
    out_total: i64,
}

/// Adds a response transform on `txn` that holds the body back for `inspector` (the first
/// `limit` bytes). On the transaction's thread, at READ_RESPONSE_HDR or CACHE_LOOKUP_COMPLETE
/// at the latest.
pub unsafe fn hold_response(txn: TSHttpTxn, inspector: Box<dyn Inspector>, limit: usize) -> Result<(), Code> {
    let (create, data_set, hook_add) = (ts_fn!(TSTransformCreate), ts_fn!(TSContDataSet), ts_fn!(TSHttpTxnHookAdd));
    // Checked now so that later steps cannot fail on them.
    let _ = (
        ts_fn!(TSVConnWriteVIOGet),
        ts_fn!(TSVIOReenable),
        ts_fn!(TSContScheduleOnThread),
        ts_fn!(TSEventThreadSelf),
    );
    unsafe {
        let shared = Arc::new(Shared { started: AtomicBool::new(false), destroyed: AtomicBool::new(false) });
        let vconn = create(Some(held_handler), txn);
        if vconn.is_null() {
            return Err(Code::Internal);
        }
        let state = Box::new(Held {
            inspector: Some(inspector),
            limit,
            head: Vec::new(),
            stage: Stage::Reading,
            slot: Arc::new(Delivery::default()),
            shared: Arc::clone(&shared),
            input_done: false,
            out_buffer: std::ptr::null_mut(),
            out_vio: std::ptr::null_mut(),
            out_total: 0,
        });
        data_set(vconn, Box::into_raw(state) as *mut c_void);
        hook_add(txn, sys::TSHttpHookID_TS_HTTP_RESPONSE_TRANSFORM_HOOK, vconn);
        close_at_txn_close(txn, vconn, shared)?;
    }
    Ok(())
}

unsafe extern "C" fn held_handler(contp: TSCont, event: TSEvent, _edata: *mut c_void) -> c_int {
    let _ = std::panic::catch_unwind(|| unsafe { on_held_event(contp, event) });
    0
}

unsafe fn on_held_event(contp: TSCont, event: TSEvent) -> Result<(), Code> {
    let (closed_get, data_get) = (ts_fn!(TSVConnClosedGet), ts_fn!(TSContDataGet));
    unsafe {
        let h_ptr = data_get(contp) as *mut Held;
        let Some(h) = h_ptr.as_mut() else { return Ok(()) };
        let delivery = h.slot.state.load(Ordering::SeqCst);
        let decision = if h.stage == Stage::Waiting && delivery >= READY {
            h.slot.decision.lock().unwrap_or_else(|p| p.into_inner()).take()
        } else {
            None
        };
        if closed_get(contp) != 0 {
            match delivery {
                // The wake-up is still to come: destroy then.
                PENDING => return Ok(()),
                // It is being sent; look again in a moment (a retry on this thread, under the
                // mutex held now, so it meets no lock).
                READY => {
                    ts_fn!(TSContScheduleOnThread)(contp, 1, ts_fn!(TSEventThreadSelf)());
                    return Ok(());
                }
                IDLE | DONE => {}
                _ => {}
            }
            let h = Box::from_raw(h_ptr);
            h.shared.destroyed.store(true, Ordering::Release);
            if !h.out_buffer.is_null() {
                ts_fn!(TSIOBufferDestroy)(h.out_buffer);
            }
            drop(h);
            ts_fn!(TSContDestroy)(contp);
            return Ok(());
        }
        h.shared.started.store(true, Ordering::Release);
        if let Some(d) = decision {
            h.decided(contp, d)?;
        }
        if !common_event(contp, event)? {
            h.step(contp)?;
        }
    }
    Ok(())
}

impl Held {
    /// Takes the inspector's decision: starts the output.
    unsafe fn decided(&mut self, contp: TSCont, d: Decision) -> Result<(), Code> {
        let write = ts_fn!(TSIOBufferWrite);
        let (body, stage) = match d {
            Decision::Pass => (std::mem::take(&mut self.head), Stage::Passing),
            Decision::Replace(body) => {
                self.head = Vec::new();
                (body, Stage::Replacing)
            }
        };
        self.stage = stage;
        // The whole length is known when nothing more will be written.
        let nbytes = if self.stage == Stage::Replacing || self.input_done { body.len() as i64 } else { i64::MAX };
        unsafe {
            let (buffer, _reader, vio) = start_output(contp, nbytes)?;
            (self.out_buffer, self.out_vio) = (buffer, vio);
            if !body.is_empty() {
                self.out_total += write(buffer, body.as_ptr() as *const c_void, body.len() as i64);
            }
            ts_fn!(TSVIOReenable)(vio);
        }
        Ok(())
    }

    unsafe fn step(&mut self, contp: TSCont) -> Result<(), Code> {
        let (write_vio_get, vio_buffer, todo, vio_cont, call, reenable, nbytes_set, write) = (
            ts_fn!(TSVConnWriteVIOGet),
            ts_fn!(TSVIOBufferGet),
            ts_fn!(TSVIONTodoGet),
            ts_fn!(TSVIOContGet),
            ts_fn!(TSContCall),
            ts_fn!(TSVIOReenable),
            ts_fn!(TSVIONBytesSet),
            ts_fn!(TSIOBufferWrite),
        );
        if self.stage == Stage::Waiting || self.input_done {
            return Ok(());
        }
        unsafe {
            let input = write_vio_get(contp);
            let finished_writer = input.is_null() || vio_buffer(input).is_null();
            let mut got = Vec::new();
            let max = match self.stage {
                Stage::Reading => (self.limit - self.head.len().min(self.limit)) as i64,
                _ => i64::MAX,
            };
            let taken = if finished_writer { 0 } else { take_input(&mut got, input, max)? };
            let eos = finished_writer || todo(input) <= 0;
            if eos {
                self.input_done = true;
                if !finished_writer {
                    call(vio_cont(input), sys::TSEvent_TS_EVENT_VCONN_WRITE_COMPLETE, input as *mut c_void);
                }
            }
            match self.stage {
                Stage::Reading => {
                    self.head.extend_from_slice(&got);
                    if eos || self.head.len() >= self.limit {
                        self.stage = Stage::Waiting;
                        self.slot.state.store(PENDING, Ordering::SeqCst);
                        let resume = Resume { vconn: contp as usize, slot: Arc::clone(&self.slot) };
                        match self.inspector.take() {
                            Some(i) => i.inspect(self.head.clone(), eos, resume),
                            None => drop(resume),
                        }
                        return Ok(());
                    }
                }
                Stage::Passing => {
                    if !got.is_empty() {
                        self.out_total += write(self.out_buffer, got.as_ptr() as *const c_void, got.len() as i64);
                        reenable(self.out_vio);
                    }
                    if eos {
                        nbytes_set(self.out_vio, self.out_total);
                        reenable(self.out_vio);
                    }
                }
                // The replacement is all written; the rest of the input is dropped.
                Stage::Replacing | Stage::Waiting => {}
            }
            if !eos && taken > 0 {
                call(vio_cont(input), sys::TSEvent_TS_EVENT_VCONN_WRITE_READY, input as *mut c_void);
            }
        }
        Ok(())
    }
}
