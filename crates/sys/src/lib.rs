//! The kernel interfaces Fulcrum needs that neither std nor socket2 wrap safely. This is
//! the one crate with `unsafe` (besides the data plane's BPF loader): each block is small,
//! checks the kernel's return value, and says why it is sound.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The index of a network interface in the caller's network namespace.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;

/// A raw AF_PACKET socket bound to one interface and EtherType, for sending whole frames
/// (gratuitous ARP). Closed on drop.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    pub fn open(if_index: u32, ethertype: u16) -> io::Result<PacketSocket> {
        let protocol = ethertype.to_be();
        // SAFETY: socket() takes no pointers; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(protocol),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own and nothing else closes.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex =
            i32::try_from(if_index).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `addr` is a valid sockaddr_ll and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd })
    }

    /// Sends one whole Ethernet frame out of the bound interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: `frame` is a valid buffer of `frame.len()` bytes for the whole call.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// A gratuitous ARP request announcing that `ip` is at `mac` (sender and target both `ip`,
/// broadcast), as keepalived sends on becoming master.
pub fn gratuitous_arp(mac: [u8; 6], ip: std::net::Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    f[32..38].copy_from_slice(&[0xff; 6]);
    f[38..42].copy_from_slice(&ip.octets());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_arp_layout() {
        let f = gratuitous_arp([2, 0, 0, 0, 0, 1], "10.1.10.88".parse().unwrap());
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "an ARP request, as keepalived sends");
        assert_eq!(&f[28..32], &[10, 1, 10, 88]);
        assert_eq!(&f[38..42], &[10, 1, 10, 88]);
    }

    #[test]
    fn loopback_has_an_index() {
        assert!(if_index("lo").unwrap() > 0);
        assert!(if_index("no-such-if0").is_err());
    }
}

/// A socket2 socket driven by tokio: the raw VRRP sockets.
#[derive(Debug)]
pub struct AsyncSocket {
    inner: tokio::io::unix::AsyncFd<socket2::Socket>,
}

impl AsyncSocket {
    pub fn new(socket: socket2::Socket) -> io::Result<AsyncSocket> {
        socket.set_nonblocking(true)?;
        // SAFETY: the socket owns its descriptor, AsyncFd owns the socket, and dropping
        // AsyncFd deregisters the descriptor before the socket closes it.
        let inner = unsafe { tokio::io::unix::AsyncFd::register(socket)? };
        Ok(AsyncSocket { inner })
    }

    /// Receives one datagram (for a raw IPv4 socket: the IP packet, header included).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        use std::io::Read;
        loop {
            let mut guard = self.inner.readable().await?;
            match guard.try_io(|s| s.get_ref().read(buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    pub fn send_to(&self, buf: &[u8], to: std::net::SocketAddr) -> io::Result<usize> {
        self.inner.get_ref().send_to(buf, &to.into())
    }
}
