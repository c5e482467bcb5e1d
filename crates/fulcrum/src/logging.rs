//! Where the daemon's log goes and in what form: text or JSON lines on stderr; each line
//! as a message to syslog (`/dev/log`, facility daemon or the one `--log-facility`
//! names); or each event to journald with its fields as journal fields
//! (`tracing-journald`: its native protocol, large messages through a memfd).
//!
//! Both sockets are addressed by path at every message, never connected once: when
//! rsyslog or journald restarts, the next message reaches the new one.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::ValueEnum;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    Stderr,
    Syslog,
    Journald,
}

/// A syslog facility: `daemon`, `local0` to `local7`, or keepalived's `-S` numbers 0 to 7
/// (LOCAL0 to LOCAL7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(u8);

impl Facility {
    pub const DAEMON: Facility = Facility(3);

    /// LOCAL0 to LOCAL7, as keepalived's `-S N` names them.
    pub fn local(n: u8) -> Option<Facility> {
        (n <= 7).then_some(Facility(16 + n))
    }
}

/// The name [`Facility::from_str`] reads back.
impl std::fmt::Display for Facility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            1 => f.write_str("user"),
            5 => f.write_str("syslog"),
            n @ 16..=23 => write!(f, "local{}", n - 16),
            _ => f.write_str("daemon"),
        }
    }
}

impl std::str::FromStr for Facility {
    type Err = String;

    fn from_str(s: &str) -> Result<Facility, String> {
        let local = |n: &str| n.parse::<u8>().ok().and_then(Facility::local);
        match s {
            "daemon" => Some(Facility::DAEMON),
            "user" => Some(Facility(1)),
            "syslog" => Some(Facility(5)),
            _ => s.strip_prefix("local").map_or_else(|| local(s), local),
        }
        .ok_or_else(|| format!("'{s}' is not a syslog facility (daemon, user, syslog, local0 to local7, or 0 to 7)"))
    }
}

/// The longest line sent as one syslog message: rsyslog's default maxMessageSize is 8 KiB.
const SYSLOG_LINE_MAX: usize = 8000;

/// The syslog sink: an unbound datagram socket that addresses `/dev/log` by path at each
/// message.
#[derive(Debug, Clone)]
pub struct Syslog {
    socket: Arc<UnixDatagram>,
    path: PathBuf,
    facility: Facility,
}

impl Syslog {
    pub fn new(path: &Path, facility: Facility) -> std::io::Result<Syslog> {
        let socket = UnixDatagram::unbound()?;
        // Said now rather than lost later: nothing listens there.
        socket.send_to(&[], path)?;
        Ok(Syslog {
            socket: Arc::new(socket),
            path: path.to_path_buf(),
            facility,
        })
    }

    /// The datagrams for one event's text: RFC 3164, one per line (syslog has no multi-line
    /// message), each line cut at [`SYSLOG_LINE_MAX`] bytes.
    fn datagrams(&self, severity: u8, text: &str) -> Vec<Vec<u8>> {
        let pri = self.facility.0 * 8 + severity;
        let pid = std::process::id();
        text.trim_end()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let mut end = line.len().min(SYSLOG_LINE_MAX);
                while !line.is_char_boundary(end) {
                    end -= 1;
                }
                format!("<{pri}>fulcrum[{pid}]: {}", &line[..end]).into_bytes()
            })
            .collect()
    }
}

/// syslog's severity for a tracing level.
fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// One event's text, sent when the formatter is done with it.
pub struct Message {
    sink: Syslog,
    severity: u8,
    buf: Vec<u8>,
}

impl Write for Message {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        for d in self.sink.datagrams(self.severity, &text) {
            // A syslog daemon that is down loses the line, as with syslog(3).
            let _ = self.sink.socket.send_to(&d, &self.sink.path);
        }
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = Message;

    fn make_writer(&'a self) -> Message {
        Message {
            sink: self.clone(),
            severity: 6,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Message {
        Message {
            sink: self.clone(),
            severity: severity(meta.level()),
            buf: Vec::new(),
        }
    }
}

/// Sets the global subscriber to append to a file (nginx's `-e FILE`), as text.
pub fn init_file(level: &str, path: &Path) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("invalid --log-level '{level}'"))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open() \"{}\" failed", path.display()))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .init();
    Ok(())
}

/// Sets the global subscriber. When syslog's or journald's socket is not there (a
/// container, a chroot), the log goes to standard error instead, with a line that says so:
/// the daemon runs rather than refusing to start over its log.
pub fn init(level: &str, format: Format, target: Target, facility: Facility) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("invalid --log-level '{level}'"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let stderr = |builder: tracing_subscriber::fmt::SubscriberBuilder<_, _, _>| match format {
        Format::Text => builder.with_writer(std::io::stderr).init(),
        Format::Json => builder.json().with_writer(std::io::stderr).init(),
    };
    match target {
        Target::Stderr => stderr(builder),
        // syslog stamps the time and knows the level already.
        Target::Syslog => match Syslog::new(Path::new("/dev/log"), facility) {
            Ok(sink) => match format {
                Format::Text => builder
                    .with_ansi(false)
                    .without_time()
                    .with_level(false)
                    .with_writer(sink)
                    .init(),
                Format::Json => builder.json().with_writer(sink).init(),
            },
            Err(e) => {
                eprintln!("fulcrum: --log-target syslog: /dev/log: {e}; logging to standard error");
                stderr(builder)
            }
        },
        // Each event's fields become journal fields (FULCRUM_VRID=51), the message
        // MESSAGE; the format does not apply.
        Target::Journald => match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer
                    .with_syslog_identifier("fulcrum".into())
                    .with_field_prefix(Some("FULCRUM".into()));
                let filter = tracing_subscriber::EnvFilter::try_new(level)?;
                tracing_subscriber::registry()
                    .with(filter)
                    .with(layer)
                    .init();
            }
            Err(e) => {
                eprintln!("fulcrum: --log-target journald: /run/systemd/journal/socket: {e}; logging to standard error");
                stderr(builder)
            }
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Server {
        dir: PathBuf,
        path: PathBuf,
        socket: UnixDatagram,
    }

    impl Server {
        fn new(name: &str) -> Server {
            let dir =
                std::env::temp_dir().join(format!("fulcrum-log-{}-{name}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join("sock");
            let _ = std::fs::remove_file(&path);
            let socket = UnixDatagram::bind(&path).unwrap();
            socket
                .set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            Server { dir, path, socket }
        }

        fn recv(&self) -> String {
            let mut buf = vec![0u8; 65536];
            let n = self.socket.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn say(sink: &Syslog, level: Level, text: &[u8]) {
        let mut m = sink.make_writer();
        m.severity = severity(&level);
        m.write_all(text).unwrap();
    }

    #[test]
    fn syslog_messages_carry_facility_and_severity() {
        let server = Server::new("sev");
        let sink = Syslog::new(&server.path, Facility::DAEMON).unwrap();
        let _ = server.recv(); // the probe at start
        say(&sink, Level::WARN, b"quorum lost\n");
        assert_eq!(
            server.recv(),
            format!("<28>fulcrum[{}]: quorum lost", std::process::id())
        );
        // keepalived -S 1: LOCAL1.
        let sink = Syslog::new(&server.path, "1".parse().unwrap()).unwrap();
        let _ = server.recv();
        say(&sink, Level::ERROR, b"x");
        assert!(server.recv().starts_with("<139>"));
    }

    #[test]
    fn syslog_reaches_a_restarted_daemon() {
        let server = Server::new("restart");
        let sink = Syslog::new(&server.path, Facility::DAEMON).unwrap();
        let _ = server.recv();
        say(&sink, Level::INFO, b"before");
        assert!(server.recv().ends_with("before"));
        // rsyslog restarts: a new socket at the same path.
        std::fs::remove_file(&server.path).unwrap();
        say(&sink, Level::INFO, b"lost while down");
        let again = UnixDatagram::bind(&server.path).unwrap();
        again
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        say(&sink, Level::INFO, b"after");
        let mut buf = [0u8; 512];
        let n = again.recv(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("after"));
    }

    #[test]
    fn long_and_multi_line_messages_are_sent_line_by_line() {
        let server = Server::new("long");
        let sink = Syslog::new(&server.path, Facility::DAEMON).unwrap();
        let _ = server.recv();
        let long = "é".repeat(10_000);
        say(
            &sink,
            Level::ERROR,
            format!("reload refused:\n{long}\n").as_bytes(),
        );
        assert!(server.recv().ends_with("]: reload refused:"));
        let second = server.recv();
        let body = second.split_once("]: ").unwrap().1;
        assert_eq!(body.len(), SYSLOG_LINE_MAX);
        assert!(body.chars().all(|c| c == 'é'));
    }

    #[test]
    fn facilities_read_as_keepalived_and_syslog_name_them() {
        assert_eq!("daemon".parse(), Ok(Facility::DAEMON));
        assert_eq!("local7".parse(), Ok(Facility(23)));
        assert_eq!("0".parse(), Ok(Facility(16)));
        assert!("8".parse::<Facility>().is_err());
        assert!("kern".parse::<Facility>().is_err());
    }
}
