//! Socket addresses between Lua text and `struct sockaddr`, without trusting either side.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

/// Writes `ip`'s text into `buf` NUL-terminated and returns its length (without the NUL), or
/// `None` if it does not fit. The text is exactly what glibc's inet_ntop writes, as ATS and
/// ts_lua format addresses, but made here: glibc formats with sprintf, which is most of the
/// cost of a next-hop call (measured: ~40 of ~100 ns). No allocation (hot path).
pub fn write_text(ip: IpAddr, buf: &mut [u8]) -> Option<usize> {
    let mut text = Text { buf: [0; 46], len: 0 };
    match ip {
        IpAddr::V4(v4) => text.v4(v4.octets()),
        IpAddr::V6(v6) => text.v6(v6),
    }
    let n = text.len;
    let dst = buf.get_mut(..n + 1)?;
    dst[..n].copy_from_slice(&text.buf[..n]);
    dst[n] = 0;
    Some(n)
}

/// The longest address text (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`) fits in 45.
struct Text {
    buf: [u8; 46],
    len: usize,
}

impl Text {
    fn byte(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    /// Decimal, no leading zeros.
    fn dec(&mut self, v: u8) {
        if v >= 100 {
            self.byte(b'0' + v / 100);
        }
        if v >= 10 {
            self.byte(b'0' + v / 10 % 10);
        }
        self.byte(b'0' + v % 10);
    }

    /// Lower-case hex, no leading zeros (printf "%x").
    fn hex(&mut self, v: u16) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut shift = 12;
        while shift > 0 && (v >> shift) == 0 {
            shift -= 4;
        }
        loop {
            self.byte(DIGITS[usize::from((v >> shift) & 0xf)]);
            if shift == 0 {
                break;
            }
            shift -= 4;
        }
    }

    fn v4(&mut self, o: [u8; 4]) {
        self.dec(o[0]);
        for b in &o[1..] {
            self.byte(b'.');
            self.dec(*b);
        }
    }

    /// inet_ntop's (RFC 4291) form: the first longest run of two or more zero words as "::",
    /// and an embedded IPv4 address for ::a.b.c.d (but not ::1 or ::) and ::ffff:a.b.c.d.
    fn v6(&mut self, ip: Ipv6Addr) {
        let w = ip.segments();
        let (mut best, mut best_len) = (usize::MAX, 0);
        let mut i = 0;
        while i < 8 {
            if w[i] == 0 {
                let start = i;
                while i < 8 && w[i] == 0 {
                    i += 1;
                }
                if i - start > best_len {
                    (best, best_len) = (start, i - start);
                }
            } else {
                i += 1;
            }
        }
        if best_len < 2 {
            best = usize::MAX;
        }
        for (i, word) in w.iter().enumerate() {
            if best != usize::MAX && i >= best && i < best + best_len {
                if i == best {
                    self.byte(b':');
                }
                continue;
            }
            if i != 0 {
                self.byte(b':');
            }
            if i == 6
                && best == 0
                && (best_len == 6 || (best_len == 7 && w[7] != 1) || (best_len == 5 && w[5] == 0xffff))
            {
                let o = ip.octets();
                self.v4([o[12], o[13], o[14], o[15]]);
                return;
            }
            self.hex(*word);
        }
        if best != usize::MAX && best + best_len == 8 {
            self.byte(b':');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::raw::c_int;

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
        let long: IpAddr = "1111:2222:3333:4444:5555:6666:7777:8888".parse().unwrap();
        assert_eq!(write_text(long, &mut buf), Some(39));
        assert_eq!(write_text(long, &mut buf[..40]), Some(39));
        assert_eq!(write_text(long, &mut buf[..39]), None); // no room for the NUL
        let mut small = [0u8; 4];
        assert_eq!(write_text("1.2.3.4".parse().unwrap(), &mut small), None);
        let mut ok = [0u8; 8];
        assert_eq!(write_text("1.2.3.4".parse().unwrap(), &mut ok), Some(7));
        assert_eq!(&ok[..8], b"1.2.3.4\0");
    }

    /// glibc's inet_ntop, the reference.
    fn libc_text(ip: IpAddr) -> String {
        unsafe extern "C" {
            fn inet_ntop(af: c_int, src: *const u8, dst: *mut u8, size: libc::socklen_t) -> *const u8;
        }
        let (af, bytes) = match ip {
            IpAddr::V4(v4) => (libc::AF_INET, v4.octets().to_vec()),
            IpAddr::V6(v6) => (libc::AF_INET6, v6.octets().to_vec()),
        };
        let mut out = [0u8; 64];
        let p = unsafe { inet_ntop(af, bytes.as_ptr(), out.as_mut_ptr(), 64) };
        assert!(!p.is_null());
        let n = out.iter().position(|&b| b == 0).unwrap();
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    fn ours(ip: IpAddr) -> String {
        let mut buf = [0xffu8; 64];
        let n = write_text(ip, &mut buf).unwrap();
        assert_eq!(buf[n], 0);
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn text_is_inet_ntops() {
        let mut cases: Vec<IpAddr> = [
            "0.0.0.0", "127.0.0.1", "255.255.255.255", "10.0.100.9", "1.20.255.0", "::", "::1",
            "::2", "1::", "::ffff:1.2.3.4", "::1.2.3.4", "::0.0.0.2", "::0.1.0.0", "::ffff:0.0.0.0",
            "::ffff:0:0", "0:0:0:0:0:fffe:1.2.3.4", "1:0:0:0:0:ffff:1.2.3.4", "fe80::1",
            "2001:db8::5", "2001:db8:0:0:1:0:0:1", "2001:0:0:1:0:0:0:1", "1:0:1:0:1:0:1:0",
            "0:1:0:1:0:1:0:1", "1:2:3:4:5:6:7:8", "abcd:ef01:2345:6789:abcd:ef01:2345:6789",
            "0:0:1::", "::1:0:0", "64:ff9b::1.2.3.4", "0:0:0:0:0:1:0:0",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        // Every pattern of zero and non-zero words, with values of every hex width, and
        // pseudo-random IPv4 addresses.
        let widths = [0x1u16, 0x1f, 0x1ff, 0xffff, 0xffff, 0xa0b, 0x10, 0x100];
        for mask in 0u32..256 {
            let mut w = [0u16; 8];
            for i in 0..8 {
                if mask & (1 << i) != 0 {
                    w[i] = widths[(i + mask as usize) % 8];
                }
            }
            cases.push(IpAddr::V6(Ipv6Addr::from(w)));
            w[5] = 0xffff;
            cases.push(IpAddr::V6(Ipv6Addr::from(w)));
        }
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            cases.push(IpAddr::V4(Ipv4Addr::from(x ^ (x >> 7))));
        }
        for ip in cases {
            assert_eq!(ours(ip), libc_text(ip), "{ip:?}");
        }
    }
}
