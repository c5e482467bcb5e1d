//! The lab agent as a program of its own, for the lab crate's tests.
fn main() -> std::process::ExitCode {
    fulcrum_lab::agent::main(std::env::args().skip(1).collect())
}
