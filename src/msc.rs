//! libmodsecurity 3 (Debian's libmodsecurity3, 3.0.9), bound by hand through its C API and
//! opened at run time.
//!
//! Why by hand and at run time: the C API ts_ffi needs is 20 functions and one struct of five
//! fields (modsecurity.h, rules_set.h, transaction.h, intervention.h), stable across 3.0.x;
//! bindgen on those headers would parse C++ (they include <string> and friends under
//! __cplusplus) for no gain. And libmodsecurity.so.3 pulls in liblua5.3, whose `lua_*` symbols
//! must never meet LuaJIT's: opened with dlopen(RTLD_LOCAL) it gets a lookup scope of its own
//! (libmodsecurity, liblua5.3, ...), whereas linking it into ts_ffi.so (DT_NEEDED) would put
//! LuaJIT first in the scope libmodsecurity's own `lua_*` references resolve in. Opening it
//! lazily also keeps ts_ffi usable without the WAF package installed.
//!
//! Threads: one ModSecurity instance per process (its in-memory collections and the log
//! callback), never freed. Rule loading is not thread-safe upstream (owasp-modsecurity
//! ModSecurity #2536, #3138): every `msc_rules_*` call holds `LOAD_LOCK`.

use std::ffi::{CStr, CString, c_void};
use std::os::raw::{c_char, c_int, c_uchar};
use std::sync::{Mutex, OnceLock};

/// `ModSecurityIntervention` (intervention.h).
#[repr(C)]
pub struct Intervention {
    pub status: c_int,
    pub pause: c_int,
    pub url: *mut c_char,
    pub log: *mut c_char,
    pub disruptive: c_int,
}

impl Intervention {
    /// The state `intervention::clean` leaves (status 200, nothing set).
    pub fn clean() -> Self {
        Intervention { status: 200, pause: 0, url: std::ptr::null_mut(), log: std::ptr::null_mut(), disruptive: 0 }
    }

    /// Takes the strings libmodsecurity allocated (malloc) and frees them.
    pub fn take_strings(&mut self) -> (Option<String>, Option<String>) {
        // SAFETY: libmodsecurity hands over strdup'ed strings or null.
        unsafe { (take_c_string(&mut self.url), take_c_string(&mut self.log)) }
    }
}

impl Drop for Intervention {
    fn drop(&mut self) {
        let _ = self.take_strings();
    }
}

/// # Safety: `p` is null or a malloc'ed C string that the caller owns.
unsafe fn take_c_string(p: &mut *mut c_char) -> Option<String> {
    let s = std::mem::replace(p, std::ptr::null_mut());
    if s.is_null() {
        return None;
    }
    let text = unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned();
    unsafe { libc::free(s.cast()) };
    Some(text)
}

pub type LogCb = unsafe extern "C" fn(*mut c_void, *const c_void);

/// `msc_append_request_body` / `msc_append_response_body`.
pub type AppendFn = unsafe extern "C" fn(*mut c_void, *const c_uchar, usize) -> c_int;
/// The phase functions taking only the transaction.
pub type TxnFn = unsafe extern "C" fn(*mut c_void) -> c_int;

/// The C API of libmodsecurity 3 (the functions ts_ffi uses).
pub struct Fns {
    pub msc_init: unsafe extern "C" fn() -> *mut c_void,
    pub msc_who_am_i: unsafe extern "C" fn(*mut c_void) -> *const c_char,
    pub msc_set_connector_info: unsafe extern "C" fn(*mut c_void, *const c_char),
    pub msc_set_log_cb: unsafe extern "C" fn(*mut c_void, Option<LogCb>),
    pub msc_create_rules_set: unsafe extern "C" fn() -> *mut c_void,
    pub msc_rules_add_file: unsafe extern "C" fn(*mut c_void, *const c_char, *mut *const c_char) -> c_int,
    pub msc_rules_add: unsafe extern "C" fn(*mut c_void, *const c_char, *mut *const c_char) -> c_int,
    pub msc_rules_cleanup: unsafe extern "C" fn(*mut c_void) -> c_int,
    pub msc_new_transaction: unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_void) -> *mut c_void,
    pub msc_process_connection: unsafe extern "C" fn(*mut c_void, *const c_char, c_int, *const c_char, c_int) -> c_int,
    pub msc_process_uri: unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char, *const c_char) -> c_int,
    pub msc_add_n_request_header:
        unsafe extern "C" fn(*mut c_void, *const c_uchar, usize, *const c_uchar, usize) -> c_int,
    pub msc_process_request_headers: unsafe extern "C" fn(*mut c_void) -> c_int,
    pub msc_append_request_body: AppendFn,
    pub msc_process_request_body: TxnFn,
    pub msc_add_n_response_header:
        unsafe extern "C" fn(*mut c_void, *const c_uchar, usize, *const c_uchar, usize) -> c_int,
    pub msc_process_response_headers: unsafe extern "C" fn(*mut c_void, c_int, *const c_char) -> c_int,
    pub msc_append_response_body: AppendFn,
    pub msc_process_response_body: TxnFn,
    pub msc_intervention: unsafe extern "C" fn(*mut c_void, *mut Intervention) -> c_int,
    pub msc_process_logging: unsafe extern "C" fn(*mut c_void) -> c_int,
    pub msc_update_status_code: unsafe extern "C" fn(*mut c_void, c_int) -> c_int,
    pub msc_transaction_cleanup: unsafe extern "C" fn(*mut c_void),
}

/// The opened library and the process's ModSecurity instance.
pub struct Msc {
    pub f: Fns,
    msc: *mut c_void,
    _lib: libloading::Library,
}

// SAFETY: the ModSecurity instance is built once and then only read by libmodsecurity (its
// collections have their own locks); function pointers are plain code addresses.
unsafe impl Send for Msc {}
unsafe impl Sync for Msc {}

/// The shared object's name (Debian's libmodsecurity3).
pub const LIBRARY: &str = "libmodsecurity.so.3";

static MSC: OnceLock<Result<Msc, String>> = OnceLock::new();
static LOAD_LOCK: Mutex<()> = Mutex::new(());
static LOG_CB: OnceLock<LogCb> = OnceLock::new();

/// Sets the callback every rule message goes to (once per process, before the first `get`).
pub fn set_log_cb(cb: LogCb) {
    let _ = LOG_CB.set(cb);
}

fn open() -> Result<Msc, String> {
    // SAFETY: opening a shared library runs its constructors; libmodsecurity's are benign.
    let lib = unsafe {
        libloading::os::unix::Library::open(Some(LIBRARY), libc::RTLD_NOW | libc::RTLD_LOCAL)
    }
    .map_err(|e| format!("cannot open {LIBRARY} (Debian: apt-get install libmodsecurity3): {e}"))?;
    let lib = libloading::Library::from(lib);
    macro_rules! sym {
        ($name:ident) => {
            // SAFETY: the symbol has the C signature declared in `Fns` (libmodsecurity 3 C API).
            *unsafe { lib.get(concat!(stringify!($name), "\0").as_bytes()) }
                .map_err(|e| format!("{LIBRARY} lacks {}: {e}", stringify!($name)))?
        };
    }
    let f = Fns {
        msc_init: sym!(msc_init),
        msc_who_am_i: sym!(msc_who_am_i),
        msc_set_connector_info: sym!(msc_set_connector_info),
        msc_set_log_cb: sym!(msc_set_log_cb),
        msc_create_rules_set: sym!(msc_create_rules_set),
        msc_rules_add_file: sym!(msc_rules_add_file),
        msc_rules_add: sym!(msc_rules_add),
        msc_rules_cleanup: sym!(msc_rules_cleanup),
        msc_new_transaction: sym!(msc_new_transaction),
        msc_process_connection: sym!(msc_process_connection),
        msc_process_uri: sym!(msc_process_uri),
        msc_add_n_request_header: sym!(msc_add_n_request_header),
        msc_process_request_headers: sym!(msc_process_request_headers),
        msc_append_request_body: sym!(msc_append_request_body),
        msc_process_request_body: sym!(msc_process_request_body),
        msc_add_n_response_header: sym!(msc_add_n_response_header),
        msc_process_response_headers: sym!(msc_process_response_headers),
        msc_append_response_body: sym!(msc_append_response_body),
        msc_process_response_body: sym!(msc_process_response_body),
        msc_intervention: sym!(msc_intervention),
        msc_process_logging: sym!(msc_process_logging),
        msc_update_status_code: sym!(msc_update_status_code),
        msc_transaction_cleanup: sym!(msc_transaction_cleanup),
    };
    // SAFETY: plain C API calls on the instance just created.
    let msc = unsafe { (f.msc_init)() };
    if msc.is_null() {
        return Err("msc_init failed".into());
    }
    unsafe {
        (f.msc_set_connector_info)(msc, c"ts_ffi.waf (Apache Traffic Server)".as_ptr());
        (f.msc_set_log_cb)(msc, LOG_CB.get().copied());
    }
    Ok(Msc { f, msc, _lib: lib })
}

/// The process's libmodsecurity, opened on first use.
pub fn get() -> Result<&'static Msc, String> {
    MSC.get_or_init(open).as_ref().map_err(Clone::clone)
}

impl Msc {
    /// libmodsecurity's own name and version ("ModSecurity v3.0.9 (Linux)").
    pub fn who_am_i(&self) -> String {
        // SAFETY: returns a string owned by the instance.
        let p = unsafe { (self.f.msc_who_am_i)(self.msc) };
        if p.is_null() { String::new() } else { unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned() }
    }

    /// A new transaction on `rules`; `log_data` comes back to the log callback.
    ///
    /// # Safety: `rules` is a live rule set that outlives the transaction.
    pub unsafe fn new_transaction(&self, rules: *mut c_void, log_data: *mut c_void) -> *mut c_void {
        unsafe { (self.f.msc_new_transaction)(self.msc, rules, log_data) }
    }
}

/// A loaded rule set. Freed when dropped.
pub struct RuleSet {
    pub ptr: *mut c_void,
    pub count: i64,
}

// SAFETY: a rule set is read-only once loaded; libmodsecurity evaluates one from many
// transactions on many threads (as every connector does).
unsafe impl Send for RuleSet {}
unsafe impl Sync for RuleSet {}

/// What a rule set is made of, in order.
pub enum Source<'a> {
    File(&'a str),
    Inline(&'a str),
}

/// Loads `sources` into a new rule set, under the process-wide load lock. An error names the
/// file (or "rules" for the inline text) and carries libmodsecurity's message (with its line).
pub fn load(sources: &[Source<'_>]) -> Result<RuleSet, String> {
    let m = get()?;
    let _guard = LOAD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: C API calls under the load lock; error strings are strdup'ed by libmodsecurity.
    unsafe {
        let ptr = (m.f.msc_create_rules_set)();
        if ptr.is_null() {
            return Err("msc_create_rules_set failed".into());
        }
        let mut count = 0i64;
        // On an error the set is freed here, under the lock already held (not by Drop).
        let fail = |msg: String| {
            (m.f.msc_rules_cleanup)(ptr);
            Err(msg)
        };
        for src in sources {
            let (what, text) = match src {
                Source::File(path) => (path.to_string(), *path),
                Source::Inline(text) => ("rules".to_string(), *text),
            };
            let Ok(c) = CString::new(text) else { return fail(format!("{what}: contains a NUL byte")) };
            let mut err: *const c_char = std::ptr::null();
            let n = match src {
                Source::File(_) => (m.f.msc_rules_add_file)(ptr, c.as_ptr(), &mut err),
                Source::Inline(_) => (m.f.msc_rules_add)(ptr, c.as_ptr(), &mut err),
            };
            let mut err = err as *mut c_char;
            let msg = take_c_string(&mut err);
            if n < 0 {
                let msg = msg.unwrap_or_else(|| "cannot load".into());
                return fail(format!("{what}: {}", msg.trim_end()));
            }
            count += i64::from(n);
        }
        Ok(RuleSet { ptr, count })
    }
}

impl Drop for RuleSet {
    fn drop(&mut self) {
        if let Ok(m) = get() {
            let _guard = LOAD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            // SAFETY: the last owner frees the set; no transaction uses it any more.
            unsafe { (m.f.msc_rules_cleanup)(self.ptr) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> String {
        let path = std::env::temp_dir().join(format!("ts_ffi_msc_{}_{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn loads_rules_and_counts_them() {
        let f = write("ok.conf", "SecRuleEngine On\nSecRule ARGS \"@contains x\" \"id:10,deny\"\n");
        let set = load(&[Source::File(&f), Source::Inline("SecRule ARGS \"@contains y\" \"id:11,deny\"")]).unwrap();
        assert_eq!(set.count, 2);
        assert!(get().unwrap().who_am_i().starts_with("ModSecurity v3"));
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let f = write("bad.conf", "SecRuleEngine On\n\nSecRule ARGS \"@contains x\" \"id:5,deny,nosuchaction\"\n");
        let err = load(&[Source::File(&f)]).err().unwrap();
        assert!(err.starts_with(&format!("{f}: ")), "{err}");
        assert!(err.contains("Line: 3"), "{err}");
        let err = load(&[Source::Inline("SecRule ARGS \"@contains x\" \"id:6,deny,nosuchaction\"")]).err().unwrap();
        assert!(err.starts_with("rules: "), "{err}");
        let err = load(&[Source::File("/nonexistent/x.conf")]).err().unwrap();
        assert!(err.starts_with("/nonexistent/x.conf: "), "{err}");
    }

    #[test]
    fn concurrent_loads_are_serialized() {
        let f = write("conc.conf", "SecRuleEngine On\nSecRule ARGS \"@rx a+b\" \"id:20,deny\"\n");
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let f = f.clone();
                std::thread::spawn(move || (0..10).map(|_| load(&[Source::File(&f)]).unwrap().count).sum::<i64>())
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 10);
        }
    }

    #[test]
    fn intervention_layout_matches_the_header() {
        assert_eq!(std::mem::size_of::<Intervention>(), 32);
        assert_eq!(std::mem::offset_of!(Intervention, url), 8);
        assert_eq!(std::mem::offset_of!(Intervention, disruptive), 24);
    }
}
