//! `fulcrum check`: both configuration files checked as `keepalived -t` and `nginx -t`
//! would, every diagnostic printed.

use std::process::ExitCode;

use fulcrum_node::Sources;

use crate::CheckArgs;

/// `fulcrum check`: prints the diagnostics and a summary; 0 when valid, 1 when not.
pub fn check(args: &CheckArgs) -> ExitCode {
    if args.config.keepalived.is_none() && args.config.nginx.is_none() {
        eprintln!(
            "fulcrum check: no configuration given: use -f KEEPALIVED_CONF, -c NGINX_CONF, or both"
        );
        return ExitCode::from(2);
    }
    let sources = Sources::new(
        args.config.keepalived.clone(),
        args.config.nginx.clone(),
        args.config.config_id.clone(),
        !args.no_host_checks,
        args.strict,
    );
    let (config, report) = sources.load();
    print!("{}", report.text);
    let files: Vec<String> = [&sources.keepalived, &sources.nginx]
        .into_iter()
        .flatten()
        .map(|p| p.display().to_string())
        .collect();
    match config {
        Some(_) => {
            println!(
                "configuration {} is valid ({} warning{})",
                files.join(" and "),
                report.warnings,
                if report.warnings == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
        None => {
            println!(
                "configuration {} is invalid: {} error{}, {} warning{}",
                files.join(" and "),
                report.errors,
                if report.errors == 1 { "" } else { "s" },
                report.warnings,
                if report.warnings == 1 { "" } else { "s" }
            );
            ExitCode::from(1)
        }
    }
}
