//! Loading both configuration files into one checked configuration.

use std::path::PathBuf;

use fulcrum_diag::{Diagnostic, SourceMap};
use fulcrum_keepalived_conf::{KeepalivedConfig, LexOptions, LoadOptions};
use fulcrum_nginx_conf::NginxConfig;

use crate::host_facts as host;

/// A configuration that passed validation.
#[derive(Debug, Clone)]
pub struct Config {
    pub keepalived: Option<KeepalivedConfig>,
    pub nginx: Option<NginxConfig>,
    /// FNV-1a of the canonical printed form: changes exactly when the model changes.
    pub hash: u64,
}

/// What loading printed: rendered diagnostics and their counts.
#[derive(Debug, Default)]
pub struct Report {
    pub text: String,
    pub errors: usize,
    pub warnings: usize,
    /// Scripts configured with script security off: keepalived -t's security violation.
    pub security_violations: usize,
    /// Warnings the peer's own check counts as errors (all but those marked
    /// `peer_accepts`): what decides `keepalived -t`'s exit code.
    pub peer_errors: usize,
}

impl Report {
    fn add(&mut self, diagnostics: &[Diagnostic], sources: &SourceMap) {
        for d in diagnostics {
            if d.message == fulcrum_keepalived_conf::SCRIPT_SECURITY_OFF {
                self.security_violations += 1;
            }
            if d.is_error() {
                self.errors += 1;
            } else {
                self.warnings += 1;
                if !d.peer_accepts && d.message != fulcrum_keepalived_conf::SCRIPT_SECURITY_OFF {
                    self.peer_errors += 1;
                }
            }
        }
        self.text
            .push_str(&fulcrum_diag::render_all(diagnostics, sources));
    }

    /// A warning with no place in a file: something `fulcrum run` leaves out. keepalived
    /// takes it, so it is no error for `keepalived -t`.
    fn note(&mut self, message: &str) {
        self.warnings += 1;
        self.text.push_str(&format!("warning: {message}\n\n"));
    }
}

#[derive(Debug, Clone)]
pub struct Sources {
    pub keepalived: Option<PathBuf>,
    pub nginx: Option<PathBuf>,
    pub config_id: Option<String>,
    pub host_checks: bool,
    pub strict: bool,
    /// Which of keepalived.conf's parts run: keepalived's `-P` (VRRP only) and `-C`
    /// (checkers and layer 4 only) turn one off; both on by default.
    pub subsystems: Subsystems,
    /// nginx's `-g 'DIRECTIVES;'`, read with nginx.conf at every load.
    pub nginx_globals: Option<String>,
}

/// The parts of keepalived.conf that run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subsystems {
    /// vrrp_instance, vrrp_sync_group (and the scripts and files they track).
    pub vrrp: bool,
    /// virtual_server, virtual_server_group and their checkers.
    pub checkers: bool,
}

impl Default for Subsystems {
    fn default() -> Subsystems {
        Subsystems {
            vrrp: true,
            checkers: true,
        }
    }
}

impl Subsystems {
    /// Leaves out of `k` what does not run.
    fn keep(self, k: &mut KeepalivedConfig) {
        if !self.vrrp {
            k.vrrp_instances.clear();
            k.vrrp_sync_groups.clear();
        }
        if !self.checkers {
            k.virtual_servers.clear();
            k.virtual_server_groups.clear();
        }
    }
}

impl Sources {
    /// The files to load; without a config id, the host name up to its first dot, as
    /// keepalived takes it.
    pub fn new(
        keepalived: Option<PathBuf>,
        nginx: Option<PathBuf>,
        config_id: Option<String>,
        host_checks: bool,
        strict: bool,
    ) -> Sources {
        Sources {
            keepalived,
            nginx,
            config_id: config_id.or_else(host::default_config_id),
            host_checks,
            strict,
            subsystems: Subsystems::default(),
            nginx_globals: None,
        }
    }

    /// Loads and validates every file. The configuration is returned only when there is
    /// no error; the report holds every diagnostic either way.
    pub fn load(&self) -> (Option<Config>, Report) {
        let mut report = Report::default();
        if self.keepalived.is_none() && self.nginx.is_none() {
            // Nothing to read: a daemon whose layer-4 table waits for ipvsadm.
            let config = Config {
                keepalived: None,
                nginx: None,
                hash: fnv1a(b"\0"),
            };
            return (Some(config), report);
        }
        let interfaces = host::interfaces();
        let exists = |name: &str| interfaces.contains(name);
        let user_exists = |name: &str| host::user_exists(name);
        let mut keepalived = None;
        if let Some(path) = &self.keepalived {
            let options = LoadOptions {
                lex: LexOptions {
                    config_id: self.config_id.clone(),
                    includes: true,
                },
                interface_exists: if self.host_checks {
                    Some(&exists)
                } else {
                    None
                },
                user_exists: if self.host_checks {
                    Some(&user_exists)
                } else {
                    None
                },
            };
            let mut loaded = fulcrum_keepalived_conf::load(path, &options);
            if self.strict {
                fulcrum_diag::deny_warnings(&mut loaded.diagnostics);
            }
            report.add(&loaded.diagnostics, &loaded.sources);
            if !fulcrum_diag::has_errors(&loaded.diagnostics) {
                keepalived = loaded.config.map(|mut k| {
                    self.subsystems.keep(&mut k);
                    k
                });
            }
            // What the data plane cannot forward yet is said here, where `fulcrum check`
            // shows it, not only when `fulcrum run` starts.
            if let Some(k) = &keepalived {
                for w in crate::l4::rules(k).1 {
                    report.note(&format!("{w} (fulcrum run leaves it out)"));
                }
                if let Err(e) = crate::l4::sync::SyncConfig::from_keepalived(k) {
                    report.note(&format!("{e} (fulcrum run syncs no connections)"));
                }
            }
        }
        let mut nginx = None;
        if let Some(path) = &self.nginx {
            let options = fulcrum_nginx_conf::LoadOptions {
                includes: true,
                host_checks: self.host_checks,
                globals: self.nginx_globals.clone(),
            };
            let mut loaded = fulcrum_nginx_conf::load(path, &options);
            if self.strict {
                fulcrum_diag::deny_warnings(&mut loaded.diagnostics);
            }
            report.add(&loaded.diagnostics, &loaded.sources);
            if !fulcrum_diag::has_errors(&loaded.diagnostics) {
                nginx = loaded.config;
            }
        }
        if report.errors > 0 {
            return (None, report);
        }
        let mut canonical = String::new();
        if let Some(k) = &keepalived {
            canonical.push_str(&fulcrum_keepalived_conf::print(k));
        }
        canonical.push('\0');
        if let Some(n) = &nginx {
            canonical.push_str(&fulcrum_nginx_conf::print(n));
        }
        let config = Config {
            keepalived,
            nginx,
            hash: fnv1a(canonical.as_bytes()),
        };
        (Some(config), report)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No file at all: a daemon for ipvsadm alone, not an error.
    #[test]
    fn no_file_is_an_empty_configuration() {
        let (config, report) = Sources::new(None, None, None, false, false).load();
        let config = config.expect("an empty configuration");
        assert!(config.keepalived.is_none() && config.nginx.is_none());
        assert_eq!(report.errors, 0);
    }
}
