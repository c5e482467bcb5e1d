//! Builds the XDP program (and the TUN decapsulator for real servers) into OUT_DIR, where src/lib.rs embeds it, and tells the crates
//! that depend on this one (links = "fulcrum_bpf") the object's digest and the clang that
//! built it, for `fulcrum --version`.

#[path = "clang.rs"]
mod clang;

fn main() {
    println!("cargo:rerun-if-changed=clang.rs");
    let (object, clang) = clang::build("bpf/fulcrum.c", "fulcrum.bpf.o", "the XDP program");
    let bytes = std::fs::read(&object).expect("the object just built");
    // FNV-1a, 64 bits: tells two builds of the program apart, as a version line needs.
    let digest = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    println!("cargo:digest={digest:016x}");
    println!("cargo:clang={clang}");
    clang::build("bpf/decap.c", "decap.bpf.o", "the TUN decapsulator");
}
