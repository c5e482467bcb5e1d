//! The structs and constants shared with the XDP program (bpf/include/structs.h and
//! constants.h). Their layout is not asserted here by copied numbers: a test reads the
//! BTF clang writes into the program object and holds every struct's size and field
//! offsets to it, and the enums to the header (src/btf.rs).

use std::net::Ipv4Addr;

use aya::Pod;

pub const MAX_SERVICES: u32 = 1024;
pub const MAX_DESTS: u32 = 128;
pub const STATE_MAX: u32 = 12;

pub const SVC_F_PERSISTENT: u8 = 0x01;
pub const SVC_F_OPS: u8 = 0x02;
pub const SVC_F_SH_PORT: u8 = 0x04;
pub const SVC_F_SH_FALLBACK: u8 = 0x08;
pub const SVC_F_MH_PORT: u8 = 0x10;
pub const SVC_F_MH_FALLBACK: u8 = 0x20;
pub const SVC_F_SLOPPY_TCP: u8 = 0x40;

pub const METHOD_NAT: u8 = 0;
pub const METHOD_DR: u8 = 1;
pub const METHOD_TUN: u8 = 2;
pub const TUN_IPIP: u8 = 0;
pub const TUN_GUE: u8 = 1;
pub const TUN_GRE: u8 = 2;
pub const TUN_F_CSUM: u8 = 0x01;
pub const TUN_F_REMCSUM: u8 = 0x02;

pub const DEST_F_PRESENT: u8 = 0x01;
pub const DEST_F_OVERLOADED: u8 = 0x02;
/// An IPv4 service's IPv6 real server (TUN): its address is in `dests6`.
pub const DEST_F_V6: u8 = 0x04;

pub const CONN_F_REPLY: u8 = 0x01;

/// `struct service_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

impl ServiceKey {
    pub fn v6(addr: std::net::Ipv6Addr, port: u16, proto: u8) -> ServiceKey {
        ServiceKey {
            addr: addr.octets(),
            port: port.to_be(),
            proto,
            family: 6,
        }
    }

    /// The service's address.
    pub fn ip(&self) -> std::net::IpAddr {
        if self.family == 6 {
            std::net::Ipv6Addr::from(self.addr).into()
        } else {
            Ipv4Addr::new(self.addr[0], self.addr[1], self.addr[2], self.addr[3]).into()
        }
    }

    pub fn v4(addr: Ipv4Addr, port: u16, proto: u8) -> ServiceKey {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&addr.octets());
        ServiceKey {
            addr: a,
            port: port.to_be(),
            proto,
            family: 4,
        }
    }
}

/// `struct service_value`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceValue {
    pub id: u32,
    pub sched: u8,
    pub flags: u8,
    pub ndests: u16,
    pub persist_timeout: u32,
    /// Network byte order.
    pub persist_mask: u32,
    pub wrr_mw: i32,
    pub wrr_di: i32,
    pub table_size: u32,
    pub pad: u32,
}

/// `struct dest`: a real-server slot.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dest {
    /// Network byte order.
    pub addr: u32,
    /// Network byte order.
    pub port: u16,
    pub method: u8,
    pub flags: u8,
    pub weight: u32,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub smac: [u8; 6],
    pub u_threshold: u32,
    pub l_threshold: u32,
    /// Network byte order.
    pub tun_saddr: u32,
    /// Network byte order.
    pub tun_port: u16,
    pub tun_type: u8,
    pub tun_flags: u8,
}

/// `struct dest_conns`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DestConns {
    pub active: u32,
    pub inactive: u32,
}

/// `struct traffic`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Traffic {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
}

impl std::ops::AddAssign for Traffic {
    fn add_assign(&mut self, o: Traffic) {
        self.conns += o.conns;
        self.inpkts += o.inpkts;
        self.outpkts += o.outpkts;
        self.inbytes += o.inbytes;
        self.outbytes += o.outbytes;
    }
}

/// `struct sched_state`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchedState {
    pub rr: u64,
    pub wrr: u64,
    pub rng: u64,
    pub pad: u64,
}

/// `struct flow_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Addresses and ports in network byte order.
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub pad: [u8; 3],
}

/// `struct conn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conn {
    pub expires: u64,
    /// Addresses and ports in network byte order.
    pub client: u32,
    pub vip: u32,
    pub rip: u32,
    pub cport: u16,
    pub vport: u16,
    pub rport: u16,
    pub proto: u8,
    pub state: u8,
    pub svc: u32,
    pub dest: u16,
    pub method: u8,
    pub flags: u8,
    pub timeout: u32,
    pub ifindex: u32,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub route_gen: u32,
    /// TUN: the route's MTU towards the real server (0: not known).
    pub mtu: u16,
    /// Packets from the client, wrapping at 16 bits.
    pub in_pkts: u16,
    /// Which count holds it (`COUNTED_*`), swapped atomically by the program.
    pub counted: u64,
}

impl Conn {
    /// The entry from its 72 bytes as the program lays them out (native byte order).
    pub(crate) fn from_bytes(b: &[u8; 72]) -> Conn {
        let u16_at = |o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut w = [0; 8];
            w.copy_from_slice(&b[o..o + 8]);
            u64::from_ne_bytes(w)
        };
        let mac = |o: usize| [b[o], b[o + 1], b[o + 2], b[o + 3], b[o + 4], b[o + 5]];
        Conn {
            expires: u64_at(0),
            client: u32_at(8),
            vip: u32_at(12),
            rip: u32_at(16),
            cport: u16_at(20),
            vport: u16_at(22),
            rport: u16_at(24),
            proto: b[26],
            state: b[27],
            svc: u32_at(28),
            dest: u16_at(32),
            method: b[34],
            flags: b[35],
            timeout: u32_at(36),
            ifindex: u32_at(40),
            dmac: mac(44),
            smac: mac(50),
            route_gen: u32_at(56),
            mtu: u16_at(60),
            in_pkts: u16_at(62),
            counted: u64_at(64),
        }
    }
}

/// `struct conn_slot`: a slot of the IPv4 connection table (bpf/include/conntab.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnSlot {
    /// `SLOT_*` in the low two bits, a generation above.
    pub tag: u64,
    /// The flow key: src | dst << 32 (addresses in network byte order).
    pub w0: u64,
    /// The ports' 32-bit word as in memory (sport, then dport, in network byte order)
    /// | proto << 32.
    pub w1: u64,
    /// As a home slot: how far into its window entries homed there went.
    pub reach: u32,
    pub pad: u32,
    pub c: Conn,
}

/// A slot's state: the low two bits of its tag (conntab.h's SLOT_*).
pub const SLOT_STATE: u64 = 3;
pub const SLOT_LIVE: u64 = 2;
/// Slots per live count in `conn_chunks` (CONN_CHUNK).
pub const CONN_CHUNK: u32 = 1024;

impl ConnSlot {
    /// The key of the flow the slot holds.
    pub fn key(&self) -> FlowKey {
        let ports = (self.w1 as u32).to_ne_bytes();
        FlowKey {
            src: self.w0 as u32,
            dst: (self.w0 >> 32) as u32,
            sport: u16::from_ne_bytes([ports[0], ports[1]]),
            dport: u16::from_ne_bytes([ports[2], ports[3]]),
            proto: (self.w1 >> 32) as u8,
            pad: [0; 3],
        }
    }
}

/// `struct conn_hash`: the IPv4 connection table's hash multipliers (odd), counts and
/// size.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnHash {
    pub mul0: u64,
    pub mul1: u64,
    pub stashed: u64,
    /// Entries held.
    pub live: u64,
    pub slots: u32,
    /// The most entries the table takes: two per connection of --max-connections.
    pub limit: u32,
    pub mul2: u64,
}

/// `struct flow_key6`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Ports in network byte order.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub pad: [u8; 3],
}

/// `struct conn6`: `c` with the addresses folded, then the IPv6 addresses.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conn6 {
    pub c: Conn,
    pub client: [u8; 16],
    pub vip: [u8; 16],
    pub rip: [u8; 16],
}

impl Conn6 {
    /// The entry from its 120 bytes as the program lays them out.
    pub(crate) fn from_bytes(b: &[u8; 120]) -> Conn6 {
        let addr = |o: usize| {
            let mut a = [0; 16];
            a.copy_from_slice(&b[o..o + 16]);
            a
        };
        let mut c = [0; 72];
        c.copy_from_slice(&b[..72]);
        Conn6 {
            c: Conn::from_bytes(&c),
            client: addr(72),
            vip: addr(88),
            rip: addr(104),
        }
    }

    /// The key the entry is held under: (client, VIP) for a client's entry, (real
    /// server, client) for a NAT reply entry.
    pub fn key(&self) -> FlowKey6 {
        let reply = self.c.flags & CONN_F_REPLY != 0;
        let (src, dst, sport, dport) = if reply {
            (self.rip, self.client, self.c.rport, self.c.cport)
        } else {
            (self.client, self.vip, self.c.cport, self.c.vport)
        };
        FlowKey6 {
            src,
            dst,
            sport,
            dport,
            proto: self.c.proto,
            pad: [0; 3],
        }
    }
}

/// `struct conn_slot6`: a slot of the IPv6 connection table (bpf/include/conntab.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnSlot6 {
    pub tag: u64,
    /// The key's addresses, hashed with the table's multipliers.
    pub w0: u64,
    /// As `ConnSlot::w1`.
    pub w1: u64,
    pub reach: u32,
    pub pad: u32,
    pub c: Conn6,
}

/// `struct conn_hash6`: the IPv6 table's `conn_hash`, and the odd multipliers that hash a
/// key's four address words.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnHash6 {
    pub h: ConnHash,
    pub amul: [u64; 4],
}

/// `struct persist_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PersistKey {
    pub svc: u32,
    pub client: u32,
}

/// `struct persist_key6`: an IPv6 client's network.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PersistKey6 {
    pub svc: u32,
    pub pad: u32,
    pub client: [u8; 16],
}

/// `struct persist_value`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PersistValue {
    pub expires: u64,
    pub dest: u32,
    pub rip: u32,
}

/// `struct table_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TableKey {
    pub svc: u32,
    pub slot: u32,
}

/// `struct locality_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LocalityKey {
    pub svc: u32,
    pub addr: u32,
}

/// `struct locality_value`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocalityValue {
    pub used: u64,
    pub changed: u64,
    pub set: [u64; 2],
    pub dest: u32,
    pub pad: u32,
}

/// `struct clock`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Clock {
    pub tick_ns: u64,
    pub base: u64,
}

/// `struct host_macs` (bpf/include/maps.h): the unicast MACs an interface takes frames for.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostMacs {
    pub ifindex: u32,
    pub n: u32,
    pub mac: [[u8; 8]; 8],
}

pub const HOST_MAC_SLOTS: u32 = 1024;

// SAFETY: every type below is repr(C), made only of integers and integer arrays, with no
// padding (sizes and offsets asserted above), so every bit pattern is a valid value and
// they can be copied to and from the kernel as bytes.
unsafe impl Pod for ServiceKey {}
// SAFETY: as above.
unsafe impl Pod for ServiceValue {}
// SAFETY: as above.
unsafe impl Pod for Dest {}
// SAFETY: as above.
unsafe impl Pod for Clock {}
// SAFETY: as above.
unsafe impl Pod for HostMacs {}
// SAFETY: as above.
unsafe impl Pod for DestConns {}
// SAFETY: as above.
unsafe impl Pod for Traffic {}
// SAFETY: as above.
unsafe impl Pod for SchedState {}
// SAFETY: as above.
unsafe impl Pod for FlowKey {}
// SAFETY: as above.
unsafe impl Pod for Conn {}
// SAFETY: as above.
unsafe impl Pod for ConnHash {}
// SAFETY: as above.
unsafe impl Pod for FlowKey6 {}
// SAFETY: as above.
unsafe impl Pod for Conn6 {}

unsafe impl Pod for ConnHash6 {}
// SAFETY: as above.
unsafe impl Pod for PersistKey {}
// SAFETY: as above.
unsafe impl Pod for PersistKey6 {}
// SAFETY: as above.
unsafe impl Pod for PersistValue {}
// SAFETY: as above.
unsafe impl Pod for TableKey {}
// SAFETY: as above.
unsafe impl Pod for LocalityKey {}
// SAFETY: as above.
unsafe impl Pod for LocalityValue {}

/// IPVS's connection states (`enum conn_state`), with ipvsadm's names.
pub const STATE_NAMES: [&str; 12] = [
    "NONE",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "SYNACK",
    "UDP",
];

pub const STATE_ESTABLISHED: usize = 1;
pub const STATE_FIN_WAIT: usize = 4;
pub const STATE_UDP: usize = 11;

/// IPVS's default timeouts in seconds by state (ip_vs_proto_tcp.c, ip_vs_proto_udp.c).
pub const DEFAULT_TIMEOUTS: [u32; 12] = [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120, 300];
