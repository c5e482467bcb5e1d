//! `fulcrum run`: the daemon's shell. It owns the clock, signals and the control socket;
//! the work itself lives in the crates it drives.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Mutex;
use tracing::{error, info, warn};

use crate::config::{Config, Sources};
use crate::control::{Request, Response, PROTOCOL_VERSION};
use crate::RunArgs;

/// What the daemon runs now, and how it got there.
#[derive(Debug)]
pub(crate) struct State {
    sources: Sources,
    config: Config,
    loaded_at: u64,
    started_at: u64,
    reloads_ok: u64,
    reloads_failed: u64,
    last_reload_error: Option<String>,
    /// Told when a reload changes the virtual servers, for serve() to apply them.
    services_changed: Option<tokio::sync::mpsc::UnboundedSender<()>>,
    /// Told when a reload changes VRRP (instances, scripts, globals), for serve() to apply.
    vrrp_changed: Option<tokio::sync::mpsc::UnboundedSender<()>>,
    /// The layer-7 proxy, while the nginx.conf has an http block.
    proxy: Option<Arc<fulcrum_proxy::Runtime>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl State {
    /// Loads the configuration again; a configuration that fails validation is refused
    /// and the running one stays.
    fn reload(&mut self) -> Result<(), String> {
        let (config, report) = self.sources.load();
        match config {
            Some(config) => {
                if !report.text.is_empty() {
                    warn!("configuration warnings:\n{}", report.text.trim_end());
                }
                let changed = config.hash != self.config.hash;
                let vrrp_of = |c: &Config| {
                    c.keepalived
                        .as_ref()
                        .map(|k| (k.global_defs.clone(), k.vrrp_instances.clone()))
                };
                let vrrp_changed = vrrp_of(&config) != vrrp_of(&self.config);
                let services_of =
                    |c: &Config| c.keepalived.as_ref().map(|k| k.virtual_servers.clone());
                let services_changed = services_of(&config) != services_of(&self.config);
                // The proxy takes its part first: a configuration it cannot serve (a
                // listen address it cannot bind, a bad regex) is refused as a whole.
                if let Err(e) = self.reload_proxy(&config) {
                    self.reloads_failed += 1;
                    let text = format!("layer-7 proxy: {e}; the running configuration stays");
                    error!("reload refused: {text}");
                    self.last_reload_error = Some(text.clone());
                    return Err(text);
                }
                self.config = config;
                self.loaded_at = unix_now();
                self.reloads_ok += 1;
                self.last_reload_error = None;
                info!(
                    hash = format!("{:016x}", self.config.hash),
                    changed, "configuration reloaded"
                );
                if services_changed {
                    if let Some(tx) = &self.services_changed {
                        let _ = tx.send(());
                    }
                }
                if vrrp_changed {
                    if let Some(tx) = &self.vrrp_changed {
                        let _ = tx.send(());
                    }
                }
                Ok(())
            }
            None => {
                self.reloads_failed += 1;
                let text = format!(
                    "{} error(s); the running configuration stays\n{}",
                    report.errors, report.text
                );
                error!("reload refused: {}", text.trim_end());
                self.last_reload_error = Some(text.clone());
                Err(text)
            }
        }
    }

    fn reload_proxy(&mut self, config: &Config) -> Result<(), String> {
        let http = config.nginx.as_ref().filter(|n| n.http.is_some());
        match (http, &self.proxy) {
            (Some(n), Some(p)) => {
                if config.nginx != self.config.nginx {
                    p.reload(n)?;
                    info!("layer-7 configuration applied");
                }
            }
            (Some(n), None) => self.proxy = Some(Arc::new(fulcrum_proxy::Runtime::start(n)?)),
            (None, Some(_)) => {
                if let Some(p) = self.proxy.take() {
                    if let Ok(p) = Arc::try_unwrap(p) {
                        p.stop();
                    }
                }
                info!("layer-7 proxy stopped: no http block any more");
            }
            (None, None) => {}
        }
        Ok(())
    }

    pub(crate) fn proxy_stats(&self) -> Option<fulcrum_proxy::stats::Counts> {
        self.proxy.as_ref().map(|p| p.stats())
    }

    pub(crate) fn upstreams(&self) -> serde_json::Value {
        let Some(p) = &self.proxy else {
            return json!([]);
        };
        serde_json::Value::Array(
            p.peers()
                .into_iter()
                .map(|v| {
                    json!({
                        "upstream": v.upstream,
                        "server": v.server,
                        "address": v.addr.to_string(),
                        "backup": v.backup,
                        "weight": v.weight,
                        "effective_weight": v.effective_weight,
                        "down": v.down,
                        "check_down": v.check_down,
                        "drained": v.drained,
                        "conns": v.conns,
                        "fails": v.fails,
                        "max_fails": v.max_fails,
                    })
                })
                .collect(),
        )
    }

    pub(crate) fn status(&self) -> serde_json::Value {
        let k = self.config.keepalived.as_ref();
        let n = self.config.nginx.as_ref().and_then(|n| n.http.as_ref());
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "started_at": self.started_at,
            "config": {
                "keepalived": self.sources.keepalived.as_ref().map(|p| p.display().to_string()),
                "nginx": self.sources.nginx.as_ref().map(|p| p.display().to_string()),
                "hash": format!("{:016x}", self.config.hash),
                "loaded_at": self.loaded_at,
                "reloads_ok": self.reloads_ok,
                "reloads_failed": self.reloads_failed,
                "last_reload_error": self.last_reload_error,
            },
            "counts": {
                "vrrp_instances": k.map_or(0, |k| k.vrrp_instances.len()),
                "virtual_servers": k.map_or(0, |k| k.virtual_servers.len()),
                "real_servers": k.map_or(0, |k| k.virtual_servers.iter().map(|v| v.real_servers.len()).sum::<usize>()),
                "upstreams": n.map_or(0, |n| n.upstreams.len()),
                "servers": n.map_or(0, |n| n.servers.len()),
            },
        })
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(&args.log_level, args.log_format, args.log_target)?;
    // What the daemon and its scripts may do, and nothing more: VRRP's raw sockets and
    // addresses, the XDP program and its pins, listening below 1024, running scripts as
    // script_user and killing them on timeout, reading any configuration file.
    {
        use fulcrum_sys::cap::*;
        let keep = [
            NET_ADMIN,
            NET_RAW,
            BPF,
            PERFMON,
            SYS_ADMIN,
            SYS_RESOURCE,
            IPC_LOCK,
            NET_BIND_SERVICE,
            SETUID,
            SETGID,
            KILL,
            DAC_OVERRIDE,
            DAC_READ_SEARCH,
            CHOWN,
            FOWNER,
        ];
        if let Err(e) = fulcrum_sys::keep_capabilities(&keep) {
            warn!("cannot drop unneeded capabilities: {e}");
        }
    }

    let sources = Sources::from_args(&args.config, true, false);
    let (config, report) = sources.load();
    let Some(config) = config else {
        eprint!("{}", report.text);
        bail!(
            "configuration is invalid ({} error(s)); not starting",
            report.errors
        );
    };
    if !report.text.is_empty() {
        warn!("configuration warnings:\n{}", report.text.trim_end());
    }
    let now = unix_now();
    let state = State {
        sources,
        config,
        loaded_at: now,
        started_at: now,
        reloads_ok: 0,
        reloads_failed: 0,
        last_reload_error: None,
        services_changed: None,
        vrrp_changed: None,
        proxy: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let forwarding = Forwarding {
        enabled: !args.no_forwarding,
        bpf_dir: args.bpf_dir,
        keep: args.keep_forwarding,
        max_connections: args.max_connections,
    };
    runtime.block_on(serve(args.control, state, forwarding, args.metrics))
}

/// Binds the control socket: mode 0600 in a directory we create 0700, refusing to steal
/// the socket of a daemon that is still running.
fn bind_control(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another fulcrum daemon is listening on {}; stop it or use --control",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot bind control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// How the layer-4 data plane runs.
#[derive(Debug)]
struct Forwarding {
    enabled: bool,
    bpf_dir: Option<PathBuf>,
    keep: bool,
    max_connections: u32,
}

async fn serve(
    control: PathBuf,
    state: State,
    forwarding: Forwarding,
    metrics: Option<std::net::SocketAddr>,
) -> anyhow::Result<ExitCode> {
    // Signals first: a SIGTERM while the rest starts (VRRP may already hold its VIPs) must
    // still stop cleanly, not kill the process.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let listener = bind_control(&control)?;
    let mut health = state
        .config
        .keepalived
        .as_ref()
        .and_then(crate::health::start);
    let mut health_handle = health.as_ref().map(crate::health::Runtime::handle);
    let l4 = match state
        .config
        .keepalived
        .as_ref()
        .filter(|_| forwarding.enabled)
    {
        Some(k) => match crate::l4::start(
            k,
            health_handle.clone(),
            forwarding.bpf_dir.clone(),
            forwarding.max_connections,
        ) {
            Ok(rt) => rt,
            Err(e) => {
                let _ = std::fs::remove_file(&control);
                return Err(e.context("cannot start the layer-4 data plane"));
            }
        },
        None => None,
    };
    let mut l4 = l4;
    let mut l4_handle = l4.as_ref().map(crate::l4::Runtime::handle);
    let mut state = state;
    // The proxy before VRRP: its listeners are bound when the VIPs arrive.
    let proxy_config = state.config.clone();
    if let Err(e) = state.reload_proxy(&proxy_config) {
        let _ = std::fs::remove_file(&control);
        return Err(anyhow::anyhow!("cannot start the layer-7 proxy: {e}"));
    }
    // VRRP last: a no_accept master asks the data plane to refuse its VIPs.
    let mut vrrp = match state.config.keepalived.as_ref() {
        Some(k) if !k.vrrp_instances.is_empty() => {
            match crate::vrrp::start(k, l4_handle.clone()).await {
                Ok(rt) => Some(rt),
                Err(e) => {
                    let _ = std::fs::remove_file(&control);
                    return Err(e.context("cannot start VRRP"));
                }
            }
        }
        _ => None,
    };
    let mut vrrp_handle = vrrp.as_ref().map(crate::vrrp::Runtime::handle);
    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    state.services_changed = Some(changed_tx);
    let (vrrp_tx, mut vrrp_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    state.vrrp_changed = Some(vrrp_tx);
    info!(
        control = %control.display(),
        hash = format!("{:016x}", state.config.hash),
        "fulcrum started"
    );
    let metrics_at = metrics.or_else(|| {
        state
            .config
            .keepalived
            .as_ref()
            .and_then(|k| k.global_defs.metrics)
    });
    let state = Arc::new(Mutex::new(state));
    let sources = crate::metrics::Sources {
        state: Arc::clone(&state),
        vrrp: Arc::new(std::sync::Mutex::new(vrrp_handle.clone())),
        health: Arc::new(std::sync::Mutex::new(health_handle.clone())),
        l4: Arc::new(std::sync::Mutex::new(l4_handle.clone())),
    };
    if let Some(addr) = metrics_at {
        if let Err(e) = crate::metrics::serve(addr, sources.clone()).await {
            let _ = std::fs::remove_file(&control);
            return Err(e);
        }
    }
    // Everything is bound and running: systemd may order what depends on us.
    crate::sd_notify::notify("READY=1");
    fn set<T>(cell: &std::sync::Mutex<Option<T>>, v: Option<T>) {
        *cell.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }
    // Health checks drive the proxy's upstream peers at the same addresses (an
    // extension: nginx's open-source edition has no active checks).
    let mut checked: std::collections::HashMap<std::net::SocketAddr, bool> = Default::default();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let Some(h) = &health_handle else { continue };
                let st = state.lock().await;
                let Some(p) = &st.proxy else { continue };
                let now = h.alive_by_address();
                for (addr, alive) in &now {
                    let before = checked.insert(*addr, *alive);
                    if before != Some(*alive)
                        && p.set_check_down(*addr, !alive)
                        && (before.is_some() || !alive)
                    {
                        info!(peer = %addr, "upstream peer {} by its health check", if *alive { "back in rotation" } else { "out of rotation" });
                    }
                }
                // No longer checked (a reload): back to passive health alone.
                checked.retain(|addr, _| {
                    let kept = now.iter().any(|(a, _)| a == addr);
                    if !kept {
                        p.set_check_down(*addr, false);
                    }
                    kept
                });
            }
            _ = hup.recv() => {
                info!("SIGHUP: reloading configuration");
                crate::sd_notify::reloading();
                let _ = state.lock().await.reload();
                crate::sd_notify::notify("READY=1");
            }
            Some(()) = changed_rx.recv() => {
                // virtual_server blocks changed: new health checks, and the data plane
                // brought to the new rules as a diff (unchanged services keep their
                // connections).
                let k = state.lock().await.config.keepalived.clone();
                if let Some(old) = health.take() {
                    old.stop(false);
                }
                health = k.as_ref().and_then(crate::health::start);
                health_handle = health.as_ref().map(crate::health::Runtime::handle);
                match (&l4, k.as_ref()) {
                    (Some(rt), Some(k)) => rt.handle().set_rules(k, health_handle.clone()),
                    (None, Some(k)) if forwarding.enabled => {
                        match crate::l4::start(
                            k,
                            health_handle.clone(),
                            forwarding.bpf_dir.clone(),
                            forwarding.max_connections,
                        ) {
                            Ok(rt) => l4 = rt,
                            Err(e) => error!("cannot start the layer-4 data plane: {e:#}"),
                        }
                    }
                    (Some(rt), None) => rt.handle().set_rules(&Default::default(), None),
                    _ => {}
                }
                l4_handle = l4.as_ref().map(crate::l4::Runtime::handle);
                set(&sources.health, health_handle.clone());
                set(&sources.l4, l4_handle.clone());
                info!("virtual servers applied");
            }
            Some(()) = vrrp_rx.recv() => {
                // VRRP changed: applied in place (unchanged instances keep their state).
                let k = state.lock().await.config.keepalived.clone().unwrap_or_default();
                match &vrrp_handle {
                    Some(h) => match h.reload(&k).await {
                        Ok(()) => info!("VRRP configuration applied"),
                        Err(e) => error!("VRRP configuration not applied, the instances run on: {e}"),
                    },
                    None if !k.vrrp_instances.is_empty() => match crate::vrrp::start(&k, l4_handle.clone()).await {
                        Ok(rt) => {
                            vrrp_handle = Some(rt.handle());
                            set(&sources.vrrp, vrrp_handle.clone());
                            vrrp = Some(rt);
                        }
                        Err(e) => error!("cannot start VRRP: {e:#}"),
                    },
                    None => {}
                }
            }
            _ = term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { info!("SIGINT: stopping"); break; }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let state = Arc::clone(&state);
                    let vrrp = vrrp_handle.clone();
                    let health = health_handle.clone();
                    let l4 = l4_handle.clone();
                    tokio::spawn(async move {
                        if let Err(e) = client(stream, state, vrrp, health, l4).await {
                            warn!("control client: {e:#}");
                        }
                    });
                }
                Err(e) => warn!("control socket accept: {e}"),
            },
        }
    }
    crate::sd_notify::notify("STOPPING=1");
    // VRRP first: priority 0 hands the VIPs over while this node still forwards.
    if let Some(rt) = vrrp {
        rt.stop().await;
    }
    if let Some(rt) = l4 {
        rt.stop(!forwarding.keep);
    }
    if let Some(rt) = health {
        rt.stop(true);
    }
    if let Some(p) = state.lock().await.proxy.take() {
        if let Ok(p) = Arc::try_unwrap(p) {
            p.stop();
        }
    }
    let _ = std::fs::remove_file(&control);
    info!("fulcrum stopped");
    Ok(ExitCode::SUCCESS)
}

/// Answers requests on one control connection until the client closes it.
async fn client(
    stream: UnixStream,
    state: Arc<Mutex<State>>,
    vrrp: Option<crate::vrrp::Handle>,
    health: Option<crate::health::Handle>,
    l4: Option<crate::l4::Handle>,
) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let response = match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::error(format!("malformed request: {e}")),
            Ok(r) if r.version != PROTOCOL_VERSION => Response::error(format!(
                "protocol version {} is not supported; this daemon speaks {PROTOCOL_VERSION}",
                r.version
            )),
            Ok(r) if r.command == "vrrp" => match &vrrp {
                Some(h) => Response::ok(h.status().await),
                None => Response::ok(serde_json::json!([])),
            },
            Ok(r) if r.command == "ipvs" => match &l4 {
                Some(h) => {
                    let h = h.clone();
                    let connections = r.args.iter().flatten().any(|a| a == "connections");
                    match tokio::task::spawn_blocking(move || h.listing(connections)).await {
                        Ok(v) => Response::ok(v),
                        Err(e) => Response::error(format!("listing failed: {e}")),
                    }
                }
                None => Response::ok(crate::l4::empty_listing()),
            },
            Ok(r) if r.command == "ipvsadm" => match &l4 {
                Some(h) => {
                    let h = h.clone();
                    let lines = r.args;
                    match tokio::task::spawn_blocking(move || h.edit(&lines)).await {
                        Ok(Ok(())) => Response::ok(serde_json::json!({})),
                        Ok(Err(e)) => Response::error(e),
                        Err(e) => Response::error(format!("edit failed: {e}")),
                    }
                }
                None => Response::error(
                    "the layer-4 data plane is not running (no virtual_server in the configuration, or --no-forwarding); nothing was changed",
                ),
            },
            Ok(r) if r.command == "drain" || r.command == "undrain" => {
                let on = r.command == "drain";
                let target = r.args.first().and_then(|a| a.first()).cloned().unwrap_or_default();
                let parsed = match target.parse::<std::net::SocketAddr>() {
                    Ok(sa) => Some((sa.ip(), Some(sa.port()))),
                    Err(_) => target.parse::<std::net::IpAddr>().ok().map(|ip| (ip, None)),
                };
                match parsed {
                    None => Response::error(format!("'{target}' is not ADDR or ADDR:PORT")),
                    Some((ip, port)) => {
                        let l4_count = match (&l4, ip) {
                            (Some(h), std::net::IpAddr::V4(v4)) => {
                                let h = h.clone();
                                tokio::task::spawn_blocking(move || h.set_drained(v4, port, on))
                                    .await
                                    .unwrap_or_else(|e| Err(e.to_string()))
                            }
                            _ => Ok(0),
                        };
                        let l7_count = state
                            .lock()
                            .await
                            .proxy
                            .as_ref()
                            .map_or(0, |p| p.set_drained(ip, port, on));
                        match l4_count {
                            Err(e) => Response::error(e),
                            Ok(0) if l7_count == 0 => Response::error(format!(
                                "no real server or upstream peer at {target}; nothing was changed"
                            )),
                            Ok(n) => {
                                info!(%target, "{}: {n} real server(s), {l7_count} upstream peer(s)", r.command);
                                Response::ok(serde_json::json!({"real_servers": n, "upstream_peers": l7_count}))
                            }
                        }
                    }
                }
            }
            Ok(r) if r.command == "health" => match &health {
                Some(h) => Response::ok(h.status()),
                None => Response::ok(serde_json::json!([])),
            },
            Ok(r) => {
                let mut st = state.lock().await;
                match r.command.as_str() {
                    "status" => Response::ok(st.status()),
                    "upstreams" => Response::ok(st.upstreams()),
                    "reload" => match st.reload() {
                        Ok(()) => Response::ok(st.status()),
                        Err(e) => Response::error(e),
                    },
                    other => Response::error(format!(
                        "unknown command '{other}'; commands: status, reload, vrrp, health, upstreams, drain, undrain, ipvs, ipvsadm"
                    )),
                }
            }
        };
        let mut out = serde_json::to_string(&response)?;
        out.push('\n');
        write.write_all(out.as_bytes()).await?;
    }
    Ok(())
}
