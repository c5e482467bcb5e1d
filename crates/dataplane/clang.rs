//! Builds a BPF object with clang (clang-19 as Debian packages it, else clang) into
//! OUT_DIR. Shared by the data plane's build script and the benchmarks' (the floor
//! program), which include this file.

use std::path::PathBuf;
use std::process::Command;

/// Compiles `source` (relative to the crate) into OUT_DIR/`object`; panics with clang's
/// message, naming `what`, when it cannot. Returns the object's path and the first line of
/// the `--version` of the clang that built it.
pub fn build(source: &str, object: &str, what: &str) -> (PathBuf, String) {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join(object);
    println!("cargo:rerun-if-changed=bpf");
    let mut last = String::from("no clang found: install clang-19 (scripts/setup does)");
    for clang in ["clang-19", "clang"] {
        let result = Command::new(clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-c")
            .arg(source)
            .arg("-o")
            .arg(&out)
            .output();
        match result {
            Ok(o) if o.status.success() => {
                let version = Command::new(clang)
                    .arg("--version")
                    .output()
                    .ok()
                    .and_then(|v| {
                        let text = String::from_utf8_lossy(&v.stdout).into_owned();
                        text.lines().next().map(str::to_string)
                    })
                    .unwrap_or_else(|| clang.to_string());
                return (out, version);
            }
            // A clang that ran and refused the source says why: that is the error to
            // show, not a missing fallback clang's.
            Ok(o) => panic!(
                "cannot build {what} with {clang}:\n{}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => last = format!("{clang}: {e}"),
        }
    }
    panic!("cannot build {what}:\n{last}");
}
