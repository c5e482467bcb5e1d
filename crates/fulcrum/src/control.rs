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

use fulcrum_node::status::{Daemon, Drained, IpvsConnection, Listing};

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
        CtlCommand::Bgp => ("bgp", vec![]),
        CtlCommand::DrainDirector => ("drain-director", vec![]),
        CtlCommand::UndrainDirector => ("undrain-director", vec![]),
    };
    let mut response = call_with(&args.control, command, extra)?;
    if let CtlCommand::Conns {
        service,
        real_server,
        client,
    } = &args.command
    {
        // A refusal has no result and is printed below.
        if let Some(r) = response.result.take() {
            // A filter matches "ADDR:PORT" exactly, or any port of ADDR.
            let matches = |filter: &Option<String>, v: &str| {
                filter
                    .as_deref()
                    .is_none_or(|f| v == f || v.rsplit_once(':').is_some_and(|(addr, _)| addr == f))
            };
            let listing: Listing = serde_json::from_value(r).context("unreadable listing")?;
            let conns: Vec<IpvsConnection> = listing
                .connections
                .into_iter()
                .filter(|c| {
                    matches(service, &c.virtual_)
                        && matches(real_server, &c.destination)
                        && matches(client, &c.source)
                })
                .collect();
            response.result = Some(serde_json::to_value(conns)?);
        }
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
    let unreadable = || format!("unreadable answer to `{command}`");
    match &args.command {
        CtlCommand::Conns { .. } => {
            crate::show::conns(&read::<Vec<_>>(r).with_context(unreadable)?)
        }
        CtlCommand::Drain { target } | CtlCommand::Undrain { target } => {
            let d: Drained = read(r).with_context(unreadable)?;
            println!(
                "{command}ed {target}: {} real server(s), {} upstream peer(s)",
                d.real_servers, d.upstream_peers
            )
        }
        CtlCommand::Status => {
            crate::show::status(&read(r).with_context(unreadable)?);
            let get = |command: &str| {
                call_with(&args.control, command, vec![])
                    .ok()
                    .filter(|r| r.ok)
                    .and_then(|r| r.result)
                    .unwrap_or_default()
            };
            crate::show::overview(
                &read::<Vec<_>>(get("vrrp")).unwrap_or_default(),
                &read(get("ipvs")).unwrap_or_default(),
                &read::<Vec<_>>(get("health")).unwrap_or_default(),
                &read::<Vec<_>>(get("upstreams")).unwrap_or_default(),
            );
            if let Ok(b) = read(get("bgp")) {
                println!();
                crate::show::bgp(&b);
            }
        }
        CtlCommand::Reload => {
            let d: Daemon = read(r).with_context(unreadable)?;
            println!("reloaded: configuration {}", d.config.hash)
        }
        CtlCommand::Vrrp => crate::show::vrrp(&read::<Vec<_>>(r).with_context(unreadable)?),
        CtlCommand::Health => crate::show::health(&read::<Vec<_>>(r).with_context(unreadable)?),
        CtlCommand::Services => crate::show::services(&read(r).with_context(unreadable)?),
        CtlCommand::Upstreams => {
            crate::show::upstreams(&read::<Vec<_>>(r).with_context(unreadable)?)
        }
        CtlCommand::Bgp | CtlCommand::DrainDirector | CtlCommand::UndrainDirector => {
            crate::show::bgp(&read(r).with_context(unreadable)?)
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An answer's result as the node's type for it.
fn read<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> serde_json::Result<T> {
    serde_json::from_value(v)
}
