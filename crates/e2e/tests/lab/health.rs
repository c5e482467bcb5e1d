//! Health checks driving the layer-4 data plane, end to end on reference deployment 1
//! (LVS-NAT): a real server whose service stops leaves the rotation within the bound
//! keepalived's timing gives, no new connection reaches it, and it returns when its
//! service does; inhibit_on_failure keeps it with weight 0; with every real server down the
//! sorry server answers; MISC_CHECK's misc_dynamic weight changes the split; quorum_down
//! and quorum_up run. Root only; bounded in time; everything is removed afterwards.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fulcrum_lab::reference::{self, Deployment, Reference};
use fulcrum_lab::{require_root, wait_for, Agent};

use fulcrum_e2e::Scratch;

fn ipvsadm(sock: &Path) -> String {
    let out = Command::new(fulcrum_e2e::bin())
        .args(["ipvsadm", "--control"])
        .arg(sock)
        .arg("-Ln")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn split(r: &Reference, vip: &str, n: u32) -> BTreeMap<String, u32> {
    let mut d = BTreeMap::new();
    for a in r
        .lab
        .probe(&r.client, &format!("{vip}:80"), n, false)
        .unwrap()
    {
        *d.entry(a).or_insert(0) += 1;
    }
    d
}

#[test]
fn checkers_take_dead_servers_out_and_put_them_back() {
    if !require_root("checkers_take_dead_servers_out_and_put_them_back") {
        return;
    }
    let agent = Agent::new(fulcrum_e2e::bin(), &["lab-agent"]);
    let mut r = reference::build(Deployment::LvsNat, "hlab", Some(agent)).unwrap();
    let dir = Scratch::new("hlab");
    let vip = r.vips[0].to_string();
    let (rip1, rip2) = (r.rips[0].to_string(), r.rips[1].to_string());
    let (rs1, rs2) = (r.real_servers[0].clone(), r.real_servers[1].clone());
    let mut s1 = r.lab.serve(&rs1, "rs1", "0.0.0.0:80", false).unwrap();
    let s2 = r.lab.serve(&rs2, "rs2", "0.0.0.0:80", false).unwrap();
    r.lab.serve(&rs2, "sorry", "0.0.0.0:8081", false).unwrap();
    // keepalived's timing: delay_loop 1, connect_timeout 1, retry 1, delay_before_retry 1:
    // a dead server is out within 1 + 1 x (1 + 1) = 3 s.
    let conf = format!(
        "virtual_server {vip} 80 {{\n  delay_loop 1\n  lb_algo rr\n  lb_kind NAT\n  protocol TCP\n  sorry_server {rip2} 8081\n\
         \x20 real_server {rip1} 80 {{\n    TCP_CHECK {{\n      connect_timeout 1\n      retry 1\n      delay_before_retry 1\n    }}\n  }}\n\
         \x20 real_server {rip2} 80 {{\n    inhibit_on_failure\n    TCP_CHECK {{\n      connect_timeout 1\n      retry 1\n      delay_before_retry 1\n    }}\n  }}\n}}\n"
    );
    let path = dir.0.join("keepalived.conf");
    std::fs::write(&path, conf).unwrap();
    let director = r.directors[0].clone();
    let fulcrum_e2e::Daemon {
        process: _daemon,
        sock,
        log,
    } = fulcrum_e2e::spawn_fulcrum(&mut r.lab, &director, &path, &dir.0, "fulcrum", &[]);
    let both = wait_for(Duration::from_secs(20), || {
        let l = ipvsadm(&sock);
        l.contains(&format!("  -> {rip1}:80")) && l.contains(&format!("  -> {rip2}:80"))
    });
    assert!(
        both.is_some(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(split(&r, &vip, 20).len(), 2);

    // rs1's service stops: out within the bound, and no new connection reaches it.
    s1.kill();
    let t = Instant::now();
    let out = wait_for(Duration::from_secs(10), || {
        !ipvsadm(&sock).contains(&format!("  -> {rip1}:80"))
    });
    assert!(out.is_some(), "rs1 still listed:\n{}", ipvsadm(&sock));
    let took = t.elapsed();
    assert!(took < Duration::from_secs(4), "removed after {took:?}");
    assert_eq!(split(&r, &vip, 20), [("rs2".to_string(), 20)].into());
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains(&format!("TCP connection to {rip1}:80 refused")),
        "{text}"
    );

    // Back: in rotation again once its check succeeds.
    s1 = r.lab.serve(&rs1, "rs1", "0.0.0.0:80", false).unwrap();
    let back = wait_for(Duration::from_secs(10), || {
        ipvsadm(&sock).contains(&format!("  -> {rip1}:80"))
    });
    assert!(back.is_some(), "rs1 did not return:\n{}", ipvsadm(&sock));
    assert_eq!(split(&r, &vip, 20).len(), 2);

    // rs2 has inhibit_on_failure: it stays, with weight 0.
    s2.kill();
    let inhibited = wait_for(Duration::from_secs(10), || {
        ipvsadm(&sock).contains(&format!("  -> {:<28} Masq    0 ", format!("{rip2}:80")))
    });
    assert!(inhibited.is_some(), "{}", ipvsadm(&sock));
    assert_eq!(split(&r, &vip, 10), [("rs1".to_string(), 10)].into());

    // Everything down: the sorry server answers.
    s1.kill();
    let sorry = wait_for(Duration::from_secs(10), || {
        ipvsadm(&sock).contains(&format!("  -> {rip2}:8081"))
    });
    assert!(sorry.is_some(), "{}", ipvsadm(&sock));
    assert_eq!(split(&r, &vip, 10), [("sorry".to_string(), 10)].into());
}

/// MISC_CHECK with misc_dynamic sets a real server's weight from its exit status (status -
/// 2), which changes the split at once; losing quorum runs quorum_down, regaining it runs
/// quorum_up.
#[test]
fn misc_dynamic_weights_and_quorum_scripts() {
    if !require_root("misc_dynamic_weights_and_quorum_scripts") {
        return;
    }
    let agent = Agent::new(fulcrum_e2e::bin(), &["lab-agent"]);
    let mut r = reference::build(Deployment::LvsNat, "hdyn", Some(agent)).unwrap();
    let dir = Scratch::new("hdyn");
    let vip = r.vips[0].to_string();
    let (rip1, rip2) = (r.rips[0].to_string(), r.rips[1].to_string());
    let (rs1, rs2) = (r.real_servers[0].clone(), r.real_servers[1].clone());
    r.lab.serve(&rs1, "rs1", "0.0.0.0:80", false).unwrap();
    let s2 = r.lab.serve(&rs2, "rs2", "0.0.0.0:80", false).unwrap();
    // rs1's weight comes from a file: exit status 4 -> weight 2.
    let status = dir.0.join("status");
    std::fs::write(&status, "4").unwrap();
    let script = dir.0.join("weight.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexit $(cat {})\n", status.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (up, down) = (dir.0.join("quorum-up"), dir.0.join("quorum-down"));
    let conf = format!(
        "virtual_server {vip} 80 {{\n  delay_loop 1\n  lb_algo wrr\n  lb_kind NAT\n  protocol TCP\n  quorum 2\n\
         \x20 quorum_up \"/bin/touch {}\"\n  quorum_down \"/bin/touch {}\"\n\
         \x20 real_server {rip1} 80 {{\n    weight 1\n    MISC_CHECK {{\n      misc_path {}\n      misc_timeout 2\n      misc_dynamic\n    }}\n  }}\n\
         \x20 real_server {rip2} 80 {{\n    weight 1\n    TCP_CHECK {{\n      connect_timeout 1\n      retry 0\n    }}\n  }}\n}}\n",
        up.display(),
        down.display(),
        script.display()
    );
    let path = dir.0.join("keepalived.conf");
    std::fs::write(&path, conf).unwrap();
    let director = r.directors[0].clone();
    let fulcrum_e2e::Daemon {
        process: _daemon,
        sock,
        log,
    } = fulcrum_e2e::spawn_fulcrum(&mut r.lab, &director, &path, &dir.0, "fulcrum", &[]);
    let row = |rip: &str, w: u32| format!("  -> {:<28} Masq    {w:<6} ", format!("{rip}:80"));
    let weighted = wait_for(Duration::from_secs(10), || {
        ipvsadm(&sock).contains(&row(&rip1, 2))
    });
    assert!(
        weighted.is_some(),
        "{}\n{}",
        ipvsadm(&sock),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // wrr 2:1: any 30 consecutive choices are exactly 20:10.
    assert_eq!(
        split(&r, &vip, 30),
        [("rs1".to_string(), 20), ("rs2".to_string(), 10)].into()
    );
    // Exit status 3: weight 1, 1:1.
    std::fs::write(&status, "3").unwrap();
    let reweighted = wait_for(Duration::from_secs(10), || {
        ipvsadm(&sock).contains(&row(&rip1, 1))
    });
    assert!(reweighted.is_some(), "{}", ipvsadm(&sock));
    assert_eq!(
        split(&r, &vip, 20),
        [("rs1".to_string(), 10), ("rs2".to_string(), 10)].into()
    );

    // Quorum 2 of weight: rs2 down leaves 1, quorum_down runs; back, quorum_up runs.
    let _ = std::fs::remove_file(&up);
    s2.kill();
    assert!(
        wait_for(Duration::from_secs(10), || down.exists()).is_some(),
        "quorum_down did not run"
    );
    r.lab.serve(&rs2, "rs2", "0.0.0.0:80", false).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || up.exists()).is_some(),
        "quorum_up did not run"
    );
}
