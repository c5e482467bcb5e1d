use super::*;
use fulcrum_nginx_conf::model::{Template, UpstreamServer};
use proptest::prelude::*;
use std::net::Ipv4Addr;
use std::time::Duration;

fn server(last: u8, weight: u32) -> UpstreamServer {
    let mut s = UpstreamServer::new(&format!("10.1.10.{last}"), 80);
    s.weight = weight;
    s
}

fn upstream(balance: Balance, servers: Vec<UpstreamServer>) -> Upstream {
    Upstream {
        name: "backend".into(),
        servers,
        balance,
        keepalive: None,
        keepalive_requests: None,
        keepalive_timeout: None,
        zone: None,
    }
}

fn pool(balance: Balance, servers: Vec<UpstreamServer>) -> Pool {
    Pool::new(&upstream(balance, servers), |h, p| {
        vec![PeerAddr::Inet(SocketAddr::new(h.parse().unwrap(), p))]
    })
    .unwrap()
}

fn no_rng() -> impl FnMut() -> u32 {
    || panic!("no random draws expected")
}

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 10, 2));

/// One request, answered at once: the last octet of the peer that served it.
fn serve(p: &mut Pool, now: u64) -> u8 {
    let mut a = p.start(CLIENT, b"");
    let id = p.get(&mut a, now, &mut no_rng()).expect("a live peer");
    let last = match p.peer(id).addr.inet().expect("an address").ip() {
        IpAddr::V4(v4) => v4.octets()[3],
        IpAddr::V6(_) => unreachable!(),
    };
    p.free(&mut a, Outcome::Ok, now);
    last
}

fn letters(p: &mut Pool, n: usize) -> String {
    (0..n).map(|_| (b'a' + serve(p, 0) - 66) as char).collect()
}

#[test]
fn smooth_weighted_round_robin_gives_nginx_sequence() {
    let mut p = pool(
        Balance::RoundRobin,
        vec![server(66, 5), server(67, 1), server(68, 1)],
    );
    assert_eq!(letters(&mut p, 14), "aabacaaaabacaa");
}

/// Two pools (two workers) handing the state to each other, as an upstream zone does,
/// balance as one: the smooth weighted sequence goes on across them.
#[test]
fn pools_sharing_their_state_balance_as_one() {
    let servers = || vec![server(66, 5), server(67, 1), server(68, 1)];
    let (mut a, mut b) = (
        pool(Balance::RoundRobin, servers()),
        pool(Balance::RoundRobin, servers()),
    );
    assert_eq!(a.state_len(), 3 * STATE_WORDS);
    let mut seq = String::new();
    for i in 0..14 {
        let (this, other) = if i % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        seq.push((b'a' + serve(this, 0) - 66) as char);
        other.set_state(&this.state());
    }
    assert_eq!(seq, "aabacaaaabacaa");
    // A state of another shape is not taken.
    let before = a.state();
    a.set_state(&[1, 2, 3]);
    assert_eq!(a.state(), before);
}

#[test]
fn equal_weights_alternate() {
    let mut p = pool(Balance::RoundRobin, vec![server(66, 1), server(67, 1)]);
    assert_eq!(letters(&mut p, 6), "ababab");
}

#[test]
fn down_servers_are_skipped_and_backups_wait_for_all_primaries() {
    let mut down = server(67, 1);
    down.down = true;
    let mut backup = server(68, 1);
    backup.backup = true;
    let mut p = pool(Balance::RoundRobin, vec![server(66, 1), down, backup]);
    assert_eq!(letters(&mut p, 3), "aaa");
    // The only live primary fails (max_fails 1): the backup serves.
    let mut a = p.start(CLIENT, b"");
    let id = p.get(&mut a, 0, &mut no_rng()).unwrap();
    assert_eq!(
        id,
        PeerId {
            backup: false,
            index: 0
        }
    );
    assert!(p.free(&mut a, Outcome::Failed, 0), "temporarily disabled");
    let next = p.get(&mut a, 0, &mut no_rng()).unwrap();
    assert_eq!(
        next,
        PeerId {
            backup: true,
            index: 0
        }
    );
    p.free(&mut a, Outcome::Ok, 0);
    assert_eq!(letters(&mut p, 2), "cc");
}

#[test]
fn failed_peer_returns_after_fail_timeout_and_its_weight_recovers() {
    let mut a1 = server(66, 4);
    a1.max_fails = 2;
    a1.fail_timeout = Duration::from_secs(10);
    let mut p = pool(Balance::RoundRobin, vec![a1, server(67, 1)]);
    // a fails each time it is picked, at t=0 and t=1.
    let mut failures = 0;
    for now in [0, 0, 1, 1, 1] {
        let mut a = p.start(CLIENT, b"");
        let id = p.get(&mut a, now, &mut no_rng()).unwrap();
        if id.index == 0 && failures < 2 {
            failures += 1;
            let disabled = p.free(&mut a, Outcome::Failed, now);
            assert_eq!(disabled, failures == 2);
        } else {
            p.free(&mut a, Outcome::Ok, now);
        }
    }
    assert_eq!(failures, 2);
    assert!(
        p.peer(PeerId {
            backup: false,
            index: 0
        })
        .effective_weight()
            < 4
    );
    // Within fail_timeout of the last failure (t=1): only b.
    for now in [2, 11] {
        assert_eq!(serve(&mut p, now), 67);
    }
    // Past it, a is tried again, with its effective weight climbing back one per pick.
    let first: Vec<u8> = (0..6).map(|_| serve(&mut p, 12)).collect();
    assert!(first.contains(&66), "{first:?}");
    assert_eq!(
        p.peer(PeerId {
            backup: false,
            index: 0
        })
        .fails,
        0
    );
}

#[test]
fn a_success_clears_fails_only_after_a_pick_past_the_failure() {
    let mut a1 = server(66, 1);
    a1.max_fails = 3;
    let mut p = pool(Balance::RoundRobin, vec![a1, server(67, 1)]);
    let mut a = p.start(CLIENT, b"");
    p.get(&mut a, 5, &mut no_rng()).unwrap();
    p.free(&mut a, Outcome::Failed, 5);
    // Served well a moment later: nginx keeps the failure (checked == accessed).
    assert_eq!(serve(&mut p, 6), 67);
    assert_eq!(serve(&mut p, 6), 66);
    assert_eq!(
        p.peer(PeerId {
            backup: false,
            index: 0
        })
        .fails,
        1
    );
    // Picked after fail_timeout (10 s) has passed: the next success clears it.
    serve(&mut p, 16);
    serve(&mut p, 16);
    assert_eq!(
        p.peer(PeerId {
            backup: false,
            index: 0
        })
        .fails,
        0
    );
}

#[test]
fn a_single_server_is_never_marked_down() {
    let mut p = pool(Balance::RoundRobin, vec![server(66, 1)]);
    for _ in 0..5 {
        let mut a = p.start(CLIENT, b"");
        p.get(&mut a, 0, &mut no_rng()).unwrap();
        assert!(!p.free(&mut a, Outcome::Failed, 0));
        assert_eq!(a.tries, 0, "no retry with a single server");
    }
    assert_eq!(serve(&mut p, 0), 66);
}

#[test]
fn every_peer_once_per_request_then_no_live_upstreams() {
    let mut p = pool(
        Balance::RoundRobin,
        vec![server(66, 1), server(67, 1), server(68, 1)],
    );
    let mut a = p.start(CLIENT, b"");
    let mut seen = Vec::new();
    while a.tries > 0 {
        let Some(id) = p.get(&mut a, 0, &mut no_rng()) else {
            break;
        };
        seen.push(id.index);
        p.free(&mut a, Outcome::Failed, 0);
    }
    seen.sort();
    assert_eq!(seen, vec![0, 1, 2]);
    let mut b = p.start(CLIENT, b"");
    assert_eq!(p.get(&mut b, 1, &mut no_rng()), None, "all failed: 502");
}

#[test]
fn max_conns_caps_a_peer() {
    let mut a1 = server(66, 1);
    a1.max_conns = 1;
    let mut p = pool(Balance::RoundRobin, vec![a1, server(67, 1)]);
    let mut held = p.start(CLIENT, b"");
    assert_eq!(p.get(&mut held, 0, &mut no_rng()).unwrap().index, 0);
    // While that request is in flight, a is full.
    assert_eq!(serve(&mut p, 0), 67);
    assert_eq!(serve(&mut p, 0), 67);
    p.free(&mut held, Outcome::Ok, 0);
    assert!((0..2).map(|_| serve(&mut p, 0)).any(|x| x == 66));
}

#[test]
fn least_conn_prefers_the_least_loaded_by_weight() {
    let mut p = pool(Balance::LeastConn, vec![server(66, 1), server(67, 2)]);
    // Idle: a tie, broken by smooth round-robin (b has the larger weight).
    let mut held = Vec::new();
    let mut picks = Vec::new();
    for _ in 0..3 {
        let mut a = p.start(CLIENT, b"");
        let id = p.get(&mut a, 0, &mut no_rng()).unwrap();
        picks.push(id.index);
        held.push(a);
    }
    // b first (tie, weight 2), then a (0/1 < 1/2), then b (1/1 > 1/2 → b at 1/2 = 0.5 < 1).
    assert_eq!(picks, vec![1, 0, 1]);
    for mut a in held {
        p.free(&mut a, Outcome::Ok, 0);
    }
}

#[test]
fn ip_hash_keeps_a_slash_24_on_one_server() {
    let mut p = pool(
        Balance::IpHash,
        vec![server(66, 1), server(67, 1), server(68, 1)],
    );
    let pick = |p: &mut Pool, ip: [u8; 4]| {
        let mut a = p.start(IpAddr::from(ip), b"");
        let id = p.get(&mut a, 0, &mut no_rng()).unwrap();
        p.free(&mut a, Outcome::Ok, 0);
        id.index
    };
    let first = pick(&mut p, [192, 168, 1, 1]);
    for last in [2, 50, 254] {
        assert_eq!(pick(&mut p, [192, 168, 1, last]), first);
    }
    // nginx's hash of 192.168.1.x: 89 → ((89*113+192)%6271*113+168)%6271*113+1 % 6271.
    let mut h = 89u32;
    for b in [192u32, 168, 1] {
        h = (h * 113 + b) % 6271;
    }
    assert_eq!(first, (h % 3) as usize);
    let spread: std::collections::HashSet<usize> =
        (0..40).map(|i| pick(&mut p, [10, i, 0, 1])).collect();
    assert_eq!(spread.len(), 3);
}

#[test]
fn ip_hash_moves_on_when_the_server_is_down() {
    let mut p = pool(Balance::IpHash, vec![server(66, 1), server(67, 1)]);
    let mut a = p.start(CLIENT, b"");
    let first = p.get(&mut a, 0, &mut no_rng()).unwrap();
    p.free(&mut a, Outcome::Failed, 0);
    let second = p.get(&mut a, 0, &mut no_rng()).unwrap();
    assert_ne!(first, second);
}

#[test]
fn hash_follows_cache_memcached() {
    let mut p = pool(
        Balance::Hash {
            key: Template::new("$request_uri"),
            consistent: false,
        },
        vec![server(66, 1), server(67, 1), server(68, 1)],
    );
    let mut a = p.start(CLIENT, b"/index.html");
    let id = p.get(&mut a, 0, &mut no_rng()).unwrap();
    let expected = ((crc32(b"/index.html") >> 16) & 0x7fff) % 3;
    assert_eq!(id.index, expected as usize);
    // A retry rehashes with the attempt number in front of the key.
    p.free(&mut a, Outcome::Failed, 0);
    let next = p.get(&mut a, 0, &mut no_rng()).unwrap();
    assert_ne!(next, id);
}

#[test]
fn consistent_hash_moves_only_the_keys_of_a_removed_server() {
    let three = vec![server(66, 1), server(67, 1), server(68, 1)];
    let balance = Balance::Hash {
        key: Template::new("$request_uri"),
        consistent: true,
    };
    let mut p3 = pool(balance.clone(), three.clone());
    assert_eq!(p3.points.len(), 480);
    let mut two = three.clone();
    two.remove(1);
    let mut p2 = pool(balance, two);
    let who = |p: &mut Pool, key: &str| {
        let mut a = p.start(CLIENT, key.as_bytes());
        let id = p.get(&mut a, 0, &mut no_rng()).unwrap();
        p.free(&mut a, Outcome::Ok, 0);
        p.peer(id).server.clone()
    };
    let mut moved = 0;
    for i in 0..300 {
        let key = format!("/obj/{i}");
        let before = who(&mut p3, &key);
        let after = who(&mut p2, &key);
        if before != "10.1.10.67:80" {
            assert_eq!(before, after, "{key} moved without cause");
        } else {
            moved += 1;
        }
    }
    assert!((50..150).contains(&moved), "{moved}");
}

#[test]
fn consistent_hash_ring_hashes_the_server_as_written() {
    let mut no_port = server(66, 1);
    no_port.port_written = false;
    let ring_of = |s: UpstreamServer| {
        let mut p = Peer::new(
            s.as_written(),
            PeerAddr::Inet("10.1.10.66:80".parse().unwrap()),
            &s,
        );
        p.server_id = 0;
        ring(&[p])
    };
    let with = ring_of(server(66, 1));
    let without = ring_of(no_port);
    let first = Crc32::new()
        .update(b"10.1.10.66")
        .update(&[0])
        .update(b"80")
        .update(&0u32.to_le_bytes())
        .finish();
    assert!(with.iter().any(|(h, _)| *h == first));
    assert_ne!(with, without);
}

#[test]
fn random_two_takes_the_less_loaded_of_two_draws() {
    let mut p = pool(
        Balance::Random {
            two: true,
            least_conn: true,
        },
        vec![server(66, 1), server(67, 1), server(68, 1)],
    );
    let mut held = p.start(CLIENT, b"");
    // Draws: 0 → a, then 3 → a again (skipped), 1 → b.
    let mut draws = vec![0u32, 3, 1].into_iter();
    let mut rng = || draws.next().unwrap();
    assert_eq!(
        p.get(&mut held, 0, &mut rng).unwrap().index,
        1,
        "tie: the second"
    );
    // b is busy now: between b and a, a wins.
    let mut draws = vec![1u32, 0].into_iter();
    let mut rng = || draws.next().unwrap();
    let mut a = p.start(CLIENT, b"");
    assert_eq!(p.get(&mut a, 0, &mut rng).unwrap().index, 0);
}

#[test]
fn random_draws_by_weight() {
    let mut p = pool(
        Balance::Random {
            two: false,
            least_conn: false,
        },
        vec![server(66, 3), server(67, 1)],
    );
    let mut n = 0u32;
    let mut rng = || {
        n += 1;
        n - 1
    };
    let picks: Vec<usize> = (0..8)
        .map(|_| {
            let mut a = p.start(CLIENT, b"");
            let id = p.get(&mut a, 0, &mut rng).unwrap();
            p.free(&mut a, Outcome::Ok, 0);
            id.index
        })
        .collect();
    assert_eq!(picks, vec![0, 0, 0, 1, 0, 0, 0, 1]);
}

proptest! {
    /// Over any run of sum(weights) picks, smooth WRR serves each peer exactly its weight.
    #[test]
    fn smooth_wrr_is_exact_over_a_cycle(weights in proptest::collection::vec(1u32..8, 1..6)) {
        let servers = weights.iter().enumerate().map(|(i, w)| server(60 + i as u8, *w)).collect();
        let mut p = pool(Balance::RoundRobin, servers);
        let total: u32 = weights.iter().sum();
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..total {
            counts[(serve(&mut p, 0) - 60) as usize] += 1;
        }
        prop_assert_eq!(counts, weights);
    }

    /// However requests fail, a request never gets the same peer twice and never more
    /// peers than it has tries.
    #[test]
    fn retries_never_repeat_a_peer(fails in proptest::collection::vec(any::<bool>(), 1..12), n in 2usize..6) {
        let servers = (0..n).map(|i| server(60 + i as u8, 1 + i as u32 % 3)).collect();
        let mut p = pool(Balance::LeastConn, servers);
        let mut a = p.start(CLIENT, b"");
        let mut seen = std::collections::HashSet::new();
        for (i, fail) in fails.iter().enumerate() {
            if a.tries == 0 { break; }
            let Some(id) = p.get(&mut a, i as u64, &mut no_rng()) else { break };
            prop_assert!(seen.insert(id));
            if !fail {
                p.free(&mut a, Outcome::Ok, i as u64);
                break;
            }
            p.free(&mut a, Outcome::Failed, i as u64);
        }
        prop_assert!(seen.len() <= n);
    }
}

#[test]
fn a_unix_peer_is_named_as_nginx_names_it() {
    let unix = PeerAddr::Unix("/run/app.sock".into());
    assert_eq!(unix.to_string(), "unix:/run/app.sock");
    assert_eq!(unix.inet(), None);
    let inet = PeerAddr::from("[::1]:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(inet.to_string(), "[::1]:8080");
    assert!(inet == "[::1]:8080".parse::<SocketAddr>().unwrap());
}
