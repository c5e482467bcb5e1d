//! systemd's readiness protocol (Type=notify): a datagram to $NOTIFY_SOCKET, a path or an
//! abstract name (`@...`). Without the variable, nothing is sent.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (`READY=1`, `RELOADING=1`, `STOPPING=1`, `STATUS=...`) to systemd.
pub fn notify(state: &str) {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let (Ok(addr), Ok(socket)) = (addr, UnixDatagram::unbound()) else {
        return;
    };
    let _ = socket.send_to_addr(state.as_bytes(), &addr);
}

/// `RELOADING=1` with the monotonic time systemd 253 asks for.
pub fn reloading() {
    notify(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}",
        fulcrum_sys::monotonic_ns() / 1000
    ));
}

/// How often to send `WATCHDOG=1`: half the `WatchdogSec=` systemd passes in
/// WATCHDOG_USEC, when WATCHDOG_PID (if set) is this process.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    watchdog_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_from(usec: Option<&str>, pid: Option<&str>, own: u32) -> Option<std::time::Duration> {
    if pid.is_some_and(|p| p.parse::<u32>().ok() != Some(own)) {
        return None;
    }
    let usec = usec?.parse::<u64>().ok().filter(|&u| u > 0)?;
    Some(std::time::Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_twice_a_period_when_it_is_ours() {
        let half = Some(std::time::Duration::from_secs(10));
        assert_eq!(watchdog_from(Some("20000000"), None, 7), half);
        assert_eq!(watchdog_from(Some("20000000"), Some("7"), 7), half);
        assert_eq!(watchdog_from(Some("20000000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(None, None, 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(Some("x"), None, 7), None);
    }

    #[test]
    fn readiness_reaches_the_socket() {
        let path = std::env::temp_dir().join(format!("fulcrum-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        // The variable is process-wide; this is the only test that sets it.
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify("READY=1");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        let _ = std::fs::remove_file(&path);
    }
}
