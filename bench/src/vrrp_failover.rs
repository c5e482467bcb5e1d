//! VRRP failover after a SIGKILL of the master, fulcrum vs keepalived, side by side in the
//! same lab run with the same configuration; and the CPU that 100 instances advertising
//! every 10 ms cost each of them.
//!
//! Failover: reference deployment 3's segment, director 1 (priority 150) and director 2
//! (priority 100) run the same implementation; the client probes VIP:9000 with a TCP
//! connection every 5 ms (50 ms timeout); the master's VRRP process is SIGKILLed (for
//! keepalived, its VRRP child first, so it cannot say goodbye) and its host's link goes down
//! at the same moment, as when the machine dies. Reported: the time until director 2 holds
//! the VIP, and the client's outage (from the kill to the first answer from director 2) with
//! the probes that failed in it.
//!
//! Needs root, keepalived, and the fulcrum binary (`--fulcrum PATH`, default: beside this one).
//! Usage: vrrp-failover [--runs N] [--fulcrum PATH] [--skip-cpu]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fulcrum_lab::reference::{self, Deployment, Reference};
use fulcrum_lab::wait_for;
use fulcrum_lab::{Agent, Host, Process};

const VIP: &str = "10.1.10.88";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Impl {
    Fulcrum,
    Keepalived,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Fulcrum => "fulcrum",
            Impl::Keepalived => "keepalived",
        }
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn now_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

fn config(version: u8, advert: &str) -> String {
    let auth = if version == 2 {
        "    authentication {\n        auth_type PASS\n        auth_pass fulcrum1\n    }\n"
    } else {
        ""
    };
    format!(
        "vrrp_instance VI_1 {{\n    interface eth0\n    virtual_router_id 51\n    version {version}\n\
         @lb1    priority 150\n@lb2    priority 100\n    advert_int {advert}\n{auth}\
             virtual_ipaddress {{\n        {VIP}/24 dev eth0\n    }}\n}}\n"
    )
}

fn holds_vip(r: &Reference, host: &Host) -> bool {
    r.lab
        .ip(host, &["-4", "addr", "show", "dev", "eth0"])
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{VIP}/")))
        .unwrap_or(false)
}

/// Starts an implementation on a director; returns the process to kill and, for keepalived,
/// the pid file of its VRRP child.
fn start(
    which: Impl,
    r: &mut Reference,
    host: &Host,
    conf: &Path,
    id: &str,
    dir: &Path,
    fulcrum: &Path,
) -> (Process, Option<PathBuf>) {
    let log = dir.join(format!("{}-{id}.log", which.name()));
    match which {
        Impl::Fulcrum => {
            let sock = dir.join(format!("{id}.sock"));
            let args: Vec<std::ffi::OsString> = vec![
                fulcrum.into(),
                "run".into(),
                "-f".into(),
                conf.into(),
                "-i".into(),
                id.into(),
                "--control".into(),
                sock.into(),
                "--log-level".into(),
                "warn".into(),
            ];
            (
                r.lab.spawn(host, &args, Some(&log)).expect("spawn fulcrum"),
                None,
            )
        }
        Impl::Keepalived => {
            let vrrp_pid = dir.join(format!("{id}-vrrp.pid"));
            let args: Vec<std::ffi::OsString> = vec![
                "keepalived".into(),
                "-n".into(),
                "-l".into(),
                "-P".into(),
                "-f".into(),
                conf.into(),
                "-i".into(),
                id.into(),
                "-p".into(),
                dir.join(format!("{id}-main.pid")).into(),
                "-r".into(),
                vrrp_pid.clone().into(),
            ];
            (
                r.lab
                    .spawn(host, &args, Some(&log))
                    .expect("spawn keepalived"),
                Some(vrrp_pid),
            )
        }
    }
}

struct Outcome {
    vip_moved: Duration,
    outage: Option<Duration>,
    failed_probes: usize,
}

fn failover(which: Impl, version: u8, advert: &str, fulcrum: &Path) -> Option<Outcome> {
    let dir = std::env::temp_dir().join(format!(
        "fulcrum-bench-vrrp-{}-{}",
        std::process::id(),
        which.name()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).ok()?;
    let conf = dir.join("keepalived.conf");
    std::fs::write(&conf, config(version, advert)).ok()?;
    let agent = Agent::new(fulcrum, &["lab-agent"]);
    let mut r = reference::build(Deployment::KeepalivedHa, "bvr", Some(agent)).ok()?;
    let (d1, d2) = (r.directors[0].clone(), r.directors[1].clone());
    r.lab.serve(&d1, "director1", "0.0.0.0:9000", true).ok()?;
    r.lab.serve(&d2, "director2", "0.0.0.0:9000", true).ok()?;
    let (p1, vrrp_pid) = start(which, &mut r, &d1, &conf, "lb1", &dir, fulcrum);
    let _p2 = start(which, &mut r, &d2, &conf, "lb2", &dir, fulcrum);
    wait_for(Duration::from_secs(10), || holds_vip(&r, &d1))?;
    std::thread::sleep(Duration::from_millis(1500));
    if holds_vip(&r, &d2) {
        eprintln!("{}: both directors hold the VIP; skipping", which.name());
        return None;
    }
    // The client probes throughout the failover.
    let watch_log = dir.join("watch.log");
    let client = r.client.clone();
    let args: Vec<std::ffi::OsString> = vec![
        fulcrum.into(),
        "lab-agent".into(),
        "watch".into(),
        "--connect".into(),
        format!("{VIP}:9000").into(),
        "--every-ms".into(),
        "5".into(),
        "--for-ms".into(),
        "6000".into(),
        "--timeout-ms".into(),
        "50".into(),
        "--http".into(),
    ];
    let watcher = r.lab.spawn(&client, &args, Some(&watch_log)).ok()?;
    std::thread::sleep(Duration::from_millis(300));
    if let Some(pidfile) = vrrp_pid {
        let child = std::fs::read_to_string(pidfile).ok()?;
        Command::new("kill")
            .args(["-KILL", child.trim()])
            .status()
            .ok()?;
    }
    let killed_at = now_micros();
    p1.signal("KILL").ok()?;
    // The master's host dies with it: its link goes down, so nothing answers for the VIP
    // there until the backup announces itself.
    r.lab.ip(&d1, &["link", "set", "eth0", "down"]).ok()?;
    let moved = wait_for(Duration::from_secs(6), || holds_vip(&r, &d2))?;
    watcher.wait_timeout(Duration::from_secs(10));
    let text = std::fs::read_to_string(&watch_log).unwrap_or_default();
    let mut failed = 0;
    let mut outage = None;
    for line in text.lines() {
        let mut parts = line.splitn(2, ' ');
        let (Some(t), Some(answer)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(t) = t.parse::<u128>() else { continue };
        if t < killed_at {
            continue;
        }
        if answer == "director2" {
            outage.get_or_insert(Duration::from_micros((t - killed_at) as u64));
        } else if outage.is_none() && answer != "director1" {
            failed += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Some(Outcome {
        vip_moved: moved,
        outage,
        failed_probes: failed,
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// CPU seconds used by every process in a namespace's pid list.
fn cpu_of(host: &Host) -> f64 {
    let Ok(out) = Command::new("ip")
        .args(["netns", "pids", &host.netns])
        .output()
    else {
        return 0.0;
    };
    let ticks = 100.0;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter(|stat| !stat.contains("(fulcrum-lab-age") && !stat.contains("lab-agent"))
        .map(|stat| {
            let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
            let f: Vec<&str> = after.split_whitespace().collect();
            let utime: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let stime: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            (utime + stime) / ticks
        })
        .sum::<f64>()
}

/// 100 v3 instances advertising every 10 ms on one director; CPU over 10 s.
fn cpu_100(which: Impl, fulcrum: &Path) -> Option<f64> {
    let dir = std::env::temp_dir().join(format!(
        "fulcrum-bench-cpu-{}-{}",
        std::process::id(),
        which.name()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).ok()?;
    let conf = dir.join("keepalived.conf");
    let mut text = String::new();
    for i in 1..=100 {
        text.push_str(&format!(
            "vrrp_instance VI_{i} {{\n    interface eth0\n    virtual_router_id {i}\n    version 3\n    priority 200\n    advert_int 0.01\n    virtual_ipaddress {{\n        10.1.20.{i}/32 dev eth0\n    }}\n}}\n"
        ));
    }
    std::fs::write(&conf, text).ok()?;
    let agent = Agent::new(fulcrum, &["lab-agent"]);
    let mut r = reference::build(Deployment::KeepalivedHa, "bcpu", Some(agent)).ok()?;
    let d1 = r.directors[0].clone();
    let (_p, _) = start(which, &mut r, &d1, &conf, "lb1", &dir, fulcrum);
    std::thread::sleep(Duration::from_secs(2));
    let before = cpu_of(&d1);
    std::thread::sleep(Duration::from_secs(10));
    let after = cpu_of(&d1);
    let _ = std::fs::remove_dir_all(&dir);
    Some(after - before)
}

fn main() {
    if !fulcrum_lab::is_root() {
        eprintln!("vrrp-failover needs root (it builds network namespaces)");
        std::process::exit(2);
    }
    let runs: usize = arg("--runs").and_then(|r| r.parse().ok()).unwrap_or(3);
    let fulcrum = arg("--fulcrum").map(PathBuf::from).unwrap_or_else(|| {
        std::env::current_exe()
            .unwrap_or_default()
            .with_file_name("fulcrum")
    });
    println!("| setting | implementation | VIP moved (median of {runs}) | client outage (median) | failed probes (median) | bound 3 x advert + skew |");
    println!("|---|---|---|---|---|---|");
    let settings = [
        (2u8, "1", 3.0 + 156.0 / 256.0),
        (3, "0.1", 0.3 + 156.0 * 0.1 / 256.0),
        (3, "0.01", 0.03 + 156.0 * 0.01 / 256.0),
    ];
    for (version, advert, bound) in settings {
        for which in [Impl::Keepalived, Impl::Fulcrum] {
            let mut moved = Vec::new();
            let mut outage = Vec::new();
            let mut failed = Vec::new();
            for _ in 0..runs {
                if let Some(o) = failover(which, version, advert, &fulcrum) {
                    moved.push(o.vip_moved);
                    if let Some(t) = o.outage {
                        outage.push(t);
                    }
                    failed.push(Duration::from_millis(o.failed_probes as u64));
                }
            }
            if moved.is_empty() {
                println!(
                    "| v{version} advert_int {advert} | {} | failed | | | |",
                    which.name()
                );
                continue;
            }
            let out = if outage.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0} ms", median(outage).as_secs_f64() * 1e3)
            };
            println!(
                "| v{version} advert_int {advert} | {} | {:.0} ms | {out} | {} | {:.0} ms |",
                which.name(),
                median(moved).as_secs_f64() * 1e3,
                median(failed).as_millis(),
                bound * 1e3
            );
        }
    }
    if std::env::args().any(|a| a == "--skip-cpu") {
        return;
    }
    println!("\n| 100 v3 instances, advert_int 0.01, master | CPU over 10 s |\n|---|---|");
    for which in [Impl::Keepalived, Impl::Fulcrum] {
        match cpu_100(which, &fulcrum) {
            Some(c) => println!(
                "| {} | {:.2} s ({:.1}% of one core) |",
                which.name(),
                c,
                c * 10.0
            ),
            None => println!("| {} | failed |", which.name()),
        }
    }
}
