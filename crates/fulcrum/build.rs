//! What `fulcrum --version` says beyond the version: the git revision it was built from
//! (`unknown` outside a checkout), and the XDP program's digest and compiler, which the
//! data plane's build script reports (links = "fulcrum_bpf").

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_FULCRUM_BPF_DIGEST");
    println!("cargo:rerun-if-env-changed=DEP_FULCRUM_BPF_CLANG");
    for git in [
        "../../.git/HEAD",
        "../../.git/refs",
        "../../.git/packed-refs",
    ] {
        if std::path::Path::new(git).exists() {
            println!("cargo:rerun-if-changed={git}");
        }
    }
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let digest = std::env::var("DEP_FULCRUM_BPF_DIGEST").unwrap_or_else(|_| "unknown".into());
    let clang = std::env::var("DEP_FULCRUM_BPF_CLANG").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=FULCRUM_REVISION={revision}");
    println!("cargo:rustc-env=FULCRUM_BPF_DIGEST={digest}");
    println!("cargo:rustc-env=FULCRUM_BPF_CLANG={clang}");
}
