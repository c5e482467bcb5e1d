//! Active-active directors behind ECMP, in the lab (crates/lab's active_active topology:
//! a BIRD router, three directors each with Fulcrum and BIRD, four DR real servers, a
//! client with 200 addresses):
//!   - new TCP connections per second and UDP packets per second through one, two and
//!     three directors (the others drained with `ctl drain-director`, so the router sends
//!     them nothing), in interleaved rounds;
//!   - the connections lost per event, each under `--held` long-lived connections (a line
//!     every 100 ms each): a director SIGKILLed and cut off, the same director joining
//!     again, a director drained, a real server removed; and for the last, the share of
//!     200 clients whose real server changed (Maglev moves those of the removed server).
//!
//!   - a director lost whole (its link cut first, then its processes killed): how long the
//!     router takes to notice, by the 3 s hold time or, with `--bfd`, by BFD.
//!
//!   - the peer active-active replaces, in the same run: reference deployment 3's two
//!     directors sharing VIP1 by VRRP, without and with `lvs_sync_daemon`, director 1 cut
//!     off and SIGKILLed under long-lived connections (at most 100): how many break, and
//!     when VIP1 is on director 2;
//!   - and, computed without the lab, Maglev's disruption on Fulcrum's mh table: the share
//!     of slots that move when k of n servers leave, the metric the Maglev paper reports.
//!
//! Needs root and BIRD 2 (`bird`, `birdc`), but for `--maglev-only`.
//! Usage: active-active [--seconds S] [--rounds R] [--held N] [--bfd] [--maglev-only]
//!        [--fulcrum PATH]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fulcrum_lab::active_active::{self, Group, REAL_SERVERS, VIP};
use fulcrum_lab::wait_for;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Drains every director but the first `n`, undrains those, and waits for the router.
fn use_directors(g: &Group, n: usize) {
    for i in 0..3 {
        let verb = if i < n {
            "undrain-director"
        } else {
            "drain-director"
        };
        g.ctl(i, &[verb]);
    }
    let want: Vec<String> = active_active::DIRECTORS[..n]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let ok = wait_for(Duration::from_secs(20), || g.next_hops() == want);
    assert!(
        ok.is_some(),
        "the router has {:?}, not {want:?}",
        g.next_hops()
    );
}

/// `count` agents in the client running `mode` against `target` for `secs`, agent i with
/// `--sources sources(i)`.
fn agents(
    g: &mut Group,
    mode: &str,
    target: &str,
    count: usize,
    secs: u64,
    sources: impl Fn(usize) -> String,
) -> Vec<(fulcrum_lab::Process, PathBuf)> {
    let client = g.client.clone();
    let for_ms = (secs * 1000).to_string();
    (0..count)
        .map(|i| {
            let log = g.dir.join(format!("{mode}-{i}.log"));
            let sources = sources(i);
            let args = [
                mode,
                "--connect",
                target,
                "--for-ms",
                &for_ms,
                "--sources",
                &sources,
            ];
            let p = g
                .lab
                .spawn_agent(&client, &args, &log)
                .expect("spawn an agent");
            (p, log)
        })
        .collect()
}

fn connections_per_second(g: &mut Group, secs: u64) -> (f64, u64) {
    let procs = agents(g, "rate", &format!("{VIP}:80"), 4, secs, |i| {
        format!("10.20.1.{}/50", 1 + 50 * i)
    });
    let (mut ok, mut failed) = (0, 0);
    for (p, log) in procs {
        p.wait_timeout(Duration::from_secs(secs + 30));
        ok += fulcrum_lab::number_before(&log, "ok");
        failed += fulcrum_lab::number_before(&log, "failed");
    }
    (ok as f64 / secs as f64, failed)
}

/// UDP packets per second (received by the real servers, sent by the client) from 6
/// flooding agents, each from its own address.
fn packets_per_second(g: &mut Group, secs: u64) -> (f64, f64) {
    let mut sinks = Vec::new();
    for i in 0..REAL_SERVERS.len() {
        let log = g.dir.join(format!("sink-{i}.log"));
        let host = fulcrum_lab::Host {
            name: format!("rs{}", i + 1),
            netns: format!("{}-rs{}", g.lab.prefix(), i + 1),
        };
        let p = g
            .lab
            .sink(&host, "0.0.0.0:9", secs * 1000 + 2000, &log)
            .expect("a sink");
        sinks.push((p, log));
    }
    let floods = agents(g, "flood", &format!("{VIP}:9"), 6, secs, |i| {
        format!("10.20.1.{}/1", 1 + 7 * i)
    });
    let wait = Duration::from_secs(secs + 30);
    let sent = fulcrum_lab::total_of(floods, "sent", wait);
    let received = fulcrum_lab::total_of(sinks, "received", wait);
    (received as f64 / secs as f64, sent as f64 / secs as f64)
}

/// How many of the held connections broke: 0 when the agent held them all.
fn broken(p: fulcrum_lab::Process, log: &Path, held: u32) -> u32 {
    let status = p.wait_timeout(Duration::from_secs(60));
    if status == Some(0) {
        return 0;
    }
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("broken "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(held)
}

/// Maglev's disruption as the Maglev paper measures it, on Fulcrum's own table (the one
/// every director builds, 65,537 slots): the share of slots whose real server changes when
/// `k` of `n` servers leave, beside the share those `k` held (what must move).
fn maglev_disruption() {
    use fulcrum_sched::{maglev, Dest};
    const M: usize = 65_537;
    println!("\n## Maglev table disruption (Fulcrum's mh table, {M} slots; computed, no lab)\n");
    println!("| servers | removed | slots that must move | slots that moved | moved beyond the removed servers' |");
    println!("|---|---|---|---|---|");
    for (n, k) in [
        (4, 1),
        (10, 1),
        (100, 1),
        (100, 5),
        (1000, 1),
        (1000, 10),
        (1000, 50),
    ] {
        let dests: Vec<Dest> = (0..n)
            .map(|i: u32| {
                Dest::new(
                    std::net::IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
                    80,
                    1,
                )
            })
            .collect();
        let before = maglev(&dests, M);
        // The first k servers leave.
        let after = maglev(&dests[k..], M);
        let addr = |t: &[Option<usize>], off: usize, s: usize| t[s].map(|i| dests[i + off].addr);
        let must = (0..M).filter(|&s| before[s].is_some_and(|i| i < k)).count();
        let moved = (0..M)
            .filter(|&s| addr(&before, 0, s) != addr(&after, k, s))
            .count();
        println!(
            "| {n} | {k} | {:.2}% | {:.2}% | {:.2}% |",
            100.0 * must as f64 / M as f64,
            100.0 * moved as f64 / M as f64,
            100.0 * (moved - must) as f64 / M as f64
        );
    }
}

/// The peer active-active replaces: reference deployment 3, two directors sharing VIP1 by
/// VRRP (the example keepalived.conf, with or without `lvs_sync_daemon`). `held`
/// long-lived connections through VIP1; director 1 loses its link, then is SIGKILLed.
/// Returns (connections broken, milliseconds until VIP1 was on director 2).
fn vrrp_failover(exe: &Path, sync: bool, held: u32) -> (u32, u128) {
    use fulcrum_lab::reference::{self, Deployment};
    let label = if sync { "bvsync" } else { "bvnosync" };
    let mut r = reference::build(
        Deployment::KeepalivedHa,
        label,
        Some(fulcrum_lab::Agent::new(exe, &["lab-agent"])),
    )
    .expect("build deployment 3");
    let dir = std::env::temp_dir().join(format!("fulcrum-bench-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    for (i, rs) in r.real_servers.clone().iter().enumerate() {
        r.lab
            .serve(rs, &format!("rs{}", i + 1), "0.0.0.0:80", false)
            .expect("serve");
    }
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/keepalived-ha.keepalived.conf");
    let mut conf = std::fs::read_to_string(example).expect("the example");
    if !sync {
        conf = conf.replace("lvs_sync_daemon eth0 VI_1", "");
    }
    let conf_path = dir.join("ha.conf");
    std::fs::write(&conf_path, conf).expect("config");
    let (d1, d2) = (r.directors[0].clone(), r.directors[1].clone());
    let mut daemons = Vec::new();
    for (host, id) in [(&d1, "lb1"), (&d2, "lb2")] {
        let sock = dir.join(format!("{id}.sock"));
        daemons.push(
            r.lab
                .spawn(
                    host,
                    &[
                        exe.as_os_str(),
                        "run".as_ref(),
                        "-f".as_ref(),
                        conf_path.as_os_str(),
                        "-i".as_ref(),
                        id.as_ref(),
                        "--control".as_ref(),
                        sock.as_os_str(),
                    ],
                    Some(&dir.join(format!("{id}.log"))),
                )
                .expect("spawn fulcrum"),
        );
    }
    let vip1 = reference::VIP1.to_string();
    let holds = |lab: &fulcrum_lab::Lab, host: &fulcrum_lab::Host| {
        lab.ip(host, &["-4", "addr", "show", "dev", "eth0"])
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{vip1}/")))
            .unwrap_or(false)
    };
    let settled = wait_for(Duration::from_secs(15), || {
        holds(&r.lab, &d1) && !holds(&r.lab, &d2)
    });
    assert!(settled.is_some(), "VIP1 did not settle on director 1");
    r.lab
        .ip(&r.client, &["neigh", "flush", "to", &vip1])
        .expect("flush");
    let log = dir.join("hold.log");
    let client = r.client.clone();
    let hold = r
        .lab
        .spawn(
            &client,
            &[
                exe.to_string_lossy().as_ref(),
                "lab-agent",
                "hold",
                "--connect",
                &format!("{vip1}:80"),
                "--every-ms",
                "200",
                "--for-ms",
                "15000",
                "--connections",
                &held.to_string(),
                "--timeout-ms",
                "20000",
            ],
            Some(&log),
        )
        .expect("hold");
    let opened = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("connected rs")
            .count()
            == held as usize
    });
    assert!(opened.is_some(), "the connections did not open");
    // Time for the master to sync them (it sends once a connection is established and has
    // carried a few packets).
    std::thread::sleep(Duration::from_secs(3));
    // Director 1 dies as a machine does: its link first, then its process.
    let t = Instant::now();
    r.lab
        .ip(&d1, &["link", "set", "eth0", "down"])
        .expect("cut");
    daemons[0].kill();
    let moved =
        wait_for(Duration::from_secs(15), || holds(&r.lab, &d2)).map(|_| t.elapsed().as_millis());
    let b = broken(hold, &log, held);
    let _ = std::fs::remove_dir_all(&dir);
    (b, moved.unwrap_or(u128::MAX))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--maglev-only") {
        maglev_disruption();
        return;
    }
    if !fulcrum_lab::is_root() {
        eprintln!("active-active needs root (it builds network namespaces)");
        std::process::exit(2);
    }
    if std::process::Command::new("bird")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("active-active needs BIRD 2 (apt-get install bird2; scripts/setup does)");
        std::process::exit(2);
    }
    let secs: u64 = arg("--seconds").and_then(|v| v.parse().ok()).unwrap_or(5);
    let rounds: usize = arg("--rounds").and_then(|v| v.parse().ok()).unwrap_or(3);
    let held: u32 = arg("--held").and_then(|v| v.parse().ok()).unwrap_or(300);
    let exe = arg("--fulcrum").map(PathBuf::from).unwrap_or_else(|| {
        std::env::current_exe()
            .unwrap_or_default()
            .with_file_name("fulcrum")
    });
    let dir = std::env::temp_dir().join(format!("fulcrum-bench-aa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let bfd = std::env::args().any(|a| a == "--bfd");
    let mut g = active_active::build("baa", &exe, &dir, bfd).expect("build the topology");
    let all = Group::directors_but(None);
    let up = wait_for(Duration::from_secs(30), || g.next_hops() == all);
    assert!(up.is_some(), "not announced:\n{}", g.logs());
    let client = g.client.clone();
    g.lab
        .sysctl(&client, "net.ipv4.tcp_tw_reuse", "1")
        .expect("tw_reuse");
    // A UDP service beside the TCP one, added with ipvsadm on each director.
    for d in &g.directors {
        let sock = d.sock.to_string_lossy().into_owned();
        let mut lines = vec![vec!["-A", "-u", "10.1.10.65:9", "-s", "mh"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()];
        for rs in REAL_SERVERS {
            lines.push(
                ["-a", "-u", "10.1.10.65:9", "-r", &format!("{rs}:9"), "-g"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
            );
        }
        for l in lines {
            let ok = std::process::Command::new(&exe)
                .args(["ipvsadm", "--control", &sock])
                .args(&l)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ipvsadm {l:?}");
        }
    }

    // Throughput through 1, 2 and 3 directors.
    let mut cps: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut failed = [0u64; 3];
    let mut pps: Vec<Vec<(f64, f64)>> = vec![Vec::new(); 3];
    for _ in 0..rounds {
        for n in 1..=3 {
            use_directors(&g, n);
            let (c, f) = connections_per_second(&mut g, secs);
            cps[n - 1].push(c);
            failed[n - 1] += f;
            pps[n - 1].push(packets_per_second(&mut g, secs));
        }
    }
    use_directors(&g, 3);
    println!("## Active-active: through one, two and three directors (medians of {rounds} rounds of {secs} s)\n");
    println!("| directors | connections/s | failed | x one | packets/s received | packets/s sent | x one |");
    println!("|---|---|---|---|---|---|---|");
    let one_c = median(cps[0].clone());
    let one_p = median(pps[0].iter().map(|p| p.0).collect());
    for n in 0..3 {
        let c = median(cps[n].clone());
        let r = median(pps[n].iter().map(|p| p.0).collect());
        let s = median(pps[n].iter().map(|p| p.1).collect());
        println!(
            "| {} | {c:.0} | {} | {:.2} | {r:.0} | {s:.0} | {:.2} |",
            n + 1,
            failed[n],
            c / one_c,
            r / one_p
        );
    }

    // Connections lost per event.
    println!("\n## Active-active: connections lost per event ({held} long-lived connections from 200 addresses, a line every 100 ms each)\n");
    println!("| event | broken | of | fraction | note |");
    println!("|---|---|---|---|---|");
    let (p, log) = g.hold("bench-kill", held, 12_000).expect("hold");
    // New connections meanwhile, one every 10 ms from one address (ports spread them over
    // the directors): those that fail while the router still sends flows to the dead one.
    let (watch, watch_log) = g.watch("bench-kill", 6_000).expect("watch");
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    g.kill_director(0);
    let d1 = g.directors[0].host.clone();
    g.lab
        .ip(&d1, &["link", "set", "eth0", "down"])
        .expect("cut");
    let rest = Group::directors_but(Some(0));
    let gone = wait_for(Duration::from_secs(15), || g.next_hops() == rest);
    let note = match gone {
        Some(_) => format!(
            "withdrawn at the router within {} ms",
            t.elapsed().as_millis()
        ),
        None => "not withdrawn within 15 s".into(),
    };
    let b = broken(p, &log, held);
    let (tried, failed, _) = Group::watched(watch, &watch_log);
    println!(
        "| director SIGKILLed and cut off | {b} | {held} | {:.3} | {note}; new connections meanwhile: {failed} of {tried} failed |",
        b as f64 / held as f64
    );

    let (p, log) = g.hold("bench-join", held, 10_000).expect("hold");
    g.lab
        .ip(&d1, &["link", "set", "eth0", "up"])
        .expect("uncut");
    let t = Instant::now();
    g.start_director(0).expect("restart");
    let back = wait_for(Duration::from_secs(30), || g.next_hops() == all);
    let note = match back {
        Some(_) => format!(
            "announced again {:.1} s after its start",
            t.elapsed().as_secs_f64()
        ),
        None => "not announced within 30 s".into(),
    };
    let b = broken(p, &log, held);
    println!(
        "| director joins | {b} | {held} | {:.3} | {note} |",
        b as f64 / held as f64
    );

    let (p, log) = g.hold("bench-drain", held, 10_000).expect("hold");
    let t = Instant::now();
    g.ctl(1, &["drain-director"]);
    let moved = wait_for(Duration::from_secs(15), || {
        g.next_hops() == Group::directors_but(Some(1))
    })
    .map(|_| t.elapsed().as_secs_f64());
    let drained = wait_for(Duration::from_secs(30), || {
        g.ctl(1, &["bgp"]).contains("drained")
    })
    .map(|_| t.elapsed().as_secs_f64());
    let note = format!(
        "the router moved its flows off {:.1} s after the command, the VIP withdrawn at {:.1} s",
        moved.unwrap_or(f64::NAN),
        drained.unwrap_or(f64::NAN)
    );
    let b = broken(p, &log, held);
    println!(
        "| drain-director | {b} | {held} | {:.3} | {note} |",
        b as f64 / held as f64
    );
    g.ctl(1, &["undrain-director"]);
    wait_for(Duration::from_secs(15), || g.next_hops() == all);

    let before = g.probe(200).expect("probe");
    let (p, log) = g.hold("bench-rs", held, 8_000).expect("hold");
    let on_rs4 = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("connected rs4")
        .count();
    g.servers[3].kill();
    let b = broken(p, &log, held);
    wait_for(Duration::from_secs(15), || {
        (0..3).all(|i| g.lists(i, "10.30.0.24:80") == Some(false))
    });
    let after = g.probe(200).expect("probe");
    let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    let were = before.iter().filter(|a| *a == "rs4").count();
    println!(
        "| real server removed (1 of 4) | {b} | {held} | {:.3} | {on_rs4} were on it; {changed} of 200 clients changed server ({:.1}%), {were} of them had been on it |",
        b as f64 / held as f64,
        changed as f64 / 2.0
    );

    // A director lost whole: nothing on it can withdraw; the router's hold time or BFD.
    let (p, log) = g.hold("bench-lost", held, 12_000).expect("hold");
    let (watch, watch_log) = g.watch("bench-lost", 8_000).expect("watch");
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    let d2 = g.directors[1].host.clone();
    g.lab
        .ip(&d2, &["link", "set", "eth0", "down"])
        .expect("cut");
    g.kill_director(1);
    let gone = wait_for(Duration::from_secs(15), || {
        g.next_hops() == Group::directors_but(Some(1))
    });
    let note = match gone {
        Some(_) => format!(
            "the router noticed by {} after {} ms",
            if bfd { "BFD" } else { "its 3 s hold time" },
            t.elapsed().as_millis()
        ),
        None => "not withdrawn within 15 s".into(),
    };
    let b = broken(p, &log, held);
    let (tried, failed, _) = Group::watched(watch, &watch_log);
    println!(
        "| director lost whole (link cut, then killed){} | {b} | {held} | {:.3} | {note}; new connections meanwhile: {failed} of {tried} failed |",
        if bfd { ", BFD" } else { "" },
        b as f64 / held as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
    drop(g);

    // The peer, in the same run: one director at a time, VRRP moving VIP1.
    let held_vrrp = held.min(100);
    println!(
        "\n## The peer: VRRP failover on reference deployment 3 ({held_vrrp} long-lived connections through VIP1, director 1's link cut, then SIGKILLed)\n"
    );
    println!("| lvs_sync_daemon | broken | of | fraction | VIP1 on director 2 after |");
    println!("|---|---|---|---|---|");
    for sync in [false, true] {
        let (b, moved) = vrrp_failover(&exe, sync, held_vrrp);
        println!(
            "| {} | {b} | {held_vrrp} | {:.3} | {moved} ms |",
            if sync { "on" } else { "off" },
            b as f64 / held_vrrp as f64
        );
    }
    maglev_disruption();
}
