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
    /// An `$upstream_*` value that grows with the body.
    Upstream(
        String,
        std::sync::Arc<std::sync::Mutex<crate::upvars::UpstreamLog>>,
    ),
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

/// The two ways nginx writes a time in its logs, both in local time: `$time_local`
/// (`25/Nov/2026:20:15:02 +0100`) and the error log's `2026/11/25 20:15:02`.
#[derive(Clone, PartialEq, Debug)]
pub(crate) struct LogTimes {
    pub access: String,
    pub error: String,
    pub iso8601: String,
}

/// `$time_iso8601`: now, local, with its offset.
pub(crate) fn iso8601_now() -> String {
    LogTimes::now().iso8601
}

impl LogTimes {
    pub(crate) fn at(unix: i64, tz: &jiff::tz::TimeZone) -> LogTimes {
        let t = jiff::Timestamp::from_second(unix)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned(tz.clone());
        LogTimes {
            access: t.strftime("%d/%b/%Y:%H:%M:%S %z").to_string(),
            error: t.strftime("%Y/%m/%d %H:%M:%S").to_string(),
            iso8601: t.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        }
    }

    /// Now, in the system's zone (TZ or /etc/localtime), worked out once a second per
    /// thread as nginx caches its time strings.
    fn now() -> LogTimes {
        thread_local! {
            static CACHE: std::cell::RefCell<Option<(i64, LogTimes)>> = const { std::cell::RefCell::new(None) };
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            match &*c {
                Some((at, times)) if *at == secs => times.clone(),
                _ => {
                    let times = LogTimes::at(secs, &jiff::tz::TimeZone::system());
                    *c = Some((secs, times.clone()));
                    times
                }
            }
        })
    }
}

/// The log files open for appending, by path. Each is opened at its first line; [`reopen`]
/// closes them all so the next line opens the path anew (logrotate renames the file,
/// then sends SIGUSR1, as it does to nginx).
static FILES: Mutex<Option<HashMap<String, Option<std::fs::File>>>> = Mutex::new(None);

/// Closes every access and error log file: the next line written to each opens its path
/// again, creating it if logrotate moved it away. SIGUSR1 and every reload call this.
pub fn reopen() {
    let mut files = FILES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(files) = files.as_mut() {
        files.clear();
    }
}

/// Opens `paths` now rather than at their first line: a worker process does this before
/// it gives up the privileges that may be needed to create them. What cannot be opened is
/// said, and tried again at the first line.
pub fn open(paths: &[String]) {
    let mut files = FILES.lock().unwrap_or_else(|e| e.into_inner());
    let files = files.get_or_insert_with(HashMap::new);
    for path in paths {
        if files.get(path).is_some_and(Option::is_some) {
            continue;
        }
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => {
                files.insert(path.clone(), Some(f));
            }
            Err(e) => warn!("log file {path}: {e}"),
        }
    }
}

/// Appends a line to a log file (a failure to open is said once until the next reopen).
fn append(path: &str, line: &str, what: &str) {
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
        let time = LogTimes::now().error;
        let pid = std::process::id();
        let r = self.r;
        let mut line = format!(
            "{time} [{}] {pid}#{pid}: *{} {message}, client: {}, server: {}, request: \"{} {} {}\"",
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
        let time = LogTimes::now().access;
        let mut ctx = r.ctx(site, server.name(), "");
        ctx.status = status;
        ctx.time_local = &time;
        let t = Template::new(text);
        let mut pieces = Vec::new();
        for p in t.parts() {
            match p {
                Part::Literal(s) => pieces.push(Piece::Text(s.to_string())),
                Part::Variable("body_bytes_sent") | Part::Variable("bytes_sent") => {
                    pieces.push(Piece::BodyBytes)
                }
                Part::Variable("request_time") => pieces.push(Piece::RequestTime),
                Part::Variable(v) if crate::upvars::deferred(v) => {
                    pieces.push(Piece::Upstream(v.to_string(), r.upstream.clone()))
                }
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
                Piece::Upstream(name, log) => {
                    let v = log.lock().ok().and_then(|l| l.value(name));
                    line.push_str(v.as_deref().filter(|v| !v.is_empty()).unwrap_or("-"));
                }
            }
        }
        line.push('\n');
        for path in &self.files {
            append(path, &line, "access_log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times_are_local_with_the_offset() {
        // 2026-12-04 17:51:55 UTC.
        let utc = LogTimes::at(1_796_406_715, &jiff::tz::TimeZone::UTC);
        assert_eq!(utc.access, "04/Dec/2026:17:51:55 +0000");
        assert_eq!(utc.error, "2026/12/04 17:51:55");
        let tz = jiff::tz::TimeZone::fixed(jiff::tz::offset(-5));
        let east = LogTimes::at(1_796_406_715, &tz);
        assert_eq!(east.access, "04/Dec/2026:12:51:55 -0500");
        assert_eq!(east.error, "2026/12/04 12:51:55");
    }

    #[test]
    fn reopen_follows_a_renamed_file() {
        let dir = std::env::temp_dir().join(format!("fulcrum-reopen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("access.log");
        let path = log.to_str().unwrap();
        append(path, "one\n", "access_log");
        std::fs::rename(&log, dir.join("access.log.1")).unwrap();
        append(path, "two\n", "access_log");
        reopen();
        append(path, "three\n", "access_log");
        let old = std::fs::read_to_string(dir.join("access.log.1")).unwrap();
        let new = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(old, "one\ntwo\n");
        assert_eq!(new, "three\n");
    }
}
