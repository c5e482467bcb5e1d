//! The layer-7 proxy, fulcrum vs nginx vs HAProxy, side by side in one run on one machine:
//! requests/s and p50/p99 latency from wrk for (a) keep-alive proxying of a small response,
//! (b) a new client connection per request, (c) a 1 MiB response; then the memory each
//! proxy holds for idle keep-alive client connections (9,000 by default: this machine's
//! hard file limit is 20,000 and may not be raised here, and HAProxy reserves two
//! descriptors per connection; the 10,000 scales from the per-connection figure).
//!
//! One network namespace of its own, everything on loopback. The backend is one nginx
//! (`return 200` for the small response, a static 1 MiB file for the large one) shared by
//! all three. Each proxy runs one worker / one thread with keepalive to the backend
//! (nginx `keepalive 32` with HTTP/1.1, HAProxy `http-reuse always`, fulcrum the same
//! nginx.conf as nginx), pinned to CPU 0; the backend and wrk are pinned to CPU 1. Each
//! proxy is measured alone, one after the other, with the same wrk settings.
//!
//! Needs root, nginx, haproxy and wrk. Usage:
//!   l7-proxy [--seconds S] [--connections C] [--idle N] [--fulcrum PATH]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fulcrum_lab::{wait_for, Host, Lab, Process};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

const BACKEND: &str = "127.0.0.1:9001";
const PROXIES: [(&str, u16); 3] = [("nginx", 8080), ("haproxy", 8082), ("fulcrum", 8081)];

fn backend_conf(dir: &Path) -> String {
    format!(
        "worker_processes 1;\nevents {{ worker_connections 4096; }}\nhttp {{\n    access_log off;\n    server {{\n        listen {BACKEND} backlog=4096;\n        keepalive_requests 1000000;\n        location = / {{ return 200 \"hello, world\\n\"; }}\n        location = /big.bin {{ root {}; }}\n    }}\n}}\n",
        dir.display()
    )
}

/// The proxy configuration nginx and fulcrum both run.
fn proxy_conf(port: u16) -> String {
    format!(
        "worker_processes 1;\nworker_rlimit_nofile 20000;\nevents {{ worker_connections 19000; }}\nhttp {{\n    access_log off;\n    keepalive_requests 1000000;\n    upstream backend {{\n        server {BACKEND};\n        keepalive 32;\n    }}\n    server {{\n        listen 127.0.0.1:{port} backlog=4096;\n        location / {{\n            proxy_pass http://backend;\n            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n        }}\n    }}\n}}\n"
    )
}

fn haproxy_cfg(port: u16) -> String {
    format!(
        "global\n    nbthread 1\n    maxconn 9990\n\ndefaults\n    mode http\n    timeout connect 60s\n    timeout client 75s\n    timeout server 60s\n    timeout http-keep-alive 75s\n    option http-keep-alive\n\nfrontend fe\n    bind 127.0.0.1:{port} backlog 4096\n    default_backend be\n\nbackend be\n    http-reuse always\n    server s1 {BACKEND}\n"
    )
}

/// Runs `args` in the host with a high file limit, pinned to `cpu`.
fn spawn_pinned(lab: &mut Lab, host: &Host, cpu: &str, args: &[String], log: &Path) -> Process {
    let line = args
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let script = format!("ulimit -n $(ulimit -Hn) && exec taskset -c {cpu} {line}");
    lab.spawn(host, &["sh", "-c", &script], Some(log))
        .expect("spawn")
}

fn listening(lab: &Lab, host: &Host, addr: &str) -> bool {
    let (ip, port) = addr.rsplit_once(':').expect("ADDR:PORT");
    lab.exec(
        &host.netns,
        ["bash", "-c", &format!("exec 3<>/dev/tcp/{ip}/{port}")],
    )
    .is_ok()
}

#[derive(Debug, Default, Clone, Copy)]
struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn millis(v: &str) -> Option<f64> {
    let (n, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => return None,
    })
}

fn wrk(lab: &Lab, host: &Host, url: &str, connections: u32, seconds: u64, close: bool) -> Wrk {
    let c = connections.to_string();
    let d = format!("{seconds}s");
    let mut args = vec![
        "taskset",
        "-c",
        "1",
        "wrk",
        "-t1",
        "-c",
        &c,
        "-d",
        &d,
        "--latency",
    ];
    if close {
        args.extend(["-H", "Connection: close"]);
    }
    args.push(url);
    let out = lab.exec(&host.netns, &args).expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut w = Wrk::default();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["Requests/sec:", n] => w.rps = n.parse().unwrap_or(0.0),
            ["50%", v] => w.p50_ms = millis(v).unwrap_or(0.0),
            ["99%", v] => w.p99_ms = millis(v).unwrap_or(0.0),
            ["Socket", "errors:", rest @ ..] => {
                w.errors = rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum()
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => w.errors += n.parse::<u64>().unwrap_or(0),
            _ => {}
        }
    }
    w
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The proxy's own process: the child of the `sh -c ... exec` wrapper is the wrapper
/// itself after exec, so the pid is the proxy's.
fn proxy_pid(p: &Process) -> u32 {
    p.pid
}

/// Hidden mode, run inside the namespace: open `n` connections to `addr`, make one
/// keep-alive request on each, then hold them idle for `secs`, printing `ready N`.
fn hold_idle(addr: &str, n: usize, secs: u64) -> ! {
    let mut held = Vec::with_capacity(n);
    let mut buf = [0u8; 4096];
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect(addr) else {
            break;
        };
        if s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            .is_err()
        {
            break;
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        if s.read(&mut buf).unwrap_or(0) == 0 {
            break;
        }
        held.push(s);
    }
    println!("ready {}", held.len());
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(secs));
    std::process::exit(0);
}

struct Result3 {
    name: &'static str,
    small: Wrk,
    fresh: Wrk,
    big: Wrk,
    idle_kib: u64,
    idle_held: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--hold-idle") {
        let n = args[3].parse().unwrap_or(0);
        let secs = args[4].parse().unwrap_or(5);
        hold_idle(&args[2], n, secs);
    }
    if !fulcrum_lab::is_root() {
        eprintln!("l7-proxy needs root (it builds a network namespace)");
        std::process::exit(2);
    }
    for tool in ["nginx", "haproxy", "wrk", "taskset"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            eprintln!("l7-proxy needs {tool}");
            std::process::exit(2);
        }
    }
    let seconds: u64 = arg("--seconds").and_then(|v| v.parse().ok()).unwrap_or(10);
    let connections: u32 = arg("--connections")
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let idle: usize = arg("--idle").and_then(|v| v.parse().ok()).unwrap_or(9_000);
    let fulcrum = arg("--fulcrum").map(PathBuf::from).unwrap_or_else(|| {
        std::env::current_exe()
            .unwrap_or_default()
            .with_file_name("fulcrum")
    });
    let me = std::env::current_exe().expect("own path");
    let dir = std::env::temp_dir().join(format!("fulcrum-bench-l7-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    std::fs::write(dir.join("big.bin"), vec![b'x'; 1 << 20]).expect("1 MiB file");
    let mut lab = Lab::new("bl7").expect("lab");
    let host = lab.host("l7").expect("namespace");
    let conf = dir.join("backend.conf");
    std::fs::write(&conf, backend_conf(&dir)).expect("backend config");
    let nginx = |conf: &Path, pid: &Path| -> Vec<String> {
        vec![
            "nginx".into(),
            "-c".into(),
            conf.display().to_string(),
            "-e".into(),
            dir.join(format!("{}.err", conf.display()))
                .display()
                .to_string(),
            "-g".into(),
            format!("daemon off; master_process off; pid {};", pid.display()),
        ]
    };
    let _backend = spawn_pinned(
        &mut lab,
        &host,
        "1",
        &nginx(&conf, &dir.join("backend.pid")),
        &dir.join("backend.log"),
    );
    assert!(
        wait_for(Duration::from_secs(10), || listening(&lab, &host, BACKEND)).is_some(),
        "the backend did not start"
    );
    println!(
        "wrk -t1 -c{connections} -d{seconds}s; proxies pinned to CPU 0, backend (nginx) and wrk to CPU 1\n"
    );
    let mut results = Vec::new();
    for (name, port) in PROXIES {
        let args: Vec<String> = match name {
            "nginx" => {
                let c = dir.join("nginx-proxy.conf");
                std::fs::write(&c, proxy_conf(port)).expect("config");
                nginx(&c, &dir.join("nginx-proxy.pid"))
            }
            "haproxy" => {
                let c = dir.join("haproxy.cfg");
                std::fs::write(&c, haproxy_cfg(port)).expect("config");
                vec![
                    "haproxy".into(),
                    "-db".into(),
                    "-f".into(),
                    c.display().to_string(),
                ]
            }
            _ => {
                let c = dir.join("fulcrum-proxy.conf");
                std::fs::write(&c, proxy_conf(port)).expect("config");
                vec![
                    fulcrum.display().to_string(),
                    "run".into(),
                    "--no-forwarding".into(),
                    "--log-level".into(),
                    "warn".into(),
                    "--nginx-conf".into(),
                    c.display().to_string(),
                    "--control".into(),
                    dir.join("fulcrum.sock").display().to_string(),
                ]
            }
        };
        let p = spawn_pinned(
            &mut lab,
            &host,
            "0",
            &args,
            &dir.join(format!("{name}.log")),
        );
        let addr = format!("127.0.0.1:{port}");
        assert!(
            wait_for(Duration::from_secs(10), || listening(&lab, &host, &addr)).is_some(),
            "{name} did not start; see {}",
            dir.display()
        );
        let url = format!("http://{addr}/");
        // Warm up: connections to the backend, code paths.
        wrk(&lab, &host, &url, connections, 2, false);
        let small = wrk(&lab, &host, &url, connections, seconds, false);
        let fresh = wrk(&lab, &host, &url, connections, seconds, true);
        let big = wrk(&lab, &host, &format!("{url}big.bin"), 10, seconds, false);
        // Idle clients: RSS with them held, minus RSS before.
        std::thread::sleep(Duration::from_secs(1));
        let pid = proxy_pid(&p);
        let before = rss_kib(pid);
        let hold_log = dir.join(format!("{name}-idle.log"));
        let holder = spawn_pinned(
            &mut lab,
            &host,
            "1",
            &[
                me.display().to_string(),
                "--hold-idle".into(),
                addr.clone(),
                idle.to_string(),
                "30".into(),
            ],
            &hold_log,
        );
        let held = wait_for(Duration::from_secs(60), || {
            std::fs::read_to_string(&hold_log)
                .unwrap_or_default()
                .starts_with("ready")
        });
        std::thread::sleep(Duration::from_secs(1));
        let after = rss_kib(pid);
        let idle_held = std::fs::read_to_string(&hold_log)
            .unwrap_or_default()
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if held.is_none() {
            eprintln!("{name}: the idle connections were not all opened in 60 s");
        }
        let _ = holder.signal("KILL");
        results.push(Result3 {
            name,
            small,
            fresh,
            big,
            idle_kib: after.saturating_sub(before),
            idle_held,
        });
        let _ = p.signal("TERM");
        p.wait_timeout(Duration::from_secs(5));
    }
    let row = |w: &Wrk| {
        format!(
            "{:.0} | {:.2} | {:.2} | {}",
            w.rps, w.p50_ms, w.p99_ms, w.errors
        )
    };
    println!("| proxy | test | requests/s | p50 ms | p99 ms | errors |");
    println!("|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | (a) keep-alive, small response | {} |",
            r.name,
            row(&r.small)
        );
        println!(
            "| {} | (b) new connection per request | {} |",
            r.name,
            row(&r.fresh)
        );
        println!(
            "| {} | (c) 1 MiB response, 10 connections | {} |",
            r.name,
            row(&r.big)
        );
    }
    println!("\n| proxy | idle keep-alive connections held | RSS added | per connection |");
    println!("|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {} | {} KiB | {:.2} KiB |",
            r.name,
            r.idle_held,
            r.idle_kib,
            r.idle_kib as f64 / r.idle_held.max(1) as f64
        );
    }
    let get = |n: &str| results.iter().find(|r| r.name == n);
    if let (Some(f), Some(n), Some(h)) = (get("fulcrum"), get("nginx"), get("haproxy")) {
        println!(
            "\nfulcrum / nginx requests/s: (a) {:.2}x  (b) {:.2}x  (c) {:.2}x",
            f.small.rps / n.small.rps,
            f.fresh.rps / n.fresh.rps,
            f.big.rps / n.big.rps
        );
        println!(
            "fulcrum / HAProxy requests/s: (a) {:.2}x  (b) {:.2}x  (c) {:.2}x",
            f.small.rps / h.small.rps,
            f.fresh.rps / h.fresh.rps,
            f.big.rps / h.big.rps
        );
        println!(
            "p99 fulcrum / nginx: (a) {:.2}x  (b) {:.2}x",
            f.small.p99_ms / n.small.p99_ms,
            f.fresh.p99_ms / n.fresh.p99_ms
        );
        println!(
            "idle memory fulcrum / nginx: {:.2}x",
            f.idle_kib as f64 / n.idle_kib.max(1) as f64
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
