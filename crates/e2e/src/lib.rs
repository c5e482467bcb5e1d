//! Helpers for the end-to-end tests (tests/lab) and the fulcrum binary's own tests:
//! scratch directories, the corpus, peers on PATH, a daemon in a lab host, the control
//! socket, headless Chromium and Prometheus text.
//!
//! The tests run the `fulcrum` binary that `cargo test --workspace` builds beside them
//! (target/PROFILE/fulcrum); [`bin`] finds it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The `fulcrum` binary next to the running test's directory (target/PROFILE/fulcrum).
/// `cargo test --workspace` builds it before running any test; run alone, a test says
/// so instead of running an old or missing binary.
pub fn bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test's own path");
        // target/PROFILE/deps/lab-HASH -> target/PROFILE/fulcrum
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .map(|dir| dir.join("fulcrum"))
            .expect("a target directory");
        assert!(
            bin.is_file(),
            "{} is missing: run the tests with `cargo test --workspace` (or build it first with `cargo build -p fulcrum`)",
            bin.display()
        );
        bin
    })
}

/// A scratch directory, removed on drop (also when the test panics).
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A directory of its own: the process id and a sequence number keep tests that run
    /// at once in one test binary apart, whatever names they pick.
    pub fn new(name: &str) -> Scratch {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("fulcrum-test-{}-{seq}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `.conf` files of `tests/corpus/LANG/KIND`, sorted.
pub fn corpus_files(lang: &str, kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/corpus")
        .join(lang)
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    files
}

/// Whether `program` is on PATH. When it is not, the test skips with a SKIP line, or fails
/// under CI (the test command installs every peer there).
pub fn installed(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{program} is not installed; the test command installs it in CI");
        }
        eprintln!("SKIP: {program} is not installed");
    }
    found
}

/// A `fulcrum run` started in a lab host: its process, control socket and log.
#[derive(Debug)]
pub struct Daemon {
    pub process: fulcrum_lab::Process,
    pub sock: PathBuf,
    pub log: PathBuf,
}

/// Starts `fulcrum run -f CONF --control DIR/ID.sock [EXTRA...]` in `host`, logging to
/// DIR/ID.log. It is killed when the lab drops.
pub fn spawn_fulcrum(
    lab: &mut fulcrum_lab::Lab,
    host: &fulcrum_lab::Host,
    conf: &Path,
    dir: &Path,
    id: &str,
    extra: &[&str],
) -> Daemon {
    let sock = dir.join(format!("{id}.sock"));
    let log = dir.join(format!("{id}.log"));
    let mut args: Vec<&std::ffi::OsStr> = vec![
        bin().as_os_str(),
        "run".as_ref(),
        "-f".as_ref(),
        conf.as_os_str(),
        "--control".as_ref(),
        sock.as_os_str(),
    ];
    args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
    let process = lab.spawn(host, &args, Some(&log)).unwrap();
    Daemon { process, sock, log }
}

/// Headless Chromium loads `url` in `host` and returns the DOM after the page's script
/// ran (or, with `screenshot`, saves a PNG there instead).
pub fn chromium(
    lab: &fulcrum_lab::Lab,
    host: &fulcrum_lab::Host,
    url: &str,
    dir: &Path,
    screenshot: Option<&Path>,
) -> String {
    let profile = dir.join("chromium-profile");
    let mut args = vec![
        "chromium".to_string(),
        "--headless".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        format!("--user-data-dir={}", profile.display()),
        "--window-size=1280,900".into(),
    ];
    match screenshot {
        Some(p) => args.push(format!("--screenshot={}", p.display())),
        None => args.push("--dump-dom".into()),
    }
    args.push(url.to_string());
    let out = lab.exec(&host.netns, &args).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Prometheus text exposition parsed into series (`name{labels}`) and values.
pub fn parse_metrics(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// `fulcrum ctl --control SOCK ARGS...`, run to its end.
pub fn ctl(sock: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("ctl")
        .arg("--control")
        .arg(sock)
        .args(args)
        .output()
        .unwrap()
}

/// The pid a pid file names.
pub fn pid_in(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Kills (SIGKILL) the process a pid file names when dropped: for daemons that fork into
/// the background, which the lab does not track, if a test ends before stopping them.
#[derive(Debug)]
pub struct Reaper(pub PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(pid) = pid_in(&self.0) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// The worker processes of the daemon's pid: their pids, from /proc.
pub fn workers_of(daemon: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let parent = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse::<u32>().ok());
        if parent == Some(daemon) && String::from_utf8_lossy(&cmdline).contains("proxy-worker") {
            out.push(pid);
        }
    }
    out
}

/// How the agent's `hold` paces its connections.
#[derive(Debug, Clone, Copy)]
pub struct HoldPace {
    /// A line on each connection every so many milliseconds...
    pub every_ms: u32,
    /// ...for so long...
    pub for_ms: u32,
    /// ...each echoed within so long, or the connection counts as broken.
    pub timeout_ms: u32,
}

/// Starts the agent's `hold` in `host`: `connections` plain connections to `target`, paced
/// by `pace`; its output (a `connected NAME` line per connection, then `held N` or
/// `broken ...`) goes to `log`.
pub fn spawn_hold(
    lab: &mut fulcrum_lab::Lab,
    host: &fulcrum_lab::Host,
    target: &str,
    pace: HoldPace,
    connections: u32,
    log: &Path,
) -> fulcrum_lab::Process {
    let (every, total, timeout, n) = (
        pace.every_ms.to_string(),
        pace.for_ms.to_string(),
        pace.timeout_ms.to_string(),
        connections.to_string(),
    );
    lab.spawn(
        host,
        &[
            bin().to_str().expect("a UTF-8 path"),
            "lab-agent",
            "hold",
            "--connect",
            target,
            "--every-ms",
            &every,
            "--for-ms",
            &total,
            "--connections",
            &n,
            "--timeout-ms",
            &timeout,
        ],
        Some(log),
    )
    .unwrap()
}
