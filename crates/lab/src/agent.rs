//! The program the lab runs inside its hosts: a server that answers with its host's name
//! (so a test sees which real server served it) and a bounded prober.
//!
//! `serve --name NAME --listen ADDR:PORT [--http [--echo] [--fail-path PATH --fail-status
//! CODE] [--hang-path PATH] [--cut-path PATH] [--answer-header 'K: V']...
//! [--chunked-path PATH]]` prints `ready` once it listens (`--listen unix:PATH`: the
//! HTTP server on a UNIX-domain socket). Plain mode writes `NAME\n` and then echoes what
//! it reads; HTTP mode answers every request with status 200 and the body `NAME\n`,
//! keeping the connection open when the client does. `--echo` adds the request head as
//! received (request line, then each header line) to the body, then `body LEN: TEXT`
//! when the request had one (a chunked one decoded); a request for
//! `--fail-path` is answered with `--fail-status` instead of 200; one for `--hang-path` is
//! never answered; one for `--cut-path` gets 100 bytes of a 100,000-byte body, then the
//! connection closes. `--answer-header` lines go into every answer as written; the answer
//! for `--chunked-path` comes chunked.
//!
//! `tunnel --connect ADDR:PORT --path PATH` asks for an upgrade (as WebSocket does); after
//! a 101 it sends three lines through the connection and prints them as echoed. An HTTP
//! server answers any request with an `Upgrade` header with 101 and then echoes lines.
//!
//! `request --connect ADDR:PORT --paths P1,P2,... [--method M] [--header 'K: V']...
//! [--body TEXT]` sends one HTTP/1.1 request per path, each on its own connection, and
//! prints for each `=== STATUS` and the body (or `=== error REASON`). With `--raw TEXT`
//! it sends TEXT instead (`\r`, `\n` and `\xHH` written as such, and `\p` a pause of
//! 300 ms between two writes), once. `--full` prints the
//! answer's head too; `--decode` de-frames a chunked body and inflates a gzip one
//! (`--gzip-hex`: writes a gzip body's bytes in hex instead, for comparing them).
//!
//! `probe --connect ADDR:PORT [--count N] [--timeout-ms MS] [--http] [--sources FIRST/N]`
//! opens N connections one after another and prints the first line each answers with; it
//! exits 1 if any fails. `--sources FIRST/N`: connection i comes from the address FIRST +
//! (i mod N) (the host must hold them), for schedulers that hash the client's address.
//!
//! `watch --connect ADDR:PORT --every-ms MS --for-ms MS [--timeout-ms MS] [--http
//! [--keepalive]]` probes at a fixed pace for a bounded time and prints `UNIX_MICROS
//! answer` (or `UNIX_MICROS error REASON`) per attempt, for measuring outages; with
//! `--keepalive` every request goes on one HTTP/1.1 connection (a new one after an error).
//!
//! `rate --connect ADDR:PORT --for-ms MS [--sources FIRST/N]` opens connections one after
//! another as fast as it can for a bounded time (each reads the first line, then closes)
//! and prints `N ok M failed`.
//!
//! `hold --connect ADDR:PORT --every-ms MS --for-ms MS [--connections N] [--timeout-ms MS]
//! [--line-bytes N] [--sources FIRST/N]` keeps N plain connections (default 1) open for a bounded time, each
//! sending a numbered line (padded to N bytes: full-size segments) at a fixed pace and
//! expecting it echoed within the timeout (default 10 s): prints
//! `connected NAME` for each, and at the end `held N` (the fewest lines any carried; exit
//! 0) or `broken K of N: #I after N: REASON; ...` (exit 1). For showing that established
//! connections survive something.
//!
//! `linger --connect ADDR:PORT --requests N --for-ms MS` makes N HTTP/1.1 requests for
//! `/` one after another on one connection (each response read by its Content-Length),
//! then waits for the server to close it, for at most MS: prints `answered K closed after
//! MS` (or `answered K open`). For keepalive_timeout, client_header_timeout (N = 0) and
//! keepalive_requests.
//!
//! `flood --connect ADDR:PORT --for-ms MS [--size BYTES] [--count N] [--sources FIRST/N]`
//! sends UDP datagrams (64 bytes of payload by default) from one socket (bound to FIRST
//! with `--sources`) as fast as it can for a bounded time and prints `N sent`; with `--count`, exactly N, 2 ms apart, from a socket not connected (so
//! an ICMP error the first draws stops none of the others). `sink --listen ADDR:PORT --for-ms MS` counts the UDP datagrams that arrive
//! for a bounded time, printing `ready` once bound and `N received` at the end. For
//! measuring packets per second through a director.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

fn usage() -> ExitCode {
    eprintln!(
        "usage: serve --name NAME --listen ADDR:PORT|unix:PATH [--http [--echo] [--fail-path P --fail-status N]]\n       tunnel --connect ADDR:PORT --path PATH\n       request --connect ADDR:PORT (--paths P1,P2 | --raw TEXT) [--method M] [--header 'K: V']... [--body TEXT] [--full] [--decode [--gzip-hex]]\n       probe --connect ADDR:PORT [--count N] [--timeout-ms MS] [--http] [--sources FIRST/N]\n       watch --connect ADDR:PORT --every-ms MS --for-ms MS [--timeout-ms MS] [--http]\n       rate --connect ADDR:PORT --for-ms MS [--sources FIRST/N]\n       hold --connect ADDR:PORT --every-ms MS --for-ms MS [--connections N] [--timeout-ms MS] [--line-bytes N] [--sources FIRST/N]\n       linger --connect ADDR:PORT --requests N --for-ms MS\n       flood --connect ADDR:PORT --for-ms MS [--size BYTES] [--count N] [--sources FIRST/N]\n       sink --listen ADDR:PORT --for-ms MS"
    );
    ExitCode::from(2)
}

/// A numeric flag's value, else `default`.
fn flag_number(args: &[String], name: &str, default: u64) -> u64 {
    flag_value(args, name)
        .and_then(|c| c.parse().ok())
        .unwrap_or(default)
}

/// `--connect ADDR:PORT`.
fn connect_flag(args: &[String]) -> Option<SocketAddr> {
    flag_value(args, "--connect").and_then(|a| a.parse().ok())
}

fn flag_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

pub fn main(args: Vec<String>) -> ExitCode {
    let http = args.iter().any(|a| a == "--http");
    match args.first().map(String::as_str) {
        Some("serve") => {
            let (Some(name), Some(listen)) =
                (flag_value(&args, "--name"), flag_value(&args, "--listen"))
            else {
                return usage();
            };
            let unix = listen.strip_prefix("unix:").map(str::to_string);
            let addr = match (&unix, listen.parse::<SocketAddr>()) {
                (Some(_), _) => None,
                (None, Ok(a)) => Some(a),
                (None, Err(_)) => return usage(),
            };
            let behaviour = Behaviour {
                echo: args.iter().any(|a| a == "--echo"),
                fail: flag_value(&args, "--fail-path")
                    .zip(flag_value(&args, "--fail-status").and_then(|c| c.parse::<u16>().ok())),
                hang: flag_value(&args, "--hang-path"),
                cut: flag_value(&args, "--cut-path"),
                headers: args
                    .windows(2)
                    .filter(|w| w[0] == "--answer-header")
                    .map(|w| w[1].clone())
                    .collect(),
                chunked: flag_value(&args, "--chunked-path"),
            };
            let served = match (addr, unix) {
                (Some(addr), _) => serve(&name, addr, http, &behaviour),
                (None, Some(path)) => serve_unix(&name, &path, &behaviour),
                (None, None) => return usage(),
            };
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lab agent: serve {listen}: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some("request") => {
            let Some(addr) = connect_flag(&args) else {
                return usage();
            };
            // --full: the answer's head too, as it came (status line and header lines).
            let full = args.iter().any(|a| a == "--full");
            // --decode: a chunked body de-framed and a gzip one inflated (the head as sent).
            let decode = match (
                args.iter().any(|a| a == "--decode"),
                args.iter().any(|a| a == "--gzip-hex"),
            ) {
                (false, _) => Decode::No,
                (true, false) => Decode::Inflate,
                (true, true) => Decode::Hex,
            };
            let shown = |(status, head, body): (u16, String, String)| {
                if full {
                    format!("=== {status}\n{head}\r\n\r\n{body}")
                } else {
                    format!("=== {status}\n{body}")
                }
            };
            if let Some(raw) = flag_value(&args, "--raw") {
                let parts: Vec<Vec<u8>> = raw.split("\\p").map(unescape).collect();
                match send_raw(addr, &parts, decode) {
                    Ok(answer) => println!("{}", shown(answer)),
                    Err(e) => println!("=== error {e}"),
                }
                return ExitCode::SUCCESS;
            }
            let Some(paths) = flag_value(&args, "--paths") else {
                return usage();
            };
            let method = flag_value(&args, "--method").unwrap_or_else(|| "GET".into());
            let headers: Vec<String> = args
                .windows(2)
                .filter(|w| w[0] == "--header")
                .map(|w| w[1].clone())
                .collect();
            let body = flag_value(&args, "--body");
            for path in paths.split(',') {
                match request(addr, &method, path, &headers, body.as_deref(), decode) {
                    Ok(answer) => println!("{}", shown(answer)),
                    Err(e) => println!("=== error {e}"),
                }
            }
            ExitCode::SUCCESS
        }
        Some("tunnel") => {
            let (Some(addr), Some(path)) = (connect_flag(&args), flag_value(&args, "--path"))
            else {
                return usage();
            };
            match tunnel(addr, &path) {
                Ok(echoed) => {
                    println!("{echoed}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    println!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some("probe") => {
            let Some(addr) = connect_flag(&args) else {
                return usage();
            };
            let count: u32 = flag_value(&args, "--count")
                .and_then(|c| c.parse().ok())
                .unwrap_or(1)
                .min(100_000);
            let timeout = Duration::from_millis(
                flag_value(&args, "--timeout-ms")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(2000),
            );
            let Ok(sources) = sources_flag(&args) else {
                return usage();
            };
            let mut failed = 0;
            for i in 0..count {
                match probe(addr, source(&sources, i as usize), timeout, http) {
                    Ok(line) => println!("{line}"),
                    Err(e) => {
                        println!("error: {e}");
                        failed += 1;
                    }
                }
            }
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Some("watch") => {
            let Some(addr) = connect_flag(&args) else {
                return usage();
            };
            let ms = |name: &str, default: u64| flag_number(&args, name, default);
            let every = Duration::from_millis(ms("--every-ms", 10).max(1));
            let total = Duration::from_millis(ms("--for-ms", 1000).min(600_000));
            let timeout = Duration::from_millis(ms("--timeout-ms", 50).max(1));
            let keepalive = http && args.iter().any(|a| a == "--keepalive");
            let mut conn: Option<BufReader<TcpStream>> = None;
            let start = std::time::Instant::now();
            while start.elapsed() < total {
                let at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_micros())
                    .unwrap_or(0);
                let t = std::time::Instant::now();
                let answer = if keepalive {
                    let r = keepalive_probe(&mut conn, addr, timeout);
                    if r.is_err() {
                        conn = None;
                    }
                    r
                } else {
                    probe(addr, None, timeout, http)
                };
                match answer {
                    Ok(line) => println!("{at} {line}"),
                    Err(e) => println!("{at} error {e}"),
                }
                if let Some(rest) = every.checked_sub(t.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            ExitCode::SUCCESS
        }
        Some("rate") => {
            let Some(addr) = connect_flag(&args) else {
                return usage();
            };
            let total = Duration::from_millis(flag_number(&args, "--for-ms", 1000).min(600_000));
            let Ok(sources) = sources_flag(&args) else {
                return usage();
            };
            let start = std::time::Instant::now();
            let (mut ok, mut failed) = (0u64, 0u64);
            let mut i = 0;
            while start.elapsed() < total {
                match probe(addr, source(&sources, i), Duration::from_millis(500), false) {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
                i += 1;
            }
            println!("{ok} ok {failed} failed");
            ExitCode::SUCCESS
        }
        Some("linger") => {
            let Some(addr) = connect_flag(&args) else {
                return usage();
            };
            let requests = flag_number(&args, "--requests", 1);
            let total = Duration::from_millis(flag_number(&args, "--for-ms", 5000).min(600_000));
            match linger(addr, requests, total) {
                Ok((answered, Some(after))) => {
                    println!("answered {answered} closed after {}", after.as_millis());
                    ExitCode::SUCCESS
                }
                Ok((answered, None)) => {
                    println!("answered {answered} open");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("linger: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some("flood") => {
            let Some(addr) = connect_flag(&args) else {
                return usage();
            };
            let total = Duration::from_millis(flag_number(&args, "--for-ms", 1000).min(600_000));
            let size = flag_number(&args, "--size", 64).clamp(1, 1472) as usize;
            let count = flag_value(&args, "--count").and_then(|c| c.parse::<u64>().ok());
            let Ok(sources) = sources_flag(&args) else {
                return usage();
            };
            let sent = match count {
                Some(n) => send_count(addr, size, n.min(100_000)),
                None => flood(addr, source(&sources, 0), size, total),
            };
            match sent {
                Ok(n) => {
                    println!("{n} sent");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("flood: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some("sink") => {
            let Some(addr) = flag_value(&args, "--listen").and_then(|a| a.parse().ok()) else {
                return usage();
            };
            let total = Duration::from_millis(flag_number(&args, "--for-ms", 1000).min(600_000));
            match sink(addr, total) {
                Ok(n) => {
                    println!("{n} received");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sink: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some("hold") => {
            let Some(addr) = connect_flag(&args) else {
                return usage();
            };
            let ms = |name: &str, default: u64| flag_number(&args, name, default);
            let every = Duration::from_millis(ms("--every-ms", 100).max(1));
            let total = Duration::from_millis(ms("--for-ms", 5000).min(600_000));
            let connections = ms("--connections", 1).clamp(1, 1000);
            let pace = Pace {
                every,
                total,
                timeout: Duration::from_millis(ms("--timeout-ms", 10_000).clamp(100, 120_000)),
                line_bytes: ms("--line-bytes", 0).min(1 << 20) as usize,
            };
            let Ok(sources) = sources_flag(&args) else {
                return usage();
            };
            // Each connection on its own thread, all held for the same time.
            let results: Vec<Result<u64, (u64, String)>> = std::thread::scope(|s| {
                let threads: Vec<_> = (0..connections)
                    .map(|i| {
                        let from = source(&sources, i as usize);
                        s.spawn(move || hold(addr, from, pace))
                    })
                    .collect();
                threads
                    .into_iter()
                    .map(|t| t.join().unwrap_or(Err((0, "panicked".into()))))
                    .collect()
            });
            let broken: Vec<String> = results
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    r.as_ref()
                        .err()
                        .map(|(n, e)| format!("#{i} after {n}: {e}"))
                })
                .collect();
            if broken.is_empty() {
                let least = results.iter().flatten().min().copied().unwrap_or(0);
                println!("held {least}");
                ExitCode::SUCCESS
            } else {
                println!(
                    "broken {} of {connections}: {}",
                    broken.len(),
                    broken.join("; ")
                );
                ExitCode::from(1)
            }
        }
        _ => usage(),
    }
}

/// See `linger` in the module's text: (responses read, how long the idle connection
/// stayed open after them, if the server closed it within `total`).
fn linger(
    addr: SocketAddr,
    requests: u64,
    total: Duration,
) -> std::io::Result<(u64, Option<Duration>)> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(total))?;
    let mut reader = BufReader::new(stream);
    let mut answered = 0;
    for _ in 0..requests {
        let sent = reader
            .get_mut()
            .write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes());
        if sent.is_err() || read_response(&mut reader).is_err() {
            return Ok((answered, Some(Duration::ZERO)));
        }
        answered += 1;
    }
    let idle = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok((answered, Some(idle.elapsed()))),
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Ok((answered, None))
            }
            Err(_) => return Ok((answered, Some(idle.elapsed()))),
        }
    }
}

/// One HTTP/1.1 response read by its Content-Length: (status line, whether it said
/// `Connection: close`, body).
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<(String, bool, Vec<u8>)> {
    let mut status = String::new();
    if reader.read_line(&mut status)? == 0 {
        return Err(std::io::Error::other("closed by the peer"));
    }
    let mut length = 0usize;
    let mut close = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("closed by the peer"));
        }
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if l == "connection: close" {
            close = true;
        }
    }
    let mut body = vec![0u8; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    Ok((status.trim_end().to_string(), close, body))
}

/// A UDP socket on an ephemeral port of the family of `addr`.
fn udp_socket_towards(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let any: std::net::IpAddr = if addr.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    std::net::UdpSocket::bind(SocketAddr::new(any, 0))
}

/// UDP datagrams of `size` bytes to `addr`, as many as one socket sends in `total`. A full
/// send queue (ENOBUFS) or a refused port counts nothing and goes on.
fn flood(
    addr: SocketAddr,
    from: Option<std::net::IpAddr>,
    size: usize,
    total: Duration,
) -> std::io::Result<u64> {
    let socket = match from {
        Some(ip) => std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?,
        None => udp_socket_towards(addr)?,
    };
    socket.connect(addr)?;
    let payload = vec![0x5a; size];
    let start = std::time::Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < total {
        for _ in 0..64 {
            if socket.send(&payload).is_ok() {
                sent += 1;
            }
        }
    }
    Ok(sent)
}

/// Sends exactly `count` datagrams of `size` bytes to `addr`, 2 ms apart, from one socket
/// that is not connected: an ICMP error about one is not reported on the next send.
fn send_count(addr: SocketAddr, size: usize, count: u64) -> std::io::Result<u64> {
    let socket = udp_socket_towards(addr)?;
    let payload = vec![0x5a; size];
    for _ in 0..count {
        socket.send_to(&payload, addr)?;
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(count)
}

/// How many UDP datagrams arrive at `addr` in `total` (from when it is bound).
fn sink(addr: SocketAddr, total: Duration) -> std::io::Result<u64> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    println!("ready");
    std::io::stdout().flush()?;
    let start = std::time::Instant::now();
    let mut buf = [0u8; 2048];
    let mut received = 0u64;
    while start.elapsed() < total {
        if socket.recv(&mut buf).is_ok() {
            received += 1;
        }
    }
    Ok(received)
}

/// How `hold` paces a connection.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// A line every so often...
    every: Duration,
    /// ...for so long...
    total: Duration,
    /// ...each echoed within so long...
    timeout: Duration,
    /// ...each padded to so many bytes (0: as short as it comes).
    line_bytes: usize,
}

/// One connection, a numbered line at `pace`, each echoed back.
fn hold(
    addr: SocketAddr,
    from: Option<std::net::IpAddr>,
    pace: Pace,
) -> Result<u64, (u64, String)> {
    let Pace {
        every,
        total,
        timeout,
        line_bytes,
    } = pace;
    let stream =
        connect_from(addr, from, Duration::from_secs(2)).map_err(|e| (0, e.to_string()))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| (0, e.to_string()))?;
    let mut writer = stream.try_clone().map_err(|e| (0, e.to_string()))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| (0, e.to_string()))?;
    println!("connected {}", line.trim());
    let _ = std::io::stdout().flush();
    let start = std::time::Instant::now();
    let mut n = 0u64;
    while start.elapsed() < total {
        let mut sent = format!("line {n} ");
        let pad = line_bytes.saturating_sub(sent.len() + 1);
        sent.extend(std::iter::repeat_n('x', pad));
        sent.push('\n');
        writer
            .write_all(sent.as_bytes())
            .map_err(|e| (n, e.to_string()))?;
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Err((n, "closed by the peer".into())),
            Ok(_) if line == sent => {}
            Ok(_) => return Err((n, format!("echo {line:?}, sent {sent:?}"))),
            Err(e) => return Err((n, e.to_string())),
        }
        n += 1;
        std::thread::sleep(every);
    }
    Ok(n)
}

/// What an HTTP server does besides answering with its name.
#[derive(Debug, Clone, Default)]
struct Behaviour {
    echo: bool,
    fail: Option<(String, u16)>,
    /// Never answered (the connection is held for 30 s).
    hang: Option<String>,
    /// Answered with a 100,000-byte Content-Length, 100 bytes, then a reset.
    cut: Option<String>,
    /// Header lines every answer carries, as given (names in their case), before its
    /// own Content-Type and framing.
    headers: Vec<String>,
    /// Answered with a chunked body (two chunks).
    chunked: Option<String>,
}

/// One request on its own connection: (status, body).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[String],
    body: Option<&str>,
    decode: Decode,
) -> std::io::Result<(u16, String, String)> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut all = head.into_bytes();
    if let Some(b) = body {
        all.extend_from_slice(b.as_bytes());
    }
    send_on(stream, &all, decode)
}

/// An upgrade request; after a 101, three lines through the tunnel and back. Prints what
/// came back, or why not.
fn tunnel(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut writer = stream.try_clone()?;
    writer.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").as_bytes(),
    )?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    if !status.contains(" 101 ") {
        return Err(std::io::Error::other(format!(
            "no switch: {}",
            status.trim()
        )));
    }
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 && line != "\r\n" {
        line.clear();
    }
    let mut echoed = Vec::new();
    for i in 0..3 {
        writer.write_all(format!("frame {i}\n").as_bytes())?;
        line.clear();
        reader.read_line(&mut line)?;
        echoed.push(line.trim_end().to_string());
    }
    Ok(echoed.join(","))
}

/// Bytes as given (`\\r` and `\\n` written as such), for requests no client would send.
/// `parts` written with a pause of 300 ms between two (`\\p` in `--raw`'s text).
fn send_raw(
    addr: SocketAddr,
    parts: &[Vec<u8>],
    decode: Decode,
) -> std::io::Result<(u16, String, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let (last, first) = parts.split_last().expect("split gives one part at least");
    for part in first {
        stream.write_all(part)?;
        std::thread::sleep(Duration::from_millis(300));
    }
    send_on(stream, last, decode)
}

/// Sends `bytes` and reads until the server closes: (status, head, body).
fn send_on(
    mut stream: TcpStream,
    bytes: &[u8],
    decode: Decode,
) -> std::io::Result<(u16, String, String)> {
    stream.write_all(bytes)?;
    let mut all = Vec::new();
    stream.read_to_end(&mut all)?;
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(all.len());
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let mut body = all.get(split + 4..).unwrap_or_default().to_vec();
    if decode != Decode::No {
        let lines: Vec<String> = head.lines().map(str::to_ascii_lowercase).collect();
        if lines.iter().any(|l| l == "transfer-encoding: chunked") {
            body = dechunk(&body)?;
        }
        if !body.is_empty() && lines.iter().any(|l| l == "content-encoding: gzip") {
            body = if decode == Decode::Hex {
                body.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    .into_bytes()
            } else {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out)?;
                out
            };
        }
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, head, String::from_utf8_lossy(&body).into_owned()))
}

/// What `request` does to a body before printing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    /// As it came.
    No,
    /// De-chunked and inflated.
    Inflate,
    /// De-chunked, a gzip body in hex.
    Hex,
}

/// `--raw`'s text as bytes: `\\r`, `\\n` and `\\xHH` written as such.
fn unescape(raw: &str) -> Vec<u8> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'r' => {
                    out.push(b'\r');
                    i += 2;
                    continue;
                }
                b'n' => {
                    out.push(b'\n');
                    i += 2;
                    continue;
                }
                b'x' if i + 4 <= b.len() => {
                    if let Some(v) = std::str::from_utf8(&b[i + 2..i + 4])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        out.push(v);
                        i += 4;
                        continue;
                    }
                }
                _ => {}
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// A chunked body's data (extensions and trailers dropped).
fn dechunk(mut b: &[u8]) -> std::io::Result<Vec<u8>> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunked body");
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size = std::str::from_utf8(&b[..eol]).map_err(|_| bad())?;
        let size = size.split(';').next().unwrap_or("").trim();
        let n = usize::from_str_radix(size, 16).map_err(|_| bad())?;
        b = &b[eol + 2..];
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(..n).ok_or_else(bad)?);
        b = b.get(n + 2..).ok_or_else(bad)?;
    }
}

fn serve(name: &str, addr: SocketAddr, http: bool, behaviour: &Behaviour) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    let (name, behaviour) = (name.to_string(), behaviour.clone());
    each_connection(listener.incoming(), move |stream: TcpStream| {
        if http {
            stream
                .try_clone()
                .and_then(|out| answer_http(stream, out, &name, &behaviour))
        } else {
            answer_plain(stream, &name)
        }
    })
}

/// Prints `ready`, then answers each connection in a thread of its own.
fn each_connection<S: Send + 'static>(
    incoming: impl Iterator<Item = std::io::Result<S>>,
    answer: impl Fn(S) -> std::io::Result<()> + Send + Sync + 'static,
) -> std::io::Result<()> {
    println!("ready");
    std::io::stdout().flush()?;
    let answer = std::sync::Arc::new(answer);
    for stream in incoming {
        let Ok(stream) = stream else { continue };
        let answer = answer.clone();
        std::thread::spawn(move || {
            let _ = answer(stream);
        });
    }
    Ok(())
}

fn answer_plain(mut stream: TcpStream, name: &str) -> std::io::Result<()> {
    stream.write_all(format!("{name}\n").as_bytes())?;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

/// `serve --listen unix:PATH --http`: the HTTP server on a UNIX-domain socket (made
/// afresh, removed at exit by the lab's scratch directory).
fn serve_unix(name: &str, path: &str, behaviour: &Behaviour) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    let (name, behaviour) = (name.to_string(), behaviour.clone());
    each_connection(
        listener.incoming(),
        move |stream: std::os::unix::net::UnixStream| {
            stream
                .try_clone()
                .and_then(|out| answer_http(stream, out, &name, &behaviour))
        },
    )
}

/// Answers HTTP requests read from `input` on `out` (two handles of one connection).
fn answer_http<S: Read + Write>(
    input: S,
    mut out: S,
    name: &str,
    behaviour: &Behaviour,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(input);
    loop {
        let mut close = false;
        let mut content_length = 0usize;
        let mut first = true;
        let mut seen = String::new();
        let mut path = String::new();
        let mut upgrade = false;
        let mut chunked_body = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                if first {
                    continue;
                }
                break;
            }
            if first && l.ends_with("HTTP/1.0") {
                close = true;
            }
            if first {
                path = l.split_whitespace().nth(1).unwrap_or("").to_string();
            }
            first = false;
            seen.push_str(l);
            seen.push('\n');
            let lower = l.to_ascii_lowercase();
            if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
            if lower.starts_with("upgrade:") {
                upgrade = true;
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked_body = true;
            }
        }
        let body = if chunked_body {
            read_chunked(&mut reader)?
        } else {
            let mut body = vec![0u8; content_length.min(1 << 20)];
            reader.read_exact(&mut body)?;
            body
        };
        if upgrade {
            // A protocol switch (WebSocket's handshake, minus the key check): 101, then
            // the connection echoes what it gets.
            out.write_all(
                format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Served-By: {name}\r\n\r\n").as_bytes(),
            )?;
            let mut line = String::new();
            while reader.read_line(&mut line)? > 0 {
                out.write_all(line.as_bytes())?;
                line.clear();
            }
            return Ok(());
        }
        if behaviour.hang.as_deref() == Some(path.as_str()) {
            std::thread::sleep(Duration::from_secs(30));
            return Ok(());
        }
        if behaviour.cut.as_deref() == Some(path.as_str()) {
            let mut head =
                format!("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n{name}\n").into_bytes();
            head.resize(head.len() + 100, b'x');
            out.write_all(&head)?;
            std::thread::sleep(Duration::from_millis(50));
            return Ok(());
        }
        let mut payload = format!("{name}\n");
        if behaviour.echo {
            payload.push_str(&seen);
            // The body as received (de-chunked), when there is one.
            if !body.is_empty() {
                payload.push_str(&format!(
                    "body {}: {}\n",
                    body.len(),
                    String::from_utf8_lossy(&body)
                ));
            }
        }
        let status = match &behaviour.fail {
            Some((p, code)) if *p == path => format!("{code} Failing"),
            _ => "200 OK".to_string(),
        };
        let extra: String = behaviour
            .headers
            .iter()
            .map(|h| format!("{h}\r\n"))
            .collect();
        let chunked = behaviour.chunked.as_deref() == Some(path.as_str());
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_string()
        } else {
            format!("Content-Length: {}", payload.len())
        };
        let head = format!(
            "HTTP/1.1 {status}\r\n{extra}Content-Type: text/plain\r\n{framing}\r\n{}\r\n",
            if close { "Connection: close\r\n" } else { "" }
        );
        // One write: a second small one would wait for the peer's delayed ACK (Nagle).
        let mut answer = head.into_bytes();
        if chunked {
            let (a, b) = payload.split_at(payload.len() / 2);
            for piece in [a, b] {
                answer.extend_from_slice(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes());
            }
            answer.extend_from_slice(b"0\r\n\r\n");
        } else {
            answer.extend_from_slice(payload.as_bytes());
        }
        out.write_all(&answer)?;
        if close {
            return Ok(());
        }
    }
}

/// A chunked request body, decoded (chunk extensions and trailers skipped).
fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk");
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad());
        }
        let size = line.trim_end().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size.trim(), 16).map_err(|_| bad())?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > 1 << 20 {
            return Err(bad());
        }
        let at = body.len();
        body.resize(at + size, 0);
        reader.read_exact(&mut body[at..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}

/// One HTTP/1.1 request on a kept connection (opened if there is none): the first line of
/// the answer's body.
fn keepalive_probe(
    conn: &mut Option<BufReader<TcpStream>>,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<String> {
    if conn.is_none() {
        let s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        *conn = Some(BufReader::new(s));
    }
    let reader = conn.as_mut().expect("just opened");
    reader
        .get_mut()
        .write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let (status, close, body) = read_response(reader)?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("answered {status}")));
    }
    if close {
        // The server said this was the last answer here (keepalive_requests, say): the
        // next request goes on a new connection, as a browser's would.
        *conn = None;
    }
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
}

/// `--sources FIRST/N`: N consecutive source addresses from FIRST (IPv4), one per
/// connection in turn; none given, the kernel's choice.
fn sources_flag(args: &[String]) -> Result<Option<(std::net::Ipv4Addr, u32)>, ()> {
    let Some(v) = flag_value(args, "--sources") else {
        return Ok(None);
    };
    let (first, n) = v.split_once('/').ok_or(())?;
    let first: std::net::Ipv4Addr = first.parse().map_err(|_| ())?;
    let n: u32 = n.parse().map_err(|_| ())?;
    if n == 0 {
        return Err(());
    }
    Ok(Some((first, n)))
}

/// The source address of connection `i`.
fn source(sources: &Option<(std::net::Ipv4Addr, u32)>, i: usize) -> Option<std::net::IpAddr> {
    sources.map(|(first, n)| {
        std::net::IpAddr::V4(std::net::Ipv4Addr::from(
            u32::from(first).wrapping_add(i as u32 % n),
        ))
    })
}

/// A TCP connection to `addr`, from `from` when given.
fn connect_from(
    addr: SocketAddr,
    from: Option<std::net::IpAddr>,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let Some(from) = from else {
        return TcpStream::connect_timeout(&addr, timeout);
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect_timeout(&addr.into(), timeout)?;
    Ok(socket.into())
}

fn probe(
    addr: SocketAddr,
    from: Option<std::net::IpAddr>,
    timeout: Duration,
    http: bool,
) -> std::io::Result<String> {
    let mut stream = connect_from(addr, from, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    if http {
        stream.write_all(
            format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )?;
        let mut all = String::new();
        stream.read_to_string(&mut all)?;
        let body = all.split("\r\n\r\n").nth(1).unwrap_or("");
        return Ok(body.lines().next().unwrap_or("").to_string());
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}
