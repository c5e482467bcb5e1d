//! Scripts keepalived runs (notify, track and check scripts): the command, and the user it
//! runs as, refused when enable_script_security finds it unsafe.

use fulcrum_keepalived_conf::GlobalDefs;
use tracing::warn;

/// A script's command and the user it runs as.
#[derive(Debug, Clone)]
pub struct ScriptRun {
    pub command: String,
    pub ids: Option<(u32, u32)>,
}

impl ScriptRun {
    pub fn command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c").arg(&self.command);
        if let Some((uid, gid)) = self.ids {
            c.uid(uid).gid(gid);
        }
        c
    }
}

impl ScriptRun {
    /// A script to run as its user; `None` (with an error logged) when
    /// enable_script_security forbids it: it would run as root from a path a non-root user
    /// can change.
    pub fn checked(
        command: String,
        own: Option<&fulcrum_keepalived_conf::ScriptUser>,
        globals: &GlobalDefs,
    ) -> Option<ScriptRun> {
        let ids = script_ids(own, globals);
        if globals.enable_script_security && ids.is_none_or(|(uid, _)| uid == 0) {
            if let Err(why) = crate::host_facts::script_is_secure(&command) {
                tracing::error!("SECURITY VIOLATION: script `{command}` is not run: {why}");
                return None;
            }
        }
        Some(ScriptRun { command, ids })
    }
}

/// keepalived's default script user, used when it exists and no script_user is set.
const DEFAULT_SCRIPT_USER: &str = "keepalived_script";

/// The user a script runs as: its own, else global_defs' script_user, else
/// `keepalived_script` when that user exists, else the daemon's (root), as keepalived does.
fn script_ids(
    own: Option<&fulcrum_keepalived_conf::ScriptUser>,
    globals: &GlobalDefs,
) -> Option<(u32, u32)> {
    let Some(u) = own.or(globals.script_user.as_ref()) else {
        return crate::host_facts::user_ids(DEFAULT_SCRIPT_USER, None);
    };
    let ids = crate::host_facts::user_ids(&u.user, u.group.as_deref());
    if ids.is_none() {
        warn!(user = %u.user, "script user not found; running the script as root");
    }
    ids
}
