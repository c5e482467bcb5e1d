//! `fulcrum demo` end to end: it builds a deployment, shows its real servers answering and
//! its example configuration, and leaves no namespace behind.

use std::process::Command;

#[test]
fn demo_shows_a_deployment_and_cleans_up() {
    if !fulcrum_lab::require_root("demo_shows_a_deployment_and_cleans_up") {
        return;
    }
    let child = Command::new(fulcrum_e2e::bin())
        .args(["demo", "--only", "dr"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("=== 2. LVS-DR ==="), "{stdout}");
    assert!(
        stdout.contains("director -> 10.1.10.66:80  3 HTTP requests answered by: RIP1 10.1.10.66, RIP1 10.1.10.66, RIP1 10.1.10.66"),
        "{stdout}"
    );
    assert!(
        stdout.contains("virtual_server 10.1.10.88:80 rr DR -> 10.1.10.66 w1, 10.1.10.67 w1"),
        "{stdout}"
    );
    // Traffic through the VIP, split by rr, and the listing.
    assert!(stdout.contains(" 150  RIP1 10.1.10.66\n"), "{stdout}");
    assert!(stdout.contains(" 150  RIP2 10.1.10.67\n"), "{stdout}");
    assert!(stdout.contains("TCP  10.1.10.88:80"), "{stdout}");
    // The same deployment over IPv6, beside its IPv4: wrr 1:2 from the example.
    assert!(
        stdout.contains("client -> [2001:db8:10::88]:80, 30 new connections:\n      10  RIP1 2001:db8:10::66\n      20  RIP2 2001:db8:10::67\n"),
        "{stdout}"
    );
    assert!(stdout.contains("TCP  [2001:db8:10::88]:80"), "{stdout}");
    // The demo's namespaces carry its pid: none may remain.
    let left = fulcrum_lab::existing_with_prefix(&format!("fl-{pid}-"));
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn demo_rejects_an_unknown_deployment() {
    let out = Command::new(fulcrum_e2e::bin())
        .args(["demo", "--only", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nat, dr, keepalived-ha, nginx-ha, tun or active-active")
            || err.contains("needs root"),
        "{err}"
    );
}

/// `fulcrum demo --only NAME`, which must succeed: what it printed.
fn demo(only: &str) -> String {
    let out = Command::new(fulcrum_e2e::bin())
        .args(["demo", "--only", only])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn demo_shows_deployment_3_failing_over() {
    if !fulcrum_lab::require_root("demo_shows_deployment_3_failing_over") {
        return;
    }
    let stdout = demo("keepalived-ha");
    // Both VIPs served by the real servers, through the director that holds each.
    for (vip, director) in [("10.1.10.88", "director1"), ("10.1.10.99", "director2")] {
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!("client -> {vip}:80 (the VIP on {director}, DR)")))
            .unwrap_or_else(|| panic!("no line for {vip}:\n{stdout}"));
        let answers = line.split("answered by: ").nth(1).unwrap_or_default();
        assert!(answers.split(", ").all(|a| a.starts_with("RIP")), "{line}");
    }
    let synced: u32 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("director2 holds "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no line on the synced connections:\n{stdout}"));
    assert!(synced > 0, "no connection was synced: {stdout}");
    assert!(
        stdout.contains("VIP1 10.1.10.88 moved to director2 after"),
        "{stdout}"
    );
    let after = stdout
        .lines()
        .find(|l| l.contains("client -> 10.1.10.88:80 (the VIP on director2 now)"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        after.contains("answered by: RIP") && after.contains("gratuitous ARP"),
        "{after}"
    );
}

#[test]
fn demo_shows_deployment_4_failing_over_under_load() {
    if !fulcrum_lab::require_root("demo_shows_deployment_4_failing_over_under_load") {
        return;
    }
    let stdout = demo("nginx-ha");
    assert!(
        stdout.contains("client -> 10.1.10.88:80, 4 HTTP requests answered by: RIP1 10.1.10.66, RIP2 10.1.10.67"),
        "{stdout}"
    );
    assert!(
        stdout.contains("client -> 10.1.10.99:80, 4 HTTP requests answered by:"),
        "{stdout}"
    );
    assert!(stdout.contains("both VIPs now on proxy2: true"), "{stdout}");
}

#[test]
fn demo_shows_the_tun_deployment() {
    if !fulcrum_lab::require_root("demo_shows_the_tun_deployment") {
        return;
    }
    let stdout = demo("tun");
    assert!(stdout.contains("=== 5. LVS-TUN"), "{stdout}");
    assert!(
        stdout.contains("  router      10.1.10.1 (outside), 10.2.20.1 (inside)"),
        "{stdout}"
    );
    // rr over the two servers behind the router, through each tunnel type.
    for port in [80, 81, 82] {
        assert!(
            stdout.contains(&format!("client -> 10.1.10.88:{port}, 30 new connections:\n      15  RIP1 10.2.20.11\n      15  RIP2 10.2.20.12\n")),
            "port {port}: {stdout}"
        );
    }
    for port in [80, 81, 82] {
        assert!(
            stdout.contains(&format!("TCP  10.1.10.88:{port}")),
            "{stdout}"
        );
    }
    // The same again in IPv6 tunnels.
    for port in [80, 81, 82] {
        assert!(
            stdout.contains(&format!("client -> [2001:db8:10::88]:{port}, 30 new connections:\n      15  RIP1 2001:db8:20::11\n      15  RIP2 2001:db8:20::12\n")),
            "IPv6 port {port}: {stdout}"
        );
    }
    // Each real server decapsulated each kind.
    for rs in ["rs1", "rs2"] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{rs}: eth0: ipip")))
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(!line.contains(" 0,") && !line.contains("gre 0 "), "{line}");
    }
}

#[test]
fn demo_shows_active_active_directors_losing_one_without_a_broken_connection() {
    if !fulcrum_lab::require_root(
        "demo_shows_active_active_directors_losing_one_without_a_broken_connection",
    ) {
        return;
    }
    if !fulcrum_e2e::installed("bird") {
        return;
    }
    let stdout = demo("active-active");
    assert!(
        stdout.contains("=== 6. Active-active directors"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "the router's route to 10.1.10.65: via 10.30.0.11, via 10.30.0.12, via 10.30.0.13"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("300 new connections from 200 addresses: 300 answered"),
        "{stdout}"
    );
    assert!(stdout.contains("the router dropped it within"), "{stdout}");
    assert!(stdout.contains("broken connections: 0 of 60"), "{stdout}");
}
