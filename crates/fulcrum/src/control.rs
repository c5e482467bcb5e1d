//! The control socket's protocol (docs/control-protocol.md) and `fulcrum ctl`.
//!
//! One JSON object per line each way: a request `{"version":1,"command":"status"}`, an
//! answer `{"version":1,"ok":true,"result":{...}}` or `{"version":1,"ok":false,"error":"..."}`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::{CtlArgs, CtlCommand};

pub const DEFAULT_SOCKET: &str = "/run/fulcrum/control.sock";
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    pub command: String,
    /// `ipvsadm`: command lines to apply together (ipvsadm's arguments, one vector each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Vec<String>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Response {
        Response {
            version: PROTOCOL_VERSION,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn error(message: impl Into<String>) -> Response {
        Response {
            version: PROTOCOL_VERSION,
            ok: false,
            result: None,
            error: Some(message.into()),
        }
    }
}

/// Sends one request with arguments and waits for its answer.
pub fn call_with(socket: &Path, command: &str, args: Vec<Vec<String>>) -> anyhow::Result<Response> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot connect to the fulcrum control socket {}: is `fulcrum run` running? (set --control or FULCRUM_CONTROL for another path)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let request = Request {
        version: PROTOCOL_VERSION,
        command: command.to_string(),
        args,
    };
    let mut line = serde_json::to_string(&request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .with_context(|| format!("no answer on {}", socket.display()))?;
    let response: Response = serde_json::from_str(&answer)
        .with_context(|| format!("unreadable answer on {}: {answer:?}", socket.display()))?;
    Ok(response)
}

pub fn ctl(args: &CtlArgs) -> anyhow::Result<ExitCode> {
    let (command, extra) = match &args.command {
        CtlCommand::Status => ("status", vec![]),
        CtlCommand::Reload => ("reload", vec![]),
        CtlCommand::Vrrp => ("vrrp", vec![]),
        CtlCommand::Health => ("health", vec![]),
        CtlCommand::Services => ("ipvs", vec![]),
        CtlCommand::Upstreams => ("upstreams", vec![]),
        CtlCommand::Drain { target } => ("drain", vec![vec![target.clone()]]),
        CtlCommand::Undrain { target } => ("undrain", vec![vec![target.clone()]]),
        CtlCommand::Conns { .. } => ("ipvs", vec![vec!["connections".to_string()]]),
    };
    let mut response = call_with(&args.control, command, extra)?;
    if let (
        CtlCommand::Conns {
            service,
            real_server,
            client,
        },
        Some(r),
    ) = (&args.command, response.result.as_mut())
    {
        // A filter matches "ADDR:PORT" exactly, or any port of ADDR.
        let matches = |filter: &Option<String>, value: &serde_json::Value| {
            let v = value.as_str().unwrap_or("");
            filter
                .as_deref()
                .is_none_or(|f| v == f || v.rsplit_once(':').is_some_and(|(addr, _)| addr == f))
        };
        let conns: Vec<serde_json::Value> = r["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| {
                matches(service, &c["virtual"])
                    && matches(real_server, &c["destination"])
                    && matches(client, &c["source"])
            })
            .cloned()
            .collect();
        *r = serde_json::Value::Array(conns);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&response)?);
        return Ok(if response.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    if !response.ok {
        eprintln!(
            "fulcrum: {} refused: {}",
            command,
            response.error.as_deref().unwrap_or("no reason given")
        );
        return Ok(ExitCode::from(1));
    }
    let r = response.result.unwrap_or_default();
    match &args.command {
        CtlCommand::Conns { .. } => {
            println!(
                "{:<4} {:<9} {:<12} {:<22} {:<22} destination",
                "pro", "expire", "state", "source", "virtual"
            );
            for c in r.as_array().into_iter().flatten() {
                let ms = c["expires_ms"].as_u64().unwrap_or(0) / 1000;
                println!(
                    "{:<4} {:02}:{:02}     {:<12} {:<22} {:<22} {}",
                    c["protocol"].as_str().unwrap_or(""),
                    ms / 60,
                    ms % 60,
                    c["state"].as_str().unwrap_or(""),
                    c["source"].as_str().unwrap_or(""),
                    c["virtual"].as_str().unwrap_or(""),
                    c["destination"].as_str().unwrap_or("")
                );
            }
        }
        CtlCommand::Drain { target } | CtlCommand::Undrain { target } => println!(
            "{command}ed {target}: {} real server(s), {} upstream peer(s)",
            r["real_servers"], r["upstream_peers"]
        ),
        CtlCommand::Status => {
            print_status(&r);
            print_overview(&args.control);
        }
        CtlCommand::Reload => println!(
            "reloaded: configuration {}",
            r["config"]["hash"].as_str().unwrap_or("?")
        ),
        CtlCommand::Vrrp => crate::vrrp::print_table(&r),
        CtlCommand::Health => crate::health::print_table(&r),
        CtlCommand::Services => print_services(&r),
        CtlCommand::Upstreams => print_upstreams(&r),
    }
    Ok(ExitCode::SUCCESS)
}

/// `fulcrum ctl upstreams`: one line per peer, grouped by upstream.
fn print_upstreams(r: &serde_json::Value) {
    let peers = r.as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        println!("layer-7 proxy: not running (no http block)");
        return;
    }
    let mut last = String::new();
    for p in &peers {
        let s = |k: &str| p[k].as_str().unwrap_or("").to_string();
        let u = |k: &str| p[k].as_i64().unwrap_or(0);
        if s("upstream") != last {
            last = s("upstream");
            println!("upstream {last}");
        }
        let mut flags = Vec::new();
        if p["backup"].as_bool() == Some(true) {
            flags.push("backup");
        }
        if p["down"].as_bool() == Some(true) {
            flags.push("down");
        }
        if p["check_down"].as_bool() == Some(true) {
            flags.push("check-down");
        }
        if p["drained"].as_bool() == Some(true) {
            flags.push("drained");
        }
        println!(
            "  {:<24} weight {:<3} effective {:<3} in-flight {:<5} fails {}/{} {}",
            s("address"),
            u("weight"),
            u("effective_weight"),
            u("conns"),
            u("fails"),
            u("max_fails"),
            flags.join(" ")
        );
    }
}

/// `fulcrum ctl services`: the data plane on one screen.
fn print_services(r: &serde_json::Value) {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let u = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let ifs: Vec<String> = r["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| format!("{} ({})", s(&i["name"]), s(&i["mode"])))
        .collect();
    if ifs.is_empty() {
        println!("data plane: not running");
        return;
    }
    println!("data plane on {}", ifs.join(", "));
    for svc in r["services"].as_array().into_iter().flatten() {
        println!(
            "{} {}:{} {}  {} conns  {} conn/s",
            s(&svc["protocol"]),
            s(&svc["address"]),
            u(&svc["port"]),
            s(&svc["scheduler"]),
            u(&svc["stats"]["conns"]),
            u(&svc["rate"]["cps"]),
        );
        for d in svc["dests"].as_array().into_iter().flatten() {
            println!(
                "  -> {:<22} {:<5} weight {:<4} active {:<6} inactive {:<6} {} conns",
                format!("{}:{}", s(&d["address"]), u(&d["port"])),
                s(&d["forward"]),
                u(&d["weight"]),
                u(&d["active"]),
                u(&d["inactive"]),
                u(&d["stats"]["conns"]),
            );
        }
    }
    let packets: Vec<String> = r["packets"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!("packets: {}", packets.join(", "));
}

/// The rest of `ctl status`'s screen: one line per VRRP instance, virtual service, real
/// server (with its checkers' verdict) and upstream peer, from the other commands.
fn print_overview(socket: &Path) {
    let get = |command: &str, args: Vec<Vec<String>>| {
        call_with(socket, command, args)
            .ok()
            .filter(|r| r.ok)
            .and_then(|r| r.result)
            .unwrap_or_default()
    };
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(x) => x.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    let vrrp = get("vrrp", vec![]);
    for i in vrrp.as_array().into_iter().flatten() {
        println!(
            "  vrrp  {:<12} {:<7} priority {} ({})  master {}  {}",
            s(&i["name"]),
            s(&i["state"]),
            s(&i["effective_priority"]),
            s(&i["priority"]),
            s(&i["master"]),
            i["virtual_ipaddress"]
                .as_array()
                .map(|a| a.iter().map(s).collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        );
    }
    let ipvs = get("ipvs", vec![]);
    let health = get("health", vec![]);
    let alive = |addr: &str| -> Option<(bool, String)> {
        health.as_array().into_iter().flatten().find_map(|vs| {
            vs["real_servers"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|r| {
                    (r["address"] == addr).then(|| {
                        let reason = r["checkers"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find_map(|c| (c["state"] == "down").then(|| s(&c["last_reason"])))
                            .unwrap_or_default();
                        (r["alive"] == true, reason)
                    })
                })
        })
    };
    for v in ipvs["services"].as_array().into_iter().flatten() {
        println!(
            "  l4    {} {}:{} {}  {} conn/s",
            s(&v["protocol"]),
            s(&v["address"]),
            s(&v["port"]),
            s(&v["scheduler"]),
            s(&v["rate"]["cps"])
        );
        for d in v["dests"].as_array().into_iter().flatten() {
            let addr = format!("{}:{}", s(&d["address"]), s(&d["port"]));
            let check = match alive(&addr) {
                Some((true, _)) => "up".to_string(),
                Some((false, why)) => format!("DOWN {why}"),
                None => "unchecked".to_string(),
            };
            println!(
                "        -> {addr:<22} weight {:<4} active {:<6} inactive {:<6} {check}",
                s(&d["weight"]),
                s(&d["active"]),
                s(&d["inactive"])
            );
        }
    }
    for p in get("upstreams", vec![]).as_array().into_iter().flatten() {
        let state = if p["drained"] == true {
            "drained"
        } else if p["down"] == true || p["check_down"] == true {
            "down"
        } else {
            "up"
        };
        println!(
            "  l7    upstream {} {:<22} {state:<7} in flight {}  fails {}/{}",
            s(&p["upstream"]),
            s(&p["address"]),
            s(&p["conns"]),
            s(&p["fails"]),
            s(&p["max_fails"])
        );
    }
}

fn print_status(r: &serde_json::Value) {
    let c = &r["config"];
    println!(
        "fulcrum {} (pid {})",
        r["version"].as_str().unwrap_or("?"),
        r["pid"]
    );
    println!("  up since      {} (unix time)", r["started_at"]);
    for (label, key) in [("keepalived.conf", "keepalived"), ("nginx.conf", "nginx")] {
        if let Some(p) = c[key].as_str() {
            println!("  {label:<13} {p}");
        }
    }
    println!(
        "  configuration {} loaded at {} (unix time)",
        c["hash"].as_str().unwrap_or("?"),
        c["loaded_at"]
    );
    println!(
        "  reloads       {} ok, {} refused",
        c["reloads_ok"], c["reloads_failed"]
    );
    if let Some(e) = c["last_reload_error"].as_str() {
        println!("  last refusal  {}", e.lines().next().unwrap_or(""));
    }
    let n = &r["counts"];
    println!(
        "  vrrp_instance {}   virtual_server {}   real_server {}   upstream {}   server {}",
        n["vrrp_instances"], n["virtual_servers"], n["real_servers"], n["upstreams"], n["servers"]
    );
}
