//! The Debian package, as a fresh host meets it: scripts/package builds it from the binary
//! under test, dpkg installs it into a scratch root (never this machine's /usr), the files
//! are where Debian puts them, fulcrum-switch hands keepalived and nginx (owned by a
//! package: dpkg-divert) and ipvsadm (free: update-alternatives) over and back, the daemon starts
//! from the unit's own command line, a refused reload fails as `systemctl reload` would,
//! and removing the package gives every name back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use fulcrum_e2e::Scratch;
use fulcrum_lab::{require_root, wait_for, Lab};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// dpkg on the scratch root, maintainer scripts run outside a chroot with DPKG_ROOT set.
fn dpkg(root: &Path) -> Command {
    let mut c = Command::new("dpkg");
    c.arg(format!("--root={}", root.display()))
        .args(["--force-script-chrootless", "--force-depends"]);
    c
}

/// The unit's ExecStart, with /usr/sbin inside the root and $DAEMON_ARGS expanded.
fn exec_start(root: &Path, daemon_args: &[String]) -> Vec<String> {
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/fulcrum.service")).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart");
    let mut argv = Vec::new();
    for word in line.split_whitespace() {
        match word {
            "$DAEMON_ARGS" => argv.extend(daemon_args.iter().cloned()),
            w if w.starts_with("/usr/") => argv.push(root.join(&w[1..]).display().to_string()),
            w => argv.push(w.to_string()),
        }
    }
    argv
}

/// A stand-in for one of Debian's packages (keepalived, nginx-light): it owns
/// /usr/sbin/NAME, a script that says whose it is.
fn fake_deb(dir: &Path, package: &str, name: &str) -> PathBuf {
    let tree = dir.join(format!("{package}-pkg"));
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(tree.join("usr/sbin")).unwrap();
    std::fs::write(
        tree.join("DEBIAN/control"),
        format!("Package: {package}\nVersion: 1.0-1\nArchitecture: all\nMaintainer: test <t@localhost>\nDescription: stand-in\n"),
    )
    .unwrap();
    let bin = tree.join("usr/sbin").join(name);
    std::fs::write(&bin, format!("#!/bin/sh\necho the real {name}\n")).unwrap();
    run(Command::new("chmod").args(["755"]).arg(&bin));
    let deb = dir.join(format!("{package}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&tree)
        .arg(&deb));
    deb
}

#[test]
fn the_debian_package_installs_switches_and_runs() {
    if !require_root("the_debian_package_installs_switches_and_runs") {
        return;
    }
    let dir = Scratch::new("deb");
    // The package, from the binary these tests run.
    run(Command::new(repo().join("scripts/package")).args(["--profile", "dev", "--no-build"]));
    let version = env!("CARGO_PKG_VERSION");
    let deb = repo().join(format!("target/debian/fulcrum_{version}-1_amd64.deb"));
    assert!(deb.is_file(), "no {}", deb.display());

    // A scratch root with an empty dpkg database.
    let root = dir.0.join("root");
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/alternatives",
        "etc/alternatives",
        "usr/sbin",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    run(dpkg(&root)
        .arg("-i")
        .arg(fake_deb(&dir.0, "keepalived", "keepalived")));
    run(dpkg(&root)
        .arg("-i")
        .arg(fake_deb(&dir.0, "nginx-light", "nginx")));
    run(dpkg(&root).arg("-i").arg(&deb));

    // The files, where Debian puts them, and the /etc ones as conffiles.
    for f in [
        "usr/sbin/fulcrum",
        "usr/sbin/fulcrum-switch",
        "lib/systemd/system/fulcrum.service",
        "etc/default/fulcrum",
        "etc/logrotate.d/fulcrum",
        "usr/share/bash-completion/completions/fulcrum",
        "usr/share/zsh/vendor-completions/_fulcrum",
        "usr/share/fish/vendor_completions.d/fulcrum.fish",
        "usr/share/fulcrum/grafana-dashboard.json",
        "var/log/fulcrum",
    ] {
        assert!(root.join(f).exists(), "{f} is not installed");
    }
    let conffiles =
        std::fs::read_to_string(root.join("var/lib/dpkg/info/fulcrum.conffiles")).unwrap();
    assert!(
        conffiles.contains("/etc/default/fulcrum")
            && conffiles.contains("/etc/logrotate.d/fulcrum")
    );
    // A man page in section 8 for every subcommand the binary has.
    let pages = dir.0.join("pages");
    let listed = text(&run(Command::new(fulcrum_e2e::bin())
        .arg("man")
        .arg("--dir")
        .arg(&pages)));
    for page in listed.lines() {
        let name = Path::new(page)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.ends_with(".8"), "{name}");
        assert!(
            root.join(format!("usr/share/man/man8/{name}.gz")).is_file(),
            "man page {name} is not installed"
        );
    }
    assert!(listed.contains("fulcrum-keepalived.8") && listed.contains("fulcrum-run.8"));

    // keepalived's package owns its name: diverted, and back.
    let switch = |args: &[&str]| {
        let mut c = Command::new(root.join("usr/sbin/fulcrum-switch"));
        c.args(args).env("DPKG_ROOT", &root);
        c.output().unwrap()
    };
    let out = switch(&["keepalived", "to-fulcrum"]);
    assert!(out.status.success(), "{out:?}");
    let diversions = text(&run(Command::new("dpkg-divert")
        .arg(format!("--root={}", root.display()))
        .arg("--list")));
    assert!(
        diversions.contains(
            "diversion of /usr/sbin/keepalived to /usr/sbin/keepalived.distrib by fulcrum"
        ),
        "{diversions}"
    );
    assert_eq!(
        std::fs::read_link(root.join("usr/sbin/keepalived")).unwrap(),
        Path::new("/usr/sbin/fulcrum")
    );
    assert!(
        std::fs::read_to_string(root.join("usr/sbin/keepalived.distrib"))
            .unwrap()
            .contains("the real keepalived")
    );
    assert!(text(&switch(&["keepalived", "status"])).contains("keepalived: Fulcrum"));
    assert!(switch(&["keepalived", "back"]).status.success());
    assert!(std::fs::read_to_string(root.join("usr/sbin/keepalived"))
        .unwrap()
        .contains("the real keepalived"));
    assert!(!root.join("usr/sbin/keepalived.distrib").exists());
    // ipvsadm is free: offered through update-alternatives, and back.
    assert!(switch(&["ipvsadm", "to-fulcrum"]).status.success());
    assert_eq!(
        std::fs::read_link(root.join("usr/sbin/ipvsadm")).unwrap(),
        Path::new("/etc/alternatives/ipvsadm")
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/alternatives/ipvsadm")).unwrap(),
        Path::new("/usr/sbin/fulcrum")
    );
    assert!(switch(&["ipvsadm", "back"]).status.success());
    assert!(!root.join("usr/sbin/ipvsadm").exists());
    // nginx's package owns its name too: diverted, and back.
    assert!(switch(&["nginx", "to-fulcrum"]).status.success());
    assert_eq!(
        std::fs::read_link(root.join("usr/sbin/nginx")).unwrap(),
        Path::new("/usr/sbin/fulcrum")
    );
    assert!(std::fs::read_to_string(root.join("usr/sbin/nginx.distrib"))
        .unwrap()
        .contains("the real nginx"));
    assert!(switch(&["nginx", "back"]).status.success());
    assert!(std::fs::read_to_string(root.join("usr/sbin/nginx"))
        .unwrap()
        .contains("the real nginx"));

    // The daemon from the unit's command line (DAEMON_ARGS naming the file and the
    // socket), in a namespace of its own.
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(&conf, "global_defs {\n    router_id pkgtest\n}\n").unwrap();
    let sock = dir.0.join("control.sock");
    let daemon_args: Vec<String> = [
        "-f",
        conf.to_str().unwrap(),
        "--control",
        sock.to_str().unwrap(),
        "--no-forwarding",
    ]
    .map(str::to_string)
    .to_vec();
    let argv = exec_start(&root, &daemon_args);
    assert!(
        argv[0].ends_with("/usr/sbin/fulcrum") && argv[1] == "run",
        "{argv:?}"
    );
    let mut lab = Lab::new("deb").unwrap();
    let host = lab.host("h").unwrap();
    let log = dir.0.join("daemon.log");
    let process = lab.spawn(&host, &argv, Some(&log)).unwrap();
    let ctl = |args: &[&str]| {
        Command::new(root.join("usr/sbin/fulcrum"))
            .arg("ctl")
            .arg("--control")
            .arg(&sock)
            .args(args)
            .output()
            .unwrap()
    };
    let up = wait_for(Duration::from_secs(10), || {
        ctl(&["status"]).status.success()
    });
    assert!(
        up.is_some(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // ExecReload is `fulcrum ctl reload`: a refused reload exits non-zero, as
    // `systemctl reload` then does.
    let reload = root.join("lib/systemd/system/fulcrum.service");
    let reload = std::fs::read_to_string(reload).unwrap();
    assert!(reload.contains("\nExecReload=/usr/sbin/fulcrum ctl reload\n"));
    assert!(ctl(&["reload"]).status.success());
    std::fs::write(&conf, "vrrp_instance broken {\n    priority 0\n}\n").unwrap();
    let refused = ctl(&["reload"]);
    assert!(!refused.status.success(), "{refused:?}");
    process.signal("TERM").unwrap();
    assert_eq!(process.wait_timeout(Duration::from_secs(10)), Some(0));

    // Removing the package gives back what was switched.
    assert!(switch(&["keepalived", "to-fulcrum"]).status.success());
    run(dpkg(&root).args(["--purge", "fulcrum"]));
    assert!(std::fs::read_to_string(root.join("usr/sbin/keepalived"))
        .unwrap()
        .contains("the real keepalived"));
    let diversions = text(&run(Command::new("dpkg-divert")
        .arg(format!("--root={}", root.display()))
        .arg("--list")));
    assert!(!diversions.contains("fulcrum"), "{diversions}");
    assert!(!root.join("usr/sbin/fulcrum").exists());
    assert!(!root.join("var/log/fulcrum").exists());
}
