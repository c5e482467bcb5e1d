//! Fulcrum's layer-7 proxy: the `http` block of an nginx.conf, served as nginx serves it.
//!
//! [`Runtime::start`] compiles the configuration ([`site`]), binds every `listen` address
//! (with IP_FREEBIND, so a VRRP VIP can be listened on before this node holds it) and
//! serves on runtimes of its own, a current-thread one per `worker_processes` thread
//! (`auto` = cores), each accepting on the listening sockets as nginx's workers do: HTTP/1
//! on our own engine ([`http1`], with `fulcrum_http1`'s codec, to clients and upstreams
//! alike), HTTP/2 through hyper ([`h2`]). [`Runtime::reload`] swaps in a new configuration without dropping a
//! connection: requests already in flight finish on the old one, new listeners are bound
//! before anything changes, and a configuration that fails to compile or bind is refused
//! with the old one left serving. Upstream groups whose block did not change keep their
//! balancer state and idle connections.

mod access;
mod auth;
mod body;
pub mod clients;
pub mod cookies;
mod files;
pub mod gzip;
mod h2;
mod handler;
mod headers;
mod http1;
pub mod limit;
mod log;
mod proxy_protocol;
mod request;
mod response;
pub mod rewrite;
pub mod route;
pub mod shm;
pub mod site;
mod spool;
mod stall;
pub mod stats;
mod stream;
mod tls;
mod upstream;
mod upvars;
pub mod vars;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use fulcrum_nginx_conf::model::NginxConfig;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use fulcrum_upstream::PeerAddr;
pub use log::{open as open_logs, reopen as reopen_logs};
pub use site::Site;

/// The proxy's shared state: the configuration in force and the listeners.
#[derive(Debug)]
struct Shared {
    site: Arc<site::Current>,
    /// Per bound address, the accept task of each of its sockets.
    listeners: Mutex<HashMap<SocketAddr, Vec<JoinHandle<()>>>>,
    /// Peer addresses an active health check holds out, applied to every new pool.
    check_down: Mutex<HashMap<SocketAddr, bool>>,
    /// What the operator drained (address, port if given), applied to every new pool.
    drained: Mutex<Vec<(std::net::IpAddr, Option<u16>)>>,
    /// worker_connections x workers: a permit per client connection held. Past the limit
    /// new connections wait in the listen backlog, as nginx stops accepting.
    connections: Arc<tokio::sync::Semaphore>,
    /// How many permits there are in all, for a reload that changes the limit.
    connection_limit: Mutex<usize>,
}

fn connection_limit(site: &Site) -> usize {
    site.worker_connections.max(1) * worker_threads(site)
}

/// A running proxy; dropping it (or [`Runtime::stop`]) stops serving.
#[derive(Debug)]
pub struct Runtime {
    /// One current-thread runtime per worker thread, each its own event loop, as each
    /// nginx worker process is.
    rts: Vec<tokio::runtime::Handle>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// What `fulcrum ctl upstreams` shows of a peer (serialized as it crosses from a
/// worker process).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PeerView {
    pub upstream: String,
    pub server: String,
    pub addr: fulcrum_upstream::PeerAddr,
    pub backup: bool,
    pub weight: i64,
    pub effective_weight: i64,
    pub down: bool,
    pub check_down: bool,
    pub drained: bool,
    pub conns: u32,
    pub fails: u32,
    pub max_fails: u32,
    /// Its upstream has a `zone`: every worker sees this same state.
    #[serde(default)]
    pub shared: bool,
}

/// The listening sockets for `addr`: one, or with `reuseport` one per worker thread.
/// Those inherited from the binary that started this one are taken first.
fn bind_all(addr: SocketAddr, site: &Site) -> Result<Vec<std::net::TcpListener>, String> {
    let reuseport = site.reuseport(addr);
    let n = if reuseport { worker_threads(site) } else { 1 };
    let mut all = take_inherited(addr, n);
    while all.len() < n {
        all.push(bind(addr, reuseport).map_err(|e| format!("bind() to {addr} failed ({e})"))?);
    }
    Ok(all)
}

/// Listening sockets inherited from the binary that started this one (nginx's binary
/// upgrade: the old master passes them to the new), until a bind for their address takes
/// them. A process-wide fact, as the descriptors themselves are.
static INHERITED: Mutex<Vec<(SocketAddr, std::net::TcpListener)>> = Mutex::new(Vec::new());

/// Hands listening sockets inherited at start to the binds to come: a `listen` on the
/// same address takes them instead of binding (which another process holding the port
/// would make fail).
pub fn inherit(sockets: Vec<std::net::TcpListener>) {
    let mut held = INHERITED.lock().unwrap_or_else(|e| e.into_inner());
    for s in sockets {
        match s.local_addr() {
            Ok(a) => held.push((a, s)),
            Err(e) => warn!("inherited socket: getsockname() failed ({e}); closed"),
        }
    }
}

fn take_inherited(addr: SocketAddr, n: usize) -> Vec<std::net::TcpListener> {
    let mut held = INHERITED.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    while out.len() < n {
        match held.iter().position(|(a, _)| *a == addr) {
            Some(i) => out.push(held.remove(i).1),
            None => break,
        }
    }
    out
}

/// Closes the inherited sockets no `listen` took (nginx closes those the configuration
/// no longer names, so that no connection waits in a backlog nobody accepts from); their
/// addresses.
pub fn close_inherited() -> Vec<SocketAddr> {
    let mut held = INHERITED.lock().unwrap_or_else(|e| e.into_inner());
    held.drain(..).map(|(a, _)| a).collect()
}

fn worker_threads(site: &Site) -> usize {
    if site.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        site.threads
    }
}

fn bind(addr: SocketAddr, reuseport: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if reuseport {
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // A VIP held by the other node right now can still be listened on.
    let _ = if addr.is_ipv4() {
        s.set_freebind_v4(true)
    } else {
        s.set_freebind_v6(true)
    };
    s.bind(&addr.into())?;
    s.listen(511)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// The listening sockets of a site, by address (one, or one per worker thread with
/// `reuseport`).
pub type Listeners = Vec<(SocketAddr, Vec<std::net::TcpListener>)>;

/// Compiles `cfg` for serving: the site, with the TLS configurations its `ssl` listens
/// and its `proxy_ssl_*` name (certificates and keys are read here). Nothing is bound or
/// served yet, so this is also the check of a configuration before it replaces another.
pub fn prepare(cfg: &NginxConfig) -> Result<Site, String> {
    let mut site = site::compile(cfg, None)?;
    tls::attach(&mut site, cfg.conf_prefix.as_deref())?;
    tls::attach_upstream(&mut site, cfg.conf_prefix.as_deref())?;
    Ok(site)
}

/// The upstreams of `site` with a `zone`: each one's configuration and the length of its
/// balancer state (what the master sizes its shared memory by).
pub fn upstream_zones(site: &Site) -> Vec<(fulcrum_nginx_conf::model::Upstream, usize)> {
    let mut out: Vec<_> = site
        .upstreams
        .values()
        .filter(|g| g.config.zone.is_some())
        .map(|g| {
            let len = g.pool.lock().unwrap_or_else(|e| e.into_inner()).state_len();
            (g.config.clone(), len)
        })
        .collect();
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    out
}

/// Binds the listening sockets `site` asks for, except the addresses `have` holds
/// already (a reload keeps those).
pub fn bind_listeners(site: &Site, have: &[SocketAddr]) -> Result<Listeners, String> {
    site.binds()
        .into_iter()
        .filter(|a| !have.contains(a))
        .map(|a| Ok((a, bind_all(a, site)?)))
        .collect()
}

impl Runtime {
    /// Compiles `cfg`, binds its listeners and starts serving.
    pub fn start(cfg: &NginxConfig) -> Result<Runtime, String> {
        let site = prepare(cfg)?;
        let bound = bind_listeners(&site, &[])?;
        Runtime::serve(site, bound)
    }

    /// Serves a prepared site on listening sockets bound already (by [`bind_listeners`],
    /// maybe in another process). Nothing is read from a client before this.
    pub fn serve(site: Site, bound: Listeners) -> Result<Runtime, String> {
        let threads = worker_threads(&site);
        // A current-thread runtime per worker: no work-stealing machinery to pay for, and
        // a connection stays on the thread that accepted it, as in an nginx worker.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let mut workers = Vec::with_capacity(threads);
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
        for i in 0..threads {
            let handle_tx = handle_tx.clone();
            let mut stopped = stopped.clone();
            // worker_cpu_affinity: each thread stands for one of nginx's workers.
            let n = site.worker_index + i;
            let cpus = site.cpu_affinity.as_ref().and_then(|a| a.cpus(n, ncpu));
            let thread = std::thread::Builder::new()
                .name("fulcrum-proxy".into())
                .spawn(move || {
                    if let Some(cpus) = cpus {
                        match fulcrum_sys::set_thread_affinity(&cpus) {
                            Ok(()) => info!(worker = n, ?cpus, "sched_setaffinity(): worker bound"),
                            Err(e) => warn!(worker = n, ?cpus, "sched_setaffinity() failed ({e})"),
                        }
                    }
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = handle_tx.send(Err(format!("proxy runtime: {e}")));
                            return;
                        }
                    };
                    let _ = handle_tx.send(Ok(rt.handle().clone()));
                    rt.block_on(async {
                        let _ = stopped.wait_for(|s| *s).await;
                    });
                    rt.shutdown_background();
                })
                .map_err(|e| format!("proxy thread: {e}"))?;
            workers.push(thread);
        }
        let mut rts = Vec::with_capacity(threads);
        for _ in 0..threads {
            let rt = handle_rx
                .recv()
                .map_err(|_| "proxy runtime did not start".to_string())??;
            rts.push(rt);
        }
        let limit = connection_limit(&site);
        let shared = Arc::new(Shared {
            site: Arc::new(site::Current::new(site)),
            listeners: Mutex::new(HashMap::new()),
            check_down: Mutex::new(HashMap::new()),
            drained: Mutex::new(Vec::new()),
            connections: Arc::new(tokio::sync::Semaphore::new(limit)),
            connection_limit: Mutex::new(limit),
        });
        for (a, ls) in bound {
            let sockets = ls.len();
            let tasks = spawn_accepts(&rts, &shared, ls, a)?;
            shared
                .listeners
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(a, tasks);
            info!(listen = %a, threads, sockets, "layer-7 proxy listening");
        }
        Ok(Runtime {
            rts,
            stop: Some(stop),
            threads: workers,
            shared,
        })
    }

    /// Applies a new configuration; on error the running one stays.
    pub fn reload(&self, cfg: &NginxConfig) -> Result<(), String> {
        let old = self.site();
        let mut site = site::compile(cfg, Some(&old))?;
        tls::attach(&mut site, cfg.conf_prefix.as_deref())?;
        tls::attach_upstream(&mut site, cfg.conf_prefix.as_deref())?;
        let binds = site.binds();
        let mut listeners = self
            .shared
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut fresh = Vec::new();
        for a in binds.iter().filter(|a| !listeners.contains_key(a)) {
            fresh.push((*a, bind_all(*a, &site)?));
        }
        // What health checks and the operator hold out carries over to the new pools.
        {
            let check_down = self
                .shared
                .check_down
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let drained = self
                .shared
                .drained
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for g in site.upstreams.values() {
                let mut pool = g.pool.lock().unwrap_or_else(|e| e.into_inner());
                for (addr, down) in check_down.iter() {
                    pool.set_check_down(*addr, *down);
                }
                for (ip, port) in drained.iter() {
                    pool.set_drained(*ip, *port, true);
                }
            }
        }
        {
            // A new worker_connections: permits added, or taken back as they come free.
            let limit = connection_limit(&site);
            let mut old = self
                .shared
                .connection_limit
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if limit > *old {
                self.shared.connections.add_permits(limit - *old);
            } else {
                let fewer = *old - limit;
                let forgotten = self.shared.connections.forget_permits(fewer);
                if forgotten < fewer {
                    warn!(
                        "worker_connections lowered below the connections open: the limit \
                         takes effect as they close"
                    );
                    let rest = fewer - forgotten;
                    let sem = self.shared.connections.clone();
                    self.rts[0].spawn(async move {
                        if let Ok(p) = sem.acquire_many_owned(rest as u32).await {
                            p.forget();
                        }
                    });
                }
            }
            *old = limit;
        }
        self.shared.site.set(site);
        for (a, ls) in fresh {
            let sockets = ls.len();
            let tasks = spawn_accepts(&self.rts, &self.shared, ls, a)?;
            listeners.insert(a, tasks);
            info!(listen = %a, sockets, "layer-7 proxy listening");
        }
        let gone: Vec<SocketAddr> = listeners
            .keys()
            .filter(|a| !binds.contains(a))
            .copied()
            .collect();
        for a in gone {
            if let Some(tasks) = listeners.remove(&a) {
                tasks.iter().for_each(JoinHandle::abort);
                info!(listen = %a, "layer-7 proxy stopped listening");
            }
        }
        Ok(())
    }

    pub fn site(&self) -> Arc<Site> {
        self.shared.site.get()
    }

    /// The proxy's counters since it started (reloads keep them).
    pub fn stats(&self) -> stats::Counts {
        self.site().stats.snapshot()
    }

    /// Every upstream peer's state.
    pub fn peers(&self) -> Vec<PeerView> {
        let site = self.site();
        let mut names: Vec<&String> = site.upstreams.keys().collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let g = &site.upstreams[name];
            // (With a zone, the state the workers share.)
            let pool = g.with_pool(|pool| pool.clone());
            for (id, p) in pool.peers() {
                out.push(PeerView {
                    upstream: name.clone(),
                    server: p.server.clone(),
                    addr: p.addr.clone(),
                    backup: id.backup,
                    weight: p.weight,
                    effective_weight: p.effective_weight(),
                    down: p.down,
                    check_down: p.check_down,
                    drained: p.drained,
                    conns: p.conns,
                    fails: p.fails,
                    max_fails: p.max_fails,
                    shared: g.shared.is_some(),
                });
            }
        }
        out
    }

    /// Active health checks drive upstream membership (Fulcrum's extension): every peer
    /// at `addr` leaves (or rejoins) the rotation of every upstream.
    pub fn set_check_down(&self, addr: SocketAddr, down: bool) -> bool {
        self.shared
            .check_down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr, down);
        let site = self.site();
        let mut found = false;
        for g in site.upstreams.values() {
            found |= g
                .pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set_check_down(addr, down);
        }
        found
    }

    /// Drains (or undrains) the peers at `ip` (and `port`) in every upstream: no new
    /// requests; those in flight finish. How many peers it touched.
    pub fn set_drained(&self, ip: std::net::IpAddr, port: Option<u16>, on: bool) -> usize {
        {
            let mut d = self
                .shared
                .drained
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            d.retain(|x| *x != (ip, port));
            if on {
                d.push((ip, port));
            }
        }
        let site = self.site();
        site.upstreams
            .values()
            .map(|g| {
                g.pool
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .set_drained(ip, port, on)
            })
            .sum()
    }

    /// Stops listening and drops every connection.
    pub fn stop(mut self) {
        self.halt();
    }

    /// nginx's graceful stop (SIGQUIT): stops listening, closes idle connections, lets
    /// the requests in flight finish (their answers close the connection), and stops once
    /// none is left, `grace` has passed or `hurry` is set (a SIGTERM meanwhile). How many
    /// connections were still open then.
    pub fn quit(self, grace: std::time::Duration, hurry: &std::sync::atomic::AtomicBool) -> usize {
        self.wind_down(grace, hurry, true)
    }

    /// The graceful stop of a worker a reload replaced: as [`Runtime::quit`], but an idle
    /// keep-alive connection is not closed under its client, which may be sending on it
    /// right then; its next request is answered, with `Connection: close`.
    pub fn retire(
        self,
        grace: std::time::Duration,
        hurry: &std::sync::atomic::AtomicBool,
    ) -> usize {
        self.wind_down(grace, hurry, false)
    }

    fn wind_down(
        mut self,
        grace: std::time::Duration,
        hurry: &std::sync::atomic::AtomicBool,
        idle: bool,
    ) -> usize {
        for (_, tasks) in self
            .shared
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            tasks.iter().for_each(JoinHandle::abort);
        }
        if idle {
            self.shared.site.close();
        } else {
            self.shared.site.drain();
        }
        let open = || {
            let limit = *self
                .shared
                .connection_limit
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            limit.saturating_sub(self.shared.connections.available_permits())
        };
        let deadline = std::time::Instant::now() + grace;
        while open() > 0
            && std::time::Instant::now() < deadline
            && !hurry.load(std::sync::atomic::Ordering::Relaxed)
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let left = open();
        self.halt();
        left
    }

    fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Accept tasks for the sockets bound to `bind`: with `reuseport` a socket per worker
/// (the kernel spreads connections over them), else every worker accepts on the one
/// socket (a descriptor of it each, as nginx's workers share their listening sockets).
fn spawn_accepts(
    rts: &[tokio::runtime::Handle],
    shared: &Arc<Shared>,
    sockets: Vec<std::net::TcpListener>,
    bind: SocketAddr,
) -> Result<Vec<JoinHandle<()>>, String> {
    let mut tasks = Vec::new();
    if sockets.len() == rts.len() {
        for (rt, l) in rts.iter().zip(sockets) {
            tasks.push(rt.spawn(accept(shared.clone(), l, bind)));
        }
        return Ok(tasks);
    }
    for l in &sockets {
        for rt in rts {
            let copy = l
                .try_clone()
                .map_err(|e| format!("listening socket {bind}: {e}"))?;
            tasks.push(rt.spawn(accept(shared.clone(), copy, bind)));
        }
    }
    Ok(tasks)
}

async fn accept(shared: Arc<Shared>, listener: std::net::TcpListener, bind: SocketAddr) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!("listener: {e}");
            return;
        }
    };
    let mut warned: Option<std::time::Instant> = None;
    loop {
        let permit = match shared.connections.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Said at most every 10 s a listener, not for every connection held back.
                if warned.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10)) {
                    warn!(listen = %bind, "worker_connections are not enough: new connections wait");
                    warned = Some(std::time::Instant::now());
                }
                match shared.connections.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                }
            }
        };
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                debug!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let mut conn = request::ClientConn {
            id: shared.site.get().stats.1.next_serial(),
            remote,
            local,
            https: false,
            proxy: None,
        };
        // A task holds its future inline for as long as the connection lives: the TLS
        // path (rustls' state is large) is boxed, so a plain connection does not carry
        // its room.
        let site = shared.site.get();
        let current = shared.site.clone();
        let active = stats::accepted(&site.stats);
        let proxied = site.proxy_protocol(bind);
        match site.tls.get(&bind).cloned() {
            // The common case, HTTP/1 on a plain listen: its task is the engine's
            // connection future itself.
            None if !site.http2(bind) && !proxied => {
                let io = http1::client_io(stream, &site);
                tokio::spawn(http1::serve(
                    current,
                    io,
                    conn,
                    BytesMut::new(),
                    (permit, active),
                ));
            }
            None => {
                let h2 = site.http2(bind);
                tokio::spawn(Box::pin(async move {
                    let _held = (permit, active);
                    let mut stream = stream;
                    let mut early = BytesMut::new();
                    if proxied {
                        let deadline = tokio::time::Instant::now() + site.client_header_timeout;
                        match proxy_header(&mut stream, &mut early, deadline).await {
                            Some(addrs) => conn.proxy = addrs,
                            None => return,
                        }
                    }
                    serve(current, site, stream, conn, h2, early).await
                }));
            }
            Some(config) => {
                conn.https = true;
                tokio::spawn(Box::pin(async move {
                    let _held = (permit, active);
                    let mut stream = stream;
                    if proxied {
                        let deadline = tokio::time::Instant::now() + site.client_header_timeout;
                        match proxy_header_exact(&mut stream, deadline).await {
                            Some(addrs) => conn.proxy = addrs,
                            None => return,
                        }
                    }
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    let handshake =
                        tokio::time::timeout(site.client_header_timeout, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                            serve(current, site, tls, conn, h2, BytesMut::new()).await
                        }
                        Ok(Err(e)) => debug!(%remote, "TLS handshake: {e}"),
                        Err(_) => debug!(%remote, "TLS handshake timed out"),
                    }
                }));
            }
        }
    }
}

/// Reads a PROXY protocol header off a plain connection within `deadline`; what came
/// after it stays in `early`. None: broken, or the client went (nginx closes then).
async fn proxy_header(
    stream: &mut tokio::net::TcpStream,
    early: &mut BytesMut,
    deadline: tokio::time::Instant,
) -> Option<Option<proxy_protocol::Addrs>> {
    loop {
        match proxy_protocol::parse(early) {
            proxy_protocol::Parsed::Header { addrs, len } => {
                let _ = early.split_to(len);
                return Some(addrs);
            }
            proxy_protocol::Parsed::Broken(seen) => {
                warn!("broken header: \"{seen}\" while reading PROXY protocol");
                return None;
            }
            proxy_protocol::Parsed::Partial if early.len() >= proxy_protocol::MAX => return None,
            proxy_protocol::Parsed::Partial => {}
        }
        early.reserve(512);
        let read = tokio_util::io::read_buf(stream, early);
        match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
    }
}

/// [`proxy_header`] for a TLS listen: exactly the header's bytes are read, so that the
/// handshake starts right after it.
async fn proxy_header_exact(
    stream: &mut tokio::net::TcpStream,
    deadline: tokio::time::Instant,
) -> Option<Option<proxy_protocol::Addrs>> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 15];
    let read = async {
        // Fifteen bytes: as short as a v1 line can be, and most of v2's fixed part.
        stream.read_exact(&mut buf).await?;
        loop {
            match proxy_protocol::parse(&buf) {
                proxy_protocol::Parsed::Partial if buf.len() < proxy_protocol::MAX => {
                    // v2: the rest of its length-prefixed block; v1: a byte at a time
                    // to its line end.
                    let want = if buf.starts_with(b"\r\n") && buf.len() >= 16 {
                        16 + usize::from(u16::from_be_bytes([buf[14], buf[15]])) - buf.len()
                    } else {
                        1
                    };
                    let at = buf.len();
                    buf.resize(at + want, 0);
                    stream.read_exact(&mut buf[at..]).await?;
                }
                other => return Ok::<_, std::io::Error>(other),
            }
        }
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(proxy_protocol::Parsed::Header { addrs, .. })) => Some(addrs),
        Ok(Ok(proxy_protocol::Parsed::Broken(seen))) => {
            warn!("broken header: \"{seen}\" while reading PROXY protocol");
            None
        }
        _ => None,
    }
}

/// Serves one client connection: plain or TLS, HTTP/1.x, or HTTP/2 when ALPN says h2 or
/// (on a plain listen that says `http2`) the client opens with HTTP/2's preface.
async fn serve<S: http1::ClientStream>(
    current: Arc<site::Current>,
    site: Arc<Site>,
    mut stream: S,
    conn: request::ClientConn,
    h2: bool,
    mut early: BytesMut,
) {
    if h2 && !conn.https {
        // Enough of the first bytes to tell HTTP/2's preface from an HTTP/1 request line.
        const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";
        let deadline = tokio::time::Instant::now() + site.client_header_timeout;
        while early.len() < PREFACE.len() && PREFACE.starts_with(&early) {
            early.reserve(4096);
            let read = tokio_util::io::read_buf(&mut stream, &mut early);
            match tokio::time::timeout_at(deadline, read).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
        if early.starts_with(PREFACE) {
            return Box::pin(h2::serve(current, stream, conn, early)).await;
        }
    }
    if h2 && conn.https {
        return Box::pin(h2::serve(current, stream, conn, early)).await;
    }
    let io = http1::client_io(stream, &site);
    http1::serve(current, io, conn, early, ()).await
}
