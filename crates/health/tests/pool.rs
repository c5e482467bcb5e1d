//! Real servers and virtual services: membership, weights, quorum, sorry server.

use fulcrum_health::{Membership, PoolEvent, RealServer, Service, Status};
use fulcrum_types::Weight;

fn w(n: u32) -> Weight {
    Weight::new(i64::from(n)).unwrap()
}

fn servers(n: usize, weight: u32) -> Vec<RealServer> {
    (0..n)
        .map(|_| RealServer::new(w(weight), false, [Status::Up]))
        .collect()
}

#[test]
fn a_server_is_alive_only_while_every_checker_is_up() {
    let rs = vec![RealServer::new(w(3), false, [Status::Up, Status::Up])];
    let (mut vs, events) = Service::new(1, 0, None, rs);
    assert!(events.is_empty());
    assert_eq!(vs.membership(0), Membership::In(w(3)));

    assert_eq!(
        vs.checker_changed(0, 1, Status::Down, 0),
        vec![PoolEvent::ServerDown(0), PoolEvent::QuorumDown]
    );
    assert_eq!(vs.membership(0), Membership::Out);
    // The other checker falling too changes nothing more.
    assert!(vs.checker_changed(0, 0, Status::Down, 0).is_empty());
    // One checker back is not enough.
    assert!(vs.checker_changed(0, 1, Status::Up, 0).is_empty());
    assert_eq!(
        vs.checker_changed(0, 0, Status::Up, 0),
        vec![PoolEvent::ServerUp(0), PoolEvent::QuorumUp]
    );
    assert_eq!(vs.membership(0), Membership::In(w(3)));
}

#[test]
fn a_server_without_checkers_is_always_alive() {
    let (vs, events) = Service::new(1, 0, None, vec![RealServer::new(w(1), false, [])]);
    assert!(events.is_empty());
    assert_eq!(vs.membership(0), Membership::In(w(1)));
}

#[test]
fn inhibit_on_failure_keeps_a_dead_server_at_weight_zero() {
    let rs = vec![
        RealServer::new(w(5), true, [Status::Up]),
        RealServer::new(w(5), false, [Status::Up]),
    ];
    let (mut vs, _) = Service::new(1, 0, None, rs);
    vs.checker_changed(0, 0, Status::Down, 0);
    vs.checker_changed(1, 0, Status::Down, 0);
    assert_eq!(vs.membership(0), Membership::In(w(0)));
    assert_eq!(vs.membership(1), Membership::Out);
}

#[test]
fn misc_dynamic_moves_the_weight_within_range() {
    // Configured weight 1; exit status 12 means weight 10: delta 12 - 2 - 1 = 9.
    let rs = vec![RealServer::new(w(1), false, [Status::Up])];
    let (mut vs, _) = Service::new(1, 0, None, rs);
    assert!(vs.checker_changed(0, 0, Status::Up, 9).is_empty());
    assert_eq!(vs.membership(0), Membership::In(w(10)));
    assert_eq!(vs.live_weight(), 10);
    vs.checker_changed(0, 0, Status::Up, -100);
    assert_eq!(vs.membership(0), Membership::In(w(0)));
    vs.checker_changed(0, 0, Status::Up, i64::MAX);
    assert_eq!(vs.membership(0), Membership::In(w(65535)));
}

#[test]
fn quorum_with_hysteresis_and_a_sorry_server() {
    // Four servers of weight 1, quorum 3, hysteresis 1: lost below 2, regained at 4.
    let (mut vs, events) = Service::new(3, 1, Some((w(1), false)), servers(4, 1));
    assert!(events.is_empty());
    assert_eq!(vs.sorry_membership(), Some(Membership::Out));

    assert_eq!(
        vs.checker_changed(0, 0, Status::Down, 0),
        vec![PoolEvent::ServerDown(0)]
    );
    assert_eq!(
        vs.checker_changed(1, 0, Status::Down, 0),
        vec![PoolEvent::ServerDown(1)]
    );
    assert!(vs.has_quorum(), "2 live is within the hysteresis");
    assert_eq!(
        vs.checker_changed(2, 0, Status::Down, 0),
        vec![PoolEvent::ServerDown(2), PoolEvent::QuorumDown]
    );
    // The sorry server stands in for every real server, live or not.
    assert_eq!(vs.sorry_membership(), Some(Membership::In(w(1))));
    assert_eq!(vs.membership(3), Membership::Out);

    vs.checker_changed(0, 0, Status::Up, 0);
    vs.checker_changed(1, 0, Status::Up, 0);
    assert!(!vs.has_quorum(), "3 live is short of quorum + hysteresis");
    assert_eq!(
        vs.checker_changed(2, 0, Status::Up, 0),
        vec![PoolEvent::ServerUp(2), PoolEvent::QuorumUp]
    );
    assert_eq!(vs.sorry_membership(), Some(Membership::Out));
    assert_eq!(vs.membership(3), Membership::In(w(1)));
}

#[test]
fn without_a_sorry_server_live_servers_stay_when_quorum_is_lost() {
    let (mut vs, _) = Service::new(2, 0, None, servers(2, 1));
    assert_eq!(
        vs.checker_changed(0, 0, Status::Down, 0),
        vec![PoolEvent::ServerDown(0), PoolEvent::QuorumDown]
    );
    assert_eq!(vs.membership(1), Membership::In(w(1)));
    assert_eq!(vs.sorry_membership(), None);
}

#[test]
fn sorry_server_inhibit_keeps_it_at_weight_zero() {
    let (vs, _) = Service::new(1, 0, Some((w(1), true)), servers(1, 1));
    assert_eq!(vs.sorry_membership(), Some(Membership::In(w(0))));
}

#[test]
fn alpha_servers_start_without_quorum() {
    let rs = vec![RealServer::new(w(1), false, [Status::Down])];
    let (mut vs, events) = Service::new(1, 0, Some((w(1), false)), rs);
    assert_eq!(events, vec![PoolEvent::QuorumDown]);
    assert_eq!(vs.sorry_membership(), Some(Membership::In(w(1))));
    assert_eq!(
        vs.checker_changed(0, 0, Status::Up, 0),
        vec![PoolEvent::ServerUp(0), PoolEvent::QuorumUp]
    );
}
