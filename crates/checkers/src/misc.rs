//! MISC_CHECK: run a program; exit 0 is up, 1 is down, and with `misc_dynamic` 2..255 is up
//! with weight `status - 2`.
//!
//! The program runs through `/bin/sh -c` (as vrrp_script does) in a process group of its
//! own, as its user. When the check is dropped before the program ends (the checker's
//! `misc_timeout` ran out), the whole group is killed, whatever the script forked.

use std::process::Stdio;

use fulcrum_health::Outcome;
use tokio::process::Command;

/// The program of a MISC_CHECK and the user it runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiscCommand {
    pub command: String,
    /// uid and gid; `None` runs as the daemon's user.
    pub ids: Option<(u32, u32)>,
}

/// Kills the process group on drop unless disarmed.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = fulcrum_sys::kill_process_group(pgid);
        }
    }
}

/// Runs the program once and judges its exit status. `configured_weight` is the real
/// server's weight: a dynamic exit status `s` sets the weight to `s - 2`, which is reported
/// as the adjustment `s - 2 - configured_weight`; exit 0 brings the configured weight back.
pub async fn check_misc(misc: &MiscCommand, dynamic: bool, configured_weight: u32) -> Outcome {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(&misc.command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    if let Some((uid, gid)) = misc.ids {
        command.uid(uid).gid(gid);
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Failure(format!("MISC_CHECK `{}` cannot start: {e}", misc.command))
        }
    };
    let mut guard = GroupGuard(child.id());
    let status = child.wait().await;
    guard.0 = None;
    let status = match status {
        Ok(s) => s,
        Err(e) => return Outcome::Failure(format!("MISC_CHECK `{}` failed: {e}", misc.command)),
    };
    judge_exit(&misc.command, status.code(), dynamic, configured_weight)
}

/// keepalived's reading of a MISC_CHECK exit status (`None`: killed by a signal).
pub fn judge_exit(
    command: &str,
    code: Option<i32>,
    dynamic: bool,
    configured_weight: u32,
) -> Outcome {
    match code {
        Some(0) => Outcome::Success { weight_delta: 0 },
        Some(c @ 2..=255) if dynamic => Outcome::Success {
            weight_delta: i64::from(c) - 2 - i64::from(configured_weight),
        },
        Some(c) => Outcome::Failure(format!("MISC_CHECK `{command}` exited with status {c}")),
        None => Outcome::Failure(format!("MISC_CHECK `{command}` was killed by a signal")),
    }
}
