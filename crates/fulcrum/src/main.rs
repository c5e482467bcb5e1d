//! `fulcrum`: the one binary. Subcommands are thin: each parses its arguments and calls
//! into the crate that owns the work.

#![forbid(unsafe_code)]

mod check;
mod control;
mod daemon;
mod dashboard;
mod decap;
mod export;
mod genhash;
mod ipvsadm;
mod keepalived;
mod logging;
mod metrics;
mod nginx;
mod sd_notify;
mod show;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// `fulcrum --version` and `-V`: the version, the git revision, and the XDP program's
/// digest with the clang that built it (crates/fulcrum/build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nrevision ",
    env!("FULCRUM_REVISION"),
    "\nXDP program ",
    env!("FULCRUM_BPF_DIGEST"),
    ", built by ",
    env!("FULCRUM_BPF_CLANG")
);

/// LVS + keepalived + nginx in one daemon: layer-4 load balancing on XDP, VRRP that
/// interoperates with keepalived, keepalived's health checks, and an nginx-compatible
/// HTTP proxy. Reads your existing keepalived.conf and nginx.conf.
#[derive(Debug, Parser)]
#[command(
    name = "fulcrum",
    version = VERSION,
    long_version = VERSION,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon in the foreground, logging to stderr.
    ///
    /// Loads and validates the configuration, opens the control socket, reloads on SIGHUP
    /// (a configuration that fails validation is refused and the running one stays), and
    /// stops on SIGTERM or SIGINT. Given neither -f nor -c, it loads
    /// /etc/keepalived/keepalived.conf and /etc/nginx/nginx.conf, each if it exists; with
    /// neither, it runs for ipvsadm alone. The first ipvsadm edit starts the layer-4 data
    /// plane when the configuration forwards nothing.
    Run(Box<RunArgs>),
    /// Check configuration files like `keepalived -t` and `nginx -t` together.
    ///
    /// Prints every error and warning as FILE:LINE:COL with the source line, and exits 0
    /// when the configuration is valid, 1 when it is not, 2 when no file was given.
    Check(CheckArgs),
    /// Talk to a running daemon over its control socket.
    Ctl(CtlArgs),
    /// ipvsadm's command line against the running daemon: -L/-l [-n] [-c] [--stats]
    /// [--timeout] [--exact] [--nosort], -S. The same binary invoked as `ipvsadm` (a symlink) takes
    /// these arguments directly. `--control SOCKET` or FULCRUM_CONTROL names the daemon.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Ipvsadm {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// keepalived's command line (-f, -n, -t, -P, -C, -p, --signum, ...): runs only what
    /// keepalived.conf asks, writes keepalived's pid files and answers its signals. The same
    /// binary invoked as `keepalived` (a symlink) takes these arguments directly.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Keepalived {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// nginx's command line (-t, -T, -q, -s stop|quit|reopen|reload, -p, -c, -e, -g, -v,
    /// -V): runs only what nginx.conf asks, writes its pid file once the listening sockets
    /// are bound, forks with `daemon on`, and answers nginx's signals (QUIT stops
    /// gracefully; USR2, WINCH and QUIT upgrade the binary). The same binary invoked as
    /// `nginx` (a symlink) takes these arguments directly.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Nginx {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff, section 8), generated from the same definitions as
    /// --help; with --dir, write a page for every subcommand there (fulcrum.8,
    /// fulcrum-run.8, fulcrum-ctl-status.8, ...), as the Debian package installs them.
    Man {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Build the reference deployments in network namespaces and show them working.
    ///
    /// Needs root. Everything it creates is removed when it ends, also on Ctrl-C.
    Demo(DemoArgs),
    /// Print the MD5 digest of a URL's body for an HTTP_GET or SSL_GET url block, like
    /// keepalived's genhash (same options).
    Genhash(genhash::GenhashArgs),
    /// Attach the TUN decapsulator to a real server's interface, for kernels without ipip,
    /// gre or fou: it takes off what a director put on (ipip, gre, gue on --gue-port) and
    /// hands the client's packet to the kernel. It stays attached after the command ends;
    /// --stats prints its counters, --detach removes it. Needs root.
    Decap(decap::DecapArgs),
    /// The layer-7 proxy's worker process, started by the daemon (never by hand): it
    /// takes its configuration and listening sockets over its standard input, and serves
    /// as nginx's `user` with no capabilities.
    #[command(hide = true)]
    ProxyWorker(ProxyWorkerArgs),
    /// The lab's in-namespace agent (servers and probes for tests and the demo).
    #[command(hide = true, disable_help_flag = true)]
    LabAgent {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Where the configuration comes from. At least one of the two files is needed.
#[derive(Debug, Args, Clone)]
pub struct ConfigArgs {
    /// keepalived.conf: VRRP, virtual servers, real servers and their checkers.
    #[arg(short = 'f', long = "use-file", value_name = "KEEPALIVED_CONF")]
    pub keepalived: Option<PathBuf>,
    /// nginx.conf: the HTTP proxy's servers, locations and upstreams. With an http block the layer-7 proxy runs: its listeners are bound at start, and a reload applies changes without dropping a connection.
    #[arg(short = 'c', long = "nginx-conf", value_name = "NGINX_CONF")]
    pub nginx: Option<PathBuf>,
    /// keepalived's config id: selects `@ID` lines and skips `@^ID` lines. Defaults to the
    /// host name up to its first dot, as keepalived does.
    #[arg(short = 'i', long = "config-id", value_name = "CONFIG_ID")]
    pub config_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Path of the control socket (created mode 0600).
    #[arg(long, env = "FULCRUM_CONTROL", default_value = control::DEFAULT_SOCKET, value_name = "SOCKET")]
    pub control: PathBuf,
    /// Log level: error, warn, info, debug or trace (or a tracing filter).
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub log_level: String,
    /// Log lines as text or as JSON objects.
    #[arg(long, value_enum, default_value = "text", value_name = "FORMAT")]
    pub log_format: logging::Format,
    /// Where the log goes: stderr, syslog (/dev/log, a message per line) or journald (its
    /// native protocol: each event's priority, and its fields as FULCRUM_* journal fields).
    #[arg(long, value_enum, default_value = "stderr", value_name = "TARGET")]
    pub log_target: logging::Target,
    /// The syslog facility: daemon, user, syslog, local0 to local7, or 0 to 7 for LOCAL0
    /// to LOCAL7 as keepalived's -S.
    #[arg(long, default_value = "daemon", value_name = "FACILITY")]
    pub log_facility: logging::Facility,
    /// Do not load the XDP data plane: virtual_server rules are not forwarded and
    /// no_accept is not enforced (health checks, VRRP and the control socket still run).
    /// By default the data plane is attached to every interface of this network namespace
    /// except loopback (or those global_defs' fulcrum_xdp_interfaces names).
    #[arg(long)]
    pub no_forwarding: bool,
    /// Where the data plane's maps and links are pinned (a directory on a bpffs, mounted
    /// if needed). Default: /sys/fs/bpf/fulcrum/net-INODE, one per network namespace. A
    /// daemon killed with SIGKILL leaves forwarding running from there; the next start
    /// adopts the program's maps and connections.
    #[arg(long, value_name = "DIR")]
    pub bpf_dir: Option<PathBuf>,
    /// Leave forwarding running when stopping normally (SIGTERM, SIGINT), as keepalived's
    /// --dont-release-ipvs leaves the IPVS rules; the next start adopts it.
    #[arg(long)]
    pub keep_forwarding: bool,
    /// Size of the connection tables, in connections (IPv4's and IPv6's each hold this
    /// many). IPVS's table grows without bound; these are allocated up front, about 690
    /// bytes of kernel memory per connection for the two, so by default they take a 32nd
    /// of the machine's memory (at least 65,536 connections, at most 1,048,576); the size
    /// is logged at start.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u32>,

    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (global_defs'
    /// `fulcrum_metrics ADDR:PORT` does the same from keepalived.conf; this wins). Off by
    /// default.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Ask for HTTP basic auth on the metrics listener (metrics, dashboard, status.json and
    /// .csv): the users of this htpasswd file, with bcrypt passwords (`htpasswd -B`), as
    /// Prometheus' basic_auth sends them. Read at start.
    #[arg(long, value_name = "FILE")]
    pub metrics_htpasswd: Option<PathBuf>,

    /// Run as keepalived: its pid files, signals, fork and parts (set by its command line).
    #[arg(skip)]
    pub keepalived: Option<keepalived::AsKeepalived>,
    /// Run as nginx: its pid file, daemon and signals (set by its command line).
    #[arg(skip)]
    pub nginx: Option<nginx::AsNginx>,
    /// nginx's -g directives, read with nginx.conf at every load.
    #[arg(skip)]
    pub nginx_globals: Option<String>,
    /// Log to this file (nginx's -e) instead of --log-target.
    #[arg(skip)]
    pub log_file: Option<PathBuf>,
    /// What the command line that built these arguments has to say once logging runs.
    #[arg(skip)]
    pub warnings: Vec<String>,
}

/// The daemon's logging options, as its workers get them.
#[derive(Debug, Args)]
pub struct ProxyWorkerArgs {
    #[arg(long, default_value = "info")]
    pub log_level: String,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: logging::Format,
    #[arg(long, value_enum, default_value = "stderr")]
    pub log_target: logging::Target,
    #[arg(long, default_value = "daemon")]
    pub log_facility: logging::Facility,
    #[arg(long)]
    pub log_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Skip the checks against this host (interfaces exist in this network namespace,
    /// certificate files can be read): for checking a file meant for another machine.
    #[arg(long)]
    pub no_host_checks: bool,
    /// Treat warnings (unknown or unsupported keywords, ...) as errors.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Path of the daemon's control socket.
    #[arg(long, env = "FULCRUM_CONTROL", default_value = control::DEFAULT_SOCKET, value_name = "SOCKET", global = true)]
    pub control: PathBuf,
    /// Print the daemon's answer as JSON, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand, Clone)]
pub enum CtlCommand {
    /// What the daemon is running: configuration files, its hash, counts, reloads.
    Status,
    /// Reload the configuration, as SIGHUP does; prints the diagnostics if it is refused.
    Reload,
    /// VRRP instances: state, priorities, master, advert counters, last transition.
    Vrrp,
    /// Health checks: each virtual service's quorum, each real server's state and
    /// membership, each checker's state, last result, latency and reason.
    Health,
    /// The layer-4 data plane: interfaces and XDP mode, virtual services with their real
    /// servers, weights, connections and rates, and packets by verdict reason.
    Services,
    /// The layer-7 proxy's upstreams: each peer's weight, effective weight, requests in
    /// flight, passive-health failures, and whether it is down or backup.
    Upstreams,
    /// Take a server out for maintenance: weight 0 for the real servers at ADDR[:PORT] in
    /// every virtual service (their connections go on, no new ones), and no new requests
    /// to upstream peers at that address. Until `undrain` or a restart.
    Drain {
        #[arg(value_name = "ADDR[:PORT]")]
        target: String,
    },
    /// Put a drained server back: its weights and its upstream peers return.
    Undrain {
        #[arg(value_name = "ADDR[:PORT]")]
        target: String,
    },
    /// BGP (keepalived.conf's fulcrum_bgp): each session to a router, and each VIP,
    /// announced or withdrawn, and why.
    Bgp,
    /// Take this director out of an active-active group: its VIPs are announced with a
    /// longer AS path, so the router sends the flows to the other directors, then
    /// withdrawn once no packet comes (or after drain_timeout). Until `undrain-director`
    /// or a restart.
    DrainDirector,
    /// End a drain: the VIPs are announced as usual again.
    UndrainDirector,
    /// The layer-4 connection table (as `ipvsadm -Lnc`), filtered: by virtual service,
    /// real server or client (ADDR, or ADDR:PORT to match the port too).
    Conns {
        #[arg(long, value_name = "ADDR[:PORT]")]
        service: Option<String>,
        #[arg(long, value_name = "ADDR[:PORT]")]
        real_server: Option<String>,
        #[arg(long, value_name = "ADDR[:PORT]")]
        client: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Build only this deployment: nat, dr, keepalived-ha, nginx-ha, tun or active-active.
    #[arg(long, value_name = "NAME")]
    pub only: Option<String>,
}

/// `fulcrum man`: the root page on standard output, or every page into `dir`.
fn man(dir: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let mut root = <Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    root.build();
    let Some(dir) = dir else {
        clap_mangen::Man::new(root)
            .section("8")
            .render(&mut std::io::stdout())?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    man_pages(root, dir, &mut written)?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn man_pages(
    cmd: clap::Command,
    dir: &std::path::Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // keepalived's page shows keepalived's options, not the pass-through argument.
        let sub = if sub.get_name() == "keepalived" {
            let mut k = <keepalived::Args as clap::CommandFactory>::command()
                .name("keepalived")
                .display_name("fulcrum-keepalived")
                .bin_name("fulcrum keepalived");
            k.build();
            k
        } else {
            sub.clone()
        };
        man_pages(sub, dir, written)?;
    }
    written.push(clap_mangen::Man::new(cmd).section("8").generate_to(dir)?);
    Ok(())
}

fn main() -> ExitCode {
    let mut argv = std::env::args();
    let invoked = argv
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    match invoked.as_deref() {
        Some("ipvsadm") => return ipvsadm::run(argv.collect()),
        Some("keepalived") => return keepalived::main(std::env::args().collect()),
        Some("nginx") => return nginx::main(std::env::args().collect()),
        _ => {}
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => daemon::run(*args),
        Command::Check(args) => Ok(check::check(&args)),
        Command::Ctl(args) => control::ctl(&args),
        Command::Demo(args) => std::env::current_exe()
            .map_err(anyhow::Error::from)
            .and_then(|exe| fulcrum_demo::run(args.only.as_deref(), exe)),
        Command::Ipvsadm { args } => Ok(ipvsadm::run(args)),
        Command::Keepalived { args } => Ok(keepalived::main(
            std::iter::once("keepalived".to_string())
                .chain(args)
                .collect(),
        )),
        Command::Nginx { args } => Ok(nginx::main(
            std::iter::once("nginx".to_string()).chain(args).collect(),
        )),
        Command::Genhash(args) => genhash::run(&args),
        Command::Decap(args) => decap::run(&args),
        Command::ProxyWorker(args) => {
            let logged = match &args.log_file {
                Some(f) => logging::init_file(&args.log_level, f),
                None => logging::init(
                    &args.log_level,
                    args.log_format,
                    args.log_target,
                    args.log_facility,
                ),
            };
            if let Err(e) = logged {
                eprintln!("fulcrum proxy-worker: {e:#}");
            }
            Ok(ExitCode::from(
                u8::try_from(fulcrum_workers::worker::main()).unwrap_or(1),
            ))
        }
        Command::LabAgent { args } => Ok(fulcrum_lab::agent::main(args)),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "fulcrum",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => man(dir.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fulcrum: {e:#}");
            ExitCode::from(2)
        }
    }
}
