//! `fulcrum genhash` against keepalived's own `genhash` (Debian's keepalived package): the
//! same server, the same options, the same digest.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

fn installed(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{program} is not installed; the test command installs it in CI");
        }
        eprintln!("SKIP: {program} is not installed");
    }
    found
}

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
