//! VRRP in the lab, on reference deployment 3's segment (directors 10.1.10.65 and
//! 10.1.10.68, client 10.1.10.2): two fulcrum nodes elect the right master and move the VIP
//! with real traffic following it, and fulcrum interoperates with Debian's keepalived in
//! both roles. Root only; bounded in time; everything is removed afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fulcrum_lab::reference::{self, Deployment, Reference};
use fulcrum_lab::wait_for;
use fulcrum_lab::{require_root, Agent, Host, Process};

use fulcrum_e2e::Scratch;

const VIP: &str = "10.1.10.88";

fn agent() -> Agent {
    Agent::new(fulcrum_e2e::bin(), &["lab-agent"])
}

fn config(version: u8) -> String {
    config_with(version, "")
}

/// Unicast to the other director instead of multicast.
fn unicast() -> &'static str {
    "@lb1    unicast_src_ip 10.1.10.65\n@lb1    unicast_peer {\n@lb1        10.1.10.68\n@lb1    }\n\
     @lb2    unicast_src_ip 10.1.10.68\n@lb2    unicast_peer {\n@lb2        10.1.10.65\n@lb2    }\n"
}

fn config_with(version: u8, extra: &str) -> String {
    let auth = if version == 2 {
        "    authentication {\n        auth_type PASS\n        auth_pass fulcrum1\n    }\n"
    } else {
        ""
    };
    format!(
        "vrrp_instance VI_1 {{\n    interface eth0\n    virtual_router_id 51\n    version {version}\n\
         @lb1    priority 150\n@lb2    priority 100\n    advert_int 1\n{auth}{extra}\
             virtual_ipaddress {{\n        {VIP}/24 dev eth0\n    }}\n}}\n"
    )
}

fn holds_vip(r: &Reference, host: &Host) -> bool {
    let out = r
        .lab
        .ip(host, &["-4", "addr", "show", "dev", "eth0"])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/"))
}

fn fulcrum(
    r: &mut Reference,
    host: &Host,
    conf: &Path,
    id: &str,
    dir: &Scratch,
) -> (Process, PathBuf) {
    let d = fulcrum_e2e::spawn_fulcrum(&mut r.lab, host, conf, &dir.0, id, &["-i", id]);
    (d.process, d.sock)
}

fn keepalived(
    r: &mut Reference,
    host: &Host,
    conf: &Path,
    id: &str,
    dir: &Scratch,
) -> (Process, PathBuf) {
    let log = dir.0.join(format!("keepalived-{id}.log"));
    let pid = |n: &str| dir.0.join(format!("{id}-{n}.pid"));
    let p = r
        .lab
        .spawn(
            host,
            &[
                "keepalived".as_ref(),
                "-n".as_ref(),
                "-l".as_ref(),
                "-D".as_ref(),
                "-P".as_ref(),
                "-f".as_ref(),
                conf.as_os_str(),
                "-i".as_ref(),
                id.as_ref(),
                "-p".as_ref(),
                pid("main").as_os_str(),
                "-r".as_ref(),
                pid("vrrp").as_os_str(),
            ],
            Some(&log),
        )
        .unwrap();
    (p, log)
}

fn vrrp_state(sock: &Path) -> serde_json::Value {
    let out = fulcrum_e2e::ctl(sock, &["--json", "vrrp"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["result"][0].clone()
}

fn answered_by(r: &Reference) -> String {
    let client = r.client.clone();
    r.lab
        .probe(&client, &format!("{VIP}:9000"), 1, true)
        .unwrap()
        .join(",")
}

fn installed(program: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is not installed"
        );
        eprintln!("SKIP: {program} is not installed");
    }
    ok
}

#[test]
fn two_fulcrum_nodes_fail_over_with_traffic_following_the_vip() {
    if !require_root("two_fulcrum_nodes_fail_over") {
        return;
    }
    let dir = Scratch::new("pair");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(&conf, config(2)).unwrap();
    let mut r = reference::build(Deployment::KeepalivedHa, "vrrp", Some(agent())).unwrap();
    let (d1, d2) = (r.directors[0].clone(), r.directors[1].clone());
    r.lab.serve(&d1, "director1", "0.0.0.0:9000", true).unwrap();
    r.lab.serve(&d2, "director2", "0.0.0.0:9000", true).unwrap();
    let (p1, sock1) = fulcrum(&mut r, &d1, &conf, "lb1", &dir);
    let (_p2, sock2) = fulcrum(&mut r, &d2, &conf, "lb2", &dir);

    // Both start as backup; director1 (150) wins after 3 s + skew.
    assert!(
        wait_for(Duration::from_secs(8), || holds_vip(&r, &d1)).is_some(),
        "director1 never took the VIP"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!holds_vip(&r, &d2), "director2 must stay backup");
    assert_eq!(answered_by(&r), "director1");
    let s1 = vrrp_state(&sock1);
    assert_eq!(s1["state"], "MASTER", "{s1}");
    let s2 = vrrp_state(&sock2);
    assert_eq!(s2["state"], "BACKUP", "{s2}");
    assert_eq!(s2["master"], "10.1.10.65", "{s2}");
    assert!(s2["adverts_received"].as_u64().unwrap() > 0);

    // SIGKILL: no goodbye. director2 takes over within 3 x 1 s + (256-100)/256 s.
    p1.signal("KILL").unwrap();
    let took = wait_for(Duration::from_secs(6), || holds_vip(&r, &d2)).expect("no failover");
    eprintln!("failover after SIGKILL: {took:?}");
    assert!(took <= Duration::from_millis(3610 + 600), "{took:?}");
    // The client's traffic follows: our gratuitous ARPs moved its neighbour entry.
    let moved = wait_for(Duration::from_secs(2), || answered_by(&r) == "director2");
    assert!(
        moved.is_some(),
        "traffic to the VIP did not move to director2"
    );
    // SIGKILL leaves the address on director1, as with keepalived.
    assert!(holds_vip(&r, &d1));

    // director1 returns: it starts without the stale address (as backup, before its
    // master-down timer), then preempts (higher priority).
    let dir1b = Scratch::new("pair-back");
    let (p1b, _s) = fulcrum(&mut r, &d1, &conf, "lb1", &dir1b);
    assert!(
        wait_for(Duration::from_secs(2), || !holds_vip(&r, &d1)).is_some(),
        "the restart did not remove the stale VIP"
    );
    assert!(
        wait_for(Duration::from_secs(8), || holds_vip(&r, &d1)).is_some(),
        "no preemption"
    );
    assert!(
        wait_for(Duration::from_secs(2), || !holds_vip(&r, &d2)).is_some(),
        "director2 kept the VIP"
    );

    // SIGTERM: priority 0, so director2 takes over within about the skew.
    p1b.signal("TERM").unwrap();
    let took = wait_for(Duration::from_secs(3), || holds_vip(&r, &d2)).expect("no takeover");
    eprintln!("takeover after SIGTERM: {took:?}");
    assert!(took <= Duration::from_millis(610 + 500), "{took:?}");
    assert!(
        wait_for(Duration::from_secs(2), || !holds_vip(&r, &d1)).is_some(),
        "a stopped master removes its VIP"
    );
    assert!(p1b.wait_timeout(Duration::from_secs(5)).is_some());
}

/// keepalived on one director, fulcrum on the other, in both roles.
fn interop(version: u8, keepalived_is_primary: bool) {
    interop_with(version, keepalived_is_primary, false)
}

fn interop_with(version: u8, keepalived_is_primary: bool, unicast_peers: bool) {
    let name = format!(
        "interop v{version} keepalived primary={keepalived_is_primary} unicast={unicast_peers}"
    );
    if !require_root(&name) || !installed("keepalived") {
        return;
    }
    let dir = Scratch::new(&format!(
        "ka{version}{keepalived_is_primary}{unicast_peers}"
    ));
    let conf = dir.0.join("keepalived.conf");
    let extra = if unicast_peers { unicast() } else { "" };
    std::fs::write(&conf, config_with(version, extra)).unwrap();
    let mut r = reference::build(Deployment::KeepalivedHa, "kai", Some(agent())).unwrap();
    let (d1, d2) = (r.directors[0].clone(), r.directors[1].clone());
    // Director 1 has priority 150 (lb1), director 2 priority 100 (lb2).
    let (primary, backup) = (d1.clone(), d2.clone());
    let (ka, ka_log, fulcrum_sock, fulcrum_proc);
    if keepalived_is_primary {
        (ka, ka_log) = keepalived(&mut r, &primary, &conf, "lb1", &dir);
        (fulcrum_proc, fulcrum_sock) = fulcrum(&mut r, &backup, &conf, "lb2", &dir);
    } else {
        (fulcrum_proc, fulcrum_sock) = fulcrum(&mut r, &primary, &conf, "lb1", &dir);
        (ka, ka_log) = keepalived(&mut r, &backup, &conf, "lb2", &dir);
    }
    assert!(
        wait_for(Duration::from_secs(8), || holds_vip(&r, &primary)).is_some(),
        "{name}: the primary never took the VIP"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !holds_vip(&r, &backup),
        "{name}: the backup took the VIP too (they do not hear each other)"
    );
    let fs = vrrp_state(&fulcrum_sock);
    let expected = if keepalived_is_primary {
        "BACKUP"
    } else {
        "MASTER"
    };
    assert_eq!(fs["state"], expected, "{name}: {fs}");
    assert!(
        fs["dropped"].as_array().is_some_and(|d| d.is_empty()),
        "{name}: fulcrum dropped adverts: {fs}"
    );
    let log = std::fs::read_to_string(&ka_log).unwrap_or_default();
    for bad in ["checksum", "auth", "interval", "mismatch", "invalid"] {
        assert!(
            !log.to_lowercase()
                .lines()
                .any(|l| l.contains(bad) && !l.contains("script")),
            "{name}: keepalived complains ({bad}):\n{log}"
        );
    }

    // Now the primary goes: SIGKILL for keepalived, SIGTERM for fulcrum (so both kinds of
    // failover are exercised across implementations).
    if keepalived_is_primary {
        // keepalived's VRRP child would say goodbye when its parent dies: kill it first.
        let child = std::fs::read_to_string(dir.0.join("lb1-vrrp.pid")).unwrap();
        let killed = Command::new("kill")
            .args(["-KILL", child.trim()])
            .status()
            .unwrap();
        assert!(killed.success());
        ka.signal("KILL").unwrap();
        let took = wait_for(Duration::from_secs(6), || holds_vip(&r, &backup))
            .expect("fulcrum did not take over");
        eprintln!("{name}: fulcrum took over {took:?} after keepalived was killed");
        assert!(took <= Duration::from_millis(3610 + 600), "{took:?}");
        assert_eq!(vrrp_state(&fulcrum_sock)["state"], "MASTER");
    } else {
        fulcrum_proc.signal("TERM").unwrap();
        let took = wait_for(Duration::from_secs(3), || holds_vip(&r, &backup))
            .expect("keepalived did not take over");
        eprintln!("{name}: keepalived took over {took:?} after fulcrum stopped");
        assert!(took <= Duration::from_millis(610 + 500), "{took:?}");
        let log = std::fs::read_to_string(&ka_log).unwrap_or_default();
        assert!(log.contains("Entering MASTER STATE"), "{log}");
    }
}

#[test]
fn interop_v2_keepalived_master_fulcrum_backup() {
    interop(2, true);
}

#[test]
fn interop_v2_fulcrum_master_keepalived_backup() {
    interop(2, false);
}

#[test]
fn interop_v3_keepalived_master_fulcrum_backup() {
    interop(3, true);
}

#[test]
fn interop_v3_fulcrum_master_keepalived_backup() {
    interop(3, false);
}

#[test]
fn interop_unicast_peers_keepalived_master() {
    interop_with(2, true, true);
}

#[test]
fn interop_unicast_peers_fulcrum_master() {
    interop_with(3, false, true);
}

fn holds(r: &Reference, host: &Host, vip: &str) -> bool {
    let out = r
        .lab
        .ip(host, &["-4", "addr", "show", "dev", "eth0"])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&format!("{vip}/"))
}

/// Reference deployment 3 with the example configuration shipped in examples/: VI_1 (VIP1)
/// master on director 1, VI_2 (VIP2) on director 2; kill director 1 and both VIPs are on
/// director 2; bring director 1 back and VIP1 returns.
#[test]
fn reference_deployment_3_moves_both_vips() {
    if !require_root("reference_deployment_3_moves_both_vips") {
        return;
    }
    let dir = Scratch::new("ref3");
    let conf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/keepalived-ha.keepalived.conf");
    let mut r = reference::build(Deployment::KeepalivedHa, "ref3", Some(agent())).unwrap();
    let (d1, d2) = (r.directors[0].clone(), r.directors[1].clone());
    let (vip1, vip2) = (reference::VIP1.to_string(), reference::VIP2.to_string());
    let (p1, _) = fulcrum(&mut r, &d1, &conf, "lb1", &dir);
    let (_p2, sock2) = fulcrum(&mut r, &d2, &conf, "lb2", &dir);
    let settled = wait_for(Duration::from_secs(8), || {
        holds(&r, &d1, &vip1)
            && holds(&r, &d2, &vip2)
            && !holds(&r, &d1, &vip2)
            && !holds(&r, &d2, &vip1)
    });
    assert!(
        settled.is_some(),
        "VIP1 on director 1 and VIP2 on director 2"
    );
    p1.signal("KILL").unwrap();
    let took =
        wait_for(Duration::from_secs(6), || holds(&r, &d2, &vip1)).expect("VIP1 did not move");
    eprintln!("deployment 3: VIP1 moved to director 2 {took:?} after director 1 was killed");
    assert!(holds(&r, &d2, &vip2));
    let states = fulcrum_e2e::ctl(&sock2, &["--json", "vrrp"]);
    let v: serde_json::Value = serde_json::from_slice(&states.stdout).unwrap();
    let masters: Vec<&str> = v["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] == "MASTER")
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(masters, vec!["VI_1", "VI_2"]);
    // Director 1 comes back (its stale VIP1 cleared first, as a restarted host would be).
    r.lab
        .ip(&d1, &["addr", "del", &format!("{vip1}/24"), "dev", "eth0"])
        .unwrap();
    let dir1b = Scratch::new("ref3-back");
    let _p1b = fulcrum(&mut r, &d1, &conf, "lb1", &dir1b);
    assert!(wait_for(Duration::from_secs(8), || holds(&r, &d1, &vip1)
        && !holds(&r, &d2, &vip1))
    .is_some());
    assert!(holds(&r, &d2, &vip2) && !holds(&r, &d1, &vip2));
}

/// A vrrp_script with weight -60 fails on the master (150 - 60 = 90 < 100): the backup takes
/// over; it passes again: the primary takes the VIP back.
#[test]
fn a_failing_track_script_moves_the_vip_and_back() {
    if !require_root("a_failing_track_script_moves_the_vip_and_back") {
        return;
    }
    let dir = Scratch::new("script");
    let flag = dir.0.join("down");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n    enable_script_security\n    script_user root\n}}\n\
             vrrp_script chk_lb1 {{\n    script \"test ! -e {flag}\"\n    interval 0.2\n    weight -60\n    fall 2\n    rise 2\n}}\n\
             vrrp_instance VI_1 {{\n    interface eth0\n    virtual_router_id 51\n@lb1    priority 150\n@lb2    priority 100\n    advert_int 1\n\
             @lb1    track_script {{\n@lb1        chk_lb1\n@lb1    }}\n    virtual_ipaddress {{\n        {VIP}/24 dev eth0\n    }}\n}}\n",
            flag = flag.display()
        ),
    )
    .unwrap();
    let mut r = reference::build(Deployment::KeepalivedHa, "trk", Some(agent())).unwrap();
    let (d1, d2) = (r.directors[0].clone(), r.directors[1].clone());
    let (_p1, sock1) = fulcrum(&mut r, &d1, &conf, "lb1", &dir);
    let (_p2, _sock2) = fulcrum(&mut r, &d2, &conf, "lb2", &dir);
    assert!(wait_for(Duration::from_secs(8), || holds_vip(&r, &d1)).is_some());
    std::fs::write(&flag, "").unwrap();
    let took = wait_for(Duration::from_secs(8), || {
        holds_vip(&r, &d2) && !holds_vip(&r, &d1)
    });
    assert!(took.is_some(), "the backup did not take over");
    let s = vrrp_state(&sock1);
    assert_eq!(s["effective_priority"], 90, "{s}");
    assert_eq!(s["state"], "BACKUP", "{s}");
    std::fs::remove_file(&flag).unwrap();
    let back = wait_for(Duration::from_secs(8), || {
        holds_vip(&r, &d1) && !holds_vip(&r, &d2)
    });
    assert!(back.is_some(), "the primary did not take the VIP back");
    assert_eq!(vrrp_state(&sock1)["effective_priority"], 150);
}

/// Two instances in a vrrp_sync_group; a tracked interface of one of them goes down: both
/// go to FAULT and both VIPs move to the other director at once.
#[test]
fn a_sync_group_moves_together_on_a_tracked_interface_fault() {
    if !require_root("a_sync_group_moves_together") {
        return;
    }
    let dir = Scratch::new("sync");
    let conf = dir.0.join("keepalived.conf");
    let (vip1, vip2) = (reference::VIP1.to_string(), reference::VIP2.to_string());
    std::fs::write(
        &conf,
        format!(
            "vrrp_sync_group G {{\n    group {{\n        VI_1\n        VI_2\n    }}\n}}\n\
             vrrp_instance VI_1 {{\n    interface eth0\n    virtual_router_id 51\n@lb1    priority 150\n@lb2    priority 100\n    advert_int 1\n\
             @lb1    track_interface {{\n@lb1        mon0\n@lb1    }}\n    virtual_ipaddress {{\n        {vip1}/24 dev eth0\n    }}\n}}\n\
             vrrp_instance VI_2 {{\n    interface eth0\n    virtual_router_id 52\n@lb1    priority 150\n@lb2    priority 100\n    advert_int 1\n\
             virtual_ipaddress {{\n        {vip2}/24 dev eth0\n    }}\n}}\n"
        ),
    )
    .unwrap();
    let mut r = reference::build(Deployment::KeepalivedHa, "sync", Some(agent())).unwrap();
    let (d1, d2) = (r.directors[0].clone(), r.directors[1].clone());
    let spare = r.lab.host("spare").unwrap();
    r.lab.link(&d1, "mon0", &spare, "mon0").unwrap();
    let (_p1, sock1) = fulcrum(&mut r, &d1, &conf, "lb1", &dir);
    let (_p2, _sock2) = fulcrum(&mut r, &d2, &conf, "lb2", &dir);
    assert!(wait_for(Duration::from_secs(8), || holds(&r, &d1, &vip1)
        && holds(&r, &d1, &vip2))
    .is_some());
    r.lab.ip(&d1, &["link", "set", "mon0", "down"]).unwrap();
    let took = wait_for(Duration::from_secs(3), || {
        holds(&r, &d2, &vip1)
            && holds(&r, &d2, &vip2)
            && !holds(&r, &d1, &vip1)
            && !holds(&r, &d1, &vip2)
    });
    eprintln!("sync group fault hand-over: {took:?}");
    assert!(took.is_some(), "both VIPs must move together");
    let v = fulcrum_e2e::ctl(&sock1, &["--json", "vrrp"]);
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    let states: Vec<&str> = v["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["FAULT", "FAULT"]);
    r.lab.ip(&d1, &["link", "set", "mon0", "up"]).unwrap();
    let back = wait_for(Duration::from_secs(8), || {
        holds(&r, &d1, &vip1) && holds(&r, &d1, &vip2)
    });
    assert!(
        back.is_some(),
        "the group returns to director 1 when the fault clears"
    );
}

/// notify scripts get keepalived's arguments and run as script_user.
#[test]
fn notify_scripts_get_keepalived_arguments_and_run_as_script_user() {
    if !require_root("notify_scripts_get_keepalived_arguments") {
        return;
    }
    let dir = Scratch::new("notify");
    let mut perms = std::fs::metadata(&dir.0).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o777);
    std::fs::set_permissions(&dir.0, perms).unwrap();
    let out = dir.0.join("notify.out");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n    enable_script_security\n    script_user nobody\n}}\n\
             vrrp_instance VI_1 {{\n    interface eth0\n    virtual_router_id 51\n    priority 255\n    advert_int 1\n\
             notify \"/bin/sh -c 'echo $(id -u) $0 $1 $2 $3 >> {out}'\"\n\
             virtual_ipaddress {{\n        {VIP}/24 dev eth0\n    }}\n}}\n",
            out = out.display()
        ),
    )
    .unwrap();
    let mut r = reference::build(Deployment::KeepalivedHa, "ntf", Some(agent())).unwrap();
    let d1 = r.directors[0].clone();
    let (p, _) = fulcrum(&mut r, &d1, &conf, "lb1", &dir);
    let nobody = fulcrum_lab::is_root().then(|| {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        passwd
            .lines()
            .find(|l| l.starts_with("nobody:"))
            .and_then(|l| l.split(':').nth(2).map(str::to_string))
            .unwrap()
    });
    let wanted = format!("{} INSTANCE VI_1 MASTER 255", nobody.unwrap());
    let seen = wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.lines().any(|l| l == wanted))
    });
    assert!(seen.is_some(), "{:?}", std::fs::read_to_string(&out));
    p.signal("TERM").unwrap();
    let stopped = format!(
        "{} INSTANCE VI_1 STOP 255",
        wanted.split(' ').next().unwrap()
    );
    let seen = wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.lines().any(|l| l == stopped))
    });
    assert!(seen.is_some(), "{:?}", std::fs::read_to_string(&out));
}

/// track_file: the file's value times the weight moves the priority (150 - 6 x 10 = 90).
#[test]
fn a_track_file_moves_the_vip_and_back() {
    if !require_root("a_track_file_moves_the_vip_and_back") {
        return;
    }
    let dir = Scratch::new("tfile");
    let file = dir.0.join("maint");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "track_file maint {{\n    file {file}\n    weight -10\n    init_file 0 overwrite\n}}\n\
             vrrp_instance VI_1 {{\n    interface eth0\n    virtual_router_id 51\n@lb1    priority 150\n@lb2    priority 100\n    advert_int 1\n\
             @lb1    track_file {{\n@lb1        maint\n@lb1    }}\n    virtual_ipaddress {{\n        {VIP}/24 dev eth0\n    }}\n}}\n",
            file = file.display()
        ),
    )
    .unwrap();
    let mut r = reference::build(Deployment::KeepalivedHa, "tfl", Some(agent())).unwrap();
    let (d1, d2) = (r.directors[0].clone(), r.directors[1].clone());
    let (_p1, sock1) = fulcrum(&mut r, &d1, &conf, "lb1", &dir);
    let (_p2, _) = fulcrum(&mut r, &d2, &conf, "lb2", &dir);
    assert!(wait_for(Duration::from_secs(8), || holds_vip(&r, &d1)).is_some());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim(),
        "0",
        "init_file wrote 0"
    );
    std::fs::write(&file, "6\n").unwrap();
    assert!(wait_for(Duration::from_secs(8), || holds_vip(&r, &d2)
        && !holds_vip(&r, &d1))
    .is_some());
    assert_eq!(vrrp_state(&sock1)["effective_priority"], 90);
    std::fs::write(&file, "0\n").unwrap();
    assert!(wait_for(Duration::from_secs(8), || holds_vip(&r, &d1)
        && !holds_vip(&r, &d2))
    .is_some());
}

const VIP6: &str = "2001:db8::88";

fn holds_vip6(r: &Reference, host: &Host) -> bool {
    let out = r
        .lab
        .ip(host, &["-6", "addr", "show", "dev", "eth0"])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP6}/"))
}

fn config_v6() -> String {
    format!(
        "vrrp_instance VI_6 {{\n    interface eth0\n    virtual_router_id 61\n    version 3\n\
         @lb1    priority 150\n@lb2    priority 100\n    advert_int 1\n\
             virtual_ipaddress {{\n        {VIP6}/64 dev eth0\n    }}\n}}\n"
    )
}

/// VRRPv3 over IPv6 between two fulcrum nodes, with the client's IPv6 traffic following
/// the VIP thanks to our unsolicited neighbour advertisements.
#[test]
fn ipv6_failover_with_traffic_following_the_vip() {
    if !require_root("ipv6_failover_with_traffic_following_the_vip") {
        return;
    }
    let dir = Scratch::new("v6");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(&conf, config_v6()).unwrap();
    let mut r = reference::build(Deployment::KeepalivedHa, "v6", Some(agent())).unwrap();
    let (d1, d2, client) = (
        r.directors[0].clone(),
        r.directors[1].clone(),
        r.client.clone(),
    );
    r.lab.addr(&client, "eth0", "2001:db8::2/64").unwrap();
    r.lab.serve(&d1, "director1", "[::]:9000", true).unwrap();
    r.lab.serve(&d2, "director2", "[::]:9000", true).unwrap();
    let (p1, sock1) = fulcrum(&mut r, &d1, &conf, "lb1", &dir);
    let (_p2, sock2) = fulcrum(&mut r, &d2, &conf, "lb2", &dir);
    assert!(
        wait_for(Duration::from_secs(10), || holds_vip6(&r, &d1)).is_some(),
        "director1 never took the IPv6 VIP"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!holds_vip6(&r, &d2));
    assert_eq!(vrrp_state(&sock1)["state"], "MASTER");
    let s2 = vrrp_state(&sock2);
    assert_eq!(s2["state"], "BACKUP", "{s2}");
    assert!(s2["master"].as_str().unwrap().starts_with("fe80::"), "{s2}");
    let target = format!("[{VIP6}]:9000");
    let answer = |r: &Reference| r.lab.probe(&client, &target, 1, true).unwrap().join(",");
    assert!(wait_for(Duration::from_secs(5), || answer(&r) == "director1").is_some());
    p1.signal("KILL").unwrap();
    r.lab.ip(&d1, &["link", "set", "eth0", "down"]).unwrap();
    let took = wait_for(Duration::from_secs(6), || holds_vip6(&r, &d2)).expect("no IPv6 failover");
    eprintln!("IPv6 failover after SIGKILL: {took:?}");
    assert!(took <= Duration::from_millis(3610 + 600), "{took:?}");
    let moved = wait_for(Duration::from_secs(3), || answer(&r) == "director2");
    assert!(
        moved.is_some(),
        "the client's IPv6 traffic did not follow the VIP"
    );
}

/// keepalived and fulcrum over IPv6, keepalived master first, then fulcrum takes over.
#[test]
fn ipv6_interop_with_keepalived() {
    if !require_root("ipv6_interop_with_keepalived") || !installed("keepalived") {
        return;
    }
    let dir = Scratch::new("v6ka");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(&conf, config_v6()).unwrap();
    let mut r = reference::build(Deployment::KeepalivedHa, "v6ka", Some(agent())).unwrap();
    let (d1, d2) = (r.directors[0].clone(), r.directors[1].clone());
    let (ka, ka_log) = keepalived(&mut r, &d1, &conf, "lb1", &dir);
    let (_p2, sock2) = fulcrum(&mut r, &d2, &conf, "lb2", &dir);
    assert!(
        wait_for(Duration::from_secs(10), || holds_vip6(&r, &d1)).is_some(),
        "keepalived never took the VIP"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !holds_vip6(&r, &d2),
        "fulcrum must stay backup behind keepalived"
    );
    let s = vrrp_state(&sock2);
    assert_eq!(s["state"], "BACKUP", "{s}");
    assert!(s["dropped"].as_array().is_some_and(|d| d.is_empty()), "{s}");
    let log = std::fs::read_to_string(&ka_log).unwrap_or_default();
    assert!(!log.to_lowercase().contains("checksum"), "{log}");
    let child = std::fs::read_to_string(dir.0.join("lb1-vrrp.pid")).unwrap();
    assert!(Command::new("kill")
        .args(["-KILL", child.trim()])
        .status()
        .unwrap()
        .success());
    ka.signal("KILL").unwrap();
    let took = wait_for(Duration::from_secs(6), || holds_vip6(&r, &d2))
        .expect("fulcrum did not take over");
    eprintln!("IPv6: fulcrum took over {took:?} after keepalived was killed");
    assert!(took <= Duration::from_millis(3610 + 600), "{took:?}");
}

/// fulcrum master over IPv6, keepalived backup: keepalived accepts our adverts and takes
/// over within its skew when fulcrum stops.
#[test]
fn ipv6_interop_keepalived_backup() {
    if !require_root("ipv6_interop_keepalived_backup") || !installed("keepalived") {
        return;
    }
    let dir = Scratch::new("v6kb");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(&conf, config_v6()).unwrap();
    let mut r = reference::build(Deployment::KeepalivedHa, "v6kb", Some(agent())).unwrap();
    let (d1, d2) = (r.directors[0].clone(), r.directors[1].clone());
    let (p1, _sock1) = fulcrum(&mut r, &d1, &conf, "lb1", &dir);
    let (_ka, ka_log) = keepalived(&mut r, &d2, &conf, "lb2", &dir);
    // fulcrum waits for DAD on its link-local address, so keepalived may time out first and
    // be master for a moment; once fulcrum advertises 150, keepalived must be backup.
    let settled = wait_for(Duration::from_secs(12), || {
        holds_vip6(&r, &d1) && !holds_vip6(&r, &d2)
    });
    assert!(settled.is_some());
    let before = std::fs::read_to_string(&ka_log).unwrap_or_default().len();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !holds_vip6(&r, &d2),
        "keepalived must stay backup behind fulcrum"
    );
    let log = std::fs::read_to_string(&ka_log).unwrap_or_default();
    assert!(!log[before..].contains("Entering MASTER STATE"), "{log}");
    p1.signal("TERM").unwrap();
    let took = wait_for(Duration::from_secs(3), || holds_vip6(&r, &d2))
        .expect("keepalived did not take over");
    eprintln!("IPv6: keepalived took over {took:?} after fulcrum stopped");
    assert!(took <= Duration::from_millis(610 + 500), "{took:?}");
}

/// use_vmac: the VIP lives on a macvlan with the virtual MAC 00:00:5e:00:01:33 (VRID 51), so
/// the client's neighbour entry never changes across a failover.
#[test]
fn use_vmac_keeps_the_clients_neighbour_entry_across_failover() {
    if !require_root("use_vmac_keeps_the_clients_neighbour_entry") {
        return;
    }
    let dir = Scratch::new("vmac");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "vrrp_instance VI_1 {{\n    interface eth0\n    use_vmac\n    virtual_router_id 51\n\
             @lb1    priority 150\n@lb2    priority 100\n    advert_int 1\n\
             virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n"
        ),
    )
    .unwrap();
    let mut r = reference::build(Deployment::KeepalivedHa, "vmac", Some(agent())).unwrap();
    let (d1, d2, client) = (
        r.directors[0].clone(),
        r.directors[1].clone(),
        r.client.clone(),
    );
    r.lab.serve(&d1, "director1", "0.0.0.0:9000", true).unwrap();
    r.lab.serve(&d2, "director2", "0.0.0.0:9000", true).unwrap();
    let on_vmac = |r: &Reference, h: &Host| {
        r.lab
            .ip(h, &["-4", "addr", "show", "dev", "vrrp.51"])
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{VIP}/")))
            .unwrap_or(false)
    };
    let (p1, _) = fulcrum(&mut r, &d1, &conf, "lb1", &dir);
    let (_p2, _) = fulcrum(&mut r, &d2, &conf, "lb2", &dir);
    assert!(
        wait_for(Duration::from_secs(8), || on_vmac(&r, &d1)).is_some(),
        "the VIP is not on vrrp.51"
    );
    let link = r.lab.ip(&d1, &["link", "show", "vrrp.51"]).unwrap();
    assert!(String::from_utf8_lossy(&link.stdout).contains("00:00:5e:00:01:33"));
    let answer = |r: &Reference| {
        r.lab
            .probe(&client, &format!("{VIP}:9000"), 1, true)
            .unwrap()
            .join(",")
    };
    assert!(wait_for(Duration::from_secs(3), || answer(&r) == "director1").is_some());
    let neigh = |r: &Reference| {
        let o = r.lab.ip(&client, &["neigh", "show", VIP]).unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert!(neigh(&r).contains("00:00:5e:00:01:33"), "{}", neigh(&r));
    p1.signal("KILL").unwrap();
    r.lab.ip(&d1, &["link", "set", "eth0", "down"]).unwrap();
    assert!(
        wait_for(Duration::from_secs(6), || on_vmac(&r, &d2)).is_some(),
        "no failover"
    );
    assert!(wait_for(Duration::from_secs(3), || answer(&r) == "director2").is_some());
    assert!(
        neigh(&r).contains("00:00:5e:00:01:33"),
        "the virtual MAC moved with the VIP: {}",
        neigh(&r)
    );
}

/// vmac_xmit_base: the VIP lives on the macvlan, but adverts go out on the base
/// interface: the VMAC sends nothing while the master advertises, and the backup hears it.
#[test]
fn vmac_xmit_base_sends_adverts_on_the_base_interface() {
    if !require_root("vmac_xmit_base_sends_adverts_on_the_base_interface") {
        return;
    }
    let dir = Scratch::new("xmitbase");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "vrrp_instance VI_1 {{\n    interface eth0\n    use_vmac\n    vmac_xmit_base\n\
             virtual_router_id 51\n    garp_master_delay 0\n\
             @lb1    priority 150\n@lb2    priority 100\n    advert_int 1\n\
             virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n"
        ),
    )
    .unwrap();
    let mut r = reference::build(Deployment::KeepalivedHa, "xmitb", Some(agent())).unwrap();
    let (d1, d2) = (r.directors[0].clone(), r.directors[1].clone());
    // No IPv6 chatter (router solicitations, MLD) from the new macvlan: only VRRP's
    // frames could leave it.
    r.lab
        .sysctl(&d1, "net.ipv6.conf.default.disable_ipv6", "1")
        .unwrap();
    let (_p1, sock1) = fulcrum(&mut r, &d1, &conf, "lb1", &dir);
    let (_p2, sock2) = fulcrum(&mut r, &d2, &conf, "lb2", &dir);
    let on_vmac = |r: &Reference| {
        r.lab
            .ip(&d1, &["-4", "addr", "show", "dev", "vrrp.51"])
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{VIP}/")))
            .unwrap_or(false)
    };
    assert!(
        wait_for(Duration::from_secs(8), || on_vmac(&r)).is_some(),
        "the VIP is not on vrrp.51"
    );
    let sent = |r: &Reference| -> u64 {
        let o = r
            .lab
            .exec(
                &d1.netns,
                ["cat", "/sys/class/net/vrrp.51/statistics/tx_packets"],
            )
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    // The transition's gratuitous ARPs are out (no second burst: garp_master_delay 0).
    std::thread::sleep(Duration::from_millis(500));
    let before = sent(&r);
    let heard = vrrp_state(&sock2)["adverts_received"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(sent(&r), before, "adverts left on the VMAC");
    let s2 = vrrp_state(&sock2);
    assert_eq!(s2["state"], "BACKUP", "{s2}");
    assert!(
        s2["adverts_received"].as_u64().unwrap() >= heard + 3,
        "the backup hears the adverts from the base interface: {s2}"
    );
    assert_eq!(vrrp_state(&sock1)["interface"], "eth0");
}

/// A v3 checksum mismatch (one side with v3_checksum_as_v2) is dropped and counted by
/// reason, and each side, hearing nothing valid, becomes master: what keepalived does too.
#[test]
fn checksum_mismatches_are_dropped_and_counted() {
    if !require_root("checksum_mismatches_are_dropped_and_counted") {
        return;
    }
    let dir = Scratch::new("csum");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(&conf, config_with(3, "@lb1    v3_checksum_as_v2\n")).unwrap();
    let mut r = reference::build(Deployment::KeepalivedHa, "csum", Some(agent())).unwrap();
    let (d1, d2) = (r.directors[0].clone(), r.directors[1].clone());
    let (_p1, _) = fulcrum(&mut r, &d1, &conf, "lb1", &dir);
    let (_p2, sock2) = fulcrum(&mut r, &d2, &conf, "lb2", &dir);
    assert!(wait_for(Duration::from_secs(8), || holds_vip(&r, &d1)
        && holds_vip(&r, &d2))
    .is_some());
    let s = vrrp_state(&sock2);
    let dropped = s["dropped"].as_array().cloned().unwrap_or_default();
    assert!(
        dropped
            .iter()
            .any(|d| d["reason"] == "checksum" && d["count"].as_u64().unwrap_or(0) > 0),
        "{s}"
    );
}

/// no_accept: the master refuses traffic to its VIP (the data plane drops it) but still
/// answers on its own address; with `accept` (keepalived's default) the VIP answers.
#[test]
fn no_accept_master_refuses_traffic_to_its_vip() {
    if !require_root("no_accept_master_refuses_traffic_to_its_vip") {
        return;
    }
    let mut r = reference::build(Deployment::KeepalivedHa, "noacc", Some(agent())).unwrap();
    let d1 = r.directors[0].clone();
    r.lab.serve(&d1, "director1", "0.0.0.0:9000", true).unwrap();
    for (mode, answers) in [("no_accept", false), ("accept", true)] {
        let dir = Scratch::new(&format!("noacc-{mode}"));
        let conf = dir.0.join("keepalived.conf");
        std::fs::write(&conf, config_with(3, &format!("    {mode}\n"))).unwrap();
        let (p, _sock) = fulcrum(&mut r, &d1, &conf, "lb1", &dir);
        assert!(
            wait_for(Duration::from_secs(8), || holds_vip(&r, &d1)).is_some(),
            "{mode}: director1 did not become master"
        );
        let client = r.client.clone();
        let vip = r
            .lab
            .probe(&client, &format!("{VIP}:9000"), 1, true)
            .unwrap()
            .join(",");
        assert_eq!(vip == "director1", answers, "{mode}: VIP answered {vip:?}");
        let own = r
            .lab
            .probe(&client, "10.1.10.65:9000", 1, true)
            .unwrap()
            .join(",");
        assert_eq!(own, "director1", "{mode}: its own address must answer");
        p.signal("TERM").unwrap();
        assert!(p.wait_timeout(Duration::from_secs(10)).is_some());
    }
}

/// A reload applies VRRP changes in place: the unchanged VI_1 stays master without a
/// transition (its VIP never leaves), an added VI_2 starts and takes its VIP, and a
/// removed VI_2 gives it up.
#[test]
fn reload_keeps_unchanged_instances_and_applies_the_rest() {
    if !require_root("reload_keeps_unchanged_instances_and_applies_the_rest") {
        return;
    }
    let dir = Scratch::new("vrreload");
    let conf1 = dir.0.join("lb1.conf");
    let conf2 = dir.0.join("lb2.conf");
    std::fs::write(&conf1, config(3)).unwrap();
    std::fs::write(&conf2, config(3)).unwrap();
    let mut r = reference::build(Deployment::KeepalivedHa, "vrrel", Some(agent())).unwrap();
    let (d1, d2) = (r.directors[0].clone(), r.directors[1].clone());
    let (_p1, sock1) = fulcrum(&mut r, &d1, &conf1, "lb1", &dir);
    let (_p2, _) = fulcrum(&mut r, &d2, &conf2, "lb2", &dir);
    assert!(wait_for(Duration::from_secs(8), || holds_vip(&r, &d1)).is_some());
    let before = vrrp_state(&sock1)["last_transition"].clone();
    assert_eq!(vrrp_state(&sock1)["state"], "MASTER");
    let vip2 = "10.1.10.99";
    let holds2 = |r: &Reference| {
        r.lab
            .ip(&d1, &["-4", "addr", "show", "dev", "eth0"])
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{vip2}/")))
            .unwrap_or(false)
    };
    let reload = || fulcrum_e2e::ctl(&sock1, &["reload"]).status.success();
    // Add VI_2 on director 1 only.
    std::fs::write(
        &conf1,
        format!(
            "{}vrrp_instance VI_2 {{\n    interface eth0\n    virtual_router_id 52\n    version 3\n    priority 120\n    advert_int 1\n    virtual_ipaddress {{\n        {vip2}/24 dev eth0\n    }}\n}}\n",
            config(3)
        ),
    )
    .unwrap();
    assert!(reload());
    // VI_1 never lets go of its VIP while VI_2 comes up.
    let start = std::time::Instant::now();
    while !holds2(&r) {
        assert!(holds_vip(&r, &d1), "VI_1 lost its VIP on the reload");
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "VI_2 never took {vip2}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = fulcrum_e2e::ctl(&sock1, &["--json", "vrrp"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vi1 = &all["result"][0];
    assert_eq!(vi1["name"], "VI_1");
    assert_eq!(vi1["state"], "MASTER");
    assert_eq!(
        vi1["last_transition"], before,
        "no transition for the unchanged VI_1"
    );
    assert_eq!(all["result"][1]["name"], "VI_2");
    // Remove VI_2: its VIP goes; VI_1 still untouched.
    std::fs::write(&conf1, config(3)).unwrap();
    assert!(reload());
    assert!(
        wait_for(Duration::from_secs(3), || !holds2(&r)).is_some(),
        "{vip2} stayed"
    );
    assert!(holds_vip(&r, &d1));
    assert_eq!(vrrp_state(&sock1)["last_transition"], before);
}

/// The dashboard shows the truth during a failover: director 2's page shows VI_1 as
/// BACKUP, then, loaded within a second of director 2 taking the VIP, as MASTER with the
/// transition among its recent events. A screenshot is kept in target/tmp.
#[test]
fn dashboard_shows_a_failover() {
    if !require_root("dashboard_shows_a_failover") || !fulcrum_e2e::installed("chromium") {
        return;
    }
    let dir = Scratch::new("dash");
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(&conf, config(3)).unwrap();
    let mut r = reference::build(Deployment::KeepalivedHa, "dash", Some(agent())).unwrap();
    let (d1, d2) = (r.directors[0].clone(), r.directors[1].clone());
    let (p1, _) = fulcrum(&mut r, &d1, &conf, "lb1", &dir);
    let d = fulcrum_e2e::spawn_fulcrum(
        &mut r.lab,
        &d2,
        &conf,
        &dir.0,
        "lb2",
        &["-i", "lb2", "--metrics", "127.0.0.1:9100"],
    );
    let _p2 = d.process;
    assert!(wait_for(Duration::from_secs(8), || holds_vip(&r, &d1)).is_some());
    let url = "http://127.0.0.1:9100/";
    let row = |dom: &str| -> String {
        dom.split("data-instance=\"VI_1\"")
            .nth(1)
            .map(|rest| rest.split("</tr>").next().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    let before = fulcrum_e2e::chromium(&r.lab, &d2, url, &dir.0, None);
    assert!(row(&before).contains(">BACKUP<"), "{before}");
    p1.signal("KILL").unwrap();
    r.lab.ip(&d1, &["link", "set", "eth0", "down"]).unwrap();
    assert!(
        wait_for(Duration::from_secs(6), || holds_vip(&r, &d2)).is_some(),
        "no failover"
    );
    let moved_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let moved = std::time::Instant::now();
    let after = fulcrum_e2e::chromium(&r.lab, &d2, url, &dir.0, None);
    let took = moved.elapsed();
    assert!(row(&after).contains(">MASTER<"), "{after}");
    // How long it has been MASTER: seconds, since the failover just happened.
    let since = row(&after)
        .split("class=\"since\"")
        .nth(1)
        .and_then(|s| s.split('>').nth(1))
        .and_then(|s| s.split('<').next())
        .unwrap_or("")
        .to_string();
    assert!(
        since.starts_with(" for ") && since.ends_with('s') && !since.contains("min"),
        "{since:?}"
    );
    // The event, with the time the dashboard noticed it: within a second of the VIP move
    // (the browser itself takes about a second to start, hence the page's own clock).
    let event = after
        .split("<li data-at=\"")
        .skip(1)
        .find(|li| li.contains("VRRP VI_1: BACKUP → MASTER"))
        .unwrap_or_else(|| panic!("the failover is not among the events:\n{after}"));
    let at: u128 = event.split('"').next().unwrap().parse().unwrap();
    assert!(
        at.abs_diff(moved_ms) < 1000,
        "noticed at {at}, VIP moved at {moved_ms}"
    );
    // The metrics agree, parsed.
    let text = r
        .lab
        .request(&d2, "127.0.0.1:9100", &["/metrics"], &[])
        .unwrap();
    let m = fulcrum_e2e::parse_metrics(&text[0].1);
    assert_eq!(
        m.get("fulcrum_vrrp_state{vrrp_instance=\"VI_1\",state=\"MASTER\"}"),
        Some(&1.0),
        "{m:?}"
    );
    assert_eq!(
        m.get("fulcrum_vrrp_state{vrrp_instance=\"VI_1\",state=\"BACKUP\"}"),
        Some(&0.0),
        "{m:?}"
    );
    assert_eq!(
        m.get("fulcrum_vrrp_transitions_total{vrrp_instance=\"VI_1\"}"),
        Some(&2.0),
        "INIT to BACKUP to MASTER: {m:?}"
    );
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-failover.png");
    fulcrum_e2e::chromium(&r.lab, &d2, url, &dir.0, Some(&shot));
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 1000)
            .unwrap_or(false),
        "no screenshot at {}",
        shot.display()
    );
    eprintln!(
        "dashboard screenshot: {} (page loaded {took:?} after the VIP moved)",
        shot.display()
    );
}
