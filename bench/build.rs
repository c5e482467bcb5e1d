//! Builds the floor XDP program of the xdp-cost benchmark with clang, as the data plane's
//! build does.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("floor.bpf.o");
    println!("cargo:rerun-if-changed=bpf");
    let mut last = String::from("no clang found: install clang-19 (scripts/setup does)");
    for clang in ["clang-19", "clang"] {
        let result = Command::new(clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-c")
            .arg("bpf/floor.c")
            .arg("-o")
            .arg(&out)
            .output();
        match result {
            Ok(o) if o.status.success() => return,
            Ok(o) => last = String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => last = format!("{clang}: {e}"),
        }
    }
    panic!("cannot build the floor XDP program:\n{last}");
}
