//! The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum of
//! 16-bit words, and the pseudo-headers that IPv4 (RFC 768, 793) and IPv6 (RFC 8200 8.1)
//! put in front of the upper-layer message.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A running sum. Pieces are added in order; only the last may have an odd length (it is
/// padded with a zero byte, as the RFC says).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checksum {
    acc: u64,
}

impl Checksum {
    pub fn new() -> Checksum {
        Checksum::default()
    }

    /// Adds bytes to the sum.
    pub fn add(&mut self, bytes: &[u8]) -> &mut Checksum {
        let mut words = bytes.chunks_exact(2);
        for w in &mut words {
            self.acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            self.acc += u64::from(*last) << 8;
        }
        self
    }

    /// Adds the IPv4 pseudo-header: source, destination, zero, protocol, length.
    pub fn pseudo_v4(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: u8,
        len: u16,
    ) -> &mut Checksum {
        self.add(&src.octets())
            .add(&dst.octets())
            .add(&[0, protocol])
            .add(&len.to_be_bytes())
    }

    /// Adds the IPv6 pseudo-header: source, destination, 32-bit length, zeros, next header.
    pub fn pseudo_v6(
        &mut self,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        next_header: u8,
        len: u32,
    ) -> &mut Checksum {
        self.add(&src.octets())
            .add(&dst.octets())
            .add(&len.to_be_bytes())
            .add(&[0, 0, 0, next_header])
    }

    /// The checksum to write: the complement of the folded sum. Over data that carries a
    /// correct checksum it is 0.
    pub fn finish(&self) -> u16 {
        let mut acc = self.acc;
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }
}

/// The checksum of `data` alone.
pub fn checksum(data: &[u8]) -> u16 {
    Checksum::new().add(data).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn an_odd_byte_is_padded() {
        assert_eq!(checksum(&[0xab]), !0xab00);
    }

    #[test]
    fn data_with_its_checksum_sums_to_zero() {
        let mut data = vec![
            0x45, 0, 0, 20, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let c = checksum(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&data), 0);
    }
}
