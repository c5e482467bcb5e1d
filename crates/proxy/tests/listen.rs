//! `listen ... reuseport`: one listening socket per worker thread, with SO_REUSEPORT, as
//! nginx binds one per worker process. On loopback, no root needed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use fulcrum_nginx_conf::{parse_str, LoadOptions};

mod common;
use common::free_port;

/// Listening TCP sockets on `port` in this network namespace (/proc/net/tcp, state 0A).
fn listening(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "0A"
        })
        .count()
}

fn start(port: u16, reuseport: bool) -> fulcrum_proxy::Runtime {
    start_with(port, reuseport, 2)
}

fn start_with(port: u16, reuseport: bool, workers: u32) -> fulcrum_proxy::Runtime {
    let text = format!(
        "worker_processes {workers};\nevents {{}}\nhttp {{\n  access_log off;\n  server {{\n    listen 127.0.0.1:{port}{};\n    location / {{\n      return 200 \"ok\\n\";\n    }}\n  }}\n}}\n",
        if reuseport { " reuseport" } else { "" }
    );
    let loaded = parse_str(Path::new("test.conf"), &text, &LoadOptions::default());
    fulcrum_proxy::Runtime::start(&loaded.config.expect("a valid configuration"))
        .expect("proxy starts")
}

fn get(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: t\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Whether another socket with SO_REUSEPORT may bind the address too.
fn shareable(port: u16) -> bool {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_reuse_port(true).unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    s.bind(&addr.into()).is_ok()
}

#[test]
fn reuseport_binds_a_socket_per_worker() {
    let port = free_port();
    let proxy = start(port, true);
    assert_eq!(listening(port), 2);
    assert!(shareable(port));
    for _ in 0..20 {
        assert!(get(port).ends_with("ok\n"));
    }
    proxy.stop();

    // One worker: one socket, still shareable.
    let port = free_port();
    let proxy = start_with(port, true, 1);
    assert_eq!(listening(port), 1);
    assert!(shareable(port));
    assert!(get(port).ends_with("ok\n"));
    proxy.stop();

    let port = free_port();
    let proxy = start(port, false);
    assert_eq!(listening(port), 1);
    assert!(!shareable(port));
    assert!(get(port).ends_with("ok\n"));
    proxy.stop();
}

#[test]
fn a_connection_stays_open_after_a_chunked_request() {
    let port = free_port();
    let proxy = start(port, false);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(
        // A body `return` does not read, of two chunks: dropped, and the connection goes on.
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while got.matches("ok\n").count() < 2 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed after: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(got.matches("HTTP/1.1 200").count(), 2, "{got}");
    assert!(
        !got.to_ascii_lowercase().contains("connection: close"),
        "{got}"
    );
    proxy.stop();
}

#[test]
fn past_worker_connections_new_connections_wait() {
    let port = free_port();
    let text = format!(
        "worker_processes 1;\nevents {{\n  worker_connections 2;\n}}\nhttp {{\n  access_log off;\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      return 200 \"ok\\n\";\n    }}\n  }}\n}}\n"
    );
    let loaded = parse_str(Path::new("test.conf"), &text, &LoadOptions::default());
    let proxy = fulcrum_proxy::Runtime::start(&loaded.config.unwrap()).unwrap();
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    // The third is in the listen backlog, not served.
    let mut third = TcpStream::connect(("127.0.0.1", port)).unwrap();
    third
        .write_all(b"GET / HTTP/1.0\r\nHost: t\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(std::time::Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(third.read(&mut buf).is_err(), "served past the limit");
    // One of the first two goes: the third is taken and answered.
    drop(held);
    third
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut out = String::new();
    third.read_to_string(&mut out).unwrap();
    assert!(out.ends_with("ok\n"), "{out}");
    proxy.stop();
}

#[test]
fn keepalive_timeouts_second_value_is_announced() {
    let port = free_port();
    let text = format!(
        "events {{}}\nhttp {{\n  access_log off;\n  keepalive_timeout 75s 60s;\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      return 200 \"ok\\n\";\n    }}\n  }}\n}}\n"
    );
    let loaded = parse_str(Path::new("test.conf"), &text, &LoadOptions::default());
    let proxy = fulcrum_proxy::Runtime::start(&loaded.config.unwrap()).unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(head.contains("\r\nkeep-alive: timeout=60\r\n"), "{head}");
    // Not on an HTTP/1.0 answer, which closes.
    assert!(!get(port).to_ascii_lowercase().contains("keep-alive:"));
    proxy.stop();
}

/// The CPUs each `fulcrum-proxy` thread of this process may run on (Cpus_allowed_list).
fn proxy_thread_cpus() -> Vec<String> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != "fulcrum-proxy" {
            continue;
        }
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        if let Some(l) = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        {
            out.push(l.trim().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn worker_cpu_affinity_binds_each_worker_thread() {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    if !online.trim().starts_with("0-") {
        eprintln!("SKIP worker_cpu_affinity_binds_each_worker_thread: one CPU ({online:?})");
        return;
    }
    let port = free_port();
    let text = format!(
        "worker_processes 2;\nworker_cpu_affinity 10 01;\nevents {{}}\nhttp {{\n  access_log off;\n  server {{\n    listen 127.0.0.1:{port};\n    return 200 \"ok\\n\";\n  }}\n}}\n"
    );
    let loaded = parse_str(Path::new("test.conf"), &text, &LoadOptions::default());
    let proxy = fulcrum_proxy::Runtime::start(&loaded.config.expect("a valid configuration"))
        .expect("proxy starts");
    assert!(get(port).ends_with("ok\n"));
    // Threads of other tests' proxies may run meanwhile: these two are among them.
    let cpus = proxy_thread_cpus();
    assert!(
        cpus.contains(&"0".to_string()) && cpus.contains(&"1".to_string()),
        "{cpus:?}"
    );
    proxy.stop();
}
