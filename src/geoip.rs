//! `ts_ffi.geoip`: country lookups in MaxMind DB files (`.mmdb`, read with the `maxminddb`
//! crate) and legacy GeoIP country databases (`GeoIP.dat`, `GeoIPv6.dat`, read with Debian's
//! libGeoIP, opened with dlopen on first use), told apart by content.
//!
//! Sharing: every database is loaded once per process and file. `open` keeps a registry keyed
//! by the file's canonical path; a later `open` of the same path from any Lua VM on any thread
//! shares the loaded database while the file on disk is the same (device, inode, size,
//! mtime), and loads it anew when it was replaced. Lookups need no lock: a database is
//! immutable once loaded and shared through an `Arc`.
//!
//! Files are read whole into memory after checks that never block or run away (regular file,
//! size limits, O_NONBLOCK), so later changes on disk never affect a loaded database.
//!
//! The Lua side (`lua/ts_ffi/geoip.lua`) holds, per `open`, one `DbRef` userdata that owns a
//! `Handle`; hot lookups (`country`) go through the flat `ts_ffi_geoip_country` with the
//! handle's address, `lookup` and the rest through mlua functions taking the userdata.

use mlua::{AnyUserData, Lua, MultiValue, IntoLuaMulti, Result as LuaResult, Table, UserData, Value};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io::Read;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::raw::{c_char, c_int, c_uint, c_ulong, c_void};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::codes::{Code, guard};

/// Largest database file ts_ffi loads (GeoIP2 City is ~70 MB, Enterprise a few hundred).
pub const MAX_FILE_SIZE: u64 = 1 << 30;
/// The MaxMind DB metadata marker, searched in the file's last 128 KiB (as the format says).
const MMDB_MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";
const MMDB_METADATA_MAX: usize = 128 * 1024;

// ---------------------------------------------------------------------------------------------
// Reading a file safely

/// What identifies the file behind a path at one moment: a replaced or rewritten file differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdent {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

fn ident(m: &std::fs::Metadata) -> FileIdent {
    FileIdent {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
    }
}

fn kind_of(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Opens `path` without blocking (a FIFO would block a plain open), checks that it is a
/// regular file of a sane size, and reads it whole. Returns the bytes, the file's identity
/// and the open file (for libGeoIP, which reopens it through /proc/self/fd).
pub fn read_file(path: &Path) -> Result<(Vec<u8>, FileIdent, std::fs::File), String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let meta = file.metadata().map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is {}, not a database file", path.display(), kind_of(&meta)));
    }
    let id = ident(&meta);
    if id.size == 0 {
        return Err(format!("{} is empty", path.display()));
    }
    if id.size > MAX_FILE_SIZE {
        return Err(format!("{} is larger than {} bytes", path.display(), MAX_FILE_SIZE));
    }
    let mut buf = Vec::new();
    buf.try_reserve_exact(id.size as usize).map_err(|_| format!("out of memory reading {}", path.display()))?;
    // Never more than the size seen: a file that grows while read is not read forever.
    (&file).take(id.size).read_to_end(&mut buf).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if buf.len() as u64 != id.size {
        return Err(format!("{} changed while it was read", path.display()));
    }
    Ok((buf, id, file))
}

/// Which reader a file's content calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Mmdb,
    Legacy,
}

pub fn sniff(buf: &[u8]) -> Format {
    let tail = &buf[buf.len().saturating_sub(MMDB_METADATA_MAX)..];
    if tail.windows(MMDB_MARKER.len()).any(|w| w == MMDB_MARKER) { Format::Mmdb } else { Format::Legacy }
}

// ---------------------------------------------------------------------------------------------
// Legacy GeoIP country databases: format checks (libGeoIP trusts its input)

/// Legacy editions ts_ffi reads: GEOIP_COUNTRY_EDITION and GEOIP_COUNTRY_EDITION_V6.
pub const EDITION_COUNTRY: u8 = 1;
pub const EDITION_COUNTRY_V6: u8 = 12;
/// First record value that is a leaf (country id = value - COUNTRY_BEGIN).
const COUNTRY_BEGIN: u32 = 16_776_960;

/// The database edition as libGeoIP determines it: a 0xFFFFFF marker followed by the edition
/// byte within the last 20 positions; without a marker, the country edition.
pub fn legacy_edition(buf: &[u8]) -> Result<u8, String> {
    if buf.len() < 6 {
        return Err("too small for a GeoIP database".into());
    }
    for i in 0..20usize {
        let Some(pos) = buf.len().checked_sub(3 + i) else { break };
        if buf[pos..pos + 3] == [0xff, 0xff, 0xff] {
            let Some(&t) = buf.get(pos + 3) else {
                return Err("truncated GeoIP structure info".into());
            };
            return Ok(if t >= 106 { t - 105 } else { t });
        }
    }
    Ok(EDITION_COUNTRY)
}

/// Checks the search tree of a legacy country database: from the root, every record is a
/// leaf with a known country id or points to a later node inside the file. Rejects truncated
/// and corrupt databases and files that are no database at all.
pub fn validate_legacy_country(buf: &[u8], countries: u32) -> Result<(), String> {
    let nodes = buf.len() / 6;
    if nodes == 0 {
        return Err("too small for a GeoIP database".into());
    }
    let mut seen = vec![false; nodes];
    let mut stack = vec![0usize];
    seen[0] = true;
    while let Some(i) = stack.pop() {
        let node = buf.get(i * 6..i * 6 + 6).ok_or("GeoIP search tree leaves the file")?;
        for rec in [&node[0..3], &node[3..6]] {
            let p = u32::from(rec[0]) | u32::from(rec[1]) << 8 | u32::from(rec[2]) << 16;
            if p >= COUNTRY_BEGIN {
                if p - COUNTRY_BEGIN >= countries {
                    return Err(format!("corrupt GeoIP database (country id {} at node {i})", p - COUNTRY_BEGIN));
                }
            } else {
                let p = p as usize;
                if p <= i || p >= nodes {
                    return Err(format!("corrupt or truncated GeoIP database (node {i} points to {p})"));
                }
                if !seen[p] {
                    seen[p] = true;
                    stack.push(p);
                }
            }
        }
    }
    Ok(())
}

/// Debian's libGeoIP.so.1, opened on the first legacy database (so ts_ffi.so itself does not
/// need it; MaxMind DB users do not have to install it).
#[allow(non_snake_case)]
struct GeoIpLib {
    _lib: libloading::Library,
    GeoIP_open: unsafe extern "C" fn(*const c_char, c_int) -> *mut GeoIpRaw,
    GeoIP_delete: unsafe extern "C" fn(*mut GeoIpRaw),
    GeoIP_database_edition: unsafe extern "C" fn(*mut GeoIpRaw) -> u8,
    GeoIP_set_charset: unsafe extern "C" fn(*mut GeoIpRaw, c_int) -> c_int,
    GeoIP_num_countries: unsafe extern "C" fn() -> c_uint,
    GeoIP_id_by_ipnum_gl: unsafe extern "C" fn(*mut GeoIpRaw, c_ulong, *mut c_int) -> c_int,
    GeoIP_id_by_ipnum_v6_gl: unsafe extern "C" fn(*mut GeoIpRaw, libc::in6_addr, *mut c_int) -> c_int,
    GeoIP_code_by_id: unsafe extern "C" fn(c_int) -> *const c_char,
    GeoIP_code3_by_id: unsafe extern "C" fn(c_int) -> *const c_char,
    GeoIP_continent_by_id: unsafe extern "C" fn(c_int) -> *const c_char,
    GeoIP_country_name_by_id: unsafe extern "C" fn(*mut GeoIpRaw, c_int) -> *const c_char,
}

/// The head of libGeoIP's public `struct GeoIPTag` (GeoIP.h, 1.6.x), read only to compare the
/// bytes libGeoIP loaded with the bytes ts_ffi checked.
#[repr(C)]
struct GeoIpRaw {
    database: *mut c_void,
    file_path: *mut c_char,
    cache: *const u8,
    index_cache: *const u8,
    segments: *const c_uint,
    database_type: c_char,
    mtime: libc::time_t,
    flags: c_int,
    size: libc::off_t,
}

const GEOIP_MEMORY_CACHE: c_int = 1;
const GEOIP_SILENCE: c_int = 16;
const GEOIP_CHARSET_UTF8: c_int = 1;

fn geoip_lib() -> Result<&'static GeoIpLib, String> {
    static LIB: OnceLock<Result<GeoIpLib, String>> = OnceLock::new();
    LIB.get_or_init(|| {
        // SAFETY: libGeoIP's initialisers only set up its tables.
        let lib = unsafe { libloading::Library::new("libGeoIP.so.1") }.map_err(|e| {
            format!("legacy GeoIP databases need libGeoIP (Debian: apt-get install libgeoip1): {e}")
        })?;
        macro_rules! sym {
            ($name:ident) => {
                // SAFETY: the signature is libGeoIP 1.6's (GeoIP.h).
                *unsafe { lib.get(concat!(stringify!($name), "\0").as_bytes()) }
                    .map_err(|e| format!("libGeoIP lacks {}: {e}", stringify!($name)))?
            };
        }
        Ok(GeoIpLib {
            GeoIP_open: sym!(GeoIP_open),
            GeoIP_delete: sym!(GeoIP_delete),
            GeoIP_database_edition: sym!(GeoIP_database_edition),
            GeoIP_set_charset: sym!(GeoIP_set_charset),
            GeoIP_num_countries: sym!(GeoIP_num_countries),
            GeoIP_id_by_ipnum_gl: sym!(GeoIP_id_by_ipnum_gl),
            GeoIP_id_by_ipnum_v6_gl: sym!(GeoIP_id_by_ipnum_v6_gl),
            GeoIP_code_by_id: sym!(GeoIP_code_by_id),
            GeoIP_code3_by_id: sym!(GeoIP_code3_by_id),
            GeoIP_continent_by_id: sym!(GeoIP_continent_by_id),
            GeoIP_country_name_by_id: sym!(GeoIP_country_name_by_id),
            _lib: lib,
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// A legacy country database loaded by libGeoIP in memory-cache mode. Lookups only read the
/// loaded bytes (the `_gl` functions keep per-lookup state in the caller's struct; libGeoIP
/// also stores the last netmask in the shared struct, an int nobody here reads).
pub struct Legacy {
    lib: &'static GeoIpLib,
    gi: *mut GeoIpRaw,
    v6: bool,
}

// SAFETY: after open, `gi` is only used for lookups, which read memory that never changes
// (GEOIP_MEMORY_CACHE without GEOIP_CHECK_CACHE: no reloads); see the struct's comment.
unsafe impl Send for Legacy {}
unsafe impl Sync for Legacy {}

impl Drop for Legacy {
    fn drop(&mut self) {
        // SAFETY: the last reference; GeoIP_delete frees what GeoIP_open made.
        unsafe { (self.lib.GeoIP_delete)(self.gi) }
    }
}

fn cstr(p: *const c_char) -> Option<String> {
    // SAFETY: libGeoIP returns NUL-terminated static strings or NULL.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

impl Legacy {
    fn open(buf: &[u8], file: &std::fs::File, path: &Path) -> Result<Legacy, String> {
        let edition = legacy_edition(buf).map_err(|e| format!("{}: {e}", path.display()))?;
        let v6 = match edition {
            EDITION_COUNTRY => false,
            EDITION_COUNTRY_V6 => true,
            other => {
                return Err(format!(
                    "{}: legacy GeoIP edition {other} is not a country database (ts_ffi reads MaxMind DB files and legacy country databases)",
                    path.display()
                ));
            }
        };
        let lib = geoip_lib()?;
        // SAFETY: a plain getter.
        let countries = unsafe { (lib.GeoIP_num_countries)() };
        validate_legacy_country(buf, countries).map_err(|e| {
            format!("{}: not a MaxMind DB or legacy GeoIP country database ({e})", path.display())
        })?;
        // libGeoIP opens by name: give it the very file checked above, not whatever is at the
        // path now.
        let proc_path = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(|e| e.to_string())?;
        // SAFETY: a NUL-terminated path; the file is a checked regular file.
        let gi = unsafe { (lib.GeoIP_open)(proc_path.as_ptr(), GEOIP_MEMORY_CACHE | GEOIP_SILENCE) };
        if gi.is_null() {
            return Err(format!("{}: libGeoIP cannot open it", path.display()));
        }
        let db = Legacy { lib, gi, v6 };
        // SAFETY: `gi` is live; cache holds `size` bytes (GEOIP_MEMORY_CACHE).
        let same = unsafe {
            let raw = &*gi;
            raw.size as usize == buf.len()
                && !raw.cache.is_null()
                && std::slice::from_raw_parts(raw.cache, buf.len()) == buf
                && (lib.GeoIP_database_edition)(gi) == edition
        };
        if !same {
            return Err(format!("{} changed while it was loaded", path.display()));
        }
        // SAFETY: set once, before the database is shared.
        unsafe { (lib.GeoIP_set_charset)(gi, GEOIP_CHARSET_UTF8) };
        Ok(db)
    }

    /// The country id (> 0) of `ip`, or None (no data, or an address this database lacks).
    fn id(&self, ip: IpAddr) -> Option<c_int> {
        let mut netmask: c_int = 0;
        let id = match (self.v6, ip) {
            (false, IpAddr::V4(v4)) => {
                // SAFETY: `gi` is live; lookups are bounds-checked by libGeoIP 1.6.12 and the
                // tree was checked at open.
                unsafe { (self.lib.GeoIP_id_by_ipnum_gl)(self.gi, u32::from(v4) as c_ulong, &mut netmask) }
            }
            (true, _) => {
                let v6 = match ip {
                    IpAddr::V6(v6) => v6,
                    // GeoIPv6.dat keeps IPv4 as IPv4-mapped addresses.
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                };
                let addr = libc::in6_addr { s6_addr: v6.octets() };
                // SAFETY: as above.
                unsafe { (self.lib.GeoIP_id_by_ipnum_v6_gl)(self.gi, addr, &mut netmask) }
            }
            (false, IpAddr::V6(_)) => return None,
        };
        (id > 0).then_some(id)
    }

    fn record(&self, ip: IpAddr) -> Option<Vec<(&'static str, String)>> {
        let id = self.id(ip)?;
        let l = self.lib;
        // SAFETY: the *_by_id functions check the range; names are libGeoIP's static strings.
        let fields = unsafe {
            [
                ("country_code", cstr((l.GeoIP_code_by_id)(id))),
                ("country_code3", cstr((l.GeoIP_code3_by_id)(id))),
                ("country_name", cstr((l.GeoIP_country_name_by_id)(self.gi, id))),
                ("continent_code", cstr((l.GeoIP_continent_by_id)(id))),
            ]
        };
        Some(fields.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Databases and the process-wide registry

pub enum Reader {
    Mmdb(maxminddb::Reader<Vec<u8>>),
    Legacy(Legacy),
}

/// One loaded database, shared by every VM that opened its file.
pub struct Db {
    pub reader: Reader,
    /// Canonical path (the registry key).
    pub path: PathBuf,
    ident: FileIdent,
    /// Process-wide load number: equal across VMs means the same loaded copy.
    pub load_id: u64,
}

impl Db {
    /// Writes the country code of `ip` (MaxMind DB: `country.iso_code`, decoded without
    /// allocating) into `out`; its length, or None.
    fn country_into(&self, ip: IpAddr, out: &mut [u8]) -> Option<usize> {
        let mut write = |s: &str| {
            let b = s.as_bytes();
            out.get_mut(..b.len()).map(|o| {
                o.copy_from_slice(b);
                b.len()
            })
        };
        match &self.reader {
            Reader::Mmdb(r) => {
                let res = r.lookup(ip).ok()?;
                let code: Option<&str> = res
                    .decode_path(&[maxminddb::PathElement::Key("country"), maxminddb::PathElement::Key("iso_code")])
                    .ok()?;
                write(code?)
            }
            Reader::Legacy(l) => {
                let id = l.id(ip)?;
                // SAFETY: GeoIP_code_by_id checks the range.
                let p = unsafe { (l.lib.GeoIP_code_by_id)(id) };
                if p.is_null() {
                    return None;
                }
                // SAFETY: a static NUL-terminated string.
                write(unsafe { CStr::from_ptr(p) }.to_str().ok()?)
            }
        }
    }

    #[cfg(test)]
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        let mut out = [0u8; 64];
        let n = self.country_into(ip, &mut out)?;
        Some(String::from_utf8_lossy(&out[..n]).into_owned())
    }

    fn kind(&self) -> &'static str {
        match self.reader {
            Reader::Mmdb(_) => "mmdb",
            Reader::Legacy(_) => "legacy",
        }
    }
}

struct Entry {
    db: Arc<Db>,
    /// `open`s not yet matched by `close` (handles collected without close count too).
    opens: usize,
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Entry>> {
    static REG: OnceLock<Mutex<HashMap<PathBuf, Entry>>> = OnceLock::new();
    REG.get_or_init(|| Mutex::new(HashMap::new()))
}

static LOADS: AtomicU64 = AtomicU64::new(0);

fn load(path: &Path) -> Result<Db, String> {
    let (buf, ident, file) = read_file(path)?;
    let reader = match sniff(&buf) {
        Format::Mmdb => {
            let r = maxminddb::Reader::from_source(buf)
                .map_err(|e| format!("{}: not a valid MaxMind DB: {e}", path.display()))?;
            r.verify().map_err(|e| format!("{}: corrupt MaxMind DB: {e}", path.display()))?;
            Reader::Mmdb(r)
        }
        Format::Legacy => Reader::Legacy(Legacy::open(&buf, &file, path)?),
    };
    let load_id = LOADS.fetch_add(1, Ordering::Relaxed) + 1;
    Ok(Db { reader, path: path.to_path_buf(), ident, load_id })
}

/// Logs a load in diags.log when running inside traffic_server.
fn note_load(db: &Db) {
    let f = (|| Ok::<_, Code>(crate::api::ts_fn!(TSNote)))();
    if let Ok(note) = f {
        let msg = format!("ts_ffi.geoip: loaded {} ({}, {} bytes, load {})", db.path.display(), db.kind(), db.ident.size, db.load_id);
        if let Ok(msg) = CString::new(msg) {
            // SAFETY: a printf-style call with one %s argument.
            unsafe { note(c"%s".as_ptr(), msg.as_ptr()) };
        }
    }
}

/// The shared database for `path`: the loaded copy when the file is unchanged, else a new
/// load (which replaces the registry's entry; the old copy lives while handles use it).
pub fn open(path: &str) -> Result<Arc<Db>, String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    let canon = std::fs::canonicalize(path).map_err(|e| format!("cannot open {path}: {e}"))?;
    let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(entry) = reg.get_mut(&canon) {
        // stat (not open): never blocks, even on a FIFO put in the file's place.
        if let Ok(meta) = std::fs::metadata(&canon) {
            if meta.is_file() && ident(&meta) == entry.db.ident {
                entry.opens += 1;
                return Ok(Arc::clone(&entry.db));
            }
        }
    }
    // Loading under the lock: concurrent opens of one file load it once.
    let db = Arc::new(load(&canon)?);
    note_load(&db);
    reg.insert(canon, Entry { db: Arc::clone(&db), opens: 1 });
    Ok(db)
}

/// Matches one `open`: the registry forgets the database when every open was closed.
fn release(db: &Arc<Db>) {
    let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(entry) = reg.get_mut(&db.path) {
        if Arc::ptr_eq(&entry.db, db) {
            entry.opens = entry.opens.saturating_sub(1);
            if entry.opens == 0 {
                reg.remove(&db.path);
            }
        }
    }
}

/// Databases in the registry (for `ts_ffi.geoip.loaded()`).
fn loaded() -> Vec<(String, &'static str, u64, u64, usize)> {
    let reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    let mut v: Vec<_> = reg
        .values()
        .map(|e| (e.db.path.display().to_string(), e.db.kind(), e.db.ident.size, e.db.load_id, e.opens))
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// Addresses

/// An address in text form; IPv4-mapped IPv6 addresses become IPv4.
pub fn parse_ip(b: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(b).ok()?;
    let ip: IpAddr = s.parse().ok()?;
    Some(match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    })
}

// ---------------------------------------------------------------------------------------------
// The handle Lua holds, and the flat lookup

/// One `open`'s handle: the database until `close`. Owned by a `DbRef` userdata of one Lua
/// VM, so it is used by one thread at a time (LuaJIT states are never shared between
/// threads): `close` cannot run while a lookup on the same handle does.
pub struct Handle {
    db: AtomicPtr<Db>,
}

impl Handle {
    fn new(db: Arc<Db>) -> Box<Handle> {
        Box::new(Handle { db: AtomicPtr::new(Arc::into_raw(db) as *mut Db) })
    }

    fn get(&self) -> Option<&Db> {
        // SAFETY: non-null means the handle's Arc reference is alive (see the struct's comment).
        unsafe { self.db.load(Ordering::Acquire).as_ref() }
    }

    fn close(&self) -> bool {
        let p = self.db.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if p.is_null() {
            return false;
        }
        // SAFETY: the reference `new` made, taken back once.
        let db = unsafe { Arc::from_raw(p) };
        release(&db);
        true
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let p = self.db.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            // SAFETY: as in close; without close the registry keeps the database loaded.
            drop(unsafe { Arc::from_raw(p) });
        }
    }
}

/// The userdata behind a Lua db object.
pub struct DbRef(Box<Handle>);

impl UserData for DbRef {}

/// `db:country(ip)`: writes the country code into `out` (`cap` bytes) and its length into
/// `len`. Ok; Declined (no record, no country); BadArg (not an address); Gone (closed).
#[unsafe(no_mangle)]
pub extern "C" fn ts_ffi_geoip_country(
    h: *const Handle,
    ip: *const u8,
    ip_len: usize,
    out: *mut u8,
    cap: usize,
    len: *mut usize,
) -> c_int {
    guard(|| {
        // SAFETY: `h` is the address of a live DbRef's handle, passed by the Lua wrapper.
        let h = unsafe { h.as_ref() }.ok_or(Code::BadArg)?;
        let db = h.get().ok_or(Code::Gone)?;
        if ip.is_null() || out.is_null() {
            return Err(Code::BadArg);
        }
        // SAFETY: a Lua string's bytes and the wrapper's buffer of `cap` bytes.
        let (ip, out) = unsafe { (std::slice::from_raw_parts(ip, ip_len), std::slice::from_raw_parts_mut(out, cap)) };
        let ip = parse_ip(ip).ok_or(Code::BadArg)?;
        let n = db.country_into(ip, out).ok_or(Code::Declined)?;
        crate::txn::put(len, n)
    })
}

// ---------------------------------------------------------------------------------------------
// MaxMind DB records as Lua values

/// A decoded MaxMind DB value.
enum Val {
    Map(Vec<(String, Val)>),
    Arr(Vec<Val>),
    Str(String),
    Bytes(Vec<u8>),
    Num(f64),
    /// Integers beyond 2^53 (uint64/uint128), as decimal text.
    Big(String),
    Bool(bool),
}

impl<'de> serde::Deserialize<'de> for Val {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Val, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Val;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a MaxMind DB value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Val, E> {
                Ok(Val::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Val, E> {
                Ok(Val::Num(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Val, E> {
                Ok(if v <= (1 << 53) { Val::Num(v as f64) } else { Val::Big(v.to_string()) })
            }
            fn visit_u128<E>(self, v: u128) -> Result<Val, E> {
                Ok(if v <= (1 << 53) { Val::Num(v as f64) } else { Val::Big(v.to_string()) })
            }
            fn visit_f64<E>(self, v: f64) -> Result<Val, E> {
                Ok(Val::Num(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Val, E> {
                Ok(Val::Str(v.to_owned()))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Val, E> {
                Ok(Val::Bytes(v.to_vec()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Val, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Val::Arr(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Val, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = a.next_entry::<String, Val>()? {
                    v.push((k, x));
                }
                Ok(Val::Map(v))
            }
        }
        d.deserialize_any(V)
    }
}

fn to_lua(lua: &Lua, v: Val) -> LuaResult<Value> {
    Ok(match v {
        Val::Map(m) => {
            let t = lua.create_table_with_capacity(0, m.len())?;
            for (k, x) in m {
                t.raw_set(k, to_lua(lua, x)?)?;
            }
            Value::Table(t)
        }
        Val::Arr(a) => {
            let t = lua.create_table_with_capacity(a.len(), 0)?;
            for (i, x) in a.into_iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, x)?)?;
            }
            Value::Table(t)
        }
        Val::Str(s) | Val::Big(s) => Value::String(lua.create_string(s)?),
        Val::Bytes(b) => Value::String(lua.create_string(b)?),
        Val::Num(n) => Value::Number(n),
        Val::Bool(b) => Value::Boolean(b),
    })
}

// ---------------------------------------------------------------------------------------------
// mlua functions for the Lua wrapper

fn with_db<R>(ud: &AnyUserData, f: impl FnOnce(&Db) -> R) -> Result<R, &'static str> {
    let r = ud.borrow::<DbRef>().map_err(|_| "bad_arg")?;
    let db = r.0.get().ok_or("closed")?;
    Ok(f(db))
}

/// Adds the `geoip_*` functions to the native module table.
pub fn register(lua: &Lua, m: &Table) -> LuaResult<()> {
    // geoip_open(path) -> userdata, handle address (light userdata) | nil, message
    m.set(
        "geoip_open",
        lua.create_function(|lua, path: mlua::LuaString| -> LuaResult<MultiValue> {
            let path = path.to_str().map(|s| s.to_owned()).unwrap_or_default();
            let r = std::panic::catch_unwind(|| open(&path)).unwrap_or_else(|_| Err("internal error".into()));
            match r {
                Ok(db) => {
                    let handle = Handle::new(db);
                    let addr = &*handle as *const Handle as *mut c_void;
                    let ud = lua.create_userdata(DbRef(handle))?;
                    (ud, mlua::LightUserData(addr)).into_lua_multi(lua)
                }
                Err(e) => (Value::Nil, e).into_lua_multi(lua),
            }
        })?,
    )?;
    // geoip_lookup(ud, ip) -> record | nil | nil, "bad_address" / "closed" / "bad_arg"
    m.set(
        "geoip_lookup",
        lua.create_function(|lua, (ud, ip): (AnyUserData, mlua::LuaString)| -> LuaResult<MultiValue> {
            let Some(ip) = parse_ip(&ip.as_bytes()) else {
                return (Value::Nil, "bad_address").into_lua_multi(lua);
            };
            let rec = with_db(&ud, |db| -> Result<Option<LookupRec>, ()> {
                std::panic::catch_unwind(|| lookup_record(db, ip)).map_err(|_| ())
            });
            match rec {
                Err(code) => (Value::Nil, code).into_lua_multi(lua),
                Ok(Err(())) => (Value::Nil, "internal").into_lua_multi(lua),
                Ok(Ok(None)) => Value::Nil.into_lua_multi(lua),
                Ok(Ok(Some(LookupRec::Mmdb(v)))) => to_lua(lua, v)?.into_lua_multi(lua),
                Ok(Ok(Some(LookupRec::Legacy(fields)))) => {
                    let t = lua.create_table()?;
                    for (k, v) in fields {
                        t.raw_set(k, v)?;
                    }
                    t.into_lua_multi(lua)
                }
            }
        })?,
    )?;
    // geoip_close(ud) -> true (closed now) | false (was closed)
    m.set(
        "geoip_close",
        lua.create_function(|_, ud: AnyUserData| Ok(ud.borrow::<DbRef>().map(|r| r.0.close()).unwrap_or(false)))?,
    )?;
    // geoip_info(ud) -> table | nil, "closed"
    m.set(
        "geoip_info",
        lua.create_function(|lua, ud: AnyUserData| -> LuaResult<MultiValue> {
            let info = with_db(&ud, |db| {
                let mut t: Vec<(&str, Value)> = vec![
                    ("kind", Value::String(lua.create_string(db.kind())?)),
                    ("path", Value::String(lua.create_string(db.path.display().to_string())?)),
                    ("size", Value::Number(db.ident.size as f64)),
                    ("load_id", Value::Number(db.load_id as f64)),
                ];
                match &db.reader {
                    Reader::Mmdb(r) => {
                        let md = r.metadata();
                        t.push(("database_type", Value::String(lua.create_string(&md.database_type)?)));
                        t.push(("ip_version", Value::Number(md.ip_version as f64)));
                        t.push(("build_epoch", Value::Number(md.build_epoch as f64)));
                        t.push(("node_count", Value::Number(md.node_count as f64)));
                    }
                    Reader::Legacy(l) => {
                        let name = if l.v6 { "GeoIP Country V6" } else { "GeoIP Country" };
                        t.push(("database_type", Value::String(lua.create_string(name)?)));
                        t.push(("ip_version", Value::Number(if l.v6 { 6.0 } else { 4.0 })));
                    }
                }
                let tab = lua.create_table()?;
                for (k, v) in t {
                    tab.raw_set(k, v)?;
                }
                Ok::<_, mlua::Error>(tab)
            });
            match info {
                Ok(t) => t?.into_lua_multi(lua),
                Err(code) => (Value::Nil, code).into_lua_multi(lua),
            }
        })?,
    )?;
    // geoip_loaded() -> { { path =, kind =, size =, load_id =, opens = }, ... }
    m.set(
        "geoip_loaded",
        lua.create_function(|lua, ()| {
            let list = lua.create_table()?;
            for (i, (path, kind, size, load_id, opens)) in loaded().into_iter().enumerate() {
                let t = lua.create_table()?;
                t.raw_set("path", path)?;
                t.raw_set("kind", kind)?;
                t.raw_set("size", size as f64)?;
                t.raw_set("load_id", load_id as f64)?;
                t.raw_set("opens", opens as f64)?;
                list.raw_set(i + 1, t)?;
            }
            Ok(list)
        })?,
    )?;
    Ok(())
}

enum LookupRec {
    Mmdb(Val),
    Legacy(Vec<(&'static str, String)>),
}

fn lookup_record(db: &Db, ip: IpAddr) -> Option<LookupRec> {
    match &db.reader {
        Reader::Mmdb(r) => {
            let res = r.lookup(ip).ok()?;
            res.decode::<Val>().ok().flatten().map(LookupRec::Mmdb)
        }
        Reader::Legacy(l) => l.record(ip).map(LookupRec::Legacy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn node(l: u32, r: u32) -> [u8; 6] {
        [l as u8, (l >> 8) as u8, (l >> 16) as u8, r as u8, (r >> 8) as u8, (r >> 16) as u8]
    }

    #[test]
    fn legacy_tree_checks() {
        let leaf = |id: u32| COUNTRY_BEGIN + id;
        let mut ok = Vec::new();
        ok.extend(node(1, leaf(0)));
        ok.extend(node(leaf(225), leaf(3)));
        assert_eq!(validate_legacy_country(&ok, 256), Ok(()));
        // a country id beyond libGeoIP's table
        let mut bad = Vec::new();
        bad.extend(node(1, leaf(0)));
        bad.extend(node(leaf(300), leaf(3)));
        assert!(validate_legacy_country(&bad, 256).is_err());
        // truncated: node 1 missing
        assert!(validate_legacy_country(&ok[..6], 256).is_err());
        // a loop back to the root
        let mut cyc = Vec::new();
        cyc.extend(node(1, leaf(0)));
        cyc.extend(node(0, leaf(1)));
        assert!(validate_legacy_country(&cyc, 256).is_err());
        // text and zeros are no database
        assert!(validate_legacy_country(b"root:x:0:0:root:/root:/bin/bash\n", 256).is_err());
        assert!(validate_legacy_country(&[0u8; 4096], 256).is_err());
    }

    #[test]
    fn legacy_edition_follows_libgeoip() {
        assert_eq!(legacy_edition(&[1, 2, 3, 4, 5, 6, 7]), Ok(EDITION_COUNTRY));
        let mut v6 = vec![0u8; 64];
        v6.extend([0xff, 0xff, 0xff, EDITION_COUNTRY_V6]);
        assert_eq!(legacy_edition(&v6), Ok(EDITION_COUNTRY_V6));
        let mut old = vec![0u8; 64];
        old.extend([0xff, 0xff, 0xff, 106 + 1, 0, 0]);
        assert_eq!(legacy_edition(&old), Ok(2));
        assert!(legacy_edition(&[0xff; 3]).is_err());
    }

    #[test]
    fn sniff_and_parse() {
        let mut m = vec![0u8; 100];
        m.extend(MMDB_MARKER);
        assert_eq!(sniff(&m), Format::Mmdb);
        assert_eq!(sniff(b"hello"), Format::Legacy);
        assert_eq!(parse_ip(b"8.8.8.8"), Some(IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8))));
        assert_eq!(parse_ip(b"::ffff:8.8.8.8"), Some(IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8))));
        assert_eq!(parse_ip(b"2001:db8::1"), Some(IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap())));
        assert_eq!(parse_ip(b"8.8.8"), None);
        assert_eq!(parse_ip(b"8.8.8.8 "), None);
        assert_eq!(parse_ip(b"\xff"), None);
    }

    #[test]
    fn read_file_refuses_what_is_no_file() {
        assert!(read_file(Path::new("/")).unwrap_err().contains("a directory"));
        assert!(read_file(Path::new("/dev/zero")).unwrap_err().contains("character device"));
        assert!(read_file(Path::new("/nonexistent/x")).is_err());
        let dir = std::env::temp_dir().join(format!("ts_ffi_geoip_test_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c = CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a path we own.
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert!(read_file(&fifo).unwrap_err().contains("FIFO"));
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(read_file(&empty).unwrap_err().contains("empty"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debian_legacy_databases_when_installed() {
        let p = "/usr/share/GeoIP/GeoIP.dat";
        if !Path::new(p).exists() {
            return;
        }
        let db = open(p).unwrap();
        assert_eq!(db.country("8.8.8.8".parse().unwrap()).as_deref(), Some("US"));
        assert_eq!(db.country("::ffff:8.8.8.8".parse::<Ipv6Addr>().unwrap().to_ipv4_mapped().unwrap().into()).as_deref(), Some("US"));
        assert_eq!(db.country("127.0.0.1".parse().unwrap()), None);
        let again = open(p).unwrap();
        assert!(Arc::ptr_eq(&db, &again));
        let (buf, _, _) = read_file(Path::new(p)).unwrap();
        assert!(validate_legacy_country(&buf[..buf.len() / 2], 256).is_err());
    }

    #[test]
    fn concurrent_opens_load_once_and_lookups_agree() {
        let p = "/usr/share/GeoIP/GeoIPv6.dat";
        if !Path::new(p).exists() {
            return;
        }
        let threads: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(move || {
                    let db = open(p).unwrap();
                    let h = Handle::new(Arc::clone(&db));
                    let mut out = [0u8; 8];
                    for _ in 0..20_000 {
                        let ip: &[u8] = b"2001:4860:4860::8888";
                        let mut len = 0usize;
                        let rc = ts_ffi_geoip_country(&*h, ip.as_ptr(), ip.len(), out.as_mut_ptr(), out.len(), &mut len);
                        assert_eq!(rc, 0);
                        assert_eq!(&out[..len], b"US");
                    }
                    db.load_id
                })
            })
            .collect();
        let ids: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(ids.iter().all(|&i| i == ids[0]), "{ids:?}");
    }

    #[test]
    fn flat_country_codes() {
        let p = "/usr/share/GeoIP/GeoIP.dat";
        if !Path::new(p).exists() {
            return;
        }
        let h = Handle::new(open(p).unwrap());
        let mut out = [0u8; 8];
        let mut len = 0usize;
        let call = |ip: &[u8], out: &mut [u8; 8], len: &mut usize| {
            ts_ffi_geoip_country(&*h, ip.as_ptr(), ip.len(), out.as_mut_ptr(), out.len(), len)
        };
        assert_eq!(call(b"8.8.8.8", &mut out, &mut len), Code::Ok.as_int());
        assert_eq!(call(b"127.0.0.1", &mut out, &mut len), Code::Declined.as_int());
        assert_eq!(call(b"nope", &mut out, &mut len), Code::BadArg.as_int());
        assert_eq!(ts_ffi_geoip_country(std::ptr::null(), b"x".as_ptr(), 1, out.as_mut_ptr(), 8, &mut len), Code::BadArg.as_int());
        assert!(h.close());
        assert_eq!(call(b"8.8.8.8", &mut out, &mut len), Code::Gone.as_int());
        assert!(!h.close());
    }
}
