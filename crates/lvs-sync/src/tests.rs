use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;

use crate::wire::{self, flags, tcp_state, Record};
use crate::{Master, Seen, Settings};

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
    assert_eq!(wire::daemon_maxlen(false, None, 1500, false), 1472);
    assert_eq!(
        wire::datagram_limit(
            wire::daemon_maxlen(false, Some(600), 1500, false),
            1500,
            false
        ),
        600
    );
    assert_eq!(
        wire::datagram_limit(
            wire::daemon_maxlen(false, Some(9000), 1500, false),
            1500,
            false
        ),
        1472
    );
    // The sizes the real IPVS reported (ipvsadm -L --daemon on Debian 12's kernel).
    assert_eq!(wire::daemon_maxlen(false, None, 65536, false), 1472);
    assert_eq!(wire::daemon_maxlen(true, Some(1000), 1500, false), 1024);
    assert_eq!(wire::daemon_maxlen(true, None, 1500, false), 1472);
    // An IPv6 group: IPv6's 40-byte header instead of 20.
    assert_eq!(wire::daemon_maxlen(false, None, 1500, true), 1452);
    assert_eq!(wire::daemon_maxlen(true, None, 9000, true), 8952);
    assert_eq!(
        wire::datagram_limit(
            wire::daemon_maxlen(false, Some(9000), 1500, true),
            1500,
            true
        ),
        1452
    );
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

/// A record whose size field says 0 (or anything below the fixed part) is refused, not
/// read past its end: the case the property test above once found.
#[test]
fn a_record_shorter_than_its_fixed_part_is_refused() {
    for said in [0u16, 4, 35] {
        let mut b = vec![0, 1, 0, 0, 1, 1, 0, 0];
        let mut rec = vec![0u8; 36];
        rec[2..4].copy_from_slice(&said.to_be_bytes());
        b.extend(rec);
        let size = b.len() as u16;
        b[2..4].copy_from_slice(&size.to_be_bytes());
        assert!(
            matches!(wire::decode(&b), Err(wire::Error::Truncated(0))),
            "size {said}"
        );
    }
}

fn seen(state: u16, deadline: u64, packets: u16) -> Seen {
    let mut r = dr_established();
    r.state = state;
    Seen {
        record: r,
        deadline: Duration::from_secs(deadline),
        packets,
    }
}

fn template(deadline: u64) -> Seen {
    let mut r = dr_established();
    r.flags |= flags::TEMPLATE;
    r.state = 0;
    r.timeout = 360;
    Seen {
        record: r,
        deadline: Duration::from_secs(deadline),
        packets: 0,
    }
}

const ES: u16 = tcp_state::ESTABLISHED;
const S: fn(u64) -> Duration = Duration::from_secs;

/// IPVS's defaults, sync_threshold 3 50: sent at the third packet, then every 50, and
/// (Fulcrum's net) at half the timeout when traffic moved the timer.
#[test]
fn by_default_a_connection_goes_at_its_third_packet_then_every_fifty() {
    let mut m = Master::default();
    // The handshake is not sent.
    assert!(m.tick(S(0), [seen(tcp_state::SYN_RECV, 60, 1)]).is_empty());
    // ESTABLISHED after the client's ACK: two packets, not yet.
    assert!(m.tick(S(1), [seen(ES, 901, 2)]).is_empty());
    assert_eq!(m.tick(S(2), [seen(ES, 902, 3)]).len(), 1);
    // 49 more packets: not yet; the 50th: again.
    assert!(m.tick(S(3), [seen(ES, 903, 52)]).is_empty());
    assert_eq!(m.tick(S(4), [seen(ES, 904, 53)]).len(), 1);
    // Across the 16-bit wrap.
    assert_eq!(m.tick(S(5), [seen(ES, 905, 65530)]).len(), 1);
    assert!(m.tick(S(6), [seen(ES, 906, 30)]).is_empty());
    assert_eq!(m.tick(S(7), [seen(ES, 907, 44)]).len(), 1);
    // A trickle (under 50 packets) still goes at half the timeout while it moves the
    // timer; idle, it does not (the backup's copy runs out with the master's).
    assert!(m.tick(S(400), [seen(ES, 1300, 50)]).is_empty());
    assert_eq!(m.tick(S(457), [seen(ES, 1357, 51)]).len(), 1);
    assert!(m.tick(S(1000), [seen(ES, 1357, 51)]).is_empty());
    // Closing: sent at once, whatever the packets.
    assert_eq!(
        m.tick(S(1001), [seen(tcp_state::FIN_WAIT, 1121, 52)]).len(),
        1
    );
    assert_eq!(
        m.tick(S(1002), [seen(tcp_state::TIME_WAIT, 1122, 53)])
            .len(),
        1
    );
    assert!(m
        .tick(S(1003), [seen(tcp_state::TIME_WAIT, 1123, 54)])
        .is_empty());
    // Gone from the table: forgotten, so a new one on the same ports is sent.
    assert!(m.tick(S(1200), []).is_empty());
    assert_eq!(m.tick(S(1201), [seen(ES, 2101, 3)]).len(), 1);
    m.reset();
    assert_eq!(m.tick(S(1202), [seen(ES, 2102, 4)]).len(), 1);
}

#[test]
fn a_period_of_zero_sends_once() {
    let mut m = Master::new(Settings {
        threshold: 1,
        period: 0,
        ..Settings::default()
    });
    assert_eq!(m.tick(S(0), [seen(ES, 900, 2)]).len(), 1);
    for t in 1..5 {
        assert!(m
            .tick(S(t * 500), [seen(ES, 900 + t * 500, 2 + t as u16 * 1000)])
            .is_empty());
    }
    // State changes still go.
    assert_eq!(
        m.tick(S(3000), [seen(tcp_state::CLOSE_WAIT, 3060, 1)])
            .len(),
        1
    );
}

/// sync_refresh_period: a copy again once the timer moved that far (or half the timeout),
/// repeated sync_retries times an eighth of the period apart; with the period 0, packets
/// do not count.
#[test]
fn sync_refresh_period_and_retries() {
    let mut m = Master::new(Settings {
        threshold: 0,
        period: 0,
        refresh_period: S(40),
        retries: 2,
    });
    assert_eq!(m.tick(S(0), [seen(ES, 900, 0)]).len(), 1);
    // Before refresh/8: nothing; then the two repeats, 5 s apart at least; then no more.
    assert!(m.tick(S(4), [seen(ES, 904, 0)]).is_empty());
    assert_eq!(m.tick(S(5), [seen(ES, 905, 0)]).len(), 1);
    assert!(m.tick(S(9), [seen(ES, 909, 0)]).is_empty());
    assert_eq!(m.tick(S(10), [seen(ES, 910, 0)]).len(), 1);
    assert!(m.tick(S(20), [seen(ES, 920, 0)]).is_empty());
    // The timer 40 s past the copy's: a new copy, and its repeats.
    assert_eq!(m.tick(S(40), [seen(ES, 940, 0)]).len(), 1);
    assert_eq!(m.tick(S(45), [seen(ES, 945, 0)]).len(), 1);
    // A short timeout: half of it (10 s at least) is the refresh.
    let mut m = Master::new(Settings {
        period: 0,
        refresh_period: S(3600),
        ..Settings::default()
    });
    assert_eq!(m.tick(S(0), [seen(ES, 900, 0)]).len(), 1);
    assert!(m.tick(S(449), [seen(ES, 1349, 0)]).is_empty());
    assert_eq!(m.tick(S(450), [seen(ES, 1350, 0)]).len(), 1);
    // With a packet period too, both must hold.
    let mut m = Master::new(Settings {
        threshold: 3,
        period: 50,
        refresh_period: S(30),
        retries: 0,
    });
    assert!(m.tick(S(0), [seen(ES, 900, 2)]).is_empty());
    assert_eq!(m.tick(S(1), [seen(ES, 901, 3)]).len(), 1);
    assert!(m.tick(S(40), [seen(ES, 940, 20)]).is_empty(), "17 packets");
    assert!(m.tick(S(41), [seen(ES, 910, 60)]).is_empty(), "9 s moved");
    assert_eq!(m.tick(S(42), [seen(ES, 942, 60)]).len(), 1);
}

#[test]
fn templates_go_when_first_seen_and_at_half_their_timeout() {
    let mut m = Master::default();
    assert_eq!(m.tick(S(0), [template(360)]).len(), 1);
    assert!(m.tick(S(100), [template(460)]).is_empty());
    assert_eq!(m.tick(S(180), [template(540)]).len(), 1);
    // Unmoved: not again.
    assert!(m.tick(S(400), [template(540)]).is_empty());
}

proptest! {
    /// With any settings IPVS accepts, over any run of ticks in which an ESTABLISHED
    /// connection sees traffic: it is never sent before its client's packets reach the
    /// threshold, never twice in a tick, and (with a packet period and no refresh period,
    /// the default shape) never left unsent for longer than half its timeout while its
    /// timer moves, so the backup's copy cannot run out.
    #[test]
    fn the_master_keeps_its_promises(
        threshold in 0u16..10,
        period in prop_oneof![Just(0u16), 10u16..100],
        refresh in prop_oneof![Just(0u64), 10u64..100],
        retries in 0u8..=3,
        steps in proptest::collection::vec((1u64..30, 0u16..40), 1..200),
    ) {
        let threshold = if period > 0 { threshold % period } else { threshold };
        let mut m = Master::new(Settings {
            threshold,
            period,
            refresh_period: Duration::from_secs(refresh),
            retries,
        });
        let (mut now, mut packets, mut last_sent) = (0u64, 0u16, None::<u64>);
        for (dt, more) in steps {
            now += dt;
            packets = packets.wrapping_add(more);
            let total_before = packets;
            let out = m.tick(Duration::from_secs(now), [seen(ES, now + 900, packets)]);
            prop_assert!(out.len() <= 1);
            if !out.is_empty() {
                if last_sent.is_none() && !(period == 0 && refresh > 0) {
                    prop_assert!(total_before >= threshold);
                }
                last_sent = Some(now);
            } else if period > 0 && refresh == 0 {
                if let Some(at) = last_sent {
                    prop_assert!(now < at + 450, "unsent since {at}, now {now}");
                }
            }
        }
    }
}
