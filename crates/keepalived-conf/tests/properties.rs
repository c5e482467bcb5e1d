//! Properties: the parser never panics, whatever the bytes; and printing any valid model
//! and parsing it again gives the same model.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use fulcrum_keepalived_conf::*;
use fulcrum_types::{
    ForwardMethod, Priority, Protocol, Scheduler, Timer, TrackWeight, Vrid, Weight,
};
use proptest::prelude::*;

fn no_includes() -> LoadOptions<'static> {
    LoadOptions {
        lex: LexOptions {
            config_id: Some("lb1".into()),
            includes: false,
        },
        ..LoadOptions::default()
    }
}

/// Pieces that stress keepalived's lexer: braces, quotes, comments, escapes, definitions,
/// conditionals, and real keywords.
fn junk() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("\"".to_string()),
        Just("#".to_string()),
        Just("!".to_string()),
        Just("\\".to_string()),
        Just("\n".to_string()),
        Just(" ".to_string()),
        Just("$A=".to_string()),
        Just("$A".to_string()),
        Just("${A}".to_string()),
        Just("@lb1 ".to_string()),
        Just("@^lb1 ".to_string()),
        Just("include x".to_string()),
        Just("vrrp_instance VI ".to_string()),
        Just("virtual_server 10.0.0.1 80 ".to_string()),
        Just("real_server 10.0.0.2 80 ".to_string()),
        Just("virtual_router_id 300".to_string()),
        Just("priority".to_string()),
        Just("virtual_ipaddress".to_string()),
        Just("HTTP_GET".to_string()),
        Just("url".to_string()),
        "[a-z0-9_./-]{1,8}",
    ];
    prop::collection::vec(piece, 0..60).prop_map(|v| v.concat())
}

fn word() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_.-]{0,10}"
}

fn command() -> impl Strategy<Value = String> {
    "/[a-z]{1,8}(/[a-z0-9_.-]{1,8}){0,2}( [a-z0-9-]{1,6}){0,2}"
}

fn ipv4() -> impl Strategy<Value = IpAddr> {
    (1u8..=223, any::<u8>(), any::<u8>(), 1u8..=254)
        .prop_map(|(a, b, c, d)| IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
}

fn script() -> impl Strategy<Value = Script> {
    (
        command(),
        prop::option::of((word(), prop::option::of(word()))),
    )
        .prop_map(|(c, u)| Script {
            command: c,
            user: u.map(|(user, group)| ScriptUser { user, group }),
        })
}

fn whole_secs(max: u64) -> impl Strategy<Value = Timer> {
    (1..=max).prop_map(Timer::from_secs)
}

fn millis() -> impl Strategy<Value = Timer> {
    (1u64..100_000).prop_map(|ms| Timer::from_micros(ms * 1000))
}

fn address() -> impl Strategy<Value = VirtualAddress> {
    (
        ipv4(),
        prop::option::of(0u8..=32),
        prop::option::of(word()),
        prop::option::of(prop::sample::select(vec!["global", "site", "link", "host"])),
        prop::option::of(word()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(addr, prefix, dev, scope, label, no_track, no_prefix_route)| VirtualAddress {
                addr,
                prefix,
                brd: None,
                dev,
                scope: scope.map(str::to_string),
                label,
                no_track,
                no_prefix_route,
            },
        )
}

fn instance(index: usize, scripts: usize) -> impl Strategy<Value = VrrpInstance> {
    (
        (
            prop::option::of(prop::bool::ANY),
            1i64..=255,
            whole_secs(255),
            prop::collection::vec(address(), 1..4),
            prop::option::of("[a-z0-9]{1,8}"),
            prop::collection::vec((ipv4(), prop::option::of(any::<u8>())), 0..3),
        ),
        (
            prop::collection::vec((word(), prop::option::of(-254i64..=254)), 0..3),
            prop::collection::vec(
                (
                    0..scripts.max(1),
                    prop::option::of(-254i64..=254),
                    any::<bool>(),
                ),
                0..3,
            ),
            prop::option::of(script()),
            prop::option::of(script()),
            any::<bool>(),
            prop::option::of(whole_secs(60)),
            prop::option::of(any::<bool>()),
        ),
    )
        .prop_map(
            move |(
                (state, prio, advert, vips, pass, peers),
                (ifaces, tracks, master, any_notify, nopreempt, garp, accept),
            )| {
                let mut i =
                    VrrpInstance::new(&format!("VI_{index}"), Vrid::new(index as i64 + 1).unwrap());
                i.state = state.map(|m| {
                    if m {
                        InitialState::Master
                    } else {
                        InitialState::Backup
                    }
                });
                i.interface = Some("eth0".into());
                i.priority = Priority::new(prio).unwrap();
                i.advert_int = advert;
                i.virtual_ipaddress = vips;
                i.authentication = pass.map(Authentication::Pass);
                i.unicast_peers = peers
                    .into_iter()
                    .map(|(addr, ttl)| UnicastPeer {
                        addr,
                        min_ttl: ttl,
                        max_ttl: None,
                    })
                    .collect();
                let mut seen = std::collections::HashSet::new();
                i.track_interfaces = ifaces
                    .into_iter()
                    .filter(|(n, _)| seen.insert(n.clone()))
                    .map(|(name, w)| Tracked {
                        name,
                        weight: w.map(|w| TrackWeight::new(w).unwrap()),
                        reverse: false,
                    })
                    .collect();
                let mut seen = std::collections::HashSet::new();
                i.track_scripts = if scripts == 0 {
                    Vec::new()
                } else {
                    tracks
                        .into_iter()
                        .filter(|(n, _, _)| seen.insert(*n))
                        .map(|(n, w, r)| Tracked {
                            name: format!("chk_{n}"),
                            weight: w.map(|w| TrackWeight::new(w).unwrap()),
                            reverse: r && w.is_some(),
                        })
                        .collect()
                };
                i.notify.master = master;
                i.notify.any = any_notify;
                i.nopreempt = nopreempt;
                i.garp_master_delay = garp;
                i.accept = accept;
                i
            },
        )
}

fn checker() -> impl Strategy<Value = Checker> {
    let common = (
        prop::option::of(millis()),
        prop::option::of(0u32..10),
        prop::option::of(1u16..=65535),
    )
        .prop_map(|(t, r, p)| CheckerCommon {
            connect_timeout: t,
            retry: r,
            connect_port: p,
            ..CheckerCommon::default()
        });
    let url = (
        "/[a-z0-9/_.-]{0,12}",
        prop::option::of("[0-9a-f]{32}"),
        prop::collection::vec((100u16..=599, 0u16..50), 0..3),
    )
        .prop_map(|(path, digest, codes)| UrlCheck {
            path,
            digest,
            status_code: codes
                .into_iter()
                .map(|(f, span)| StatusRange {
                    first: f,
                    last: (f + span).min(599),
                })
                .collect(),
            virtualhost: None,
            regex: None,
            regex_no_match: false,
        });
    let kind = prop_oneof![
        Just(CheckerKind::Tcp),
        Just(CheckerKind::Ping),
        prop::collection::vec(url, 1..3).prop_map(|urls| CheckerKind::Http(HttpCheck {
            urls,
            ..HttpCheck::default()
        })),
        (script(), prop::option::of(millis()), any::<bool>()).prop_map(|(s, t, d)| {
            CheckerKind::Misc(MiscCheck {
                misc_path: s,
                misc_timeout: t,
                misc_dynamic: d,
            })
        }),
    ];
    (common, kind).prop_map(|(common, kind)| Checker { common, kind })
}

fn virtual_server(index: usize) -> impl Strategy<Value = VirtualServer> {
    (
        ipv4(),
        1u16..=65535,
        prop::sample::select(Scheduler::ALL.to_vec()),
        prop::option::of(prop::sample::select(vec![
            ForwardMethod::Nat,
            ForwardMethod::Dr,
        ])),
        prop::option::of(prop::sample::select(vec![Protocol::Tcp, Protocol::Udp])),
        prop::option::of(1u32..86400),
        prop::collection::vec(
            (ipv4(), 0i64..=65535, prop::collection::vec(checker(), 0..3)),
            0..4,
        ),
        prop::option::of(millis()),
    )
        .prop_map(
            move |(addr, port, algo, kind, proto, persist, servers, delay)| {
                let _ = index;
                let mut vs = VirtualServer::new(ServiceKey::Address { addr, port });
                vs.lb_algo = algo;
                vs.lb_kind = kind;
                vs.protocol = proto;
                vs.persistence_timeout = persist;
                vs.defaults.delay_loop = delay;
                vs.real_servers = servers
                    .into_iter()
                    .map(|(a, w, checkers)| {
                        // DR cannot change the port: real servers listen on the service's.
                        let mut rs = RealServer::new(a, Some(port));
                        rs.weight = Weight::new(w).unwrap();
                        rs.checkers = checkers;
                        rs
                    })
                    .collect();
                vs
            },
        )
}

fn config() -> impl Strategy<Value = KeepalivedConfig> {
    (0usize..3, 0usize..4, 0usize..4).prop_flat_map(|(n_scripts, n_instances, n_vs)| {
        let scripts: Vec<_> = (0..n_scripts)
            .map(|i| {
                (command(), 1u64..60, -254i64..=254, 1u32..5, 1u32..5).prop_map(
                    move |(c, iv, w, rise, fall)| {
                        let mut s = VrrpScript::new(&format!("chk_{i}"), &c);
                        s.interval = Timer::from_secs(iv);
                        s.weight = TrackWeight::new(w).unwrap();
                        s.rise = rise;
                        s.fall = fall;
                        s
                    },
                )
            })
            .collect();
        let instances: Vec<_> = (0..n_instances).map(|i| instance(i, n_scripts)).collect();
        let servers: Vec<_> = (0..n_vs).map(virtual_server).collect();
        (
            scripts,
            instances,
            servers,
            prop::option::of(word()),
            any::<bool>(),
        )
            .prop_map(
                |(vrrp_scripts, vrrp_instances, virtual_servers, router_id, security)| {
                    KeepalivedConfig {
                        global_defs: GlobalDefs {
                            router_id,
                            enable_script_security: security,
                            ..GlobalDefs::default()
                        },
                        vrrp_scripts,
                        vrrp_instances,
                        virtual_servers,
                        ..KeepalivedConfig::default()
                    }
                },
            )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_str(Path::new("fuzz.conf"), &text, &no_includes());
    }

    #[test]
    fn never_panics_on_keepalived_like_junk(text in junk()) {
        let _ = parse_str(Path::new("fuzz.conf"), &text, &no_includes());
    }

    #[test]
    fn printing_and_parsing_again_gives_the_same_model(cfg in config()) {
        let text = print(&cfg);
        let loaded = parse_str(Path::new("printed.conf"), &text, &LoadOptions::default());
        prop_assert!(loaded.config.is_some(), "{}\n{:?}", text, loaded.diagnostics);
        prop_assert_eq!(loaded.config.unwrap(), cfg, "{}", text);
    }
}
