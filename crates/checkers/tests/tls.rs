//! SSL_GET against a local TLS server with a self-signed certificate (never verified, as
//! keepalived does not verify it): digest, SNI only when asked, servers that close without
//! close_notify, and a server that does not speak TLS.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fulcrum_checkers::{check_http, Limits, Target, Transport};
use fulcrum_health::Outcome;
use fulcrum_keepalived_conf::model::{HttpProtocol, UrlCheck};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const OK_HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n";
const HELLO_MD5: &str = "b1946ac92492d2347c6235b4d2611184";

fn acceptor() -> TlsAcceptor {
    let cert = rcgen::generate_simple_self_signed(vec!["www.example.org".into()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// A TLS server answering `response`; records the SNI of each handshake. With
/// `close_notify` false it drops the connection without TLS's closing alert.
async fn serve_tls(
    response: &'static [u8],
    close_notify: bool,
) -> (SocketAddr, Arc<Mutex<Vec<Option<String>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = acceptor();
    let snis = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&snis);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                seen.lock()
                    .unwrap()
                    .push(tls.get_ref().1.server_name().map(str::to_string));
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls.write_all(response).await;
                let _ = tls.flush().await;
                if close_notify {
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    (addr, snis)
}

fn url(digest: Option<&str>) -> UrlCheck {
    UrlCheck {
        path: "/".into(),
        digest: digest.map(str::to_string),
        status_code: Vec::new(),
        virtualhost: None,
        regex: None,
        regex_no_match: false,
    }
}

async fn ssl_get(
    addr: SocketAddr,
    sni: bool,
    vhost: Option<&str>,
    digest: Option<&str>,
) -> Outcome {
    tokio::time::timeout(
        Duration::from_secs(5),
        check_http(
            &Target::new(addr),
            Transport::Tls { sni },
            &[url(digest)],
            vhost,
            HttpProtocol::V1_0,
            Limits::default(),
        ),
    )
    .await
    .expect("the check finished")
}

#[tokio::test]
async fn ssl_get_reads_and_hashes_over_tls() {
    for close_notify in [true, false] {
        let (addr, _) = serve_tls(OK_HELLO, close_notify).await;
        assert_eq!(
            ssl_get(addr, false, None, Some(HELLO_MD5)).await,
            Outcome::Success { weight_delta: 0 },
            "close_notify {close_notify}"
        );
    }
}

#[tokio::test]
async fn sni_is_sent_only_when_enabled() {
    let (addr, snis) = serve_tls(OK_HELLO, true).await;
    ssl_get(addr, false, Some("www.example.org"), None).await;
    ssl_get(addr, true, Some("www.example.org"), None).await;
    assert_eq!(
        *snis.lock().unwrap(),
        vec![None, Some("www.example.org".to_string())]
    );
}

#[tokio::test]
async fn a_server_without_tls_fails_the_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(OK_HELLO).await;
        }
    });
    match ssl_get(addr, false, None, None).await {
        Outcome::Failure(reason) => assert!(
            reason.starts_with(&format!("TLS handshake with {addr} failed")),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
}
