//! Properties: the parser never panics, whatever the bytes; and printing any valid model
//! and parsing it again gives the same model.

use std::path::Path;
use std::time::Duration;

use fulcrum_nginx_conf::*;
use proptest::prelude::*;

fn no_includes() -> LoadOptions {
    LoadOptions {
        includes: false,
        host_checks: false,
        globals: None,
    }
}

fn junk() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just(";".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("#".to_string()),
        Just("\\".to_string()),
        Just("\n".to_string()),
        Just(" ".to_string()),
        Just("$".to_string()),
        Just("${host}".to_string()),
        Just("events".to_string()),
        Just("http".to_string()),
        Just("server".to_string()),
        Just("location".to_string()),
        Just("upstream u".to_string()),
        Just("proxy_pass http://u".to_string()),
        Just("listen 80".to_string()),
        Just("map $a $b".to_string()),
        "[a-z0-9_./:=-]{1,8}",
    ];
    prop::collection::vec(piece, 0..80).prop_map(|v| v.concat())
}

fn secs() -> impl Strategy<Value = Duration> {
    (0u64..10_000).prop_map(Duration::from_secs)
}

fn template() -> impl Strategy<Value = Template> {
    prop_oneof![
        "[a-zA-Z0-9 _./:-]{1,12}".prop_map(Template::new),
        prop::sample::select(vec![
            "$host",
            "$remote_addr",
            "${scheme}://$host$request_uri",
            "$http_x_id",
            "$arg_q"
        ])
        .prop_map(Template::new),
    ]
}

fn settings(location: bool) -> impl Strategy<Value = Settings> {
    (
        prop::option::of(prop::collection::vec(
            ("[A-Z][A-Za-z-]{0,10}", template()),
            1..3,
        )),
        prop::option::of(prop::sample::select(vec![
            HttpVersion::V1_0,
            HttpVersion::V1_1,
        ])),
        prop::option::of(secs()),
        prop::option::of(prop::sample::select(vec![
            NextUpstream::default(),
            NextUpstream::DEFAULT,
            NextUpstream {
                http_502: true,
                http_503: true,
                non_idempotent: true,
                ..NextUpstream::DEFAULT
            },
        ])),
        prop::option::of(any::<bool>()),
        prop::option::of(0u64..1 << 30),
        prop::option::of((secs(), prop::option::of(secs()))),
        prop::option::of(prop::sample::select(vec![
            ProxyRedirect::Off,
            ProxyRedirect::Default,
        ])),
        prop::option::of((1u32..64, 1u64..1 << 20)),
    )
        .prop_map(
            move |(headers, version, read, next, buffering, body, keepalive, redirect, buffers)| {
                Settings {
                    proxy_set_header: headers,
                    proxy_http_version: version,
                    proxy_read_timeout: read,
                    proxy_next_upstream: next,
                    proxy_buffering: buffering,
                    proxy_buffers: buffers,
                    client_max_body_size: body,
                    keepalive_timeout: keepalive,
                    // `proxy_redirect default` is valid only after proxy_pass in a location.
                    proxy_redirect: redirect
                        .filter(|r| location || *r != ProxyRedirect::Default)
                        .map(|r| vec![r]),
                    ..Settings::default()
                }
            },
        )
}

/// What the headers, realip and access modules add to the settings.
fn module_settings() -> impl Strategy<Value = Settings> {
    let source = prop_oneof![
        Just(Source::All),
        Just(Source::Unix),
        (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, len)| {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            Source::Net(
                std::net::IpAddr::from((u32::from_be_bytes(a) & mask).to_be_bytes()),
                len,
            )
        }),
    ];
    let expires = prop_oneof![
        Just(Expires::Off),
        Just(Expires::Epoch),
        Just(Expires::Max),
        (-100_000i64..100_000).prop_map(Expires::Access),
        (0i64..100_000).prop_map(Expires::Modified),
        (0i64..86_400).prop_map(Expires::Daily),
        Just(Expires::Variable(Template::new("$arg_e"))),
    ];
    (
        prop::option::of(prop::collection::vec(
            ("X-[A-Za-z]{1,8}", template(), any::<bool>()).prop_map(|(name, value, always)| {
                AddHeader {
                    name,
                    value,
                    always,
                }
            }),
            1..3,
        )),
        prop::option::of(expires),
        prop::option::of(prop::collection::vec(source.clone(), 1..3)),
        prop::option::of(prop::sample::select(vec![
            "X-Real-IP",
            "X-Forwarded-For",
            "X-Client",
        ])),
        prop::option::of(any::<bool>()),
        prop::option::of(prop::collection::vec(
            (any::<bool>(), source).prop_map(|(allow, source)| AccessRule { allow, source }),
            1..4,
        )),
        (
            prop::option::of("/srv/[a-z]{1,6}".prop_map(|p| Root::Root(Template::new(p)))),
            prop::option::of(prop::collection::vec(
                "[a-z]{1,6}\\.html".prop_map(Template::new),
                1..3,
            )),
            prop::option::of(prop::collection::vec(
                (
                    prop::collection::vec(prop::sample::select(vec![404u16, 500, 502, 503]), 1..3),
                    prop::option::of(prop_oneof![
                        Just(ErrorPageStatus::Page),
                        (200u16..600).prop_map(ErrorPageStatus::Code)
                    ]),
                    prop::sample::select(vec!["/50x.html", "@fallback", "http://example.com/e"]),
                )
                    .prop_map(|(codes, response, uri)| ErrorPage {
                        codes,
                        response,
                        uri: Template::new(uri),
                    }),
                1..3,
            )),
            prop::option::of(any::<bool>()),
        ),
    )
        .prop_map(
            |(add_header, expires, from, header, recursive, access, files)| Settings {
                add_header,
                expires,
                set_real_ip_from: from
                    .map(|v| {
                        v.into_iter()
                            .filter(|s| *s != Source::All)
                            .collect::<Vec<_>>()
                    })
                    .filter(|v| !v.is_empty()),
                real_ip_header: header.map(str::to_string),
                real_ip_recursive: recursive,
                access,
                root: files.0,
                index: files.1,
                error_page: files.2,
                etag: files.3,
                ..Settings::default()
            },
        )
}

/// What the gzip, auth_basic and limit modules add (limits name the zones every
/// generated http block declares: z1, z2 and c1).
fn filter_settings() -> BoxedStrategy<Settings> {
    let gzip = (
        prop::option::of(any::<bool>()),
        prop::option::of(
            prop::sample::subsequence(vec!["text/css", "application/json", "image/svg+xml"], 1..3)
                .prop_map(|v| v.into_iter().map(str::to_string).collect::<Vec<_>>()),
        ),
        prop::option::of(1u32..=9),
        prop::option::of(0u64..100_000),
        prop::option::of((1u16..0x200).prop_map(|b| GzipProxied(b << 1))),
        prop::option::of(any::<bool>()),
        prop::option::of(prop::sample::select(vec![
            HttpVersion::V1_0,
            HttpVersion::V1_1,
        ])),
        prop::option::of(
            (
                any::<bool>(),
                prop::sample::subsequence(vec!["^Wget/", "MSIE [1-6]\\."], 0..2),
            )
                .prop_map(|(msie6, r)| GzipDisable {
                    msie6,
                    regexes: r.into_iter().map(str::to_string).collect(),
                }),
        ),
    );
    let auth = (
        prop::option::of(template()),
        prop::option::of("/etc/nginx/[a-z]{1,6}".prop_map(Template::new)),
        prop::option::of(any::<bool>()),
    );
    let level = || {
        prop::option::of(
            prop::sample::select(vec!["info", "notice", "warn", "error"]).prop_map(str::to_string),
        )
    };
    let limits = (
        prop::option::of(
            prop::collection::vec(
                (
                    0u32..20,
                    prop_oneof![
                        Just(LimitDelay::All),
                        Just(LimitDelay::Never),
                        (1u32..10).prop_map(LimitDelay::After)
                    ],
                ),
                1..3,
            )
            .prop_map(|v| {
                v.into_iter()
                    .enumerate()
                    .map(|(i, (burst, delay))| LimitReq {
                        zone: format!("z{}", i + 1),
                        burst,
                        delay,
                    })
                    .collect::<Vec<_>>()
            }),
        ),
        prop::option::of((1u32..100).prop_map(|n| vec![("c1".to_string(), n)])),
        prop::option::of(400u16..600),
        prop::option::of(400u16..600),
        level(),
        level(),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
    );
    let names = || {
        prop::option::of(prop::collection::vec(
            prop::sample::select(vec!["Server", "X-Powered-By", "X-Accel-Charset"])
                .prop_map(str::to_string),
            1..3,
        ))
    };
    let heads = (
        names(),
        names(),
        prop::option::of(
            prop::sample::subsequence(vec!["x-accel-redirect", "x-accel-buffering", "vary"], 1..3)
                .prop_map(|v| v.into_iter().map(str::to_string).collect::<Vec<_>>()),
        ),
        prop::option::of(any::<bool>()),
        prop::option::of(
            prop::sample::select(vec!["GET", "$request_method"]).prop_map(Template::new),
        ),
        prop::option::of(template()),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
    );
    (gzip.boxed(), auth.boxed(), limits.boxed(), heads.boxed())
        .prop_map(|(g, a, l, h)| Settings {
            proxy_hide_header: h.0,
            proxy_pass_header: h.1,
            proxy_ignore_headers: h.2,
            proxy_intercept_errors: h.3,
            proxy_method: h.4,
            proxy_set_body: h.5,
            proxy_pass_request_headers: h.6,
            proxy_pass_request_body: h.7,
            gzip: g.0,
            gzip_types: g.1,
            gzip_comp_level: g.2,
            gzip_min_length: g.3,
            gzip_proxied: g.4,
            gzip_vary: g.5,
            gzip_http_version: g.6,
            gzip_disable: g.7,
            auth_basic: a.0,
            auth_basic_user_file: a.1,
            satisfy_any: a.2,
            limit_req: l.0,
            limit_conn: l.1,
            limit_req_status: l.2,
            limit_conn_status: l.3,
            limit_req_log_level: l.4,
            limit_conn_log_level: l.5,
            limit_req_dry_run: l.6,
            limit_conn_dry_run: l.7,
            ..Settings::default()
        })
        .boxed()
}

/// The rewrite module's directives; `in_if`: inside an `if` (no `if` there).
fn steps(in_if: bool) -> BoxedStrategy<Vec<Step>> {
    let leaf = prop_oneof![
        (
            "/[a-z]{1,6}",
            prop::option::of(prop::sample::select(vec![
                RewriteFlag::Last,
                RewriteFlag::Break,
                RewriteFlag::Redirect,
                RewriteFlag::Permanent,
            ]))
        )
            .prop_map(|(to, flag)| Step::Rewrite(Rewrite {
                regex: "^/old/(.*)$".into(),
                replacement: Template::new(format!("{to}/$1")),
                flag,
            })),
        (200u16..600, prop::option::of(template()))
            .prop_map(|(code, text)| Step::Return(Return { code, text })),
        ("[a-z]{1,6}", template()).prop_map(|(v, value)| Step::Set {
            variable: format!("v_{v}"),
            value,
        }),
        Just(Step::Break),
    ];
    if in_if {
        return prop::collection::vec(leaf, 0..3).boxed();
    }
    let condition = prop_oneof![
        Just(Condition::Variable("http_x".into())),
        (any::<bool>(), template()).prop_map(|(negate, value)| Condition::Compare {
            variable: "scheme".into(),
            negate,
            value,
        }),
        (any::<bool>(), any::<bool>()).prop_map(|(negate, ci)| Condition::Match {
            variable: "uri".into(),
            negate,
            case_insensitive: ci,
            regex: "^/a(b|c)$".into(),
        }),
        (
            any::<bool>(),
            prop::sample::select(vec![
                FileTest::File,
                FileTest::Dir,
                FileTest::Exists,
                FileTest::Executable,
            ])
        )
            .prop_map(|(negate, test)| Condition::File {
                negate,
                test,
                path: Template::new("/srv/$host/down"),
            }),
    ];
    let if_step = (condition, steps(true)).prop_map(|(condition, steps)| {
        Step::If(Box::new(If {
            condition,
            steps,
            proxy_pass: None,
            settings: Settings::default(),
        }))
    });
    prop::collection::vec(prop_oneof![3 => leaf, 1 => if_step], 0..4).boxed()
}

fn upstream(index: usize) -> impl Strategy<Value = Upstream> {
    let server = (
        1u8..=254,
        1u16..=65535,
        1u32..10,
        0u32..5,
        1u64..100,
        0u32..100,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(host, port, weight, max_fails, fail, max_conns, backup, down)| {
                let mut s = UpstreamServer::new(&format!("10.0.0.{host}"), port);
                s.weight = weight;
                s.max_fails = max_fails;
                s.fail_timeout = Duration::from_secs(fail);
                s.max_conns = max_conns;
                s.backup = backup;
                s.down = down;
                s
            },
        );
    let balance = prop_oneof![
        Just(Balance::RoundRobin),
        Just(Balance::LeastConn),
        Just(Balance::IpHash),
        (template(), any::<bool>()).prop_map(|(key, consistent)| Balance::Hash { key, consistent }),
        Just(Balance::Random {
            two: false,
            least_conn: false
        }),
        Just(Balance::Random {
            two: true,
            least_conn: false
        }),
        Just(Balance::Random {
            two: true,
            least_conn: true
        }),
    ];
    (
        prop::collection::vec(server, 1..4),
        balance,
        prop::option::of(1u32..100),
    )
        .prop_map(move |(mut servers, balance, keepalive)| {
            if !matches!(balance, Balance::RoundRobin | Balance::LeastConn) {
                for s in &mut servers {
                    s.backup = false;
                }
            }
            Upstream {
                name: format!("up{index}"),
                servers,
                balance,
                keepalive,
                keepalive_requests: None,
                keepalive_timeout: None,
                zone: index
                    .is_multiple_of(2)
                    .then(|| (format!("z{index}"), Some(65536))),
            }
        })
}

fn location(upstreams: usize, index: usize) -> impl Strategy<Value = Location> {
    (
        prop_oneof![
            "/[a-z0-9]{0,6}".prop_map(LocationMatch::Prefix),
            "/[a-z0-9]{1,6}".prop_map(LocationMatch::Exact),
            "/[a-z]{1,6}/".prop_map(LocationMatch::PrefixNoRegex),
            ("\\.[a-z]{1,4}\\$", any::<bool>()).prop_map(|(pattern, ci)| LocationMatch::Regex {
                pattern,
                case_insensitive: ci
            }),
        ],
        0..upstreams.max(1),
        any::<bool>(),
        settings(true),
        module_settings(),
        steps(false),
        filter_settings(),
    )
        .prop_map(
            move |(matcher, up, proxied, settings, modules, steps, filters)| {
                // Distinct paths: nginx refuses duplicate locations.
                let matcher = match matcher {
                    LocationMatch::Prefix(p) => LocationMatch::Prefix(format!("{p}{index}")),
                    LocationMatch::Exact(p) => LocationMatch::Exact(format!("{p}{index}")),
                    LocationMatch::PrefixNoRegex(p) => {
                        LocationMatch::PrefixNoRegex(format!("{p}{index}"))
                    }
                    r => r,
                };
                let proxy_pass =
                    (proxied && upstreams > 0).then(|| Template::new(format!("http://up{up}")));
                let mut settings = Settings {
                    add_header: modules.add_header,
                    expires: modules.expires,
                    set_real_ip_from: modules.set_real_ip_from,
                    real_ip_header: modules.real_ip_header,
                    real_ip_recursive: modules.real_ip_recursive,
                    access: modules.access,
                    root: modules.root,
                    index: modules.index,
                    error_page: modules.error_page,
                    etag: modules.etag,
                    ..Settings {
                        proxy_set_header: settings.proxy_set_header,
                        proxy_http_version: settings.proxy_http_version,
                        proxy_read_timeout: settings.proxy_read_timeout,
                        proxy_next_upstream: settings.proxy_next_upstream,
                        proxy_buffering: settings.proxy_buffering,
                        proxy_buffers: settings.proxy_buffers,
                        client_max_body_size: settings.client_max_body_size,
                        keepalive_timeout: settings.keepalive_timeout,
                        proxy_redirect: settings.proxy_redirect,
                        ..filters
                    }
                };
                if proxy_pass.is_none() {
                    settings.proxy_redirect = None;
                }
                Location {
                    stub_status: proxy_pass.is_none() && index % 2 == 1,
                    matcher,
                    proxy_pass,
                    steps,
                    settings,
                    locations: Vec::new(),
                    try_files: None,
                    internal: false,
                }
            },
        )
}

fn server(upstreams: usize) -> impl Strategy<Value = Server> {
    (
        prop::collection::vec(
            (
                prop::option::of(1u8..=254),
                1u16..=65535,
                any::<bool>(),
                any::<bool>(),
            ),
            1..3,
        ),
        prop::collection::vec("[a-z]{1,8}\\.(com|org)", 0..3),
        settings(false),
        (0usize..4)
            .prop_flat_map(move |n| (0..n).map(|i| location(upstreams, i)).collect::<Vec<_>>()),
        steps(false),
    )
        .prop_map(|(listens, names, settings, locations, steps)| Server {
            listen: listens
                .into_iter()
                .map(|(a, port, ds, reuse)| {
                    let mut l =
                        Listen::new(a.map(|a| std::net::IpAddr::from([127, 0, 0, a])), port);
                    l.default_server = ds;
                    l.reuseport = reuse;
                    l
                })
                .collect(),
            server_name: names.into_iter().map(ServerName::Exact).collect(),
            settings,
            steps,
            locations,
            try_files: None,
            stub_status: false,
        })
}

/// split_clients blocks: shares that add up to at most 100%, `*` last or not at all.
fn splits() -> impl Strategy<Value = Vec<SplitClients>> {
    prop::collection::vec(
        (
            prop::collection::vec((1u32..3000, "[a-z]{1,6}"), 1..4),
            any::<bool>(),
        ),
        0..2,
    )
    .prop_map(|blocks| {
        blocks
            .into_iter()
            .enumerate()
            .map(|(i, (parts, star))| {
                let mut parts: Vec<(u32, String)> = parts;
                if star {
                    parts.push((0, "rest".into()));
                }
                SplitClients {
                    source: Template::new("${remote_addr}x"),
                    variable: format!("split{i}"),
                    parts,
                }
            })
            .collect()
    })
}

/// geo blocks: networks (v4 and v6) or ranges, a default, proxies.
fn geos() -> impl Strategy<Value = Vec<Geo>> {
    let net = prop_oneof![
        (any::<[u8; 4]>(), 8u8..=32).prop_map(|(a, len)| {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            GeoKey::Net(
                std::net::IpAddr::from((u32::from_be_bytes(a) & mask).to_be_bytes()),
                len,
            )
        }),
        (any::<u128>(), 16u8..=128).prop_map(|(a, len)| {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            GeoKey::Net(std::net::IpAddr::V6((a & mask).into()), len)
        }),
    ];
    let range = (any::<u32>(), 0u32..1000).prop_map(|(a, n)| {
        let b = a.saturating_add(n);
        GeoKey::Range(a.into(), b.into())
    });
    prop::collection::vec(
        (
            any::<bool>(),
            prop::collection::vec((net, "[a-z0-9]{1,6}"), 0..4),
            prop::collection::vec((range, "[a-z0-9]{1,6}"), 0..4),
            prop::option::of("[a-z]{1,6}"),
            any::<bool>(),
        ),
        0..2,
    )
    .prop_map(|blocks| {
        blocks
            .into_iter()
            .enumerate()
            .map(|(i, (ranges, nets, rs, default, recursive))| {
                let mut entries = if ranges { rs } else { nets };
                // Keys are distinct (a repeated one is a duplicate nginx warns of).
                let mut seen = std::collections::HashSet::new();
                entries.retain(|(k, _)| seen.insert(*k));
                Geo {
                    address: (i == 1).then(|| "http_x_client".to_string()),
                    variable: format!("geo{i}"),
                    default,
                    ranges,
                    entries,
                    proxies: vec![Source::Net("10.0.0.0".parse().unwrap(), 8)],
                    proxy_recursive: recursive,
                }
            })
            .collect()
    })
}

fn config() -> impl Strategy<Value = NginxConfig> {
    (0usize..3, 0usize..3).prop_flat_map(|(n_up, n_srv)| {
        (
            prop_oneof![
                Just(WorkerProcesses::Auto),
                (1u32..64).prop_map(WorkerProcesses::Count)
            ],
            1u32..65535,
            (0..n_up).map(upstream).collect::<Vec<_>>(),
            (0..n_srv).map(|_| server(n_up)).collect::<Vec<_>>(),
            settings(false),
            any::<bool>(),
            any::<bool>(),
            (
                splits(),
                geos(),
                proptest::option::of(("[a-z][a-z0-9-]{0,7}", proptest::option::of("[a-z]{1,8}"))),
                proptest::option::of(1u64..1_000_000),
                proptest::option::of(prop_oneof![
                    proptest::option::of("[01]{1,8}").prop_map(CpuAffinity::Auto),
                    proptest::collection::vec("[01]{1,8}", 1..4).prop_map(CpuAffinity::Masks),
                ]),
            ),
        )
            .prop_map(
                |(
                    wp,
                    wc,
                    upstreams,
                    servers,
                    settings,
                    daemon,
                    master_process,
                    (splits, geos, user, worker_rlimit_nofile, worker_cpu_affinity),
                )| {
                    NginxConfig {
                        worker_processes: wp,
                        worker_connections: wc,
                        pid: None,
                        daemon,
                        master_process,
                        error_log: None,
                        user,
                        worker_rlimit_nofile,
                        worker_cpu_affinity,
                        conf_prefix: None,
                        http: Some(Http {
                            settings,
                            log_formats: Vec::new(),
                            maps: Vec::new(),
                            upstreams,
                            servers,
                            temp_paths: vec![(
                                "client_body_temp_path".into(),
                                "/var/lib/nginx/body".into(),
                            )],
                            split_clients: splits,
                            geos,
                            limit_zones: vec![
                                LimitZone {
                                    name: "z1".into(),
                                    key: Template::new("$binary_remote_addr"),
                                    size: 1 << 20,
                                    rate: Some(1000),
                                },
                                LimitZone {
                                    name: "z2".into(),
                                    key: Template::new("$uri"),
                                    size: 10 << 20,
                                    rate: Some(500),
                                },
                                LimitZone {
                                    name: "c1".into(),
                                    key: Template::new("$binary_remote_addr"),
                                    size: 1 << 20,
                                    rate: None,
                                },
                            ],
                        }),
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
    fn never_panics_on_nginx_like_junk(text in junk()) {
        let _ = parse_str(Path::new("fuzz.conf"), &text, &no_includes());
    }

    #[test]
    fn printing_and_parsing_again_gives_the_same_model(cfg in config()) {
        let text = print(&cfg);
        let loaded = parse_str(Path::new("printed.conf"), &text, &no_includes());
        prop_assert!(loaded.config.is_some(), "{}\n{:?}", text, loaded.diagnostics);
        prop_assert_eq!(loaded.config.unwrap(), cfg, "{}", text);
    }
}
