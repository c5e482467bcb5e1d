//! The dashboard's data for scripts and spreadsheets: `/status.json` (what the page
//! shows) and `/status.csv`, one row per VRRP instance, virtual service, real server,
//! checker and upstream peer, as HAProxy's stats page offers its CSV.

use fulcrum_node::status::{IpvsDest, Rates, ServerHealth};
use fulcrum_node::Status;

/// The CSV's header line (`# ` first, as HAProxy's).
pub const CSV_HEADER: &str = "# type,name,member,state,since,weight,active,inactive,connections,inbytes,outbytes,cps,inpps,outpps,inbps,outbps,checks,failures,reason";

/// One row's fields, in the header's order; empty where the row has no such value.
#[derive(Default)]
struct Row {
    kind: &'static str,
    name: String,
    member: String,
    state: String,
    since: Option<u64>,
    weight: Option<i64>,
    active: Option<u64>,
    inactive: Option<u64>,
    traffic: Option<(u64, u64, u64, Rates)>,
    checks: Option<u64>,
    failures: Option<u64>,
    reason: String,
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

impl Row {
    fn line(&self) -> String {
        let (conns, inbytes, outbytes, rates) = match &self.traffic {
            Some((c, i, o, r)) => (
                c.to_string(),
                i.to_string(),
                o.to_string(),
                [r.cps, r.inpps, r.outpps, r.inbps, r.outbps].map(|n| n.to_string()),
            ),
            None => Default::default(),
        };
        let fields = [
            self.kind.to_string(),
            field(&self.name),
            field(&self.member),
            field(&self.state),
            opt(self.since),
            opt(self.weight),
            opt(self.active),
            opt(self.inactive),
            conns,
            inbytes,
            outbytes,
        ]
        .into_iter()
        .chain(rates)
        .chain([opt(self.checks), opt(self.failures), field(&self.reason)]);
        fields.collect::<Vec<_>>().join(",")
    }
}

/// The health checks' view of a forwarded real server, when it is checked: the health
/// side names a service `ADDR:PORT PROTO`, the data plane `PROTO ADDR:PORT`.
fn checked<'a>(s: &'a Status, service: &str, dest: &IpvsDest) -> Option<&'a ServerHealth> {
    let (proto, addr) = service.split_once(' ')?;
    let name = format!("{addr} {proto}");
    let address = format!("{}:{}", dest.address, dest.port);
    s.health
        .iter()
        .find(|h| h.virtual_server == name)?
        .real_servers
        .iter()
        .find(|r| r.address == address)
}

/// `/status.csv`.
pub fn csv(s: &Status) -> String {
    let mut rows = Vec::new();
    for i in &s.vrrp {
        rows.push(Row {
            kind: "vrrp",
            name: i.name.clone(),
            member: i.interface.clone(),
            state: i.state.clone(),
            since: i.last_transition.as_ref().map(|t| t.at),
            weight: Some(i64::from(i.effective_priority)),
            ..Row::default()
        });
    }
    for v in &s.l4.services {
        let name = format!("{} {}:{}", v.protocol, v.address, v.port);
        rows.push(Row {
            kind: "service",
            name: name.clone(),
            member: v.scheduler.clone(),
            active: Some(v.dests.iter().map(|d| d.active).sum()),
            inactive: Some(v.dests.iter().map(|d| d.inactive).sum()),
            traffic: Some((v.stats.conns, v.stats.inbytes, v.stats.outbytes, v.rate)),
            ..Row::default()
        });
        for d in &v.dests {
            let health = checked(s, &name, d);
            rows.push(Row {
                kind: "real_server",
                name: name.clone(),
                member: format!("{}:{}", d.address, d.port),
                state: health
                    .map(|h| if h.alive { "up" } else { "down" })
                    .unwrap_or("")
                    .into(),
                since: health.map(|h| h.changed_at),
                weight: Some(i64::from(d.weight)),
                active: Some(d.active),
                inactive: Some(d.inactive),
                traffic: Some((d.stats.conns, d.stats.inbytes, d.stats.outbytes, d.rate)),
                ..Row::default()
            });
        }
    }
    for v in &s.health {
        for r in &v.real_servers {
            for c in &r.checkers {
                rows.push(Row {
                    kind: "checker",
                    name: v.virtual_server.clone(),
                    member: format!("{} {}", r.address, c.kind),
                    state: c.state.clone(),
                    since: Some(c.changed_at),
                    checks: Some(c.checks),
                    failures: Some(c.failures),
                    reason: c.last_reason.clone().unwrap_or_default(),
                    ..Row::default()
                });
            }
        }
    }
    for p in &s.upstreams {
        let state = p.state();
        rows.push(Row {
            kind: "upstream",
            name: p.upstream.clone(),
            member: p.address.clone(),
            state: state.into(),
            weight: Some(p.weight),
            active: Some(u64::from(p.conns)),
            failures: Some(u64::from(p.fails)),
            ..Row::default()
        });
    }
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for r in rows {
        out.push_str(&r.line());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulcrum_node::status::{IpvsService, Listing, Traffic, UpstreamPeer, VrrpInstance};

    fn status() -> Status {
        let vrrp: VrrpInstance = serde_json::from_value(serde_json::json!({
            "name": "VI_1", "interface": "eth0", "vrid": 51, "state": "MASTER",
            "priority": 100, "effective_priority": 90, "master": null,
            "virtual_ipaddress": [], "last_transition": {"at": 1796406715, "state": "MASTER", "reason": "x"},
            "adverts_sent": 0, "transitions": 1, "adverts_received": 0, "dropped": []
        }))
        .unwrap();
        let health = serde_json::from_value(serde_json::json!([{
            "virtual_server": "10.1.10.65:80 TCP", "quorum": 1, "hysteresis": 0,
            "has_quorum": true, "live_weight": 1, "sorry_server": null,
            "real_servers": [{"address": "192.168.1.2:80", "alive": false, "weight": 1,
                "membership": {"in": false}, "changed_at": 1796406000,
                "checkers": [{"kind": "HTTP_GET", "target": "192.168.1.2:80", "state": "down",
                    "checks": 7, "failures": 3, "last_ok": false,
                    "last_reason": "status 500, expected 200", "latency_us": 10,
                    "last_check_at": 1, "changed_at": 1796406001, "transitions": 1}]}]
        }]))
        .unwrap();
        let peer: UpstreamPeer = serde_json::from_value(serde_json::json!({
            "upstream": "app", "server": "b1", "address": "192.168.1.3:8080",
            "backup": false, "weight": 2, "effective_weight": 2, "down": false,
            "check_down": false, "drained": true, "conns": 4, "fails": 1, "max_fails": 1
        }))
        .unwrap();
        let rates = Rates {
            cps: 5,
            inpps: 50,
            outpps: 40,
            inbps: 5000,
            outbps: 4000,
        };
        let traffic = Traffic {
            conns: 10,
            inpkts: 100,
            outpkts: 80,
            inbytes: 10_000,
            outbytes: 8_000,
        };
        Status {
            vrrp: vec![vrrp],
            health,
            l4: Listing {
                services: vec![IpvsService {
                    protocol: "TCP".into(),
                    address: "10.1.10.65".into(),
                    port: 80,
                    scheduler: "rr".into(),
                    persistent: None,
                    netmask: None,
                    ops: false,
                    flags: Vec::new(),
                    stats: traffic,
                    rate: rates,
                    dests: vec![IpvsDest {
                        address: "192.168.1.2".into(),
                        port: 80,
                        forward: "Masq".into(),
                        tunnel: None,
                        weight: 0,
                        u_threshold: 0,
                        l_threshold: 0,
                        active: 2,
                        inactive: 3,
                        stats: traffic,
                        rate: rates,
                    }],
                }],
                ..Listing::default()
            },
            upstreams: vec![peer],
            ..Status::default()
        }
    }

    #[test]
    fn every_object_is_a_row_with_the_headers_columns() {
        let text = csv(&status());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        let columns = CSV_HEADER.split(',').count();
        assert_eq!(
            &lines[1..],
            [
                "vrrp,VI_1,eth0,MASTER,1796406715,90,,,,,,,,,,,,,",
                "service,TCP 10.1.10.65:80,rr,,,,2,3,10,10000,8000,5,50,40,5000,4000,,,",
                "real_server,TCP 10.1.10.65:80,192.168.1.2:80,down,1796406000,0,2,3,10,10000,8000,5,50,40,5000,4000,,,",
                "checker,10.1.10.65:80 TCP,192.168.1.2:80 HTTP_GET,down,1796406001,,,,,,,,,,,,7,3,\"status 500, expected 200\"",
                "upstream,app,192.168.1.3:8080,drained,,2,4,,,,,,,,,,,1,",
            ]
        );
        for l in &lines[1..4] {
            assert_eq!(l.split(',').count(), columns, "{l}");
        }
    }

    #[test]
    fn fields_with_commas_or_quotes_are_quoted() {
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("plain"), "plain");
    }
}
