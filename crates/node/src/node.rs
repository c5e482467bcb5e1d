//! [`Node`]: what one host runs, started from a checked configuration, changed by
//! [`Node::apply`] (a configuration that fails is refused and the running one stays),
//! asked with [`Node::command`], stopped with [`Node::stop`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use tokio::sync::{broadcast, watch, Mutex};
use tracing::{error, info, warn};

use crate::config::{Config, Sources};
use crate::events::{Event, Events};
use crate::health::{Verdicts, VerdictsTx};
use crate::proxy::{Launch, Proxy};
use crate::{bgp, health, l4, status, vrrp};

/// How the node runs, beyond its configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// Whether the layer-4 data plane runs (off: `--no-forwarding`).
    pub forwarding: bool,
    /// Where the data plane's maps are pinned; by default one directory per network
    /// namespace under /sys/fs/bpf/fulcrum.
    pub bpf_dir: Option<PathBuf>,
    /// Leave forwarding running at stop, for the next run to adopt.
    pub keep_forwarding: bool,
    /// The connection table's size.
    pub max_connections: u32,
    /// The program run as `PROGRAM proxy-worker` for the layer-7 proxy's worker process
    /// (the `fulcrum` binary); None serves in this process.
    pub proxy_worker: Option<fulcrum_workers::Program>,
}

/// What the control socket asks of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Status,
    Reload,
    Vrrp,
    Health,
    Upstreams,
    /// The layer-4 listing, with the connection table or without.
    Ipvs {
        connections: bool,
    },
    /// ipvsadm command lines, applied together or not at all.
    Ipvsadm(Vec<Vec<String>>),
    /// Drain (`on`) or undrain the real servers and upstream peers at ADDR or ADDR:PORT.
    Drain {
        target: String,
        on: bool,
    },
    /// What this director announces by BGP.
    Bgp,
    /// Drain (`on`) or undrain this director: its VIPs less preferred, then withdrawn.
    DrainDirector {
        on: bool,
    },
}

/// A command's answer; it serializes to the control protocol's `result`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    Daemon(status::Daemon),
    Vrrp(Vec<status::VrrpInstance>),
    Health(Vec<status::ServiceHealth>),
    Upstreams(Vec<status::UpstreamPeer>),
    Listing(Box<status::Listing>),
    /// ipvsadm edits applied.
    Edited {},
    Drained(status::Drained),
    Bgp(Box<status::Bgp>),
}

/// A configuration applied: its hash, and what it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub hash: u64,
    /// Anything at all (a reload of the same files changes nothing).
    pub changed: bool,
    pub vrrp_changed: bool,
    pub services_changed: bool,
}

/// Why a configuration was refused (its diagnostics, or what the proxy could not do);
/// the running one stays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Why a command was refused; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(pub String);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What the node runs now, and how it got there.
#[derive(Debug)]
struct Inner {
    sources: Sources,
    config: Config,
    options: Options,
    loaded_at: u64,
    started_at: u64,
    reloads_ok: u64,
    reloads_failed: u64,
    last_reload_error: Option<String>,
    health: Option<health::Runtime>,
    l4: Option<l4::Runtime>,
    vrrp: Option<vrrp::Runtime>,
    /// The layer-7 proxy, while the nginx.conf has an http block.
    proxy: Option<Arc<Proxy>>,
    /// The health checks' verdicts, whichever health runtime publishes them.
    verdicts: VerdictsTx,
    events: Events,
    /// The BGP announcements' task (keepalived.conf's fulcrum_bgp).
    bgp: bgp::Control,
}

/// Cheap handles on the running parts, to ask them without holding the node.
#[derive(Debug, Clone, Default)]
struct Handles {
    health: Option<health::Handle>,
    l4: Option<l4::Handle>,
    vrrp: Option<vrrp::Handle>,
    proxy: Option<Arc<Proxy>>,
    /// The connection table's size, started or not.
    table_size: u32,
}

/// The daemon: VRRP, health checks, the layer-4 data plane and the layer-7 proxy of one
/// configuration.
#[derive(Debug)]
pub struct Node {
    inner: Arc<Mutex<Inner>>,
    events: Events,
    /// Applies the health checks' verdicts to the data plane and the proxy's peers.
    follow: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Starts everything the configuration asks for: the health checks, the data plane,
    /// the proxy (its listeners bound before the VIPs arrive), then VRRP (a no_accept
    /// master asks the data plane to refuse its VIPs). Nothing is left running on error.
    pub async fn start(sources: Sources, config: Config, options: Options) -> anyhow::Result<Node> {
        let now = unix_now();
        let events = Events::default();
        let (verdicts, verdicts_rx) = watch::channel(Verdicts::default());
        let mut inner = Inner {
            sources,
            config,
            options,
            loaded_at: now,
            started_at: now,
            reloads_ok: 0,
            reloads_failed: 0,
            last_reload_error: None,
            health: None,
            l4: None,
            vrrp: None,
            proxy: None,
            verdicts: Arc::new(verdicts),
            events: events.clone(),
            bgp: bgp::Control::default(),
        };
        let k = inner.config.keepalived.clone();
        inner.start_health();
        if let Some(k) = k.as_ref().filter(|_| inner.options.forwarding) {
            let verdicts = inner.verdicts.borrow().clone();
            match l4::start(
                k,
                verdicts,
                inner.options.bpf_dir.clone(),
                inner.options.max_connections,
                false,
            ) {
                Ok(rt) => inner.l4 = rt,
                Err(e) => {
                    inner.shut_down().await;
                    return Err(e.context("cannot start the layer-4 data plane"));
                }
            }
        }
        let config = inner.config.clone();
        if let Err(e) = inner.apply_proxy(&config).await {
            inner.shut_down().await;
            return Err(anyhow::anyhow!("cannot start the layer-7 proxy: {e}"));
        }
        if let Some(k) = k.as_ref().filter(|k| !k.vrrp_instances.is_empty()) {
            let l4 = inner.l4.as_ref().map(l4::Runtime::handle);
            let events = inner.events.clone();
            match vrrp::start(k, l4, events)
                .await
                .context("cannot start VRRP")
            {
                Ok(rt) => inner.vrrp = Some(rt),
                Err(e) => {
                    inner.shut_down().await;
                    return Err(e);
                }
            }
        }
        let bgp = inner.bgp.clone();
        let inner = Arc::new(Mutex::new(inner));
        let follow = tokio::spawn(follow_health(Arc::clone(&inner), verdicts_rx));
        tokio::spawn(follow_bgp(Arc::clone(&inner), bgp));
        Ok(Node {
            inner,
            events,
            follow,
        })
    }

    /// What happens from now on: VRRP transitions, real servers and peers changing,
    /// reloads and drains. A receiver that falls behind by more than 256 events is told
    /// how many it missed.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The configuration in force.
    pub async fn config(&self) -> Config {
        self.inner.lock().await.config.clone()
    }

    /// Loads the configuration files again and applies them; a configuration that fails
    /// validation is refused and the running one stays.
    pub async fn reload(&self) -> Result<Applied, Refused> {
        let sources = self.inner.lock().await.sources.clone();
        let (config, report) = tokio::task::spawn_blocking(move || sources.load())
            .await
            .map_err(|e| Refused(format!("loading the configuration failed: {e}")))?;
        let mut inner = self.inner.lock().await;
        match config {
            Some(config) => {
                if !report.text.is_empty() {
                    warn!("configuration warnings:\n{}", report.text.trim_end());
                }
                inner.apply(config).await
            }
            None => {
                let text = format!(
                    "{} error(s); the running configuration stays\n{}",
                    report.errors, report.text
                );
                Err(inner.refused(text))
            }
        }
    }

    /// Applies a checked configuration: only what changed is touched (unchanged VRRP
    /// instances keep their state, unchanged services their connections). A
    /// configuration the proxy cannot serve is refused as a whole.
    pub async fn apply(&self, config: Config) -> Result<Applied, Refused> {
        self.inner.lock().await.apply(config).await
    }

    async fn handles(&self) -> Handles {
        self.inner.lock().await.handles()
    }

    /// Answers one control command.
    pub async fn command(&self, command: Command) -> Result<Reply, CommandError> {
        match command {
            Command::Status => Ok(Reply::Daemon(self.status().await)),
            Command::Reload => match self.reload().await {
                Ok(_) => Ok(Reply::Daemon(self.status().await)),
                Err(e) => Err(CommandError(e.0)),
            },
            Command::Vrrp => Ok(Reply::Vrrp(vrrp_status(self.handles().await.vrrp).await)),
            Command::Health => Ok(Reply::Health(health_status(self.handles().await.health))),
            Command::Upstreams => Ok(Reply::Upstreams(upstreams(
                self.handles().await.proxy.as_deref(),
            ))),
            Command::Ipvs { connections } => {
                let h = self.handles().await;
                Ok(Reply::Listing(Box::new(
                    listing(h.l4, h.table_size, connections).await?,
                )))
            }
            Command::Ipvsadm(lines) => {
                let h = self.l4_for_edits().await?;
                match tokio::task::spawn_blocking(move || h.edit(&lines)).await {
                    Ok(Ok(())) => Ok(Reply::Edited {}),
                    Ok(Err(e)) => Err(CommandError(e)),
                    Err(e) => Err(CommandError(format!("edit failed: {e}"))),
                }
            }
            Command::Drain { target, on } => self.drain(&target, on).await.map(Reply::Drained),
            Command::Bgp => self.bgp_status().await.map(|s| Reply::Bgp(Box::new(s))),
            Command::DrainDirector { on } => {
                let control = self.inner.lock().await.bgp.clone();
                self.bgp_status().await?;
                let mut seen = control.status.subscribe();
                control.drain.send_replace(on);
                info!(
                    "{}",
                    if on {
                        "drain-director"
                    } else {
                        "undrain-director"
                    }
                );
                // The task steps at once on a drain; answered with its view after it.
                let stepped = seen.wait_for(|s| s.as_ref().is_some_and(|s| s.draining == on));
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stepped).await;
                self.bgp_status().await.map(|s| Reply::Bgp(Box::new(s)))
            }
        }
    }

    /// The BGP view, or why there is none.
    async fn bgp_status(&self) -> Result<status::Bgp, CommandError> {
        let control = self.inner.lock().await.bgp.clone();
        let s = control.status.borrow().clone();
        s.ok_or_else(|| CommandError("no fulcrum_bgp block in keepalived.conf".into()))
    }

    /// The data plane ipvsadm's edits go to: started at the first edit when the
    /// configuration forwards nothing (with IPVS the table is there from boot, and
    /// `ipvsadm -A` just works).
    async fn l4_for_edits(&self) -> Result<l4::Handle, CommandError> {
        let mut inner = self.inner.lock().await;
        if let Some(rt) = &inner.l4 {
            return Ok(rt.handle());
        }
        if !inner.options.forwarding {
            return Err(CommandError(
                "the layer-4 data plane is off (--no-forwarding); nothing was changed".into(),
            ));
        }
        let k = inner.config.keepalived.clone().unwrap_or_default();
        let verdicts = inner.verdicts.borrow().clone();
        let bpf_dir = inner.options.bpf_dir.clone();
        let max = inner.options.max_connections;
        let rt = tokio::task::spawn_blocking(move || l4::start(&k, verdicts, bpf_dir, max, true))
            .await
            .map_err(|e| CommandError(format!("cannot start the layer-4 data plane: {e}")))?
            .map_err(|e| CommandError(format!("cannot start the layer-4 data plane: {e:#}")))?
            .ok_or_else(|| CommandError("the layer-4 data plane did not start".into()))?;
        info!("layer-4 data plane started for ipvsadm");
        let h = rt.handle();
        inner.l4 = Some(rt);
        Ok(h)
    }

    /// Everything at once, for a metrics scrape or the dashboard.
    pub async fn snapshot(&self) -> status::Status {
        let h = self.handles().await;
        // The proxy's side asks its workers: off the runtime's threads.
        let proxy = h.proxy.clone();
        let (upstreams, l7) = tokio::task::spawn_blocking(move || {
            (upstreams(proxy.as_deref()), proxy.map(|p| p.stats()))
        })
        .await
        .unwrap_or_default();
        status::Status {
            daemon: self.status().await,
            vrrp: vrrp_status(h.vrrp).await,
            health: health_status(h.health),
            l4: listing(h.l4, h.table_size, false)
                .await
                .unwrap_or_else(|_| l4::empty_listing(h.table_size)),
            upstreams,
            l7,
            process: status::Process::read(),
            bgp: self.bgp_status().await.ok(),
        }
    }

    async fn drain(&self, target: &str, on: bool) -> Result<status::Drained, CommandError> {
        let (ip, port) = match target.parse::<SocketAddr>() {
            Ok(sa) => (sa.ip(), Some(sa.port())),
            Err(_) => match target.parse::<IpAddr>() {
                Ok(ip) => (ip, None),
                Err(_) => return Err(CommandError(format!("'{target}' is not ADDR or ADDR:PORT"))),
            },
        };
        let handles = self.handles().await;
        let l4_count = match handles.l4 {
            Some(h) => tokio::task::spawn_blocking(move || h.set_drained(ip, port, on))
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
                .map_err(CommandError)?,
            None => 0,
        };
        let l7_count = match handles.proxy {
            Some(p) => tokio::task::spawn_blocking(move || p.set_drained(ip, port, on))
                .await
                .unwrap_or(0),
            None => 0,
        };
        if l4_count == 0 && l7_count == 0 {
            return Err(CommandError(format!(
                "no real server or upstream peer at {target}; nothing was changed"
            )));
        }
        let verb = if on { "drain" } else { "undrain" };
        info!(%target, "{verb}: {l4_count} real server(s), {l7_count} upstream peer(s)");
        self.events.send(Event::Drain {
            target: target.to_string(),
            on,
        });
        Ok(status::Drained {
            real_servers: l4_count,
            upstream_peers: l7_count,
        })
    }

    /// Opens every access and error log file anew (after logrotate renamed them), as
    /// nginx does on SIGUSR1; a reload does it too.
    pub async fn reopen_logs(&self) {
        fulcrum_proxy::reopen_logs();
        if let Some(p) = self.handles().await.proxy {
            let _ = tokio::task::spawn_blocking(move || p.reopen_logs()).await;
        }
        info!("log files reopened");
    }

    /// The layer-7 proxy's listening sockets, duplicated, for a new binary to start on
    /// (nginx's binary upgrade).
    pub async fn proxy_listening_sockets(&self) -> Result<Vec<std::net::TcpListener>, String> {
        match self.handles().await.proxy {
            Some(p) => p.listening_sockets(),
            None => Err("no layer-7 proxy runs".into()),
        }
    }

    /// nginx's WINCH after a binary upgrade: the proxy's workers stop gracefully and no
    /// other takes their place; the listening sockets stay open. Whether one was serving.
    pub async fn pause_proxy(&self) -> bool {
        match self.handles().await.proxy {
            Some(p) => tokio::task::spawn_blocking(move || p.pause())
                .await
                .unwrap_or(false),
            None => false,
        }
    }

    /// Workers again after [`Node::pause_proxy`], on the configuration they had (nginx
    /// does not read it again then). Whether any was started.
    pub async fn resume_proxy(&self) -> Result<bool, String> {
        match self.handles().await.proxy {
            Some(p) => tokio::task::spawn_blocking(move || p.resume())
                .await
                .unwrap_or_else(|e| Err(e.to_string())),
            None => Ok(false),
        }
    }

    /// What `ctl status` shows.
    pub async fn status(&self) -> status::Daemon {
        self.inner.lock().await.status()
    }

    /// Stops everything: VRRP first (priority 0 hands the VIPs over while this node still
    /// forwards), then the data plane (left running with `keep_forwarding`), the health
    /// checks (omega scripts run) and the proxy.
    pub async fn stop(&self) {
        self.follow.abort();
        self.inner.lock().await.shut_down().await;
    }

    /// nginx's graceful stop (SIGQUIT): the proxy stops listening, closes its idle
    /// connections and lets requests in flight finish, for at most `grace` or until
    /// `hurry` is set; then the rest stops as [`Node::stop`] stops it.
    pub async fn quit(
        &self,
        grace: std::time::Duration,
        hurry: Arc<std::sync::atomic::AtomicBool>,
    ) {
        self.follow.abort();
        let mut inner = self.inner.lock().await;
        if let Some(p) = inner.proxy.take() {
            match Arc::try_unwrap(p) {
                Ok(p) => {
                    let left = tokio::task::spawn_blocking(move || p.quit(grace, &hurry))
                        .await
                        .unwrap_or(0);
                    if left > 0 {
                        warn!("{left} connection(s) still open after {grace:?}: closed");
                    }
                }
                Err(p) => drop(p),
            }
        }
        inner.shut_down().await;
    }
}

impl Inner {
    fn handles(&self) -> Handles {
        Handles {
            health: self.health.as_ref().map(health::Runtime::handle),
            l4: self.l4.as_ref().map(l4::Runtime::handle),
            vrrp: self.vrrp.as_ref().map(vrrp::Runtime::handle),
            proxy: self.proxy.clone(),
            table_size: self.options.max_connections,
        }
    }

    fn refused(&mut self, text: String) -> Refused {
        self.events.send(Event::ReloadRefused {
            error: text.clone(),
        });
        self.reloads_failed += 1;
        error!("reload refused: {}", text.trim_end());
        self.last_reload_error = Some(text.clone());
        Refused(text)
    }

    async fn apply(&mut self, config: Config) -> Result<Applied, Refused> {
        let changed = config.hash != self.config.hash;
        let vrrp_of = |c: &Config| {
            c.keepalived
                .as_ref()
                .map(|k| (k.global_defs.clone(), k.vrrp_instances.clone()))
        };
        let vrrp_changed = vrrp_of(&config) != vrrp_of(&self.config);
        let services_of = |c: &Config| c.keepalived.as_ref().map(|k| k.virtual_servers.clone());
        let services_changed = services_of(&config) != services_of(&self.config);
        // The proxy takes its part first: a configuration it cannot serve (a listen
        // address it cannot bind, a bad regex) is refused as a whole.
        if let Err(e) = self.apply_proxy(&config).await {
            return Err(self.refused(format!(
                "layer-7 proxy: {e}; the running configuration stays"
            )));
        }
        self.config = config;
        self.loaded_at = unix_now();
        self.reloads_ok += 1;
        self.last_reload_error = None;
        // As nginx does at reload: every log file is opened anew (a new worker opens
        // its own).
        fulcrum_proxy::reopen_logs();
        info!(
            hash = format!("{:016x}", self.config.hash),
            changed, "configuration reloaded"
        );
        self.events.send(Event::Reloaded {
            hash: format!("{:016x}", self.config.hash),
        });
        if services_changed {
            self.apply_services();
        }
        if vrrp_changed {
            self.apply_vrrp().await;
        }
        Ok(Applied {
            hash: self.config.hash,
            changed,
            vrrp_changed,
            services_changed,
        })
    }

    /// virtual_server blocks changed: new health checks, and the data plane brought to
    /// the new rules as a diff (unchanged services keep their connections).
    fn apply_services(&mut self) {
        let k = self.config.keepalived.clone();
        if let Some(old) = self.health.take() {
            old.stop(false);
        }
        self.start_health();
        let verdicts = self.verdicts.borrow().clone();
        match (&self.l4, k.as_ref()) {
            (Some(rt), Some(k)) => rt.handle().set_rules(k, verdicts),
            (None, Some(k)) if self.options.forwarding => match l4::start(
                k,
                verdicts,
                self.options.bpf_dir.clone(),
                self.options.max_connections,
                false,
            ) {
                Ok(rt) => self.l4 = rt,
                Err(e) => error!("cannot start the layer-4 data plane: {e:#}"),
            },
            (Some(rt), None) => rt.handle().set_rules(&Default::default(), verdicts),
            _ => {}
        }
        info!("virtual servers applied");
    }

    /// VRRP changed: applied in place (unchanged instances keep their state).
    async fn apply_vrrp(&mut self) {
        let k = self.config.keepalived.clone().unwrap_or_default();
        match &self.vrrp {
            Some(rt) => match rt.handle().reload(&k).await {
                Ok(()) => info!("VRRP configuration applied"),
                Err(e) => error!("VRRP configuration not applied, the instances run on: {e}"),
            },
            None if !k.vrrp_instances.is_empty() => {
                let l4 = self.l4.as_ref().map(l4::Runtime::handle);
                match vrrp::start(&k, l4, self.events.clone()).await {
                    Ok(rt) => self.vrrp = Some(rt),
                    Err(e) => error!("cannot start VRRP: {e:#}"),
                }
            }
            None => {}
        }
    }

    /// Starts the health checks of the configuration in force; without any, the verdicts
    /// are empty (configured weights stand, sorry servers stay out).
    fn start_health(&mut self) {
        let k = self.config.keepalived.as_ref();
        self.health =
            k.and_then(|k| health::start(k, Arc::clone(&self.verdicts), self.events.clone()));
        if self.health.is_none() {
            self.verdicts.send_replace(Verdicts::default());
        }
    }

    /// Starts, reloads or stops the proxy (off the runtime's threads: starting workers
    /// and talking to them blocks).
    async fn apply_proxy(&mut self, config: &Config) -> Result<(), String> {
        let http = config.nginx.as_ref().filter(|n| n.http.is_some());
        match (http, &self.proxy) {
            (Some(n), Some(p)) => {
                if config.nginx != self.config.nginx {
                    let (p, launch, n) = (Arc::clone(p), self.launch(), n.clone());
                    blocking(move || p.reload(&launch, &n)).await?;
                    info!("layer-7 configuration applied");
                }
            }
            (Some(n), None) => {
                let (launch, n) = (self.launch(), n.clone());
                let proxy = blocking(move || Proxy::start(&launch, &n)).await?;
                self.proxy = Some(Arc::new(proxy));
                // Its peers follow the health checks from the start.
                self.verdicts.send_modify(|_| {});
            }
            (None, Some(_)) => {
                self.stop_proxy().await;
                info!("layer-7 proxy stopped: no http block any more");
            }
            (None, None) => {}
        }
        Ok(())
    }

    /// How a proxy starts here: in a worker process when the daemon gave a program and
    /// the configuration came from an nginx.conf.
    fn launch(&self) -> Launch {
        Launch {
            program: self.options.proxy_worker.clone(),
            source: self
                .sources
                .nginx
                .as_ref()
                .map(|conf| fulcrum_workers::Source {
                    conf: conf.clone(),
                    globals: self.sources.nginx_globals.clone(),
                }),
        }
    }

    async fn stop_proxy(&mut self) {
        if let Some(p) = self.proxy.take() {
            if let Ok(p) = Arc::try_unwrap(p) {
                let _ = tokio::task::spawn_blocking(move || p.stop()).await;
            }
        }
    }

    async fn shut_down(&mut self) {
        // BGP first: the router moves the flows to the other directors while this one
        // still forwards. (Only once its task runs: a start that fails stops before.)
        if self.bgp.stopping.receiver_count() > 0 {
            let mut done = self.bgp.done.subscribe();
            self.bgp.stopping.send_replace(true);
            let wait = done.wait_for(|d| *d);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), wait).await;
        }
        if let Some(rt) = self.vrrp.take() {
            rt.stop().await;
        }
        if let Some(rt) = self.l4.take() {
            rt.stop(!self.options.keep_forwarding);
        }
        if let Some(rt) = self.health.take() {
            rt.stop(true);
        }
        self.stop_proxy().await;
    }

    fn status(&self) -> status::Daemon {
        let k = self.config.keepalived.as_ref();
        let n = self.config.nginx.as_ref().and_then(|n| n.http.as_ref());
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        status::Daemon {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started_at: self.started_at,
            config: status::ConfigState {
                keepalived: path(&self.sources.keepalived),
                nginx: path(&self.sources.nginx),
                hash: format!("{:016x}", self.config.hash),
                loaded_at: self.loaded_at,
                reloads_ok: self.reloads_ok,
                reloads_failed: self.reloads_failed,
                last_reload_error: self.last_reload_error.clone(),
            },
            counts: status::Counts {
                vrrp_instances: k.map_or(0, |k| k.vrrp_instances.len()),
                virtual_servers: k.map_or(0, |k| k.virtual_servers.len()),
                real_servers: k.map_or(0, |k| {
                    k.virtual_servers.iter().map(|v| v.real_servers.len()).sum()
                }),
                upstreams: n.map_or(0, |n| n.upstreams.len()),
                servers: n.map_or(0, |n| n.servers.len()),
            },
        }
    }
}

/// What `ctl upstreams` shows: every peer of every upstream.
fn upstreams(proxy: Option<&Proxy>) -> Vec<status::UpstreamPeer> {
    let Some(p) = proxy else {
        return Vec::new();
    };
    p.peers()
        .into_iter()
        .map(|v| status::UpstreamPeer {
            upstream: v.upstream,
            server: v.server,
            address: v.addr.to_string(),
            backup: v.backup,
            weight: v.weight,
            effective_weight: v.effective_weight,
            down: v.down,
            check_down: v.check_down,
            drained: v.drained,
            conns: v.conns,
            fails: v.fails,
            max_fails: v.max_fails,
        })
        .collect()
}

async fn vrrp_status(h: Option<vrrp::Handle>) -> Vec<status::VrrpInstance> {
    match h {
        Some(h) => h.status().await,
        None => Vec::new(),
    }
}

fn health_status(h: Option<health::Handle>) -> Vec<status::ServiceHealth> {
    h.map(|h| h.status()).unwrap_or_default()
}

/// The layer-4 table (read off the BPF maps on a blocking thread).
async fn listing(
    h: Option<l4::Handle>,
    table_size: u32,
    connections: bool,
) -> Result<status::Listing, CommandError> {
    match h {
        Some(h) => tokio::task::spawn_blocking(move || h.listing(connections))
            .await
            .map_err(|e| CommandError(format!("listing failed: {e}"))),
        None => Ok(l4::empty_listing(table_size)),
    }
}

/// Applies the health checks' verdicts as they change: to the data plane's weights, and
/// to the proxy's upstream peers at the same addresses (an extension: nginx's open-source
/// edition has no active checks).
async fn follow_health(inner: Arc<Mutex<Inner>>, mut verdicts: watch::Receiver<Verdicts>) {
    // What the proxy was last told, by address.
    let mut told: BTreeMap<SocketAddr, bool> = BTreeMap::new();
    let mut proxy_of_told: Option<Arc<Proxy>> = None;
    loop {
        let now = verdicts.borrow_and_update().clone();
        let (handles, events) = {
            let inner = inner.lock().await;
            (inner.handles(), inner.events.clone())
        };
        if let Some(l4) = handles.l4 {
            let v = now.clone();
            let _ = tokio::task::spawn_blocking(move || l4.set_verdicts(v)).await;
        }
        match handles.proxy {
            Some(p) => {
                // A new proxy starts with every peer in rotation.
                if !proxy_of_told.as_ref().is_some_and(|o| Arc::ptr_eq(o, &p)) {
                    told.clear();
                    proxy_of_told = Some(Arc::clone(&p));
                }
                for (addr, alive) in now.alive() {
                    let before = told.insert(*addr, *alive);
                    if before == Some(*alive) {
                        continue;
                    }
                    // Telling the workers blocks: off the runtime's threads.
                    let announce = before.is_some() || !alive;
                    let (q, a, down) = (Arc::clone(&p), *addr, !alive);
                    let told_now = tokio::task::spawn_blocking(move || {
                        (q.set_check_down(a, down) && announce).then(|| q.peers())
                    })
                    .await
                    .ok()
                    .flatten();
                    if let Some(peers) = told_now {
                        info!(peer = %addr, "upstream peer {} by its health check", if *alive { "back in rotation" } else { "out of rotation" });
                        for v in peers.into_iter().filter(|v| v.addr == *addr) {
                            events.send(Event::UpstreamPeer {
                                upstream: v.upstream,
                                peer: addr.to_string(),
                                in_rotation: *alive,
                            });
                        }
                    }
                }
                // No longer checked (a reload): back to passive health alone.
                told.retain(|addr, _| {
                    let kept = now.alive().contains_key(addr);
                    if !kept {
                        p.set_check_down(*addr, false);
                    }
                    kept
                });
            }
            None => {
                told.clear();
                proxy_of_told = None;
            }
        }
        if verdicts.changed().await.is_err() {
            return;
        }
    }
}

/// Runs what blocks (starting worker processes, their channel) off the runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("the proxy's task failed: {e}")))
}

/// Runs the BGP announcements: every half second (or at once on a drain or a stop), the
/// node's state decides what BIRD announces. A stop withdraws everything and says so.
async fn follow_bgp(inner: Arc<Mutex<Inner>>, control: bgp::Control) {
    let mut rt: Option<bgp::Runtime> = None;
    let mut drain = control.drain.subscribe();
    let mut stopping = control.stopping.subscribe();
    loop {
        let stop = *stopping.borrow_and_update();
        if stop {
            if let Some(rt) = rt.as_mut() {
                rt.withdraw_all().await;
                control.status.send_replace(Some(rt.status()));
            }
            control.done.send_replace(true);
            return;
        }
        // The node's lock is held by a stop while it waits for this task: never wait on
        // it for long.
        let got = tokio::time::timeout(std::time::Duration::from_millis(200), async {
            let i = inner.lock().await;
            (i.config.keepalived.clone(), i.handles())
        })
        .await;
        if let Ok((k, handles)) = got {
            let block = k.as_ref().and_then(|k| k.bgp.clone());
            match (&block, rt.as_mut()) {
                (None, Some(_)) => {
                    if let Some(mut old) = rt.take() {
                        old.withdraw_all().await;
                    }
                    control.status.send_replace(None);
                }
                (Some(b), Some(r)) if r.block() != b => {
                    if r.block().liveness() == b.liveness() {
                        r.update(b);
                    } else {
                        rt = Some(bgp::Runtime::new(b));
                    }
                }
                (Some(b), None) => rt = Some(bgp::Runtime::new(b)),
                _ => {}
            }
            if let (Some(r), Some(k), Some(b)) = (rt.as_mut(), k.as_ref(), block.as_ref()) {
                let listing = match handles.l4 {
                    Some(l4) => tokio::task::spawn_blocking(move || l4.listing(false))
                        .await
                        .ok(),
                    None => None,
                };
                let health = health_status(handles.health);
                let vips = bgp::vips(k, b);
                let inputs = bgp::inputs(&vips, listing.as_ref(), &health, false);
                let draining = *drain.borrow_and_update();
                r.step(std::time::Instant::now(), &inputs, draining).await;
                control.status.send_replace(Some(r.status()));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            _ = drain.changed() => {}
            _ = stopping.changed() => {}
        }
    }
}
