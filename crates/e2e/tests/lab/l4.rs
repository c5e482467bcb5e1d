//! Layer 4 in the lab, end to end with real TCP: reference deployment 1 (LVS-NAT) and 2
//! (LVS-DR) with fulcrum's XDP data plane on the director, real servers that answer with
//! their name, and a client making new connections one after another. The distributions
//! must be exact, and `fulcrum ipvsadm` must agree with the traffic. Root only; bounded in
//! time; everything is removed afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fulcrum_lab::reference::{self, Deployment, Reference};
use fulcrum_lab::{require_root, wait_for, Agent, Bpffs, Process};

use fulcrum_e2e::{HoldPace, Scratch};

const CONNECTIONS: u32 = 299;

fn agent() -> Agent {
    Agent::new(fulcrum_e2e::bin(), &["lab-agent"])
}

/// keepalived.conf for one virtual service over the deployment's real servers.
fn config(vip: &str, kind: &str, algo: &str, weights: &[u32], rips: &[String]) -> String {
    let mut c = format!(
        "virtual_server {vip} 80 {{\n    lb_algo {algo}\n    lb_kind {kind}\n    protocol TCP\n"
    );
    for (rip, w) in rips.iter().zip(weights) {
        c += &format!("    real_server {rip} 80 {{\n        weight {w}\n    }}\n");
    }
    c + "}\n"
}

fn start(r: &mut Reference, conf: &str, dir: &Scratch, id: &str) -> (Process, PathBuf) {
    let path = dir.0.join(format!("{id}.conf"));
    std::fs::write(&path, conf).unwrap();
    let director = r.directors[0].clone();
    let fulcrum_e2e::Daemon {
        process: p,
        sock,
        log,
    } = fulcrum_e2e::spawn_fulcrum(&mut r.lab, &director, &path, &dir.0, id, &[]);
    let up = wait_for(Duration::from_secs(20), || {
        ipvsadm(&sock, &["-Ln"]).contains("  -> ")
    });
    assert!(
        up.is_some(),
        "the daemon did not install its rules:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    (p, sock)
}

fn ipvsadm(sock: &Path, args: &[&str]) -> String {
    ipvsadm_with(sock, args, None).1
}

/// Runs `fulcrum ipvsadm`, with `stdin` as its input: (success, stdout, stderr).
fn ipvsadm_with(sock: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(fulcrum_e2e::bin())
        .arg("ipvsadm")
        .arg("--control")
        .arg(sock)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The daemon's `ipvs` answer, for failure messages.
fn raw_ipvs(sock: &Path) -> String {
    use std::io::{BufRead, BufReader, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else {
        return "no control socket".into();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"{\"version\":1,\"command\":\"ipvs\"}\n");
    let mut line = String::new();
    let _ = BufReader::new(&s).read_line(&mut line);
    line
}

/// New connections from the client, one after another: who answered, how often.
fn distribution(r: &Reference, vip: &str) -> BTreeMap<String, u32> {
    distribution_of(r, vip, CONNECTIONS)
}

fn distribution_of(r: &Reference, vip: &str, count: u32) -> BTreeMap<String, u32> {
    let answers = r
        .lab
        .probe(&r.client, &format!("{vip}:80"), count, false)
        .unwrap();
    let mut d = BTreeMap::new();
    for a in answers {
        *d.entry(a).or_insert(0) += 1;
    }
    d
}

fn serve_names(r: &mut Reference) {
    for (i, rs) in r.real_servers.clone().iter().enumerate() {
        r.lab
            .serve(rs, &format!("rs{}", i + 1), "0.0.0.0:80", false)
            .unwrap();
    }
}

/// The ipvsadm -Ln --stats row of a real server: Conns InPkts OutPkts InBytes OutBytes.
fn stats_of(listing: &str, rip: &str) -> Vec<u64> {
    let line = listing
        .lines()
        .find(|l| l.starts_with(&format!("  -> {rip}:")))
        .unwrap_or_else(|| panic!("no {rip} in\n{listing}"));
    line.split_whitespace()
        .skip(2)
        .map(|n| n.parse().unwrap())
        .collect()
}

fn run_deployment(deployment: Deployment, kind: &str, label: &str) {
    let mut r = reference::build(deployment, label, Some(agent())).unwrap();
    let dir = Scratch::new(label);
    serve_names(&mut r);
    let vip = r.vips[0].to_string();
    let rips: Vec<String> = r.rips.iter().map(|a| a.to_string()).collect();

    for (algo, weights, want) in [("rr", [1, 1], [150, 150]), ("wrr", [1, 2], [100, 200])] {
        let mut conf = config(&vip, kind, algo, &weights, &rips);
        if kind == "DR" {
            // Fulcrum's global_defs keyword: attach to these interfaces only.
            conf = format!("global_defs {{\n    fulcrum_xdp_interfaces eth0\n}}\n{conf}");
        }
        let (daemon, sock) = start(&mut r, &conf, &dir, algo);
        // One connection first, so a broken path fails in seconds with what the data
        // plane counted, not after every connection timed out.
        let first = r
            .lab
            .probe(&r.client, &format!("{vip}:80"), 1, false)
            .unwrap();
        if !first.first().is_some_and(|a| a.starts_with("rs")) {
            let neigh = r.lab.ip(&r.directors[0], &["neigh", "show"]).unwrap();
            panic!(
                "{kind} {algo}: first connection: {first:?}\nneighbours: {}\ndata plane: {}\nlog:\n{}",
                String::from_utf8_lossy(&neigh.stdout),
                raw_ipvs(&sock),
                std::fs::read_to_string(dir.0.join(format!("{algo}.log"))).unwrap_or_default()
            );
        }
        let got = distribution(&r, &vip);
        let mut expected: BTreeMap<String, u32> =
            [("rs1".to_string(), want[0]), ("rs2".to_string(), want[1])].into();
        *expected.get_mut(&first[0]).unwrap() -= 1;
        assert_eq!(got, expected, "{kind} {algo} weights {weights:?}");

        let listing = ipvsadm(&sock, &["-Ln"]);
        assert!(
            listing.contains(&format!("TCP  {vip}:80 {algo}\n")),
            "{listing}"
        );
        let forward = if kind == "NAT" { "Masq" } else { "Route" };
        for (rip, w) in rips.iter().zip(weights) {
            let row = format!("  -> {:<28} {forward:<7} {w:<6} ", format!("{rip}:80"));
            assert!(listing.contains(&row), "no row {row:?} in\n{listing}");
        }
        let stats = ipvsadm(&sock, &["-Ln", "--stats"]);
        for (rip, n) in rips.iter().zip(want) {
            let s = stats_of(&stats, rip);
            assert_eq!(s[0], u64::from(n), "connections of {rip}:\n{stats}");
            if kind == "NAT" {
                assert!(
                    s[2] >= u64::from(n),
                    "NAT replies cross the director:\n{stats}"
                );
            } else {
                assert_eq!(s[2], 0, "DR replies must not cross the director:\n{stats}");
            }
        }
        let ctl = fulcrum_e2e::ctl(&sock, &["services"]);
        let ctl = String::from_utf8_lossy(&ctl.stdout);
        assert!(ctl.contains("data plane on eth0 (native)"), "{ctl}");
        if kind == "DR" {
            let raw = raw_ipvs(&sock);
            let answer: serde_json::Value = serde_json::from_str(&raw).unwrap();
            assert_eq!(
                answer["result"]["interfaces"],
                serde_json::json!([{"name": "eth0", "mode": "native"}]),
                "{raw}"
            );
        }
        // IPVS's 2-second estimator: the service's connection rate shows in --rate.
        let rated = wait_for(Duration::from_secs(6), || {
            ipvsadm(&sock, &["-Ln", "--rate"])
                .lines()
                .find(|l| l.starts_with("TCP "))
                .and_then(|l| l.split_whitespace().nth(2).map(|c| c != "0"))
                .unwrap_or(false)
        });
        assert!(rated.is_some(), "{}", ipvsadm(&sock, &["-Ln", "--rate"]));
        let conns = ipvsadm(&sock, &["-Lnc"]);
        assert!(
            conns.lines().count() >= 2 + CONNECTIONS as usize,
            "every connection is tracked:\n{conns}"
        );
        daemon.signal("TERM").unwrap();
        assert!(daemon.wait_timeout(Duration::from_secs(10)).is_some());
    }
}

#[test]
fn nat_splits_exactly_by_weight_and_ipvsadm_agrees() {
    if !require_root("nat_splits_exactly_by_weight_and_ipvsadm_agrees") {
        return;
    }
    run_deployment(Deployment::LvsNat, "NAT", "l4nat");
}

#[test]
fn dr_splits_exactly_and_replies_bypass_the_director() {
    if !require_root("dr_splits_exactly_and_replies_bypass_the_director") {
        return;
    }
    run_deployment(Deployment::LvsDr, "DR", "l4dr");
}

/// One long connection from the client (a line every 50 ms for `ms`, each echoed), open
/// when this returns; its log says `connected NAME` and, at the end, `held N`.
fn hold(r: &mut Reference, dir: &Scratch, target: &str, ms: u32) -> (Process, PathBuf) {
    let log = dir.0.join("hold.log");
    let client = r.client.clone();
    let pace = HoldPace {
        every_ms: 50,
        for_ms: ms,
        timeout_ms: 10_000,
    };
    let p = fulcrum_e2e::spawn_hold(&mut r.lab, &client, target, pace, 1, &log);
    let connected = wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("connected")
    });
    assert!(
        connected.is_some(),
        "the long connection to {target} did not open"
    );
    (p, log)
}

/// Reference deployment 1 with named real servers and fulcrum on the director running
/// `algo` over both with weight 1.
struct NatLab {
    r: Reference,
    dir: Scratch,
    vip: String,
    rips: Vec<String>,
    daemon: Process,
    sock: PathBuf,
}

fn nat_lab(label: &str, algo: &str) -> NatLab {
    let mut r = reference::build(Deployment::LvsNat, label, Some(agent())).unwrap();
    let dir = Scratch::new(label);
    serve_names(&mut r);
    let vip = r.vips[0].to_string();
    let rips: Vec<String> = r.rips.iter().map(|a| a.to_string()).collect();
    let (daemon, sock) = start(
        &mut r,
        &config(&vip, "NAT", algo, &[1, 1], &rips),
        &dir,
        label,
    );
    NatLab {
        r,
        dir,
        vip,
        rips,
        daemon,
        sock,
    }
}

fn split(a: u32, b: u32) -> BTreeMap<String, u32> {
    [("rs1".to_string(), a), ("rs2".to_string(), b)]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// ipvsadm's editing commands change the running rules at once; a refused command
/// changes nothing; -S and -R round-trip.
#[test]
fn ipvsadm_edits_take_effect_at_once() {
    if !require_root("ipvsadm_edits_take_effect_at_once") {
        return;
    }
    let NatLab {
        r,
        dir: _dir,
        vip,
        rips,
        daemon: _daemon,
        sock,
    } = nat_lab("l4edit", "rr");
    let svc = format!("{vip}:80");
    let rs1 = format!("{}:80", rips[0]);
    let rs2 = format!("{}:80", rips[1]);
    let edit = |args: &[&str]| {
        let (ok, _, err) = ipvsadm_with(&sock, args, None);
        assert!(ok, "ipvsadm {args:?}: {err}");
    };

    // Weight 0 drains: every new connection goes to the other server.
    edit(&["-e", "-t", &svc, "-r", &rs1, "-m", "-w", "0"]);
    assert!(ipvsadm(&sock, &["-Ln"]).contains(&format!("  -> {rs1:<28} Masq    0      ")));
    assert_eq!(distribution_of(&r, &vip, 20), split(0, 20));

    // Deleted, then added back with weight 1: 1:1 again.
    edit(&["-d", "-t", &svc, "-r", &rs1]);
    assert!(!ipvsadm(&sock, &["-Ln"]).contains(&rs1));
    edit(&["-a", "-t", &svc, "-r", &rs1, "-m", "-w", "1"]);
    assert_eq!(distribution_of(&r, &vip, 20), split(10, 10));

    // wrr with 1:3: any 40 consecutive choices are exactly 10:30.
    edit(&["-E", "-t", &svc, "-s", "wrr"]);
    edit(&["-e", "-t", &svc, "-r", &rs2, "-m", "-w", "3"]);
    assert_eq!(distribution_of(&r, &vip, 40), split(10, 30));

    // A refused command says why and changes nothing.
    let before = ipvsadm(&sock, &["-Sn"]);
    let (ok, _, err) = ipvsadm_with(&sock, &["-a", "-t", &svc, "-r", &rs1, "-m"], None);
    assert!(!ok);
    assert!(err.contains("Destination already exists"), "{err}");
    let (ok, _, err) = ipvsadm_with(
        &sock,
        &["-a", "-t", &svc, "-r", &format!("{}:8080", rips[0]), "-g"],
        None,
    );
    assert!(!ok && err.contains("direct routing"), "{err}");
    assert_eq!(ipvsadm(&sock, &["-Sn"]), before);

    // -S, -C, -R: the same rules again.
    edit(&["-C"]);
    assert!(!ipvsadm(&sock, &["-Ln"]).contains("TCP "));
    let (ok, _, err) = ipvsadm_with(&sock, &["-R"], Some(&before));
    assert!(ok, "{err}");
    assert_eq!(ipvsadm(&sock, &["-Sn"]), before);
    assert_eq!(distribution_of(&r, &vip, 8), split(2, 6));

    // Timeouts and counters.
    edit(&["--set", "0", "0", "100"]);
    assert_eq!(
        ipvsadm(&sock, &["-L", "--timeout"]),
        "Timeout (tcp tcpfin udp): 900 120 100\n"
    );
    edit(&["-Z"]);
    let stats = ipvsadm(&sock, &["-Ln", "--stats"]);
    assert_eq!(stats_of(&stats, &rips[0])[0], 0, "{stats}");

    // `fulcrum ctl drain`: weight 0 for the server in every service, until undrained.
    let ctl = |what: &str| {
        let out = fulcrum_e2e::ctl(&sock, &[what, &rips[0]]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(ctl("drain").contains("1 real server(s)"));
    assert!(ipvsadm(&sock, &["-Ln"]).contains(&format!("  -> {rs1:<28} Masq    0      ")));
    assert_eq!(distribution_of(&r, &vip, 8), split(0, 8));
    ctl("undrain");
    assert_eq!(distribution_of(&r, &vip, 8), split(2, 6));

    // `fulcrum ctl conns`, filtered by real server.
    let out = fulcrum_e2e::ctl(&sock, &["--json", "conns", "--real-server", &rips[1]]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let conns = v["result"].as_array().cloned().unwrap_or_default();
    assert!(!conns.is_empty(), "{v}");
    assert!(
        conns.iter().all(|c| c["destination"] == rs2.as_str()),
        "{v}"
    );
}

/// A bpffs mounted for one test (the daemon's own /sys is private under `ip netns exec`,
/// so pins that must outlive it go here), unmounted on drop.
/// A bpffs for the test's pins, in its scratch directory.
fn bpffs(dir: &Scratch) -> Bpffs {
    Bpffs::new(dir.0.join("bpf")).expect("a bpffs")
}

/// SIGKILL of the daemon leaves forwarding running (pinned program and maps); the next
/// start adopts them: an established connection carries on throughout, and a normal stop
/// then releases everything.
#[test]
fn forwarding_survives_a_sigkill_and_the_restart_adopts_it() {
    if !require_root("forwarding_survives_a_sigkill_and_the_restart_adopts_it") {
        return;
    }
    let mut r = reference::build(Deployment::LvsNat, "l4pin", Some(agent())).unwrap();
    let dir = Scratch::new("l4pin");
    let bpf = bpffs(&dir);
    serve_names(&mut r);
    let vip = r.vips[0].to_string();
    let rips: Vec<String> = r.rips.iter().map(|a| a.to_string()).collect();
    let conf = dir.0.join("pin.conf");
    std::fs::write(&conf, config(&vip, "NAT", "rr", &[1, 1], &rips)).unwrap();
    let sock = dir.0.join("pin.sock");
    let director = r.directors[0].clone();
    let run = |r: &mut Reference, log: &str| {
        let log = dir.0.join(log);
        let p = r
            .lab
            .spawn(
                &director,
                &[
                    fulcrum_e2e::bin().as_ref(),
                    "run".as_ref(),
                    "-f".as_ref(),
                    conf.as_os_str(),
                    "--control".as_ref(),
                    sock.as_os_str(),
                    "--bpf-dir".as_ref(),
                    bpf.0.join("fulcrum").as_os_str(),
                ],
                Some(&log),
            )
            .unwrap();
        let up = wait_for(Duration::from_secs(20), || {
            ipvsadm(&sock, &["-Ln"]).contains("  -> ")
        });
        assert!(
            up.is_some(),
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        p
    };
    let first = run(&mut r, "first.log");

    // One long connection: a line every 50 ms for 6 s, each echoed.
    let (hold, hold_log) = hold(&mut r, &dir, &format!("{vip}:80"), 6000);

    first.signal("KILL").unwrap();
    assert!(first.wait_timeout(Duration::from_secs(5)).is_some());
    std::thread::sleep(Duration::from_millis(1000));
    // Nothing is listening on the control socket, but the data plane still forwards.
    let second = run(&mut r, "second.log");
    let log = std::fs::read_to_string(dir.0.join("second.log")).unwrap_or_default();
    assert!(log.contains("adopted"), "{log}");
    let conns = ipvsadm(&sock, &["-Lnc"]);
    assert!(
        conns.contains("ESTABLISHED"),
        "the connection was adopted:\n{conns}"
    );

    let status = hold.wait_timeout(Duration::from_secs(20));
    let held = std::fs::read_to_string(&hold_log).unwrap_or_default();
    assert_eq!(status, Some(0), "the long connection broke: {held}");
    assert!(held.contains("held "), "{held}");
    // New connections are scheduled as before.
    let d = distribution_of(&r, &vip, 10);
    assert_eq!(d.values().sum::<u32>(), 10, "{d:?}");

    // A normal stop releases the pins.
    second.signal("TERM").unwrap();
    assert!(second.wait_timeout(Duration::from_secs(10)).is_some());
    // (Only fulcrum's directory: iproute2, loading the lab's XDP stubs, may use any bpffs
    // it finds mounted, this one included.)
    let left: Vec<_> = std::fs::read_dir(bpf.0.join("fulcrum"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "pins left after a normal stop: {left:?}");
}

/// A reload that changes a virtual server applies at once, as a diff: the new split takes
/// effect for new connections and an established connection carries on.
#[test]
fn reload_applies_virtual_server_changes_without_dropping_connections() {
    if !require_root("reload_applies_virtual_server_changes_without_dropping_connections") {
        return;
    }
    let NatLab {
        mut r,
        dir,
        vip,
        rips,
        daemon: _daemon,
        sock,
    } = nat_lab("l4reload", "rr");
    let (hold, hold_log) = hold(&mut r, &dir, &format!("{vip}:80"), 4000);

    std::fs::write(
        dir.0.join("l4reload.conf"),
        config(&vip, "NAT", "wrr", &[1, 2], &rips),
    )
    .unwrap();
    let out = fulcrum_e2e::ctl(&sock, &["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied = wait_for(Duration::from_secs(5), || {
        ipvsadm(&sock, &["-Ln"]).contains(&format!("TCP  {vip}:80 wrr"))
    });
    assert!(applied.is_some(), "{}", ipvsadm(&sock, &["-Ln"]));
    // Any 30 consecutive choices of wrr 1:2 are exactly 10:20.
    assert_eq!(distribution_of(&r, &vip, 30), split(10, 20));
    let status = hold.wait_timeout(Duration::from_secs(20));
    let held = std::fs::read_to_string(&hold_log).unwrap_or_default();
    assert_eq!(status, Some(0), "the long connection broke: {held}");
}

/// sh and mh keep a client on one server; weight 0 leaves an established connection alone;
/// deleting its server expires it (expire_nodest_conn) and its next packets are dropped.
#[test]
fn hashing_sticks_and_deleting_a_server_expires_its_connections() {
    if !require_root("hashing_sticks_and_deleting_a_server_expires_its_connections") {
        return;
    }
    let NatLab {
        mut r,
        dir,
        vip,
        rips,
        daemon: _daemon,
        sock,
    } = nat_lab("l4stick", "sh");
    let svc = format!("{vip}:80");
    let one_server = |r: &Reference| {
        let d = distribution_of(r, &vip, 20);
        assert_eq!(d.len(), 1, "one client, one server: {d:?}");
        d.into_keys().next().unwrap()
    };
    one_server(&r);
    let edit = |args: &[&str]| {
        let (ok, _, err) = ipvsadm_with(&sock, args, None);
        assert!(ok, "ipvsadm {args:?}: {err}");
    };
    edit(&["-E", "-t", &svc, "-s", "mh"]);
    one_server(&r);

    // A long connection, on whichever server rr gives it.
    edit(&["-E", "-t", &svc, "-s", "rr"]);
    let (hold, hold_log) = hold(&mut r, &dir, &svc, 20000);
    let log = std::fs::read_to_string(&hold_log).unwrap();
    let name = log.split_whitespace().nth(1).unwrap().to_string();
    let rip = if name == "rs1" { &rips[0] } else { &rips[1] };
    // Quiesced: it carries on.
    edit(&[
        "-e",
        "-t",
        &svc,
        "-r",
        &format!("{rip}:80"),
        "-m",
        "-w",
        "0",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        hold.wait_timeout(Duration::from_millis(10)).is_none(),
        "{log}"
    );
    // Deleted: the connection is expired and its packets dropped.
    edit(&["-d", "-t", &svc, "-r", &format!("{rip}:80")]);
    let status = hold.wait_timeout(Duration::from_secs(15));
    let log = std::fs::read_to_string(&hold_log).unwrap_or_default();
    assert_eq!(status, Some(1), "the connection must break: {log}");
    // Its entry is gone. Those of the closed probes to that server may stay until their
    // timers run out, as in IPVS (expire_nodest_conn acts on a connection's next packet).
    let table = ipvsadm(&sock, &["-Lnc"]);
    assert!(
        !table
            .lines()
            .any(|l| l.contains("ESTABLISHED") && l.contains(&format!("{rip}:80"))),
        "{table}"
    );
}

/// Reference deployment 3: two fulcrum directors share VIP1 and VIP2 by VRRP and forward
/// both by DR, with the example configuration; when director 1 dies, director 2 takes VIP1
/// and serves it.
#[test]
fn deployment_3_serves_both_vips_and_fails_over() {
    if !require_root("deployment_3_serves_both_vips_and_fails_over") {
        return;
    }
    let mut r = reference::build(Deployment::KeepalivedHa, "l4ha", Some(agent())).unwrap();
    let dir = Scratch::new("l4ha");
    serve_names(&mut r);
    let conf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/keepalived-ha.keepalived.conf");
    let (d1, d2) = (r.directors[0].clone(), r.directors[1].clone());
    let mut daemons = Vec::new();
    for (host, id) in [(&d1, "lb1"), (&d2, "lb2")] {
        let d = fulcrum_e2e::spawn_fulcrum(&mut r.lab, host, &conf, &dir.0, id, &["-i", id]);
        daemons.push(d.process);
    }
    let holds = |r: &Reference, host: &fulcrum_lab::Host, vip: &str| {
        r.lab
            .ip(host, &["-4", "addr", "show", "dev", "eth0"])
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{vip}/")))
            .unwrap_or(false)
    };
    let (vip1, vip2) = (reference::VIP1.to_string(), reference::VIP2.to_string());
    let settled = wait_for(Duration::from_secs(10), || {
        holds(&r, &d1, &vip1) && holds(&r, &d2, &vip2)
    });
    assert!(settled.is_some(), "the VIPs did not settle");
    // Both VIPs answered by the real servers, through the director that holds each.
    for vip in [&vip1, &vip2] {
        let d = distribution_of(&r, vip, 10);
        assert_eq!(d.values().sum::<u32>(), 10, "{vip}: {d:?}");
        assert!(d.keys().all(|k| k.starts_with("rs")), "{vip}: {d:?}");
    }
    // Director 1 dies (its link, then its process): director 2 takes VIP1 and serves it.
    r.lab.ip(&d1, &["link", "set", "eth0", "down"]).unwrap();
    daemons[0].signal("KILL").unwrap();
    let moved = wait_for(Duration::from_secs(10), || holds(&r, &d2, &vip1));
    assert!(moved.is_some(), "VIP1 did not move to director 2");
    let answered = wait_for(Duration::from_secs(10), || {
        r.lab
            .probe(&r.client, &format!("{vip1}:80"), 1, false)
            .is_ok_and(|a| a.first().is_some_and(|a| a.starts_with("rs")))
    });
    assert!(answered.is_some(), "VIP1 is not served after the failover");
    let d = distribution_of(&r, &vip1, 10);
    assert_eq!(d.values().sum::<u32>(), 10, "{d:?}");
    assert!(
        d.keys().all(|k| k.starts_with("rs")),
        "after the failover: {d:?}"
    );
}

/// Reference deployment 3 with 50 long-lived connections through VIP1, director 1 then
/// cut off and SIGKILLed. With `lvs_sync_daemon` (the example's), director 2 holds
/// every connection before the kill (`ipvsadm -Lnc` there) and all 50 carry data both ways
/// after VIP1 moves. Without it director 2 has no entry for them: their next segments are
/// not SYNs, reach its own stack, which holds VIP1 now, and are reset (`sync: false`
/// documents why sync matters).
fn established_connections_across_failover(sync: bool, label: &str, connections: u32) {
    let mut r = reference::build(Deployment::KeepalivedHa, label, Some(agent())).unwrap();
    let dir = Scratch::new(label);
    serve_names(&mut r);
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/keepalived-ha.keepalived.conf");
    let mut conf = std::fs::read_to_string(&example).unwrap();
    assert!(
        conf.contains("lvs_sync_daemon eth0 VI_1"),
        "the example syncs"
    );
    if !sync {
        conf = conf.replace("lvs_sync_daemon eth0 VI_1", "");
    }
    let conf_path = dir.0.join("ha.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let (d1, d2) = (r.directors[0].clone(), r.directors[1].clone());
    let mut daemons = Vec::new();
    for (host, id) in [(&d1, "lb1"), (&d2, "lb2")] {
        daemons.push(fulcrum_e2e::spawn_fulcrum(
            &mut r.lab,
            host,
            &conf_path,
            &dir.0,
            id,
            &["-i", id],
        ));
    }
    let holds = |r: &Reference, host: &fulcrum_lab::Host, vip: &str| {
        r.lab
            .ip(host, &["-4", "addr", "show", "dev", "eth0"])
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{vip}/")))
            .unwrap_or(false)
    };
    let vip1 = reference::VIP1.to_string();
    // Each VIP on its master alone: a VIP still on both (director 2 taking VIP1 while
    // director 1 starts) would leave the client's packets to either director.
    let vip2 = reference::VIP2.to_string();
    let settled = wait_for(Duration::from_secs(10), || {
        holds(&r, &d1, &vip1)
            && !holds(&r, &d2, &vip1)
            && holds(&r, &d2, &vip2)
            && !holds(&r, &d1, &vip2)
    });
    assert!(settled.is_some(), "the VIPs did not settle");
    // And the client asks anew who has VIP1: an answer it kept from director 2 (had it
    // held VIP1 while director 1 started) would send some connections there.
    r.lab
        .ip(&r.client, &["neigh", "flush", "to", &vip1])
        .unwrap();
    // The connections, a line every 200 ms each for 20 s. Each echo may take 20 s: a
    // segment lost 200 ms after it was sent is retried at 0.6, 1.4, 3, 6.2 and 12.6 s, so
    // a VIP that moves within 12 s on a loaded machine is caught by a retry.
    let log = dir.0.join("hold.log");
    let client = r.client.clone();
    let pace = HoldPace {
        every_ms: 200,
        for_ms: 20_000,
        timeout_ms: 20_000,
    };
    let hold = fulcrum_e2e::spawn_hold(
        &mut r.lab,
        &client,
        &format!("{vip1}:80"),
        pace,
        connections,
        &log,
    );
    let connected = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("connected rs")
            .count()
            == connections as usize
    });
    assert!(
        connected.is_some(),
        "the connections did not open: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let established = |sock: &Path| {
        ipvsadm(sock, &["-Lnc"])
            .lines()
            .filter(|l| l.contains("ESTABLISHED") && l.contains(&format!("{vip1}:80")))
            .count()
    };
    let listed = wait_for(Duration::from_secs(5), || {
        established(&daemons[0].sock) == connections as usize
    });
    assert!(
        listed.is_some(),
        "director 1 lists {} of {connections} connections as established:\n{}\n{}\n{}\n\
         director 2:\n{}",
        established(&daemons[0].sock),
        ipvsadm(&daemons[0].sock, &["-Lnc"]),
        raw_ipvs(&daemons[0].sock),
        std::fs::read_to_string(&daemons[0].log).unwrap_or_default(),
        ipvsadm(&daemons[1].sock, &["-Lnc"]),
    );
    if sync {
        let synced = wait_for(Duration::from_secs(5), || {
            established(&daemons[1].sock) == connections as usize
        });
        assert!(
            synced.is_some(),
            "director 2 holds {} of {connections} connections:\n{}\n{}",
            established(&daemons[1].sock),
            ipvsadm(&daemons[1].sock, &["-Lnc"]),
            raw_ipvs(&daemons[1].sock)
        );
    } else {
        assert_eq!(established(&daemons[1].sock), 0);
    }
    // For a failure: which real server holds which connection, as the servers see it, and
    // director 1's table and counters, before the kill.
    let sockets = |r: &Reference| {
        r.real_servers
            .iter()
            .map(|rs| {
                let out = r
                    .lab
                    .exec(
                        &rs.netns,
                        ["ss", "-tnH", "state", "established", "sport", "= :80"],
                    )
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                format!("{}:\n{out}", rs.name)
            })
            .collect::<Vec<_>>()
            .join("")
    };
    let before_kill = format!(
        "{}director 1:\n{}\n{}",
        sockets(&r),
        ipvsadm(&daemons[0].sock, &["-Lnc"]),
        raw_ipvs(&daemons[0].sock)
    );
    // Director 1 dies as a machine does: its link first, then its process. The other order
    // resets connections: the daemon runs under `ip netns exec`, whose private /sys takes
    // its pinned XDP link with it, so between the kill and the link going down the
    // director's own stack (which holds VIP1) answers the clients' segments with RSTs.
    r.lab.ip(&d1, &["link", "set", "eth0", "down"]).unwrap();
    daemons[0].process.signal("KILL").unwrap();
    let moved = wait_for(Duration::from_secs(10), || holds(&r, &d2, &vip1));
    assert!(moved.is_some(), "VIP1 did not move to director 2");
    let status = hold.wait_timeout(Duration::from_secs(60));
    let held = std::fs::read_to_string(&log).unwrap_or_default();
    if sync {
        assert_eq!(
            status,
            Some(0),
            "connections broke: {held}\nbefore the kill:\n{before_kill}\nreal servers now:\n{}\ndirector 2 now:\n{}\n{}\n{}\ndirector 1's log:\n{}",
            sockets(&r),
            ipvsadm(&daemons[1].sock, &["-Lnc"]),
            raw_ipvs(&daemons[1].sock),
            std::fs::read_to_string(&daemons[1].log).unwrap_or_default(),
            std::fs::read_to_string(&daemons[0].log).unwrap_or_default()
        );
        assert!(held.contains("held "), "{held}");
    } else {
        assert_eq!(status, Some(1), "without sync they break: {held}");
        assert!(
            held.contains(&format!("broken {connections} of {connections}")),
            "{held}"
        );
    }
}

#[test]
fn synced_connections_survive_the_failover() {
    if !require_root("synced_connections_survive_the_failover") {
        return;
    }
    established_connections_across_failover(true, "l4sync", 50);
}

#[test]
fn without_sync_connections_break_at_the_failover() {
    if !require_root("without_sync_connections_break_at_the_failover") {
        return;
    }
    established_connections_across_failover(false, "l4nosync", 10);
}

/// Starts the agent's `watch` in the client: a new connection to `target` every
/// `every_ms` for `for_ms`, each line `UNIX_MICROS answer`.
fn watch(r: &mut Reference, dir: &Scratch, name: &str, args: &[&str]) -> (Process, PathBuf) {
    let out = dir.0.join(format!("{name}.watch"));
    let mut argv = r.lab.agent_command(&r.client).unwrap();
    argv.push("watch".into());
    argv.extend(args.iter().map(Into::into));
    // agent_command starts with `ip netns exec NS`: spawn runs it in the host itself.
    let argv: Vec<std::ffi::OsString> = argv.into_iter().skip(4).collect();
    let p = r.lab.spawn(&r.client, &argv, Some(&out)).unwrap();
    (p, out)
}

/// ActiveConn and InActConn stay exact over 800 connections closed by both sides at once
/// (curl and a server both closing after one answer), two at a time so the client's and the server's packets of a
/// connection are handled on both CPUs: afterwards no connection is active and every
/// tracked one is inactive, per real server as `ipvsadm -Lnc` lists them. (Before the
/// counts moved by compare-and-swap, a FIN from each side handled at once on two CPUs
/// took one connection out of ActiveConn twice: 4294967295.)
#[test]
fn active_and_inactive_counts_stay_exact() {
    if !require_root("active_and_inactive_counts_stay_exact") {
        return;
    }
    let mut r = reference::build(Deployment::LvsNat, "l4count", Some(agent())).unwrap();
    let dir = Scratch::new("l4count");
    // HTTP servers (serve_names' plain ones answer no HTTP, and curl would give up first).
    for (i, rs) in r.real_servers.clone().iter().enumerate() {
        r.lab
            .serve(rs, &format!("rs{}", i + 1), "0.0.0.0:80", true)
            .unwrap();
    }
    let vip = r.vips[0].to_string();
    let rips: Vec<String> = r.rips.iter().map(|a| a.to_string()).collect();
    let (daemon, sock) = start(
        &mut r,
        &config(&vip, "NAT", "rr", &[1, 1], &rips),
        &dir,
        "count",
    );
    // `Connection: close`: the server closes after its answer while curl, which has read
    // the answer by its Content-Length, closes too: FINs from both sides at once. Two
    // loops at a time, so both CPUs carry packets of the same connections.
    let url = format!("http://{vip}/");
    let script = format!(
        "for i in $(seq 400); do curl -s --max-time 2 -H 'Connection: close' {url} || echo failed; done"
    );
    let mut loops = Vec::new();
    for i in 0..2 {
        let out = dir.0.join(format!("curl{i}.out"));
        let p = r
            .lab
            .spawn(&r.client, &["sh", "-c", script.as_str()], Some(&out))
            .unwrap();
        loops.push((p, out));
    }
    let mut served = 0;
    for (p, out) in &loops {
        assert!(
            p.wait_timeout(Duration::from_secs(120)).is_some(),
            "the curl loops hang"
        );
        let text = std::fs::read_to_string(out).unwrap();
        served += text.lines().filter(|l| l.starts_with("rs")).count();
    }
    assert_eq!(served, 800, "every curl is answered");
    let attempts = served;
    // Every connection has closed: none may be active, and each real server's inactive
    // count is its entries in the table.
    let settled = wait_for(Duration::from_secs(5), || {
        let listing = ipvsadm(&sock, &["-Ln"]);
        let conns = ipvsadm(&sock, &["-Lnc"]);
        rips.iter().all(|rip| {
            let row = listing
                .lines()
                .find(|l| l.contains(&format!("{rip}:80")))
                .unwrap_or("");
            let cols: Vec<&str> = row.split_whitespace().collect();
            let (active, inactive) = (cols.get(4).copied(), cols.get(5).copied());
            let entries = conns
                .lines()
                .filter(|l| l.split_whitespace().nth(5) == Some(&format!("{rip}:80")))
                .count()
                .to_string();
            active == Some("0") && inactive == Some(entries.as_str())
        })
    });
    assert!(
        settled.is_some(),
        "counts drifted after {attempts} connections:\n{}\n{}",
        ipvsadm(&sock, &["-Ln"]),
        ipvsadm(&sock, &["-Lnc"])
            .lines()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    daemon.signal("TERM").unwrap();
}

/// From the first packet the data plane sees, a SYN for a virtual service is forwarded:
/// a client opening a connection every millisecond while the daemon starts never has
/// one passed to the director's own stack (where the NAT VIP is a local address, it would
/// be answered with a RST). The program counts what it passes for no service.
#[test]
fn no_syn_for_a_service_reaches_the_directors_stack_at_start() {
    if !require_root("no_syn_for_a_service_reaches_the_directors_stack_at_start") {
        return;
    }
    let mut r = reference::build(Deployment::LvsNat, "l4start", Some(agent())).unwrap();
    let dir = Scratch::new("l4start");
    serve_names(&mut r);
    let vip = r.vips[0].to_string();
    let rips: Vec<String> = r.rips.iter().map(|a| a.to_string()).collect();
    let target = format!("{vip}:80");
    let (watcher, out) = watch(
        &mut r,
        &dir,
        "start",
        &[
            "--connect",
            &target,
            "--every-ms",
            "1",
            "--for-ms",
            "4000",
            "--timeout-ms",
            "300",
        ],
    );
    std::thread::sleep(Duration::from_millis(200));
    let (daemon, sock) = start(
        &mut r,
        &config(&vip, "NAT", "rr", &[1, 1], &rips),
        &dir,
        "start",
    );
    assert!(watcher.wait_timeout(Duration::from_secs(30)).is_some());
    let raw = raw_ipvs(&sock);
    let answer: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let packets = &answer["result"]["packets"];
    assert!(packets["service"].as_u64().unwrap_or(0) > 100, "{packets}");
    assert_eq!(packets["no_service"].as_u64().unwrap_or(0), 0, "{packets}");
    // And once the first connection went through, every later one did.
    let text = std::fs::read_to_string(&out).unwrap();
    let answers: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(' ').map(|x| x.1))
        .collect();
    let first = answers
        .iter()
        .position(|a| a.starts_with("rs"))
        .expect("no connection went through");
    let failed: Vec<&&str> = answers[first..]
        .iter()
        .filter(|a| !a.starts_with("rs"))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed after the first: {:?}",
        failed.len(),
        answers.len() - first,
        &failed[..failed.len().min(5)]
    );
    daemon.signal("TERM").unwrap();
}

/// Reference deployment 1 the classic way: a daemon whose keepalived.conf has no
/// virtual_server, and only ipvsadm commands. The first edit starts the data plane; the
/// seed's 1:1 split follows; `ipvsadm -S` into a fresh daemon's `ipvsadm -R` gives the
/// same table; a reload of keepalived.conf that adds a service of its own keeps the one
/// ipvsadm made, as keepalived does with IPVS.
#[test]
fn deployment_1_driven_by_ipvsadm_alone() {
    if !require_root("deployment_1_driven_by_ipvsadm_alone") {
        return;
    }
    let mut r = reference::build(Deployment::LvsNat, "l4adm", Some(agent())).unwrap();
    let dir = Scratch::new("l4adm");
    serve_names(&mut r);
    let vip = r.vips[0].to_string();
    let rips: Vec<String> = r.rips.iter().map(|a| a.to_string()).collect();
    let conf = dir.0.join("empty.conf");
    std::fs::write(&conf, "global_defs {\n    router_id director\n}\n").unwrap();
    let director = r.directors[0].clone();
    let daemon = |r: &mut Reference, id: &str| {
        let d = fulcrum_e2e::spawn_fulcrum(&mut r.lab, &director, &conf, &dir.0, id, &[]);
        assert!(
            wait_for(Duration::from_secs(10), || ipvsadm_with(
                &d.sock,
                &["-Ln"],
                None
            )
            .0)
            .is_some(),
            "the daemon did not answer"
        );
        d
    };
    let d = daemon(&mut r, "adm1");
    // Nothing yet: a bare ipvsadm lists the empty table, as the real one.
    let (ok, bare, _) = ipvsadm_with(&d.sock, &[], None);
    assert!(
        ok && bare.starts_with("IP Virtual Server version 1.2.1"),
        "{bare}"
    );
    assert!(!bare.contains("TCP "), "{bare}");
    let service = format!("{vip}:80");
    for args in [
        vec!["-A", "-t", service.as_str(), "-s", "rr"],
        vec![
            "-a",
            "-t",
            service.as_str(),
            "-r",
            &format!("{}:80", rips[0]),
            "-m",
            "-w",
            "1",
        ],
        vec![
            "-a",
            "-t",
            service.as_str(),
            "-r",
            &format!("{}:80", rips[1]),
            "-m",
            "-w",
            "1",
        ],
    ] {
        let (ok, out, err) = ipvsadm_with(&d.sock, &args, None);
        assert!(ok, "ipvsadm {args:?}: {out}{err}");
    }
    assert_eq!(distribution_of(&r, &vip, 300), split(150, 150));
    // One service listed alone; one that does not exist.
    let one = ipvsadm(&d.sock, &["-L", "-n", "-t", &service]);
    assert!(one.contains(&format!("TCP  {service} rr")), "{one}");
    let (ok, _, err) = ipvsadm_with(&d.sock, &["-L", "-n", "-t", "10.9.9.9:80"], None);
    assert!(!ok && err.contains("No such service"), "{err}");
    // A reload whose keepalived.conf now has a service of its own keeps ipvsadm's.
    std::fs::write(
        &conf,
        format!(
            "virtual_server {vip} 8080 {{\n    lb_algo wrr\n    lb_kind NAT\n    protocol TCP\n    real_server {} 80 {{\n        weight 1\n    }}\n}}\n",
            rips[0]
        ),
    )
    .unwrap();
    d.process.signal("HUP").unwrap();
    let both = wait_for(Duration::from_secs(5), || {
        let l = ipvsadm(&d.sock, &["-Ln"]);
        l.contains(&format!("TCP  {vip}:8080 wrr")) && l.contains(&format!("TCP  {service} rr"))
    });
    assert!(both.is_some(), "{}", ipvsadm(&d.sock, &["-Ln"]));
    // ipvsadm-save, then ipvsadm-restore into a fresh daemon: the same table.
    let saved = ipvsadm(&d.sock, &["-S", "-n"]);
    d.process.signal("TERM").unwrap();
    assert!(d.process.wait_timeout(Duration::from_secs(10)).is_some());
    std::fs::write(&conf, "global_defs {\n    router_id director\n}\n").unwrap();
    let fresh = daemon(&mut r, "adm2");
    let (ok, out, err) = ipvsadm_with(&fresh.sock, &["-R"], Some(&saved));
    assert!(ok, "ipvsadm -R: {out}{err}");
    assert_eq!(ipvsadm(&fresh.sock, &["-S", "-n"]), saved);
    assert_eq!(distribution_of(&r, &vip, 100), split(50, 50));
}

/// A full connection table refuses new connections and counts them, as IPVS does, and
/// keeps every connection it holds counted: with room for 600 NAT connections (1,200
/// entries), a client opening connections without pause fills it, and the rest are
/// dropped as `table_full`; nothing is pushed out.
#[test]
fn a_full_table_refuses_new_connections_and_counts_them() {
    if !require_root("a_full_table_refuses_new_connections_and_counts_them") {
        return;
    }
    let mut r = reference::build(Deployment::LvsNat, "l4full", Some(agent())).unwrap();
    let dir = Scratch::new("l4full");
    serve_names(&mut r);
    let vip = r.vips[0].to_string();
    let rips: Vec<String> = r.rips.iter().map(|a| a.to_string()).collect();
    let conf = dir.0.join("full.conf");
    std::fs::write(&conf, config(&vip, "NAT", "rr", &[1, 1], &rips)).unwrap();
    let director = r.directors[0].clone();
    let d = fulcrum_e2e::spawn_fulcrum(
        &mut r.lab,
        &director,
        &conf,
        &dir.0,
        "full",
        &["--max-connections", "600"],
    );
    assert!(
        wait_for(Duration::from_secs(20), || ipvsadm(&d.sock, &["-Ln"])
            .contains("  -> "))
        .is_some(),
        "the daemon did not install its rules"
    );
    assert!(ipvsadm(&d.sock, &["-Ln"]).starts_with("IP Virtual Server version 1.2.1 (size=600)"));
    let ctl =
        String::from_utf8_lossy(&fulcrum_e2e::ctl(&d.sock, &["services"]).stdout).into_owned();
    assert!(
        ctl.contains("connection table: room for 600 connections; the maps hold "),
        "{ctl}"
    );
    let target = format!("{vip}:80");
    let (watcher, out) = watch(
        &mut r,
        &dir,
        "full",
        &[
            "--connect",
            &target,
            "--every-ms",
            "1",
            "--for-ms",
            "2500",
            "--timeout-ms",
            "100",
        ],
    );
    assert!(watcher.wait_timeout(Duration::from_secs(30)).is_some());
    let text = std::fs::read_to_string(&out).unwrap();
    let served = text
        .lines()
        .filter(|l| l.split(' ').nth(1).is_some_and(|a| a.starts_with("rs")))
        .count();
    let answer: serde_json::Value = serde_json::from_str(&raw_ipvs(&d.sock)).unwrap();
    let full = answer["result"]["packets"]["table_full"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        full > 0,
        "the table never filled: {}",
        answer["result"]["packets"]
    );
    assert!((590..=600).contains(&served), "{served} connections served");
    // Every connection served is still in the table and counted.
    let conns = ipvsadm(&d.sock, &["-Lnc"]);
    let entries = conns.lines().skip(2).count();
    assert_eq!(entries, served, "{conns}");
    let listing = ipvsadm(&d.sock, &["-Ln"]);
    let counted: usize = listing
        .lines()
        .filter(|l| l.starts_with("  -> ") && !l.contains("RemoteAddress"))
        .map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            c[4].parse::<usize>().unwrap() + c[5].parse::<usize>().unwrap()
        })
        .sum();
    assert_eq!(counted, entries, "{listing}");
}

/// TUN as IPVS does it, to real servers on another subnet behind a router: three virtual
/// services (ipip, gue on port 6080, gre) over two real servers holding the VIP on `lo`
/// and decapsulating with `fulcrum decap` (this kernel has no ipip, gre or fou). New
/// connections alternate between the servers through each tunnel type; the replies go
/// straight from the servers to the client through the router, never through the director;
/// the decapsulators count what they took off. Full-size segments get IPVS's answer, an
/// ICMP "fragmentation needed", and go through once the client has lowered its path MTU.
#[test]
fn tun_reaches_real_servers_behind_a_router_with_every_tunnel_type() {
    if !require_root("tun_reaches_real_servers_behind_a_router_with_every_tunnel_type") {
        return;
    }
    tun_behind_a_router(false);
}

/// TUN over IPv6 (examples/lvs-tun6.keepalived.conf), as IPVS's ip_vs_tunnel_xmit_v6: the
/// same three tunnel types to the real servers behind the router, in IPv6 outer headers,
/// taken off by `fulcrum decap`; the same splits, no reply through the director, and
/// "packet too big" with what each tunnel leaves of 1500 bytes, which the client learns.
#[test]
fn ipv6_tun_reaches_real_servers_behind_a_router() {
    if !require_root("ipv6_tun_reaches_real_servers_behind_a_router") {
        return;
    }
    tun_behind_a_router(true);
}

/// TUN across the address families, as IPVS allows TUN (only TUN) to: the deployment's
/// IPv6 VIP tunnelling to its IPv4 real servers (IPv6 in IPv4) and its IPv4 VIP to their
/// IPv6 addresses (IPv4 in IPv6), each tunnel type; `fulcrum decap` takes the outer
/// headers off, the servers answer from the VIP they hold, and `ipvsadm` lists each
/// server with its own family under the service.
#[test]
fn tun_crosses_the_address_families() {
    if !require_root("tun_crosses_the_address_families") {
        return;
    }
    let mut r = reference::build(Deployment::LvsTun, "l4tunx", Some(agent())).unwrap();
    let dir = Scratch::new("l4tunx");
    let bpf = bpffs(&dir);
    r.decapsulate(fulcrum_e2e::bin(), &bpf.0).unwrap();
    let v6 = r.add_ipv6().unwrap();
    let vip4 = reference::VIP1.to_string();
    let rips4: Vec<String> = reference::TUN_RIPS.iter().map(|a| a.to_string()).collect();
    // (VIP, as a target takes it, the servers' addresses, as a listing shows them, and
    // where the servers listen), then ports per tunnel type.
    let sides = [
        (
            v6.vip.clone(),
            format!("[{}]", v6.vip),
            rips4.clone(),
            rips4.clone(),
            format!("[{}]", v6.vip),
            90,
        ),
        (
            vip4.clone(),
            vip4.clone(),
            v6.rips.clone(),
            v6.rips.iter().map(|a| format!("[{a}]")).collect(),
            "0.0.0.0".to_string(),
            93,
        ),
    ];
    let mut conf = String::new();
    for (vip, _, rips, _, listen, first) in &sides {
        for (i, kind) in ["TUN", "TUN type gue port 6080", "TUN type gre csum"]
            .into_iter()
            .enumerate()
        {
            let port = first + i as u16;
            conf += &format!(
                "virtual_server {vip} {port} {{\n    lb_algo rr\n    lb_kind {kind}\n    protocol TCP\n"
            );
            for rip in rips {
                conf += &format!("    real_server {rip} {port} {{\n        weight 1\n    }}\n");
            }
            conf += "}\n";
            for (n, rs) in r.real_servers.clone().iter().enumerate() {
                r.lab
                    .serve(
                        rs,
                        &format!("rs{}", n + 1),
                        &format!("{listen}:{port}"),
                        false,
                    )
                    .unwrap();
            }
        }
    }
    let (_daemon, sock) = start(&mut r, &conf, &dir, "l4tunx");
    let client = r.client.clone();
    for (_, target_vip, _, listed, _, first) in &sides {
        for port in *first..first + 3 {
            let target = format!("{target_vip}:{port}");
            wait_for(Duration::from_secs(5), || {
                r.lab
                    .probe(&client, &target, 1, false)
                    .is_ok_and(|a| a.iter().all(|a| a.starts_with("rs")))
            });
            let mut split: BTreeMap<String, u32> = BTreeMap::new();
            for a in r.lab.probe(&client, &target, 10, false).unwrap() {
                *split.entry(a).or_default() += 1;
            }
            assert_eq!(
                split,
                BTreeMap::from([("rs1".to_string(), 5), ("rs2".to_string(), 5)]),
                "{target}:\n{}\n{}",
                ipvsadm(&sock, &["-Ln", "--stats"]),
                raw_ipvs(&sock)
            );
        }
        let listing = ipvsadm(&sock, &["-Ln"]);
        for rip in listed {
            assert!(
                listing.contains(&format!("  -> {rip}:{first} ")),
                "{rip} under {target_vip}:{first}:\n{listing}"
            );
        }
        let conns = ipvsadm(&sock, &["-Lnc"]);
        assert!(
            conns.contains(&format!("{}:{first}", listed[0])),
            "connections to {} listed with its address:\n{conns}",
            listed[0]
        );
    }
}

/// The data plane's count of packets for one reason (`ctl` raw ipvs's `packets`).
fn packets(sock: &Path, reason: &str) -> u64 {
    let raw = raw_ipvs(sock);
    raw.split(&format!("\"{reason}\":"))
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {reason} count in {raw}"))
}

/// A transfer of 20,000-byte lines from `client` to `target` for 300 ms: it must complete,
/// after `reason`'s count moved (the too-big answer that taught the client) and with the
/// client's route to `vip` holding `mtu`.
#[allow(clippy::too_many_arguments)]
fn learns_from_a_big_transfer(
    lab: &fulcrum_lab::Lab,
    client: &fulcrum_lab::Host,
    family: &str,
    target: &str,
    vip: &str,
    sock: &Path,
    reason: &str,
    mtu: u32,
) {
    lab.ip(client, &[family, "route", "flush", "cache"])
        .unwrap();
    let before = packets(sock, reason);
    let out = lab
        .run_agent(
            client,
            &[
                "hold",
                "--connect",
                target,
                "--every-ms",
                "10",
                "--for-ms",
                "300",
                "--line-bytes",
                "20000",
            ],
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("held "), "{target}: {text}");
    assert!(
        packets(sock, reason) > before,
        "{target}: no {reason}\n{}",
        raw_ipvs(sock)
    );
    let route = lab.ip(client, &[family, "route", "get", vip]).unwrap();
    let route = String::from_utf8_lossy(&route.stdout).into_owned();
    assert!(
        route.contains(&format!("mtu {mtu}")),
        "{target}: the client did not learn {mtu}: {route}"
    );
}

/// The LVS-TUN deployment with `fulcrum decap` on its real servers, run with the example
/// for one family; see the two tests above.
fn tun_behind_a_router(ipv6: bool) {
    let label = if ipv6 { "l4tun6" } else { "l4tun" };
    let mut r = reference::build(Deployment::LvsTun, label, Some(agent())).unwrap();
    let dir = Scratch::new(label);
    let bpf = bpffs(&dir);
    r.decapsulate(fulcrum_e2e::bin(), &bpf.0).unwrap();
    // The addresses each server listens on, the VIP as a connection target takes it, the
    // example, and what each tunnel type leaves of the 1500-byte route for the client.
    let (listen, vip, example, mtus) = if ipv6 {
        let v6 = r.add_ipv6().unwrap();
        let listen: Vec<Vec<String>> = v6
            .listen
            .iter()
            .map(|l| l.iter().map(|a| format!("[{a}]")).collect())
            .collect();
        (
            listen,
            v6.vip,
            "lvs-tun6.keepalived.conf",
            [1460, 1448, 1456],
        )
    } else {
        let listen = vec![vec!["0.0.0.0".to_string()]; r.real_servers.len()];
        let vip = reference::VIP1.to_string();
        (listen, vip, "lvs-tun.keepalived.conf", [1480, 1468, 1476])
    };
    let target = |port: u16| {
        if ipv6 {
            format!("[{vip}]:{port}")
        } else {
            format!("{vip}:{port}")
        }
    };
    for (i, rs) in r.real_servers.clone().iter().enumerate() {
        for addr in &listen[i] {
            for port in [80, 81, 82] {
                r.lab
                    .serve(
                        rs,
                        &format!("rs{}", i + 1),
                        &format!("{addr}:{port}"),
                        false,
                    )
                    .unwrap();
            }
        }
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(example);
    let (director, client) = (r.directors[0].clone(), r.client.clone());
    let servers = r.real_servers.clone();
    let lab = &mut r.lab;
    let d = fulcrum_e2e::spawn_fulcrum(lab, &director, &path, &dir.0, label, &[]);
    let up = wait_for(Duration::from_secs(20), || {
        ipvsadm(&d.sock, &["-Ln"]).matches("Tunnel").count() == 6
    });
    assert!(
        up.is_some(),
        "{}\n{}",
        ipvsadm(&d.sock, &["-Ln"]),
        std::fs::read_to_string(&d.log).unwrap_or_default()
    );
    // A reply through the director would reach its XDP program as TCP for no service and
    // be forwarded by its kernel: its forwarded datagrams count (/proc/net/snmp and snmp6,
    // per namespace) would move.
    let forwarded = |lab: &fulcrum_lab::Lab| -> u64 {
        let file = if ipv6 {
            "/proc/net/snmp6"
        } else {
            "/proc/net/snmp"
        };
        let out = lab.exec(&director.netns, ["cat", file]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let n = if ipv6 {
            text.lines()
                .find_map(|l| l.strip_prefix("Ip6OutForwDatagrams"))
                .and_then(|v| v.trim().parse().ok())
        } else {
            let ip: Vec<&str> = text.lines().filter(|l| l.starts_with("Ip:")).collect();
            let (names, values) = (ip[0].split_whitespace(), ip[1].split_whitespace());
            names
                .zip(values)
                .find(|(n, _)| *n == "ForwDatagrams")
                .and_then(|(_, v)| v.parse().ok())
        };
        n.unwrap_or_else(|| panic!("no forwarded datagrams count in {text}"))
    };
    let before = forwarded(lab);
    for port in [80, 81, 82] {
        // The first SYN may wait for the router's MAC (the director resolves it).
        wait_for(Duration::from_secs(5), || {
            lab.probe(&client, &target(port), 1, false)
                .is_ok_and(|a| a.iter().all(|a| a.starts_with("rs")))
        });
        let mut split: BTreeMap<String, u32> = BTreeMap::new();
        for a in lab.probe(&client, &target(port), 10, false).unwrap() {
            *split.entry(a).or_default() += 1;
        }
        assert_eq!(
            split,
            BTreeMap::from([("rs1".to_string(), 5), ("rs2".to_string(), 5)]),
            "port {port}:\n{}\n{}",
            ipvsadm(&d.sock, &["-Ln", "--stats"]),
            raw_ipvs(&d.sock)
        );
    }
    // The director saw the clients' packets only: no reply passed through it.
    assert_eq!(
        forwarded(lab),
        before,
        "the director forwarded packets: replies went through it"
    );
    // Full-size segments from the client do not fit once encapsulated: the director
    // answers with what is left (1500 less the tunnel's headers), the client's stack
    // learns that path MTU and the data goes through in smaller ones.
    let family = if ipv6 { "-6" } else { "-4" };
    for (port, mtu) in [80, 81, 82].into_iter().zip(mtus) {
        let t = target(port);
        learns_from_a_big_transfer(
            lab,
            &client,
            family,
            &t,
            &vip,
            &d.sock,
            "tun_frag_needed",
            mtu,
        );
    }
    if !ipv6 {
        // A narrower link beyond the director: the router's routes to the servers locked
        // at 1400 bytes. The router answers the director (the tunnel's source) about the
        // tunnel packet; the director relays it to the client about the client's own
        // packet, with what the tunnel leaves of 1400, as IPVS's ip_vs_in_icmp does.
        let router = r.routers[0].clone();
        for rip in reference::TUN_RIPS {
            lab.ip(
                &router,
                &[
                    "route",
                    "add",
                    &format!("{rip}/32"),
                    "dev",
                    "eth1",
                    "mtu",
                    "lock",
                    "1400",
                ],
            )
            .unwrap();
        }
        for (port, mtu) in [(80, 1380), (81, 1368), (82, 1376)] {
            let t = target(port);
            let why = "tun_icmp";
            learns_from_a_big_transfer(lab, &client, "-4", &t, &vip, &d.sock, why, mtu);
        }
    }
    for (i, rs) in servers.iter().enumerate() {
        let out = lab
            .exec(
                &rs.netns,
                [
                    fulcrum_e2e::bin().as_os_str(),
                    "decap".as_ref(),
                    "eth0".as_ref(),
                    "--stats".as_ref(),
                    "--bpf-dir".as_ref(),
                    bpf.0.join(&rs.name).as_os_str(),
                ],
            )
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for kind in ["ipip", "gue", "gre"] {
            let n: u64 = text
                .split(&format!("{kind} "))
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            assert!(n > 0, "rs{}: no {kind} decapsulated: {text}", i + 1);
        }
    }
}

/// NAT towards a real-server link with a smaller MTU (1280), IPv4 and IPv6: a client's
/// datagram too big for it is answered from the VIP ("fragmentation needed" with DF,
/// ICMPv6 "packet too big"), and the client's own kernel takes the answer: its route to
/// the VIP then carries the smaller MTU, as it would behind IPVS.
#[test]
fn nat_tells_the_client_its_packets_are_too_big() {
    if !require_root("nat_tells_the_client_its_packets_are_too_big") {
        return;
    }
    let mut r = reference::build(Deployment::LvsNat, "l4mtu", Some(agent())).unwrap();
    let dir = Scratch::new("l4mtu");
    let v6 = r.add_ipv6().unwrap();
    let (client, director) = (r.client.clone(), r.directors[0].clone());
    r.lab
        .ip(&director, &["link", "set", "eth1", "mtu", "1280"])
        .unwrap();
    let vip4 = r.vips[0].to_string();
    let mut conf = String::new();
    for (vip, rips) in [
        (
            vip4.clone(),
            r.rips.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        ),
        (v6.vip.clone(), v6.rips.clone()),
    ] {
        conf += &format!(
            "virtual_server {vip} 53 {{\n    lb_algo rr\n    lb_kind NAT\n    protocol UDP\n"
        );
        for rip in rips {
            conf += &format!("    real_server {rip} 53 {{\n        weight 1\n    }}\n");
        }
        conf += "}\n";
    }
    let (_daemon, sock) = start(&mut r, &conf, &dir, "l4mtu");
    for (family, target, vip) in [
        ("-4", format!("{vip4}:53"), vip4.clone()),
        ("-6", format!("[{}]:53", v6.vip), v6.vip.clone()),
    ] {
        let learnt = learns_mtu_1280(&r, &client, family, &target, &vip);
        assert!(
            learnt.is_ok(),
            "{family}: the client's route to {vip} did not learn the MTU: {}\n{}",
            learnt.unwrap_err(),
            String::from_utf8_lossy(&fulcrum_e2e::ctl(&sock, &["services"]).stdout)
        );
    }
}

/// Sends 1,400-byte datagrams (over 1,280 with either family's headers) from `client` to
/// `target` until its route to `vip` carries an MTU of 1280, for up to 10 s; the route
/// when it never does. It must not carry one before.
fn learns_mtu_1280(
    r: &Reference,
    client: &fulcrum_lab::Host,
    family: &str,
    target: &str,
    vip: &str,
) -> Result<(), String> {
    let route = || {
        let out = r.lab.ip(client, &[family, "route", "get", vip]).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(!route().contains("mtu 1280"), "{}", route());
    let learnt = wait_for(Duration::from_secs(10), || {
        let out = r
            .lab
            .run_agent(
                client,
                &[
                    "flood",
                    "--connect",
                    target,
                    "--size",
                    "1400",
                    "--count",
                    "3",
                ],
            )
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        wait_for(Duration::from_millis(500), || route().contains("mtu 1280")).is_some()
    });
    learnt.map(|_| ()).ok_or_else(route)
}

/// NAT to a real server behind a router whose link on (1280 bytes) is narrower than the
/// director's, IPv4 and IPv6: the router, not the director, finds a client's datagram too
/// big once translated and answers the client, about the packet as it left the director
/// (client to real server). That error crosses the director, which translates it as IPVS's
/// ip_vs_nat_icmp does (about the VIP), so the client's kernel takes it: its route to the
/// VIP learns the MTU.
#[test]
fn nat_translates_a_routers_too_big_back_to_the_client() {
    if !require_root("nat_translates_a_routers_too_big_back_to_the_client") {
        return;
    }
    let mut r = reference::build(Deployment::LvsNat, "l4ptb", Some(agent())).unwrap();
    let dir = Scratch::new("l4ptb");
    let v6 = r.add_ipv6().unwrap();
    let (client, director) = (r.client.clone(), r.directors[0].clone());
    // The real servers' segment (the deployment's last switch; the first is outside).
    let inside = r.switches.last().unwrap().clone();
    let router = r.lab.host("rtr").unwrap();
    let far = r.lab.host("rs3").unwrap();
    r.lab.attach(&router, "eth0", &inside).unwrap();
    r.lab.link(&router, "eth1", &far, "eth0").unwrap();
    let ip = |r: &Reference, host: &fulcrum_lab::Host, args: &[&str]| {
        r.lab.ip(host, args).unwrap();
    };
    ip(
        &r,
        &router,
        &["addr", "add", "192.168.184.140/24", "dev", "eth0"],
    );
    ip(&r, &router, &["addr", "add", "10.9.9.1/24", "dev", "eth1"]);
    ip(
        &r,
        &router,
        &[
            "-6",
            "addr",
            "add",
            "2001:db8:184::140/64",
            "dev",
            "eth0",
            "nodad",
        ],
    );
    ip(
        &r,
        &router,
        &[
            "-6",
            "addr",
            "add",
            "2001:db8:99::1/64",
            "dev",
            "eth1",
            "nodad",
        ],
    );
    // Only the router's side of the far link is narrow: the far server still offers a
    // full-size MSS, so the client's segments must meet the router's limit on the way.
    ip(&r, &router, &["link", "set", "eth1", "mtu", "1280"]);
    ip(
        &r,
        &router,
        &["route", "add", "default", "via", "192.168.184.128"],
    );
    ip(
        &r,
        &router,
        &["-6", "route", "add", "default", "via", "2001:db8:184::128"],
    );
    r.lab.sysctl(&router, "net.ipv4.ip_forward", "1").unwrap();
    r.lab
        .sysctl(&router, "net.ipv6.conf.all.forwarding", "1")
        .unwrap();
    ip(&r, &far, &["addr", "add", "10.9.9.10/24", "dev", "eth0"]);
    ip(
        &r,
        &far,
        &[
            "-6",
            "addr",
            "add",
            "2001:db8:99::10/64",
            "dev",
            "eth0",
            "nodad",
        ],
    );
    ip(&r, &far, &["route", "add", "default", "via", "10.9.9.1"]);
    ip(
        &r,
        &far,
        &["-6", "route", "add", "default", "via", "2001:db8:99::1"],
    );
    ip(
        &r,
        &director,
        &["route", "add", "10.9.9.0/24", "via", "192.168.184.140"],
    );
    ip(
        &r,
        &director,
        &[
            "-6",
            "route",
            "add",
            "2001:db8:99::/64",
            "via",
            "2001:db8:184::140",
        ],
    );
    let vip4 = r.vips[0].to_string();
    let mut conf = String::new();
    for (vip, rip) in [
        (vip4.as_str(), "10.9.9.10"),
        (v6.vip.as_str(), "2001:db8:99::10"),
    ] {
        conf += &format!(
            "virtual_server {vip} 54 {{\n    lb_algo rr\n    lb_kind NAT\n    protocol UDP\n    real_server {rip} 54 {{\n        weight 1\n    }}\n}}\n"
        );
    }
    let (_daemon, sock) = start(&mut r, &conf, &dir, "l4ptb");
    let icmp_nat = |sock: &Path| packets(sock, "icmp_nat");
    for (family, target, vip) in [
        ("-4", format!("{vip4}:54"), vip4.clone()),
        ("-6", format!("[{}]:54", v6.vip), v6.vip.clone()),
    ] {
        let before = icmp_nat(&sock);
        let learnt = learns_mtu_1280(&r, &client, family, &target, &vip);
        assert!(
            learnt.is_ok(),
            "{family}: the client's route to {vip} did not learn the router's MTU: {}\n{}",
            learnt.unwrap_err(),
            raw_ipvs(&sock),
        );
        assert!(
            icmp_nat(&sock) > before,
            "{family}: the router's error was not translated by the data plane"
        );
    }
}

/// A cached next hop follows the neighbour table over IPv6 too: an IPv6 NAT connection
/// carries on when its real server's MAC changes under it (a replaced NIC, a moved
/// address), as the kernel's forwarding, and IPVS's, would follow the new neighbour entry.
/// The IPv4 neighbour entries are held still meanwhile: only the IPv6 table can tell.
#[test]
fn ipv6_nat_follows_a_real_servers_new_mac() {
    if !require_root("ipv6_nat_follows_a_real_servers_new_mac") {
        return;
    }
    let mut r = reference::build(Deployment::LvsNat, "l4mac6", Some(agent())).unwrap();
    let dir = Scratch::new("l4mac6");
    let v6 = r.add_ipv6().unwrap();
    let (director, rs) = (r.directors[0].clone(), r.real_servers[0].clone());
    r.lab.serve(&rs, "rs1", "[::]:80", false).unwrap();
    let rip = v6.rips[0].clone();
    let conf = format!(
        "virtual_server {} 80 {{\n    lb_algo rr\n    lb_kind NAT\n    protocol TCP\n    real_server {rip} 80 {{\n        weight 1\n    }}\n}}\n",
        v6.vip
    );
    let (_daemon, sock) = start(&mut r, &conf, &dir, "l4mac6");
    let target = format!("[{}]:80", v6.vip);
    let (hold, log) = hold(&mut r, &dir, &target, 4000);
    // The director's IPv4 neighbour entries held still (permanent), so that only the IPv6
    // neighbour table can tell the data plane of the new MAC.
    let arp = r
        .lab
        .ip(&director, &["-4", "neigh", "show", "dev", "eth1"])
        .unwrap();
    for line in String::from_utf8_lossy(&arp.stdout).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let (Some(ip), Some(at)) = (words.first(), words.iter().position(|w| *w == "lladdr")) {
            let lladdr = words[at + 1];
            let args = [
                "neigh",
                "replace",
                ip,
                "lladdr",
                lladdr,
                "dev",
                "eth1",
                "nud",
                "permanent",
            ];
            r.lab.ip(&director, &args).unwrap();
        }
    }
    // Past the maintenance loop's next round, which sees that change.
    std::thread::sleep(Duration::from_millis(1500));
    let mac = "02:00:00:00:99:01";
    r.lab
        .ip(&rs, &["link", "set", "eth0", "address", mac])
        .unwrap();
    r.lab
        .ip(
            &director,
            &["-6", "neigh", "replace", &rip, "lladdr", mac, "dev", "eth1"],
        )
        .unwrap();
    let status = hold.wait_timeout(Duration::from_secs(20));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        status,
        Some(0),
        "the connection did not survive the new MAC: {text}\n{}",
        raw_ipvs(&sock)
    );
    assert!(text.contains("held "), "{text}");
}

/// A frame for the VIP addressed to another host's MAC (one the switch floods, as a
/// bridge does a MAC it has not learnt) is not the director's to forward: its kernel
/// drops it before IP sees it, so IPVS never schedules it; a second director forwarding
/// what it merely overhears would hand the real servers duplicate connections. The client
/// sends to the VIP through a MAC nobody has: no answer, and the data plane counts what
/// it left to the kernel; through the director's own MAC, answers again.
#[test]
fn frames_for_another_mac_are_not_forwarded() {
    if !require_root("frames_for_another_mac_are_not_forwarded") {
        return;
    }
    let mut r = reference::build(Deployment::LvsDr, "l4mac", Some(agent())).unwrap();
    let dir = Scratch::new("l4mac");
    for (i, rs) in r.real_servers.clone().iter().enumerate() {
        r.lab
            .serve(rs, &format!("rs{}", i + 1), "0.0.0.0:80", false)
            .unwrap();
    }
    let vip = r.vips[0].to_string();
    let mut conf =
        format!("virtual_server {vip} 80 {{\n    lb_algo rr\n    lb_kind DR\n    protocol TCP\n");
    for rip in &r.rips {
        conf += &format!("    real_server {rip} 80 {{\n        weight 1\n    }}\n");
    }
    conf += "}\n";
    let (_daemon, sock) = start(&mut r, &conf, &dir, "l4mac");
    let (client, director) = (r.client.clone(), r.directors[0].clone());
    let target = format!("{vip}:80");
    let answered = wait_for(Duration::from_secs(5), || {
        r.lab
            .probe(&client, &target, 1, false)
            .is_ok_and(|a| a.iter().all(|a| a.starts_with("rs")))
    });
    assert!(answered.is_some(), "{}", raw_ipvs(&sock));
    let other_host = |sock: &Path| packets(sock, "other_host");
    let before = other_host(&sock);
    let neigh = |mac: &str| {
        r.lab
            .ip(
                &client,
                &[
                    "neigh",
                    "replace",
                    &vip,
                    "lladdr",
                    mac,
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ],
            )
            .unwrap();
    };
    neigh("02:de:ad:be:ef:01");
    let answers = r.lab.probe(&client, &target, 2, false).unwrap();
    assert!(
        !answers.iter().any(|a| a.starts_with("rs")),
        "answered through another host's MAC: {answers:?}"
    );
    assert!(other_host(&sock) > before, "{}", raw_ipvs(&sock));
    let link = r
        .lab
        .ip(&director, &["-o", "link", "show", "eth0"])
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout).into_owned();
    let own = link
        .split("link/ether ")
        .nth(1)
        .and_then(|m| m.split_whitespace().next())
        .unwrap()
        .to_string();
    neigh(&own);
    let answers = r.lab.probe(&client, &target, 2, false).unwrap();
    assert!(
        answers.iter().all(|a| a.starts_with("rs")),
        "through the director's own MAC: {answers:?}"
    );
}

/// The split of `count` new connections from the client to `[vip]:port`.
fn distribution6(r: &Reference, vip: &str, port: u16, count: u32) -> BTreeMap<String, u32> {
    let answers = r
        .lab
        .probe(&r.client, &format!("[{vip}]:{port}"), count, false)
        .unwrap();
    let mut d = BTreeMap::new();
    for a in answers {
        *d.entry(a).or_insert(0) += 1;
    }
    d
}

/// IPv6 virtual services, NAT and DR, from keepalived.conf: reference deployments 1 and 2
/// with IPv6 addresses beside their IPv4 ones, the seed's splits (rr 1:1, wrr 1:2) over
/// IPv6 real servers, the replies crossing the director for NAT and not for DR, and
/// `ipvsadm` listing the services and their connections with IPv6 addresses.
#[test]
fn ipv6_nat_and_dr_split_as_ipv4_does() {
    if !require_root("ipv6_nat_and_dr_split_as_ipv4_does") {
        return;
    }
    for (deployment, kind, label) in [
        (Deployment::LvsNat, "NAT", "l4v6nat"),
        (Deployment::LvsDr, "DR", "l4v6dr"),
    ] {
        let mut r = reference::build(deployment, label, Some(agent())).unwrap();
        let dir = Scratch::new(label);
        let client = r.client.clone();
        let rss = r.real_servers.clone();
        let v6 = r.add_ipv6().unwrap();
        let (vip, rips) = (v6.vip.as_str(), v6.rips.clone());
        for (i, rs) in rss.iter().enumerate() {
            for port in [80, 81] {
                r.lab
                    .serve(rs, &format!("rs{}", i + 1), &format!("[::]:{port}"), false)
                    .unwrap();
            }
        }
        let mut conf = String::new();
        for (port, algo, weights) in [(80, "rr", [1, 1]), (81, "wrr", [1, 2])] {
            conf += &format!(
                "virtual_server {vip} {port} {{\n    lb_algo {algo}\n    lb_kind {kind}\n    protocol TCP\n"
            );
            for (rip, w) in rips.iter().zip(weights) {
                conf += &format!("    real_server {rip} {port} {{\n        weight {w}\n    }}\n");
            }
            conf += "}\n";
        }
        let (daemon, sock) = start(&mut r, &conf, &dir, label);
        // One connection to each service first, so a broken path fails at once with what
        // the data plane counted; the splits are then over whole cycles.
        for port in [80, 81] {
            let t = std::time::Instant::now();
            let a = r
                .lab
                .probe(&client, &format!("[{vip}]:{port}"), 1, false)
                .unwrap();
            assert!(
                a.first().is_some_and(|a| a.starts_with("rs")),
                "{kind} first connection to port {port}: {a:?} after {:?}\n{}",
                t.elapsed(),
                String::from_utf8_lossy(&fulcrum_e2e::ctl(&sock, &["services"]).stdout)
            );
        }
        // Whole cycles after the first: the splits are exact whichever server it had.
        let rr = distribution6(&r, vip, 80, 20);
        assert_eq!(
            rr,
            BTreeMap::from([("rs1".to_string(), 10), ("rs2".to_string(), 10)]),
            "{kind} rr over IPv6:\n{}\n{}",
            ipvsadm(&sock, &["-Ln", "--stats"]),
            String::from_utf8_lossy(&fulcrum_e2e::ctl(&sock, &["services"]).stdout)
        );
        let wrr = distribution6(&r, vip, 81, 30);
        assert_eq!(
            wrr,
            BTreeMap::from([("rs1".to_string(), 10), ("rs2".to_string(), 20)]),
            "{kind} wrr 1:2 over IPv6"
        );
        let listing = ipvsadm(&sock, &["-Ln"]);
        assert!(
            listing.contains(&format!("TCP  [{vip}]:80 rr")),
            "{listing}"
        );
        let forward = if kind == "NAT" { "Masq" } else { "Route" };
        for rip in &rips {
            let row = listing
                .lines()
                .find(|l| l.starts_with(&format!("  -> [{rip}]:80 ")));
            assert!(
                row.is_some_and(|r| r.split_whitespace().nth(2) == Some(forward)),
                "{rip} forwarded by {forward}:\n{listing}"
            );
        }
        let stats = ipvsadm(&sock, &["-Ln", "--stats", "-t", &format!("[{vip}]:80")]);
        let out_pkts: u64 = stats
            .lines()
            .find(|l| l.starts_with("TCP "))
            .and_then(|l| l.split_whitespace().nth(4))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if kind == "NAT" {
            assert!(out_pkts >= 20, "NAT replies cross the director:\n{stats}");
        } else {
            assert_eq!(out_pkts, 0, "DR replies bypass the director:\n{stats}");
        }
        let conns = ipvsadm(&sock, &["-Lnc"]);
        assert!(
            conns.contains(&format!("[{vip}]:80")),
            "IPv6 connections listed:\n{conns}"
        );
        // The same service made again with ipvsadm's bracketed syntax.
        let svc = format!("[{vip}]:81");
        let flag = if kind == "NAT" { "-m" } else { "-g" };
        let mut edits = vec![
            vec!["-D".to_string(), "-t".into(), svc.clone()],
            vec![
                "-A".to_string(),
                "-t".into(),
                svc.clone(),
                "-s".into(),
                "rr".into(),
            ],
        ];
        for rip in &rips {
            edits.push(vec![
                "-a".to_string(),
                "-t".into(),
                svc.clone(),
                "-r".into(),
                format!("[{rip}]:81"),
                flag.into(),
            ]);
        }
        for e in &edits {
            let args: Vec<&str> = e.iter().map(String::as_str).collect();
            let (ok, _, err) = ipvsadm_with(&sock, &args, None);
            assert!(ok, "ipvsadm {args:?}: {err}");
        }
        let listing = ipvsadm(&sock, &["-Ln", "-t", &svc]);
        assert!(listing.contains(&format!("TCP  {svc} rr")), "{listing}");
        assert_eq!(
            distribution6(&r, vip, 81, 20),
            BTreeMap::from([("rs1".to_string(), 10), ("rs2".to_string(), 10)]),
            "{kind}: the service ipvsadm made\n{listing}"
        );
        daemon.signal("TERM").unwrap();
        assert!(daemon.wait_timeout(Duration::from_secs(10)).is_some());
    }
}
