//! Fulcrum held to the real IPVS: Debian's kernel in a VM on the lab's network
//! (crates/lab/src/ipvs_vm.rs; this machine's kernel has no IPVS).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use fulcrum_e2e::{HoldPace, Scratch};
use fulcrum_lab::ipvs_vm::IpvsVm;
use fulcrum_lab::reference::{self, Deployment};
use fulcrum_lab::{require_root, wait_for, Agent, Reference};

fn agent() -> Agent {
    Agent::new(fulcrum_e2e::bin(), &["lab-agent"])
}

/// The VM's address on the deployment's segment.
const VM: &str = "10.1.10.70";

/// `ipvsadm -Lnc` rows without the expiry column: (pro, state, source, virtual, dest).
fn rows(listing: &str, vip: &str) -> BTreeSet<String> {
    listing
        .lines()
        .filter(|l| l.contains(&format!("{vip}:80")))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let keep: Vec<&str> = f
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 1)
                .map(|(_, w)| *w)
                .collect();
            keep.join(" ")
        })
        .collect()
}

fn fulcrum_ipvsadm(sock: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(fulcrum_e2e::bin())
        .arg("ipvsadm")
        .arg("--control")
        .arg(sock)
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Connection sync with the real IPVS, both ways, on reference deployment 3's segment:
/// the VM directs VIP2 (IPVS, DR, sync master and backup, syncid 51), Fulcrum on director 1
/// directs VIP1 (`lvs_sync_daemon eth0 id 51`, master and backup), each configured with
/// both services, persistent. Long connections through each: Fulcrum holds the VM's
/// connections and persistence template, the VM holds Fulcrum's, with the same protocol,
/// state, client, virtual and real server in `ipvsadm -Lnc` on both.
#[test]
fn connection_sync_interoperates_with_ipvs() {
    if !require_root("connection_sync_interoperates_with_ipvs") {
        return;
    }
    sync_interop("ipvssync", None);
}

/// The same over an IPv6 multicast group (IPVS has no IPv6 default: it is given to both).
#[test]
fn connection_sync_interoperates_with_ipvs_over_an_ipv6_group() {
    if !require_root("connection_sync_interoperates_with_ipvs_over_an_ipv6_group") {
        return;
    }
    sync_interop("ipvssync6", Some("ff02::81"));
}

/// IPVS in the VM and Fulcrum on a director each master for one VIP and backup for the
/// other, with persistence: each one's connections and templates reach the other.
fn sync_interop(label: &str, group: Option<&str>) {
    let mut r: Reference =
        reference::build(Deployment::KeepalivedHa, label, Some(agent())).unwrap();
    let dir = Scratch::new(label);
    let (ka_group, vm_group) = match group {
        Some(g) => (format!(" group {g}"), format!(" --mcast-group {g}")),
        None => (String::new(), String::new()),
    };
    for (i, rs) in r.real_servers.clone().iter().enumerate() {
        r.lab
            .serve(rs, &format!("rs{}", i + 1), "0.0.0.0:80", false)
            .unwrap();
    }
    let (vip1, vip2) = (reference::VIP1.to_string(), reference::VIP2.to_string());
    let rips: Vec<String> = r.rips.iter().map(|a| a.to_string()).collect();
    let switch = r.switches[0].clone();
    let mut vm = IpvsVm::start(&switch, &[&format!("{VM}/24"), &format!("{vip2}/32")]).unwrap();
    for vip in [&vip1, &vip2] {
        vm.must(&format!("ipvsadm -A -t {vip}:80 -s rr -p 300"))
            .unwrap();
        for rip in &rips {
            vm.must(&format!("ipvsadm -a -t {vip}:80 -r {rip}:80 -g"))
                .unwrap();
        }
    }
    if group.is_some() {
        // A daemon on an IPv6 group sends from the interface's link-local address, which
        // is usable once its duplicate address detection is over (a second or two after
        // the link came up): IPVS's start fails before with "Cannot assign requested
        // address".
        let settled = wait_for(Duration::from_secs(15), || {
            vm.run("ip -6 addr show dev eth0 scope link -tentative")
                .is_ok_and(|(ok, out)| ok && out.contains("inet6"))
        });
        assert!(
            settled.is_some(),
            "the VM's eth0 has no usable link-local address"
        );
    }
    vm.must(&format!(
        "ipvsadm --start-daemon master --mcast-interface eth0 --syncid 51{vm_group}"
    ))
    .unwrap();
    vm.must(&format!(
        "ipvsadm --start-daemon backup --mcast-interface eth0 --syncid 51{vm_group}"
    ))
    .unwrap();

    // Fulcrum on director 1, holding VIP1 itself (no VRRP here).
    let d1 = r.directors[0].clone();
    r.lab.addr(&d1, "eth0", &format!("{vip1}/32")).unwrap();
    let mut conf = format!("global_defs {{\n    lvs_sync_daemon eth0 id 51{ka_group}\n}}\n");
    for vip in [&vip1, &vip2] {
        conf += &format!(
            "virtual_server {vip} 80 {{\n    lb_algo rr\n    lb_kind DR\n    protocol TCP\n    persistence_timeout 300\n"
        );
        for rip in &rips {
            conf += &format!("    real_server {rip} 80 {{\n        weight 1\n    }}\n");
        }
        conf += "}\n";
    }
    let path = dir.0.join("sync.conf");
    std::fs::write(&path, conf).unwrap();
    if group.is_some() {
        let settled = wait_for(Duration::from_secs(15), || {
            r.lab
                .ip(&d1, &["-6", "addr", "show", "dev", "eth0", "tentative"])
                .is_ok_and(|o| o.stdout.is_empty())
        });
        assert!(
            settled.is_some(),
            "director 1's IPv6 addresses stay tentative"
        );
    }
    let d = fulcrum_e2e::spawn_fulcrum(&mut r.lab, &d1, &path, &dir.0, "lb1", &[]);
    let up = wait_for(Duration::from_secs(20), || {
        fulcrum_ipvsadm(&d.sock, &["-Ln"]).contains("  -> ")
    });
    assert!(
        up.is_some(),
        "{}",
        std::fs::read_to_string(&d.log).unwrap_or_default()
    );

    // Five long connections through each VIP (a line every 200 ms for 20 s).
    let client = r.client.clone();
    let mut holds = Vec::new();
    for vip in [&vip1, &vip2] {
        let log = dir.0.join(format!("hold-{vip}.log"));
        let p = fulcrum_e2e::spawn_hold(
            &mut r.lab,
            &client,
            &format!("{vip}:80"),
            HoldPace {
                every_ms: 200,
                for_ms: 20_000,
                timeout_ms: 10_000,
            },
            5,
            &log,
        );
        holds.push((p, log));
    }
    for (_, log) in &holds {
        let open = wait_for(Duration::from_secs(15), || {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .matches("connected rs")
                .count()
                == 5
        });
        assert!(
            open.is_some(),
            "{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    // IPVS -> Fulcrum: the VM's VIP2 connections appear in Fulcrum's table.
    let ours = |vip: &str| rows(&fulcrum_ipvsadm(&d.sock, &["-Lnc"]), vip);
    let synced = wait_for(Duration::from_secs(20), || {
        let t = rows(&vm_lnc(&mut vm), &vip2);
        t.len() == 6 && ours(&vip2) == t
    });
    assert!(
        synced.is_some(),
        "IPVS's connections did not reach Fulcrum:\nIPVS:\n{}\nFulcrum:\n{}\n{}",
        vm_lnc(&mut vm),
        fulcrum_ipvsadm(&d.sock, &["-Lnc"]),
        std::fs::read_to_string(&d.log).unwrap_or_default()
    );
    // Fulcrum -> IPVS: director 1's VIP1 connections appear in the VM's table.
    let synced = wait_for(Duration::from_secs(20), || {
        let o = ours(&vip1);
        o.len() == 6 && rows(&vm_lnc(&mut vm), &vip1) == o
    });
    assert!(
        synced.is_some(),
        "Fulcrum's connections did not reach IPVS:\nFulcrum:\n{}\nIPVS:\n{}",
        fulcrum_ipvsadm(&d.sock, &["-Lnc"]),
        vm_lnc(&mut vm)
    );
    // Both sync daemons ran with the settings asked for.
    let daemons = vm.must("ipvsadm -L --daemon").unwrap();
    assert!(
        daemons.contains("master sync daemon (mcast=eth0, syncid=51")
            && daemons.contains("backup sync daemon (mcast=eth0, syncid=51"),
        "{daemons}"
    );
    for (p, _) in holds {
        p.kill();
    }
}

fn vm_lnc(vm: &mut IpvsVm) -> String {
    vm.must("ipvsadm -Lnc").unwrap_or_default()
}

/// `ipvsadm --start-daemon`, `--stop-daemon` and `-L --daemon` against Fulcrum answer as
/// the real ipvsadm on the real IPVS: the same output, errors and exit codes, command by
/// command (a daemon started with ipvsadm alone, no keepalived.conf).
#[test]
fn ipvsadm_sync_daemon_commands_match_ipvs() {
    if !require_root("ipvsadm_sync_daemon_commands_match_ipvs") {
        return;
    }
    let (_r, dir, mut vm) = vm_and_empty_daemon("ipvsd");
    let sock = dir.0.join("d.sock");
    let commands: &[&[&str]] = &[
        &["-L", "--daemon"],
        &["--stop-daemon", "master"],
        &[
            "--start-daemon",
            "master",
            "--mcast-interface",
            "eth0",
            "--syncid",
            "9",
        ],
        &["--start-daemon", "master", "--mcast-interface", "eth0"],
        &["--start-daemon", "backup", "--mcast-interface", "nosuch"],
        &[
            "--start-daemon",
            "backup",
            "--mcast-interface",
            "eth0",
            "--sync-maxlen",
            "70000",
        ],
        &["--start-daemon", "both", "--mcast-interface", "eth0"],
        &[
            "--start-daemon",
            "backup",
            "--mcast-interface",
            "eth0",
            "--sync-maxlen",
            "1000",
            "--mcast-group",
            "239.1.1.1",
            "--mcast-port",
            "9000",
            "--mcast-ttl",
            "3",
        ],
        &["-L", "--daemon"],
        &["-Ln", "--daemon"],
        &["--stop-daemon", "master"],
        &["-L", "--daemon"],
        &["--stop-daemon", "backup"],
        &["--stop-daemon", "backup"],
        &["-L", "--daemon"],
        // An IPv6 group: IPv6's headers come off the message size.
        &[
            "--start-daemon",
            "master",
            "--mcast-interface",
            "eth0",
            "--mcast-group",
            "ff02::81",
        ],
        &[
            "--start-daemon",
            "backup",
            "--mcast-interface",
            "eth0",
            "--mcast-group",
            "ff02::82",
            "--mcast-port",
            "9001",
        ],
        &["--start-daemon", "backup", "--mcast-group", "2001:db8::1"],
        &["--start-daemon", "backup", "--mcast-group", "10.0.0.1"],
        &["--start-daemon", "backup", "--mcast-group", "junk"],
        &["-L", "--daemon"],
        &["--stop-daemon", "master"],
        &["--stop-daemon", "backup"],
    ];
    let wrong = differences(&mut vm, &sock, commands);
    assert!(
        wrong.is_empty(),
        "{}",
        wrong.join(
            "
"
        )
    );
}

/// The header line's table size is each one's own: IPVS's connection hash buckets, Fulcrum's
/// connection table; the rest of every line is compared.
fn without_table_size(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("(size=") {
            Some(i) if l.starts_with("IP Virtual Server") => format!("{}(size=N)", &l[..i]),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The same ipvsadm commands on the real IPVS and on Fulcrum (no keepalived.conf), then
/// every listing: the same bytes (but the header's table size), refusals and exit codes
/// included.
#[test]
fn ipvsadm_listings_match_ipvs() {
    if !require_root("ipvsadm_listings_match_ipvs") {
        return;
    }
    let (_r, dir, mut vm) = vm_and_empty_daemon("ipvsl");
    let sock = dir.0.join("d.sock");
    let commands: &[&[&str]] = &[
        &["-A", "-t", "10.1.10.99:80", "-s", "wlc"],
        &["-A", "-t", "10.1.10.88:80", "-s", "rr"],
        &[
            "-A",
            "-u",
            "10.1.10.88:53",
            "-s",
            "sh",
            "-b",
            "sh-port",
            "-p",
            "600",
            "-M",
            "255.255.255.0",
        ],
        &["-A", "-t", "10.1.10.88:443", "-s", "mh", "-p"],
        &[
            "-A",
            "-u",
            "10.1.10.99:53",
            "-s",
            "sh",
            "-b",
            "sh-port,sh-fallback",
            "-o",
        ],
        &["-A", "-t", "10.1.10.99:443", "-s", "rr", "-b", "mh-port"],
        &[
            "-A",
            "-t",
            "10.1.10.99:8443",
            "-s",
            "mh",
            "-b",
            "sh-fallback",
            "-p",
            "60",
        ],
        &[
            "-a",
            "-t",
            "10.1.10.88:80",
            "-r",
            "10.1.10.67:80",
            "-g",
            "-w",
            "3",
        ],
        &[
            "-a",
            "-t",
            "10.1.10.88:80",
            "-r",
            "10.1.10.66:80",
            "-g",
            "-w",
            "1",
        ],
        &[
            "-a",
            "-t",
            "10.1.10.99:80",
            "-r",
            "192.168.1.5:8080",
            "-m",
            "-x",
            "100",
            "-y",
            "50",
        ],
        &[
            "-a",
            "-t",
            "10.1.10.99:80",
            "-r",
            "192.168.1.4:8080",
            "-m",
            "-w",
            "0",
        ],
        &["-a", "-u", "10.1.10.88:53", "-r", "10.1.10.66:53", "-g"],
        &["-A", "-t", "10.1.10.99:8080", "-s", "rr"],
        &["-a", "-t", "10.1.10.99:8080", "-r", "10.1.10.66:8080", "-i"],
        &[
            "-a",
            "-t",
            "10.1.10.99:8080",
            "-r",
            "10.1.10.67:8080",
            "-i",
            "--tun-type",
            "gue",
            "--tun-port",
            "6080",
        ],
        &[
            "-a",
            "-t",
            "10.1.10.99:8080",
            "-r",
            "10.1.10.68:8080",
            "-i",
            "--tun-type",
            "gre",
        ],
        &[
            "-a",
            "-t",
            "10.1.10.99:8080",
            "-r",
            "10.1.10.69:8080",
            "-i",
            "--tun-type",
            "gue",
        ],
        &[
            "-a",
            "-t",
            "10.1.10.99:8080",
            "-r",
            "10.1.10.70:8080",
            "-i",
            "--tun-port",
            "6080",
        ],
        // Outer checksums, and remcsum where gre has none.
        &[
            "-a",
            "-t",
            "10.1.10.99:8080",
            "-r",
            "10.1.10.71:8080",
            "-i",
            "--tun-type",
            "gue",
            "--tun-port",
            "6080",
            "--tun-csum",
        ],
        &[
            "-a",
            "-t",
            "10.1.10.99:8080",
            "-r",
            "10.1.10.72:8080",
            "-i",
            "--tun-type",
            "gue",
            "--tun-port",
            "6081",
            "--tun-remcsum",
        ],
        &[
            "-a",
            "-t",
            "10.1.10.99:8080",
            "-r",
            "10.1.10.73:8080",
            "-i",
            "--tun-type",
            "gre",
            "--tun-csum",
        ],
        &[
            "-a",
            "-t",
            "10.1.10.99:8080",
            "-r",
            "10.1.10.74:8080",
            "-i",
            "--tun-type",
            "gre",
            "--tun-remcsum",
        ],
        &["-a", "-t", "10.1.10.88:80", "-r", "10.1.10.66:80", "-g"],
        &[
            "-e",
            "-t",
            "10.1.10.88:80",
            "-r",
            "10.1.10.66:80",
            "-g",
            "-w",
            "2",
        ],
        // TUN across the families, and a refusal of DR across them.
        &["-A", "-t", "[2001:db8::99]:80", "-s", "rr"],
        &["-a", "-t", "[2001:db8::99]:80", "-r", "10.1.10.66:80", "-i"],
        &[
            "-a",
            "-t",
            "10.1.10.99:8080",
            "-r",
            "[2001:db8::66]:8080",
            "-i",
            "--tun-type",
            "gue",
            "--tun-port",
            "6080",
        ],
        &["-a", "-t", "[2001:db8::99]:80", "-r", "10.1.10.67:80", "-g"],
        &["-D", "-t", "10.1.10.77:80"],
        &["-d", "-t", "10.1.10.88:80", "-r", "10.1.10.68:80"],
        &["--set", "1000", "100", "200"],
        &["-Ln"],
        &["-L", "-n"],
        &["-Ln", "--stats"],
        &["-Ln", "--rate"],
        &["-Ln", "--stats", "--exact"],
        &["-Sn"],
        &["-Ln", "--tun-info"],
        &["-Ln", "--timeout"],
        &["-Ln", "-t", "10.1.10.88:80"],
        &["-Ln", "-u", "10.1.10.88:53"],
        &["-Ln", "-t", "10.1.10.1:80"],
        &["-Ln", "--nosort", "-t", "10.1.10.99:8080"],
        &["-Ln", "--nosort", "-t", "10.1.10.88:80"],
        &["-Lnc"],
        // IPv6, persistence by prefix length (-M 64; none printed for 128).
        &[
            "-A",
            "-t",
            "[2001:db8::88]:80",
            "-s",
            "rr",
            "-p",
            "300",
            "-M",
            "64",
        ],
        &[
            "-a",
            "-t",
            "[2001:db8::88]:80",
            "-r",
            "[2001:db8::10]:80",
            "-g",
        ],
        &["-A", "-u", "[2001:db8::88]:53", "-s", "wlc", "-p"],
        &["-A", "-t", "[2001:db8::88]:81", "-s", "rr", "-p", "-M", "0"],
        &["-Ln", "-t", "[2001:db8::88]:80"],
        &["-Ln"],
        &["-Sn"],
        &["-Z"],
        &["-C"],
        &["-Ln"],
    ];
    let wrong = differences(&mut vm, &sock, commands);
    assert!(
        wrong.is_empty(),
        "{}",
        wrong.join(
            "
"
        )
    );
}

/// A lab with the VM on its segment and Fulcrum on the director with no configuration
/// (ipvsadm alone), its control socket DIR/d.sock.
fn vm_and_empty_daemon(label: &str) -> (Reference, Scratch, IpvsVm) {
    let mut r: Reference = reference::build(Deployment::LvsDr, label, Some(agent())).unwrap();
    let dir = Scratch::new(label);
    let switch = r.switches[0].clone();
    let vm = IpvsVm::start(&switch, &[&format!("{VM}/24")]).unwrap();
    let director = r.directors[0].clone();
    let sock = dir.0.join("d.sock");
    let log = dir.0.join("d.log");
    r.lab
        .spawn(
            &director,
            &[
                fulcrum_e2e::bin().as_os_str(),
                "run".as_ref(),
                "--control".as_ref(),
                sock.as_os_str(),
            ],
            Some(&log),
        )
        .unwrap();
    let up = wait_for(Duration::from_secs(20), || sock.exists());
    assert!(
        up.is_some(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    (r, dir, vm)
}

/// VIP1 on one director at a time, the VM's (`to_vm`) or Fulcrum's; the client forgets
/// whose MAC it had.
fn hand_over(r: &Reference, vm: &mut IpvsVm, to_vm: bool) {
    let (director, vip) = (&r.directors[0], reference::VIP1.to_string());
    let addr = format!("{vip}/32");
    if to_vm {
        r.lab
            .ip(director, &["addr", "del", &addr, "dev", "eth0"])
            .unwrap();
        vm.must(&format!("ip addr add {addr} dev eth0")).unwrap();
    } else {
        vm.must(&format!("ip addr del {addr} dev eth0")).unwrap();
        r.lab
            .ip(director, &["addr", "add", &addr, "dev", "eth0"])
            .unwrap();
    }
    r.lab
        .ip(&r.client, &["neigh", "flush", "to", &vip])
        .unwrap();
}

/// The statistics listings after the same traffic, against IPVS: a UDP DR service (rr over
/// .66 and .67) on the VM and then on Fulcrum, each holding VIP1 in turn, and from the
/// client three sockets sending exactly 7 datagrams of 100 bytes each (UDP, so the
/// packets are the client's alone and their number does not depend on timing).
/// `-Ln --stats` and `--stats --exact` agree: connections, packets and bytes, per service
/// and per real server (IPVS counts the IP packet's length, as Fulcrum does).
#[test]
fn stats_listings_match_ipvs_after_the_same_traffic() {
    if !require_root("stats_listings_match_ipvs_after_the_same_traffic") {
        return;
    }
    let (mut r, dir, mut vm) = vm_and_empty_daemon("ipvsstat");
    let sock = dir.0.join("d.sock");
    let svc = format!("{}:9000", reference::VIP1);
    let lines = [
        format!("-A -u {svc} -s rr"),
        format!("-a -u {svc} -r 10.1.10.66:9000 -g"),
        format!("-a -u {svc} -r 10.1.10.67:9000 -g"),
    ];
    let client = r.client.clone();
    let traffic = |r: &mut Reference| {
        for _ in 0..3 {
            let out = r
                .lab
                .run_agent(
                    &client,
                    &["flood", "--connect", &svc, "--size", "100", "--count", "7"],
                )
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
        // The last datagrams through the VM's slow emulated NIC.
        std::thread::sleep(Duration::from_millis(500));
    };
    vm.must(&format!("ipvsadm {}", lines.join(" && ipvsadm ")))
        .unwrap();
    hand_over(&r, &mut vm, true);
    traffic(&mut r);
    for l in &lines {
        let args: Vec<&str> = l.split_whitespace().collect();
        fulcrum_ipvsadm(&sock, &args);
    }
    hand_over(&r, &mut vm, false);
    traffic(&mut r);
    let wrong = differences(
        &mut vm,
        &sock,
        &[&["-Ln", "--stats"], &["-Ln", "--stats", "--exact"]],
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let stats = fulcrum_ipvsadm(&sock, &["-Ln", "--stats", "--exact"]);
    assert!(stats.contains("21"), "the packets were counted: {stats}");
}

/// Runs each ipvsadm command on the VM's ipvsadm and on Fulcrum's: where the output (but
/// the header's table size) or the exit code differ.
fn differences(vm: &mut IpvsVm, sock: &Path, commands: &[&[&str]]) -> Vec<String> {
    let mut wrong = Vec::new();
    for c in commands {
        let (code, theirs) = vm.run_code(&format!("ipvsadm {}", c.join(" "))).unwrap();
        let out = std::process::Command::new(fulcrum_e2e::bin())
            .arg("ipvsadm")
            .arg("--control")
            .arg(sock)
            .args(*c)
            .output()
            .unwrap();
        let ours = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let our_code = out.status.code().unwrap_or(-1);
        let (theirs, ours) = (without_table_size(&theirs), without_table_size(&ours));
        if (our_code, &ours) != (code, &theirs) {
            wrong.push(format!(
                "ipvsadm {}:\n  IPVS    ({code}):\n{theirs}\n  Fulcrum ({our_code}):\n{ours}",
                c.join(" ")
            ));
        }
    }
    wrong
}

/// TUN from Fulcrum to a real server whose own kernel takes the tunnels off, as IPVS's real
/// servers do: the VM (Debian's kernel, with ipip, fou and ip_gre) on the LVS-TUN
/// deployment's inside segment, holding the VIP on `lo`, with tunl0 and gre0 up and
/// `ip fou add port 6080 gue`. Connections through each tunnel type are answered by the
/// VM's server, and its tunnel devices count what they received. With outer checksums
/// too: gue with csum (the VM's UDP layer checks the checksum before fou takes the packet)
/// and gre with csum to a second address of the VM, whose gre device is made with `icsum`
/// (it drops a packet without a checksum, or with a wrong one). Then over IPv6 (the
/// deployment's IPv6 plan, the VM at 2001:db8:20::13 with the IPv6 VIP on `lo`): ipip as
/// IPv6 in IPv6 to its ip6tnl0, gue to `ip fou add port 6080 gue -6`, gre to its ip6gre0.
#[test]
fn the_ipvs_vms_kernel_decapsulates_fulcrums_tunnels() {
    if !require_root("the_ipvs_vms_kernel_decapsulates_fulcrums_tunnels") {
        return;
    }
    let mut r: Reference = reference::build(Deployment::LvsTun, "ipvstun", Some(agent())).unwrap();
    let dir = Scratch::new("ipvstun");
    let inside = r.switches[1].clone();
    let (rip, rip_csum) = ("10.2.20.13", "10.2.20.14");
    let mut vm =
        IpvsVm::start(&inside, &[&format!("{rip}/24"), &format!("{rip_csum}/24")]).unwrap();
    let vip = reference::VIP1;
    vm.must(&format!(
        "ip route add default via {} && ip addr add {vip}/32 dev lo && \
         sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
         net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0",
        reference::ROUTER_IN
    ))
    .unwrap();
    vm.must(&format!(
        "modprobe ipip && modprobe ip_gre && modprobe fou && \
         ip link set tunl0 up && ip link set gre0 up && \
         ip fou add port {} gue && \
         ip link add grecs type gre local {rip_csum} icsum && ip link set grecs up && \
         sysctl -qw net.ipv4.conf.tunl0.rp_filter=0 net.ipv4.conf.gre0.rp_filter=0 \
         net.ipv4.conf.grecs.rp_filter=0",
        reference::TUN_GUE_PORT
    ))
    .unwrap();
    vm.must(
        "for p in 80 81 82 83 84; do socat TCP-LISTEN:$p,fork,reuseaddr SYSTEM:'echo vm' \
         >/dev/null 2>&1 & done",
    )
    .unwrap();
    let v6 = r.add_ipv6().unwrap();
    let rip6 = "2001:db8:20::13";
    vm.must(&format!(
        "ip -6 addr add {rip6}/64 dev eth0 nodad && ip -6 addr add {}/128 dev lo && \
         ip -6 route add default via 2001:db8:20::fe && \
         modprobe ip6_tunnel && modprobe ip6_gre && (modprobe fou6 || true) && \
         ip link set ip6tnl0 up && ip link set ip6gre0 up && \
         ip fou add port {} gue -6 && \
         for p in 90 91 92; do socat TCP6-LISTEN:$p,fork,reuseaddr SYSTEM:'echo vm6' \
         >/dev/null 2>&1 & done",
        v6.vip,
        reference::TUN_GUE_PORT
    ))
    .unwrap();
    let mut conf = String::new();
    let gue = format!("TUN type gue port {}", reference::TUN_GUE_PORT);
    for (port, tun, to) in [
        (80, "TUN".to_string(), rip),
        (81, gue.clone(), rip),
        (82, "TUN type gre".to_string(), rip),
        (83, format!("{gue} csum"), rip),
        (84, "TUN type gre csum".to_string(), rip_csum),
    ] {
        conf += &format!(
            "virtual_server {vip} {port} {{\n    lb_algo rr\n    lb_kind {tun}\n    protocol TCP\n    real_server {to} {port} {{\n        weight 1\n    }}\n}}\n"
        );
    }
    for (port, tun) in [
        (90, "TUN".to_string()),
        (91, gue.clone()),
        (92, "TUN type gre".to_string()),
    ] {
        conf += &format!(
            "virtual_server {} {port} {{\n    lb_algo rr\n    lb_kind {tun}\n    protocol TCP\n    real_server {rip6} {port} {{\n        weight 1\n    }}\n}}\n",
            v6.vip
        );
    }
    let path = dir.0.join("tun.conf");
    std::fs::write(&path, conf).unwrap();
    let director = r.directors[0].clone();
    let d = fulcrum_e2e::spawn_fulcrum(&mut r.lab, &director, &path, &dir.0, "tun", &[]);
    let up = wait_for(Duration::from_secs(20), || {
        fulcrum_ipvsadm(&d.sock, &["-Ln"]).matches("Tunnel").count() == 8
    });
    assert!(
        up.is_some(),
        "{}",
        std::fs::read_to_string(&d.log).unwrap_or_default()
    );
    let client = r.client.clone();
    for port in [80, 81, 82, 83, 84] {
        // The first SYN may wait for the router's MAC; the VM is slow (no KVM here).
        let answered = wait_for(Duration::from_secs(20), || {
            r.lab
                .probe(&client, &format!("{vip}:{port}"), 1, false)
                .is_ok_and(|a| a == ["vm"])
        });
        assert!(
            answered.is_some(),
            "port {port}: no answer from the VM through the tunnel\n{}\n{}",
            fulcrum_ipvsadm(&d.sock, &["-Ln", "--stats"]),
            vm.must(
                "ip -s link show tunl0; ip -s link show gre0; ip -s link show grecs; \
                 ip fou show; nstat -az UdpInCsumErrors"
            )
            .unwrap_or_default()
        );
        let answers = r
            .lab
            .probe(&client, &format!("{vip}:{port}"), 3, false)
            .unwrap();
        assert_eq!(answers, ["vm", "vm", "vm"], "port {port}");
    }
    // The same over IPv6.
    for port in [90, 91, 92] {
        let target = format!("[{}]:{port}", v6.vip);
        let answered = wait_for(Duration::from_secs(20), || {
            r.lab
                .probe(&client, &target, 1, false)
                .is_ok_and(|a| a == ["vm6"])
        });
        assert!(
            answered.is_some(),
            "IPv6 port {port}: no answer from the VM through the tunnel\n{}\n{}",
            fulcrum_ipvsadm(&d.sock, &["-Ln", "--stats"]),
            vm.must(
                "ip -s link show ip6tnl0; ip -s link show ip6gre0; ip fou show; \
                 ip -6 addr; ip -6 route; lsmod | grep -E 'ip6|fou|tunnel'; \
                 nstat -az | grep -E 'Ip6|Udp6'"
            )
            .unwrap_or_default()
        );
        let answers = r.lab.probe(&client, &target, 3, false).unwrap();
        assert_eq!(answers, ["vm6", "vm6", "vm6"], "IPv6 port {port}");
    }
    // ipip and gue arrive on tunl0, gre on gre0, gre with a checksum on grecs; over IPv6
    // ipip and gue on ip6tnl0, gre on ip6gre0.
    for dev in ["tunl0", "gre0", "grecs", "ip6tnl0", "ip6gre0"] {
        let stats = vm
            .must(&format!("cat /sys/class/net/{dev}/statistics/rx_packets"))
            .unwrap();
        let n: u64 = stats.trim().parse().unwrap_or(0);
        assert!(n > 0, "{dev} received nothing: {stats}");
    }
}

/// The schedulers IPVS makes deterministic, against IPVS itself: the same service (VIP1, DR,
/// real servers .66 weight 1 and .67 weight 3, added in that order) on the VM and on
/// Fulcrum, each holding VIP1 in turn, and the same run of twelve new connections from the
/// client: the same real server answers each, in order. Each scheduler gets a port of its
/// own, so that IPVS does not take back the real servers of the previous one from its
/// trash with their connection counts.
///
/// Every scheduler but mh (IPVS seeds its hashes at random) and twos (random by design).
/// Both follow IPVS's list order: a server added goes to the head of the service's list
/// (list_add_rcu), and the scans start there. The `+readd` cases delete .66 and add it
/// again before the connections, which moves it to the head of the list.
const SAME_SEQUENCES: [&str; 14] = [
    "rr", "wrr", "lc", "wlc", "sed", "nq", "dh", "sh", "fo", "ovf", "lblc", "lblcr", "rr+readd",
    "lc+readd",
];

#[test]
fn scheduling_sequences_match_ipvs() {
    if !require_root("scheduling_sequences_match_ipvs") {
        return;
    }
    let (mut r, dir, mut vm) = vm_and_empty_daemon("ipvsseq");
    let sock = dir.0.join("d.sock");
    let vip = reference::VIP1.to_string();
    let client = r.client.clone();
    let ports: Vec<u16> = (0..SAME_SEQUENCES.len() as u16).map(|i| 8000 + i).collect();
    // The real servers answer with their name, on each scheduler's port.
    for (i, rs) in r.real_servers.clone().iter().enumerate() {
        for port in &ports {
            r.lab
                .serve(
                    rs,
                    &format!("rs{}", i + 1),
                    &format!("0.0.0.0:{port}"),
                    false,
                )
                .unwrap();
        }
    }
    let service = |s: &str, port: u16| -> Vec<String> {
        let (s, readd) = match s.split_once('+') {
            Some((s, _)) => (s, true),
            None => (s, false),
        };
        let mut lines = vec![
            format!("-A -t {vip}:{port} -s {s}"),
            format!("-a -t {vip}:{port} -r 10.1.10.66:{port} -g -w 1"),
            format!("-a -t {vip}:{port} -r 10.1.10.67:{port} -g -w 3"),
        ];
        if readd {
            lines.push(format!("-d -t {vip}:{port} -r 10.1.10.66:{port}"));
            lines.push(format!("-a -t {vip}:{port} -r 10.1.10.66:{port} -g -w 1"));
        }
        lines
    };
    let mut differ = Vec::new();
    for (s, port) in SAME_SEQUENCES.iter().zip(&ports) {
        let lines = service(s, *port);
        vm.must(&format!("ipvsadm {}", lines.join(" && ipvsadm ")))
            .unwrap();
        hand_over(&r, &mut vm, true);
        let ipvs = r
            .lab
            .probe(&client, &format!("{vip}:{port}"), 12, false)
            .unwrap();
        for e in &lines {
            let args: Vec<&str> = e.split_whitespace().collect();
            fulcrum_ipvsadm(&sock, &args);
        }
        hand_over(&r, &mut vm, false);
        let ours = r
            .lab
            .probe(&client, &format!("{vip}:{port}"), 12, false)
            .unwrap();
        assert_eq!(ipvs.len(), 12, "{s}: IPVS answered {ipvs:?}");
        if ours != ipvs {
            differ.push(format!("{s}: IPVS {ipvs:?}\n    Fulcrum {ours:?}"));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
