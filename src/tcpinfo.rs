//! `ts_ffi.tcpinfo`: the kernel's `struct tcp_info` (getsockopt TCP_INFO) of the running
//! transaction's client or origin connection. One flat function fills the caller's struct;
//! `lua/ts_ffi/tcpinfo.lua` turns it into a table.

use crate::api::ts_fn;
use crate::codes::{Code, guard};
use crate::ctx::{CtxRec, txn_of};
use crate::sys::{TSHttpTxn, TSReturnCode_TS_SUCCESS};
use mlua::ffi as lua;
use crate::txn::put;
use std::os::raw::{c_int, c_void};

/// Linux's `struct tcp_info` as far as Debian 12's `<linux/tcp.h>` declares it (up to
/// `tcpi_snd_wnd`, 232 bytes). Newer kernels have more fields, which getsockopt leaves out
/// when the buffer is this size; older ones fill less, and say how much.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpInfo {
    pub state: u8,
    pub ca_state: u8,
    pub retransmits: u8,
    pub probes: u8,
    pub backoff: u8,
    pub options: u8,
    /// snd_wscale (low 4 bits), rcv_wscale (high 4 bits).
    pub wscale: u8,
    /// delivery_rate_app_limited (bit 0), fastopen_client_fail (bits 1-2).
    pub flags: u8,
    pub rto: u32,
    pub ato: u32,
    pub snd_mss: u32,
    pub rcv_mss: u32,
    pub unacked: u32,
    pub sacked: u32,
    pub lost: u32,
    pub retrans: u32,
    pub fackets: u32,
    pub last_data_sent: u32,
    pub last_ack_sent: u32,
    pub last_data_recv: u32,
    pub last_ack_recv: u32,
    pub pmtu: u32,
    pub rcv_ssthresh: u32,
    pub rtt: u32,
    pub rttvar: u32,
    pub snd_ssthresh: u32,
    pub snd_cwnd: u32,
    pub advmss: u32,
    pub reordering: u32,
    pub rcv_rtt: u32,
    pub rcv_space: u32,
    pub total_retrans: u32,
    pub pacing_rate: u64,
    pub max_pacing_rate: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub segs_out: u32,
    pub segs_in: u32,
    pub notsent_bytes: u32,
    pub min_rtt: u32,
    pub data_segs_in: u32,
    pub data_segs_out: u32,
    pub delivery_rate: u64,
    pub busy_time: u64,
    pub rwnd_limited: u64,
    pub sndbuf_limited: u64,
    pub delivered: u32,
    pub delivered_ce: u32,
    pub bytes_sent: u64,
    pub bytes_retrans: u64,
    pub dsack_dups: u32,
    pub reord_seen: u32,
    pub rcv_ooopack: u32,
    pub snd_wnd: u32,
}

const _: () = assert!(std::mem::size_of::<TcpInfo>() == 232);

/// Which connection of the transaction.
pub const CLIENT: c_int = 0;
pub const SERVER: c_int = 1;

/// getsockopt(TCP_INFO) on `fd` into `out`; the number of bytes the kernel filled, or errno.
pub fn tcp_info(fd: c_int, out: &mut TcpInfo) -> Result<usize, c_int> {
    let mut len = std::mem::size_of::<TcpInfo>() as libc::socklen_t;
    // SAFETY: `out` is a writable TcpInfo of `len` bytes; the kernel writes at most `len`.
    let rc = unsafe {
        libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, out as *mut TcpInfo as *mut c_void, &mut len)
    };
    if rc == 0 {
        Ok(len as usize)
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    }
}

/// Fills `out` with the tcp_info of the transaction's client (`which` = 0, TSHttpTxnClientFdGet)
/// or origin (1, TSHttpTxnServerFdGet) connection. `len` receives the bytes the kernel filled;
/// `Declined` with `len` = 0 when there is no such connection, or -errno when getsockopt fails
/// (e.g. -ENOPROTOOPT: not a TCP socket).
#[unsafe(no_mangle)]
pub extern "C" fn ts_ffi_tcpinfo_get(rec: *const CtxRec, which: c_int, out: *mut TcpInfo, len: *mut c_int) -> c_int {
    guard(|| {
        let txn = txn_of(rec)?;
        let mut fd: c_int = -1;
        let got = match which {
            CLIENT => unsafe { ts_fn!(TSHttpTxnClientFdGet)(txn, &mut fd) },
            SERVER => unsafe { ts_fn!(TSHttpTxnServerFdGet)(txn, &mut fd) },
            _ => return Err(Code::BadArg),
        };
        // SAFETY: a null `out` is refused; otherwise it is the wrapper's struct.
        let out = unsafe { out.as_mut() }.ok_or(Code::BadArg)?;
        if got != TSReturnCode_TS_SUCCESS || fd < 0 {
            put(len, 0)?;
            return Err(Code::Declined);
        }
        match tcp_info(fd, out) {
            Ok(n) => put(len, n as c_int),
            Err(errno) => {
                put(len, -errno)?;
                Err(Code::Declined)
            }
        }
    })
}

/// The connection's fd, then its tcp_info: `(info, bytes filled)`; `None` for anything but
/// success (the Lua wrapper then answers it).
fn fetch(txn: TSHttpTxn, which: c_int) -> Result<(TcpInfo, usize), Code> {
    let mut fd: c_int = -1;
    let got = if which == CLIENT {
        unsafe { ts_fn!(TSHttpTxnClientFdGet)(txn, &mut fd) }
    } else {
        unsafe { ts_fn!(TSHttpTxnServerFdGet)(txn, &mut fd) }
    };
    if got != TSReturnCode_TS_SUCCESS || fd < 0 {
        return Err(Code::Declined);
    }
    let mut info = TcpInfo::default(); // on the stack: no allocation per call
    let n = tcp_info(fd, &mut info).map_err(|_| Code::Declined)?;
    Ok((info, n))
}

/// One name of `lua/ts_ffi/tcpinfo.lua`'s table: the bytes the kernel must have filled for it
/// and its value as a Lua number (uint64 fields as tonumber() makes them).
pub struct Field {
    pub name: &'static str,
    pub min: usize,
    pub get: fn(&TcpInfo) -> f64,
}

macro_rules! field {
    ($min:expr, $name:ident) => {
        Field { name: stringify!($name), min: $min, get: |o| o.$name as f64 }
    };
    ($min:expr, $name:ident, $get:expr) => {
        Field { name: stringify!($name), min: $min, get: $get }
    };
}

/// Every field, in kernel order and so by `min`: the fields every kernel fills (Linux 2.6),
/// then Linux 4.2 (144 bytes), 4.6 (160), 4.18 (200), 4.19 (216), 5.3 (224), 5.4 (232). The
/// the one list of them: lua/ts_ffi/tcpinfo.lua reads it (`fields_table`); spec/unit/tcpinfo_*
/// check the names against a list of their own.
pub const FIELDS: [Field; 56] = [
    field!(0, state), field!(0, ca_state), field!(0, retransmits), field!(0, probes),
    field!(0, backoff), field!(0, options),
    field!(0, snd_wscale, |o| (o.wscale & 0x0f) as f64),
    field!(0, rcv_wscale, |o| (o.wscale >> 4) as f64),
    field!(0, delivery_rate_app_limited, |o| (o.flags & 1) as f64),
    field!(0, fastopen_client_fail, |o| ((o.flags >> 1) & 3) as f64),
    field!(0, rto), field!(0, ato), field!(0, snd_mss), field!(0, rcv_mss), field!(0, unacked),
    field!(0, sacked), field!(0, lost), field!(0, retrans), field!(0, fackets),
    field!(0, last_data_sent), field!(0, last_ack_sent), field!(0, last_data_recv),
    field!(0, last_ack_recv), field!(0, pmtu), field!(0, rcv_ssthresh), field!(0, rtt),
    field!(0, rttvar), field!(0, snd_ssthresh), field!(0, snd_cwnd), field!(0, advmss),
    field!(0, reordering), field!(0, rcv_rtt), field!(0, rcv_space), field!(0, total_retrans),
    field!(144, pacing_rate), field!(144, max_pacing_rate), field!(144, bytes_acked),
    field!(144, bytes_received), field!(144, segs_out), field!(144, segs_in),
    field!(160, notsent_bytes), field!(160, min_rtt), field!(160, data_segs_in),
    field!(160, data_segs_out),
    field!(200, delivery_rate), field!(200, busy_time), field!(200, rwnd_limited),
    field!(200, sndbuf_limited), field!(200, delivered), field!(200, delivered_ce),
    field!(216, bytes_sent), field!(216, bytes_retrans),
    field!(224, dsack_dups), field!(224, reord_seen),
    field!(232, rcv_ooopack), field!(232, snd_wnd),
];

/// FIELDS for Lua (`native.tcpinfo_fields`): `{ { name =, min = }, ... }` in kernel order,
/// from which lua/ts_ffi/tcpinfo.lua makes its table builder and its one-field checks.
pub fn fields_table(lua: &mlua::Lua) -> mlua::Result<mlua::Table> {
    let list = lua.create_table()?;
    for (i, f) in FIELDS.iter().enumerate() {
        let field = lua.create_table()?;
        field.raw_set("name", f.name)?;
        field.raw_set("min", f.min)?;
        list.raw_set(i + 1, field)?;
    }
    Ok(list)
}

/// Lua source of the table builder the interpreted path calls with (count, value...), the
/// values of the first `count` FIELDS: one table constructor per group, so LuaJIT makes the
/// table from a template of its keys (TDUP) instead of inserting 56 keys through the C API
/// (measured: ~1.2 µs of a ~1.7 µs call). Made from FIELDS, so the names cannot drift.
pub fn builder_source() -> String {
    let params: Vec<String> = (1..=FIELDS.len()).map(|i| format!("v{i}")).collect();
    let mut src = format!("return function(c, {})\n", params.join(", "));
    let all: Vec<String> =
        FIELDS.iter().enumerate().map(|(i, f)| format!("{} = v{}", f.name, i + 1)).collect();
    src += &format!("  if c == {} then return {{ {} }} end\n", FIELDS.len(), all.join(", "));
    let base = FIELDS.iter().take_while(|f| f.min == 0).count();
    src += &format!("  local t = {{ {} }}\n", all[..base].join(", "));
    let mut i = base;
    while i < FIELDS.len() {
        let group = FIELDS[i..].iter().take_while(|f| f.min == FIELDS[i].min).count();
        src += &format!("  if c >= {} then", i + group);
        for (j, f) in FIELDS[i..i + group].iter().enumerate() {
            src += &format!(" t.{} = v{}", f.name, i + j + 1);
        }
        src += " end\n";
        i += group;
    }
    src += "  return t\nend\n";
    src
}

/// The interpreted path of client()/server() (src/fast.rs): called with no arguments, the
/// table, made by the builder (upvalue 3 of the closure, `builder_source`); with one field
/// name, that field. Anything else (a field this kernel does not fill, an unknown name, no
/// connection, getsockopt failing, no context) goes to the Lua wrapper, which answers it.
///
/// SAFETY: `l` is running a closure made by `fast::lua_bind`.
unsafe fn run(l: *mut lua::lua_State, which: c_int) -> c_int {
    enum Answer {
        Field(f64),
        Table(TcpInfo, usize),
    }
    unsafe {
        let nargs = lua::lua_gettop(l);
        // Only reads here: nothing that can raise a Lua error inside catch_unwind.
        let fast = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let field = match nargs {
                0 => None,
                1 if lua::lua_type(l, 1) == lua::LUA_TSTRING => {
                    let mut len = 0usize;
                    let p = lua::lua_tolstring(l, 1, &mut len);
                    let name = std::slice::from_raw_parts(p as *const u8, len);
                    Some(FIELDS.iter().find(|f| f.name.as_bytes() == name)?)
                }
                _ => return None,
            };
            let txn = txn_of(crate::fast::boxed_rec(l)).ok()?;
            let (info, n) = fetch(txn, which).ok()?;
            match field {
                Some(f) if n >= f.min => Some(Answer::Field((f.get)(&info))),
                Some(_) => None,
                None => Some(Answer::Table(info, n)),
            }
        }));
        match fast {
            Ok(Some(Answer::Field(v))) => {
                lua::lua_pushnumber(l, v);
                1
            }
            Ok(Some(Answer::Table(info, n))) if push_table(l, &info, n) => 1,
            _ => crate::fast::call_wrapper(l, nargs),
        }
    }
}

pub unsafe extern "C-unwind" fn fast_client(l: *mut lua::lua_State) -> c_int {
    unsafe { run(l, CLIENT) }
}

pub unsafe extern "C-unwind" fn fast_server(l: *mut lua::lua_State) -> c_int {
    unsafe { run(l, SERVER) }
}

/// Pushes the table `lua/ts_ffi/tcpinfo.lua` makes of `o` (`n` bytes filled): the same
/// fields for the same `n`, the same names, every value a Lua number, through the builder
/// (upvalue 5 of the closure). False, with the stack as it was, if that is not a function.
///
/// SAFETY: `l` is running a closure made by `fast::lua_bind`. The builder cannot raise (a
/// table constructor; only memory exhaustion), but if it did, the error would unwind
/// through frames that own nothing to drop.
unsafe fn push_table(l: *mut lua::lua_State, o: &TcpInfo, n: usize) -> bool {
    unsafe {
        let count = FIELDS.iter().take_while(|f| f.min <= n).count();
        if lua::lua_type(l, lua::lua_upvalueindex(5)) != lua::LUA_TFUNCTION
            || lua::lua_checkstack(l, count as c_int + 2) == 0
        {
            return false;
        }
        lua::lua_pushvalue(l, lua::lua_upvalueindex(5));
        lua::lua_pushnumber(l, count as f64);
        for f in &FIELDS[..count] {
            lua::lua_pushnumber(l, (f.get)(o));
        }
        lua::lua_call(l, count as c_int + 1, 1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn layout_matches_linux_tcp_h() {
        // Offsets from <linux/tcp.h> (x86-64).
        assert_eq!(offset_of!(TcpInfo, rto), 8);
        assert_eq!(offset_of!(TcpInfo, unacked), 24);
        assert_eq!(offset_of!(TcpInfo, last_data_sent), 44);
        assert_eq!(offset_of!(TcpInfo, pmtu), 60);
        assert_eq!(offset_of!(TcpInfo, rtt), 68);
        assert_eq!(offset_of!(TcpInfo, total_retrans), 100);
        assert_eq!(offset_of!(TcpInfo, pacing_rate), 104);
        assert_eq!(offset_of!(TcpInfo, data_segs_in), 152);
        assert_eq!(offset_of!(TcpInfo, delivery_rate), 160);
        assert_eq!(offset_of!(TcpInfo, snd_wnd), 228);
    }

    #[test]
    fn fields_are_in_group_order_and_the_builder_follows_them() {
        assert!(FIELDS.windows(2).all(|w| w[0].min <= w[1].min));
        let mut names: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FIELDS.len());
        let src = builder_source();
        assert!(src.starts_with("return function(c, v1, v2, "), "{src}");
        assert!(src.contains("if c == 56 then return { state = v1, ca_state = v2, "), "{src}");
        assert!(src.contains(", rcv_ooopack = v55, snd_wnd = v56 } end\n"), "{src}");
        assert!(src.contains("local t = { state = v1, "), "{src}");
        assert!(src.contains(", total_retrans = v34 }\n"), "{src}");
        assert!(src.contains("if c >= 40 then t.pacing_rate = v35 t.max_pacing_rate = v36 "), "{src}");
        assert!(src.contains("if c >= 56 then t.rcv_ooopack = v55 t.snd_wnd = v56 end\n"), "{src}");
        let mut info = TcpInfo { wscale: 0x73, flags: 0b101, rtt: 7, bytes_acked: 1 << 40, ..Default::default() };
        info.snd_wnd = 9;
        let get = |name: &str| (FIELDS.iter().find(|f| f.name == name).unwrap().get)(&info);
        assert_eq!((get("snd_wscale"), get("rcv_wscale")), (3.0, 7.0));
        assert_eq!((get("delivery_rate_app_limited"), get("fastopen_client_fail")), (1.0, 2.0));
        assert_eq!((get("rtt"), get("bytes_acked"), get("snd_wnd")), (7.0, (1u64 << 40) as f64, 9.0));
    }

    #[test]
    fn reads_a_real_loopback_connection() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let mut info = TcpInfo::default();
        let n = tcp_info(c.as_raw_fd(), &mut info).unwrap();
        assert!(n >= offset_of!(TcpInfo, data_segs_out) + 4, "{n}");
        assert_eq!(info.state, 1); // TCP_ESTABLISHED
        assert!(info.rto > 0);
        assert!(info.pmtu > 0);
    }

    #[test]
    fn non_tcp_fds_give_errno() {
        let mut info = TcpInfo::default();
        assert_eq!(tcp_info(-1, &mut info), Err(libc::EBADF));
        let f = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(tcp_info(f.as_raw_fd(), &mut info), Err(libc::ENOTSOCK));
    }
}
