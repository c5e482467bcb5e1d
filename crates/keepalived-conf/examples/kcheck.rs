//! Parses a keepalived.conf and prints diagnostics, then the canonical form.
fn main() {
    let path = std::env::args().nth(1).expect("usage: kcheck FILE");
    let loaded = fulcrum_keepalived_conf::load(std::path::Path::new(&path), &Default::default());
    print!(
        "{}",
        fulcrum_diag::render_all(&loaded.diagnostics, &loaded.sources)
    );
    if let Some(c) = &loaded.config {
        print!("{}", fulcrum_keepalived_conf::print(c));
    }
}
