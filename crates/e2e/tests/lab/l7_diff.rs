//! The layer-7 proxy against the real nginx (Debian's package): the same nginx.conf (only
//! the listen port differs) and the same request sequence go through nginx and through
//! `fulcrum run --nginx-conf`, in front of the same echo backends in one network
//! namespace. Which backend served each request, the status, and the request head each
//! backend saw must be the same.

use std::time::Duration;

use fulcrum_e2e::{installed, Scratch};
use fulcrum_lab::{require_root, wait_for, Agent, Host, Lab};

const NGINX: &str = "127.0.0.1:8080";
const FULCRUM: &str = "127.0.0.1:8081";
/// TLS listens: `SSLPORT` in a configuration.
const NGINX_TLS: u16 = 8443;
const FULCRUM_TLS: u16 = 8444;

fn agent() -> Agent {
    Agent::new(fulcrum_e2e::bin(), &["lab-agent"])
}

/// One response as the test compares it: status, the backend that answered ("" for an
/// answer of the proxy itself), the request head the backend saw (byte for byte: names,
/// case, order), and the answer's head (byte for byte but for Date and the product's
/// name and version; see [`answer_head`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    status: u16,
    backend: String,
    head: Vec<String>,
    answer: Vec<String>,
}

fn seen(answer: (u16, String, String)) -> Seen {
    seen_as(answer, false)
}

/// [`seen`], `decoded` when the agent de-chunked and inflated the body (`--decode`):
/// then the proxy's own chunked bodies are compared too.
fn seen_as((status, answer, body): (u16, String, String), decoded: bool) -> Seen {
    let answer = answer_head(&answer, &body);
    let mut lines = body.lines();
    let backend = lines.next().unwrap_or("").to_string();
    if !backend.starts_with('b') || backend.contains(' ') {
        // An answer of the proxy itself: its body too (error pages name the product),
        // unless chunked (where the chunks fall is the transport's business).
        let chunked = !decoded && answer.iter().any(|l| l == "Transfer-Encoding: chunked");
        let body = if chunked {
            String::new()
        } else {
            PRODUCTS
                .iter()
                .fold(body.clone(), |b, p| b.replace(p, "PRODUCT"))
        };
        return Seen {
            status,
            backend: String::new(),
            head: vec![body],
            answer,
        };
    }
    Seen {
        status,
        backend,
        head: lines.map(str::to_string).collect(),
        answer,
    }
}

/// The product each proxy names itself by, in Server and on its error pages.
const PRODUCTS: [&str; 2] = [
    "nginx/1.22.1",
    concat!("fulcrum/", env!("CARGO_PKG_VERSION")),
];

/// An answer's head lines as compared: Date set aside (its value differs by the second),
/// the product's name written PRODUCT, the listen address LISTEN (redirects name it), and
/// Content-Length checked against the body, then
/// set aside where the body names the product (an error page's footer: the names differ
/// in length).
fn answer_head(head: &str, body: &str) -> Vec<String> {
    let names_product = PRODUCTS.iter().any(|p| body.contains(p));
    let date = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("Date: "))
        .and_then(http_date);
    head.split("\r\n")
        .filter(|l| !l.starts_with("Date: "))
        .map(|l| {
            // An Expires counted from now: as seconds after Date (the two proxies answer
            // in different seconds).
            if let (Some(e), Some(d)) = (l.strip_prefix("Expires: ").and_then(http_date), date) {
                if e > 100_000_000 && e < 2_000_000_000 {
                    return format!("Expires: Date+{}", e - d);
                }
            }
            if let Some(n) = l.strip_prefix("Content-Length: ") {
                // (A HEAD answer has the length and no body.)
                if !body.is_empty() {
                    assert_eq!(
                        n.parse::<usize>().ok(),
                        Some(body.len()),
                        "{head}\n\n{body}"
                    );
                }
                if names_product {
                    return "Content-Length: (an error page)".to_string();
                }
            }
            // Each listens on its own port, which absolute redirects name.
            PRODUCTS
                .iter()
                .fold(l.to_string(), |l, p| l.replace(p, "PRODUCT"))
                .replace(NGINX, "LISTEN")
                .replace(FULCRUM, "LISTEN")
        })
        .collect()
}

/// Seconds since 1970 of an HTTP date (`Sat, 05 Dec 2026 09:10:11 GMT`).
fn http_date(v: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let f: Vec<&str> = v.split([' ', ':']).collect();
    let [_, d, m, y, hh, mm, ss, "GMT"] = f[..] else {
        return None;
    };
    let (d, y): (i64, i64) = (d.parse().ok()?, y.parse().ok()?);
    let m = MONTHS.iter().position(|x| *x == m)? as i64 + 1;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(
        days * 86_400
            + hh.parse::<i64>().ok()? * 3600
            + mm.parse::<i64>().ok()? * 60
            + ss.parse::<i64>().ok()?,
    )
}

struct Pair {
    lab: Lab,
    host: Host,
    _dir: Scratch,
}

impl Pair {
    /// Backends (name, port, extra serve flags) in one namespace, then nginx and fulcrum
    /// with `http` (a server block written with `LISTEN` for its listen directive).
    fn start(tag: &str, http: &str, backends: &[(&str, u16, &[&str])]) -> Pair {
        Pair::start_in(Scratch::new(tag), tag, http, backends)
    }

    /// [`Pair::start`] in a scratch directory prepared already (`DIR` in the
    /// configuration names it).
    fn start_in(dir: Scratch, tag: &str, http: &str, backends: &[(&str, u16, &[&str])]) -> Pair {
        Pair::start_in_split(dir, tag, http, http, backends)
    }

    /// Each its own http text (for what must differ, such as log file names).
    fn start_in_split(
        dir: Scratch,
        tag: &str,
        nginx_http: &str,
        fulcrum_http: &str,
        backends: &[(&str, u16, &[&str])],
    ) -> Pair {
        Pair::start_main(dir, tag, None, nginx_http, fulcrum_http, backends)
    }

    /// [`Pair::start_in_split`] with main-context directives before `events`: given,
    /// nginx runs with its master process and workers (`main` says how many), else in
    /// its single-process mode.
    fn start_main(
        dir: Scratch,
        tag: &str,
        main: Option<&str>,
        nginx_http: &str,
        fulcrum_http: &str,
        backends: &[(&str, u16, &[&str])],
    ) -> Pair {
        let mut lab = Lab::new(tag).unwrap().with_agent(agent());
        let host = lab.host("px").unwrap();
        for (name, port, extra) in backends {
            let mut flags = vec!["--http", "--echo"];
            flags.extend_from_slice(extra);
            lab.serve_with(&host, name, &format!("127.0.0.1:{port}"), &flags)
                .unwrap();
        }
        let conf = |http: &str, listen: &str, tls: u16| {
            format!(
                "{}events {{\n    worker_connections 512;\n}}\nhttp {{\n    access_log off;\n{}\n}}\n",
                main.unwrap_or(""),
                http.replace("LISTENADDR", listen).replace(
                    "LISTEN",
                    &format!("listen {listen};\n        location = /__ready {{ return 200 \"ready\"; }}")
                )
                .replace("SSLPORT", &tls.to_string())
                .replace("DIR", &dir.0.display().to_string())
            )
        };
        let nginx_conf = dir.0.join("nginx.conf");
        std::fs::write(&nginx_conf, conf(nginx_http, NGINX, NGINX_TLS)).unwrap();
        let fulcrum_conf = dir.0.join("fulcrum-nginx.conf");
        std::fs::write(&fulcrum_conf, conf(fulcrum_http, FULCRUM, FULCRUM_TLS)).unwrap();
        let pid = dir.0.join("nginx.pid");
        let globals = match main {
            Some(_) => format!("daemon off; pid {};", pid.display()),
            None => format!("daemon off; master_process off; pid {};", pid.display()),
        };
        let errlog = dir.0.join("nginx-error.log");
        lab.spawn(
            &host,
            &[
                "nginx".as_ref(),
                "-c".as_ref(),
                nginx_conf.as_os_str(),
                "-e".as_ref(),
                errlog.as_os_str(),
                "-g".as_ref(),
                globals.as_ref(),
            ],
            Some(&dir.0.join("nginx.out")),
        )
        .unwrap();
        let sock = dir.0.join("fulcrum.sock");
        lab.spawn(
            &host,
            &[
                fulcrum_e2e::bin().as_ref(),
                "run".as_ref(),
                "--nginx-conf".as_ref(),
                fulcrum_conf.as_os_str(),
                "--control".as_ref(),
                sock.as_os_str(),
                "--no-forwarding".as_ref(),
            ],
            Some(&dir.0.join("fulcrum.log")),
        )
        .unwrap();
        let pair = Pair {
            lab,
            host,
            _dir: dir,
        };
        for addr in [NGINX, FULCRUM] {
            let up = wait_for(Duration::from_secs(10), || {
                pair.lab
                    .request(&pair.host, addr, &["/__ready"], &[])
                    .is_ok_and(|r| r.first().is_some_and(|(s, _)| *s == 200))
            });
            assert!(up.is_some(), "{addr} never answered; see {}", pair.logs());
        }
        pair
    }

    fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self._dir.0.join(n)).unwrap_or_default();
        format!(
            "nginx:\n{}{}\nfulcrum:\n{}",
            read("nginx-error.log"),
            read("nginx.out"),
            read("fulcrum.log")
        )
    }

    /// The same requests through both, one after another; returns nginx's view.
    fn same(&self, paths: &[&str], extra: &[&str]) -> Vec<Seen> {
        let decoded = extra.contains(&"--decode");
        let run = |addr| {
            self.lab
                .request_full(&self.host, addr, paths, extra)
                .unwrap()
                .into_iter()
                .map(|a| seen_as(a, decoded))
                .collect::<Vec<_>>()
        };
        let nginx = run(NGINX);
        let fulcrum = run(FULCRUM);
        assert_eq!(nginx.len(), paths.len(), "{}", self.logs());
        assert_eq!(fulcrum.len(), paths.len(), "{}", self.logs());
        for (i, (n, f)) in nginx.iter().zip(&fulcrum).enumerate() {
            // Two proxies failing alike (no answer at all) would agree and prove nothing.
            assert_ne!(
                n.status,
                0,
                "request {i} ({}) got no answer\n{}",
                paths[i],
                self.logs()
            );
            assert_eq!(
                n,
                f,
                "request {i} ({}) differs: nginx left, fulcrum right\n{}",
                paths[i],
                self.logs()
            );
        }
        nginx
    }
}

/// Writes `files` (path under `dir`, text) with one fixed modification time, so that
/// both proxies answer with the same Last-Modified and ETag.
fn write_files(dir: &std::path::Path, files: &[(&str, &str)]) {
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_704_067_200);
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(when).unwrap();
    }
}

impl Pair {
    /// A request to `path` at `addr` left waiting in the background (until the lab ends
    /// or the proxy answers), given a moment to arrive.
    fn hold_request(&mut self, addr: &str, path: &str) -> fulcrum_lab::Process {
        let bin = fulcrum_e2e::bin();
        let args = [
            bin.as_os_str(),
            "lab-agent".as_ref(),
            "request".as_ref(),
            "--connect".as_ref(),
            addr.as_ref(),
            "--paths".as_ref(),
            path.as_ref(),
        ];
        let held = self.lab.spawn(&self.host, &args, None).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        held
    }
}

fn skip(name: &str) -> bool {
    !require_root(name) || !installed("nginx")
}

fn backends(seen: &[Seen]) -> String {
    seen.iter()
        .map(|s| {
            if s.backend.is_empty() {
                "-"
            } else {
                &s.backend
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn round_robin_weights_down_and_backup() {
    if skip("round_robin_weights_down_and_backup") {
        return;
    }
    let p = Pair::start(
        "l7rr",
        "    upstream u {\n        server 127.0.0.1:9001 weight=5;\n        server 127.0.0.1:9002;\n        server 127.0.0.1:9003 weight=2;\n        server 127.0.0.1:9004 down;\n        server 127.0.0.1:9005 backup;\n    }\n    server {\n        LISTEN\n        location / {\n            proxy_pass http://u;\n        }\n    }",
        &[("b1", 9001, &[]), ("b2", 9002, &[]), ("b3", 9003, &[]), ("b4", 9004, &[]), ("b5", 9005, &[])],
    );
    let paths: Vec<&str> = vec!["/a"; 16];
    let s = p.same(&paths, &[]);
    assert_eq!(
        backends(&s),
        "b1 b3 b1 b1 b2 b1 b3 b1 b1 b3 b1 b1 b2 b1 b3 b1",
        "smooth weighted round-robin, 5:1:2"
    );
}

#[test]
fn least_conn_ip_hash_and_both_hashes() {
    if skip("least_conn_ip_hash_and_both_hashes") {
        return;
    }
    let servers = "        server 127.0.0.1:9001;\n        server 127.0.0.1:9002 weight=2;\n        server 127.0.0.1:9003;\n";
    let http = format!(
        "    upstream lc {{\n        least_conn;\n{servers}    }}\n    upstream iph {{\n        ip_hash;\n{servers}    }}\n    upstream h {{\n        hash $request_uri;\n{servers}    }}\n    upstream ch {{\n        hash $request_uri consistent;\n{servers}    }}\n    server {{\n        LISTEN\n        location /lc/ {{ proxy_pass http://lc; }}\n        location /iph/ {{ proxy_pass http://iph; }}\n        location /h/ {{ proxy_pass http://h; }}\n        location /ch/ {{ proxy_pass http://ch; }}\n    }}"
    );
    let p = Pair::start(
        "l7hash",
        &http,
        &[("b1", 9001, &[]), ("b2", 9002, &[]), ("b3", 9003, &[])],
    );
    let lc = p.same(&["/lc/x"; 8], &[]);
    assert!(
        lc.iter().all(|x| x.status == 200 && !x.backend.is_empty()),
        "{lc:?}"
    );
    let iph = p.same(&["/iph/x"; 4], &[]);
    assert!(iph.windows(2).all(|w| w[0].backend == w[1].backend));
    let keys: Vec<String> = (0..24).map(|i| format!("/h/obj{i}?v={}", i * 7)).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let h = p.same(&refs, &[]);
    let ckeys: Vec<String> = (0..24).map(|i| format!("/ch/item/{i}")).collect();
    let crefs: Vec<&str> = ckeys.iter().map(String::as_str).collect();
    let ch = p.same(&crefs, &[]);
    for s in [&h, &ch, &iph] {
        assert!(
            s.iter().all(|x| x.status == 200 && !x.backend.is_empty()),
            "{s:?}"
        );
    }
    for s in [&h, &ch] {
        let used: std::collections::HashSet<&str> = s.iter().map(|x| x.backend.as_str()).collect();
        assert!(used.len() >= 2, "{}", backends(s));
    }
}

#[test]
fn next_upstream_failures_and_max_fails() {
    if skip("next_upstream_failures_and_max_fails") {
        return;
    }
    // b1 answers 503 for /flaky; nothing listens on 9009.
    let http = "    upstream u {\n        server 127.0.0.1:9001;\n        server 127.0.0.1:9002;\n        server 127.0.0.1:9009 max_fails=1 fail_timeout=30s;\n    }\n    server {\n        LISTEN\n        location / {\n            proxy_pass http://u;\n            proxy_next_upstream error timeout http_503;\n        }\n        location /strict/ {\n            proxy_pass http://u/;\n            proxy_next_upstream off;\n        }\n        location /once/ {\n            proxy_pass http://u/;\n            proxy_next_upstream error timeout http_503;\n            proxy_next_upstream_tries 1;\n        }\n    }";
    let p = Pair::start(
        "l7next",
        http,
        &[
            (
                "b1",
                9001,
                &["--fail-path", "/flaky", "--fail-status", "503"],
            ),
            ("b2", 9002, &[]),
        ],
    );
    let s = p.same(&["/flaky"; 6], &[]);
    assert!(
        s.iter().all(|x| x.status == 200 && x.backend == "b2"),
        "{s:?}"
    );
    p.same(&["/strict/flaky"; 6], &[]);
    p.same(&["/once/flaky"; 6], &[]);
    // POST is not retried once sent unless non_idempotent; a refused connect is.
    p.same(&["/flaky"; 4], &["--method", "POST", "--body", "x=1"]);
}

#[test]
fn request_headers_uri_rewriting_and_bodies() {
    if skip("request_headers_uri_rewriting_and_bodies") {
        return;
    }
    let http = "    upstream u {\n        server 127.0.0.1:9001;\n    }\n    map $http_upgrade $connection_upgrade {\n        default upgrade;\n        ''      close;\n    }\n    proxy_set_header X-Level http;\n    server {\n        LISTEN\n        proxy_set_header X-Level server;\n        proxy_set_header X-Server $server_name;\n        location / {\n            proxy_pass http://u;\n        }\n        location /set/ {\n            proxy_pass http://u;\n            proxy_set_header Host $host;\n            proxy_set_header X-Real-IP $remote_addr;\n            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n            proxy_set_header X-Empty \"\";\n            proxy_set_header X-Uri \"$uri|$args|$request_uri|$scheme|$http_x_custom\";\n        }\n        location /api/ {\n            proxy_pass http://u/v2/;\n        }\n        location = /exact {\n            proxy_pass http://127.0.0.1:9001/other;\n        }\n        location /ws/ {\n            proxy_pass http://u;\n            proxy_http_version 1.1;\n            proxy_set_header Upgrade $http_upgrade;\n            proxy_set_header Connection $connection_upgrade;\n        }\n    }";
    let p = Pair::start("l7hdr", http, &[("b1", 9001, &[])]);
    let client = [
        "--header",
        "X-Custom: yes",
        "--header",
        "X-Forwarded-For: 192.0.2.1",
        "--header",
        "TE: trailers",
        "--header",
        "Keep-Alive: 5",
        "--header",
        "Expect: 100-continue-not",
        "--header",
        "Proxy-Connection: keep-alive",
        "--header",
        "User-Agent: lab",
    ];
    let s = p.same(
        &[
            "/plain?a=1",
            "/set/x%20y/../z?q=2",
            "/api/deep/path?k=v",
            "/api/a%2Fb",
            "/exact?z=1",
            "/ws/chat",
        ],
        &client,
    );
    assert!(s.iter().all(|x| x.status == 200), "{s:?}");
    assert!(
        s[0].head.contains(&"X-Level: server".to_string()),
        "{:?}",
        s[0].head
    );
    assert!(
        !s[1].head.iter().any(|h| h.starts_with("X-Level")),
        "inner proxy_set_header replaces"
    );
    p.same(
        &["/set/upload"],
        &["--method", "POST", "--body", "hello=world"],
    );
    // An upgrade becomes a tunnel through both.
    for addr in [NGINX, FULCRUM] {
        let mut cmd = p.lab.agent_command(&p.host).unwrap();
        cmd.extend(["tunnel", "--connect", addr, "--path", "/ws/chat"].map(Into::into));
        let out = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .output()
            .unwrap();
        let echoed = String::from_utf8_lossy(&out.stdout);
        assert_eq!(echoed.trim(), "frame 0,frame 1,frame 2", "{addr}");
    }
}

#[test]
fn answers_keep_the_upstreams_case_and_nginxs_order() {
    if skip("answers_keep_the_upstreams_case_and_nginxs_order") {
        return;
    }
    let http = "    upstream u {\n        server 127.0.0.1:9001;\n    }\n    upstream v {\n        server 127.0.0.1:9002;\n    }\n    server {\n        LISTEN\n        location / {\n            proxy_pass http://u;\n        }\n        location /rel/ {\n            proxy_pass http://v/;\n        }\n        location /moved {\n            return 301 /new;\n        }\n        location /found {\n            return 302 http://example.com/x;\n        }\n        location /text {\n            return 200 \"plain text\";\n        }\n        location /teapot {\n            return 418;\n        }\n    }";
    let b1: &[&str] = &[
        "--answer-header",
        "X-Port: 9001",
        "--answer-header",
        "x-lower-Case: a",
        "--answer-header",
        "Set-Cookie: a=1",
        "--answer-header",
        "Set-Cookie: b=2",
        "--answer-header",
        "Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT",
        "--answer-header",
        "Server: backend",
        "--answer-header",
        "X-Accel-Buffering: no",
        "--answer-header",
        "Cache-Control: no-cache",
        "--answer-header",
        "Location: http://elsewhere.example/",
        "--chunked-path",
        "/chunked",
    ];
    let b2: &[&str] = &[
        "--answer-header",
        "Location: http://v/moved/on",
        "--answer-header",
        "X-Mixed: 1",
    ];
    let p = Pair::start("l7answer", http, &[("b1", 9001, b1), ("b2", 9002, b2)]);
    let s = p.same(
        &[
            "/a", "/chunked", "/rel/x", "/moved", "/found", "/text", "/teapot",
        ],
        &[],
    );
    assert!(
        s[0].answer.contains(&"x-lower-Case: a".to_string()),
        "{:?}",
        s[0].answer
    );
    // HTTP/1.0 clients (a chunked answer goes to them until close, unframed), HEAD, and
    // `return` to a request with no Host.
    for raw in [
        "GET /chunked HTTP/1.0\\r\\nHost: a\\r\\n\\r\\n",
        "GET /a HTTP/1.0\\r\\nHost: a\\r\\n\\r\\n",
        "HEAD /a HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n",
        "GET /text HTTP/1.0\\r\\n\\r\\n",
    ] {
        let n = seen(p.lab.request_raw_full(&p.host, NGINX, raw).unwrap());
        let f = seen(p.lab.request_raw_full(&p.host, FULCRUM, raw).unwrap());
        assert_eq!(n, f, "{raw}: nginx left, fulcrum right");
    }
}

#[test]
fn malformed_smuggling_and_oversized_requests_get_nginx_statuses() {
    if skip("malformed_smuggling_and_oversized_requests_get_nginx_statuses") {
        return;
    }
    let http = "    upstream u {\n        server 127.0.0.1:9001;\n    }\n    server {\n        LISTEN\n        client_max_body_size 1k;\n        location / {\n            proxy_pass http://u;\n        }\n    }";
    let p = Pair::start("l7bad", http, &[("b1", 9001, &[])]);
    let big = "a".repeat(9000);
    let many: String = (0..40)
        .map(|i| format!("X-H{i}: {}\\r\\n", "b".repeat(1000)))
        .collect();
    let cases = [
        ("both lengths", "POST / HTTP/1.1\\r\\nHost: a\\r\\nContent-Length: 3\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\n".to_string()),
        ("unknown coding", "POST / HTTP/1.1\\r\\nHost: a\\r\\nTransfer-Encoding: gzip\\r\\n\\r\\n".to_string()),
        ("coding before chunked", "POST / HTTP/1.1\\r\\nHost: a\\r\\nTransfer-Encoding: gzip, chunked\\r\\n\\r\\n0\\r\\n\\r\\n".to_string()),
        ("chunked body", "POST / HTTP/1.1\\r\\nHost: a\\r\\nTransfer-Encoding: chunked\\r\\nConnection: close\\r\\n\\r\\n3\\r\\nabc\\r\\n0\\r\\n\\r\\n".to_string()),
        ("no Host in HTTP/1.1", "GET / HTTP/1.1\\r\\n\\r\\n".to_string()),
        ("no Host in HTTP/1.0", "GET / HTTP/1.0\\r\\n\\r\\n".to_string()),
        ("bad length", "POST / HTTP/1.1\\r\\nHost: a\\r\\nContent-Length: abc\\r\\n\\r\\n".to_string()),
        ("two lengths", "POST / HTTP/1.1\\r\\nHost: a\\r\\nContent-Length: 1\\r\\nContent-Length: 2\\r\\n\\r\\nab".to_string()),
        ("header line over 8k", format!("GET / HTTP/1.1\\r\\nHost: a\\r\\nX-Big: {big}\\r\\n\\r\\n")),
        ("request line over 8k", format!("GET /{big} HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")),
        ("head over 32k", format!("GET / HTTP/1.1\\r\\nHost: a\\r\\n{many}\\r\\n")),
        ("body over client_max_body_size", "POST / HTTP/1.1\\r\\nHost: a\\r\\nContent-Length: 2000\\r\\n\\r\\n".to_string()),
        ("space in a header name", "GET / HTTP/1.1\\r\\nHost: a\\r\\nX Y: z\\r\\n\\r\\n".to_string()),
        ("obsolete line folding", "GET / HTTP/1.1\\r\\nHost: a\\r\\nX-A: b\\r\\n c\\r\\n\\r\\n".to_string()),
        ("above the root", "GET /../x HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n".to_string()),
    ];
    for (what, raw) in &cases {
        let n = seen(p.lab.request_raw_full(&p.host, NGINX, raw).unwrap());
        let f = seen(p.lab.request_raw_full(&p.host, FULCRUM, raw).unwrap());
        assert_eq!(n, f, "{what}: nginx left, fulcrum right");
        assert_ne!(n.status, 0, "{what}: no answer");
    }
}

#[test]
fn timeouts_slow_clients_and_backends_that_hang_or_cut_off() {
    if skip("timeouts_slow_clients_and_backends_that_hang_or_cut_off") {
        return;
    }
    let http = "    client_header_timeout 1s;\n    client_body_timeout 1s;\n    upstream u {\n        server 127.0.0.1:9001;\n        server 127.0.0.1:9002;\n    }\n    upstream one {\n        server 127.0.0.1:9001;\n    }\n    server {\n        LISTEN\n        location / {\n            proxy_pass http://u;\n            proxy_read_timeout 1s;\n            proxy_next_upstream off;\n        }\n        location = /cut {\n            proxy_pass http://one;\n        }\n        location /retry/ {\n            proxy_pass http://u/;\n            proxy_read_timeout 1s;\n        }\n    }";
    let hostile: &[&str] = &["--hang-path", "/hang", "--cut-path", "/cut"];
    let p = Pair::start(
        "l7slow",
        http,
        &[("b1", 9001, hostile), ("b2", 9002, hostile)],
    );
    // A backend that never answers: 504 after proxy_read_timeout. The timeout counts as a
    // failure (max_fails 1), so the next request, allowed to go on, finds b1 out and b2
    // hanging too: "no live upstreams", 502.
    let s = p.same(&["/hang", "/retry/hang"], &[]);
    assert_eq!((s[0].status, s[1].status), (504, 502), "{s:?}");
    // A backend that stops mid-body: the status and what came went out, then the
    // connection ends short.
    for addr in [NGINX, FULCRUM] {
        let r = p.lab.request(&p.host, addr, &["/cut"], &[]).unwrap();
        assert_eq!(r[0].0, 200, "{addr}");
        assert!(r[0].1.len() < 100_000, "{addr}: {} bytes", r[0].1.len());
    }
    // A client that stops sending its head, or its body.
    for (what, raw) in [
        ("head", "GET / HTTP/1.1\\r\\nHost: a\\r\\n"),
        (
            "body",
            "POST / HTTP/1.1\\r\\nHost: a\\r\\nContent-Length: 10\\r\\n\\r\\nabc",
        ),
    ] {
        let n = p.lab.request_raw(&p.host, NGINX, raw).unwrap().0;
        let f = p.lab.request_raw(&p.host, FULCRUM, raw).unwrap().0;
        assert_eq!(n, f, "slow {what}: nginx {n}, fulcrum {f}");
    }
}

/// A command's standard output in the pair's namespace.
fn run_in(p: &Pair, args: &[&str]) -> String {
    let out = p.lab.exec(&p.host.netns, args).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tls_termination_with_sni_and_http2() {
    if skip("tls_termination_with_sni_and_http2") || !installed("curl") || !installed("openssl") {
        return;
    }
    let dir = Scratch::new("l7tls");
    for name in ["a.test", "b.test"] {
        let ok = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            ])
            .arg(format!("/CN={name}"))
            .arg("-keyout")
            .arg(dir.0.join(format!("{name}.key")))
            .arg("-out")
            .arg(dir.0.join(format!("{name}.crt")))
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "openssl could not make a certificate");
    }
    // b.test's certificate is named relative to the configuration's directory, which
    // both nginx and fulcrum resolve it against (neither runs there).
    let http = "    upstream u {\n        server 127.0.0.1:9001;\n        server 127.0.0.1:9002;\n    }\n    server {\n        LISTEN\n        listen 127.0.0.1:SSLPORT ssl http2;\n        server_name a.test;\n        ssl_certificate DIR/a.test.crt;\n        ssl_certificate_key DIR/a.test.key;\n        location / {\n            proxy_pass http://u;\n            proxy_set_header X-Scheme $scheme;\n            proxy_set_header X-Host $host;\n        }\n        location /up/ {\n            proxy_pass https://127.0.0.1:SSLPORT/;\n            proxy_set_header Host b.test;\n        }\n    }\n    server {\n        listen 127.0.0.1:SSLPORT ssl;\n        server_name b.test;\n        ssl_certificate b.test.crt;\n        ssl_certificate_key b.test.key;\n        location / {\n            return 200 \"b $scheme $https\";\n        }\n    }";
    let p = Pair::start_in(dir, "l7tls", http, &[("b1", 9001, &[]), ("b2", 9002, &[])]);
    for (port, who) in [(NGINX_TLS, "nginx"), (FULCRUM_TLS, "fulcrum")] {
        let connect = format!("127.0.0.1:{port}");
        // The certificate follows SNI.
        for name in ["a.test", "b.test"] {
            let pem = run_in(
                &p,
                &[
                    "openssl",
                    "s_client",
                    "-connect",
                    &connect,
                    "-servername",
                    name,
                ],
            );
            let subject = std::process::Command::new("openssl")
                .args(["x509", "-noout", "-subject"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    c.stdin.take().unwrap().write_all(pem.as_bytes())?;
                    c.wait_with_output()
                })
                .unwrap();
            let subject = String::from_utf8_lossy(&subject.stdout).into_owned();
            assert!(subject.contains(name), "{who}: SNI {name} got {subject}");
        }
        // HTTP/2 by ALPN on a.test, HTTP/1.1 on b.test, both proxied or answered.
        let curl = |name: &str, version: &str| {
            run_in(
                &p,
                &[
                    "curl",
                    "-sk",
                    version,
                    "--resolve",
                    &format!("{name}:{port}:127.0.0.1"),
                    "-w",
                    "\n%{http_code} %{http_version}",
                    &format!("https://{name}:{port}/x"),
                ],
            )
        };
        let a = curl("a.test", "--http2");
        assert!(a.ends_with("200 2"), "{who}: {a}");
        let lower = a.to_ascii_lowercase();
        assert!(
            lower.contains("x-scheme: https") && lower.contains("x-host: a.test"),
            "{who}: {a}"
        );
        let b = curl("b.test", "--http1.1");
        assert!(
            b.starts_with("b https on") && b.ends_with("200 1.1"),
            "{who}: {b}"
        );
    }
    // An https upstream (here the proxy's own TLS server, by Host b.test).
    let s = p.same(&["/up/x"], &[]);
    assert_eq!(s[0].status, 200, "{s:?}");
    let body = p.lab.request(&p.host, FULCRUM, &["/up/x"], &[]).unwrap();
    assert_eq!(body[0].1.trim_end(), "b https on");
}

/// `random` and `random two` cannot be compared request by request: they are compared by
/// the split they give, which must follow the weights on both.
#[test]
fn random_methods_split_by_weight_on_both() {
    if skip("random_methods_split_by_weight_on_both") {
        return;
    }
    let http = "    upstream r {\n        random;\n        server 127.0.0.1:9001 weight=3;\n        server 127.0.0.1:9002;\n    }\n    upstream r2 {\n        random two least_conn;\n        server 127.0.0.1:9001 weight=3;\n        server 127.0.0.1:9002;\n        server 127.0.0.1:9003 down;\n    }\n    server {\n        LISTEN\n        location /r/ { proxy_pass http://r; }\n        location /r2/ { proxy_pass http://r2; }\n    }";
    let p = Pair::start(
        "l7rand",
        http,
        &[("b1", 9001, &[]), ("b2", 9002, &[]), ("b3", 9003, &[])],
    );
    for path in ["/r/x", "/r2/x"] {
        for addr in [NGINX, FULCRUM] {
            let answers = p.lab.request(&p.host, addr, &[path; 400], &[]).unwrap();
            let count = |b: &str| {
                answers
                    .iter()
                    .filter(|(_, body)| body.starts_with(b))
                    .count()
            };
            let (b1, b2, b3) = (count("b1\n"), count("b2\n"), count("b3\n"));
            assert_eq!(b1 + b2, 400, "{addr} {path}: {b1} {b2} {b3}");
            assert_eq!(b3, 0, "{addr} {path}: down is never chosen");
            // random: 3:1 by weight. random two: sequential requests tie on least_conn,
            // and nginx then takes the second draw, which must differ from the first:
            // with two usable peers that is the one *not* drawn first, so 1:3.
            let heavy = if path == "/r/x" { b1 } else { b2 };
            assert!(
                (255..=345).contains(&heavy),
                "{addr} {path}: {b1} to b1, {b2} to b2"
            );
        }
    }
}

/// The access log in nginx's `combined` format and in a `log_format` of the http block:
/// the same lines as nginx's, the time aside.
#[test]
fn access_log_lines_match_nginx() {
    if skip("access_log_lines_match_nginx") {
        return;
    }
    let http = "    log_format main '$remote_addr \"$request\" $status $body_bytes_sent \"$http_user_agent\" $request_method $uri $args $host';\n    log_format up '$upstream_addr|$upstream_status|$upstream_bytes_sent|$upstream_bytes_received|$upstream_response_length|$upstream_cache_status|$remote_user|$upstream_connect_time|$upstream_header_time|$upstream_response_time|$upstream_http_x_up|$upstream_cookie_sid|$upstream_http_x_none|$cookie_lang|$cookie_none';\n    upstream u {\n        server 127.0.0.1:9001;\n    }\n    upstream two {\n        server 127.0.0.1:9009;\n        server 127.0.0.1:9001;\n    }\n    server {\n        LISTEN\n        access_log DIR/ACCESS-combined.log;\n        location / {\n            proxy_pass http://u;\n        }\n        location /main/ {\n            proxy_pass http://u;\n            access_log DIR/ACCESS-main.log main;\n        }\n        location /up/ {\n            proxy_pass http://two;\n            access_log DIR/ACCESS-up.log up;\n        }\n        location = /gone {\n            return 404 \"gone\\n\";\n        }\n    }";
    // One file per proxy: ACCESS is nginx or fulcrum.
    let dir = Scratch::new("l7log");
    let p = Pair::start_in_split(
        dir,
        "l7log",
        &http.replace("ACCESS", "nginx"),
        &http.replace("ACCESS", "fulcrum"),
        &[(
            "b1",
            9001,
            &[
                "--answer-header",
                "X-Up: one",
                "--answer-header",
                "Set-Cookie: theme=dark",
                "--answer-header",
                "Set-Cookie: SID=s3cr3t; Path=/; HttpOnly",
            ],
        )],
    );
    let paths = ["/a?x=1", "/main/b%20c?y=2", "/gone", "/up/1", "/up/2"];
    p.same(
        &paths,
        &[
            "--header",
            "User-Agent: lab-agent",
            "--header",
            "Cookie: a=1; LANG=fr",
        ],
    );
    // alice:secret, for $remote_user.
    p.same(
        &["/up/3"],
        &["--header", "Authorization: Basic YWxpY2U6c2VjcmV0"],
    );
    // nginx writes its log line after the response; give both a moment.
    std::thread::sleep(Duration::from_millis(300));
    // Times are not compared, only whether there is one ("T") or not ("-").
    let times = |l: &str| -> String {
        l.split(['|', ',', ' ', ':'])
            .map(|t| {
                let timed = t.len() > 4
                    && t.as_bytes()[t.len() - 4] == b'.'
                    && t.matches('.').count() == 1
                    && t.bytes().all(|c| c.is_ascii_digit() || c == b'.');
                if timed {
                    "T".to_string()
                } else {
                    t.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("_")
    };
    for log in ["combined", "main", "up"] {
        let read = |who: &str| {
            std::fs::read_to_string(p._dir.0.join(format!("{who}-{log}.log")))
                .unwrap_or_default()
                .lines()
                // The time is not compared.
                .map(|l| match (l.find('['), l.find(']')) {
                    (Some(a), Some(b)) if b > a => format!("{}{}", &l[..a], &l[b + 1..]),
                    _ if log == "up" => times(l),
                    _ => l.to_string(),
                })
                .collect::<Vec<_>>()
        };
        let (n, f) = (read("nginx"), read("fulcrum"));
        assert!(!n.is_empty(), "nginx wrote no {log} log");
        if log == "up" {
            // The dead peer first, then the live one; then the live one alone.
            assert_eq!(
                n[0],
                "127.0.0.1_9009__127.0.0.1_9001_502__200_0__97_0__254_0__93_-_-_-__T_-__T_T__T_one_s3cr3t_-_fr_-",
                "{n:?}"
            );
        }
        assert_eq!(n, f, "{log} log: nginx left, fulcrum right");
    }
}

#[test]
fn error_log_lines_match_nginx() {
    if skip("error_log_lines_match_nginx") {
        return;
    }
    // 9009 has nothing listening: its connect fails, and with max_fails=1 it is disabled.
    let http = "    upstream u {\n        server 127.0.0.1:9001 max_fails=1;\n        server 127.0.0.1:9009 max_fails=1;\n    }\n    server {\n        LISTEN\n        error_log DIR/ERROR-error.log warn;\n        location / {\n            proxy_pass http://u;\n        }\n    }";
    let dir = Scratch::new("l7err");
    let p = Pair::start_in_split(
        dir,
        "l7err",
        &http.replace("ERROR", "nginx"),
        &http.replace("ERROR", "fulcrum"),
        &[("b1", 9001, &[])],
    );
    p.same(&["/a", "/b?x=1", "/c"], &[]);
    std::thread::sleep(Duration::from_millis(300));
    let read = |who: &str, port: &str| {
        std::fs::read_to_string(p._dir.0.join(format!("{who}-error.log")))
            .unwrap_or_default()
            .lines()
            // The level and the message: the time, pid and connection number are not
            // compared, nor the port each proxy listens on (in Host).
            .filter_map(|l| {
                let level = &l[l.find('[')?..=l.find(']')?];
                let (_, rest) = l.split_once(" *")?;
                let (_, message) = rest.split_once(' ')?;
                Some(format!("{level} {}", message.replace(port, "PORT")))
            })
            .collect::<Vec<_>>()
    };
    let port = |a: &str| a.rsplit(':').next().unwrap_or_default().to_string();
    let (n, f) = (read("nginx", &port(NGINX)), read("fulcrum", &port(FULCRUM)));
    assert!(
        n.iter().any(|l| l.contains("connect() failed")),
        "nginx logged no connect() failure: {n:?}"
    );
    assert_eq!(n, f, "error log: nginx left, fulcrum right");
}

#[test]
fn keepalive_timeout_header_timeout_and_keepalive_requests_match_nginx() {
    if skip("keepalive_timeout_header_timeout_and_keepalive_requests_match_nginx") {
        return;
    }
    let http = "    client_header_timeout 3s;\n    keepalive_timeout 1s;\n    keepalive_requests 2;\n    server {\n        LISTEN\n        location / {\n            return 200 \"ok\\n\";\n        }\n    }";
    let p = Pair::start("l7ka", http, &[("b1", 9001, &[])]);
    // (requests made on one connection, then how long it stays open): answered, and the
    // range the close must come in, in ms.
    let cases: [(&str, u64, (u64, u64)); 3] = [
        // Idle after a response: keepalive_timeout.
        ("1", 1, (700, 2_500)),
        // Nothing sent at all: client_header_timeout, not keepalive_timeout.
        ("0", 0, (2_500, 4_500)),
        // keepalive_requests: the second answer closes the connection.
        ("3", 2, (0, 500)),
    ];
    for (requests, answered, (low, high)) in cases {
        for addr in [NGINX, FULCRUM] {
            let out = p
                .lab
                .run_agent(
                    &p.host,
                    &[
                        "linger",
                        "--connect",
                        addr,
                        "--requests",
                        requests,
                        "--for-ms",
                        "6000",
                    ],
                )
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let words: Vec<&str> = text.split_whitespace().collect();
            let (got, after) = match words[..] {
                ["answered", n, "closed", "after", ms] => {
                    (n.parse().unwrap_or(99), ms.parse().unwrap_or(0))
                }
                _ => panic!("{addr}, {requests} requests: {text}"),
            };
            assert_eq!(got, answered, "{addr}, {requests} requests: {text}");
            assert!(
                (low..=high).contains(&after),
                "{addr}, {requests} requests: closed after {after} ms, not within {low}..{high}"
            );
        }
    }
}

#[test]
fn rewrite_if_set_and_return_match_nginx() {
    if skip("rewrite_if_set_and_return_match_nginx") {
        return;
    }
    let http = r#"    upstream u {
        server 127.0.0.1:9001;
    }
    server {
        LISTEN
        rewrite ^/old/(.*)$ /new/$1 permanent;
        rewrite ^/moved$ http://example.com/elsewhere;
        rewrite ^/srv-last/(.*)$ /chain/$1 last;
        set $tag "t-$arg_t";
        if ($http_x_block) {
            return 403;
        }
        location / {
            proxy_set_header X-Tag $tag;
            proxy_set_header X-Uri "$uri|$args";
            proxy_pass http://u;
        }
        location /chain/ {
            rewrite ^/chain/a/(.*)$ /chain/b/$1;
            rewrite ^/chain/b/(.*)$ /final/$1?x=1 last;
            return 404;
        }
        location /final/ {
            proxy_set_header X-Uri "$uri|$args|$1";
            proxy_pass http://u/base/;
        }
        location /brk/ {
            rewrite ^/brk/(.*)$ /inner/$1 break;
            proxy_pass http://u/ignored/;
        }
        location /noargs/ {
            rewrite ^ /plain? last;
        }
        location = /plain {
            proxy_pass http://u;
        }
        location /loop/ {
            rewrite ^ /loop/x last;
        }
        location /cond/ {
            if ($arg_mode = "teapot") {
                return 418;
            }
            if ($arg_mode ~* "^RED(.*)$") {
                return 302 /target/$1;
            }
            if ($request_uri !~ "q=") {
                set $note none;
            }
            if (-d /tmp) {
                set $dir yes;
            }
            if (!-f /nonexistent) {
                set $nofile yes;
            }
            proxy_set_header X-Note "$note|$dir|$nofile";
            proxy_pass http://u;
        }
        location ~ ^/re/(\w+)/(\d+)$ {
            proxy_pass http://u/re-$1/$2;
        }
        location /ret/ {
            return 200 "uri=$uri args=$args\n";
        }
        location /iftarget/ {
            if ($arg_alt) {
                proxy_pass http://127.0.0.1:9002;
            }
            proxy_pass http://u;
        }
        location /redir-args/ {
            rewrite ^/redir-args/(.*)$ /dest/$1 redirect;
        }
        location /esc/ {
            rewrite ^/esc/(.*)$ /echo/?v=$1 last;
        }
        location /brk2/ {
            rewrite ^/brk2/(.*)$ /b/$1;
            break;
            return 500;
        }
    }"#;
    let p = Pair::start("l7rw", http, &[("b1", 9001, &[]), ("b2", 9002, &[])]);
    let s = p.same(
        &[
            "/old/a/b?x=1",
            "/moved",
            "/srv-last/a/z?k=v",
            "/chain/a/z",
            "/chain/other",
            "/brk/x/y?q=1",
            "/noargs/?a=b",
            "/loop/",
            "/cond/?mode=teapot",
            "/cond/?mode=redXYZ",
            "/cond/plain",
            "/cond/?q=1",
            "/re/abc/42?z=1",
            "/ret/a?b=c",
            "/iftarget/x?alt=1",
            "/iftarget/x",
            "/redir-args/p?x=1",
            "/esc/a%20b+c",
            "/brk2/z?y=2",
            "/plain?t=7",
        ],
        &[],
    );
    let status: Vec<u16> = s.iter().map(|x| x.status).collect();
    assert_eq!(
        status,
        [
            301, 302, 200, 200, 404, 200, 200, 500, 418, 302, 200, 200, 200, 200, 200, 200, 302,
            200, 404, 200
        ],
        "{s:#?}"
    );
    assert_eq!(
        s[14].backend, "b2",
        "if in a location proxies where it says"
    );
    assert!(
        s[2].head
            .iter()
            .any(|l| l.starts_with("GET /base/z?x=1&k=v ")),
        "{:?}",
        s[2].head
    );
    // The server-level if.
    let blocked = p.same(&["/anything"], &["--header", "X-Block: 1"]);
    assert_eq!(blocked[0].status, 403);
}

#[test]
fn headers_realip_and_access_match_nginx() {
    if skip("headers_realip_and_access_match_nginx") {
        return;
    }
    let http = r#"    upstream u {
        server 127.0.0.1:9001;
    }
    add_header X-Http http always;
    server {
        LISTEN
        set_real_ip_from 127.0.0.0/8;
        set_real_ip_from 10.0.0.0/8;
        real_ip_header X-Forwarded-For;
        real_ip_recursive on;
        location / {
            proxy_set_header X-Client "$remote_addr|$realip_remote_addr";
            proxy_pass http://u;
        }
        location /hdr/ {
            add_header X-One 1;
            add_header X-Always yes always;
            add_header X-Empty "";
            add_header X-Var "$uri";
            add_header Cache-Control "no-store";
            add_header ETag '"fixed"';
            proxy_pass http://u;
        }
        location /exp/ {
            expires 1h;
            proxy_pass http://u;
        }
        location /epoch/ {
            expires epoch;
            proxy_pass http://u;
        }
        location /max/ {
            expires max;
            return 200 "max\n";
        }
        location /neg/ {
            expires -1;
            return 200 "neg\n";
        }
        location /zero/ {
            expires 0;
            return 200 "zero\n";
        }
        location /missing/ {
            add_header X-Only-Always 1 always;
            add_header X-Never 1;
            return 404;
        }
        location /redirect/ {
            add_header X-Redirect 1;
            return 301 /elsewhere;
        }
        location /admin/ {
            allow 192.0.2.0/24;
            deny all;
            proxy_pass http://u;
        }
        location /office/ {
            deny 198.51.100.7;
            allow 198.51.100.0/24;
            deny all;
            proxy_pass http://u;
        }
        location /gotcha/ {
            # return runs in the rewrite phase, before access: nginx answers it anyway.
            deny all;
            return 200 "gotcha\n";
        }
    }"#;
    let b1: &[&str] = &[
        "--answer-header",
        "Cache-Control: private",
        "--answer-header",
        "Expires: 0",
        "--answer-header",
        "ETag: \"upstream\"",
    ];
    let p = Pair::start("l7hdrs", http, &[("b1", 9001, b1)]);
    let paths = [
        "/",
        "/hdr/x",
        "/exp/x",
        "/epoch/x",
        "/max/",
        "/neg/",
        "/zero/",
        "/missing/",
        "/redirect/",
        "/admin/",
        "/office/",
        "/gotcha/",
    ];
    // No X-Forwarded-For: the connection's own address (127.0.0.1).
    let s = p.same(&paths, &[]);
    assert_eq!(
        (s[9].status, s[10].status, s[11].status),
        (403, 403, 200),
        "{s:?}"
    );
    let has = |i: usize, line: &str| s[i].answer.iter().any(|l| l == line);
    // add_header after the upstream's lines, ETag replaced where it stood, an empty value
    // not sent; an inner add_header replaces the http level's.
    assert!(has(1, "X-One: 1") && has(1, "ETag: \"fixed\"") && !has(1, "X-Http: http"));
    // expires rewrites the upstream's Expires and Cache-Control in place.
    assert!(has(2, "Expires: Date+3600") && has(2, "Cache-Control: max-age=3600"));
    // Not a safe status: only `always`.
    assert!(has(7, "X-Only-Always: 1") && !has(7, "X-Never: 1"));
    // Through a trusted balancer: the client is the leftmost untrusted address.
    for (xff, admin, office) in [
        ("203.0.113.5, 10.1.2.3", 403, 403),
        ("192.0.2.10", 200, 403),
        ("198.51.100.7, 10.0.0.1", 403, 403),
        ("198.51.100.8", 403, 200),
        ("junk", 403, 403),
    ] {
        let h = format!("X-Forwarded-For: {xff}");
        let s = p.same(&["/", "/admin/", "/office/"], &["--header", &h]);
        assert_eq!((s[1].status, s[2].status), (admin, office), "{xff}");
    }
}

#[test]
fn static_files_index_try_files_and_error_page_match_nginx() {
    if skip("static_files_index_try_files_and_error_page_match_nginx") {
        return;
    }
    let dir = Scratch::new("l7static");
    let www = dir.0.join("www");
    std::fs::create_dir_all(www.join("sub")).unwrap();
    write_files(
        &www,
        &[
            ("index.html", "<p>home</p>\n"),
            ("a.txt", "0123456789abcdef\n"),
            ("style.css", "body { margin: 0 }\n"),
            ("data.bin", "\u{1}\u{2}\u{3}"),
            ("404.html", "<p>not here</p>\n"),
            ("50x.html", "<p>we are down</p>\n"),
            ("sub/index.htm", "<p>sub</p>\n"),
        ],
    );
    let http = r#"    types {
        text/html html htm;
        text/css css;
        text/plain txt;
    }
    default_type application/octet-stream;
    upstream u {
        server 127.0.0.1:9001;
    }
    server {
        LISTEN
        root DIR/www;
        index index.html index.htm;
        error_page 404 /404.html;
        error_page 500 502 503 504 /50x.html;
        location / {
            try_files $uri $uri/ =404;
        }
        location /app/ {
            try_files $uri @backend;
        }
        location @backend {
            proxy_pass http://u;
        }
        location /down/ {
            proxy_pass http://127.0.0.1:9009;
        }
        location /maint/ {
            if (-f DIR/maintenance) {
                return 503;
            }
            proxy_pass http://u;
        }
        location = /404.html {
            internal;
        }
        location /alias/ {
            alias DIR/www/sub/;
        }
        location /fallback/ {
            try_files $uri /a.txt?from=fallback;
        }
        location /code/ {
            error_page 404 =200 /a.txt;
        }
        location /ext/ {
            error_page 404 http://example.com/missing;
        }
        location /named/ {
            error_page 404 = @backend;
        }
        location /plain/ {
            add_header X-Static yes;
            etag off;
        }
    }"#;
    std::fs::create_dir_all(www.join("plain")).unwrap();
    std::fs::write(www.join("plain/p.txt"), "plain\n").unwrap();
    let p = Pair::start_in(dir, "l7static", http, &[("b1", 9001, &[])]);
    let s = p.same(
        &[
            "/",
            "/a.txt",
            "/style.css",
            "/data.bin",
            "/sub",
            "/sub?x=1",
            "/sub/",
            "/missing",
            "/404.html",
            "/app/x?q=1",
            "/down/",
            "/maint/",
            "/alias/",
            "/fallback/nope?x=1",
            "/code/x",
            "/ext/x",
            "/named/x",
            "/plain/p.txt",
            "/../etc/passwd",
        ],
        &[],
    );
    let status: Vec<u16> = s.iter().map(|x| x.status).collect();
    assert_eq!(
        status,
        [
            200, 200, 200, 200, 301, 301, 200, 404, 404, 200, 502, 200, 200, 200, 200, 302, 200,
            200, 400
        ],
        "{s:#?}"
    );
    // The maintenance switch: with the file there, 503 and the /50x.html page.
    std::fs::write(p._dir.0.join("maintenance"), "").unwrap();
    let s = p.same(&["/maint/"], &[]);
    assert_eq!(s[0].status, 503, "{s:?}");
    assert_eq!(s[0].head, ["<p>we are down</p>\n"], "{s:?}");
    // Conditional and range requests, HEAD and POST.
    let etag = format!("\"{:x}-{:x}\"", 1_704_067_200, 17);
    for extra in [
        vec![
            "--header",
            "If-Modified-Since: Mon, 01 Jan 2024 00:00:00 GMT",
        ],
        vec![
            "--header",
            "If-Modified-Since: Tue, 02 Jan 2024 00:00:00 GMT",
        ],
        vec!["--header", &format!("If-None-Match: {etag}")],
        vec!["--header", "If-None-Match: \"other\""],
        vec!["--header", "If-Match: \"other\""],
        vec![
            "--header",
            "If-Unmodified-Since: Sun, 31 Dec 2023 00:00:00 GMT",
        ],
        vec!["--header", "Range: bytes=0-3"],
        vec!["--header", "Range: bytes=-5"],
        vec!["--header", "Range: bytes=100-"],
        // The 416 page, padded for MSIE as nginx pads its pages.
        vec![
            "--header",
            "Range: bytes=100-",
            "--header",
            "User-Agent: Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 6.1)",
        ],
        vec!["--header", "Range: bytes=x"],
        vec![
            "--header",
            "Range: bytes=2-4",
            "--header",
            &format!("If-Range: {etag}"),
        ],
        vec![
            "--header",
            "Range: bytes=2-4",
            "--header",
            "If-Range: \"old\"",
        ],
        vec!["--method", "HEAD"],
        vec!["--method", "POST", "--body", "x=1"],
    ] {
        p.same(&["/a.txt", "/plain/p.txt"], &extra);
    }
    // Several ranges: the parts agree, their boundary is each server's own.
    for addr in [NGINX, FULCRUM] {
        let r = p
            .lab
            .request_full(
                &p.host,
                addr,
                &["/a.txt"],
                &["--header", "Range: bytes=0-1,4-5"],
            )
            .unwrap();
        assert_eq!(r[0].0, 206, "{addr}");
        assert!(
            r[0].1.contains("multipart/byteranges; boundary="),
            "{addr}: {}",
            r[0].1
        );
        assert!(
            r[0].2.contains("Content-Range: bytes 0-1/17\r\n\r\n01"),
            "{addr}: {:?}",
            r[0].2
        );
        assert!(
            r[0].2.contains("Content-Range: bytes 4-5/17\r\n\r\n45"),
            "{addr}: {:?}",
            r[0].2
        );
    }
}

#[test]
fn gzip_matches_nginx() {
    if skip("gzip_matches_nginx") {
        return;
    }
    let dir = Scratch::new("l7gzip");
    let www = dir.0.join("www");
    std::fs::create_dir_all(www.join("files")).unwrap();
    let page: String = (0..400)
        .map(|i| format!("<p>paragraph {i}</p>\n"))
        .collect();
    write_files(
        &www,
        &[
            ("files/page.html", page.as_str()),
            ("files/note.txt", "short\n"),
        ],
    );
    let http = r#"    upstream u {
        server 127.0.0.1:9001;
    }
    upstream pre {
        server 127.0.0.1:9002;
    }
    upstream cc {
        server 127.0.0.1:9003;
    }
    upstream exp {
        server 127.0.0.1:9004;
    }
    gzip on;
    gzip_types text/plain application/json;
    gzip_vary on;
    gzip_proxied private expired;
    gzip_disable "curl/7\." msie6;
    server {
        LISTEN
        root DIR/www;
        default_type text/plain;
        location / {
            proxy_pass http://u;
        }
        location /pre/ {
            proxy_pass http://pre;
        }
        location /cc/ {
            proxy_pass http://cc;
        }
        location /exp/ {
            proxy_pass http://exp;
        }
        location /off/ {
            gzip off;
            proxy_pass http://u;
        }
        location /tiny/ {
            return 200 "tiny";
        }
        location /long/ {
            return 200 "a text long enough to be compressed, longer than twenty bytes\n";
        }
        location /json/ {
            default_type application/json;
            return 200 '{"a": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}';
        }
        location /bin/ {
            default_type application/octet-stream;
            return 200 "cccccccccccccccccccccccccccccccccccccccccccccc";
        }
        location /missing/ {
            return 404;
        }
        location /files/ {
        }
        location /best/ {
            gzip_comp_level 9;
            return 200 "a text long enough to be compressed, at zlib's best level of all\n";
        }
        location /http10/ {
            gzip_http_version 1.0;
            return 200 "a text long enough to be compressed, longer than twenty bytes\n";
        }
        location /novary/ {
            gzip_vary off;
            gzip_min_length 1k;
            gzip_comp_level 9;
            proxy_pass http://u;
        }
        location /any/ {
            gzip_types *;
            default_type application/octet-stream;
            return 200 "dddddddddddddddddddddddddddddddddddddddddddddd";
        }
    }"#;
    let pre: &[&str] = &["--answer-header", "Content-Encoding: br"];
    let cc: &[&str] = &[
        "--answer-header",
        "Cache-Control: private",
        "--answer-header",
        "ETag: \"v1\"",
    ];
    let exp: &[&str] = &["--answer-header", "Expires: Thu, 01 Jan 1970 00:00:01 GMT"];
    let p = Pair::start_in(
        dir,
        "l7gzip",
        http,
        &[
            ("b1", 9001, &[]),
            ("b2", 9002, pre),
            ("b3", 9003, cc),
            ("b4", 9004, exp),
        ],
    );
    let paths = [
        "/",
        "/pre/",
        "/cc/",
        "/exp/",
        "/off/",
        "/tiny/",
        "/long/",
        "/json/",
        "/bin/",
        "/missing/",
        "/files/page.html",
        "/files/note.txt",
        "/files/none.html",
        "/http10/",
        "/novary/",
        "/any/",
    ];
    let gzipped = |s: &Seen| s.answer.iter().any(|l| l == "Content-Encoding: gzip");
    // No Accept-Encoding: nothing compressed, Vary where gzip would have.
    let s = p.same(&paths, &["--decode"]);
    assert!(!s.iter().any(gzipped), "{s:?}");
    assert!(
        s[6].answer.iter().any(|l| l == "Vary: Accept-Encoding"),
        "{:?}",
        s[6]
    );
    for ae in [
        "gzip, deflate, br",
        "deflate, gzip;q=0.5",
        "gzip;q=0",
        "x-gzip",
        "GZIP",
    ] {
        let h = format!("Accept-Encoding: {ae}");
        let s = p.same(&paths, &["--decode", "--header", &h]);
        let expect = !matches!(ae, "gzip;q=0" | "x-gzip");
        // Proxied text, the long text, the JSON, error pages and a large file are; what
        // is short, already encoded, off, or of another type is not.
        for i in [0, 2, 3, 6, 7, 9, 10, 12, 13, 15] {
            assert_eq!(gzipped(&s[i]), expect, "{ae}: {} {:?}", paths[i], s[i]);
        }
        for i in [1, 4, 5, 8, 11, 14] {
            assert!(!gzipped(&s[i]), "{ae}: {} {:?}", paths[i], s[i]);
        }
    }
    let gz = "Accept-Encoding: gzip";
    // The compressed bytes are nginx's own (the system's zlib, with nginx's window and
    // memory level for the length): a file, nginx's own answers, a buffered upstream's.
    let exact = [
        "/files/page.html",
        "/long/",
        "/json/",
        "/any/",
        "/best/",
        "/",
    ];
    let s = p.same(&exact, &["--decode", "--gzip-hex", "--header", gz]);
    assert!(s.iter().all(gzipped), "{s:?}");
    assert!(
        s[0].head[0].starts_with("1f8b0800000000000403"),
        "{:?}",
        s[0]
    );
    let s = p.same(
        &exact,
        &[
            "--decode",
            "--gzip-hex",
            "--header",
            gz,
            "--header",
            "X-Long: 1",
        ],
    );
    assert!(s.iter().all(gzipped), "{s:?}");
    // Through a proxy (Via): gzip_proxied decides by the answer's headers.
    let s = p.same(
        &paths,
        &["--decode", "--header", gz, "--header", "Via: 1.1 cache"],
    );
    assert!(
        gzipped(&s[2]) && gzipped(&s[3]),
        "private and expired: {s:?}"
    );
    // gzip_disable by User-Agent; HEAD; a Range on a file gzip takes whole.
    for extra in [
        &["--header", "User-Agent: curl/7.88.1"][..],
        &[
            "--header",
            "User-Agent: Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)",
        ],
        &[
            "--header",
            "User-Agent: Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; SV1)",
        ],
        &["--method", "HEAD"],
        &["--header", "Range: bytes=0-9"],
        &["--header", "If-None-Match: W/\"6592008c-1dd8\""],
    ] {
        let mut args = vec!["--decode", "--header", gz];
        args.extend_from_slice(extra);
        p.same(&paths, &args);
    }
    // HTTP/1.0: only where gzip_http_version 1.0 allows it (and the connection closes).
    for path in ["/long/", "/http10/"] {
        let raw = format!("GET {path} HTTP/1.0\\r\\nAccept-Encoding: gzip\\r\\n\\r\\n");
        let args = ["--raw", raw.as_str(), "--decode"];
        let n = p.lab.request_full(&p.host, NGINX, &[], &args).unwrap();
        let f = p.lab.request_full(&p.host, FULCRUM, &[], &args).unwrap();
        let (n, f) = (seen_as(n[0].clone(), true), seen_as(f[0].clone(), true));
        assert_eq!(n, f, "HTTP/1.0 {path}: nginx left, fulcrum right");
        assert_eq!(gzipped(&n), path == "/http10/", "{n:?}");
    }
}

#[test]
fn auth_basic_and_satisfy_match_nginx() {
    if skip("auth_basic_and_satisfy_match_nginx") {
        return;
    }
    use base64::Engine as _;
    let dir = Scratch::new("l7auth");
    // Every scheme nginx reads (openssl passwd and htpasswd make these), each "secret".
    let bcrypt = bcrypt::hash("secret", 4).unwrap();
    let users = [
        ("alice", "$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/"),
        ("bob", "$1$xyz$Qia9Wq6FxQkYcwNWMk/RM0"),
        ("carol", "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA"),
        ("dave", "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1"),
        ("erin", "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="),
        ("frank", "{SSHA}+rvziNkZ1S+q3I9Y4L7TlBR47kZOYUNsMTIzNA=="),
        ("gina", bcrypt.as_str()),
        ("hank", "{PLAIN}secret"),
        // DES (htpasswd -d) and yescrypt (Debian's default), made by the system's crypt.
        ("ivan", "abNANd1rDfiNc"),
        ("judy", "$y$j9T$abcdefghijklmnopqrstu.$7uryFExhLbAhrpK1WytVzeNObCUVaK3VoKccP3fJEIB"),
        // A scheme no one knows: refused alike.
        ("kim", "$9$nothing$here"),
    ];
    let mut file = String::from("# the team\n");
    for (u, h) in users {
        file.push_str(&format!("{u}:{h}:a comment\n"));
    }
    std::fs::write(dir.0.join("htpasswd"), file).unwrap();
    let http = r#"    upstream u {
        server 127.0.0.1:9001;
    }
    proxy_set_header X-User "$remote_user";
    server {
        LISTEN
        auth_basic "Restricted Area";
        auth_basic_user_file DIR/htpasswd;
        location / {
            proxy_pass http://u;
        }
        location /open/ {
            auth_basic off;
            proxy_pass http://u;
        }
        location /nofile/ {
            auth_basic_user_file DIR/missing;
            proxy_pass http://u;
        }
        location /early/ {
            # return runs in the rewrite phase, before access and auth.
            return 200 "early\n";
        }
        location /any/ {
            satisfy any;
            allow 10.0.0.0/8;
            deny all;
            proxy_pass http://u;
        }
        location /anyip/ {
            satisfy any;
            allow 127.0.0.1;
            deny all;
            proxy_pass http://u;
        }
        location /denied/ {
            deny all;
            proxy_pass http://u;
        }
        location /var/ {
            auth_basic $arg_realm;
            proxy_pass http://u;
        }
        location /always/ {
            add_header X-Always 1 always;
            proxy_pass http://u;
        }
    }"#;
    let p = Pair::start_in(dir, "l7auth", http, &[("b1", 9001, &[])]);
    let paths = [
        "/",
        "/open/",
        "/nofile/",
        "/early/",
        "/any/",
        "/anyip/",
        "/denied/",
        "/var/?realm=Zone",
        "/var/?realm=off",
        "/always/",
    ];
    let basic = |cred: &str| {
        format!(
            "Authorization: Basic {}",
            base64::engine::general_purpose::STANDARD.encode(cred)
        )
    };
    // No credentials: the challenge (or what comes first).
    let s = p.same(&paths, &[]);
    let statuses: Vec<u16> = s.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [401, 200, 401, 200, 401, 200, 403, 401, 200, 401]);
    assert!(s[0]
        .answer
        .iter()
        .any(|l| l == "WWW-Authenticate: Basic realm=\"Restricted Area\""));
    for (user, _) in users {
        if user == "kim" {
            let s = p.same(&paths, &["--header", &basic("kim:secret")]);
            assert_eq!(s[0].status, 401);
            continue;
        }
        let h = basic(&format!("{user}:secret"));
        let s = p.same(&paths, &["--header", &h]);
        assert_eq!(s[0].status, 200, "{user}: {:?}", s[0]);
        assert!(
            s[0].head.contains(&format!("X-User: {user}")),
            "{user}: {:?}",
            s[0]
        );
        let h = basic(&format!("{user}:wrong"));
        let s = p.same(&paths, &["--header", &h]);
        assert_eq!(s[0].status, 401, "{user}");
    }
    for h in [
        basic("nobody:secret"),
        basic(":secret"),
        basic("alice"),
        basic("alice:"),
        "Authorization: Basic !!!".to_string(),
        "Authorization: Bearer abc".to_string(),
        "Authorization: basic   YWxpY2U6c2VjcmV0".to_string(),
        "Authorization: Basic YWxpY2U6c2VjcmV0==junk".to_string(),
    ] {
        p.same(&paths, &["--header", &h]);
    }
    // The user file is read for each request: a change counts at once.
    std::fs::write(p._dir.0.join("htpasswd"), "alice:{PLAIN}changed\n").unwrap();
    let s = p.same(&["/"], &["--header", &basic("alice:changed")]);
    assert_eq!(s[0].status, 200);
}

#[test]
fn limit_req_and_limit_conn_match_nginx() {
    if skip("limit_req_and_limit_conn_match_nginx") {
        return;
    }
    let http = r#"    upstream u {
        server 127.0.0.1:9001;
    }
    limit_req_zone $binary_remote_addr zone=strict:1m rate=2r/s;
    limit_req_zone $binary_remote_addr zone=burst:1m rate=2r/s;
    limit_req_zone $binary_remote_addr zone=status:1m rate=2r/s;
    limit_req_zone $binary_remote_addr zone=dry:1m rate=2r/s;
    limit_req_zone $binary_remote_addr zone=delay:1m rate=5r/s;
    limit_req_zone $binary_remote_addr zone=split:1m rate=5r/s;
    limit_req_zone $uri zone=byuri:1m rate=30r/m;
    limit_req_zone $http_x_key zone=bykey:1m rate=1r/s;
    limit_conn_zone $binary_remote_addr zone=conns:1m;
    proxy_set_header X-Limit "$limit_req_status $limit_conn_status";
    server {
        LISTEN
        location /strict/ {
            limit_req zone=strict;
            proxy_pass http://u;
        }
        location /burst/ {
            limit_req zone=burst burst=3 nodelay;
            proxy_pass http://u;
        }
        location /status/ {
            limit_req zone=status burst=1 nodelay;
            limit_req_status 429;
            proxy_pass http://u;
        }
        location /dry/ {
            limit_req zone=dry;
            limit_req_dry_run on;
            proxy_pass http://u;
        }
        location /delay/ {
            limit_req zone=delay burst=3;
            proxy_pass http://u;
        }
        location /split/ {
            limit_req zone=split burst=4 delay=2;
            proxy_pass http://u;
        }
        location /two/ {
            limit_req zone=byuri burst=1 nodelay;
            limit_req zone=bykey nodelay;
            proxy_pass http://u;
        }
        location /early/ {
            limit_req zone=strict;
            return 200 "the rewrite phase comes first\n";
        }
        location /conn/ {
            limit_conn conns 1;
            limit_conn_status 429;
            proxy_read_timeout 1s;
            proxy_pass http://u;
        }
    }"#;
    let mut p = Pair::start(
        "l7limit",
        http,
        &[("b1", 9001, &["--echo", "--hang-path", "/conn/hang"])],
    );
    let statuses = |s: &[Seen]| s.iter().map(|s| s.status).collect::<Vec<_>>();
    // Requests back to back, each on its own connection, within a few milliseconds.
    let s = p.same(&["/strict/"; 4], &[]);
    assert_eq!(statuses(&s), [200, 503, 503, 503]);
    let s = p.same(&["/burst/"; 6], &[]);
    assert_eq!(statuses(&s), [200, 200, 200, 200, 503, 503]);
    let s = p.same(&["/status/"; 3], &[]);
    assert_eq!(statuses(&s), [200, 200, 429]);
    let s = p.same(&["/dry/"; 3], &[]);
    assert_eq!(statuses(&s), [200, 200, 200]);
    assert!(
        s[1].head.iter().any(|l| l == "X-Limit: REJECTED_DRY_RUN"),
        "{s:?}"
    );
    let s = p.same(&["/early/"; 2], &[]);
    assert_eq!(statuses(&s), [200, 200]);
    // Two limits: by URI (burst 1) and by a header's value; no header, no second limit.
    let s = p.same(&["/two/a", "/two/a", "/two/a", "/two/b"], &[]);
    assert_eq!(statuses(&s), [200, 200, 503, 200]);
    let s = p.same(&["/two/c", "/two/d"], &["--header", "X-Key: k"]);
    assert_eq!(statuses(&s), [200, 503]);
    // Waiting: at 5r/s with burst=3, the second request waits 200 ms, the third 200 ms
    // more (each is sent when the one before is answered), the fourth is in time.
    for addr in [NGINX, FULCRUM] {
        let t = std::time::Instant::now();
        let r = p.lab.request(&p.host, addr, &["/delay/"; 4], &[]).unwrap();
        let took = t.elapsed();
        assert!(r.iter().all(|(s, _)| *s == 200), "{addr}: {r:?}");
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_millis(1500),
            "{addr}: {took:?}"
        );
    }
    // delay=2: two beyond the rate go at once, the next ones wait; the same statuses.
    let s = p.same(&["/split/"; 6], &[]);
    assert_eq!(statuses(&s), [200; 6]);
    // A request in flight holds its place: a second one at the same time is refused.
    for addr in [NGINX, FULCRUM] {
        let _hanging = p.hold_request(addr, "/conn/hang");
        let r = p
            .lab
            .request_full(&p.host, addr, &["/conn/x"], &[])
            .unwrap();
        assert_eq!(r[0].0, 429, "{addr}: {r:?}");
        // Once it is answered (504 after proxy_read_timeout), the place is free again.
        std::thread::sleep(Duration::from_millis(1300));
        let r = p.lab.request(&p.host, addr, &["/conn/x"], &[]).unwrap();
        assert_eq!(r[0].0, 200, "{addr}: {r:?}");
    }
}

/// With two worker processes on each side, the shared zones are shared as nginx shares
/// them: one request a minute is admitted whichever worker takes it, a request in flight
/// holds its limit_conn place against every worker, and an upstream with `zone` balances
/// round robin as one across both workers. Both spread connections over two processes
/// (reuseport).
#[test]
fn shared_zones_across_worker_processes_match_nginx() {
    if skip("shared_zones_across_worker_processes_match_nginx") {
        return;
    }
    let http = r#"    upstream u {
        server 127.0.0.1:9001;
    }
    upstream both {
        zone both 64k;
        server 127.0.0.1:9001;
        server 127.0.0.1:9002;
    }
    limit_req_zone $binary_remote_addr zone=minute:1m rate=1r/m;
    limit_conn_zone $binary_remote_addr zone=conns:1m;
    server {
        listen LISTENADDR reuseport;
        location = /__ready {
            return 200 "ready";
        }
        location = /pid {
            return 200 "$pid\n";
        }
        location /minute/ {
            limit_req zone=minute;
            proxy_pass http://u;
        }
        location /conn/ {
            limit_conn conns 1;
            limit_conn_status 429;
            proxy_read_timeout 1s;
            proxy_pass http://u;
        }
        location /rr/ {
            proxy_pass http://both;
        }
    }"#;
    let mut p = Pair::start_main(
        Scratch::new("l7wlim"),
        "l7wlim",
        Some("user nobody nogroup;\nworker_processes 2;\n"),
        http,
        http,
        &[
            ("b1", 9001, &["--echo", "--hang-path", "/conn/hang"]),
            ("b2", 9002, &[]),
        ],
    );
    // One round robin across both workers: the backends alternate, on both.
    // 16 connections: all of them on one worker (where per-worker balancers would
    // alternate too) is a chance of 2 in 65,536.
    let s = p.same(&["/rr/"; 16], &[]);
    let order = backends(&s);
    assert!(
        order == "b1 b2 ".repeat(8).trim_end() || order == "b2 b1 ".repeat(8).trim_end(),
        "{order}"
    );
    for addr in [NGINX, FULCRUM] {
        let pids: std::collections::BTreeSet<String> = (0..16)
            .map(|_| {
                p.lab.request(&p.host, addr, &["/pid"], &[]).unwrap()[0]
                    .1
                    .clone()
            })
            .collect();
        assert_eq!(pids.len(), 2, "{addr}: two workers answer: {pids:?}");
    }
    let s = p.same(&["/minute/"; 24], &[]);
    let statuses: Vec<u16> = s.iter().map(|s| s.status).collect();
    assert_eq!(statuses[0], 200);
    assert_eq!(statuses[1..], [503; 23]);
    for addr in [NGINX, FULCRUM] {
        let _hanging = p.hold_request(addr, "/conn/hang");
        let r: Vec<u16> = (0..8)
            .map(|_| p.lab.request(&p.host, addr, &["/conn/x"], &[]).unwrap()[0].0)
            .collect();
        assert_eq!(r, [429; 8], "{addr}: the place is held in every worker");
        std::thread::sleep(Duration::from_millis(1300));
        let r = p.lab.request(&p.host, addr, &["/conn/x"], &[]).unwrap();
        assert_eq!(r[0].0, 200, "{addr}: {r:?}");
    }
}

#[test]
fn split_clients_and_geo_match_nginx() {
    if skip("split_clients_and_geo_match_nginx") {
        return;
    }
    let http = r#"    split_clients "${arg_id}salt" $variant {
        10%   one;
        25.5% two;
        50%   three;
        *     four;
    }
    split_clients "$arg_id" $half {
        50% a;
    }
    geo $zone {
        default none;
        127.0.0.0/8 local;
        10.0.0.0/8 ten;
    }
    geo $arg_ip $byarg {
        default d;
        192.0.2.0/24 test1;
        198.51.100.0/24 test2;
        198.51.100.7 host;
        10.0.0.0/8 ten;
        10.1.0.0/16 tenone;
        2001:db8::/32 doc;
        delete 10.1.0.0/16;
    }
    geo $proxied {
        default d;
        proxy 127.0.0.0/8;
        proxy 10.0.0.0/8;
        proxy_recursive;
        203.0.113.0/24 web;
        10.0.0.0/8 inner;
    }
    geo $arg_ip $ranged {
        ranges;
        default out;
        10.0.0.0-10.0.0.255 a;
        10.0.1.0-10.0.1.127 b;
        10.0.0.100-10.0.0.110 c;
    }
    server {
        LISTEN
        location / {
            return 200 "$variant|$half|$zone|$byarg|$proxied|$ranged\n";
        }
    }"#;
    let p = Pair::start("l7split", http, &[]);
    let ips = [
        "192.0.2.9",
        "198.51.100.7",
        "198.51.100.8",
        "10.1.2.3",
        "10.2.3.4",
        "2001:db8::5",
        "10.0.0.5",
        "10.0.0.105",
        "10.0.0.200",
        "10.0.1.100",
        "10.0.1.200",
        "junk",
    ];
    let paths: Vec<String> = (0..240)
        .map(|i| format!("/?id={i}&ip={}", ips[i % ips.len()]))
        .collect();
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    let s = p.same(&paths, &[]);
    // Every share of the split is taken, about as configured.
    let count = |v: &str| s.iter().filter(|s| s.head[0].starts_with(v)).count();
    assert!(
        count("one|") > 5 && count("two|") > 30 && count("three|") > 80,
        "{s:?}"
    );
    for xff in [
        "203.0.113.5",
        "203.0.113.5, 10.1.1.1",
        "198.51.100.1, 10.1.1.1",
        "junk",
    ] {
        let h = format!("X-Forwarded-For: {xff}");
        p.same(&paths[..12], &["--header", &h]);
    }
}

#[test]
fn stub_status_matches_nginx() {
    if skip("stub_status_matches_nginx") {
        return;
    }
    let http = r#"    upstream u {
        server 127.0.0.1:9001;
    }
    server {
        LISTEN
        location = /status {
            stub_status;
        }
        location = /private {
            stub_status;
            allow 192.0.2.1;
            deny all;
        }
        location /hang {
            proxy_read_timeout 2s;
            proxy_pass http://u;
        }
        location /vars {
            return 200 "$connections_active $connections_reading $connections_writing $connections_waiting\n";
        }
    }"#;
    let mut p = Pair::start("l7stub", http, &[("b1", 9001, &["--hang-path", "/hang"])]);
    // The counts differ by the requests each has served; the head and the shape do not.
    let page = |addr: &str, p: &Pair| {
        let r = p
            .lab
            .request_full(&p.host, addr, &["/status"], &[])
            .unwrap();
        let (status, head, body) = r[0].clone();
        (status, answer_head(&head, &body), body)
    };
    let numbers = |body: &str| -> Vec<u64> {
        body.split(|c: char| !c.is_ascii_digit())
            .filter(|w| !w.is_empty())
            .map(|w| w.parse().unwrap())
            .collect()
    };
    for addr in [NGINX, FULCRUM] {
        let (status, head, body) = page(addr, &p);
        assert_eq!(status, 200, "{addr}");
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines[0], "Active connections: 1 ", "{addr}: {body}");
        assert_eq!(lines[1], "server accepts handled requests", "{addr}");
        assert_eq!(lines[3], "Reading: 0 Writing: 1 Waiting: 0 ", "{addr}");
        let n = numbers(&body);
        assert_eq!(n[1], n[2], "{addr}: accepts = handled: {body}");
        // Three more requests, then the page again: three more connections and requests
        // (and this one).
        p.lab.request(&p.host, addr, &["/vars"; 3], &[]).unwrap();
        let (_, head2, body2) = page(addr, &p);
        let m = numbers(&body2);
        assert_eq!(
            (m[1] - n[1], m[3] - n[3]),
            (4, 4),
            "{addr}: {body} then {body2}"
        );
        assert_eq!(head, head2);
    }
    let n = page(NGINX, &p).1;
    let f = page(FULCRUM, &p).1;
    assert_eq!(
        n.iter()
            .filter(|l| !l.starts_with("Content-Length"))
            .collect::<Vec<_>>(),
        f.iter()
            .filter(|l| !l.starts_with("Content-Length"))
            .collect::<Vec<_>>()
    );
    // Other methods, HEAD, access rules, and the variables.
    let s = p.same(&["/private", "/vars"], &[]);
    assert_eq!(s[0].status, 403);
    assert_eq!(s[1].head, ["1 0 1 0\n"]);
    assert_eq!(p.same(&["/status"], &["--method", "POST"])[0].status, 405);
    for addr in [NGINX, FULCRUM] {
        let r = p
            .lab
            .request_full(&p.host, addr, &["/status"], &["--method", "HEAD"]);
        let (status, head, body) = r.unwrap()[0].clone();
        assert_eq!(status, 200);
        assert!(
            body.is_empty() && head.contains("Content-Length: 10"),
            "{addr}: {head}"
        );
    }
    // A request in flight is writing.
    for addr in [NGINX, FULCRUM] {
        let _hanging = p.hold_request(addr, "/hang");
        let body = page(addr, &p).2;
        assert!(body.contains("Writing: 2 "), "{addr}: {body}");
        assert!(body.starts_with("Active connections: 2 "), "{addr}: {body}");
    }
}

#[test]
fn proxy_headers_methods_accel_redirect_and_intercepted_errors_match_nginx() {
    if skip("proxy_headers_methods_accel_redirect_and_intercepted_errors_match_nginx") {
        return;
    }
    let dir = Scratch::new("l7pxh");
    let www = dir.0.join("www");
    std::fs::create_dir_all(www.join("files")).unwrap();
    write_files(
        &www,
        &[
            ("files/a.txt", "protected file\n"),
            ("nf.txt", "not found here\n"),
        ],
    );
    let http = r#"    upstream u {
        server 127.0.0.1:9001;
    }
    upstream accel {
        server 127.0.0.1:9002;
    }
    upstream named {
        server 127.0.0.1:9003;
    }
    upstream errs {
        server 127.0.0.1:9004;
    }
    upstream auth {
        server 127.0.0.1:9005;
    }
    server {
        LISTEN
        root DIR/www;
        location / {
            proxy_hide_header X-Powered-By;
            proxy_pass http://u;
        }
        location /pass/ {
            proxy_pass_header Server;
            proxy_pass_header X-Accel-Charset;
            proxy_pass http://u;
        }
        location /accel/ {
            proxy_pass http://accel;
        }
        location /noaccel/ {
            proxy_ignore_headers X-Accel-Redirect;
            proxy_pass http://accel;
        }
        location /files/ {
            internal;
        }
        location = /nf.txt {
        }
        location /named/ {
            proxy_pass http://named;
        }
        location @fallback {
            return 200 "fallback\n";
        }
        location /intercept/ {
            proxy_intercept_errors on;
            error_page 404 /nf.txt;
            error_page 401 = @fallback;
            proxy_pass http://errs;
        }
        location /intercept401/ {
            proxy_intercept_errors on;
            error_page 401 /nf.txt;
            proxy_pass http://auth;
        }
        location /nointercept/ {
            error_page 404 /nf.txt;
            proxy_pass http://errs/intercept/;
        }
        location /method/ {
            proxy_method PUT;
            proxy_set_body "replaced $arg_x";
            proxy_pass_request_headers off;
            proxy_set_header X-Only yes;
            proxy_pass http://u;
        }
        location /nobody/ {
            # As nginx's documentation pairs them: the client's length would go up
            # without its body.
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_pass http://u;
        }
    }"#;
    let plain: &[&str] = &[
        "--echo",
        "--answer-header",
        "X-Powered-By: php",
        "--answer-header",
        "Server: lab/1.0",
        "--answer-header",
        "X-Accel-Charset: utf-8",
        "--answer-header",
        "X-Pad: avoid browser bug",
    ];
    let accel: &[&str] = &[
        "--answer-header",
        "X-Accel-Redirect: /files/a.txt",
        "--answer-header",
        "Content-Disposition: attachment; filename=a.txt",
        "--answer-header",
        "Set-Cookie: s=1",
        "--answer-header",
        "X-Other: dropped",
    ];
    let named: &[&str] = &["--answer-header", "X-Accel-Redirect: @fallback"];
    let errs: &[&str] = &["--fail-path", "/intercept/x", "--fail-status", "404"];
    let auth: &[&str] = &[
        "--fail-path",
        "/intercept401/x",
        "--fail-status",
        "401",
        "--answer-header",
        "WWW-Authenticate: Basic realm=\"up\"",
    ];
    let p = Pair::start_in(
        dir,
        "l7pxh",
        http,
        &[
            ("b1", 9001, plain),
            ("b2", 9002, accel),
            ("b3", 9003, named),
            ("b4", 9004, errs),
            ("b5", 9005, auth),
        ],
    );
    let paths = [
        "/",
        "/pass/",
        "/accel/",
        "/noaccel/",
        "/files/a.txt",
        "/named/",
        "/intercept/x",
        "/intercept/ok",
        "/intercept401/x",
        "/nointercept/x",
        "/method/?x=1",
        "/nobody/",
    ];
    let s = p.same(&paths, &[]);
    let has = |i: usize, line: &str| s[i].answer.iter().any(|l| l == line);
    assert!(
        !has(0, "X-Powered-By: php") && has(1, "X-Powered-By: php"),
        "{s:?}"
    );
    assert!(
        has(1, "Server: lab/1.0") && has(1, "X-Accel-Charset: utf-8"),
        "{s:?}"
    );
    assert_eq!(s[2].head, ["protected file\n"], "{:?}", s[2]);
    assert!(
        has(2, "Content-Disposition: attachment; filename=a.txt"),
        "{:?}",
        s[2]
    );
    assert_eq!((s[4].status, s[6].status, s[9].status), (404, 404, 404));
    assert_eq!(s[6].head, ["not found here\n"], "{:?}", s[6]);
    assert_eq!(s[5].head, ["fallback\n"], "{:?}", s[5]);
    // The same with a body, and as HEAD (but for the internal location: a HEAD answer
    // with nginx's own page has a length that names the product).
    p.same(&paths, &["--method", "POST", "--body", "client body"]);
    let heads: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|p| *p != "/files/a.txt")
        .collect();
    p.same(&heads, &["--method", "HEAD"]);
}

/// Runs openssl with `args` in `dir`; panics with its output when it fails.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, an intermediate it signs, and leaf certificates: `b.test` by the CA,
/// `i.test` by the intermediate (its chain file holds both), `c.test` self-signed, and a
/// client certificate by the CA.
fn test_pki(dir: &std::path::Path) {
    let ca_ext = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n";
    std::fs::write(dir.join("ca.ext"), ca_ext).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=Lab CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    let sign = |name: &str, issuer: &str, ext: &str| {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{issuer}.crt"),
                "-CAkey",
                &format!("{issuer}.key"),
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                &format!("{name}.crt"),
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    };
    sign("inter", "ca", ca_ext);
    sign("b.test", "ca", "subjectAltName=DNS:b.test\n");
    sign("i.test", "inter", "subjectAltName=DNS:i.test\n");
    sign("client", "ca", "extendedKeyUsage=clientAuth\n");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=c.test",
            "-keyout",
            "c.test.key",
            "-out",
            "c.test.crt",
            "-addext",
            "subjectAltName=DNS:c.test",
        ],
    );
    let chain = std::fs::read_to_string(dir.join("i.test.crt")).unwrap()
        + &std::fs::read_to_string(dir.join("inter.crt")).unwrap();
    std::fs::write(dir.join("i.test.chain"), chain).unwrap();
}

#[test]
fn upstream_tls_verify_names_and_client_certificates_match_nginx() {
    if skip("upstream_tls_verify_names_and_client_certificates_match_nginx")
        || !installed("openssl")
    {
        return;
    }
    let dir = Scratch::new("l7uptls");
    test_pki(&dir.0);
    // Each proxies to its own TLS listen; nginx also serves, on 9444, a backend that asks
    // for a client certificate (fulcrum does not terminate mutual TLS), and on 9445 one
    // that says the SNI it got, which both use.
    let http = r#"    server {
        LISTEN
        proxy_ssl_trusted_certificate DIR/ca.crt;
        # nginx shares a TLS session among the locations that proxy to one address; one
        # made without verification is then resumed with its failed verdict.
        proxy_ssl_session_reuse off;
        location /plain/ {
            proxy_pass https://127.0.0.1:9445/;
        }
        location /verified/ {
            proxy_ssl_verify on;
            proxy_ssl_name b.test;
            proxy_pass https://127.0.0.1:SSLPORT/;
        }
        location /mismatch/ {
            proxy_ssl_verify on;
            proxy_ssl_name other.test;
            proxy_pass https://127.0.0.1:SSLPORT/;
        }
        location /untrusted/ {
            proxy_ssl_verify on;
            proxy_ssl_server_name on;
            proxy_ssl_name c.test;
            proxy_pass https://127.0.0.1:SSLPORT/;
        }
        location /sni/ {
            proxy_ssl_server_name on;
            proxy_ssl_name c.test;
            proxy_pass https://127.0.0.1:9445/;
        }
        location /shallow/ {
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 0;
            proxy_ssl_server_name on;
            proxy_ssl_name i.test;
            proxy_pass https://127.0.0.1:9445/;
        }
        location /deep/ {
            proxy_ssl_verify on;
            proxy_ssl_server_name on;
            proxy_ssl_name i.test;
            proxy_pass https://127.0.0.1:9445/;
        }
        location /client/ {
            proxy_ssl_certificate DIR/client.crt;
            proxy_ssl_certificate_key DIR/client.key;
            proxy_pass https://127.0.0.1:9444/;
        }
        location /noclient/ {
            proxy_pass https://127.0.0.1:9444/;
        }
    }
    server {
        listen 127.0.0.1:SSLPORT ssl;
        server_name b.test;
        ssl_certificate DIR/b.test.crt;
        ssl_certificate_key DIR/b.test.key;
        location / {
            return 200 "b\n";
        }
    }
    server {
        listen 127.0.0.1:SSLPORT ssl;
        server_name c.test;
        ssl_certificate DIR/c.test.crt;
        ssl_certificate_key DIR/c.test.key;
        location / {
            return 200 "c\n";
        }
    }
"#;
    let mtls = r#"
    server {
        listen 127.0.0.1:9444 ssl;
        ssl_certificate DIR/b.test.crt;
        ssl_certificate_key DIR/b.test.key;
        ssl_client_certificate DIR/ca.crt;
        ssl_verify_client optional;
        location / {
            return 200 "client $ssl_client_verify $ssl_client_s_dn\n";
        }
    }
    server {
        listen 127.0.0.1:9445 ssl;
        ssl_certificate DIR/b.test.crt;
        ssl_certificate_key DIR/b.test.key;
        location / {
            return 200 "sni=$ssl_server_name\n";
        }
    }
    server {
        listen 127.0.0.1:9445 ssl;
        server_name i.test;
        ssl_certificate DIR/i.test.chain;
        ssl_certificate_key DIR/i.test.key;
        location / {
            return 200 "sni=$ssl_server_name\n";
        }
    }"#;
    let p = Pair::start_in_split(dir, "l7uptls", &format!("{http}{mtls}"), http, &[]);
    let paths = [
        "/plain/",
        "/verified/",
        "/mismatch/",
        "/untrusted/",
        "/sni/",
        "/shallow/",
        "/deep/",
        "/client/",
        "/noclient/",
    ];
    let s = p.same(&paths, &[]);
    // (A body starting with "b" reads as the echo backend's name.)
    let got: Vec<(u16, &str)> = s
        .iter()
        .map(|s| {
            let text = match s.head.first() {
                _ if !s.backend.is_empty() => s.backend.as_str(),
                Some(h) => h.lines().next().unwrap_or(""),
                None => "",
            };
            (s.status, text)
        })
        .collect();
    assert_eq!(got[0], (200, "sni="), "no SNI by default");
    assert_eq!(got[1], (200, "b"));
    assert_eq!(got[2].0, 502, "a name the certificate does not hold");
    assert_eq!(got[3].0, 502, "a certificate no trusted one signs");
    assert_eq!(got[4], (200, "sni=c.test"));
    assert_eq!(got[5].0, 502, "depth 0 refuses an intermediate");
    assert_eq!(got[6], (200, "sni=i.test"));
    assert_eq!(got[7], (200, "client SUCCESS CN=client"));
    assert_eq!(got[8], (200, "client NONE "));
}

#[test]
fn cookie_domain_path_and_flags_match_nginx() {
    if skip("cookie_domain_path_and_flags_match_nginx") {
        return;
    }
    let http = r#"    upstream u {
        server 127.0.0.1:9001;
    }
    server {
        LISTEN
        location / {
            proxy_cookie_domain backend.local example.org;
            proxy_cookie_domain ~^(.+)\.internal$ $1.example.org;
            proxy_cookie_path /app/ /;
            proxy_cookie_path ~*^/Legacy/(.*)$ /new/$1;
            proxy_cookie_flags sid secure httponly samesite=lax;
            proxy_cookie_flags ~^tmp_ nosecure nohttponly nosamesite;
            proxy_cookie_flags other samesite=strict;
            proxy_pass http://u;
        }
        location /off/ {
            proxy_cookie_domain off;
            proxy_cookie_path off;
            proxy_cookie_flags off;
            proxy_pass http://u;
        }
    }"#;
    let cookies = [
        "a=1;Domain=.Backend.Local ;path=/app/x",
        "b=2; domain=api.internal; Path=/legacy/old",
        "sid=3; HttpOnly; SameSite=Strict",
        "tmp_x=4; Secure; HttpOnly; SameSite=None; Path=/",
        "other=5; SameSite=strict",
        "plain=6;  Path=/elsewhere",
        "novalue; Domain=backend.local",
    ];
    let mut flags: Vec<&str> = Vec::new();
    for c in &cookies {
        flags.push("--answer-header");
        flags.push(Box::leak(format!("Set-Cookie: {c}").into_boxed_str()));
    }
    let p = Pair::start("l7cookie", http, &[("b1", 9001, &flags)]);
    let s = p.same(&["/", "/off/"], &[]);
    let has = |i: usize, line: &str| s[i].answer.iter().any(|l| l == line);
    assert!(
        has(0, "Set-Cookie: a=1; Domain=.example.org; path=/x"),
        "{:?}",
        s[0]
    );
    assert!(
        has(0, "Set-Cookie: b=2; domain=api.example.org; Path=/new/old"),
        "{:?}",
        s[0]
    );
    assert!(
        has(1, "Set-Cookie: a=1;Domain=.Backend.Local ;path=/app/x"),
        "{:?}",
        s[1]
    );
}

#[test]
fn proxy_protocol_listens_and_realip_match_nginx() {
    if skip("proxy_protocol_listens_and_realip_match_nginx") {
        return;
    }
    // SSLPORT is only a second port here: the listen that expects PROXY headers.
    // realip at server level: it runs before the rewrite phase's return.
    let http = r#"    server {
        LISTEN
        listen 127.0.0.1:SSLPORT proxy_protocol;
        set_real_ip_from 127.0.0.1;
        real_ip_header proxy_protocol;
        location / {
            return 200 "[$remote_addr] [$proxy_protocol_addr:$proxy_protocol_port] [$proxy_protocol_server_addr:$proxy_protocol_server_port]\n";
        }
        location /real/ {
            return 200 "[$remote_addr:$remote_port] [$realip_remote_addr]\n";
        }
    }
    server {
        listen 127.0.0.2:SSLPORT proxy_protocol;
        set_real_ip_from 10.0.0.0/8;
        real_ip_header proxy_protocol;
        location / {
            return 200 "untrusted [$remote_addr]\n";
        }
    }"#;
    let p = Pair::start("l7pp", http, &[]);
    let v2 = "\\r\\n\\r\\n\\x00\\r\\nQUIT\\n\\x21\\x11\\x00\\x0c\\xc0\\x00\\x02\\x07\\xc6\\x33\\x64\\x01\\xc8\\x22\\x01\\xbb";
    let v2_local = "\\r\\n\\r\\n\\x00\\r\\nQUIT\\n\\x20\\x00\\x00\\x00";
    let cases = [
        (
            "v1",
            "PROXY TCP4 192.0.2.7 198.51.100.1 51234 443\\r\\n".to_string(),
        ),
        (
            "v1 IPv6",
            "PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\\r\\n".to_string(),
        ),
        ("v1 unknown", "PROXY UNKNOWN\\r\\n".to_string()),
        ("v2", v2.to_string()),
        ("v2 local", v2_local.to_string()),
    ];
    for (host, path) in [
        ("127.0.0.1", "/"),
        ("127.0.0.1", "/real/"),
        ("127.0.0.2", "/"),
    ] {
        for (what, header) in &cases {
            let raw = format!(
                "{header}GET {path} HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n"
            );
            let ask = |port: u16| {
                let addr = format!("{host}:{port}");
                seen(p.lab.request_raw_full(&p.host, &addr, &raw).unwrap())
            };
            let (n, f) = (ask(NGINX_TLS), ask(FULCRUM_TLS));
            // Unknown and local headers leave the connection's own port, which differs.
            let port = |s: &Seen| {
                s.head
                    .iter()
                    .map(|h| {
                        if matches!(*what, "v1 unknown" | "v2 local") && path == "/real/" {
                            h.split(':').next().unwrap_or("").to_string()
                        } else {
                            h.clone()
                        }
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(n.status, 200, "{what} {host}{path}: {n:?}");
            if *what == "v1" && path == "/real/" {
                assert_eq!(n.head, ["[192.0.2.7:51234] [127.0.0.1]\n"], "{n:?}");
            }
            assert_eq!(
                (n.status, &n.answer, port(&n)),
                (f.status, &f.answer, port(&f)),
                "{what} {path}: nginx left, fulcrum right"
            );
        }
    }
    // No header, or a broken one: the connection closes without an answer, at once
    // (not when a timeout ends it: the agent would give up after 10 s and see the same
    // empty answer).
    for raw in [
        "GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n",
        "PROXY TCP4 nonsense\\r\\n\\r\\n",
    ] {
        for port in [NGINX_TLS, FULCRUM_TLS] {
            let addr = format!("127.0.0.1:{port}");
            let started = std::time::Instant::now();
            let (status, _, body) = p.lab.request_raw_full(&p.host, &addr, raw).unwrap();
            assert_eq!((status, body.as_str()), (0, ""), "{port}: {raw}");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{port}: {raw}: closed only after {:?}",
                started.elapsed()
            );
        }
    }
}

#[test]
fn connection_request_and_tls_variables_match_nginx() {
    if skip("connection_request_and_tls_variables_match_nginx")
        || !installed("curl")
        || !installed("openssl")
    {
        return;
    }
    let dir = Scratch::new("l7vars");
    test_pki(&dir.0);
    let http = r#"    server {
        LISTEN
        listen 127.0.0.1:SSLPORT ssl;
        ssl_certificate DIR/b.test.crt;
        ssl_certificate_key DIR/b.test.key;
        # nginx 1.22 leaves TLSv1.3 out unless asked (Debian's nginx.conf asks).
        ssl_protocols TLSv1.2 TLSv1.3;
        location /vars {
            return 200 "[$connection_requests] [$pipe] [$request_length] [$ssl_protocol] [$ssl_cipher] [$ssl_server_name] [$https]\n";
        }
        location /shapes {
            return 200 "$request_id $connection $pid $msec $time_iso8601 $hostname\n";
        }
    }"#;
    let p = Pair::start_in(dir, "l7vars", http, &[]);
    let s = p.same(&["/vars", "/vars?a=1"], &["--header", "X-Pad: 0123456789"]);
    assert_eq!(s[0].head, ["[1] [.] [82] [] [] [] []\n"], "{:?}", s[0]);
    // Two requests in one write: the second is pipelined, the connection's second.
    let raw = "GET /vars HTTP/1.1\\r\\nHost: a\\r\\n\\r\\nGET /vars HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n";
    let bodies = |addr: &str| {
        let (_, _, body) = p.lab.request_raw_full(&p.host, addr, raw).unwrap();
        body.lines()
            .filter(|l| l.starts_with('['))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (n, f) = (bodies(NGINX), bodies(FULCRUM));
    assert_eq!(n, f);
    assert!(
        n.len() == 2 && n[0].starts_with("[1] [.]") && n[1].starts_with("[2] [p]"),
        "{n:?}"
    );
    // Over TLS, with SNI.
    let curl = |port: u16| {
        run_in(
            &p,
            &[
                "curl",
                "-sSk",
                "--resolve",
                &format!("b.test:{port}:127.0.0.1"),
                &format!("https://b.test:{port}/vars"),
            ],
        )
    };
    assert_eq!(curl(NGINX_TLS), curl(FULCRUM_TLS));
    assert!(curl(FULCRUM_TLS).contains("[TLSv1.3]") && curl(FULCRUM_TLS).contains("[b.test] [on]"));
    // What differs by nature has nginx's shape.
    let shape = |addr: &str| -> Vec<usize> {
        let r = p.lab.request(&p.host, addr, &["/shapes"], &[]).unwrap();
        r[0].1.split_whitespace().map(str::len).collect()
    };
    let (n, f) = (shape(NGINX), shape(FULCRUM));
    assert_eq!((n[0], f[0]), (32, 32), "request_id");
    assert_eq!((n[3], f[3]), (14, 14), "msec");
    assert_eq!((n[4], f[4]), (25, 25), "time_iso8601");
}

#[test]
fn proxy_bind_matches_nginx() {
    if skip("proxy_bind_matches_nginx") {
        return;
    }
    // Each proxy sends to a server of its own that answers with the address the
    // connection came from: proxy_bind's, fixed or from a variable; an empty value binds
    // nothing, one that is no address is logged and ignored, `off` cancels the server's;
    // an address this host does not have fails the request with 500.
    let http = r#"    server {
        listen 127.0.0.1:ECHO;
        location / {
            return 200 "from $remote_addr\n";
        }
    }
    server {
        LISTEN
        error_log DIR/ERROR-error.log warn;
        proxy_bind 127.0.0.7;
        location /fixed {
            proxy_pass http://127.0.0.1:ECHO;
        }
        location /var {
            proxy_bind $arg_src;
            proxy_pass http://127.0.0.1:ECHO;
        }
        location /off {
            proxy_bind off;
            proxy_pass http://127.0.0.1:ECHO;
        }
        location /foreign {
            proxy_bind 10.255.77.1;
            proxy_pass http://127.0.0.1:ECHO;
        }
    }"#;
    let p = Pair::start_in_split(
        Scratch::new("l7bind"),
        "l7bind",
        &http.replace("ECHO", "9101").replace("ERROR", "nginx"),
        &http.replace("ECHO", "9102").replace("ERROR", "fulcrum"),
        &[],
    );
    let s = p.same(
        &[
            "/fixed",
            "/var?src=127.0.0.9",
            "/var?src=",
            "/var?src=nowhere",
            "/off",
            "/foreign",
        ],
        &[],
    );
    let statuses: Vec<u16> = s.iter().map(|x| x.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 500]);
    assert_eq!(s[0].head, ["from 127.0.0.7\n"], "{:?}", s[0]);
    assert_eq!(s[1].head, ["from 127.0.0.9\n"], "{:?}", s[1]);
    assert_eq!(s[2].head, ["from 127.0.0.1\n"], "{:?}", s[2]);
    assert_eq!(s[3].head, ["from 127.0.0.1\n"], "{:?}", s[3]);
    assert_eq!(s[4].head, ["from 127.0.0.1\n"], "{:?}", s[4]);
    // The error log: the invalid address at error, the failed bind at crit.
    std::thread::sleep(Duration::from_millis(300));
    let read = |who: &str, port: &str| {
        std::fs::read_to_string(p._dir.0.join(format!("{who}-error.log")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let level = &l[l.find('[')?..=l.find(']')?];
                let (_, rest) = l.split_once(" *")?;
                let (_, message) = rest.split_once(' ')?;
                Some(format!("{level} {}", message.replace(port, "PORT")))
            })
            .collect::<Vec<_>>()
    };
    let (n, f) = (read("nginx", "9101"), read("fulcrum", "9102"));
    let (n, f) = (
        n.iter()
            .map(|l| l.replace("8080", "LISTEN"))
            .collect::<Vec<_>>(),
        f.iter()
            .map(|l| l.replace("8081", "LISTEN"))
            .collect::<Vec<_>>(),
    );
    assert!(n.iter().any(|l| l.starts_with("[crit] bind(")), "{n:?}");
    assert_eq!(n, f, "error log: nginx left, fulcrum right");
}

#[test]
fn request_buffering_off_matches_nginx() {
    if skip("request_buffering_off_matches_nginx") {
        return;
    }
    // proxy_request_buffering off: a body of known length goes with its Content-Length,
    // a chunked one chunked to an HTTP/1.1 upstream, and is read whole for an HTTP/1.0
    // one (or where proxy_set_body replaces it); client_max_body_size still holds.
    let http = "    upstream u {\n        server 127.0.0.1:9001;\n    }\n    server {\n        LISTEN\n        client_max_body_size 1k;\n        proxy_request_buffering off;\n        location / {\n            proxy_pass http://u;\n            proxy_http_version 1.1;\n        }\n        location /v10/ {\n            proxy_pass http://u;\n        }\n        location /buffered/ {\n            proxy_pass http://u;\n            proxy_http_version 1.1;\n            proxy_request_buffering on;\n        }\n        location /set/ {\n            proxy_pass http://u;\n            proxy_http_version 1.1;\n            proxy_set_body \"set:$request_body\";\n        }\n        location /logged/ {\n            proxy_pass http://u;\n            proxy_http_version 1.1;\n            proxy_set_header X-Body \"[$request_body]\";\n        }\n    }";
    let p = Pair::start("l7rqb", http, &[("b1", 9001, &[])]);
    let chunked = |path: &str, chunks: &str| {
        format!("POST {path} HTTP/1.1\\r\\nHost: a\\r\\nTransfer-Encoding: chunked\\r\\nConnection: close\\r\\n\\r\\n{chunks}")
    };
    let length = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\\r\\nHost: a\\r\\nContent-Length: {}\\r\\nConnection: close\\r\\n\\r\\n{body}",
            body.replace("\\p", "").len()
        )
    };
    let big = "x".repeat(1500);
    let cases = [
        ("known length", length("/", "hello world")),
        (
            "chunked",
            chunked("/", "3\\r\\nabc\\r\\n4\\r\\ndefg\\r\\n0\\r\\n\\r\\n"),
        ),
        ("chunked, empty", chunked("/", "0\\r\\n\\r\\n")),
        (
            "chunked to HTTP/1.0",
            chunked("/v10/", "3\\r\\nabc\\r\\n4\\r\\ndefg\\r\\n0\\r\\n\\r\\n"),
        ),
        (
            "buffered",
            chunked("/buffered/", "3\\r\\nabc\\r\\n0\\r\\n\\r\\n"),
        ),
        (
            "proxy_set_body",
            chunked("/set/", "3\\r\\nabc\\r\\n0\\r\\n\\r\\n"),
        ),
        ("$request_body unbuffered", length("/logged/", "abc")),
        (
            "HTTP/1.0 with a length",
            length("/", "hello").replace("HTTP/1.1", "HTTP/1.0"),
        ),
        ("declared over the limit", length("/", &big)),
        (
            "chunked over the limit",
            chunked("/", &format!("5dc\\r\\n{big}\\r\\n0\\r\\n\\r\\n")),
        ),
        ("bad chunk", chunked("/", "zz\\r\\nabc\\r\\n0\\r\\n\\r\\n")),
    ];
    for (what, raw) in &cases {
        let n = seen(p.lab.request_raw_full(&p.host, NGINX, raw).unwrap());
        let f = seen(p.lab.request_raw_full(&p.host, FULCRUM, raw).unwrap());
        assert_eq!(n, f, "{what}: nginx left, fulcrum right\n{}", p.logs());
        assert_ne!(n.status, 0, "{what}: no answer");
    }
    // A body all here when the upstream request is made goes with its length, even one
    // sent chunked (nginx reads what has come first); one that is still coming streams:
    // chunked to an HTTP/1.1 upstream, with its length where the client gave one, read
    // whole for an HTTP/1.0 upstream.
    assert!(
        seen(p.lab.request_raw_full(&p.host, NGINX, &cases[1].1).unwrap())
            .head
            .iter()
            .any(|l| l == "Content-Length: 7")
    );
    let slow = [
        chunked("/", "3\\r\\nabc\\r\\n\\p4\\r\\ndefg\\r\\n0\\r\\n\\r\\n"),
        chunked("/v10/", "3\\r\\nabc\\r\\n\\p4\\r\\ndefg\\r\\n0\\r\\n\\r\\n"),
        length("/", "abc\\pdefg"),
        chunked(
            "/",
            &format!("3\\r\\nabc\\r\\n\\p5dc\\r\\n{big}\\r\\n0\\r\\n\\r\\n"),
        ),
    ];
    let mut got = Vec::new();
    for raw in &slow {
        let n = seen(p.lab.request_raw_full(&p.host, NGINX, raw).unwrap());
        let f = seen(p.lab.request_raw_full(&p.host, FULCRUM, raw).unwrap());
        assert_eq!(n, f, "{raw}: nginx left, fulcrum right\n{}", p.logs());
        got.push(n);
    }
    assert!(
        got[0]
            .head
            .iter()
            .any(|l| l == "Transfer-Encoding: chunked"),
        "{:?}",
        got[0]
    );
    assert!(
        got[0].head.iter().any(|l| l == "body 7: abcdefg"),
        "{:?}",
        got[0]
    );
    assert!(
        got[1].head.iter().any(|l| l == "Content-Length: 7"),
        "{:?}",
        got[1]
    );
    assert!(
        got[2].head.iter().any(|l| l == "Content-Length: 7"),
        "{:?}",
        got[2]
    );
}

#[test]
fn document_root_and_realpath_root_match_nginx() {
    if skip("document_root_and_realpath_root_match_nginx") {
        return;
    }
    // $document_root: the server's root in its rewrite phase, the location's after (its
    // alias where it has one; relative under the prefix; a trailing `/` dropped; with
    // variables); $realpath_root resolved through links, empty where the root is missing.
    // The maintenance switch: `if (-f $document_root/maintenance.html)`.
    let dir = Scratch::new("l7docroot");
    let www = dir.0.join("www");
    std::fs::create_dir_all(www.join("sub")).unwrap();
    std::fs::create_dir_all(dir.0.join("down")).unwrap();
    write_files(&www, &[("x.txt", "x\n"), ("sub/y.txt", "y\n")]);
    write_files(&dir.0.join("down"), &[("maintenance.html", "down\n")]);
    std::os::unix::fs::symlink(&www, dir.0.join("link")).unwrap();
    let http = r#"    types {
        text/plain txt;
    }
    upstream u {
        server 127.0.0.1:9001;
    }
    server {
        LISTEN
        root DIR/www/;
        set $first $document_root;
        location / {
            add_header X-Root $document_root;
            add_header X-First $first;
        }
        location /show/ {
            return 200 "root=$document_root real=$realpath_root\n";
        }
        location /alias/ {
            alias DIR/www/sub/;
            add_header X-Root $document_root;
        }
        location /rel/ {
            root html;
            return 200 "$document_root|$realpath_root\n";
        }
        location /missing/ {
            root DIR/none;
            return 200 "[$document_root][$realpath_root]\n";
        }
        location /var/ {
            root DIR/$arg_d;
            return 200 "$document_root|$realpath_root\n";
        }
        location /up/ {
            root DIR/$arg_d;
            if (-f $document_root/maintenance.html) {
                return 503;
            }
            proxy_pass http://u;
        }
    }"#;
    let p = Pair::start_in(dir, "l7docroot", http, &[("b1", 9001, &[])]);
    let s = p.same(
        &[
            "/x.txt",
            "/show/",
            "/alias/y.txt",
            "/rel/",
            "/missing/",
            "/var/?d=link",
            "/var/?d=nowhere",
            "/up/?d=www",
            "/up/?d=down",
        ],
        &[],
    );
    let statuses: Vec<u16> = s.iter().map(|x| x.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 200, 503]);
    assert!(
        s[0].answer
            .iter()
            .any(|l| l.starts_with("X-Root: /") && l.ends_with("/www")),
        "{:?}",
        s[0]
    );
}

#[test]
fn unix_socket_upstreams_match_nginx() {
    if skip("unix_socket_upstreams_match_nginx") {
        return;
    }
    // Peers on UNIX-domain sockets: in an upstream block, and in proxy_pass itself (with
    // and without a URI part, and from variables). The upstream gets `Host: localhost`
    // ($proxy_host), $upstream_addr names the socket, a missing socket is a 502 with
    // nginx's error-log line, and keepalive connections to a socket are reused.
    let http = r#"    upstream sock {
        server unix:DIR/a.sock;
        keepalive 4;
    }
    server {
        LISTEN
        error_log DIR/ERROR-error.log error;
        add_header X-Up $upstream_addr always;
        location / {
            proxy_pass http://sock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location /direct/ {
            proxy_pass http://unix:DIR/b.sock:/inner/;
        }
        location /whole/ {
            proxy_pass http://unix:DIR/b.sock;
            proxy_set_header X-Proxy-Host $proxy_host;
        }
        location /var/ {
            proxy_pass http://unix:DIR/$arg_s.sock:/v$uri;
        }
        location /gone/ {
            proxy_pass http://unix:DIR/none.sock;
        }
    }"#;
    let dir = Scratch::new("l7unix");
    let root = dir.0.display().to_string();
    let mut p = Pair::start_in_split(
        dir,
        "l7unix",
        &http.replace("ERROR", "nginx"),
        &http.replace("ERROR", "fulcrum"),
        &[],
    );
    for (name, sock) in [("b1", "a.sock"), ("b2", "b.sock")] {
        let listen = format!("unix:{root}/{sock}");
        p.lab
            .serve_with(&p.host, name, &listen, &["--http", "--echo"])
            .unwrap();
        // Fulcrum's workers run as nobody, as nginx's would as www-data: the socket must
        // let them connect.
        use std::os::unix::fs::PermissionsExt as _;
        let path = p._dir.0.join(sock);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let s = p.same(
        &[
            "/x?y=1",
            "/x",
            "/direct/p",
            "/whole/w?q",
            "/var/z?s=a",
            "/var/z?s=b",
            "/var/z?s=none",
            "/gone/",
        ],
        &[],
    );
    let statuses: Vec<u16> = s.iter().map(|x| x.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 502, 502]);
    assert_eq!(s[0].backend, "b1");
    assert_eq!(s[2].head[0], "GET /inner/p HTTP/1.0", "{:?}", s[2]);
    assert!(
        s[3].head.iter().any(|l| l == "Host: localhost"),
        "{:?}",
        s[3]
    );
    let up = format!("X-Up: unix:{root}/a.sock");
    assert!(s[0].answer.contains(&up), "{:?}", s[0]);
    // The error log: the failed connects, with the socket named.
    std::thread::sleep(Duration::from_millis(300));
    let read = |who: &str| {
        std::fs::read_to_string(p._dir.0.join(format!("{who}-error.log")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let level = &l[l.find('[')?..=l.find(']')?];
                let (_, rest) = l.split_once(" *")?;
                let (_, message) = rest.split_once(' ')?;
                Some(format!("{level} {message}"))
            })
            .map(|l| l.replace("8080", "LISTEN").replace("8081", "LISTEN"))
            .collect::<Vec<_>>()
    };
    let (n, f) = (read("nginx"), read("fulcrum"));
    assert!(n.iter().any(|l| l.contains("connect() to unix:")), "{n:?}");
    assert_eq!(n, f, "error log: nginx left, fulcrum right");
}
