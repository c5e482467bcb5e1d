//! Test hosts in network namespaces, for Fulcrum's end-to-end tests and `fulcrum demo`.
//!
//! A [`Lab`] owns namespaces (hosts, and switches that hold a bridge), the veth links
//! between them, and the processes it started inside them. Dropping it (also while a test
//! panics) kills those processes and deletes those namespaces. Every name carries the
//! creating process's pid (`fl-<pid>-...`), so labs in parallel tests never collide and
//! [`sweep_stale`] can remove what a killed process left behind without touching the labs
//! of processes that still run.
//!
//! The root namespace is never given a lab address, route or device: veths are created
//! directly inside their namespaces, and every command runs through `ip -n` or
//! `ip netns exec`, which fail when the namespace is missing.

#![forbid(unsafe_code)]

pub mod active_active;
pub mod agent;
pub mod ipvs_vm;
pub mod reference;

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use reference::{Deployment, Reference};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command the lab ran failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// A command could not be started at all (missing program).
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    /// A namespace the lab expected is gone; nothing falls back to the root namespace.
    #[error("network namespace {0} does not exist")]
    MissingNamespace(String),
    /// A background process did not become ready in time.
    #[error("{0}")]
    NotReady(String),
    /// Loading an XDP stub needs clang with the BPF target.
    #[error("cannot build the XDP_PASS stub: {0}")]
    Stub(String),
}

pub type Result<T> = std::result::Result<T, LabError>;

/// True when this process is root (effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// For tests that need root: true when they can run. Without root they print a skip line
/// and return false, unless the `CI` variable is set, where they fail: CI always runs them.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test} needs root, and CI must run it: run the suite as root");
    }
    eprintln!("SKIP {test}: needs root (run the suite as root to include it)");
    false
}

/// What the agent's `watch` mode printed (`UNIX_MICROS answer` per attempt), summed up:
/// attempts, failed ones (an answer `ok` refuses), and the outage from the first failure
/// to the last, plus one probe interval `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    pub attempts: usize,
    pub failed: usize,
    pub outage: Duration,
}

pub fn watched(text: &str, every: Duration, ok: impl Fn(&str) -> bool) -> Watched {
    let mut attempts = 0;
    let mut failures: Vec<u128> = Vec::new();
    for line in text.lines() {
        let Some((t, answer)) = line.split_once(' ') else {
            continue;
        };
        let Ok(t) = t.parse::<u128>() else { continue };
        attempts += 1;
        if !ok(answer) {
            failures.push(t);
        }
    }
    let outage = match (failures.first(), failures.last()) {
        (Some(a), Some(b)) => Duration::from_micros((b - a) as u64) + every,
        _ => Duration::ZERO,
    };
    Watched {
        attempts,
        failed: failures.len(),
        outage,
    }
}

/// Polls `cond` every millisecond until it holds or `limit` passes; how long it took.
/// For measuring how soon something happens in the lab (a VIP moving, say), bounded.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// The number an agent's summary line puts before `word` (`1234 sent`, `567 ok`) in its
/// log; 0 when there is none.
pub fn number_before(log: &Path, word: &str) -> u64 {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[1] == word)
        .and_then(|w| w[0].parse().ok())
        .unwrap_or(0)
}

/// Waits (at most `wait` each) for agents that run for a while to end, and adds up the
/// number each one's summary puts before `word`.
pub fn total_of(agents: Vec<(Process, PathBuf)>, word: &str, wait: Duration) -> u64 {
    agents
        .into_iter()
        .map(|(p, log)| {
            p.wait_timeout(wait);
            number_before(&log, word)
        })
        .sum()
}

/// The program the lab runs in its hosts as a server or prober: a binary (the lab's own
/// `fulcrum-lab-agent`) or `fulcrum lab-agent`.
#[derive(Debug, Clone)]
pub struct Agent {
    pub program: PathBuf,
    pub prefix_args: Vec<String>,
}

impl Agent {
    pub fn new(program: impl Into<PathBuf>, prefix_args: &[&str]) -> Agent {
        Agent {
            program: program.into(),
            prefix_args: prefix_args.iter().map(|s| s.to_string()).collect(),
        }
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);
const NS_DIR: &str = "/run/netns";
const PREFIX: &str = "fl-";

fn run(cmd: &mut Command) -> Result<Output> {
    let text = format!("{cmd:?}").replace('"', "");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            command: text.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: text,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<Output> {
    run(Command::new("ip").args(args))
}

/// Deletes the namespaces (and kills the processes in them) that a process which no
/// longer exists left behind. Labs of running processes are not touched.
pub fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(NS_DIR) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        delete_namespace(&name);
    }
}

fn delete_namespace(name: &str) {
    if let Ok(out) = ip(&["netns", "pids", name]) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).output();
        }
    }
    let _ = ip(&["netns", "del", name]);
}

/// A bpffs mounted on a directory of the caller's (created if needed), lazily unmounted
/// when dropped: where the data plane or `fulcrum decap` pin what must outlive the command
/// that loaded it (under `ip netns exec`, /sys is private to the command).
#[derive(Debug)]
pub struct Bpffs(pub PathBuf);

impl Bpffs {
    pub fn new(path: impl Into<PathBuf>) -> Result<Bpffs> {
        let path = path.into();
        std::fs::create_dir_all(&path).map_err(|source| LabError::Spawn {
            command: format!("mkdir {}", path.display()),
            source,
        })?;
        run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&path))?;
        Ok(Bpffs(path))
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .stdin(Stdio::null())
            .status();
    }
}

/// A host: one network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The name the test gave it ("client", "director1", ...).
    pub name: String,
    /// The namespace's real name.
    pub netns: String,
}

/// A switch: a namespace with a bridge `br0`; hosts attach to it with veths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub name: String,
    pub netns: String,
}

/// A process the lab started in a host; killed when the lab is dropped, or by [`Lab::kill`].
#[derive(Debug, Clone)]
pub struct Process {
    child: Arc<Mutex<Option<Child>>>,
    pub pid: u32,
    pub description: String,
}

impl Process {
    /// Sends a signal by name (`TERM`, `KILL`, `HUP`, ...).
    pub fn signal(&self, signal: &str) -> Result<()> {
        run(Command::new("kill").args([format!("-{signal}"), self.pid.to_string()]))?;
        Ok(())
    }

    /// Waits for the process to end, at most `timeout`; its exit code if it ended.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(mut guard) = self.child.lock() {
                if let Some(child) = guard.as_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Some(status.code().unwrap_or(-1));
                    }
                } else {
                    return Some(-1);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&self) {
        if let Ok(mut guard) = self.child.lock() {
            if let Some(mut child) = guard.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Network namespaces and what runs in them, removed on drop.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    processes: Vec<Process>,
    links: u32,
    agent: Option<Agent>,
}

impl Lab {
    /// A new, empty lab. `label` (a few letters) goes into the namespace names to say who
    /// made them. Sweeps what dead processes left behind first.
    pub fn new(label: &str) -> Result<Lab> {
        sweep_stale();
        let _ = std::fs::create_dir_all(NS_DIR);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let label: String = label
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(12)
            .collect();
        Ok(Lab {
            prefix: format!("{PREFIX}{}-{seq}{label}", std::process::id()),
            namespaces: Vec::new(),
            processes: Vec::new(),
            links: 0,
            agent: None,
        })
    }

    /// Sets the program used by [`Lab::serve`] and [`Lab::probe`].
    pub fn with_agent(mut self, agent: Agent) -> Lab {
        self.agent = Some(agent);
        self
    }

    /// The prefix shared by every namespace of this lab.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn add_namespace(&mut self, name: &str) -> Result<String> {
        let netns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &netns])?;
        self.namespaces.push(netns.clone());
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// A new host with only `lo` (up).
    pub fn host(&mut self, name: &str) -> Result<Host> {
        let netns = self.add_namespace(name)?;
        Ok(Host {
            name: name.to_string(),
            netns,
        })
    }

    /// A new switch: a bridge in a namespace of its own.
    pub fn switch(&mut self, name: &str) -> Result<Switch> {
        let netns = self.add_namespace(name)?;
        ip(&["-n", &netns, "link", "add", "br0", "type", "bridge"])?;
        // No STP delay: ports forward as soon as they are up.
        ip(&[
            "-n",
            &netns,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ])?;
        ip(&["-n", &netns, "link", "set", "br0", "up"])?;
        Ok(Switch {
            name: name.to_string(),
            netns,
        })
    }

    /// A veth pair between two namespaces, both ends up, tx checksum offload off on both
    /// (as real NICs deliver full checksums; see REFERENCE.md on XDP and veth).
    fn veth(&mut self, a_ns: &str, a_if: &str, b_ns: &str, b_if: &str) -> Result<()> {
        ip(&[
            "link", "add", a_if, "netns", a_ns, "type", "veth", "peer", "name", b_if, "netns", b_ns,
        ])?;
        for (ns, ifname) in [(a_ns, a_if), (b_ns, b_if)] {
            run(Command::new("ip")
                .args(["netns", "exec", ns, "ethtool", "-K", ifname, "tx", "off"]))?;
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
        }
        Ok(())
    }

    /// Connects a host's interface `ifname` to a switch. Returns the name of the switch's
    /// port (the veth end in the switch's namespace).
    pub fn attach(&mut self, host: &Host, ifname: &str, switch: &Switch) -> Result<String> {
        self.links += 1;
        let port = format!("p{}", self.links);
        self.veth(&host.netns, ifname, &switch.netns, &port)?;
        ip(&["-n", &switch.netns, "link", "set", &port, "master", "br0"])?;
        Ok(port)
    }

    /// Connects two hosts directly.
    pub fn link(&mut self, a: &Host, a_if: &str, b: &Host, b_if: &str) -> Result<()> {
        self.veth(&a.netns, a_if, &b.netns, b_if)
    }

    /// Runs a command in a host and returns its output; an error if it fails.
    pub fn exec<I, S>(&self, netns: &str, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        if !Path::new(NS_DIR).join(netns).exists() {
            return Err(LabError::MissingNamespace(netns.to_string()));
        }
        run(Command::new("ip").args(["netns", "exec", netns]).args(args))
    }

    /// Runs `f` in a host's network namespace, on a thread of its own that joins it (a
    /// namespace is a thread's: the caller's stays where it was). For what must run there
    /// in this process, such as test-running a data plane against the host's routes. A
    /// panic in `f` comes back to the caller.
    pub fn within<R: Send>(&self, host: &Host, f: impl FnOnce() -> R + Send) -> Result<R> {
        let ns = std::fs::File::open(Path::new(NS_DIR).join(&host.netns))
            .map_err(|_| LabError::MissingNamespace(host.netns.clone()))?;
        std::thread::scope(|s| {
            let joined = s.spawn(move || {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| LabError::Spawn {
                        command: format!("setns into {}", host.netns),
                        source: e.into(),
                    })
                    .map(|()| f())
            });
            joined
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Runs `ip ARGS` in a host.
    pub fn ip(&self, host: &Host, args: &[&str]) -> Result<Output> {
        let mut all = vec!["-n", host.netns.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    pub fn addr(&self, host: &Host, ifname: &str, cidr: &str) -> Result<()> {
        self.ip(host, &["addr", "add", cidr, "dev", ifname])?;
        Ok(())
    }

    pub fn route(&self, host: &Host, dest: &str, via: &str) -> Result<()> {
        self.ip(host, &["route", "add", dest, "via", via])?;
        Ok(())
    }

    pub fn sysctl(&self, host: &Host, key: &str, value: &str) -> Result<()> {
        self.exec(
            &host.netns,
            ["sysctl", "-q", "-w", &format!("{key}={value}")],
        )?;
        Ok(())
    }

    /// Starts a process in a host, in the background. It is killed when the lab drops.
    /// stdout and stderr go to `log` (a file), or nowhere.
    pub fn spawn<S: AsRef<OsStr>>(
        &mut self,
        host: &Host,
        args: &[S],
        log: Option<&Path>,
    ) -> Result<Process> {
        if !Path::new(NS_DIR).join(&host.netns).exists() {
            return Err(LabError::MissingNamespace(host.netns.clone()));
        }
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.netns]).args(args);
        cmd.stdin(Stdio::null());
        match log {
            Some(path) => {
                let f = std::fs::File::create(path).map_err(|source| LabError::Spawn {
                    command: path.display().to_string(),
                    source,
                })?;
                let f2 = f.try_clone().map_err(|source| LabError::Spawn {
                    command: path.display().to_string(),
                    source,
                })?;
                cmd.stdout(f).stderr(f2);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let description = format!("{cmd:?}").replace('"', "");
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            command: description.clone(),
            source,
        })?;
        let p = Process {
            pid: child.id(),
            child: Arc::new(Mutex::new(Some(child))),
            description,
        };
        self.processes.push(p.clone());
        Ok(p)
    }

    /// The command line that runs the agent in a host (`ip netns exec NS PROGRAM ARGS...`),
    /// for callers that run one of its modes themselves.
    pub fn agent_command(&self, host: &Host) -> Result<Vec<std::ffi::OsString>> {
        let agent = self.agent()?;
        if !Path::new(NS_DIR).join(&host.netns).exists() {
            return Err(LabError::MissingNamespace(host.netns.clone()));
        }
        let mut v: Vec<std::ffi::OsString> = vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            host.netns.clone().into(),
        ];
        v.push(agent.program.clone().into_os_string());
        v.extend(agent.prefix_args.iter().map(Into::into));
        Ok(v)
    }

    /// Runs one agent mode in a host to its end.
    pub fn run_agent(&self, host: &Host, args: &[&str]) -> Result<Output> {
        let line = self.agent_command(host)?;
        let mut cmd = Command::new(&line[0]);
        cmd.args(&line[1..]).args(args).stdin(Stdio::null());
        cmd.output().map_err(|source| LabError::Spawn {
            command: format!("{cmd:?}"),
            source,
        })
    }

    /// Starts the agent in `host` with `args` (a `flood`, `rate`, `sink`... that runs for a
    /// while), its output to `log`.
    pub fn spawn_agent(&mut self, host: &Host, args: &[&str], log: &Path) -> Result<Process> {
        let agent = self.agent()?.clone();
        let mut line: Vec<OsString> = vec![agent.program.into_os_string()];
        line.extend(agent.prefix_args.iter().map(Into::into));
        line.extend(args.iter().map(Into::into));
        self.spawn(host, &line, Some(log))
    }

    /// The agent's `sink` in `host` on `listen` for `for_ms`, once it says it is ready.
    pub fn sink(&mut self, host: &Host, listen: &str, for_ms: u64, log: &Path) -> Result<Process> {
        let for_ms = for_ms.to_string();
        let p = self.spawn_agent(
            host,
            &["sink", "--listen", listen, "--for-ms", &for_ms],
            log,
        )?;
        let ready = wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(log).is_ok_and(|t| t.contains("ready"))
        });
        match ready {
            Some(_) => Ok(p),
            None => Err(LabError::NotReady(format!(
                "the sink in {} did not start",
                host.name
            ))),
        }
    }

    fn agent(&self) -> Result<&Agent> {
        self.agent.as_ref().ok_or_else(|| {
            LabError::NotReady("the lab has no agent program (Lab::with_agent)".into())
        })
    }

    /// Starts the agent's server in a host, answering with `name`, and waits until it
    /// listens.
    pub fn serve(&mut self, host: &Host, name: &str, listen: &str, http: bool) -> Result<Process> {
        let extra: &[&str] = if http { &["--http"] } else { &[] };
        self.serve_with(host, name, listen, extra)
    }

    /// [`Lab::serve`] with the agent's other serve flags (`--http --echo`, `--fail-path`...).
    pub fn serve_with(
        &mut self,
        host: &Host,
        name: &str,
        listen: &str,
        extra: &[&str],
    ) -> Result<Process> {
        let agent = self.agent()?.clone();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.netns])
            .arg(&agent.program)
            .args(&agent.prefix_args)
            .args(["serve", "--name", name, "--listen", listen])
            .args(extra);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let description = format!("{cmd:?}").replace('"', "");
        let mut child = cmd.spawn().map_err(|source| LabError::Spawn {
            command: description.clone(),
            source,
        })?;
        let stdout = child.stdout.take();
        let p = Process {
            pid: child.id(),
            child: Arc::new(Mutex::new(Some(child))),
            description: description.clone(),
        };
        self.processes.push(p.clone());
        // Wait for "ready", bounded.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            if let Some(out) = stdout {
                let mut line = String::new();
                let _ = BufReader::new(out).read_line(&mut line);
                let _ = tx.send(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.trim() == "ready" => Ok(p),
            _ => Err(LabError::NotReady(format!(
                "{description} did not start listening"
            ))),
        }
    }

    /// HTTP requests from a host with the agent, one connection each: (status, body) per
    /// path, status 0 when the request failed.
    pub fn request(
        &self,
        host: &Host,
        addr: &str,
        paths: &[&str],
        extra: &[&str],
    ) -> Result<Vec<(u16, String)>> {
        let mut args = vec!["request", "--connect", addr];
        let joined = paths.join(",");
        if !paths.is_empty() {
            args.extend(["--paths", joined.as_str()]);
        }
        args.extend_from_slice(extra);
        let out = self.run_agent(host, &args)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok(text
            .split("=== ")
            .skip(1)
            .map(|chunk| {
                let (first, body) = chunk.split_once('\n').unwrap_or((chunk, ""));
                (first.trim().parse().unwrap_or(0), body.to_string())
            })
            .collect())
    }

    /// [`Lab::request`] with each answer's head as it came (status line and header
    /// lines, CRLF between them): (status, head, body) per path.
    pub fn request_full(
        &self,
        host: &Host,
        addr: &str,
        paths: &[&str],
        extra: &[&str],
    ) -> Result<Vec<(u16, String, String)>> {
        let mut extra = extra.to_vec();
        extra.push("--full");
        Ok(self
            .request(host, addr, paths, &extra)?
            .into_iter()
            .map(|(status, text)| {
                let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
                // The agent ends each answer with a newline of its own.
                let body = body.strip_suffix('\n').unwrap_or(body);
                (status, head.to_string(), body.to_string())
            })
            .collect())
    }

    /// [`Lab::request_raw`] with the answer's head: (status, head, body).
    pub fn request_raw_full(
        &self,
        host: &Host,
        addr: &str,
        raw: &str,
    ) -> Result<(u16, String, String)> {
        let out = self.request_full(host, addr, &[], &["--raw", raw])?;
        Ok(out
            .into_iter()
            .next()
            .unwrap_or((0, String::new(), String::new())))
    }

    /// Sends `raw` (with `\\r\\n` written as such) from a host to `addr` on one connection:
    /// the answer's status (0 when there was none) and body.
    pub fn request_raw(&self, host: &Host, addr: &str, raw: &str) -> Result<(u16, String)> {
        let out = self.request(host, addr, &[], &["--raw", raw])?;
        Ok(out.into_iter().next().unwrap_or((0, String::new())))
    }

    /// Connects `count` times from a host to `addr` with the agent, one connection after
    /// another; the first line of each answer (the server's name), or `error: ...`.
    pub fn probe(&self, host: &Host, addr: &str, count: u32, http: bool) -> Result<Vec<String>> {
        let count = count.to_string();
        let mut args = vec!["probe", "--connect", addr, "--count", &count];
        if http {
            args.push("--http");
        }
        let out = self.run_agent(host, &args)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Loads an XDP program that returns XDP_PASS on an interface (native mode), so that
    /// frames sent to its veth peer with XDP_TX or a redirect are delivered (the peer
    /// needs NAPI; see REFERENCE.md).
    pub fn xdp_pass_stub(&self, netns: &str, ifname: &str) -> Result<()> {
        // ip(8) loads from a file: a copy for this call, removed once loaded.
        let dir = StubDir::new("load").map_err(|e| LabError::Stub(e.to_string()))?;
        let path = dir.0.join("xdp_pass.o");
        std::fs::write(&path, stub_object()?).map_err(|e| LabError::Stub(e.to_string()))?;
        let obj = path.to_string_lossy();
        ip(&[
            "-n", netns, "link", "set", "dev", ifname, "xdpdrv", "obj", &obj, "sec", "xdp",
        ])?;
        Ok(())
    }

    /// Kills every process the lab started and deletes every namespace it made. Also done
    /// by drop; calling it twice is harmless.
    pub fn teardown(&mut self) {
        for p in self.processes.drain(..) {
            p.kill();
        }
        for ns in self.namespaces.drain(..).rev() {
            delete_namespace(&ns);
        }
    }

    /// Names of this lab's namespaces that exist now (empty after teardown).
    pub fn existing_namespaces(&self) -> Vec<String> {
        existing_with_prefix(&self.prefix)
    }
}

/// Namespaces whose names start with `prefix`.
pub fn existing_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NS_DIR) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

const STUB_C: &str = r#"// XDP_PASS stub: gives a veth peer NAPI so that XDP_TX and redirects reach it.
#include <linux/bpf.h>
__attribute__((section("xdp"), used))
int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }
char _license[] __attribute__((section("license"), used)) = "GPL";
"#;

/// Builds the stub once per process with clang (clang-19 preferred, as Debian packages it)
/// and keeps the object in memory: nothing is left behind in the temporary directory.
fn stub_object() -> Result<&'static [u8]> {
    static OBJ: OnceLock<std::result::Result<Vec<u8>, String>> = OnceLock::new();
    OBJ.get_or_init(|| {
        let dir = StubDir::new("build").map_err(|e| e.to_string())?;
        let src = dir.0.join("xdp_pass.c");
        let obj = dir.0.join("xdp_pass.o");
        std::fs::write(&src, STUB_C).map_err(|e| e.to_string())?;
        let mut last = String::from("no clang found (install clang-19)");
        for clang in ["clang-19", "clang"] {
            let out = Command::new(clang)
                .args(["-O2", "-g", "-target", "bpf", "-c"])
                .arg(&src)
                .arg("-o")
                .arg(&obj)
                .arg("-I/usr/include/x86_64-linux-gnu")
                .output();
            match out {
                Ok(o) if o.status.success() => {
                    return std::fs::read(&obj).map_err(|e| e.to_string())
                }
                Ok(o) => last = String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => last = format!("{clang}: {e}"),
            }
        }
        Err(last)
    })
    .as_ref()
    .map(Vec::as_slice)
    .map_err(|e| LabError::Stub(e.clone()))
}

/// A directory of this process for the stub's files, removed when dropped.
struct StubDir(PathBuf);

impl StubDir {
    fn new(what: &str) -> std::io::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("fulcrum-lab-{}-{what}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(StubDir(dir))
    }
}

impl Drop for StubDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deletes every namespace this process created (and kills what runs in them): for a
/// program interrupted while a lab is up on another thread. Returns how many it removed.
pub fn remove_all_of_this_process() -> usize {
    let names = existing_with_prefix(&format!("{PREFIX}{}-", std::process::id()));
    for n in &names {
        delete_namespace(n);
    }
    names.len()
}
