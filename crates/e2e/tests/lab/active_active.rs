//! Active-active directors behind ECMP (crates/lab's active_active topology): a router
//! namespace running BIRD (multipath on, the kernel's L4 hash), three directors each
//! running Fulcrum and BIRD, four DR real servers holding the VIP on `lo`, and a client
//! with 200 addresses behind the router. Each director announces the VIP by BGP through
//! its BIRD (keepalived.conf's fulcrum_bgp); the router spreads the flows over the three;
//! mh with sloppy_tcp sends a flow to the same real server whichever director it reaches.
//! Root only; bounded in time; everything is removed afterwards.

use std::path::Path;
use std::time::{Duration, Instant};

use fulcrum_lab::active_active::{self, Group, VIP};
use fulcrum_lab::{require_root, wait_for};

use fulcrum_e2e::Scratch;

/// Waits for a hold to end: its last line.
fn held(g: &Group, p: fulcrum_lab::Process, log: &Path, what: &str) -> String {
    let status = p.wait_timeout(Duration::from_secs(40));
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert_eq!(
        status,
        Some(0),
        "connections broke {what}:\n{text}\n{}",
        g.logs()
    );
    text.lines().last().unwrap_or_default().to_string()
}

/// The share of new connections each director carried between two readings.
fn shares(before: &[u64], after: &[u64]) -> Vec<u64> {
    before.iter().zip(after).map(|(b, a)| a - b).collect()
}

/// Issue 16's lab, one topology for every event: three directors announce the VIP and
/// share 3,000 new connections; a director SIGKILLed and cut off, then joining again,
/// and drained, each under 60 long-lived connections that must all carry on; a director
/// without quorum withdrawn while the others serve; a real server removed, breaking only
/// its own connections and moving about a quarter of the clients (Maglev); a director
/// lost whole (link first), noticed by the router's BFD, breaking none; a director
/// stopped by SIGTERM, withdrawing before its forwarding stops, breaking none.
#[test]
fn active_active_directors_keep_every_connection_through_director_events() {
    if !require_root("active_active_directors_keep_every_connection_through_director_events") {
        return;
    }
    if !fulcrum_e2e::installed("bird") {
        return;
    }
    let started = Instant::now();
    let dir = Scratch::new("aa");
    let mut g = active_active::build("aa", fulcrum_e2e::bin(), &dir.0, true).unwrap();
    let announced = wait_for(Duration::from_secs(30), || {
        g.next_hops() == Group::directors_but(None)
    });
    assert!(
        announced.is_some(),
        "the router has {:?} for {VIP}:\n{}",
        g.next_hops(),
        g.logs()
    );
    eprintln!(
        "active-active: 3 next hops at the router {:.1} s after start",
        started.elapsed().as_secs_f64()
    );
    // The session as BIRD reports it (read every 2 s).
    let up = wait_for(Duration::from_secs(5), || {
        let s = g.ctl(0, &["bgp"]);
        s.contains("Established") && s.contains("announced")
    });
    assert!(up.is_some(), "{}", g.ctl(0, &["bgp"]));

    // 1. New connections spread over all three.
    let t = Instant::now();
    let answers = g.probe(3000).unwrap();
    assert_eq!(answers.len(), 3000);
    assert!(
        answers.iter().all(|a| a.starts_with("rs")),
        "{:?}",
        answers.iter().find(|a| !a.starts_with("rs"))
    );
    let per = g.connections();
    assert_eq!(per.iter().sum::<u64>(), 3000, "{per:?}");
    for (i, n) in per.iter().enumerate() {
        let share = *n as f64 / 3000.0;
        assert!(
            (0.2..=0.47).contains(&share),
            "director {} carried {n} of 3000 ({per:?})",
            i + 1
        );
    }
    eprintln!(
        "active-active: 3000 connections over the directors {per:?} in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Each client's real server, for the Maglev check below.
    let first: Vec<String> = answers[..200].to_vec();
    let again = g.probe(200).unwrap();
    assert_eq!(
        again, first,
        "a client's real server must not depend on the director"
    );

    // 2. A director SIGKILLed and cut off under 300 long-lived connections, and new ones
    //    every 10 ms meanwhile.
    let base = g.connections();
    let (p, log) = g.hold("kill", 300, 12_000).unwrap();
    let before = g.connections();
    let (watch, watch_log) = g.watch("kill", 6_000).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let retransmitted = g.retransmits();
    assert!(
        before[0] > base[0],
        "no long-lived connection went through director 1"
    );
    let killed = Instant::now();
    g.kill_director(0);
    let d1 = g.directors[0].host.clone();
    g.lab.ip(&d1, &["link", "set", "eth0", "down"]).unwrap();
    let withdrawn = wait_for(Duration::from_secs(10), || {
        g.next_hops() == Group::directors_but(Some(0))
    });
    assert!(
        withdrawn.is_some(),
        "the router still has {:?}",
        g.next_hops()
    );
    let took = killed.elapsed().as_millis();
    let last = held(&g, p, &log, "when director 1 died");
    let (tried, failed, span) = Group::watched(watch, &watch_log);
    eprintln!(
        "active-active: director 1 ({} of 300 long-lived connections) SIGKILLed and cut off: withdrawn at the router within {took} ms; all 300 carried on ({last}); new connections meanwhile: {failed} of {tried} failed (over {span} ms); the client retransmitted {} segments",
        before[0] - base[0],
        g.retransmits() - retransmitted
    );

    // 3. It joins again under long-lived connections.
    let (p, log) = g.hold("join", 60, 10_000).unwrap();
    g.lab.ip(&d1, &["link", "set", "eth0", "up"]).unwrap();
    let joined = Instant::now();
    g.start_director(0).unwrap();
    let back = wait_for(Duration::from_secs(20), || {
        g.next_hops() == Group::directors_but(None)
    });
    assert!(
        back.is_some(),
        "director 1 did not come back: {:?}\n{}",
        g.next_hops(),
        g.logs()
    );
    let took = joined.elapsed().as_secs_f64();
    let last = held(&g, p, &log, "when director 1 joined");
    eprintln!("active-active: director 1 joined (announced after {took:.1} s); all 60 carried on ({last})");

    // 4. drain-director on director 2.
    let (p, log) = g.hold("drain", 60, 10_000).unwrap();
    let drained_at = Instant::now();
    let answer = g.ctl(1, &["drain-director"]);
    assert!(
        answer.contains("draining") || answer.contains("drained"),
        "{answer}"
    );
    let moved = wait_for(Duration::from_secs(10), || {
        g.next_hops() == Group::directors_but(Some(1))
    });
    assert!(moved.is_some(), "the router still has {:?}", g.next_hops());
    let moved = drained_at.elapsed().as_secs_f64();
    let withdrawn = wait_for(Duration::from_secs(15), || {
        g.ctl(1, &["bgp"]).contains("drained")
    });
    assert!(withdrawn.is_some(), "{}", g.ctl(1, &["bgp"]));
    let metrics = g
        .lab
        .exec(
            &g.directors[1].host.netns,
            ["curl", "-s", "http://127.0.0.1:9100/metrics"],
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let m = fulcrum_e2e::parse_metrics(&metrics);
    assert_eq!(m.get("fulcrum_bgp_draining"), Some(&1.0), "{metrics}");
    assert_eq!(
        m.get("fulcrum_bgp_vip_announced{vip=\"10.1.10.65\"}"),
        Some(&0.0),
        "{metrics}"
    );
    let done = drained_at.elapsed().as_secs_f64();
    let last = held(&g, p, &log, "while director 2 drained");
    let c0 = g.connections();
    assert_eq!(g.probe(100).unwrap().len(), 100);
    let c1 = g.connections();
    assert_eq!(
        shares(&c0, &c1)[1],
        0,
        "a drained director takes no new connection"
    );
    g.ctl(1, &["undrain-director"]);
    let back = wait_for(Duration::from_secs(10), || {
        g.next_hops() == Group::directors_but(None)
    });
    assert!(back.is_some(), "undrain: {:?}", g.next_hops());
    eprintln!(
        "active-active: drain-director: the router moved the flows off in {moved:.1} s, the VIP withdrawn at {done:.1} s; all 60 carried on ({last})"
    );

    // 5. Director 3 loses quorum (its checks fail): it withdraws, the others serve.
    let (p, log) = g.hold("quorum", 60, 8_000).unwrap();
    std::fs::write(g.dir.join("d3.fail"), "").unwrap();
    let lost = Instant::now();
    let gone = wait_for(Duration::from_secs(15), || {
        g.next_hops() == Group::directors_but(Some(2))
    });
    assert!(
        gone.is_some(),
        "d3 still announced: {:?}\n{}",
        g.next_hops(),
        g.logs()
    );
    let took = lost.elapsed().as_secs_f64();
    // Not held to none broken: director 3's checks fail one real server after another
    // before its quorum goes, and each failure there expires that server's connections
    // and sends their next segments (sloppy mh) to another server, which resets them, as
    // IPVS with expire_nodest_conn would. Its own view of the servers is what it acts on.
    p.wait_timeout(Duration::from_secs(40));
    let last = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let c0 = g.connections();
    assert_eq!(g.probe(100).unwrap().len(), 100);
    let c1 = g.connections();
    assert_eq!(shares(&c0, &c1)[2], 0);
    let why = g.ctl(2, &["bgp"]);
    assert!(why.contains("no quorum"), "{why}");
    std::fs::remove_file(g.dir.join("d3.fail")).unwrap();
    let back = wait_for(Duration::from_secs(15), || {
        g.next_hops() == Group::directors_but(None)
    });
    assert!(back.is_some(), "quorum back: {:?}", g.next_hops());
    eprintln!("active-active: director 3 lost quorum: withdrawn after {took:.1} s, the others served new connections; the 60 long-lived ones: {last}");

    // 6. A real server leaves: only its connections break; Maglev moves about a quarter.
    let (p, log) = g.hold("rs", 60, 8_000).unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let on_rs4 = text.matches("connected rs4").count();
    g.servers[3].kill();
    let status = p.wait_timeout(Duration::from_secs(40));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let last = text.lines().last().unwrap_or_default().to_string();
    if on_rs4 > 0 {
        assert_eq!(status, Some(1), "{text}");
        assert!(
            last.starts_with(&format!("broken {on_rs4} of 60")),
            "only rs4's {on_rs4} connections break: {last}"
        );
    } else {
        assert_eq!(status, Some(0), "{text}");
    }
    // Every director's checks have taken rs4 out.
    let settled = wait_for(Duration::from_secs(15), || {
        (0..3).all(|i| g.lists(i, "10.30.0.24:80") == Some(false))
    });
    assert!(settled.is_some(), "{}", g.ctl(0, &["services"]));
    let after = g.probe(200).unwrap();
    assert_eq!(after.len(), 200);
    assert!(after.iter().all(|a| a != "rs4"), "{after:?}");
    let moved = first.iter().zip(&after).filter(|(a, b)| a != b).count();
    let from_rs4 = first.iter().filter(|a| *a == "rs4").count();
    eprintln!(
        "active-active: rs4 removed: {on_rs4} of 60 long-lived connections broke (those on rs4); {moved} of 200 clients changed server ({:.1}%; {from_rs4} were on rs4)",
        moved as f64 / 2.0
    );
    assert!(moved >= from_rs4);
    assert!(
        (moved as f64) / 200.0 <= 0.35,
        "Maglev moved {moved} of 200"
    );

    // 7. A director lost whole, as a machine dies: its link first, then its processes.
    //    Its BIRD cannot withdraw anything; the router's BFD notices.
    let (p, log) = g.hold("lost", 60, 8_000).unwrap();
    let t = Instant::now();
    let d2 = g.directors[1].host.clone();
    g.lab.ip(&d2, &["link", "set", "eth0", "down"]).unwrap();
    g.kill_director(1);
    let gone = wait_for(Duration::from_secs(10), || {
        g.next_hops() == Group::directors_but(Some(1))
    });
    assert!(gone.is_some(), "the router still has {:?}", g.next_hops());
    let took = t.elapsed().as_millis();
    let last = held(&g, p, &log, "when director 2 was lost whole");
    eprintln!(
        "active-active: director 2 lost whole (link cut, then killed): BFD withdrew it at the router after {took} ms; all 60 carried on ({last})"
    );

    // 8. A director stopped (SIGTERM): it withdraws before its forwarding stops.
    let (p, log) = g.hold("stop", 60, 8_000).unwrap();
    let t = Instant::now();
    g.directors[2]
        .process
        .as_ref()
        .expect("director 3 runs")
        .signal("TERM")
        .unwrap();
    let gone = wait_for(Duration::from_secs(10), || {
        g.next_hops() == vec![active_active::DIRECTORS[0].to_string()]
    });
    assert!(gone.is_some(), "the router still has {:?}", g.next_hops());
    let took = t.elapsed().as_millis();
    let last = held(&g, p, &log, "when director 3 stopped");
    let exited = g.directors[2]
        .process
        .as_ref()
        .and_then(|p| p.wait_timeout(Duration::from_secs(10)));
    assert_eq!(exited, Some(0), "{}", g.logs());
    let log = std::fs::read_to_string(&g.directors[2].log).unwrap_or_default();
    assert!(log.contains("every VIP withdrawn"), "{log}");
    eprintln!(
        "active-active: director 3 stopped by SIGTERM: withdrawn at the router after {took} ms; all 60 carried on ({last})"
    );
    eprintln!(
        "active-active: lab {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
