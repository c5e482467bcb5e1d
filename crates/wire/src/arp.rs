//! ARP for IPv4 over Ethernet (RFC 826), and the gratuitous ARP keepalived sends.

use std::net::Ipv4Addr;

use crate::ethernet::{self, BROADCAST, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::Error;

/// The length of an Ethernet/IPv4 ARP message.
pub const LEN: usize = 28;
pub const REQUEST: u16 = 1;
pub const REPLY: u16 = 2;

/// A view over an ARP message (the Ethernet payload), Ethernet and IPv4 only.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let b = buffer.as_ref();
        if b.len() < LEN {
            return Err(Error::Truncated);
        }
        if b[0..2] != [0, 1] || b[2..4] != ETHERTYPE_IPV4.to_be_bytes() || b[4] != 6 || b[5] != 4 {
            return Err(Error::Malformed);
        }
        Ok(Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn operation(&self) -> u16 {
        u16::from_be_bytes([self.b()[6], self.b()[7]])
    }

    pub fn sender_mac(&self) -> [u8; 6] {
        let mut m = [0; 6];
        m.copy_from_slice(&self.b()[8..14]);
        m
    }

    pub fn sender_ip(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[14], b[15], b[16], b[17])
    }

    pub fn target_ip(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[24], b[25], b[26], b[27])
    }
}

/// A gratuitous ARP request announcing that `ip` is at `mac`: broadcast, sender and target
/// both `ip`, target MAC broadcast, as keepalived sends on becoming master.
pub fn gratuitous(mac: [u8; 6], ip: Ipv4Addr) -> [u8; ethernet::HEADER_LEN + LEN] {
    let mut f = [0u8; ethernet::HEADER_LEN + LEN];
    ethernet::emit(&mut f, BROADCAST, mac, ETHERTYPE_ARP);
    let a = &mut f[ethernet::HEADER_LEN..];
    a[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    a[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&REQUEST.to_be_bytes());
    a[8..14].copy_from_slice(&mac);
    a[14..18].copy_from_slice(&ip.octets());
    a[18..24].copy_from_slice(&BROADCAST);
    a[24..28].copy_from_slice(&ip.octets());
    f
}
