//! BIRD 2 as the BGP speaker: Fulcrum writes one file that bird.conf includes (its own
//! routing tables, a static protocol with the announced VIPs, one BGP protocol per
//! neighbour) and asks BIRD to read it again with `birdc configure`, BIRD's documented
//! way; `birdc show protocols` tells the sessions' states.
//!
//! The VIP routes point at the liveness interface, a tap device the Fulcrum process holds
//! open: if the process dies, even by SIGKILL, the kernel removes the device, BIRD's static
//! routes through it go, and BGP withdraws them at once. The routes live in tables of their
//! own (`fulcrum4`, `fulcrum6`), so nothing reaches the director's kernel routing table.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::announce::Route;

/// One BGP neighbour (the type keepalived.conf's `fulcrum_bgp` block reads).
pub use fulcrum_types::BgpNeighbor as Neighbor;

/// A BGP daemon that announces what Fulcrum decides: the small interface FRR would sit
/// behind too.
pub trait Speaker {
    /// The file the daemon's own configuration includes, which Fulcrum writes.
    fn include(&self) -> PathBuf;
    /// The contents of that file for these routes.
    fn config(&self, routes: &[Route]) -> String;
    /// The command that makes the daemon take the file again.
    fn reload_command(&self) -> Vec<String>;
    /// Whether the reload command's output says it worked (else it is the error).
    fn reloaded(&self, output: &str) -> bool;
    /// The command that lists the sessions.
    fn sessions_command(&self) -> Vec<String>;
    /// The sessions, out of that command's output.
    fn sessions(&self, output: &str) -> Vec<Session>;
}

/// A BGP session as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub neighbor: IpAddr,
    /// BIRD's protocol state: up, start, down, ...
    pub state: String,
    /// BGP's state: Established, Active, Connect, OpenSent, ...
    pub info: String,
    /// Since when, in BIRD's words.
    pub since: String,
}

impl Session {
    pub fn established(&self) -> bool {
        self.info.starts_with("Established")
    }
}

/// BIRD 2, driven through `birdc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bird {
    /// birdc's control socket.
    pub socket: PathBuf,
    /// The file Fulcrum writes and bird.conf includes.
    pub include: PathBuf,
    pub local_as: u32,
    pub neighbors: Vec<Neighbor>,
    /// The tap device the routes go through (see the module's text).
    pub liveness: String,
}

fn protocol_name(i: usize) -> String {
    format!("fulcrum_peer{}", i + 1)
}

fn prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

impl Bird {
    fn filter(&self, routes: &[Route]) -> String {
        let mut f = String::from("filter fulcrum_export {\n");
        for r in routes {
            let Some(a) = &r.attrs else { continue };
            let mut body = String::new();
            for _ in 0..a.prepend {
                body.push_str(&format!("\t\tbgp_path.prepend({});\n", self.local_as));
            }
            if let Some(med) = a.med {
                body.push_str(&format!("\t\tbgp_med = {med};\n"));
            }
            for (x, y) in &a.communities {
                body.push_str(&format!("\t\tbgp_community.add(({x},{y}));\n"));
            }
            if !body.is_empty() {
                f.push_str(&format!(
                    "\tif net = {} then {{\n{body}\t}}\n",
                    prefix(r.vip)
                ));
            }
        }
        f.push_str("\taccept;\n}\n");
        f
    }
}

impl Speaker for Bird {
    fn include(&self) -> PathBuf {
        self.include.clone()
    }

    fn config(&self, routes: &[Route]) -> String {
        let mut s = String::from(
            "# Written by Fulcrum from keepalived.conf's fulcrum_bgp block, and rewritten at\n\
             # every change; bird.conf includes it. Do not edit.\n\
             ipv4 table fulcrum4;\nipv6 table fulcrum6;\n\n",
        );
        for (v6, family) in [(false, "ipv4"), (true, "ipv6")] {
            let table = if v6 { "fulcrum6" } else { "fulcrum4" };
            s.push_str(&format!(
                "protocol static fulcrum_vips{} {{\n\t{family} {{ table {table}; }};\n",
                if v6 { 6 } else { 4 }
            ));
            for r in routes
                .iter()
                .filter(|r| r.attrs.is_some() && r.vip.is_ipv6() == v6)
            {
                s.push_str(&format!(
                    "\troute {} via \"{}\";\n",
                    prefix(r.vip),
                    self.liveness
                ));
            }
            s.push_str("}\n\n");
        }
        s.push_str(&self.filter(routes));
        if self.neighbors.iter().any(|n| n.bfd) {
            s.push_str("\nprotocol bfd fulcrum_bfd {\n}\n");
        }
        for (i, n) in self.neighbors.iter().enumerate() {
            let (family, table) = if n.addr.is_ipv6() {
                ("ipv6", "fulcrum6")
            } else {
                ("ipv4", "fulcrum4")
            };
            s.push_str(&format!("\nprotocol bgp {} {{\n", protocol_name(i)));
            match n.local {
                Some(l) => s.push_str(&format!("\tlocal {l} as {};\n", self.local_as)),
                None => s.push_str(&format!("\tlocal as {};\n", self.local_as)),
            }
            match n.port {
                Some(p) => s.push_str(&format!(
                    "\tneighbor {} port {p} as {};\n",
                    n.addr, n.remote_as
                )),
                None => s.push_str(&format!("\tneighbor {} as {};\n", n.addr, n.remote_as)),
            }
            if let Some(ttl) = n.multihop {
                s.push_str(&format!("\tmultihop {ttl};\n"));
            }
            if let Some(h) = n.hold_time {
                s.push_str(&format!("\thold time {h};\n\tconnect retry time 1;\n"));
            }
            // BIRD waits 60 s (then up to 300) after a session error before it tries
            // again: a director back from a cut would stay out a minute.
            s.push_str("\terror wait time 2, 60;\n");
            if n.bfd {
                s.push_str("\tbfd on;\n");
            }
            s.push_str(&format!(
                "\t{family} {{ table {table}; import none; export filter fulcrum_export; }};\n}}\n"
            ));
        }
        s
    }

    fn reload_command(&self) -> Vec<String> {
        vec![
            "birdc".into(),
            "-s".into(),
            self.socket.display().to_string(),
            "configure".into(),
        ]
    }

    fn reloaded(&self, output: &str) -> bool {
        // "Reconfigured", "Reconfiguration in progress", or "Reconfiguration already in
        // progress, queueing new config"; an error names the file and line.
        output
            .lines()
            .any(|l| l.contains("Reconfigur") && !l.contains("failed"))
    }

    fn sessions_command(&self) -> Vec<String> {
        vec![
            "birdc".into(),
            "-s".into(),
            self.socket.display().to_string(),
            "show".into(),
            "protocols".into(),
        ]
    }

    fn sessions(&self, output: &str) -> Vec<Session> {
        let mut out = Vec::new();
        for line in output.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            // Name Proto Table State Since [Info...]; Since may be a date and a time.
            if words.len() < 5 || words[1] != "BGP" {
                continue;
            }
            let Some(i) = words[0]
                .strip_prefix("fulcrum_peer")
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| n.checked_sub(1))
            else {
                continue;
            };
            let Some(n) = self.neighbors.get(i) else {
                continue;
            };
            // Since is one word (a time) or two (a date and a time).
            let rest = &words[4..];
            let (since, info) = if rest.len() > 1 && rest[1].contains(':') {
                (format!("{} {}", rest[0], rest[1]), rest[2..].join(" "))
            } else {
                (rest[0].to_string(), rest[1..].join(" "))
            };
            out.push(Session {
                neighbor: n.addr,
                state: words[3].to_string(),
                info,
                since,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::{Attrs, Why};

    fn bird() -> Bird {
        Bird {
            socket: "/run/bird/bird.ctl".into(),
            include: "/etc/bird/fulcrum.conf".into(),
            local_as: 65001,
            neighbors: vec![
                Neighbor {
                    addr: "10.9.0.1".parse().unwrap(),
                    remote_as: 65000,
                    local: Some("10.9.0.11".parse().unwrap()),
                    port: None,
                    hold_time: Some(3),
                    multihop: None,
                    bfd: false,
                },
                Neighbor {
                    addr: "fd00:9::1".parse().unwrap(),
                    remote_as: 65000,
                    local: Some("fd00:9::11".parse().unwrap()),
                    port: Some(1179),
                    hold_time: None,
                    multihop: Some(2),
                    bfd: true,
                },
            ],
            liveness: "fulcrum-bgp".into(),
        }
    }

    #[test]
    fn the_include_announces_what_the_plan_says() {
        let routes = vec![
            Route {
                vip: "10.1.10.65".parse().unwrap(),
                attrs: Some(Attrs {
                    prepend: 2,
                    med: Some(10),
                    communities: vec![(65001, 100)],
                }),
                why: Why::Draining,
            },
            Route {
                vip: "10.1.10.66".parse().unwrap(),
                attrs: None,
                why: Why::NoService,
            },
            Route {
                vip: "fd00:10::65".parse().unwrap(),
                attrs: Some(Attrs {
                    prepend: 0,
                    med: None,
                    communities: vec![],
                }),
                why: Why::Serving,
            },
        ];
        let text = bird().config(&routes);
        let expected =
            "# Written by Fulcrum from keepalived.conf's fulcrum_bgp block, and rewritten at
# every change; bird.conf includes it. Do not edit.
ipv4 table fulcrum4;
ipv6 table fulcrum6;

protocol static fulcrum_vips4 {
\tipv4 { table fulcrum4; };
\troute 10.1.10.65/32 via \"fulcrum-bgp\";
}

protocol static fulcrum_vips6 {
\tipv6 { table fulcrum6; };
\troute fd00:10::65/128 via \"fulcrum-bgp\";
}

filter fulcrum_export {
\tif net = 10.1.10.65/32 then {
\t\tbgp_path.prepend(65001);
\t\tbgp_path.prepend(65001);
\t\tbgp_med = 10;
\t\tbgp_community.add((65001,100));
\t}
\taccept;
}

protocol bfd fulcrum_bfd {
}

protocol bgp fulcrum_peer1 {
\tlocal 10.9.0.11 as 65001;
\tneighbor 10.9.0.1 as 65000;
\thold time 3;
\tconnect retry time 1;
\terror wait time 2, 60;
\tipv4 { table fulcrum4; import none; export filter fulcrum_export; };
}

protocol bgp fulcrum_peer2 {
\tlocal fd00:9::11 as 65001;
\tneighbor fd00:9::1 port 1179 as 65000;
\tmultihop 2;
\terror wait time 2, 60;
\tbfd on;
\tipv6 { table fulcrum6; import none; export filter fulcrum_export; };
}
";
        assert_eq!(text, expected);
    }

    #[test]
    fn sessions_are_read_from_show_protocols() {
        let out = "BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     22:38:29.156  
fulcrum_vips4 Static     fulcrum4   up     22:38:29.156  
fulcrum_peer1 BGP        ---        up     22:38:33.334  Established   
fulcrum_peer2 BGP        ---        start  2026-12-06 22:38:29  Active        Socket: Connection refused
other      BGP        ---        up     22:38:33.334  Established   
";
        let s = bird().sessions(out);
        assert_eq!(s.len(), 2);
        assert!(s[0].established());
        assert_eq!(s[0].neighbor, "10.9.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            (s[1].state.as_str(), s[1].since.as_str(), s[1].established()),
            ("start", "2026-12-06 22:38:29", false)
        );
        assert!(s[1].info.starts_with("Active"));
    }

    #[test]
    fn reconfigure_answers() {
        let b = bird();
        assert!(b.reloaded(
            "BIRD 2.0.12 ready.\nReading configuration from /etc/bird/bird.conf\nReconfigured\n"
        ));
        assert!(!b.reloaded(
            "BIRD 2.0.12 ready.\nReading configuration from /etc/bird/bird.conf\n/etc/bird/fulcrum.conf:3:1 syntax error\n"
        ));
    }
}
