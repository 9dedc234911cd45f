//! `ts_ffi.tcpinfo`: the kernel's `struct tcp_info` (getsockopt TCP_INFO) of the running
//! transaction's client or origin connection. One flat function fills the caller's struct;
//! `lua/ts_ffi/tcpinfo.lua` turns it into a table.

use crate::api::ts_fn;
use crate::codes::{Code, guard};
use crate::ctx::{CtxRec, txn_of};
use crate::sys::TSReturnCode_TS_SUCCESS;
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
