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

/// Names of the users in /etc/passwd (where keepalived's getpwnam() finds them on a host
/// without a directory service).
pub fn users() -> HashSet<String> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(':').next())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// uid and gid of a user (and of a group, when named) from /etc/passwd and /etc/group.
pub fn user_ids(user: &str, group: Option<&str>) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let fields: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&user))?;
    let uid = fields.get(2)?.parse().ok()?;
    let mut gid = fields.get(3)?.parse().ok()?;
    if let Some(g) = group {
        let groups = std::fs::read_to_string("/etc/group").ok()?;
        gid = groups
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&g))?
            .get(2)?
            .parse()
            .ok()?;
    }
    Some((uid, gid))
}
