//! UDP_CHECK, as keepalived's check_udp: send the payload to the server's port; with
//! `require_reply` a reply must come back in time (starting with the given bytes, and within
//! the length bounds when set); without it the server is up unless the port is refused (an
//! ICMP port unreachable) before the wait ends.

use std::time::Duration;

use fulcrum_health::Outcome;
use tokio::net::UdpSocket;

use crate::Target;

/// What a UDP_CHECK sends and expects (hex already decoded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpProbe {
    pub payload: Vec<u8>,
    /// None: no reply needed. Some(prefix): a reply is needed, starting with `prefix`.
    pub require_reply: Option<Vec<u8>>,
    pub min_reply_length: Option<usize>,
    pub max_reply_length: Option<usize>,
}

/// Decodes keepalived's hex strings (already validated by the parser).
pub fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .filter_map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// Sends one datagram to the target from a socket connected to it (bound to the target's
/// source address when it has one), for the reply to be read from; `what` names the check
/// in failure reasons. Shared by UDP_CHECK and DNS_CHECK.
pub(crate) async fn send(target: &Target, payload: &[u8], what: &str) -> Result<UdpSocket, String> {
    let to = target.connect;
    let bind = target.bind.unwrap_or_else(|| {
        if to.is_ipv4() {
            "0.0.0.0:0".parse().expect("an address")
        } else {
            "[::]:0".parse().expect("an address")
        }
    });
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("{what} socket for {to}: {e}"))?;
    sock.connect(to)
        .await
        .map_err(|e| format!("{what} to {to}: {e}"))?;
    sock.send(payload)
        .await
        .map_err(|e| format!("{what} send to {to}: {e}"))?;
    Ok(sock)
}

/// Runs the check, waiting at most `wait` for a reply or a refusal.
pub async fn check_udp(target: &Target, probe: &UdpProbe, wait: Duration) -> Outcome {
    let to = target.connect;
    let sock = match send(target, &probe.payload, "UDP").await {
        Ok(s) => s,
        Err(reason) => return Outcome::Failure(reason),
    };
    let mut buf = vec![0u8; 65536];
    match tokio::time::timeout(wait, sock.recv(&mut buf)).await {
        Ok(Ok(n)) => judge(to, probe, &buf[..n]),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Outcome::Failure(format!("UDP port {to} refused (ICMP port unreachable)"))
        }
        Ok(Err(e)) => Outcome::Failure(format!("UDP from {to}: {e}")),
        Err(_) if probe.require_reply.is_some() => {
            Outcome::Failure(format!("no UDP reply from {to}"))
        }
        Err(_) => Outcome::Success { weight_delta: 0 },
    }
}

fn judge(to: std::net::SocketAddr, probe: &UdpProbe, reply: &[u8]) -> Outcome {
    if let Some(prefix) = &probe.require_reply {
        if !reply.starts_with(prefix) {
            return Outcome::Failure(format!("UDP reply from {to} does not match"));
        }
    }
    if probe.min_reply_length.is_some_and(|m| reply.len() < m) {
        return Outcome::Failure(format!(
            "UDP reply from {to} too short ({} bytes)",
            reply.len()
        ));
    }
    if probe.max_reply_length.is_some_and(|m| reply.len() > m) {
        return Outcome::Failure(format!(
            "UDP reply from {to} too long ({} bytes)",
            reply.len()
        ));
    }
    Outcome::Success { weight_delta: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server(reply: Option<&'static [u8]>) -> std::net::SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((_, from)) = s.recv_from(&mut buf).await {
                if let Some(r) = reply {
                    let _ = s.send_to(r, from).await;
                }
            }
        });
        addr
    }

    fn failed(o: &Outcome) -> String {
        match o {
            Outcome::Failure(r) => r.clone(),
            Outcome::Success { .. } => String::from("success"),
        }
    }

    #[tokio::test]
    async fn replies_refusals_and_silence() {
        let wait = Duration::from_millis(300);
        let answering = echo_server(Some(b"PONG!")).await;
        let silent = echo_server(None).await;
        // A port nobody listens on: the kernel answers with ICMP port unreachable.
        let closed = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let need = UdpProbe {
            payload: unhex("50494e47"),
            require_reply: Some(b"PONG".to_vec()),
            ..UdpProbe::default()
        };
        let t = |a| Target::new(a);
        assert_eq!(
            failed(&check_udp(&t(answering), &need, wait).await),
            "success"
        );
        assert!(failed(&check_udp(&t(silent), &need, wait).await).starts_with("no UDP reply"));
        assert!(failed(&check_udp(&t(closed), &need, wait).await).contains("refused"));
        let wrong = UdpProbe {
            require_reply: Some(b"NOPE".to_vec()),
            ..need.clone()
        };
        assert!(failed(&check_udp(&t(answering), &wrong, wait).await).contains("does not match"));
        let short = UdpProbe {
            min_reply_length: Some(10),
            ..need.clone()
        };
        assert!(failed(&check_udp(&t(answering), &short, wait).await).contains("too short"));
        // Without require_reply silence is fine, a refusal is not.
        let fire = UdpProbe::default();
        assert_eq!(failed(&check_udp(&t(silent), &fire, wait).await), "success");
        assert!(failed(&check_udp(&t(closed), &fire, wait).await).contains("refused"));
    }
}
