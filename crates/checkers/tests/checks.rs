//! The checkers against small local servers that accept, refuse, hang, reset, answer with
//! the wrong status or body, trickle bytes or never stop sending.

use std::net::SocketAddr;
use std::time::Duration;

use fulcrum_checkers::{check_http, check_tcp, Limits, Target, Transport};
use fulcrum_health::Outcome;
use fulcrum_keepalived_conf::model::{HttpProtocol, StatusRange, UrlCheck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone)]
enum Behaviour {
    /// Read the request, send these bytes, close.
    Respond(&'static [u8]),
    /// Read the request and never answer.
    Hang,
    /// Read the request and reset the connection.
    Reset,
    /// Send the bytes one at a time, 5 ms apart.
    Trickle(&'static [u8]),
    /// Send a header, then body bytes forever.
    Endless,
}

async fn read_request(s: &mut TcpStream) -> Vec<u8> {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    req
}

/// A server on 127.0.0.1 that treats every connection the same way.
async fn serve(behaviour: Behaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let behaviour = behaviour.clone();
            tokio::spawn(async move {
                read_request(&mut s).await;
                match behaviour {
                    Behaviour::Respond(bytes) => {
                        let _ = s.write_all(bytes).await;
                    }
                    Behaviour::Hang => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    Behaviour::Reset => {
                        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    }
                    Behaviour::Trickle(bytes) => {
                        for b in bytes {
                            if s.write_all(&[*b]).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    Behaviour::Endless => {
                        let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await;
                        let chunk = [b'x'; 4096];
                        while s.write_all(&chunk).await.is_ok() {}
                    }
                }
            });
        }
    });
    addr
}

const OK_HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n";
/// MD5 of "hello\n", as `genhash` prints it.
const HELLO_MD5: &str = "b1946ac92492d2347c6235b4d2611184";

fn url(path: &str, digest: Option<&str>, status: &[(u16, u16)]) -> UrlCheck {
    UrlCheck {
        path: path.into(),
        digest: digest.map(str::to_string),
        status_code: status
            .iter()
            .map(|&(first, last)| StatusRange { first, last })
            .collect(),
        virtualhost: None,
        regex: None,
        regex_no_match: false,
    }
}

async fn http(addr: SocketAddr, urls: &[UrlCheck]) -> Outcome {
    http_limits(addr, urls, Limits::default()).await
}

async fn http_limits(addr: SocketAddr, urls: &[UrlCheck], limits: Limits) -> Outcome {
    tokio::time::timeout(
        Duration::from_secs(5),
        check_http(
            &Target::new(addr),
            Transport::Plain,
            urls,
            None,
            HttpProtocol::V1_0,
            limits,
        ),
    )
    .await
    .expect("the check finished")
}

fn failure(outcome: Outcome) -> String {
    match outcome {
        Outcome::Failure(reason) => reason,
        other => panic!("expected a failure, got {other:?}"),
    }
}

async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn tcp_check_up_and_refused() {
    let up = serve(Behaviour::Hang).await;
    assert_eq!(
        check_tcp(&Target::new(up)).await,
        Outcome::Success { weight_delta: 0 }
    );
    let down = refused_addr().await;
    assert_eq!(
        failure(check_tcp(&Target::new(down)).await),
        format!("TCP connection to {down} refused")
    );
}

#[tokio::test]
async fn tcp_check_from_a_bind_address() {
    let up = serve(Behaviour::Hang).await;
    let target = Target {
        connect: up,
        bind: Some("127.0.0.2:0".parse().unwrap()),
    };
    assert_eq!(
        check_tcp(&target).await,
        Outcome::Success { weight_delta: 0 }
    );
}

#[tokio::test]
async fn http_status_and_digest() {
    let addr = serve(Behaviour::Respond(OK_HELLO)).await;
    assert_eq!(
        http(addr, &[url("/", None, &[])]).await,
        Outcome::Success { weight_delta: 0 }
    );
    assert_eq!(
        http(addr, &[url("/", Some(HELLO_MD5), &[(200, 200)])]).await,
        Outcome::Success { weight_delta: 0 }
    );
    assert_eq!(
        failure(
            http(
                addr,
                &[url("/", Some("00112233445566778899aabbccddeeff"), &[])]
            )
            .await
        ),
        format!(
            "digest mismatch for /: got {HELLO_MD5}, expected 00112233445566778899aabbccddeeff"
        )
    );
    assert_eq!(
        failure(http(addr, &[url("/health", None, &[(201, 204), (301, 301)])]).await),
        "HTTP status 200, expected 201-204 301 for /health"
    );
}

#[tokio::test]
async fn http_wrong_status_fails_by_default_outside_2xx() {
    let addr = serve(Behaviour::Respond(
        b"HTTP/1.1 503 Service Unavailable\r\n\r\n",
    ))
    .await;
    assert_eq!(
        failure(http(addr, &[url("/", None, &[])]).await),
        "HTTP status 503, expected 200-299 for /"
    );
}

#[tokio::test]
async fn every_url_must_pass() {
    let addr = serve(Behaviour::Respond(OK_HELLO)).await;
    let urls = [
        url("/a", None, &[]),
        url("/b", Some(HELLO_MD5), &[(404, 404)]),
    ];
    assert_eq!(
        failure(http(addr, &urls).await),
        "HTTP status 200, expected 404 for /b"
    );
}

#[tokio::test]
async fn http_refused_reset_and_garbage() {
    let down = refused_addr().await;
    assert_eq!(
        failure(http(down, &[url("/", None, &[])]).await),
        format!("TCP connection to {down} refused")
    );
    let reset = serve(Behaviour::Reset).await;
    let reason = failure(http(reset, &[url("/", None, &[])]).await);
    assert!(
        reason.contains("reset") || reason.contains("closed before the end of the HTTP header"),
        "{reason}"
    );
    let garbage = serve(Behaviour::Respond(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")).await;
    assert_eq!(
        failure(http(garbage, &[url("/", None, &[])]).await),
        format!("malformed HTTP status line from {garbage}")
    );
}

#[tokio::test]
async fn a_hung_server_never_completes_the_check() {
    // The timing machine's timeout drops the check; here, a short timeout stands in.
    let addr = serve(Behaviour::Hang).await;
    let target = Target::new(addr);
    let urls = [url("/", None, &[])];
    let check = check_http(
        &target,
        Transport::Plain,
        &urls,
        None,
        HttpProtocol::V1_0,
        Limits::default(),
    );
    assert!(tokio::time::timeout(Duration::from_millis(300), check)
        .await
        .is_err());
}

#[tokio::test]
async fn a_trickling_server_is_read_to_the_end() {
    let addr = serve(Behaviour::Trickle(OK_HELLO)).await;
    assert_eq!(
        http(addr, &[url("/", Some(HELLO_MD5), &[])]).await,
        Outcome::Success { weight_delta: 0 }
    );
}

#[tokio::test]
async fn reads_are_capped() {
    let endless = serve(Behaviour::Endless).await;
    let limits = Limits {
        max_header: 16 * 1024,
        max_body: 1024 * 1024,
    };
    assert_eq!(
        failure(http_limits(endless, &[url("/", Some(HELLO_MD5), &[])], limits).await),
        format!("HTTP body from {endless} longer than 1048576 bytes")
    );
    // Without a digest the body is not read at all.
    assert_eq!(
        http_limits(endless, &[url("/", None, &[])], limits).await,
        Outcome::Success { weight_delta: 0 }
    );
    static HUGE_HEADER: std::sync::LazyLock<&'static [u8]> = std::sync::LazyLock::new(|| {
        let mut v = b"HTTP/1.1 200 OK\r\nX-Junk: ".to_vec();
        v.extend(std::iter::repeat_n(b'a', 100_000));
        Box::leak(v.into_boxed_slice())
    });
    let big = serve(Behaviour::Respond(&HUGE_HEADER)).await;
    assert_eq!(
        failure(http(big, &[url("/", None, &[])]).await),
        format!("HTTP header from {big} longer than 16384 bytes")
    );
}

#[tokio::test]
async fn the_request_is_keepalived_s() {
    let target = Target::new("192.0.2.7:8080".parse().unwrap());
    let mut req = fulcrum_checkers::Request {
        path: "/x".into(),
        virtualhost: None,
        protocol: HttpProtocol::V1_0,
        want_digest: true,
        want_body: false,
    };
    assert_eq!(
        req.encode(&target),
        b"GET /x HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\nHost: 192.0.2.7:8080\r\n\r\n"
    );
    req.protocol = HttpProtocol::V1_1;
    req.virtualhost = Some("example.org".into());
    assert_eq!(
        req.encode(&target),
        b"GET /x HTTP/1.1\r\nUser-Agent: KeepAliveClient\r\nConnection: close\r\nHost: example.org\r\n\r\n"
    );
    req.protocol = HttpProtocol::V1_0C;
    req.virtualhost = None;
    assert_eq!(
        req.encode(&target),
        b"GET /x HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\nConnection: close\r\nHost: 192.0.2.7:8080\r\n\r\n"
    );
}

#[tokio::test]
async fn http_url_regex_and_regex_no_match() {
    let addr = serve(Behaviour::Respond(OK_HELLO)).await;
    let with = |re: &str, no_match: bool| UrlCheck {
        regex: Some(re.to_string()),
        regex_no_match: no_match,
        ..url("/", None, &[])
    };
    assert_eq!(
        http(addr, &[with("h[ae]llo", false)]).await,
        Outcome::Success { weight_delta: 0 }
    );
    assert_eq!(
        failure(http(addr, &[with("^goodbye", false)]).await),
        "body of / does not match regex \"^goodbye\""
    );
    assert_eq!(
        http(addr, &[with("error", true)]).await,
        Outcome::Success { weight_delta: 0 }
    );
    assert_eq!(
        failure(http(addr, &[with("hello", true)]).await),
        "body of / matches regex \"hello\""
    );
    assert!(failure(http(addr, &[with("(unclosed", false)]).await).contains("url regex"));
}
