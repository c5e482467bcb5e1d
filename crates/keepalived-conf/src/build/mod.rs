//! The statement tree into the typed model: every keyword keepalived knows in the blocks we
//! model, with its arguments checked and located. Unknown keywords are warnings, as
//! keepalived logs and skips them; keywords keepalived knows that fulcrum does not
//! implement are warnings that say so.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use fulcrum_diag::{Diagnostic, Span};
use fulcrum_types::{
    ForwardMethod, Priority, Protocol, Scheduler, Timer, TrackWeight, Vrid, Weight,
};

use crate::model::*;
use crate::tree::Node;

mod bgp;
mod checkers;
mod global;
mod lvs;
mod vrrp;

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
    /// Where `lvs_sync_daemon` names its instance, checked once every instance is read.
    sync_daemon_span: Option<Span>,
    /// The first vrrp_instance's `lvs_sync_daemon_interface`: (interface, instance, where).
    instance_sync_daemon: Option<(String, String, Span)>,
    /// Where fulcrum_bgp's `vips` line is, to check its addresses once every
    /// virtual_server is read.
    bgp_vips_span: Option<Span>,
    /// Where the fulcrum_bgp block starts.
    bgp_span: Option<Span>,
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
            sync_daemon_span: None,
            instance_sync_daemon: None,
            bgp_vips_span: None,
            bgp_span: None,
        }
    }

    // === helpers ===

    fn error(&mut self, span: Span, message: impl Into<String>) {
        self.diags.push(Diagnostic::error(span, message));
    }

    fn warn(&mut self, span: Span, message: impl Into<String>) {
        self.diags.push(Diagnostic::warning(span, message));
    }

    /// A warning for something keepalived -t passes silently (a keyword it knows that
    /// Fulcrum skips, a leniency it applies without a word).
    fn note(&mut self, span: Span, message: impl Into<String>) {
        self.diags
            .push(Diagnostic::warning(span, message).peer_accepts());
    }

    fn unknown(&mut self, n: &Node, context: &str) {
        self.warn(
            n.span(),
            format!("unknown keyword '{}' in {context}; ignored", n.name()),
        );
    }

    fn unsupported(&mut self, n: &Node) {
        self.note(
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
            self.note(
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
            "fulcrum_bgp" => {
                if self.cfg.bgp.is_some() {
                    self.error(n.span(), "fulcrum_bgp is given twice");
                } else {
                    self.bgp_span = Some(n.span());
                    self.cfg.bgp = self.bgp(n);
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
        let mut cfg = cfg;
        self.check_sync_daemon(&mut cfg);
        self.check_bgp_vips(&cfg);
        if let (Some(span), false) = (self.first_script, cfg.global_defs.enable_script_security) {
            self.diags.push(
                Diagnostic::warning(span, crate::SCRIPT_SECURITY_OFF)
                    .with_help("add 'enable_script_security' (and 'script_user') to global_defs; keepalived -t reports this as a security violation"),
            );
        }
        (cfg, self.diags)
    }

    /// A VIP fulcrum_bgp announces needs a virtual_server at its address, else it is never
    /// announced.
    fn check_bgp_vips(&mut self, cfg: &KeepalivedConfig) {
        // A VIP goes only to neighbours of its family (BIRD's ipv4 and ipv6 channels).
        if let (Some(bgp), Some(span)) = (&cfg.bgp, self.bgp_span) {
            let announced: Vec<IpAddr> = if bgp.vips.is_empty() {
                cfg.virtual_servers
                    .iter()
                    .filter_map(|vs| match vs.key {
                        crate::model::ServiceKey::Address { addr, .. } => Some(addr),
                        _ => None,
                    })
                    .collect()
            } else {
                bgp.vips.clone()
            };
            for family_v6 in [false, true] {
                let has_neighbor = bgp.neighbors.iter().any(|n| n.addr.is_ipv6() == family_v6);
                if let Some(vip) = announced.iter().find(|v| v.is_ipv6() == family_v6) {
                    if !has_neighbor {
                        self.warn(
                            span,
                            format!(
                                "fulcrum_bgp: no {} neighbor, so {vip} (and any other {} VIP) is never announced",
                                if family_v6 { "IPv6" } else { "IPv4" },
                                if family_v6 { "IPv6" } else { "IPv4" },
                            ),
                        );
                    }
                }
            }
        }
        let (Some(bgp), Some(span)) = (&cfg.bgp, self.bgp_vips_span) else {
            return;
        };
        for vip in &bgp.vips {
            let served = cfg.virtual_servers.iter().any(|vs| {
                matches!(vs.key, crate::model::ServiceKey::Address { addr, .. } if addr == *vip)
            });
            if !served {
                self.warn(
                    span,
                    format!(
                        "fulcrum_bgp vips: no virtual_server at {vip}, so it is never announced"
                    ),
                );
            }
        }
    }

    /// keepalived clears lvs_sync_daemon when its instance does not exist, with a
    /// message, and goes on.
    fn check_sync_daemon(&mut self, cfg: &mut KeepalivedConfig) {
        // The global keyword wins over an instance's lvs_sync_daemon_interface.
        if let Some((interface, instance, span)) = self.instance_sync_daemon.take() {
            if cfg.global_defs.lvs_sync_daemon.is_none() {
                cfg.global_defs.lvs_sync_daemon = Some(LvsSyncDaemon {
                    interface,
                    instance: Some(instance),
                    syncid: None,
                    maxlen: None,
                    port: None,
                    ttl: None,
                    group: None,
                });
                self.sync_daemon_span = Some(span);
            }
        }
        let Some(d) = &cfg.global_defs.lvs_sync_daemon else {
            return;
        };
        let Some(name) = &d.instance else {
            return;
        };
        if let (false, Some(span)) = (
            cfg.vrrp_instances.iter().any(|i| &i.name == name),
            self.sync_daemon_span,
        ) {
            self.warn(
                span,
                format!(
                    "vrrp_instance '{name}' of lvs_sync_daemon is not defined; no connection sync"
                ),
            );
            cfg.global_defs.lvs_sync_daemon = None;
        }
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
