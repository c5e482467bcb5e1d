//! The kernel and system-library interfaces Fulcrum needs that neither std nor a
//! well-kept crate wrap safely (and the two C libraries nginx's behaviour comes from:
//! crypt(3) and zlib's deflate). This is the one crate with `unsafe` (besides the data
//! plane's BPF loader): each block is small, checks the return value, and says why it
//! is sound.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

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

/// The names of the network interfaces of the caller's network namespace.
pub fn interfaces() -> io::Result<Vec<String>> {
    // SAFETY: if_nameindex returns a heap array ending with a zeroed entry, or NULL with
    // errno set; it is read up to that entry and freed once with if_freenameindex.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Err(io::Error::last_os_error());
        }
        let mut names = Vec::new();
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            names.push(
                std::ffi::CStr::from_ptr((*p).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            p = p.add(1);
        }
        libc::if_freenameindex(list);
        Ok(names)
    }
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `path` is on a BPF filesystem.
pub fn is_bpffs(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `st` is a valid, writable statfs; `c` a NUL-terminated path for the call.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Mounts a BPF filesystem on `path` (an existing directory).
pub fn mount_bpffs(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let target = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fstype = CString::new("bpf").expect("no NUL");
    // SAFETY: all three strings are valid and NUL-terminated for the duration of the call;
    // no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The inode of the caller's network namespace: tells namespaces apart on one machine.
pub fn netns_inode() -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata("/proc/self/ns/net")?.ino())
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of BPF's `bpf_ktime_get_ns` (and, to within a
/// tick, of `bpf_ktime_get_coarse_ns`), so the control plane can compare it with deadlines
/// the data plane wrote.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_MONOTONIC is always available");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Capability numbers (linux/capability.h) the daemon may keep.
pub mod cap {
    pub const CHOWN: u32 = 0;
    pub const DAC_OVERRIDE: u32 = 1;
    pub const DAC_READ_SEARCH: u32 = 2;
    pub const FOWNER: u32 = 3;
    pub const KILL: u32 = 5;
    pub const SETGID: u32 = 6;
    pub const SETUID: u32 = 7;
    pub const NET_BIND_SERVICE: u32 = 10;
    pub const NET_ADMIN: u32 = 12;
    pub const NET_RAW: u32 = 13;
    pub const IPC_LOCK: u32 = 14;
    pub const SYS_ADMIN: u32 = 21;
    pub const SYS_RESOURCE: u32 = 24;
    pub const PERFMON: u32 = 38;
    pub const BPF: u32 = 39;
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Keeps only the capabilities in `keep`: every other one leaves the bounding set (so no
/// child can gain it either) and this process's effective, permitted and inheritable
/// sets. Capabilities the process does not hold stay absent.
pub fn keep_capabilities(keep: &[u32]) -> io::Result<()> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(40);
    // The bounding set first: only what is still in it is dropped (a unit's
    // CapabilityBoundingSet may have removed the rest already, and dropping needs
    // CAP_SETPCAP, which such a unit does not give). A failure there is reported after
    // the process's own sets are reduced, which needs no privilege.
    let mut bounding = Ok(());
    for c in 0..=last {
        if keep.contains(&c) {
            continue;
        }
        // SAFETY: prctl(PR_CAPBSET_READ, cap) takes plain integers: 1 in the set, 0 not,
        // -1 (EINVAL) a capability this kernel does not know.
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, c as libc::c_ulong, 0, 0, 0) } != 1 {
            continue;
        }
        // SAFETY: prctl(PR_CAPBSET_DROP, cap) takes plain integers.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            bounding = Err(io::Error::last_os_error());
            break;
        }
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = CapHeader {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget(2) fills the two-word data array the v3 header announces.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut mask = [0u32; 2];
    for c in keep {
        mask[(*c / 32) as usize % 2] |= 1 << (c % 32);
    }
    for (d, m) in data.iter_mut().zip(mask) {
        d.effective &= m;
        d.permitted &= m;
        d.inheritable &= m;
    }
    // SAFETY: capset(2) reads the header and the two-word data array.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    bounding
}

/// Whether this process holds capability `c` in its effective set.
pub fn has_capability(c: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|eff| eff & (1u64 << c) != 0)
}

/// Sends SIGKILL to every process of process group `pgid` (a script started in a group of
/// its own, with whatever it forked). A group that is already gone is not an error.
pub fn kill_process_group(pgid: u32) -> io::Result<()> {
    let pgid =
        libc::pid_t::try_from(pgid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if pgid <= 1 {
        // 0 would be our own group, 1 (as -1) every process we may signal.
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

/// The child's side of [`background`]: tells the waiting parent how the start went.
#[derive(Debug)]
pub struct Started(std::fs::File);

impl Started {
    /// Everything is up (sockets bound, pid file written): the parent exits 0, and the
    /// standard streams, still the caller's terminal or systemd's, go to /dev/null.
    pub fn ready(mut self) {
        use std::io::Write;
        let _ = self.0.write_all(b"0");
        detach_stdio();
    }
}

/// Points stdin, stdout and stderr at /dev/null, as a daemon's.
fn detach_stdio() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2(2) on descriptors we own; /dev/null stays open through the call.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// Forks into the background the way a Type=forking service must: the parent waits until
/// the child says it is ready ([`Started::ready`]) and then exits 0, or exits 1 when the
/// child ends first (its errors went to the same standard error), so the caller (a shell,
/// systemd) learns whether the start worked, and finds the pid file written. The child
/// runs on in a session of its own. Call it before any thread starts.
pub fn background() -> io::Result<Started> {
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) writes two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptors are fresh and ours alone.
    let (read, write) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    // SAFETY: fork(2) with one thread (the caller's promise): the child continues in
    // ordinary Rust, the parent only reads a pipe and exits.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(read);
            // SAFETY: setsid(2) takes no arguments; the child is not a group leader.
            unsafe { libc::setsid() };
            Ok(Started(write))
        }
        _ => {
            use std::io::Read;
            drop(write);
            let mut byte = [0u8; 1];
            let mut read = read;
            let code = match read.read(&mut byte) {
                Ok(1) if byte[0] == b'0' => 0,
                _ => 1,
            };
            std::process::exit(code)
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_an_index() {
        assert!(if_index("lo").unwrap() > 0);
        assert!(if_index("no-such-if0").is_err());
    }

    #[test]
    fn shared_memory_is_the_same_pages_through_a_passed_descriptor() {
        use std::sync::atomic::Ordering;
        let a = SharedMemory::create("test", 1000).unwrap();
        assert_eq!(a.words().len(), 1000);
        assert!(a.words().iter().all(|w| w.load(Ordering::Relaxed) == 0));
        let b = SharedMemory::map(a.fd().try_clone_to_owned().unwrap()).unwrap();
        a.words()[999].store(42, Ordering::Relaxed);
        assert_eq!(b.words()[999].load(Ordering::Relaxed), 42);
        b.words()[0].fetch_add(3, Ordering::Relaxed);
        drop(b);
        assert_eq!(a.words()[0].load(Ordering::Relaxed), 3);
        assert!(process_exists(std::process::id()));
    }
}

/// `sysconf(_SC_CLK_TCK)`: the unit of the CPU times in /proc/PID/stat.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the system and has no side effects.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(n).ok().filter(|n| *n > 0).unwrap_or(100)
}

/// `sysconf(_SC_PAGESIZE)`: the unit of the resident set in /proc/PID/stat.
pub fn page_size() -> u64 {
    // SAFETY: as above.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|n| *n > 0).unwrap_or(4096)
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

impl AsyncSocket {
    /// Receives one IPv6 datagram with its source address and, when the socket has
    /// IPV6_RECVHOPLIMIT set, the hop limit it arrived with (IPv6 raw sockets do not deliver
    /// the IPv6 header, so this is the only way to check VRRP's hop limit of 255).
    pub async fn recv_v6(
        &self,
        buf: &mut [u8],
    ) -> io::Result<(usize, std::net::Ipv6Addr, Option<u8>)> {
        loop {
            let mut guard = self.inner.readable().await?;
            match guard.try_io(|s| recvmsg_v6(s.get_ref().as_raw_fd(), buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

fn recvmsg_v6(fd: i32, buf: &mut [u8]) -> io::Result<(usize, std::net::Ipv6Addr, Option<u8>)> {
    // SAFETY: all-zero is a valid sockaddr_in6 and msghdr.
    let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_in6).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` points to a live buffer of the length given, for the
    // whole call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut hop_limit = None;
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR/CMSG_NXTHDR walk the control
    // buffer within msg_controllen, and each header's data is read only when it is the
    // IPV6_HOPLIMIT int the kernel wrote.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IPV6 && (*c).cmsg_type == libc::IPV6_HOPLIMIT {
                let value = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                hop_limit = u8::try_from(value).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let src = std::net::Ipv6Addr::from(from.sin6_addr.s6_addr);
    Ok((n as usize, src, hop_limit))
}

/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;

/// The most descriptors one SCM_RIGHTS message carries (the kernel's SCM_MAX_FD).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

/// Sends `fds` over the Unix socket `sock` (SCM_RIGHTS) with the one byte `tag`, so the
/// receiver, reading exactly that byte with [`recv_fds`], gets duplicates of them. At
/// most [`MAX_FDS_PER_MESSAGE`] at a time.
pub fn send_fds(
    sock: &impl AsRawFd,
    tag: u8,
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> io::Result<()> {
    if fds.is_empty() || fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let raw: Vec<libc::c_int> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let payload = std::mem::size_of_val(raw.as_slice());
    // SAFETY: CMSG_SPACE computes a size from an integer.
    let space = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut byte = [tag];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: the control buffer holds CMSG_SPACE(payload) bytes, so its first header and
    // `payload` bytes of data fit; the descriptors are copied into it, not moved (they stay
    // open here, as the BorrowedFds say).
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(payload as u32) as usize;
        std::ptr::copy_nonoverlapping(raw.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), payload);
    }
    // SAFETY: every pointer in `msg` points to a live buffer of the length given.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    match n {
        1 => Ok(()),
        n if n < 0 => Err(io::Error::last_os_error()),
        _ => Err(io::Error::from(io::ErrorKind::WriteZero)),
    }
}

/// Receives one byte and the descriptors [`send_fds`] sent with it (close-on-exec).
/// Blocks; None at the end of the stream.
pub fn recv_fds(sock: &impl AsRawFd) -> io::Result<Option<(u8, Vec<OwnedFd>)>> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE computes a size from an integer.
    let space = unsafe {
        libc::CMSG_SPACE((MAX_FDS_PER_MESSAGE * std::mem::size_of::<libc::c_int>()) as u32)
    } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    let n = loop {
        // SAFETY: every pointer in `msg` points to a live buffer of the length given.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Ok(None);
    }
    let mut fds = Vec::new();
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR/CMSG_NXTHDR walk the control
    // buffer within msg_controllen. The descriptors of an SCM_RIGHTS header were just
    // installed in this process's table by the kernel and belong to nothing else, so each
    // becomes an OwnedFd (closed when dropped).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = data / std::mem::size_of::<libc::c_int>();
                let p = libc::CMSG_DATA(c).cast::<libc::c_int>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(p.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("descriptors were cut off (MSG_CTRUNC)"));
    }
    Ok(Some((byte[0], fds)))
}

#[cfg(test)]
mod fd_tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn descriptors_cross_a_socket_pair() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (mut r, mut w) = std::os::unix::net::UnixStream::pair().unwrap();
        send_fds(&a, b'L', &[w.as_fd()]).unwrap();
        let (tag, fds) = recv_fds(&b).unwrap().unwrap();
        assert_eq!(tag, b'L');
        assert_eq!(fds.len(), 1);
        // The copy writes into the same socket the original does.
        let mut copy = std::os::unix::net::UnixStream::from(fds.into_iter().next().unwrap());
        copy.write_all(b"hi").unwrap();
        w.write_all(b"!").unwrap();
        let mut got = [0u8; 3];
        r.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi!");
        drop(a);
        assert!(recv_fds(&b).unwrap().is_none());
    }
}

/// Keeps `fds` open across the exec of `cmd`: their close-on-exec flag is cleared in the
/// child only, between fork and exec, so no other program started meanwhile inherits
/// them. How nginx hands its listening sockets to a new binary.
pub fn keep_on_exec(cmd: &mut std::process::Command, fds: Vec<std::os::fd::RawFd>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec; it only reads the vector
    // moved into it (no allocation) and calls fcntl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The listening TCP socket this process inherited at descriptor `fd` (nginx's `NGINX`
/// environment variable names them), made close-on-exec and non-blocking. A descriptor
/// that is not open, or not a listening TCP socket, is an error and left alone.
///
/// Call it once per descriptor, before anything else in the process could own it.
pub fn inherited_listener(fd: std::os::fd::RawFd) -> io::Result<std::net::TcpListener> {
    // SAFETY: F_GETFD only reads the descriptor's flags; EBADF answers one not open.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: the descriptor is open (above) and only borrowed for these checks.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let s = socket2::SockRef::from(&borrowed);
    let tcp = s.r#type()? == socket2::Type::STREAM
        && s.local_addr()?.as_socket().is_some()
        && s.is_listener()?;
    if !tcp {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a listening TCP socket",
        ));
    }
    // SAFETY: the caller inherited it and nothing in this process owns it yet (the
    // function's contract); from here the listener is its one owner.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: FD_CLOEXEC set on a descriptor we own.
    if unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    let l = std::net::TcpListener::from(owned);
    l.set_nonblocking(true)?;
    Ok(l)
}

#[cfg(test)]
mod inherit_tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    #[test]
    fn only_listening_tcp_sockets_are_taken() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let fd = l.into_raw_fd();
        let back = inherited_listener(fd).unwrap();
        assert_eq!(back.local_addr().unwrap(), addr);
        // SAFETY: reading the flags of a descriptor the listener owns.
        assert_eq!(
            unsafe { libc::fcntl(back.as_raw_fd(), libc::F_GETFD) } & libc::FD_CLOEXEC,
            libc::FD_CLOEXEC
        );
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(inherited_listener(u.as_raw_fd()).is_err());
        // Left open: the UDP socket still works.
        assert!(u.local_addr().is_ok());
        assert!(inherited_listener(-1).is_err());
        assert!(inherited_listener(1_000_000).is_err());
    }
}

/// IP_BIND_ADDRESS_NO_PORT on a socket about to bind to a local address with port 0 and
/// then connect: the port is chosen at connect, per destination, so many connections
/// from one bound address do not run out of ports (nginx sets it for proxy_bind).
pub fn set_bind_address_no_port(sock: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads an int of the size given from a live local.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Binds the calling thread to `cpus` (sched_setaffinity on the thread, as nginx binds
/// each worker process).
pub fn set_thread_affinity(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: all-zero is an empty cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    for &c in cpus {
        if c >= max {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: c is below the set's size in bits (checked above).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; the set is a live local of the size given.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The system's crypt(3) (libxcrypt on Debian), as nginx's auth_basic calls it for the
/// hashes it does not compute itself: every scheme the system knows (DES, yescrypt,
/// scrypt, ...) with the system's own code. `None` when the system rejects the setting
/// (an unknown scheme, a malformed hash) or the phrase holds a NUL.
pub fn crypt(phrase: &[u8], setting: &[u8]) -> Option<Vec<u8>> {
    // libxcrypt's re-entrant form; the scratch memory (struct crypt_data, 32 KiB and a
    // little) is ours, zeroed before use.
    #[link(name = "crypt")]
    extern "C" {
        fn crypt_rn(
            phrase: *const libc::c_char,
            setting: *const libc::c_char,
            data: *mut libc::c_void,
            size: libc::c_int,
        ) -> *mut libc::c_char;
    }
    const DATA: usize = 64 * 1024;
    let phrase = std::ffi::CString::new(phrase).ok()?;
    let setting = std::ffi::CString::new(setting).ok()?;
    let mut data = vec![0u8; DATA];
    // SAFETY: both strings are NUL-terminated and live across the call; `data` is DATA
    // writable bytes, which crypt_rn is told; the result points into `data` (or is
    // NULL) and is copied out before `data` is dropped.
    let out = unsafe {
        crypt_rn(
            phrase.as_ptr(),
            setting.as_ptr(),
            data.as_mut_ptr().cast(),
            DATA as libc::c_int,
        )
    };
    if out.is_null() {
        return None;
    }
    // SAFETY: non-NULL, crypt_rn's NUL-terminated output inside `data`.
    let hash = unsafe { std::ffi::CStr::from_ptr(out) }.to_bytes().to_vec();
    // A failure token (`*0`, `*1`) matches no hash.
    (!hash.starts_with(b"*")).then_some(hash)
}

#[cfg(test)]
mod crypt_tests {
    use super::crypt;

    #[test]
    fn des_and_yescrypt_as_the_system_computes_them() {
        // What Python's crypt module (the same libcrypt) gives for "secret".
        let des = crypt(b"secret", b"ab").unwrap();
        assert_eq!(des, b"abNANd1rDfiNc");
        assert_eq!(crypt(b"secret", &des).unwrap(), des);
        assert_ne!(crypt(b"secreT", &des).unwrap(), des);
        let yes = b"$y$j9T$abcdefghijklmnopqrstu.$7uryFExhLbAhrpK1WytVzeNObCUVaK3VoKccP3fJEIB";
        assert_eq!(crypt(b"secret", yes).unwrap(), yes);
        assert_ne!(crypt(b"other", yes).unwrap(), yes);
        assert_eq!(crypt(b"secret", b"$unknown$xx"), None);
        assert_eq!(crypt(b"sec\0ret", b"ab"), None);
    }
}

/// zlib's deflate (the system's libz, as nginx links it), raw (no zlib or gzip wrapper:
/// the caller writes gzip's own header and trailer, as nginx's gzip filter does).
pub struct Deflate {
    // Boxed: zlib keeps a pointer back to the stream in its state, so it must not move.
    stream: Box<libz_sys::z_stream>,
}

impl std::fmt::Debug for Deflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflate")
            .field("in", &self.stream.total_in)
            .field("out", &self.stream.total_out)
            .finish()
    }
}

// SAFETY: the stream and zlib's state behind it belong to this value alone; zlib keeps
// no thread-local state, so the value may move between threads between calls.
unsafe impl Send for Deflate {}

/// When deflate emits what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// As zlib sees fit (Z_NO_FLUSH).
    None,
    /// Everything so far, to a byte boundary (Z_SYNC_FLUSH).
    Sync,
    /// Everything, and the end of the stream (Z_FINISH).
    Finish,
}

unsafe extern "C" fn zlib_alloc(
    _: libz_sys::voidpf,
    items: libz_sys::uInt,
    size: libz_sys::uInt,
) -> libz_sys::voidpf {
    // zlib needs no zeroed memory (its own default allocator is malloc too); zeroing the
    // few hundred KiB of a stream's window and hash for every response would cost more
    // than compressing a page. An overflowing product is refused.
    let Some(bytes) = (items as usize).checked_mul(size as usize) else {
        return std::ptr::null_mut();
    };
    // SAFETY: malloc with any size is sound; zlib checks for NULL.
    unsafe { libc::malloc(bytes) }
}

unsafe extern "C" fn zlib_free(_: libz_sys::voidpf, address: libz_sys::voidpf) {
    // SAFETY: zlib frees only what zlib_alloc gave it.
    unsafe { libc::free(address) }
}

impl Deflate {
    /// deflateInit2(level, Z_DEFLATED, -window_bits, mem_level, Z_DEFAULT_STRATEGY).
    pub fn raw(level: i32, window_bits: i32, mem_level: i32) -> io::Result<Deflate> {
        let mut stream = Box::new(libz_sys::z_stream {
            next_in: std::ptr::null_mut(),
            avail_in: 0,
            total_in: 0,
            next_out: std::ptr::null_mut(),
            avail_out: 0,
            total_out: 0,
            msg: std::ptr::null_mut(),
            state: std::ptr::null_mut(),
            zalloc: zlib_alloc,
            zfree: zlib_free,
            opaque: std::ptr::null_mut(),
            data_type: 0,
            adler: 0,
            reserved: 0,
        });
        // SAFETY: the stream is initialised above and boxed (it does not move); the
        // version and size are the library's own, as deflateInit2 expects them.
        let rc = unsafe {
            libz_sys::deflateInit2_(
                &mut *stream,
                level,
                libz_sys::Z_DEFLATED,
                -window_bits,
                mem_level,
                libz_sys::Z_DEFAULT_STRATEGY,
                libz_sys::zlibVersion(),
                std::mem::size_of::<libz_sys::z_stream>() as libc::c_int,
            )
        };
        if rc != libz_sys::Z_OK {
            return Err(io::Error::other(format!("deflateInit2() failed ({rc})")));
        }
        Ok(Deflate { stream })
    }

    /// Compresses all of `input` into `out` (appended) with `flush`; true once the
    /// stream has ended (after `Flush::Finish`).
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>, flush: Flush) -> io::Result<bool> {
        let flush = match flush {
            Flush::None => libz_sys::Z_NO_FLUSH,
            Flush::Sync => libz_sys::Z_SYNC_FLUSH,
            Flush::Finish => libz_sys::Z_FINISH,
        };
        let mut input = input;
        loop {
            out.reserve((input.len() / 2).max(4096));
            let spare = out.capacity() - out.len();
            let avail_in = input.len().min(libz_sys::uInt::MAX as usize);
            self.stream.next_in = input.as_ptr().cast_mut();
            self.stream.avail_in = avail_in as libz_sys::uInt;
            // SAFETY: the output pointer is `spare` writable bytes past the vector's
            // length; zlib reads `avail_in` bytes of input (which it does not write,
            // whatever its pointer's type) and writes at most `avail_out` bytes.
            let spare_out = spare.min(libz_sys::uInt::MAX as usize);
            let rc = unsafe {
                self.stream.next_out = out.as_mut_ptr().add(out.len());
                self.stream.avail_out = spare_out as libz_sys::uInt;
                libz_sys::deflate(&mut *self.stream, flush)
            };
            let used = avail_in - self.stream.avail_in as usize;
            let made = spare_out - self.stream.avail_out as usize;
            // SAFETY: zlib wrote `made` bytes into the spare capacity.
            unsafe { out.set_len(out.len() + made) };
            input = &input[used..];
            self.stream.next_in = std::ptr::null_mut();
            self.stream.next_out = std::ptr::null_mut();
            match rc {
                libz_sys::Z_STREAM_END => return Ok(true),
                libz_sys::Z_OK | libz_sys::Z_BUF_ERROR => {}
                rc => return Err(io::Error::other(format!("deflate() failed ({rc})"))),
            }
            // Done when the input is taken and zlib had room left (a flush is then
            // complete); Z_FINISH goes on until the stream ends.
            if input.is_empty() && self.stream.avail_out != 0 && flush != libz_sys::Z_FINISH {
                return Ok(false);
            }
            if used == 0 && made == 0 && rc == libz_sys::Z_BUF_ERROR && flush != libz_sys::Z_FINISH
            {
                return Ok(false);
            }
        }
    }
}

impl Drop for Deflate {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised by deflateInit2 and is ended once.
        unsafe {
            libz_sys::deflateEnd(&mut *self.stream);
        }
    }
}

#[cfg(test)]
mod deflate_tests {
    use super::{Deflate, Flush};

    #[test]
    fn raw_deflate_compresses_and_flushes_on_demand() {
        let text = b"hello hello hello hello, deflate as nginx runs it\n".repeat(200);
        let mut d = Deflate::raw(1, 15, 8).unwrap();
        let mut out = Vec::new();
        assert!(!d.compress(&text[..3000], &mut out, Flush::None).unwrap());
        let before = out.len();
        assert!(!d.compress(&[], &mut out, Flush::Sync).unwrap());
        // A sync flush ends with the empty stored block's marker.
        assert!(out.len() > before && out.ends_with(&[0, 0, 0xff, 0xff]));
        assert!(d.compress(&text[3000..], &mut out, Flush::Finish).unwrap());
        // (Inflating it back is the proxy's gzip tests' business.)
        assert!(out.len() < text.len() / 5);
    }

    #[test]
    fn the_same_input_split_anyhow_compresses_to_the_same_bytes() {
        let text: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole = {
            let mut d = Deflate::raw(6, 12, 4).unwrap();
            let mut out = Vec::new();
            d.compress(&text, &mut out, Flush::Finish).unwrap();
            out
        };
        let pieces = {
            let mut d = Deflate::raw(6, 12, 4).unwrap();
            let mut out = Vec::new();
            for c in text.chunks(1234) {
                d.compress(c, &mut out, Flush::None).unwrap();
            }
            d.compress(&[], &mut out, Flush::Finish).unwrap();
            out
        };
        assert_eq!(whole, pieces);
    }
}

/// A tap device that lives exactly as long as this process holds it: the kernel removes a
/// non-persistent tap when its last descriptor closes, also when the process is killed.
/// BGP announcements hang on it (see fulcrum-bgp), so a dead daemon announces nothing.
#[derive(Debug)]
pub struct LivenessTap {
    _fd: OwnedFd,
    pub name: String,
}

impl LivenessTap {
    /// Creates the tap `name` in the caller's network namespace and sets it up.
    pub fn create(name: &str) -> io::Result<LivenessTap> {
        const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an interface name of 1 to 15 bytes",
            ));
        }
        let fd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        let fd = OwnedFd::from(fd);
        // SAFETY: ifreq is plain data, zeroed, then the name (shorter than IFNAMSIZ, so
        // NUL-terminated) and flags are written; TUNSETIFF reads and writes that struct
        // only, on a descriptor we own.
        unsafe {
            let mut ifr: libc::ifreq = std::mem::zeroed();
            for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
                *d = s as libc::c_char;
            }
            ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
            if libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut ifr) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        set_up(name)?;
        Ok(LivenessTap {
            _fd: fd,
            name: name.to_string(),
        })
    }
}

/// Sets an interface up (IFF_UP), as `ip link set NAME up`.
fn set_up(name: &str) -> io::Result<()> {
    let sock =
        std::net::UdpSocket::bind("0.0.0.0:0").or_else(|_| std::net::UdpSocket::bind("[::]:0"))?;
    // SAFETY: as above, a zeroed ifreq with a NUL-terminated name; SIOCGIFFLAGS and
    // SIOCSIFFLAGS read and write its flags only, on a socket we own.
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &mut ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Memory several processes share, as nginx's shared zones: a memfd mapped MAP_SHARED,
/// seen as 64-bit atomic words. The master makes it and passes the descriptor to its
/// workers ([`send_fds`]), who map the same pages with [`SharedMemory::map`]. Also a BPF
/// array map the kernel lets map ([`SharedMemory::map_len`]), whose values a BPF program
/// changes while this process reads them. Every access goes through atomics, so a writer
/// on another CPU while this one reads is no undefined behaviour (what the words mean,
/// and any locking, is the user's).
#[derive(Debug)]
pub struct SharedMemory {
    fd: OwnedFd,
    ptr: std::ptr::NonNull<std::sync::atomic::AtomicU64>,
    words: usize,
}

// SAFETY: the mapping is only reached as `&[AtomicU64]`, which is Sync; the pointer is
// owned by this value and unmapped once, on drop.
unsafe impl Send for SharedMemory {}
// SAFETY: as above: shared access is through atomics only.
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    /// A new zero-filled region of `words` 64-bit words, named `name` in /proc/PID/maps.
    pub fn create(name: &str, words: usize) -> io::Result<SharedMemory> {
        let cname = std::ffi::CString::new(format!("fulcrum:{name}"))
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
        let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let bytes = words
            .checked_mul(8)
            .and_then(|b| libc::off_t::try_from(b).ok())
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `fd` is a valid descriptor.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), bytes) } != 0 {
            return Err(io::Error::last_os_error());
        }
        SharedMemory::map(fd)
    }

    /// Maps a region another process made (its descriptor, received), whole.
    pub fn map(fd: OwnedFd) -> io::Result<SharedMemory> {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::File::from(fd);
        let bytes = usize::try_from(file.metadata()?.size())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        SharedMemory::map_len(OwnedFd::from(file), bytes)
    }

    /// Maps the first `bytes` bytes of a descriptor that has no size to ask (a BPF array
    /// map made with BPF_F_MMAPABLE: its values, back to back, from offset 0).
    pub fn map_len(fd: OwnedFd, bytes: usize) -> io::Result<SharedMemory> {
        let words = bytes / 8;
        if words == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidData));
        }
        // SAFETY: a new shared mapping of `bytes` bytes of the file; the kernel picks the
        // address. Nothing in this process aliases it as anything but atomics.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                words * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast())
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
        Ok(SharedMemory { fd, ptr, words })
    }

    /// The region's words.
    pub fn words(&self) -> &[std::sync::atomic::AtomicU64] {
        // SAFETY: the mapping is `words` * 8 bytes, page-aligned (so aligned for
        // AtomicU64), readable and writable, and lives as long as `self`; AtomicU64 has
        // the layout of u64 and any bit pattern is valid.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.words) }
    }

    /// The descriptor, to pass to another process.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once; no borrow of `words()`
        // outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.words * 8);
        }
    }
}

/// Whether process `pid` still exists (a lock holder that died is not waited for).
pub fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 checks for the process only.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
