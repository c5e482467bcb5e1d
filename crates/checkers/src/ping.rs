//! PING_CHECK, as keepalived's check_ping: one ICMP echo request to the server (ICMP for
//! IPv4, ICMPv6 for IPv6, on a raw socket, so the daemon needs CAP_NET_RAW as keepalived
//! does); up when the matching echo reply comes back in time.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use fulcrum_health::Outcome;
use fulcrum_sys::AsyncSocket;
use fulcrum_wire::{icmp, ipv4};
use socket2::{Domain, Protocol, Socket, Type};

use crate::Target;

const DATA: &[u8] = b"fulcrum ping check";

/// An ICMP echo request with this id and sequence number.
pub fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    icmp::echo_request_v4(id, seq, DATA)
}

/// An ICMPv6 echo request: the kernel fills in the checksum (it covers a pseudo-header
/// only the kernel knows in full).
pub fn echo_request_v6(id: u16, seq: u16) -> Vec<u8> {
    icmp::echo_request_v6(id, seq, DATA)
}

fn is_echo_reply(message: &[u8], kind: u8, id: u16, seq: u16) -> bool {
    icmp::Echo::new_checked(message)
        .is_ok_and(|e| e.kind() == kind && e.ident() == id && e.seq() == seq)
}

/// Whether an ICMPv6 message (raw IPv6 sockets deliver no IP header) is the echo reply to
/// (id, seq).
pub fn is_reply_v6(message: &[u8], id: u16, seq: u16) -> bool {
    is_echo_reply(message, icmp::ECHO_REPLY_V6, id, seq)
}

/// Whether an IPv4 packet (header included, as raw sockets deliver it) is the echo reply
/// to (id, seq).
pub fn is_reply(packet: &[u8], id: u16, seq: u16) -> bool {
    ipv4::Packet::new_checked(packet)
        .is_ok_and(|p| is_echo_reply(p.payload(), icmp::ECHO_REPLY_V4, id, seq))
}

/// Runs the check, waiting at most `wait` for the reply.
pub async fn check_ping(target: &Target, wait: Duration) -> Outcome {
    let to = target.connect.ip();
    let v6 = matches!(to, IpAddr::V6(_));
    let (domain, protocol) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    let socket = match Socket::new(domain, Type::RAW, Some(protocol)) {
        Ok(s) => s,
        Err(e) => {
            return Outcome::Failure(format!("ICMP socket for {to}: {e} (needs CAP_NET_RAW)"))
        }
    };
    if let Some(bind) = target.bind {
        if let Err(e) = socket.bind(&SocketAddr::new(bind.ip(), 0).into()) {
            return Outcome::Failure(format!("ICMP socket bound to {}: {e}", bind.ip()));
        }
    }
    // Connected, the raw socket only hears from the server.
    if let Err(e) = socket.connect(&SocketAddr::new(to, 0).into()) {
        return Outcome::Failure(format!("ICMP to {to}: {e}"));
    }
    let socket = match AsyncSocket::new(socket) {
        Ok(s) => s,
        Err(e) => return Outcome::Failure(format!("ICMP socket for {to}: {e}")),
    };
    let id = std::process::id() as u16;
    let seq = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_micros())
        .unwrap_or(0)
        & 0xffff) as u16;
    let request = if v6 {
        echo_request_v6(id, seq)
    } else {
        echo_request(id, seq)
    };
    if let Err(e) = socket.send_to(&request, SocketAddr::new(to, 0)) {
        return Outcome::Failure(format!("ICMP echo to {to}: {e}"));
    }
    let mut buf = vec![0u8; 2048];
    let wait_reply = async {
        loop {
            match socket.recv(&mut buf).await {
                Ok(n) if v6 && is_reply_v6(&buf[..n], id, seq) => return Ok(()),
                Ok(n) if !v6 && is_reply(&buf[..n], id, seq) => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
    };
    match tokio::time::timeout(wait, wait_reply).await {
        Ok(Ok(())) => Outcome::Success { weight_delta: 0 },
        Ok(Err(e)) => Outcome::Failure(format!("ICMP from {to}: {e}")),
        Err(_) => Outcome::Failure(format!("no ICMP echo reply from {to}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies() {
        let m = echo_request(0x1234, 7);
        assert_eq!(
            fulcrum_wire::checksum::checksum(&m),
            0,
            "a correct checksum sums to zero"
        );
        let mut reply = vec![0u8; 20];
        let (from, to) = ("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap());
        ipv4::emit(&mut reply, 1, from, to, 64, m.len());
        reply.extend_from_slice(&m);
        reply[20] = 0;
        assert!(is_reply(&reply, 0x1234, 7));
        assert!(!is_reply(&reply, 0x1234, 8));
        reply[20] = 8;
        assert!(!is_reply(&reply, 0x1234, 7), "a request is no reply");
    }

    #[tokio::test]
    async fn loopback_answers() {
        if !fulcrum_sys_root() {
            eprintln!("SKIP: PING_CHECK's raw socket needs root");
            return;
        }
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let t = Target::new(addr.parse().unwrap());
            match check_ping(&t, Duration::from_secs(1)).await {
                Outcome::Success { .. } => {}
                Outcome::Failure(r) => panic!("{addr}: {r}"),
            }
        }
    }

    fn fulcrum_sys_root() -> bool {
        let root = std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
        if !root && std::env::var_os("CI").is_some() {
            panic!("CI runs as root");
        }
        root
    }
}
