//! The PROXY protocol header a balancer in front sends before the client's bytes
//! (`listen ... proxy_protocol`): version 1 (a text line) and version 2 (binary), as
//! nginx reads them. No IO: the caller feeds what it has read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The addresses a header gives: the client's and the one it connected to. None for
/// `UNKNOWN` (v1) or `LOCAL` and unsupported families (v2): nginx accepts those and has
/// no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// What a parse of the bytes read so far found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header, `len` bytes of the input.
    Header { addrs: Option<Addrs>, len: usize },
    /// Not enough yet.
    Partial,
    /// Not a PROXY header: nginx's "broken header", with what it saw.
    Broken(String),
}

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// v1's longest line (nginx's NGX_PROXY_PROTOCOL_V1_MAX_HEADER).
const V1_MAX: usize = 107;

/// The longest header worth reading: v2's fixed part and its largest payload.
pub const MAX: usize = 16 + 65535;

pub fn parse(buf: &[u8]) -> Parsed {
    if buf.len() >= 12 && buf[..12] == V2_SIGNATURE {
        return v2(buf);
    }
    if V2_SIGNATURE.starts_with(buf) && !buf.is_empty() {
        return Parsed::Partial;
    }
    v1(buf)
}

fn broken(buf: &[u8]) -> Parsed {
    let end = buf
        .iter()
        .position(|c| *c == b'\r' || *c == b'\n')
        .unwrap_or(buf.len())
        .min(V1_MAX);
    Parsed::Broken(String::from_utf8_lossy(&buf[..end]).into_owned())
}

fn v1(buf: &[u8]) -> Parsed {
    let prefix = b"PROXY ";
    let n = buf.len().min(prefix.len());
    if buf[..n] != prefix[..n] {
        return broken(buf);
    }
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            broken(buf)
        } else {
            Parsed::Partial
        };
    };
    if end + 2 > V1_MAX {
        return broken(buf);
    }
    let Ok(line) = std::str::from_utf8(&buf[prefix.len()..end]) else {
        return broken(buf);
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let addrs = match fields[..] {
        ["UNKNOWN", ..] => None,
        [family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |s: &str| -> Option<IpAddr> {
                let ip: IpAddr = s.parse().ok()?;
                (ip.is_ipv4() == (family == "TCP4")).then_some(ip)
            };
            let port = |s: &str| -> Option<u16> {
                (!s.is_empty() && s.len() <= 5 && s.bytes().all(|c| c.is_ascii_digit()))
                    .then(|| s.parse().ok())
                    .flatten()
            };
            match (ip(src), ip(dst), port(sport), port(dport)) {
                (Some(s), Some(d), Some(sp), Some(dp)) => Some(Addrs {
                    src: SocketAddr::new(s, sp),
                    dst: SocketAddr::new(d, dp),
                }),
                _ => return broken(buf),
            }
        }
        _ => return broken(buf),
    };
    Parsed::Header {
        addrs,
        len: end + 2,
    }
}

fn v2(buf: &[u8]) -> Parsed {
    if buf.len() < 16 {
        return Parsed::Partial;
    }
    let (ver_cmd, family) = (buf[12], buf[13]);
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 2 {
        return Parsed::Broken("unknown PROXY protocol version".into());
    }
    if buf.len() < 16 + len {
        return Parsed::Partial;
    }
    let body = &buf[16..16 + len];
    let total = 16 + len;
    let addrs = match (ver_cmd & 0x0f, family >> 4) {
        // LOCAL: the balancer's own connection (a health check): no address.
        (0, _) => None,
        (1, 1) if body.len() >= 12 => {
            let ip = |o: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    body[o],
                    body[o + 1],
                    body[o + 2],
                    body[o + 3],
                ))
            };
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            Some(Addrs {
                src: SocketAddr::new(ip(0), port(8)),
                dst: SocketAddr::new(ip(4), port(10)),
            })
        }
        (1, 2) if body.len() >= 36 => {
            let ip = |o: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&body[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(a))
            };
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            Some(Addrs {
                src: SocketAddr::new(ip(0), port(32)),
                dst: SocketAddr::new(ip(16), port(34)),
            })
        }
        // Unix sockets and unspecified families: accepted, with no address.
        (1, 0 | 3) => None,
        (1, _) => return Parsed::Broken("bad PROXY protocol v2 address length".into()),
        _ => return Parsed::Broken("unknown PROXY protocol v2 command".into()),
    };
    Parsed::Header { addrs, len: total }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_lines() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 51234 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(h),
            Parsed::Header {
                addrs: Some(Addrs {
                    src: "192.0.2.7:51234".parse().unwrap(),
                    dst: "198.51.100.1:443".parse().unwrap(),
                }),
                len: 45,
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                addrs: None,
                len: 15
            }
        );
        let v6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        assert!(matches!(parse(v6), Parsed::Header { addrs: Some(_), .. }));
        assert_eq!(parse(b"PROXY TCP4 192.0.2.7"), Parsed::Partial);
        assert_eq!(parse(b"PRO"), Parsed::Partial);
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Broken(_)));
        assert!(matches!(
            parse(b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n"),
            Parsed::Broken(_)
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.4 1.2.3.4 99999 2\r\n"),
            Parsed::Broken(_)
        ));
        assert!(matches!(parse(&[b'P'; 200]), Parsed::Broken(_)));
    }

    #[test]
    fn version_2_headers() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 0, 2, 7, 198, 51, 100, 1, 0xc8, 0x22, 1, 187,
        ]);
        h.extend_from_slice(b"GET");
        assert_eq!(
            parse(&h),
            Parsed::Header {
                addrs: Some(Addrs {
                    src: "192.0.2.7:51234".parse().unwrap(),
                    dst: "198.51.100.1:443".parse().unwrap(),
                }),
                len: 28,
            }
        );
        assert_eq!(parse(&h[..20]), Parsed::Partial);
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(
            parse(&local),
            Parsed::Header {
                addrs: None,
                len: 16
            }
        );
    }
}
