//! The layer-7 proxy in worker processes, as nginx runs its workers: the master (the
//! daemon, privileged) checks the configuration, binds the listening sockets and starts
//! `worker_processes` processes of `PROGRAM proxy-worker`; each loads the same
//! configuration, reads certificates and opens its log files, then becomes nginx's `user`
//! (www-data, else nobody) with no capabilities and no_new_privs before it reads a byte
//! from a client. The HTTP parser thus never runs in the process that holds CAP_NET_ADMIN
//! and CAP_BPF.
//!
//! The workers accept on the same listening sockets (with `reuseport`, each on its own)
//! and share what nginx keeps in shared memory: the limit_req and limit_conn zones and
//! stub_status's counters, in regions the master makes and passes down
//! ([`fulcrum_proxy::shm`]); a zone whose declaration a reload leaves unchanged keeps its
//! state, as nginx's does. The rest is each worker's own, as in nginx without `zone` in
//! its upstreams: balancer position, passive health, idle upstream connections.
//!
//! The master restarts a worker that dies (the listening sockets stay open in the master,
//! so connections wait in the backlog meanwhile, none refused); a reload starts new
//! workers on the new configuration and, once they serve, stops the old ones gracefully.
//! Health verdicts, drains, counters and the peers' state cross over each worker's control
//! channel ([`wire`]), so `ctl upstreams` and the metrics see one proxy.

mod wire;
pub mod worker;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fulcrum_nginx_conf::model::{LimitZone, Upstream, WorkerProcesses};
use fulcrum_nginx_conf::NginxConfig;
use fulcrum_proxy::stats::Counts;
use fulcrum_proxy::PeerView;
use fulcrum_sys::SharedMemory;
use tracing::{error, info, warn};

use wire::{FromWorker, Start, ToWorker};

/// How long a worker may take to start serving, and to answer a question.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A hash of the configuration's printed form: the worker checks it loaded what the
/// master checked.
pub fn printed(cfg: &NginxConfig) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    fulcrum_nginx_conf::print(cfg).hash(&mut h);
    h.finish()
}

/// The worker's program: run as `PATH proxy-worker ARGS...` (the `fulcrum` binary,
/// with the daemon's logging options).
#[derive(Debug, Clone)]
pub struct Program {
    pub path: PathBuf,
    pub args: Vec<String>,
    /// Whether the worker shares the daemon's standard error (its log's target in the
    /// foreground); a daemon in the background gives it none, so that nothing waiting
    /// for the daemon's output to end (the command that started it) waits for the worker.
    pub stderr: bool,
}

/// Where the worker's configuration comes from: the nginx.conf and nginx's `-g`.
#[derive(Debug, Clone)]
pub struct Source {
    pub conf: PathBuf,
    pub globals: Option<String>,
}

/// A region of shared memory the workers are given, as nginx's shared zones.
#[derive(Debug, Clone, PartialEq)]
enum Zone {
    /// A limit_req_zone or limit_conn_zone.
    Limit(LimitZone),
    /// An upstream's `zone`: its balancer state, of this length.
    Upstream(Upstream, usize),
}

impl Zone {
    /// The name the worker finds it by.
    fn name(&self) -> String {
        match self {
            Zone::Limit(z) => z.name.clone(),
            Zone::Upstream(u, _) => fulcrum_proxy::shm::upstream_zone_name(&u.name),
        }
    }

    fn region(&self) -> std::io::Result<SharedMemory> {
        match self {
            Zone::Limit(z) => fulcrum_proxy::shm::zone_region(z),
            Zone::Upstream(u, len) => fulcrum_proxy::shm::upstream_region(&u.name, *len),
        }
    }
}

/// How many workers may serve and drain at once: the slots of the counters' region.
const COUNTER_SLOTS: usize = 4096;

/// One configuration as workers start on it.
#[derive(Debug, Clone)]
struct Generation {
    source: Source,
    printed: u64,
    user: Option<(u32, u32)>,
    rlimit_nofile: Option<u64>,
    /// worker_processes.
    processes: usize,
    /// The shared zones it declares.
    zones: Vec<Zone>,
}

impl Generation {
    fn of(
        source: Source,
        cfg: &NginxConfig,
        site: &fulcrum_proxy::Site,
    ) -> Result<Generation, String> {
        Ok(Generation {
            source: absolute(source),
            printed: printed(cfg),
            user: user_of(cfg)?,
            rlimit_nofile: cfg.worker_rlimit_nofile,
            processes: match cfg.worker_processes {
                WorkerProcesses::Auto => {
                    std::thread::available_parallelism().map_or(1, |n| n.get())
                }
                WorkerProcesses::Count(n) => n as usize,
            }
            .max(1),
            zones: cfg
                .http
                .iter()
                .flat_map(|h| h.limit_zones.iter().cloned().map(Zone::Limit))
                .chain(
                    fulcrum_proxy::upstream_zones(site)
                        .into_iter()
                        .map(|(u, len)| Zone::Upstream(u, len)),
                )
                .collect(),
        })
    }
}

/// A worker process, seen from the master.
#[derive(Debug)]
struct Worker {
    pid: u32,
    /// Its number among the workers.
    index: usize,
    /// Its slot in the counters' region.
    slot: usize,
    chan: Mutex<UnixStream>,
    /// Its counts when last asked (what is kept of them if it dies).
    last: Mutex<Counts>,
    /// The log files it writes.
    logs: Vec<String>,
    /// Told to go (a reload or a stop): its exit is no failure.
    leaving: AtomicBool,
    started: Instant,
}

#[derive(Debug)]
struct State {
    generation: Generation,
    listeners: Vec<(SocketAddr, Vec<TcpListener>)>,
    /// The workers serving, by number (None while one is being replaced; empty while
    /// paused for a new binary).
    current: Vec<Option<Arc<Worker>>>,
    /// Workers draining after a reload.
    retiring: Vec<Arc<Worker>>,
    /// The counts of workers gone.
    base: Counts,
    check_down: BTreeMap<SocketAddr, bool>,
    drained: Vec<(IpAddr, Option<u16>)>,
    stopping: bool,
    /// The generation's shared zones.
    zones: Vec<(Zone, Arc<SharedMemory>)>,
    /// stub_status's counters, for the master's lifetime (reloads keep them, as nginx's).
    counters: Arc<SharedMemory>,
    free_slots: Vec<usize>,
}

impl State {
    fn serving(&self) -> Vec<Arc<Worker>> {
        self.current.iter().flatten().cloned().collect()
    }
}

#[derive(Debug)]
struct Shared {
    program: Program,
    state: Mutex<State>,
    monitors: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// The master's handle on the proxy's worker processes.
#[derive(Debug)]
pub struct Master {
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The user the workers run as: nginx's `user USER [GROUP]` (the group named as the
/// user when not given), else www-data where it exists, else nobody. None when the
/// master is not root (nginx then ignores `user`, and so do we).
fn user_of(cfg: &NginxConfig) -> Result<Option<(u32, u32)>, String> {
    if !nix::unistd::geteuid().is_root() {
        if cfg.user.is_some() {
            warn!("the \"user\" directive makes sense only if the master process runs with super-user privileges, ignored");
        }
        return Ok(None);
    }
    let (user, group) = match &cfg.user {
        Some((u, g)) => (u.clone(), Some(g.clone().unwrap_or_else(|| u.clone()))),
        None => {
            let default = if matches!(nix::unistd::User::from_name("www-data"), Ok(Some(_))) {
                "www-data"
            } else {
                "nobody"
            };
            (default.to_string(), None)
        }
    };
    let u = nix::unistd::User::from_name(&user)
        .ok()
        .flatten()
        .ok_or_else(|| format!("getpwnam(\"{user}\") failed"))?;
    let gid = match group {
        Some(g) => {
            nix::unistd::Group::from_name(&g)
                .ok()
                .flatten()
                .ok_or_else(|| format!("getgrnam(\"{g}\") failed"))?
                .gid
        }
        None => u.gid,
    };
    if u.uid.is_root() {
        return Err(format!("the workers would run as root (user \"{user}\")"));
    }
    Ok(Some((u.uid.as_raw(), gid.as_raw())))
}

/// The shared zones of `g`: each one an unchanged declaration had before is kept (its
/// state with it), the others are made.
fn zones_for(
    g: &Generation,
    had: &[(Zone, Arc<SharedMemory>)],
) -> Result<Vec<(Zone, Arc<SharedMemory>)>, String> {
    g.zones
        .iter()
        .map(|z| match had.iter().find(|(h, _)| h == z) {
            Some((_, m)) => Ok((z.clone(), m.clone())),
            None => z
                .region()
                .map(|m| (z.clone(), Arc::new(m)))
                .map_err(|e| format!("shared memory for zone \"{}\": {e}", z.name())),
        })
        .collect()
}

impl Master {
    /// Checks `cfg` (loaded from `source`), binds its listening sockets and starts the
    /// workers (`program proxy-worker`) on them; returns once they serve.
    pub fn start(program: Program, source: Source, cfg: &NginxConfig) -> Result<Master, String> {
        let site = fulcrum_proxy::prepare(cfg)?;
        let listeners = fulcrum_proxy::bind_listeners(&site, &[])?;
        let generation = Generation::of(source, cfg, &site)?;
        drop(site);
        let zones = zones_for(&generation, &[])?;
        let counters = fulcrum_proxy::shm::stub_region(COUNTER_SLOTS)
            .map_err(|e| format!("shared memory for the counters: {e}"))?;
        let shared = Arc::new(Shared {
            program,
            state: Mutex::new(State {
                generation,
                listeners,
                current: Vec::new(),
                retiring: Vec::new(),
                base: Counts::default(),
                check_down: BTreeMap::new(),
                drained: Vec::new(),
                stopping: false,
                zones,
                counters: Arc::new(counters),
                free_slots: (1..=COUNTER_SLOTS).rev().collect(),
            }),
            monitors: Mutex::new(Vec::new()),
        });
        {
            let mut state = lock(&shared.state);
            let workers = spawn_all(&shared, &mut state)?;
            state.current = workers.into_iter().map(Some).collect();
        }
        Ok(Master { shared })
    }

    /// Applies a new configuration: checked here, then new workers on it; once they
    /// serve, the old ones stop gracefully. On error the running workers stay.
    pub fn reload(&self, source: Source, cfg: &NginxConfig) -> Result<(), String> {
        let site = fulcrum_proxy::prepare(cfg)?;
        let mut state = lock(&self.shared.state);
        let have: Vec<SocketAddr> = state.listeners.iter().map(|(a, _)| *a).collect();
        let fresh = fulcrum_proxy::bind_listeners(&site, &have)?;
        let binds = site.binds();
        let generation = Generation::of(source, cfg, &site)?;
        drop(site);
        let zones = zones_for(&generation, &state.zones)?;
        let old_generation = std::mem::replace(&mut state.generation, generation);
        let old_zones = std::mem::replace(&mut state.zones, zones);
        let mut kept = std::mem::take(&mut state.listeners);
        let mut gone = Vec::new();
        kept.retain_mut(|(a, ls)| {
            let keep = binds.contains(a);
            if !keep {
                gone.push((*a, std::mem::take(ls)));
            }
            keep
        });
        kept.extend(fresh);
        state.listeners = kept;
        match spawn_all(&self.shared, &mut state) {
            Ok(workers) => {
                let old =
                    std::mem::replace(&mut state.current, workers.into_iter().map(Some).collect());
                for w in old.into_iter().flatten() {
                    retire(&self.shared, &mut state, w);
                }
                for (a, _) in gone {
                    info!(listen = %a, "layer-7 proxy stopped listening");
                }
                Ok(())
            }
            Err(e) => {
                // Back as it was: the old workers still serve the old listeners.
                state.generation = old_generation;
                state.zones = old_zones;
                state
                    .listeners
                    .retain(|(a, _)| have.contains(a) || gone.iter().any(|(g, _)| g == a));
                state.listeners.extend(gone);
                Err(e)
            }
        }
    }

    /// The counters of every worker this master ran, added up.
    pub fn stats(&self) -> Counts {
        let (current, retiring, mut total) = {
            let state = lock(&self.shared.state);
            (state.serving(), state.retiring.clone(), state.base.clone())
        };
        for w in current.iter().chain(retiring.iter()) {
            // A draining worker is busy with its quit; its last counts stand in.
            if let Ok(mut chan) = w.chan.try_lock() {
                if let Some(FromWorker::Stats(s)) = ask(&mut chan, &ToWorker::Stats) {
                    *lock(&w.last) = s.into();
                }
            }
            wire::add(&mut total, &lock(&w.last));
        }
        total
    }

    /// Every upstream peer's state, from the workers serving now. Without `zone` each
    /// keeps its own (as nginx's workers do), so connections add up, and a peer shows the
    /// most failures and the least effective weight any worker gives it; with `zone` they
    /// share one.
    pub fn peers(&self) -> Vec<PeerView> {
        let mut views = self
            .ask_all(&ToWorker::Peers)
            .into_iter()
            .filter_map(|a| match a {
                FromWorker::Peers(p) => Some(p),
                _ => None,
            });
        let Some(mut out) = views.next() else {
            return Vec::new();
        };
        for other in views {
            merge_peers(&mut out, other);
        }
        out
    }

    /// As [`fulcrum_proxy::Runtime::set_check_down`], in every worker.
    pub fn set_check_down(&self, addr: SocketAddr, down: bool) -> bool {
        lock(&self.shared.state).check_down.insert(addr, down);
        self.ask_all(&ToWorker::CheckDown { addr, down })
            .iter()
            .any(|a| matches!(a, FromWorker::Found(true)))
    }

    /// As [`fulcrum_proxy::Runtime::set_drained`], in every worker.
    pub fn set_drained(&self, ip: IpAddr, port: Option<u16>, on: bool) -> usize {
        {
            let mut state = lock(&self.shared.state);
            state.drained.retain(|x| *x != (ip, port));
            if on {
                state.drained.push((ip, port));
            }
        }
        self.ask_all(&ToWorker::Drained { ip, port, on })
            .iter()
            .filter_map(|a| match a {
                FromWorker::Touched(n) => Some(*n),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// nginx's USR1: every log file the workers write is made again by the master where
    /// logrotate moved it away, and made the workers' (as nginx's master chowns them),
    /// then each worker reopens them.
    pub fn reopen_logs(&self) {
        let (current, user) = {
            let state = lock(&self.shared.state);
            (state.serving(), state.generation.user)
        };
        if let (Some(w), Some((uid, gid))) = (current.first(), user) {
            for path in &w.logs {
                own_log(path, uid, gid);
            }
        }
        for w in &current {
            let _ = ask(&mut lock(&w.chan), &ToWorker::Reopen);
        }
    }

    /// The listening sockets, duplicated, for a new binary to start on (nginx's binary
    /// upgrade, USR2).
    pub fn listening_sockets(&self) -> std::io::Result<Vec<TcpListener>> {
        let state = lock(&self.shared.state);
        state
            .listeners
            .iter()
            .flat_map(|(_, ls)| ls.iter().map(TcpListener::try_clone))
            .collect()
    }

    /// nginx's WINCH once a new binary serves: the workers stop gracefully and none is
    /// started in their place, while the listening sockets stay open here (the new
    /// binary accepts on them, and [`Master::resume`] can still go back). Whether any
    /// was serving.
    pub fn pause(&self) -> bool {
        let mut state = lock(&self.shared.state);
        let workers: Vec<Arc<Worker>> = std::mem::take(&mut state.current)
            .into_iter()
            .flatten()
            .collect();
        let any = !workers.is_empty();
        for w in workers {
            retire(&self.shared, &mut state, w);
        }
        any
    }

    /// After [`Master::pause`]: workers again, on the configuration they had (nginx's
    /// HUP then does not read the file again). Whether they were started.
    pub fn resume(&self) -> Result<bool, String> {
        let mut state = lock(&self.shared.state);
        if !state.current.is_empty() || state.stopping {
            return Ok(false);
        }
        let workers = spawn_all(&self.shared, &mut state)?;
        state.current = workers.into_iter().map(Some).collect();
        Ok(true)
    }

    /// Fast stop (nginx's TERM): every worker exits at once.
    pub fn stop(self) {
        terminate(&self.leave());
        self.join();
    }

    /// nginx's graceful stop (QUIT): the workers stop listening and finish what is in
    /// flight, for at most `grace` or until `hurry` is set. How many connections were
    /// still open then.
    pub fn quit(self, grace: Duration, hurry: &AtomicBool) -> usize {
        let workers = self.leave();
        let grace_ms = grace.as_millis() as u64;
        let done = AtomicBool::new(false);
        let left = std::thread::scope(|s| {
            let tasks: Vec<_> = workers
                .iter()
                .map(|w| {
                    s.spawn(|| {
                        let mut chan = lock(&w.chan);
                        let _ = chan.set_read_timeout(Some(grace + ANSWER_TIMEOUT));
                        match ask(
                            &mut chan,
                            &ToWorker::Quit {
                                grace_ms,
                                idle: true,
                            },
                        ) {
                            Some(FromWorker::Quit { left, .. }) => left,
                            _ => 0,
                        }
                    })
                })
                .collect();
            s.spawn(|| {
                // A SIGTERM meanwhile, or the grace over (a worker a reload retired
                // drains on a longer one): the workers still there stop at once.
                let deadline = Instant::now() + grace;
                while !done.load(Ordering::Relaxed) {
                    if hurry.load(Ordering::Relaxed) || Instant::now() >= deadline {
                        terminate(&workers);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            let left = tasks.into_iter().map(|t| t.join().unwrap_or(0)).sum();
            done.store(true, Ordering::Relaxed);
            left
        });
        self.join();
        left
    }

    /// Marks the stop: no worker is restarted after this. The workers running.
    fn leave(&self) -> Vec<Arc<Worker>> {
        let mut state = lock(&self.shared.state);
        state.stopping = true;
        let mut all: Vec<Arc<Worker>> = std::mem::take(&mut state.current)
            .into_iter()
            .flatten()
            .collect();
        all.append(&mut state.retiring);
        for w in &all {
            w.leaving.store(true, Ordering::Relaxed);
        }
        all
    }

    /// Waits for every worker process to be reaped.
    fn join(&self) {
        let monitors = std::mem::take(&mut *lock(&self.shared.monitors));
        for m in monitors {
            let _ = m.join();
        }
    }

    /// One question to every worker serving; the answers of those that gave one.
    fn ask_all(&self, m: &ToWorker) -> Vec<FromWorker> {
        let workers = lock(&self.shared.state).serving();
        workers
            .iter()
            .filter_map(|w| ask(&mut lock(&w.chan), m))
            .collect()
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        terminate(&self.leave());
    }
}

/// Adds another worker's view of the peers to `into` (the same configuration, so the
/// same peers in the same order; a list that differs is left out).
fn merge_peers(into: &mut [PeerView], other: Vec<PeerView>) {
    let same = into.len() == other.len()
        && into
            .iter()
            .zip(&other)
            .all(|(a, b)| a.upstream == b.upstream && a.addr == b.addr && a.backup == b.backup);
    if !same {
        return;
    }
    for (a, b) in into.iter_mut().zip(other) {
        if a.shared {
            // One state, that every worker reports.
            continue;
        }
        a.conns += b.conns;
        a.fails = a.fails.max(b.fails);
        a.effective_weight = a.effective_weight.min(b.effective_weight);
    }
}

/// Fast stop: SIGTERM, which a worker leaves at its default (exit at once).
fn terminate(workers: &[Arc<Worker>]) {
    for w in workers {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(w.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// One question, one answer (None when the worker does not answer in time).
fn ask(chan: &mut UnixStream, m: &ToWorker) -> Option<FromWorker> {
    wire::send(chan, m).ok()?;
    wire::recv(chan).ok().flatten()
}

fn absolute(mut s: Source) -> Source {
    if s.conf.is_relative() {
        if let Ok(d) = std::env::current_dir() {
            s.conf = d.join(&s.conf);
        }
    }
    s
}

/// A log file for the worker to reopen: made (as root) where it is missing, and the
/// worker's if it is not, with the owner's read and write as nginx sets them.
fn own_log(path: &str, uid: u32, gid: u32) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let f = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            warn!("log file {path}: {e}");
            return;
        }
    };
    let Ok(meta) = f.metadata() else {
        return;
    };
    if meta.uid() != uid {
        if let Err(e) = std::os::unix::fs::fchown(&f, Some(uid), Some(gid)) {
            warn!("chown(\"{path}\", {uid}) failed ({e})");
            return;
        }
        let mode = meta.mode() | 0o600;
        let _ = f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777));
    }
}

/// Starts the generation's workers; returns once every one serves. If one fails, those
/// started are stopped again.
fn spawn_all(shared: &Arc<Shared>, state: &mut State) -> Result<Vec<Arc<Worker>>, String> {
    let mut started: Vec<Arc<Worker>> = Vec::new();
    for index in 0..state.generation.processes {
        match spawn(shared, state, index) {
            Ok(w) => started.push(w),
            Err(e) => {
                for w in &started {
                    w.leaving.store(true, Ordering::Relaxed);
                }
                terminate(&started);
                return Err(e);
            }
        }
    }
    Ok(started)
}

/// Starts worker `index` on the state's generation and listeners; returns once it
/// serves.
fn spawn(shared: &Arc<Shared>, state: &mut State, index: usize) -> Result<Arc<Worker>, String> {
    let slot = state
        .free_slots
        .pop()
        .ok_or("too many worker processes serving and draining at once")?;
    match start_worker(shared, state, index, slot) {
        Ok(w) => Ok(w),
        Err(e) => {
            fulcrum_proxy::shm::stub_fold(&state.counters, slot);
            state.free_slots.push(slot);
            Err(e)
        }
    }
}

fn start_worker(
    shared: &Arc<Shared>,
    state: &State,
    index: usize,
    slot: usize,
) -> Result<Arc<Worker>, String> {
    let (mut ours, theirs) =
        UnixStream::pair().map_err(|e| format!("worker control channel: {e}"))?;
    let mut child = Command::new(&shared.program.path)
        .arg0("fulcrum")
        .arg("proxy-worker")
        .args(&shared.program.args)
        .stdout(Stdio::null())
        .stderr(if shared.program.stderr {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .spawn()
        .map_err(|e| format!("starting worker {}: {e}", shared.program.path.display()))?;
    let pid = child.id();
    let result = handshake(&mut ours, state, index, slot);
    let logs = match result {
        Ok(logs) => logs,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let _ = ours.set_read_timeout(Some(ANSWER_TIMEOUT));
    let _ = ours.set_write_timeout(Some(ANSWER_TIMEOUT));
    let w = Arc::new(Worker {
        pid,
        index,
        slot,
        chan: Mutex::new(ours),
        last: Mutex::new(Counts::default()),
        logs,
        leaving: AtomicBool::new(false),
        started: Instant::now(),
    });
    let user = state.generation.user.map_or_else(
        || "the master's user".to_string(),
        |(u, g)| format!("uid {u}, gid {g}"),
    );
    info!(
        pid,
        worker = index,
        "layer-7 worker process started ({user})"
    );
    let monitor = {
        let shared = Arc::clone(shared);
        let w = Arc::clone(&w);
        std::thread::Builder::new()
            .name("fulcrum-worker-wait".into())
            .spawn(move || watch(shared, w, child))
            .map_err(|e| format!("worker monitor: {e}"))?
    };
    let mut monitors = lock(&shared.monitors);
    monitors.retain(|m| !m.is_finished());
    monitors.push(monitor);
    Ok(w)
}

/// The listening sockets worker `index` accepts on: every address's, and of one with
/// `reuseport` (a socket per worker) its own.
fn sockets_of(state: &State, index: usize) -> Vec<(SocketAddr, Vec<&TcpListener>)> {
    state
        .listeners
        .iter()
        .map(|(a, ls)| {
            let mine = if ls.len() > 1 {
                vec![&ls[index % ls.len()]]
            } else {
                ls.iter().collect()
            };
            (*a, mine)
        })
        .collect()
}

/// The start message, the listening sockets and the shared memory out; the worker's
/// first word back.
fn handshake(
    chan: &mut UnixStream,
    state: &State,
    index: usize,
    slot: usize,
) -> Result<Vec<String>, String> {
    let g = &state.generation;
    let sockets = sockets_of(state, index);
    let start = Start {
        conf: g.source.conf.clone(),
        globals: g.source.globals.clone(),
        printed: g.printed,
        index,
        slot,
        listeners: sockets.iter().map(|(a, ls)| (*a, ls.len())).collect(),
        zones: state.zones.iter().map(|(z, _)| z.name()).collect(),
        user: g.user,
        rlimit_nofile: g.rlimit_nofile,
        check_down: state.check_down.iter().map(|(a, d)| (*a, *d)).collect(),
        drained: state.drained.clone(),
    };
    let _ = chan.set_read_timeout(Some(START_TIMEOUT));
    let _ = chan.set_write_timeout(Some(START_TIMEOUT));
    wire::send(chan, &ToWorker::Start(Box::new(start)))
        .map_err(|e| format!("worker start: {e}"))?;
    let fds: Vec<_> = sockets
        .iter()
        .flat_map(|(_, ls)| ls.iter().map(|l| l.as_fd()))
        .collect();
    for chunk in fds.chunks(fulcrum_sys::MAX_FDS_PER_MESSAGE) {
        fulcrum_sys::send_fds(chan, b'L', chunk)
            .map_err(|e| format!("passing the listening sockets: {e}"))?;
    }
    let memory: Vec<_> = std::iter::once(state.counters.fd())
        .chain(state.zones.iter().map(|(_, m)| m.fd()))
        .collect();
    for chunk in memory.chunks(fulcrum_sys::MAX_FDS_PER_MESSAGE) {
        fulcrum_sys::send_fds(chan, b'M', chunk)
            .map_err(|e| format!("passing the shared memory: {e}"))?;
    }
    match wire::recv::<FromWorker>(chan) {
        Ok(Some(FromWorker::Ready { logs })) => Ok(logs),
        Ok(Some(FromWorker::Failed(e))) => Err(e),
        Ok(Some(other)) => Err(format!("worker: unexpected {other:?}")),
        Ok(None) => Err("the worker process exited before serving".into()),
        Err(e) => Err(format!("the worker did not start: {e}")),
    }
}

/// Reaps a worker; one that dies while it should serve is replaced, as nginx's master
/// replaces it.
fn watch(shared: Arc<Shared>, w: Arc<Worker>, mut child: Child) {
    let status = child.wait();
    let mut state = lock(&shared.state);
    // Its connections are gone; what it counted stays.
    fulcrum_proxy::shm::stub_fold(&state.counters, w.slot);
    state.free_slots.push(w.slot);
    let last = lock(&w.last).clone();
    let at = state
        .current
        .iter()
        .position(|c| c.as_ref().is_some_and(|c| Arc::ptr_eq(c, &w)));
    state.retiring.retain(|r| !Arc::ptr_eq(r, &w));
    if !w.leaving.load(Ordering::Relaxed) {
        // Its last counts are what is kept of it (a retiring worker's are added by
        // whoever retired it).
        wire::add(&mut state.base, &last);
    }
    let Some(at) = at else {
        return;
    };
    if state.stopping || w.leaving.load(Ordering::Relaxed) {
        return;
    }
    let how = match status {
        Ok(s) => s.to_string(),
        Err(e) => e.to_string(),
    };
    error!(
        pid = w.pid,
        worker = w.index,
        "layer-7 worker process exited ({how}): starting another"
    );
    state.current[at] = None;
    let generation = state.generation.printed;
    // Still this worker's place: not stopped, paused or reloaded meanwhile.
    let vacant = |state: &State| {
        !state.stopping
            && state.generation.printed == generation
            && state.current.get(at).is_some_and(Option::is_none)
    };
    // A worker that dies at once is not restarted in a tight loop.
    let early = w.started.elapsed() < Duration::from_secs(1);
    loop {
        if early {
            drop(state);
            std::thread::sleep(Duration::from_secs(1));
            state = lock(&shared.state);
            if !vacant(&state) {
                return;
            }
        }
        match spawn(&shared, &mut state, w.index) {
            Ok(n) => {
                state.current[at] = Some(n);
                return;
            }
            Err(e) => {
                error!("layer-7 worker process did not start: {e}");
                drop(state);
                std::thread::sleep(Duration::from_secs(1));
                state = lock(&shared.state);
                if !vacant(&state) {
                    return;
                }
            }
        }
    }
}

/// Sends a worker replaced by a reload its graceful stop, on a thread of its own; its
/// final counts join the master's.
fn retire(shared: &Arc<Shared>, state: &mut State, old: Arc<Worker>) {
    old.leaving.store(true, Ordering::Relaxed);
    state.retiring.push(Arc::clone(&old));
    let shared = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name("fulcrum-worker-quit".into())
        .spawn(move || {
            // nginx's old workers have worker_shutdown_timeout (unset: no limit); a day
            // bounds a connection that never ends.
            let grace = Duration::from_secs(86_400);
            let mut chan = lock(&old.chan);
            let _ = chan.set_read_timeout(Some(grace + ANSWER_TIMEOUT));
            let last: Counts = match ask(
                &mut chan,
                &ToWorker::Quit {
                    grace_ms: grace.as_millis() as u64,
                    idle: false,
                },
            ) {
                Some(FromWorker::Quit { stats, .. }) => stats.into(),
                // Killed meanwhile: what it last said.
                _ => lock(&old.last).clone(),
            };
            let mut state = lock(&shared.state);
            state.retiring.retain(|r| !Arc::ptr_eq(r, &old));
            wire::add(&mut state.base, &last);
        });
    if let Err(e) = spawned {
        warn!("retiring the old worker: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(conns: u32, fails: u32, shared: bool) -> PeerView {
        PeerView {
            upstream: "u".into(),
            server: "10.0.0.1:80".into(),
            addr: fulcrum_proxy::PeerAddr::Inet("10.0.0.1:80".parse().unwrap()),
            backup: false,
            weight: 2,
            effective_weight: 2,
            down: false,
            check_down: false,
            drained: false,
            conns,
            fails,
            max_fails: 3,
            shared,
        }
    }

    #[test]
    fn workers_views_of_a_peer_add_up_unless_shared() {
        let mut own = vec![view(2, 1, false)];
        merge_peers(&mut own, vec![view(3, 2, false)]);
        assert_eq!((own[0].conns, own[0].fails), (5, 2));
        // With zone, every worker reports the one state.
        let mut shared = vec![view(4, 1, true)];
        merge_peers(&mut shared, vec![view(4, 1, true)]);
        assert_eq!((shared[0].conns, shared[0].fails), (4, 1));
    }
}
