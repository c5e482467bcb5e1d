//! The data plane's schedulers against the reference models of `fulcrum-sched`: for the
//! same servers and the same sequence of new connections (some of which complete their
//! handshake and count as active), every one of the fourteen picks the same server.

mod frames;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use fulcrum_dataplane::{DataPlane, DestSpec, Method, ServiceKey, ServiceSpec};
use fulcrum_lab::require_root;
use fulcrum_sched::{Flags, Flow, Kind, Scheduler};

use frames::*;

const ALL: [Kind; 14] = fulcrum_dataplane::SCHEDULERS;

fn rip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 184, 129 + i as u8)
}

/// Runs `flows` new connections through both and returns the first disagreement.
fn compare(kind: Kind, weights: &[u32], flags: Flags, flows: u32) -> Result<(), String> {
    let mut dp = DataPlane::load().map_err(|e| e.to_string())?;
    let spec = ServiceSpec {
        sh_port: flags.sh_port,
        sh_fallback: flags.sh_fallback,
        mh_port: flags.mh_port,
        mh_fallback: flags.mh_fallback,
        dests: weights
            .iter()
            .enumerate()
            .map(|(i, w)| Some(DestSpec::new(rip(i), 80, Method::Nat, *w)))
            .collect(),
        ..ServiceSpec::new(ServiceKey::v4(VIP, 80, 6), 7, kind)
    };
    dp.put_service(&spec).map_err(|e| e.to_string())?;
    // The model sees the servers in list order (the newest first); its picks are
    // positions in that list, mapped to slots here.
    let (slots, mut dests): (Vec<usize>, Vec<_>) = spec.model_dests().into_iter().unzip();
    let mut model = Scheduler::new(kind, flags, &dests);
    let now = Instant::now();
    for n in 0..flows {
        let client = Ipv4Addr::new(10, 1, (n / 250) as u8, 1 + (n % 250) as u8);
        let sport = 20000 + (n * 7919 % 40000) as u16;
        let flow = Flow {
            src: IpAddr::V4(client),
            sport,
            dst: IpAddr::V4(VIP),
            dport: 80,
        };
        let pick = model.schedule(now, &dests, &flow);
        let want = pick.map(|i| slots[i]);
        let out = dp
            .test_run(&tcp_frame(client, sport, VIP, 80, SYN), 1)
            .map_err(|e| e.to_string())?;
        let p = Parsed::of(&out.frame);
        let got = (p.dst != VIP).then(|| (p.dst.octets()[3] - 129) as usize);
        if got != want {
            return Err(format!(
                "{kind:?} weights {weights:?} {flags:?}: connection {n} went to {got:?}, the model chose {want:?}"
            ));
        }
        if let Some(i) = pick {
            dests[i].inactive += 1;
            // Every third connection completes its handshake: active.
            if n % 3 == 0 {
                dp.test_run(&tcp_frame(client, sport, VIP, 80, ACK), 1)
                    .map_err(|e| e.to_string())?;
                dests[i].inactive -= 1;
                dests[i].active += 1;
            }
        }
        for (d, &i) in dests.iter().zip(&slots) {
            let counts = dp.dest_conns(7, i).map_err(|e| e.to_string())?;
            if counts != (d.active, d.inactive) {
                return Err(format!(
                    "{kind:?}: after connection {n}, server {i} counts {counts:?}, model ({}, {})",
                    d.active, d.inactive
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn every_scheduler_chooses_what_its_model_chooses() {
    if !require_root("every_scheduler_chooses_what_its_model_chooses") {
        return;
    }
    let weight_sets: [&[u32]; 4] = [&[1, 1], &[1, 2], &[3, 0, 2, 5], &[4, 4, 1, 2, 6]];
    let mut failures = Vec::new();
    for kind in ALL {
        for weights in weight_sets {
            if let Err(e) = compare(kind, weights, Flags::default(), 60) {
                failures.push(e);
            }
        }
    }
    for flags in [
        Flags {
            sh_port: true,
            sh_fallback: true,
            ..Flags::default()
        },
        Flags {
            mh_port: true,
            mh_fallback: true,
            ..Flags::default()
        },
    ] {
        for kind in [Kind::Sh, Kind::Mh] {
            if let Err(e) = compare(kind, &[2, 0, 1, 3], flags, 60) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
