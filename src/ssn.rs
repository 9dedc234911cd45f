//! `ts_ffi.ssn`: the client session of the running transaction.

use crate::api::ts_fn;
use crate::codes::{Code, guard};
use crate::ctx::{CtxRec, txn_of};
use crate::txn::put;
use std::os::raw::c_int;

/// TSHttpTxnSsnGet + TSHttpSsnIdGet; `Declined` when the transaction has no client session.
#[unsafe(no_mangle)]
pub extern "C" fn ts_ffi_ssn_id(rec: *const CtxRec, out: *mut i64) -> c_int {
    guard(|| {
        let txn = txn_of(rec)?;
        let ssn = unsafe { ts_fn!(TSHttpTxnSsnGet)(txn) };
        if ssn.is_null() {
            return Err(Code::Declined);
        }
        let id = unsafe { ts_fn!(TSHttpSsnIdGet)(ssn) };
        put(out, id)
    })
}
