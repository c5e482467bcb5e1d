//! TCP_CHECK: the server is up when a TCP connection to it completes.

use std::io;
use std::net::SocketAddr;

use fulcrum_health::Outcome;
use tokio::net::{TcpSocket, TcpStream};

/// Where a check connects: `connect_ip`/`connect_port` (or the real server's), and the
/// `bindto`/`bind_port` source when given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub connect: SocketAddr,
    pub bind: Option<SocketAddr>,
}

impl Target {
    pub fn new(connect: SocketAddr) -> Target {
        Target {
            connect,
            bind: None,
        }
    }
}

/// Opens a TCP connection to the target, from its bind address when it has one.
pub async fn connect(target: &Target) -> io::Result<TcpStream> {
    connect_with(target, true).await
}

/// As [`connect`]; `quickack` false delays our final ACK of the handshake until we send
/// data, so a check that sends none (TCP_CHECK) can close before the server ever
/// completes the connection: its SYN-ACK already proved the port accepts.
async fn connect_with(target: &Target, quickack: bool) -> io::Result<TcpStream> {
    let socket = if target.connect.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if !quickack {
        socket2::SockRef::from(&socket).set_tcp_quickack(false)?;
    }
    if let Some(bind) = target.bind {
        socket.set_reuseaddr(true)?;
        socket.bind(bind)?;
    }
    socket.connect(target.connect).await
}

/// The reason an operator reads when a connection fails.
pub(crate) fn connect_failure(target: &Target, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => format!("TCP connection to {} refused", target.connect),
        _ => format!("TCP connection to {} failed: {e}", target.connect),
    }
}

/// TCP_CHECK: connect, then close with a reset, so that thousands of checks a second leave
/// no TIME_WAIT entries on the director and no half-used connection on the real server
/// (HAProxy closes its TCP checks the same way).
pub async fn check_tcp(target: &Target) -> Outcome {
    match connect_with(target, false).await {
        Ok(stream) => {
            // With a zero linger the close sends RST and never blocks.
            let _ = stream.set_zero_linger();
            Outcome::Success { weight_delta: 0 }
        }
        Err(e) => Outcome::Failure(connect_failure(target, &e)),
    }
}
