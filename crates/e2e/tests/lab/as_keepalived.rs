//! The binary as `keepalived` (a symlink), started with the command line of Debian's
//! keepalived unit (`keepalived --dont-fork $DAEMON_ARGS`, Type=notify): it tells systemd
//! it is ready, writes keepalived's pid files, holds its VIP, reloads on HUP, writes
//! keepalived's dumps on its signals, and on TERM gives the VIP back and removes the pid
//! files. Without --dont-fork it detaches, as keepalived does.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fulcrum_e2e::{pid_in, Reaper, Scratch};
use fulcrum_lab::{require_root, wait_for, Host, Lab};

const CONF: &str = "vrrp_instance VI_1 {\n    state MASTER\n    interface eth0\n    virtual_router_id 61\n    priority 255\n    advert_int 1\n    virtual_ipaddress {\n        10.61.0.100/24\n    }\n}\n";

fn holds(lab: &Lab, host: &Host, vip: &str) -> bool {
    lab.ip(host, &["-4", "addr", "show", "dev", "eth0"])
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{vip}/")))
        .unwrap_or(false)
}

#[test]
fn debians_keepalived_unit_runs_it() {
    if !require_root("debians_keepalived_unit_runs_it") {
        return;
    }
    let dir = Scratch::new("askad");
    let mut lab = Lab::new("askad").unwrap();
    let host = lab.host("ka").unwrap();
    let peer = lab.host("peer").unwrap();
    lab.link(&host, "eth0", &peer, "eth0").unwrap();
    lab.addr(&host, "eth0", "10.61.0.1/24").unwrap();
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(&conf, CONF).unwrap();
    let keepalived = dir.0.join("keepalived");
    std::os::unix::fs::symlink(fulcrum_e2e::bin(), &keepalived).unwrap();
    let notify = dir.0.join("notify.sock");
    let systemd = UnixDatagram::bind(&notify).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let pids = ["main.pid", "vrrp.pid", "checkers.pid"].map(|p| dir.0.join(p));
    // The unit's ExecStart, with DAEMON_ARGS naming the file, the pid files and -l.
    let mut args: Vec<std::ffi::OsString> = vec![
        "env".into(),
        format!("NOTIFY_SOCKET={}", notify.display()).into(),
        format!("FULCRUM_CONTROL={}", dir.0.join("control.sock").display()).into(),
        keepalived.clone().into(),
        "--dont-fork".into(),
    ];
    for a in ["-l", "-D", "-f"] {
        args.push(a.into());
    }
    args.push(conf.clone().into());
    for (flag, p) in ["-p", "-r", "-c"].iter().zip(&pids) {
        args.push((*flag).into());
        args.push(p.clone().into());
    }
    let log = dir.0.join("keepalived.log");
    let process = lab.spawn(&host, &args, Some(&log)).unwrap();
    let mut buf = [0u8; 256];
    let n = systemd.recv(&mut buf).expect("systemd never heard READY=1");
    assert_eq!(&buf[..n], b"READY=1");
    // The parent's and the VRRP child's pid files name it; no virtual_server: no
    // checkers pid file, as keepalived starts no checker child.
    let pid = process.pid;
    assert_eq!(pid_in(&pids[0]), Some(pid));
    assert_eq!(pid_in(&pids[1]), Some(pid));
    assert!(
        wait_for(Duration::from_secs(5), || holds(&lab, &host, "10.61.0.100")).is_some(),
        "the VIP never came up"
    );
    // keepalived's dumps, on its signals, where keepalived writes them.
    for (signal, file, what) in [
        ("USR1", "/tmp/keepalived.data", "VRRP Instance = VI_1"),
        ("USR2", "/tmp/keepalived.stats", "VRRP Instance: VI_1"),
        ("36", "/tmp/keepalived.json", "\"iname\":\"VI_1\""),
    ] {
        let _ = std::fs::remove_file(file);
        process.signal(signal).unwrap();
        let written = wait_for(Duration::from_secs(5), || {
            std::fs::read_to_string(file).is_ok_and(|t| t.contains(what))
        });
        let _ = std::fs::remove_file(file);
        assert!(written.is_some(), "{signal}: no {file}");
    }
    // HUP reloads: a second VIP.
    std::fs::write(
        &conf,
        CONF.replace(
            "10.61.0.100/24\n",
            "10.61.0.100/24\n        10.61.0.101/24\n",
        ),
    )
    .unwrap();
    process.signal("HUP").unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || holds(&lab, &host, "10.61.0.101")).is_some(),
        "HUP did not reload"
    );
    // TERM: the VIPs go, the pid files go, exit 0.
    process.signal("TERM").unwrap();
    assert_eq!(process.wait_timeout(Duration::from_secs(10)), Some(0));
    assert!(!holds(&lab, &host, "10.61.0.100"));
    assert!(pids.iter().all(|p| !p.exists()));

    // Without --dont-fork: the command returns once the daemon is up, which goes on in
    // the background under the pid its pid file names.
    let _reaper = Reaper(pids[0].clone());
    let status = Command::new("ip")
        .args(["netns", "exec", &host.netns])
        .arg(&keepalived)
        .arg("-f")
        .arg(&conf)
        .args([
            "-p",
            pids[0].to_str().unwrap(),
            "-r",
            pids[1].to_str().unwrap(),
        ])
        .env("FULCRUM_CONTROL", dir.0.join("control.sock"))
        .output()
        .unwrap();
    // It returned once the daemon was up (its standard streams then let go).
    assert!(status.status.success(), "{status:?}");
    wait_for(Duration::from_secs(5), || pid_in(&pids[0]).is_some())
        .expect("the detached daemon wrote no pid file");
    let daemon = pid_in(&pids[0]).unwrap();
    let alive = || Path::new(&format!("/proc/{daemon}")).exists();
    assert!(alive());
    assert!(
        wait_for(Duration::from_secs(5), || holds(&lab, &host, "10.61.0.100")).is_some(),
        "the detached daemon did not take the VIP"
    );
    Command::new("kill")
        .arg(daemon.to_string())
        .status()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || !alive() && !pids[0].exists()).is_some(),
        "the detached daemon did not stop"
    );
}
