use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;

use crate::wire::{self, flags, tcp_state, Record};
use crate::{Master, Seen};

fn v4(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port)
}

fn dr_established() -> Record {
    Record {
        protocol: 6,
        flags: flags::DROUTE | flags::NOOUTPUT,
        state: tcp_state::ESTABLISHED,
        client: v4([10, 1, 10, 100], 40000),
        virt: v4([10, 1, 10, 65], 80),
        dest: v4([10, 1, 10, 2], 80),
        fwmark: 0,
        timeout: 900,
        seq: None,
    }
}

/// The bytes ip_vs_sync_conn writes for one IPv4 DR connection, field by field from the
/// kernel's struct ip_vs_sync_mesg and struct ip_vs_sync_v4.
#[test]
fn one_ipv4_record_is_the_kernels_bytes() {
    let dgrams = wire::encode(51, &[dr_established()], 1444);
    assert_eq!(dgrams.len(), 1);
    #[rustfmt::skip]
    let want: Vec<u8> = vec![
        0, 51, 0, 44, 1, 1, 0, 0,            // reserved, syncid, size 44, 1 conn, version 1
        0, 6, 0, 36,                          // type IPv4, TCP, version 0 size 36
        0, 0, 0, 0x83,                        // DROUTE | NOOUTPUT
        0, 1,                                 // ESTABLISHED
        0x9c, 0x40, 0, 80, 0, 80,             // cport 40000, vport, dport
        0, 0, 0, 0,                           // fwmark
        0, 0, 3, 0x84,                        // timeout 900 s
        10, 1, 10, 100, 10, 1, 10, 65, 10, 1, 10, 2,
    ];
    assert_eq!(dgrams[0], want);
    let m = wire::decode(&want).unwrap();
    assert_eq!(m.syncid, 51);
    assert_eq!(m.records, vec![dr_established()]);
}

#[test]
fn bad_datagrams_are_refused_whole() {
    let good = wire::encode(1, &[dr_established()], 1444).remove(0);
    assert!(matches!(
        wire::decode(&good[..7]),
        Err(wire::Error::TooShort(7))
    ));
    let mut short = good.clone();
    short.pop();
    assert!(matches!(
        wire::decode(&short),
        Err(wire::Error::Size { .. })
    ));
    let mut v0 = good.clone();
    v0[0] = 1;
    assert_eq!(wire::decode(&v0), Err(wire::Error::Version0));
    let mut two = good.clone();
    two[4] = 2;
    assert_eq!(wire::decode(&two), Err(wire::Error::Truncated(1)));
}

#[test]
fn records_ipvs_skips_are_counted_not_kept() {
    let mut bad_state = dr_established();
    bad_state.state = 11;
    let mut sctp = dr_established();
    sctp.protocol = 132;
    let m = wire::decode(&wire::encode(0, &[bad_state, dr_established(), sctp], 1444)[0]).unwrap();
    assert_eq!(m.records, vec![dr_established()]);
    assert_eq!(m.skipped, 2);
}

#[test]
fn a_persistence_engine_record_is_skipped_and_the_next_one_read() {
    // Built by hand: a record with PE data and PE name options (SIP), then a plain one.
    let mut with_pe = wire::encode(0, &[dr_established()], 1444).remove(0);
    with_pe.truncate(wire::HEADER_LEN + wire::V4_LEN);
    with_pe.extend_from_slice(&[2, 3, b'a', b'b', b'c', 3, 3, b's', b'i', b'p']);
    let len = (wire::V4_LEN + 10) as u16;
    with_pe[wire::HEADER_LEN + 2..wire::HEADER_LEN + 4].copy_from_slice(&len.to_be_bytes());
    with_pe.resize(with_pe.len().next_multiple_of(4), 0);
    let second = wire::encode(0, &[dr_established()], 1444).remove(0);
    with_pe.extend_from_slice(&second[wire::HEADER_LEN..]);
    let size = with_pe.len() as u16;
    with_pe[2..4].copy_from_slice(&size.to_be_bytes());
    with_pe[4] = 2;
    let m = wire::decode(&with_pe).unwrap();
    assert_eq!(m.skipped, 1);
    assert_eq!(m.records, vec![dr_established()]);
}

#[test]
fn maxlen_follows_ipvs() {
    // 1500-byte MTU: what the real IPVS's daemon reports (maxlen=1472).
    assert_eq!(wire::daemon_maxlen(false, None, 1500), 1472);
    assert_eq!(
        wire::datagram_limit(wire::daemon_maxlen(false, Some(600), 1500), 1500),
        600
    );
    assert_eq!(
        wire::datagram_limit(wire::daemon_maxlen(false, Some(9000), 1500), 1500),
        1472
    );
    // The sizes the real IPVS reported (ipvsadm -L --daemon on Debian 12's kernel).
    assert_eq!(wire::daemon_maxlen(false, None, 65536), 1472);
    assert_eq!(wire::daemon_maxlen(true, Some(1000), 1500), 1024);
    assert_eq!(wire::daemon_maxlen(true, None, 1500), 1472);
}

fn record() -> impl Strategy<Value = Record> {
    let addr = prop_oneof![
        any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<[u8; 16]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ];
    (
        addr,
        any::<([u8; 16], [u8; 16])>(),
        any::<(u16, u16, u16)>(),
        prop_oneof![Just(6u8), Just(17u8)],
        any::<bool>(),
        0u16..tcp_state::COUNT,
        any::<(u32, u32, u32)>(),
        proptest::option::of(any::<[u8; 24]>()),
    )
        .prop_map(
            |(client, (v, d), (cp, vp, dp), protocol, template, state, (f, mark, t), seq)| {
                let other = |b: [u8; 16]| match client {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(b)),
                };
                let mut flags = f & flags::BACKUP_MASK & !flags::TEMPLATE;
                if template {
                    flags |= flags::TEMPLATE;
                }
                Record {
                    protocol,
                    flags,
                    state: if template || protocol == 17 { 0 } else { state },
                    client: SocketAddr::new(client, cp),
                    virt: SocketAddr::new(other(v), vp),
                    dest: SocketAddr::new(other(d), dp),
                    fwmark: mark,
                    timeout: t,
                    seq,
                }
            },
        )
}

proptest! {
    /// Whatever the master packs, a backup reads back, in order, in datagrams no longer
    /// than maxlen and of at most 255 records.
    #[test]
    fn encode_then_decode_gives_the_records(
        records in proptest::collection::vec(record(), 0..600),
        syncid: u8,
        maxlen in 200usize..9000,
    ) {
        let mut back = Vec::new();
        for d in wire::encode(syncid, &records, maxlen) {
            prop_assert!(d.len() <= maxlen);
            let m = wire::decode(&d).unwrap();
            prop_assert!(m.records.len() <= wire::MAX_RECORDS);
            prop_assert_eq!(m.syncid, syncid);
            prop_assert_eq!(m.skipped, 0);
            back.extend(m.records);
        }
        prop_assert_eq!(back, records);
    }

    /// Any bytes: an answer, never a panic.
    #[test]
    fn decode_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = wire::decode(&bytes);
    }

    /// Valid headers over random bodies reach the record parser.
    #[test]
    fn decode_takes_any_records(body in proptest::collection::vec(any::<u8>(), 0..400), n: u8) {
        let mut b = vec![0, 1, 0, 0, n, 1, 0, 0];
        b.extend(body);
        let size = b.len() as u16;
        b[2..4].copy_from_slice(&size.to_be_bytes());
        let _ = wire::decode(&b);
    }
}

fn seen(state: u16, deadline: u64) -> Seen {
    let mut r = dr_established();
    r.state = state;
    Seen {
        record: r,
        deadline: Duration::from_secs(deadline),
    }
}

#[test]
fn the_master_sends_an_established_connection_once_then_refreshes_it() {
    let mut m = Master::new(Duration::ZERO);
    let s = |n| Duration::from_secs(n);
    // The handshake is not sent.
    assert!(m.tick(s(0), [seen(tcp_state::SYN_RECV, 60)]).is_empty());
    assert_eq!(m.tick(s(1), [seen(tcp_state::ESTABLISHED, 901)]).len(), 1);
    // Traffic, but the copy is fresh: nothing.
    assert!(m.tick(s(2), [seen(tcp_state::ESTABLISHED, 902)]).is_empty());
    // Half the timeout later, with traffic since: sent again.
    assert_eq!(
        m.tick(s(451), [seen(tcp_state::ESTABLISHED, 1351)]).len(),
        1
    );
    // Idle: the backup's copy runs out when the master's does; nothing to send.
    assert!(m
        .tick(s(1000), [seen(tcp_state::ESTABLISHED, 1351)])
        .is_empty());
    // Closing: sent at once.
    assert_eq!(m.tick(s(1001), [seen(tcp_state::FIN_WAIT, 1121)]).len(), 1);
    assert_eq!(m.tick(s(1002), [seen(tcp_state::TIME_WAIT, 1122)]).len(), 1);
    // Gone from the table: forgotten, so a new one on the same ports is sent.
    assert!(m.tick(s(1200), []).is_empty());
    assert_eq!(
        m.tick(s(1201), [seen(tcp_state::ESTABLISHED, 2101)]).len(),
        1
    );
}

#[test]
fn sync_refresh_period_shortens_the_refresh() {
    let mut m = Master::new(Duration::from_secs(30));
    let s = |n| Duration::from_secs(n);
    assert_eq!(m.tick(s(0), [seen(tcp_state::ESTABLISHED, 900)]).len(), 1);
    assert!(m
        .tick(s(29), [seen(tcp_state::ESTABLISHED, 929)])
        .is_empty());
    assert_eq!(m.tick(s(30), [seen(tcp_state::ESTABLISHED, 930)]).len(), 1);
    m.reset();
    assert_eq!(m.tick(s(31), [seen(tcp_state::ESTABLISHED, 930)]).len(), 1);
}
