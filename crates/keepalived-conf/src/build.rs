//! The statement tree into the typed model: every keyword keepalived knows in the blocks we
//! model, with its arguments checked and located. Unknown keywords are warnings, as
//! keepalived logs and skips them; keywords keepalived knows that fulcrum does not
//! implement are warnings that say so.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::str::FromStr;

use fulcrum_diag::{Diagnostic, Span};
use fulcrum_types::{
    ForwardMethod, Priority, Protocol, Scheduler, Timer, TrackWeight, Vrid, Weight,
};

use crate::model::*;
use crate::tree::Node;

/// Keywords keepalived accepts that fulcrum reads past: a warning, never an error (unless
/// `--strict`), so that a file that is valid for keepalived stays valid here.
const UNSUPPORTED_TOP: &[&str] = &[
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "linkbeat_use_polling",
    "net_namespace",
    "net_namespace_ipvs",
    "namespace_with_ipsets",
    "instance",
    "use_pid_dir",
    "vrrp_track_process",
    "bfd_instance",
    "garp_group",
    "vrrp_track_file",
];

const UNSUPPORTED_GLOBAL: &[&str] = &[
    "enable_traps",
    "enable_snmp_vrrp",
    "enable_snmp_checker",
    "enable_snmp_rfc",
    "enable_snmp_rfcv2",
    "enable_snmp_rfcv3",
    "snmp_socket",
    "enable_dbus",
    "enable_dbus_object",
    "dynamic_interfaces",
    "vrrp_iptables",
    "vrrp_ipsets",
    "vrrp_nftables",
    "nftables",
    "lvs_sync_daemon",
    "lvs_flush",
    "lvs_flush_onstop",
    "vrrp_lower_prio_no_advert",
    "vrrp_higher_prio_send_advert",
    "vrrp_priority",
    "checker_priority",
    "bfd_priority",
    "vrrp_no_swap",
    "checker_no_swap",
    "vrrp_rt_priority",
    "checker_rt_priority",
    "vrrp_rlimit_rttime",
    "checker_rlimit_rttime",
    "vrrp_netlink_cmd_rcv_bufs",
    "vrrp_netlink_monitor_rcv_bufs",
    "lvs_netlink_cmd_rcv_bufs",
    "lvs_netlink_monitor_rcv_bufs",
    "process_monitor_rcv_bufs",
    "max_auto_priority",
    "min_auto_priority_delay",
    "smtp_helo_name",
    "smtp_alert",
    "smtp_alert_vrrp",
    "smtp_alert_checker",
    "no_email_faults",
    "vrrp_garp_lower_prio_delay",
    "vrrp_garp_lower_prio_repeat",
    "vrrp_min_garp",
    "vrrp_dont_track_primary",
    "vrrp_startup_delay",
    "vrrp_version_3_checksum_as_v2",
    "vrrp_skip_check_adv_addr_on_change",
    "notify_fifo_script",
    "vrrp_notify_fifo_script",
    "lvs_notify_fifo",
    "lvs_notify_fifo_script",
    "script_security",
    "child_wait_time",
    "linkbeat_interfaces",
    "vrrp_rx_bufs_policy",
    "vrrp_rx_bufs_multiplier",
    "random_seed",
    "reload_time_file",
    "reload_check_config",
    "config_save_dir",
    "tmp_config_directory",
    "umask",
    "use_symlink_paths",
];

const UNSUPPORTED_INSTANCE: &[&str] = &[
    "virtual_routes",
    "virtual_rules",
    "track_process",
    "track_bfd",
    "debug",
    "lvs_sync_daemon_interface",
    "kernel_rx_buf_size",
    "garp_lower_prio_delay",
    "garp_lower_prio_repeat",
    "lower_prio_no_advert",
    "higher_prio_send_advert",
    "vmac_xmit_base_name",
    "use_ipvlan",
    "notify_master_rx_lower_pri",
    "notify_deleted",
    "no_accept_deleted",
    "linkbeat_use_polling",
    "mcast_dst_ip",
    "unicast_ttl",
    "unicast_fault_no_peer",
];

/// Where an instance's checked keywords were written, for the checks made at the end
/// (they depend on global_defs, which may come later in the file).
#[derive(Debug, Default, Clone, Copy)]
struct InstanceSpans {
    state: Option<Span>,
    nopreempt: Option<Span>,
    preempt_delay: Option<Span>,
    advert: Option<Span>,
    auth: Option<Span>,
}

/// Reads the model from top-level statements, one at a time; `finish` makes the checks
/// that need the whole file.
pub(crate) struct Builder<'a> {
    pub diags: Vec<Diagnostic>,
    cfg: KeepalivedConfig,
    /// One per entry of `cfg.vrrp_instances`, in the same order.
    instance_checks: Vec<InstanceSpans>,
    /// Answers whether an interface exists on this host; `None` skips host checks.
    interface_exists: Option<&'a dyn Fn(&str) -> bool>,
    /// Answers whether a user exists on this host; `None` skips host checks.
    user_exists: Option<&'a dyn Fn(&str) -> bool>,
    /// Where the first script is configured, for the script-security warning.
    first_script: Option<Span>,
    refs: Vec<Reference>,
    instance_spans: HashMap<String, Span>,
    script_names: HashSet<String>,
    track_file_names: HashSet<String>,
    group_names: HashSet<String>,
}

enum RefKind {
    Script,
    TrackFile,
    Instance,
    ServerGroup,
}

struct Reference {
    kind: RefKind,
    name: String,
    span: Span,
}

fn is_bool_word(s: &str) -> Option<bool> {
    match s {
        "on" | "yes" | "true" => Some(true),
        "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

impl<'a> Builder<'a> {
    pub fn new(
        interface_exists: Option<&'a dyn Fn(&str) -> bool>,
        user_exists: Option<&'a dyn Fn(&str) -> bool>,
    ) -> Builder<'a> {
        Builder {
            diags: Vec::new(),
            cfg: KeepalivedConfig::default(),
            instance_checks: Vec::new(),
            interface_exists,
            user_exists,
            first_script: None,
            refs: Vec::new(),
            instance_spans: HashMap::new(),
            script_names: HashSet::new(),
            track_file_names: HashSet::new(),
            group_names: HashSet::new(),
        }
    }

    // === helpers ===

    fn error(&mut self, span: Span, message: impl Into<String>) {
        self.diags.push(Diagnostic::error(span, message));
    }

    fn warn(&mut self, span: Span, message: impl Into<String>) {
        self.diags.push(Diagnostic::warning(span, message));
    }

    fn unknown(&mut self, n: &Node, context: &str) {
        self.warn(
            n.span(),
            format!("unknown keyword '{}' in {context}; ignored", n.name()),
        );
    }

    fn unsupported(&mut self, n: &Node) {
        self.warn(
            n.span(),
            format!(
                "'{}' is a keepalived keyword that fulcrum does not support; ignored",
                n.name()
            ),
        );
    }

    /// The i-th argument, or an error naming what is missing.
    fn arg<'n>(&mut self, n: &'n Node, i: usize, what: &str) -> Option<&'n str> {
        match n.args.get(i) {
            Some(t) => Some(&t.text),
            None => {
                self.error(n.span(), format!("'{}' needs {what}", n.name()));
                None
            }
        }
    }

    fn arg_span(n: &Node, i: usize) -> Span {
        n.args.get(i).map_or(n.span(), |t| t.span)
    }

    /// Arguments beyond `max` are reported and ignored.
    fn at_most(&mut self, n: &Node, max: usize) {
        if let Some(extra) = n.args.get(max) {
            self.warn(
                extra.span,
                format!(
                    "extra argument '{}' after '{}' ignored",
                    extra.text,
                    n.name()
                ),
            );
        }
    }

    fn no_block(&mut self, n: &Node) {
        if let Some(b) = &n.block {
            self.error(b.open, format!("'{}' does not take a block", n.name()));
        }
    }

    /// The block of a statement that needs one.
    fn block<'n>(&mut self, n: &'n Node) -> &'n [Node] {
        match &n.block {
            Some(b) => &b.nodes,
            None => {
                self.error(
                    n.span(),
                    format!("'{}' needs a block: missing '{{'", n.name()),
                );
                &[]
            }
        }
    }

    fn parse_at<T: FromStr>(&mut self, n: &Node, i: usize, what: &str) -> Option<T> {
        let text = self.arg(n, i, what)?;
        match text.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.error(Self::arg_span(n, i), format!("invalid {what} '{text}'"));
                None
            }
        }
    }

    fn int_at(&mut self, n: &Node, i: usize, what: &str, min: i64, max: i64) -> Option<i64> {
        let text = self.arg(n, i, what)?;
        let span = Self::arg_span(n, i);
        match text.parse::<i64>() {
            Ok(v) if (min..=max).contains(&v) => Some(v),
            Ok(v) => {
                self.error(span, format!("{what} {v} is out of range {min}..{max}"));
                None
            }
            Err(_) => {
                self.error(
                    span,
                    format!("invalid {what} '{text}': expected a whole number"),
                );
                None
            }
        }
    }

    fn int(&mut self, n: &Node, what: &str, min: i64, max: i64) -> Option<i64> {
        self.no_block(n);
        self.at_most(n, 1);
        self.int_at(n, 0, what, min, max)
    }

    fn u32_value(&mut self, n: &Node, what: &str) -> Option<u32> {
        self.int(n, what, 0, i64::from(u32::MAX)).map(|v| v as u32)
    }

    fn port_at(&mut self, n: &Node, i: usize) -> Option<u16> {
        self.int_at(n, i, "port", 0, 65535).map(|v| v as u16)
    }

    fn timer_at(&mut self, n: &Node, i: usize, what: &str) -> Option<Timer> {
        let text = self.arg(n, i, what)?;
        match text.parse::<Timer>() {
            Ok(t) => Some(t),
            Err(_) => {
                self.error(
                    Self::arg_span(n, i),
                    format!("invalid {what} '{text}': expected seconds, such as 1 or 0.5"),
                );
                None
            }
        }
    }

    fn timer(&mut self, n: &Node) -> Option<Timer> {
        self.no_block(n);
        self.at_most(n, 1);
        self.timer_at(n, 0, n.name())
    }

    /// A timer keepalived reads as a whole number of seconds.
    fn whole_seconds(&mut self, n: &Node) -> Option<Timer> {
        let t = self.timer(n)?;
        if !t.is_whole_seconds() {
            self.error(
                Self::arg_span(n, 0),
                format!("'{}' takes a whole number of seconds, not {t}", n.name()),
            );
            return None;
        }
        Some(t)
    }

    /// A keyword keepalived reads by its presence alone: any argument is ignored (so
    /// `nopreempt off` still means nopreempt, as in keepalived), with a warning.
    fn presence(&mut self, n: &Node) -> bool {
        self.no_block(n);
        if let Some(a) = n.args.first() {
            self.warn(
                a.span,
                format!(
                    "'{}' takes no argument: keepalived ignores '{}' and so does fulcrum; '{}' is on",
                    n.name(),
                    a.text,
                    n.name()
                ),
            );
        }
        true
    }

    /// `keyword [on|off|yes|no|true|false]`; the keyword alone means on.
    fn flag(&mut self, n: &Node) -> Option<bool> {
        self.no_block(n);
        self.at_most(n, 1);
        match n.args.first() {
            None => Some(true),
            Some(t) => match is_bool_word(&t.text) {
                Some(b) => Some(b),
                None => {
                    self.error(
                        t.span,
                        format!(
                            "invalid boolean '{}' for '{}': expected on, off, yes, no, true or false",
                            t.text,
                            n.name()
                        ),
                    );
                    None
                }
            },
        }
    }

    fn string(&mut self, n: &Node, what: &str) -> Option<String> {
        self.no_block(n);
        self.at_most(n, 1);
        self.arg(n, 0, what).map(str::to_string)
    }

    fn ip_at(&mut self, n: &Node, i: usize) -> Option<IpAddr> {
        self.parse_at(n, i, "IP address")
    }

    fn ip(&mut self, n: &Node) -> Option<IpAddr> {
        self.no_block(n);
        self.at_most(n, 1);
        self.ip_at(n, 0)
    }

    fn interface_ref(&mut self, name: &str, span: Span) {
        if let Some(exists) = self.interface_exists {
            if !exists(name) {
                self.diags.push(
                    Diagnostic::error(
                        span,
                        format!("interface '{name}' does not exist in this network namespace"),
                    )
                    .with_help(
                        "use --no-host-checks to check a configuration meant for another host",
                    ),
                );
            }
        }
    }

    fn user_ref(&mut self, name: &str, span: Span) {
        if let Some(exists) = self.user_exists {
            if !exists(name) {
                self.diags.push(
                    Diagnostic::error(span, format!("user '{name}' does not exist on this host"))
                        .with_help(
                            "use --no-host-checks to check a configuration meant for another host",
                        ),
                );
            }
        }
    }

    /// `keyword SCRIPT [USER [GROUP]]`.
    fn script(&mut self, n: &Node) -> Option<Script> {
        self.no_block(n);
        self.at_most(n, 3);
        let command = self.arg(n, 0, "a script")?.to_string();
        if command.trim().is_empty() {
            self.error(
                Self::arg_span(n, 0),
                format!("empty script for '{}'", n.name()),
            );
            return None;
        }
        self.first_script.get_or_insert(n.span());
        let user = n.args.get(1).map(|u| ScriptUser {
            user: u.text.clone(),
            group: n.args.get(2).map(|g| g.text.clone()),
        });
        if let Some(u) = n.args.get(1) {
            self.user_ref(&u.text, u.span);
        }
        Some(Script { command, user })
    }

    fn script_user(&mut self, n: &Node) -> Option<ScriptUser> {
        self.no_block(n);
        self.at_most(n, 2);
        let user = self.arg(n, 0, "a user name")?.to_string();
        self.user_ref(&user, Self::arg_span(n, 0));
        Some(ScriptUser {
            user,
            group: n.args.get(1).map(|g| g.text.clone()),
        })
    }

    fn track_weight_at(&mut self, n: &Node, i: usize) -> Option<TrackWeight> {
        let v = self.int_at(
            n,
            i,
            "weight",
            i64::from(TrackWeight::MIN),
            i64::from(TrackWeight::MAX),
        )?;
        TrackWeight::new(v).ok()
    }

    fn enum_at<T: FromStr<Err = fulcrum_types::UnknownName>>(
        &mut self,
        n: &Node,
        i: usize,
        what: &str,
    ) -> Option<T> {
        let text = self.arg(n, i, what)?;
        match text.parse::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                let span = Self::arg_span(n, i);
                self.error(span, e.to_string());
                None
            }
        }
    }

    // === top level ===

    /// Reads one top-level statement into the configuration.
    pub fn statement(&mut self, n: &Node) {
        let name = n.args.first().map(|t| t.text.clone()).unwrap_or_default();
        match n.name() {
            "global_defs" => {
                let mut g = std::mem::take(&mut self.cfg.global_defs);
                self.global_defs(n, &mut g);
                self.cfg.global_defs = g;
            }
            "vrrp_script" => {
                self.script_names.insert(name);
                if let Some(s) = self.vrrp_script(n) {
                    self.cfg.vrrp_scripts.push(s);
                }
            }
            "track_file" => {
                self.track_file_names.insert(name);
                if let Some(t) = self.track_file(n) {
                    self.cfg.track_files.push(t);
                }
            }
            "vrrp_sync_group" => {
                if let Some(g) = self.sync_group(n) {
                    self.cfg.vrrp_sync_groups.push(g);
                }
            }
            "vrrp_instance" => {
                if let Some((i, spans)) = self.vrrp_instance(n) {
                    self.cfg.vrrp_instances.push(i);
                    self.instance_checks.push(spans);
                }
            }
            "virtual_server_group" => {
                self.group_names.insert(name);
                if let Some(g) = self.server_group(n) {
                    self.cfg.virtual_server_groups.push(g);
                }
            }
            "virtual_server" => {
                if let Some(v) = self.virtual_server(n) {
                    self.cfg.virtual_servers.push(v);
                }
            }
            k if UNSUPPORTED_TOP.contains(&k) => self.unsupported(n),
            _ => self.unknown(n, "the top level"),
        }
    }

    /// The checks that need the whole file (references may come before definitions), and
    /// the configuration with every diagnostic.
    pub fn finish(mut self) -> (KeepalivedConfig, Vec<Diagnostic>) {
        let cfg = std::mem::take(&mut self.cfg);
        let checks = std::mem::take(&mut self.instance_checks);
        for (i, spans) in cfg.vrrp_instances.iter().zip(checks) {
            self.check_instance(i, &cfg.global_defs, spans);
        }
        self.check_references(&cfg);
        if let (Some(span), false) = (self.first_script, cfg.global_defs.enable_script_security) {
            self.diags.push(
                Diagnostic::warning(span, "scripts are configured but script security is off: they run as root")
                    .with_help("add 'enable_script_security' (and 'script_user') to global_defs; keepalived -t reports this as a security violation"),
            );
        }
        (cfg, self.diags)
    }

    fn check_references(&mut self, cfg: &KeepalivedConfig) {
        let refs = std::mem::take(&mut self.refs);
        for r in refs {
            let (known, what) = match r.kind {
                RefKind::Script => (self.script_names.contains(&r.name), "vrrp_script"),
                RefKind::TrackFile => (self.track_file_names.contains(&r.name), "track_file"),
                RefKind::Instance => (self.instance_spans.contains_key(&r.name), "vrrp_instance"),
                RefKind::ServerGroup => {
                    (self.group_names.contains(&r.name), "virtual_server_group")
                }
            };
            if !known {
                self.error(r.span, format!("{what} '{}' is not defined", r.name));
            }
        }
        // An instance belongs to one sync group at most.
        let mut member_of: HashMap<&str, &str> = HashMap::new();
        for g in &cfg.vrrp_sync_groups {
            for i in &g.group {
                if let Some(other) = member_of.insert(i, &g.name) {
                    let span = self.instance_spans.get(i.as_str()).copied();
                    if let Some(span) = span {
                        self.error(
                            span,
                            format!(
                                "vrrp_instance '{i}' is in two sync groups, '{other}' and '{}'",
                                g.name
                            ),
                        );
                    }
                }
            }
        }
        // Two instances with one VRID on one interface would answer for each other.
        let mut seen: HashMap<(Option<&str>, u8, bool), &str> = HashMap::new();
        for i in &cfg.vrrp_instances {
            let v6 = i
                .virtual_ipaddress
                .first()
                .is_some_and(|a| a.addr.is_ipv6());
            let key = (i.interface.as_deref(), i.virtual_router_id.get(), v6);
            if let Some(first) = seen.insert(key, &i.name) {
                if let Some(&span) = self.instance_spans.get(&i.name) {
                    self.error(
                        span,
                        format!(
                            "virtual_router_id {} is already used by vrrp_instance '{first}' on the same interface",
                            i.virtual_router_id
                        ),
                    );
                }
            }
        }
    }

    // === global_defs ===

    fn global_defs(&mut self, n: &Node, g: &mut GlobalDefs) {
        self.at_most(n, 0);
        for c in self.block(n) {
            match c.name() {
                "router_id" => g.router_id = self.string(c, "a router id"),
                "notification_email" => {
                    for line in self.block(c) {
                        g.notification_email.push(line.keyword.text.clone());
                        for a in &line.args {
                            g.notification_email.push(a.text.clone());
                        }
                    }
                }
                "notification_email_from" => {
                    g.notification_email_from = self.string(c, "an address")
                }
                "smtp_server" => {
                    self.no_block(c);
                    self.at_most(c, 2);
                    if let Some(host) = self.arg(c, 0, "a server") {
                        let host = host.to_string();
                        let port = if c.args.len() > 1 {
                            self.port_at(c, 1)
                        } else {
                            None
                        };
                        g.smtp_server = Some((host, port));
                    }
                }
                "smtp_connect_timeout" => g.smtp_connect_timeout = self.timer(c),
                "enable_script_security" => g.enable_script_security = self.presence(c),
                "script_user" => g.script_user = self.script_user(c),
                "vrrp_version" => g.vrrp_version = self.version(c),
                "vrrp_strict" => g.vrrp_strict = self.presence(c),
                "vrrp_mcast_group4" => {
                    self.no_block(c);
                    g.vrrp_mcast_group4 = self.parse_at(c, 0, "IPv4 multicast address")
                }
                "vrrp_mcast_group6" => g.vrrp_mcast_group6 = self.ip(c),
                "vrrp_garp_master_delay" => g.vrrp_garp_master_delay = self.whole_seconds(c),
                "vrrp_garp_master_repeat" => {
                    g.vrrp_garp_master_repeat = self.u32_value(c, "repeat count")
                }
                "vrrp_garp_master_refresh" => g.vrrp_garp_master_refresh = self.whole_seconds(c),
                "vrrp_garp_master_refresh_repeat" => {
                    g.vrrp_garp_master_refresh_repeat = self.u32_value(c, "repeat count")
                }
                "vrrp_garp_interval" => g.vrrp_garp_interval = self.timer(c),
                "vrrp_gna_interval" => g.vrrp_gna_interval = self.timer(c),
                "vrrp_skip_check_adv_addr" => {
                    g.vrrp_skip_check_adv_addr = self.flag(c).unwrap_or(false)
                }
                "vrrp_check_unicast_src" => {
                    g.vrrp_check_unicast_src = self.flag(c).unwrap_or(false)
                }
                "vrrp_notify_fifo" => g.vrrp_notify_fifo = self.string(c, "a fifo path"),
                "notify_fifo" => g.notify_fifo = self.string(c, "a fifo path"),
                "default_interface" => {
                    g.default_interface = self.string(c, "an interface");
                    if let Some(name) = &g.default_interface {
                        self.interface_ref(&name.clone(), Self::arg_span(c, 0));
                    }
                }
                "lvs_timeouts" => self.lvs_timeouts(c, &mut g.lvs_timeouts),
                "checker_log_all_failures" => {
                    g.checker_log_all_failures = self.flag(c).unwrap_or(false)
                }
                "fulcrum_xdp_interfaces" => {
                    self.no_block(c);
                    if c.args.is_empty() {
                        self.arg(c, 0, "an interface");
                    }
                    for (i, a) in c.args.iter().enumerate() {
                        g.xdp_interfaces.push(a.text.clone());
                        self.interface_ref(&a.text.clone(), Self::arg_span(c, i));
                    }
                }
                "fulcrum_metrics" => {
                    self.no_block(c);
                    match c.args.first() {
                        None => {
                            self.arg(c, 0, "an address and port");
                        }
                        Some(a) => match a.text.parse::<std::net::SocketAddr>() {
                            Ok(addr) => g.metrics = Some(addr),
                            Err(_) => self.error(
                                Self::arg_span(c, 0),
                                format!("fulcrum_metrics: '{}' is not ADDR:PORT", a.text),
                            ),
                        },
                    }
                }
                k if UNSUPPORTED_GLOBAL.contains(&k) => self.unsupported(c),
                _ => self.unknown(c, "global_defs"),
            }
        }
    }

    fn lvs_timeouts(&mut self, n: &Node, t: &mut LvsTimeouts) {
        self.no_block(n);
        let mut i = 0;
        while i < n.args.len() {
            let key = n.args[i].text.clone();
            let value = self
                .int_at(n, i + 1, &format!("{key} timeout"), 0, 86400 * 31)
                .map(|v| v as u32);
            match key.as_str() {
                "tcp" => t.tcp = value,
                "tcpfin" => t.tcpfin = value,
                "udp" => t.udp = value,
                _ => self.error(
                    n.args[i].span,
                    format!("unknown lvs_timeouts protocol '{key}': expected tcp, tcpfin or udp"),
                ),
            }
            i += 2;
        }
    }

    fn version(&mut self, n: &Node) -> Option<VrrpVersion> {
        match self.int(n, "VRRP version", 2, 3)? {
            2 => Some(VrrpVersion::V2),
            _ => Some(VrrpVersion::V3),
        }
    }

    // === vrrp_script and track_file ===

    fn name_arg(&mut self, n: &Node) -> Option<String> {
        self.at_most(n, 1);
        self.arg(n, 0, "a name").map(str::to_string)
    }

    fn vrrp_script(&mut self, n: &Node) -> Option<VrrpScript> {
        let name = self.name_arg(n)?;
        let mut s = VrrpScript::new(&name, "");
        let mut have_script = false;
        for c in self.block(n) {
            match c.name() {
                "script" => {
                    if let Some(sc) = self.script(c) {
                        s.script = sc;
                        have_script = true;
                    }
                }
                "interval" => s.interval = self.timer(c).unwrap_or(s.interval),
                "timeout" => s.timeout = self.timer(c),
                "weight" => {
                    self.no_block(c);
                    self.at_most(c, 2);
                    if let Some(w) = self.track_weight_at(c, 0) {
                        s.weight = w;
                    }
                    s.weight_reverse = self.reverse_at(c, 1);
                }
                "rise" => s.rise = self.int(c, "rise", 1, 1_000_000).map_or(1, |v| v as u32),
                "fall" => s.fall = self.int(c, "fall", 1, 1_000_000).map_or(1, |v| v as u32),
                "user" => s.script.user = self.script_user(c),
                "init_fail" => s.init_fail = self.flag(c).unwrap_or(false),
                _ => self.unknown(c, "vrrp_script"),
            }
        }
        if !have_script {
            self.error(n.span(), format!("vrrp_script '{name}' has no 'script'"));
            return None;
        }
        Some(s)
    }

    fn reverse_at(&mut self, n: &Node, i: usize) -> bool {
        match n.args.get(i) {
            None => false,
            Some(t) if t.text == "reverse" => true,
            Some(t) => {
                self.error(t.span, format!("expected 'reverse', found '{}'", t.text));
                false
            }
        }
    }

    fn track_file(&mut self, n: &Node) -> Option<TrackFile> {
        let name = self.name_arg(n)?;
        let mut file = None;
        let mut weight = None;
        let mut init_file = None;
        for c in self.block(n) {
            match c.name() {
                "file" => file = self.string(c, "a file path"),
                "weight" => {
                    self.no_block(c);
                    self.at_most(c, 2);
                    if let Some(w) = self.track_weight_at(c, 0) {
                        weight = Some((w, self.reverse_at(c, 1)));
                    }
                }
                "init_file" => {
                    self.no_block(c);
                    self.at_most(c, 2);
                    let mut value = None;
                    let mut overwrite = false;
                    for a in &c.args {
                        if a.text == "overwrite" {
                            overwrite = true;
                        } else {
                            match a.text.parse::<i64>() {
                                Ok(v) => value = Some(v),
                                Err(_) => self
                                    .error(a.span, format!("invalid init_file value '{}'", a.text)),
                            }
                        }
                    }
                    init_file = Some((value, overwrite));
                }
                _ => self.unknown(c, "track_file"),
            }
        }
        let Some(file) = file else {
            self.error(n.span(), format!("track_file '{name}' has no 'file'"));
            return None;
        };
        Some(TrackFile {
            name,
            file,
            weight,
            init_file,
        })
    }

    // === vrrp_sync_group ===

    fn notify_keyword(&mut self, c: &Node, notify: &mut Notify) -> bool {
        let slot = match c.name() {
            "notify_master" => &mut notify.master,
            "notify_backup" => &mut notify.backup,
            "notify_fault" => &mut notify.fault,
            "notify_stop" => &mut notify.stop,
            "notify" => &mut notify.any,
            _ => return false,
        };
        *slot = self.script(c);
        true
    }

    fn sync_group(&mut self, n: &Node) -> Option<SyncGroup> {
        let name = self.name_arg(n)?;
        let mut g = SyncGroup {
            name,
            group: Vec::new(),
            notify: Notify::default(),
            smtp_alert: None,
            track_interfaces: Vec::new(),
            track_scripts: Vec::new(),
            track_files: Vec::new(),
            global_tracking: false,
            sync_group_tracking_weight: false,
        };
        for c in self.block(n) {
            if self.notify_keyword(c, &mut g.notify) {
                continue;
            }
            match c.name() {
                "group" => {
                    for line in self.block(c) {
                        for t in std::iter::once(&line.keyword).chain(&line.args) {
                            g.group.push(t.text.clone());
                            self.refs.push(Reference {
                                kind: RefKind::Instance,
                                name: t.text.clone(),
                                span: t.span,
                            });
                        }
                    }
                }
                "smtp_alert" => g.smtp_alert = self.flag(c),
                "track_interface" => g.track_interfaces = self.tracked(c, RefKindOf::Interface),
                "track_script" => g.track_scripts = self.tracked(c, RefKindOf::Script),
                "track_file" => g.track_files = self.tracked(c, RefKindOf::File),
                "global_tracking" => {
                    self.warn(c.span(), "global_tracking is deprecated; use track_interface, track_script and track_file on the sync group");
                    g.global_tracking = self.flag(c).unwrap_or(false);
                }
                "sync_group_tracking_weight" => {
                    g.sync_group_tracking_weight = self.flag(c).unwrap_or(false)
                }
                "track_process" | "track_bfd" => self.unsupported(c),
                _ => self.unknown(c, "vrrp_sync_group"),
            }
        }
        if g.group.is_empty() {
            self.error(
                n.span(),
                format!("vrrp_sync_group '{}' has no 'group'", g.name),
            );
            return None;
        }
        Some(g)
    }

    /// `track_interface|track_script|track_file { NAME [weight N [reverse]] ... }`.
    fn tracked(&mut self, n: &Node, kind: RefKindOf) -> Vec<Tracked> {
        let mut out = Vec::new();
        for line in self.block(n) {
            self.no_block(line);
            let name = line.keyword.text.clone();
            match kind {
                RefKindOf::Interface => self.interface_ref(&name, line.keyword.span),
                RefKindOf::Script => self.refs.push(Reference {
                    kind: RefKind::Script,
                    name: name.clone(),
                    span: line.keyword.span,
                }),
                RefKindOf::File => self.refs.push(Reference {
                    kind: RefKind::TrackFile,
                    name: name.clone(),
                    span: line.keyword.span,
                }),
            }
            let mut weight = None;
            let mut reverse = false;
            match line.args.first().map(|t| t.text.as_str()) {
                None => {}
                Some("weight") => {
                    self.at_most(line, 3);
                    weight = self.track_weight_at(line, 1);
                    reverse = self.reverse_at(line, 2);
                }
                Some(other) => {
                    let span = line.args[0].span;
                    self.error(span, format!("expected 'weight', found '{other}'"));
                }
            }
            if out.iter().any(|t: &Tracked| t.name == name) {
                self.warn(
                    line.keyword.span,
                    format!("duplicate {} '{name}' ignored", n.name()),
                );
                continue;
            }
            out.push(Tracked {
                name,
                weight,
                reverse,
            });
        }
        out
    }

    // === vrrp_instance ===

    fn vrrp_instance(&mut self, n: &Node) -> Option<(VrrpInstance, InstanceSpans)> {
        let name = self.name_arg(n)?;
        if let Some(first) = self.instance_spans.get(&name) {
            let first = *first;
            self.error(
                n.args[0].span,
                format!(
                    "vrrp_instance '{name}' is defined twice (first at line {})",
                    first.line
                ),
            );
            return None;
        }
        self.instance_spans.insert(name.clone(), n.args[0].span);
        if n.block.is_none() {
            self.block(n);
            return None;
        }
        let placeholder = Vrid::new(1).ok()?;
        let mut i = VrrpInstance::new(&name, placeholder);
        let mut vrid = None;
        let mut vrid_written = false;
        let mut vips_written = false;
        let mut state_span = None;
        let mut nopreempt_span = None;
        let mut preempt_delay_span = None;
        let mut advert_span = None;
        let mut auth_span = None;
        for c in self.block(n) {
            if self.notify_keyword(c, &mut i.notify) {
                continue;
            }
            match c.name() {
                "state" => {
                    self.no_block(c);
                    self.at_most(c, 1);
                    state_span = Some(c.span());
                    match self.arg(c, 0, "MASTER or BACKUP") {
                        Some("MASTER") => i.state = Some(InitialState::Master),
                        Some("BACKUP") => i.state = Some(InitialState::Backup),
                        Some(other) => {
                            let msg = format!("invalid state '{other}': expected MASTER or BACKUP");
                            self.error(c.args[0].span, msg);
                        }
                        None => {}
                    }
                }
                "interface" => {
                    i.interface = self.string(c, "an interface");
                    if let Some(name) = i.interface.clone() {
                        self.interface_ref(&name, Self::arg_span(c, 0));
                    }
                }
                "virtual_router_id" => {
                    vrid_written = true;
                    vrid = self
                        .int(c, "virtual_router_id", 1, 255)
                        .and_then(|v| Vrid::new(v).ok())
                }
                "priority" => {
                    if let Some(p) = self
                        .int(c, "priority", 1, 255)
                        .and_then(|v| Priority::new(v).ok())
                    {
                        i.priority = p;
                    }
                }
                "advert_int" => {
                    advert_span = Some(Self::arg_span(c, 0));
                    i.advert_int = self.timer(c).unwrap_or(i.advert_int);
                }
                "version" => i.version = self.version(c),
                "virtual_ipaddress" => {
                    vips_written = true;
                    i.virtual_ipaddress = self.addresses(c);
                }
                "virtual_ipaddress_excluded" => i.virtual_ipaddress_excluded = self.addresses(c),
                "authentication" => {
                    auth_span = Some(c.span());
                    i.authentication = self.authentication(c);
                }
                "unicast_src_ip" => i.unicast_src_ip = self.ip(c),
                "unicast_peer" => i.unicast_peers = self.unicast_peers(c),
                "mcast_src_ip" => i.mcast_src_ip = self.ip(c),
                "track_interface" => i.track_interfaces = self.tracked(c, RefKindOf::Interface),
                "track_script" => i.track_scripts = self.tracked(c, RefKindOf::Script),
                "track_file" => i.track_files = self.tracked(c, RefKindOf::File),
                "smtp_alert" => i.smtp_alert = self.flag(c),
                "garp_master_delay" => i.garp_master_delay = self.whole_seconds(c),
                "garp_master_repeat" => i.garp_master_repeat = self.u32_value(c, "repeat count"),
                "garp_master_refresh" => i.garp_master_refresh = self.whole_seconds(c),
                "garp_master_refresh_repeat" => {
                    i.garp_master_refresh_repeat = self.u32_value(c, "repeat count")
                }
                "use_vmac" => {
                    self.no_block(c);
                    self.at_most(c, 1);
                    i.use_vmac = Some(c.args.first().map(|t| t.text.clone()));
                }
                "vmac_xmit_base" => i.vmac_xmit_base = self.presence(c),
                "accept" => i.accept = Some(self.presence(c)),
                "no_accept" => i.accept = Some(!self.presence(c)),
                "nopreempt" => {
                    nopreempt_span = Some(c.span());
                    i.nopreempt = self.presence(c);
                }
                "preempt" => i.nopreempt = !self.presence(c),
                "preempt_delay" => {
                    preempt_delay_span = Some(c.span());
                    i.preempt_delay = self.timer(c);
                    if i.preempt_delay.is_some_and(|t| t > Timer::from_secs(1000)) {
                        self.error(
                            Self::arg_span(c, 0),
                            "preempt_delay is out of range 0..1000 seconds",
                        );
                    }
                }
                "strict_mode" => i.strict_mode = self.flag(c),
                "dont_track_primary" => i.dont_track_primary = self.presence(c),
                "native_ipv6" => i.native_ipv6 = self.presence(c),
                "check_unicast_src" => i.check_unicast_src = self.flag(c).unwrap_or(false),
                "v3_checksum_as_v2" => i.v3_checksum_as_v2 = self.flag(c).unwrap_or(false),
                k if UNSUPPORTED_INSTANCE.contains(&k) => self.unsupported(c),
                _ => self.unknown(c, "vrrp_instance"),
            }
        }
        let Some(vrid) = vrid else {
            if !vrid_written {
                self.error(
                    n.span(),
                    format!("vrrp_instance '{name}' has no virtual_router_id"),
                );
            }
            return None;
        };
        if !vips_written {
            self.warn(
                n.args[0].span,
                format!("vrrp_instance '{name}' has no virtual_ipaddress"),
            );
        }
        i.virtual_router_id = vrid;
        let spans = InstanceSpans {
            state: state_span,
            nopreempt: nopreempt_span,
            preempt_delay: preempt_delay_span,
            advert: advert_span,
            auth: auth_span,
        };
        Some((i, spans))
    }

    fn check_instance(&mut self, i: &VrrpInstance, globals: &GlobalDefs, spans: InstanceSpans) {
        let InstanceSpans {
            state: state_span,
            nopreempt: nopreempt_span,
            preempt_delay: preempt_delay_span,
            advert: advert_span,
            auth: auth_span,
        } = spans;
        let master = i.state == Some(InitialState::Master);
        if master && i.nopreempt {
            if let Some(span) = nopreempt_span {
                self.warn(
                    span,
                    "nopreempt needs 'state BACKUP'; keepalived ignores it with state MASTER",
                );
            }
        }
        if master && i.preempt_delay.is_some() {
            if let Some(span) = preempt_delay_span {
                self.warn(
                    span,
                    "preempt_delay needs 'state BACKUP'; keepalived ignores it with state MASTER",
                );
            }
        }
        if i.nopreempt && i.preempt_delay.is_some() {
            if let Some(span) = preempt_delay_span {
                self.warn(span, "preempt_delay has no effect with nopreempt");
            }
        }
        let strict = i.strict_mode.unwrap_or(globals.vrrp_strict);
        if let Some(&span) = self.instance_spans.get(&i.name) {
            if strict && i.authentication.is_some() {
                self.warn(span, format!("'{}': strict mode does not support authentication; keepalived ignores it, and so does fulcrum", i.name));
            }
            if strict && (i.priority == Priority::OWNER) != (i.state == Some(InitialState::Master))
            {
                self.warn(span, format!("'{}': in strict mode, state MASTER goes with priority 255 (the address owner) and only with it", i.name));
            }
            if i.priority == Priority::OWNER && i.nopreempt {
                self.warn(
                    span,
                    format!(
                        "'{}': nopreempt is incompatible with priority 255; keepalived resets it",
                        i.name
                    ),
                );
            }
        }
        if globals.vrrp_strict && i.preempt_delay.is_some() {
            if let Some(span) = preempt_delay_span {
                self.warn(
                    span,
                    "preempt_delay is incompatible with vrrp_strict; keepalived resets it",
                );
            }
        }
        if let Some(&span) = self.instance_spans.get(&i.name) {
            if i.unicast_peers.is_empty() && (i.unicast_src_ip.is_some() || i.check_unicast_src) {
                self.warn(span, format!("vrrp_instance '{}' has unicast settings but no unicast_peer: it advertises by multicast", i.name));
            }
        }
        let version = i
            .version
            .or(globals.vrrp_version)
            .unwrap_or(VrrpVersion::V2);
        if let Some(span) = advert_span {
            match version {
                VrrpVersion::V2 => {
                    if i.advert_int < Timer::from_secs(1) || i.advert_int > Timer::from_secs(255) {
                        self.error(
                            span,
                            format!(
                                "advert_int {} is out of range 1..255 seconds for VRRP version 2",
                                i.advert_int
                            ),
                        );
                    } else if !i.advert_int.is_whole_seconds() {
                        self.warn(span, format!("VRRP version 2 advertises whole seconds; advert_int {} is rounded down", i.advert_int));
                    }
                }
                VrrpVersion::V3 => {
                    if i.advert_int < Timer::from_micros(10_000)
                        || i.advert_int > Timer::from_micros(40_950_000)
                    {
                        self.error(span, format!("advert_int {} is out of range 0.01..40.95 seconds for VRRP version 3", i.advert_int));
                    } else if !i.advert_int.as_micros().is_multiple_of(10_000) {
                        self.warn(span, format!("VRRP version 3 advertises centiseconds; advert_int {} is rounded down", i.advert_int));
                    }
                }
            }
        }
        if version == VrrpVersion::V3 && i.authentication.is_some() {
            if let Some(span) = auth_span {
                self.warn(
                    span,
                    "VRRP version 3 has no authentication; keepalived ignores it",
                );
            }
        }
        if i.priority == Priority::OWNER && i.state == Some(InitialState::Backup) {
            if let Some(span) = state_span {
                self.warn(
                    span,
                    "priority 255 is the address owner, which always starts as MASTER",
                );
            }
        }
        if let Some(first) = i.virtual_ipaddress.first() {
            if let std::net::IpAddr::V6(a) = first.addr {
                if !a.is_unicast_link_local() {
                    if let Some(&span) = self.instance_spans.get(&i.name) {
                        self.warn(
                            span,
                            format!(
                                "the first IPv6 virtual_ipaddress of '{}' should be link-local (RFC 5798 5.2.9); keepalived warns too",
                                i.name
                            ),
                        );
                    }
                }
            }
        }
        if let (Some(v4), Some(v6)) = (
            i.virtual_ipaddress.iter().find(|a| a.addr.is_ipv4()),
            i.virtual_ipaddress.iter().find(|a| a.addr.is_ipv6()),
        ) {
            if let Some(&span) = self.instance_spans.get(&i.name) {
                self.error(
                    span,
                    format!(
                        "vrrp_instance '{}' mixes IPv4 ({}) and IPv6 ({}) in virtual_ipaddress: use virtual_ipaddress_excluded for the other family",
                        i.name, v4.addr, v6.addr
                    ),
                );
            }
        }
    }

    fn authentication(&mut self, n: &Node) -> Option<Authentication> {
        self.at_most(n, 0);
        let mut kind: Option<(String, Span)> = None;
        let mut pass: Option<String> = None;
        for c in self.block(n) {
            match c.name() {
                "auth_type" => {
                    self.no_block(c);
                    self.at_most(c, 1);
                    if let Some(t) = self.arg(c, 0, "PASS or AH") {
                        kind = Some((t.to_string(), Self::arg_span(c, 0)));
                    }
                }
                "auth_pass" => {
                    pass = self.string(c, "a password");
                    if let Some(p) = &pass {
                        if p.chars().count() > 8 {
                            self.warn(
                                Self::arg_span(c, 0),
                                "auth_pass is longer than 8 characters; only the first 8 are used",
                            );
                        }
                    }
                }
                _ => self.unknown(c, "authentication"),
            }
        }
        match kind {
            Some((k, _)) if k == "PASS" => match pass {
                Some(p) => Some(Authentication::Pass(p)),
                None => {
                    self.error(n.span(), "authentication PASS needs 'auth_pass'");
                    None
                }
            },
            Some((k, span)) if k == "AH" => {
                self.error(span, "auth_type AH is not supported: it is deprecated (RFC 3768) and keepalived's AH interoperates with nothing else; use PASS or none");
                None
            }
            Some((k, span)) => {
                self.error(
                    span,
                    format!("invalid auth_type '{k}': expected PASS or AH"),
                );
                None
            }
            None => {
                self.error(n.span(), "authentication needs 'auth_type'");
                None
            }
        }
    }

    fn addresses(&mut self, n: &Node) -> Vec<VirtualAddress> {
        self.at_most(n, 0);
        let mut out = Vec::new();
        for line in self.block(n) {
            self.no_block(line);
            if let Some(a) = self.address(line) {
                out.push(a);
            }
        }
        out
    }

    /// `ADDR[/PREFIX] [brd ADDR] [dev IF] [scope SCOPE] [label LABEL] [no_track]`.
    fn address(&mut self, line: &Node) -> Option<VirtualAddress> {
        let text = &line.keyword.text;
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.as_str(), None),
        };
        let Ok(addr) = addr_text.parse::<IpAddr>() else {
            self.error(
                line.keyword.span,
                format!("invalid IP address '{addr_text}'"),
            );
            return None;
        };
        let max_prefix = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => None,
            Some(p) => match p.parse::<u8>() {
                Ok(v) if v <= max_prefix => Some(v),
                _ => {
                    self.error(
                        line.keyword.span,
                        format!("invalid prefix length '/{p}': expected 0..{max_prefix}"),
                    );
                    return None;
                }
            },
        };
        let mut a = VirtualAddress {
            addr,
            prefix,
            brd: None,
            dev: None,
            scope: None,
            label: None,
            no_track: false,
        };
        let mut i = 0;
        while i < line.args.len() {
            let key = line.args[i].text.as_str();
            let span = line.args[i].span;
            match key {
                "no_track" => {
                    a.no_track = true;
                    i += 1;
                    continue;
                }
                "brd" | "broadcast" => a.brd = self.parse_at(line, i + 1, "broadcast address"),
                "dev" => {
                    if let Some(dev) = self.arg(line, i + 1, "an interface after 'dev'") {
                        let dev = dev.to_string();
                        self.interface_ref(&dev, Self::arg_span(line, i + 1));
                        a.dev = Some(dev);
                    }
                }
                "scope" => {
                    match self.arg(line, i + 1, "a scope after 'scope'") {
                        Some(s @ ("site" | "link" | "host" | "nowhere" | "global")) => {
                            a.scope = Some(s.to_string())
                        }
                        Some(s) => {
                            let span = Self::arg_span(line, i + 1);
                            self.error(span, format!("invalid scope '{s}': expected global, site, link, host or nowhere"));
                        }
                        None => {}
                    }
                }
                "label" => {
                    a.label = self
                        .arg(line, i + 1, "a label after 'label'")
                        .map(str::to_string)
                }
                _ => {
                    self.error(span, format!("unknown virtual address option '{key}'"));
                    return None;
                }
            }
            i += 2;
        }
        Some(a)
    }

    fn unicast_peers(&mut self, n: &Node) -> Vec<UnicastPeer> {
        self.at_most(n, 0);
        let mut out = Vec::new();
        for line in self.block(n) {
            self.no_block(line);
            let Ok(addr) = line.keyword.text.parse::<IpAddr>() else {
                self.error(
                    line.keyword.span,
                    format!("invalid IP address '{}'", line.keyword.text),
                );
                continue;
            };
            let mut peer = UnicastPeer {
                addr,
                min_ttl: None,
                max_ttl: None,
            };
            let mut i = 0;
            while i < line.args.len() {
                let key = line.args[i].text.clone();
                let v = self.int_at(line, i + 1, &key, 0, 255).map(|v| v as u8);
                match key.as_str() {
                    "min_ttl" => peer.min_ttl = v,
                    "max_ttl" => peer.max_ttl = v,
                    _ => self.error(
                        line.args[i].span,
                        format!("unknown unicast_peer option '{key}': expected min_ttl or max_ttl"),
                    ),
                }
                i += 2;
            }
            out.push(peer);
        }
        out
    }

    // === LVS ===

    fn server_group(&mut self, n: &Node) -> Option<VirtualServerGroup> {
        let name = self.name_arg(n)?;
        let mut g = VirtualServerGroup {
            name,
            members: Vec::new(),
        };
        for line in self.block(n) {
            self.no_block(line);
            if line.name() == "fwmark" {
                if let Some(m) = self.int_at(line, 0, "fwmark", 1, i64::from(u32::MAX)) {
                    self.error(
                        line.keyword.span,
                        "fwmark members are not supported: fulcrum's XDP data plane runs before netfilter sets marks",
                    );
                    g.members.push(GroupMember::Fwmark(m as u32));
                }
                continue;
            }
            self.at_most(line, 1);
            let Some(port) = self.port_at(line, 0) else {
                continue;
            };
            let text = &line.keyword.text;
            if let Ok(addr) = text.parse::<IpAddr>() {
                g.members.push(GroupMember::Address { addr, port });
                continue;
            }
            // A.B.C.D-E: a range over the last part of the address.
            let parsed = text.rsplit_once('-').and_then(|(first, last)| {
                let first: IpAddr = first.parse().ok()?;
                let last = if first.is_ipv4() {
                    last.parse::<u8>().ok().map(u16::from)?
                } else {
                    u16::from_str_radix(last, 16).ok()?
                };
                Some((first, last))
            });
            match parsed {
                Some((first, last)) => {
                    let low = match first {
                        IpAddr::V4(a) => u16::from(a.octets()[3]),
                        IpAddr::V6(a) => a.segments()[7],
                    };
                    if last < low {
                        self.error(line.keyword.span, format!("address range '{text}' ends before it starts"));
                        continue;
                    }
                    g.members.push(GroupMember::Range { first, last, port });
                }
                None => self.error(
                    line.keyword.span,
                    format!("invalid virtual_server_group member '{text}': expected 'IP PORT', 'IP-LAST PORT' or 'fwmark N'"),
                ),
            }
        }
        Some(g)
    }

    fn virtual_server(&mut self, n: &Node) -> Option<VirtualServer> {
        let key = match n.args.first().map(|t| t.text.as_str()) {
            Some("fwmark") => {
                self.at_most(n, 2);
                let mark = self.int_at(n, 1, "fwmark", 1, i64::from(u32::MAX))? as u32;
                self.error(
                    n.args[0].span,
                    "fwmark virtual servers are not supported: fulcrum's XDP data plane runs before netfilter sets marks; use 'virtual_server IP PORT' or a virtual_server_group",
                );
                ServiceKey::Fwmark(mark)
            }
            Some("group") => {
                self.at_most(n, 2);
                let name = self.arg(n, 1, "a virtual_server_group name")?.to_string();
                self.refs.push(Reference {
                    kind: RefKind::ServerGroup,
                    name: name.clone(),
                    span: n.args[1].span,
                });
                ServiceKey::Group(name)
            }
            Some(_) => {
                self.at_most(n, 2);
                let addr = self.ip_at(n, 0)?;
                let port = self.port_at(n, 1)?;
                ServiceKey::Address { addr, port }
            }
            None => {
                self.error(
                    n.span(),
                    "'virtual_server' needs 'IP PORT', 'fwmark N' or 'group NAME'",
                );
                return None;
            }
        };
        let mut vs = VirtualServer::new(key);
        let mut rs_spans = Vec::new();
        for c in self.block(n) {
            if self.check_default(c, &mut vs.defaults) {
                continue;
            }
            match c.name() {
                "lb_algo" | "lvs_sched" => {
                    self.no_block(c);
                    self.at_most(c, 1);
                    if let Some(s) = self.enum_at::<Scheduler>(c, 0, "scheduler") {
                        vs.lb_algo = s;
                    }
                }
                "lb_kind" | "lvs_method" => {
                    self.no_block(c);
                    self.at_most(c, 1);
                    vs.lb_kind = self.enum_at::<ForwardMethod>(c, 0, "forwarding method");
                }
                "protocol" => {
                    self.no_block(c);
                    self.at_most(c, 1);
                    if let Some(p) = self.enum_at::<Protocol>(c, 0, "protocol") {
                        vs.protocol = Some(p);
                    }
                }
                "persistence_timeout" => {
                    vs.persistence_timeout = self
                        .int(c, "persistence_timeout", 1, 86400 * 31)
                        .map(|v| v as u32)
                }
                "persistence_granularity" => {
                    self.no_block(c);
                    vs.persistence_granularity = self.parse_at(c, 0, "netmask");
                }
                "persistence_engine" => self.unsupported(c),
                "virtualhost" => vs.virtualhost = self.string(c, "a host name"),
                "omega" => vs.omega = self.flag(c).unwrap_or(false),
                "quorum" => vs.quorum = self.int(c, "quorum", 1, 65535).map_or(1, |v| v as u32),
                "hysteresis" => {
                    vs.hysteresis = self.int(c, "hysteresis", 0, 65535).map_or(0, |v| v as u32)
                }
                "quorum_up" => vs.quorum_up = self.script(c),
                "quorum_down" => vs.quorum_down = self.script(c),
                "sorry_server" => {
                    self.no_block(c);
                    self.at_most(c, 2);
                    if let Some(ip) = self.ip_at(c, 0) {
                        let port = if c.args.len() > 1 {
                            self.port_at(c, 1)
                        } else {
                            None
                        };
                        vs.sorry_server = Some((ip, port));
                    }
                }
                "sorry_server_inhibit" => vs.sorry_server_inhibit = self.flag(c).unwrap_or(false),
                "sorry_server_lvs_method" => {
                    self.no_block(c);
                    vs.sorry_server_lvs_method =
                        self.enum_at::<ForwardMethod>(c, 0, "forwarding method");
                }
                "ha_suspend" => vs.ha_suspend = self.flag(c).unwrap_or(false),
                "ops" | "one_packet_scheduling" => vs.ops = self.flag(c).unwrap_or(false),
                "sh-port" => vs.sh_port = self.flag(c).unwrap_or(false),
                "sh-fallback" => vs.sh_fallback = self.flag(c).unwrap_or(false),
                "mh-port" => vs.mh_port = self.flag(c).unwrap_or(false),
                "mh-fallback" => vs.mh_fallback = self.flag(c).unwrap_or(false),
                "hashed" | "flag-1" | "flag-2" | "flag-3" | "lvs_flags" => self.unsupported(c),
                "real_server" => {
                    if let Some(rs) = self.real_server(c) {
                        rs_spans.push(c.span());
                        vs.real_servers.push(rs);
                    }
                }
                _ => self.unknown(c, "virtual_server"),
            }
        }
        self.check_service(n, &vs, &rs_spans);
        Some(vs)
    }

    fn check_service(&mut self, n: &Node, vs: &VirtualServer, rs_spans: &[Span]) {
        if let ServiceKey::Address { port: 0, .. } = vs.key {
            if vs.persistence_timeout.is_none() {
                self.error(
                    Self::arg_span(n, 1),
                    "port 0 (all ports) needs persistence: add 'persistence_timeout'",
                );
            }
        }
        if (vs.sh_port || vs.sh_fallback) && vs.lb_algo != Scheduler::Sh {
            self.warn(
                n.span(),
                format!(
                    "sh-port and sh-fallback apply to lb_algo sh, not {}",
                    vs.lb_algo
                ),
            );
        }
        if (vs.mh_port || vs.mh_fallback) && vs.lb_algo != Scheduler::Mh {
            self.warn(
                n.span(),
                format!(
                    "mh-port and mh-fallback apply to lb_algo mh, not {}",
                    vs.lb_algo
                ),
            );
        }
        if vs.protocol.is_none() && !matches!(vs.key, ServiceKey::Fwmark(_)) {
            self.diags.push(
                Diagnostic::warning(
                    n.span(),
                    "no protocol set: keepalived (and the kernel) default to UDP",
                )
                .with_help("add 'protocol TCP' for a TCP service"),
            );
        }
        if vs.ops && vs.protocol() != Protocol::Udp {
            self.warn(
                n.span(),
                "one-packet scheduling ('ops') applies to UDP services only",
            );
        }
        let service_port = match vs.key {
            ServiceKey::Address { port, .. } => Some(port),
            _ => None,
        };
        for (rs, span) in vs.real_servers.iter().zip(rs_spans) {
            let method = rs.lvs_method.unwrap_or(vs.forward_method());
            if let (Some(sp), Some(rp)) = (service_port, rs.port) {
                if method != ForwardMethod::Nat && sp != 0 && rp != sp {
                    self.error(
                        *span,
                        format!(
                            "real_server {} port {rp} differs from the service port {sp}: {} forwarding cannot change the port (use lb_kind NAT)",
                            rs.addr, method
                        ),
                    );
                }
            }
            if rs.addr.is_ipv4() != vs_family_v4(vs).unwrap_or(rs.addr.is_ipv4())
                && method != ForwardMethod::Tun
            {
                self.error(
                    *span,
                    format!(
                        "real_server {} is not of the virtual server's address family",
                        rs.addr
                    ),
                );
            }
        }
    }

    /// Check settings that a virtual server or real server can hold for its checkers.
    fn check_default(&mut self, c: &Node, d: &mut CheckDefaults) -> bool {
        match c.name() {
            "delay_loop" => d.delay_loop = self.timer(c),
            "retry" => d.retry = self.u32_value(c, "retry"),
            "delay_before_retry" => d.delay_before_retry = self.timer(c),
            "warmup" => d.warmup = self.timer(c),
            "connect_timeout" => d.connect_timeout = self.timer(c),
            "alpha" => d.alpha = self.flag(c),
            "inhibit_on_failure" => d.inhibit_on_failure = self.flag(c),
            _ => return false,
        }
        true
    }

    fn real_server(&mut self, n: &Node) -> Option<RealServer> {
        self.at_most(n, 2);
        let addr = self.ip_at(n, 0)?;
        let port = if n.args.len() > 1 {
            self.port_at(n, 1)
        } else {
            None
        };
        let mut rs = RealServer::new(addr, port);
        for c in self.block(n) {
            if self.check_default(c, &mut rs.defaults) {
                continue;
            }
            match c.name() {
                "weight" => {
                    if let Some(w) = self
                        .int(c, "weight", i64::from(Weight::MIN), i64::from(Weight::MAX))
                        .and_then(|v| Weight::new(v).ok())
                    {
                        rs.weight = w;
                    }
                }
                "lvs_method" => {
                    self.no_block(c);
                    rs.lvs_method = self.enum_at::<ForwardMethod>(c, 0, "forwarding method");
                }
                "notify_up" => rs.notify_up = self.script(c),
                "notify_down" => rs.notify_down = self.script(c),
                "uthreshold" => rs.uthreshold = self.u32_value(c, "uthreshold"),
                "lthreshold" => rs.lthreshold = self.u32_value(c, "lthreshold"),
                "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK" | "SMTP_CHECK"
                | "DNS_CHECK" | "UDP_CHECK" | "PING_CHECK" | "FILE_CHECK" => {
                    if let Some(ch) = self.checker(c) {
                        rs.checkers.push(ch);
                    }
                }
                "BFD_CHECK" => self.warn(
                    c.span(),
                    "BFD_CHECK is not supported by fulcrum; this checker is ignored",
                ),
                _ => self.unknown(c, "real_server"),
            }
        }
        if let (Some(u), Some(l)) = (rs.uthreshold, rs.lthreshold) {
            if l > u {
                self.error(n.span(), format!("lthreshold {l} is above uthreshold {u}"));
            }
        }
        Some(rs)
    }

    // === checkers ===

    fn checker_common(&mut self, c: &Node, common: &mut CheckerCommon) -> bool {
        match c.name() {
            "connect_ip" => common.connect_ip = self.ip(c),
            "connect_port" => {
                self.no_block(c);
                self.at_most(c, 1);
                common.connect_port = self.port_at(c, 0);
            }
            "bindto" => common.bindto = self.ip(c),
            "bind_port" => {
                self.no_block(c);
                self.at_most(c, 1);
                common.bind_port = self.port_at(c, 0);
            }
            "bind_if" => {
                common.bind_if = self.string(c, "an interface");
                if let Some(name) = common.bind_if.clone() {
                    self.interface_ref(&name, Self::arg_span(c, 0));
                }
            }
            "fwmark" => {
                common.fwmark = self
                    .int(c, "fwmark", 1, i64::from(u32::MAX))
                    .map(|v| v as u32)
            }
            "connect_timeout" => common.connect_timeout = self.timer(c),
            "retry" => common.retry = self.u32_value(c, "retry"),
            "nb_get_retry" => {
                self.warn(c.span(), "nb_get_retry is deprecated; use 'retry'");
                common.retry = self.u32_value(c, "retry");
            }
            "delay_before_retry" => common.delay_before_retry = self.timer(c),
            "warmup" => common.warmup = self.timer(c),
            "delay_loop" => common.delay_loop = self.timer(c),
            "alpha" => common.alpha = self.flag(c),
            "log_all_failures" => common.log_all_failures = self.flag(c),
            _ => return false,
        }
        true
    }

    fn checker(&mut self, n: &Node) -> Option<Checker> {
        self.at_most(n, 0);
        let mut common = CheckerCommon::default();
        let nodes = self.block(n);
        let kind = match n.name() {
            "TCP_CHECK" | "PING_CHECK" => {
                for c in nodes {
                    if !self.checker_common(c, &mut common) {
                        self.unknown(c, n.name());
                    }
                }
                if n.name() == "TCP_CHECK" {
                    CheckerKind::Tcp
                } else {
                    CheckerKind::Ping
                }
            }
            "HTTP_GET" | "SSL_GET" => {
                let mut h = HttpCheck::default();
                for c in nodes {
                    if self.checker_common(c, &mut common) {
                        continue;
                    }
                    match c.name() {
                        "url" => {
                            if let Some(u) = self.url(c) {
                                h.urls.push(u);
                            }
                        }
                        "virtualhost" => h.virtualhost = self.string(c, "a host name"),
                        "http_protocol" => {
                            h.http_protocol = match self.string(c, "an HTTP version").as_deref() {
                                Some("1.0") => Some(HttpProtocol::V1_0),
                                Some("1.0C") | Some("1.0c") => Some(HttpProtocol::V1_0C),
                                Some("1.1") => Some(HttpProtocol::V1_1),
                                Some(other) => {
                                    let msg = format!("invalid http_protocol '{other}': expected 1.0, 1.0C or 1.1");
                                    self.error(Self::arg_span(c, 0), msg);
                                    None
                                }
                                None => None,
                            }
                        }
                        "enable_sni" => h.enable_sni = self.flag(c),
                        "fast_recovery" => h.fast_recovery = self.flag(c),
                        "tls_compliant" => self.unsupported(c),
                        _ => self.unknown(c, n.name()),
                    }
                }
                if h.urls.is_empty() {
                    self.error(
                        n.span(),
                        format!("{} needs at least one 'url' block", n.name()),
                    );
                    return None;
                }
                if n.name() == "HTTP_GET" {
                    CheckerKind::Http(h)
                } else {
                    CheckerKind::Ssl(h)
                }
            }
            "MISC_CHECK" => {
                let mut path = None;
                let mut timeout = None;
                let mut dynamic = false;
                let mut user = None;
                for c in nodes {
                    if self.checker_common(c, &mut common) {
                        continue;
                    }
                    match c.name() {
                        "misc_path" => path = self.script(c),
                        "misc_timeout" => timeout = self.timer(c),
                        "misc_dynamic" => dynamic = self.presence(c),
                        "user" => user = self.script_user(c),
                        _ => self.unknown(c, n.name()),
                    }
                }
                let Some(mut path) = path else {
                    self.error(n.span(), "MISC_CHECK needs 'misc_path'");
                    return None;
                };
                if user.is_some() {
                    path.user = user;
                }
                CheckerKind::Misc(MiscCheck {
                    misc_path: path,
                    misc_timeout: timeout,
                    misc_dynamic: dynamic,
                })
            }
            "SMTP_CHECK" => {
                let mut s = SmtpCheck::default();
                for c in nodes {
                    if self.checker_common(c, &mut common) {
                        continue;
                    }
                    match c.name() {
                        "helo_name" => s.helo_name = self.string(c, "a host name"),
                        "host" => {
                            let mut h = CheckerCommon::default();
                            for hc in self.block(c) {
                                if !self.checker_common(hc, &mut h) {
                                    self.unknown(hc, "host");
                                }
                            }
                            s.hosts.push(h);
                        }
                        _ => self.unknown(c, n.name()),
                    }
                }
                CheckerKind::Smtp(s)
            }
            "DNS_CHECK" => {
                let mut d = DnsCheck::default();
                for c in nodes {
                    if self.checker_common(c, &mut common) {
                        continue;
                    }
                    match c.name() {
                        "type" => {
                            d.query_type = match self.string(c, "a query type") {
                                Some(t) if DNS_TYPES.contains(&t.as_str()) => Some(t),
                                Some(t) => {
                                    let msg = format!(
                                        "invalid DNS query type '{t}': expected one of {}",
                                        DNS_TYPES.join(" ")
                                    );
                                    self.error(Self::arg_span(c, 0), msg);
                                    None
                                }
                                None => None,
                            }
                        }
                        "name" => d.name = self.string(c, "a name to query"),
                        _ => self.unknown(c, n.name()),
                    }
                }
                CheckerKind::Dns(d)
            }
            "UDP_CHECK" => {
                let mut u = UdpCheck::default();
                for c in nodes {
                    if self.checker_common(c, &mut common) {
                        continue;
                    }
                    match c.name() {
                        "payload" => u.payload = self.hex(c),
                        "require_reply" => {
                            u.require_reply = Some(if c.args.is_empty() {
                                self.no_block(c);
                                None
                            } else {
                                self.hex(c)
                            })
                        }
                        "min_reply_length" => u.min_reply_length = self.u32_value(c, "length"),
                        "max_reply_length" => u.max_reply_length = self.u32_value(c, "length"),
                        _ => self.unknown(c, n.name()),
                    }
                }
                CheckerKind::Udp(u)
            }
            "FILE_CHECK" => {
                let mut file = None;
                let mut weight = None;
                for c in nodes {
                    if self.checker_common(c, &mut common) {
                        continue;
                    }
                    match c.name() {
                        "track_file" => {
                            file = self.string(c, "a track_file name");
                            if let Some(f) = &file {
                                self.refs.push(Reference {
                                    kind: RefKind::TrackFile,
                                    name: f.clone(),
                                    span: Self::arg_span(c, 0),
                                });
                            }
                        }
                        "weight" => {
                            self.no_block(c);
                            self.at_most(c, 2);
                            if let Some(w) = self.track_weight_at(c, 0) {
                                weight = Some((w, self.reverse_at(c, 1)));
                            }
                        }
                        _ => self.unknown(c, n.name()),
                    }
                }
                let Some(track_file) = file else {
                    self.error(n.span(), "FILE_CHECK needs 'track_file'");
                    return None;
                };
                CheckerKind::File(FileCheck { track_file, weight })
            }
            _ => return None,
        };
        Some(Checker { common, kind })
    }

    fn hex(&mut self, c: &Node) -> Option<String> {
        let text = self.string(c, "hex digits")?;
        if text.is_empty() || text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            self.error(
                Self::arg_span(c, 0),
                format!("invalid hex string '{text}': expected an even number of hex digits"),
            );
            return None;
        }
        Some(text.to_ascii_lowercase())
    }

    fn url(&mut self, n: &Node) -> Option<UrlCheck> {
        self.at_most(n, 0);
        let mut u = UrlCheck {
            path: String::new(),
            digest: None,
            status_code: Vec::new(),
            virtualhost: None,
            regex: None,
            regex_no_match: false,
        };
        let mut have_path = false;
        for c in self.block(n) {
            match c.name() {
                "path" => {
                    if let Some(p) = self.string(c, "a URL path") {
                        u.path = p;
                        have_path = true;
                    }
                }
                "digest" => {
                    if let Some(d) = self.string(c, "an MD5 digest") {
                        if d.len() == 32 && d.bytes().all(|b| b.is_ascii_hexdigit()) {
                            u.digest = Some(d.to_ascii_lowercase());
                        } else {
                            self.error(
                                Self::arg_span(c, 0),
                                format!("invalid digest '{d}': expected 32 hex digits (see 'fulcrum genhash')"),
                            );
                        }
                    }
                }
                "status_code" => {
                    self.no_block(c);
                    if c.args.is_empty() {
                        self.arg(c, 0, "a status code");
                    }
                    for t in &c.args {
                        match parse_status(&t.text) {
                            Some(r) => u.status_code.push(r),
                            None => self.error(
                                t.span,
                                format!("invalid status_code '{}': expected a code or range within 100..599", t.text),
                            ),
                        }
                    }
                }
                "virtualhost" => u.virtualhost = self.string(c, "a host name"),
                "regex" => u.regex = self.string(c, "a regular expression"),
                "regex_no_match" => u.regex_no_match = self.flag(c).unwrap_or(false),
                "regex_options" | "regex_stack" | "regex_min_offset" | "regex_max_offset" => {
                    self.unsupported(c)
                }
                _ => self.unknown(c, "url"),
            }
        }
        if !have_path {
            self.error(n.span(), "url needs 'path'");
            return None;
        }
        Some(u)
    }
}

enum RefKindOf {
    Interface,
    Script,
    File,
}

const DNS_TYPES: &[&str] = &["A", "NS", "CNAME", "SOA", "MX", "TXT", "AAAA"];

fn parse_status(text: &str) -> Option<StatusRange> {
    let (a, b) = text.split_once('-').unwrap_or((text, text));
    let first: u16 = a.parse().ok()?;
    let last: u16 = b.parse().ok()?;
    if !(100..=599).contains(&first) || !(100..=599).contains(&last) || last < first {
        return None;
    }
    Some(StatusRange { first, last })
}

fn vs_family_v4(vs: &VirtualServer) -> Option<bool> {
    match &vs.key {
        ServiceKey::Address { addr, .. } => Some(addr.is_ipv4()),
        _ => None,
    }
}
