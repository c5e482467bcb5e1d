//! Layer 4 through the director, in the lab: new TCP connections per second, and UDP
//! packets per second, from the client to reference deployment 1's real servers, with the
//! director doing
//!   - plain routing (no NAT: the client connects to a real server's address),
//!   - the kernel's NAT with nftables (`dnat` to `numgen inc mod 2`, as kube-proxy does),
//!   - Fulcrum's XDP NAT (rr over the same two servers),
//!
//! in the same run, on the same topology, in rounds so that the machine's noise spreads
//! over all three. The endpoints set the ceiling in this lab (REFERENCE.md measured about
//! 8,100/s routed and 5,700/s with nftables), so the director's own cost is better read
//! from `xdp-cost`.
//!
//! Each measurement runs `--clients` lab agents in the client namespace, each opening
//! connections one after another for `--seconds` (each connection reads the server's first
//! line and closes; the client reuses TIME_WAIT ports), then as many agents each flooding
//! 64-byte UDP datagrams from one socket while each real server counts what arrives.
//! Needs root and nft.
//! Usage: l4-lab [--seconds S] [--clients N] [--rounds R] [--fulcrum PATH]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fulcrum_lab::reference::{self, Deployment, Reference};
use fulcrum_lab::{wait_for, Agent};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Routing,
    Nftables,
    Fulcrum,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Routing => "plain routing (no NAT)",
            Mode::Nftables => "nftables NAT (dnat numgen)",
            Mode::Fulcrum => "Fulcrum XDP NAT (rr)",
        }
    }
}

/// Connections per second (ok, failed) with `clients` agents hitting `targets` in turn.
fn measure(
    r: &mut Reference,
    targets: &[String],
    clients: usize,
    secs: u64,
    dir: &Path,
) -> (f64, u64) {
    let procs = clients_running(r, "rate", targets, clients, secs, dir);
    let (mut ok, mut failed) = (0u64, 0u64);
    for (p, log) in procs {
        p.wait_timeout(Duration::from_secs(secs + 30));
        ok += fulcrum_lab::number_before(&log, "ok");
        failed += fulcrum_lab::number_before(&log, "failed");
    }
    (ok as f64 / secs as f64, failed)
}

/// `clients` lab agents in the client namespace running `mode` against `targets` in turn
/// for `secs`, each with its log.
fn clients_running(
    r: &mut Reference,
    mode: &str,
    targets: &[String],
    clients: usize,
    secs: u64,
    dir: &Path,
) -> Vec<(fulcrum_lab::Process, PathBuf)> {
    let client = r.client.clone();
    let for_ms = (secs * 1000).to_string();
    (0..clients)
        .map(|i| {
            let log = dir.join(format!("{mode}-{i}.log"));
            let args = [
                mode,
                "--connect",
                &targets[i % targets.len()],
                "--for-ms",
                &for_ms,
            ];
            let p = r
                .lab
                .spawn_agent(&client, &args, &log)
                .expect("spawn a client agent");
            (p, log)
        })
        .collect()
}

/// UDP packets per second that reach the real servers (received, sent) with `clients`
/// flooding agents sending 64-byte datagrams to `targets` in turn.
fn measure_pps(
    r: &mut Reference,
    targets: &[String],
    clients: usize,
    secs: u64,
    dir: &Path,
) -> (f64, f64) {
    let mut sinks = Vec::new();
    for (i, rs) in r.real_servers.clone().iter().enumerate() {
        let log = dir.join(format!("sink-{i}.log"));
        let p = r
            .lab
            .sink(rs, "0.0.0.0:9", secs * 1000 + 2000, &log)
            .expect("a sink");
        sinks.push((p, log));
    }
    let floods = clients_running(r, "flood", targets, clients, secs, dir);
    let wait = Duration::from_secs(secs + 30);
    let sent = fulcrum_lab::total_of(floods, "sent", wait);
    let received = fulcrum_lab::total_of(sinks, "received", wait);
    (received as f64 / secs as f64, sent as f64 / secs as f64)
}

fn nft(r: &Reference, ruleset: &str) {
    let out = r
        .lab
        .exec(
            &r.directors[0].netns,
            ["sh", "-c", &format!("printf '%s' '{ruleset}' | nft -f -")],
        )
        .expect("nft");
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    if !fulcrum_lab::is_root() {
        eprintln!("l4-lab needs root (it builds network namespaces)");
        std::process::exit(2);
    }
    if Command::new("nft").arg("--version").output().is_err() {
        eprintln!("l4-lab needs nft (apt-get install nftables; scripts/setup does)");
        std::process::exit(2);
    }
    let secs: u64 = arg("--seconds").and_then(|v| v.parse().ok()).unwrap_or(5);
    let clients: usize = arg("--clients").and_then(|v| v.parse().ok()).unwrap_or(4);
    let rounds: usize = arg("--rounds").and_then(|v| v.parse().ok()).unwrap_or(3);
    let exe = arg("--fulcrum").map(PathBuf::from).unwrap_or_else(|| {
        std::env::current_exe()
            .unwrap_or_default()
            .with_file_name("fulcrum")
    });
    let mut r = reference::build(
        Deployment::LvsNat,
        "bl4",
        Some(Agent::new(&exe, &["lab-agent"])),
    )
    .expect("build deployment 1");
    let dir = std::env::temp_dir().join(format!("fulcrum-bench-l4-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    for (i, rs) in r.real_servers.clone().iter().enumerate() {
        r.lab
            .serve(rs, &format!("rs{}", i + 1), "0.0.0.0:80", false)
            .expect("serve");
    }
    let client = r.client.clone();
    r.lab
        .sysctl(&client, "net.ipv4.tcp_tw_reuse", "1")
        .expect("tw_reuse");
    r.lab
        .route(&client, "192.168.184.0/24", "10.1.10.65")
        .expect("route to the real servers");
    let vip = reference::DIP1.to_string();
    let rips: Vec<String> = r.rips.iter().map(|a| format!("{a}:80")).collect();
    let udp_rips: Vec<String> = r.rips.iter().map(|a| format!("{a}:9")).collect();
    let conf = dir.join("keepalived.conf");
    let mut services = String::new();
    for (port, proto) in [(80, "TCP"), (9, "UDP")] {
        services.push_str(&format!(
            "virtual_server {vip} {port} {{\n  lb_algo rr\n  lb_kind NAT\n  protocol {proto}\n  real_server {} {port} {{\n    weight 1\n  }}\n  real_server {} {port} {{\n    weight 1\n  }}\n}}\n",
            r.rips[0], r.rips[1]
        ));
    }
    std::fs::write(&conf, services).expect("config");
    let modes = [Mode::Routing, Mode::Nftables, Mode::Fulcrum];
    // Per mode, per round: (connections/s, failed, packets/s received, packets/s sent).
    let mut results: Vec<Vec<(f64, u64, f64, f64)>> = vec![Vec::new(); modes.len()];
    for _ in 0..rounds {
        for (m, mode) in modes.iter().enumerate() {
            let vip_tcp = [format!("{vip}:80")];
            let vip_udp = [format!("{vip}:9")];
            let (tcp, udp): (&[String], &[String]) = match mode {
                Mode::Routing => (&rips, &udp_rips),
                _ => (&vip_tcp, &vip_udp),
            };
            let mut daemon = None;
            match mode {
                Mode::Routing => {}
                Mode::Nftables => {
                    let map = format!("{{ 0 : {}, 1 : {} }}", r.rips[0], r.rips[1]);
                    nft(&r, &format!(
                        "table ip fulcrum_bench {{\n  chain pre {{\n    type nat hook prerouting priority -100;\n    ip daddr {vip} tcp dport 80 dnat to numgen inc mod 2 map {map}\n    ip daddr {vip} udp dport 9 dnat to numgen inc mod 2 map {map}\n  }}\n}}\n"
                    ));
                }
                Mode::Fulcrum => {
                    let sock = dir.join("fulcrum.sock");
                    let director = r.directors[0].clone();
                    daemon = Some(
                        r.lab
                            .spawn(
                                &director,
                                &[
                                    exe.as_os_str(),
                                    "run".as_ref(),
                                    "--log-level".as_ref(),
                                    "warn".as_ref(),
                                    "-f".as_ref(),
                                    conf.as_os_str(),
                                    "--control".as_ref(),
                                    sock.as_os_str(),
                                ],
                                Some(&dir.join("fulcrum.log")),
                            )
                            .expect("start fulcrum"),
                    );
                    let up = wait_for(Duration::from_secs(20), || {
                        Command::new(&exe)
                            .arg("ipvsadm")
                            .arg("--control")
                            .arg(&sock)
                            .arg("-Ln")
                            .output()
                            .map(|o| {
                                String::from_utf8_lossy(&o.stdout).matches("  -> ").count() >= 4
                            })
                            .unwrap_or(false)
                    });
                    assert!(up.is_some(), "fulcrum did not start; see {}", dir.display());
                }
            }
            let (cps, failed) = measure(&mut r, tcp, clients, secs, &dir);
            let (pps, sent) = measure_pps(&mut r, udp, clients, secs, &dir);
            results[m].push((cps, failed, pps, sent));
            match mode {
                Mode::Routing => {}
                Mode::Nftables => nft(&r, "delete table ip fulcrum_bench"),
                Mode::Fulcrum => {
                    if let Some(d) = daemon.take() {
                        let _ = d.signal("TERM");
                        d.wait_timeout(Duration::from_secs(10));
                    }
                }
            }
        }
    }
    println!("reference deployment 1, {clients} clients x {secs} s, {rounds} rounds (median)\n");
    let median = |v: &Vec<(f64, u64, f64, f64)>, f: fn(&(f64, u64, f64, f64)) -> f64| {
        let mut r: Vec<f64> = v.iter().map(f).collect();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    let cps_of = |x: &(f64, u64, f64, f64)| x.0;
    let pps_of = |x: &(f64, u64, f64, f64)| x.2;
    let sent_of = |x: &(f64, u64, f64, f64)| x.3;
    println!("New TCP connections per second:\n");
    println!("| director | connections/s | failed | x nftables | x routing |");
    println!("|---|---|---|---|---|");
    let (nft_cps, route_cps) = (median(&results[1], cps_of), median(&results[0], cps_of));
    for (m, mode) in modes.iter().enumerate() {
        let cps = median(&results[m], cps_of);
        let failed: u64 = results[m].iter().map(|x| x.1).sum();
        println!(
            "| {} | {cps:.0} | {failed} | {:.2} | {:.2} |",
            mode.name(),
            cps / nft_cps,
            cps / route_cps
        );
    }
    println!("\nUDP packets per second (64-byte datagrams) reaching the real servers:\n");
    println!("| director | packets/s received | packets/s sent | x nftables | x routing |");
    println!("|---|---|---|---|---|");
    let (nft_pps, route_pps) = (median(&results[1], pps_of), median(&results[0], pps_of));
    for (m, mode) in modes.iter().enumerate() {
        let pps = median(&results[m], pps_of);
        println!(
            "| {} | {pps:.0} | {:.0} | {:.2} | {:.2} |",
            mode.name(),
            median(&results[m], sent_of),
            pps / nft_pps,
            pps / route_pps
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
