//! Active-active directors behind ECMP: a router namespace running BIRD (multipath on, the
//! kernel's L4 hash), three directors each running Fulcrum and BIRD, four DR real servers
//! holding the VIP on `lo`, and a client behind the router. Each director announces the
//! VIP by BGP through its BIRD (keepalived.conf's fulcrum_bgp); the router spreads the
//! flows over the three; mh with sloppy_tcp sends a flow to the same real server whichever
//! director it reaches. Root only; bounded in time; everything is removed afterwards.

use std::path::Path;
use std::time::{Duration, Instant};

use fulcrum_lab::{require_root, wait_for, Agent, Host, Lab};

use fulcrum_e2e::{HoldPace, Scratch};

const VIP: &str = "10.1.10.65";
const ROUTER: &str = "10.30.0.1";
const DIRECTORS: [&str; 3] = ["10.30.0.11", "10.30.0.12", "10.30.0.13"];
const REAL_SERVERS: [&str; 4] = ["10.30.0.21", "10.30.0.22", "10.30.0.23", "10.30.0.24"];

struct Group {
    lab: Lab,
    dir: Scratch,
    client: Host,
    router: Host,
    directors: Vec<Host>,
    daemons: Vec<fulcrum_e2e::Daemon>,
}

fn bird(lab: &mut Lab, host: &Host, dir: &Path, name: &str, conf: &str) {
    let path = dir.join(format!("{name}.bird.conf"));
    std::fs::write(&path, conf).unwrap();
    let sock = dir.join(format!("{name}.bird.ctl"));
    let pid = dir.join(format!("{name}.bird.pid"));
    let log = dir.join(format!("{name}.bird.log"));
    lab.spawn(
        host,
        &[
            "bird".as_ref(),
            "-f".as_ref(),
            "-c".as_ref(),
            path.as_os_str(),
            "-s".as_ref(),
            sock.as_os_str(),
            "-P".as_ref(),
            pid.as_os_str(),
        ],
        Some(&log),
    )
    .unwrap();
}

/// The router's routes to the VIP: its next hops, as `ip route` lists them.
fn next_hops(lab: &Lab, router: &Host) -> Vec<String> {
    let out = lab.ip(router, &["-4", "route", "show", VIP]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut hops: Vec<String> = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "via")
        .map(|w| w[1].to_string())
        .collect();
    hops.sort();
    hops
}

fn keepalived_conf(me: &str, bird_dir: &Path, name: &str) -> String {
    let mut c = format!(
        "global_defs {{\n    fulcrum_xdp_interfaces eth0\n}}\n\
         virtual_server {VIP} 80 {{\n    lb_algo mh\n    mh-port\n    lb_kind DR\n    protocol TCP\n"
    );
    for rs in REAL_SERVERS {
        c += &format!(
            "    real_server {rs} 80 {{\n        weight 1\n        TCP_CHECK {{\n            connect_timeout 1\n            delay_loop 1\n        }}\n    }}\n"
        );
    }
    c += "}\n";
    c += &format!(
        "fulcrum_bgp {{\n    control {}\n    config_file {}\n    local_as 65001\n    neighbor {ROUTER} as 65000 local {me} hold_time 3\n}}\n",
        bird_dir.join(format!("{name}.bird.ctl")).display(),
        bird_dir.join(format!("{name}.fulcrum.conf")).display(),
    );
    c
}

fn build(label: &str) -> Group {
    let agent = Agent::new(fulcrum_e2e::bin(), &["lab-agent"]);
    let mut lab = Lab::new(label).unwrap().with_agent(agent);
    let dir = Scratch::new(label);
    let core = lab.switch("core").unwrap();
    let client = lab.host("client").unwrap();
    let router = lab.host("router").unwrap();
    lab.link(&client, "eth0", &router, "eth1").unwrap();
    lab.addr(&client, "eth0", "10.20.0.2/24").unwrap();
    lab.route(&client, "default", "10.20.0.1").unwrap();
    lab.addr(&router, "eth1", "10.20.0.1/24").unwrap();
    lab.attach(&router, "eth0", &core).unwrap();
    lab.addr(&router, "eth0", &format!("{ROUTER}/24")).unwrap();
    lab.sysctl(&router, "net.ipv4.ip_forward", "1").unwrap();
    lab.sysctl(&router, "net.ipv4.fib_multipath_hash_policy", "1")
        .unwrap();
    for (i, rs) in REAL_SERVERS.iter().enumerate() {
        let h = lab.host(&format!("rs{}", i + 1)).unwrap();
        lab.attach(&h, "eth0", &core).unwrap();
        lab.addr(&h, "eth0", &format!("{rs}/24")).unwrap();
        lab.route(&h, "default", ROUTER).unwrap();
        lab.addr(&h, "lo", &format!("{VIP}/32")).unwrap();
        for scope in ["all", "lo"] {
            lab.sysctl(&h, &format!("net.ipv4.conf.{scope}.arp_ignore"), "1")
                .unwrap();
            lab.sysctl(&h, &format!("net.ipv4.conf.{scope}.arp_announce"), "2")
                .unwrap();
        }
        lab.serve(&h, &format!("rs{}", i + 1), "0.0.0.0:80", false)
            .unwrap();
    }
    let mut router_conf = format!(
        "router id {ROUTER};\nprotocol device {{ scan time 10; }}\n\
         protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}\n"
    );
    let mut directors = Vec::new();
    for (i, d) in DIRECTORS.iter().enumerate() {
        let name = format!("d{}", i + 1);
        let h = lab.host(&name).unwrap();
        let port = lab.attach(&h, "eth0", &core).unwrap();
        // XDP_TX on a veth reaches its peer only when the peer has NAPI (REFERENCE.md).
        lab.xdp_pass_stub(&core.netns, &port).unwrap();
        lab.addr(&h, "eth0", &format!("{d}/24")).unwrap();
        lab.route(&h, "default", ROUTER).unwrap();
        router_conf += &format!(
            "protocol bgp {name} {{ local {ROUTER} as 65000; neighbor {d} as 65001; hold time 3; connect retry time 1;\n    ipv4 {{ import all; export none; }}; }}\n"
        );
        let include = dir.0.join(format!("{name}.fulcrum.conf"));
        std::fs::write(&include, "").unwrap();
        bird(
            &mut lab,
            &h,
            &dir.0,
            &name,
            &format!(
                "router id {d};\nprotocol device {{ scan time 10; }}\ninclude \"{}\";\n",
                include.display()
            ),
        );
        directors.push(h);
    }
    bird(&mut lab, &router, &dir.0, "router", &router_conf);
    // The directors' BIRD must be up before Fulcrum asks it to read its file.
    for (i, _) in DIRECTORS.iter().enumerate() {
        let sock = dir.0.join(format!("d{}.bird.ctl", i + 1));
        assert!(
            wait_for(Duration::from_secs(10), || sock.exists()).is_some(),
            "BIRD did not start in d{}",
            i + 1
        );
    }
    let mut daemons = Vec::new();
    for (i, d) in DIRECTORS.iter().enumerate() {
        let name = format!("d{}", i + 1);
        let conf = dir.0.join(format!("{name}.keepalived.conf"));
        std::fs::write(&conf, keepalived_conf(d, &dir.0, &name)).unwrap();
        let h = directors[i].clone();
        daemons.push(fulcrum_e2e::spawn_fulcrum(
            &mut lab,
            &h,
            &conf,
            &dir.0,
            &name,
            &[],
        ));
    }
    Group {
        lab,
        dir,
        client,
        router,
        directors,
        daemons,
    }
}

fn ctl(sock: &Path, args: &[&str]) -> String {
    let out = fulcrum_e2e::ctl(sock, args);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// New connections through each director, out of its `ipvsadm --stats`.
fn connections_of(g: &Group) -> Vec<u64> {
    g.daemons
        .iter()
        .map(|d| {
            let out = std::process::Command::new(fulcrum_e2e::bin())
                .args(["ipvsadm", "--control"])
                .arg(&d.sock)
                .args(["-Ln", "--stats", "--exact"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            text.lines()
                .find(|l| l.starts_with("TCP") && l.contains(VIP))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        })
        .collect()
}

fn logs(g: &Group) -> String {
    let mut s = String::new();
    for (i, d) in g.daemons.iter().enumerate() {
        s += &format!(
            "--- d{} fulcrum:\n{}\n--- ctl bgp:\n{}\n",
            i + 1,
            std::fs::read_to_string(&d.log).unwrap_or_default(),
            ctl(&d.sock, &["bgp"]),
        );
    }
    s
}

/// The router holds three next hops for the VIP, new connections spread over the three
/// directors, and when one director is SIGKILLed and cut off, 60 long-lived connections
/// (a line every 100 ms each) all carry on: the router withdraws it and the others take
/// its flows mid-way to the same real servers.
#[test]
fn three_directors_share_the_vip_and_one_dies_without_breaking_a_connection() {
    if !require_root("three_directors_share_the_vip_and_one_dies_without_breaking_a_connection") {
        return;
    }
    if !fulcrum_e2e::installed("bird") {
        return;
    }
    let started = Instant::now();
    let mut g = build("aa");
    let all: Vec<String> = DIRECTORS.iter().map(|s| s.to_string()).collect();
    let announced = wait_for(Duration::from_secs(30), || {
        next_hops(&g.lab, &g.router) == all
    });
    assert!(
        announced.is_some(),
        "the router has {:?} for {VIP}:\n{}",
        next_hops(&g.lab, &g.router),
        logs(&g)
    );
    eprintln!(
        "active-active: 3 next hops at the router {:.1} s after start",
        started.elapsed().as_secs_f64()
    );
    // The session as BIRD reports it (read every 2 s).
    let sock = g.daemons[0].sock.clone();
    let up = wait_for(Duration::from_secs(5), || {
        let s = ctl(&sock, &["bgp"]);
        s.contains("Established") && s.contains("announced")
    });
    assert!(up.is_some(), "{}", ctl(&sock, &["bgp"]));

    // New connections spread over all three.
    let answers = g
        .lab
        .probe(&g.client, &format!("{VIP}:80"), 300, false)
        .unwrap();
    assert_eq!(answers.len(), 300);
    assert!(answers.iter().all(|a| a.starts_with("rs")), "{answers:?}");
    let per = connections_of(&g);
    let total: u64 = per.iter().sum();
    assert_eq!(total, 300, "{per:?}");
    for (i, n) in per.iter().enumerate() {
        let share = *n as f64 / total as f64;
        assert!(
            (0.2..=0.47).contains(&share),
            "director {} carried {n} of {total} ({per:?})",
            i + 1
        );
    }
    eprintln!("active-active: 300 connections over the directors: {per:?}");

    // Long-lived connections; then director 1 dies.
    let log = g.dir.0.join("hold.log");
    let client = g.client.clone();
    let connections = 60;
    let pace = HoldPace {
        every_ms: 100,
        for_ms: 12_000,
        timeout_ms: 10_000,
    };
    let hold = fulcrum_e2e::spawn_hold(
        &mut g.lab,
        &client,
        &format!("{VIP}:80"),
        pace,
        connections,
        &log,
    );
    let opened = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("connected rs")
            .count()
            == connections as usize
    });
    assert!(
        opened.is_some(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    std::thread::sleep(Duration::from_secs(2));
    let before = connections_of(&g);
    assert!(
        before[0] > per[0],
        "none of the long-lived connections went through director 1: {per:?} then {before:?}"
    );
    let killed = Instant::now();
    g.daemons[0].process.kill();
    let d1 = g.directors[0].clone();
    g.lab.ip(&d1, &["link", "set", "eth0", "down"]).unwrap();
    let two: Vec<String> = all[1..].to_vec();
    let withdrawn = wait_for(Duration::from_secs(10), || {
        next_hops(&g.lab, &g.router) == two
    });
    assert!(
        withdrawn.is_some(),
        "the router still has {:?}",
        next_hops(&g.lab, &g.router)
    );
    eprintln!(
        "active-active: director 1 ({} of the {connections} long-lived connections) SIGKILLed and cut off; the router withdrew it within {} ms",
        before[0] - per[0],
        killed.elapsed().as_millis()
    );
    let status = hold.wait_timeout(Duration::from_secs(30));
    let held = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        status,
        Some(0),
        "connections broke when director 1 died (new connections per director before: {before:?}):\n{held}\n{}",
        logs(&g)
    );
    let last = held.lines().last().unwrap_or_default().to_string();
    eprintln!(
        "active-active: all {connections} long-lived connections carried on ({last}); lab {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
