//! The active-active topology (issue 16): a client with many source addresses behind a
//! router namespace running BIRD (multipath on, the kernel's L4 hash), three directors each
//! running Fulcrum and BIRD on one segment with four DR real servers (the VIP on `lo`).
//! Each director announces the VIP by BGP (keepalived.conf's fulcrum_bgp); the router
//! spreads the flows over them. Shared by the lab test and `fulcrum demo`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{wait_for, Agent, Host, Lab, LabError, Process, Result};

pub const VIP: &str = "10.1.10.65";
pub const ROUTER: &str = "10.30.0.1";
pub const DIRECTORS: [&str; 3] = ["10.30.0.11", "10.30.0.12", "10.30.0.13"];
pub const REAL_SERVERS: [&str; 4] = ["10.30.0.21", "10.30.0.22", "10.30.0.23", "10.30.0.24"];
/// The client's source addresses: 10.20.1.1 and the 199 after it (mh hashes the client's
/// address, so many clients spread over the real servers).
pub const SOURCES: &str = "10.20.1.1/200";

/// A director's Fulcrum.
#[derive(Debug)]
pub struct Director {
    pub host: Host,
    pub process: Option<Process>,
    pub sock: PathBuf,
    pub log: PathBuf,
}

/// The built topology, with everything running.
pub struct Group {
    pub lab: Lab,
    /// Where configurations, sockets and logs go.
    pub dir: PathBuf,
    /// The fulcrum binary.
    pub exe: PathBuf,
    pub client: Host,
    pub router: Host,
    pub directors: Vec<Director>,
    /// The real servers' answering processes.
    pub servers: Vec<Process>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("lab", &self.lab.prefix())
            .field("dir", &self.dir)
            .field("directors", &self.directors)
            .finish_non_exhaustive()
    }
}

fn bird(lab: &mut Lab, host: &Host, dir: &Path, name: &str, conf: &str) -> Result<()> {
    let path = dir.join(format!("{name}.bird.conf"));
    write(&path, conf)?;
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
    )?;
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| LabError::Spawn {
        command: format!("write {}", path.display()),
        source,
    })
}

/// The directors' keepalived.conf: mh over the four real servers, each checked by a
/// script that fails while `DIR/NAME.fail` exists (to take quorum away from one
/// director) or the real server does not accept a connection.
pub fn keepalived_conf(me: &str, dir: &Path, name: &str, bfd: bool) -> String {
    let check = dir.join("check.sh");
    let mut c = format!(
        "global_defs {{\n    fulcrum_xdp_interfaces eth0\n}}\n\
         virtual_server {VIP} 80 {{\n    delay_loop 1\n    lb_algo mh\n    lb_kind DR\n    protocol TCP\n"
    );
    for rs in REAL_SERVERS {
        c += &format!(
            "    real_server {rs} 80 {{\n        weight 1\n        MISC_CHECK {{\n            misc_path \"{} {name} {rs}\"\n            misc_timeout 1\n            retry 0\n        }}\n    }}\n",
            check.display()
        );
    }
    c += "}\n";
    c += &format!(
        "fulcrum_bgp {{\n    control {}\n    config_file {}\n    local_as 65001\n    neighbor {ROUTER} as 65000 local {me} hold_time 3{}\n}}\n",
        dir.join(format!("{name}.bird.ctl")).display(),
        dir.join(format!("{name}.fulcrum.conf")).display(),
        if bfd { " bfd" } else { "" },
    );
    c
}

/// Builds the topology and starts BIRD on the router and the directors, the real
/// servers' answering agents, and Fulcrum on each director (`exe`, the fulcrum binary,
/// also the lab's agent). `dir` holds the files. With `bfd`, every BGP session runs BFD
/// (BIRD's defaults: a lost peer is noticed in about half a second), else a lost director
/// is noticed by the 3 s hold time.
pub fn build(label: &str, exe: &Path, dir: &Path, bfd: bool) -> Result<Group> {
    let mut lab = Lab::new(label)?.with_agent(Agent::new(exe, &["lab-agent"]));
    let check = dir.join("check.sh");
    write(
        &check,
        &format!(
            "#!/bin/bash\n# check.sh DIRECTOR REAL_SERVER\ntest ! -e {}/$1.fail && exec 3<>/dev/tcp/$2/80\n",
            dir.display()
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&check, std::fs::Permissions::from_mode(0o755)).map_err(|source| {
        LabError::Spawn {
            command: format!("chmod {}", check.display()),
            source,
        }
    })?;
    let core = lab.switch("core")?;
    let client = lab.host("client")?;
    let router = lab.host("router")?;
    lab.link(&client, "eth0", &router, "eth1")?;
    lab.addr(&client, "eth0", "10.20.0.2/16")?;
    for i in 1..=200u32 {
        lab.ip(
            &client,
            &["addr", "add", &format!("10.20.1.{i}/16"), "dev", "eth0"],
        )?;
    }
    lab.route(&client, "default", "10.20.0.1")?;
    lab.addr(&router, "eth1", "10.20.0.1/16")?;
    lab.attach(&router, "eth0", &core)?;
    lab.addr(&router, "eth0", &format!("{ROUTER}/24"))?;
    lab.sysctl(&router, "net.ipv4.ip_forward", "1")?;
    lab.sysctl(&router, "net.ipv4.fib_multipath_hash_policy", "1")?;
    let mut servers = Vec::new();
    for (i, rs) in REAL_SERVERS.iter().enumerate() {
        let h = lab.host(&format!("rs{}", i + 1))?;
        lab.attach(&h, "eth0", &core)?;
        lab.addr(&h, "eth0", &format!("{rs}/24"))?;
        lab.route(&h, "default", ROUTER)?;
        lab.addr(&h, "lo", &format!("{VIP}/32"))?;
        for scope in ["all", "lo"] {
            lab.sysctl(&h, &format!("net.ipv4.conf.{scope}.arp_ignore"), "1")?;
            lab.sysctl(&h, &format!("net.ipv4.conf.{scope}.arp_announce"), "2")?;
        }
        servers.push(lab.serve(&h, &format!("rs{}", i + 1), "0.0.0.0:80", false)?);
    }
    let mut router_conf = format!(
        "router id {ROUTER};\nprotocol device {{ scan time 10; }}\n\
         protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}\n{}",
        if bfd { "protocol bfd {\n}\n" } else { "" }
    );
    let mut hosts = Vec::new();
    for (i, d) in DIRECTORS.iter().enumerate() {
        let name = format!("d{}", i + 1);
        let h = lab.host(&name)?;
        let port = lab.attach(&h, "eth0", &core)?;
        // XDP_TX on a veth reaches its peer only when the peer has NAPI (REFERENCE.md).
        lab.xdp_pass_stub(&core.netns, &port)?;
        // No unknown unicast flooded to a director, as on the routed links directors
        // usually have: when a director's port goes down the bridge forgets its MAC, and
        // flooding the router's frames for it to the others would let their XDP program
        // (which sees every frame, whatever its destination MAC) carry its flows on
        // before the router has withdrawn it, hiding the outage being measured.
        lab.exec(
            &core.netns,
            [
                "ip",
                "link",
                "set",
                "dev",
                &port,
                "type",
                "bridge_slave",
                "flood",
                "off",
            ],
        )?;
        lab.addr(&h, "eth0", &format!("{d}/24"))?;
        lab.route(&h, "default", ROUTER)?;
        router_conf += &format!(
            "protocol bgp {name} {{ local {ROUTER} as 65000; neighbor {d} as 65001; hold time 3; connect retry time 1; error wait time 1, 5;{}\n    ipv4 {{ import all; export none; }}; }}\n",
            if bfd { " bfd on;" } else { "" }
        );
        let include = dir.join(format!("{name}.fulcrum.conf"));
        write(&include, "")?;
        bird(
            &mut lab,
            &h,
            dir,
            &name,
            &format!(
                "router id {d};\nprotocol device {{ scan time 10; }}\ninclude \"{}\";\n",
                include.display()
            ),
        )?;
        write(
            &dir.join(format!("{name}.keepalived.conf")),
            &keepalived_conf(d, dir, &name, bfd),
        )?;
        hosts.push(h);
    }
    bird(&mut lab, &router, dir, "router", &router_conf)?;
    // The directors' BIRD must be up before Fulcrum asks it to read its file.
    for i in 0..DIRECTORS.len() {
        let sock = dir.join(format!("d{}.bird.ctl", i + 1));
        if wait_for(Duration::from_secs(10), || sock.exists()).is_none() {
            return Err(LabError::NotReady(format!(
                "BIRD did not start in d{}",
                i + 1
            )));
        }
    }
    let directors = hosts
        .into_iter()
        .enumerate()
        .map(|(i, host)| Director {
            host,
            process: None,
            sock: dir.join(format!("d{}.sock", i + 1)),
            log: dir.join(format!("d{}.log", i + 1)),
        })
        .collect();
    let mut g = Group {
        lab,
        dir: dir.to_path_buf(),
        exe: exe.to_path_buf(),
        client,
        router,
        directors,
        servers,
    };
    for i in 0..DIRECTORS.len() {
        g.start_director(i)?;
    }
    Ok(g)
}

impl Group {
    /// Starts (or starts again) director `i`'s Fulcrum, with metrics on 127.0.0.1:9100.
    pub fn start_director(&mut self, i: usize) -> Result<()> {
        let name = format!("d{}", i + 1);
        let conf = self.dir.join(format!("{name}.keepalived.conf"));
        let d = &self.directors[i];
        let (host, sock, log) = (d.host.clone(), d.sock.clone(), d.log.clone());
        let p = self.lab.spawn(
            &host,
            &[
                self.exe.as_os_str(),
                "run".as_ref(),
                "-f".as_ref(),
                conf.as_os_str(),
                "--control".as_ref(),
                sock.as_os_str(),
                "--metrics".as_ref(),
                "127.0.0.1:9100".as_ref(),
            ],
            Some(&log),
        )?;
        self.directors[i].process = Some(p);
        Ok(())
    }

    /// SIGKILLs director `i`'s Fulcrum.
    pub fn kill_director(&mut self, i: usize) {
        if let Some(p) = self.directors[i].process.take() {
            p.kill();
        }
    }

    /// The router's next hops for the VIP, sorted.
    pub fn next_hops(&self) -> Vec<String> {
        let Ok(out) = self.lab.ip(&self.router, &["-4", "route", "show", VIP]) else {
            return Vec::new();
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut hops: Vec<String> = words
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_string())
            .collect();
        hops.sort();
        hops
    }

    /// The directors' addresses but the `skip`th.
    pub fn directors_but(skip: Option<usize>) -> Vec<String> {
        DIRECTORS
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .map(|(_, d)| d.to_string())
            .collect()
    }

    /// `fulcrum ctl ARGS` against director `i`: its output.
    pub fn ctl(&self, i: usize, args: &[&str]) -> String {
        let out = std::process::Command::new(&self.exe)
            .arg("ctl")
            .arg("--control")
            .arg(&self.directors[i].sock)
            .args(args)
            .output();
        match out {
            Ok(o) => {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            }
            Err(e) => e.to_string(),
        }
    }

    /// Whether director `i`'s TCP service lists the real server `rs` (ADDR:PORT), out of
    /// its `ipvsadm -Ln`; None when the listing does not show the service at all.
    pub fn lists(&self, i: usize, rs: &str) -> Option<bool> {
        let out = std::process::Command::new(&self.exe)
            .args(["ipvsadm", "--control"])
            .arg(&self.directors[i].sock)
            .args(["-Ln", "-t", &format!("{VIP}:80")])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.contains(&format!("TCP  {VIP}:80"))
            .then(|| text.lines().any(|l| l.contains(&format!("-> {rs} "))))
    }

    /// New connections through each director so far, out of its `ipvsadm --stats`.
    pub fn connections(&self) -> Vec<u64> {
        self.directors
            .iter()
            .map(|d| {
                let out = std::process::Command::new(&self.exe)
                    .args(["ipvsadm", "--control"])
                    .arg(&d.sock)
                    .args(["-Ln", "--stats", "--exact"])
                    .output();
                let text = out
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                text.lines()
                    .find(|l| l.starts_with("TCP") && l.contains(VIP))
                    .and_then(|l| l.split_whitespace().nth(2))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }

    /// `n` new connections, one from each source address in turn: the real server each
    /// reached (or `error: ...`), in order.
    pub fn probe(&self, n: u32) -> Result<Vec<String>> {
        let out = self.lab.run_agent(
            &self.client,
            &[
                "probe",
                "--connect",
                &format!("{VIP}:80"),
                "--count",
                &n.to_string(),
                "--sources",
                SOURCES,
                "--timeout-ms",
                "3000",
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Starts `connections` long-lived connections from the many sources, a line every
    /// 100 ms each for `for_ms`, and waits until all are open; the agent's output goes to
    /// DIR/NAME.hold.log.
    pub fn hold(
        &mut self,
        name: &str,
        connections: u32,
        for_ms: u32,
    ) -> Result<(Process, PathBuf)> {
        let log = self.dir.join(format!("{name}.hold.log"));
        let client = self.client.clone();
        let (total, n) = (for_ms.to_string(), connections.to_string());
        let p = self.lab.spawn(
            &client,
            &[
                self.exe.to_string_lossy().as_ref(),
                "lab-agent",
                "hold",
                "--connect",
                &format!("{VIP}:80"),
                "--every-ms",
                "100",
                "--for-ms",
                &total,
                "--connections",
                &n,
                "--timeout-ms",
                "10000",
                "--sources",
                SOURCES,
            ],
            Some(&log),
        )?;
        let opened = wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("connected rs")
                .count()
                == connections as usize
        });
        if opened.is_none() {
            return Err(LabError::NotReady(format!(
                "the long-lived connections did not all open: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )));
        }
        Ok((p, log))
    }

    /// Starts new connections from the client, one every 10 ms from one address (its
    /// ports spread them over the directors) for `for_ms`, each given 1 s: the agent's
    /// `watch`, its output in DIR/NAME.watch.log (see [`Group::watched`]).
    pub fn watch(&mut self, name: &str, for_ms: u32) -> Result<(Process, PathBuf)> {
        let log = self.dir.join(format!("{name}.watch.log"));
        let client = self.client.clone();
        let p = self.lab.spawn(
            &client,
            &[
                self.exe.to_string_lossy().as_ref(),
                "lab-agent",
                "watch",
                "--connect",
                &format!("{VIP}:80"),
                "--every-ms",
                "10",
                "--for-ms",
                &for_ms.to_string(),
                "--timeout-ms",
                "1000",
            ],
            Some(&log),
        )?;
        Ok((p, log))
    }

    /// A finished watch: (attempts, failed, milliseconds from the first failure to the
    /// last).
    pub fn watched(p: Process, log: &Path) -> (usize, usize, u64) {
        p.wait_timeout(Duration::from_secs(60));
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let failures: Vec<u64> = text
            .lines()
            .filter(|l| l.contains(" error"))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        let span = match (failures.first(), failures.last()) {
            (Some(a), Some(b)) => (b - a) / 1000,
            _ => 0,
        };
        (text.lines().count(), failures.len(), span)
    }

    /// The client's TCP segments retransmitted so far (its namespace's RetransSegs): a
    /// count of the segments lost on the way, one way or the other.
    pub fn retransmits(&self) -> u64 {
        let Ok(out) = self.lab.exec(&self.client.netns, ["cat", "/proc/net/snmp"]) else {
            return 0;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let tcp: Vec<&str> = text.lines().filter(|l| l.starts_with("Tcp:")).collect();
        let [names, values] = tcp[..] else {
            return 0;
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "RetransSegs")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    }

    /// Every director's log and BGP view, for a failure.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (i, d) in self.directors.iter().enumerate() {
            s += &format!(
                "--- d{} fulcrum:\n{}\n--- ctl bgp:\n{}\n",
                i + 1,
                std::fs::read_to_string(&d.log).unwrap_or_default(),
                self.ctl(i, &["bgp"]),
            );
        }
        s
    }
}
