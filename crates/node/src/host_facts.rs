//! Facts about the host the daemon runs on, for host checks.

use std::collections::HashSet;

/// Names of the network interfaces in this process's network namespace. Read from
/// /proc/self/net/dev, which (unlike /sys/class/net) always follows the caller's namespace.
pub fn interfaces() -> HashSet<String> {
    let text = std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
    text.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_string()))
        .collect()
}

/// keepalived's default config id: the node name up to its first dot.
pub fn default_config_id() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    let short = name.split('.').next().unwrap_or(name);
    (!short.is_empty()).then(|| short.to_string())
}

/// Whether a user exists, as getpwnam() finds it: /etc/passwd, or whatever NSS is set up
/// to ask (sssd, LDAP), as keepalived looks its script users up.
pub fn user_exists(name: &str) -> bool {
    matches!(nix::unistd::User::from_name(name), Ok(Some(_)))
}

/// uid and gid of a user, and of a group when one is named (NSS: getpwnam_r and
/// getgrnam_r). `None` when either is unknown.
pub fn user_ids(user: &str, group: Option<&str>) -> Option<(u32, u32)> {
    let u = nix::unistd::User::from_name(user).ok().flatten()?;
    let gid = match group {
        Some(g) => nix::unistd::Group::from_name(g).ok().flatten()?.gid,
        None => u.gid,
    };
    Some((u.uid.as_raw(), gid.as_raw()))
}

/// keepalived's `enable_script_security` check for a script that runs as root: its
/// executable (the command's first word, found on PATH if not absolute) and every directory
/// above it must be owned by root and not writable by group or others (a sticky directory
/// may be). Otherwise a non-root user could replace what root runs.
pub fn script_is_secure(command: &str) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let program = command.split_whitespace().next().unwrap_or("");
    let path = if program.contains('/') {
        std::path::PathBuf::from(program)
    } else {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        path.split(':')
            .map(|d| std::path::Path::new(d).join(program))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("'{program}' is not found on PATH"))?
    };
    let path = path
        .canonicalize()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    for p in path.ancestors() {
        let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let sticky_dir = meta.is_dir() && meta.mode() & 0o1000 != 0;
        if meta.uid() != 0 {
            return Err(format!(
                "{} is owned by uid {}, not root",
                p.display(),
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 && !sticky_dir {
            return Err(format!("{} is writable by group or others", p.display()));
        }
    }
    Ok(())
}

/// The machine's memory (MemTotal of /proc/meminfo), in bytes.
pub fn memory_total() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_groups_come_from_nss() {
        assert!(user_exists("root"));
        assert!(!user_exists("no-such-user-here"));
        assert_eq!(user_ids("root", None), Some((0, 0)));
        assert_eq!(user_ids("root", Some("root")), Some((0, 0)));
        assert_eq!(user_ids("root", Some("no-such-group-here")), None);
        assert_eq!(user_ids("no-such-user-here", None), None);
    }

    #[test]
    fn script_security() {
        assert!(script_is_secure("/bin/sh -c true").is_ok());
        assert!(script_is_secure("true").is_ok(), "found on PATH");
        assert!(script_is_secure("no-such-program-here").is_err());
        let dir = std::env::temp_dir().join(format!("fulcrum-sec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("check.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = script_is_secure(script.to_str().unwrap()).unwrap_err();
        assert!(err.contains("writable by group or others"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
