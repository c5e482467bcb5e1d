//! `fulcrum run` as an operator drives it: it starts on a valid configuration and refuses
//! an invalid one, serves status on a 0600 control socket, reloads on SIGHUP and on
//! `ctl reload`, keeps the running configuration when the new one is invalid, refuses to
//! steal the socket of a running daemon, and removes its socket when stopped.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Scratch;
use fulcrum_e2e as common;

const GOOD: &str = "virtual_server 10.1.10.88 80 {\n  protocol TCP\n  lb_algo rr\n  lb_kind NAT\n  real_server 192.168.184.129 80 {\n    weight 1\n  }\n}\n";
const GOOD2: &str = "virtual_server 10.1.10.88 80 {\n  protocol TCP\n  lb_algo wrr\n  lb_kind NAT\n  real_server 192.168.184.129 80 {\n    weight 1\n  }\n  real_server 192.168.184.130 80 {\n    weight 2\n  }\n}\n";
const BAD: &str = "vrrp_instance VI_1 {\n  priority 0\n}\n";

/// The daemon, killed on drop if a test fails before stopping it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fulcrum() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fulcrum"))
}

fn start(conf: &Path, socket: &Path) -> Daemon {
    let child = fulcrum()
        .args(["run", "--no-forwarding", "--log-level", "debug", "-f"])
        .arg(conf)
        .arg("--control")
        .arg(socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut daemon = Daemon(child);
    // Ready when it answers (a stale socket file may exist before it binds).
    while ctl_quiet(socket).is_none_or(|pid| pid != daemon.0.id()) {
        assert!(
            Instant::now() < deadline,
            "the daemon did not open its control socket"
        );
        if let Ok(Some(code)) = daemon.0.try_wait() {
            panic!("the daemon exited: {code}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon
}

/// The pid of the daemon answering on `socket`, if one does.
fn ctl_quiet(socket: &Path) -> Option<u32> {
    let out = ctl(socket, &["--json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["result"]["pid"].as_u64().map(|p| p as u32)
}

fn ctl(socket: &Path, args: &[&str]) -> Output {
    fulcrum()
        .arg("ctl")
        .arg("--control")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn status(socket: &Path) -> serde_json::Value {
    ctl_result(socket, "status")
}

/// The `result` of `ctl --json COMMAND`, which must succeed.
fn ctl_result(socket: &Path, command: &str) -> serde_json::Value {
    let out = ctl(socket, &["--json", command]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["result"].clone()
}

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

fn wait_for(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reloads_keep_the_running_configuration_when_the_new_one_is_invalid() {
    let dir = Scratch::new("reload");
    let conf = dir.0.join("keepalived.conf");
    let socket = dir.0.join("run/control.sock");
    std::fs::write(&conf, GOOD).unwrap();
    let mut daemon = start(&conf, &socket);
    let pid = daemon.0.id();

    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode");
    let s = status(&socket);
    assert_eq!(s["counts"]["virtual_servers"], 1);
    assert_eq!(s["counts"]["real_servers"], 1);
    let first_hash = s["config"]["hash"].as_str().unwrap().to_string();

    // A valid change, applied by SIGHUP.
    std::fs::write(&conf, GOOD2).unwrap();
    signal(pid, "HUP");
    wait_for(|| status(&socket)["config"]["reloads_ok"] == 1);
    let s = status(&socket);
    assert_eq!(s["counts"]["real_servers"], 2);
    let second_hash = s["config"]["hash"].as_str().unwrap().to_string();
    assert_ne!(first_hash, second_hash);

    // An invalid change is refused and the running configuration stays.
    std::fs::write(&conf, BAD).unwrap();
    signal(pid, "HUP");
    wait_for(|| status(&socket)["config"]["reloads_failed"] == 1);
    let s = status(&socket);
    assert_eq!(s["config"]["hash"].as_str().unwrap(), second_hash);
    assert_eq!(s["counts"]["real_servers"], 2);
    assert!(s["config"]["last_reload_error"]
        .as_str()
        .unwrap()
        .contains("priority 0 is out of range"));

    // The same through `fulcrum ctl reload`, which reports the refusal and exits 1.
    let out = ctl(&socket, &["reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("priority 0 is out of range 1..255"));
    std::fs::write(&conf, GOOD).unwrap();
    let out = ctl(&socket, &["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        status(&socket)["config"]["hash"].as_str().unwrap(),
        first_hash
    );

    // The human status shows the same facts.
    let human = String::from_utf8(ctl(&socket, &["status"]).stdout).unwrap();
    assert!(human.contains("reloads       2 ok, 2 refused"), "{human}");

    // A second daemon on the same socket is refused; the first keeps serving.
    let second = fulcrum()
        .args(["run", "--no-forwarding", "-f"])
        .arg(&conf)
        .arg("--control")
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&second.stderr).contains("another fulcrum daemon is listening"));
    assert_eq!(status(&socket)["pid"], pid);

    // SIGTERM stops it cleanly and removes the socket.
    signal(pid, "TERM");
    let code = daemon.0.wait().unwrap();
    assert!(code.success());
    assert!(!socket.exists());
}

#[test]
fn refuses_to_start_on_an_invalid_configuration() {
    let dir = Scratch::new("invalid");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(&conf, BAD).unwrap();
    let out = fulcrum()
        .args(["run", "--no-forwarding", "-f"])
        .arg(&conf)
        .arg("--control")
        .arg(dir.0.join("c.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("keepalived.conf:2:12: error: priority 0 is out of range 1..255"),
        "{err}"
    );
    assert!(err.contains("not starting"), "{err}");
    assert!(!dir.0.join("c.sock").exists());
}

#[test]
fn ctl_without_a_daemon_names_the_socket() {
    let out = ctl(Path::new("/nonexistent/fulcrum.sock"), &["status"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/fulcrum.sock"), "{err}");
    assert!(err.contains("fulcrum run"), "{err}");
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = Scratch::new("stale");
    let conf = dir.0.join("keepalived.conf");
    let socket = dir.0.join("control.sock");
    std::fs::write(&conf, GOOD).unwrap();
    {
        // A socket file left by a daemon that was killed: bound, then nobody listening.
        let _l = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    }
    assert!(socket.exists());
    let daemon = start(&conf, &socket);
    assert_eq!(status(&socket)["pid"], daemon.0.id());
}

fn health(socket: &Path) -> serde_json::Value {
    ctl_result(socket, "health")
}

#[test]
fn health_checks_follow_the_real_servers() {
    let dir = Scratch::new("health");
    let up = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p1 = up.local_addr().unwrap().port();
    let p2 = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let marker = dir.0.join("p2-up");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "virtual_server 127.0.0.1 80 {{
  protocol TCP
  delay_loop 0.2
  quorum 2
  sorry_server 127.0.0.1 8080
  real_server 127.0.0.1 {p1} {{
    TCP_CHECK {{
      connect_timeout 1
      retry 0
      warmup 0
    }}
  }}
  real_server 127.0.0.1 {p2} {{
    notify_up \"/bin/touch {}\"
    TCP_CHECK {{
      connect_timeout 1
      retry 0
      warmup 0
    }}
  }}
}}
",
            marker.display()
        ),
    )
    .unwrap();
    let socket = dir.0.join("control.sock");
    let _daemon = start(&conf, &socket);

    // P2 refuses: it is down, quorum 2 is lost, the sorry server stands in for P1 too.
    wait_for(|| health(&socket)[0]["real_servers"][1]["alive"] == false);
    let h = health(&socket);
    let vs = &h[0];
    assert_eq!(vs["virtual_server"], "127.0.0.1:80 TCP");
    assert_eq!(vs["has_quorum"], false);
    assert_eq!(vs["sorry_server"]["membership"]["in"], true);
    assert_eq!(vs["real_servers"][0]["alive"], true);
    assert_eq!(vs["real_servers"][0]["membership"]["in"], false);
    let checker = &vs["real_servers"][1]["checkers"][0];
    assert_eq!(checker["kind"], "TCP_CHECK");
    assert_eq!(checker["state"], "down");
    assert_eq!(
        checker["last_reason"],
        format!("TCP connection to 127.0.0.1:{p2} refused")
    );
    let text = ctl(&socket, &["health"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("LOST"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{p2}")), "{text}");

    // P2 starts: it comes back on its next check, quorum returns, the sorry server leaves,
    // and its notify_up runs.
    let _p2 = std::net::TcpListener::bind(("127.0.0.1", p2)).unwrap();
    wait_for(|| health(&socket)[0]["has_quorum"] == true);
    let h = health(&socket);
    assert_eq!(h[0]["sorry_server"]["membership"]["in"], false);
    assert_eq!(h[0]["real_servers"][0]["membership"]["weight"], 1);
    assert_eq!(h[0]["real_servers"][1]["membership"]["weight"], 1);
    wait_for(|| marker.exists());

    // P1 stops: down at its next check.
    drop(up);
    wait_for(|| health(&socket)[0]["real_servers"][0]["alive"] == false);
    assert_eq!(health(&socket)[0]["has_quorum"], false);
}

/// UDP_CHECK, DNS_CHECK and SMTP_CHECK run in the daemon: a UDP server that answers, a DNS
/// server with a record and an SMTP server that greets are up; a refused UDP port is down
/// with its reason.
#[test]
fn udp_dns_and_smtp_checks_run() {
    let dir = Scratch::new("udpsmtp");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(b"PONG", from);
        }
    });
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let smtp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let smtp_port = smtp.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        for s in smtp.incoming().flatten() {
            let mut w = s.try_clone().unwrap();
            let _ = w.write_all(b"220 test ESMTP\r\n");
            let mut line = String::new();
            let mut r = BufReader::new(s);
            if r.read_line(&mut line).is_ok() && line.starts_with("HELO ") {
                let _ = w.write_all(b"250 hello\r\n");
            }
        }
    });
    // A DNS server that answers every query with one record.
    let dns = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns_port = dns.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = dns.recv_from(&mut buf) {
            let mut a = buf[..n].to_vec();
            a[2] |= 0x80;
            a[7] = 1;
            let _ = dns.send_to(&a, from);
        }
    });
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "virtual_server 127.0.0.1 53 {{
  protocol UDP
  delay_loop 0.2
  real_server 127.0.0.1 {udp_port} {{
    UDP_CHECK {{
      connect_timeout 0.5
      retry 0
      warmup 0
      payload 50494e47
      require_reply 504f4e47
    }}
  }}
  real_server 127.0.0.1 {closed} {{
    UDP_CHECK {{
      connect_timeout 0.5
      retry 0
      warmup 0
    }}
  }}
  real_server 127.0.0.1 {dns_port} {{
    DNS_CHECK {{
      connect_timeout 0.5
      retry 0
      warmup 0
      type A
      name fulcrum.test
    }}
  }}
  real_server 127.0.0.1 {smtp_port} {{
    SMTP_CHECK {{
      connect_timeout 1
      retry 0
      warmup 0
      helo_name fulcrum.test
    }}
  }}
}}
"
        ),
    )
    .unwrap();
    let socket = dir.0.join("control.sock");
    let _daemon = start(&conf, &socket);
    wait_for(|| {
        let h = health(&socket);
        let rs = &h[0]["real_servers"];
        rs[0]["checkers"][0]["checks"].as_u64().unwrap_or(0) > 0
            && rs[1]["checkers"][0]["checks"].as_u64().unwrap_or(0) > 0
            && rs[2]["checkers"][0]["checks"].as_u64().unwrap_or(0) > 0
            && rs[3]["checkers"][0]["checks"].as_u64().unwrap_or(0) > 0
    });
    let h = health(&socket);
    let rs = &h[0]["real_servers"];
    assert_eq!(rs[0]["checkers"][0]["state"], "up", "{h:#}");
    assert_eq!(rs[1]["checkers"][0]["state"], "down", "{h:#}");
    assert!(
        rs[1]["checkers"][0]["last_reason"]
            .as_str()
            .unwrap_or("")
            .contains("refused"),
        "{h:#}"
    );
    assert_eq!(rs[2]["checkers"][0]["state"], "up", "{h:#}");
    assert_eq!(rs[3]["checkers"][0]["state"], "up", "{h:#}");
}

/// FILE_CHECK: a track_file's number decides. Weight 0: non-zero is down. A weight: the
/// real server's weight moves by number x weight (reverse subtracts).
#[test]
fn file_checks_follow_their_track_files() {
    let dir = Scratch::new("filecheck");
    let gate = dir.0.join("gate");
    let load = dir.0.join("load");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "track_file gate {{
  file {}
  init_file 0
}}
track_file load {{
  file {}
  weight 2
}}
virtual_server 127.0.0.1 80 {{
  protocol TCP
  real_server 127.0.0.1 8001 {{
    weight 10
    FILE_CHECK {{
      track_file gate
    }}
  }}
  real_server 127.0.0.1 8002 {{
    weight 10
    FILE_CHECK {{
      track_file load
      weight 3 reverse
    }}
  }}
}}
",
            gate.display(),
            load.display()
        ),
    )
    .unwrap();
    std::fs::write(&load, "1\n").unwrap();
    let socket = dir.0.join("control.sock");
    let _daemon = start(&conf, &socket);
    assert_eq!(
        std::fs::read_to_string(&gate).unwrap().trim(),
        "0",
        "init_file"
    );
    let weight = |i: usize| health(&socket)[0]["real_servers"][i]["membership"]["weight"].clone();
    // load 1 x weight 3 reversed: 10 - 3.
    wait_for(|| weight(1) == 7);
    assert_eq!(health(&socket)[0]["real_servers"][0]["alive"], true);
    std::fs::write(&gate, "1\n").unwrap();
    wait_for(|| health(&socket)[0]["real_servers"][0]["alive"] == false);
    let reason = health(&socket)[0]["real_servers"][0]["checkers"][0]["last_reason"].clone();
    assert!(
        reason.as_str().unwrap_or("").contains("holds 1"),
        "{reason}"
    );
    std::fs::write(&gate, "0\n").unwrap();
    wait_for(|| health(&socket)[0]["real_servers"][0]["alive"] == true);
    std::fs::write(&load, "2\n").unwrap();
    wait_for(|| weight(1) == 4);
}

/// omega: when the daemon stops, a service's quorum_down and its live real servers'
/// notify_down run, as keepalived does; not when it reloads.
#[test]
fn omega_runs_the_down_scripts_at_shutdown() {
    let dir = Scratch::new("omega");
    let ok = dir.0.join("ok");
    std::fs::write(&ok, "0\n").unwrap();
    let (quorum_down, rs_down) = (dir.0.join("quorum-down"), dir.0.join("rs-down"));
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "track_file ok {{
  file {}
}}
virtual_server 127.0.0.1 80 {{
  protocol TCP
  omega
  quorum_down \"/bin/touch {}\"
  real_server 127.0.0.1 8001 {{
    notify_down \"/bin/touch {}\"
    FILE_CHECK {{
      track_file ok
    }}
  }}
}}
",
            ok.display(),
            quorum_down.display(),
            rs_down.display()
        ),
    )
    .unwrap();
    let socket = dir.0.join("control.sock");
    let daemon = start(&conf, &socket);
    wait_for(|| health(&socket)[0]["real_servers"][0]["alive"] == true);
    // A reload that restarts the checks is no shutdown.
    std::fs::write(
        &conf,
        std::fs::read_to_string(&conf)
            .unwrap()
            .replace("protocol TCP", "protocol TCP\n  delay_loop 5"),
    )
    .unwrap();
    assert!(ctl(&socket, &["reload"]).status.success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !quorum_down.exists() && !rs_down.exists(),
        "omega ran on a reload"
    );
    signal(daemon.0.id(), "TERM");
    wait_for(|| quorum_down.exists() && rs_down.exists());
}

/// `--log-format json`: every line the daemon logs is a JSON object with its level and
/// message.
#[test]
fn json_logs_are_one_object_per_line() {
    let dir = Scratch::new("jsonlog");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(&conf, GOOD).unwrap();
    let socket = dir.0.join("control.sock");
    let log = dir.0.join("log");
    let child = fulcrum()
        .args(["run", "--no-forwarding", "--log-format", "json", "-f"])
        .arg(&conf)
        .arg("--control")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let daemon = Daemon(child);
    wait_for(|| ctl_quiet(&socket).is_some());
    signal(daemon.0.id(), "TERM");
    wait_for(|| !socket.exists());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{l}"
        );
    }
    assert!(text.contains("fulcrum started"), "{text}");
}

/// Whether the test runs as root; without, it prints a SKIP line, or fails under CI.
fn as_root(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !root {
        if std::env::var_os("CI").is_some() {
            panic!("CI runs as root");
        }
        eprintln!("SKIP: {test} needs root");
    }
    root
}

/// A capability set (`CapEff:`, `CapBnd:`...) of a /proc/PID/status text.
fn capability_set(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no {key} in {status}"))
}

/// The daemon drops the capabilities it does not need, from its own sets and from the
/// bounding set its scripts inherit (as root: CAP_SYS_MODULE goes, CAP_NET_ADMIN stays).
#[test]
fn the_daemon_keeps_only_the_capabilities_it_needs() {
    if !as_root("the_daemon_keeps_only_the_capabilities_it_needs") {
        return;
    }
    let dir = Scratch::new("caps");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(&conf, GOOD).unwrap();
    let socket = dir.0.join("control.sock");
    let daemon = start(&conf, &socket);
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.0.id())).unwrap();
    let caps = |key: &str| capability_set(&status, key);
    const SYS_MODULE: u32 = 16;
    const NET_ADMIN: u32 = 12;
    for key in ["CapEff:", "CapBnd:"] {
        assert_eq!(caps(key) & (1 << SYS_MODULE), 0, "{key} {status}");
        assert_ne!(caps(key) & (1 << NET_ADMIN), 0, "{key} {status}");
    }
}

/// Under the unit's bounding set (every capability the daemon keeps, CAP_SETPCAP not among
/// them), the start drops nothing it cannot and says nothing about it; what it does not
/// keep stays out.
#[test]
fn under_the_units_bounding_set_nothing_fails_to_drop() {
    if !as_root("under_the_units_bounding_set_nothing_fails_to_drop") {
        return;
    }
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/fulcrum.service"),
    )
    .unwrap();
    let bounding = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit bounds the capabilities");
    let keep: Vec<String> = bounding
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let dir = Scratch::new("capsbnd");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(&conf, GOOD).unwrap();
    let socket = dir.0.join("control.sock");
    let log = dir.0.join("daemon.log");
    let child = Command::new("setpriv")
        .arg(format!("--bounding-set=-all,{}", keep.join(",")))
        .arg(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["run", "--no-forwarding", "-f"])
        .arg(&conf)
        .arg("--control")
        .arg(&socket)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let daemon = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ctl_quiet(&socket).is_none() {
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.0.id())).unwrap();
    let caps = |key: &str| capability_set(&status, key);
    const SETPCAP: u32 = 8;
    const NET_ADMIN: u32 = 12;
    const SYS_MODULE: u32 = 16;
    assert_eq!(caps("CapBnd:") & (1 << SETPCAP), 0, "{status}");
    assert_eq!(caps("CapEff:") & (1 << SYS_MODULE), 0, "{status}");
    assert_ne!(caps("CapEff:") & (1 << NET_ADMIN), 0, "{status}");
    drop(daemon);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("cannot drop unneeded capabilities"), "{log}");
}

/// `--version` and `-V` say what was built: the version, the git revision, and the XDP
/// program's digest with the clang that built it.
#[test]
fn the_version_names_the_revision_and_the_program() {
    for flag in ["--version", "-V"] {
        let out = fulcrum().arg(flag).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.first().copied(),
            Some(concat!("fulcrum ", env!("CARGO_PKG_VERSION"))),
            "{text}"
        );
        assert!(
            lines.get(1).is_some_and(|l| l.starts_with("revision ")),
            "{text}"
        );
        let program = lines.get(2).copied().unwrap_or("");
        let digest = program
            .strip_prefix("XDP program ")
            .and_then(|r| r.split(',').next())
            .unwrap_or("");
        assert!(
            digest.len() == 16 && digest.chars().all(|c| c.is_ascii_hexdigit()),
            "{text}"
        );
        assert!(program.contains("clang"), "{text}");
    }
}

/// systemd's notify protocol as the unit uses it: READY=1 once up, WATCHDOG=1 at half of
/// WATCHDOG_USEC for as long as it runs, STOPPING=1 on SIGTERM.
#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    let dir = Scratch::new("notify");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(&conf, GOOD).unwrap();
    let notify = dir.0.join("notify.sock");
    let server = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let child = fulcrum()
        .args(["run", "--no-forwarding", "-f"])
        .arg(&conf)
        .arg("--control")
        .arg(dir.0.join("control.sock"))
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "200000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon(child);
    let mut heard = Vec::new();
    let mut buf = [0u8; 256];
    while heard.iter().filter(|m| *m == "WATCHDOG=1").count() < 3 {
        let n = server.recv(&mut buf).expect("systemd heard nothing more");
        heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(heard[0], "READY=1", "{heard:?}");
    Command::new("kill")
        .arg(daemon.0.id().to_string())
        .status()
        .unwrap();
    loop {
        let n = server.recv(&mut buf).expect("no STOPPING=1");
        if &buf[..n] == b"STOPPING=1" {
            break;
        }
    }
}

/// The pass-through subcommands keep their own -v/-V/-h: `fulcrum nginx -V` is nginx's
/// version and configure line, `fulcrum keepalived -V` keepalived's option (so it must
/// not print fulcrum's version), `fulcrum keepalived --signum` keepalived's numbers.
#[test]
fn nginx_and_keepalived_take_their_own_version_flags() {
    let out = fulcrum().args(["nginx", "-V"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert!(
        err.starts_with("nginx version: fulcrum/")
            && err.contains("\nconfigure arguments: --prefix=/usr/share/nginx "),
        "{err}"
    );
    let out = fulcrum()
        .args(["keepalived", "--signum=JSON"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "36\n");
    let out = fulcrum().args(["keepalived", "-v"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("Keepalived v2.2.7 (compatible: fulcrum ")
    );
    let out = fulcrum().args(["nginx", "-h"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage: nginx [-?hvVtTq]"));
}
