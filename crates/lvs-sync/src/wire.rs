//! The sync protocol, version 1, as `net/netfilter/ipvs/ip_vs_sync.c` writes and reads it:
//! an 8-byte header, then up to 255 connection records, each 4-byte aligned.
//!
//! ```text
//! header:  0 | syncid | size (be16, the whole datagram) | count | version 1 | 0 0
//! record:  type (0 IPv4, 1 IPv6) | protocol | version 0 << 12 | size (be16)
//!          flags (be32) | state (be16) | cport | vport | dport | fwmark (be32)
//!          timeout (be32, seconds) | caddr | vaddr | daddr (4 or 16 bytes each)
//!          options: type | length | data ...
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// IPVS's multicast group and port for sync messages.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x81);
pub const PORT: u16 = 8848;

pub const HEADER_LEN: usize = 8;
/// A record without options.
pub const V4_LEN: usize = 36;
pub const V6_LEN: usize = 72;
/// nr_conns is one byte.
pub const MAX_RECORDS: usize = 255;

/// IP_VS_CONN_F_*: the connection flags a record carries.
pub mod flags {
    pub const FWD_MASK: u32 = 0x0007;
    pub const MASQ: u32 = 0x0000;
    pub const LOCALNODE: u32 = 0x0001;
    pub const TUNNEL: u32 = 0x0002;
    pub const DROUTE: u32 = 0x0003;
    pub const BYPASS: u32 = 0x0004;
    pub const SYNC: u32 = 0x0020;
    pub const HASHED: u32 = 0x0040;
    pub const NOOUTPUT: u32 = 0x0080;
    pub const INACTIVE: u32 = 0x0100;
    pub const SEQ_MASK: u32 = 0x0600;
    pub const NO_CPORT: u32 = 0x0800;
    pub const TEMPLATE: u32 = 0x1000;
    pub const ONE_PACKET: u32 = 0x2000;
    /// What a backup takes from a record (IP_VS_CONN_F_BACKUP_MASK).
    pub const BACKUP_MASK: u32 = FWD_MASK | NOOUTPUT | INACTIVE | SEQ_MASK | NO_CPORT | TEMPLATE;
}

/// IPVS's TCP states (IP_VS_TCP_S_*), the `state` of a TCP record.
pub mod tcp_state {
    pub const NONE: u16 = 0;
    pub const ESTABLISHED: u16 = 1;
    pub const SYN_SENT: u16 = 2;
    pub const SYN_RECV: u16 = 3;
    pub const FIN_WAIT: u16 = 4;
    pub const TIME_WAIT: u16 = 5;
    pub const CLOSE: u16 = 6;
    pub const CLOSE_WAIT: u16 = 7;
    pub const LAST_ACK: u16 = 8;
    pub const LISTEN: u16 = 9;
    pub const SYNACK: u16 = 10;
    /// How many there are: a larger state is invalid.
    pub const COUNT: u16 = 11;
}

const OPT_SEQ_DATA: u8 = 1;
const OPT_PE_DATA: u8 = 2;
const OPT_PE_NAME: u8 = 3;
/// An option with this bit may be skipped by a receiver that does not know it.
const OPT_F_PARAM: u8 = 1 << 6;
const SEQ_DATA_LEN: usize = 24;

/// One connection, or persistence template, as a sync message carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub protocol: u8,
    /// IP_VS_CONN_F_* (see [`flags`]).
    pub flags: u32,
    /// An IPVS state of the protocol ([`tcp_state`] for TCP; 0 for UDP and templates).
    pub state: u16,
    pub client: SocketAddr,
    pub virt: SocketAddr,
    pub dest: SocketAddr,
    pub fwmark: u32,
    /// The state's timeout, in seconds (0: the receiver's own for the state).
    pub timeout: u32,
    /// IPVS_OPT_SEQ_DATA (sequence adjustments of an FTP connection), kept as it came.
    pub seq: Option<[u8; SEQ_DATA_LEN]>,
}

impl Record {
    fn is_v6(&self) -> bool {
        self.client.is_ipv6()
    }

    /// Its size on the wire, without the padding that aligns the next one.
    pub fn wire_len(&self) -> usize {
        let base = if self.is_v6() { V6_LEN } else { V4_LEN };
        base + self.seq.map_or(0, |_| 2 + SEQ_DATA_LEN)
    }

    pub fn is_template(&self) -> bool {
        self.flags & flags::TEMPLATE != 0
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.is_v6()));
        out.push(self.protocol);
        out.extend_from_slice(&(self.wire_len() as u16 & 0x0fff).to_be_bytes());
        out.extend_from_slice(&(self.flags & !flags::HASHED).to_be_bytes());
        out.extend_from_slice(&self.state.to_be_bytes());
        for port in [self.client.port(), self.virt.port(), self.dest.port()] {
            out.extend_from_slice(&port.to_be_bytes());
        }
        out.extend_from_slice(&self.fwmark.to_be_bytes());
        out.extend_from_slice(&self.timeout.to_be_bytes());
        let v6 = self.is_v6();
        for a in [self.client.ip(), self.virt.ip(), self.dest.ip()] {
            match (a, v6) {
                (IpAddr::V4(a), false) => out.extend_from_slice(&a.octets()),
                (IpAddr::V6(a), true) => out.extend_from_slice(&a.octets()),
                // One family per record: the client's decides.
                (IpAddr::V4(a), true) => out.extend_from_slice(&a.to_ipv6_mapped().octets()),
                (IpAddr::V6(_), false) => out.extend_from_slice(&[0; 4]),
            }
        }
        if let Some(seq) = &self.seq {
            out.push(OPT_SEQ_DATA);
            out.push(SEQ_DATA_LEN as u8);
            out.extend_from_slice(seq);
        }
    }
}

/// A decoded datagram: what a backup can use, and how many records it had to skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub syncid: u8,
    pub records: Vec<Record>,
    /// Records skipped as IPVS skips them: a persistence engine's data (SIP), an unknown
    /// mandatory option, an unknown protocol or state.
    pub skipped: usize,
}

/// Why a datagram was dropped whole (IPVS drops the rest of the buffer the same way).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("message shorter than its header ({0} bytes)")]
    TooShort(usize),
    #[error("message size field says {said} bytes, the datagram has {got}")]
    Size { said: usize, got: usize },
    #[error("sync protocol version 0 (sync_version 0 on the master) is not supported")]
    Version0,
    #[error("unknown sync protocol version {0}")]
    Version(i8),
    #[error("record {0} runs past the end of the message")]
    Truncated(usize),
    #[error("record {0} has record version {1}")]
    RecordVersion(usize, u16),
    #[error("record {0} has unknown type {1}")]
    RecordType(usize, u8),
    #[error("record {0} has a malformed option")]
    Option(usize),
}

/// Reads one datagram.
pub fn decode(buf: &[u8]) -> Result<Message, Error> {
    if buf.len() < HEADER_LEN {
        return Err(Error::TooShort(buf.len()));
    }
    let size = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if size != buf.len() {
        return Err(Error::Size {
            said: size,
            got: buf.len(),
        });
    }
    let (reserved, syncid, count, version, spare) =
        (buf[0], buf[1], buf[4], buf[5] as i8, [buf[6], buf[7]]);
    if reserved != 0 {
        return Err(Error::Version0);
    }
    if version != 1 || spare != [0, 0] {
        return Err(Error::Version(version));
    }
    let mut msg = Message {
        syncid,
        records: Vec::with_capacity(usize::from(count)),
        skipped: 0,
    };
    let mut at = HEADER_LEN;
    for i in 0..usize::from(count) {
        if at + V4_LEN > buf.len() {
            return Err(Error::Truncated(i));
        }
        let ver_size = u16::from_be_bytes([buf[at + 2], buf[at + 3]]);
        let len = usize::from(ver_size & 0x0fff);
        if ver_size >> 12 != 0 {
            return Err(Error::RecordVersion(i, ver_size >> 12));
        }
        if at + len > buf.len() {
            return Err(Error::Truncated(i));
        }
        match record(&buf[at..at + len], i)? {
            Some(r) => msg.records.push(r),
            None => msg.skipped += 1,
        }
        at += (len + 3) & !3;
    }
    Ok(msg)
}

/// One record (exactly its bytes): None when it is skipped.
fn record(b: &[u8], i: usize) -> Result<Option<Record>, Error> {
    // A record that says it is shorter than the smallest one (its size field, not the
    // datagram, bounds it) is refused before its type is read, as ip_vs_proc_sync_conn
    // refuses one whose fixed part passes its end.
    if b.len() < V4_LEN {
        return Err(Error::Truncated(i));
    }
    let v6 = match b[0] {
        0 => false,
        1 => true,
        t => return Err(Error::RecordType(i, t)),
    };
    let base = if v6 { V6_LEN } else { V4_LEN };
    if b.len() < base {
        return Err(Error::Truncated(i));
    }
    let be16 = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
    let be32 = |o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let ip = |o: usize| -> IpAddr {
        if v6 {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[o..o + 16]);
            IpAddr::V6(Ipv6Addr::from(a))
        } else {
            IpAddr::V4(Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]))
        }
    };
    let w = if v6 { 16 } else { 4 };
    let mut rec = Record {
        protocol: b[1],
        flags: be32(4) & flags::BACKUP_MASK,
        state: be16(8),
        client: SocketAddr::new(ip(24), be16(10)),
        virt: SocketAddr::new(ip(24 + w), be16(12)),
        dest: SocketAddr::new(ip(24 + 2 * w), be16(14)),
        fwmark: be32(16),
        timeout: be32(20),
        seq: None,
    };
    let mut skip = false;
    let (mut seen_pe_data, mut seen_pe_name) = (false, false);
    let mut o = base;
    while o < b.len() {
        if o + 2 > b.len() {
            return Err(Error::Option(i));
        }
        let (kind, len) = (b[o], usize::from(b[o + 1]));
        o += 2;
        if len == 0 || o + len > b.len() {
            return Err(Error::Option(i));
        }
        match kind & !OPT_F_PARAM {
            OPT_SEQ_DATA => {
                if len != SEQ_DATA_LEN || rec.seq.is_some() {
                    return Err(Error::Option(i));
                }
                let mut s = [0u8; SEQ_DATA_LEN];
                s.copy_from_slice(&b[o..o + len]);
                rec.seq = Some(s);
            }
            OPT_PE_DATA | OPT_PE_NAME => {
                let seen = if kind & !OPT_F_PARAM == OPT_PE_DATA {
                    &mut seen_pe_data
                } else {
                    &mut seen_pe_name
                };
                if *seen {
                    return Err(Error::Option(i));
                }
                *seen = true;
                // A persistence engine (SIP's Call-ID): not one Fulcrum has.
                skip = true;
            }
            _ if kind & OPT_F_PARAM == 0 => skip = true,
            _ => {}
        }
        o += len;
    }
    if rec.is_template() {
        // The protocol of a template says nothing about its state.
        rec.state = 0;
    } else {
        match rec.protocol {
            6 if rec.state >= tcp_state::COUNT => skip = true,
            6 => {}
            17 if rec.state != 0 => skip = true,
            17 => {}
            _ => skip = true,
        }
    }
    Ok((!skip).then_some(rec))
}

/// Packs records into datagrams of at most `maxlen` bytes and 255 records, as an IPVS
/// master fills its sync buffers.
pub fn encode(syncid: u8, records: &[Record], maxlen: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut count = 0usize;
    for r in records {
        let pad = (4 - cur.len() % 4) % 4;
        if !cur.is_empty() && (cur.len() + pad + r.wire_len() > maxlen || count == MAX_RECORDS) {
            out.push(finish(cur, count));
            cur = Vec::new();
            count = 0;
        }
        if cur.is_empty() {
            cur.extend_from_slice(&[0, syncid, 0, 0, 0, 1, 0, 0]);
        } else {
            cur.resize(cur.len() + (4 - cur.len() % 4) % 4, 0);
        }
        r.write(&mut cur);
        count += 1;
    }
    if !cur.is_empty() {
        out.push(finish(cur, count));
    }
    out
}

fn finish(mut m: Vec<u8>, count: usize) -> Vec<u8> {
    let size = m.len() as u16;
    m[2..4].copy_from_slice(&size.to_be_bytes());
    m[4] = count as u8;
    m
}

/// The message size IPVS gives a sync daemon (what `ipvsadm -L --daemon` shows): a
/// master's default is a 1500-byte datagram whatever the MTU, a backup's what the link
/// carries (at least 1500), less the IP and UDP headers (IPv6's with an IPv6 group); a
/// given size is kept within IPVS's bounds (a backup's at least 1024).
pub fn daemon_maxlen(backup: bool, configured: Option<u16>, mtu: u32, ipv6: bool) -> usize {
    let hlen = headers(ipv6);
    match configured {
        Some(m) => usize::from(m).clamp(if backup { 1024 } else { 1 }, 65535 - hlen),
        None if backup => (mtu as usize).clamp(1500, 65535) - hlen,
        None => 1500 - hlen,
    }
}

/// The IP and UDP headers of a sync datagram.
fn headers(ipv6: bool) -> usize {
    if ipv6 {
        40 + 8
    } else {
        20 + 8
    }
}

/// The largest datagram a master sends: its maxlen, within what the link carries, and
/// never too small for one record.
pub fn datagram_limit(maxlen: usize, mtu: u32, ipv6: bool) -> usize {
    maxlen
        .min((mtu as usize).saturating_sub(headers(ipv6)))
        .max(HEADER_LEN + V6_LEN + 2 + SEQ_DATA_LEN)
}
