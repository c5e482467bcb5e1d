//! Prometheus metrics at `/metrics` on `fulcrum run --metrics ADDR:PORT` (or global_defs'
//! `fulcrum_metrics ADDR:PORT`), in the text exposition format of the prometheus-client
//! crate. Each scrape takes a snapshot of what the control socket shows (VRRP, health
//! checks, the layer-4 data plane, the layer-7 proxy, reloads) and encodes it; nothing is
//! counted twice and nothing is kept between scrapes.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use fulcrum_node::status::{Member, Traffic, VrrpInstance};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Where a scrape gets its numbers.
pub type Sources = Arc<fulcrum_node::Node>;

/// One scrape's numbers.
#[derive(Debug)]
struct Snapshot(fulcrum_node::Status);

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

        // VRRP.
        let name = |i: &VrrpInstance| vec![("instance", i.name.clone())];
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

/// The exposition text of one scrape.
pub async fn render(src: &Sources) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(src.snapshot().await)));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        warn!("metrics: {e}");
    }
    out
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn respond(status: StatusCode, kind: &str, body: impl Into<Bytes>) -> Response<Body> {
    use http_body_util::BodyExt;
    Response::builder()
        .status(status)
        .header("content-type", kind)
        .body(Full::new(body.into()).boxed())
        .expect("static response parts")
}

/// The server-sent events of the dashboard: the whole state every half second.
fn events_stream(src: Sources, events: Arc<crate::dashboard::Events>) -> Response<Body> {
    use http_body_util::BodyExt;
    let stream = futures::stream::unfold(
        (
            src,
            events,
            tokio::time::interval(std::time::Duration::from_millis(500)),
        ),
        |(src, events, mut tick)| async move {
            tick.tick().await;
            let state = events.current(&src).await;
            let frame = hyper::body::Frame::data(Bytes::from(format!("data: {state}\n\n")));
            Some((
                Ok::<_, std::convert::Infallible>(frame),
                (src, events, tick),
            ))
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(http_body_util::StreamBody::new(stream).boxed())
        .expect("static response parts")
}

/// Serves `/metrics`, the dashboard at `/` and its `/events` on `addr`.
pub async fn serve(addr: SocketAddr, src: Sources) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("metrics: cannot listen on {addr}: {e}"))?;
    info!(%addr, "metrics at /metrics, dashboard at /");
    let events = Arc::new(crate::dashboard::Events::default());
    crate::dashboard::sample(src.clone(), Arc::clone(&events));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let src = src.clone();
            let events = Arc::clone(&events);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let src = src.clone();
                        let events = Arc::clone(&events);
                        async move {
                            let resp = match req.uri().path() {
                                "/metrics" => respond(
                                    StatusCode::OK,
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                    render(&src).await,
                                ),
                                "/" => respond(
                                    StatusCode::OK,
                                    "text/html; charset=utf-8",
                                    crate::dashboard::page(&src, &events).await,
                                ),
                                "/events" => events_stream(src, events),
                                _ => respond(
                                    StatusCode::NOT_FOUND,
                                    "text/plain",
                                    "see / and /metrics\n",
                                ),
                            };
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(())
}
