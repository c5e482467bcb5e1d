//! The builders against frames written out by hand from the RFCs' layouts (as tcpdump -xx
//! prints them), and the views reading them back.

use std::net::{Ipv4Addr, Ipv6Addr};

use fulcrum_wire::{arp, checksum, ethernet, icmp, ipv4, ipv6};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn gratuitous_arp_is_a_broadcast_request_for_itself() {
    let f = arp::gratuitous([2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 1, 10, 88));
    let golden = hex("ffffffffffff 020000000001 0806
         0001 0800 06 04 0001 020000000001 0a010a58 ffffffffffff 0a010a58");
    assert_eq!(f.as_slice(), golden.as_slice());
    let e = ethernet::Frame::new_checked(&f[..]).unwrap();
    assert_eq!(e.ethertype(), ethernet::ETHERTYPE_ARP);
    let a = arp::Packet::new_checked(e.payload()).unwrap();
    assert_eq!(a.operation(), arp::REQUEST);
    assert_eq!(a.sender_ip(), a.target_ip());
    assert_eq!(a.sender_mac(), [2, 0, 0, 0, 0, 1]);
}

#[test]
fn an_unsolicited_na_verifies_and_overrides() {
    let src: Ipv6Addr = "fe80::1".parse().unwrap();
    let target: Ipv6Addr = "2001:db8::88".parse().unwrap();
    let f = icmp::unsolicited_na([2, 0, 0, 0, 0, 1], src, target);
    let golden = hex("333300000001 020000000001 86dd
         60000000 0020 3a ff
         fe800000000000000000000000000001 ff020000000000000000000000000001
         88 00 27dc 20000000 20010db8000000000000000000000088 02 01 020000000001");
    assert_eq!(f.as_slice(), golden.as_slice());
    let e = ethernet::Frame::new_checked(&f[..]).unwrap();
    let ip = ipv6::Packet::new_checked(e.payload()).unwrap();
    assert_eq!(
        (ip.src(), ip.dst(), ip.hop_limit()),
        (src, icmp::ALL_NODES, 255)
    );
    assert_eq!(ip.upper_checksum(), 0);
}

#[test]
fn an_echo_request_carries_its_checksum() {
    let m = icmp::echo_request_v4(0x1234, 1, b"abcd");
    assert_eq!(m, hex("08 00 2104 1234 0001 61626364"));
    assert_eq!(checksum::checksum(&m), 0);
    let e = icmp::Echo::new_checked(&m[..]).unwrap();
    assert_eq!(
        (e.kind(), e.ident(), e.seq(), e.data()),
        (8, 0x1234, 1, &b"abcd"[..])
    );
    let v6 = icmp::echo_request_v6(7, 2, b"x");
    assert_eq!(v6, hex("80 00 0000 0007 0002 78"));
}

#[test]
fn an_ipv4_header_is_written_and_read_back() {
    let mut p = vec![0u8; 20 + 4];
    ipv4::emit(
        &mut p,
        17,
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        64,
        4,
    );
    assert_eq!(
        &p[..20],
        hex("45000018 00004000 4011 26d3 0a000001 0a000002").as_slice()
    );
    let v = ipv4::Packet::new_checked(&p[..]).unwrap();
    assert!(v.checksum_ok());
    assert_eq!((v.protocol(), v.ttl(), v.payload().len()), (17, 64, 4));
    // A total length beyond the buffer, or a header length below 20, is refused.
    let mut bad = p.clone();
    bad[3] = 0xff;
    assert_eq!(
        ipv4::Packet::new_checked(&bad[..]).unwrap_err(),
        fulcrum_wire::Error::Truncated
    );
    bad = p.clone();
    bad[0] = 0x44;
    assert_eq!(
        ipv4::Packet::new_checked(&bad[..]).unwrap_err(),
        fulcrum_wire::Error::Malformed
    );
}
