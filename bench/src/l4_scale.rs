//! Layer-4 scale: how long the control plane takes to load 1,000 virtual services of 100
//! real servers each into the data plane, to build a 65,537-slot Maglev table over 1,000
//! servers, and to fill each connection table (IPv4's, IPv6's) with 1,000,000 tracked
//! connections; and the kernel memory each map holds. Targets (issue 3): under 1 s, under
//! 50 ms, and 1,000,000 connections tracked.
//!
//! The program is loaded but attached to nothing (no namespace is needed); connections
//! are created by running SYNs through BPF_PROG_TEST_RUN. Needs root.
//! Usage: l4-scale [--services N] [--servers N] [--connections N]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use fulcrum_dataplane::{DataPlane, DestSpec, Method, Scheduler, ServiceKey, ServiceSpec};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sum(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

/// A TCP SYN (IP checksum right; the TCP checksum does not matter to the program).
fn syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let mut ip = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let mut c = sum(&ip, 0);
    while c > 0xffff {
        c = (c & 0xffff) + (c >> 16);
    }
    ip[10..12].copy_from_slice(&(!(c as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    f
}

/// An IPv6 TCP SYN (the TCP checksum does not matter to the program).
fn syn6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd];
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 6, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    f
}

fn main() {
    if !fulcrum_lab::is_root() {
        eprintln!("l4-scale needs root (it loads BPF programs)");
        std::process::exit(2);
    }
    let services = arg("--services", 1000) as u32;
    let servers = arg("--servers", 100) as u32;
    let connections = arg("--connections", 1_000_000) as u32;

    // Maglev over 1,000 servers, as the control plane builds it.
    let dests: Vec<fulcrum_sched::Dest> = (0..1000u32)
        .map(|i| {
            fulcrum_sched::Dest::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 80, 1 + i % 5)
        })
        .collect();
    let mut maglev = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let table = fulcrum_sched::maglev(&dests, fulcrum_sched::MAGLEV_TABLE_SIZE);
        maglev.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(table.iter().all(Option::is_some));
    }
    maglev.sort_by(f64::total_cmp);

    // 1,000 services x 100 real servers into the data plane.
    let mut dp = DataPlane::load_sized(connections).expect("load the data plane");
    let t = Instant::now();
    for s in 0..services {
        let vip = Ipv4Addr::from(0x0a01_0000 + s);
        let mut spec = ServiceSpec::new(ServiceKey::v4(vip, 80, 6), s, Scheduler::Wlc);
        spec.dests = (0..servers)
            .map(|d| {
                Some(DestSpec::new(
                    Ipv4Addr::from(0xc0a8_0000 + d),
                    80,
                    Method::Nat,
                    1 + d % 3,
                ))
            })
            .collect();
        dp.put_service(&spec).expect("put a service");
    }
    let load = t.elapsed();
    // And an IPv6 service of as many real servers, for the IPv6 table.
    let vip6: Ipv6Addr = "2001:db8:1::1".parse().expect("an address");
    let mut spec = ServiceSpec::new(ServiceKey::v6(vip6, 80, 6), services, Scheduler::Wlc);
    spec.dests = (0..servers)
        .map(|d| {
            let rip = Ipv6Addr::from(0x2001_0db8_0002_u128 << 80 | u128::from(d));
            Some(DestSpec::new(rip, 80, Method::Nat, 1 + d % 3))
        })
        .collect();
    dp.put_service(&spec).expect("put the IPv6 service");

    // 1,000,000 connections: distinct clients and ports to the first service.
    let vip = Ipv4Addr::from(0x0a01_0000);
    let t = Instant::now();
    for n in 0..connections {
        let client = Ipv4Addr::from(0x6400_0000 + n / 50_000);
        let frame = syn(client, 1024 + (n % 50_000) as u16, vip, 80);
        dp.test_run(&frame, 1).expect("test run");
    }
    let fill = t.elapsed();
    // As many to the IPv6 service, the clients numbered in their last 64 bits.
    let t = Instant::now();
    for n in 0..connections {
        let client = Ipv6Addr::from(0x2001_0db8_0064_u128 << 80 | u128::from(n / 50_000));
        let frame = syn6(client, 1024 + (n % 50_000) as u16, vip6, 80);
        dp.test_run(&frame, 1).expect("test run");
    }
    let fill6 = t.elapsed();
    // What the control plane does each second: list the table (the sync master) and
    // sweep it (nothing is due here, so this is the reading alone).
    let t = Instant::now();
    let tracked = dp.connections().map(|c| c.len()).unwrap_or(0);
    let list = t.elapsed();
    let t = Instant::now();
    dp.sweep().expect("sweep");
    let sweep = t.elapsed();
    let (slots, stashed) = dp.conn_table().expect("the table's figures");
    let (slots6, stashed6) = dp.conn_table6().expect("the IPv6 table's figures");

    println!(
        "| measure | result | target |\n|---|---|---|\n\
         | Maglev table, 65,537 slots over 1,000 servers (median of 5) | {:.1} ms | < 50 ms |\n\
         | {services} services x {servers} real servers loaded | {:.0} ms | < 1,000 ms |\n\
         | {connections} SYNs through BPF_PROG_TEST_RUN, one at a time, IPv4 / IPv6 | {:.1} s / {:.1} s | - |\n\
         | connections tracked afterwards, both tables | {tracked} | 2 x 1,000,000 |\n\
         | entries outside their window (in the stash), of {slots} / {slots6} slots | {stashed} / {stashed6} | - |\n\
         | listing the tables (ipvsadm -Lnc, the sync master's tick) | {:.0} ms | - |\n\
         | a sweep with nothing due (the reading) | {:.0} ms | - |",
        maglev[2],
        load.as_secs_f64() * 1000.0,
        fill.as_secs_f64(),
        fill6.as_secs_f64(),
        list.as_secs_f64() * 1000.0,
        sweep.as_secs_f64() * 1000.0,
    );
    println!("\n| map | kernel memory |\n|---|---|");
    let mut total = 0;
    for (name, bytes) in dp.memory() {
        total += bytes;
        println!("| {name} | {:.1} MiB |", bytes as f64 / (1 << 20) as f64);
    }
    println!("| total | {:.1} MiB |", total as f64 / (1 << 20) as f64);
}
