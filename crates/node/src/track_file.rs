//! keepalived's `track_file` blocks, shared by VRRP tracking and FILE_CHECK: a file
//! holding a number (missing or unreadable: 0), created at start by `init_file`.

use std::path::Path;

use fulcrum_keepalived_conf::model::TrackFile;
use tracing::warn;

/// The number the file holds now: its first word, else 0.
pub fn read(path: &str) -> i64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|w| w.parse().ok()))
        .unwrap_or(0)
}

/// Writes `init_file`'s value when the file is missing (always with `overwrite`).
pub fn init(f: &TrackFile) {
    if let Some((value, overwrite)) = f.init_file {
        if overwrite || !Path::new(&f.file).exists() {
            if let Err(e) = std::fs::write(&f.file, format!("{}\n", value.unwrap_or(0))) {
                warn!(track_file = %f.name, "init_file {}: {e}", f.file);
            }
        }
    }
}
