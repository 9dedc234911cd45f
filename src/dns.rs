//! `ts_ffi.dns`: host lookups through ATS's HostDB (hosts file, cache, DNS) that suspend the
//! script's coroutine instead of blocking an ATS thread.
//!
//! `native.dns_lookup(name)` starts a lookup from the coroutine ts_lua runs `ts.hook`
//! functions in and answers `addr` (known at once: a literal, or HostDB answered inline),
//! `false, reason` (HostDB failed inline), a light userdata token (pending: the Lua wrapper
//! yields the token at once and the answer resumes it as `addr` or `nil, reason`) or
//! `nil, code` (cannot run here).
//!
//! Everything about one lookup happens under the transaction's mutex: the start (a hook
//! runs under it), HostDB's callback (HostDB calls back only holding the continuation's
//! mutex, which is the transaction's, and only if the action was not cancelled) and ts_lua's
//! release of the coroutine (TXN_CLOSE). So exactly one of three ends runs, once:
//! * inline answer: HostDB calls back inside TSHostLookup (phase `Starting`), which then
//!   returns a done action; the start finishes the item and returns the answer;
//! * callback: the item is finished (ts_lua will not run its cleanup), the continuation
//!   destroyed (ATS frees it after the handler returns), then, under the VM lock, if the
//!   coroutine is suspended yielding this lookup's token, the answer replaces the token and
//!   the coroutine is resumed; nothing of the lookup is touched after the resume, during
//!   which the transaction may end;
//! * release first (the transaction ends while the lookup is pending): the item's cleanup
//!   cancels the action, so HostDB never calls back, and destroys the continuation.

use crate::api::{api, ts_fn};
use crate::codes::Code;
use crate::ctx::{self, AsyncItem, Resumable};
use crate::sys::{TSAction, TSCont, TSEvent, TSEvent_TS_EVENT_HOST_LOOKUP, TSHostLookupResult};
use mlua::ffi as lua;
use std::net::IpAddr;
use std::os::raw::{c_int, c_void};

/// Longest name passed to HostDB (a DNS name is at most 253 characters, plus a final dot).
const MAX_NAME: usize = 254;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Inside TSHostLookup: a callback now is an inline answer.
    Starting,
    /// The coroutine waits for the callback.
    Pending,
    /// Answered inline; the start takes the answer.
    Answered,
}

/// One lookup, owned by its async item (`data`) until one of the three ends takes it.
struct Lookup {
    at: Resumable,
    item: *mut AsyncItem,
    contp: TSCont,
    action: TSAction,
    phase: Phase,
    answer: Result<String, &'static str>,
}

/// What the start reports to the Lua wrapper.
#[derive(Debug, PartialEq)]
enum Started {
    Answer(Result<String, &'static str>),
    /// The token the wrapper must yield (the lookup's address): the callback resumes the
    /// coroutine only if it is suspended yielding exactly this.
    Pending(*mut c_void),
}

/// The address text of a literal IPv4 or IPv6 address, in its canonical form.
fn literal(name: &[u8]) -> Option<String> {
    std::str::from_utf8(name).ok()?.parse::<IpAddr>().ok().map(|ip| ip.to_string())
}

/// Whether HostDB may be asked about `name` (TSHostLookup aborts the server on an empty one).
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && !name.contains(&0)
}

/// The answer HostDB's callback carries.
///
/// SAFETY: `edata` is the callback's event data.
unsafe fn decode(event: TSEvent, edata: *mut c_void) -> Result<String, &'static str> {
    if event != TSEvent_TS_EVENT_HOST_LOOKUP {
        return Err("lookup failed");
    }
    if edata.is_null() {
        return Err("host not found");
    }
    let get = (|| Ok::<_, Code>(ts_fn!(TSHostLookupResultAddrGet)))().map_err(|_| "lookup failed")?;
    // SAFETY: a non-null result of TS_EVENT_HOST_LOOKUP, valid during the callback.
    let sa = unsafe { get(edata as TSHostLookupResult) } as *const libc::sockaddr;
    // SAFETY: ATS's sockaddr is as large as its family says.
    unsafe {
        match sa.as_ref().map(|s| c_int::from(s.sa_family)) {
            Some(libc::AF_INET) => {
                let sin = &*(sa as *const libc::sockaddr_in);
                Ok(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).to_string())
            }
            Some(libc::AF_INET6) => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                Ok(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr).to_string())
            }
            _ => Err("host not found"),
        }
    }
}

/// Removes a lookup's continuation: no event reaches the handler afterwards.
///
/// SAFETY: `contp` is the lookup's continuation, not yet destroyed.
unsafe fn drop_cont(contp: TSCont) {
    let _ = (|| -> Result<(), Code> {
        let (set, destroy) = (ts_fn!(TSContDataSet), ts_fn!(TSContDestroy));
        unsafe {
            set(contp, std::ptr::null_mut());
            destroy(contp);
        }
        Ok(())
    })();
}

/// HostDB's callback, under the transaction's mutex.
unsafe extern "C" fn on_answer(contp: TSCont, event: TSEvent, edata: *mut c_void) -> c_int {
    let _ = std::panic::catch_unwind(|| -> Result<(), Code> { unsafe {
        let lk = ts_fn!(TSContDataGet)(contp) as *mut Lookup;
        let Some(lookup) = lk.as_mut() else { return Ok(()) };
        match lookup.phase {
            Phase::Starting => {
                lookup.answer = decode(event, edata);
                lookup.phase = Phase::Answered;
            }
            Phase::Pending => {
                let lookup = Box::from_raw(lk);
                AsyncItem::finish(lookup.item);
                drop_cont(contp);
                let answer = decode(event, edata);
                // Declined: the coroutine does not wait for this lookup; drop the answer.
                let _ = lookup.at.resume(lk.cast(), |co| push_answer(co, &answer));
            }
            Phase::Answered => {}
        }
        Ok(())
    }});
    0
}

/// Pushes `addr` or `nil, reason` on `co`; returns how many values.
///
/// SAFETY: `co` is a Lua thread of the VM whose lock the caller holds.
unsafe fn push_answer(co: *mut lua::lua_State, answer: &Result<String, &'static str>) -> c_int {
    unsafe {
        lua::lua_checkstack(co, 2);
        match answer {
            Ok(addr) => {
                lua::lua_pushlstring(co, addr.as_ptr().cast(), addr.len());
                1
            }
            Err(reason) => {
                lua::lua_pushnil(co);
                lua::lua_pushlstring(co, reason.as_ptr().cast(), reason.len());
                2
            }
        }
    }
}

/// ts_lua releases the coroutine (the transaction ended) while the lookup is pending: cancel
/// it so that HostDB never calls back. VM lock and transaction mutex held.
unsafe extern "C" fn on_release(item: *mut AsyncItem) -> c_int {
    let result = std::panic::catch_unwind(|| -> Result<(), Code> { unsafe {
        let lk = AsyncItem::take_data(item) as *mut Lookup;
        if lk.is_null() {
            return Ok(());
        }
        let lookup = Box::from_raw(lk);
        AsyncItem::finish(item);
        if lookup.phase == Phase::Pending && !lookup.action.is_null() {
            ts_fn!(TSActionCancel)(lookup.action);
        }
        drop_cont(lookup.contp);
        Ok(())
    }});
    if result.is_ok() { 0 } else { -1 }
}

/// Starts a lookup of `name` from the running coroutine `l`.
///
/// SAFETY: `l` is the running Lua state (a lua_CFunction's argument).
unsafe fn start(l: *mut lua::lua_State, name: &[u8]) -> Result<Started, Code> {
    api()?;
    let (create, set, done, lookup_fn) =
        (ts_fn!(TSContCreate), ts_fn!(TSContDataSet), ts_fn!(TSActionDone), ts_fn!(TSHostLookup));
    let _ = (ts_fn!(TSContDataGet), ts_fn!(TSContDestroy), ts_fn!(TSActionCancel));
    let _ = ts_fn!(TSHostLookupResultAddrGet);
    let at = unsafe { ctx::resumable(l) }?;
    if let Some(addr) = literal(name) {
        return Ok(Started::Answer(Ok(addr)));
    }
    if !valid_name(name) {
        return Ok(Started::Answer(Err("invalid host name")));
    }
    unsafe {
        let contp = create(Some(on_answer), at.mutex());
        if contp.is_null() {
            return Err(Code::Internal);
        }
        let lk = Box::into_raw(Box::new(Lookup {
            at,
            item: std::ptr::null_mut(),
            contp,
            action: std::ptr::null_mut(),
            phase: Phase::Starting,
            answer: Err("host not found"),
        }));
        let item = match at.link_item(contp, lk.cast(), on_release) {
            Ok(item) => item,
            Err(code) => {
                drop(Box::from_raw(lk));
                drop_cont(contp);
                return Err(code);
            }
        };
        (*lk).item = item;
        set(contp, lk.cast());
        let action = lookup_fn(contp, name.as_ptr().cast(), name.len());
        if (*lk).phase == Phase::Answered || done(action) != 0 {
            // Answered inline (HostDB returns a done action after calling back).
            AsyncItem::finish(item);
            let lookup = Box::from_raw(lk);
            drop_cont(contp);
            return Ok(Started::Answer(lookup.answer));
        }
        (*lk).action = action;
        (*lk).phase = Phase::Pending;
        Ok(Started::Pending(lk.cast()))
    }
}

/// `native.dns_lookup(name)` → `addr` | `false, reason` | token (pending: yield it now) |
/// `nil, code`. Never raises.
pub unsafe extern "C-unwind" fn lua_dns_lookup(l: *mut lua::lua_State) -> c_int {
    let result = std::panic::catch_unwind(|| unsafe {
        let mut len = 0usize;
        let p = if lua::lua_type(l, 1) == lua::LUA_TSTRING {
            lua::lua_tolstring(l, 1, &mut len)
        } else {
            std::ptr::null()
        };
        if p.is_null() {
            return Err(Code::BadArg);
        }
        // Copied: the lookup must not depend on the Lua string staying alive.
        let name = std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec();
        start(l, &name)
    })
    .unwrap_or(Err(Code::Internal));
    unsafe {
        match result {
            Ok(Started::Pending(token)) => {
                lua::lua_pushlightuserdata(l, token);
                1
            }
            Ok(Started::Answer(Ok(addr))) => {
                lua::lua_pushlstring(l, addr.as_ptr().cast(), addr.len());
                1
            }
            Ok(Started::Answer(Err(reason))) => {
                lua::lua_pushboolean(l, 0);
                lua::lua_pushlstring(l, reason.as_ptr().cast(), reason.len());
                2
            }
            Err(code) => {
                lua::lua_pushnil(l);
                lua::lua_pushstring(l, crate::cstr_name(code).as_ptr());
                2
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_answer_in_canonical_form() {
        assert_eq!(literal(b"127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(literal(b"0:0:0:0:0:0:0:1").as_deref(), Some("::1"));
        assert_eq!(literal(b"2001:DB8::1").as_deref(), Some("2001:db8::1"));
        assert_eq!(literal(b"localhost"), None);
        assert_eq!(literal(b"1.2.3"), None);
        assert_eq!(literal(b"\xff"), None);
    }

    #[test]
    fn names_hostdb_may_see() {
        assert!(valid_name(b"a.test"));
        assert!(!valid_name(b""));
        assert!(!valid_name(b"a\0b"));
        assert!(valid_name(&[b'a'; MAX_NAME]));
        assert!(!valid_name(&[b'a'; MAX_NAME + 1]));
    }
}
