//! `ts_ffi.txn`: calls on the running transaction. Flat functions for LuaJIT FFI: each takes
//! the record from `ts_ffi.base`, writes its result through `out` and returns a `Code`.

use crate::addr;
use crate::api::ts_fn;
use crate::codes::{Code, guard};
use crate::ctx::{CtxRec, txn_of};
use crate::fast::{Val, fast_fn};
use crate::sys::{TSHttpTxn, TSMLoc, TSReturnCode_TS_SUCCESS};
use std::os::raw::{c_char, c_int, c_void};

/// Writes `value` through `out`, which the Lua wrapper always provides.
pub(crate) fn put<T>(out: *mut T, value: T) -> Result<(), Code> {
    // SAFETY: a null `out` is refused; otherwise it is the wrapper's one-element FFI array.
    unsafe { out.as_mut() }.map(|o| *o = value).ok_or(Code::BadArg)
}

/// TSHttpTxnIdGet.
fn id(txn: TSHttpTxn) -> Result<i64, Code> {
    Ok(unsafe { ts_fn!(TSHttpTxnIdGet)(txn) } as i64)
}

#[unsafe(no_mangle)]
pub extern "C" fn ts_ffi_txn_id(rec: *const CtxRec, out: *mut i64) -> c_int {
    guard(|| put(out, id(txn_of(rec)?)?))
}
fast_fn!(fast_id, |t| id(t).map(Val::from));

/// `Declined` unless the transaction still has its client session. Several ATS calls
/// (TSHttpSsnClientFdGet, TSHttpTxnOutgoingAddrSet) dereference it without checking.
pub(crate) fn require_client_session(txn: TSHttpTxn) -> Result<(), Code> {
    let ssn = unsafe { ts_fn!(TSHttpTxnSsnGet)(txn) };
    if ssn.is_null() { Err(Code::Declined) } else { Ok(()) }
}

/// TSHttpTxnClientFdGet; `Declined` once the client connection is gone.
fn client_fd(txn: TSHttpTxn) -> Result<c_int, Code> {
    require_client_session(txn)?;
    let get = ts_fn!(TSHttpTxnClientFdGet);
    let mut fd: c_int = -1;
    if unsafe { get(txn, &mut fd) } != TSReturnCode_TS_SUCCESS || fd < 0 {
        return Err(Code::Declined);
    }
    Ok(fd)
}

#[unsafe(no_mangle)]
pub extern "C" fn ts_ffi_txn_client_fd(rec: *const CtxRec, out: *mut c_int) -> c_int {
    guard(|| put(out, client_fd(txn_of(rec)?)?))
}
fast_fn!(fast_client_fd, |t| client_fd(t).map(Val::from));

/// The origin connection's fd, if there is one.
fn server_fd(txn: TSHttpTxn) -> Result<Option<c_int>, Code> {
    let get = ts_fn!(TSHttpTxnServerFdGet);
    let mut fd: c_int = -1;
    let ok = unsafe { get(txn, &mut fd) } == TSReturnCode_TS_SUCCESS && fd >= 0;
    Ok(ok.then_some(fd))
}

/// TSHttpTxnServerFdGet; `Declined` when there is no origin connection.
fn server_fd_or_declined(txn: TSHttpTxn) -> Result<c_int, Code> {
    server_fd(txn)?.ok_or(Code::Declined)
}

#[unsafe(no_mangle)]
pub extern "C" fn ts_ffi_txn_server_fd(rec: *const CtxRec, out: *mut c_int) -> c_int {
    guard(|| put(out, server_fd_or_declined(txn_of(rec)?)?))
}
fast_fn!(fast_server_fd, |t| server_fd_or_declined(t).map(Val::from));

/// TSHttpTxnAborted, read the right way round: TS_SUCCESS means the transaction *was*
/// aborted (by the client, or in 9.2 by the origin).
fn is_aborted(txn: TSHttpTxn) -> Result<bool, Code> {
    // Its signature (from the 9.2 header) gains an argument in ATS 10: 9.x only, whatever
    // TS_FFI_ASSUME_ATS says about ts_lua's layouts.
    if unsafe { ts_fn!(TSTrafficServerVersionGetMajor)() } != 9 {
        return Err(Code::UnsupportedVersion);
    }
    Ok(unsafe { ts_fn!(TSHttpTxnAborted)(txn) } == TSReturnCode_TS_SUCCESS)
}

/// Writes 1 or 0.
#[unsafe(no_mangle)]
pub extern "C" fn ts_ffi_txn_is_aborted(rec: *const CtxRec, out: *mut c_int) -> c_int {
    guard(|| put(out, c_int::from(is_aborted(txn_of(rec)?)?)))
}
fast_fn!(fast_is_aborted, |t| is_aborted(t).map(Val::from));

/// TSHttpTxnNextHopAddrGet; `Declined` before a next hop is chosen.
fn next_hop_addr(txn: TSHttpTxn) -> Result<std::net::SocketAddr, Code> {
    let sa = unsafe { ts_fn!(TSHttpTxnNextHopAddrGet)(txn) } as *const libc::sockaddr;
    // SAFETY: ATS returns null or the address of its server info, sized for its family.
    let next = unsafe { addr::from_sockaddr(sa) }.ok_or(Code::Declined)?;
    // An intercepted transaction has a server entry with no address: no next hop.
    if next.ip().is_unspecified() {
        return Err(Code::Declined);
    }
    Ok(next)
}

/// The next hop: the address text into `ip` (NUL-terminated, `ip_len` bytes available; its
/// length into `text_len`), the port and the family (4 or 6).
#[unsafe(no_mangle)]
pub extern "C" fn ts_ffi_txn_next_hop_addr(
    rec: *const CtxRec,
    ip: *mut c_char,
    ip_len: usize,
    text_len: *mut c_int,
    port: *mut c_int,
    family: *mut c_int,
) -> c_int {
    guard(|| {
        let next = next_hop_addr(txn_of(rec)?)?;
        if ip.is_null() {
            return Err(Code::BadArg);
        }
        // SAFETY: the wrapper's buffer of `ip_len` bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(ip as *mut u8, ip_len) };
        let n = addr::write_text(next.ip(), buf).ok_or(Code::BadArg)?;
        put(text_len, n as c_int)?;
        put(port, c_int::from(next.port()))?;
        put(family, if next.is_ipv4() { 4 } else { 6 })
    })
}
fast_fn!(fast_next_hop_addr, |t| next_hop_addr(t).map(Val::Addr));

/// TSRemapFromUrlGet (`which` 0) or TSRemapToUrlGet (1) + TSUrlStringGet: a string ATS
/// allocated (free it with TSfree) and its length. `Declined` when no remap rule matched.
fn remap_url(txn: TSHttpTxn, which: c_int) -> Result<(*mut c_char, c_int), Code> {
    let get = match which {
        0 => ts_fn!(TSRemapFromUrlGet),
        1 => ts_fn!(TSRemapToUrlGet),
        _ => return Err(Code::BadArg),
    };
    let to_string = ts_fn!(TSUrlStringGet);
    let mut loc: TSMLoc = std::ptr::null_mut();
    if unsafe { get(txn, &mut loc) } != TSReturnCode_TS_SUCCESS || loc.is_null() {
        return Err(Code::Declined);
    }
    let mut n: c_int = 0;
    // bufp is unused by ATS 9.2 for URLs (it may be null).
    let s = unsafe { to_string(std::ptr::null_mut(), loc, &mut n) };
    if s.is_null() || n < 0 {
        return Err(Code::Declined);
    }
    Ok((s, n))
}

/// The remap URL as a string ATS allocated, to be freed with `ts_ffi_free`.
#[unsafe(no_mangle)]
pub extern "C" fn ts_ffi_txn_remap_url(
    rec: *const CtxRec,
    which: c_int,
    out: *mut *mut c_char,
    len: *mut c_int,
) -> c_int {
    guard(|| {
        let (s, n) = remap_url(txn_of(rec)?, which)?;
        put(len, n)?;
        put(out, s)
    })
}
fast_fn!(fast_remap_from_url, |t| remap_url(t, 0).map(|(s, n)| Val::TsStr(s, n as usize)));
fast_fn!(fast_remap_to_url, |t| remap_url(t, 1).map(|(s, n)| Val::TsStr(s, n as usize)));

/// Frees memory ATS allocated for a result (TSfree).
#[unsafe(no_mangle)]
pub extern "C" fn ts_ffi_free(p: *mut c_void) {
    guard(|| {
        if !p.is_null() {
            unsafe { ts_fn!(_TSfree)(p) };
        }
        Ok(())
    });
}

/// Whether an outgoing address may still change: a client session (ATS keeps the setting
/// there) and no origin connection yet (`Declined` otherwise: too late).
fn outgoing_settable(txn: TSHttpTxn) -> Result<(), Code> {
    require_client_session(txn)?;
    match server_fd(txn)? {
        Some(_) => Err(Code::Declined),
        None => Ok(()),
    }
}

/// TSHttpTxnOutgoingAddrSet with `ip` (text, `ip_len` bytes) and `port` (0–65535, 0 = any).
/// `BadArg` for anything but an IPv4/IPv6 address; `Declined` when too late.
#[unsafe(no_mangle)]
pub extern "C" fn ts_ffi_txn_set_outgoing_addr(
    rec: *const CtxRec,
    ip: *const c_char,
    ip_len: usize,
    port: c_int,
) -> c_int {
    guard(|| {
        let txn = txn_of(rec)?;
        if ip.is_null() {
            return Err(Code::BadArg);
        }
        // SAFETY: the wrapper passes a Lua string and its length.
        let text = unsafe { std::slice::from_raw_parts(ip as *const u8, ip_len) };
        let ip = addr::parse_ip(text).ok_or(Code::BadArg)?;
        let port = u16::try_from(port).map_err(|_| Code::BadArg)?;
        outgoing_settable(txn)?;
        let (ss, _) = addr::to_sockaddr(ip, port);
        let set = ts_fn!(TSHttpTxnOutgoingAddrSet);
        unsafe { set(txn, &ss as *const _ as *const crate::sys::sockaddr) };
        Ok(())
    })
}

/// Back to ATS's default outgoing address (an AF_UNSPEC address clears ip and port).
#[unsafe(no_mangle)]
pub extern "C" fn ts_ffi_txn_clear_outgoing_addr(rec: *const CtxRec) -> c_int {
    guard(|| {
        let txn = txn_of(rec)?;
        outgoing_settable(txn)?;
        let ss = addr::unspecified();
        let set = ts_fn!(TSHttpTxnOutgoingAddrSet);
        unsafe { set(txn, &ss as *const _ as *const crate::sys::sockaddr) };
        Ok(())
    })
}
