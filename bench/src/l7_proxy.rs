//! The layer-7 proxy, fulcrum vs nginx vs HAProxy, side by side in one run on one machine:
//! requests/s and p50/p99 latency from wrk for (a) keep-alive proxying of a small response,
//! (b) a new client connection per request, (c) a 1 MiB response, (d) a 64 KiB HTML page
//! compressed on the way (`gzip on` at level 1, HAProxy's `compression algo gzip`, asked
//! by `Accept-Encoding: gzip`; the compressed sizes are printed); and, measured first,
//! before those runs leave freed memory behind, the memory each proxy holds for idle
//! keep-alive client connections (9,000 by default: this machine's
//! hard file limit is 20,000 and may not be raised here, and HAProxy reserves two
//! descriptors per connection; the 10,000 scales from the per-connection figure).
//!
//! One network namespace of its own, everything on loopback. The backend is one nginx
//! (`return 200` for the small response, a static 1 MiB file for the large one) shared by
//! all three. Each proxy runs one worker / one thread with keepalive to the backend
//! (nginx `keepalive 32` with HTTP/1.1, HAProxy `http-reuse always`, fulcrum the same
//! nginx.conf as nginx), pinned to CPU 0; the backend and wrk are pinned to CPU 1. Each
//! proxy is measured with the same wrk settings; all three run at once and the runs
//! interleave, round after round (`--rounds`, 3 by default), each round starting with
//! another proxy, and each figure is the round with the median requests/s: this
//! machine's speed drifts within minutes, and interleaving spreads the drift evenly.
//!
//! With `--workers 2` each proxy runs two workers (nginx two worker processes under its
//! master, HAProxy `nbthread 2`, fulcrum two runtime threads) on both CPUs, which wrk
//! and the backend then share with them. CPU time per request is read from /proc (user +
//! system of the proxy's whole process tree, over each wrk run), and idle memory is the
//! RSS of the whole tree.
//!
//! Needs root, nginx, haproxy and wrk. Usage:
//!   l7-proxy [--seconds S] [--connections C] [--rounds R] [--idle N] [--workers N]
//!            [--only NAME] [--fulcrum PATH]

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
        "worker_processes 1;\nevents {{ worker_connections 4096; }}\nhttp {{\n    access_log off;\n    server {{\n        listen {BACKEND} backlog=4096;\n        keepalive_requests 1000000;\n        location = / {{ return 200 \"hello, world\\n\"; }}\n        location = /big.bin {{ root {0}; }}\n        location = /page.html {{ root {0}; }}\n    }}\n}}\n",
        dir.display()
    )
}

/// The proxy configuration nginx and fulcrum both run.
fn proxy_conf(port: u16, workers: u32) -> String {
    format!(
        "worker_processes {workers};\nworker_rlimit_nofile 20000;\nevents {{ worker_connections 19000; }}\nhttp {{\n    access_log off;\n    keepalive_requests 1000000;\n    gzip on;\n    upstream backend {{\n        server {BACKEND};\n        keepalive 32;\n    }}\n    server {{\n        listen 127.0.0.1:{port} backlog=4096;\n        location / {{\n            proxy_pass http://backend;\n            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n        }}\n    }}\n}}\n"
    )
}

fn haproxy_cfg(port: u16, workers: u32) -> String {
    format!(
        "global\n    nbthread {workers}\n    maxconn 9990\n\ndefaults\n    mode http\n    timeout connect 60s\n    timeout client 75s\n    timeout server 60s\n    timeout http-keep-alive 75s\n    option http-keep-alive\n\nfrontend fe\n    bind 127.0.0.1:{port} backlog 4096\n    default_backend be\n\nbackend be\n    http-reuse always\n    compression algo gzip\n    compression type text/html\n    server s1 {BACKEND}\n"
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

fn wrk(lab: &Lab, host: &Host, url: &str, connections: u32, seconds: u64, headers: &[&str]) -> Wrk {
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
    for h in headers {
        args.extend(["-H", h]);
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

/// `pid` and every process below it (nginx's workers under its master).
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                // The parent is the second field after the command's closing parenthesis.
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
                if ppid == Some(parent) && !all.contains(&p) {
                    all.push(p);
                }
            }
        }
        i += 1;
    }
    all
}

fn rss_kib(pid: u32) -> u64 {
    tree(pid)
        .iter()
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// User + system CPU time of `pid`'s tree, in clock ticks (utime and stime of each).
fn cpu_ticks(pid: u32) -> u64 {
    tree(pid)
        .iter()
        .map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let f: Vec<u64> = stat
                .rsplit_once(')')
                .map(|(_, r)| {
                    r.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            // After the state (not a number): ppid .. utime (index 11), stime (12).
            f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0)
        })
        .sum()
}

/// A wrk run, and the proxy's CPU time per request during it (microseconds).
fn measured(
    lab: &Lab,
    host: &Host,
    pid: u32,
    url: &str,
    c: u32,
    seconds: u64,
    headers: &[&str],
) -> (Wrk, f64) {
    let before = cpu_ticks(pid);
    let w = wrk(lab, host, url, c, seconds, headers);
    let ticks = cpu_ticks(pid).saturating_sub(before);
    // Clock ticks are 1/100 s on Linux.
    let requests = w.rps * seconds as f64;
    (w, ticks as f64 * 10_000.0 / requests.max(1.0))
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

/// The run with the median requests/s of a test's rounds (its latencies and CPU with it).
fn median(runs: &[(Wrk, f64)]) -> (Wrk, f64) {
    let mut v = runs.to_vec();
    v.sort_by(|a, b| a.0.rps.total_cmp(&b.0.rps));
    v[v.len() / 2]
}

struct Result3 {
    name: &'static str,
    small: Wrk,
    fresh: Wrk,
    big: Wrk,
    gz: Wrk,
    /// CPU microseconds per request in (a), (b), (c), (d).
    cpu_us: [f64; 4],
    /// (d)'s page as the proxy sends it: bytes and Content-Encoding.
    gz_size: String,
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
    let workers: u32 = arg("--workers")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .clamp(1, 2);
    let proxy_cpus = if workers == 1 { "0" } else { "0,1" };
    let rounds: usize = arg("--rounds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
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
    // 64 KiB of HTML that compresses as pages do (about 6:1 at level 1).
    let page: String = (0..)
        .map(|i| {
            format!(
                "<p class=\"row\">Item {i}: {} units at {}.{:02} each</p>\n",
                i * 7 % 100,
                i % 50,
                i * 13 % 100
            )
        })
        .scan(0usize, |len, line| {
            *len += line.len();
            (*len <= 64 * 1024).then_some(line)
        })
        .collect();
    std::fs::write(dir.join("page.html"), page).expect("64 KiB page");
    let mut lab = Lab::new("bl7").expect("lab");
    let host = lab.host("l7").expect("namespace");
    let conf = dir.join("backend.conf");
    std::fs::write(&conf, backend_conf(&dir)).expect("backend config");
    // More than one worker needs nginx's master process.
    let nginx = |conf: &Path, pid: &Path, master: bool| -> Vec<String> {
        vec![
            "nginx".into(),
            "-c".into(),
            conf.display().to_string(),
            "-e".into(),
            dir.join(format!("{}.err", conf.display()))
                .display()
                .to_string(),
            "-g".into(),
            format!(
                "daemon off; master_process {}; pid {};",
                if master { "on" } else { "off" },
                pid.display()
            ),
        ]
    };
    let _backend = spawn_pinned(
        &mut lab,
        &host,
        "1",
        &nginx(&conf, &dir.join("backend.pid"), false),
        &dir.join("backend.log"),
    );
    assert!(
        wait_for(Duration::from_secs(10), || listening(&lab, &host, BACKEND)).is_some(),
        "the backend did not start"
    );
    println!(
        "wrk -t1 -c{connections} -d{seconds}s, {rounds} rounds (medians); {workers} worker(s) a proxy, pinned to CPU {proxy_cpus}; backend (nginx) and wrk on CPU 1\n"
    );
    // --only NAME: one proxy alone (for profiling; no ratios then).
    let only = arg("--only");
    let chosen: Vec<(&'static str, u16)> = PROXIES
        .into_iter()
        .filter(|(n, _)| only.as_deref().is_none_or(|o| o == *n))
        .collect();
    // All of them run at once (an idle one costs nothing); the measurements interleave,
    // a round at a time, so that the machine's drift falls on all alike.
    let mut running = Vec::new();
    for &(name, port) in &chosen {
        let args: Vec<String> = match name {
            "nginx" => {
                let c = dir.join("nginx-proxy.conf");
                std::fs::write(&c, proxy_conf(port, workers)).expect("config");
                nginx(&c, &dir.join("nginx-proxy.pid"), workers > 1)
            }
            "haproxy" => {
                let c = dir.join("haproxy.cfg");
                std::fs::write(&c, haproxy_cfg(port, workers)).expect("config");
                vec![
                    "haproxy".into(),
                    "-db".into(),
                    "-f".into(),
                    c.display().to_string(),
                ]
            }
            _ => {
                let c = dir.join("fulcrum-proxy.conf");
                std::fs::write(&c, proxy_conf(port, workers)).expect("config");
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
            proxy_cpus,
            &args,
            &dir.join(format!("{name}.log")),
        );
        let addr = format!("127.0.0.1:{port}");
        assert!(
            wait_for(Duration::from_secs(10), || listening(&lab, &host, &addr)).is_some(),
            "{name} did not start; see {}",
            dir.display()
        );
        // Warm up: connections to the backend, code paths.
        wrk(&lab, &host, &format!("http://{addr}/"), connections, 2, &[]);
        running.push((name, addr, p));
    }
    // Idle clients first, before the throughput runs: afterwards the allocator holds what
    // those freed (50 zlib streams in (d) alone are some 13 MiB), and idle connections
    // would take it without the RSS growing.
    let mut idle_memory = Vec::new();
    for (name, addr, p) in &running {
        // Idle clients: RSS with them held, minus RSS before.
        std::thread::sleep(Duration::from_secs(1));
        let pid = proxy_pid(p);
        let before = rss_kib(pid);
        let hold_log = dir.join(format!("{name}-idle.log"));
        let holder = spawn_pinned(
            &mut lab,
            &host,
            "1",
            &[
                me.display().to_string(),
                "--hold-idle".into(),
                addr.to_string(),
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
        idle_memory.push((after.saturating_sub(before), idle_held));
    }
    let mut samples: Vec<[Vec<(Wrk, f64)>; 4]> =
        chosen.iter().map(|_| Default::default()).collect();
    for round in 0..rounds {
        for (test, _what) in ["keep-alive", "new connections", "1 MiB", "gzip"]
            .iter()
            .enumerate()
        {
            for k in 0..running.len() {
                // Each round starts with another proxy.
                let i = (k + round) % running.len();
                let (_, addr, p) = &running[i];
                let url = format!("http://{addr}/");
                let big = format!("{url}big.bin");
                let page = format!("{url}page.html");
                let pid = proxy_pid(p);
                let m = match test {
                    0 => measured(&lab, &host, pid, &url, connections, seconds, &[]),
                    1 => measured(
                        &lab,
                        &host,
                        pid,
                        &url,
                        connections,
                        seconds,
                        &["Connection: close"],
                    ),
                    2 => measured(&lab, &host, pid, &big, 10, seconds, &[]),
                    _ => measured(
                        &lab,
                        &host,
                        pid,
                        &page,
                        connections,
                        seconds,
                        &["Accept-Encoding: gzip"],
                    ),
                };
                samples[i][test].push(m);
            }
        }
    }
    let mut results = Vec::new();
    for (i, (name, addr, p)) in running.into_iter().enumerate() {
        let (idle_kib, idle_held) = idle_memory[i];
        let median = |t: usize| median(&samples[i][t]);
        let (small, cpu_a) = median(0);
        let (fresh, cpu_b) = median(1);
        let (big, cpu_c) = median(2);
        let (gz, cpu_d) = median(3);
        let gz_size = lab
            .exec(
                &host.netns,
                [
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-H",
                    "Accept-Encoding: gzip",
                    "-w",
                    "%{size_download} bytes, %header{content-encoding}",
                    &format!("http://{addr}/page.html"),
                ],
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        results.push(Result3 {
            name,
            small,
            fresh,
            big,
            gz,
            cpu_us: [cpu_a, cpu_b, cpu_c, cpu_d],
            gz_size,
            idle_kib,
            idle_held,
        });
        let _ = p.signal("TERM");
        p.wait_timeout(Duration::from_secs(5));
    }
    let row = |w: &Wrk, cpu: f64| {
        format!(
            "{:.0} | {:.2} | {:.2} | {cpu:.1} | {}",
            w.rps, w.p50_ms, w.p99_ms, w.errors
        )
    };
    println!("| proxy | test | requests/s | p50 ms | p99 ms | CPU µs/request | errors |");
    println!("|---|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | (a) keep-alive, small response | {} |",
            r.name,
            row(&r.small, r.cpu_us[0])
        );
        println!(
            "| {} | (b) new connection per request | {} |",
            r.name,
            row(&r.fresh, r.cpu_us[1])
        );
        println!(
            "| {} | (c) 1 MiB response, 10 connections | {} |",
            r.name,
            row(&r.big, r.cpu_us[2])
        );
        println!(
            "| {} | (d) 64 KiB page, gzip | {} |",
            r.name,
            row(&r.gz, r.cpu_us[3])
        );
    }
    println!();
    for r in &results {
        println!("(d) as {} sends it: {}", r.name, r.gz_size);
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
            "\nfulcrum / nginx requests/s: (a) {:.2}x  (b) {:.2}x  (c) {:.2}x  (d) {:.2}x",
            f.small.rps / n.small.rps,
            f.fresh.rps / n.fresh.rps,
            f.big.rps / n.big.rps,
            f.gz.rps / n.gz.rps
        );
        println!(
            "fulcrum / HAProxy requests/s: (a) {:.2}x  (b) {:.2}x  (c) {:.2}x  (d) {:.2}x",
            f.small.rps / h.small.rps,
            f.fresh.rps / h.fresh.rps,
            f.big.rps / h.big.rps,
            f.gz.rps / h.gz.rps
        );
        println!(
            "p99 fulcrum / nginx: (a) {:.2}x  (b) {:.2}x",
            f.small.p99_ms / n.small.p99_ms,
            f.fresh.p99_ms / n.fresh.p99_ms
        );
        println!(
            "p99 fulcrum / HAProxy: (a) {:.2}x  (b) {:.2}x",
            f.small.p99_ms / h.small.p99_ms,
            f.fresh.p99_ms / h.fresh.p99_ms
        );
        println!(
            "CPU per request fulcrum / nginx: (a) {:.2}x  (b) {:.2}x  (c) {:.2}x  (d) {:.2}x; fulcrum / HAProxy: (a) {:.2}x  (b) {:.2}x  (c) {:.2}x  (d) {:.2}x",
            f.cpu_us[0] / n.cpu_us[0],
            f.cpu_us[1] / n.cpu_us[1],
            f.cpu_us[2] / n.cpu_us[2],
            f.cpu_us[3] / n.cpu_us[3],
            f.cpu_us[0] / h.cpu_us[0],
            f.cpu_us[1] / h.cpu_us[1],
            f.cpu_us[2] / h.cpu_us[2],
            f.cpu_us[3] / h.cpu_us[3]
        );
        println!(
            "idle memory fulcrum / nginx: {:.2}x",
            f.idle_kib as f64 / n.idle_kib.max(1) as f64
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
