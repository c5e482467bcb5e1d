//! VRRP adverts from arbitrary bytes (as IPv4 and IPv6 payloads): never a panic, and every
//! advert that parses emits to the same bytes.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fulcrum_vrrp::packet::{Advert, ChecksumMode, MULTICAST_V4, MULTICAST_V6};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for (src, dst) in [
        (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::V4(MULTICAST_V4)),
        (IpAddr::V6(Ipv6Addr::LOCALHOST), IpAddr::V6(MULTICAST_V6)),
    ] {
        for mode in [ChecksumMode::PseudoHeader, ChecksumMode::MessageOnly] {
            if let Ok(a) = Advert::parse(data, src, dst, 255, mode) {
                let mut buf = vec![0u8; a.message_len()];
                let n = a.emit(&mut buf, src, dst, mode);
                assert_eq!(Advert::parse(&buf[..n], src, dst, 255, mode), Ok(a));
            }
        }
    }
});
