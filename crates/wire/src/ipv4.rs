//! IPv4 headers (RFC 791).

use std::net::Ipv4Addr;

use crate::checksum::{checksum, Checksum};
use crate::Error;

/// The length of a header without options.
pub const HEADER_LEN: usize = 20;

/// A view over an IPv4 packet: the header, its options and its payload.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the version, that the buffer holds the header with its options, and that
    /// the total length is within the buffer (a frame may carry padding after it).
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let p = Packet { buffer };
        if p.version() != 4 || p.header_len() < HEADER_LEN {
            return Err(Error::Malformed);
        }
        let len = p.buffer.as_ref().len();
        if len < p.header_len() || len < usize::from(p.total_len()) {
            return Err(Error::Truncated);
        }
        if usize::from(p.total_len()) < p.header_len() {
            return Err(Error::Malformed);
        }
        Ok(p)
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn version(&self) -> u8 {
        self.b()[0] >> 4
    }

    /// The header's length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[0] & 0x0f) * 4
    }

    pub fn total_len(&self) -> u16 {
        u16::from_be_bytes([self.b()[2], self.b()[3]])
    }

    pub fn ttl(&self) -> u8 {
        self.b()[8]
    }

    pub fn protocol(&self) -> u8 {
        self.b()[9]
    }

    pub fn src(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }

    pub fn dst(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }

    /// Whether the header checksum verifies.
    pub fn checksum_ok(&self) -> bool {
        checksum(&self.b()[..self.header_len()]) == 0
    }

    /// The payload, up to the total length.
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..usize::from(self.total_len())]
    }

    /// The Internet checksum of an upper-layer message of this packet with the IPv4
    /// pseudo-header: 0 when the message carries a correct one.
    pub fn upper_checksum(&self) -> u16 {
        let payload = self.payload();
        Checksum::new()
            .pseudo_v4(
                self.src(),
                self.dst(),
                self.protocol(),
                payload.len() as u16,
            )
            .add(payload)
            .finish()
    }
}

/// Writes a 20-byte header for `payload_len` bytes of `protocol` into `buf`, don't-fragment
/// set, with its checksum.
pub fn emit(
    buf: &mut [u8],
    protocol: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    payload_len: usize,
) {
    let h = &mut buf[..HEADER_LEN];
    h.fill(0);
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((HEADER_LEN + payload_len) as u16).to_be_bytes());
    h[6] = 0x40;
    h[8] = ttl;
    h[9] = protocol;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = checksum(h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}
