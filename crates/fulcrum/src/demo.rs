//! `fulcrum demo`: the reference deployments, built in network namespaces and shown working.
//!
//! What it shows grows with the project. Today: each topology is built with MISSION.md's
//! addresses, every real server answers real TCP from its director, and the example
//! configuration for the deployment is loaded and summarised. Forwarding through the VIP
//! arrives with the layer-4 data plane, and failover with VRRP.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use fulcrum_lab::reference::{self, Deployment, Reference};
use fulcrum_lab::Agent;

use crate::config::Sources;
use crate::DemoArgs;

pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    if !fulcrum_lab::is_root() {
        bail!(
            "the demo builds network namespaces and needs root: run it as root (sudo fulcrum demo)"
        );
    }
    let deployments: Vec<Deployment> = match &args.only {
        Some(name) => vec![Deployment::from_name(name).with_context(|| {
            format!("unknown deployment '{name}': use nat, dr, keepalived-ha or nginx-ha")
        })?],
        None => Deployment::ALL.to_vec(),
    };
    let exe = std::env::current_exe().context("cannot find the fulcrum binary")?;
    let examples = examples_dir(&exe);

    // The work runs on its own thread so that Ctrl-C can clean up while it is blocked.
    let worker = std::thread::spawn(move || -> anyhow::Result<()> {
        for d in deployments {
            show(d, &exe, examples.as_deref())?;
        }
        Ok(())
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let interrupted = rt.block_on(async {
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = int.recv() => return Ok::<bool, std::io::Error>(true),
                _ = term.recv() => return Ok(true),
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                    if worker.is_finished() {
                        return Ok(false);
                    }
                }
            }
        }
    })?;
    if interrupted {
        let removed = fulcrum_lab::remove_all_of_this_process();
        eprintln!("interrupted: removed {removed} namespace(s)");
        return Ok(ExitCode::from(130));
    }
    match worker.join() {
        Ok(result) => result.map(|()| ExitCode::SUCCESS),
        Err(_) => bail!("the demo failed (see above); its namespaces were removed"),
    }
}

/// Example configurations: next to the binary's source tree when run from a checkout.
fn examples_dir(exe: &Path) -> Option<PathBuf> {
    let from_manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    if from_manifest.is_dir() {
        return Some(from_manifest);
    }
    exe.ancestors()
        .map(|a| a.join("examples"))
        .find(|p| p.is_dir())
}

fn show(d: Deployment, exe: &Path, examples: Option<&Path>) -> anyhow::Result<()> {
    println!("=== {} ===", d.title());
    let agent = Agent::new(exe, &["lab-agent"]);
    let mut r: Reference = reference::build(d, "demo", Some(agent))
        .with_context(|| format!("building {}", d.name()))?;
    print!("{}", r.describe());

    // Real servers answer who they are, over real TCP from the director.
    let director = r.directors[0].clone();
    for (i, rs) in r.real_servers.clone().iter().enumerate() {
        let name = format!("RIP{} {}", i + 1, r.rips[i]);
        r.lab.serve(rs, &name, "0.0.0.0:80", true)?;
    }
    for rip in r.rips.clone() {
        let answers = r.lab.probe(&director, &format!("{rip}:80"), 3, true)?;
        println!(
            "  {} -> {rip}:80  3 HTTP requests answered by: {}",
            director.name,
            answers.join(", ")
        );
    }
    r.lab
        .serve(&director, &director.name, "0.0.0.0:8081", true)?;
    let answers = r.lab.probe(
        &r.client.clone(),
        &format!("{}:8081", reference::DIP1),
        1,
        true,
    )?;
    println!(
        "  client -> {}:8081 answered by: {}",
        reference::DIP1,
        answers.join(", ")
    );

    if let Some(dir) = examples {
        summarise(d, dir);
    }
    println!(
        "  next: forwarding through the VIP (layer-4 data plane) and failover (VRRP) are not in this build yet\n"
    );
    Ok(())
}

fn summarise(d: Deployment, dir: &Path) {
    let (file, id, nginx) = match d {
        Deployment::LvsNat => ("lvs-nat.keepalived.conf", None, None),
        Deployment::LvsDr => ("lvs-dr.keepalived.conf", None, None),
        Deployment::KeepalivedHa => ("keepalived-ha.keepalived.conf", Some("lb1"), None),
        Deployment::NginxHa => (
            "nginx-ha.keepalived.conf",
            Some("proxy1"),
            Some("nginx-ha.nginx.conf"),
        ),
    };
    let sources = Sources {
        keepalived: Some(dir.join(file)),
        nginx: nginx.map(|n| dir.join(n)),
        config_id: id.map(str::to_string),
        host_checks: false,
        strict: false,
    };
    let (config, report) = sources.load();
    let Some(config) = config else {
        println!("  examples/{file}: invalid\n{}", report.text);
        return;
    };
    let mut parts = Vec::new();
    if let Some(k) = &config.keepalived {
        for i in &k.vrrp_instances {
            parts.push(format!(
                "vrrp_instance {} (VRID {}, priority {})",
                i.name, i.virtual_router_id, i.priority
            ));
        }
        for v in &k.virtual_servers {
            let rs: Vec<String> = v
                .real_servers
                .iter()
                .map(|r| format!("{} w{}", r.addr, r.weight))
                .collect();
            let key = match &v.key {
                fulcrum_keepalived_conf::ServiceKey::Address { addr, port } => {
                    format!("{addr}:{port}")
                }
                other => format!("{other:?}"),
            };
            parts.push(format!(
                "virtual_server {key} {} {} -> {}",
                v.lb_algo,
                v.forward_method(),
                rs.join(", ")
            ));
        }
    }
    if let Some(http) = config.nginx.as_ref().and_then(|n| n.http.as_ref()) {
        for u in &http.upstreams {
            let s: Vec<String> = u
                .servers
                .iter()
                .map(|s| format!("{}:{}", s.host, s.port))
                .collect();
            parts.push(format!("upstream {} -> {}", u.name, s.join(", ")));
        }
    }
    let id = id.map(|i| format!(" (-i {i})")).unwrap_or_default();
    println!("  examples/{file}{id} is valid:");
    for p in parts {
        println!("    {p}");
    }
}
