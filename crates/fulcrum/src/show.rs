//! How `fulcrum ctl` prints the daemon's answers, read back into the node's status types.

use std::time::{SystemTime, UNIX_EPOCH};

use fulcrum_node::status::{
    Daemon, IpvsConnection, Listing, Member, ServiceHealth, UpstreamPeer, VrrpInstance,
};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A span of seconds as systemctl writes one: its two largest units (`3h 12min`, `45s`).
fn span(secs: u64) -> String {
    let units = [
        (86_400 * 7, "w"),
        (86_400, "d"),
        (3_600, "h"),
        (60, "min"),
        (1, "s"),
    ];
    let mut parts = Vec::new();
    let mut rest = secs;
    for (size, name) in units {
        if rest >= size && parts.len() < 2 {
            parts.push(format!("{}{name}", rest / size));
            rest %= size;
        } else if !parts.is_empty() {
            // Only adjacent units: "1d 5min" would read as a typo.
            break;
        }
    }
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

/// A unix time as a date in `tz` (systemctl's form), or the number when it is out of range.
fn date_in(unix: u64, tz: &jiff::tz::TimeZone) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|t| jiff::Timestamp::from_second(t).ok())
        .map(|t| {
            t.to_zoned(tz.clone())
                .strftime("%a %Y-%m-%d %H:%M:%S %Z")
                .to_string()
        })
        .unwrap_or_else(|| format!("{unix} (unix time)"))
}

/// A past unix time in local time, with how long ago.
fn since(unix: u64) -> String {
    let tz = jiff::tz::TimeZone::system();
    format!(
        "{}; {} ago",
        date_in(unix, &tz),
        span(unix_now().saturating_sub(unix))
    )
}

/// `fulcrum ctl vrrp`: the instances as rows.
pub fn vrrp(instances: &[VrrpInstance]) {
    println!(
        "{:<12} {:<8} {:>4} {:<7} {:>5} {:>5} {:<16} {:>8} {:>8}  LAST TRANSITION",
        "INSTANCE", "IFACE", "VRID", "STATE", "PRIO", "EFF", "MASTER", "SENT", "RECV"
    );
    for i in instances {
        let last = match &i.last_transition {
            None => "-".to_string(),
            Some(t) => format!("{} at {} ({})", t.state, t.at, t.reason),
        };
        println!(
            "{:<12} {:<8} {:>4} {:<7} {:>5} {:>5} {:<16} {:>8} {:>8}  {last}",
            i.name,
            i.interface,
            i.vrid,
            i.state,
            i.priority,
            i.effective_priority,
            i.master.as_deref().unwrap_or("-"),
            i.adverts_sent,
            i.adverts_received,
        );
        if !i.dropped.is_empty() {
            let parts: Vec<String> = i
                .dropped
                .iter()
                .map(|d| format!("{} {}", d.reason, d.count))
                .collect();
            println!("{:<12} dropped: {}", "", parts.join(", "));
        }
    }
}

/// `fulcrum ctl health` as a table.
pub fn health(services: &[ServiceHealth]) {
    if services.is_empty() {
        println!("no real servers are checked");
        return;
    }
    for vs in services {
        println!(
            "{}  quorum {} (hysteresis {}): {}, live weight {}",
            vs.virtual_server,
            vs.quorum,
            vs.hysteresis,
            if vs.has_quorum { "up" } else { "LOST" },
            vs.live_weight,
        );
        if let Some(s) = &vs.sorry_server {
            println!(
                "  sorry server {}  {}",
                s.address,
                s.membership.map(membership_text).unwrap_or_default()
            );
        }
        for rs in &vs.real_servers {
            println!(
                "  {:<24} {:<5} {}",
                rs.address,
                if rs.alive { "up" } else { "DOWN" },
                membership_text(rs.membership),
            );
            for c in &rs.checkers {
                let changed = format!("{} ago", span(unix_now().saturating_sub(c.changed_at)));
                let latency = c
                    .latency_us
                    .map(|us| format!("{:.1} ms", us as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into());
                println!(
                    "    {:<10} {:<22} {:<7} checks {:<5} failures {:<5} latency {:<9} changed {}{}",
                    c.kind,
                    c.target,
                    c.state,
                    c.checks,
                    c.failures,
                    latency,
                    changed,
                    c.last_reason.as_ref().map(|r| format!("  ({r})")).unwrap_or_default(),
                );
            }
        }
    }
}

fn membership_text(m: Member) -> String {
    match m {
        Member {
            is_in: true,
            weight,
        } => format!("in, weight {}", weight.unwrap_or(0)),
        _ => "out".into(),
    }
}

/// `fulcrum ctl upstreams`: one line per peer, grouped by upstream.
pub fn upstreams(peers: &[UpstreamPeer]) {
    if peers.is_empty() {
        println!("layer-7 proxy: not running (no http block)");
        return;
    }
    let mut last = "";
    for p in peers {
        if p.upstream != last {
            last = &p.upstream;
            println!("upstream {last}");
        }
        let flags: Vec<&str> = [
            (p.backup, "backup"),
            (p.down, "down"),
            (p.check_down, "check-down"),
            (p.drained, "drained"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        println!(
            "  {:<24} weight {:<3} effective {:<3} in-flight {:<5} fails {}/{} {}",
            p.address,
            p.weight,
            p.effective_weight,
            p.conns,
            p.fails,
            p.max_fails,
            flags.join(" ")
        );
    }
}

/// `fulcrum ctl services`: the data plane on one screen.
pub fn services(r: &Listing) {
    let ifs: Vec<String> = r
        .interfaces
        .iter()
        .map(|i| format!("{} ({})", i.name, i.mode))
        .collect();
    if ifs.is_empty() {
        println!("data plane: not running");
        return;
    }
    println!("data plane on {}", ifs.join(", "));
    println!(
        "connection table: room for {} connections; the maps hold {} MiB of kernel memory",
        r.size,
        r.memory >> 20
    );
    for svc in &r.services {
        println!(
            "{} {} {}  {} conns  {} conn/s",
            svc.protocol,
            host_port(&svc.address, svc.port),
            svc.scheduler,
            svc.stats.conns,
            svc.rate.cps,
        );
        for d in &svc.dests {
            println!(
                "  -> {:<22} {:<5} weight {:<4} active {:<6} inactive {:<6} {} conns",
                host_port(&d.address, d.port),
                d.forward,
                d.weight,
                d.active,
                d.inactive,
                d.stats.conns,
            );
        }
    }
    let packets: Vec<String> = r
        .packets
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!("packets: {}", packets.join(", "));
    if let Some(s) = r
        .sync
        .as_ref()
        .filter(|s| s.master.is_some() || s.backup.is_some())
    {
        for (role, d) in [("master", &s.master), ("backup", &s.backup)] {
            if let Some(d) = d {
                println!(
                    "connection sync {role} on {} (syncid {}, {}:{}, maxlen {})",
                    d.interface, d.syncid, d.group, d.port, d.maxlen
                );
            }
        }
        println!(
            "connection sync: sent {} records in {} messages; received {} messages: {} adopted, {} updated, {} ignored, {} malformed, {} refused (table full)",
            s.counters.sent_records,
            s.counters.sent_messages,
            s.counters.received_messages,
            s.counters.adopted,
            s.counters.updated,
            s.counters.ignored,
            s.counters.malformed,
            s.counters.table_full,
        );
    }
}

/// `fulcrum ctl conns`: the connection table.
pub fn conns(conns: &[IpvsConnection]) {
    println!(
        "{:<4} {:<9} {:<12} {:<22} {:<22} destination",
        "pro", "expire", "state", "source", "virtual"
    );
    for c in conns {
        let secs = c.expires_ms / 1000;
        println!(
            "{:<4} {:02}:{:02}     {:<12} {:<22} {:<22} {}",
            c.protocol,
            secs / 60,
            secs % 60,
            c.state,
            c.source,
            c.virtual_,
            c.destination
        );
    }
}

/// The head of `ctl status`'s screen: the daemon and its configuration.
pub fn status(r: &Daemon) {
    let c = &r.config;
    println!("fulcrum {} (pid {})", r.version, r.pid);
    println!("  up since      {}", since(r.started_at));
    for (label, path) in [("keepalived.conf", &c.keepalived), ("nginx.conf", &c.nginx)] {
        if let Some(p) = path {
            println!("  {label:<13} {p}");
        }
    }
    println!("  configuration {} loaded {}", c.hash, since(c.loaded_at));
    println!(
        "  reloads       {} ok, {} refused",
        c.reloads_ok, c.reloads_failed
    );
    if let Some(e) = &c.last_reload_error {
        println!("  last refusal  {}", e.lines().next().unwrap_or(""));
    }
    let n = &r.counts;
    println!(
        "  vrrp_instance {}   virtual_server {}   real_server {}   upstream {}   server {}",
        n.vrrp_instances, n.virtual_servers, n.real_servers, n.upstreams, n.servers
    );
}

/// The rest of `ctl status`'s screen: one line per VRRP instance, virtual service, real
/// server (with its checkers' verdict) and upstream peer.
pub fn overview(
    vrrp: &[VrrpInstance],
    ipvs: &Listing,
    health: &[ServiceHealth],
    upstreams: &[UpstreamPeer],
) {
    for i in vrrp {
        println!(
            "  vrrp  {:<12} {:<7} priority {} ({})  master {}  {}",
            i.name,
            i.state,
            i.effective_priority,
            i.priority,
            i.master.as_deref().unwrap_or("-"),
            i.virtual_ipaddress.join(" ")
        );
    }
    let alive = |addr: &str| -> Option<(bool, String)> {
        health.iter().find_map(|vs| {
            vs.real_servers.iter().find(|r| r.address == addr).map(|r| {
                let reason = r
                    .checkers
                    .iter()
                    .find(|c| c.state == "down")
                    .map(|c| c.last_reason.clone().unwrap_or_else(|| "-".into()))
                    .unwrap_or_default();
                (r.alive, reason)
            })
        })
    };
    for v in &ipvs.services {
        println!(
            "  l4    {} {} {}  {} conn/s",
            v.protocol,
            host_port(&v.address, v.port),
            v.scheduler,
            v.rate.cps
        );
        for d in &v.dests {
            let addr = host_port(&d.address, d.port);
            let check = match alive(&addr) {
                Some((true, _)) => "up".to_string(),
                Some((false, why)) => format!("DOWN {why}"),
                None => "unchecked".to_string(),
            };
            println!(
                "        -> {addr:<22} weight {:<4} active {:<6} inactive {:<6} {check}",
                d.weight, d.active, d.inactive
            );
        }
    }
    for p in upstreams {
        let state = p.state();
        println!(
            "  l7    upstream {} {:<22} {state:<7} in flight {}  fails {}/{}",
            p.upstream, p.address, p.conns, p.fails, p.max_fails
        );
    }
}

/// `ADDR:PORT`, an IPv6 address in brackets.
fn host_port(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// `fulcrum ctl bgp`: the sessions, then each VIP with why it is announced or not.
pub fn bgp(b: &fulcrum_node::status::Bgp) {
    let state = if b.drained {
        "drained"
    } else if b.draining {
        "draining"
    } else {
        "active"
    };
    println!(
        "BGP through {} as AS{}: {state}; liveness interface {} {}",
        b.daemon,
        b.local_as,
        b.liveness_interface,
        if b.liveness_up {
            "up"
        } else {
            "missing (nothing is announced)"
        }
    );
    for s in &b.sessions {
        println!(
            "  neighbor {:<24} AS{:<10} {} {}",
            s.neighbor, s.remote_as, s.state, s.since
        );
    }
    for r in &b.routes {
        let what = if r.announced && r.prepend > 0 {
            format!("announced, path +{}", r.prepend)
        } else if r.announced {
            "announced".to_string()
        } else {
            "withdrawn".to_string()
        };
        println!(
            "  vip {:<26} {what:<22} active {:<7} {}",
            r.vip, r.active, r.why
        );
    }
    if let Some(e) = &b.last_error {
        println!("  last error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_systemctl_writes_them() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(45), "45s");
        assert_eq!(span(125), "2min 5s");
        assert_eq!(span(3 * 3600 + 12 * 60 + 7), "3h 12min");
        assert_eq!(span(86_400 + 300), "1d");
        assert_eq!(span(86_400 * 9 + 3600), "1w 2d");
    }

    #[test]
    fn dates_are_written_in_the_zone_given() {
        let utc = jiff::tz::TimeZone::UTC;
        assert_eq!(date_in(1_796_406_715, &utc), "Fri 2026-12-04 17:51:55 UTC");
        let paris = jiff::tz::TimeZone::fixed(jiff::tz::offset(1));
        assert!(date_in(1_796_406_715, &paris).starts_with("Fri 2026-12-04 18:51:55"));
    }
}
