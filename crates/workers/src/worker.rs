//! The worker's side: `fulcrum proxy-worker`, started by the master with the control
//! channel as its standard input. It loads the configuration, reads what needs the
//! master's privileges (certificates and keys, the log files, the temporary
//! directories), gives those privileges up for good, and only then serves.

use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use fulcrum_proxy::Runtime;
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{Gid, Uid};
use tracing::{error, warn};

use crate::wire::{self, FromWorker, Start, ToWorker};

/// Runs a worker until the master tells it to stop or goes away; the process's exit
/// status.
pub fn main() -> i32 {
    // The master drives this process over the channel; the signals a terminal or
    // `kill -s ... -PGID` sends the whole group are for the master alone. SIGTERM
    // (the master's fast stop) keeps its default: exit at once.
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        set.add(s);
    }
    if let Err(e) = set.thread_block() {
        error!("worker: signals: {e}");
        return 1;
    }
    let mut chan = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            error!("worker: no control channel: {e}");
            return 1;
        }
    };
    let start = match wire::recv::<ToWorker>(&mut chan) {
        Ok(Some(ToWorker::Start(s))) => s,
        Ok(_) | Err(_) => {
            error!("worker: the master sent no start message");
            return 1;
        }
    };
    let rt = match begin(&mut chan, &start) {
        Ok(rt) => rt,
        Err(e) => {
            let _ = wire::send(&mut chan, &FromWorker::Failed(e));
            return 1;
        }
    };
    let logs = rt.site().log_paths();
    if wire::send(&mut chan, &FromWorker::Ready { logs }).is_err() {
        return 1;
    }
    serve(chan, rt)
}

/// Everything up to serving: the descriptors, the configuration, the privileges.
fn begin(chan: &mut UnixStream, start: &Start) -> Result<Runtime, String> {
    let wanted: usize = start.listeners.iter().map(|(_, n)| n).sum();
    let fds = receive(chan, wanted, "listening sockets")?;
    // stub_status's counters, then the zones (limit zones, upstream zones): mapped
    // before the site is compiled, which takes them.
    let mut memory = receive(chan, 1 + start.zones.len(), "shared memory")?
        .into_iter()
        .map(fulcrum_sys::SharedMemory::map)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("shared memory: mmap() failed ({e})"))?;
    let counters = memory.remove(0);
    fulcrum_proxy::shm::provide(
        start.zones.iter().cloned().zip(memory).collect(),
        counters,
        start.slot,
    );
    let loaded = fulcrum_nginx_conf::load(
        &start.conf,
        &fulcrum_nginx_conf::LoadOptions {
            includes: true,
            host_checks: false,
            globals: start.globals.clone(),
        },
    );
    let cfg = loaded.config.ok_or_else(|| {
        format!(
            "{} no longer loads as it did for the master",
            start.conf.display()
        )
    })?;
    if crate::printed(&cfg) != start.printed {
        return Err(format!(
            "{} changed while it was being applied; reload again",
            start.conf.display()
        ));
    }
    // As root still: certificates and keys, the log files, the spool directories.
    let mut site = fulcrum_proxy::prepare(&cfg)?;
    // One of nginx's workers: one event loop, this worker's CPUs.
    site.threads = 1;
    site.worker_index = start.index;
    fulcrum_proxy::open_logs(&site.log_paths());
    if let Some(n) = start.rlimit_nofile {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
            .map_err(|e| format!("setrlimit(RLIMIT_NOFILE, {n}) failed ({e})"))?;
    }
    if let Some((uid, gid)) = start.user {
        for dir in site.temp_paths() {
            own_dir(&dir, uid, gid);
        }
        drop_privileges(uid, gid)?;
    }
    let mut fds = fds.into_iter();
    let mut bound = Vec::new();
    for (addr, n) in &start.listeners {
        let sockets: Vec<TcpListener> = fds.by_ref().take(*n).map(TcpListener::from).collect();
        bound.push((*addr, sockets));
    }
    let rt = Runtime::serve(site, bound)?;
    for (addr, down) in &start.check_down {
        rt.set_check_down(*addr, *down);
    }
    for (ip, port) in &start.drained {
        rt.set_drained(*ip, *port, true);
    }
    Ok(rt)
}

/// `n` descriptors from the master, in as many messages as it took to send them.
fn receive(chan: &UnixStream, n: usize, what: &str) -> Result<Vec<OwnedFd>, String> {
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(n);
    while fds.len() < n {
        match fulcrum_sys::recv_fds(chan) {
            Ok(Some((_, got))) => fds.extend(got),
            Ok(None) => return Err("the master went away".into()),
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
    Ok(fds)
}

/// A spool directory the worker must write: made its own, as nginx makes its temporary
/// directories the worker user's. A directory anyone may write (the system's /tmp) is
/// left as it is.
fn own_dir(dir: &std::path::Path, uid: u32, gid: u32) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    if meta.mode() & 0o002 != 0 || meta.uid() == uid {
        return;
    }
    if let Err(e) = std::os::unix::fs::chown(dir, Some(uid), Some(gid)) {
        warn!("chown(\"{}\", {uid}) failed ({e})", dir.display());
    }
}

/// Becomes `uid`:`gid` with no supplementary groups, no capabilities and no_new_privs,
/// so nothing it executes can gain any back. Done before any thread is started, so
/// every thread of the proxy runs this way.
fn drop_privileges(uid: u32, gid: u32) -> Result<(), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{what} failed ({e})");
    nix::unistd::setgroups(&[Gid::from_raw(gid)]).map_err(|e| fail("setgroups()", &e))?;
    nix::unistd::setgid(Gid::from_raw(gid)).map_err(|e| fail(&format!("setgid({gid})"), &e))?;
    // From root to another user, setuid() clears the permitted, effective and ambient
    // sets. The bounding set goes too where the daemon kept CAP_SETPCAP (it does not by
    // default, and with no_new_privs nothing executed can gain from it): best effort.
    nix::unistd::setuid(Uid::from_raw(uid)).map_err(|e| fail(&format!("setuid({uid})"), &e))?;
    let _ = fulcrum_sys::keep_capabilities(&[]);
    nix::sys::prctl::set_no_new_privs().map_err(|e| fail("prctl(PR_SET_NO_NEW_PRIVS)", &e))?;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let held = status
        .lines()
        .filter_map(|l| {
            ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"]
                .iter()
                .find_map(|p| l.strip_prefix(p))
        })
        .any(|v| u64::from_str_radix(v.trim(), 16) != Ok(0));
    if held || nix::unistd::getuid().as_raw() != uid || nix::unistd::geteuid().as_raw() != uid {
        return Err("privileges are still held after switching user".into());
    }
    Ok(())
}

/// Answers the master until it says quit or goes away.
fn serve(mut chan: UnixStream, rt: Runtime) -> i32 {
    loop {
        let msg = match wire::recv::<ToWorker>(&mut chan) {
            Ok(Some(m)) => m,
            // The master is gone (killed, or stopped without a word): so is this worker,
            // rather than serving on with nobody to stop it.
            Ok(None) | Err(_) => {
                rt.stop();
                return 0;
            }
        };
        let answer = match msg {
            ToWorker::Start(_) => FromWorker::Failed("started already".into()),
            ToWorker::Stats => FromWorker::Stats((&rt.stats()).into()),
            ToWorker::Peers => FromWorker::Peers(rt.peers()),
            ToWorker::CheckDown { addr, down } => FromWorker::Found(rt.set_check_down(addr, down)),
            ToWorker::Drained { ip, port, on } => FromWorker::Touched(rt.set_drained(ip, port, on)),
            ToWorker::Reopen => {
                fulcrum_proxy::reopen_logs();
                FromWorker::Done
            }
            ToWorker::Quit { grace_ms, idle } => {
                // The counters outlive the runtime: the last counts include the
                // requests that finished while it drained.
                let site = rt.site();
                let hurry = AtomicBool::new(false);
                let grace = Duration::from_millis(grace_ms);
                let left = if idle {
                    rt.quit(grace, &hurry)
                } else {
                    rt.retire(grace, &hurry)
                };
                let stats = (&site.stats.snapshot()).into();
                let _ = wire::send(&mut chan, &FromWorker::Quit { left, stats });
                return 0;
            }
        };
        if wire::send(&mut chan, &answer).is_err() {
            rt.stop();
            return 0;
        }
    }
}
