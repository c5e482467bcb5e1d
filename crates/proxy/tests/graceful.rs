//! A graceful stop (QUIT, or a reload retiring a worker) and HTTP/2: every open HTTP/2
//! connection gets a GOAWAY with NO_ERROR and is closed once its streams are done, as
//! nginx does, so the stop does not wait on clients that keep a connection open. On
//! loopback, no root needed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use fulcrum_nginx_conf::{parse_str, LoadOptions};

mod common;
use common::free_port;

fn start(port: u16) -> fulcrum_proxy::Runtime {
    let text = format!(
        "events {{}}\nhttp {{\n  access_log off;\n  server {{\n    listen 127.0.0.1:{port} http2;\n    location / {{\n      return 200 \"ok\\n\";\n    }}\n  }}\n}}\n"
    );
    let loaded = parse_str(Path::new("test.conf"), &text, &LoadOptions::default());
    fulcrum_proxy::Runtime::start(&loaded.config.expect("a valid configuration"))
        .expect("proxy starts")
}

/// One frame: (type, flags, stream, payload); None at the end of the connection.
fn frame(s: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).ok()?;
    Some((head[3], head[4], stream, payload))
}

/// An HTTP/2 connection (prior knowledge) that has exchanged SETTINGS and is idle.
fn idle_h2(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    // An empty SETTINGS frame.
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    // The server's SETTINGS (type 4) comes first.
    let (kind, _, _, _) = frame(&mut s).expect("the server's SETTINGS");
    assert_eq!(kind, 4);
    s
}

/// Reads up to the end of the connection, as a client would: the GOAWAY frames seen,
/// as (last stream, error code).
fn goaways(s: &mut TcpStream) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    while let Some((kind, flags, _, payload)) = frame(s) {
        // A client answers PINGs: the server's second GOAWAY waits for that answer.
        if kind == 6 && flags & 1 == 0 && payload.len() == 8 {
            let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
            ack.extend_from_slice(&payload);
            let _ = s.write_all(&ack);
        }
        if kind == 7 && payload.len() >= 8 {
            let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
            let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
            out.push((last & 0x7fff_ffff, code));
        }
    }
    out
}

#[test]
fn quit_sends_goaway_to_http2_connections() {
    let port = free_port();
    let proxy = start(port);
    let mut client = idle_h2(port);
    let stopper =
        std::thread::spawn(move || proxy.quit(Duration::from_secs(20), &AtomicBool::new(false)));
    let seen = goaways(&mut client);
    assert!(
        seen.iter().any(|(_, code)| *code == 0),
        "a GOAWAY with NO_ERROR: {seen:?}"
    );
    // The connection closed, so the stop did not wait out its grace.
    assert_eq!(stopper.join().unwrap(), 0, "connections left open");
}

#[test]
fn a_retired_worker_sends_goaway_too() {
    let port = free_port();
    let proxy = start(port);
    let mut client = idle_h2(port);
    let stopper =
        std::thread::spawn(move || proxy.retire(Duration::from_secs(20), &AtomicBool::new(false)));
    let seen = goaways(&mut client);
    assert!(seen.iter().any(|(_, code)| *code == 0), "{seen:?}");
    assert_eq!(stopper.join().unwrap(), 0, "connections left open");
}
