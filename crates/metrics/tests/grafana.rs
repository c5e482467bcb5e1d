//! packaging/grafana-dashboard.json, the dashboard the Debian package ships: every metric
//! its queries name is one a scrape of a node that runs everything (VRRP, health checks,
//! the layer-4 data plane, the proxy) shows, so no panel stays empty for a typo or a
//! rename.

use std::collections::{BTreeSet, HashMap};

use std::path::Path;

use fulcrum_node::status::{
    CheckerHealth, Daemon, IpvsDest, IpvsService, Listing, Process, Rates, ServerHealth,
    ServiceHealth, Traffic, UpstreamPeer, VrrpInstance, XdpInterface,
};
use fulcrum_node::Status;
use serde_json::{json, Value};

/// A node with one of everything.
fn everything() -> Status {
    let vrrp: VrrpInstance = serde_json::from_value(json!({
        "name": "VI_1", "interface": "eth0", "vrid": 51, "state": "MASTER",
        "priority": 100, "effective_priority": 100, "master": null,
        "virtual_ipaddress": ["10.1.10.88/24"], "last_transition": null,
        "adverts_sent": 5, "transitions": 1, "adverts_received": 0,
        "dropped": [{"reason": "authentication mismatch", "count": 1}]
    }))
    .unwrap();
    let checker: CheckerHealth = serde_json::from_value(json!({
        "kind": "TCP_CHECK", "target": "192.168.184.129:80", "state": "up",
        "checks": 10, "failures": 1, "last_ok": true, "last_reason": null,
        "latency_us": 300, "last_check_at": 1, "changed_at": 1, "transitions": 1
    }))
    .unwrap();
    let server: ServerHealth = serde_json::from_value(json!({
        "address": "192.168.184.129:80", "alive": true, "weight": 1,
        "membership": {"in": true, "weight": 1}, "checkers": []
    }))
    .unwrap();
    let server = ServerHealth {
        checkers: vec![checker],
        ..server
    };
    let health: ServiceHealth = serde_json::from_value(json!({
        "virtual_server": "10.1.10.88:80 TCP", "quorum": 1, "hysteresis": 0,
        "has_quorum": true, "live_weight": 1, "sorry_server": null, "real_servers": []
    }))
    .unwrap();
    let health = ServiceHealth {
        real_servers: vec![server],
        ..health
    };
    let peer: UpstreamPeer = serde_json::from_value(json!({
        "upstream": "app", "server": "192.168.184.129:8080", "address": "192.168.184.129:8080",
        "backup": false, "weight": 1, "effective_weight": 1, "down": false,
        "check_down": false, "drained": false, "conns": 2, "fails": 0, "max_fails": 1
    }))
    .unwrap();
    let traffic = Traffic {
        conns: 3,
        inpkts: 30,
        outpkts: 20,
        inbytes: 3000,
        outbytes: 2000,
    };
    let dest = IpvsDest {
        address: "192.168.184.129".into(),
        port: 80,
        forward: "Masq".into(),
        tunnel: None,
        weight: 1,
        u_threshold: 0,
        l_threshold: 0,
        active: 1,
        inactive: 2,
        stats: traffic,
        rate: Rates::default(),
    };
    let service = IpvsService {
        protocol: "TCP".into(),
        address: "10.1.10.88".into(),
        port: 80,
        scheduler: "rr".into(),
        persistent: None,
        netmask: None,
        ops: false,
        flags: Vec::new(),
        stats: traffic,
        rate: Rates::default(),
        dests: vec![dest],
    };
    let mut l7 = fulcrum_proxy::stats::Counts::default();
    let addr = fulcrum_proxy::PeerAddr::Inet("192.168.184.129:8080".parse().unwrap());
    l7.requests.entry("www".into()).or_default().insert(200, 10);
    l7.tries
        .entry("app".into())
        .or_default()
        .insert((addr.clone(), 200), 10);
    l7.failures.entry("app".into()).or_default().insert(addr, 1);
    l7.retries.insert("app".into(), 1);
    l7.latency.insert("app".into(), Default::default());
    Status {
        daemon: Daemon {
            version: "1.0.0".into(),
            ..Daemon::default()
        },
        vrrp: vec![vrrp],
        health: vec![health],
        l4: Listing {
            services: vec![service],
            interfaces: vec![XdpInterface {
                name: "eth0".into(),
                mode: "native".into(),
            }],
            sync: None,
            ..Listing::default()
        },
        upstreams: vec![peer],
        l7: Some(l7),
        process: Process::default(),
        bgp: None,
    }
}

/// The sample names a scrape shows (`name` of `name{labels} value`).
fn exposed(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// Every metric name in a PromQL expression: the identifiers that are not functions,
/// aggregations, keywords, label matchers, grouping lists (`by (le, upstream)`), strings or
/// durations.
fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: [&str; 22] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "group",
    ];
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let skip_to = |from: usize, close: char| {
        let mut j = from;
        while j < chars.len() && chars[j] != close {
            j += 1;
        }
        j
    };
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '{' => i = skip_to(i, '}'),
            '[' => i = skip_to(i, ']'),
            '"' => i = skip_to(i + 1, '"'),
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i + 1 < chars.len()
                    && (chars[i + 1].is_ascii_alphanumeric() || matches!(chars[i + 1], '_' | ':'))
                {
                    i += 1;
                }
                let word: String = chars[start..=i].iter().collect();
                let next = (i + 1..chars.len()).find(|&j| !chars[j].is_whitespace());
                if GROUPING.contains(&word.as_str()) {
                    if let Some(j) = next.filter(|&j| chars[j] == '(') {
                        i = skip_to(j, ')');
                    }
                } else if !KEYWORDS.contains(&word.as_str()) && next.is_none_or(|j| chars[j] != '(')
                {
                    names.push(word);
                }
            }
            _ => {}
        }
        i += 1;
    }
    names
}

fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "expr" {
                    if let Some(e) = v.as_str() {
                        out.push(e.to_string());
                    }
                } else {
                    queries(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

#[test]
fn every_metric_the_dashboard_queries_exists() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .expect("the dashboard is JSON");
    assert!(dashboard["title"].is_string(), "no title");
    let mut exprs = Vec::new();
    queries(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "{exprs:?}");
    // Template variables: `label_values(METRIC, LABEL)` names a metric too.
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            let def = var["definition"].as_str().unwrap_or_default();
            let inner = def
                .strip_prefix("label_values(")
                .and_then(|r| r.split(',').next())
                .unwrap_or_else(|| panic!("variable {}: {def}", var["name"]));
            exprs.push(inner.trim().to_string());
        }
    }
    let scrape = exposed(&fulcrum_metrics::render(everything()));
    let mut missing: HashMap<String, Vec<String>> = HashMap::new();
    for e in &exprs {
        for name in metric_names(e) {
            if !scrape.contains(&name) {
                missing.entry(name).or_default().push(e.clone());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "queried but never exposed: {missing:#?}\nexposed: {scrape:#?}"
    );
}

#[test]
fn metric_names_are_read_out_of_promql() {
    assert_eq!(
        metric_names("fulcrum_vrrp_state{state=\"MASTER\"} == 1 and on (instance) up"),
        ["fulcrum_vrrp_state", "up"]
    );
    assert_eq!(
        metric_names("sum by (instance) (rate(fulcrum_http_requests_total{status=~\"5..\"}[5m]))"),
        ["fulcrum_http_requests_total"]
    );
    assert_eq!(
        metric_names("histogram_quantile(0.99, sum by (le, upstream) (rate(fulcrum_upstream_response_seconds_bucket[5m])))"),
        ["fulcrum_upstream_response_seconds_bucket"]
    );
}
