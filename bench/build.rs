//! Builds the floor XDP program of the xdp-cost benchmark, as the data plane's build does.

#[path = "../crates/dataplane/clang.rs"]
mod clang;

fn main() {
    println!("cargo:rerun-if-changed=../crates/dataplane/clang.rs");
    clang::build("bpf/floor.c", "floor.bpf.o", "the floor XDP program");
}
