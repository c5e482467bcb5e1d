//! VRRP on the wire: RFC 3768 (v2) and RFC 5798 (v3), as keepalived sends and accepts it.
//!
//! [`VrrpPacket`] is a zero-copy view over the bytes of a VRRP message (the IP payload);
//! after [`VrrpPacket::new_checked`] no accessor can panic. [`Advert`] is the parsed form,
//! with [`Advert::parse`] and [`Advert::emit`]. Golden bytes in the tests were captured from
//! keepalived 2.2.7 in the lab.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Version| Type  | Virtual Rtr ID|   Priority    | Count IP Addrs|
//! v2: |  Auth Type    |   Adver Int   |          Checksum             |
//! v3: |(rsvd) |     Max Adver Int     |          Checksum             |
//! |                       IP addresses ...                        |
//! v2: |                 Authentication Data (8 bytes)                 |
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fulcrum_types::Vrid;
use fulcrum_wire::checksum::Checksum;

/// IP protocol number of VRRP.
pub const PROTOCOL: u8 = 112;
/// Adverts are sent, and must be received, with TTL / hop limit 255.
pub const TTL: u8 = 255;
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

const HEADER_LEN: usize = 8;
const AUTH_LEN: usize = 8;
const TYPE_ADVERTISEMENT: u8 = 1;
const AUTH_NONE: u8 = 0;
const AUTH_PASS: u8 = 1;

/// Why a received VRRP packet was dropped; each reason is counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    /// Shorter than its header, or than the addresses and auth data it announces.
    #[error("packet is truncated")]
    Truncated,
    /// Version other than 2 or 3, or not the version this instance speaks.
    #[error("wrong VRRP version")]
    Version,
    /// Type other than 1 (advertisement).
    #[error("not an advertisement")]
    Type,
    /// TTL or hop limit other than 255: the packet crossed a router.
    #[error("TTL/hop limit is not 255")]
    Ttl,
    #[error("checksum mismatch")]
    Checksum,
    /// Virtual router id 0 (invalid) or another instance's.
    #[error("virtual router id does not match")]
    Vrid,
    /// v2 authentication type or password other than configured.
    #[error("authentication mismatch")]
    Auth,
    /// v2 advertisement interval other than ours (RFC 3768 requires a match).
    #[error("advertisement interval does not match")]
    Interval,
    /// Address family of the message differs from its IP header's.
    #[error("address family does not match")]
    Family,
    /// Addresses that differ from ours (counted; keepalived still accepts these).
    #[error("virtual addresses do not match")]
    Addresses,
}

/// Which checksum a v3 message over IPv4 carries. keepalived includes the pseudo-header by
/// default (RFC 5798); `v3_checksum_as_v2` leaves it out, as RFC 9568 and other vendors do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChecksumMode {
    #[default]
    PseudoHeader,
    MessageOnly,
}

/// A view over a VRRP message (the IP payload).
#[derive(Debug, Clone, Copy)]
pub struct VrrpPacket<T: AsRef<[u8]>> {
    buffer: T,
    v6: bool,
}

impl<T: AsRef<[u8]>> VrrpPacket<T> {
    /// A view that checks nothing: accessors may panic on short buffers.
    pub fn new_unchecked(buffer: T, v6: bool) -> VrrpPacket<T> {
        VrrpPacket { buffer, v6 }
    }

    /// A view over a message carried by IPv4 (`v6` false) or IPv6, after checking that the
    /// buffer holds the header, the addresses it announces and (v2) the auth data.
    pub fn new_checked(buffer: T, v6: bool) -> Result<VrrpPacket<T>, DropReason> {
        let p = VrrpPacket::new_unchecked(buffer, v6);
        let b = p.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        let version = p.version();
        if version != 2 && version != 3 {
            return Err(DropReason::Version);
        }
        if b.len() < p.message_len() {
            return Err(DropReason::Truncated);
        }
        Ok(p)
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn version(&self) -> u8 {
        self.bytes()[0] >> 4
    }

    pub fn kind(&self) -> u8 {
        self.bytes()[0] & 0x0f
    }

    pub fn vrid(&self) -> u8 {
        self.bytes()[1]
    }

    pub fn priority(&self) -> u8 {
        self.bytes()[2]
    }

    pub fn address_count(&self) -> u8 {
        self.bytes()[3]
    }

    /// v2: the authentication type.
    pub fn auth_type(&self) -> u8 {
        self.bytes()[4]
    }

    /// The advertisement interval in centiseconds (v2 sends whole seconds).
    pub fn interval_centis(&self) -> u16 {
        let b = self.bytes();
        if self.version() == 2 {
            u16::from(b[5]) * 100
        } else {
            u16::from_be_bytes([b[4] & 0x0f, b[5]])
        }
    }

    pub fn checksum(&self) -> u16 {
        let b = self.bytes();
        u16::from_be_bytes([b[6], b[7]])
    }

    fn address_len(&self) -> usize {
        if self.v6 {
            16
        } else {
            4
        }
    }

    /// Length of the message as its header describes it.
    pub fn message_len(&self) -> usize {
        let auth = if self.version() == 2 { AUTH_LEN } else { 0 };
        HEADER_LEN + usize::from(self.address_count()) * self.address_len() + auth
    }

    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let len = self.address_len();
        let b = &self.bytes()[HEADER_LEN..];
        (0..usize::from(self.address_count())).map(move |i| {
            let a = &b[i * len..(i + 1) * len];
            if len == 4 {
                IpAddr::from([a[0], a[1], a[2], a[3]])
            } else {
                let mut o = [0u8; 16];
                o.copy_from_slice(a);
                IpAddr::from(o)
            }
        })
    }

    /// v2: the 8 bytes of authentication data.
    pub fn auth_data(&self) -> [u8; 8] {
        let mut o = [0u8; 8];
        if self.version() == 2 {
            let start = HEADER_LEN + usize::from(self.address_count()) * self.address_len();
            o.copy_from_slice(&self.bytes()[start..start + AUTH_LEN]);
        }
        o
    }
}

/// The parsed form of an advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: Vrid,
    /// 0 means the master is stopping; 255 the address owner.
    pub priority: u8,
    /// Advertisement interval in centiseconds (v2: a multiple of 100).
    pub interval_centis: u16,
    pub addresses: Vec<IpAddr>,
    /// v2 PASS authentication: the password's first 8 bytes, zero padded.
    pub auth: Option<[u8; 8]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V2,
    V3,
}

/// The password as it goes in a v2 PASS advert: its first 8 bytes, zero padded.
pub fn pass_auth_data(password: &str) -> [u8; 8] {
    let mut o = [0u8; 8];
    for (d, s) in o.iter_mut().zip(password.as_bytes()) {
        *d = *s;
    }
    o
}

/// The checksum a message should carry (computed with its checksum field zero, or verified
/// to 0 over a message that carries one).
pub fn checksum(
    message: &[u8],
    src: IpAddr,
    dst: IpAddr,
    version: Version,
    mode: ChecksumMode,
) -> u16 {
    let mut sum = Checksum::new();
    let pseudo = version == Version::V3 && (src.is_ipv6() || mode == ChecksumMode::PseudoHeader);
    if pseudo {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                sum.pseudo_v4(s, d, PROTOCOL, message.len() as u16);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                sum.pseudo_v6(s, d, PROTOCOL, message.len() as u32);
            }
            _ => {}
        }
    }
    sum.add(message).finish()
}

impl Advert {
    /// Parses and verifies a received message. `src` and `dst` are the IP header's addresses
    /// (the v3 checksum covers them); `ttl` is its TTL or hop limit.
    pub fn parse(
        message: &[u8],
        src: IpAddr,
        dst: IpAddr,
        ttl: u8,
        mode: ChecksumMode,
    ) -> Result<Advert, DropReason> {
        if src.is_ipv6() != dst.is_ipv6() {
            return Err(DropReason::Family);
        }
        let p = VrrpPacket::new_checked(message, src.is_ipv6())?;
        if ttl != TTL {
            return Err(DropReason::Ttl);
        }
        if p.kind() != TYPE_ADVERTISEMENT {
            return Err(DropReason::Type);
        }
        let version = if p.version() == 2 {
            Version::V2
        } else {
            Version::V3
        };
        if version == Version::V2 && src.is_ipv6() {
            return Err(DropReason::Version);
        }
        let len = p.message_len();
        if checksum(&message[..len], src, dst, version, mode) != 0 {
            // keepalived accepts a v3 IPv4 advert with either checksum only when told to;
            // the caller chooses the mode.
            return Err(DropReason::Checksum);
        }
        let vrid = Vrid::new(i64::from(p.vrid())).map_err(|_| DropReason::Vrid)?;
        let auth = match (version, p.auth_type()) {
            (Version::V2, AUTH_NONE) => None,
            (Version::V2, AUTH_PASS) => Some(p.auth_data()),
            (Version::V2, _) => return Err(DropReason::Auth),
            (Version::V3, _) => None,
        };
        Ok(Advert {
            version,
            vrid,
            priority: p.priority(),
            interval_centis: p.interval_centis(),
            addresses: p.addresses().collect(),
            auth,
        })
    }

    /// Length of the message `emit` writes.
    pub fn message_len(&self) -> usize {
        let per = if self.addresses.first().is_some_and(IpAddr::is_ipv6) {
            16
        } else {
            4
        };
        let auth = if self.version == Version::V2 {
            AUTH_LEN
        } else {
            0
        };
        HEADER_LEN + self.addresses.len().min(255) * per + auth
    }

    /// Writes the message into `buf` (at least [`Advert::message_len`] bytes), checksum
    /// included.
    /// Addresses beyond 255, or of another family than the first, are left out.
    pub fn emit(&self, buf: &mut [u8], src: IpAddr, dst: IpAddr, mode: ChecksumMode) -> usize {
        let len = self.message_len();
        let buf = &mut buf[..len];
        buf.fill(0);
        let (version, interval) = match self.version {
            Version::V2 => (2u8, (self.interval_centis / 100).clamp(1, 255) as u8 as u16),
            Version::V3 => (3u8, self.interval_centis.min(0x0fff)),
        };
        buf[0] = (version << 4) | TYPE_ADVERTISEMENT;
        buf[1] = self.vrid.get();
        buf[2] = self.priority;
        let v6 = self.addresses.first().is_some_and(IpAddr::is_ipv6);
        let addrs: Vec<&IpAddr> = self
            .addresses
            .iter()
            .filter(|a| a.is_ipv6() == v6)
            .take(255)
            .collect();
        buf[3] = addrs.len() as u8;
        match self.version {
            Version::V2 => {
                buf[4] = if self.auth.is_some() {
                    AUTH_PASS
                } else {
                    AUTH_NONE
                };
                buf[5] = interval as u8;
            }
            Version::V3 => {
                let [hi, lo] = interval.to_be_bytes();
                buf[4] = hi & 0x0f;
                buf[5] = lo;
            }
        }
        let mut at = HEADER_LEN;
        for a in addrs {
            match a {
                IpAddr::V4(a) => {
                    buf[at..at + 4].copy_from_slice(&a.octets());
                    at += 4;
                }
                IpAddr::V6(a) => {
                    buf[at..at + 16].copy_from_slice(&a.octets());
                    at += 16;
                }
            }
        }
        if self.version == Version::V2 {
            if let Some(auth) = self.auth {
                buf[at..at + AUTH_LEN].copy_from_slice(&auth);
            }
            at += AUTH_LEN;
        }
        let c = checksum(&buf[..at], src, dst, self.version, mode);
        buf[6..8].copy_from_slice(&c.to_be_bytes());
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Full IP packets captured from keepalived 2.2.7 (see the module docs).
    const V2_PASS: &str =
        "45c0002c00010000ff70c64c0a010a41e0000012213396020101b18d0a010a580a010a637365637265743132";
    const V2_PASS_STOP: &str =
        "45c0002c00040000ff70c6490a010a41e0000012213300020101478e0a010a580a010a637365637265743132";
    const V3_V4: &str = "45c0002000010000ff70c6580a010a41e000001231346401006461470a010a4d";
    const V3_V4_STOP: &str = "45c0002000030000ff70c6560a010a41e0000012313400010064c5470a010a4d";
    const V3_V6: &str = "6c023660001870fffe80000000000000847e48fffe9abd66ff0200000000000000000000000000123135c8010064508620010db8000000000000000000000088";
    const V3_V6_STOP: &str = "6c023660001870fffe80000000000000847e48fffe9abd66ff020000000000000000000000000012313500010064188720010db8000000000000000000000088";

    /// Splits a captured IP packet into (src, dst, ttl, VRRP message).
    fn split(ip: &[u8]) -> (IpAddr, IpAddr, u8, Vec<u8>) {
        if ip[0] >> 4 == 4 {
            let hl = usize::from(ip[0] & 15) * 4;
            let src = IpAddr::from([ip[12], ip[13], ip[14], ip[15]]);
            let dst = IpAddr::from([ip[16], ip[17], ip[18], ip[19]]);
            (src, dst, ip[8], ip[hl..].to_vec())
        } else {
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&ip[8..24]);
            d.copy_from_slice(&ip[24..40]);
            (IpAddr::from(s), IpAddr::from(d), ip[7], ip[40..].to_vec())
        }
    }

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn keepalived_v2_pass_auth() {
        let (src, dst, ttl, msg) = split(&hex(V2_PASS));
        let a = Advert::parse(&msg, src, dst, ttl, ChecksumMode::PseudoHeader).unwrap();
        assert_eq!(a.version, Version::V2);
        assert_eq!(a.vrid.get(), 51);
        assert_eq!(a.priority, 150);
        assert_eq!(a.interval_centis, 100);
        assert_eq!(a.addresses, vec![addr("10.1.10.88"), addr("10.1.10.99")]);
        assert_eq!(a.auth, Some(pass_auth_data("secret12")));
        // Our encoder writes the same bytes keepalived sent.
        let mut buf = [0u8; 64];
        let n = a.emit(&mut buf, src, dst, ChecksumMode::PseudoHeader);
        assert_eq!(&buf[..n], &msg[..]);
        let (src, dst, ttl, stop) = split(&hex(V2_PASS_STOP));
        let s = Advert::parse(&stop, src, dst, ttl, ChecksumMode::PseudoHeader).unwrap();
        assert_eq!(
            s.priority, 0,
            "keepalived's graceful stop advertises priority 0"
        );
    }

    #[test]
    fn keepalived_v3_ipv4_uses_the_pseudo_header() {
        let (src, dst, ttl, msg) = split(&hex(V3_V4));
        let a = Advert::parse(&msg, src, dst, ttl, ChecksumMode::PseudoHeader).unwrap();
        assert_eq!(
            (a.version, a.vrid.get(), a.priority, a.interval_centis),
            (Version::V3, 52, 100, 100)
        );
        assert_eq!(a.addresses, vec![addr("10.1.10.77")]);
        assert_eq!(a.auth, None);
        assert_eq!(
            Advert::parse(&msg, src, dst, ttl, ChecksumMode::MessageOnly),
            Err(DropReason::Checksum),
            "keepalived's default v3 checksum includes the IPv4 pseudo-header"
        );
        let mut buf = [0u8; 64];
        let n = a.emit(&mut buf, src, dst, ChecksumMode::PseudoHeader);
        assert_eq!(&buf[..n], &msg[..]);
        let (src, dst, ttl, stop) = split(&hex(V3_V4_STOP));
        assert_eq!(
            Advert::parse(&stop, src, dst, ttl, ChecksumMode::PseudoHeader)
                .unwrap()
                .priority,
            0
        );
    }

    #[test]
    fn keepalived_v3_ipv6() {
        let (src, dst, ttl, msg) = split(&hex(V3_V6));
        assert_eq!(dst, IpAddr::V6(MULTICAST_V6));
        let a = Advert::parse(&msg, src, dst, ttl, ChecksumMode::MessageOnly).unwrap();
        assert_eq!(
            (a.version, a.vrid.get(), a.priority, a.interval_centis),
            (Version::V3, 53, 200, 100)
        );
        assert_eq!(a.addresses, vec![addr("2001:db8::88")]);
        let mut buf = [0u8; 64];
        let n = a.emit(&mut buf, src, dst, ChecksumMode::PseudoHeader);
        assert_eq!(&buf[..n], &msg[..]);
        let (src, dst, ttl, stop) = split(&hex(V3_V6_STOP));
        assert_eq!(
            Advert::parse(&stop, src, dst, ttl, ChecksumMode::PseudoHeader)
                .unwrap()
                .priority,
            0
        );
    }

    #[test]
    fn v3_message_only_checksum_round_trips() {
        let a = Advert {
            version: Version::V3,
            vrid: Vrid::new(7).unwrap(),
            priority: 100,
            interval_centis: 1,
            addresses: vec![addr("10.0.0.1")],
            auth: None,
        };
        let (s, d) = (addr("10.0.0.2"), IpAddr::V4(MULTICAST_V4));
        let mut buf = [0u8; 64];
        let n = a.emit(&mut buf, s, d, ChecksumMode::MessageOnly);
        assert_eq!(
            Advert::parse(&buf[..n], s, d, 255, ChecksumMode::MessageOnly),
            Ok(a.clone())
        );
        assert_eq!(
            Advert::parse(&buf[..n], s, d, 255, ChecksumMode::PseudoHeader),
            Err(DropReason::Checksum)
        );
    }

    #[test]
    fn malformed_packets_are_dropped_with_a_reason() {
        let (src, dst, ttl, msg) = split(&hex(V2_PASS));
        let parse = |m: &[u8], ttl| Advert::parse(m, src, dst, ttl, ChecksumMode::PseudoHeader);
        assert_eq!(parse(&msg[..7], ttl), Err(DropReason::Truncated));
        assert_eq!(
            parse(&msg[..msg.len() - 1], ttl),
            Err(DropReason::Truncated)
        );
        assert_eq!(parse(&msg, 254), Err(DropReason::Ttl));
        let mut bad = msg.clone();
        bad[0] = 0x41;
        assert_eq!(parse(&bad, ttl), Err(DropReason::Version));
        let mut bad = msg.clone();
        bad[0] = 0x22;
        assert_eq!(parse(&bad, ttl), Err(DropReason::Type));
        let mut bad = msg.clone();
        bad[9] ^= 1;
        assert_eq!(parse(&bad, ttl), Err(DropReason::Checksum));
        let mut bad = msg.clone();
        bad[4] = 2; // AH
        assert_eq!(
            parse(&bad, ttl),
            Err(DropReason::Checksum),
            "the checksum covers the auth type"
        );
        assert_eq!(
            Advert::parse(&msg, src, addr("ff02::12"), ttl, ChecksumMode::PseudoHeader),
            Err(DropReason::Family)
        );
    }
}
