//! Helpers shared by the integration tests. Each test binary uses some of them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A scratch directory, removed on drop (also when the test panics).
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("fulcrum-test-{}-{name}", std::process::id()));
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
        env!("CARGO_BIN_EXE_fulcrum").as_ref(),
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
#[allow(dead_code)]
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
#[allow(dead_code)]
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
#[allow(dead_code)]
pub fn ctl(sock: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .arg("ctl")
        .arg("--control")
        .arg(sock)
        .args(args)
        .output()
        .unwrap()
}
