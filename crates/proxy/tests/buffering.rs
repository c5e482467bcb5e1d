//! proxy_buffering: with it on (nginx's default) a client that reads slowly does not hold
//! the upstream, which sends its whole response at once into memory and a temporary file;
//! with it off the upstream goes at the client's pace. On loopback, no root needed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use fulcrum_nginx_conf::{parse_str, LoadOptions};

mod common;
use common::free_port;

/// Far more than every socket buffer between the upstream and the client together.
const BODY: usize = 64 << 20;

/// An upstream that answers one request with BODY bytes and reports when it has written
/// them all.
fn upstream() -> (SocketAddr, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let mut head = Vec::new();
        let mut b = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&b[..n]),
            }
        }
        let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
        let chunk = vec![b'x'; 1 << 16];
        for _ in 0..BODY / chunk.len() {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = tx.send(());
        // Held open, as a keepalive upstream would.
        let _ = s.read(&mut b);
    });
    (addr, rx)
}

/// Whether the upstream finished writing while the client had read only 64 KiB.
fn upstream_finishes(buffering: &str, temp: &Path) -> bool {
    let (up, done) = upstream();
    let port = free_port();
    let text = format!(
        "events {{}}\nhttp {{\n  access_log off;\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://{up};\n      proxy_buffering {buffering};\n      proxy_temp_path {};\n    }}\n  }}\n}}\n",
        temp.display()
    );
    let loaded = parse_str(Path::new("test.conf"), &text, &LoadOptions::default());
    let cfg = loaded.config.expect("a valid configuration");
    let proxy = fulcrum_proxy::Runtime::start(&cfg).expect("proxy starts");
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client
        .write_all(b"GET /big HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut got = 0;
    let mut b = [0u8; 4096];
    while got < 64 * 1024 {
        got += client.read(&mut b).unwrap();
    }
    let finished = done.recv_timeout(Duration::from_secs(5)).is_ok();
    drop(client);
    proxy.stop();
    finished
}

#[test]
fn buffering_on_frees_the_upstream_from_a_slow_client() {
    let base = std::env::temp_dir().join(format!("fulcrum-spool-test-{}", std::process::id()));
    // Not there yet: the proxy makes it, as nginx makes its temp paths.
    let temp = base.join("proxy_temp");
    assert!(upstream_finishes("on", &temp));
    // The temporary file was unlinked as soon as it was made.
    assert_eq!(std::fs::read_dir(&temp).unwrap().count(), 0);
    assert!(!upstream_finishes("off", &temp));
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_temp_path_that_cannot_be_made_refuses_the_configuration() {
    let text = "events {}\nhttp {\n  access_log off;\n  proxy_temp_path /proc/version/spool;\n  server {\n    listen 127.0.0.1:1;\n    location / {\n      return 200;\n    }\n  }\n}\n";
    let loaded = parse_str(Path::new("test.conf"), text, &LoadOptions::default());
    let err =
        fulcrum_proxy::Runtime::start(&loaded.config.expect("valid syntax")).expect_err("refused");
    assert!(
        err.contains("mkdir() \"/proc/version/spool\" failed"),
        "{err}"
    );
}

fn start(port: u16, location: &str, upstream: SocketAddr, http: &str) -> fulcrum_proxy::Runtime {
    let text = format!(
        "events {{}}\nhttp {{\n  access_log off;\n{http}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://{upstream};\n{location}\n    }}\n  }}\n}}\n"
    );
    let loaded = parse_str(Path::new("test.conf"), &text, &LoadOptions::default());
    fulcrum_proxy::Runtime::start(&loaded.config.expect("a valid configuration"))
        .expect("proxy starts")
}

#[test]
fn send_timeout_gives_up_on_a_client_that_stops_reading() {
    let (up, _done) = upstream();
    let port = free_port();
    let proxy = start(port, "      proxy_buffering off;", up, "  send_timeout 1s;");
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client
        .write_all(b"GET /big HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    // Not reading: the proxy's writes stall once the socket buffers are full.
    std::thread::sleep(Duration::from_secs(3));
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = 0usize;
    let mut b = vec![0u8; 1 << 16];
    loop {
        match client.read(&mut b) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("still open after {got} bytes: {e}"),
        }
    }
    assert!(got < BODY, "the whole body came: the proxy did not give up");
    proxy.stop();
}

#[test]
fn proxy_send_timeout_gives_up_on_an_upstream_that_stops_reading() {
    // An upstream that takes the connection and never reads from it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(20));
        drop(held);
    });
    let port = free_port();
    let proxy = start(
        port,
        "      proxy_send_timeout 1s;\n      proxy_read_timeout 30s;",
        up,
        "  client_max_body_size 64m;",
    );
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = vec![b'x'; 32 << 20];
    let started = std::time::Instant::now();
    write!(
        client,
        "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    client.write_all(&body).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = [0u8; 12];
    client.read_exact(&mut answer).unwrap();
    assert_eq!(
        &answer,
        b"HTTP/1.1 504",
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    proxy.stop();
}

/// An upstream that sends each state of what it has received so far, and answers 200
/// once the request ends with `end`.
fn recording_upstream(end: &'static [u8]) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        while !got.ends_with(end) {
            match s.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&b[..n]),
            }
            let _ = tx.send(got.clone());
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
        let _ = s.read(&mut b);
    });
    (addr, rx)
}

/// Sends a request's head and the first part of its body, waits `wait` for the upstream
/// to see that part, then sends the rest: what the upstream had seen by then, and
/// everything it got.
fn upload(
    location: &str,
    head: &str,
    first: &[u8],
    rest: &[u8],
    end: &'static [u8],
) -> (Option<Vec<u8>>, Vec<u8>, String) {
    let (up, seen) = recording_upstream(end);
    let port = free_port();
    let proxy = start(port, location, up, "");
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.write_all(head.as_bytes()).unwrap();
    client.write_all(first).unwrap();
    let mut early = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        let Ok(got) = seen.recv_timeout(left) else {
            break;
        };
        let whole = got.windows(first.len()).any(|w| w == first);
        early = Some(got);
        if whole {
            break;
        }
    }
    client.write_all(rest).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = client.read_to_string(&mut answer);
    let mut all = early.clone().unwrap_or_default();
    while let Ok(got) = seen.recv_timeout(Duration::from_millis(200)) {
        all = got;
    }
    proxy.stop();
    (early, all, answer)
}

#[test]
fn request_buffering_off_streams_a_chunked_body_chunked() {
    let (early, all, answer) = upload(
        "      proxy_request_buffering off;\n      proxy_http_version 1.1;",
        "POST /up HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        b"a\r\nfirst-part\r\n",
        b"9\r\nlast-part\r\n0\r\n\r\n",
        b"0\r\n\r\n",
    );
    let early =
        String::from_utf8_lossy(&early.expect("the upstream saw the request before its end"))
            .into_owned();
    assert!(early.contains("first-part"), "{early}");
    assert!(!early.contains("last-part"), "{early}");
    let all = String::from_utf8_lossy(&all).into_owned();
    assert!(all.contains("\r\nTransfer-Encoding: chunked\r\n"), "{all}");
    assert!(!all.contains("Content-Length"), "{all}");
    assert!(
        all.ends_with("\r\n\r\na\r\nfirst-part\r\n9\r\nlast-part\r\n0\r\n\r\n"),
        "{all}"
    );
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
}

#[test]
fn request_buffering_off_streams_a_body_of_known_length_with_it() {
    let (early, all, answer) = upload(
        "      proxy_request_buffering off;",
        "POST /up HTTP/1.1\r\nHost: test\r\nContent-Length: 19\r\nConnection: close\r\n\r\n",
        b"first-part",
        b"last-part",
        b"last-part",
    );
    let early =
        String::from_utf8_lossy(&early.expect("the upstream saw the request before its end"))
            .into_owned();
    assert!(early.ends_with("\r\n\r\nfirst-part"), "{early}");
    let all = String::from_utf8_lossy(&all).into_owned();
    assert!(all.contains("\r\nContent-Length: 19\r\n"), "{all}");
    assert!(all.ends_with("\r\n\r\nfirst-partlast-part"), "{all}");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
}

#[test]
fn request_buffering_on_sends_nothing_before_the_whole_body() {
    let (early, all, answer) = upload(
        "",
        "POST /up HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        b"a\r\nfirst-part\r\n",
        b"9\r\nlast-part\r\n0\r\n\r\n",
        b"first-partlast-part",
    );
    assert!(
        early.is_none(),
        "{:?}",
        early.as_deref().map(String::from_utf8_lossy)
    );
    let all = String::from_utf8_lossy(&all).into_owned();
    assert!(all.contains("\r\nContent-Length: 19\r\n"), "{all}");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
}
