//! Each connection table (IPv4's, IPv6's) against a model: random sequences of
//! connections coming (through `xdp_adopt`, as a sync backup installs them), going (a SYN
//! on the ports of one in TIME_WAIT: IPVS's conn_reuse_mode) and looked up (a client's
//! packet), on a small table, with the program's own random hash and with one that puts
//! every flow in one window, so that the window fills and the stash and the scan past the
//! window are used. After every step the table lists what the model holds, and counts it.

mod frames;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fulcrum_dataplane::{
    Adopted, DataPlane, DestSpec, Link, Method, ServiceKey, ServiceSpec, Synced, Verdict,
};
use fulcrum_lab::require_root;
use proptest::prelude::*;

use frames::*;

/// The flows' VIP has no virtual service: a flow the table does not hold goes to the
/// kernel (`Pass`), one it holds goes to its DR real server (`Tx`).
const FLOW_VIP: Ipv4Addr = Ipv4Addr::new(10, 1, 10, 99);
const FLOW_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x99);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x88);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);
const RIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
/// Entries the table takes (two per connection of `load_sized`).
const LIMIT: usize = 128;
const ESTABLISHED: u8 = 1;
const TIME_WAIT: u8 = 5;

/// Which table a case runs on: the flows' addresses (client, VIP without a service, real
/// server) and the service's key.
fn family(v6: bool) -> ([IpAddr; 3], ServiceKey) {
    if v6 {
        (
            [CLIENT6.into(), FLOW_VIP6.into(), RIP6.into()],
            ServiceKey::v6(VIP6, 80, 6),
        )
    } else {
        (
            [CLIENT.into(), FLOW_VIP.into(), RIPS[0].into()],
            ServiceKey::v4(VIP, 80, 6),
        )
    }
}

#[derive(Debug, Clone)]
enum Op {
    Add(u16),
    Remove(u16),
    Look(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..200u16).prop_map(Op::Add),
        2 => (0..200u16).prop_map(Op::Remove),
        3 => (0..200u16).prop_map(Op::Look),
    ]
}

fn synced(v6: bool, port: u16, state: u8) -> Synced {
    let ([client, vip, rip], _) = family(v6);
    Synced {
        proto: 6,
        client: (client, 20000 + port),
        vip: (vip, 80),
        rip: (rip, 80),
        state,
        service: 1,
        slot: 0,
        method: Method::Dr,
        timeout: 900,
    }
}

fn check(ops: &[Op], one_window: bool, v6: bool) -> Result<(), TestCaseError> {
    let mut dp = DataPlane::load_sized(LIMIT as u32 / 2).unwrap();
    if one_window {
        // No mixing: every flow's home is the first slot.
        if v6 {
            dp.set_conn_hash6(1, 1, 0).unwrap();
        } else {
            dp.set_conn_hash(1, 1, 0).unwrap();
        }
    }
    let ([client, flow_vip, rip], key) = family(v6);
    let mut spec = ServiceSpec::new(key, 1, fulcrum_dataplane::Scheduler::Rr);
    let mut dest = DestSpec::new(rip, 80, Method::Dr, 1);
    dest.link = Some(Link {
        mac: [0x02, 0xaa, 0, 0, 0, 1],
        ifindex: 0,
        smac: [0x02, 0, 0, 0, 0, 0x65],
    });
    spec.dests = vec![Some(dest)];
    dp.put_service(&spec).unwrap();

    let mut model = BTreeSet::new();
    let packet = |dp: &DataPlane, port: u16, flags: u8| {
        let frame = match (client, flow_vip) {
            (IpAddr::V6(c), IpAddr::V6(v)) => tcp6_frame(c, 20000 + port, v, 80, flags),
            (IpAddr::V4(c), IpAddr::V4(v)) => tcp_frame(c, 20000 + port, v, 80, flags),
            _ => unreachable!("one family"),
        };
        dp.test_run(&frame, 1).unwrap().verdict
    };
    for op in ops {
        match *op {
            Op::Add(port) => match dp.adopt(&synced(v6, port, ESTABLISHED)).unwrap() {
                Adopted::Installed => prop_assert!(model.insert(port), "{port} was there"),
                Adopted::Updated => prop_assert!(model.contains(&port)),
                Adopted::Full => prop_assert!(
                    model.len() >= LIMIT || one_window,
                    "refused with {} entries",
                    model.len()
                ),
            },
            Op::Remove(port) => {
                if model.remove(&port) {
                    let adopted = dp.adopt(&synced(v6, port, TIME_WAIT)).unwrap();
                    prop_assert_eq!(adopted, Adopted::Updated);
                    prop_assert_eq!(packet(&dp, port, SYN), Verdict::Pass);
                }
            }
            Op::Look(port) => {
                let want = if model.contains(&port) {
                    Verdict::Tx
                } else {
                    Verdict::Pass
                };
                prop_assert_eq!(packet(&dp, port, ACK), want, "port {}", port);
            }
        }
        let listed: BTreeSet<u16> = dp
            .connections()
            .unwrap()
            .iter()
            .map(|c| c.client.1 - 20000)
            .collect();
        prop_assert_eq!(&listed, &model, "after {:?}", op);
        prop_assert_eq!(dp.dest_conns(1, 0).unwrap(), (model.len() as u32, 0));
    }
    for &port in &model {
        prop_assert_eq!(packet(&dp, port, ACK), Verdict::Tx, "port {}", port);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_table_holds_what_the_model_holds(
        ops in prop::collection::vec(op(), 1..300),
        one_window in any::<bool>(),
        v6 in any::<bool>(),
    ) {
        if !require_root("the_table_holds_what_the_model_holds") {
            return Ok(());
        }
        check(&ops, one_window, v6)?;
    }
}
