//! One checker's schedule, resolved from keepalived.conf.

use std::time::Duration;

use fulcrum_keepalived_conf::model::{CheckDefaults, Checker as CheckerConf, CheckerKind};

/// Which checker a schedule belongs to; the defaults differ by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    Tcp,
    Http,
    Ssl,
    Misc,
    Smtp,
    Dns,
    Udp,
    Ping,
    File,
}

impl CheckKind {
    pub fn of(kind: &CheckerKind) -> CheckKind {
        match kind {
            CheckerKind::Tcp => CheckKind::Tcp,
            CheckerKind::Http(_) => CheckKind::Http,
            CheckerKind::Ssl(_) => CheckKind::Ssl,
            CheckerKind::Misc(_) => CheckKind::Misc,
            CheckerKind::Smtp(_) => CheckKind::Smtp,
            CheckerKind::Dns(_) => CheckKind::Dns,
            CheckerKind::Udp(_) => CheckKind::Udp,
            CheckerKind::Ping => CheckKind::Ping,
            CheckerKind::File(_) => CheckKind::File,
        }
    }

    /// keepalived's default `retry`: 3 for DNS_CHECK, 0 for MISC_CHECK, 1 otherwise.
    pub fn default_retry(self) -> u32 {
        match self {
            CheckKind::Dns => 3,
            CheckKind::Misc => 0,
            _ => 1,
        }
    }
}

/// keepalived's default `delay_loop`.
pub const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);
/// keepalived's default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The schedule of one checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Time between checks of a server whose state is settled.
    pub delay_loop: Duration,
    /// A check still running after this long has failed ("timed out").
    pub timeout: Duration,
    /// Further attempts after a failure before an up checker is declared down.
    pub retry: u32,
    /// Time between those attempts.
    pub delay_before_retry: Duration,
    /// The first check starts at a random point in `0..=warmup`.
    pub warmup: Duration,
    /// Start down, and come up only after a successful check.
    pub alpha: bool,
}

impl Timing {
    /// keepalived's defaults for a checker of `kind` with every option left out.
    pub fn defaults(kind: CheckKind) -> Timing {
        Timing::resolve(
            kind,
            None,
            &CheckDefaults::default(),
            &CheckDefaults::default(),
        )
    }

    /// Resolves a schedule as keepalived does: each option from the checker block, else the
    /// real_server block, else the virtual_server block, else keepalived's default for the
    /// kind. `misc_timeout` is the timeout of a MISC_CHECK (default: its delay_loop).
    pub fn resolve(
        kind: CheckKind,
        checker: Option<&CheckerConf>,
        real_server: &CheckDefaults,
        virtual_server: &CheckDefaults,
    ) -> Timing {
        let common = checker.map(|c| &c.common);
        macro_rules! pick {
            ($field:ident) => {
                common
                    .and_then(|c| c.$field)
                    .or(real_server.$field)
                    .or(virtual_server.$field)
            };
        }
        let delay_loop = pick!(delay_loop)
            .map(|t| t.as_duration())
            .unwrap_or(DEFAULT_DELAY_LOOP);
        let connect_timeout = pick!(connect_timeout)
            .map(|t| t.as_duration())
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let timeout = match checker.map(|c| &c.kind) {
            Some(CheckerKind::Misc(misc)) => misc
                .misc_timeout
                .map(|t| t.as_duration())
                .unwrap_or(delay_loop),
            _ => connect_timeout,
        };
        let delay_before_retry = pick!(delay_before_retry)
            .map(|t| t.as_duration())
            .unwrap_or(match kind {
                CheckKind::Dns => delay_loop,
                CheckKind::Http | CheckKind::Ssl => Duration::from_secs(3),
                _ => Duration::from_secs(1),
            });
        Timing {
            delay_loop,
            timeout,
            retry: pick!(retry).unwrap_or(kind.default_retry()),
            delay_before_retry,
            warmup: pick!(warmup).map(|t| t.as_duration()).unwrap_or(delay_loop),
            alpha: pick!(alpha).unwrap_or(false),
        }
    }

    /// The longest a server that stops answering can stay in rotation once its checker is
    /// settled: the rest of the current delay_loop, the failing attempt's timeout, then each
    /// retry's delay and timeout.
    pub fn detection_bound(&self) -> Duration {
        self.delay_loop + self.timeout + (self.delay_before_retry + self.timeout) * self.retry
    }
}
