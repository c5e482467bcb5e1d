//! ICMP and ICMPv6 echo (RFC 792, RFC 4443) for PING_CHECK, and the unsolicited neighbour
//! advertisement (RFC 4861 7.2.6) keepalived sends for IPv6 addresses.

use std::net::Ipv6Addr;

use crate::checksum::{checksum, Checksum};
use crate::ethernet::{self, ETHERTYPE_IPV6};
use crate::{ipv6, Error};

pub const ECHO_REPLY_V4: u8 = 0;
pub const ECHO_REQUEST_V4: u8 = 8;
pub const ECHO_REQUEST_V6: u8 = 128;
pub const ECHO_REPLY_V6: u8 = 129;
pub const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
/// IP protocol number of ICMPv6.
pub const PROTOCOL_V6: u8 = 58;
/// All nodes on the link.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

const ECHO_HEADER_LEN: usize = 8;

/// A view over an ICMP or ICMPv6 echo request or reply (the IP payload).
#[derive(Debug, Clone, Copy)]
pub struct Echo<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Echo<T> {
    pub fn new_checked(buffer: T) -> Result<Echo<T>, Error> {
        if buffer.as_ref().len() < ECHO_HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Echo { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn kind(&self) -> u8 {
        self.b()[0]
    }

    pub fn code(&self) -> u8 {
        self.b()[1]
    }

    pub fn ident(&self) -> u16 {
        u16::from_be_bytes([self.b()[4], self.b()[5]])
    }

    pub fn seq(&self) -> u16 {
        u16::from_be_bytes([self.b()[6], self.b()[7]])
    }

    pub fn data(&self) -> &[u8] {
        &self.b()[ECHO_HEADER_LEN..]
    }
}

/// An ICMP echo request with its checksum.
pub fn echo_request_v4(ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut m = echo(ECHO_REQUEST_V4, ident, seq, data);
    let c = checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// An ICMPv6 echo request with the checksum left zero: a raw ICMPv6 socket fills it in
/// (it covers a pseudo-header only the kernel knows in full).
pub fn echo_request_v6(ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    echo(ECHO_REQUEST_V6, ident, seq, data)
}

fn echo(kind: u8, ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(&ident.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    m
}

/// The length of the whole unsolicited NA frame.
pub const NA_FRAME_LEN: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN + 32;

/// An unsolicited neighbour advertisement for `target` at `mac`, from `src` (our
/// link-local address) to all nodes, with the override flag and the target link-layer
/// address option: the whole Ethernet frame.
pub fn unsolicited_na(mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> [u8; NA_FRAME_LEN] {
    let mut f = [0u8; NA_FRAME_LEN];
    ethernet::emit(
        &mut f,
        ethernet::ipv6_multicast_mac(ALL_NODES),
        mac,
        ETHERTYPE_IPV6,
    );
    let (ip, icmp) = f[ethernet::HEADER_LEN..].split_at_mut(ipv6::HEADER_LEN);
    ipv6::emit(ip, PROTOCOL_V6, src, ALL_NODES, 255, icmp.len());
    icmp[0] = NEIGHBOUR_ADVERTISEMENT;
    icmp[4] = 0x20; // override
    icmp[8..24].copy_from_slice(&target.octets());
    icmp[24] = 2; // target link-layer address
    icmp[25] = 1; // in units of 8 bytes
    icmp[26..32].copy_from_slice(&mac);
    let c = Checksum::new()
        .pseudo_v6(src, ALL_NODES, PROTOCOL_V6, icmp.len() as u32)
        .add(icmp)
        .finish();
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    f
}
