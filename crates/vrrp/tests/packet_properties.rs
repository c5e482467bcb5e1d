//! Properties of the wire format: any advert we emit parses back to itself, and no input,
//! however malformed, makes the parser panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fulcrum_types::Vrid;
use fulcrum_vrrp::packet::{Advert, ChecksumMode, Version};
use proptest::prelude::*;

fn advert() -> impl Strategy<Value = (Advert, IpAddr, IpAddr, ChecksumMode)> {
    (
        any::<bool>(),
        any::<bool>(),
        1u8..=255,
        any::<u8>(),
        1u16..=4095,
        1usize..20,
        any::<[u8; 8]>(),
        any::<bool>(),
        any::<u32>(),
        any::<u128>(),
    )
        .prop_map(
            |(v3, v6, vrid, priority, centis, n, auth, message_only, seed4, seed6)| {
                let v6 = v3 && v6;
                let addresses: Vec<IpAddr> = (0..n)
                    .map(|i| {
                        if v6 {
                            IpAddr::V6(Ipv6Addr::from(seed6.wrapping_add(i as u128)))
                        } else {
                            IpAddr::V4(Ipv4Addr::from(seed4.wrapping_add(i as u32)))
                        }
                    })
                    .collect();
                let (src, dst) = if v6 {
                    (
                        IpAddr::V6(Ipv6Addr::from(seed6 ^ 1)),
                        IpAddr::V6(fulcrum_vrrp::packet::MULTICAST_V6),
                    )
                } else {
                    (
                        IpAddr::V4(Ipv4Addr::from(seed4 ^ 1)),
                        IpAddr::V4(fulcrum_vrrp::packet::MULTICAST_V4),
                    )
                };
                let a = Advert {
                    version: if v3 { Version::V3 } else { Version::V2 },
                    vrid: Vrid::new(i64::from(vrid)).unwrap(),
                    priority,
                    interval_centis: if v3 { centis } else { (centis % 255 + 1) * 100 },
                    addresses,
                    auth: if v3 { None } else { Some(auth) },
                };
                let mode = if message_only {
                    ChecksumMode::MessageOnly
                } else {
                    ChecksumMode::PseudoHeader
                };
                (a, src, dst, mode)
            },
        )
}

proptest! {
    #[test]
    fn emit_then_parse_gives_the_same_advert((a, src, dst, mode) in advert()) {
        let mut buf = vec![0u8; a.message_len()];
        let n = a.emit(&mut buf, src, dst, mode);
        prop_assert_eq!(n, a.message_len());
        prop_assert_eq!(Advert::parse(&buf, src, dst, 255, mode), Ok(a));
    }

    #[test]
    fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512), v6 in any::<bool>(), ttl in any::<u8>()) {
        let (src, dst) = if v6 {
            (IpAddr::V6(Ipv6Addr::LOCALHOST), IpAddr::V6(fulcrum_vrrp::packet::MULTICAST_V6))
        } else {
            (IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4(fulcrum_vrrp::packet::MULTICAST_V4))
        };
        let _ = Advert::parse(&bytes, src, dst, ttl, ChecksumMode::PseudoHeader);
        let _ = Advert::parse(&bytes, src, dst, ttl, ChecksumMode::MessageOnly);
    }
}
