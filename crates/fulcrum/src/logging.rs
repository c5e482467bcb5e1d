//! Where the daemon's log goes and in what form: text or JSON lines on stderr, or each
//! event as one message to syslog (`/dev/log`, facility daemon) or to journald (its native
//! protocol on `/run/systemd/journal/socket`, with PRIORITY and SYSLOG_IDENTIFIER).

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::ValueEnum;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

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

/// A datagram sink: one message per event.
#[derive(Debug, Clone)]
pub struct Datagrams {
    socket: Arc<UnixDatagram>,
    path: PathBuf,
    journald: bool,
}

impl Datagrams {
    pub fn connect(path: &Path, journald: bool) -> std::io::Result<Datagrams> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(Datagrams {
            socket: Arc::new(socket),
            path: path.to_path_buf(),
            journald,
        })
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
    sink: Datagrams,
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

impl Message {
    /// The datagram: RFC 3164 for syslog, the native protocol for journald (a value
    /// with newlines is sent length-prefixed, as the protocol requires).
    pub fn encode(&self) -> Vec<u8> {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end();
        if self.sink.journald {
            let mut out = format!(
                "PRIORITY={}\nSYSLOG_IDENTIFIER=fulcrum\nSYSLOG_PID={}\n",
                self.severity,
                std::process::id()
            )
            .into_bytes();
            if text.contains('\n') {
                out.extend_from_slice(b"MESSAGE\n");
                out.extend_from_slice(&(text.len() as u64).to_le_bytes());
                out.extend_from_slice(text.as_bytes());
                out.push(b'\n');
            } else {
                out.extend_from_slice(format!("MESSAGE={text}\n").as_bytes());
            }
            out
        } else {
            // Facility daemon (3).
            format!(
                "<{}>fulcrum[{}]: {}",
                3 * 8 + self.severity,
                std::process::id(),
                text
            )
            .into_bytes()
        }
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let _ = self.sink.socket.send(&self.encode());
        }
    }
}

impl<'a> MakeWriter<'a> for Datagrams {
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

impl std::fmt::Display for Datagrams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())
    }
}

/// Sets the global subscriber.
pub fn init(level: &str, format: Format, target: Target) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("invalid --log-level '{level}'"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let sink = match target {
        Target::Stderr => None,
        Target::Syslog => Some(
            Datagrams::connect(Path::new("/dev/log"), false)
                .context("--log-target syslog: /dev/log")?,
        ),
        Target::Journald => Some(
            Datagrams::connect(Path::new("/run/systemd/journal/socket"), true)
                .context("--log-target journald: /run/systemd/journal/socket")?,
        ),
    };
    match (sink, format) {
        (None, Format::Text) => builder.with_writer(std::io::stderr).init(),
        (None, Format::Json) => builder.json().with_writer(std::io::stderr).init(),
        // syslog and journald stamp the time and know the level already.
        (Some(s), Format::Text) => builder
            .with_ansi(false)
            .without_time()
            .with_level(false)
            .with_writer(s)
            .init(),
        (Some(s), Format::Json) => builder.json().with_writer(s).init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(journald: bool) -> (UnixDatagram, Datagrams, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("fulcrum-log-{}-{journald}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let sink = Datagrams::connect(&path, journald).unwrap();
        (server, sink, dir)
    }

    #[test]
    fn syslog_messages_carry_facility_and_severity() {
        let (server, sink, dir) = pair(false);
        let mut m = sink.make_writer();
        m.severity = severity(&Level::WARN);
        m.write_all(b"quorum lost\n").unwrap();
        drop(m);
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert_eq!(
            text,
            format!("<28>fulcrum[{}]: quorum lost", std::process::id())
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn journald_messages_use_the_native_protocol() {
        let (server, sink, dir) = pair(true);
        let mut m = sink.make_writer();
        m.severity = severity(&Level::ERROR);
        m.write_all(b"reload refused:\nline 2").unwrap();
        drop(m);
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        let got = &buf[..n];
        assert!(got.starts_with(b"PRIORITY=3\nSYSLOG_IDENTIFIER=fulcrum\n"));
        let body = b"reload refused:\nline 2";
        let mut tail = b"MESSAGE\n".to_vec();
        tail.extend_from_slice(&(body.len() as u64).to_le_bytes());
        tail.extend_from_slice(body);
        tail.push(b'\n');
        assert!(got.ends_with(&tail), "{}", String::from_utf8_lossy(got));
        let _ = std::fs::remove_dir_all(dir);
    }
}
