//! `fulcrum run`: the daemon's shell around [`fulcrum_node::Node`]. It owns signals, the
//! control socket's server, the metrics listener and systemd's readiness; the work itself
//! is the node's.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use fulcrum_node::{Command, Node, Options, Sources};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::control::{Request, Response, PROTOCOL_VERSION};
use crate::keepalived::Dump;

/// What `fulcrum run` loads when given neither -f nor -c (each file if it exists).
pub const DEFAULT_KEEPALIVED_CONF: &str = "/etc/keepalived/keepalived.conf";
pub const DEFAULT_NGINX_CONF: &str = "/etc/nginx/nginx.conf";
use crate::RunArgs;

/// How long a graceful stop (SIGQUIT) waits for the requests in flight: nginx waits
/// for them without a bound; a SIGTERM meanwhile cuts it short.
const QUIT_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// This binary as the proxy's worker program, with the daemon's logging options.
fn worker_program(args: &RunArgs, background: bool) -> Option<fulcrum_workers::Program> {
    // The running binary itself, even once a package upgrade replaced the file at its
    // path: a worker must speak this daemon's protocol (a new binary runs by USR2).
    let proc_exe = PathBuf::from("/proc/self/exe");
    let path = match proc_exe.exists() {
        true => proc_exe,
        false => match std::env::current_exe() {
            Ok(p) => p,
            Err(e) => {
                warn!("the layer-7 proxy runs in this process: cannot find this program ({e})");
                return None;
            }
        },
    };
    let mut worker = vec![
        "--log-level".to_string(),
        args.log_level.clone(),
        "--log-format".to_string(),
        value_name(args.log_format),
        "--log-target".to_string(),
        value_name(args.log_target),
        "--log-facility".to_string(),
        args.log_facility.to_string(),
    ];
    if let Some(f) = &args.log_file {
        worker.push("--log-file".to_string());
        worker.push(f.display().to_string());
    }
    Some(fulcrum_workers::Program {
        path,
        args: worker,
        stderr: !background,
    })
}

/// An option's value as the command line spells it.
fn value_name(v: impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    match &args.log_file {
        Some(f) => crate::logging::init_file(&args.log_level, f)?,
        None => crate::logging::init(
            &args.log_level,
            args.log_format,
            args.log_target,
            args.log_facility,
        )?,
    }
    for w in &args.warnings {
        warn!("{w}");
    }
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

    // Without -f and -c: the files of the packages fulcrum stands in for, each if present.
    let (keepalived, nginx) = match (&args.config.keepalived, &args.config.nginx) {
        (None, None) => {
            let present = |p: &str| Some(PathBuf::from(p)).filter(|p| p.is_file());
            (
                present(DEFAULT_KEEPALIVED_CONF),
                present(DEFAULT_NGINX_CONF),
            )
        }
        (k, n) => (k.clone(), n.clone()),
    };
    let mut sources = Sources::new(
        keepalived,
        nginx,
        args.config.config_id.clone(),
        true,
        args.keepalived.as_ref().is_some_and(|k| k.strict),
    );
    if let Some(k) = &args.keepalived {
        sources.subsystems = k.subsystems;
    }
    sources.nginx_globals = args.nginx_globals.clone();
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
    if config.keepalived.is_none() && config.nginx.is_none() {
        info!("no configuration file: running for ipvsadm alone (its first edit starts the layer-4 data plane)");
    }
    // keepalived's -d.
    if args.keepalived.as_ref().is_some_and(|k| k.dump_conf) {
        if let Some(conf) = &config.keepalived {
            info!(
                "configuration as understood:\n{}",
                fulcrum_keepalived_conf::print(conf)
            );
        }
    }
    // keepalived without -n, nginx with `daemon on`: into the background. The
    // configuration was read and found valid first, and the caller waits until the
    // sockets are bound and the pid files written, so its exit code says how the start
    // went. No thread runs yet: the runtime starts in the child.
    let background = args.keepalived.as_ref().is_some_and(|k| k.fork)
        || args.nginx.as_ref().is_some_and(|n| n.daemon);
    let started = if background {
        Some(fulcrum_sys::background().context("cannot fork into the background")?)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let max_connections = args.max_connections.unwrap_or_else(|| {
        let memory = fulcrum_node::host_facts::memory_total();
        let n = fulcrum_node::l4::default_connections(memory);
        info!(
            connections = n,
            mib = fulcrum_node::l4::table_bytes(n) >> 20,
            memory_mib = memory.unwrap_or(0) >> 20,
            "connection table sized from the machine's memory (--max-connections to choose)"
        );
        n
    });
    let options = Options {
        forwarding: !args.no_forwarding,
        bpf_dir: args.bpf_dir.clone(),
        keep_forwarding: args.keep_forwarding,
        max_connections,
        proxy_worker: worker_program(&args, background),
    };
    runtime.block_on(serve(&args, sources, config, options, started))
}

/// The control socket this process bound, removed at exit only while it is still this
/// one (a new binary took the path over meanwhile).
struct Control {
    path: PathBuf,
    inode: u64,
}

impl Control {
    fn remove(&self) {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds the control socket: mode 0600 in a directory we create 0700, refusing to steal
/// the socket of a daemon that is still running unless `take_over` (a new binary
/// started by that daemon's USR2).
fn bind_control(path: &Path, take_over: bool) -> anyhow::Result<(UnixListener, Control)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    if path.exists() {
        if !take_over && std::os::unix::net::UnixStream::connect(path).is_ok() {
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
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path)?);
    Ok((
        listener,
        Control {
            path: path.to_path_buf(),
            inode,
        },
    ))
}

/// nginx's USR2: the pid file becomes `PID.oldbin`, and this program (the file at the
/// path it was started from) runs again with the same arguments and the proxy's
/// listening sockets, named in `NGINX`. It stays this process's child until this one
/// exits.
async fn upgrade(node: &Node, n: &crate::nginx::AsNginx) -> anyhow::Result<tokio::process::Child> {
    let sockets = node
        .proxy_listening_sockets()
        .await
        .map_err(anyhow::Error::msg)?;
    let fds: Vec<i32> = sockets
        .iter()
        .map(std::os::fd::AsRawFd::as_raw_fd)
        .collect();
    let value: String = fds.iter().map(|fd| format!("{fd};")).collect();
    let old = n.old_pid_file();
    std::fs::rename(&n.pid_file, &old).with_context(|| {
        format!(
            "rename() {} to {} failed",
            n.pid_file.display(),
            old.display()
        )
    })?;
    let mut cmd = std::process::Command::new(&n.program);
    std::os::unix::process::CommandExt::arg0(
        &mut cmd,
        std::env::args_os()
            .next()
            .unwrap_or_else(|| n.program.clone().into()),
    );
    cmd.args(&n.argv).env(crate::nginx::INHERIT_VAR, &value);
    fulcrum_sys::keep_on_exec(&mut cmd, fds);
    let spawned = tokio::process::Command::from(cmd).spawn();
    // The child has its copies; ours close here.
    drop(sockets);
    match spawned {
        Ok(child) => {
            info!(
                pid = child.id(),
                program = %n.program.display(),
                "SIGUSR2: new binary started on the listening sockets ({value})"
            );
            Ok(child)
        }
        Err(e) => {
            let _ = std::fs::rename(&old, &n.pid_file);
            Err(anyhow::anyhow!(
                "execve() failed while executing new binary process \"{}\" ({e})",
                n.program.display()
            ))
        }
    }
}

/// The new binary's exit (pending while there is none).
async fn new_binary_exit(child: &mut Option<tokio::process::Child>) -> String {
    match child {
        Some(c) => match c.wait().await {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        },
        None => std::future::pending().await,
    }
}

async fn serve(
    args: &RunArgs,
    sources: Sources,
    config: fulcrum_node::Config,
    options: Options,
    started: Option<fulcrum_sys::Started>,
) -> anyhow::Result<ExitCode> {
    // Signals first: a SIGTERM while the rest starts (VRRP may already hold its VIPs) must
    // still stop cleanly, not kill the process.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    // nginx's graceful stop, and its binary-upgrade signals.
    let mut quit = signal(SignalKind::quit())?;
    let mut winch = signal(SignalKind::window_change())?;
    // keepalived's STATS, JSON and STATS_CLEAR signals, caught whatever the command line
    // (a real-time signal's default action would end the process).
    let as_keepalived = args.keepalived.clone();
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut rt_json = signal(SignalKind::from_raw(36))?;
    let mut rt_clear = signal(SignalKind::from_raw(63))?;
    let inherited = args.nginx.as_ref().is_some_and(|n| n.inherited);
    let (listener, control) = bind_control(&args.control, inherited)?;
    let metrics_at = args.metrics.or_else(|| {
        config
            .keepalived
            .as_ref()
            .and_then(|k| k.global_defs.metrics)
    });
    // The metrics listener's users, read before anything starts.
    let auth = match args
        .metrics_htpasswd
        .as_deref()
        .map(crate::metrics::Auth::load)
    {
        None => None,
        Some(Ok(a)) => Some(Arc::new(a)),
        Some(Err(e)) => {
            control.remove();
            return Err(e);
        }
    };
    let node = match Node::start(sources, config, options).await {
        Ok(node) => Arc::new(node),
        Err(e) => {
            control.remove();
            return Err(e);
        }
    };
    for unused in fulcrum_proxy::close_inherited() {
        info!(listen = %unused, "inherited listening socket not in the configuration: closed");
    }
    info!(
        control = %control.path.display(),
        hash = format!("{:016x}", node.config().await.hash),
        "fulcrum started"
    );
    if let Some(addr) = metrics_at {
        if let Err(e) = crate::metrics::serve(addr, Arc::clone(&node), auth).await {
            node.stop().await;
            control.remove();
            return Err(e);
        }
    }
    // keepalived's pid files, or nginx's, written once the listening sockets are bound.
    let mut pid_files = match (&as_keepalived, &args.nginx) {
        (Some(k), _) => k.pid_files.clone(),
        (None, Some(n)) => vec![n.pid_file.clone()],
        (None, None) => Vec::new(),
    };
    if let Err(e) = crate::keepalived::write_pid_files(&pid_files) {
        node.stop().await;
        control.remove();
        return Err(e);
    }
    // Everything is bound and running: systemd may order what depends on us.
    crate::sd_notify::notify("READY=1");
    if let Some(s) = started {
        s.ready();
    }
    let mut graceful = false;
    // nginx's binary upgrade: the new binary while it runs, and whether WINCH stopped
    // this master's workers.
    let mut new_binary: Option<tokio::process::Child> = None;
    let mut paused = false;
    // WatchdogSec=: fed from this loop only when the node answers, so a node that hangs
    // (its state locked for good) is restarted by systemd.
    let watchdog = crate::sd_notify::watchdog_interval();
    let mut feed = tokio::time::interval(watchdog.unwrap_or(std::time::Duration::from_secs(3600)));
    loop {
        tokio::select! {
            _ = feed.tick(), if watchdog.is_some() => {
                let half = watchdog.unwrap_or_default();
                match tokio::time::timeout(half, node.status()).await {
                    Ok(_) => crate::sd_notify::notify("WATCHDOG=1"),
                    Err(_) => warn!("the node did not answer within {half:?}: not feeding the watchdog"),
                }
            }
            _ = hup.recv() => if paused {
                // nginx after WINCH: the workers again, the configuration not read again.
                info!("SIGHUP: starting the worker processes again, without reading the configuration");
                match node.resume_proxy().await {
                    Ok(_) => paused = false,
                    Err(e) => error!("the worker processes did not start: {e}"),
                }
            } else {
                info!("SIGHUP: reloading configuration");
                crate::sd_notify::reloading();
                let _ = node.reload().await;
                crate::sd_notify::notify("READY=1");
            },
            _ = usr1.recv() => match &as_keepalived {
                Some(_) => dump(&node, Dump::Data).await,
                None => node.reopen_logs().await,
            },
            _ = usr2.recv() => match (&as_keepalived, &args.nginx) {
                (Some(_), _) => dump(&node, Dump::Stats).await,
                (None, Some(_)) if new_binary.is_some() => warn!(
                    "SIGUSR2 ignored: a new binary runs already; stop either the old or the new one first"
                ),
                (None, Some(n)) => match upgrade(&node, n).await {
                    Ok(child) => {
                        new_binary = Some(child);
                        pid_files = vec![n.old_pid_file()];
                    }
                    Err(e) => error!("SIGUSR2: {e:#}"),
                },
                (None, None) => warn!("SIGUSR2 ignored: the binary upgrade is nginx's (run as `nginx` or `fulcrum nginx`)"),
            },
            _ = winch.recv() => if args.nginx.as_ref().is_some_and(|n| n.daemonized()) {
                info!("SIGWINCH: gracefully shutting down the worker processes; the listening sockets stay open");
                node.pause_proxy().await;
                paused = true;
            },
            how = new_binary_exit(&mut new_binary), if new_binary.is_some() => {
                new_binary = None;
                if let Some(n) = &args.nginx {
                    warn!("the new binary exited ({how}): {} is this process's again", n.pid_file.display());
                    if let Err(e) = std::fs::rename(n.old_pid_file(), &n.pid_file) {
                        error!("rename() {} back failed ({e})", n.old_pid_file().display());
                    }
                    pid_files = vec![n.pid_file.clone()];
                }
                if paused {
                    match node.resume_proxy().await {
                        Ok(_) => paused = false,
                        Err(e) => error!("the worker processes did not start: {e}"),
                    }
                }
            }
            _ = quit.recv() => { info!("SIGQUIT: stopping gracefully"); graceful = true; break; }
            _ = rt_json.recv() => dump(&node, Dump::Json).await,
            _ = rt_clear.recv() => warn!("STATS_CLEAR: clearing the statistics is not implemented; ignored"),
            _ = term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { info!("SIGINT: stopping"); break; }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let node = Arc::clone(&node);
                    tokio::spawn(async move {
                        if let Err(e) = client(stream, node).await {
                            warn!("control client: {e:#}");
                        }
                    });
                }
                Err(e) => warn!("control socket accept: {e}"),
            },
        }
    }
    crate::sd_notify::notify("STOPPING=1");
    if graceful {
        // A SIGTERM or SIGINT meanwhile cuts the wait short, as in nginx.
        let hurry = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let quitting = node.quit(QUIT_GRACE, Arc::clone(&hurry));
        tokio::pin!(quitting);
        loop {
            tokio::select! {
                () = &mut quitting => break,
                _ = term.recv() => hurry.store(true, std::sync::atomic::Ordering::Relaxed),
                _ = int.recv() => hurry.store(true, std::sync::atomic::Ordering::Relaxed),
            }
        }
    }
    node.stop().await;
    control.remove();
    crate::keepalived::remove_pid_files(&pid_files);
    info!("fulcrum stopped");
    Ok(ExitCode::SUCCESS)
}

/// Writes one of keepalived's dumps from the node's status.
async fn dump(node: &Node, which: Dump) {
    let status = node.status().await;
    let vrrp = match node.command(Command::Vrrp).await {
        Ok(fulcrum_node::Reply::Vrrp(v)) => v,
        _ => Vec::new(),
    };
    let text = match which {
        Dump::Data => crate::keepalived::data_dump(&status, &vrrp),
        Dump::Stats => crate::keepalived::stats_dump(&vrrp),
        Dump::Json => crate::keepalived::json_dump(&vrrp).to_string(),
    };
    crate::keepalived::write_dump(which, &text);
}

/// The node's command for a control request.
fn command(r: Request) -> Result<Command, String> {
    let first = || {
        r.args
            .first()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_default()
    };
    Ok(match r.command.as_str() {
        "status" => Command::Status,
        "reload" => Command::Reload,
        "vrrp" => Command::Vrrp,
        "health" => Command::Health,
        "upstreams" => Command::Upstreams,
        "ipvs" => Command::Ipvs {
            connections: r.args.iter().flatten().any(|a| a == "connections"),
        },
        "ipvsadm" => Command::Ipvsadm(r.args),
        "drain" => Command::Drain { target: first(), on: true },
        "undrain" => Command::Drain { target: first(), on: false },
        "bgp" => Command::Bgp,
        "drain-director" => Command::DrainDirector { on: true },
        "undrain-director" => Command::DrainDirector { on: false },
        other => {
            return Err(format!(
                "unknown command '{other}'; commands: status, reload, vrrp, health, upstreams, drain, undrain, ipvs, ipvsadm, bgp, drain-director, undrain-director"
            ))
        }
    })
}

/// Answers requests on one control connection until the client closes it.
async fn client(stream: UnixStream, node: Arc<Node>) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let refused = match serde_json::from_str::<Request>(&line) {
            Err(e) => format!("malformed request: {e}"),
            Ok(r) if r.version != PROTOCOL_VERSION => format!(
                "protocol version {} is not supported; this daemon speaks {PROTOCOL_VERSION}",
                r.version
            ),
            Ok(r) => match command(r) {
                Err(e) => e,
                Ok(c) => match node.command(c).await {
                    // The typed reply is written as it is: a listing of thousands of
                    // servers never becomes a tree of JSON values first.
                    Ok(reply) => {
                        let mut out =
                            format!("{{\"version\":{PROTOCOL_VERSION},\"ok\":true,\"result\":");
                        out.push_str(&serde_json::to_string(&reply)?);
                        out.push_str("}\n");
                        write.write_all(out.as_bytes()).await?;
                        continue;
                    }
                    Err(e) => e.0,
                },
            },
        };
        let mut out = serde_json::to_string(&Response::error(refused))?;
        out.push('\n');
        write.write_all(out.as_bytes()).await?;
    }
    Ok(())
}
