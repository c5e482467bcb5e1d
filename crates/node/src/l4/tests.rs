//! The pure half of layer 4: keepalived.conf to rules, and rules to the diff the data plane
//! is given. No BPF here; the lab tests run the rest.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use fulcrum_dataplane::Method;
use fulcrum_health::Membership;
use fulcrum_keepalived_conf::{KeepalivedConfig, LoadOptions};
use fulcrum_types::{Scheduler, Weight};

use super::rules::{rules, VerdictOf};
use super::table::Table;
use crate::health::{ServerKey, Verdicts};

fn config(text: &str) -> KeepalivedConfig {
    let loaded = fulcrum_keepalived_conf::parse_str(
        std::path::Path::new("test.conf"),
        text,
        &LoadOptions::default(),
    );
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    loaded.config.expect("a configuration")
}

const TWO: &str = "
virtual_server 10.1.10.88 80 {
  lb_algo wrr
  lb_kind NAT
  protocol TCP
  persistence_timeout 300
  real_server 192.168.184.129 80 { weight 1 }
  real_server 192.168.184.130 8080 { weight 2 }
  sorry_server 192.168.184.200 80
}
virtual_server 10.1.10.88 53 {
  lb_algo rr
  lb_kind DR
  protocol UDP
  real_server 192.168.184.129 { }
}
";

#[test]
fn virtual_servers_become_ipvs_rules() {
    let (rules, warnings) = rules(&config(TWO));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(rules.len(), 2);
    let web = &rules[0];
    assert_eq!((web.key.proto, web.key.port), (6, 80));
    assert_eq!(web.scheduler, Scheduler::Wrr);
    assert_eq!(web.persistence.map(|p| p.0), Some(300));
    let dests: Vec<(u16, u32, Method)> = web
        .dests
        .iter()
        .map(|d| (d.port, d.weight, d.method))
        .collect();
    assert_eq!(
        dests,
        vec![
            (80, 1, Method::Nat),
            (8080, 2, Method::Nat),
            (80, 1, Method::Nat)
        ]
    );
    assert_eq!(
        web.dests[2].verdict,
        VerdictOf::Sorry("10.1.10.88:80 TCP".into())
    );
    // A real server without a port takes the service's.
    let dns = &rules[1];
    assert_eq!((dns.key.proto, dns.dests[0].port), (17, 53));
    assert_eq!(dns.dests[0].method, Method::Dr);
    assert_eq!(
        dns.dests[0].verdict,
        VerdictOf::Server(ServerKey {
            service: "10.1.10.88:53 UDP".into(),
            server: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 184, 129)), 0),
        })
    );
}

#[test]
fn what_cannot_be_forwarded_is_skipped_with_a_warning() {
    let (rules, warnings) = rules(&config(
        "virtual_server 10.0.0.9 80 {\n  protocol SCTP\n  real_server 10.0.0.1 80 { }\n}\n",
    ));
    assert!(rules.is_empty());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("SCTP"), "{warnings:?}");
}

#[test]
fn ipv4_services_tunnel_to_ipv6_real_servers() {
    let (rules, warnings) = rules(&config(
        "virtual_server 10.0.0.9 81 {\n  lb_kind TUN\n  protocol TCP\n  real_server 2001:db8::1 81 { }\n}\n",
    ));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        rules[0].dests[0].addr,
        "2001:db8::1".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn ipv6_services_tunnel_to_ipv4_real_servers() {
    // (With DR, keepalived.conf's own check refuses the mixed families, as keepalived.)
    let (rules, warnings) = rules(&config(
        "virtual_server 2001:db8::9 80 {\n  lb_kind TUN\n  protocol TCP\n\
         real_server 10.0.0.1 80 { }\n}\n",
    ));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].dests[0].addr,
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
    );
}

#[test]
fn ipv6_tun_virtual_servers_become_rules() {
    let (rules, warnings) = rules(&config(
        "virtual_server 2001:db8::9 80 {\n  lb_kind TUN type gue port 6080\n\
         protocol TCP\n  real_server 2001:db8::1 80 { }\n}\n",
    ));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(rules.len(), 1);
    assert!(matches!(rules[0].dests[0].method, Method::Tun(t) if t.port == 6080));
}

#[test]
fn ipv6_virtual_servers_become_rules() {
    let (rules, warnings) = rules(&config(
        "virtual_server 2001:db8::9 80 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n\
         real_server 2001:db8::1 80 { }\n  real_server 2001:db8::2 80 { weight 2 }\n}\n",
    ));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].key.vip, "2001:db8::9".parse::<IpAddr>().unwrap());
    let dests: Vec<(IpAddr, u32)> = rules[0].dests.iter().map(|d| (d.addr, d.weight)).collect();
    assert_eq!(
        dests,
        vec![
            ("2001:db8::1".parse().unwrap(), 1),
            ("2001:db8::2".parse().unwrap(), 2)
        ]
    );
    let mut table = Table::default();
    let d = table.diff(&rules, &Verdicts::default()).unwrap();
    assert_eq!(d.put[0].1.key.family, 6);
    // `fulcrum ctl drain 2001:db8::2`: weight 0, the other server untouched.
    table
        .drained
        .push(("2001:db8::2".parse::<IpAddr>().unwrap(), None));
    let d = table.diff(&rules, &Verdicts::default()).unwrap();
    let weights: Vec<u32> = d.put[0]
        .1
        .dests
        .iter()
        .flatten()
        .map(|d| d.weight)
        .collect();
    assert_eq!(weights, vec![1, 0]);
}

/// The verdicts that put the first web server out and keep the rest as configured.
fn first_down() -> Verdicts {
    let key = ServerKey {
        service: "10.1.10.88:80 TCP".into(),
        server: "192.168.184.129:80".parse().unwrap(),
    };
    Verdicts::from_parts(
        [(key, Membership::Out)],
        [("10.1.10.88:80 TCP".to_string(), Some(Membership::Out))],
    )
}

#[test]
fn the_diff_writes_only_what_changed_and_keeps_slots() {
    let (rules, _) = rules(&config(TWO));
    let mut table = Table::default();
    let first = table.diff(&rules, &Verdicts::default()).unwrap();
    assert!(first.removed.is_empty());
    let ids: Vec<u32> = first.put.iter().map(|(_, s)| s.id).collect();
    assert_eq!(ids, vec![0, 1]);
    // Without health checks the sorry server stays out: two slots for the web service.
    assert_eq!(first.put[0].1.dests.iter().flatten().count(), 2);
    table.record(&first);
    assert_eq!(
        table.diff(&rules, &Verdicts::default()).unwrap().put.len(),
        0,
        "nothing changed, nothing is written"
    );
    // The first server fails its check: only the web service is rewritten; the second
    // server keeps its slot (its connections stay where they are).
    let down = table.diff(&rules, &first_down()).unwrap();
    assert_eq!(down.put.len(), 1);
    let slots = &down.put[0].1.dests;
    assert!(slots[0].is_none(), "{slots:?}");
    assert_eq!(slots[1].map(|d| d.port), Some(8080));
    table.record(&down);
    // A weight from the checks (misc_dynamic) rewrites the weight in place.
    let key = ServerKey {
        service: "10.1.10.88:80 TCP".into(),
        server: "192.168.184.130:8080".parse().unwrap(),
    };
    let heavier = Verdicts::from_parts(
        [(key, Membership::In(Weight::new(5).unwrap()))],
        [("10.1.10.88:80 TCP".to_string(), None)],
    );
    let d = table.diff(&rules, &heavier).unwrap();
    assert_eq!(d.put[0].1.dests[1].map(|d| d.weight), Some(5));
}

#[test]
fn real_servers_are_listed_newest_first_as_ipvs_lists_them() {
    let (rules, _) = rules(&config(TWO));
    let mut table = Table::default();
    // keepalived adds the servers in the file's order; IPVS puts each at the head.
    let first = table.diff(&rules, &Verdicts::default()).unwrap();
    assert_eq!(first.put[0].1.list, vec![1, 0]);
    assert_eq!(first.put[0].1.scan_order(), vec![1, 0]);
    table.record(&first);
    // The first server fails its check (keepalived removes it) and comes back (added
    // again): it is now the newest, at the head, in its old slot.
    let down = table.diff(&rules, &first_down()).unwrap();
    assert_eq!(down.put[0].1.scan_order(), vec![1, 0], "a hole goes last");
    table.record(&down);
    let up = table.diff(&rules, &Verdicts::default()).unwrap();
    assert_eq!(up.put[0].1.list, vec![0, 1]);
    table.record(&up);
    // Nothing changed: the order is kept and nothing is written.
    assert!(table
        .diff(&rules, &Verdicts::default())
        .unwrap()
        .put
        .is_empty());
}

#[test]
fn a_removed_service_frees_its_id() {
    let (rules, _) = rules(&config(TWO));
    let mut table = Table::default();
    let d = table.diff(&rules, &Verdicts::default()).unwrap();
    table.record(&d);
    let only_dns = &rules[1..];
    let d = table.diff(only_dns, &Verdicts::default()).unwrap();
    assert_eq!(d.removed.len(), 1);
    assert_eq!(d.removed[0].1, 0);
    assert!(d.put.is_empty());
    table.record(&d);
    // A new service takes the freed id.
    let d = table.diff(&rules, &Verdicts::default()).unwrap();
    assert_eq!(d.put.len(), 1);
    assert_eq!(d.put[0].1.id, 0);
}

fn rule(port: u16, scheduler: &str) -> super::Rule {
    let text = format!(
        "virtual_server 10.0.0.1 {port} {{\n    lb_algo {scheduler}\n    lb_kind NAT\n    protocol TCP\n    real_server 192.168.0.2 {port} {{\n    }}\n}}\n"
    );
    rules(&config(&text)).0.remove(0)
}

/// A reload keeps the services ipvsadm added and replaces the ones keepalived.conf made,
/// as keepalived does with IPVS.
#[test]
fn a_reload_keeps_what_ipvsadm_added_and_replaces_what_it_made() {
    let from_conf = rule(80, "rr");
    let from_ipvsadm = rule(443, "wlc");
    let configured = [from_conf.key].into_iter().collect();
    let running = vec![from_conf.clone(), from_ipvsadm.clone()];
    // The configuration now says wrr for :80 and nothing else.
    let merged = super::merge(&running, &configured, vec![rule(80, "wrr")]);
    assert_eq!(merged, vec![rule(80, "wrr"), from_ipvsadm.clone()]);
    // The configuration drops :80: it goes; :443 stays.
    assert_eq!(
        super::merge(&running, &configured, Vec::new()),
        vec![from_ipvsadm]
    );
}

/// The connection table's default size follows the machine's memory.
#[test]
fn the_table_is_sized_from_memory() {
    const GIB: u64 = 1 << 30;
    // A 4 GiB VM: 128 MiB of tables, about 195,000 connections of each family.
    assert_eq!(super::default_connections(Some(4 * GIB)), 194_518);
    // Small machines get the floor (on 1 GiB, 43 MiB: a 24th), large ones the ceiling.
    assert_eq!(super::default_connections(Some(GIB)), 65_536);
    assert_eq!(super::default_connections(Some(256 << 20)), 65_536);
    assert_eq!(super::default_connections(Some(24 * GIB)), 1_048_576);
    assert_eq!(super::default_connections(None), 1_048_576);
}

/// global_defs' fulcrum_lvs_sync_* become the master's settings; what is not given keeps
/// IPVS's default.
#[test]
fn sync_rate_keywords_become_the_masters_settings() {
    use fulcrum_lvs_sync::Settings;
    use std::time::Duration;
    let none = config("global_defs {\n  router_id lb1\n}\n");
    assert_eq!(super::sync::settings(&none), Settings::default());
    let all = config(
        "global_defs {\n  fulcrum_lvs_sync_threshold 0 0\n  fulcrum_lvs_sync_refresh_period 30\n  fulcrum_lvs_sync_retries 3\n}\n",
    );
    assert_eq!(
        super::sync::settings(&all),
        Settings {
            threshold: 0,
            period: 0,
            refresh_period: Duration::from_secs(30),
            retries: 3,
        }
    );
    let some = config("global_defs {\n  fulcrum_lvs_sync_retries 1\n}\n");
    let s = super::sync::settings(&some);
    assert_eq!((s.threshold, s.period, s.retries), (3, 50, 1));
}

/// sloppy_tcp is on by default with mh only, from keepalived.conf and from ipvsadm, and
/// fulcrum_sloppy_tcp sets it either way.
#[test]
fn sloppy_tcp_is_on_with_mh_unless_set() {
    assert!(rule(80, "mh").sloppy_tcp);
    assert!(!rule(80, "wlc").sloppy_tcp);
    let set = |algo: &str, on: &str| {
        let text = format!(
            "virtual_server 10.0.0.1 80 {{\n    lb_algo {algo}\n    lb_kind DR\n    protocol TCP\n    fulcrum_sloppy_tcp {on}\n    real_server 192.168.0.2 80 {{\n    }}\n}}\n"
        );
        rules(&config(&text)).0.remove(0).sloppy_tcp
    };
    assert!(!set("mh", "off"));
    assert!(set("rr", "on"));
    let edit = |line: &str| {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        match super::edit::parse(&args).unwrap() {
            super::edit::Edit::AddService(r) => r.sloppy_tcp,
            other => panic!("{other:?}"),
        }
    };
    assert!(edit("-A -t 10.0.0.1:80 -s mh"));
    assert!(!edit("-A -t 10.0.0.1:80 -s rr"));
}

#[test]
fn ipv6_route_snapshots_ignore_use_counts() {
    let line = |refs: &str, uses: &str| {
        format!(
            "20010db8009900000000000000000000 40 00000000000000000000000000000000 00 \
             20010db8018400000000000000000140 00000400 {refs} {uses} 00000003     eth1\n"
        )
    };
    let a = super::routes_without_counts(&line("00000001", "00000000"));
    let b = super::routes_without_counts(&line("00000004", "00000017"));
    assert_eq!(a, b, "traffic moves the counts, not the route");
    let other = line("00000001", "00000000").replace("00000400", "00000100");
    assert_ne!(
        a,
        super::routes_without_counts(&other),
        "a new metric is a change"
    );
}
