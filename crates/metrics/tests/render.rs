//! What a scrape shows for a known snapshot: fulcrum's families, node_exporter's IPVS
//! names and labels, the build and the process.

use std::collections::HashMap;

use fulcrum_node::status::{
    Daemon, IpvsDest, IpvsService, Listing, Process, Rates, Traffic, XdpInterface,
};
use fulcrum_node::Status;

fn dest(address: &str, active: u64, inactive: u64, weight: u32, conns: u64) -> IpvsDest {
    IpvsDest {
        address: address.into(),
        port: 80,
        forward: "Masq".into(),
        tunnel: None,
        weight,
        u_threshold: 0,
        l_threshold: 0,
        active,
        inactive,
        stats: Traffic {
            conns,
            inpkts: 10 * conns,
            outpkts: 8 * conns,
            inbytes: 1000 * conns,
            outbytes: 900 * conns,
        },
        rate: Rates::default(),
    }
}

fn status() -> Status {
    let service = IpvsService {
        protocol: "TCP".into(),
        address: "10.1.10.88".into(),
        port: 80,
        scheduler: "wrr".into(),
        persistent: None,
        netmask: None,
        ops: false,
        flags: Vec::new(),
        stats: Traffic {
            conns: 30,
            inpkts: 300,
            outpkts: 240,
            inbytes: 30_000,
            outbytes: 27_000,
        },
        rate: Rates::default(),
        dests: vec![
            dest("192.168.184.129", 3, 5, 1, 10),
            dest("192.168.184.130", 7, 1, 2, 20),
        ],
    };
    Status {
        daemon: Daemon {
            version: "9.8.7".into(),
            ..Daemon::default()
        },
        l4: Listing {
            services: vec![service],
            interfaces: vec![XdpInterface {
                name: "eth0".into(),
                mode: "native".into(),
            }],
            sync: None,
            ..Listing::default()
        },
        process: Process {
            cpu_seconds: 1.5,
            resident_bytes: 4096,
            open_fds: 12,
            max_fds: 1024,
            ..Process::default()
        },
        ..Status::default()
    }
}

/// The exposition text as series (`name{labels}`) and values.
fn series(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (s, v) = l.rsplit_once(' ')?;
            Some((s.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[test]
fn the_data_plane_reads_as_node_exporters_ipvs_collector() {
    let m = series(&fulcrum_metrics::render(status()));
    let backend = |rip: &str| {
        format!(
            "{{local_address=\"10.1.10.88\",local_port=\"80\",remote_address=\"{rip}\",remote_port=\"80\",proto=\"TCP\",local_mark=\"\"}}"
        )
    };
    let get = |name: &str| m.get(name).copied();
    assert_eq!(
        get(&format!(
            "node_ipvs_backend_connections_active{}",
            backend("192.168.184.130")
        )),
        Some(7.0)
    );
    assert_eq!(
        get(&format!(
            "node_ipvs_backend_connections_inactive{}",
            backend("192.168.184.129")
        )),
        Some(5.0)
    );
    assert_eq!(
        get(&format!(
            "node_ipvs_backend_weight{}",
            backend("192.168.184.130")
        )),
        Some(2.0)
    );
    assert_eq!(get("node_ipvs_connections_total"), Some(30.0));
    assert_eq!(get("node_ipvs_incoming_packets_total"), Some(300.0));
    assert_eq!(get("node_ipvs_outgoing_bytes_total"), Some(27_000.0));
    // fulcrum's own families stay beside them.
    assert_eq!(
        get("fulcrum_ipvs_service_connections_total{service=\"TCP 10.1.10.88:80\"}"),
        Some(30.0)
    );
}

#[test]
fn the_build_the_last_reload_and_the_process_are_shown() {
    let mut st = status();
    let m = series(&fulcrum_metrics::render(st.clone()));
    assert_eq!(m.get("fulcrum_build_info{version=\"9.8.7\"}"), Some(&1.0));
    assert_eq!(m.get("fulcrum_config_last_reload_successful"), Some(&1.0));
    assert_eq!(m.get("process_cpu_seconds_total"), Some(&1.5));
    assert_eq!(m.get("process_open_fds"), Some(&12.0));
    assert_eq!(m.get("process_resident_memory_bytes"), Some(&4096.0));
    st.daemon.config.last_reload_error = Some("1 error(s)".into());
    let m = series(&fulcrum_metrics::render(st));
    assert_eq!(m.get("fulcrum_config_last_reload_successful"), Some(&0.0));
}

#[test]
fn without_a_data_plane_there_are_no_ipvs_series() {
    let m = series(&fulcrum_metrics::render(Status::default()));
    assert!(!m.keys().any(|k| k.starts_with("node_ipvs_")), "{m:?}");
}

#[test]
fn the_sync_daemons_and_their_counters_are_shown() {
    let mut st = status();
    st.l4.sync = Some(fulcrum_node::l4::sync::SyncStatus {
        backup: Some(fulcrum_node::l4::sync::DaemonStatus {
            interface: "eth0".into(),
            syncid: 51,
            maxlen: 1472,
            group: "224.0.0.81".into(),
            port: 8848,
            ttl: 1,
        }),
        counters: fulcrum_node::l4::sync::SyncCounters {
            received_messages: 4,
            adopted: 120,
            ignored: 3,
            ..Default::default()
        },
        ..Default::default()
    });
    let m = series(&fulcrum_metrics::render(st));
    let get = |name: &str| m.get(name).copied();
    assert_eq!(
        get("fulcrum_sync_daemon_running{role=\"backup\"}"),
        Some(1.0)
    );
    assert_eq!(
        get("fulcrum_sync_daemon_running{role=\"master\"}"),
        Some(0.0)
    );
    assert_eq!(get("fulcrum_sync_received_messages_total"), Some(4.0));
    assert_eq!(get("fulcrum_sync_adopted_records_total"), Some(120.0));
    assert_eq!(get("fulcrum_sync_ignored_records_total"), Some(3.0));
}

#[test]
fn bgp_sessions_and_routes_are_shown() {
    let mut st = status();
    st.bgp = Some(fulcrum_node::status::Bgp {
        daemon: "bird".into(),
        local_as: 65001,
        liveness_interface: "fulcrum-bgp".into(),
        liveness_up: true,
        draining: true,
        drained: false,
        sessions: vec![fulcrum_node::status::BgpSession {
            neighbor: "10.30.0.1".into(),
            remote_as: 65000,
            state: "Established".into(),
            established: true,
            since: "22:55:10.335".into(),
        }],
        routes: vec![
            fulcrum_node::status::BgpRoute {
                vip: "10.1.10.65".into(),
                announced: true,
                prepend: 3,
                why: "draining: announced with a longer path".into(),
                active: 12,
            },
            fulcrum_node::status::BgpRoute {
                vip: "10.1.10.66".into(),
                announced: false,
                prepend: 0,
                why: "no quorum: 10.1.10.66:80 TCP".into(),
                active: 0,
            },
        ],
        last_error: None,
    });
    let m = series(&fulcrum_metrics::render(st));
    let get = |name: &str| m.get(name).copied();
    assert_eq!(
        get("fulcrum_bgp_session_established{neighbor=\"10.30.0.1\",remote_as=\"65000\"}"),
        Some(1.0)
    );
    assert_eq!(
        get("fulcrum_bgp_vip_announced{vip=\"10.1.10.65\"}"),
        Some(1.0)
    );
    assert_eq!(
        get("fulcrum_bgp_vip_announced{vip=\"10.1.10.66\"}"),
        Some(0.0)
    );
    assert_eq!(
        get("fulcrum_bgp_vip_active_connections{vip=\"10.1.10.65\"}"),
        Some(12.0)
    );
    assert_eq!(get("fulcrum_bgp_draining"), Some(1.0));
    assert_eq!(get("fulcrum_bgp_liveness_up"), Some(1.0));
}
