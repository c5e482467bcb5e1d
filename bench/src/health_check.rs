//! The cost of health checking, fulcrum vs HAProxy, side by side in one run: N real servers
//! with TCP_CHECK and M with HTTP_GET, all checked every second, and the CPU and memory each
//! checker process spends on it; then the time each takes to notice a real server that
//! stops, against its configured bound.
//!
//! Everything runs in one network namespace of its own: the real servers are the lab
//! agent listening on 0.0.0.0:80 there, reached at distinct loopback addresses
//! (127.0.x.y), one per real server, so every check is its own connection to its own
//! address. Both checkers are given the same rule: check every second, 5 s connect timeout,
//! down after two failures in a row (keepalived's retry 1, HAProxy's fall 2), up after one
//! success (rise 1). HAProxy 2.6 (Debian) runs with one thread, as fulcrum's checks run on
//! its runtime's workers (both are measured as whole processes).
//!
//! Needs root and haproxy. Usage:
//!   health-check [--tcp N] [--http M] [--seconds S] [--fulcrum PATH]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fulcrum_lab::{wait_for, Agent, Host, Lab, Process};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The loopback address of real server `i` (127.0.1.1 onwards, skipping .0 and .255).
fn rs_addr(i: usize) -> String {
    format!(
        "127.{}.{}.{}",
        1 + i / (254 * 250),
        1 + (i / 254) % 250,
        1 + i % 254
    )
}

/// The real server that the detection phase stops: its own server on its own address and
/// port (the other real servers' listener holds port 80 on every address).
const VICTIM: &str = "127.200.0.1:81";

fn keepalived_conf(tcp: usize, http: usize) -> String {
    let mut s = String::new();
    let checker = |kind: &str| {
        match kind {
        "tcp" => "        TCP_CHECK {\n            connect_timeout 5\n            retry 1\n            delay_before_retry 1\n        }\n".to_string(),
        _ => "        HTTP_GET {\n            url {\n                path /\n                status_code 200\n            }\n            connect_timeout 5\n            retry 1\n            delay_before_retry 1\n        }\n".to_string(),
    }
    };
    for (vip, kind, range) in [
        ("10.99.0.1", "tcp", 0..tcp),
        ("10.99.0.2", "http", tcp..tcp + http),
    ] {
        if range.is_empty() {
            continue;
        }
        s.push_str(&format!(
            "virtual_server {vip} 80 {{\n    protocol TCP\n    delay_loop 1\n    lb_algo rr\n    lb_kind NAT\n"
        ));
        for i in range {
            s.push_str(&format!(
                "    real_server {} 80 {{\n{}    }}\n",
                rs_addr(i),
                checker(kind)
            ));
        }
        if kind == "tcp" {
            s.push_str(&format!(
                "    real_server {} {{\n{}    }}\n",
                VICTIM.replace(':', " "),
                checker(kind)
            ));
        }
        s.push_str("}\n");
    }
    s
}

fn haproxy_cfg(tcp: usize, http: usize, stats: &Path) -> String {
    let mut s = format!(
        "global\n    nbthread 1\n    maxconn 4000\n    stats socket {} mode 600 level admin\n\
         defaults\n    timeout connect 5s\n    timeout client 5s\n    timeout server 5s\n    timeout check 5s\n\
         backend tcp_pool\n    mode tcp\n    default-server check inter 1s fall 2 rise 1\n",
        stats.display()
    );
    for i in 0..tcp {
        s.push_str(&format!("    server t{i} {}:80\n", rs_addr(i)));
    }
    s.push_str(&format!("    server victim {VICTIM}\n"));
    if http > 0 {
        s.push_str(
            "backend http_pool\n    mode http\n    option httpchk GET /\n    http-check expect status 200\n    default-server check inter 1s fall 2 rise 1\n",
        );
        for i in tcp..tcp + http {
            s.push_str(&format!("    server h{i} {}:80\n", rs_addr(i)));
        }
    }
    s
}

/// CPU seconds (user + system, and user alone) and current and peak RSS (KiB) of one
/// process.
fn usage(pid: u32) -> Option<(f64, f64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some((
        (utime + stime) / 100.0,
        utime / 100.0,
        kib("VmRSS:"),
        kib("VmHWM:"),
    ))
}

/// TCP counters of the namespace: connections opened (ActiveOpens: only the checker opens
/// connections there) and listen-queue overflows at the real servers (ListenOverflows), to
/// see the work each checker really did. (Server-side accepts would undercount HAProxy,
/// which resets a TCP check before its final ACK.)
fn tcp_counters(lab: &Lab, host: &Host) -> (u64, u64) {
    let read = |file: &str, key: &str| -> u64 {
        let Ok(out) = lab.exec(&host.netns, ["cat", file]) else {
            return 0;
        };
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            if let [names, values] = pair {
                let names: Vec<&str> = names.split_whitespace().collect();
                let values: Vec<&str> = values.split_whitespace().collect();
                if let Some(i) = names.iter().position(|n| *n == key) {
                    return values.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
                }
            }
        }
        0
    };
    (
        read("/proc/net/snmp", "ActiveOpens"),
        read("/proc/net/netstat", "ListenOverflows"),
    )
}

struct Measured {
    cpu_per_s: f64,
    user_per_s: f64,
    rss_kib: u64,
    peak_kib: u64,
}

fn measure(pid: u32, warmup: Duration, window: Duration) -> Option<Measured> {
    std::thread::sleep(warmup);
    let (c0, u0, _, _) = usage(pid)?;
    let t0 = Instant::now();
    std::thread::sleep(window);
    let (c1, u1, rss, peak) = usage(pid)?;
    let secs = t0.elapsed().as_secs_f64();
    Some(Measured {
        cpu_per_s: (c1 - c0) / secs,
        user_per_s: (u1 - u0) / secs,
        rss_kib: rss,
        peak_kib: peak,
    })
}

/// `ctl health --json` of the fulcrum in `host`.
fn fulcrum_health(
    lab: &Lab,
    host: &Host,
    fulcrum: &Path,
    socket: &Path,
) -> Option<serde_json::Value> {
    let out = lab
        .exec(
            &host.netns,
            [
                fulcrum.as_os_str(),
                "ctl".as_ref(),
                "--json".as_ref(),
                "--control".as_ref(),
                socket.as_os_str(),
                "health".as_ref(),
            ],
        )
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v["result"].clone())
}

fn fulcrum_checks(v: &serde_json::Value) -> u64 {
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|vs| vs["real_servers"].as_array().into_iter().flatten())
        .flat_map(|rs| rs["checkers"].as_array().into_iter().flatten())
        .map(|c| c["checks"].as_u64().unwrap_or(0))
        .sum()
}

fn fulcrum_victim_alive(v: &serde_json::Value) -> Option<bool> {
    v.as_array()?
        .iter()
        .flat_map(|vs| vs["real_servers"].as_array().into_iter().flatten())
        .find(|rs| rs["address"] == VICTIM)
        .and_then(|rs| rs["alive"].as_bool())
}

/// HAProxy's view of the victim through its stats socket ("UP", "DOWN", ...).
fn haproxy_victim_status(socket: &Path) -> Option<String> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.write_all(b"show stat\n").ok()?;
    let reader = BufReader::new(s);
    let mut status_col = None;
    for line in reader.lines().map_while(Result::ok) {
        let cols: Vec<&str> = line.split(',').collect();
        if line.starts_with("# ") {
            status_col = cols.iter().position(|c| *c == "status");
            continue;
        }
        if cols.get(1) == Some(&"victim") {
            return status_col.and_then(|i| cols.get(i)).map(|s| s.to_string());
        }
    }
    None
}

/// Starts a responder in the namespace and waits until it listens.
fn start_responder(lab: &mut Lab, host: &Host, me: &Path, listen: &str) -> Process {
    let p = lab
        .spawn(
            host,
            &[me.as_os_str(), "--responder".as_ref(), listen.as_ref()],
            None,
        )
        .expect("responder");
    let (ip, port) = listen.rsplit_once(':').expect("ADDR:PORT");
    let ip = if ip == "0.0.0.0" { "127.0.0.1" } else { ip };
    let connect = format!("exec 3<>/dev/tcp/{ip}/{port}");
    let probe = ["bash", "-c", connect.as_str()];
    let ready = wait_for(Duration::from_secs(10), || {
        lab.exec(&host.netns, probe).is_ok()
    });
    assert!(ready.is_some(), "the responder on {listen} did not start");
    p
}

struct Run {
    measured: Option<Measured>,
    /// Connections the checker opened per second during the window.
    accepted_per_s: f64,
    overflows: u64,
    detection: Option<Duration>,
    checks_per_s: Option<f64>,
    /// fulcrum: the median time `health` takes on the control socket, request to the
    /// whole answer read.
    ctl_health: Option<Duration>,
}

/// The median of ten `health` requests on the control socket, from the request written to
/// the last byte of the answer read (the socket is a path: no namespace to enter).
fn ctl_health_time(socket: &Path) -> Option<Duration> {
    let mut times = Vec::new();
    for _ in 0..10 {
        let mut s = UnixStream::connect(socket).ok()?;
        let t0 = Instant::now();
        s.write_all(b"{\"version\":1,\"command\":\"health\"}\n")
            .ok()?;
        let mut answer = String::new();
        BufReader::new(&s).read_line(&mut answer).ok()?;
        times.push(t0.elapsed());
        if !answer.contains("\"ok\":true") {
            return None;
        }
    }
    times.sort();
    Some(times[times.len() / 2])
}

fn run(which: &str, tcp: usize, http: usize, window: Duration, fulcrum: &Path) -> Run {
    let dir = std::env::temp_dir().join(format!("fulcrum-bench-hc-{}-{which}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let mut lab = Lab::new("bhc")
        .expect("lab")
        .with_agent(Agent::new(fulcrum, &["lab-agent"]));
    let host = lab.host("checker").expect("namespace");
    let me = std::env::current_exe().expect("own path");
    let _servers = start_responder(&mut lab, &host, &me, "0.0.0.0:80");
    let victim = start_responder(&mut lab, &host, &me, VICTIM);
    let socket = dir.join("control.sock");
    let stats = dir.join("haproxy.sock");
    let process = if which == "fulcrum" {
        let conf = dir.join("keepalived.conf");
        std::fs::write(&conf, keepalived_conf(tcp, http)).expect("config");
        lab.spawn(
            &host,
            &[
                fulcrum.as_os_str(),
                "run".as_ref(),
                // Health checking alone is measured: no XDP data plane.
                "--no-forwarding".as_ref(),
                "--log-level".as_ref(),
                "warn".as_ref(),
                "-f".as_ref(),
                conf.as_os_str(),
                "--control".as_ref(),
                socket.as_os_str(),
            ],
            Some(&dir.join("fulcrum.log")),
        )
        .expect("fulcrum")
    } else {
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, haproxy_cfg(tcp, http, &stats)).expect("config");
        lab.spawn(
            &host,
            &[
                "haproxy".as_ref(),
                "-db".as_ref(),
                "-f".as_ref(),
                cfg.as_os_str(),
            ],
            Some(&dir.join("haproxy.log")),
        )
        .expect("haproxy")
    };
    // Warm up past the first delay_loop (the warmup spread) and the start.
    let checks_before = (which == "fulcrum")
        .then(|| {
            std::thread::sleep(Duration::from_secs(3));
            fulcrum_health(&lab, &host, fulcrum, &socket)
                .map(|v| (Instant::now(), fulcrum_checks(&v)))
        })
        .flatten();
    std::thread::sleep(Duration::from_secs(3));
    let (opens0, overflows0) = tcp_counters(&lab, &host);
    let measured = measure(process.pid, Duration::ZERO, window);
    let (opens1, overflows1) = tcp_counters(&lab, &host);
    let accepted_per_s = (opens1 - opens0) as f64 / window.as_secs_f64();
    let overflows = overflows1 - overflows0;
    let checks_per_s = checks_before.and_then(|(t0, c0)| {
        let v = fulcrum_health(&lab, &host, fulcrum, &socket)?;
        Some((fulcrum_checks(&v) - c0) as f64 / t0.elapsed().as_secs_f64())
    });
    let ctl_health = (which == "fulcrum")
        .then(|| ctl_health_time(&socket))
        .flatten();
    // Detection: stop the victim's server and wait until the checker says it is down.
    let up = |lab: &Lab| -> Option<bool> {
        if which == "fulcrum" {
            fulcrum_health(lab, &host, fulcrum, &socket).and_then(|v| fulcrum_victim_alive(&v))
        } else {
            haproxy_victim_status(&stats).map(|s| s.starts_with("UP"))
        }
    };
    let detection = if up(&lab) == Some(true) {
        victim.kill();
        let t0 = Instant::now();
        wait_for(Duration::from_secs(30), || up(&lab) == Some(false)).map(|_| t0.elapsed())
    } else {
        None
    };
    drop(lab);
    if measured.is_none() {
        let log = std::fs::read_to_string(dir.join(format!("{which}.log"))).unwrap_or_default();
        eprintln!("{which} did not run:\n{log}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        measured,
        accepted_per_s,
        overflows,
        detection,
        checks_per_s,
        ctl_health,
    }
}

/// The real servers: one listener (backlog 4096) on every loopback address of the
/// namespace, answering each HTTP request with 200 and closing, and closing a connection
/// that sends nothing when its peer does. Run as `health-check --responder ADDR`, inside
/// the namespace. Its own CPU is not measured.
fn responder(listen: &str) -> ! {
    let addr: std::net::SocketAddr = listen.parse().expect("responder address");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .expect("socket");
        socket.set_reuse_address(true).expect("SO_REUSEADDR");
        socket.bind(&addr.into()).expect("bind");
        socket.listen(4096).expect("listen");
        socket.set_nonblocking(true).expect("nonblocking");
        let listener = tokio::net::TcpListener::from_std(socket.into()).expect("listener");
        println!("ready");
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 2048];
                let mut got = 0;
                loop {
                    match s.read(&mut buf[got..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                    if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") || got == buf.len() {
                        break;
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                    .await;
            });
        }
    })
}

fn main() {
    if let Some(listen) = arg("--responder") {
        responder(&listen);
    }
    if !fulcrum_lab::is_root() {
        eprintln!("health-check needs root (it builds a network namespace)");
        std::process::exit(2);
    }
    let tcp: usize = arg("--tcp").and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let http: usize = arg("--http").and_then(|v| v.parse().ok()).unwrap_or(1_000);
    let seconds: u64 = arg("--seconds").and_then(|v| v.parse().ok()).unwrap_or(20);
    let fulcrum = arg("--fulcrum").map(PathBuf::from).unwrap_or_else(|| {
        std::env::current_exe()
            .unwrap_or_default()
            .with_file_name("fulcrum")
    });
    if Command::new("haproxy").arg("-v").output().is_err() {
        eprintln!("health-check needs haproxy (apt-get install haproxy)");
        std::process::exit(2);
    }
    let window = Duration::from_secs(seconds);
    println!(
        "{tcp} TCP + {http} HTTP real servers (+1 TCP to stop), every 1 s, CPU over {seconds} s\n"
    );
    println!("| checker | CPU (cores) | of which user | RSS | peak RSS | checks/s (own count) | connections opened/s | listen overflows | CPU ms per 1,000 checks | detection (bound) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut cpu = Vec::new();
    let mut ctl = None;
    for which in ["haproxy", "fulcrum"] {
        let r = run(which, tcp, http, window, &fulcrum);
        let detection = r
            .detection
            .map(|d| format!("{:.2} s", d.as_secs_f64()))
            .unwrap_or_else(|| "-".into());
        let bound = if which == "fulcrum" {
            // delay_loop + timeout + retry x (delay_before_retry + timeout), refused at once
            "1 s + 1 x 1 s, refused at once"
        } else {
            "inter 1 s x fall 2"
        };
        match r.measured {
            Some(m) => {
                println!(
                    "| {which} | {:.3} | {:.3} | {:.1} MiB | {:.1} MiB | {} | {:.0} | {} | {:.1} | {detection} ({bound}) |",
                    m.cpu_per_s,
                    m.user_per_s,
                    m.rss_kib as f64 / 1024.0,
                    m.peak_kib as f64 / 1024.0,
                    r.checks_per_s
                        .map(|c| format!("{c:.0}"))
                        .unwrap_or_else(|| "-".into()),
                    r.accepted_per_s,
                    r.overflows,
                    m.cpu_per_s * 1e6 / r.accepted_per_s.max(1.0),
                );
                cpu.push(m.cpu_per_s * 1e6 / r.accepted_per_s.max(1.0));
                if let Some(t) = r.ctl_health {
                    ctl = Some(t);
                }
            }
            None => println!("| {which} | failed | | | | | | | | |"),
        }
    }
    if let [h, f] = cpu[..] {
        println!("\nCPU per check, fulcrum / haproxy: {:.2}", f / h);
    }
    if let Some(t) = ctl {
        println!(
            "fulcrum `ctl health` of {} real servers: {:.1} ms (median of 10, on the socket)",
            tcp + http + 1,
            t.as_secs_f64() * 1e3
        );
    }
}
