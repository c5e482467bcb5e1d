//! `fulcrum genhash` against keepalived's own `genhash` (Debian's keepalived package): the
//! same server, the same options, the same digest.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

use common::installed;
use fulcrum_e2e as common;

/// A loopback server that answers every request with `response` and records the requests.
fn serve(response: &'static [u8]) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(response);
            if tx.send(req).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

fn digest_line(program: &str, args: &[String]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .rfind(|l| l.len() == 32 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("{program} {args:?} printed no digest: {stdout}"))
        .to_string()
}

#[test]
fn same_digest_and_request_as_keepalived_genhash() {
    if !installed("genhash") {
        return;
    }
    let fulcrum = env!("CARGO_BIN_EXE_fulcrum");
    let responses: [&'static [u8]; 4] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello\n\r\n0\r\n\r\n",
        b"HTTP/1.1 503 Unavailable\r\nContent-Length: 3\r\n\r\nbad",
        b"HTTP/1.0 200 OK\r\n\r\n",
    ];
    let option_sets: [&[&str]; 3] = [
        &[],
        &["-V", "www.example.org", "-P", "1.1"],
        &["-P", "1.0c"],
    ];
    for response in responses {
        for options in option_sets {
            let (addr, requests) = serve(response);
            let mut args: Vec<String> = [
                "-s",
                &addr.ip().to_string(),
                "-p",
                &addr.port().to_string(),
                "-u",
                "/health?x=1",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(options.iter().map(|s| s.to_string()));
            let theirs = digest_line("genhash", &args);
            let their_request = requests.recv().unwrap();
            let mut ours_args = vec!["genhash".to_string()];
            ours_args.extend(args.iter().cloned());
            let ours = digest_line(fulcrum, &ours_args);
            let our_request = requests.recv().unwrap();
            assert_eq!(ours, theirs, "digest for {options:?} and {response:?}");
            assert_eq!(
                String::from_utf8_lossy(&our_request),
                String::from_utf8_lossy(&their_request),
                "request for {options:?}"
            );
        }
    }
}

/// `openssl s_server -HTTP`, serving files from a scratch directory; killed on drop.
struct TlsServer {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn same_digest_as_keepalived_genhash_over_tls() {
    if !installed("genhash") || !installed("openssl") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("fulcrum-genhash-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // s_server -HTTP sends a file as the whole response, header included.
    std::fs::write(
        dir.join("page.txt"),
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nserved over TLS\n",
    )
    .unwrap();
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=www.example.org",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "1",
        ])
        .current_dir(&dir)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(made.success());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("openssl")
        .args([
            "s_server", "-quiet", "-HTTP", "-cert", "cert.pem", "-key", "key.pem", "-accept",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = TlsServer { child, dir };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "openssl s_server did not start"
        );
        thread::sleep(std::time::Duration::from_millis(50));
    }
    let port = port.to_string();
    for extra in [&[][..], &["-I", "-V", "www.example.org"][..]] {
        let mut args: Vec<String> = ["-S", "-s", "127.0.0.1", "-p", &port, "-u", "/page.txt"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let theirs = digest_line("genhash", &args);
        let mut ours_args = vec!["genhash".to_string()];
        ours_args.extend(args.iter().cloned());
        let ours = digest_line(env!("CARGO_BIN_EXE_fulcrum"), &ours_args);
        assert_eq!(ours, theirs, "{extra:?}");
        assert_eq!(ours, "347e5f6744f8664b57a55fc96c947517", "MD5 of the body");
    }
}
