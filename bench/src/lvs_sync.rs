//! Connection sync: how many synced connections a backup absorbs per second, and what a
//! connection costs on the wire.
//!
//! The backup's path without the socket: datagrams of IPv4 DR connections (as a master
//! packs them, default maxlen for a 1500-byte MTU) decoded, each record resolved to a slot
//! and installed through the data plane's `xdp_adopt`; then the same records again (an
//! update of held connections, the refresh a master sends while traffic flows). The bytes
//! per connection are IPVS's own: the format is the kernel's (struct ip_vs_sync_v4, 36
//! bytes, 4-byte aligned), so the peer's figure is the same by construction; there is no
//! IPVS on this kernel to time its backup thread beside ours.
//! Needs root (the data plane). Usage: lvs-sync [--connections N] (default 200,000)

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use fulcrum_dataplane::{DataPlane, DestSpec, Method, Scheduler, ServiceKey, ServiceSpec, Synced};
use fulcrum_lvs_sync::{flags, tcp_state, wire, Record};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 1, 10, 88);
const RIPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 1, 10, 66), Ipv4Addr::new(10, 1, 10, 67)];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args
        .iter()
        .position(|a| a == "--connections")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            protocol: 6,
            flags: flags::DROUTE | flags::NOOUTPUT,
            state: tcp_state::ESTABLISHED,
            client: SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(0x0a02_0000 + (i >> 14))),
                1024 + (i & 0x3fff) as u16,
            ),
            virt: SocketAddr::new(IpAddr::V4(VIP), 80),
            dest: SocketAddr::new(IpAddr::V4(RIPS[(i & 1) as usize]), 80),
            fwmark: 0,
            timeout: 900,
            seq: None,
        })
        .collect();
    let maxlen = wire::datagram_limit(wire::daemon_maxlen(false, None, 1500, false), 1500, false);
    let t = Instant::now();
    let datagrams = wire::encode(0, &records, maxlen);
    let encode = t.elapsed();
    let bytes: usize = datagrams.iter().map(|d| d.len() + 20 + 8).sum();
    println!(
        "wire: {n} IPv4 connections in {} datagrams of at most {maxlen} bytes: {:.1} bytes per connection with IP and UDP headers (IPVS: the same format, 36 bytes per record)",
        datagrams.len(),
        bytes as f64 / f64::from(n)
    );
    println!(
        "master: encode {:.0} records/s",
        f64::from(n) / encode.as_secs_f64()
    );

    let mut dp = match DataPlane::load_sized(n) {
        Ok(dp) => dp,
        Err(e) => {
            eprintln!("lvs-sync: cannot load the data plane (root needed): {e}");
            std::process::exit(1);
        }
    };
    let spec = ServiceSpec {
        dests: RIPS
            .iter()
            .map(|a| Some(DestSpec::new(*a, 80, Method::Dr, 1)))
            .collect(),
        ..ServiceSpec::new(ServiceKey::v4(VIP, 80, 6), 1, Scheduler::Rr)
    };
    dp.put_service(&spec).expect("a service");
    for pass in ["install", "update"] {
        let t = Instant::now();
        let mut done = 0u32;
        for d in &datagrams {
            let m = wire::decode(d).expect("our own datagram");
            for r in &m.records {
                let (SocketAddr::V4(c), SocketAddr::V4(v), SocketAddr::V4(rs)) =
                    (r.client, r.virt, r.dest)
                else {
                    continue;
                };
                let slot = RIPS.iter().position(|a| a == rs.ip()).unwrap_or(0) as u16;
                dp.adopt(&Synced {
                    proto: r.protocol,
                    client: ((*c.ip()).into(), c.port()),
                    vip: ((*v.ip()).into(), v.port()),
                    rip: ((*rs.ip()).into(), rs.port()),
                    state: r.state as u8,
                    service: 1,
                    slot,
                    method: Method::Dr,
                    timeout: r.timeout,
                })
                .expect("adopt");
                done += 1;
            }
        }
        let took = t.elapsed();
        println!(
            "backup: {pass} {done} connections (decode + adopt) in {:.2} s: {:.0} connections/s",
            took.as_secs_f64(),
            f64::from(done) / took.as_secs_f64()
        );
    }
    // The master's side of a tick: read the table, decide (everything is new), encode.
    let t = Instant::now();
    let conns = dp.connections().expect("the table");
    let read = t.elapsed();
    let mut master = fulcrum_lvs_sync::Master::default();
    let seen = conns.iter().map(|c| fulcrum_lvs_sync::Seen {
        record: Record {
            protocol: c.proto,
            flags: flags::DROUTE | flags::NOOUTPUT,
            state: u16::from(c.state_code),
            client: SocketAddr::from(c.client),
            virt: SocketAddr::from(c.vip),
            dest: SocketAddr::from(c.rip),
            fwmark: 0,
            timeout: c.timeout,
            seq: None,
        },
        deadline: std::time::Duration::from_nanos(c.deadline),
        // Installed by the backup pass, so no packets counted: as if past sync_threshold,
        // so that every one is sent.
        packets: 3,
    });
    let t = Instant::now();
    let sent = master.tick(std::time::Duration::ZERO, seen);
    let tick = t.elapsed();
    println!(
        "master: a tick over {} connections: table read {:.2} s, decision {:.2} s ({} to send)",
        conns.len(),
        read.as_secs_f64(),
        tick.as_secs_f64(),
        sent.len()
    );
    let (active, _) = dp.dest_conns(1, 0).unwrap_or_default();
    let (active2, _) = dp.dest_conns(1, 1).unwrap_or_default();
    println!(
        "backup: the table holds {} active connections",
        active + active2
    );
}
