//! Helpers shared by the integration tests that run a peer program.

use std::process::{Command, Stdio};

/// Whether `program` is on PATH. When it is not, the test skips with a SKIP line, or fails
/// under CI (the test command installs every peer there).
pub fn installed(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{program} is not installed; the test command installs it in CI");
        }
        eprintln!("SKIP: {program} is not installed");
    }
    found
}
