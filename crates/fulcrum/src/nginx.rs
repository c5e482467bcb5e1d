//! The binary as `nginx` (a symlink, or `fulcrum nginx ARGS`): nginx's command line
//! (`-?hvVtTq`, `-s signal`, `-p prefix`, `-e file`, `-c file`, `-g directives`), its pid
//! file, `daemon`, and its signals, running only what nginx.conf asks, so that Debian's
//! nginx unit (`Type=forking`, `nginx -t -q -g 'daemon on; master_process on;'`, then
//! `nginx -g ...`, `nginx -g ... -s reload`, QUIT to stop) runs it unchanged.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use fulcrum_nginx_conf::{LoadOptions, COMMAND_LINE};

/// Debian's nginx build: `--prefix=/usr/share/nginx --conf-path=/etc/nginx/nginx.conf
/// --pid-path=/run/nginx.pid`.
pub const DEFAULT_PREFIX: &str = "/usr/share/nginx/";
pub const DEFAULT_CONF: &str = "/etc/nginx/nginx.conf";
pub const DEFAULT_PID: &str = "/run/nginx.pid";

/// The nginx version whose configuration language and behaviour Fulcrum follows.
pub const NGINX_VERSION: &str = "1.22.1";

/// The control socket when running as nginx (FULCRUM_CONTROL moves it): beside a
/// keepalived-command-line daemon's, so both can run while a host migrates.
pub const CONTROL_SOCKET: &str = "/run/fulcrum/nginx.sock";

/// `-s`'s signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Stop,
    Quit,
    Reopen,
    Reload,
}

impl Signal {
    fn number(self) -> nix::sys::signal::Signal {
        use nix::sys::signal::Signal::*;
        match self {
            Signal::Stop => SIGTERM,
            Signal::Quit => SIGQUIT,
            Signal::Reopen => SIGUSR1,
            Signal::Reload => SIGHUP,
        }
    }
}

/// nginx's command line, parsed as ngx_get_options parses it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Args {
    pub help: bool,
    pub version: bool,
    pub configure: bool,
    pub test: bool,
    pub dump: bool,
    pub quiet: bool,
    pub signal: Option<Signal>,
    pub prefix: Option<String>,
    pub error_log: Option<String>,
    pub conf: Option<String>,
    pub globals: Option<String>,
}

/// Parses nginx's options (the program name not included); the error is nginx's message.
pub fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut i = 0;
    while i < argv.len() {
        let arg = &argv[i];
        let Some(flags) = arg.strip_prefix('-') else {
            return Err(format!("invalid option: \"{arg}\""));
        };
        let chars: Vec<char> = flags.chars().collect();
        let mut j = 0;
        while j < chars.len() {
            let c = chars[j];
            j += 1;
            // The options that take a value: the rest of this word, else the next word.
            let mut value = |what: &str| -> Result<String, String> {
                let rest: String = chars[j..].iter().collect();
                j = chars.len();
                if !rest.is_empty() {
                    return Ok(rest);
                }
                i += 1;
                argv.get(i)
                    .cloned()
                    .ok_or_else(|| format!("option \"-{c}\" requires {what}"))
            };
            match c {
                '?' | 'h' => {
                    a.help = true;
                    a.version = true;
                }
                'v' => a.version = true,
                'V' => {
                    a.version = true;
                    a.configure = true;
                }
                't' => a.test = true,
                'T' => {
                    a.test = true;
                    a.dump = true;
                }
                'q' => a.quiet = true,
                'p' => a.prefix = Some(value("directory name")?),
                'e' => a.error_log = Some(value("file name")?),
                'c' => a.conf = Some(value("file name")?),
                'g' => a.globals = Some(value("parameter")?),
                's' => {
                    let s = value("parameter")?;
                    a.signal = Some(match s.as_str() {
                        "stop" => Signal::Stop,
                        "quit" => Signal::Quit,
                        "reopen" => Signal::Reopen,
                        "reload" => Signal::Reload,
                        _ => return Err(format!("invalid option: \"-s {s}\"")),
                    });
                }
                _ => return Err(format!("invalid option: \"{c}\"")),
            }
        }
        i += 1;
    }
    Ok(a)
}

const USAGE: &str = "Usage: nginx [-?hvVtTq] [-s signal] [-p prefix]
             [-e filename] [-c filename] [-g directives]

Options:
  -?,-h         : this help
  -v            : show version and exit
  -V            : show version and configure options then exit
  -t            : test configuration and exit
  -T            : test configuration, dump it and exit
  -q            : suppress non-error messages during configuration testing
  -s signal     : send signal to a master process: stop, quit, reopen, reload
  -p prefix     : set prefix path (default: /usr/share/nginx/)
  -e filename   : set error log file (default: stderr)
  -c filename   : set configuration file (default: /etc/nginx/nginx.conf)
  -g directives : set global directives out of configuration file
";

/// `-V`'s configure line: the paths of Debian's build, and a `--with-*` for each nginx
/// module Fulcrum implements that nginx does not build by default, so tools that probe
/// for a module get a true answer (the default ones it has, rewrite, headers and access
/// among them, need no flag).
pub fn configure_arguments() -> String {
    [
        "--prefix=/usr/share/nginx",
        "--conf-path=/etc/nginx/nginx.conf",
        "--http-log-path=/var/log/nginx/access.log",
        "--error-log-path=stderr",
        "--pid-path=/run/nginx.pid",
        "--with-http_realip_module",
        "--with-http_ssl_module",
        "--with-http_v2_module",
    ]
    .join(" ")
}

/// A path as nginx resolves it: absolute as it is, else under the prefix.
fn full(prefix: &str, path: &str) -> PathBuf {
    if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        Path::new(prefix).join(path)
    }
}

impl Args {
    fn prefix(&self) -> String {
        match &self.prefix {
            Some(p) if p.ends_with('/') => p.clone(),
            Some(p) => format!("{p}/"),
            None => DEFAULT_PREFIX.into(),
        }
    }

    /// `-c`, else `conf/nginx.conf` under `-p`, else Debian's /etc/nginx/nginx.conf.
    pub fn conf(&self) -> PathBuf {
        match (&self.conf, &self.prefix) {
            (Some(c), _) => full(&self.prefix(), c),
            (None, Some(_)) => full(&self.prefix(), "conf/nginx.conf"),
            (None, None) => PathBuf::from(DEFAULT_CONF),
        }
    }

    fn load(&self, host_checks: bool) -> fulcrum_nginx_conf::Loaded {
        fulcrum_nginx_conf::load(
            &self.conf(),
            &LoadOptions {
                includes: true,
                host_checks,
                globals: self.globals.clone(),
            },
        )
    }
}

/// The pid file a configuration names (`pid`, under the prefix when relative), or the
/// default.
fn pid_file(args: &Args, pid: Option<&str>) -> PathBuf {
    full(&args.prefix(), pid.unwrap_or(DEFAULT_PID))
}

/// `nginx ARGS` (the program name first).
pub fn main(argv: Vec<String>) -> ExitCode {
    let args = match parse(argv.get(1..).unwrap_or_default()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("nginx: {e}");
            return ExitCode::from(1);
        }
    };
    if args.version {
        eprintln!(
            "nginx version: fulcrum/{} (nginx/{NGINX_VERSION} compatible)",
            env!("CARGO_PKG_VERSION")
        );
        if args.help {
            eprint!("{USAGE}");
        }
        if args.configure {
            eprintln!("built by fulcrum {}", crate::VERSION.replace('\n', ", "));
            eprintln!("configure arguments: {}", configure_arguments());
        }
        if !args.test {
            return ExitCode::SUCCESS;
        }
    }
    if args.test {
        return test(&args);
    }
    if let Some(signal) = args.signal {
        return send(&args, signal);
    }
    run(&args)
}

/// `-t` and `-T`: nginx's messages on standard error, and for -T every file read on
/// standard output; 0 when the configuration is valid, 1 when not.
fn test(args: &Args) -> ExitCode {
    let conf = args.conf();
    let loaded = args.load(true);
    for d in &loaded.diagnostics {
        eprintln!("{}", message(d, &loaded.sources));
    }
    if loaded.has_errors() {
        eprintln!("nginx: configuration file {} test failed", conf.display());
        return ExitCode::from(1);
    }
    if !args.quiet {
        eprintln!(
            "nginx: the configuration file {} syntax is ok",
            conf.display()
        );
        eprintln!(
            "nginx: configuration file {} test is successful",
            conf.display()
        );
    }
    if args.dump {
        for f in loaded.sources.files() {
            if f.path == Path::new(COMMAND_LINE) {
                continue;
            }
            println!("# configuration file {}:", f.path.display());
            println!("{}", f.text);
        }
    }
    ExitCode::SUCCESS
}

/// A diagnostic as nginx writes one during a test: `nginx: [emerg] MESSAGE in FILE:LINE`.
fn message(d: &fulcrum_diag::Diagnostic, sources: &fulcrum_diag::SourceMap) -> String {
    let level = if d.is_error() { "emerg" } else { "warn" };
    let place = d
        .span
        .and_then(|s| sources.path(s.file).map(|p| (p, s.line)))
        .map(|(p, line)| format!(" in {}:{line}", p.display()))
        .unwrap_or_default();
    format!("nginx: [{level}] {}{place}", d.message)
}

/// `-s SIGNAL`: the master's pid from the pid file the configuration names.
fn send(args: &Args, signal: Signal) -> ExitCode {
    let loaded = args.load(false);
    let Some(cfg) = loaded.config else {
        for d in &loaded.diagnostics {
            eprintln!("{}", message(d, &loaded.sources));
        }
        return ExitCode::from(1);
    };
    let path = pid_file(args, cfg.pid.as_deref());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "nginx: [error] open() \"{}\" failed ({}: {})",
                path.display(),
                e.raw_os_error().unwrap_or(0),
                e
            );
            return ExitCode::from(1);
        }
    };
    let Some(pid) = text.trim().parse::<i32>().ok().filter(|p| *p > 0) else {
        eprintln!(
            "nginx: [error] invalid PID number \"{}\" in \"{}\"",
            text.trim(),
            path.display()
        );
        return ExitCode::from(1);
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal.number()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "nginx: [alert] kill({pid}, {}) failed ({e})",
                signal.number() as i32
            );
            ExitCode::from(1)
        }
    }
}

/// What `fulcrum run` does differently for nginx's command line.
#[derive(Debug, Clone)]
pub struct AsNginx {
    /// Written once the listening sockets are bound, removed at exit.
    pub pid_file: PathBuf,
    /// `daemon on`: into the background, the caller returning once the pid file is written.
    pub daemon: bool,
    /// Started by an old binary's USR2, on its listening sockets (nginx's `NGINX`
    /// environment variable): already in the background, and taking the control socket
    /// over from the process that started it.
    pub inherited: bool,
    /// The program a USR2 starts: this one as it was invoked (the path, so that the new
    /// file a package upgrade put there is what runs), with the same arguments.
    pub program: PathBuf,
    pub argv: Vec<String>,
}

impl AsNginx {
    /// nginx honours WINCH only in a master that runs in the background (in the
    /// foreground it is the terminal's resize).
    pub fn daemonized(&self) -> bool {
        self.daemon || self.inherited
    }

    /// Where the pid file moves while a new binary runs beside this one.
    pub fn old_pid_file(&self) -> PathBuf {
        let mut p = self.pid_file.clone().into_os_string();
        p.push(".oldbin");
        PathBuf::from(p)
    }
}

/// The environment variable that passes listening sockets to a new binary, as nginx's.
pub const INHERIT_VAR: &str = "NGINX";

/// The descriptors `NGINX` names (`3;4;` or `3:4:`), as nginx reads them: an invalid
/// number ends the list. The messages are for the log.
pub fn parse_inherited(value: &str) -> (Vec<i32>, Option<String>) {
    let mut fds = Vec::new();
    for part in value.split([';', ':']).filter(|p| !p.is_empty()) {
        match part.parse::<i32>() {
            Ok(fd) if fd >= 0 => fds.push(fd),
            _ => {
                return (
                    fds,
                    Some(format!(
                        "invalid socket number \"{part}\" in {INHERIT_VAR} environment variable, ignoring the rest of the variable"
                    )),
                )
            }
        }
    }
    (fds, None)
}

/// Takes the listening sockets an old binary passed in `NGINX` (and removes the
/// variable, so nothing this process starts inherits the claim). None when not started
/// so; else the warnings for the log.
fn take_inherited() -> Option<Vec<String>> {
    let value = std::env::var(INHERIT_VAR).ok()?;
    // Single-threaded still: nothing else reads the environment meanwhile.
    std::env::remove_var(INHERIT_VAR);
    let (fds, mut warnings) = {
        let (fds, w) = parse_inherited(&value);
        (fds, w.into_iter().collect::<Vec<_>>())
    };
    let mut sockets = Vec::new();
    for fd in fds {
        match fulcrum_sys::inherited_listener(fd) {
            Ok(l) => sockets.push(l),
            Err(e) => warnings.push(format!("inherited socket #{fd} ignored: {e}")),
        }
    }
    fulcrum_proxy::inherit(sockets);
    Some(warnings)
}

/// This program as it was invoked, for a binary upgrade to run the file now at that
/// path: argv[0] made absolute (against the directory it was started in), or found in
/// PATH; else the running binary itself.
fn invoked_program() -> PathBuf {
    let exe = || std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let Some(arg0) = std::env::args_os().next().map(PathBuf::from) else {
        return exe();
    };
    if arg0.components().count() > 1 {
        return std::path::absolute(&arg0).unwrap_or(arg0);
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(&arg0))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(exe)
}

/// Runs the daemon with nginx.conf alone.
fn run(args: &Args) -> ExitCode {
    let loaded = args.load(true);
    let Some(cfg) = loaded.config else {
        for d in &loaded.diagnostics {
            eprintln!("{}", message(d, &loaded.sources));
        }
        return ExitCode::from(1);
    };
    let conf = args.conf();
    // Logs: -e FILE, else journald or syslog when there (a daemon's standard error goes
    // nowhere), else standard error.
    let log_file = args
        .error_log
        .as_deref()
        .filter(|e| *e != "stderr")
        .map(|e| full(&args.prefix(), e));
    let target = if args.error_log.as_deref() == Some("stderr") || !cfg.daemon {
        crate::logging::Target::Stderr
    } else if Path::new("/run/systemd/journal/socket").exists() {
        crate::logging::Target::Journald
    } else if Path::new("/dev/log").exists() {
        crate::logging::Target::Syslog
    } else {
        crate::logging::Target::Stderr
    };
    let inherited = take_inherited();
    let mut warnings = inherited.clone().unwrap_or_default();
    if !cfg.master_process {
        warnings.push("master_process off: fulcrum runs one process either way".to_string());
    }
    let run = crate::RunArgs {
        config: crate::ConfigArgs {
            keepalived: None,
            nginx: Some(std::path::absolute(&conf).unwrap_or(conf)),
            config_id: None,
        },
        control: std::env::var_os("FULCRUM_CONTROL")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(CONTROL_SOCKET)),
        log_level: "info".into(),
        log_format: crate::logging::Format::Text,
        log_target: target,
        log_facility: crate::logging::Facility::DAEMON,
        no_forwarding: true,
        bpf_dir: None,
        keep_forwarding: false,
        max_connections: None,
        metrics: None,
        metrics_htpasswd: None,
        keepalived: None,
        nginx: Some(AsNginx {
            pid_file: pid_file(args, cfg.pid.as_deref()),
            // A new binary stays the child of the old master, as nginx's does.
            daemon: cfg.daemon && inherited.is_none(),
            inherited: inherited.is_some(),
            program: invoked_program(),
            argv: std::env::args().skip(1).collect(),
        }),
        nginx_globals: args.globals.clone(),
        log_file,
        warnings,
    };
    match crate::daemon::run(run) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nginx: [emerg] {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Args, String> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_read_as_nginx_reads_them() {
        let a = p(&["-t", "-q", "-g", "daemon on; master_process on;"]).unwrap();
        assert!(a.test && a.quiet);
        assert_eq!(a.globals.as_deref(), Some("daemon on; master_process on;"));
        let a = p(&["-tq", "-c/etc/x.conf", "-p", "/srv/ng"]).unwrap();
        assert!(a.test && a.quiet);
        assert_eq!(a.conf(), Path::new("/etc/x.conf"));
        let a = p(&["-p", "/srv/ng"]).unwrap();
        assert_eq!(a.conf(), Path::new("/srv/ng/conf/nginx.conf"));
        assert_eq!(p(&[]).unwrap().conf(), Path::new(DEFAULT_CONF));
        assert_eq!(
            p(&["-c", "my.conf"]).unwrap().conf(),
            Path::new("/usr/share/nginx/my.conf")
        );
        assert_eq!(p(&["-s", "reload"]).unwrap().signal, Some(Signal::Reload));
        assert_eq!(p(&["-squit"]).unwrap().signal, Some(Signal::Quit));
        assert!(p(&["-T"]).unwrap().dump);
        assert!(p(&["-V"]).unwrap().configure);
    }

    #[test]
    fn bad_options_get_nginxs_messages() {
        assert_eq!(p(&["-x"]).unwrap_err(), "invalid option: \"x\"");
        assert_eq!(p(&["t"]).unwrap_err(), "invalid option: \"t\"");
        assert_eq!(
            p(&["-s", "restart"]).unwrap_err(),
            "invalid option: \"-s restart\""
        );
        assert_eq!(p(&["-c"]).unwrap_err(), "option \"-c\" requires file name");
        assert_eq!(p(&["-g"]).unwrap_err(), "option \"-g\" requires parameter");
    }

    #[test]
    fn inherited_sockets_are_read_as_nginx_reads_them() {
        assert_eq!(parse_inherited("3;4;"), (vec![3, 4], None));
        assert_eq!(parse_inherited("5:6"), (vec![5, 6], None));
        let (fds, warning) = parse_inherited("7;x;8;");
        assert_eq!(fds, [7]);
        assert!(warning.unwrap().contains("invalid socket number \"x\""));
        assert_eq!(parse_inherited(""), (vec![], None));
    }

    #[test]
    fn the_old_pid_file_is_beside_the_pid_file() {
        let a = AsNginx {
            pid_file: PathBuf::from("/run/nginx.pid"),
            daemon: true,
            inherited: false,
            program: PathBuf::from("/usr/sbin/nginx"),
            argv: Vec::new(),
        };
        assert_eq!(a.old_pid_file(), Path::new("/run/nginx.pid.oldbin"));
        assert!(a.daemonized());
    }

    #[test]
    fn pid_files_follow_the_prefix() {
        let a = p(&["-p", "/srv/ng"]).unwrap();
        assert_eq!(
            pid_file(&a, Some("logs/nginx.pid")),
            Path::new("/srv/ng/logs/nginx.pid")
        );
        assert_eq!(pid_file(&a, Some("/run/x.pid")), Path::new("/run/x.pid"));
        assert_eq!(pid_file(&p(&[]).unwrap(), None), Path::new(DEFAULT_PID));
    }
}
