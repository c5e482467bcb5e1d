//! Packet fixtures through BPF_PROG_TEST_RUN, table-driven like katran's: each frame, the
//! verdict it must get, the reason it must be counted under, and the frame unchanged.
//! Each fixture runs on its own loaded instance, so its counters are exact.

use std::net::Ipv4Addr;

use fulcrum_dataplane::{DataPlane, Reason, ServiceKey, ServiceValue, Verdict};
use fulcrum_lab::require_root;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 1, 10, 88);

fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x65, 0x02, 0, 0, 0, 0, 0x02];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An IPv4 header (no options unless `ihl` > 5) and `l4` bytes after it.
fn ipv4(proto: u8, dst: Ipv4Addr, frag: u16, ihl: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = eth(0x0800);
    let total = (usize::from(ihl) * 4 + l4.len()) as u16;
    f.push(0x40 | ihl);
    f.push(0);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1]);
    f.extend_from_slice(&frag.to_be_bytes());
    f.push(64);
    f.push(proto);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&Ipv4Addr::new(10, 1, 10, 2).octets());
    f.extend_from_slice(&dst.octets());
    f.extend(std::iter::repeat_n(
        1u8,
        usize::from(ihl.saturating_sub(5)) * 4,
    ));
    f.extend_from_slice(l4);
    f
}

fn tcp(dport: u16) -> Vec<u8> {
    let mut h = vec![0xc3, 0x50];
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    h
}

fn udp(dport: u16) -> Vec<u8> {
    let mut h = vec![0xc3, 0x50];
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&[0, 8, 0, 0]);
    h
}

struct Fixture {
    name: &'static str,
    frame: Vec<u8>,
    verdict: Verdict,
    reason: Reason,
}

fn fixtures() -> Vec<Fixture> {
    let mut arp = eth(0x0806);
    arp.extend_from_slice(&[0u8; 28]);
    let mut v6 = eth(0x86dd);
    v6.extend_from_slice(&[0x60; 40]);
    let full = ipv4(6, VIP, 0, 5, &tcp(80));
    vec![
        Fixture {
            name: "ARP passes",
            frame: arp,
            verdict: Verdict::Pass,
            reason: Reason::NotIp,
        },
        Fixture {
            name: "IPv6 passes",
            frame: v6,
            verdict: Verdict::Pass,
            reason: Reason::Ipv6,
        },
        // The kernel refuses to test-run frames shorter than an Ethernet header; the
        // shortest case is a bare Ethernet header that announces IPv4.
        Fixture {
            name: "Ethernet header only",
            frame: eth(0x0800),
            verdict: Verdict::Pass,
            reason: Reason::Malformed,
        },
        Fixture {
            name: "truncated IPv4 header",
            frame: full[..24].to_vec(),
            verdict: Verdict::Pass,
            reason: Reason::Malformed,
        },
        Fixture {
            name: "truncated TCP header",
            frame: full[..40].to_vec(),
            verdict: Verdict::Pass,
            reason: Reason::Malformed,
        },
        Fixture {
            name: "IHL below 5",
            frame: {
                let mut f = full.clone();
                f[14] = 0x44;
                f
            },
            verdict: Verdict::Pass,
            reason: Reason::Malformed,
        },
        Fixture {
            name: "first fragment",
            frame: ipv4(6, VIP, 0x2000, 5, &tcp(80)),
            verdict: Verdict::Pass,
            reason: Reason::Fragment,
        },
        Fixture {
            name: "later fragment",
            frame: ipv4(6, VIP, 0x0010, 5, &tcp(80)),
            verdict: Verdict::Pass,
            reason: Reason::Fragment,
        },
        Fixture {
            name: "IP options",
            frame: ipv4(6, VIP, 0, 6, &tcp(80)),
            verdict: Verdict::Pass,
            reason: Reason::IpOptions,
        },
        Fixture {
            name: "ICMP",
            frame: ipv4(1, VIP, 0, 5, &[8, 0, 0, 0, 0, 0, 0, 0]),
            verdict: Verdict::Pass,
            reason: Reason::OtherL4,
        },
        Fixture {
            name: "TCP to the VIP, other port",
            frame: ipv4(6, VIP, 0, 5, &tcp(443)),
            verdict: Verdict::Pass,
            reason: Reason::NoService,
        },
        Fixture {
            name: "UDP to another address",
            frame: ipv4(17, Ipv4Addr::new(10, 1, 10, 99), 0, 5, &udp(80)),
            verdict: Verdict::Pass,
            reason: Reason::NoService,
        },
        Fixture {
            name: "TCP to the service",
            frame: full,
            verdict: Verdict::Pass,
            reason: Reason::Service,
        },
        Fixture {
            name: "UDP to the service port, but the service is TCP",
            frame: ipv4(17, VIP, 0, 5, &udp(80)),
            verdict: Verdict::Pass,
            reason: Reason::NoService,
        },
    ]
}

#[test]
fn fixtures_get_their_verdict_and_reason() {
    if !require_root("fixtures_get_their_verdict_and_reason") {
        return;
    }
    let mut failures = Vec::new();
    for f in fixtures() {
        let mut dp = DataPlane::load().expect("load the XDP program");
        dp.add_service(ServiceKey::v4(VIP, 80, 6), ServiceValue { id: 1, flags: 0 })
            .unwrap();
        let out = dp.test_run(&f.frame, 1).unwrap();
        let counted: Vec<(Reason, u64)> = Reason::ALL
            .iter()
            .map(|r| (*r, dp.count(*r).unwrap()))
            .filter(|(_, n)| *n > 0)
            .collect();
        if out.verdict != f.verdict || counted != vec![(f.reason, 1)] || out.frame != f.frame {
            failures.push(format!(
                "{}: verdict {:?} (want {:?}), counted {counted:?} (want {:?}), frame changed: {}",
                f.name,
                out.verdict,
                f.verdict,
                f.reason,
                out.frame != f.frame
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_repeated_run_is_counted() {
    if !require_root("every_repeated_run_is_counted") {
        return;
    }
    let dp = DataPlane::load().unwrap();
    let frame = ipv4(6, VIP, 0, 5, &tcp(80));
    let out = dp.test_run(&frame, 100_000).unwrap();
    assert_eq!(out.verdict, Verdict::Pass);
    assert!(dp.count(Reason::NoService).unwrap() >= 100_000);
}
