//! Builds the XDP program into OUT_DIR, where src/lib.rs embeds it.

#[path = "clang.rs"]
mod clang;

fn main() {
    println!("cargo:rerun-if-changed=clang.rs");
    clang::build("bpf/fulcrum.c", "fulcrum.bpf.o", "the XDP program");
}
