//! Frames for the fixtures, and a from-scratch checksum check to hold the program's
//! incremental updates to. Shared by several test crates, each using part of it.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use fulcrum_wire::checksum::Checksum;

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 1, 10, 88);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 10, 2);
pub const RIPS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(192, 168, 184, 129),
    Ipv4Addr::new(192, 168, 184, 130),
    Ipv4Addr::new(192, 168, 184, 131),
    Ipv4Addr::new(192, 168, 184, 132),
];

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

pub fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x65, 0x02, 0, 0, 0, 0, 0x02];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// The Internet checksum of `data` (0 when `data` carries a correct one).
pub fn checksum(data: &[u8]) -> u16 {
    fulcrum_wire::checksum::checksum(data)
}

/// The TCP or UDP checksum of `l4` between `src` and `dst` (0 when `l4` carries a correct
/// one).
pub fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> u16 {
    Checksum::new()
        .pseudo_v4(src, dst, proto, l4.len() as u16)
        .add(l4)
        .finish()
}

/// An IPv4 frame with a correct header checksum and `l4` after it.
pub fn ipv4_frame(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, l4: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(0x0800);
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

/// An IPv6 frame (hop limit 255) with `l4` after the fixed header.
pub fn ipv6_frame(next: u8, src: Ipv6Addr, dst: Ipv6Addr, l4: &[u8]) -> Vec<u8> {
    let mut f = eth(0x86dd);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(l4);
    f
}

/// A TCP segment with `flags` and 8 bytes of payload, its checksum field zero.
fn tcp_segment(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&[
        0, 0, 0x10, 0x01, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    h.extend_from_slice(b"payload!");
    h
}

pub fn tcp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = tcp_segment(sport, dport, flags);
    let c = l4_checksum(src, dst, 6, &h);
    h[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(6, src, dst, &h)
}

/// The same segment between IPv6 addresses, its checksum right.
pub fn tcp6_frame(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = tcp_segment(sport, dport, flags);
    let c = l4_checksum6(src, dst, 6, &h);
    h[16..18].copy_from_slice(&c.to_be_bytes());
    ipv6_frame(6, src, dst, &h)
}

/// The TCP, UDP or ICMPv6 checksum of `l4` between IPv6 `src` and `dst` (0 when `l4`
/// carries a correct one).
pub fn l4_checksum6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, l4: &[u8]) -> u16 {
    Checksum::new()
        .pseudo_v6(src, dst, next, l4.len() as u32)
        .add(l4)
        .finish()
}

/// A UDP header and `payload`, the checksum field zero.
fn udp_datagram(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

/// Puts a UDP checksum in (0xffff for one that sums to 0, which means none).
fn udp_checksum(h: &mut [u8], c: u16) {
    h[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
}

pub fn udp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = udp_datagram(sport, dport, payload);
    let c = l4_checksum(src, dst, 17, &h);
    udp_checksum(&mut h, c);
    ipv4_frame(17, src, dst, &h)
}

/// A UDP datagram between IPv6 addresses, its checksum right (or zero, `bare`).
pub fn udp6_frame(
    src: Ipv6Addr,
    sport: u16,
    dst: Ipv6Addr,
    dport: u16,
    payload: &[u8],
    bare: bool,
) -> Vec<u8> {
    let mut h = udp_datagram(sport, dport, payload);
    if !bare {
        let c = l4_checksum6(src, dst, 17, &h);
        udp_checksum(&mut h, c);
    }
    ipv6_frame(17, src, dst, &h)
}

/// The addresses and ports of an IPv4 TCP or UDP frame.
#[derive(Debug)]
pub struct Parsed {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

impl Parsed {
    pub fn of(f: &[u8]) -> Parsed {
        let a = |i: usize| Ipv4Addr::new(f[i], f[i + 1], f[i + 2], f[i + 3]);
        Parsed {
            src: a(26),
            dst: a(30),
            sport: u16::from_be_bytes([f[34], f[35]]),
            dport: u16::from_be_bytes([f[36], f[37]]),
        }
    }

    /// Both checksums verify when recomputed from scratch (a zero UDP checksum means none).
    pub fn checksums_ok(&self, f: &[u8]) -> bool {
        let ip_ok = checksum(&f[14..34]) == 0;
        let proto = f[23];
        let l4 = &f[34..];
        let l4_ok = if proto == 17 && l4[6..8] == [0, 0] {
            true
        } else {
            l4_checksum(self.src, self.dst, proto, l4) == 0
        };
        ip_ok && l4_ok
    }
}

/// `f` (an IPv4 or IPv6 frame) as a director forwards it: IPVS's decrement_ttl takes one
/// off the TTL (the IPv4 header checksum follows) or the hop limit.
pub fn hop(f: &[u8]) -> Vec<u8> {
    let mut f = f.to_vec();
    if f[12..14] == [0x86, 0xdd] {
        f[21] -= 1;
    } else {
        f[22] -= 1;
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }
    f
}
