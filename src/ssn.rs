//! `ts_ffi.ssn`: the client session of the running transaction.

use crate::api::ts_fn;
use crate::codes::{Code, guard};
use crate::ctx::{CtxRec, txn_of};
use crate::fast::{Val, fast_fn};
use crate::sys::TSHttpTxn;
use crate::txn::put;
use std::os::raw::c_int;

/// TSHttpTxnSsnGet + TSHttpSsnIdGet; `Declined` when the transaction has no client session.
fn id(txn: TSHttpTxn) -> Result<i64, Code> {
    let ssn = unsafe { ts_fn!(TSHttpTxnSsnGet)(txn) };
    if ssn.is_null() {
        return Err(Code::Declined);
    }
    Ok(unsafe { ts_fn!(TSHttpSsnIdGet)(ssn) })
}

#[unsafe(no_mangle)]
pub extern "C" fn ts_ffi_ssn_id(rec: *const CtxRec, out: *mut i64) -> c_int {
    guard(|| put(out, id(txn_of(rec)?)?))
}
fast_fn!(fast_id, |t| id(t).map(Val::from));
