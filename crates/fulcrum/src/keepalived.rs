//! The binary as `keepalived` (a symlink, or `fulcrum keepalived ARGS`): keepalived
//! 2.2.7's command line, its `-t` exit codes, its pid files and its signals, running only
//! what keepalived.conf asks (VRRP, checkers, layer 4) so that Debian's keepalived unit
//! (`Type=notify`, `keepalived --dont-fork $DAEMON_ARGS`) runs it unchanged.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use fulcrum_node::status::{Daemon, VrrpInstance};
use fulcrum_node::{Sources, Subsystems};
use fulcrum_vrrp::packet::DropReason;
use serde_json::json;

use crate::logging::Facility;

/// keepalived's default configuration file.
pub const DEFAULT_CONF: &str = "/etc/keepalived/keepalived.conf";

/// keepalived -t's exit codes (its KEEPALIVED_EXIT_* values).
pub mod exit {
    pub const OK: u8 = 0;
    pub const CONFIG: u8 = 4;
    pub const CONFIG_TEST: u8 = 5;
    pub const CONFIG_TEST_SECURITY: u8 = 6;
}

/// Where keepalived 2.2.7 writes its dumps (its KA_TMP_DIR).
const DATA_FILE: &str = "/tmp/keepalived.data";
const STATS_FILE: &str = "/tmp/keepalived.stats";
const JSON_FILE: &str = "/tmp/keepalived.json";

/// keepalived's `--signum` names and the signals they are (glibc's SIGRTMIN is 34).
pub const SIGNALS: [(&str, i32); 6] = [
    ("STOP", 15),
    ("RELOAD", 1),
    ("DATA", 10),
    ("STATS", 12),
    ("STATS_CLEAR", 63),
    ("JSON", 36),
];

/// keepalived's command line. Options that concern child processes Fulcrum does not have
/// (-R, -B, --all) are accepted and change nothing.
#[derive(Debug, Parser)]
#[command(
    name = "keepalived",
    disable_version_flag = true,
    about = "keepalived's command line, served by fulcrum: VRRP, health checks and layer-4 load balancing from keepalived.conf"
)]
pub struct Args {
    /// Use the specified configuration file.
    #[arg(short = 'f', long = "use-file", value_name = "FILE", default_value = DEFAULT_CONF)]
    pub use_file: PathBuf,
    /// Only run with VRRP subsystem.
    #[arg(short = 'P', long = "vrrp")]
    pub vrrp: bool,
    /// Only run with Health-checker subsystem (virtual servers and their checkers).
    #[arg(short = 'C', long = "check")]
    pub check: bool,
    /// Don't run BFD subsystem (fulcrum has none).
    #[arg(short = 'B', long = "no_bfd")]
    pub no_bfd: bool,
    /// Force all child processes to run (fulcrum runs one process).
    #[arg(long = "all")]
    pub all: bool,
    /// Log messages to local console (standard error).
    #[arg(short = 'l', long = "log-console")]
    pub log_console: bool,
    /// Detailed log messages.
    #[arg(short = 'D', long = "log-detail")]
    pub log_detail: bool,
    /// Set syslog facility to LOG_LOCAL[0-7], user or daemon (default).
    #[arg(short = 'S', long = "log-facility", value_name = "FACILITY")]
    pub log_facility: Option<Facility>,
    /// Don't log via syslog.
    #[arg(short = 'G', long = "no-syslog")]
    pub no_syslog: bool,
    /// umask for file creation (in numeric form).
    #[arg(short = 'u', long = "umask", value_name = "MASK")]
    pub umask: Option<String>,
    /// Drop VIP on transition from signal (not implemented: warned).
    #[arg(short = 'X', long = "release-vips")]
    pub release_vips: bool,
    /// Don't remove VRRP VIPs and VROUTEs on daemon stop (not implemented: warned).
    #[arg(short = 'V', long = "dont-release-vrrp")]
    pub dont_release_vrrp: bool,
    /// Don't remove IPVS topology on daemon stop: forwarding goes on, and the next start
    /// adopts it.
    #[arg(short = 'I', long = "dont-release-ipvs")]
    pub dont_release_ipvs: bool,
    /// Don't respawn child processes (fulcrum has none).
    #[arg(short = 'R', long = "dont-respawn")]
    pub dont_respawn: bool,
    /// Don't fork the daemon process.
    #[arg(short = 'n', long = "dont-fork")]
    pub dont_fork: bool,
    /// Dump the configuration data (to the log, at start).
    #[arg(short = 'd', long = "dump-conf")]
    pub dump_conf: bool,
    /// Use specified pidfile for parent process.
    #[arg(short = 'p', long = "pid", value_name = "FILE")]
    pub pid: Option<PathBuf>,
    /// Use specified pidfile for VRRP child process.
    #[arg(short = 'r', long = "vrrp_pid", value_name = "FILE")]
    pub vrrp_pid: Option<PathBuf>,
    /// Enter into genhash utility mode (this should be the first option used).
    #[arg(short = 'T', long = "genhash", num_args = 0.., allow_hyphen_values = true, value_name = "GENHASH_ARGS")]
    pub genhash: Option<Vec<String>>,
    /// Use specified pidfile for checkers child process.
    #[arg(short = 'c', long = "checkers_pid", value_name = "FILE")]
    pub checkers_pid: Option<PathBuf>,
    /// Report all address additions/deletions notified via netlink (not implemented: warned).
    #[arg(short = 'a', long = "address-monitoring")]
    pub address_monitoring: bool,
    /// Use specified pidfile for BFD child process (fulcrum has none).
    #[arg(short = 'b', long = "bfd_pid", value_name = "FILE")]
    pub bfd_pid: Option<PathBuf>,
    /// Enable SNMP subsystem (not implemented: warned).
    #[arg(short = 'x', long = "snmp")]
    pub snmp: bool,
    /// Use the specified socket for master agent (SNMP; not implemented).
    #[arg(short = 'A', long = "snmp-agent-socket", value_name = "FILE")]
    pub snmp_agent_socket: Option<String>,
    /// Run in network namespace NAME (overrides config).
    #[arg(short = 's', long = "namespace", value_name = "NAME")]
    pub namespace: Option<String>,
    /// Produce core dump if terminate abnormally (not implemented: warned).
    #[arg(short = 'm', long = "core-dump")]
    pub core_dump: bool,
    /// Also set /proc/sys/kernel/core_pattern to PATN (not implemented: warned).
    #[arg(short = 'M', long = "core-dump-pattern", value_name = "PATN", num_args = 0..=1, require_equals = true, default_missing_value = "core")]
    pub core_dump_pattern: Option<String>,
    /// Error if any configuration file missing (same as include).
    #[arg(short = 'e', long = "all-config")]
    pub all_config: bool,
    /// Skip any configuration lines beginning '@' that don't match id or any lines beginning
    /// @^ that do match. The config-id defaults to the node name if option not used.
    #[arg(short = 'i', long = "config-id", value_name = "id")]
    pub config_id: Option<String>,
    /// Return signal number for STOP, RELOAD, DATA, STATS, STATS_CLEAR, JSON.
    #[arg(long = "signum", value_name = "SIGFUNC")]
    pub signum: Option<String>,
    /// Check the configuration for obvious errors, output to stderr by default.
    #[arg(short = 't', long = "config-test", value_name = "LOG_FILE", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub config_test: Option<String>,
    /// Display the version number.
    #[arg(short = 'v', long = "version")]
    pub version: bool,
}

/// What `fulcrum run` does differently for keepalived's command line.
#[derive(Debug, Clone, Default)]
pub struct AsKeepalived {
    /// The pid files to write at start and remove at exit.
    pub pid_files: Vec<PathBuf>,
    /// Fork and detach (keepalived without -n).
    pub fork: bool,
    /// -P and -C.
    pub subsystems: Subsystems,
    /// -e: a missing include is an error.
    pub strict: bool,
    /// -d: the configuration, as understood, goes to the log at start.
    pub dump_conf: bool,
}

/// `keepalived ARGS` (the program name first).
pub fn main(argv: Vec<String>) -> ExitCode {
    let args = match Args::try_parse_from(&argv) {
        Ok(a) => a,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(1);
        }
    };
    if let Some(name) = &args.signum {
        return match signum(name) {
            Some(n) => {
                println!("{n}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("Unknown sigfunc {name}");
                ExitCode::from(1)
            }
        };
    }
    if args.version {
        eprintln!(
            "Keepalived v2.2.7 (compatible: fulcrum {})\n\nfulcrum runs keepalived.conf as keepalived 2.2.7 reads it.",
            crate::VERSION.replace('\n', ", ")
        );
        return ExitCode::SUCCESS;
    }
    if let Some(rest) = args.genhash {
        let argv = std::iter::once("genhash".to_string()).chain(rest);
        return match crate::genhash::GenhashCli::try_parse_from(argv) {
            Ok(g) => crate::genhash::run(&g.args).unwrap_or_else(|e| {
                eprintln!("genhash: {e:#}");
                ExitCode::from(1)
            }),
            Err(e) => {
                let _ = e.print();
                ExitCode::from(1)
            }
        };
    }
    if let Some(ns) = &args.namespace {
        if let Err(e) = enter_namespace(ns) {
            eprintln!("keepalived: cannot enter network namespace {ns}: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    }
    if let Some(mask) = &args.umask {
        match u32::from_str_radix(mask.trim_start_matches("0o"), 8) {
            Ok(m) if m <= 0o777 => {
                nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m));
            }
            _ => {
                eprintln!("keepalived: invalid umask '{mask}'");
                return ExitCode::from(1);
            }
        }
    }
    let subsystems = Subsystems {
        vrrp: !args.check || args.vrrp,
        checkers: !args.vrrp || args.check,
    };
    if let Some(log_file) = &args.config_test {
        return ExitCode::from(config_test(&args, subsystems, log_file));
    }
    match crate::daemon::run(run_args(&args, subsystems)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keepalived: {e:#}");
            ExitCode::from(exit::CONFIG)
        }
    }
}

/// keepalived's `--signum` answer.
fn signum(name: &str) -> Option<i32> {
    SIGNALS.iter().find(|(n, _)| *n == name).map(|&(_, s)| s)
}

/// `-t`: every diagnostic to standard error (or LOG_FILE), and keepalived 2.2.7's exit
/// code: 0 valid, 6 when scripts run with script security off (its security violation,
/// which wins over other errors), 5 for any other error (keepalived -t also counts what
/// it skips at run time, such as unknown keywords: Fulcrum's warnings, but for those
/// keepalived passes silently), 4 when the file cannot be read.
fn config_test(args: &Args, subsystems: Subsystems, log_file: &str) -> u8 {
    let mut sources = Sources::new(
        Some(args.use_file.clone()),
        None,
        args.config_id.clone(),
        true,
        args.all_config,
    );
    sources.subsystems = subsystems;
    let (config, report) = sources.load();
    let text = if args.use_file.is_file() {
        report.text.clone()
    } else {
        format!(
            "Config files missing '{}'.\n{}",
            args.use_file.display(),
            report.text
        )
    };
    if log_file.is_empty() {
        eprint!("{text}");
    } else if let Err(e) = std::fs::write(log_file, &text) {
        eprintln!("keepalived: cannot write {log_file}: {e}");
    }
    test_verdict(
        args.use_file.is_file(),
        config.is_some() && report.peer_errors == 0,
        report.security_violations,
    )
}

fn test_verdict(readable: bool, valid: bool, security_violations: usize) -> u8 {
    if !readable {
        exit::CONFIG
    } else if security_violations > 0 {
        exit::CONFIG_TEST_SECURITY
    } else if valid {
        exit::OK
    } else {
        exit::CONFIG_TEST
    }
}

/// The pid files keepalived writes: the parent's always, the VRRP and checkers children's
/// when that part runs. With -s NAME they live in /run/keepalived/NAME/.
fn pid_files(args: &Args, subsystems: Subsystems) -> Vec<PathBuf> {
    let dir = match &args.namespace {
        Some(ns) => Path::new("/run/keepalived").join(ns),
        None => PathBuf::from("/run"),
    };
    let mut files = vec![args
        .pid
        .clone()
        .unwrap_or_else(|| dir.join("keepalived.pid"))];
    if subsystems.vrrp {
        files.push(
            args.vrrp_pid
                .clone()
                .unwrap_or_else(|| dir.join("keepalived_vrrp.pid")),
        );
    }
    if subsystems.checkers {
        files.push(
            args.checkers_pid
                .clone()
                .unwrap_or_else(|| dir.join("keepalived_checkers.pid")),
        );
    }
    files
}

/// `fulcrum run`'s arguments for keepalived's. Logs go to syslog, as keepalived's do,
/// unless -l or -G (then to standard error).
fn run_args(args: &Args, subsystems: Subsystems) -> crate::RunArgs {
    let syslog = !args.no_syslog && !args.log_console && Path::new("/dev/log").exists();
    let mut warnings = Vec::new();
    for (given, what) in [
        (args.release_vips, "-X (--release-vips)"),
        (args.dont_release_vrrp, "-V (--dont-release-vrrp)"),
        (args.address_monitoring, "-a (--address-monitoring)"),
        (
            args.snmp || args.snmp_agent_socket.is_some(),
            "SNMP (-x, -A)",
        ),
        (
            args.core_dump || args.core_dump_pattern.is_some(),
            "core dumps (-m, -M)",
        ),
    ] {
        if given {
            warnings.push(format!("{what} is not implemented by fulcrum; ignored"));
        }
    }
    crate::RunArgs {
        config: crate::ConfigArgs {
            keepalived: Some(std::path::absolute(&args.use_file).unwrap_or(args.use_file.clone())),
            nginx: None,
            config_id: args.config_id.clone(),
        },
        control: std::env::var_os("FULCRUM_CONTROL")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(crate::control::DEFAULT_SOCKET)),
        log_level: if args.log_detail { "debug" } else { "info" }.into(),
        log_format: crate::logging::Format::Text,
        log_target: if syslog {
            crate::logging::Target::Syslog
        } else {
            crate::logging::Target::Stderr
        },
        log_facility: args.log_facility.unwrap_or(Facility::DAEMON),
        no_forwarding: false,
        bpf_dir: None,
        keep_forwarding: args.dont_release_ipvs,
        max_connections: None,
        metrics: None,
        metrics_htpasswd: None,
        nginx: None,
        nginx_globals: None,
        log_file: None,
        keepalived: Some(AsKeepalived {
            pid_files: pid_files(args, subsystems),
            fork: !args.dont_fork,
            subsystems,
            strict: args.all_config,
            dump_conf: args.dump_conf,
        }),
        warnings,
    }
}

/// -s NAME: this process joins /run/netns/NAME (`ip netns`'s), before any thread starts.
fn enter_namespace(name: &str) -> std::io::Result<()> {
    let f = std::fs::File::open(Path::new("/run/netns").join(name))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// Writes the pid files; refuses when one names another live process, as keepalived does
/// ("daemon is already running").
pub fn write_pid_files(files: &[PathBuf]) -> anyhow::Result<()> {
    let own = std::process::id();
    for f in files {
        if let Some(pid) = std::fs::read_to_string(f)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
        {
            if pid != own && Path::new(&format!("/proc/{pid}")).exists() {
                anyhow::bail!("daemon is already running: {} names pid {pid}", f.display());
            }
        }
        if let Some(dir) = f.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(f, format!("{own}\n"))
            .map_err(|e| anyhow::anyhow!("cannot write pid file {}: {e}", f.display()))?;
    }
    Ok(())
}

/// Removes the pid files that still name this process (not one a new binary wrote).
pub fn remove_pid_files(files: &[PathBuf]) {
    let own = std::process::id().to_string();
    for f in files {
        if std::fs::read_to_string(f).is_ok_and(|t| t.trim() == own) {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// keepalived's numbers for a VRRP state.
fn state_number(state: &str) -> u8 {
    match state {
        "BACKUP" => 1,
        "MASTER" => 2,
        "FAULT" => 3,
        _ => 0,
    }
}

/// What the instance dropped for one of keepalived's statistics (the status names drops
/// by the VRRP parser's reasons, as they display).
fn dropped(i: &VrrpInstance, reason: DropReason) -> u64 {
    let name = reason.to_string();
    i.dropped
        .iter()
        .filter(|d| d.reason == name)
        .map(|d| d.count)
        .sum()
}

/// keepalived's statistics that map to Fulcrum's counters, by keepalived's JSON names.
fn stats(i: &VrrpInstance) -> [(&'static str, &'static str, u64); 8] {
    [
        ("advert_rcvd", "Advertisements received", i.adverts_received),
        ("advert_sent", "Advertisements sent", i.adverts_sent),
        (
            "packet_len_err",
            "Packet errors: length",
            dropped(i, DropReason::Truncated),
        ),
        (
            "ip_ttl_err",
            "Packet errors: TTL",
            dropped(i, DropReason::Ttl),
        ),
        (
            "invalid_type_rcvd",
            "Packet errors: invalid type",
            dropped(i, DropReason::Type),
        ),
        (
            "advert_interval_err",
            "Packet errors: advertisement interval",
            dropped(i, DropReason::Interval),
        ),
        (
            "auth_failure",
            "Authentication errors: failure",
            dropped(i, DropReason::Auth),
        ),
        ("transitions", "State transitions", i.transitions),
    ]
}

/// SIGUSR1's /tmp/keepalived.data: the running configuration's state, in keepalived's
/// layout, as far as Fulcrum's status holds it.
pub fn data_dump(daemon: &Daemon, instances: &[VrrpInstance]) -> String {
    let mut out = String::new();
    out.push_str("------< Global definitions >------\n");
    out.push_str(&format!(
        " Process = fulcrum {} (pid {})\n",
        daemon.version, daemon.pid
    ));
    if let Some(k) = &daemon.config.keepalived {
        out.push_str(&format!(" Configuration file = {k}\n"));
    }
    out.push_str(&format!(" Configuration hash = {}\n", daemon.config.hash));
    out.push_str("------< VRRP Topology >------\n");
    for i in instances {
        out.push_str(&format!(" VRRP Instance = {}\n", i.name));
        out.push_str(&format!("   State = {}\n", i.state));
        if let Some(t) = &i.last_transition {
            out.push_str(&format!(
                "   Last transition = {} ({}: {})\n",
                t.at, t.state, t.reason
            ));
        }
        out.push_str(&format!("   Interface = {}\n", i.interface));
        out.push_str(&format!("   Virtual Router ID = {}\n", i.vrid));
        out.push_str(&format!("   Priority = {}\n", i.priority));
        out.push_str(&format!(
            "   Effective priority = {}\n",
            i.effective_priority
        ));
        if let Some(m) = &i.master {
            out.push_str(&format!("   Master router = {m}\n"));
        }
        out.push_str(&format!("   Virtual IP = {}\n", i.virtual_ipaddress.len()));
        for v in &i.virtual_ipaddress {
            out.push_str(&format!("     {v}\n"));
        }
    }
    out
}

/// SIGUSR2's /tmp/keepalived.stats.
pub fn stats_dump(instances: &[VrrpInstance]) -> String {
    let mut out = String::new();
    for i in instances {
        out.push_str(&format!("VRRP Instance: {}\n", i.name));
        for (_, label, n) in stats(i) {
            out.push_str(&format!("  {label}: {n}\n"));
        }
    }
    out
}

/// `--signum=JSON`'s /tmp/keepalived.json: an array with each instance's `data` and `stats`
/// objects under keepalived's key names (the keys Fulcrum has values for).
pub fn json_dump(instances: &[VrrpInstance]) -> serde_json::Value {
    serde_json::Value::Array(
        instances
            .iter()
            .map(|i| {
                let stats: serde_json::Map<String, serde_json::Value> = stats(i)
                    .into_iter()
                    .filter(|(k, _, _)| *k != "transitions")
                    .map(|(k, _, n)| (k.to_string(), json!(n)))
                    .collect();
                json!({
                    "data": {
                        "iname": i.name,
                        "ifp_ifname": i.interface,
                        "vrid": i.vrid,
                        "base_priority": i.priority,
                        "effective_priority": i.effective_priority,
                        "state": state_number(&i.state),
                        "last_transition": i.last_transition.as_ref().map_or(0, |t| t.at),
                        "vips": i.virtual_ipaddress,
                    },
                    "stats": stats,
                })
            })
            .collect(),
    )
}

/// Writes one dump where keepalived writes it (created 0644, replaced whole).
pub fn write_dump(which: Dump, text: &str) {
    let path = match which {
        Dump::Data => DATA_FILE,
        Dump::Stats => STATS_FILE,
        Dump::Json => JSON_FILE,
    };
    match std::fs::write(path, text) {
        Ok(()) => tracing::info!("{path} written"),
        Err(e) => tracing::warn!("cannot write {path}: {e}"),
    }
}

/// The three dumps keepalived writes on a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dump {
    Data,
    Stats,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulcrum_node::status::Dropped;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("keepalived").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn debians_unit_command_line_parses() {
        let a = parse(&["--dont-fork", "-D", "-S", "1"]);
        assert!(a.dont_fork && a.log_detail);
        assert_eq!(a.log_facility, Facility::local(1));
        assert_eq!(a.use_file, Path::new(DEFAULT_CONF));
        // getopt's clusters and attached values.
        let a = parse(&["-nlD", "-f/etc/k.conf", "-t=/tmp/t.log", "-p", "/run/k.pid"]);
        assert!(a.dont_fork && a.log_console && a.log_detail);
        assert_eq!(a.use_file, Path::new("/etc/k.conf"));
        assert_eq!(a.config_test.as_deref(), Some("/tmp/t.log"));
        assert_eq!(a.pid.as_deref(), Some(Path::new("/run/k.pid")));
        assert_eq!(parse(&["-t"]).config_test.as_deref(), Some(""));
        assert!(Args::try_parse_from(["keepalived", "-q"]).is_err());
    }

    #[test]
    fn signums_are_keepalived_2_2_7s() {
        assert_eq!(signum("STOP"), Some(15));
        assert_eq!(signum("RELOAD"), Some(1));
        assert_eq!(signum("DATA"), Some(10));
        assert_eq!(signum("STATS"), Some(12));
        assert_eq!(signum("STATS_CLEAR"), Some(63));
        assert_eq!(signum("JSON"), Some(36));
        assert_eq!(signum("TDATA"), None);
    }

    #[test]
    fn test_verdicts_are_keepalived_exit_codes() {
        assert_eq!(test_verdict(true, true, 0), 0);
        assert_eq!(test_verdict(true, false, 0), 5);
        assert_eq!(test_verdict(true, true, 1), 6);
        assert_eq!(test_verdict(true, false, 1), 6);
        assert_eq!(test_verdict(false, false, 0), 4);
    }

    #[test]
    fn pid_files_follow_the_parts_that_run() {
        let a = parse(&["-n"]);
        let all = Subsystems::default();
        assert_eq!(
            pid_files(&a, all),
            [
                "/run/keepalived.pid",
                "/run/keepalived_vrrp.pid",
                "/run/keepalived_checkers.pid"
            ]
            .map(PathBuf::from)
        );
        let a = parse(&["-P", "-s", "blue", "-r", "/x/v.pid"]);
        let vrrp = Subsystems {
            vrrp: true,
            checkers: false,
        };
        assert_eq!(
            pid_files(&a, vrrp),
            ["/run/keepalived/blue/keepalived.pid", "/x/v.pid"].map(PathBuf::from)
        );
    }

    fn instance() -> VrrpInstance {
        VrrpInstance {
            name: "VI_1".into(),
            interface: "eth0".into(),
            vrid: 51,
            state: "MASTER".into(),
            priority: 100,
            effective_priority: 90,
            master: None,
            virtual_ipaddress: vec!["10.1.10.88/32".into()],
            last_transition: None,
            adverts_sent: 12,
            transitions: 2,
            adverts_received: 3,
            dropped: vec![
                Dropped {
                    reason: "TTL/hop limit is not 255".into(),
                    count: 4,
                },
                Dropped {
                    reason: "authentication mismatch".into(),
                    count: 1,
                },
            ],
        }
    }

    #[test]
    fn the_json_dump_uses_keepalived_names() {
        let j = json_dump(&[instance()]);
        assert_eq!(j[0]["data"]["iname"], "VI_1");
        assert_eq!(j[0]["data"]["state"], 2);
        assert_eq!(j[0]["data"]["effective_priority"], 90);
        assert_eq!(j[0]["stats"]["advert_sent"], 12);
        assert_eq!(j[0]["stats"]["ip_ttl_err"], 4);
        assert_eq!(j[0]["stats"]["auth_failure"], 1);
        assert_eq!(j[0]["stats"]["packet_len_err"], 0);
    }

    #[test]
    fn the_stats_dump_names_each_instance() {
        let text = stats_dump(&[instance()]);
        assert!(text.starts_with("VRRP Instance: VI_1\n"), "{text}");
        assert!(text.contains("  Advertisements sent: 12\n"), "{text}");
        assert!(text.contains("  Packet errors: TTL: 4\n"), "{text}");
    }
}
