//! `fulcrum decap`: the decapsulator for TUN real servers whose kernel has no ipip, gre or
//! fou (as katran ships one for its real servers). It attaches an XDP program that takes
//! off what a director put on (ipip, gre, gue on the given ports) and hands the client's
//! packet to the kernel, which delivers it to the VIP the server holds on `lo`. The program
//! stays attached after the command ends (its link is pinned); `--detach` removes it and
//! `--stats` prints its counters.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct DecapArgs {
    /// The interface the tunnelled packets arrive on.
    #[arg(value_name = "IFACE")]
    interface: String,
    /// Take gue off on this UDP port (the real server's --tun-port); more than once for
    /// several.
    #[arg(long = "gue-port", value_name = "PORT")]
    gue_ports: Vec<u16>,
    /// Detach the decapsulator from the interface.
    #[arg(long, conflicts_with_all = ["gue_ports", "stats"])]
    detach: bool,
    /// Print the decapsulator's counters (packets of each tunnel type taken off,
    /// malformed ones, others passed).
    #[arg(long, conflicts_with = "gue_ports")]
    stats: bool,
    /// Where its link and maps are pinned: a directory on a bpffs (default
    /// /sys/fs/bpf/fulcrum/net-INODE/decap-IFACE, bpffs mounted there if need be).
    #[arg(long, value_name = "DIR")]
    bpf_dir: Option<PathBuf>,
}

/// DIR/decap-IFACE, beside the daemon's own pins when no --bpf-dir is given.
fn pin_dir(args: &DecapArgs) -> anyhow::Result<PathBuf> {
    let dir = match &args.bpf_dir {
        Some(d) => d.clone(),
        None => fulcrum_node::l4::default_bpf_dir()?,
    };
    Ok(dir.join(format!("decap-{}", args.interface)))
}

pub fn run(args: &DecapArgs) -> anyhow::Result<ExitCode> {
    let dir = pin_dir(args)?;
    if args.stats {
        let c = fulcrum_dataplane::decap_counters(&dir)
            .map_err(|e| anyhow::anyhow!("no decapsulator on {} ({e})", args.interface))?;
        println!(
            "{}: ipip {}, gue {}, gre {} decapsulated; {} malformed, {} other packets passed",
            args.interface, c.ipip, c.gue, c.gre, c.malformed, c.other
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.detach {
        if fulcrum_dataplane::detach_decap(&dir)? {
            println!("decapsulator detached from {}", args.interface);
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("fulcrum decap: no decapsulator on {}", args.interface);
        return Ok(ExitCode::from(1));
    }
    fulcrum_sys::if_index(&args.interface)
        .map_err(|e| anyhow::anyhow!("interface {}: {e}", args.interface))?;
    let mode = fulcrum_dataplane::attach_decap(&dir, &args.interface, &args.gue_ports)?;
    let ports: Vec<String> = args.gue_ports.iter().map(u16::to_string).collect();
    println!(
        "decapsulator on {} ({}): ipip, gre{}",
        args.interface,
        mode.name(),
        if ports.is_empty() {
            String::new()
        } else {
            format!(", gue on port {}", ports.join(", "))
        }
    );
    Ok(ExitCode::SUCCESS)
}
