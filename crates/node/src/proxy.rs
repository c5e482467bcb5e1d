//! The layer-7 proxy as the node runs it: in worker processes under nginx's `user`
//! (the daemon's way, [`fulcrum_workers`]), or inside this process (a library user with
//! no worker program, or nginx.conf's `master_process off`, nginx's single-process mode).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use fulcrum_nginx_conf::NginxConfig;
use fulcrum_proxy::stats::Counts;
use fulcrum_proxy::PeerView;

#[derive(Debug)]
pub enum Proxy {
    Here(fulcrum_proxy::Runtime),
    Workers(fulcrum_workers::Master),
}

/// How a proxy is started: the worker program, and where the configuration comes from.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: Option<fulcrum_workers::Program>,
    pub source: Option<fulcrum_workers::Source>,
}

impl Proxy {
    pub fn start(launch: &Launch, cfg: &NginxConfig) -> Result<Proxy, String> {
        match (&launch.program, &launch.source) {
            (Some(program), Some(source)) if cfg.master_process => {
                fulcrum_workers::Master::start(program.clone(), source.clone(), cfg)
                    .map(Proxy::Workers)
            }
            _ => fulcrum_proxy::Runtime::start(cfg).map(Proxy::Here),
        }
    }

    /// A new configuration. Whether it runs in workers or not is fixed at start (a
    /// change of `master_process` needs a restart, as in nginx).
    pub fn reload(&self, launch: &Launch, cfg: &NginxConfig) -> Result<(), String> {
        match (self, &launch.source) {
            (Proxy::Workers(m), Some(source)) => m.reload(source.clone(), cfg),
            (Proxy::Workers(_), None) => Err("no nginx.conf to start workers on".into()),
            (Proxy::Here(rt), _) => rt.reload(cfg),
        }
    }

    pub fn stats(&self) -> Counts {
        match self {
            Proxy::Here(rt) => rt.stats(),
            Proxy::Workers(m) => m.stats(),
        }
    }

    pub fn peers(&self) -> Vec<PeerView> {
        match self {
            Proxy::Here(rt) => rt.peers(),
            Proxy::Workers(m) => m.peers(),
        }
    }

    pub fn set_check_down(&self, addr: SocketAddr, down: bool) -> bool {
        match self {
            Proxy::Here(rt) => rt.set_check_down(addr, down),
            Proxy::Workers(m) => m.set_check_down(addr, down),
        }
    }

    pub fn set_drained(&self, ip: IpAddr, port: Option<u16>, on: bool) -> usize {
        match self {
            Proxy::Here(rt) => rt.set_drained(ip, port, on),
            Proxy::Workers(m) => m.set_drained(ip, port, on),
        }
    }

    pub fn reopen_logs(&self) {
        match self {
            Proxy::Here(_) => fulcrum_proxy::reopen_logs(),
            Proxy::Workers(m) => m.reopen_logs(),
        }
    }

    /// The listening sockets for a new binary (nginx's binary upgrade), which needs the
    /// worker processes: nginx's single-process mode has no upgrade either.
    pub fn listening_sockets(&self) -> Result<Vec<std::net::TcpListener>, String> {
        match self {
            Proxy::Here(_) => Err("the binary upgrade needs master_process on".into()),
            Proxy::Workers(m) => m
                .listening_sockets()
                .map_err(|e| format!("duplicating the listening sockets: {e}")),
        }
    }

    /// nginx's WINCH: the workers stop gracefully, the sockets stay open.
    pub fn pause(&self) -> bool {
        match self {
            Proxy::Here(_) => false,
            Proxy::Workers(m) => m.pause(),
        }
    }

    /// HUP after WINCH: workers again, on the configuration they had.
    pub fn resume(&self) -> Result<bool, String> {
        match self {
            Proxy::Here(_) => Ok(false),
            Proxy::Workers(m) => m.resume(),
        }
    }

    pub fn stop(self) {
        match self {
            Proxy::Here(rt) => rt.stop(),
            Proxy::Workers(m) => m.stop(),
        }
    }

    pub fn quit(self, grace: Duration, hurry: &AtomicBool) -> usize {
        match self {
            Proxy::Here(rt) => rt.quit(grace, hurry),
            Proxy::Workers(m) => m.quit(grace, hurry),
        }
    }
}
