//! `ts_ffi.waf`: ModSecurity v3 (libmodsecurity, see `msc`) on ATS transactions.
//!
//! Engines: `waf.new` loads a rule set once per process and shares it between every Lua VM
//! and thread: an engine with the same sources (the same files, unchanged on disk, and the
//! same inline rules) that is still alive is handed out again. Lua holds an engine through a
//! userdata; every protected transaction holds it too, so a rule set replaced on `__reload__`
//! is freed when the last Lua VM and the last transaction using it are done.
//!
//! Transactions: `engine:protect()` copies the request line and headers at once (in
//! `do_remap` or `do_global_read_request`, before remapping rewrites them) and adds one
//! continuation to the transaction's hooks (POST_REMAP, READ_RESPONSE_HDR, TXN_CLOSE, and
//! SEND_RESPONSE_HDR when a response must be rewritten). A request with a body also gets ATS
//! request buffering and REQUEST_BUFFER_READ_COMPLETE, where the whole body (de-chunked, at
//! most `request_body_limit` bytes, else 413) is handed to libmodsecurity's phase 2. At each hook the transaction waits
//! while a job runs libmodsecurity on an ATS task thread (TS_THREAD_POOL_TASK, never a network
//! thread); the verdict comes back to the transaction's own thread through a continuation
//! with its own mutex, which then touches the transaction and re-enables it.
//!
//! Lifetimes and locks: `WafTxn` is shared (Arc) by the hook continuation and the jobs. The
//! libmodsecurity transaction lives inside `WafTxn::inner`, a mutex held by a task thread for
//! the whole time it is inside libmodsecurity. TXN_CLOSE marks the transaction closed (no
//! verdict touches it afterwards) and queues the logging phase, which takes that mutex, so it
//! waits for any phase still running; the libmodsecurity transaction is freed when the last
//! reference to `WafTxn` goes, never while a task thread is inside it.

use crate::api::{api, ts_fn};
use crate::body;
use crate::codes::{self, Code};
use crate::ctx::{self, CtxRec};
use crate::msc::{self, Intervention};
use crate::sys::{self, TSCont, TSEvent, TSHttpTxn, TSMBuffer, TSMLoc};
use mlua::{Lua, Result as LuaResult, Table, UserData, UserDataFields, Value};
use std::ffi::{CStr, CString, c_void};
use std::os::raw::{c_char, c_int};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// A loaded rule set, shared process-wide.
pub struct Engine {
    id: u32,
    key: String,
    rules: msc::RuleSet,
}

/// Live engines by id, for `protect` and for sharing equal engines.
static REGISTRY: Mutex<Vec<(u32, Weak<Engine>)>> = Mutex::new(Vec::new());
/// Serializes `waf.new` (so that VMs loading the same script share one load).
static NEW_LOCK: Mutex<()> = Mutex::new(());
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn lookup(id: u32) -> Option<Arc<Engine>> {
    let weak = lock(&REGISTRY).iter().find(|(i, _)| *i == id).map(|(_, w)| w.clone());
    weak.and_then(|w| w.upgrade())
}

impl Drop for Engine {
    fn drop(&mut self) {
        lock(&REGISTRY).retain(|(i, _)| *i != self.id);
    }
}

/// Expands shell patterns (`*`, `?`, `[`) in `files` in sorted order; a pattern that matches
/// nothing is an error. Plain names pass through (libmodsecurity reports missing ones).
pub fn expand(files: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for f in files {
        if !f.contains(['*', '?', '[']) {
            out.push(f.clone());
            continue;
        }
        let pat = CString::new(f.as_str()).map_err(|_| format!("{f}: contains a NUL byte"))?;
        // SAFETY: glob fills `g`, freed with globfree below.
        unsafe {
            let mut g: libc::glob_t = std::mem::zeroed();
            let rc = libc::glob(pat.as_ptr(), 0, None, &mut g);
            if rc == 0 {
                for i in 0..g.gl_pathc {
                    let p = *g.gl_pathv.add(i);
                    if !p.is_null() {
                        out.push(CStr::from_ptr(p).to_string_lossy().into_owned());
                    }
                }
            }
            libc::globfree(&mut g);
            if rc != 0 {
                return Err(format!("{f}: no file matches this pattern"));
            }
        }
    }
    Ok(out)
}

/// What makes two engines equal: the files (with their size and modification time, so that
/// a reload after an edit loads afresh) and the inline rules.
pub fn source_key(files: &[String], rules: Option<&str>) -> String {
    let mut key = String::new();
    for f in files {
        let stamp = std::fs::metadata(f)
            .ok()
            .and_then(|m| {
                let t = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
                Some(format!("{}:{}", m.len(), t.as_nanos()))
            })
            .unwrap_or_else(|| "missing".into());
        key.push_str(&format!("file\0{f}\0{stamp}\0"));
    }
    if let Some(r) = rules {
        key.push_str("rules\0");
        key.push_str(r);
    }
    key
}

/// `waf.new`: an equal live engine, or a newly loaded one.
pub fn new_engine(files: &[String], rules: Option<&str>) -> Result<Arc<Engine>, String> {
    let _guard = lock(&NEW_LOCK);
    let files = expand(files)?;
    let key = source_key(&files, rules);
    // Upgraded references are dropped after the registry lock (an engine's Drop takes it).
    let live: Vec<Arc<Engine>> = lock(&REGISTRY).iter().filter_map(|(_, w)| w.upgrade()).collect();
    if let Some(e) = live.iter().find(|e| e.key == key) {
        return Ok(Arc::clone(e));
    }
    drop(live);
    msc::set_log_cb(log_cb);
    let mut sources: Vec<msc::Source<'_>> = files.iter().map(|f| msc::Source::File(f)).collect();
    if let Some(r) = rules {
        sources.push(msc::Source::Inline(r));
    }
    let set = msc::load(&sources)?;
    open_audit_log();
    let engine = Arc::new(Engine { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), key, rules: set });
    let mut reg = lock(&REGISTRY);
    reg.retain(|(_, w)| w.strong_count() > 0);
    reg.push((engine.id, Arc::downgrade(&engine)));
    Ok(engine)
}

// ---------------------------------------------------------------------------------------------
// Audit trail: every rule message, to an ATS text log (ts_ffi_waf.log in ATS's log directory).

static AUDIT: OnceLock<usize> = OnceLock::new();

fn open_audit_log() {
    let _ = (|| -> Result<(), Code> {
        if AUDIT.get().is_some() {
            return Ok(());
        }
        let create = ts_fn!(TSTextLogObjectCreate);
        let mut obj: sys::TSTextLogObject = std::ptr::null_mut();
        // SAFETY: creates a log object ATS owns for the process's life (mode 1: timestamps).
        if unsafe { create(c"ts_ffi_waf".as_ptr(), 1, &mut obj) } == sys::TSReturnCode_TS_SUCCESS && !obj.is_null() {
            let _ = AUDIT.set(obj as usize);
        }
        Ok(())
    })();
}

fn audit(txn_id: u64, what: &str) {
    let _ = (|| -> Result<(), Code> {
        let obj = *AUDIT.get().ok_or(Code::Declined)?;
        let write = ts_fn!(TSTextLogObjectWrite);
        let line = format!("[txn {txn_id}] {}", what.replace(['\n', '\r'], " ").replace('\0', "\\0"));
        let line = CString::new(line).map_err(|_| Code::Internal)?;
        // SAFETY: a "%s" format with one C string; TSTextLogObjectWrite is thread-safe.
        unsafe { write(obj as sys::TSTextLogObject, c"%s".as_ptr(), line.as_ptr()) };
        Ok(())
    })();
}

/// libmodsecurity's log callback (text form): `data` is the `WafTxn` the transaction was
/// created with, alive for as long as the libmodsecurity transaction.
unsafe extern "C" fn log_cb(data: *mut c_void, msg: *const c_void) {
    let _ = std::panic::catch_unwind(|| unsafe {
        let t = (data as *const WafTxn).as_ref();
        if let (Some(t), false) = (t, msg.is_null()) {
            audit(t.id, &CStr::from_ptr(msg as *const c_char).to_string_lossy());
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Transactions.

/// The request as the client sent it, copied at `protect` time.
#[derive(Default)]
struct Request {
    client: (String, u16),
    server: (String, u16),
    method: String,
    uri: String,
    version: String,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Content-Length as sent (None: absent or unreadable).
    content_length: Option<i64>,
    /// Transfer-Encoding ends in `chunked`.
    chunked: bool,
}

impl Request {
    /// Whether ATS will buffer a body for this request (as HTTP/1.x decides it).
    fn has_body(&self) -> bool {
        self.chunked || self.content_length.is_some_and(|n| n > 0)
    }

    fn framing_of(headers: &[(Vec<u8>, Vec<u8>)]) -> (Option<i64>, bool) {
        let (mut cl, mut chunked) = (None, false);
        for (k, v) in headers {
            if k.eq_ignore_ascii_case(b"content-length") {
                cl = std::str::from_utf8(v).ok().and_then(|s| s.trim().parse::<i64>().ok());
            } else if k.eq_ignore_ascii_case(b"transfer-encoding") {
                let last = v.rsplit(|&b| b == b',').next().unwrap_or(&[]);
                chunked = String::from_utf8_lossy(last).trim().eq_ignore_ascii_case("chunked");
            }
        }
        (cl, chunked)
    }
}

/// Decodes a chunked body (chunk extensions and trailers are skipped). `None`: malformed or
/// incomplete.
pub fn dechunk(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let line_end = |from: usize| -> Option<usize> {
        raw.get(from..)?.windows(2).position(|w| w == b"\r\n").map(|i| from + i)
    };
    loop {
        let end = line_end(pos)?;
        let line = raw.get(pos..end)?;
        let hex = line.split(|&b| b == b';').next().unwrap_or(&[]);
        let hex = std::str::from_utf8(hex).ok()?.trim();
        if hex.is_empty() || hex.len() > 15 {
            return None;
        }
        let size = usize::from_str_radix(hex, 16).ok()?;
        pos = end + 2;
        if size == 0 {
            return Some(out);
        }
        let data_end = pos.checked_add(size)?;
        out.extend_from_slice(raw.get(pos..data_end)?);
        if raw.get(data_end..data_end + 2)? != b"\r\n" {
            return None;
        }
        pos = data_end + 2;
    }
}

struct Response {
    status: i32,
    version: String,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Response {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| String::from_utf8_lossy(v).trim().to_ascii_lowercase())
    }

    /// Whether the body is one to inspect: a status with a body, an inspected media type
    /// (`types`, lower case), and not content-encoded (compressed bytes match no rule).
    fn body_inspected(&self, types: &[String]) -> bool {
        if matches!(self.status, 100..=199 | 204 | 304) {
            return false;
        }
        if self.header("content-encoding").is_some_and(|e| !e.is_empty() && e != "identity") {
            return false;
        }
        let media = self.header("content-type").unwrap_or_default();
        let media = media.split(';').next().unwrap_or("").trim();
        types.iter().any(|t| t == media)
    }
}

/// What one phase decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allow,
    Deny { status: i32 },
    Redirect { status: i32, url: String },
    /// The engine could not inspect: the fail policy decides.
    Fail(String),
}

/// Maps a libmodsecurity intervention to a verdict (`None`: not disruptive).
pub fn verdict_of(disruptive: bool, status: i32, url: Option<String>) -> Option<Verdict> {
    if !disruptive {
        return None;
    }
    Some(match url {
        Some(url) if !url.is_empty() => {
            Verdict::Redirect { status: if (300..400).contains(&status) { status } else { 302 }, url }
        }
        _ => Verdict::Deny { status: if (400..600).contains(&status) { status } else { 403 } },
    })
}

/// What the fail policy makes of a failure.
pub fn on_failure(fail_open: bool) -> Verdict {
    if fail_open { Verdict::Allow } else { Verdict::Deny { status: 503 } }
}

/// What SEND_RESPONSE_HDR changes in the client response after a verdict.
struct Rewrite {
    status: i32,
    location: Option<String>,
    /// The body was replaced by ts_ffi's own (text/html): the origin's entity headers go.
    replaced: bool,
}

struct Inner {
    /// The libmodsecurity transaction (null until the first phase).
    msc: *mut c_void,
    /// Rewrite of the client response at SEND_RESPONSE_HDR.
    rewrite: Option<Rewrite>,
    /// A phase already ended the transaction's inspection (denied or redirected).
    decided: bool,
    /// The request as captured by `protect`, until the request phase takes it.
    request: Option<Request>,
    /// The request body phase (2) waits for REQUEST_BUFFER_READ_COMPLETE.
    body_pending: bool,
    /// A task's verdict for the verdict continuation.
    pending: Option<Verdict>,
    /// The response whose body is held back, until the body's task runs phase 3 on it.
    response: Option<Response>,
}

// SAFETY: the libmodsecurity transaction is only used under the `inner` mutex.
unsafe impl Send for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.msc.is_null() {
            if let Ok(m) = msc::get() {
                // SAFETY: the last owner frees the transaction; nobody is inside it (mutex).
                unsafe { (m.f.msc_transaction_cleanup)(self.msc) };
            }
        }
    }
}

/// One protected transaction.
struct WafTxn {
    engine: Arc<Engine>,
    id: u64,
    fail_open: bool,
    inner: Mutex<Inner>,
    /// TXN_CLOSE has run: nothing may touch the ATS transaction any more.
    closed: AtomicBool,
    /// The task thread that ran the first phase (0: none yet), as an address: later phases go
    /// to it, so that libmodsecurity's allocations for the transaction are made and freed on
    /// one thread (glibc frees from another thread are slower) and its data stays in one cache.
    task_thread: std::sync::atomic::AtomicUsize,
    /// The hook continuation (to add SEND_RESPONSE_HDR later), as an address.
    hook_cont: usize,
    /// The verdict continuation (see `hand_back`), as an address.
    verdict_cont: usize,
    /// Largest request body inspected (decoded bytes); beyond it the answer is 413.
    body_limit: i64,
    /// The request body is chunk-encoded in ATS's buffer.
    chunked: bool,
    /// Response bodies: the bytes inspected (0: none) and the media types (lower case).
    response_body_limit: usize,
    response_body_types: Vec<String>,
    /// A HEAD request (its response has no body).
    head: bool,
}

enum Phase {
    /// Connection, URI, headers; and phase 2 (without a body) when `.1` is true.
    Request(Request, bool),
    /// The decoded request body, then phase 2.
    Body(Vec<u8>),
    /// Response status and headers (phase 3), then phase 4 without a body.
    Response(Response),
    /// The response headers kept in `Inner::response` (phase 3), then the first bytes of the
    /// body (phase 4): one task for both saves a round trip between threads.
    ResponseBody(Vec<u8>),
    Close { status: i32 },
}

struct Job {
    t: Arc<WafTxn>,
    phase: Phase,
    txn: usize,
    verdict: Verdict,
    /// The verdict goes to a held response body (phase 4) instead of the transaction.
    resume: Option<body::Resume>,
}

impl Job {
    fn new(t: Arc<WafTxn>, phase: Phase, txn: TSHttpTxn) -> Box<Job> {
        Box::new(Job { t, phase, txn: txn as usize, verdict: Verdict::Allow, resume: None })
    }
}

fn fault_injected() -> bool {
    static FAULT: OnceLock<bool> = OnceLock::new();
    // SAFETY: getenv's result is read at once.
    *FAULT.get_or_init(|| unsafe {
        let p = libc::getenv(c"TS_FFI_WAF_FAULT".as_ptr());
        !p.is_null() && CStr::from_ptr(p).to_bytes() == b"engine"
    })
}

/// Runs one phase in libmodsecurity (on a task thread, `inner` locked by the caller).
fn run_phase(t: &WafTxn, inner: &mut Inner, phase: &Phase) -> Verdict {
    let m = match msc::get() {
        Ok(m) => m,
        Err(e) => return Verdict::Fail(e),
    };
    let f = &m.f;
    if inner.msc.is_null() {
        if matches!(phase, Phase::Close { .. }) {
            return Verdict::Allow;
        }
        if matches!(phase, Phase::Body(_) | Phase::ResponseBody(_)) {
            return Verdict::Fail("no transaction for the body phase".into());
        }
        if fault_injected() {
            return Verdict::Fail("fault injected (TS_FFI_WAF_FAULT=engine)".into());
        }
        // SAFETY: the rule set lives as long as `t.engine`, which outlives `inner`.
        inner.msc = unsafe { m.new_transaction(t.engine.rules.ptr, t as *const WafTxn as *mut c_void) };
        if inner.msc.is_null() {
            return Verdict::Fail("msc_new_transaction failed".into());
        }
    }
    let tx = inner.msc;
    let cstr = |s: &str| CString::new(s.replace('\0', "")).unwrap_or_default();
    // SAFETY: C API calls on our transaction with NUL-terminated strings and sized buffers.
    let check = || -> Option<Verdict> {
        let mut it = Intervention::clean();
        let disruptive = unsafe { (f.msc_intervention)(tx, &mut it) } != 0;
        let (url, log) = it.take_strings();
        let v = verdict_of(disruptive, it.status, url);
        if let (Some(v), Some(log)) = (&v, log) {
            audit(t.id, &format!("intervention {v:?}: {log}"));
        }
        v
    };
    // A body phase (2 or 4): the body, if any, then the phase.
    let body_phase = |append: msc::AppendFn, process: msc::TxnFn, body: &[u8]| -> Verdict {
        unsafe {
            if !body.is_empty() {
                append(tx, body.as_ptr(), body.len());
                if let Some(v) = check() {
                    return v;
                }
            }
            process(tx);
        }
        check().unwrap_or(Verdict::Allow)
    };
    // Phase 3: the response status and headers.
    let response_headers = |r: &Response| -> Option<Verdict> {
        unsafe {
            for (k, v) in &r.headers {
                (f.msc_add_n_response_header)(tx, k.as_ptr(), k.len(), v.as_ptr(), v.len());
            }
            let proto = cstr(&format!("HTTP {}", r.version));
            (f.msc_process_response_headers)(tx, r.status, proto.as_ptr());
        }
        check()
    };
    unsafe {
        match phase {
            Phase::Request(r, with_body_phase) => {
                let (ci, si) = (cstr(&r.client.0), cstr(&r.server.0));
                (f.msc_process_connection)(tx, ci.as_ptr(), r.client.1.into(), si.as_ptr(), r.server.1.into());
                if let Some(v) = check() {
                    return v;
                }
                let (uri, method, version) = (cstr(&r.uri), cstr(&r.method), cstr(&r.version));
                (f.msc_process_uri)(tx, uri.as_ptr(), method.as_ptr(), version.as_ptr());
                if let Some(v) = check() {
                    return v;
                }
                for (k, v) in &r.headers {
                    (f.msc_add_n_request_header)(tx, k.as_ptr(), k.len(), v.as_ptr(), v.len());
                }
                (f.msc_process_request_headers)(tx);
                if let Some(v) = check() {
                    return v;
                }
                if !*with_body_phase {
                    // Phase 2 runs with the body, at REQUEST_BUFFER_READ_COMPLETE.
                    return Verdict::Allow;
                }
                // Phase 2 without a body (ARGS from the query string among others).
                (f.msc_process_request_body)(tx);
                check().unwrap_or(Verdict::Allow)
            }
            Phase::Body(body) => body_phase(f.msc_append_request_body, f.msc_process_request_body, body),
            Phase::Response(r) => {
                if let Some(v) = response_headers(r) {
                    return v;
                }
                (f.msc_process_response_body)(tx);
                check().unwrap_or(Verdict::Allow)
            }
            Phase::ResponseBody(body) => {
                if let Some(v) = inner.response.take().and_then(|r| response_headers(&r)) {
                    return v;
                }
                body_phase(f.msc_append_response_body, f.msc_process_response_body, body)
            }
            Phase::Close { status } => {
                if *status > 0 {
                    (f.msc_update_status_code)(tx, *status);
                }
                (f.msc_process_logging)(tx);
                Verdict::Allow
            }
        }
    }
}

/// Queues `job` on a task thread; gives it back if ATS refuses.
unsafe fn schedule_task(job: Box<Job>) -> Result<(), Box<Job>> {
    let fns = (|| Ok::<_, Code>((
        ts_fn!(TSContCreate),
        ts_fn!(TSMutexCreate),
        ts_fn!(TSContDataSet),
        ts_fn!(TSContScheduleOnPool),
        ts_fn!(TSContScheduleOnThread),
        ts_fn!(TSContDestroy),
    )))();
    let Ok((create, mutex_create, data_set, sched, sched_on, destroy)) = fns else { return Err(job) };
    let thread = job.t.task_thread.load(Ordering::Acquire);
    // SAFETY: the job is the continuation's data until its handler takes it back.
    unsafe {
        let cont = create(Some(task_handler), mutex_create());
        if cont.is_null() {
            return Err(job);
        }
        let raw = Box::into_raw(job);
        data_set(cont, raw as *mut c_void);
        let action = if thread != 0 {
            sched_on(cont, 0, thread as sys::TSEventThread)
        } else {
            sched(cont, 0, sys::TSThreadPool_TS_THREAD_POOL_TASK)
        };
        if action.is_null() {
            destroy(cont);
            return Err(Box::from_raw(raw));
        }
    }
    Ok(())
}

/// Puts the calling task thread in Linux's SCHED_IDLE class, once per thread: it then gets
/// the CPU only when the network threads (all traffic, protected or not) leave it, so WAF load
/// does not slow the requests that skip the WAF (measured in `make bench`: their p99 at half
/// the WAF's capacity 1.36x the no-WAF figure, against 3.9x at the default priority and 2.4x
/// at nice 10). Needs no privilege; a failure leaves the thread as it was.
fn lower_priority() {
    thread_local!(static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    DONE.with(|done| {
        if !done.replace(true) {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: changes the calling thread's own policy (pid 0: this thread on Linux).
            unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        }
    });
}

unsafe extern "C" fn task_handler(contp: TSCont, _event: TSEvent, _edata: *mut c_void) -> c_int {
    lower_priority();
    let _ = std::panic::catch_unwind(|| unsafe {
        let raw = ts_fn!(TSContDataGet)(contp) as *mut Job;
        ts_fn!(TSContDestroy)(contp);
        if raw.is_null() {
            return Ok::<(), Code>(());
        }
        let mut job = Box::from_raw(raw);
        let _ = job.t.task_thread.compare_exchange(0, ts_fn!(TSEventThreadSelf)() as usize, Ordering::AcqRel, Ordering::Acquire);
        {
            let mut inner = lock(&job.t.inner);
            job.verdict = if matches!(job.phase, Phase::Close { .. }) || !inner.decided {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_phase(&job.t, &mut inner, &job.phase)))
                    .unwrap_or_else(|_| Verdict::Fail("internal error".into()))
            } else {
                Verdict::Allow
            };
            if let Verdict::Fail(why) = &job.verdict {
                audit(job.t.id, &format!("engine failure ({why}); fail-{}", if job.t.fail_open { "open" } else { "closed" }));
            }
            if matches!(job.verdict, Verdict::Deny { .. } | Verdict::Redirect { .. }) {
                inner.decided = true;
            }
            if let Phase::Close { .. } = job.phase {
                // The libmodsecurity transaction is freed with the last reference.
                return Ok(());
            }
        }
        if let Some(resume) = job.resume.take() {
            resume.resume(body_decision(&job.t, job.verdict.clone()));
            return Ok(());
        }
        hand_back(job)
    });
    0
}

/// Hands the verdict to the transaction's thread: it is stored for the verdict continuation,
/// which sits right after the hook continuation at the same hook, and the transaction is
/// re-enabled from here (TSHttpTxnReenable may be called from any thread: it schedules the
/// transaction's own continuation, with its own mutex, on the transaction's thread). The
/// verdict continuation then applies the verdict there.
///
/// Why not a continuation of ts_ffi's own scheduled onto the transaction's thread: every
/// TSContSchedule* call holds that continuation's mutex while it wakes the target thread, and
/// the woken thread, failing to take it, puts the event back for 10 ms (EThread::process_event,
/// DELAY_FOR_RETRY in ATS 9.2). Measured: 8–10 ms on most hand-backs of lone requests.
unsafe fn hand_back(job: Box<Job>) -> Result<(), Code> {
    lock(&job.t.inner).pending = Some(job.verdict.clone());
    // SAFETY: the transaction waits at its hook for this re-enable, so it is alive.
    unsafe { ts_fn!(TSHttpTxnReenable)(job.txn as TSHttpTxn, sys::TSEvent_TS_EVENT_HTTP_CONTINUE) };
    Ok(())
}

/// The verdict continuation: applies the verdict a task left (on the transaction's thread).
unsafe extern "C" fn verdict_handler(contp: TSCont, _event: TSEvent, edata: *mut c_void) -> c_int {
    let txn = edata as TSHttpTxn;
    let r = std::panic::catch_unwind(|| unsafe {
        let data = ts_fn!(TSContDataGet)(contp) as *const WafTxn;
        // The hook continuation keeps a reference until TXN_CLOSE.
        if data.is_null() {
            return Ok::<bool, Code>(false);
        }
        // SAFETY: a reference of this call's own.
        let t = {
            Arc::increment_strong_count(data);
            Arc::from_raw(data)
        };
        let pending = lock(&t.inner).pending.take();
        match pending {
            Some(verdict) => apply(&t, txn, verdict, false).map(|()| true),
            None => Ok(false),
        }
    });
    if !matches!(r, Ok(Ok(true))) {
        if let Ok(reenable) = (|| Ok::<_, Code>(ts_fn!(TSHttpTxnReenable)))() {
            // SAFETY: the hook's own transaction.
            unsafe { reenable(txn, sys::TSEvent_TS_EVENT_HTTP_CONTINUE) };
        }
    }
    0
}

/// What a verdict on a held response body makes of it; a replaced body gets its status (and
/// Location) at SEND_RESPONSE_HDR.
fn body_decision(t: &WafTxn, verdict: Verdict) -> body::Decision {
    let verdict = match verdict {
        Verdict::Fail(_) => on_failure(t.fail_open),
        v => v,
    };
    let (status, location) = match verdict {
        Verdict::Allow | Verdict::Fail(_) => return body::Decision::Pass,
        // The response body phase cannot close the connection (see CLOSE_STATUS): a plain 403.
        Verdict::Deny { status: CLOSE_STATUS } => (403, None),
        Verdict::Deny { status } => (status, None),
        Verdict::Redirect { status, url } => (status, Some(url)),
    };
    lock(&t.inner).rewrite = Some(Rewrite { status, location, replaced: true });
    body::Decision::Replace(DENY_BODY.as_bytes().to_vec())
}

/// Holds the response body back for phases 3 and 4 (see `Phase::ResponseBody`).
struct HeldBody {
    t: Arc<WafTxn>,
}

impl body::Inspector for HeldBody {
    fn inspect(self: Box<Self>, head: Vec<u8>, _complete: bool, resume: body::Resume) {
        // No transaction in the job: its verdict goes to `resume`, not to a hook.
        let mut job = Job::new(self.t, Phase::ResponseBody(head), std::ptr::null_mut());
        job.resume = Some(resume);
        if let Err(mut job) = unsafe { schedule_task(job) } {
            audit(job.t.id, "cannot queue a task for the response body; fail policy applies");
            if let Some(resume) = job.resume.take() {
                resume.resume(body_decision(&job.t, Verdict::Fail("task queue refused the job".into())));
            }
        }
    }
}

const DENY_BODY: &str = "<html><head><title>Forbidden</title></head><body><h1>Request denied</h1>\
<p>This request was blocked by the web application firewall.</p></body></html>\n";
const TOO_LARGE_BODY: &str = "<html><head><title>Request Entity Too Large</title></head><body>\
<h1>Request Entity Too Large</h1><p>The request body is larger than the web application firewall \
inspects.</p></body></html>\n";
const BAD_BODY: &str = "<html><head><title>Bad Request</title></head><body><h1>Bad Request</h1>\
<p>The request body's chunked encoding is malformed.</p></body></html>\n";

/// A rule's `status:444` (nginx's convention) closes the client connection without a response:
/// libmodsecurity 3.0.9 turns `drop` into a plain deny, so this is how a rule really drops.
pub const CLOSE_STATUS: i32 = 444;

/// Shuts the client connection down (FIN both ways) on the transaction's thread, while the
/// transaction still owns the descriptor: ATS then sees the connection end and closes it. An
/// HTTP/2 connection goes as a whole.
unsafe fn close_client(txn: TSHttpTxn) {
    let Ok(fd_get) = (|| Ok::<_, Code>(ts_fn!(TSHttpTxnClientFdGet)))() else { return };
    let mut fd: c_int = -1;
    // SAFETY: the descriptor belongs to the live transaction (we are on its thread, before
    // re-enabling it); shutdown does not close it, so it cannot be reused under ATS.
    unsafe {
        if fd_get(txn, &mut fd) == sys::TSReturnCode_TS_SUCCESS && fd >= 0 {
            libc::shutdown(fd, libc::SHUT_RDWR);
        }
    }
}

/// Applies a verdict on the transaction's thread and re-enables it; `body_next`: an allowed
/// response's body is held back for phase 4.
unsafe fn apply(t: &Arc<WafTxn>, txn: TSHttpTxn, verdict: Verdict, body_next: bool) -> Result<(), Code> {
    if t.closed.load(Ordering::Acquire) {
        return Ok(());
    }
    let reenable = ts_fn!(TSHttpTxnReenable);
    let verdict = match verdict {
        Verdict::Fail(_) => on_failure(t.fail_open),
        v => v,
    };
    unsafe {
        let (status, location) = match verdict {
            Verdict::Allow | Verdict::Fail(_) => {
                if body_next {
                    let held = Box::new(HeldBody { t: Arc::clone(t) });
                    if body::hold_response(txn, held, t.response_body_limit).is_ok() {
                        ts_fn!(TSHttpTxnHookAdd)(txn, sys::TSHttpHookID_TS_HTTP_SEND_RESPONSE_HDR_HOOK, t.hook_cont as TSCont);
                    } else {
                        audit(t.id, "cannot hold the response body back; the response is not inspected");
                    }
                }
                reenable(txn, sys::TSEvent_TS_EVENT_HTTP_CONTINUE);
                return Ok(());
            }
            Verdict::Deny { status: CLOSE_STATUS } => {
                close_client(txn);
                (403, None)
            }
            Verdict::Deny { status } => (status, None),
            Verdict::Redirect { status, url } => (status, Some(url)),
        };
        let (status_set, body_set, strdup) =
            (ts_fn!(TSHttpTxnStatusSet), ts_fn!(TSHttpTxnErrorBodySet), ts_fn!(_TSstrdup));
        // An error jump answers with the status set here when it is >= 400; anything else
        // (redirects) is rewritten at SEND_RESPONSE_HDR.
        status_set(txn, if status >= 400 { status as sys::TSHttpStatus } else { 403 });
        if status < 400 || location.is_some() {
            lock(&t.inner).rewrite = Some(Rewrite { status, location, replaced: false });
            ts_fn!(TSHttpTxnHookAdd)(txn, sys::TSHttpHookID_TS_HTTP_SEND_RESPONSE_HDR_HOOK, t.hook_cont as TSCont);
        }
        let text = match status {
            413 => TOO_LARGE_BODY,
            400 => BAD_BODY,
            _ => DENY_BODY,
        };
        let body = strdup(text.as_ptr() as *const c_char, text.len() as i64, c"ts_ffi_waf".as_ptr());
        let mime = strdup(c"text/html".as_ptr(), -1, c"ts_ffi_waf".as_ptr());
        body_set(txn, body, text.len(), mime);
        reenable(txn, sys::TSEvent_TS_EVENT_HTTP_ERROR);
    }
    Ok(())
}

// --- Reading the transaction (on its thread) -------------------------------------------------

unsafe fn text(p: *const c_char, len: c_int) -> String {
    if p.is_null() || len <= 0 {
        return String::new();
    }
    String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(p as *const u8, len as usize) }).into_owned()
}

unsafe fn headers_of(buf: TSMBuffer, hdr: TSMLoc) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Code> {
    let (count, get, name, value, release) = (
        ts_fn!(TSMimeHdrFieldsCount),
        ts_fn!(TSMimeHdrFieldGet),
        ts_fn!(TSMimeHdrFieldNameGet),
        ts_fn!(TSMimeHdrFieldValueStringGet),
        ts_fn!(TSHandleMLocRelease),
    );
    let mut out = Vec::new();
    unsafe {
        for i in 0..count(buf, hdr) {
            let field = get(buf, hdr, i);
            if field.is_null() {
                continue;
            }
            let (mut nl, mut vl) = (0, 0);
            let n = name(buf, hdr, field, &mut nl);
            let v = value(buf, hdr, field, -1, &mut vl);
            let bytes = |p: *const c_char, l: c_int| {
                if p.is_null() || l <= 0 { Vec::new() } else { std::slice::from_raw_parts(p as *const u8, l as usize).to_vec() }
            };
            out.push((bytes(n, nl), bytes(v, vl)));
            release(buf, hdr, field);
        }
    }
    Ok(out)
}

fn version_text(v: c_int) -> String {
    format!("{}.{}", (v >> 16) & 0xffff, v & 0xffff)
}

unsafe fn addr_of(sa: *const libc::sockaddr) -> (String, u16) {
    match unsafe { crate::addr::from_sockaddr(sa) } {
        Some(a) => (a.ip().to_string(), a.port()),
        None => (String::new(), 0),
    }
}

unsafe fn capture_request(txn: TSHttpTxn) -> Result<Request, Code> {
    let (req_get, method_get, version_get, url_get, path_get, params_get, query_get, release) = (
        ts_fn!(TSHttpTxnClientReqGet),
        ts_fn!(TSHttpHdrMethodGet),
        ts_fn!(TSHttpHdrVersionGet),
        ts_fn!(TSHttpHdrUrlGet),
        ts_fn!(TSUrlPathGet),
        ts_fn!(TSUrlHttpParamsGet),
        ts_fn!(TSUrlHttpQueryGet),
        ts_fn!(TSHandleMLocRelease),
    );
    let (client_addr, incoming_addr) = (ts_fn!(TSHttpTxnClientAddrGet), ts_fn!(TSHttpTxnIncomingAddrGet));
    unsafe {
        let mut buf: TSMBuffer = std::ptr::null_mut();
        let mut hdr: TSMLoc = std::ptr::null_mut();
        if req_get(txn, &mut buf, &mut hdr) != sys::TSReturnCode_TS_SUCCESS {
            return Err(Code::Declined);
        }
        let mut r = Request::default();
        let mut len = 0;
        r.method = text(method_get(buf, hdr, &mut len), len);
        r.version = version_text(version_get(buf, hdr));
        let mut url: TSMLoc = std::ptr::null_mut();
        let mut uri = String::from("/");
        if url_get(buf, hdr, &mut url) == sys::TSReturnCode_TS_SUCCESS {
            uri.push_str(&text(path_get(buf, url, &mut len), len));
            let params = text(params_get(buf, url, &mut len), len);
            if !params.is_empty() {
                uri.push(';');
                uri.push_str(&params);
            }
            let q = query_get(buf, url, &mut len);
            if !q.is_null() {
                uri.push('?');
                uri.push_str(&text(q, len));
            }
            release(buf, hdr, url);
        }
        r.uri = uri;
        r.headers = headers_of(buf, hdr)?;
        (r.content_length, r.chunked) = Request::framing_of(&r.headers);
        release(buf, std::ptr::null_mut(), hdr);
        r.client = addr_of(client_addr(txn) as *const libc::sockaddr);
        r.server = addr_of(incoming_addr(txn) as *const libc::sockaddr);
        Ok(r)
    }
}

/// Which response header `capture_response` reads.
#[derive(PartialEq)]
enum Source {
    Server,
    Cache,
    /// The client's (status only).
    Client,
}

/// Whether CACHE_LOOKUP_COMPLETE found a fresh object (served without the origin).
unsafe fn fresh_cache_hit(txn: TSHttpTxn) -> bool {
    let Ok(get) = (|| Ok::<_, Code>(ts_fn!(TSHttpTxnCacheLookupStatusGet)))() else { return false };
    let mut status: c_int = -1;
    // SAFETY: reads the lookup status of the hook's transaction.
    let ok = unsafe { get(txn, &mut status) } == sys::TSReturnCode_TS_SUCCESS;
    ok && status == sys::TSCacheLookupResult_TS_CACHE_LOOKUP_HIT_FRESH as c_int
}

unsafe fn capture_response(txn: TSHttpTxn, source: Source) -> Result<Response, Code> {
    let client = source == Source::Client;
    let get = match source {
        Source::Server => ts_fn!(TSHttpTxnServerRespGet),
        Source::Cache => ts_fn!(TSHttpTxnCachedRespGet),
        Source::Client => ts_fn!(TSHttpTxnClientRespGet),
    };
    let (status_get, version_get, release) =
        (ts_fn!(TSHttpHdrStatusGet), ts_fn!(TSHttpHdrVersionGet), ts_fn!(TSHandleMLocRelease));
    unsafe {
        let mut buf: TSMBuffer = std::ptr::null_mut();
        let mut hdr: TSMLoc = std::ptr::null_mut();
        if get(txn, &mut buf, &mut hdr) != sys::TSReturnCode_TS_SUCCESS {
            return Err(Code::Declined);
        }
        let status = status_get(buf, hdr) as i32;
        let version = version_text(version_get(buf, hdr));
        let headers = if client { Vec::new() } else { headers_of(buf, hdr)? };
        release(buf, std::ptr::null_mut(), hdr);
        Ok(Response { status, version, headers })
    }
}

/// Headers of the origin's entity that do not describe ts_ffi's replacement body.
const ENTITY_HEADERS: [&CStr; 7] =
    [c"Content-Length", c"Content-Encoding", c"Content-Range", c"ETag", c"Last-Modified", c"Content-Disposition", c"Location"];

/// SEND_RESPONSE_HDR after a verdict that could not use an error response (a redirect, a
/// status below 400, a replaced response body): status, reason, Location, entity headers.
unsafe fn rewrite_response(txn: TSHttpTxn, r: &Rewrite) -> Result<(), Code> {
    let (status, location) = (r.status, r.location.as_deref());
    let (get, status_set, reason_set, reason_lookup, release) = (
        ts_fn!(TSHttpTxnClientRespGet),
        ts_fn!(TSHttpHdrStatusSet),
        ts_fn!(TSHttpHdrReasonSet),
        ts_fn!(TSHttpHdrReasonLookup),
        ts_fn!(TSHandleMLocRelease),
    );
    let (find, destroy, create, insert, append) = (
        ts_fn!(TSMimeHdrFieldFind),
        ts_fn!(TSMimeHdrFieldDestroy),
        ts_fn!(TSMimeHdrFieldCreateNamed),
        ts_fn!(TSMimeHdrFieldValueStringInsert),
        ts_fn!(TSMimeHdrFieldAppend),
    );
    unsafe {
        let mut buf: TSMBuffer = std::ptr::null_mut();
        let mut hdr: TSMLoc = std::ptr::null_mut();
        if get(txn, &mut buf, &mut hdr) != sys::TSReturnCode_TS_SUCCESS {
            return Err(Code::Declined);
        }
        status_set(buf, hdr, status as sys::TSHttpStatus);
        let reason = reason_lookup(status as sys::TSHttpStatus);
        if !reason.is_null() {
            reason_set(buf, hdr, reason, CStr::from_ptr(reason).to_bytes().len() as c_int);
        }
        let remove = |name: &CStr| loop {
            let f = find(buf, hdr, name.as_ptr(), name.to_bytes().len() as c_int);
            if f.is_null() {
                break;
            }
            destroy(buf, hdr, f);
            release(buf, hdr, f);
        };
        let add = |name: &CStr, value: &str| {
            let mut field: TSMLoc = std::ptr::null_mut();
            if create(buf, hdr, name.as_ptr(), name.to_bytes().len() as c_int, &mut field) == sys::TSReturnCode_TS_SUCCESS {
                insert(buf, hdr, field, -1, value.as_ptr() as *const c_char, value.len() as c_int);
                append(buf, hdr, field);
                release(buf, hdr, field);
            }
        };
        if r.replaced {
            for name in ENTITY_HEADERS {
                remove(name);
            }
            remove(c"Content-Type");
            add(c"Content-Type", "text/html");
        }
        if let Some(loc) = location {
            remove(c"Location");
            add(c"Location", loc);
        }
        release(buf, std::ptr::null_mut(), hdr);
    }
    Ok(())
}

// --- The hook continuation ----------------------------------------------------------------

unsafe extern "C" fn hook_handler(contp: TSCont, event: TSEvent, edata: *mut c_void) -> c_int {
    let txn = edata as TSHttpTxn;
    let r = std::panic::catch_unwind(|| unsafe { on_hook(contp, event, txn) });
    if !matches!(r, Ok(Ok(true))) {
        // Not handed to a task: continue here (the fail policy was applied where it mattered).
        if let Ok(reenable) = api().map(|a| a.TSHttpTxnReenable.as_ref().ok().copied()) {
            if let Some(reenable) = reenable {
                // SAFETY: the hook's own transaction.
                unsafe { reenable(txn, sys::TSEvent_TS_EVENT_HTTP_CONTINUE) };
            }
        }
    }
    0
}

/// The event HttpSM 9.2 passes at TS_HTTP_REQUEST_BUFFER_READ_COMPLETE_HOOK: it invokes every
/// hook with TS_EVENT_HTTP_READ_REQUEST_HDR + the hook id (60029), not with
/// TS_EVENT_HTTP_REQUEST_BUFFER_COMPLETE (60018) as apidefs.h suggests (HttpSM::state_api_callout).
const REQUEST_BUFFER_EVENT: TSEvent =
    sys::TSEvent_TS_EVENT_HTTP_READ_REQUEST_HDR + sys::TSHttpHookID_TS_HTTP_REQUEST_BUFFER_READ_COMPLETE_HOOK as TSEvent;

/// Handles one hook; `Ok(true)` when the transaction was handed over (a job re-enables it).
unsafe fn on_hook(contp: TSCont, event: TSEvent, txn: TSHttpTxn) -> Result<bool, Code> {
    let data = unsafe { ts_fn!(TSContDataGet)(contp) } as *const WafTxn;
    if data.is_null() {
        return Ok(false);
    }
    // SAFETY: the hook continuation holds one reference until TXN_CLOSE; a new one for
    // whoever needs to keep it.
    let t = unsafe {
        Arc::increment_strong_count(data);
        Arc::from_raw(data)
    };
    let t = &t;
    let phase = match event {
        sys::TSEvent_TS_EVENT_HTTP_POST_REMAP => {
            let req = lock(&t.inner).request.take();
            match req {
                Some(r) if r.content_length.is_some_and(|n| n > t.body_limit) => {
                    audit(t.id, &format!("request body of {} bytes over the limit of {}: 413",
                        r.content_length.unwrap_or(0), t.body_limit));
                    lock(&t.inner).decided = true;
                    unsafe { apply(t, txn, Verdict::Deny { status: 413 }, false)? };
                    return Ok(true);
                }
                Some(r) => {
                    let body = r.has_body() && t.body_limit != i64::MAX;
                    lock(&t.inner).body_pending = body;
                    Phase::Request(r, !body)
                }
                None => return Ok(false),
            }
        }
        REQUEST_BUFFER_EVENT => {
            {
                let mut inner = lock(&t.inner);
                if inner.decided || !inner.body_pending {
                    return Ok(false);
                }
                inner.body_pending = false;
            }
            match unsafe { read_body(t, txn) } {
                Ok(body) => Phase::Body(body),
                Err(status) => {
                    audit(t.id, &format!("request body refused: {status}"));
                    lock(&t.inner).decided = true;
                    unsafe { apply(t, txn, Verdict::Deny { status }, false)? };
                    return Ok(true);
                }
            }
        }
        sys::TSEvent_TS_EVENT_HTTP_READ_RESPONSE_HDR | sys::TSEvent_TS_EVENT_HTTP_CACHE_LOOKUP_COMPLETE => {
            if lock(&t.inner).decided {
                return Ok(false);
            }
            let from_cache = event == sys::TSEvent_TS_EVENT_HTTP_CACHE_LOOKUP_COMPLETE;
            if from_cache && !unsafe { fresh_cache_hit(txn) } {
                // A miss or a stale hit: the origin's response comes to READ_RESPONSE_HDR.
                return Ok(false);
            }
            match unsafe { capture_response(txn, if from_cache { Source::Cache } else { Source::Server }) } {
                Ok(r) if t.response_body_limit > 0 && !t.head && r.body_inspected(&t.response_body_types) => {
                    // Phases 3 and 4 both run when the body has been held back.
                    lock(&t.inner).response = Some(r);
                    unsafe { apply(t, txn, Verdict::Allow, true)? };
                    return Ok(true);
                }
                Ok(r) => Phase::Response(r),
                Err(_) => return Ok(false),
            }
        }
        sys::TSEvent_TS_EVENT_HTTP_SEND_RESPONSE_HDR => {
            let rewrite = lock(&t.inner).rewrite.take();
            if let Some(r) = rewrite {
                let _ = unsafe { rewrite_response(txn, &r) };
            }
            return Ok(false);
        }
        sys::TSEvent_TS_EVENT_HTTP_TXN_CLOSE => {
            t.closed.store(true, Ordering::Release);
            let status = unsafe { capture_response(txn, Source::Client) }.map(|r| r.status).unwrap_or(0);
            // SAFETY: the hook continuation's reference, released here with the continuation.
            let t = unsafe { Arc::from_raw(data) };
            unsafe {
                for c in [contp, t.verdict_cont as TSCont] {
                    ts_fn!(TSContDataSet)(c, std::ptr::null_mut());
                    ts_fn!(TSContDestroy)(c);
                }
            }
            let job = Job::new(t, Phase::Close { status }, std::ptr::null_mut());
            // If no task thread takes it, logging is skipped; the transaction is still freed
            // (by the last reference, after any running phase: the mutex).
            let _ = unsafe { schedule_task(job) };
            return Ok(false);
        }
        _ => return Ok(false),
    };
    let job = Job::new(Arc::clone(t), phase, txn);
    match unsafe { schedule_task(job) } {
        Ok(()) => Ok(true),
        Err(job) => {
            audit(job.t.id, "cannot queue a task; fail policy applies");
            unsafe { apply(&job.t, txn, Verdict::Fail("task queue refused the job".into()), false)? };
            Ok(true)
        }
    }
}

/// ATS's own bound on its request buffer (proxy.config.http.post_copy_size, a global record,
/// 2048 bytes by default): HttpTunnel fails a buffered body larger than this, so the
/// effective limit is the smaller of it and `request_body_limit`.
fn post_copy_size() -> i64 {
    let Ok(get) = (|| Ok::<_, Code>(ts_fn!(TSMgmtIntGet)))() else { return i64::MAX };
    let mut v: sys::TSMgmtInt = 0;
    // SAFETY: reads one integer record into `v`.
    if unsafe { get(c"proxy.config.http.post_copy_size".as_ptr(), &mut v) } == sys::TSReturnCode_TS_SUCCESS && v >= 0 {
        v
    } else {
        i64::MAX
    }
}

/// Copies the buffered request body (on the transaction's thread), decoded; `Err(status)`:
/// 413 over the limit, 400 malformed chunked encoding.
unsafe fn read_body(t: &WafTxn, txn: TSHttpTxn) -> Result<Vec<u8>, i32> {
    let fns = (|| {
        Ok::<_, Code>((
            ts_fn!(TSHttpTxnPostBufferReaderGet),
            ts_fn!(TSIOBufferReaderAvail),
            ts_fn!(TSIOBufferReaderCopy),
            ts_fn!(TSIOBufferReaderFree),
        ))
    })();
    let Ok((reader_get, avail, copy, free)) = fns else { return Err(503) };
    let limit = t.body_limit.max(0);
    // Raw bytes worth reading: the limit, plus room for chunk framing.
    let cap = if t.chunked { limit.saturating_mul(2).saturating_add(65536) } else { limit };
    unsafe {
        let reader = reader_get(txn);
        if reader.is_null() {
            return Ok(Vec::new());
        }
        let n = avail(reader).max(0);
        let result = if n > cap {
            Err(413)
        } else {
            let mut raw = vec![0u8; n as usize];
            let got = copy(reader, raw.as_mut_ptr() as *mut c_void, n).clamp(0, n);
            raw.truncate(got as usize);
            Ok(raw)
        };
        free(reader);
        let raw = result?;
        let body = if t.chunked { dechunk(&raw).ok_or(400)? } else { raw };
        if body.len() as i64 > limit { Err(413) } else { Ok(body) }
    }
}

// --- protect ---------------------------------------------------------------------------------

/// Flag bits of `ts_ffi_waf_protect`.
pub const FLAG_FAIL_OPEN: c_int = 1;
pub const FLAG_NO_RESPONSE: c_int = 2;
/// No request body inspection (no ATS request buffering): phase 2 runs without the body.
pub const FLAG_NO_REQUEST_BODY: c_int = 4;

/// What `protect` is told about response bodies.
struct ResponseBodies {
    limit: usize,
    types: Vec<String>,
}

fn protect(rec: *const CtxRec, engine_id: u32, flags: c_int, body_limit: i64, bodies: ResponseBodies) -> Result<(), Code> {
    let txn = ctx::txn_of(rec)?;
    let engine = lookup(engine_id).ok_or(Code::BadArg)?;
    let (create, mutex_get, data_set, hook_add, id_get) = (
        ts_fn!(TSContCreate),
        ts_fn!(TSContMutexGet),
        ts_fn!(TSContDataSet),
        ts_fn!(TSHttpTxnHookAdd),
        ts_fn!(TSHttpTxnIdGet),
    );
    // Every function a later phase needs, checked now so that a phase cannot fail on them.
    let _ = (
        ts_fn!(TSContScheduleOnPool),
        ts_fn!(TSContScheduleOnThread),
        ts_fn!(TSEventThreadSelf),
        ts_fn!(TSMutexCreate),
        ts_fn!(TSContDestroy),
        ts_fn!(TSContDataGet),
        ts_fn!(TSHttpTxnReenable),
        ts_fn!(TSHttpTxnStatusSet),
        ts_fn!(TSHttpTxnErrorBodySet),
        ts_fn!(_TSstrdup),
        ts_fn!(TSHttpTxnServerRespGet),
        ts_fn!(TSHttpTxnClientRespGet),
        ts_fn!(TSHttpHdrStatusGet),
        ts_fn!(TSHttpHdrStatusSet),
        ts_fn!(TSHttpHdrReasonSet),
        ts_fn!(TSHttpHdrReasonLookup),
        ts_fn!(TSMimeHdrFieldFind),
        ts_fn!(TSMimeHdrFieldDestroy),
        ts_fn!(TSMimeHdrFieldCreateNamed),
        ts_fn!(TSMimeHdrFieldValueStringInsert),
        ts_fn!(TSMimeHdrFieldAppend),
        ts_fn!(TSHttpTxnPostBufferReaderGet),
        ts_fn!(TSIOBufferReaderAvail),
        ts_fn!(TSIOBufferReaderCopy),
        ts_fn!(TSIOBufferReaderFree),
        ts_fn!(TSHttpTxnCachedRespGet),
        ts_fn!(TSHttpTxnCacheLookupStatusGet),
    );
    let config_set = ts_fn!(TSHttpTxnConfigIntSet);
    let no_body = flags & FLAG_NO_REQUEST_BODY != 0;
    let body_limit = if no_body { i64::MAX } else { body_limit.min(post_copy_size()) };
    msc::get().map_err(|_| Code::Declined)?;
    unsafe {
        let req = capture_request(txn)?;
        let (has_body, chunked) = (req.has_body() && !no_body, req.chunked);
        let head = req.method.eq_ignore_ascii_case("HEAD");
        // ATS reads the whole body before REQUEST_BUFFER_READ_COMPLETE (a Content-Length over
        // the limit is refused at POST_REMAP, before ATS reads it).
        if has_body
            && config_set(txn, sys::TSOverridableConfigKey_TS_CONFIG_HTTP_REQUEST_BUFFER_ENABLED, 1)
                != sys::TSReturnCode_TS_SUCCESS
        {
            return Err(Code::Internal);
        }
        let cont = create(Some(hook_handler), mutex_get(txn as TSCont));
        let verdict_cont = create(Some(verdict_handler), mutex_get(txn as TSCont));
        if cont.is_null() || verdict_cont.is_null() {
            for c in [cont, verdict_cont] {
                if !c.is_null() {
                    ts_fn!(TSContDestroy)(c);
                }
            }
            return Err(Code::Internal);
        }
        let t = Arc::new(WafTxn {
            engine,
            id: id_get(txn),
            fail_open: flags & FLAG_FAIL_OPEN != 0,
            inner: Mutex::new(Inner {
                msc: std::ptr::null_mut(),
                rewrite: None,
                decided: false,
                request: Some(req),
                body_pending: false,
                pending: None,
                response: None,
            }),
            closed: AtomicBool::new(false),
            task_thread: std::sync::atomic::AtomicUsize::new(0),
            hook_cont: cont as usize,
            verdict_cont: verdict_cont as usize,
            body_limit,
            chunked,
            response_body_limit: if flags & FLAG_NO_RESPONSE != 0 { 0 } else { bodies.limit },
            response_body_types: bodies.types,
            head,
        });
        // Both continuations use the hook continuation's reference (see TXN_CLOSE).
        let data = Arc::into_raw(t) as *mut c_void;
        data_set(cont, data);
        data_set(verdict_cont, data);
        // At each hook where a task may run, the verdict continuation comes right after.
        let mut phases = vec![sys::TSHttpHookID_TS_HTTP_POST_REMAP_HOOK];
        if has_body {
            phases.push(sys::TSHttpHookID_TS_HTTP_REQUEST_BUFFER_READ_COMPLETE_HOOK);
        }
        if flags & FLAG_NO_RESPONSE == 0 {
            phases.push(sys::TSHttpHookID_TS_HTTP_CACHE_LOOKUP_COMPLETE_HOOK);
            phases.push(sys::TSHttpHookID_TS_HTTP_READ_RESPONSE_HDR_HOOK);
        }
        for hook in phases {
            hook_add(txn, hook, cont);
            hook_add(txn, hook, verdict_cont);
        }
        hook_add(txn, sys::TSHttpHookID_TS_HTTP_TXN_CLOSE_HOOK, cont);
    }
    Ok(())
}

/// `ts_ffi_waf_protect(rec, engine_id, flags, body_limit, response_body_limit, response_types)`:
/// inspects the running transaction with the engine (see the module docs); request bodies up
/// to `body_limit` decoded bytes; the first `response_body_limit` bytes of response bodies of
/// the media types in `response_types` (space-separated, may be null). `BadArg`: no such
/// engine or a bad limit.
#[unsafe(no_mangle)]
pub extern "C" fn ts_ffi_waf_protect(
    rec: *const CtxRec,
    engine_id: u32,
    flags: c_int,
    body_limit: i64,
    response_body_limit: i64,
    response_types: *const c_char,
) -> c_int {
    codes::guard(|| {
        let limit = usize::try_from(response_body_limit).map_err(|_| Code::BadArg)?;
        let types = if response_types.is_null() {
            Vec::new()
        } else {
            // SAFETY: a NUL-terminated string from the Lua wrapper.
            let text = unsafe { CStr::from_ptr(response_types) }.to_string_lossy();
            text.split_ascii_whitespace().map(|t| t.to_ascii_lowercase()).collect()
        };
        protect(rec, engine_id, flags, body_limit, ResponseBodies { limit, types })
    })
}

// --- Lua side --------------------------------------------------------------------------------

/// The Lua handle of an engine (keeps it alive).
struct EngineUd(Arc<Engine>);

impl UserData for EngineUd {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("id", |_, this| Ok(this.0.id));
        fields.add_field_method_get("rules", |_, this| Ok(this.0.rules.count));
    }
}

/// Adds `waf_new` and `waf_version` to the native module table.
pub fn register(lua: &Lua, m: &Table) -> LuaResult<()> {
    m.set(
        "waf_new",
        lua.create_function(|lua, (files, rules): (Vec<String>, Option<String>)| {
            match new_engine(&files, rules.as_deref()) {
                Ok(e) => (Value::UserData(lua.create_userdata(EngineUd(e))?), Value::Nil).into_lua_multi_ok(lua),
                Err(msg) => (Value::Nil, msg).into_lua_multi_ok(lua),
            }
        })?,
    )?;
    m.set(
        "waf_version",
        lua.create_function(|lua, ()| match msc::get() {
            Ok(m) => (m.who_am_i(), Value::Nil).into_lua_multi_ok(lua),
            Err(e) => (Value::Nil, e).into_lua_multi_ok(lua),
        })?,
    )?;
    m.set(
        "waf_live_engines",
        lua.create_function(|_, ()| Ok(lock(&REGISTRY).iter().filter(|(_, w)| w.strong_count() > 0).count()))?,
    )?;
    m.set("waf_flag_fail_open", FLAG_FAIL_OPEN)?;
    m.set("waf_flag_no_response", FLAG_NO_RESPONSE)?;
    m.set("waf_flag_no_request_body", FLAG_NO_REQUEST_BODY)?;
    Ok(())
}

trait IntoMultiOk {
    fn into_lua_multi_ok(self, lua: &Lua) -> LuaResult<mlua::MultiValue>;
}

impl<T: mlua::IntoLuaMulti> IntoMultiOk for T {
    fn into_lua_multi_ok(self, lua: &Lua) -> LuaResult<mlua::MultiValue> {
        self.into_lua_multi(lua)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_from_interventions() {
        assert_eq!(verdict_of(false, 403, None), None);
        assert_eq!(verdict_of(true, 403, None), Some(Verdict::Deny { status: 403 }));
        assert_eq!(verdict_of(true, 200, None), Some(Verdict::Deny { status: 403 }));
        assert_eq!(verdict_of(true, 406, None), Some(Verdict::Deny { status: 406 }));
        assert_eq!(
            verdict_of(true, 301, Some("https://x/".into())),
            Some(Verdict::Redirect { status: 301, url: "https://x/".into() })
        );
        assert_eq!(
            verdict_of(true, 403, Some("https://x/".into())),
            Some(Verdict::Redirect { status: 302, url: "https://x/".into() })
        );
    }

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(dechunk(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n").unwrap(), b"hello world");
        assert_eq!(dechunk(b"A\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n").unwrap(), b"0123456789");
        assert_eq!(dechunk(b"0\r\n\r\n").unwrap(), b"");
        assert_eq!(dechunk(b"5\r\nhel"), None);
        assert_eq!(dechunk(b"5\r\nhelloXX0\r\n\r\n"), None);
        assert_eq!(dechunk(b"zz\r\nhello\r\n0\r\n\r\n"), None);
        assert_eq!(dechunk(b"ffffffffffffffff\r\nx\r\n"), None);
        assert_eq!(dechunk(b""), None);
    }

    #[test]
    fn request_framing() {
        let h = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
        assert_eq!(Request::framing_of(&[h("Content-Length", " 12 ")]), (Some(12), false));
        assert_eq!(Request::framing_of(&[h("transfer-encoding", "gzip, Chunked")]), (None, true));
        assert_eq!(Request::framing_of(&[h("Host", "x")]), (None, false));
    }

    #[test]
    fn fail_policy() {
        assert_eq!(on_failure(true), Verdict::Allow);
        assert_eq!(on_failure(false), Verdict::Deny { status: 503 });
    }

    #[test]
    fn versions_read_as_text() {
        assert_eq!(version_text((1 << 16) | 1), "1.1");
        assert_eq!(version_text(2 << 16), "2.0");
    }

    #[test]
    fn patterns_expand_sorted_and_must_match() {
        let dir = std::env::temp_dir().join(format!("ts_ffi_waf_glob_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for n in ["b.conf", "a.conf", "c.txt"] {
            std::fs::write(dir.join(n), "").unwrap();
        }
        let d = dir.to_string_lossy();
        let got = expand(&[format!("{d}/*.conf"), "/plain/name.conf".into()]).unwrap();
        assert_eq!(got, vec![format!("{d}/a.conf"), format!("{d}/b.conf"), "/plain/name.conf".into()]);
        assert!(expand(&[format!("{d}/*.none")]).unwrap_err().contains("no file matches"));
    }

    #[test]
    fn keys_change_with_file_contents() {
        let f = std::env::temp_dir().join(format!("ts_ffi_waf_key_{}", std::process::id()));
        std::fs::write(&f, "a").unwrap();
        let name = vec![f.to_string_lossy().into_owned()];
        let k1 = source_key(&name, None);
        assert_eq!(k1, source_key(&name, None));
        std::fs::write(&f, "ab").unwrap();
        assert_ne!(k1, source_key(&name, None));
        assert_ne!(source_key(&name, None), source_key(&name, Some("SecRuleEngine On")));
    }

    #[test]
    fn equal_engines_are_shared_and_freed_with_their_last_holder() {
        let f = std::env::temp_dir().join(format!("ts_ffi_waf_share_{}", std::process::id()));
        std::fs::write(&f, "SecRuleEngine On\nSecRule ARGS \"@contains x\" \"id:30,deny\"\n").unwrap();
        let files = vec![f.to_string_lossy().into_owned()];
        let a = new_engine(&files, None).unwrap();
        let b = new_engine(&files, None).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = new_engine(&files, Some("SecRule ARGS \"@contains y\" \"id:31,deny\"")).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.rules.count, 2);
        let id = a.id;
        assert!(lookup(id).is_some());
        drop((a, b));
        assert!(lookup(id).is_none());
    }
}

