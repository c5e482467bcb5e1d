//! The request table: malformed, ambiguous and smuggling requests, each sent to Debian's
//! nginx 1.22 and to our proxy (both in front of one recording upstream on loopback) and
//! read by our HTTP/1 codec alone. All three must agree on every answer and on the exact
//! bytes that reach the upstream (nginx's upstream request: `HTTP/1.0`, `Host`,
//! `Connection: close`, `Content-Length` when there is a body, then the client's headers
//! as received, minus the hop-by-hop ones; the body de-chunked).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fulcrum_http1::{
    write, BodyDecoder, Chunk, Headers, Limits, RequestParser, ResponseParser, Version,
};

mod common;
use common::free_port;

/// What one implementation did with one case: the statuses it answered (in order,
/// `0.9` responses as 9) and each request the upstream received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    answers: Vec<u16>,
    upstream: Vec<String>,
}

const CASES: &[(&str, &[u8])] = &[
    ("plain", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("two Host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("Host case twice", b"GET / HTTP/1.1\r\nHost: a\r\nhOST: a\r\n\r\n"),
    ("lowercase method", b"get / HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("unknown method", b"FOO-BAR_X /x HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("digit in method", b"G3T / HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("TE tab", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n"),
    ("TE trailing space", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    ("TE upper", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    ("TE xchunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    ("TE list", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ("TE twice", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE twice, other", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-encoding: identity\r\n\r\n0\r\n\r\n"),
    ("TE space before colon", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
    ("TE folded", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"),
    ("TE leading space line", b"POST / HTTP/1.1\r\nHost: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE underscore", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc"),
    ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("CL.TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX"),
    ("TE.CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"),
    ("CL twice equal", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"),
    ("CL twice differ", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy"),
    ("CL list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx"),
    ("CL negative", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
    ("CL plus", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx"),
    ("CL hex", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x1\r\n\r\nx"),
    ("CL empty", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n"),
    ("CL huge", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n"),
    ("CL zero", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
    ("CL leading zeros", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 003\r\n\r\nabc"),
    ("CL then smuggled", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("pipelined", b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("chunked with extension and trailer", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n"),
    ("chunked bare LF", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n"),
    ("chunked size too long", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n"),
    ("chunked bad size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
    ("chunked negative", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n"),
    ("chunked overflow", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
    ("chunked space size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n"),
    ("chunked then smuggled", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
    ("HTTP/1.10", b"GET / HTTP/1.10\r\nHost: a\r\n\r\n"),
    ("HTTP/01.1", b"GET / HTTP/01.1\r\nHost: a\r\n\r\n"),
    ("http lowercase", b"GET / http/1.1\r\nHost: a\r\n\r\n"),
    ("HTTP/0.9", b"GET /x\r\n"),
    ("HTTP/0.9 POST", b"POST /x\r\n"),
    ("space before colon", b"GET / HTTP/1.1\r\nHost: a\r\nFoo : b\r\n\r\n"),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nFoo: b\r\n c\r\n\r\n"),
    ("bare LF head", b"GET / HTTP/1.1\nHost: a\nFoo: b\n\n"),
    ("bare CR", b"GET / HTTP/1.1\rHost: a\r\n\r\n"),
    ("no Host 1.1", b"GET / HTTP/1.1\r\n\r\n"),
    ("no Host 1.0", b"GET / HTTP/1.0\r\n\r\n"),
    ("CONNECT authority", b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("CONNECT path", b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("TRACE", b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("absolute form", b"GET http://b.example/x?y HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("absolute form no path", b"GET http://b.example HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("absolute form bad host", b"GET http://b..example/ HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("absolute form IPv6", b"GET http://[::1]:81/z HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("asterisk", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("duplicate If-Modified-Since", b"GET / HTTP/1.1\r\nHost: a\r\nIf-Modified-Since: x\r\nIf-Modified-Since: y\r\n\r\n"),
    ("duplicate Authorization", b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: x\r\nAuthorization: y\r\n\r\n"),
    ("duplicate Expect", b"GET / HTTP/1.1\r\nHost: a\r\nExpect: x\r\nExpect: y\r\n\r\n"),
    ("duplicate If-None-Match", b"GET / HTTP/1.1\r\nHost: a\r\nIf-None-Match: x\r\nIf-None-Match: y\r\n\r\n"),
    ("duplicate User-Agent, Cookie", b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\nuser-agent: y\r\nCookie: a\r\nCookie: b\r\n\r\n"),
    ("invalid names dropped", b"GET / HTTP/1.1\r\nHost: a\r\nX_Y: x\r\nX.Z: y\r\nX@: z\r\nOk-Name: 1\r\n\r\n"),
    ("no colon", b"GET / HTTP/1.1\r\nHost: a\r\nFooBar\r\n\r\n"),
    ("control byte in URI", b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("space in URI", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("DEL in URI", b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("high bytes in URI", b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("NUL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n"),
    ("control byte in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n"),
    ("high bytes in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: \xff\xfe\r\n\r\n"),
    ("values trimmed", b"GET / HTTP/1.1\r\nHost: a\r\nX:   v  w   \r\nY:\r\n\r\n"),
    ("Host with dots", b"GET / HTTP/1.1\r\nHost: a..b\r\n\r\n"),
    ("Host with slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
    ("Host empty", b"GET / HTTP/1.1\r\nHost:\r\n\r\n"),
    ("Host port only", b"GET / HTTP/1.1\r\nHost: :80\r\n\r\n"),
    ("Host trailing dot", b"GET / HTTP/1.1\r\nHost: a.b.\r\n\r\n"),
    ("leading empty lines", b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("extra spaces", b"GET  /   HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("tab separator", b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("space after version", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n"),
    ("Expect 100-continue", b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx"),
    ("Connection and hop-by-hop", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: x\r\nX-After: 1\r\n\r\n"),
    ("mixed case kept", b"GET / HTTP/1.1\r\nHost: a\r\nX-MiXeD-CaSe: Value\r\nx-lower: v\r\nX-UPPER: V\r\n\r\n"),
];

/// The upstream request nginx builds from a request our codec read (default proxy
/// settings: `proxy_pass http://UPSTREAM;`, HTTP/1.0, buffered body).
fn upstream_request(
    method: &[u8],
    uri: &[u8],
    headers: &Headers,
    body: Option<&[u8]>,
    host: &str,
) -> String {
    const DROPPED: [&str; 8] = [
        "host",
        "connection",
        "content-length",
        "transfer-encoding",
        "te",
        "keep-alive",
        "expect",
        "upgrade",
    ];
    let mut list = Headers::new();
    list.push("Host", host.to_string());
    list.push("Connection", "close");
    if let Some(b) = body {
        list.push("Content-Length", b.len().to_string());
    }
    for h in headers {
        if !DROPPED.iter().any(|d| h.is(d)) {
            list.push(h.name.clone(), h.value.clone());
        }
    }
    let mut out = BytesMut::new();
    write::request_head(&mut out, method, uri, Version::HTTP_10, &list);
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What nginx would do, as our codec reads the bytes.
fn codec(raw: &[u8], upstream_host: &str) -> Seen {
    let mut seen = Seen {
        answers: Vec::new(),
        upstream: Vec::new(),
    };
    let mut p = RequestParser::new(Limits::default());
    let mut buf = BytesMut::from(raw);
    loop {
        let head = match p.parse(&mut buf) {
            Ok(Some(h)) => h,
            Ok(None) => return seen,
            Err(r) => {
                seen.answers.push(if r.http09 {
                    9
                } else if r.status == 494 {
                    400
                } else {
                    r.status
                });
                return seen;
            }
        };
        let has_body = head.headers.contains("content-length")
            || head.framing == fulcrum_http1::Framing::Chunked;
        let mut d = BodyDecoder::new(head.framing);
        let mut body = Vec::new();
        loop {
            match d.decode(&mut buf, usize::MAX) {
                Ok(Some(Chunk::Data(b))) => body.extend_from_slice(&b),
                Ok(Some(Chunk::End)) => break,
                // The client closed mid-body: nginx answers nothing.
                Ok(None) => return seen,
                Err(_) => {
                    seen.answers.push(400);
                    return seen;
                }
            }
        }
        if head.expect_continue {
            seen.answers.push(100);
        }
        seen.upstream.push(upstream_request(
            &head.method_name,
            &head.uri,
            &head.headers,
            has_body.then_some(&body[..]),
            upstream_host,
        ));
        seen.answers.push(if head.version == Version::HTTP_09 {
            9
        } else {
            200
        });
        if !head.keep_alive {
            return seen;
        }
    }
}

/// A loopback upstream that records each request and answers 200 with `ok`.
struct Recorder {
    port: u16,
    got: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let log = got.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { return };
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut buf = BytesMut::new();
                    // Room for any head nginx sends on.
                    let mut p = RequestParser::new(Limits {
                        header_buffer: 1 << 20,
                        ..Limits::default()
                    });
                    let mut chunk = [0u8; 65536];
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let head = loop {
                        if let Ok(Some(h)) = p.parse(&mut buf) {
                            break h;
                        }
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let want = match head.framing {
                        fulcrum_http1::Framing::Length(n) => n as usize,
                        _ => 0,
                    };
                    while buf.len() < want {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    // The head as it came, from the parsed fields' own bytes.
                    let mut out = BytesMut::new();
                    let mut hs = Headers::new();
                    for h in &head.headers {
                        hs.push(h.name.clone(), h.value.clone());
                    }
                    write::request_head(
                        &mut out,
                        &head.method_name,
                        &head.target,
                        head.version,
                        &hs,
                    );
                    out.extend_from_slice(&buf);
                    log.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&out).into_owned());
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                });
            }
        });
        Recorder { port, got }
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.got.lock().unwrap())
    }
}

struct Nginx {
    child: Child,
    dir: std::path::PathBuf,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx(upstream: u16) -> Option<Nginx> {
    if !std::path::Path::new("/usr/sbin/nginx").exists() {
        if std::env::var_os("CI").is_some() {
            panic!("nginx is not installed; the test command installs it in CI");
        }
        eprintln!("SKIP: nginx is not installed");
        return None;
    }
    // A free port can be taken by another test between free_port() and nginx's bind;
    // nginx then exits at once, and the port may even answer for someone else: an nginx
    // that is not running once its port answers is started again on another port.
    for _ in 0..5 {
        if let Some(n) = start_nginx(upstream) {
            return Some(n);
        }
    }
    panic!("nginx did not start on a free port in five tries");
}

fn start_nginx(upstream: u16) -> Option<Nginx> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("fulcrum-http1-table-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
         server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://127.0.0.1:{upstream}; }} }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new("/usr/sbin/nginx")
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut n = Nginx { child, dir, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if n.child.try_wait().ok().flatten().is_some() {
            return None;
        }
        assert!(Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // nginx logs and exits when its bind fails; give it the time to.
    std::thread::sleep(Duration::from_millis(100));
    if n.child.try_wait().ok().flatten().is_some() {
        return None;
    }
    Some(n)
}

/// Sends `raw` and reads the answers until the server closes, or until it has sent
/// `expected` complete answers and nothing more for 100 ms (a keep-alive connection
/// stays open), or 3 s pass.
fn exchange(port: u16, raw: &[u8], expected: usize) -> Vec<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(raw).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut got = BytesMut::new();
    let mut chunk = [0u8; 65536];
    loop {
        let (answers, complete) = answers(&got);
        let wait = if complete && answers.len() >= expected {
            Duration::from_millis(100)
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        if wait.is_zero() {
            return answers;
        }
        s.set_read_timeout(Some(wait)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return answers,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The statuses of the answers in `bytes`, and whether the last one is complete.
fn answers(bytes: &[u8]) -> (Vec<u16>, bool) {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while !buf.is_empty() {
        let mut p = ResponseParser::new(1 << 16, false);
        let head = match p.parse(&mut buf) {
            Ok(Some(h)) => h,
            _ => return (out, false),
        };
        if head.http09 {
            out.push(9);
            return (out, false);
        }
        out.push(head.status);
        let mut d = BodyDecoder::new(head.framing);
        loop {
            match d.decode(&mut buf, usize::MAX) {
                Ok(Some(Chunk::Data(_))) => {}
                Ok(Some(Chunk::End)) => break,
                _ => return (out, false),
            }
        }
    }
    (out, true)
}

/// Our proxy with the same configuration as [`nginx`]'s; its port.
fn fulcrum(upstream: u16) -> (fulcrum_proxy::Runtime, u16) {
    let port = free_port();
    let text = format!(
        "events {{}}\nhttp {{\n  access_log off;\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://127.0.0.1:{upstream};\n    }}\n  }}\n}}\n"
    );
    let loaded = fulcrum_nginx_conf::parse_str(
        std::path::Path::new("table.conf"),
        &text,
        &fulcrum_nginx_conf::LoadOptions::default(),
    );
    let rt = fulcrum_proxy::Runtime::start(&loaded.config.expect("a valid configuration"))
        .expect("proxy starts");
    (rt, port)
}

/// One case three ways: what the codec reads, what nginx does, what our proxy does.
fn observe(
    recorder: &Recorder,
    nginx: u16,
    proxy: u16,
    raw: &[u8],
    upstream_host: &str,
) -> (Seen, Seen, Seen) {
    recorder.take();
    let ours = codec(raw, upstream_host);
    // The upstream's threads record before they answer; the proxies answer after.
    let theirs = Seen {
        answers: exchange(nginx, raw, ours.answers.len()),
        upstream: recorder.take(),
    };
    let proxied = Seen {
        answers: exchange(proxy, raw, ours.answers.len()),
        upstream: recorder.take(),
    };
    (ours, theirs, proxied)
}

#[test]
fn nginx_our_proxy_and_the_codec_agree_on_every_case() {
    let recorder = Recorder::start();
    let Some(nginx) = nginx(recorder.port) else {
        return;
    };
    let (_proxy, proxy_port) = fulcrum(recorder.port);
    assert!(CASES.len() >= 60, "the table has {} cases", CASES.len());
    let host = format!("127.0.0.1:{}", recorder.port);
    let mut wrong = Vec::new();
    for (name, raw) in CASES {
        let (ours, theirs, proxied) = observe(&recorder, nginx.port, proxy_port, raw, &host);
        if theirs != ours || theirs != proxied {
            wrong.push(format!(
                "{name}:\n  nginx: {theirs:?}\n  codec: {ours:?}\n  proxy: {proxied:?}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases differ:\n{}",
        wrong.len(),
        CASES.len(),
        wrong.join("\n")
    );
}

#[test]
fn header_buffer_limits_agree_with_nginx() {
    let recorder = Recorder::start();
    let Some(nginx) = nginx(recorder.port) else {
        return;
    };
    let (_proxy, proxy_port) = fulcrum(recorder.port);
    let host = format!("127.0.0.1:{}", recorder.port);
    // Request lines and header lines around the buffer sizes (1k, then 8k), and heads
    // that need more than four large buffers.
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for n in [1000, 1023, 1024, 1025, 8180, 8191, 8192, 8193, 9000] {
        let mut raw = b"GET /".to_vec();
        raw.resize(n - 11, b'a');
        raw.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
        cases.push((format!("request line {n}"), raw));
        let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ".to_vec();
        raw.resize(raw.len() + n - 10, b'v');
        raw.extend_from_slice(b"\r\n\r\n");
        cases.push((format!("header line {n}"), raw));
    }
    for (lines, size) in [(4, 7000), (5, 6000), (3, 8100), (40, 900), (100, 300)] {
        let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..lines {
            raw.extend_from_slice(format!("X-{i}: ").as_bytes());
            raw.resize(raw.len() + size, b'v');
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"\r\n");
        cases.push((format!("{lines} lines of {size}"), raw));
    }
    let mut wrong = Vec::new();
    for (name, raw) in &cases {
        let (ours, theirs, proxied) = observe(&recorder, nginx.port, proxy_port, raw, &host);
        if theirs.answers != ours.answers
            || theirs.upstream.len() != ours.upstream.len()
            || theirs != proxied
        {
            wrong.push(format!(
                "{name}: nginx {:?}, codec {:?}, proxy {:?}",
                theirs.answers, ours.answers, proxied.answers
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
