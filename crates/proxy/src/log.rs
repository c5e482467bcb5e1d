//! The access log (nginx's `combined` format or a `log_format` of the http block, one
//! line per request once its response body has been sent) and the error log.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use fulcrum_nginx_conf::model::{AccessLog, Part, Template};
use tracing::warn;

use crate::request::Req;
use crate::site::{ErrorLogTarget, Level, Resolved, Site, VServer, COMBINED};

#[derive(Clone)]
enum Piece {
    Text(String),
    BodyBytes,
    RequestTime,
}

/// A log line waiting for the body's size (carried in the response's extensions).
#[derive(Clone)]
pub struct AccessLine {
    pieces: Vec<Piece>,
    files: Vec<String>,
    start: std::time::Instant,
}

impl std::fmt::Debug for AccessLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLine")
            .field("files", &self.files)
            .finish()
    }
}

/// Now in UTC (the daemon does not read the time zone): year, month, day, hour, minute,
/// second.
fn civil_now() -> (i64, i64, i64, i64, i64, i64) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    (year, month, day, rem / 3600, rem / 60 % 60, rem % 60)
}

/// (year, month, day) of a day counted from 1970-01-01 (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `$time_local`: 25/Nov/2026:20:15:02 +0000.
fn time_local() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day, h, m, s) = civil_now();
    format!(
        "{day:02}/{}/{year}:{h:02}:{m:02}:{s:02} +0000",
        MONTHS[(month - 1) as usize],
    )
}

/// Appends a line to a log file, opened once per path (a failure to open is said once).
fn append(path: &str, line: &str, what: &str) {
    static FILES: Mutex<Option<HashMap<String, Option<std::fs::File>>>> = Mutex::new(None);
    let mut files = FILES.lock().unwrap_or_else(|e| e.into_inner());
    let files = files.get_or_insert_with(HashMap::new);
    let f = files.entry(path.to_string()).or_insert_with(|| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| warn!("{what} {path}: {e}"))
            .ok()
    });
    if let Some(f) = f {
        let _ = f.write_all(line.as_bytes());
    }
}

/// What an error log line says about the request it happened in, as nginx's does.
pub(crate) struct ErrorContext<'a> {
    pub target: &'a ErrorLogTarget,
    pub r: &'a Req,
    pub server: &'a str,
}

impl ErrorContext<'_> {
    /// `2026/11/25 23:20:01 [error] PID#TID: *CONN MESSAGE, client: ADDR, server: NAME,
    /// request: "LINE", upstream: "URL", host: "HOST"`, as nginx writes it.
    pub fn write(&self, level: Level, message: &str, upstream: Option<&str>) {
        if level < self.target.level || self.target.path == "/dev/null" {
            return;
        }
        let (y, mo, d, h, mi, s) = civil_now();
        let pid = std::process::id();
        let r = self.r;
        let mut line = format!(
            "{y}/{mo:02}/{d:02} {h:02}:{mi:02}:{s:02} [{}] {pid}#{pid}: *{} {message}, client: {}, server: {}, request: \"{} {} {}\"",
            level.name(),
            r.conn.id,
            r.conn.remote.ip(),
            self.server,
            r.method_str(),
            r.request_uri,
            r.protocol,
        );
        if let Some(u) = upstream {
            line.push_str(&format!(", upstream: \"{u}\""));
        }
        if let Some(host) = r.host_header() {
            line.push_str(&format!(", host: \"{host}\""));
        }
        line.push('\n');
        if self.target.path == "stderr" {
            let _ = std::io::stderr().write_all(line.as_bytes());
        } else {
            append(&self.target.path, &line, "error_log");
        }
    }
}

impl AccessLine {
    pub(crate) fn new(
        site: &Site,
        server: &VServer,
        res: &Resolved,
        r: &Req,
        status: u16,
        upstream_addr: &str,
    ) -> Option<AccessLine> {
        let mut files = Vec::new();
        let mut format = None;
        for l in &res.access_log {
            match l {
                AccessLog::Off => return None,
                AccessLog::File { path, format: f } => {
                    files.push(path.clone());
                    format = format.or(f.clone());
                }
            }
        }
        if files.is_empty() {
            return None;
        }
        let text = match format.as_deref() {
            None | Some("combined") => COMBINED.to_string(),
            Some(name) => site
                .log_formats
                .get(name)
                .cloned()
                .unwrap_or_else(|| COMBINED.to_string()),
        };
        let time = time_local();
        let mut ctx = r.ctx(site, server.name(), "");
        ctx.status = status;
        ctx.time_local = &time;
        ctx.upstream_addr = upstream_addr;
        let t = Template::new(text);
        let mut pieces = Vec::new();
        for p in t.parts() {
            match p {
                Part::Literal(s) => pieces.push(Piece::Text(s.to_string())),
                Part::Variable("body_bytes_sent") | Part::Variable("bytes_sent") => {
                    pieces.push(Piece::BodyBytes)
                }
                Part::Variable("request_time") => pieces.push(Piece::RequestTime),
                Part::Variable(v) => {
                    let value = ctx.var(v, 0).filter(|x| !x.is_empty());
                    pieces.push(Piece::Text(value.unwrap_or_else(|| "-".into())));
                }
            }
        }
        Some(AccessLine {
            pieces,
            files,
            start: r.start,
        })
    }

    pub(crate) fn write(&self, bytes: u64) {
        let mut line = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => line.push_str(t),
                Piece::BodyBytes => line.push_str(&bytes.to_string()),
                Piece::RequestTime => {
                    line.push_str(&format!("{:.3}", self.start.elapsed().as_secs_f64()))
                }
            }
        }
        line.push('\n');
        for path in &self.files {
            append(path, &line, "access_log");
        }
    }
}
