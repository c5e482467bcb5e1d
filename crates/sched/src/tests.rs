//! Each scheduler against the kernel's rule, on the cases that tell the rules apart.

use super::*;
use proptest::prelude::*;

fn t0() -> Instant {
    Instant::now()
}

fn rs(n: u8, weight: u32) -> Dest {
    Dest::new(IpAddr::from([192, 168, 184, n]), 80, weight)
}

fn flow(src: u8, sport: u16, dst: u8) -> Flow {
    Flow {
        src: IpAddr::from([10, 1, 10, src]),
        sport,
        dst: IpAddr::from([10, 2, 0, dst]),
        dport: 80,
    }
}

fn run(kind: Kind, dests: &[Dest], n: usize) -> Vec<usize> {
    let mut s = Scheduler::new(kind, Flags::default(), dests);
    let now = t0();
    (0..n)
        .map(|i| {
            s.schedule(now, dests, &flow(2, 1000 + i as u16, 88))
                .unwrap()
        })
        .collect()
}

fn counts(picks: &[usize], n: usize) -> Vec<usize> {
    let mut c = vec![0; n];
    for &p in picks {
        c[p] += 1;
    }
    c
}

#[test]
fn rr_cycles_and_skips_weight_zero_and_overloaded() {
    let mut d = vec![rs(1, 1), rs(2, 1), rs(3, 0), rs(4, 5)];
    d[3].overloaded = true;
    assert_eq!(run(Kind::Rr, &d, 6), vec![0, 1, 0, 1, 0, 1]);
    let d = vec![rs(1, 1), rs(2, 1)];
    assert_eq!(
        counts(&run(Kind::Rr, &d, 300), 2),
        vec![150, 150],
        "reference deployment 1: exactly 1:1"
    );
}

#[test]
fn wrr_interleaves_by_weight_like_the_kernel() {
    let d = vec![rs(1, 1), rs(2, 2)];
    assert_eq!(
        run(Kind::Wrr, &d, 6),
        vec![1, 0, 1, 1, 0, 1],
        "B, A, B as in REFERENCE.md"
    );
    assert_eq!(
        counts(&run(Kind::Wrr, &d, 300), 2),
        vec![100, 200],
        "exactly 1:2 over 300"
    );
    let d = vec![rs(1, 4), rs(2, 3), rs(3, 2)];
    // cw 4: A; cw 3: A B; cw 2: A B C; cw 1: A B C.
    assert_eq!(run(Kind::Wrr, &d, 9), vec![0, 0, 1, 0, 1, 2, 0, 1, 2]);
    let d = vec![rs(1, 2), rs(2, 4)];
    assert_eq!(run(Kind::Wrr, &d, 3), vec![1, 0, 1], "gcd steps: cw 4, 2");
    let d = vec![rs(1, 0), rs(2, 0)];
    assert_eq!(
        Scheduler::new(Kind::Wrr, Flags::default(), &d).schedule(t0(), &d, &flow(1, 1, 1)),
        None
    );
}

#[test]
fn least_connection_family() {
    let mut d = vec![rs(1, 1), rs(2, 3), rs(3, 1)];
    d[0].active = 2;
    d[1].active = 4;
    d[2].active = 3;
    // lc: least overhead: 512, 1024, 768 -> A.
    assert_eq!(run(Kind::Lc, &d, 1), vec![0]);
    // wlc: overhead / weight: 512, 341, 768 -> B.
    assert_eq!(run(Kind::Wlc, &d, 1), vec![1]);
    // sed: (active + 1) / weight: 3, 5/3, 4 -> B.
    assert_eq!(run(Kind::Sed, &d, 1), vec![1]);
    // nq: nobody idle -> sed; with an idle server, the first idle one.
    assert_eq!(run(Kind::Nq, &d, 1), vec![1]);
    d[2].active = 0;
    assert_eq!(run(Kind::Nq, &d, 1), vec![2]);
    // Ties go to the first in list order.
    let d = vec![rs(1, 1), rs(2, 1)];
    assert_eq!(run(Kind::Wlc, &d, 1), vec![0]);
    // Inactive connections count 1/256 of an active one.
    let mut d = vec![rs(1, 1), rs(2, 1)];
    d[0].inactive = 255;
    d[1].active = 1;
    assert_eq!(run(Kind::Lc, &d, 1), vec![0]);
    d[0].inactive = 257;
    assert_eq!(run(Kind::Lc, &d, 1), vec![1]);
}

#[test]
fn failover_and_overflow() {
    let mut d = vec![rs(1, 5), rs(2, 10), rs(3, 10)];
    assert_eq!(
        run(Kind::Fo, &d, 1),
        vec![1],
        "highest weight, first of equals"
    );
    d[1].overloaded = true;
    assert_eq!(run(Kind::Fo, &d, 1), vec![2]);
    let mut d = vec![rs(1, 5), rs(2, 10)];
    d[1].active = 10;
    assert_eq!(
        run(Kind::Ovf, &d, 1),
        vec![1],
        "active <= weight still takes connections"
    );
    d[1].active = 11;
    assert_eq!(run(Kind::Ovf, &d, 1), vec![0]);
    d[0].active = 6;
    let mut s = Scheduler::new(Kind::Ovf, Flags::default(), &d);
    assert_eq!(
        s.schedule(t0(), &d, &flow(1, 1, 1)),
        None,
        "every server is past its weight"
    );
}

#[test]
fn dh_and_sh_are_static_per_address() {
    let d = vec![rs(1, 1), rs(2, 1), rs(3, 1)];
    let mut s = Scheduler::new(Kind::Dh, Flags::default(), &d);
    let a = s.schedule(t0(), &d, &flow(1, 1, 7));
    for p in 0..50 {
        assert_eq!(
            s.schedule(t0(), &d, &flow(p, 1000 + u16::from(p), 7)),
            a,
            "same destination, same server"
        );
    }
    let mut s = Scheduler::new(Kind::Sh, Flags::default(), &d);
    let a = s.schedule(t0(), &d, &flow(9, 1, 7));
    for p in 0..50 {
        assert_eq!(
            s.schedule(t0(), &d, &flow(9, 2000 + p, u8::try_from(p).unwrap())),
            a,
            "same source, same server"
        );
    }
}

#[test]
fn sh_table_follows_weights_and_fallback() {
    let d = vec![rs(1, 1), rs(2, 3)];
    let s = Scheduler::new(Kind::Sh, Flags::default(), &d);
    let c = s.table.iter().filter(|b| **b == Some(1)).count();
    assert_eq!(c, 192, "3/4 of 256 buckets");
    // Without fallback, a client whose server is down gets nothing; with it, another.
    let mut down = d.clone();
    down[1].weight = 0;
    let f = (0..=255)
        .map(|p| flow(p, 1, 1))
        .find(|f| Scheduler::new(Kind::Sh, Flags::default(), &d).schedule(t0(), &d, f) == Some(1))
        .unwrap();
    let mut plain = Scheduler::new(Kind::Sh, Flags::default(), &d);
    assert_eq!(plain.schedule(t0(), &down, &f), None);
    let fb = Flags {
        sh_fallback: true,
        ..Flags::default()
    };
    let mut fallback = Scheduler::new(Kind::Sh, fb, &d);
    assert_eq!(fallback.schedule(t0(), &down, &f), Some(0));
    // sh-port spreads one client's connections over servers.
    let sp = Flags {
        sh_port: true,
        ..Flags::default()
    };
    let d = vec![rs(1, 1), rs(2, 1), rs(3, 1), rs(4, 1)];
    let mut s = Scheduler::new(Kind::Sh, sp, &d);
    let servers: std::collections::HashSet<_> = (0..64)
        .filter_map(|p| s.schedule(t0(), &d, &flow(9, 3000 + p, 1)))
        .collect();
    assert!(servers.len() > 1);
}

#[test]
fn maglev_is_balanced_stable_and_the_same_everywhere() {
    let d: Vec<Dest> = (1..=10).map(|n| rs(n, 1)).collect();
    let table = maglev(&d, MAGLEV_TABLE_SIZE);
    assert!(table.iter().all(Option::is_some));
    let c = counts(&table.iter().map(|x| x.unwrap()).collect::<Vec<_>>(), 10);
    let (min, max) = (*c.iter().min().unwrap(), *c.iter().max().unwrap());
    assert!(
        max - min <= 1,
        "Maglev fills each server's share to within one slot: {c:?}"
    );
    assert_eq!(
        maglev(&d, MAGLEV_TABLE_SIZE),
        table,
        "fixed seeds: every director builds the same table"
    );
    // Removing a server moves few other slots (minimal disruption).
    let fewer: Vec<Dest> = d[..9].to_vec();
    let t2 = maglev(&fewer, MAGLEV_TABLE_SIZE);
    let moved = table
        .iter()
        .zip(&t2)
        .filter(|(a, b)| a.unwrap() != 9 && a != b)
        .count();
    assert!(
        moved < MAGLEV_TABLE_SIZE / 50,
        "{moved} slots of surviving servers moved"
    );
    // Weights: a server of weight 3 gets about three times the slots.
    let w = vec![rs(1, 1), rs(2, 3)];
    let t = maglev(&w, MAGLEV_TABLE_SIZE);
    let heavy = t.iter().filter(|x| **x == Some(1)).count() as f64 / MAGLEV_TABLE_SIZE as f64;
    assert!((heavy - 0.75).abs() < 0.01, "{heavy}");
}

#[test]
fn twos_prefers_the_less_loaded_of_two_weighted_picks() {
    // The kernel draws from [0, total] inclusive, so with weights 1:1 a draw lands on the
    // first server 2 times in 3. The idle server wins unless both draws hit the loaded one:
    // 1 - (2/3)^2 = 5/9 when the idle one is second, 1 - (1/3)^2 = 8/9 when it is first.
    let mut d = vec![rs(1, 1), rs(2, 1)];
    d[0].active = 100;
    let c = counts(&run(Kind::Twos, &d, 9000), 2);
    assert!((4700..5300).contains(&c[1]), "about 5/9 of 9000: {c:?}");
    let mut d = vec![rs(1, 1), rs(2, 1)];
    d[1].active = 100;
    let c = counts(&run(Kind::Twos, &d, 9000), 2);
    assert!((7700..8300).contains(&c[0]), "about 8/9 of 9000: {c:?}");
    // Unloaded, the first draw stands: weights 1:3 draw over [0, 4], so 3 in 5 go to the
    // heavier server.
    let d = vec![rs(1, 1), rs(2, 3)];
    let c = counts(&run(Kind::Twos, &d, 5000), 2);
    assert!((2850..3150).contains(&c[1]), "about 3/5 of 5000: {c:?}");
}

#[test]
fn lblc_keeps_a_destination_on_its_server_until_overloaded() {
    let mut d = vec![rs(1, 2), rs(2, 2)];
    let mut s = Scheduler::new(Kind::Lblc, Flags::default(), &d);
    let now = t0();
    let f = flow(1, 1, 50);
    let first = s.schedule(now, &d, &f).unwrap();
    d[first].active = 2;
    assert_eq!(
        s.schedule(now, &d, &f),
        Some(first),
        "at its weight: still not overloaded"
    );
    d[first].active = 3;
    assert_eq!(
        s.schedule(now, &d, &f),
        Some(1 - first),
        "overloaded while the other is under half"
    );
    // Forgotten after the expiry.
    let later = now + LOCALITY_EXPIRY + Duration::from_secs(1);
    d[first].active = 0;
    d[1 - first].active = 5;
    assert_eq!(s.schedule(later, &d, &f), Some(first));
}

#[test]
fn lblcr_grows_its_set_when_overloaded() {
    let mut d = vec![rs(1, 2), rs(2, 2), rs(3, 2)];
    let mut s = Scheduler::new(Kind::Lblcr, Flags::default(), &d);
    let now = t0();
    let f = flow(1, 1, 60);
    let a = s.schedule(now, &d, &f).unwrap();
    d[a].active = 3;
    let b = s.schedule(now, &d, &f).unwrap();
    assert_ne!(a, b);
    assert_eq!(s.sets[&f.dst].0.len(), 2, "the set grew");
    d[a].active = 0;
    assert_eq!(
        s.schedule(now, &d, &f),
        Some(a),
        "the least loaded member serves"
    );
}

fn dests_strategy() -> impl Strategy<Value = Vec<Dest>> {
    prop::collection::vec((0u32..5, 0u32..20, 0u32..300, any::<bool>()), 1..8).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (w, a, ia, o))| {
                let mut d = rs(i as u8 + 1, w);
                d.active = a;
                d.inactive = ia;
                d.overloaded = o && i % 3 == 0;
                d
            })
            .collect()
    })
}

proptest! {
    /// No scheduler ever picks a server with weight 0 or flagged overloaded, and the ones
    /// that always can find a server (all but the hashing ones without fallback, and ovf,
    /// which also needs room) find one whenever one is usable.
    #[test]
    fn never_an_unusable_server(dests in dests_strategy(), kind_i in 0usize..14, src in any::<u8>(), sport in any::<u16>()) {
        let kind = Kind::ALL[kind_i];
        let flags = Flags { sh_fallback: true, mh_fallback: true, ..Flags::default() };
        let mut s = Scheduler::new(kind, flags, &dests);
        let now = Instant::now();
        for k in 0..5u16 {
            let f = flow(src, sport.wrapping_add(k), src);
            let pick = s.schedule(now, &dests, &f);
            if let Some(i) = pick {
                prop_assert!(dests[i].weight > 0 && !dests[i].overloaded, "{kind:?} picked {i}");
            } else if dests.iter().any(|d| d.weight > 0 && !d.overloaded) {
                prop_assert!(matches!(kind, Kind::Dh | Kind::Ovf), "{kind:?} found nothing");
            }
        }
    }

    /// wrr's share over a whole number of cycles is exactly proportional to weight.
    #[test]
    fn wrr_is_exactly_proportional(weights in prop::collection::vec(1u32..6, 1..6)) {
        let d: Vec<Dest> = weights.iter().enumerate().map(|(i, &w)| rs(i as u8 + 1, w)).collect();
        let total: u32 = weights.iter().sum();
        let g = weights.iter().fold(0u32, |g, &w| if g == 0 { w } else { gcd(g, w) });
        let cycle = (total / g) as usize;
        let c = counts(&run(Kind::Wrr, &d, cycle * 4), d.len());
        for (i, &w) in weights.iter().enumerate() {
            prop_assert_eq!(c[i], (w / g) as usize * 4);
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
