//! Reference deployment 4 in the lab: two fulcrum proxies share VIP1 and VIP2 by VRRP and
//! proxy HTTP to RIP1 and RIP2 with the shipped example configurations; the master of VIP1
//! dies under steady load and the client's requests resume through the other proxy.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fulcrum_e2e::{workers_of, Scratch};
use fulcrum_lab::reference::{self, Deployment, Reference};
use fulcrum_lab::{require_root, wait_for, Agent, Host};

fn agent() -> Agent {
    Agent::new(fulcrum_e2e::bin(), &["lab-agent"])
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn holds(r: &Reference, host: &Host, vip: &str) -> bool {
    r.lab
        .ip(host, &["-4", "addr", "show", "dev", "eth0"])
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{vip}/")))
        .unwrap_or(false)
}

#[test]
fn deployment_4_fails_over_under_load() {
    if !require_root("deployment_4_fails_over_under_load") {
        return;
    }
    let dir = Scratch::new("ngxha");
    let keepalived = examples().join("nginx-ha.keepalived.conf");
    let mut r = reference::build(Deployment::NginxHa, "ngxha", Some(agent())).unwrap();
    for (i, rs) in r.real_servers.clone().iter().enumerate() {
        r.lab
            .serve(rs, &format!("RIP{}", i + 1), "0.0.0.0:80", true)
            .unwrap();
    }
    let (p1, p2, client) = (
        r.directors[0].clone(),
        r.directors[1].clone(),
        r.client.clone(),
    );
    let mut daemons = Vec::new();
    for (host, id) in [(&p1, "proxy1"), (&p2, "proxy2")] {
        // The example as shipped, its access log moved into the scratch directory.
        let nginx = std::fs::read_to_string(examples().join("nginx-ha.nginx.conf"))
            .unwrap()
            .replace(
                "/var/log/fulcrum/access.log",
                &dir.0.join(format!("{id}-access.log")).display().to_string(),
            );
        let nginx_conf = dir.0.join(format!("{id}.nginx.conf"));
        std::fs::write(&nginx_conf, nginx).unwrap();
        let d = fulcrum_e2e::spawn_fulcrum(
            &mut r.lab,
            host,
            &keepalived,
            &dir.0,
            id,
            &[
                "-i",
                id,
                "--nginx-conf",
                nginx_conf.to_str().unwrap(),
                "--no-forwarding",
            ],
        );
        daemons.push(d);
    }
    let (vip1, vip2) = (reference::VIP1.to_string(), reference::VIP2.to_string());
    let settled = wait_for(Duration::from_secs(12), || {
        holds(&r, &p1, &vip1) && holds(&r, &p2, &vip2)
    });
    let log =
        |id: &str| std::fs::read_to_string(dir.0.join(format!("{id}.log"))).unwrap_or_default();
    assert!(
        settled.is_some(),
        "VIPs never settled:\n{}\n{}",
        log("proxy1"),
        log("proxy2")
    );
    // Both VIPs serve, balanced over both real servers.
    for vip in [&vip1, &vip2] {
        let answers = r.lab.probe(&client, &format!("{vip}:80"), 4, true).unwrap();
        let mut sorted = answers.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, vec!["RIP1", "RIP2"], "{vip}: {answers:?}");
    }
    let access = std::fs::read_to_string(dir.0.join("proxy1-access.log")).unwrap_or_default();
    assert!(access.contains("\"GET / HTTP/1.1\" 200"), "{access}");

    // Steady load on VIP1: a new connection and request every 10 ms for 9 s.
    let agent = r.lab.agent_command(&client).unwrap();
    let watch = Command::new(&agent[0])
        .args(&agent[1..])
        .args([
            "watch",
            "--connect",
            &format!("{vip1}:80"),
            "--every-ms",
            "10",
            "--for-ms",
            "9000",
        ])
        .args(["--timeout-ms", "100", "--http"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // proxy1 dies as a machine does: its process and its link.
    daemons[0].process.signal("KILL").unwrap();
    r.lab.ip(&p1, &["link", "set", "eth0", "down"]).unwrap();
    let out = watch.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let w = fulcrum_lab::watched(&text, Duration::from_millis(10), |a| a.starts_with("RIP"));
    eprintln!(
        "deployment 4: {} requests, {} failed, outage {} ms",
        w.attempts,
        w.failed,
        w.outage.as_millis()
    );
    assert!(w.attempts > 300, "{} probes", w.attempts);
    // The bound: 3 x advert_int 1 s + skew (256-100)/256 s, plus the probe timeout.
    assert!(
        w.outage <= Duration::from_millis(3610 + 500),
        "outage {:?}",
        w.outage
    );
    let tail: Vec<&str> = text.lines().rev().take(50).collect();
    assert!(
        tail.iter()
            .all(|l| l.split_once(' ').is_some_and(|(_, a)| a.starts_with("RIP"))),
        "requests did not resume"
    );
    assert!(holds(&r, &p2, &vip1) && holds(&r, &p2, &vip2));
}

fn ctl_upstreams(sock: &Path) -> serde_json::Value {
    let out = fulcrum_e2e::ctl(sock, &["--json", "upstreams"]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()["result"].clone()
}

/// Fulcrum's extension: a keepalived.conf checker on a real server at an upstream peer's
/// address takes the peer out of the upstream before any request fails on it, and puts
/// it back when the check passes again.
#[test]
fn health_checks_drive_upstream_peers() {
    if !require_root("health_checks_drive_upstream_peers") {
        return;
    }
    let dir = Scratch::new("l7chk");
    let mut lab = fulcrum_lab::Lab::new("l7chk").unwrap().with_agent(agent());
    let host = lab.host("px").unwrap();
    let b1 = lab.serve(&host, "b1", "127.0.0.1:9001", true).unwrap();
    lab.serve(&host, "b2", "127.0.0.1:9002", true).unwrap();
    let keepalived = dir.0.join("keepalived.conf");
    std::fs::write(
        &keepalived,
        "virtual_server 10.9.9.9 80 {\n    delay_loop 1\n    lb_algo rr\n    lb_kind NAT\n    protocol TCP\n\
         real_server 127.0.0.1 9001 {\n        TCP_CHECK {\n            connect_timeout 1\n            retry 0\n        }\n    }\n\
         real_server 127.0.0.1 9002 {\n        TCP_CHECK {\n            connect_timeout 1\n            retry 0\n        }\n    }\n}\n",
    )
    .unwrap();
    let nginx = dir.0.join("nginx.conf");
    std::fs::write(
        &nginx,
        "events {\n    worker_connections 512;\n}\nhttp {\n    access_log off;\n    upstream u {\n        server 127.0.0.1:9001 max_fails=0;\n        server 127.0.0.1:9002 max_fails=0;\n    }\n    server {\n        listen 127.0.0.1:8080;\n        location / {\n            proxy_pass http://u;\n            proxy_next_upstream off;\n        }\n    }\n}\n",
    )
    .unwrap();
    let d = fulcrum_e2e::spawn_fulcrum(
        &mut lab,
        &host,
        &keepalived,
        &dir.0,
        "px",
        &[
            "--nginx-conf",
            nginx.to_str().unwrap(),
            "--no-forwarding",
            "--metrics",
            "127.0.0.1:9100",
        ],
    );
    let metrics = |lab: &fulcrum_lab::Lab| -> String {
        lab.request(&host, "127.0.0.1:9100", &["/metrics"], &[])
            .unwrap()
            .into_iter()
            .next()
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    let answers = |lab: &fulcrum_lab::Lab| -> Vec<String> {
        lab.request(&host, "127.0.0.1:8080", &["/"; 10], &[])
            .unwrap()
            .into_iter()
            .map(|(s, b)| format!("{s} {}", b.lines().next().unwrap_or("")))
            .collect()
    };
    assert!(
        wait_for(Duration::from_secs(10), || answers(&lab)
            .contains(&"200 b1".to_string()))
        .is_some(),
        "the proxy never answered"
    );
    // b1 stops: with max_fails=0 and proxy_next_upstream off, passive health alone
    // would fail every other request; the active check takes b1 out instead.
    b1.signal("KILL").unwrap();
    let out = wait_for(Duration::from_secs(6), || {
        ctl_upstreams(&d.sock)
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["address"] == "127.0.0.1:9001" && p["check_down"] == true)
    });
    assert!(
        out.is_some(),
        "b1 was not taken out: {}",
        ctl_upstreams(&d.sock)
    );
    let after = answers(&lab);
    assert!(after.iter().all(|a| a == "200 b2"), "{after:?}");
    // `ctl status` shows it on its one screen.
    let status = fulcrum_e2e::ctl(&d.sock, &["status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    let line = status
        .lines()
        .find(|l| l.contains("upstream u 127.0.0.1:9001"))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(line.contains(" down "), "{status}");
    // The metrics show it, parsed: the peer out of rotation, its checker down after one
    // transition, the requests answered.
    let m = fulcrum_e2e::parse_metrics(&metrics(&lab));
    let value = |series: &str| {
        *m.get(series)
            .unwrap_or_else(|| panic!("{series} missing from {:?}", m.keys().collect::<Vec<_>>()))
    };
    let rs1 = "virtual_server=\"10.9.9.9:80 TCP\",real_server=\"127.0.0.1:9001\"";
    assert_eq!(
        value("fulcrum_upstream_peer_up{upstream=\"u\",peer=\"127.0.0.1:9001\"}"),
        0.0
    );
    assert_eq!(
        value("fulcrum_upstream_peer_up{upstream=\"u\",peer=\"127.0.0.1:9002\"}"),
        1.0
    );
    assert_eq!(value(&format!("fulcrum_real_server_alive{{{rs1}}}")), 0.0);
    assert_eq!(
        value(&format!(
            "fulcrum_checker_transitions_total{{{rs1},checker=\"TCP_CHECK #0\"}}"
        )),
        1.0
    );
    assert!(value("fulcrum_http_requests_total{server=\"\",status=\"200\"}") >= 10.0);
    assert!(value("fulcrum_upstream_response_seconds_count{upstream=\"u\"}") >= 10.0);
    // So does the dashboard, rendered by a browser: b1 down with its checker's reason,
    // and the change among the recent events.
    if fulcrum_e2e::installed("chromium") {
        let dom = fulcrum_e2e::chromium(&lab, &host, "http://127.0.0.1:9100/", &dir.0, None);
        let row = dom
            .split("data-real-server=\"127.0.0.1:9001\"")
            .nth(1)
            .and_then(|r| r.split("</tr>").next())
            .unwrap_or("");
        assert!(
            row.contains(">down<") && row.contains("TCP connection to 127.0.0.1:9001 refused"),
            "{dom}"
        );
        assert!(
            dom.contains("real server 127.0.0.1:9001 in 10.9.9.9:80 TCP: down (TCP connection to 127.0.0.1:9001 refused)"),
            "{dom}"
        );
        assert!(
            dom.contains("upstream u peer 127.0.0.1:9001: out (health check)"),
            "{dom}"
        );
    }
    // The operator drains b2 for maintenance: b1 is down too, so nothing is left
    // (502), and undrained it serves again.
    let ctl = |what: &str| fulcrum_e2e::ctl(&d.sock, &[what, "127.0.0.1:9002"]);
    let out = ctl("drain");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 upstream peer(s)"),
        "{out:?}"
    );
    assert!(ctl_upstreams(&d.sock)
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["address"] == "127.0.0.1:9002" && p["drained"] == true));
    assert!(answers(&lab).iter().all(|a| a.starts_with("502")));
    ctl("undrain");
    assert!(answers(&lab).iter().all(|a| a == "200 b2"));
    // b1 returns: back in rotation once its check passes.
    lab.serve(&host, "b1", "127.0.0.1:9001", true).unwrap();
    let back = wait_for(Duration::from_secs(6), || {
        answers(&lab).contains(&"200 b1".to_string())
    });
    assert!(
        back.is_some(),
        "b1 did not come back: {}",
        ctl_upstreams(&d.sock)
    );
}

/// Reloads under load: a new connection every 5 ms and a keep-alive connection with a
/// request every 5 ms go on while the configuration switches upstreams and adds and removes
/// a listener 100 times, with 10 refused configurations among them: no request fails.
#[test]
fn reloads_under_load_lose_nothing() {
    if !require_root("reloads_under_load_lose_nothing") {
        return;
    }
    let dir = Scratch::new("l7rel");
    let mut lab = fulcrum_lab::Lab::new("l7rel").unwrap().with_agent(agent());
    let host = lab.host("px").unwrap();
    lab.serve(&host, "b1", "127.0.0.1:9001", true).unwrap();
    lab.serve(&host, "b2", "127.0.0.1:9002", true).unwrap();
    let conf = dir.0.join("nginx.conf");
    let version = |n: usize| -> String {
        let (backend, extra) = if n.is_multiple_of(2) {
            ("127.0.0.1:9001", "")
        } else {
            (
                "127.0.0.1:9002",
                "    server {\n        listen 127.0.0.1:8081;\n        location / {\n            return 200 \"new listener\\n\";\n        }\n    }\n",
            )
        };
        format!(
            "events {{\n    worker_connections 512;\n}}\nhttp {{\n    access_log off;\n    upstream u {{\n        server {backend};\n    }}\n    server {{\n        listen 127.0.0.1:8080;\n        location / {{\n            proxy_pass http://u;\n        }}\n    }}\n{extra}}}\n"
        )
    };
    std::fs::write(&conf, version(0)).unwrap();
    let sock = dir.0.join("px.sock");
    run_proxy(&mut lab, &host, &conf, &sock, &dir.0.join("px.log"));
    let up = wait_for(Duration::from_secs(10), || {
        lab.request(&host, "127.0.0.1:8080", &["/"], &[])
            .is_ok_and(|r| r[0].0 == 200)
    });
    assert!(up.is_some(), "the proxy never answered");
    let agent = lab.agent_command(&host).unwrap();
    let watcher = |keepalive: bool| {
        let mut c = Command::new(&agent[0]);
        c.args(&agent[1..])
            .args(["watch", "--connect", "127.0.0.1:8080", "--every-ms", "5"])
            .args(["--for-ms", "9000", "--timeout-ms", "1000", "--http"]);
        if keepalive {
            c.arg("--keepalive");
        }
        c.stdout(Stdio::piped()).spawn().unwrap()
    };
    let watchers = [watcher(false), watcher(true)];
    let reload = || fulcrum_e2e::ctl(&sock, &["reload"]).status.success();
    let mut refused = 0;
    for n in 1..=100 {
        std::thread::sleep(Duration::from_millis(40));
        if n % 10 == 5 {
            // A configuration that fails validation: refused, the old one keeps serving.
            std::fs::write(&conf, "http {\n    upstream u {\n    }\n    server {\n        listen 127.0.0.1:8080;\n    }\n}\n").unwrap();
            if !reload() {
                refused += 1;
            }
        }
        std::fs::write(&conf, version(n)).unwrap();
        assert!(
            reload(),
            "reload {n} refused: {}",
            std::fs::read_to_string(dir.0.join("px.log")).unwrap_or_default()
        );
        if n == 99 {
            let r = lab.request(&host, "127.0.0.1:8081", &["/"], &[]).unwrap();
            assert_eq!(
                (r[0].0, r[0].1.trim_end()),
                (200, "new listener"),
                "the listener added by a reload"
            );
        }
    }
    assert_eq!(refused, 10, "every invalid configuration is refused");
    for (w, what) in watchers.into_iter().zip(["new connections", "keep-alive"]) {
        let out = w.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let answers: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once(' ').map(|x| x.1))
            .collect();
        let failed: Vec<&&str> = answers.iter().filter(|a| !a.starts_with('b')).collect();
        eprintln!(
            "{what}: {} requests across 100 reloads, {} failed",
            answers.len(),
            failed.len()
        );
        assert!(answers.len() > 300, "{what}: {} requests", answers.len());
        assert!(failed.is_empty(), "{what}: {failed:?}");
        assert!(
            answers.contains(&"b1") && answers.contains(&"b2"),
            "{what}: both upstreams served"
        );
    }
}

/// logrotate's flow for nginx (rename the files, then SIGUSR1): the next lines of the
/// access and error logs land in new files at the old paths, none in the renamed ones;
/// and the times in them are local, with the zone's offset.
#[test]
fn logs_follow_logrotate_rename_then_usr1() {
    if !require_root("logs_follow_logrotate_rename_then_usr1") {
        return;
    }
    let dir = Scratch::new("l7rot");
    let mut lab = fulcrum_lab::Lab::new("l7rot").unwrap().with_agent(agent());
    let host = lab.host("px").unwrap();
    let access = dir.0.join("access.log");
    let error = dir.0.join("error.log");
    let nginx = dir.0.join("nginx.conf");
    // Nothing listens on 9001: every request is a 502 with an error log line.
    std::fs::write(
        &nginx,
        format!(
            "events {{}}\nhttp {{\n    access_log {};\n    error_log {} error;\n    server {{\n        listen 127.0.0.1:8080;\n        location / {{\n            proxy_pass http://127.0.0.1:9001;\n        }}\n    }}\n}}\n",
            access.display(),
            error.display()
        ),
    )
    .unwrap();
    let sock = dir.0.join("px.sock");
    let args = [
        fulcrum_e2e::bin().to_str().unwrap(),
        "run",
        "-c",
        nginx.to_str().unwrap(),
        "--control",
        sock.to_str().unwrap(),
        "--no-forwarding",
    ];
    // A zone west of UTC with no daylight saving, so the offset is known.
    let process = lab
        .spawn(
            &host,
            &["env", "TZ=America/Bogota"]
                .into_iter()
                .chain(args)
                .collect::<Vec<_>>(),
            Some(&dir.0.join("px.log")),
        )
        .unwrap();
    let ask = |lab: &fulcrum_lab::Lab, path: &str| {
        lab.request(&host, "127.0.0.1:8080", &[path], &[])
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect::<Vec<_>>()
    };
    assert!(
        wait_for(Duration::from_secs(10), || ask(&lab, "/before")
            .contains(&502))
        .is_some(),
        "the proxy never answered"
    );
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    assert!(
        read(&access).contains("\"GET /before HTTP/1.1\" 502"),
        "{}",
        read(&access)
    );
    assert!(read(&access).contains(" -0500] "), "{}", read(&access));
    assert!(
        read(&error).contains("request: \"GET /before HTTP/1.1\""),
        "{}",
        read(&error)
    );
    // logrotate: rename, then USR1.
    let rotated = |p: &Path| p.with_extension("log.1");
    std::fs::rename(&access, rotated(&access)).unwrap();
    std::fs::rename(&error, rotated(&error)).unwrap();
    process.signal("USR1").unwrap();
    let reopened = wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(dir.0.join("px.log"))
            .unwrap_or_default()
            .contains("log files reopened")
    });
    assert!(reopened.is_some(), "SIGUSR1 was not handled");
    assert_eq!(ask(&lab, "/after"), vec![502]);
    let new_access = wait_for(Duration::from_secs(5), || read(&access).contains("/after"));
    assert!(new_access.is_some(), "no new access.log");
    assert!(
        read(&error).contains("\"GET /after HTTP/1.1\""),
        "{}",
        read(&error)
    );
    for p in [&access, &error] {
        let old = read(&rotated(p));
        assert!(old.contains("/before") && !old.contains("/after"), "{old}");
        assert!(!read(p).contains("/before"));
    }
}

/// The metrics listener behind basic auth (`--metrics-htpasswd`, bcrypt as `htpasswd -B`
/// writes it): no page without the password; with it, the metrics, and the dashboard's
/// data as `/status.json` and `/status.csv` (a row per real server, checker and peer, with
/// how long each has been in its state).
#[test]
fn the_metrics_listener_asks_for_basic_auth_and_exports_csv() {
    use base64::Engine;
    if !require_root("the_metrics_listener_asks_for_basic_auth_and_exports_csv") {
        return;
    }
    let dir = Scratch::new("l7auth");
    let mut lab = fulcrum_lab::Lab::new("l7auth").unwrap().with_agent(agent());
    let host = lab.host("px").unwrap();
    lab.serve(&host, "b1", "127.0.0.1:9001", true).unwrap();
    let keepalived = dir.0.join("keepalived.conf");
    std::fs::write(
        &keepalived,
        "virtual_server 10.9.9.9 80 {\n    delay_loop 1\n    lb_algo rr\n    lb_kind NAT\n    protocol TCP\n\
         real_server 127.0.0.1 9001 {\n        TCP_CHECK {\n            connect_timeout 1\n        }\n    }\n}\n",
    )
    .unwrap();
    let nginx = dir.0.join("nginx.conf");
    std::fs::write(
        &nginx,
        "events {}\nhttp {\n    access_log off;\n    upstream u {\n        server 127.0.0.1:9001;\n    }\n    server {\n        listen 127.0.0.1:8080;\n        location / {\n            proxy_pass http://u;\n        }\n    }\n}\n",
    )
    .unwrap();
    let htpasswd = dir.0.join("htpasswd");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(&htpasswd, format!("prometheus:{hash}\n")).unwrap();
    let _d = fulcrum_e2e::spawn_fulcrum(
        &mut lab,
        &host,
        &keepalived,
        &dir.0,
        "px",
        &[
            "--nginx-conf",
            nginx.to_str().unwrap(),
            "--no-forwarding",
            "--metrics",
            "127.0.0.1:9100",
            "--metrics-htpasswd",
            htpasswd.to_str().unwrap(),
        ],
    );
    let get = |path: &str, user_pass: Option<&str>| {
        let header = user_pass.map(|u| {
            format!(
                "Authorization: Basic {}",
                base64::engine::general_purpose::STANDARD.encode(u)
            )
        });
        let mut extra = Vec::new();
        if let Some(h) = &header {
            extra.extend(["--header", h.as_str()]);
        }
        lab.request_full(&host, "127.0.0.1:9100", &[path], &extra)
            .unwrap()
            .into_iter()
            .next()
            .unwrap_or_default()
    };
    let good = Some("prometheus:s3cret");
    assert!(
        wait_for(Duration::from_secs(10), || get("/metrics", good).0 == 200).is_some(),
        "the listener never answered"
    );
    let (status, head, _) = get("/metrics", None);
    assert_eq!(status, 401);
    assert!(
        head.contains("WWW-Authenticate: Basic realm=\"fulcrum\"")
            || head
                .to_lowercase()
                .contains("www-authenticate: basic realm=\"fulcrum\""),
        "{head}"
    );
    assert_eq!(get("/", Some("prometheus:wrong")).0, 401);
    assert_eq!(get("/status.csv", Some("someone:s3cret")).0, 401);
    // The CSV, once the check has passed.
    let row = "checker,10.9.9.9:80 TCP,127.0.0.1:9001 TCP_CHECK,up,";
    wait_for(Duration::from_secs(10), || {
        get("/status.csv", good).2.contains(row)
    })
    .expect("no checker row in the CSV");
    let csv = get("/status.csv", good).2;
    let mut lines = csv.lines();
    assert!(lines
        .next()
        .unwrap()
        .starts_with("# type,name,member,state,since,"));
    let peer = csv
        .lines()
        .find(|l| l.starts_with("upstream,u,127.0.0.1:9001,up,"))
        .unwrap_or_else(|| panic!("{csv}"));
    assert_eq!(peer.split(',').count(), 19, "{peer}");
    let since: u64 = csv
        .lines()
        .find(|l| l.starts_with("checker,"))
        .and_then(|l| l.split(',').nth(4))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(since <= now && now - since < 60, "since {since}, now {now}");
    // The JSON the dashboard shows.
    let json: serde_json::Value = serde_json::from_str(&get("/status.json", good).2).unwrap();
    let rs = &json["health"][0]["real_servers"][0];
    assert_eq!(rs["address"], "127.0.0.1:9001");
    assert!(rs["changed_at"].as_u64().is_some_and(|t| t > 0), "{rs}");
    assert_eq!(json["upstreams"][0]["address"], "127.0.0.1:9001");
}

/// `fulcrum run` on an nginx.conf alone (no data plane), logging to `log`.
fn run_proxy(
    lab: &mut fulcrum_lab::Lab,
    host: &Host,
    conf: &Path,
    sock: &Path,
    log: &Path,
) -> fulcrum_lab::Process {
    lab.spawn(
        host,
        &[
            fulcrum_e2e::bin().as_ref(),
            "run".as_ref(),
            "--nginx-conf".as_ref(),
            conf.as_os_str(),
            "--control".as_ref(),
            sock.as_os_str(),
            "--no-forwarding".as_ref(),
        ],
        Some(log),
    )
    .unwrap()
}

/// A field of /proc/PID/status.
fn proc_status(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

/// The process that parses HTTP is not the daemon: it runs as nginx.conf's `user` with
/// no capabilities and no_new_privs, the daemon keeping its own. Killed, it is replaced
/// while a client connects every 5 ms: no connection is refused or goes unanswered (the
/// listening socket stays in the daemon), only one the worker was serving ends with it.
#[test]
fn workers_run_unprivileged_and_are_replaced() {
    if !require_root("workers_run_unprivileged_and_are_replaced") {
        return;
    }
    let dir = Scratch::new("l7wrk");
    let mut lab = fulcrum_lab::Lab::new("l7wrk").unwrap().with_agent(agent());
    let host = lab.host("px").unwrap();
    lab.serve(&host, "b1", "127.0.0.1:9001", true).unwrap();
    let conf = dir.0.join("nginx.conf");
    std::fs::write(
        &conf,
        "user nobody nogroup;\nevents {\n    worker_connections 512;\n}\nhttp {\n    access_log off;\n    upstream u {\n        server 127.0.0.1:9001;\n    }\n    server {\n        listen 127.0.0.1:80;\n        location / {\n            proxy_pass http://u;\n        }\n    }\n}\n",
    )
    .unwrap();
    let sock = dir.0.join("px.sock");
    let daemon = run_proxy(&mut lab, &host, &conf, &sock, &dir.0.join("px.log"));
    let up = wait_for(Duration::from_secs(10), || {
        lab.request(&host, "127.0.0.1:80", &["/"], &[])
            .is_ok_and(|r| r[0].0 == 200)
    });
    let log = || std::fs::read_to_string(dir.0.join("px.log")).unwrap_or_default();
    assert!(up.is_some(), "the proxy never answered: {}", log());
    let workers = workers_of(daemon.pid);
    assert_eq!(workers.len(), 1, "one worker process: {workers:?}");
    let worker = workers[0];
    let nobody = nix_id("nobody");
    assert_eq!(
        proc_status(worker, "Uid:")
            .split_whitespace()
            .collect::<Vec<_>>(),
        [nobody.as_str(); 4],
        "the worker runs as nobody"
    );
    for field in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
        assert_eq!(
            proc_status(worker, field),
            "0000000000000000",
            "{field} of the worker"
        );
    }
    assert_eq!(proc_status(worker, "NoNewPrivs:"), "1");
    // The daemon keeps what it needs (it bound port 80 for the worker).
    assert_ne!(proc_status(daemon.pid, "CapEff:"), "0000000000000000");
    assert_eq!(
        proc_status(daemon.pid, "Uid:").split_whitespace().next(),
        Some("0")
    );

    let agent_cmd = lab.agent_command(&host).unwrap();
    let watcher = Command::new(&agent_cmd[0])
        .args(&agent_cmd[1..])
        .args(["watch", "--connect", "127.0.0.1:80", "--every-ms", "5"])
        .args(["--for-ms", "3000", "--timeout-ms", "2000", "--http"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-KILL", &worker.to_string()])
        .status();
    let replaced = wait_for(Duration::from_secs(5), || {
        let now = workers_of(daemon.pid);
        // Serving once it has become nobody (it starts as root, to read keys).
        now.len() == 1
            && now[0] != worker
            && proc_status(now[0], "Uid:").starts_with(&format!("{nobody}\t"))
    });
    assert!(replaced.is_some(), "no new worker: {}", log());
    let new = workers_of(daemon.pid)[0];
    assert_eq!(proc_status(new, "CapEff:"), "0000000000000000");
    let out = watcher.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(' ').map(|x| x.1))
        .collect();
    // A connection the killed worker was serving ends with it (as with nginx: an empty
    // answer); none is refused or left unanswered.
    let broken = answers.iter().filter(|a| a.is_empty()).count();
    let failed: Vec<&&str> = answers
        .iter()
        .filter(|a| !a.is_empty() && !a.starts_with('b'))
        .collect();
    eprintln!(
        "{} connections across a worker's death: {} cut with it, {} failed",
        answers.len(),
        broken,
        failed.len()
    );
    assert!(answers.len() > 100, "{} connections", answers.len());
    assert!(
        broken <= 2,
        "{broken} connections cut by the worker's death"
    );
    assert!(
        failed.is_empty(),
        "connections failed: {failed:?}\n{}",
        log()
    );
    assert!(log().contains("starting another"), "{}", log());
}

/// `worker_processes 2` runs two unprivileged worker processes, as nginx does, and what
/// nginx keeps in shared memory is one across them: a limit_req zone admits one request
/// a minute whichever worker takes it, stub_status adds up both workers' counts,
/// `$connection` never repeats. A killed worker is replaced on the same zone, and a
/// reload that leaves the zone's declaration as it was keeps its state (nginx's shared
/// memory survives a reload the same way).
#[test]
fn worker_processes_share_limit_zones_and_counters() {
    if !require_root("worker_processes_share_limit_zones_and_counters") {
        return;
    }
    let dir = Scratch::new("l7wps");
    let mut lab = fulcrum_lab::Lab::new("l7wps").unwrap().with_agent(agent());
    let host = lab.host("px").unwrap();
    let conf = dir.0.join("nginx.conf");
    std::fs::write(
        &conf,
        "user nobody nogroup;\nworker_processes 2;\nevents {\n    worker_connections 512;\n}\nhttp {\n    access_log off;\n    limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;\n    server {\n        listen 127.0.0.1:80 reuseport;\n        add_header X-Pid $pid always;\n        add_header X-Conn $connection always;\n        location = /limited {\n            limit_req zone=one;\n            stub_status;\n        }\n        location = /status {\n            stub_status;\n        }\n        location / {\n            return 200 \"ok\\n\";\n        }\n    }\n}\n",
    )
    .unwrap();
    let sock = dir.0.join("px.sock");
    let daemon = run_proxy(&mut lab, &host, &conf, &sock, &dir.0.join("px.log"));
    let log = || std::fs::read_to_string(dir.0.join("px.log")).unwrap_or_default();
    let up = wait_for(Duration::from_secs(10), || {
        lab.request(&host, "127.0.0.1:80", &["/"], &[])
            .is_ok_and(|r| r[0].0 == 200)
    });
    assert!(up.is_some(), "the proxy never answered: {}", log());
    let nobody = nix_id("nobody");
    let serving = |pids: &[u32]| {
        pids.len() == 2
            && pids
                .iter()
                .all(|p| proc_status(*p, "Uid:").starts_with(&format!("{nobody}\t")))
    };
    let both = wait_for(Duration::from_secs(10), || serving(&workers_of(daemon.pid)));
    assert!(both.is_some(), "two worker processes: {}", log());
    let workers = workers_of(daemon.pid);
    for w in &workers {
        assert_eq!(proc_status(*w, "CapEff:"), "0000000000000000");
    }

    // Each request on a connection of its own: reuseport spreads them over both.
    let header = |head: &str, name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let mut statuses = Vec::new();
    let mut pids = std::collections::BTreeSet::new();
    let mut serials = std::collections::BTreeSet::new();
    let connections = 24;
    for _ in 0..connections {
        let r = lab
            .request_full(&host, "127.0.0.1:80", &["/limited"], &[])
            .unwrap();
        let (status, head, _) = &r[0];
        statuses.push(*status);
        pids.insert(header(head, "X-Pid"));
        serials.insert(header(head, "X-Conn"));
    }
    let served_by: Vec<u32> = pids.iter().filter_map(|p| p.parse().ok()).collect();
    assert_eq!(
        served_by
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        workers.iter().copied().collect(),
        "both workers served"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "one request a minute admitted across both workers: {statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        connections - 1
    );
    assert_eq!(
        serials.len(),
        connections,
        "$connection repeated: {serials:?}"
    );

    // stub_status counts what both accepted: the first request, the 24, and this one.
    let status = lab
        .request(&host, "127.0.0.1:80", &["/status"], &[])
        .unwrap();
    let counts: Vec<u64> = status[0]
        .1
        .lines()
        .nth(2)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        counts.len() == 3 && counts[0] == counts[1] && counts[0] >= connections as u64 + 2,
        "accepts handled requests: {}",
        status[0].1
    );
    assert!(
        status[0].1.starts_with("Active connections: 1 \n"),
        "{}",
        status[0].1
    );

    // A killed worker: replaced, on the same zone.
    let _ = Command::new("kill")
        .args(["-KILL", &workers[0].to_string()])
        .status();
    let replaced = wait_for(Duration::from_secs(10), || {
        let now = workers_of(daemon.pid);
        serving(&now) && !now.contains(&workers[0]) && now.contains(&workers[1])
    });
    assert!(
        replaced.is_some(),
        "no worker in the killed one's place: {}",
        log()
    );
    let after_kill = workers_of(daemon.pid);
    let limited = |lab: &fulcrum_lab::Lab| -> Vec<u16> {
        (0..8)
            .map(|_| {
                lab.request(&host, "127.0.0.1:80", &["/limited"], &[])
                    .unwrap()[0]
                    .0
            })
            .collect()
    };
    assert_eq!(limited(&lab), [503; 8], "the zone outlived the worker");
    let status = lab
        .request(&host, "127.0.0.1:80", &["/status"], &[])
        .unwrap();
    let accepted: u64 = status[0]
        .1
        .lines()
        .nth(2)
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        accepted >= counts[0] + 9,
        "the killed worker's counts were kept: {accepted} after {}",
        counts[0]
    );

    // A reload of a changed file: new workers, the unchanged zone and its state kept.
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace("return 200 \"ok\\n\"", "return 200 \"ok again\\n\""),
    )
    .unwrap();
    assert!(
        fulcrum_e2e::ctl(&sock, &["reload"]).status.success(),
        "{}",
        log()
    );
    let reloaded = wait_for(Duration::from_secs(10), || {
        let now = workers_of(daemon.pid);
        serving(&now) && now.iter().all(|p| !after_kill.contains(p))
    });
    assert!(
        reloaded.is_some(),
        "new workers after the reload: {}",
        log()
    );
    assert!(lab.request(&host, "127.0.0.1:80", &["/"], &[]).unwrap()[0]
        .1
        .starts_with("ok again\n"));
    assert_eq!(
        limited(&lab),
        [503; 8],
        "the zone's state outlived the reload"
    );
}

/// A user's uid, as `id -u` says.
fn nix_id(user: &str) -> String {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A site as operators write one, end to end through the worker: plain HTTP redirected
/// to HTTPS, TLS with HSTS and a header of our own added, the client's address taken
/// from X-Forwarded-For only when a trusted front sends it, a rate limit per client
/// (keyed by that address), the usual proxy headers to a pool of two, and a maintenance
/// page through error_page while a flag file exists.
#[test]
fn a_real_world_site_end_to_end() {
    if !require_root("a_real_world_site_end_to_end") {
        return;
    }
    let dir = Scratch::new("l7site");
    let d = dir.0.display().to_string();
    let mut lab = fulcrum_lab::Lab::new("l7site").unwrap().with_agent(agent());
    let px = lab.host("px").unwrap();
    let cl = lab.host("cl").unwrap();
    lab.link(&px, "eth0", &cl, "eth0").unwrap();
    lab.addr(&px, "eth0", "10.62.0.1/24").unwrap();
    // .2 is the trusted front (a load balancer before us), .3 a client straight in.
    lab.addr(&cl, "eth0", "10.62.0.2/24").unwrap();
    lab.addr(&cl, "eth0", "10.62.0.3/24").unwrap();
    for (name, at) in [("b1", "127.0.0.1:9001"), ("b2", "127.0.0.1:9002")] {
        lab.serve_with(&px, name, at, &["--http", "--echo"])
            .unwrap();
    }
    let cert = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=shop.example",
            "-keyout",
            "site.key",
            "-out",
            "site.crt",
        ])
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert!(cert.status.success(), "openssl: {cert:?}");
    std::fs::create_dir(dir.0.join("www")).unwrap();
    std::fs::write(dir.0.join("www/maintenance.html"), "<h1>Back soon</h1>\n").unwrap();
    let conf = dir.0.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            r#"user nobody nogroup;
events {{}}
http {{
    access_log {d}/access.log;
    limit_req_zone $binary_remote_addr zone=perip:1m rate=1r/s;
    limit_req_status 429;
    set_real_ip_from 10.62.0.2;
    real_ip_header X-Forwarded-For;
    real_ip_recursive on;
    upstream app {{
        server 127.0.0.1:9001;
        server 127.0.0.1:9002;
    }}
    server {{
        listen 80;
        server_name shop.example;
        return 301 https://$host$request_uri;
    }}
    server {{
        listen 443 ssl;
        server_name shop.example;
        ssl_certificate {d}/site.crt;
        ssl_certificate_key {d}/site.key;
        add_header Strict-Transport-Security "max-age=31536000" always;
        add_header X-Served-By fulcrum;
        error_page 503 /maintenance.html;
        location = /maintenance.html {{
            root {d}/www;
            internal;
        }}
        location / {{
            if (-f {d}/maintenance.on) {{
                return 503;
            }}
            limit_req zone=perip burst=5 nodelay;
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_pass http://app;
        }}
    }}
}}
"#
        ),
    )
    .unwrap();
    let log = dir.0.join("px.log");
    let _daemon = run_proxy(&mut lab, &px, &conf, &dir.0.join("px.sock"), &log);
    // curl from the client's namespace, from one of its addresses; its output, or why
    // it failed (refused while the proxy starts).
    let curl = |from: &str, args: &[&str]| -> String {
        let out = lab.exec(
            &cl.netns,
            ["curl", "-sk", "--max-time", "5", "--interface", from]
                .iter()
                .chain(["--resolve", "shop.example:443:10.62.0.1"].iter())
                .chain(["--resolve", "shop.example:80:10.62.0.1"].iter())
                .chain(args.iter()),
        );
        match out {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(e) => format!("curl failed: {e}"),
        }
    };
    let up = wait_for(Duration::from_secs(10), || {
        curl(
            "10.62.0.3",
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://shop.example/",
            ],
        ) == "301"
    });
    assert!(
        up.is_some(),
        "the site never answered: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // HTTP goes to HTTPS, path and query kept.
    let moved = curl(
        "10.62.0.3",
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "http://shop.example/cart?item=7",
        ],
    );
    assert_eq!(moved, "301 https://shop.example/cart?item=7");

    // Over TLS: the backend sees the proxy headers; the answer carries the added ones. A
    // client straight in cannot claim another address with X-Forwarded-For.
    let direct = curl(
        "10.62.0.3",
        &[
            "-i",
            "-H",
            "X-Forwarded-For: 198.51.100.9",
            "https://shop.example/hello",
        ],
    );
    assert!(direct.starts_with("HTTP/1.1 200"), "{direct}");
    assert!(
        direct.contains("Strict-Transport-Security: max-age=31536000\r\n"),
        "{direct}"
    );
    assert!(direct.contains("X-Served-By: fulcrum\r\n"), "{direct}");
    for seen in [
        "X-Real-IP: 10.62.0.3",
        "X-Forwarded-For: 198.51.100.9, 10.62.0.3",
        "X-Forwarded-Proto: https",
        "Host: shop.example",
    ] {
        assert!(
            direct.contains(seen),
            "the backend did not get {seen:?}: {direct}"
        );
    }
    // Through the trusted front, the client's address is the one it forwards.
    let fronted = curl(
        "10.62.0.2",
        &[
            "-i",
            "-H",
            "X-Forwarded-For: 203.0.113.7",
            "https://shop.example/via-front",
        ],
    );
    assert!(fronted.contains("X-Real-IP: 203.0.113.7"), "{fronted}");

    // The rate limit: 1 r/s with a burst of 5, per client address (the real one, behind
    // the front). Twelve at once from a client new to it: six pass (one, and the
    // burst), the rest get 429.
    let urls: Vec<String> = (0..12)
        .map(|i| format!("https://shop.example/burst/{i}"))
        .collect();
    let mut args = vec![
        "-w",
        "%{http_code}\n",
        "-H",
        "X-Forwarded-For: 203.0.113.20",
    ];
    for u in &urls {
        args.extend(["-o", "/dev/null", u.as_str()]);
    }
    let codes = curl("10.62.0.2", &args);
    let passed = codes.lines().filter(|c| *c == "200").count();
    let limited = codes.lines().filter(|c| *c == "429").count();
    assert!(
        (6..=7).contains(&passed) && passed + limited == 12,
        "burst of 12: {codes}"
    );
    // Another client behind the same front has its own bucket.
    let other = curl(
        "10.62.0.2",
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "X-Forwarded-For: 203.0.113.8",
            "https://shop.example/other",
        ],
    );
    assert_eq!(other, "200");

    // Maintenance: while the flag file is there, every page is the maintenance page,
    // 503, with HSTS still on it; the backends see nothing.
    std::fs::write(dir.0.join("maintenance.on"), "").unwrap();
    let down = curl(
        "10.62.0.2",
        &[
            "-i",
            "-H",
            "X-Forwarded-For: 203.0.113.9",
            "https://shop.example/anything",
        ],
    );
    assert!(down.starts_with("HTTP/1.1 503"), "{down}");
    assert!(down.contains("<h1>Back soon</h1>"), "{down}");
    assert!(
        down.contains("Strict-Transport-Security: max-age=31536000\r\n"),
        "{down}"
    );
    assert!(!down.contains("X-Real-IP"), "a backend answered: {down}");
    // The page itself is internal: not reachable by its own URL.
    std::fs::remove_file(dir.0.join("maintenance.on")).unwrap();
    let page = curl(
        "10.62.0.2",
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "X-Forwarded-For: 203.0.113.10",
            "https://shop.example/maintenance.html",
        ],
    );
    assert_eq!(page, "404");
    let back = curl(
        "10.62.0.2",
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "X-Forwarded-For: 203.0.113.11",
            "https://shop.example/",
        ],
    );
    assert_eq!(back, "200");

    // The access log names the real clients.
    let access = std::fs::read_to_string(dir.0.join("access.log")).unwrap_or_default();
    assert!(
        access
            .lines()
            .any(|l| l.starts_with("203.0.113.7 ") && l.contains("/via-front")),
        "{access}"
    );
    assert!(
        access
            .lines()
            .any(|l| l.starts_with("203.0.113.20 ") && l.contains(" 429 ")),
        "{access}"
    );
}
