//! Kept upstream connections the peer closes: a request that may have reached the peer
//! goes again on a new connection only when it is idempotent; a POST gets 502, as nginx
//! sends no non-idempotent request twice. On loopback, no root needed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use fulcrum_nginx_conf::{parse_str, LoadOptions};

mod common;
use common::free_port;

/// An upstream that answers the first request on each connection and closes the
/// connection, unanswered, on the second. The request lines it received, in order.
fn upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                for n in 0.. {
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match s.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => head.push(b[0]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head).to_string();
                    let length: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0u8; length];
                    let _ = s.read_exact(&mut body);
                    log.lock()
                        .unwrap()
                        .push(text.lines().next().unwrap_or("").to_string());
                    if n == 1 {
                        return;
                    }
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                }
            });
        }
    });
    (addr, seen)
}

fn status(port: u16, request: &[u8]) -> u16 {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    c.write_all(request).unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_closed_kept_connection_costs_a_get_nothing_and_a_post_a_502() {
    let (up, seen) = upstream();
    let port = free_port();
    let text = format!(
        "events {{}}\nhttp {{\n  access_log off;\n  upstream u {{\n    server {up};\n    keepalive 4;\n  }}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://u;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
    );
    let loaded = parse_str(Path::new("test.conf"), &text, &LoadOptions::default());
    let proxy = fulcrum_proxy::Runtime::start(&loaded.config.expect("a valid configuration"))
        .expect("proxy starts");
    let get = b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let post = b"POST /p HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx";
    // The first GET opens a connection and leaves it kept; the second is sent on it, the
    // upstream closes it unanswered, and the GET goes again on a new one.
    assert_eq!(status(port, get), 200);
    assert_eq!(status(port, get), 200);
    // The POST goes on the new connection, kept: closed unanswered, it is not sent again.
    assert_eq!(status(port, post), 502);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "GET /a HTTP/1.1",
            "GET /a HTTP/1.1",
            "GET /a HTTP/1.1",
            "POST /p HTTP/1.1"
        ]
    );
    proxy.stop();
}

/// An upstream on a UNIX-domain socket: its connections are kept as a TCP peer's are.
#[test]
fn connections_to_a_unix_socket_are_kept_and_reused() {
    let dir = std::env::temp_dir().join(format!("fulcrum-ka-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("up.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let accepted = Arc::new(Mutex::new(0u32));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            *count.lock().unwrap() += 1;
            std::thread::spawn(move || loop {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => head.push(b[0]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            });
        }
    });
    let port = free_port();
    let text = format!(
        "events {{}}\nhttp {{\n  access_log off;\n  upstream u {{\n    server unix:{};\n    keepalive 4;\n  }}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://u;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
        path.display()
    );
    let loaded = parse_str(Path::new("test.conf"), &text, &LoadOptions::default());
    let proxy = fulcrum_proxy::Runtime::start(&loaded.config.expect("a valid configuration"))
        .expect("proxy starts");
    for _ in 0..3 {
        assert_eq!(
            status(
                port,
                b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            ),
            200
        );
    }
    assert_eq!(
        *accepted.lock().unwrap(),
        1,
        "one connection for three requests"
    );
    proxy.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
