//! The main context: worker and event settings, and the http block.

use super::*;

impl Builder<'_> {
    pub fn config(&mut self, ds: &[Directive]) -> NginxConfig {
        let mut cfg = NginxConfig::default();
        let mut seen_events = false;
        let mut wp_seen = false;
        let mut seen = std::collections::HashSet::new();
        for d in ds {
            if !self.check(d, Ctx::Main) {
                continue;
            }
            match d.name.text.as_str() {
                "worker_processes" => {
                    if wp_seen {
                        self.error(d.name.span, "\"worker_processes\" directive is duplicate");
                    }
                    wp_seen = true;
                    let a = &d.args[0];
                    if a.text == "auto" {
                        cfg.worker_processes = WorkerProcesses::Auto;
                    } else {
                        match a.text.parse::<u32>() {
                            Ok(n) if n > 0 => cfg.worker_processes = WorkerProcesses::Count(n),
                            _ => self.error(
                                a.span,
                                format!(
                                    "invalid value \"{}\" in \"worker_processes\" directive",
                                    a.text
                                ),
                            ),
                        }
                    }
                }
                "pid" => {
                    if !seen.insert("pid") {
                        self.error(d.name.span, "\"pid\" directive is duplicate");
                    }
                    cfg.pid = Some(d.args[0].text.clone());
                }
                name @ ("daemon" | "master_process") => {
                    if !seen.insert(name) {
                        self.error(d.name.span, format!("\"{name}\" directive is duplicate"));
                    }
                    if let Some(on) = self.flag(d) {
                        match name {
                            "daemon" => cfg.daemon = on,
                            _ => cfg.master_process = on,
                        }
                    }
                }
                "user" => {
                    if !seen.insert("user") {
                        self.error(d.name.span, "\"user\" directive is duplicate");
                    }
                    cfg.user = Some((
                        d.args[0].text.clone(),
                        d.args.get(1).map(|g| g.text.clone()),
                    ));
                }
                "worker_rlimit_nofile" => {
                    if !seen.insert("worker_rlimit_nofile") {
                        self.error(
                            d.name.span,
                            "\"worker_rlimit_nofile\" directive is duplicate",
                        );
                    }
                    match d.args[0].text.parse::<u64>() {
                        Ok(n) => cfg.worker_rlimit_nofile = Some(n),
                        Err(_) => self.error(
                            d.args[0].span,
                            "\"worker_rlimit_nofile\" directive invalid number",
                        ),
                    }
                }
                "worker_cpu_affinity" => {
                    if !seen.insert("worker_cpu_affinity") {
                        self.error(
                            d.name.span,
                            "\"worker_cpu_affinity\" directive is duplicate",
                        );
                    }
                    cfg.worker_cpu_affinity = self.cpu_affinity(d);
                }
                "error_log" => cfg.error_log = self.error_log(d),
                "events" => {
                    if seen_events {
                        self.error(d.name.span, "\"events\" directive is duplicate");
                    }
                    seen_events = true;
                    for e in d.block.as_deref().unwrap_or_default() {
                        if !self.check(e, Ctx::Events) {
                            continue;
                        }
                        match e.name.text.as_str() {
                            "worker_connections" => {
                                if let Some(n) = self.number(&e.args[0]) {
                                    cfg.worker_connections = n;
                                }
                            }
                            "use" if e.args[0].text != "epoll" => {
                                self.error(
                                    e.args[0].span,
                                    format!(
                                        "invalid event type \"{}\": fulcrum uses epoll",
                                        e.args[0].text
                                    ),
                                );
                            }
                            "multi_accept" => {
                                self.flag(e);
                            }
                            _ => {}
                        }
                    }
                }
                "http" => {
                    if cfg.http.is_some() {
                        self.error(d.name.span, "\"http\" directive is duplicate");
                        continue;
                    }
                    cfg.http = Some(self.http(d.block.as_deref().unwrap_or_default()));
                }
                _ => {}
            }
        }
        if let (Some(CpuAffinity::Masks(m)), WorkerProcesses::Count(n)) =
            (&cfg.worker_cpu_affinity, cfg.worker_processes)
        {
            if m.len() != 1 && m.len() != n as usize {
                self.diags.push(Diagnostic::warning(
                    None,
                    "the number of \"worker_processes\" is not equal to the number of \"worker_cpu_affinity\" masks, using last mask for remaining worker processes",
                ));
            }
        }
        if !seen_events {
            self.diags.push(Diagnostic::error(
                None,
                "no \"events\" section in configuration",
            ));
        }
        self.check_variables();
        cfg
    }

    /// `worker_cpu_affinity auto [MASK]` or `MASK...`, checked as nginx checks them.
    fn cpu_affinity(&mut self, d: &Directive) -> Option<CpuAffinity> {
        let auto = d.args[0].text == "auto";
        if auto && d.args.len() > 2 {
            self.error(
                d.name.span,
                "invalid number of arguments in \"worker_cpu_affinity\" directive",
            );
            return None;
        }
        let masks = &d.args[usize::from(auto)..];
        for m in masks {
            if m.text.len() > 1024 {
                self.error(
                    m.span,
                    "\"worker_cpu_affinity\" supports up to 1024 CPUs only",
                );
                return None;
            }
            if let Some(c) = m.text.chars().find(|c| *c != '0' && *c != '1') {
                self.error(
                    m.span,
                    format!("invalid character \"{c}\" in \"worker_cpu_affinity\""),
                );
                return None;
            }
        }
        let masks: Vec<String> = masks.iter().map(|m| m.text.clone()).collect();
        Some(if auto {
            CpuAffinity::Auto(masks.into_iter().next())
        } else {
            CpuAffinity::Masks(masks)
        })
    }

    pub(super) fn check_variables(&mut self) {
        let used = std::mem::take(&mut self.used_vars);
        for (v, span) in used {
            let known = BUILTIN_VARIABLES.contains(&v.as_str())
                || VARIABLE_PREFIXES
                    .iter()
                    .any(|p| v.starts_with(p) && v.len() > p.len())
                || self.map_vars.contains(&v)
                || v.bytes().all(|b| b.is_ascii_digit());
            if !known {
                self.error(span, format!("unknown \"{v}\" variable"));
            }
        }
    }

    pub(super) fn error_log(&mut self, d: &Directive) -> Option<ErrorLog> {
        if d.args.len() > 2 {
            self.error(
                d.args[2].span,
                format!("invalid parameter \"{}\"", d.args[2].text),
            );
        }
        let level = d.args.get(1).map(|l| l.text.clone());
        if let Some(l) = &level {
            const LEVELS: &[&str] = &[
                "debug", "info", "notice", "warn", "error", "crit", "alert", "emerg",
            ];
            if !LEVELS.contains(&l.as_str()) {
                self.error(d.args[1].span, format!("invalid log level \"{l}\""));
                return None;
            }
        }
        Some(ErrorLog {
            path: d.args[0].text.clone(),
            level,
        })
    }
}
