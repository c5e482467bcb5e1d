//! Layer 4 through the director, in the lab: new TCP connections per second from the
//! client to reference deployment 1's real servers, with the director doing
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
//! line and closes; the client reuses TIME_WAIT ports). Needs root and nft.
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
    exe: &Path,
    targets: &[String],
    clients: usize,
    secs: u64,
    dir: &Path,
) -> (f64, u64) {
    let client = r.client.clone();
    let mut procs = Vec::new();
    for i in 0..clients {
        let log = dir.join(format!("rate-{i}.log"));
        let p = r
            .lab
            .spawn(
                &client,
                &[
                    exe.to_string_lossy().as_ref(),
                    "lab-agent",
                    "rate",
                    "--connect",
                    &targets[i % targets.len()],
                    "--for-ms",
                    &(secs * 1000).to_string(),
                ],
                Some(&log),
            )
            .expect("spawn a client");
        procs.push((p, log));
    }
    let (mut ok, mut failed) = (0u64, 0u64);
    for (p, log) in procs {
        p.wait_timeout(Duration::from_secs(secs + 30));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let words: Vec<&str> = text.split_whitespace().collect();
        if let [n, "ok", m, "failed"] = words[..] {
            ok += n.parse::<u64>().unwrap_or(0);
            failed += m.parse::<u64>().unwrap_or(0);
        }
    }
    (ok as f64 / secs as f64, failed)
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
    let conf = dir.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "virtual_server {vip} 80 {{\n  lb_algo rr\n  lb_kind NAT\n  protocol TCP\n  real_server {} 80 {{\n    weight 1\n  }}\n  real_server {} 80 {{\n    weight 1\n  }}\n}}\n",
            r.rips[0], r.rips[1]
        ),
    )
    .expect("config");
    let modes = [Mode::Routing, Mode::Nftables, Mode::Fulcrum];
    let mut results: Vec<Vec<(f64, u64)>> = vec![Vec::new(); modes.len()];
    for _ in 0..rounds {
        for (m, mode) in modes.iter().enumerate() {
            let result = match mode {
                Mode::Routing => measure(&mut r, &exe, &rips, clients, secs, &dir),
                Mode::Nftables => {
                    nft(&r, &format!(
                        "table ip fulcrum_bench {{\n  chain pre {{\n    type nat hook prerouting priority -100;\n    ip daddr {vip} tcp dport 80 dnat to numgen inc mod 2 map {{ 0 : {}, 1 : {} }}\n  }}\n}}\n",
                        r.rips[0], r.rips[1]
                    ));
                    let v = measure(&mut r, &exe, &[format!("{vip}:80")], clients, secs, &dir);
                    nft(&r, "delete table ip fulcrum_bench");
                    v
                }
                Mode::Fulcrum => {
                    let sock = dir.join("fulcrum.sock");
                    let director = r.directors[0].clone();
                    let daemon = r
                        .lab
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
                        .expect("start fulcrum");
                    let up = wait_for(Duration::from_secs(20), || {
                        Command::new(&exe)
                            .arg("ipvsadm")
                            .arg("--control")
                            .arg(&sock)
                            .arg("-Ln")
                            .output()
                            .map(|o| String::from_utf8_lossy(&o.stdout).contains("  -> "))
                            .unwrap_or(false)
                    });
                    assert!(up.is_some(), "fulcrum did not start; see {}", dir.display());
                    let v = measure(&mut r, &exe, &[format!("{vip}:80")], clients, secs, &dir);
                    let _ = daemon.signal("TERM");
                    daemon.wait_timeout(Duration::from_secs(10));
                    v
                }
            };
            results[m].push(result);
        }
    }
    println!(
        "reference deployment 1, {clients} clients x {secs} s, {rounds} rounds (median), new connections per second\n"
    );
    println!("| director | connections/s | failed | x nftables | x routing |");
    println!("|---|---|---|---|---|");
    let median = |v: &Vec<(f64, u64)>| {
        let mut r: Vec<f64> = v.iter().map(|x| x.0).collect();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    let base_nft = median(&results[1]);
    let base_route = median(&results[0]);
    for (m, mode) in modes.iter().enumerate() {
        let cps = median(&results[m]);
        let failed: u64 = results[m].iter().map(|x| x.1).sum();
        println!(
            "| {} | {cps:.0} | {failed} | {:.2} | {:.2} |",
            mode.name(),
            cps / base_nft,
            cps / base_route
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
