//! `ts_ffi.txn`: calls on the running transaction. Flat functions for LuaJIT FFI: each takes
//! the record from `ts_ffi.base`, writes its result through `out` and returns a `Code`.

use crate::api::ts_fn;
use crate::codes::{Code, guard};
use crate::ctx::{CtxRec, txn_of};
use crate::fast::{Val, fast_fn};
use crate::sys::{TSHttpTxn, TSReturnCode_TS_SUCCESS};
use std::os::raw::c_int;

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

/// TSHttpTxnClientFdGet; `Declined` once the client connection is gone.
fn client_fd(txn: TSHttpTxn) -> Result<c_int, Code> {
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
