//! The views never panic on any bytes, and what the builders write reads back.

use std::net::{Ipv4Addr, Ipv6Addr};

use fulcrum_wire::{arp, checksum::Checksum, icmp, ipv4, ipv6};
use proptest::prelude::*;

proptest! {
    #[test]
    fn views_accept_or_refuse_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        if let Ok(p) = ipv4::Packet::new_checked(&bytes[..]) {
            let _ = (p.src(), p.dst(), p.payload(), p.checksum_ok(), p.upper_checksum());
        }
        if let Ok(p) = ipv6::Packet::new_checked(&bytes[..]) {
            let _ = (p.src(), p.dst(), p.payload(), p.upper_checksum());
        }
        if let Ok(p) = arp::Packet::new_checked(&bytes[..]) {
            let _ = (p.sender_ip(), p.target_ip(), p.sender_mac(), p.operation());
        }
        if let Ok(e) = icmp::Echo::new_checked(&bytes[..]) {
            let _ = (e.kind(), e.ident(), e.seq(), e.data());
        }
    }

    #[test]
    fn a_message_with_its_checksum_verifies(
        src in any::<u32>(), dst in any::<u32>(),
        payload in proptest::collection::vec(any::<u8>(), 8..64),
    ) {
        let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
        let mut udp = payload.clone();
        udp[6] = 0;
        udp[7] = 0;
        let c = Checksum::new().pseudo_v4(src, dst, 17, udp.len() as u16).add(&udp).finish();
        udp[6..8].copy_from_slice(&c.to_be_bytes());
        let mut p = vec![0u8; 20 + udp.len()];
        ipv4::emit(&mut p, 17, src, dst, 64, udp.len());
        p[20..].copy_from_slice(&udp);
        let v = ipv4::Packet::new_checked(&p[..]).unwrap();
        prop_assert!(v.checksum_ok());
        prop_assert_eq!(v.upper_checksum(), 0);
    }

    #[test]
    fn ipv6_headers_read_back(src in any::<u128>(), dst in any::<u128>(), n in 0usize..64) {
        let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
        let mut p = vec![0u8; 40 + n];
        ipv6::emit(&mut p, 58, src, dst, 255, n);
        let v = ipv6::Packet::new_checked(&p[..]).unwrap();
        prop_assert_eq!((v.src(), v.dst(), v.next_header(), v.payload().len()), (src, dst, 58, n));
    }
}
