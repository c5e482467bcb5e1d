//! Prometheus metrics of a node, in the text exposition format of the prometheus-client
//! crate: a [`Status`] snapshot in, the exposition text out. Pure: what is counted is what
//! the snapshot holds (VRRP, health checks, the layer-4 data plane, the layer-7 proxy,
//! reloads, the process), nothing is kept between scrapes, and the binary serves the text.
//!
//! Beside fulcrum's own families, the data plane is also written with node_exporter's
//! IPVS names and labels (`node_ipvs_*`), so dashboards built on that collector read a
//! fulcrum director as they read an LVS one.

use fulcrum_node::status::{Member, Traffic, VrrpInstance};
use fulcrum_node::Status;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// One scrape's numbers.
#[derive(Debug)]
struct Snapshot(Status);

type Labels = Vec<(&'static str, String)>;

/// Writes one metric family from (labels, value) rows.
fn family<F>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: Vec<(Labels, F)>,
) -> Result<(), std::fmt::Error>
where
    F: Into<f64> + Copy,
{
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in &rows {
        let v: f64 = (*v).into();
        match kind {
            MetricType::Counter => ConstCounter::new(v).encode(m.encode_family(labels)?)?,
            _ => ConstGauge::new(v).encode(m.encode_family(labels)?)?,
        }
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let st = &self.0;
        let c = &st.daemon.config;
        family(
            &mut enc,
            "fulcrum_config_reloads",
            "Configuration reloads, by result.",
            Counter,
            vec![
                (vec![("result", "ok".into())], c.reloads_ok as f64),
                (vec![("result", "failed".into())], c.reloads_failed as f64),
            ],
        )?;
        family(
            &mut enc,
            "fulcrum_config_info",
            "The configuration in force: its hash.",
            Gauge,
            vec![(vec![("hash", c.hash.clone())], 1.0)],
        )?;
        family(
            &mut enc,
            "fulcrum_config_loaded_timestamp_seconds",
            "When the configuration in force was loaded (unix time).",
            Gauge,
            vec![(vec![], c.loaded_at as f64)],
        )?;

        family(
            &mut enc,
            "fulcrum_config_last_reload_successful",
            "Whether the last reload was applied (0: refused, the previous configuration runs).",
            Gauge,
            vec![(
                vec![],
                if c.last_reload_error.is_none() {
                    1.0
                } else {
                    0.0
                },
            )],
        )?;
        family(
            &mut enc,
            "fulcrum_build_info",
            "The running build.",
            Gauge,
            vec![(vec![("version", st.daemon.version.clone())], 1.0)],
        )?;
        // The process, named as Prometheus client libraries name their own.
        let p = &st.process;
        family(
            &mut enc,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            Counter,
            vec![(vec![], p.cpu_seconds)],
        )?;
        let process = [
            (
                "resident_memory_bytes",
                "Resident memory size in bytes.",
                p.resident_bytes as f64,
            ),
            (
                "virtual_memory_bytes",
                "Virtual memory size in bytes.",
                p.virtual_bytes as f64,
            ),
            (
                "open_fds",
                "Number of open file descriptors.",
                p.open_fds as f64,
            ),
            (
                "max_fds",
                "Maximum number of open file descriptors.",
                p.max_fds as f64,
            ),
            (
                "start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                p.start_time_seconds,
            ),
        ];
        for (n, help, v) in process {
            family(
                &mut enc,
                &format!("process_{n}"),
                help,
                Gauge,
                vec![(vec![], v)],
            )?;
        }

        // VRRP.
        let name = |i: &VrrpInstance| vec![("vrrp_instance", i.name.clone())];
        let mut state = Vec::new();
        for i in &st.vrrp {
            for s in ["INIT", "BACKUP", "MASTER", "FAULT"] {
                let mut l = name(i);
                l.push(("state", s.into()));
                state.push((l, if i.state == s { 1.0 } else { 0.0 }));
            }
        }
        family(
            &mut enc,
            "fulcrum_vrrp_state",
            "VRRP instance state (1 for the current one).",
            Gauge,
            state,
        )?;
        type PerInstance = fn(&VrrpInstance) -> u64;
        let per_instance: [(&str, &str, MetricType, PerInstance); 5] = [
            ("priority", "Configured priority.", Gauge, |i| {
                i.priority.into()
            }),
            (
                "effective_priority",
                "Priority after tracking.",
                Gauge,
                |i| i.effective_priority.into(),
            ),
            ("adverts_sent", "Adverts sent.", Counter, |i| i.adverts_sent),
            ("transitions", "State transitions.", Counter, |i| {
                i.transitions
            }),
            (
                "adverts_received",
                "Valid adverts received.",
                Counter,
                |i| i.adverts_received,
            ),
        ];
        for (n, help, kind, f) in per_instance {
            let rows = st.vrrp.iter().map(|i| (name(i), f(i) as f64)).collect();
            family(&mut enc, &format!("fulcrum_vrrp_{n}"), help, kind, rows)?;
        }
        let mut dropped = Vec::new();
        for i in &st.vrrp {
            for d in &i.dropped {
                let mut l = name(i);
                l.push(("reason", d.reason.clone()));
                dropped.push((l, d.count as f64));
            }
        }
        family(
            &mut enc,
            "fulcrum_vrrp_adverts_dropped",
            "Adverts dropped, by reason.",
            Counter,
            dropped,
        )?;

        // Health checks.
        let (mut alive, mut weight, mut up, mut checks, mut failures, mut latency, mut quorum) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut transitions = vec![];
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        for vs in &st.health {
            let v = vs.virtual_server.clone();
            quorum.push((vec![("virtual_server", v.clone())], flag(vs.has_quorum)));
            for rs in &vs.real_servers {
                let l = vec![
                    ("virtual_server", v.clone()),
                    ("real_server", rs.address.clone()),
                ];
                alive.push((l.clone(), flag(rs.alive)));
                let w = match rs.membership {
                    Member {
                        is_in: true,
                        weight,
                    } => weight.unwrap_or(0),
                    _ => 0,
                };
                weight.push((l.clone(), f64::from(w)));
                for (n, ch) in rs.checkers.iter().enumerate() {
                    let mut l = l.clone();
                    l.push(("checker", format!("{} #{n}", ch.kind)));
                    up.push((l.clone(), flag(ch.state != "down")));
                    checks.push((l.clone(), ch.checks as f64));
                    failures.push((l.clone(), ch.failures as f64));
                    transitions.push((l.clone(), ch.transitions as f64));
                    if let Some(us) = ch.latency_us {
                        latency.push((l, us as f64 / 1e6));
                    }
                }
            }
        }
        let health = [
            (
                "virtual_server_quorum",
                "Whether the virtual server has quorum.",
                Gauge,
                quorum,
            ),
            (
                "real_server_alive",
                "Whether every checker holds the real server up.",
                Gauge,
                alive,
            ),
            (
                "real_server_weight",
                "The real server's weight in the data plane (0: out or inhibited).",
                Gauge,
                weight,
            ),
            ("checker_up", "Checker state (1 up).", Gauge, up),
            ("checks", "Checks run.", Counter, checks),
            ("check_failures", "Checks that failed.", Counter, failures),
            (
                "checker_transitions",
                "Checker state changes (up to down and back).",
                Counter,
                transitions,
            ),
            (
                "check_latency_seconds",
                "The last check's duration.",
                Gauge,
                latency,
            ),
        ];
        for (n, help, kind, rows) in health {
            family(&mut enc, &format!("fulcrum_{n}"), help, kind, rows)?;
        }

        // Layer 4.
        let l4 = &st.l4;
        let mode = l4
            .interfaces
            .iter()
            .map(|i| {
                (
                    vec![("interface", i.name.clone()), ("mode", i.mode.clone())],
                    1.0,
                )
            })
            .collect();
        family(
            &mut enc,
            "fulcrum_dataplane_mode",
            "The XDP mode of each interface (1 for the one in use).",
            Gauge,
            mode,
        )?;
        let packets = l4
            .packets
            .iter()
            .map(|(reason, n)| (vec![("reason", reason.clone())], *n as f64))
            .collect();
        family(
            &mut enc,
            "fulcrum_dataplane_packets",
            "Packets the XDP program saw, by the reason for its verdict.",
            Counter,
            packets,
        )?;
        let mut svc: [Vec<(Labels, f64)>; 5] = Default::default();
        let mut dst: [Vec<(Labels, f64)>; 7] = Default::default();
        let counters = |t: &Traffic| [t.conns, t.inpkts, t.outpkts, t.inbytes, t.outbytes];
        for v in &l4.services {
            let service = format!("{} {}:{}", v.protocol, v.address, v.port);
            for (k, n) in counters(&v.stats).into_iter().enumerate() {
                svc[k].push((vec![("service", service.clone())], n as f64));
            }
            for d in &v.dests {
                let l = vec![
                    ("service", service.clone()),
                    ("real_server", format!("{}:{}", d.address, d.port)),
                ];
                for (k, n) in counters(&d.stats).into_iter().enumerate() {
                    dst[k].push((l.clone(), n as f64));
                }
                dst[5].push((l.clone(), d.active as f64));
                dst[6].push((l, d.inactive as f64));
            }
        }
        let names = [
            ("connections", "Connections scheduled"),
            ("packets_in", "Packets from clients"),
            ("packets_out", "Packets to clients"),
            ("bytes_in", "Bytes from clients"),
            ("bytes_out", "Bytes to clients"),
        ];
        for (k, (n, help)) in names.iter().enumerate() {
            family(
                &mut enc,
                &format!("fulcrum_ipvs_service_{n}"),
                &format!("{help}, per virtual service."),
                Counter,
                std::mem::take(&mut svc[k]),
            )?;
            family(
                &mut enc,
                &format!("fulcrum_ipvs_real_server_{n}"),
                &format!("{help}, per real server."),
                Counter,
                std::mem::take(&mut dst[k]),
            )?;
        }
        family(
            &mut enc,
            "fulcrum_ipvs_real_server_active_connections",
            "Active connections (ESTABLISHED), as IPVS counts them.",
            Gauge,
            std::mem::take(&mut dst[5]),
        )?;
        family(
            &mut enc,
            "fulcrum_ipvs_real_server_inactive_connections",
            "Inactive connections, as IPVS counts them.",
            Gauge,
            std::mem::take(&mut dst[6]),
        )?;

        // The same data plane as node_exporter's IPVS collector shows an LVS director
        // (/proc/net/ip_vs_stats and /proc/net/ip_vs): totals, then each real server by
        // local and remote address, port, protocol and mark (empty: no fwmark services).
        let mut total = Traffic::default();
        let mut backends: Vec<(Labels, [f64; 3])> = Vec::new();
        for v in &l4.services {
            total.conns += v.stats.conns;
            total.inpkts += v.stats.inpkts;
            total.outpkts += v.stats.outpkts;
            total.inbytes += v.stats.inbytes;
            total.outbytes += v.stats.outbytes;
            for d in &v.dests {
                let labels = vec![
                    ("local_address", v.address.clone()),
                    ("local_port", v.port.to_string()),
                    ("remote_address", d.address.clone()),
                    ("remote_port", d.port.to_string()),
                    ("proto", v.protocol.clone()),
                    ("local_mark", String::new()),
                ];
                let values = [d.active as f64, d.inactive as f64, f64::from(d.weight)];
                // node_exporter adds up backends whose labels are the same.
                match backends.iter_mut().find(|(l, _)| *l == labels) {
                    Some((_, sum)) => sum.iter_mut().zip(values).for_each(|(s, v)| *s += v),
                    None => backends.push((labels, values)),
                }
            }
        }
        if !l4.interfaces.is_empty() {
            let totals = [
                (
                    "connections",
                    "The total number of connections made.",
                    total.conns,
                ),
                (
                    "incoming_packets",
                    "The total number of incoming packets.",
                    total.inpkts,
                ),
                (
                    "outgoing_packets",
                    "The total number of outgoing packets.",
                    total.outpkts,
                ),
                (
                    "incoming_bytes",
                    "The total amount of incoming data.",
                    total.inbytes,
                ),
                (
                    "outgoing_bytes",
                    "The total amount of outgoing data.",
                    total.outbytes,
                ),
            ];
            for (n, help, v) in totals {
                let rows = vec![(vec![], v as f64)];
                family(&mut enc, &format!("node_ipvs_{n}"), help, Counter, rows)?;
            }
        }
        let per_backend = [
            (
                "backend_connections_active",
                "The current active connections by local and remote address.",
            ),
            (
                "backend_connections_inactive",
                "The current inactive connections by local and remote address.",
            ),
            (
                "backend_weight",
                "The current backend weight by local and remote address.",
            ),
        ];
        for (k, (n, help)) in per_backend.into_iter().enumerate() {
            let rows = backends.iter().map(|(l, v)| (l.clone(), v[k])).collect();
            family(&mut enc, &format!("node_ipvs_{n}"), help, Gauge, rows)?;
        }

        // BGP announcements (fulcrum_bgp): sessions, routes, drain.
        if let Some(b) = &st.bgp {
            let sessions = b
                .sessions
                .iter()
                .map(|s| {
                    (
                        vec![
                            ("neighbor", s.neighbor.clone()),
                            ("remote_as", s.remote_as.to_string()),
                        ],
                        flag(s.established),
                    )
                })
                .collect();
            family(
                &mut enc,
                "fulcrum_bgp_session_established",
                "Whether the BGP session to each neighbour is established (as BIRD reports it).",
                Gauge,
                sessions,
            )?;
            let routes = b
                .routes
                .iter()
                .map(|r| (vec![("vip", r.vip.clone())], flag(r.announced)))
                .collect();
            family(
                &mut enc,
                "fulcrum_bgp_vip_announced",
                "Whether this director announces each VIP by BGP.",
                Gauge,
                routes,
            )?;
            let active = b
                .routes
                .iter()
                .map(|r| (vec![("vip", r.vip.clone())], r.active as f64))
                .collect();
            family(
                &mut enc,
                "fulcrum_bgp_vip_active_connections",
                "Active connections to each announced VIP through this director.",
                Gauge,
                active,
            )?;
            family(
                &mut enc,
                "fulcrum_bgp_draining",
                "Whether this director is draining (drain-director).",
                Gauge,
                vec![(vec![], flag(b.draining))],
            )?;
            family(
                &mut enc,
                "fulcrum_bgp_liveness_up",
                "Whether the tap device the announcements hang on exists.",
                Gauge,
                vec![(vec![], flag(b.liveness_up))],
            )?;
        }

        // Connection sync (lvs_sync_daemon, ipvsadm --start-daemon).
        if let Some(sync) = &l4.sync {
            let roles = [
                ("master", sync.master.is_some()),
                ("backup", sync.backup.is_some()),
            ]
            .into_iter()
            .map(|(r, on)| (vec![("role", r.to_string())], flag(on)))
            .collect();
            family(
                &mut enc,
                "fulcrum_sync_daemon_running",
                "Whether each connection sync daemon (master, backup) runs.",
                Gauge,
                roles,
            )?;
            let counters = [
                ("sent_messages", "Sync messages the master sent.", sync.counters.sent_messages),
                ("sent_records", "Connections and templates the master sent.", sync.counters.sent_records),
                ("received_messages", "Sync messages the backup received.", sync.counters.received_messages),
                ("adopted_records", "Received connections and templates installed.", sync.counters.adopted),
                ("updated_records", "Received records that updated a held connection.", sync.counters.updated),
                ("ignored_records", "Received records for no local service or real server, another sync id, IPv6, or skipped as IPVS skips them.", sync.counters.ignored),
                ("malformed_messages", "Received datagrams dropped whole (malformed, wrong version).", sync.counters.malformed),
                ("table_full_records", "Received records refused because the connection table is full.", sync.counters.table_full),
            ];
            for (n, help, v) in counters {
                let rows = vec![(vec![], v as f64)];
                family(&mut enc, &format!("fulcrum_sync_{n}"), help, Counter, rows)?;
            }
        }

        // Layer 7.
        let mut peer_up = Vec::new();
        let mut in_flight = Vec::new();
        for p in &st.upstreams {
            let l = vec![
                ("upstream", p.upstream.clone()),
                ("peer", p.address.clone()),
            ];
            peer_up.push((l.clone(), flag(!p.down && !p.check_down)));
            in_flight.push((l, f64::from(p.conns)));
        }
        family(
            &mut enc,
            "fulcrum_upstream_peer_up",
            "Whether an upstream peer is in rotation (not down, not held out by a health check).",
            Gauge,
            peer_up,
        )?;
        family(
            &mut enc,
            "fulcrum_upstream_peer_requests_in_flight",
            "Requests in flight to an upstream peer.",
            Gauge,
            in_flight,
        )?;
        if let Some(l7) = &st.l7 {
            let rows = |m: Vec<(Labels, u64)>| -> Vec<(Labels, f64)> {
                m.into_iter().map(|(l, v)| (l, v as f64)).collect()
            };
            let requests = l7
                .requests
                .iter()
                .flat_map(|(srv, by)| {
                    by.iter().map(move |(st, n)| {
                        (
                            vec![("server", srv.clone()), ("status", st.to_string())],
                            *n,
                        )
                    })
                })
                .collect();
            family(
                &mut enc,
                "fulcrum_http_requests",
                "Requests answered, by server_name and status.",
                Counter,
                rows(requests),
            )?;
            let tries = l7
                .tries
                .iter()
                .flat_map(|(up, by)| {
                    by.iter().map(move |((peer, st), n)| {
                        (
                            vec![
                                ("upstream", up.clone()),
                                ("peer", peer.to_string()),
                                ("status", st.to_string()),
                            ],
                            *n,
                        )
                    })
                })
                .collect();
            family(
                &mut enc,
                "fulcrum_upstream_responses",
                "Responses from upstream peers, by status.",
                Counter,
                rows(tries),
            )?;
            let failures = l7
                .failures
                .iter()
                .flat_map(|(up, by)| {
                    by.iter().map(move |(peer, n)| {
                        (
                            vec![("upstream", up.clone()), ("peer", peer.to_string())],
                            *n,
                        )
                    })
                })
                .collect();
            family(
                &mut enc,
                "fulcrum_upstream_failures",
                "Tries that failed (error, timeout, invalid header): passive health's failures.",
                Counter,
                rows(failures),
            )?;
            let retries = l7
                .retries
                .iter()
                .map(|(up, n)| (vec![("upstream", up.clone())], *n))
                .collect();
            family(
                &mut enc,
                "fulcrum_upstream_retries",
                "Tries after the first (proxy_next_upstream).",
                Counter,
                rows(retries),
            )?;
            if !l7.latency.is_empty() {
                let mut m = enc.encode_descriptor(
                    "fulcrum_upstream_response_seconds",
                    "Time from sending the request to the upstream's response head.",
                    None,
                    MetricType::Histogram,
                )?;
                for (up, h) in &l7.latency {
                    let labels = vec![("upstream", up.clone())];
                    let buckets: Vec<(f64, u64)> = fulcrum_proxy::stats::BUCKETS
                        .iter()
                        .zip(h.buckets.iter())
                        .map(|(b, n)| (*b, *n))
                        .collect();
                    let above = h.count - h.buckets.iter().sum::<u64>();
                    let mut all = buckets;
                    // The encoder adds the buckets up; the last one is +Inf.
                    all.push((f64::INFINITY, above));
                    m.encode_family(&labels)?
                        .encode_histogram::<Labels>(h.sum, h.count, &all, None)?;
                }
            }
        }
        Ok(())
    }
}

/// The exposition text of one snapshot.
pub fn render(status: Status) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(status)));
    let mut out = String::new();
    // Writing into a String cannot fail; a family that could not be encoded is left out.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}
