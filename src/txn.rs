//! `ts_ffi.txn`: calls on the running transaction. Flat functions for LuaJIT FFI: each takes
//! the record from `ts_ffi.base`, writes its result through `out` and returns a `Code`.

use crate::api::ts_fn;
use crate::codes::{Code, guard};
use crate::ctx::{CtxRec, txn_of};
use crate::sys::TSReturnCode_TS_SUCCESS;
use std::os::raw::c_int;

/// Writes `value` through `out`, which the Lua wrapper always provides.
pub(crate) fn put<T>(out: *mut T, value: T) -> Result<(), Code> {
    // SAFETY: a null `out` is refused; otherwise it is the wrapper's one-element FFI array.
    unsafe { out.as_mut() }.map(|o| *o = value).ok_or(Code::BadArg)
}

/// TSHttpTxnIdGet.
#[unsafe(no_mangle)]
pub extern "C" fn ts_ffi_txn_id(rec: *const CtxRec, out: *mut i64) -> c_int {
    guard(|| {
        let txn = txn_of(rec)?;
        let id = unsafe { ts_fn!(TSHttpTxnIdGet)(txn) };
        put(out, id as i64)
    })
}

/// TSHttpTxnClientFdGet; `Declined` once the client connection is gone.
#[unsafe(no_mangle)]
pub extern "C" fn ts_ffi_txn_client_fd(rec: *const CtxRec, out: *mut c_int) -> c_int {
    guard(|| {
        let txn = txn_of(rec)?;
        let get = ts_fn!(TSHttpTxnClientFdGet);
        let mut fd: c_int = -1;
        if unsafe { get(txn, &mut fd) } != TSReturnCode_TS_SUCCESS || fd < 0 {
            return Err(Code::Declined);
        }
        put(out, fd)
    })
}
