//! DNS_CHECK, as keepalived's check_dns: one query (`name`, default the root; `type`,
//! default SOA) over UDP; the server is up when its answer has our id, is a response,
//! says NOERROR and carries at least one answer.

use std::time::Duration;

use crate::Target;
use fulcrum_health::Outcome;

/// The query types keepalived's DNS_CHECK knows, by name.
pub fn query_type(name: &str) -> Option<u16> {
    Some(match name.to_ascii_uppercase().as_str() {
        "A" => 1,
        "NS" => 2,
        "CNAME" => 5,
        "SOA" => 6,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        _ => return None,
    })
}

/// A DNS query message: header with `id` and recursion desired, one question.
pub fn query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        if label.len() > 63 {
            return Err(format!("DNS label too long in {name}"));
        }
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    Ok(m)
}

/// Whether an answer to query `id` says the server is up.
pub fn judge(id: u16, answer: &[u8]) -> Result<(), String> {
    if answer.len() < 12 {
        return Err("DNS answer too short".into());
    }
    if u16::from_be_bytes([answer[0], answer[1]]) != id {
        return Err("DNS answer to another query".into());
    }
    if answer[2] & 0x80 == 0 {
        return Err("DNS message is not a response".into());
    }
    let rcode = answer[3] & 0x0f;
    if rcode != 0 {
        return Err(format!("DNS RCODE {rcode}"));
    }
    if u16::from_be_bytes([answer[6], answer[7]]) == 0 {
        return Err("DNS answer has no records".into());
    }
    Ok(())
}

/// Runs the check, waiting at most `wait` for the answer.
pub async fn check_dns(target: &Target, name: &str, qtype: u16, wait: Duration) -> Outcome {
    let to = target.connect;
    let id = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        >> 8) as u16;
    let msg = match query(id, name, qtype) {
        Ok(m) => m,
        Err(e) => return Outcome::Failure(e),
    };
    let sock = match crate::udp::send(target, &msg, "DNS").await {
        Ok(s) => s,
        Err(reason) => return Outcome::Failure(reason),
    };
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(wait, sock.recv(&mut buf)).await {
        Ok(Ok(n)) => match judge(id, &buf[..n]) {
            Ok(()) => Outcome::Success { weight_delta: 0 },
            Err(e) => Outcome::Failure(format!("{e} from {to}")),
        },
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Outcome::Failure(format!("DNS port {to} refused"))
        }
        Ok(Err(e)) => Outcome::Failure(format!("DNS from {to}: {e}")),
        Err(_) => Outcome::Failure(format!("no DNS answer from {to}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UdpSocket;

    /// A server answering every query with `rcode` and `answers` records.
    async fn server(rcode: u8, answers: u16) -> std::net::SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let mut a = buf[..n].to_vec();
                a[2] |= 0x80;
                a[3] = (a[3] & 0xf0) | rcode;
                a[6..8].copy_from_slice(&answers.to_be_bytes());
                let _ = s.send_to(&a, from).await;
            }
        });
        addr
    }

    #[test]
    fn queries_are_wire_format() {
        let q = query(0x1234, "example.org", 6).unwrap();
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&q[12..], b"\x07example\x03org\x00\x00\x06\x00\x01");
        assert_eq!(&query(1, ".", 6).unwrap()[12..], b"\x00\x00\x06\x00\x01");
        assert_eq!(query_type("aaaa"), Some(28));
        assert_eq!(query_type("SRV"), None);
    }

    #[tokio::test]
    async fn answers_decide() {
        let wait = Duration::from_millis(300);
        let t = |a| Target::new(a);
        let ok = server(0, 1).await;
        let nx = server(3, 0).await;
        let empty = server(0, 0).await;
        let r = |o: Outcome| match o {
            Outcome::Failure(r) => r,
            Outcome::Success { .. } => "success".into(),
        };
        assert_eq!(r(check_dns(&t(ok), ".", 6, wait).await), "success");
        assert!(r(check_dns(&t(nx), "x.test", 1, wait).await).contains("RCODE 3"));
        assert!(r(check_dns(&t(empty), ".", 6, wait).await).contains("no records"));
    }
}
