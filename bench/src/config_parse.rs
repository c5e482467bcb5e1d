//! Parsing and validating a large keepalived.conf: fulcrum vs keepalived -t, same file, same
//! run, same machine.
//!
//! Generates 1,000 virtual servers with 10 real servers each (10,000 real servers, each with
//! a TCP_CHECK), then measures:
//! - fulcrum's parse + validation in-process (the library, no process start), median of runs;
//! - `fulcrum check -f FILE` and `keepalived -t -f FILE` as whole processes, wall time and
//!   peak RSS from /usr/bin/time, median of runs.
//!
//! Usage: config-parse [--fulcrum PATH] [--runs N] [--services N] [--per-service N]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn generate(services: usize, per_service: usize) -> String {
    let mut s = String::with_capacity(services * per_service * 120);
    s.push_str("global_defs {\n    router_id bench\n}\n");
    for v in 0..services {
        let vip = format!("10.{}.{}.{}", 100 + v / 65536, (v / 256) % 256, v % 256);
        s.push_str(&format!(
            "virtual_server {vip} 80 {{\n    delay_loop 6\n    lb_algo wlc\n    lb_kind NAT\n    protocol TCP\n"
        ));
        for r in 0..per_service {
            let n = v * per_service + r;
            s.push_str(&format!(
                "    real_server 192.{}.{}.{} 8080 {{\n        weight {}\n        TCP_CHECK {{\n            connect_timeout 3\n            retry 2\n        }}\n    }}\n",
                168 + n / 65536,
                (n / 256) % 256,
                n % 256,
                1 + r % 5
            ));
        }
        s.push_str("}\n");
    }
    s
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs a command under /usr/bin/time: (wall seconds, peak RSS KiB, success).
fn timed(program: &str, args: &[&str]) -> Option<(f64, u64, bool)> {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "FULCRUM_BENCH %e %M"])
        .arg(program)
        .args(args)
        .output()
        .ok()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().find(|l| l.starts_with("FULCRUM_BENCH "))?;
    let mut parts = line.split_whitespace().skip(1);
    let secs: f64 = parts.next()?.parse().ok()?;
    let kib: u64 = parts.next()?.parse().ok()?;
    // keepalived -t ends a clean check with SIGTERM to itself when it has scripts; this
    // file has none, so success means exit 0 for both.
    Some((
        secs,
        kib,
        out.status.success() || stderr.contains("Command terminated by signal 15"),
    ))
}

fn measure(label: &str, program: &str, args: &[&str], runs: usize) -> Option<(f64, u64)> {
    let mut secs = Vec::new();
    let mut peak = 0;
    for _ in 0..runs {
        let (s, k, ok) = timed(program, args)?;
        if !ok {
            eprintln!("{label}: the command failed");
            return None;
        }
        secs.push(s);
        peak = peak.max(k);
    }
    Some((median(secs), peak))
}

fn main() {
    let runs: usize = arg("--runs").and_then(|r| r.parse().ok()).unwrap_or(5);
    let services: usize = arg("--services")
        .and_then(|r| r.parse().ok())
        .unwrap_or(1000);
    let per: usize = arg("--per-service")
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let fulcrum = arg("--fulcrum").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap_or_default();
        exe.with_file_name("fulcrum")
    });

    let dir = std::env::temp_dir().join(format!("fulcrum-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("keepalived.conf");
    let text = generate(services, per);
    std::fs::write(&file, &text).expect("write config");
    println!(
        "generated {}: {services} virtual servers, {} real servers, {} lines, {} KiB",
        file.display(),
        services * per,
        text.lines().count(),
        text.len() / 1024
    );

    // In-process: the library alone.
    let mut lib = Vec::new();
    for _ in 0..runs.max(3) {
        let t = Instant::now();
        let loaded = fulcrum_keepalived_conf::load(&file, &Default::default());
        lib.push(t.elapsed().as_secs_f64());
        assert!(loaded.config.is_some(), "{:?}", loaded.diagnostics.first());
    }
    let lib = median(lib);
    println!(
        "fulcrum library parse+validate (in-process, median of {}): {:.1} ms",
        runs.max(3),
        lib * 1e3
    );

    let file_s = file.to_string_lossy().into_owned();
    let ours = measure(
        "fulcrum check",
        &fulcrum.to_string_lossy(),
        &["check", "--no-host-checks", "-f", &file_s],
        runs,
    );
    let peer = measure("keepalived -t", "keepalived", &["-t", "-f", &file_s], runs);
    println!("\n| process (median of {runs}) | wall time | peak RSS |\n|---|---|---|");
    if let Some((s, k)) = ours {
        println!(
            "| fulcrum check | {:.0} ms | {:.1} MiB |",
            s * 1e3,
            k as f64 / 1024.0
        );
    } else {
        println!(
            "| fulcrum check | not measured (needs {} and /usr/bin/time) | |",
            fulcrum.display()
        );
    }
    if let Some((s, k)) = peer {
        println!(
            "| keepalived -t | {:.0} ms | {:.1} MiB |",
            s * 1e3,
            k as f64 / 1024.0
        );
    } else {
        println!("| keepalived -t | not measured (needs keepalived and /usr/bin/time) | |");
    }
    if let (Some((s1, k1)), Some((s2, k2))) = (ours, peer) {
        println!(
            "\nratios: keepalived/fulcrum wall time {:.2}x, peak RSS {:.2}x",
            s2 / s1.max(1e-3),
            k2 as f64 / k1.max(1) as f64
        );
    }
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}
