//! `ts_ffi.tcpinfo`: the kernel's `struct tcp_info` (getsockopt TCP_INFO) of the running
//! transaction's client or origin connection. One flat function fills the caller's struct;
//! `lua/ts_ffi/tcpinfo.lua` turns it into a table.

use crate::api::ts_fn;
use crate::codes::{Code, guard};
use crate::ctx::{CtxRec, txn_of};
use crate::fast::{Val, fast_fn};
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

/// The interpreted path (src/fast.rs): the connection's tcp_info when everything succeeds;
/// any other outcome goes to the Lua wrapper, which answers it as in JIT mode.
fn fast_get(txn: TSHttpTxn, which: c_int) -> Result<Val, Code> {
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
    Ok(Val::TcpInfo(info, n))
}
fast_fn!(fast_client, |t| fast_get(t, CLIENT));
fast_fn!(fast_server, |t| fast_get(t, SERVER));

/// Pushes the table `lua/ts_ffi/tcpinfo.lua` makes of `o` (`n` bytes filled): the same
/// fields for the same `n`, the same names, every value a Lua number. Interpreted Lua pays
/// ~60 ns per cdata field read; this pays a few.
///
/// SAFETY: `l` is a running Lua state with room for 3 more values (LUA_MINSTACK is 20).
pub unsafe fn push_table(l: *mut lua::lua_State, o: &TcpInfo, n: usize) {
    unsafe {
        lua::lua_createtable(l, 0, 58);
        let set = |k: &std::ffi::CStr, v: f64| {
            lua::lua_pushnumber(l, v);
            lua::lua_setfield(l, -2, k.as_ptr());
        };
        set(c"state", o.state.into());
        set(c"ca_state", o.ca_state.into());
        set(c"retransmits", o.retransmits.into());
        set(c"probes", o.probes.into());
        set(c"backoff", o.backoff.into());
        set(c"options", o.options.into());
        set(c"snd_wscale", (o.wscale & 0x0f).into());
        set(c"rcv_wscale", (o.wscale >> 4).into());
        set(c"delivery_rate_app_limited", (o.flags & 1).into());
        set(c"fastopen_client_fail", ((o.flags >> 1) & 3).into());
        let u = |k: &std::ffi::CStr, v: u32| set(k, v.into());
        u(c"rto", o.rto);
        u(c"ato", o.ato);
        u(c"snd_mss", o.snd_mss);
        u(c"rcv_mss", o.rcv_mss);
        u(c"unacked", o.unacked);
        u(c"sacked", o.sacked);
        u(c"lost", o.lost);
        u(c"retrans", o.retrans);
        u(c"fackets", o.fackets);
        u(c"last_data_sent", o.last_data_sent);
        u(c"last_ack_sent", o.last_ack_sent);
        u(c"last_data_recv", o.last_data_recv);
        u(c"last_ack_recv", o.last_ack_recv);
        u(c"pmtu", o.pmtu);
        u(c"rcv_ssthresh", o.rcv_ssthresh);
        u(c"rtt", o.rtt);
        u(c"rttvar", o.rttvar);
        u(c"snd_ssthresh", o.snd_ssthresh);
        u(c"snd_cwnd", o.snd_cwnd);
        u(c"advmss", o.advmss);
        u(c"reordering", o.reordering);
        u(c"rcv_rtt", o.rcv_rtt);
        u(c"rcv_space", o.rcv_space);
        u(c"total_retrans", o.total_retrans);
        // uint64 fields: what tonumber() makes of them (a double).
        let w = |k: &std::ffi::CStr, v: u64| set(k, v as f64);
        if n >= 144 {
            w(c"pacing_rate", o.pacing_rate);
            w(c"max_pacing_rate", o.max_pacing_rate);
            w(c"bytes_acked", o.bytes_acked);
            w(c"bytes_received", o.bytes_received);
            u(c"segs_out", o.segs_out);
            u(c"segs_in", o.segs_in);
        }
        if n >= 160 {
            u(c"notsent_bytes", o.notsent_bytes);
            u(c"min_rtt", o.min_rtt);
            u(c"data_segs_in", o.data_segs_in);
            u(c"data_segs_out", o.data_segs_out);
        }
        if n >= 200 {
            w(c"delivery_rate", o.delivery_rate);
            w(c"busy_time", o.busy_time);
            w(c"rwnd_limited", o.rwnd_limited);
            w(c"sndbuf_limited", o.sndbuf_limited);
            u(c"delivered", o.delivered);
            u(c"delivered_ce", o.delivered_ce);
        }
        if n >= 216 {
            w(c"bytes_sent", o.bytes_sent);
            w(c"bytes_retrans", o.bytes_retrans);
        }
        if n >= 224 {
            u(c"dsack_dups", o.dsack_dups);
            u(c"reord_seen", o.reord_seen);
        }
        if n >= 232 {
            u(c"rcv_ooopack", o.rcv_ooopack);
            u(c"snd_wnd", o.snd_wnd);
        }
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
