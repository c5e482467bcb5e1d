//! Each reference deployment builds, carries real TCP between its hosts, and leaves nothing
//! behind, also when the test that built it panics.

use fulcrum_lab::reference::{self, Deployment};
use fulcrum_lab::{existing_with_prefix, require_root, Agent, Lab};

fn agent() -> Agent {
    Agent::new(env!("CARGO_BIN_EXE_fulcrum-lab-agent"), &[])
}

fn check(deployment: Deployment) {
    if !require_root(&format!("topology {}", deployment.name())) {
        return;
    }
    let prefix;
    {
        let mut r = reference::build(deployment, "topo", Some(agent())).expect("build");
        prefix = r.lab.prefix().to_string();
        // Each real server answers a TCP connection from the host that reaches it.
        let from = r.directors[0].clone();
        for (i, rs) in r.real_servers.clone().iter().enumerate() {
            let name = format!("rs{}", i + 1);
            r.lab
                .serve(rs, &name, "0.0.0.0:8080", false)
                .expect("serve");
            let answers = r
                .lab
                .probe(&from, &format!("{}:8080", r.rips[i]), 3, false)
                .expect("probe");
            assert_eq!(answers, vec![name.clone(); 3], "{} via {}", name, from.name);
        }
        // The client reaches the first director on the outside segment.
        let client = r.client.clone();
        let d = r.directors[0].clone();
        r.lab
            .serve(&d, "director", "0.0.0.0:9000", true)
            .expect("serve");
        let answers = r
            .lab
            .probe(&client, &format!("{}:9000", reference::DIP1), 2, true)
            .expect("probe");
        assert_eq!(answers, vec!["director".to_string(); 2]);
        assert!(!r.lab.existing_namespaces().is_empty());
        // Directors' switch ports carry the XDP_PASS stub; nothing else does.
        let directors_links: usize = match deployment {
            Deployment::LvsNat => 2,
            Deployment::LvsDr => 1,
            Deployment::KeepalivedHa => 2,
            Deployment::NginxHa => 0,
            Deployment::LvsTun => 1,
        };
        let mut stubs = 0;
        for sw in &r.switches {
            let out = r
                .lab
                .exec(&sw.netns, ["ip", "-d", "link", "show"])
                .expect("ip link");
            stubs += String::from_utf8_lossy(&out.stdout)
                .matches("prog/xdp")
                .count();
        }
        assert_eq!(
            stubs, directors_links,
            "XDP_PASS stubs on the directors' switch ports"
        );
        match deployment {
            Deployment::LvsNat => {
                // Real servers reach the outside through their default route, the DIP.
                let rs1 = r.real_servers[0].clone();
                let route = r.lab.ip(&rs1, &["route", "show", "default"]).unwrap();
                assert!(String::from_utf8_lossy(&route.stdout).contains("via 192.168.184.128"));
                let a = r
                    .lab
                    .probe(&rs1, &format!("{}:9000", reference::DIP1), 1, true)
                    .expect("probe");
                assert_eq!(a, vec!["director".to_string()]);
            }
            Deployment::LvsDr => {
                // Only the director answers ARP for the VIP, though the real servers hold it
                // on lo: a connection to the VIP reaches the director.
                r.lab
                    .serve(
                        &d,
                        "director-vip",
                        &format!("{}:9100", reference::VIP1),
                        false,
                    )
                    .expect("serve");
                let a = r
                    .lab
                    .probe(&client, &format!("{}:9100", reference::VIP1), 3, false)
                    .expect("probe");
                assert_eq!(a, vec!["director-vip".to_string(); 3]);
                let neigh = r
                    .lab
                    .ip(&client, &["neigh", "show", &reference::VIP1.to_string()])
                    .unwrap();
                let director_mac = r.lab.ip(&d, &["-br", "link", "show", "eth0"]).unwrap();
                let mac = String::from_utf8_lossy(&director_mac.stdout)
                    .split_whitespace()
                    .nth(2)
                    .unwrap()
                    .to_string();
                assert!(
                    String::from_utf8_lossy(&neigh.stdout).contains(&mac),
                    "VIP resolves to the director's MAC {mac}"
                );
            }
            Deployment::LvsTun => {
                // The real servers answer the client from the VIP through the router: their
                // default route.
                let rs1 = r.real_servers[0].clone();
                let route = r.lab.ip(&rs1, &["route", "show", "default"]).unwrap();
                assert!(String::from_utf8_lossy(&route.stdout).contains("via 10.2.20.1"));
                let a = r
                    .lab
                    .probe(
                        &client,
                        &format!("{}:8080", reference::TUN_RIPS[0]),
                        1,
                        false,
                    )
                    .expect("probe");
                assert_eq!(a, vec!["rs1".to_string()]);
            }
            _ => {}
        }
    }
    assert!(
        existing_with_prefix(&prefix).is_empty(),
        "namespaces left behind: {:?}",
        existing_with_prefix(&prefix)
    );
}

#[test]
fn lvs_nat() {
    check(Deployment::LvsNat);
}

#[test]
fn lvs_dr() {
    check(Deployment::LvsDr);
}

#[test]
fn keepalived_ha() {
    check(Deployment::KeepalivedHa);
}

#[test]
fn nginx_ha() {
    check(Deployment::NginxHa);
}

#[test]
fn lvs_tun() {
    check(Deployment::LvsTun);
}

#[test]
fn cleans_up_after_a_panic() {
    if !require_root("cleans_up_after_a_panic") {
        return;
    }
    let prefix = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let mut lab = Lab::new("panic").unwrap().with_agent(agent());
        *prefix.lock().unwrap() = lab.prefix().to_string();
        let h = lab.host("h").unwrap();
        lab.serve(&h, "h", "127.0.0.1:5000", false).unwrap();
        panic!("test failure while the lab is up");
    });
    assert!(result.is_err());
    let prefix = prefix.into_inner().unwrap();
    assert!(existing_with_prefix(&prefix).is_empty());
}

#[test]
fn missing_namespace_is_an_error_not_the_root_namespace() {
    if !require_root("missing_namespace_is_an_error") {
        return;
    }
    let lab = Lab::new("missing").unwrap();
    let err = lab.exec("fl-0-does-not-exist", ["true"]).unwrap_err();
    assert!(matches!(err, fulcrum_lab::LabError::MissingNamespace(_)));
}
