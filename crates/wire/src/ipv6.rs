//! IPv6 fixed headers (RFC 8200).

use std::net::Ipv6Addr;

use crate::checksum::Checksum;
use crate::Error;

pub const HEADER_LEN: usize = 40;

/// A view over an IPv6 packet: the fixed header and what follows it.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the version and that the payload length is within the buffer.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let p = Packet { buffer };
        if p.version() != 6 {
            return Err(Error::Malformed);
        }
        if p.buffer.as_ref().len() < HEADER_LEN + usize::from(p.payload_len()) {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn version(&self) -> u8 {
        self.b()[0] >> 4
    }

    pub fn payload_len(&self) -> u16 {
        u16::from_be_bytes([self.b()[4], self.b()[5]])
    }

    pub fn next_header(&self) -> u8 {
        self.b()[6]
    }

    pub fn hop_limit(&self) -> u8 {
        self.b()[7]
    }

    fn addr(&self, at: usize) -> Ipv6Addr {
        let mut o = [0u8; 16];
        o.copy_from_slice(&self.b()[at..at + 16]);
        Ipv6Addr::from(o)
    }

    pub fn src(&self) -> Ipv6Addr {
        self.addr(8)
    }

    pub fn dst(&self) -> Ipv6Addr {
        self.addr(24)
    }

    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }

    /// The checksum of the upper-layer message with the IPv6 pseudo-header: 0 when it
    /// carries a correct one (no extension headers in between).
    pub fn upper_checksum(&self) -> u16 {
        let payload = self.payload();
        Checksum::new()
            .pseudo_v6(
                self.src(),
                self.dst(),
                self.next_header(),
                payload.len() as u32,
            )
            .add(payload)
            .finish()
    }
}

/// Writes a fixed header for `payload_len` bytes of `next_header` into `buf`.
pub fn emit(
    buf: &mut [u8],
    next_header: u8,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    payload_len: usize,
) {
    let h = &mut buf[..HEADER_LEN];
    h.fill(0);
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    h[6] = next_header;
    h[7] = hop_limit;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
}
