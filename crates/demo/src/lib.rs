//! `fulcrum demo`: the reference deployments, built in network namespaces and shown working.
//!
//! What it shows grows with the project. Today: each topology is built with MISSION.md's
//! addresses, every real server answers real TCP from its director, the example
//! configuration for the deployment is loaded and summarised; in deployments 1 and 2
//! fulcrum forwards 300 new connections from the client through the VIP with the example
//! configurations (rr, then wrr 1:2 for NAT) and prints the split and `ipvsadm -Ln`; in
//! deployment 3 fulcrum runs VRRP on both directors and a killed director's VIP moves,
//! with the time measured; in the fifth, LVS-TUN, connections go through each tunnel type
//! to real servers behind a router that decapsulate with `fulcrum decap`; in the sixth,
//! three directors announce one VIP by BGP to a router that spreads the flows over them,
//! and one is killed under load without breaking a connection.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use fulcrum_lab::reference::{self, Deployment, Reference};
use fulcrum_lab::wait_for;
use fulcrum_lab::Agent;

use fulcrum_node::Sources;

/// Builds every deployment, or `only` the one named (nat, dr, keepalived-ha, nginx-ha, tun,
/// active-active),
/// running `exe` (the fulcrum binary) as the directors' daemon and the lab's agent.
pub fn run(only: Option<&str>, exe: PathBuf) -> anyhow::Result<ExitCode> {
    if !fulcrum_lab::is_root() {
        bail!(
            "the demo builds network namespaces and needs root: run it as root (sudo fulcrum demo)"
        );
    }
    let (deployments, active): (Vec<Deployment>, bool) = match only {
        Some("active-active") => (Vec::new(), true),
        Some(name) => (
            vec![Deployment::from_name(name).with_context(|| {
                format!("unknown deployment '{name}': use nat, dr, keepalived-ha, nginx-ha, tun or active-active")
            })?],
            false,
        ),
        None => (Deployment::ALL.to_vec(), true),
    };
    let examples = examples_dir(&exe);

    // The work runs on its own thread so that Ctrl-C can clean up while it is blocked.
    let worker = std::thread::spawn(move || -> anyhow::Result<()> {
        for d in deployments {
            show(d, &exe, examples.as_deref())?;
        }
        if active {
            active_active(&exe)?;
        }
        Ok(())
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let interrupted = rt.block_on(async {
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = int.recv() => return Ok::<bool, std::io::Error>(true),
                _ = term.recv() => return Ok(true),
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                    if worker.is_finished() {
                        return Ok(false);
                    }
                }
            }
        }
    })?;
    if interrupted {
        let removed = fulcrum_lab::remove_all_of_this_process();
        eprintln!("interrupted: removed {removed} namespace(s)");
        return Ok(ExitCode::from(130));
    }
    match worker.join() {
        Ok(result) => result.map(|()| ExitCode::SUCCESS),
        Err(_) => bail!("the demo failed (see above); its namespaces were removed"),
    }
}

/// Example configurations: next to the binary's source tree when run from a checkout.
fn examples_dir(exe: &Path) -> Option<PathBuf> {
    let from_manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    if from_manifest.is_dir() {
        return Some(from_manifest);
    }
    exe.ancestors()
        .map(|a| a.join("examples"))
        .find(|p| p.is_dir())
}

fn show(d: Deployment, exe: &Path, examples: Option<&Path>) -> anyhow::Result<()> {
    println!("=== {} ===", d.title());
    let agent = Agent::new(exe, &["lab-agent"]);
    let mut r: Reference = reference::build(d, "demo", Some(agent))
        .with_context(|| format!("building {}", d.name()))?;
    print!("{}", r.describe());

    // Real servers answer who they are, over real TCP from the director.
    let director = r.directors[0].clone();
    for (i, rs) in r.real_servers.clone().iter().enumerate() {
        let name = format!("RIP{} {}", i + 1, r.rips[i]);
        r.lab.serve(rs, &name, "0.0.0.0:80", true)?;
    }
    for rip in r.rips.clone() {
        let answers = r.lab.probe(&director, &format!("{rip}:80"), 3, true)?;
        println!(
            "  {} -> {rip}:80  3 HTTP requests answered by: {}",
            director.name,
            answers.join(", ")
        );
    }
    r.lab
        .serve(&director, &director.name, "0.0.0.0:8081", true)?;
    let answers = r.lab.probe(
        &r.client.clone(),
        &format!("{}:8081", reference::DIP1),
        1,
        true,
    )?;
    println!(
        "  client -> {}:8081 answered by: {}",
        reference::DIP1,
        answers.join(", ")
    );

    if let Some(dir) = examples {
        summarise(d, dir);
        match d {
            Deployment::KeepalivedHa => failover(&mut r, exe, dir)?,
            Deployment::LvsNat => {
                let vip = r.vips[0].to_string();
                forward(
                    &mut r,
                    exe,
                    &dir.join("lvs-nat.keepalived.conf"),
                    &[80],
                    300,
                    &vip,
                )?;
                forward(
                    &mut r,
                    exe,
                    &dir.join("lvs-nat-wrr.keepalived.conf"),
                    &[80],
                    300,
                    &vip,
                )?;
                over_ipv6(&mut r, exe, &dir.join("lvs-nat6.keepalived.conf"), &[80])?;
            }
            Deployment::LvsDr => {
                let vip = r.vips[0].to_string();
                forward(
                    &mut r,
                    exe,
                    &dir.join("lvs-dr.keepalived.conf"),
                    &[80],
                    300,
                    &vip,
                )?;
                over_ipv6(&mut r, exe, &dir.join("lvs-dr6.keepalived.conf"), &[80])?;
            }
            Deployment::NginxHa => proxy_failover(&mut r, exe, dir)?,
            Deployment::LvsTun => tunnel(&mut r, exe, dir)?,
        }
    }
    println!();
    Ok(())
}

/// The deployment again over IPv6, beside its IPv4 (the lab's addresses added to the same
/// hosts, the real servers answering on their IPv6 addresses too), with the example's
/// IPv6 virtual service.
fn over_ipv6(r: &mut Reference, exe: &Path, conf: &Path, ports: &[u16]) -> anyhow::Result<()> {
    let v6 = r.add_ipv6()?;
    println!(
        "  IPv6 beside IPv4: VIP {}, real servers {}",
        v6.vip,
        v6.rips.join(" and ")
    );
    for (i, rs) in r.real_servers.clone().iter().enumerate() {
        let name = format!("RIP{} {}", i + 1, v6.rips[i]);
        for addr in &v6.listen[i] {
            for port in ports {
                r.lab.serve(rs, &name, &format!("[{addr}]:{port}"), true)?;
            }
        }
    }
    forward(r, exe, conf, ports, 30, &v6.vip)
}

/// Runs fulcrum on the director with an example configuration, sends `connections` new
/// connections from the client through `vip` to each of `ports`, and prints who answered
/// and `ipvsadm -Ln --stats`.
fn forward(
    r: &mut Reference,
    exe: &Path,
    conf: &Path,
    ports: &[u16],
    connections: u32,
    vip: &str,
) -> anyhow::Result<()> {
    let scratch = Scratch::new("forward")?;
    let tmp = scratch.path();
    let name = conf
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sock = tmp.join("l4.sock");
    let log = tmp.join(format!("{name}.log"));
    let director = r.directors[0].clone();
    let args: Vec<std::ffi::OsString> = vec![
        exe.into(),
        "run".into(),
        "-f".into(),
        conf.into(),
        "--control".into(),
        sock.clone().into(),
    ];
    let daemon = r.lab.spawn(&director, &args, Some(&log))?;
    let ipvsadm = |args: &[&str]| -> String {
        std::process::Command::new(exe)
            .arg("ipvsadm")
            .arg("--control")
            .arg(&sock)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    if wait_for(Duration::from_secs(20), || {
        ipvsadm(&["-Ln"]).contains("  -> ")
    })
    .is_none()
    {
        let _ = daemon.signal("TERM");
        bail!(
            "fulcrum did not install the rules of {name}\n{}",
            scratch.logs()
        );
    }
    println!("  fulcrum run -f examples/{name} on the director:");
    for port in ports {
        let target = match vip.parse::<std::net::IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, *port).to_string(),
            Err(_) => format!("{vip}:{port}"),
        };
        let answers = r.lab.probe(&r.client.clone(), &target, connections, true)?;
        let mut split: std::collections::BTreeMap<String, u32> = Default::default();
        for a in answers {
            *split.entry(a).or_default() += 1;
        }
        println!("  client -> {target}, {connections} new connections:");
        for (who, n) in &split {
            println!("    {n:>4}  {who}");
        }
    }
    println!("  fulcrum ipvsadm -Ln --stats:");
    for line in ipvsadm(&["-Ln", "--stats"]).lines() {
        println!("    {line}");
    }
    daemon.signal("TERM")?;
    daemon.wait_timeout(Duration::from_secs(10));
    Ok(())
}

/// The TUN deployment: `fulcrum decap` on the real servers (pinned on a bpffs of the
/// demo's), fulcrum on the director with the example (one service per tunnel type), 30
/// new connections through each, and what each real server's decapsulator took off.
fn tunnel(r: &mut Reference, exe: &Path, examples: &Path) -> anyhow::Result<()> {
    let scratch = Scratch::new("tun")?;
    let pins = fulcrum_lab::Bpffs::new(scratch.path().join("bpf"))?;
    r.decapsulate(exe, &pins.0)?;
    println!(
        "  fulcrum decap eth0 --gue-port {} on each real server (this kernel has no ipip, fou or gre)",
        reference::TUN_GUE_PORT
    );
    for (i, rs) in r.real_servers.clone().iter().enumerate() {
        let name = format!("RIP{} {}", i + 1, r.rips[i]);
        for port in [81, 82] {
            r.lab.serve(rs, &name, &format!("0.0.0.0:{port}"), true)?;
        }
    }
    let vip = r.vips[0].to_string();
    forward(
        r,
        exe,
        &examples.join("lvs-tun.keepalived.conf"),
        &[80, 81, 82],
        30,
        &vip,
    )?;
    // Again in IPv6 tunnels.
    over_ipv6(
        r,
        exe,
        &examples.join("lvs-tun6.keepalived.conf"),
        &[80, 81, 82],
    )?;
    println!("  replies go from the real servers to the client through the router; what each decapsulated:");
    for rs in r.real_servers.clone() {
        let out = r.lab.exec(
            &rs.netns,
            [
                exe.as_os_str(),
                "decap".as_ref(),
                "eth0".as_ref(),
                "--stats".as_ref(),
                "--bpf-dir".as_ref(),
                pins.0.join(&rs.name).as_os_str(),
            ],
        )?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        println!(
            "    {}: {}",
            rs.name,
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    Ok(())
}

/// The sixth deployment: three directors announce the VIP by BGP through BIRD to a
/// router that spreads the flows over them (ECMP); 300 new connections show the spread,
/// then director 1 is SIGKILLed and cut off while 60 long-lived connections run, and the
/// broken ones are counted.
fn active_active(exe: &Path) -> anyhow::Result<()> {
    use fulcrum_lab::active_active::{self, Group, DIRECTORS, REAL_SERVERS, ROUTER, VIP};
    println!("=== 6. Active-active directors behind ECMP (beyond MISSION.md's four) ===");
    if !fulcrum_lab::is_root() {
        bail!("needs root");
    }
    if std::process::Command::new("bird")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("  skipped: BIRD 2 is not installed (apt install bird2; scripts/setup does)");
        return Ok(());
    }
    let scratch = Scratch::new("active-active")?;
    let mut g = active_active::build("demo-aa", exe, scratch.path(), true)
        .with_context(|| format!("building the active-active deployment\n{}", scratch.logs()))?;
    println!("  client      10.20.0.2 and 10.20.1.1-200, behind the router");
    println!("  router      10.20.0.1 (client side), {ROUTER} (BIRD: BGP to each director, ECMP with the L4 hash)");
    println!(
        "  directors   {} (Fulcrum + BIRD, AS65001; fulcrum_bgp announces VIP {VIP})",
        DIRECTORS.join(", ")
    );
    println!(
        "  real servers {} (DR, VIP on lo; lb_algo mh, so every director picks the same one)",
        REAL_SERVERS.join(", ")
    );
    let all = Group::directors_but(None);
    let took = wait_for(Duration::from_secs(30), || g.next_hops() == all)
        .with_context(|| format!("the router never held three next hops:\n{}", g.logs()))?;
    println!(
        "  the router's route to {VIP}: via {} ({:.1} s after the directors started)",
        g.next_hops().join(", via "),
        took.as_secs_f64()
    );
    let before = g.connections();
    let answers = g.probe(300)?;
    let after = g.connections();
    let ok = answers.iter().filter(|a| a.starts_with("rs")).count();
    println!("  client -> {VIP}:80, 300 new connections from 200 addresses: {ok} answered");
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        println!(
            "    director {} ({}) carried {}",
            i + 1,
            DIRECTORS[i],
            a - b
        );
    }
    let (hold, log) = g.hold("demo", 60, 10_000)?;
    std::thread::sleep(Duration::from_secs(2));
    let killed = std::time::Instant::now();
    g.kill_director(0);
    let d1 = g.directors[0].host.clone();
    g.lab.ip(&d1, &["link", "set", "eth0", "down"])?;
    let rest = Group::directors_but(Some(0));
    let withdrawn = wait_for(Duration::from_secs(10), || g.next_hops() == rest);
    println!(
        "  director 1 SIGKILLed and its link cut under 60 long-lived connections (a line every 100 ms each):"
    );
    match withdrawn {
        Some(_) => println!(
            "    the router dropped it within {} ms (its BGP routes hang on a tap the dead daemon no longer holds)",
            killed.elapsed().as_millis()
        ),
        None => println!("    the router still routes through it: {:?}", g.next_hops()),
    }
    let status = hold.wait_timeout(Duration::from_secs(40));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let broken = match status {
        Some(0) => 0,
        _ => text
            .lines()
            .last()
            .and_then(|l| l.strip_prefix("broken "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(60),
    };
    println!("    broken connections: {broken} of 60 (the other directors took the moved flows mid-way, to the same real servers)");
    Ok(())
}

fn holds(r: &Reference, host: &fulcrum_lab::Host, vip: &str) -> bool {
    r.lab
        .ip(host, &["-4", "addr", "show", "dev", "eth0"])
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{vip}/")))
        .unwrap_or(false)
}

/// Deployment 3: fulcrum on both directors with the example configuration, then director
/// 1 is killed and VIP1 moves to director 2; the time it took is measured.
fn failover(r: &mut Reference, exe: &Path, examples: &Path) -> anyhow::Result<()> {
    let conf = examples.join("keepalived-ha.keepalived.conf");
    let scratch = Scratch::new("failover")?;
    let tmp = scratch.path();
    let (d1, d2) = (r.directors[0].clone(), r.directors[1].clone());
    let (vip1, vip2) = (reference::VIP1.to_string(), reference::VIP2.to_string());
    let mut daemons = Vec::new();
    for (host, id) in [(&d1, "lb1"), (&d2, "lb2")] {
        let sock = tmp.join(format!("{id}.sock"));
        let log = tmp.join(format!("{id}.log"));
        let args: Vec<std::ffi::OsString> = vec![
            exe.into(),
            "run".into(),
            "-f".into(),
            conf.clone().into(),
            "-i".into(),
            id.into(),
            "--control".into(),
            sock.into(),
        ];
        daemons.push(r.lab.spawn(host, &args, Some(&log))?);
    }
    println!("  fulcrum runs on both directors (-i lb1, -i lb2): VRRP elects...");
    let settled = wait_for(Duration::from_secs(8), || {
        holds(r, &d1, &vip1) && holds(r, &d2, &vip2)
    });
    if settled.is_none() {
        anyhow::bail!("the VIPs did not settle\n{}", scratch.logs());
    }
    let client = r.client.clone();
    for (vip, director) in [(&vip1, "director1"), (&vip2, "director2")] {
        // The health checks may still be bringing the real servers in.
        wait_for(Duration::from_secs(5), || {
            r.lab
                .probe(&client, &format!("{vip}:80"), 1, true)
                .is_ok_and(|a| a.iter().all(|a| a.starts_with("RIP")))
        });
        let a = r.lab.probe(&client, &format!("{vip}:80"), 4, true)?;
        println!(
            "  client -> {vip}:80 (the VIP on {director}, DR): 4 HTTP requests answered by: {}",
            a.join(", ")
        );
    }
    // lvs_sync_daemon eth0 VI_1: director 1, VI_1's master, sends its connections.
    let lb2 = tmp.join("lb2.sock");
    let synced = || {
        let out = std::process::Command::new(exe)
            .args(["ipvsadm", "--control"])
            .arg(&lb2)
            .arg("-Lnc")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.lines()
            .filter(|l| l.contains(&format!("{vip1}:80")))
            .count()
    };
    wait_for(Duration::from_secs(3), || synced() > 0);
    println!(
        "  director2 holds {} of director1's connections through VIP1 (lvs_sync_daemon eth0 VI_1)",
        synced()
    );
    println!("  SIGKILL fulcrum on director1...");
    daemons[0].signal("KILL")?;
    match wait_for(Duration::from_secs(6), || holds(r, &d2, &vip1)) {
        Some(t) => println!(
            "  VIP1 {vip1} moved to director2 after {:.2} s (bound: 3 x advert_int 1 s + skew 0.61 s)",
            t.as_secs_f64()
        ),
        None => println!("  VIP1 did not move within 6 s\n{}", scratch.logs()),
    }
    let moved = wait_for(Duration::from_secs(3), || {
        r.lab
            .probe(&client, &format!("{vip1}:80"), 1, true)
            .is_ok_and(|a| a.iter().all(|a| a.starts_with("RIP")))
    });
    let a = r.lab.probe(&client, &format!("{vip1}:80"), 4, true)?;
    println!(
        "  client -> {vip1}:80 (the VIP on director2 now): 4 HTTP requests answered by: {}{}",
        a.join(", "),
        if moved.is_some() {
            " (the client followed our gratuitous ARP)"
        } else {
            ""
        }
    );
    Ok(())
}

/// Deployment 4: fulcrum proxies on both nodes with the example configurations (VRRP from
/// the keepalived.conf, the proxy from the nginx.conf); under steady load on VIP1, proxy 1
/// dies, and the client's failed requests and outage are counted.
fn proxy_failover(r: &mut Reference, exe: &Path, examples: &Path) -> anyhow::Result<()> {
    let scratch = Scratch::new("proxy")?;
    let tmp = scratch.path();
    let (p1, p2) = (r.directors[0].clone(), r.directors[1].clone());
    let (vip1, vip2) = (reference::VIP1.to_string(), reference::VIP2.to_string());
    let mut daemons = Vec::new();
    for (host, id) in [(&p1, "proxy1"), (&p2, "proxy2")] {
        // The example nginx.conf, with its access log in the demo's directory.
        let nginx = std::fs::read_to_string(examples.join("nginx-ha.nginx.conf"))?.replace(
            "/var/log/fulcrum/access.log",
            &tmp.join(format!("{id}-access.log")).display().to_string(),
        );
        let nginx_conf = tmp.join(format!("{id}.nginx.conf"));
        std::fs::write(&nginx_conf, nginx)?;
        let args: Vec<std::ffi::OsString> = vec![
            exe.into(),
            "run".into(),
            "-f".into(),
            examples.join("nginx-ha.keepalived.conf").into(),
            "-i".into(),
            id.into(),
            "--nginx-conf".into(),
            nginx_conf.into(),
            "--no-forwarding".into(),
            "--control".into(),
            tmp.join(format!("{id}.sock")).into(),
        ];
        daemons.push(
            r.lab
                .spawn(host, &args, Some(&tmp.join(format!("{id}.log"))))?,
        );
    }
    // The real servers answer on :80 already (above).
    println!("  fulcrum runs on both proxies (-i proxy1, -i proxy2): VRRP elects, the proxies listen on :80...");
    let settled = wait_for(Duration::from_secs(12), || {
        holds(r, &p1, &vip1) && holds(r, &p2, &vip2)
    });
    if settled.is_none() {
        anyhow::bail!("the VIPs did not settle\n{}", scratch.logs());
    }
    let client = r.client.clone();
    for vip in [&vip1, &vip2] {
        let a = r.lab.probe(&client, &format!("{vip}:80"), 4, true)?;
        println!(
            "  client -> {vip}:80, 4 HTTP requests answered by: {}",
            a.join(", ")
        );
    }
    println!("  steady load on {vip1}:80 (a new connection every 10 ms); SIGKILL proxy1 and take its link down...");
    let agent = r.lab.agent_command(&client)?;
    let mut watch = std::process::Command::new(&agent[0])
        .args(&agent[1..])
        .args([
            "watch",
            "--connect",
            &format!("{vip1}:80"),
            "--every-ms",
            "10",
        ])
        .args(["--for-ms", "8000", "--timeout-ms", "100", "--http"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(1500));
    daemons[0].signal("KILL")?;
    r.lab.ip(&p1, &["link", "set", "eth0", "down"])?;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut watch.stdout.take().expect("piped"), &mut out)?;
    let _ = watch.wait();
    let w = fulcrum_lab::watched(&out, Duration::from_millis(10), |a| a.starts_with("RIP"));
    println!(
        "  {} requests, {} failed; outage {} ms (bound: 3 x advert_int 1 s + skew 0.61 s); both VIPs now on proxy2: {}",
        w.attempts,
        w.failed,
        w.outage.as_millis(),
        holds(r, &p2, &vip1) && holds(r, &p2, &vip2)
    );
    Ok(())
}

fn summarise(d: Deployment, dir: &Path) {
    let (file, id, nginx) = match d {
        Deployment::LvsNat => ("lvs-nat.keepalived.conf", None, None),
        Deployment::LvsDr => ("lvs-dr.keepalived.conf", None, None),
        Deployment::LvsTun => ("lvs-tun.keepalived.conf", None, None),
        Deployment::KeepalivedHa => ("keepalived-ha.keepalived.conf", Some("lb1"), None),
        Deployment::NginxHa => (
            "nginx-ha.keepalived.conf",
            Some("proxy1"),
            Some("nginx-ha.nginx.conf"),
        ),
    };
    let sources = Sources {
        keepalived: Some(dir.join(file)),
        nginx: nginx.map(|n| dir.join(n)),
        config_id: id.map(str::to_string),
        host_checks: false,
        strict: false,
        subsystems: Default::default(),
        nginx_globals: None,
    };
    let (config, report) = sources.load();
    let Some(config) = config else {
        println!("  examples/{file}: invalid\n{}", report.text);
        return;
    };
    let mut parts = Vec::new();
    if let Some(k) = &config.keepalived {
        for i in &k.vrrp_instances {
            parts.push(format!(
                "vrrp_instance {} (VRID {}, priority {})",
                i.name, i.virtual_router_id, i.priority
            ));
        }
        for v in &k.virtual_servers {
            let rs: Vec<String> = v
                .real_servers
                .iter()
                .map(|r| format!("{} w{}", r.addr, r.weight))
                .collect();
            let key = match &v.key {
                fulcrum_keepalived_conf::ServiceKey::Address { addr, port } => {
                    format!("{addr}:{port}")
                }
                other => format!("{other:?}"),
            };
            parts.push(format!(
                "virtual_server {key} {} {} -> {}",
                v.lb_algo,
                v.forward_method(),
                rs.join(", ")
            ));
        }
    }
    if let Some(http) = config.nginx.as_ref().and_then(|n| n.http.as_ref()) {
        for u in &http.upstreams {
            let s: Vec<String> = u
                .servers
                .iter()
                .map(|s| format!("{}:{}", s.host, s.port))
                .collect();
            parts.push(format!("upstream {} -> {}", u.name, s.join(", ")));
        }
    }
    let id = id.map(|i| format!(" (-i {i})")).unwrap_or_default();
    println!("  examples/{file}{id} is valid:");
    for p in parts {
        println!("    {p}");
    }
}

/// A deployment's scratch directory (sockets, logs, rewritten configurations), removed
/// when dropped: also when the deployment fails, whose error carries the logs' last lines.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("fulcrum-demo-{}-{what}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// The last lines of every log in the directory, each under its file name.
    fn logs(&self) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(&self.0) else {
            return out;
        };
        let mut logs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let name = log.file_name().unwrap_or_default().to_string_lossy();
            out.push_str(&format!("  --- last lines of {name}\n"));
            for line in &lines[lines.len().saturating_sub(20)..] {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
