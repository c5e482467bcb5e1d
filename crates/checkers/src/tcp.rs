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
    let socket = if target.connect.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
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

/// TCP_CHECK: connect, then close.
pub async fn check_tcp(target: &Target) -> Outcome {
    match connect(target).await {
        Ok(_) => Outcome::Success { weight_delta: 0 },
        Err(e) => Outcome::Failure(connect_failure(target, &e)),
    }
}
