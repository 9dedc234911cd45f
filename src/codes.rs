//! Return codes shared by every flat `extern "C"` function and by `lua/ts_ffi/base.lua`,
//! which turns them into a Lua error (programming errors) or `nil, err` (conditions).

use std::os::raw::c_int;

#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Success.
    Ok = 0,
    /// A condition of the moment (connection gone, nothing there): `nil, err`.
    Declined = 1,
    /// The TS* API is not in this process: not running inside traffic_server.
    NotInAts = 2,
    /// The running traffic_server lacks a TS* function this call needs.
    MissingFn = 3,
    /// No ts_lua transaction context in the running coroutine's environment.
    NoTxn = 4,
    /// The environment names a transaction context that ts_lua has released.
    Gone = 5,
    /// The running ATS version's private ts_lua layout is not one ts_ffi knows.
    UnsupportedVersion = 6,
    /// A bad argument reached the native side (the Lua wrappers check first).
    BadArg = 7,
    /// A Rust panic was caught at the FFI boundary (a ts_ffi bug).
    Internal = 8,
    /// The running thread is not a coroutine ts_lua resumes after an asynchronous call.
    NotResumable = 9,
}

/// Every code, in numeric order.
pub const ALL: [Code; 10] = [
    Code::Ok,
    Code::Declined,
    Code::NotInAts,
    Code::MissingFn,
    Code::NoTxn,
    Code::Gone,
    Code::UnsupportedVersion,
    Code::BadArg,
    Code::Internal,
    Code::NotResumable,
];

impl Code {
    pub fn as_int(self) -> c_int {
        self as c_int
    }

    /// The short name `base.lua` maps to a message.
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::Declined => "declined",
            Code::NotInAts => "not_in_ats",
            Code::MissingFn => "missing_fn",
            Code::NoTxn => "no_txn",
            Code::Gone => "gone",
            Code::UnsupportedVersion => "unsupported_version",
            Code::BadArg => "bad_arg",
            Code::Internal => "internal",
            Code::NotResumable => "not_resumable",
        }
    }
}

/// Runs `f` for a flat `extern "C"` entry point: its `Err` becomes the code, and a panic is
/// caught here so that it never unwinds into LuaJIT or traffic_server.
#[inline(always)]
pub fn guard(f: impl FnOnce() -> Result<(), Code>) -> c_int {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => Code::Ok.as_int(),
        Ok(Err(code)) => code.as_int(),
        Err(_) => Code::Internal.as_int(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_maps_results_and_panics_to_codes() {
        assert_eq!(guard(|| Ok(())), 0);
        assert_eq!(guard(|| Err(Code::Declined)), 1);
        assert_eq!(guard(|| panic!("boom")), Code::Internal.as_int());
    }

    #[test]
    fn names_are_distinct() {
        let all = ALL;
        for (i, a) in all.iter().enumerate() {
            assert_eq!(a.as_int(), i as c_int);
            for b in &all[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
    }
}
