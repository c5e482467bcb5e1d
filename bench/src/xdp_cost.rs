//! Per-packet cost of the XDP data plane, measured with BPF_PROG_TEST_RUN, side by side with
//! the floor: a minimal program that swaps the MAC addresses and returns XDP_TX.
//!
//! Paths measured: an established NAT flow (client to server: connection lookup, TCP state,
//! address and checksum rewrite, FIB lookup, redirect), the NAT reply path, an established DR
//! flow (connection lookup, MAC rewrite, XDP_TX), the same three over IPv6 (through the tail
//! call to the IPv6 entry point), and the scheduling decision of each of the
//! fourteen schedulers over 10 real servers (a UDP one-packet-scheduling DR service, so every
//! repetition schedules anew).
//!
//! BPF_PROG_TEST_RUN repeats the program on the same buffer, so a path that rewrites the
//! frame would measure a different path from the second repetition on. The NAT services
//! therefore have a real server with the VIP's own address and port: the rewrite runs in
//! full and leaves the frame as it was, but for the TTL, which every forwarding path takes
//! down by one (IPVS's decrement_ttl). So the frames start at TTL 255 and each call repeats
//! the program 250 times (the buffer copied in afresh for each call), the floor the same
//! way. TUN moves the frame's head, so its second repetition would parse the tunnel's
//! headers: the TUN rows are one run a call, each call's time including the kernel's clock
//! reads around it; they are in a second table, beside the floor and the other established
//! paths measured the same way.
//!
//! The program runs in a lab namespace where the addresses are routed, with permanent
//! neighbour entries, so the FIB lookups succeed. Needs root.
//! Each figure is the median of several rounds (each a fresh load in the same namespace),
//! the floor measured in every round beside the paths.
//! Usage: xdp-cost [--repeat N] [--rounds R] [--only PREFIX]   (defaults 1,000,000 and 5;
//! the one-run-a-call table makes N / 10 calls;
//! `--only` measures the paths whose name starts with PREFIX, the floor always, for a
//! profiler run)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;

use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use aya::Ebpf;
use fulcrum_dataplane::{
    DataPlane, DestSpec, Link, Method, Scheduler, ServiceKey, ServiceSpec, TunCsum, TunKind,
    Tunnel, Verdict,
};
use fulcrum_lab::Lab;
use fulcrum_wire::checksum::Checksum;
use fulcrum_wire::ipv4;

static FLOOR: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor.bpf.o"));

const DIRECTOR: Ipv4Addr = Ipv4Addr::new(192, 168, 184, 128);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 184, 50);
const NAT_VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 184, 200);
const DR_VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 184, 201);
const DR_RIP: Ipv4Addr = Ipv4Addr::new(192, 168, 184, 202);
const DIRECTOR6: &str = "2001:db8:184::128/64";
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x184, 0, 0, 0, 0, 0x50);
const NAT_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x184, 0, 0, 0, 0, 0x200);
const DR_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x184, 0, 0, 0, 0, 0x201);
const DR_RIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x184, 0, 0, 0, 0, 0x202);
const DIRECTOR_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x184, 0, 0, 0, 0, 0x128);
/// Repetitions in one BPF_PROG_TEST_RUN call: a forwarded frame loses one TTL each, from
/// 255.
const BATCH: u32 = 250;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// An Ethernet + IPv4 + TCP (flags) or UDP (flags = None) frame with correct checksums.
fn frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, tcp: Option<u8>) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    let proto = match tcp {
        Some(flags) => {
            l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
            6
        }
        None => {
            l4.extend_from_slice(&[0, 0, 0, 0]);
            17
        }
    };
    l4.extend_from_slice(&[0x61; 64]);
    if proto == 17 {
        let len = l4.len() as u16;
        l4[4..6].copy_from_slice(&len.to_be_bytes());
    }
    let c = Checksum::new()
        .pseudo_v4(src, dst, proto, l4.len() as u16)
        .add(&l4)
        .finish();
    let at = if proto == 6 { 16 } else { 6 };
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0u8; ipv4::HEADER_LEN];
    ipv4::emit(&mut ip, proto, src, dst, 255, l4.len());
    let mut f = MAC.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x32, 0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&l4);
    f
}

/// The IPv6 frame of the same TCP segment (an ACK: the established paths).
fn frame6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, flags: u8) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    l4.extend_from_slice(&[0x61; 64]);
    let c = Checksum::new()
        .pseudo_v6(src, dst, 6, l4.len() as u32)
        .add(&l4)
        .finish();
    l4[16..18].copy_from_slice(&c.to_be_bytes());
    let mut f = MAC.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x32, 0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    f.extend_from_slice(&[6, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&l4);
    f
}

/// The destination MAC of every frame measured, and the MAC every next hop has: a path
/// that rewrites the MACs leaves the frame to this host's MAC again for the next
/// repetition (which the program checks, see DataPlane::set_host_macs).
const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x80];

fn dest(addr: impl Into<IpAddr>, port: u16, method: Method, weight: u32) -> Option<DestSpec> {
    Some(DestSpec {
        link: (method == Method::Dr).then_some(Link {
            mac: MAC,
            ifindex: 0,
            smac: MAC,
        }),
        ..DestSpec::new(addr, port, method, weight)
    })
}

/// A TUN service's key, real server, tunnel source and row label, then its SYN and the
/// established packet measured.
type TunFamily = (ServiceKey, IpAddr, IpAddr, &'static str, Vec<u8>, Vec<u8>);

/// Average ns per run over `repeat` runs, `batch` a call, and the verdict.
fn cost(dp: &DataPlane, frame: &[u8], repeat: u32, batch: u32) -> (f64, Verdict) {
    let calls = (repeat / batch).max(1);
    let mut total = 0.0;
    let mut verdict = Verdict::Aborted;
    for _ in 0..calls {
        let out = dp.test_run(frame, batch).expect("test run");
        total += out.per_run.as_nanos() as f64;
        verdict = out.verdict;
    }
    (total / f64::from(calls), verdict)
}

/// The floor's ns per run, as `cost` measures.
fn floor_cost(prog: &Xdp, repeat: u32, batch: u32) -> f64 {
    let f = frame(CLIENT, 40000, NAT_VIP, 80, Some(0x10));
    let calls = (repeat / batch).max(1);
    let mut total = 0.0;
    for _ in 0..calls {
        let mut out = vec![0u8; f.len() + 64];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(&f);
        opts.data_out = Some(&mut out);
        opts.repeat = batch;
        total += prog.test_run(opts).expect("floor run").duration.as_nanos() as f64;
    }
    total / f64::from(calls)
}

fn inner(repeat: u32) {
    // The floor.
    let mut floor = Ebpf::load(FLOOR).expect("load the floor program");
    let prog: &mut Xdp = floor
        .program_mut("xdp_floor")
        .expect("xdp_floor")
        .try_into()
        .expect("an XDP program");
    prog.load().expect("load xdp_floor");
    // Each program stays attached (natively, to a veth of its own) while it is measured:
    // BPF_PROG_TEST_RUN then finds it already in the kernel's XDP dispatcher, where it
    // would otherwise patch it in and out around every call (a text patch, cold caches).
    prog.attach("fl0", XdpMode::Driver)
        .expect("attach the floor to fl0");
    println!("floor\t{}\tTx\tloop", floor_cost(prog, repeat, BATCH));

    let mut dp = DataPlane::load().expect("load the data plane");
    dp.attach("fl1").expect("attach the data plane to fl1");
    // The frames' destination MAC as the MAC of the interface the runs come in on (the
    // loopback device, for BPF_PROG_TEST_RUN), as the daemon writes each interface's:
    // every packet pays the check a running director does.
    dp.set_host_macs(1, &[MAC]).expect("host MACs");
    let mut nat = ServiceSpec::new(ServiceKey::v4(NAT_VIP, 80, 6), 1, Scheduler::Wlc);
    nat.dests = vec![dest(NAT_VIP, 80, Method::Nat, 1)];
    dp.put_service(&nat).expect("NAT service");
    let mut dr = ServiceSpec::new(ServiceKey::v4(DR_VIP, 80, 6), 2, Scheduler::Wlc);
    dr.dests = vec![dest(DR_RIP, 80, Method::Dr, 1)];
    dp.put_service(&dr).expect("DR service");
    let mut nat6 = ServiceSpec::new(ServiceKey::v6(NAT_VIP6, 80, 6), 3, Scheduler::Wlc);
    nat6.dests = vec![dest(NAT_VIP6, 80, Method::Nat, 1)];
    dp.put_service(&nat6).expect("IPv6 NAT service");
    let mut dr6 = ServiceSpec::new(ServiceKey::v6(DR_VIP6, 80, 6), 4, Scheduler::Wlc);
    dr6.dests = vec![dest(DR_RIP6, 80, Method::Dr, 1)];
    dp.put_service(&dr6).expect("IPv6 DR service");
    // Open the flows: SYN, then the established packets are measured.
    for (vip, port) in [(NAT_VIP, 40000), (DR_VIP, 40001)] {
        dp.test_run(&frame(CLIENT, port, vip, 80, Some(0x02)), 1)
            .expect("SYN");
        dp.test_run(&frame(CLIENT, port, vip, 80, Some(0x10)), 1)
            .expect("ACK");
    }
    for (vip, port) in [(NAT_VIP6, 40000), (DR_VIP6, 40001)] {
        dp.test_run(&frame6(CLIENT6, port, vip, 80, 0x02), 1)
            .expect("SYN");
        dp.test_run(&frame6(CLIENT6, port, vip, 80, 0x10), 1)
            .expect("ACK");
    }
    let paths = [
        (
            "NAT established, client to server",
            frame(CLIENT, 40000, NAT_VIP, 80, Some(0x10)),
        ),
        (
            "NAT established, server to client",
            frame(NAT_VIP, 80, CLIENT, 40000, Some(0x10)),
        ),
        (
            "DR established",
            frame(CLIENT, 40001, DR_VIP, 80, Some(0x10)),
        ),
        (
            "IPv6 NAT established, client to server",
            frame6(CLIENT6, 40000, NAT_VIP6, 80, 0x10),
        ),
        (
            "IPv6 NAT established, server to client",
            frame6(NAT_VIP6, 80, CLIENT6, 40000, 0x10),
        ),
        (
            "IPv6 DR established",
            frame6(CLIENT6, 40001, DR_VIP6, 80, 0x10),
        ),
    ];
    let only = arg("--only");
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.starts_with(o));
    for (name, f) in &paths {
        if !wanted(name) {
            continue;
        }
        let (ns, verdict) = cost(&dp, f, repeat, BATCH);
        println!("{name}\t{ns}\t{verdict:?}\tloop");
    }
    // Scheduling: one UDP one-packet-scheduling DR service per scheduler, 10 servers.
    for (i, kind) in fulcrum_dataplane::SCHEDULERS.iter().enumerate() {
        if !wanted(&format!("new flow, {}", kind.name())) {
            continue;
        }
        let vip = Ipv4Addr::new(192, 168, 185, 1 + i as u8);
        let mut s = ServiceSpec::new(ServiceKey::v4(vip, 53, 17), 10 + i as u32, *kind);
        s.ops = true;
        s.dests = (0..10)
            .map(|d| {
                dest(
                    Ipv4Addr::new(192, 168, 186, 10 + d),
                    53,
                    Method::Dr,
                    1 + u32::from(d),
                )
            })
            .collect();
        dp.put_service(&s).expect("scheduler service");
        let (ns, verdict) = cost(&dp, &frame(CLIENT, 40002, vip, 53, None), repeat / 4, BATCH);
        println!("new flow, {}\t{ns}\t{verdict:?}\tloop", kind.name());
    }
    // One run a call: TUN, and every established path beside it, the floor measured the
    // same way (each call's time includes the system call's own work around the run).
    let single = repeat / 10;
    let tun = [
        ("ipip", TunKind::Ipip, 0),
        ("gue", TunKind::Gue, 6080),
        ("gre", TunKind::Gre, 0),
    ];
    let mut rows: Vec<(String, Vec<u8>)> = paths
        .iter()
        .map(|(name, f)| (name.to_string(), f.clone()))
        .collect();
    for (i, (name, kind, port)) in tun.iter().enumerate() {
        let method = Method::Tun(Tunnel {
            kind: *kind,
            port: *port,
            csum: TunCsum::NoCsum,
        });
        let vport = 90 + i as u16;
        // The same tunnel within each family and across them (an IPv6 service's IPv4
        // server, an IPv4 service's IPv6 one), each with its flow opened (a SYN).
        let families: [TunFamily; 4] = [
            (
                ServiceKey::v4(DR_VIP, vport, 6),
                DR_RIP.into(),
                DIRECTOR.into(),
                "TUN",
                frame(CLIENT, 40010, DR_VIP, vport, Some(0x02)),
                frame(CLIENT, 40010, DR_VIP, vport, Some(0x10)),
            ),
            (
                ServiceKey::v6(DR_VIP6, vport, 6),
                DR_RIP6.into(),
                DIRECTOR_ADDR6.into(),
                "IPv6 TUN",
                frame6(CLIENT6, 40010, DR_VIP6, vport, 0x02),
                frame6(CLIENT6, 40010, DR_VIP6, vport, 0x10),
            ),
            (
                ServiceKey::v6(DR_VIP6, vport + 10, 6),
                DR_RIP.into(),
                DIRECTOR.into(),
                "IPv6-in-IPv4 TUN",
                frame6(CLIENT6, 40011, DR_VIP6, vport + 10, 0x02),
                frame6(CLIENT6, 40011, DR_VIP6, vport + 10, 0x10),
            ),
            (
                ServiceKey::v4(DR_VIP, vport + 10, 6),
                DR_RIP6.into(),
                DIRECTOR_ADDR6.into(),
                "IPv4-in-IPv6 TUN",
                frame(CLIENT, 40011, DR_VIP, vport + 10, Some(0x02)),
                frame(CLIENT, 40011, DR_VIP, vport + 10, Some(0x10)),
            ),
        ];
        for (f, (key, rip, source, label, syn, ack)) in families.into_iter().enumerate() {
            let mut t = ServiceSpec::new(key, 30 + 10 * f as u32 + i as u32, Scheduler::Wlc);
            t.dests = vec![dest(rip, vport, method, 1)];
            t.dests[0].as_mut().expect("dest").tun_source = Some(source);
            dp.put_service(&t).expect("TUN service");
            dp.test_run(&syn, 1).expect("SYN");
            rows.push((format!("{label} {name} established"), ack));
        }
    }
    if rows.iter().any(|(name, _)| wanted(name)) {
        println!("floor\t{}\tTx\tsingle", floor_cost(prog, single, 1));
        for (name, f) in rows {
            if wanted(&name) {
                let (ns, verdict) = cost(&dp, &f, single, 1);
                println!("{name}\t{ns}\t{verdict:?}\tsingle");
            }
        }
    }
}

fn main() {
    let repeat: u32 = arg("--repeat")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    if std::env::args().any(|a| a == "--inner") {
        inner(repeat);
        return;
    }
    if !fulcrum_lab::is_root() {
        eprintln!("xdp-cost needs root (it loads BPF programs in a network namespace)");
        std::process::exit(2);
    }
    let mut lab = Lab::new("xdpcost").expect("lab");
    let director = lab.host("director").expect("host");
    let inside = lab.switch("in").expect("switch");
    lab.attach(&director, "eth1", &inside).expect("attach");
    lab.addr(&director, "eth1", &format!("{DIRECTOR}/24"))
        .expect("address");
    lab.sysctl(&director, "net.ipv4.ip_forward", "1")
        .expect("ip_forward");
    lab.sysctl(&director, "net.ipv6.conf.all.forwarding", "1")
        .expect("IPv6 forwarding");
    lab.ip(
        &director,
        &["-6", "addr", "add", DIRECTOR6, "dev", "eth1", "nodad"],
    )
    .expect("IPv6 address");
    lab.ip(
        &director,
        &["route", "add", "192.168.186.0/24", "dev", "eth1"],
    )
    .expect("route");
    // A veth pair to hold the floor and the data plane attached while they run.
    lab.ip(
        &director,
        &["link", "add", "fl0", "type", "veth", "peer", "name", "fl1"],
    )
    .expect("veth pair");
    for dev in ["fl0", "fl1"] {
        lab.ip(&director, &["link", "set", dev, "up"]).expect("up");
    }
    // The client and the NAT "real server" (the VIP itself), in each family.
    let neighbours: [IpAddr; 6] = [
        CLIENT.into(),
        NAT_VIP.into(),
        CLIENT6.into(),
        NAT_VIP6.into(),
        DR_RIP.into(),
        DR_RIP6.into(),
    ];
    for a in neighbours {
        lab.ip(
            &director,
            &[
                "neigh",
                "replace",
                &a.to_string(),
                "lladdr",
                &MAC.map(|b| format!("{b:02x}")).join(":"),
                "dev",
                "eth1",
                "nud",
                "permanent",
            ],
        )
        .expect("neighbour");
    }
    let rounds: usize = arg("--rounds").and_then(|v| v.parse().ok()).unwrap_or(5);
    let exe = std::env::current_exe().expect("own path");
    let only = arg("--only");
    let mut samples: Vec<(String, Vec<f64>, String, String)> = Vec::new();
    for _ in 0..rounds.max(1) {
        let exe = exe.to_string_lossy().to_string();
        let repeat = repeat.to_string();
        let mut args = vec![exe.as_str(), "--inner", "--repeat", &repeat];
        if let Some(o) = &only {
            args.extend(["--only", o]);
        }
        let out = lab.exec(&director.netns, args).expect("run inside the lab");
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            std::process::exit(1);
        }
        for (i, l) in String::from_utf8_lossy(&out.stdout).lines().enumerate() {
            let mut p = l.split('\t');
            let (Some(name), Some(Ok(ns)), Some(verdict), Some(group)) = (
                p.next(),
                p.next().map(str::parse::<f64>),
                p.next(),
                p.next(),
            ) else {
                continue;
            };
            if samples.len() <= i {
                samples.push((
                    name.to_string(),
                    Vec::new(),
                    verdict.to_string(),
                    group.to_string(),
                ));
            }
            samples[i].1.push(ns);
        }
    }
    let rows: Vec<(String, f64, String, String)> = samples
        .into_iter()
        .map(|(name, mut v, verdict, group)| {
            v.sort_by(f64::total_cmp);
            (name, v[v.len() / 2], verdict, group)
        })
        .collect();
    let kernel = Command::new("uname").arg("-r").output().ok();
    println!(
        "BPF_PROG_TEST_RUN, repeat {repeat} ({BATCH} a call; schedulers: {}), median of {rounds} rounds, kernel {}",
        repeat / 4,
        kernel
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    );
    for (group, title) in [
        ("loop", None),
        (
            "single",
            Some(format!(
                "One run a call ({} calls): every established path and TUN, the floor measured the same way",
                repeat / 10
            )),
        ),
    ] {
        let table: Vec<_> = rows.iter().filter(|r| r.3 == group).collect();
        if table.is_empty() {
            continue;
        }
        if let Some(t) = title {
            println!();
            println!("{t}");
        }
        let floor = table.first().map(|r| r.1).unwrap_or(1.0).max(1.0);
        println!("| path | ns per packet | verdict | x floor |");
        println!("|---|---|---|---|");
        for (name, ns, verdict, _) in table {
            println!("| {name} | {ns:.1} | {verdict} | {:.2} |", ns / floor);
        }
    }
}
