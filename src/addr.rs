//! Socket addresses between Lua text and `struct sockaddr`, without trusting either side.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::raw::c_int;

/// Parses an IPv4 or IPv6 address in text form: exactly an address, nothing around it
/// (no port, brackets, zone or whitespace).
pub fn parse_ip(text: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(text).ok()?.parse::<IpAddr>().ok()
}

/// A `sockaddr_storage` holding `ip`:`port`, and its length.
pub fn to_sockaddr(ip: IpAddr, port: u16) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match ip {
        IpAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(v4).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: port.to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: v6.octets() },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// A `sockaddr` that names no address (AF_UNSPEC): ATS reads it as "no explicit address".
pub fn unspecified() -> libc::sockaddr_storage {
    // SAFETY: all-zero is a valid sockaddr_storage, and its family 0 is AF_UNSPEC.
    unsafe { std::mem::zeroed() }
}

/// Reads an IPv4 or IPv6 socket address; `None` for null or another family.
///
/// SAFETY: `sa`, if not null, points to a sockaddr whose size fits its family.
pub unsafe fn from_sockaddr(sa: *const libc::sockaddr) -> Option<SocketAddr> {
    let family = i32::from(unsafe { sa.as_ref()?.sa_family });
    match family {
        libc::AF_INET => {
            let sin = unsafe { &*(sa as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            let sin6 = unsafe { &*(sa as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(sin6.sin6_port)))
        }
        _ => None,
    }
}

/// Writes `ip`'s text into `buf` NUL-terminated; false if it does not fit. inet_ntop, as ATS
/// and ts_lua format addresses (and without allocating: this is on the hot path).
pub fn write_text(ip: IpAddr, buf: &mut [u8]) -> bool {
    unsafe extern "C" {
        // <arpa/inet.h>; the libc crate has no binding for it.
        fn inet_ntop(
            af: c_int,
            src: *const std::os::raw::c_void,
            dst: *mut std::os::raw::c_char,
            size: libc::socklen_t,
        ) -> *const std::os::raw::c_char;
    }
    let (family, bytes): (c_int, [u8; 16]) = match ip {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            (libc::AF_INET, b)
        }
        IpAddr::V6(v6) => (libc::AF_INET6, v6.octets()),
    };
    let len = libc::socklen_t::try_from(buf.len()).unwrap_or(0);
    // SAFETY: `bytes` holds an in_addr / in6_addr for `family`; inet_ntop writes at most
    // `len` bytes into `buf` and fails (ENOSPC) rather than overflow.
    let p = unsafe { inet_ntop(family, bytes.as_ptr().cast(), buf.as_mut_ptr().cast(), len) };
    !p.is_null()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_plain_addresses() {
        assert_eq!(parse_ip(b"127.0.0.3"), Some("127.0.0.3".parse().unwrap()));
        assert_eq!(parse_ip(b"::1"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip(b"2001:db8::5"), Some("2001:db8::5".parse().unwrap()));
        for bad in [
            &b"300.1.2.3"[..], b"", b"1.2.3", b"1.2.3.4:80", b"[::1]", b" 1.2.3.4", b"1.2.3.4\0",
            b"localhost", b"fe80::1%eth0", b"\xff\xfe",
        ] {
            assert_eq!(parse_ip(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sockaddr_round_trip() {
        for (ip, port) in [("127.0.0.3", 0u16), ("10.1.2.3", 8080), ("::1", 65535), ("2001:db8::5", 1)] {
            let ip: IpAddr = ip.parse().unwrap();
            let (ss, len) = to_sockaddr(ip, port);
            let expect = if ip.is_ipv4() { 16 } else { 28 };
            assert_eq!(len as usize, expect);
            let back = unsafe { from_sockaddr(&ss as *const _ as *const libc::sockaddr) };
            assert_eq!(back, Some(SocketAddr::new(ip, port)));
        }
        assert_eq!(unsafe { from_sockaddr(std::ptr::null()) }, None);
        let un = unspecified();
        assert_eq!(unsafe { from_sockaddr(&un as *const _ as *const libc::sockaddr) }, None);
    }

    #[test]
    fn text_fits_or_refuses() {
        let mut buf = [0xffu8; 46];
        assert!(write_text("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".parse().unwrap(), &mut buf));
        let mut small = [0u8; 4];
        assert!(!write_text("1.2.3.4".parse().unwrap(), &mut small));
        let mut ok = [0u8; 8];
        assert!(write_text("1.2.3.4".parse().unwrap(), &mut ok));
        assert_eq!(&ok[..8], b"1.2.3.4\0");
    }
}
