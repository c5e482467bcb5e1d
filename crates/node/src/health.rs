//! The daemon's health checking: one task per checker drives its [`fulcrum_health::Checker`]
//! with the real clock and runs the checks; one task per daemon owns every virtual
//! service's [`fulcrum_health::Service`], logs each transition with its reason, runs
//! notify_up/notify_down and quorum_up/quorum_down, and keeps the view `ctl health` shows.
//!
//! The resulting memberships are published as [`Verdicts`] on a watch channel whenever one
//! changes; the node applies them to the layer-4 data plane and the proxy's peers.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fulcrum_checkers::{
    check_dns, check_http, check_misc, check_ping, check_smtp, check_tcp, check_udp, unhex, Limits,
    MiscCommand, Target, Transport, UdpProbe,
};
use fulcrum_health::{
    Action, CheckKind, Checker, Event, Membership, Outcome, PoolEvent, RealServer, Service, Status,
    Timing,
};
use fulcrum_keepalived_conf::model::{
    Checker as CheckerConf, CheckerKind, GlobalDefs, HttpProtocol, KeepalivedConfig, Script,
    ServiceKey, VirtualServer,
};
use fulcrum_types::Weight;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::events::{Event as NodeEvent, Events};
use crate::scripts::ScriptRun;
use crate::status;

/// A real server as the health checks know it: its virtual server's name ([`service_name`])
/// and its address as configured (port 0 when the real_server line has none).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey {
    pub service: String,
    pub server: SocketAddr,
}

impl ServerKey {
    pub fn of(vs: &VirtualServer, rs: &fulcrum_keepalived_conf::model::RealServer) -> ServerKey {
        ServerKey {
            service: service_name(vs),
            server: SocketAddr::new(rs.addr, rs.port.unwrap_or(0)),
        }
    }
}

/// The health checks' verdicts, published on a watch channel whenever one changes: where
/// each real server and sorry server belongs (what the layer-4 data plane applies), and
/// whether each checked address is alive (what the proxy's upstream peers follow).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdicts {
    servers: HashMap<ServerKey, Membership>,
    /// Every checked virtual server, with its sorry server's membership if it has one.
    sorry: HashMap<String, Option<Membership>>,
    alive: BTreeMap<SocketAddr, bool>,
}

impl Verdicts {
    /// Verdicts from their parts: real servers' memberships, and each checked virtual
    /// server's sorry-server membership (liveness is left empty).
    pub fn from_parts(
        servers: impl IntoIterator<Item = (ServerKey, Membership)>,
        services: impl IntoIterator<Item = (String, Option<Membership>)>,
    ) -> Verdicts {
        Verdicts {
            servers: servers.into_iter().collect(),
            sorry: services.into_iter().collect(),
            alive: BTreeMap::new(),
        }
    }

    /// Where a real server belongs; `None` when it is not checked (its configured weight
    /// stands).
    pub fn server(&self, key: &ServerKey) -> Option<Membership> {
        self.servers.get(key).copied()
    }

    /// Where a virtual server's sorry server belongs: out while the virtual server has no
    /// health checks at all.
    pub fn sorry(&self, service: &str) -> Option<Membership> {
        match self.sorry.get(service) {
            Some(m) => *m,
            None => Some(Membership::Out),
        }
    }

    /// Each checked real server's address and whether its checkers hold it alive; a server
    /// named in several virtual_servers is alive only if every one says so. For the
    /// layer-7 proxy's upstream peers at the same addresses (Fulcrum's extension).
    pub fn alive(&self) -> &BTreeMap<SocketAddr, bool> {
        &self.alive
    }

    fn of(views: &[ServiceView]) -> Verdicts {
        let mut v = Verdicts::default();
        for sv in views {
            v.sorry
                .insert(sv.name.clone(), sv.health.sorry_membership());
            for (i, server) in sv.servers.iter().enumerate() {
                let key = ServerKey {
                    service: sv.name.clone(),
                    server: server.key,
                };
                v.servers.insert(key, sv.health.membership(i));
                if server.checkers.is_empty() {
                    continue;
                }
                let Ok(addr) = server.address.parse::<SocketAddr>() else {
                    continue;
                };
                let alive = sv.health.servers()[i].alive();
                *v.alive.entry(addr).or_insert(true) &= alive;
            }
        }
        v
    }
}

/// Where verdicts are published: the node's channel, which outlives each health runtime.
pub type VerdictsTx = Arc<watch::Sender<Verdicts>>;

fn publish(tx: &VerdictsTx, views: &[ServiceView]) {
    let now = Verdicts::of(views);
    tx.send_if_modified(|v| {
        let changed = *v != now;
        if changed {
            *v = now;
        }
        changed
    });
}

/// What one checker runs.
#[derive(Debug, Clone)]
enum Probe {
    Tcp(Target),
    Http {
        target: Target,
        transport: Transport,
        check: fulcrum_keepalived_conf::model::HttpCheck,
        virtualhost: Option<String>,
    },
    Misc {
        command: MiscCommand,
        dynamic: bool,
        weight: u32,
    },
    Smtp {
        targets: Vec<Target>,
        helo: Option<String>,
    },
    Ping {
        target: Target,
        wait: std::time::Duration,
    },
    Dns {
        target: Target,
        name: String,
        qtype: u16,
        wait: std::time::Duration,
    },
    /// FILE_CHECK: the number in a track_file, times the weight (weight 0: non-zero is
    /// down).
    File {
        name: String,
        path: String,
        weight: i64,
    },
    Udp {
        target: Target,
        probe: UdpProbe,
        /// How long to wait for a reply or a refusal: a little less than the check's
        /// timeout, so that silence is an answer and not a timed-out check.
        wait: std::time::Duration,
    },
}

impl Probe {
    async fn run(self) -> Outcome {
        match self {
            Probe::Tcp(target) => check_tcp(&target).await,
            Probe::Http {
                target,
                transport,
                check,
                virtualhost,
            } => {
                check_http(
                    &target,
                    transport,
                    &check.urls,
                    check.virtualhost.as_deref().or(virtualhost.as_deref()),
                    check.http_protocol.unwrap_or(HttpProtocol::V1_0),
                    Limits::default(),
                )
                .await
            }
            Probe::Misc {
                command,
                dynamic,
                weight,
            } => check_misc(&command, dynamic, weight).await,
            Probe::Smtp { targets, helo } => check_smtp(&targets, helo.as_deref()).await,
            Probe::Dns {
                target,
                name,
                qtype,
                wait,
            } => check_dns(&target, &name, qtype, wait).await,
            Probe::Ping { target, wait } => check_ping(&target, wait).await,
            Probe::File { name, path, weight } => {
                let value = crate::track_file::read(&path);
                match weight {
                    0 if value != 0 => {
                        Outcome::Failure(format!("track_file {name} ({path}) holds {value}"))
                    }
                    0 => Outcome::Success { weight_delta: 0 },
                    w => Outcome::Success {
                        weight_delta: value.saturating_mul(w),
                    },
                }
            }
            Probe::Udp {
                target,
                probe,
                wait,
            } => check_udp(&target, &probe, wait).await,
        }
    }
}

/// One checker as `ctl health` shows it.
#[derive(Debug, Clone)]
struct CheckerView {
    kind: &'static str,
    target: String,
    /// `None`: this build does not run this kind of checker.
    state: Option<Status>,
    checks: u64,
    failures: u64,
    last_ok: Option<bool>,
    last_reason: Option<String>,
    latency_us: Option<u128>,
    last_check_at: Option<u64>,
    changed_at: u64,
    /// Up/down transitions so far.
    transitions: u64,
}

#[derive(Debug, Clone)]
struct ServerView {
    address: String,
    /// The address as configured, port 0 when it has none: half of its [`ServerKey`].
    key: SocketAddr,
    checkers: Vec<CheckerView>,
    /// Unix time of its last up/down change (its start until then).
    changed_at: u64,
}

#[derive(Debug)]
struct ServiceView {
    name: String,
    quorum: u32,
    hysteresis: u32,
    sorry: Option<String>,
    servers: Vec<ServerView>,
    health: Service,
}

/// The shared view, updated by the tasks and read by the control socket.
type View = Arc<Mutex<Vec<ServiceView>>>;

/// A checker's news for the pool task.
#[derive(Debug)]
struct Update {
    service: usize,
    server: usize,
    checker: usize,
    status: Status,
    weight_delta: i64,
}

/// The running health checks.
#[derive(Debug)]
pub struct Runtime {
    view: View,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The services with `omega`, and their scripts.
    omega: Vec<(usize, Scripts)>,
    globals: GlobalDefs,
}

/// A cheap handle for the control socket.
#[derive(Debug, Clone)]
pub struct Handle {
    view: View,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_u32() -> u32 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u32
}

pub fn service_name(vs: &VirtualServer) -> String {
    match &vs.key {
        ServiceKey::Address { addr, port } => {
            format!("{} {}", SocketAddr::new(*addr, *port), vs.protocol().name())
        }
        ServiceKey::Fwmark(m) => format!("FWM {m}"),
        ServiceKey::Group(g) => format!("group {g}"),
    }
}

/// The port a real server is checked on when its checker names none: its own, else the
/// virtual server's.
fn default_port(vs: &VirtualServer, rs_port: Option<u16>) -> Option<u16> {
    rs_port.or(match vs.key {
        ServiceKey::Address { port, .. } => Some(port),
        _ => None,
    })
}

/// What a checker block runs, or why it cannot run in this build.
fn probe_for(
    track_files: &[fulcrum_keepalived_conf::model::TrackFile],
    globals: &GlobalDefs,
    vs: &VirtualServer,
    rs: &fulcrum_keepalived_conf::model::RealServer,
    conf: &CheckerConf,
    timing: &Timing,
) -> Result<Probe, String> {
    let target_of = |c: &fulcrum_keepalived_conf::model::CheckerCommon| -> Result<Target, String> {
        let ip = c.connect_ip.unwrap_or(rs.addr);
        let port = c
            .connect_port
            .or_else(|| default_port(vs, rs.port))
            .ok_or("no port to connect to (set connect_port)")?;
        let bind = c
            .bindto
            .map(|ip| SocketAddr::new(ip, c.bind_port.unwrap_or(0)));
        Ok(Target {
            connect: SocketAddr::new(ip, port),
            bind,
        })
    };
    let target = || target_of(&conf.common);
    match &conf.kind {
        CheckerKind::Tcp => Ok(Probe::Tcp(target()?)),
        CheckerKind::Http(http) | CheckerKind::Ssl(http) => {
            let transport = match &conf.kind {
                CheckerKind::Ssl(_) => Transport::Tls {
                    sni: http.enable_sni.unwrap_or(false),
                },
                _ => Transport::Plain,
            };
            Ok(Probe::Http {
                target: target()?,
                transport,
                check: http.clone(),
                virtualhost: vs.virtualhost.clone(),
            })
        }
        CheckerKind::Misc(misc) => {
            let run = ScriptRun::checked(
                misc.misc_path.command.clone(),
                misc.misc_path.user.as_ref(),
                globals,
            )
            .ok_or("refused by enable_script_security")?;
            Ok(Probe::Misc {
                command: MiscCommand {
                    command: run.command,
                    ids: run.ids,
                },
                dynamic: misc.misc_dynamic,
                weight: rs.weight.get(),
            })
        }
        CheckerKind::Smtp(smtp) => {
            // Old-style host blocks add addresses; the checker's own counts when none.
            let targets = if smtp.hosts.is_empty() {
                vec![target()?]
            } else {
                smtp.hosts.iter().map(target_of).collect::<Result<_, _>>()?
            };
            Ok(Probe::Smtp {
                targets,
                helo: smtp.helo_name.clone(),
            })
        }
        CheckerKind::Ping => {
            let c = &conf.common;
            let ip = c.connect_ip.unwrap_or(rs.addr);
            Ok(Probe::Ping {
                target: Target {
                    connect: SocketAddr::new(ip, 0),
                    bind: c.bindto.map(|b| SocketAddr::new(b, 0)),
                },
                wait: wait_within(timing),
            })
        }
        CheckerKind::Dns(dns) => {
            let qtype = match dns.query_type.as_deref() {
                None => 6,
                Some(t) => fulcrum_checkers::dns::query_type(t)
                    .ok_or_else(|| format!("DNS_CHECK type {t} is not known"))?,
            };
            Ok(Probe::Dns {
                target: target()?,
                name: dns.name.clone().unwrap_or_else(|| ".".into()),
                qtype,
                wait: wait_within(timing),
            })
        }
        CheckerKind::Udp(udp) => Ok(Probe::Udp {
            target: target()?,
            probe: UdpProbe {
                payload: udp.payload.as_deref().map(unhex).unwrap_or_default(),
                require_reply: udp
                    .require_reply
                    .as_ref()
                    .map(|p| p.as_deref().map(unhex).unwrap_or_default()),
                min_reply_length: udp.min_reply_length.map(|n| n as usize),
                max_reply_length: udp.max_reply_length.map(|n| n as usize),
            },
            wait: wait_within(timing),
        }),
        CheckerKind::File(f) => {
            let tf = track_files
                .iter()
                .find(|t| t.name == f.track_file)
                .ok_or_else(|| format!("track_file {} not found", f.track_file))?;
            crate::track_file::init(tf);
            // The checker's weight, else the track_file block's, as keepalived resolves it.
            let (w, reverse) = f
                .weight
                .filter(|(w, _)| w.get() != 0)
                .or(tf.weight)
                .map(|(w, r)| (i64::from(w.get()), r))
                .unwrap_or((0, false));
            Ok(Probe::File {
                name: tf.name.clone(),
                path: tf.file.clone(),
                weight: if reverse { -w } else { w },
            })
        }
    }
}

/// How long a datagram check waits for its answer: a little less than the check's
/// timeout, so that it ends with a verdict rather than being abandoned.
fn wait_within(timing: &Timing) -> std::time::Duration {
    timing
        .timeout
        .saturating_sub(timing.timeout / 10)
        .max(std::time::Duration::from_millis(10))
}

fn target_text(
    probe: &Result<Probe, String>,
    rs: &fulcrum_keepalived_conf::model::RealServer,
) -> String {
    match probe {
        Ok(Probe::Tcp(t))
        | Ok(Probe::Http { target: t, .. })
        | Ok(Probe::Udp { target: t, .. })
        | Ok(Probe::Dns { target: t, .. }) => t.connect.to_string(),
        Ok(Probe::Ping { target, .. }) => target.connect.ip().to_string(),
        Ok(Probe::Smtp { targets, .. }) => targets
            .iter()
            .map(|t| t.connect.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        Ok(Probe::Misc { command, .. }) => command.command.clone(),
        Ok(Probe::File { path, .. }) => path.clone(),
        Err(_) => rs.addr.to_string(),
    }
}

/// Starts a checker task for every checker of every real server, publishing verdicts on
/// `verdicts` (at once, then on every change) and transitions on `events`. `None` when
/// the configuration has no real server to check.
pub fn start(k: &KeepalivedConfig, verdicts: VerdictsTx, events: Events) -> Option<Runtime> {
    if k.virtual_servers
        .iter()
        .all(|vs| vs.real_servers.is_empty())
    {
        return None;
    }
    let (tx, rx) = mpsc::channel::<Update>(1024);
    let now = Instant::now();
    let mut views = Vec::new();
    let mut tasks = Vec::new();
    let mut notifies = Vec::new();
    let mut omega = Vec::new();
    for (v, vs) in k.virtual_servers.iter().enumerate() {
        let name = service_name(vs);
        let mut servers = Vec::new();
        let mut healths = Vec::new();
        let mut rs_scripts = Vec::new();
        for (r, rs) in vs.real_servers.iter().enumerate() {
            let address = match default_port(vs, rs.port) {
                Some(p) => SocketAddr::new(rs.addr, p).to_string(),
                None => rs.addr.to_string(),
            };
            let mut checkers = Vec::new();
            let mut initial = Vec::new();
            for (c, conf) in rs.checkers.iter().enumerate() {
                let kind = CheckKind::of(&conf.kind);
                let mut timing = Timing::resolve(kind, Some(conf), &rs.defaults, &vs.defaults);
                if kind == CheckKind::File {
                    // keepalived watches the file (inotify) and acts on a change at once;
                    // reading it every 500 ms, with no retry, is as close as a poll gets.
                    timing.delay_loop = std::time::Duration::from_millis(500);
                    timing.timeout = std::time::Duration::from_secs(1);
                    timing.retry = 0;
                    timing.delay_before_retry = std::time::Duration::ZERO;
                    timing.warmup = std::time::Duration::ZERO;
                }
                let probe = probe_for(&k.track_files, &k.global_defs, vs, rs, conf, &timing);
                let target = target_text(&probe, rs);
                let state = match &probe {
                    Ok(_) => Some(if timing.alpha {
                        Status::Down
                    } else {
                        Status::Up
                    }),
                    Err(why) => {
                        warn!(service = %name, real_server = %address, "{}: {why}; it counts as up", conf.kind.keyword());
                        None
                    }
                };
                initial.push(state.unwrap_or(Status::Up));
                checkers.push(CheckerView {
                    kind: conf.kind.keyword(),
                    target,
                    state,
                    checks: 0,
                    failures: 0,
                    last_ok: None,
                    last_reason: None,
                    latency_us: None,
                    last_check_at: None,
                    changed_at: unix_now(),
                    transitions: 0,
                });
                if let Ok(probe) = probe {
                    let machine = Checker::new(timing, now, random_u32());
                    let ids = (v, r, c);
                    tasks.push((
                        ids,
                        machine,
                        probe,
                        conf.common.log_all_failures.unwrap_or(false),
                    ));
                }
            }
            let inhibit = rs
                .defaults
                .inhibit_on_failure
                .or(vs.defaults.inhibit_on_failure)
                .unwrap_or(false);
            healths.push(RealServer::new(rs.weight, inhibit, initial));
            rs_scripts.push((rs.notify_up.clone(), rs.notify_down.clone()));
            servers.push(ServerView {
                address,
                key: SocketAddr::new(rs.addr, rs.port.unwrap_or(0)),
                checkers,
                changed_at: unix_now(),
            });
        }
        let sorry = vs.sorry_server.map(|(ip, port)| {
            (
                match port.or_else(|| default_port(vs, None)) {
                    Some(p) => SocketAddr::new(ip, p).to_string(),
                    None => ip.to_string(),
                },
                vs.sorry_server_inhibit,
            )
        });
        let (health, events) = Service::new(
            vs.quorum,
            vs.hysteresis,
            sorry
                .as_ref()
                .map(|(_, inhibit)| (Weight::DEFAULT, *inhibit)),
            healths,
        );
        let scripts = Scripts {
            service: name.clone(),
            addresses: servers.iter().map(|s| s.address.clone()).collect(),
            servers: rs_scripts,
            quorum_up: vs.quorum_up.clone(),
            quorum_down: vs.quorum_down.clone(),
        };
        for e in events {
            announce(&k.global_defs, &scripts, e);
        }
        if vs.omega {
            omega.push((views.len(), scripts.clone()));
        }
        notifies.push(scripts);
        views.push(ServiceView {
            name,
            quorum: vs.quorum,
            hysteresis: vs.hysteresis,
            sorry: sorry.map(|(a, _)| a),
            servers,
            health,
        });
    }
    publish(&verdicts, &views);
    let view: View = Arc::new(Mutex::new(views));
    // The checks run on a single-threaded runtime of their own: thousands of checks a
    // second cost less without work stealing, and never delay VRRP's timers.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shared = Arc::clone(&view);
    let globals = k.global_defs.clone();
    let thread = std::thread::Builder::new()
        .name("fulcrum-health".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!("cannot start the health-check runtime: {e}");
                    return;
                }
            };
            runtime.block_on(async move {
                for (ids, machine, probe, log_all) in tasks {
                    tokio::spawn(drive(
                        ids,
                        machine,
                        probe,
                        log_all,
                        Arc::clone(&shared),
                        tx.clone(),
                    ));
                }
                drop(tx);
                tokio::spawn(pool(rx, shared, globals, notifies, verdicts, events));
                let _ = stopped.await;
            });
            // Dropping the runtime cancels every check (and kills running MISC_CHECK scripts).
        });
    let thread = match thread {
        Ok(t) => Some(t),
        Err(e) => {
            warn!("cannot start the health-check thread: {e}");
            None
        }
    };
    Some(Runtime {
        view,
        stop,
        thread,
        omega,
        globals: k.global_defs.clone(),
    })
}

impl Runtime {
    pub fn handle(&self) -> Handle {
        Handle {
            view: Arc::clone(&self.view),
        }
    }

    /// Stops every check. `shutdown`: the daemon is stopping (not reloading), which is
    /// when `omega` runs the scripts.
    pub fn stop(self, shutdown: bool) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread {
            let _ = t.join();
        }
        if !shutdown {
            return;
        }
        // omega: on shutdown the service goes down as far as the scripts are concerned,
        // as keepalived does: quorum_down if it had quorum, notify_down for each live
        // real server.
        let views = self.view.lock().expect("health view lock");
        for (i, scripts) in &self.omega {
            let sv = &views[*i];
            for (r, rs) in sv.health.servers().iter().enumerate() {
                if rs.alive() {
                    announce(&self.globals, scripts, PoolEvent::ServerDown(r));
                }
            }
            if sv.health.has_quorum() {
                announce(&self.globals, scripts, PoolEvent::QuorumDown);
            }
        }
    }
}

/// The scripts of one virtual service.
#[derive(Debug, Clone)]
struct Scripts {
    /// The service's name and its real servers' addresses, for the log.
    service: String,
    addresses: Vec<String>,
    servers: Vec<(Option<Script>, Option<Script>)>,
    quorum_up: Option<Script>,
    quorum_down: Option<Script>,
}

fn run_script(globals: &GlobalDefs, script: &Script) {
    let Some(run) = ScriptRun::checked(script.command.clone(), script.user.as_ref(), globals)
    else {
        return;
    };
    match run
        .command()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        // tokio reaps the child in the background once it is dropped.
        Ok(_) => {}
        Err(e) => warn!("cannot run `{}`: {e}", script.command),
    }
}

fn announce(globals: &GlobalDefs, scripts: &Scripts, e: PoolEvent) {
    let service = scripts.service.as_str();
    match e {
        PoolEvent::ServerUp(r) => {
            info!(service, "real server {} is up", scripts.addresses[r]);
            if let Some(s) = &scripts.servers[r].0 {
                run_script(globals, s);
            }
        }
        PoolEvent::ServerDown(r) => {
            info!(service, "real server {} is down", scripts.addresses[r]);
            if let Some(s) = &scripts.servers[r].1 {
                run_script(globals, s);
            }
        }
        PoolEvent::QuorumUp => {
            info!(service, "quorum gained");
            if let Some(s) = &scripts.quorum_up {
                run_script(globals, s);
            }
        }
        PoolEvent::QuorumDown => {
            warn!(service, "quorum lost");
            if let Some(s) = &scripts.quorum_down {
                run_script(globals, s);
            }
        }
    }
}

/// Applies checker news to the services, in arrival order, and publishes what changed.
async fn pool(
    mut rx: mpsc::Receiver<Update>,
    view: View,
    globals: GlobalDefs,
    scripts: Vec<Scripts>,
    verdicts: VerdictsTx,
    events: Events,
) {
    while let Some(u) = rx.recv().await {
        let (changes, news) = {
            let mut views = view.lock().expect("health view lock");
            let changes = views[u.service].health.checker_changed(
                u.server,
                u.checker,
                u.status,
                u.weight_delta,
            );
            for e in &changes {
                if let PoolEvent::ServerUp(r) | PoolEvent::ServerDown(r) = e {
                    views[u.service].servers[*r].changed_at = unix_now();
                }
            }
            // A weight may change with no pool event (misc_dynamic): publish compares.
            publish(&verdicts, &views);
            let sv = &views[u.service];
            let news: Vec<NodeEvent> = changes.iter().map(|e| event(sv, *e)).collect();
            (changes, news)
        };
        for e in changes {
            announce(&globals, &scripts[u.service], e);
        }
        for e in news {
            events.send(e);
        }
    }
}

/// A pool event as the node reports it.
fn event(sv: &ServiceView, e: PoolEvent) -> NodeEvent {
    let server = |r: usize, up: bool| NodeEvent::RealServer {
        virtual_server: sv.name.clone(),
        address: sv.servers[r].address.clone(),
        up,
        reason: sv.servers[r]
            .checkers
            .iter()
            .find(|c| c.state == Some(Status::Down))
            .and_then(|c| c.last_reason.clone())
            .filter(|_| !up),
    };
    match e {
        PoolEvent::ServerUp(r) => server(r, true),
        PoolEvent::ServerDown(r) => server(r, false),
        PoolEvent::QuorumUp | PoolEvent::QuorumDown => NodeEvent::Quorum {
            virtual_server: sv.name.clone(),
            up: e == PoolEvent::QuorumUp,
        },
    }
}

type CheckFuture = Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>;

/// Drives one checker with the real clock.
async fn drive(
    (v, r, c): (usize, usize, usize),
    mut machine: Checker,
    probe: Probe,
    log_all_failures: bool,
    view: View,
    tx: mpsc::Sender<Update>,
) {
    let mut in_flight: Option<(u64, CheckFuture)> = None;
    // How many finished checks the shared view already shows.
    let mut cv_checks = 0;
    let (service, server, kind) = {
        let views = view.lock().expect("health view lock");
        let sv = &views[v];
        (
            sv.name.clone(),
            sv.servers[r].address.clone(),
            sv.servers[r].checkers[c].kind,
        )
    };
    loop {
        let deadline = tokio::time::Instant::from_std(machine.poll_timeout());
        let actions = match in_flight.as_mut() {
            Some((attempt, check)) => {
                let attempt = *attempt;
                tokio::select! {
                    outcome = check => {
                        in_flight = None;
                        machine.handle(Instant::now(), Event::Result { attempt, outcome })
                    }
                    _ = tokio::time::sleep_until(deadline) => machine.handle(Instant::now(), Event::Timer),
                }
            }
            None => {
                tokio::time::sleep_until(deadline).await;
                machine.handle(Instant::now(), Event::Timer)
            }
        };
        let mut news = None;
        for action in actions {
            match action {
                Action::StartCheck { attempt } => {
                    in_flight = Some((attempt, Box::pin(probe.clone().run())));
                }
                Action::Abandon { .. } => in_flight = None,
                Action::Retrying { reason, retry, of } => {
                    if log_all_failures {
                        info!(
                            service,
                            real_server = server,
                            "{kind}: {reason}; retry {retry} of {of}"
                        );
                    } else {
                        debug!(
                            service,
                            real_server = server,
                            "{kind}: {reason}; retry {retry} of {of}"
                        );
                    }
                }
                Action::Transition {
                    to,
                    reason,
                    retries,
                } => {
                    match to {
                        Status::Down if retries > 0 => warn!(
                            service,
                            real_server = server,
                            "{kind} failed after {retries} retries: {reason}"
                        ),
                        Status::Down => {
                            warn!(service, real_server = server, "{kind} failed: {reason}")
                        }
                        Status::Up => info!(service, real_server = server, "{kind} succeeded"),
                    }
                    news = Some(to);
                }
                Action::WeightChanged { .. } => news = Some(machine.status()),
            }
        }
        let finished = machine.finished() != cv_checks;
        if finished || news.is_some() {
            cv_checks = machine.finished();
            let mut views = view.lock().expect("health view lock");
            let cv = &mut views[v].servers[r].checkers[c];
            if let (true, Some(last)) = (finished, machine.last()) {
                cv.checks = machine.finished();
                cv.failures = machine.failed();
                cv.last_ok = Some(matches!(last.outcome, Outcome::Success { .. }));
                cv.last_reason = match &last.outcome {
                    Outcome::Failure(reason) => Some(reason.clone()),
                    Outcome::Success { .. } => None,
                };
                cv.latency_us = Some(last.latency.as_micros());
                cv.last_check_at = Some(unix_now());
            }
            cv.state = Some(machine.status());
            if news.is_some() {
                cv.changed_at = unix_now();
                cv.transitions += 1;
            }
        }
        if let Some(status) = news {
            let update = Update {
                service: v,
                server: r,
                checker: c,
                status,
                weight_delta: machine.weight_delta(),
            };
            if tx.send(update).await.is_err() {
                return;
            }
        }
    }
}

fn member(m: Membership) -> status::Member {
    match m {
        Membership::In(w) => status::Member {
            is_in: true,
            weight: Some(w.get()),
        },
        Membership::Out => status::Member {
            is_in: false,
            weight: None,
        },
    }
}

impl Handle {
    /// What `ctl health` shows.
    pub fn status(&self) -> Vec<status::ServiceHealth> {
        let views = self.view.lock().expect("health view lock");
        views
            .iter()
            .map(|sv| status::ServiceHealth {
                virtual_server: sv.name.clone(),
                quorum: sv.quorum,
                hysteresis: sv.hysteresis,
                has_quorum: sv.health.has_quorum(),
                live_weight: sv.health.live_weight(),
                sorry_server: sv.sorry.as_ref().map(|a| status::SorryServer {
                    address: a.clone(),
                    membership: sv.health.sorry_membership().map(member),
                }),
                real_servers: sv
                    .servers
                    .iter()
                    .enumerate()
                    .map(|(i, rs)| status::ServerHealth {
                        address: rs.address.clone(),
                        alive: sv.health.servers()[i].alive(),
                        weight: sv.health.servers()[i].weight().get(),
                        membership: member(sv.health.membership(i)),
                        changed_at: rs.changed_at,
                        checkers: rs
                            .checkers
                            .iter()
                            .map(|c| status::CheckerHealth {
                                kind: c.kind.to_string(),
                                target: c.target.clone(),
                                state: match c.state {
                                    Some(Status::Up) => "up",
                                    Some(Status::Down) => "down",
                                    None => "not run",
                                }
                                .to_string(),
                                checks: c.checks,
                                failures: c.failures,
                                last_ok: c.last_ok,
                                last_reason: c.last_reason.clone(),
                                latency_us: c.latency_us.map(|us| us as u64),
                                last_check_at: c.last_check_at,
                                changed_at: c.changed_at,
                                transitions: c.transitions,
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect()
    }
}
