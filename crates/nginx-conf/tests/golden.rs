//! Golden tests over the valid corpus (tests/corpus/nginx/valid): the syntax tree of every
//! file and its canonical print, checked in under tests/corpus/nginx/golden; each print
//! parses back to the same model. `UPDATE_GOLDEN=1 cargo test` rewrites them.

use std::path::{Path, PathBuf};

use fulcrum_nginx_conf::{load, parse_str, print, tree_dump, LoadOptions};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus/nginx")
}

fn valid_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(corpus().join("valid"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    v.sort();
    v
}

fn golden(name: &str, actual: &str) {
    let path = corpus().join("golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing {}: run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(actual, expected, "{name} differs from its golden file");
}

#[test]
fn syntax_golden() {
    for f in valid_files() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        golden(&format!("{name}.tree"), &tree_dump(&f));
    }
}

#[test]
fn print_golden_and_round_trip() {
    for f in valid_files() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let loaded = load(&f, &LoadOptions::default());
        let config = loaded
            .config
            .unwrap_or_else(|| panic!("{name}: {:?}", loaded.diagnostics));
        let printed = print(&config);
        golden(&format!("{name}.printed"), &printed);
        let again = parse_str(Path::new("printed.conf"), &printed, &LoadOptions::default());
        // The text printed has no directory of its own.
        let config = fulcrum_nginx_conf::NginxConfig {
            conf_prefix: None,
            ..config
        };
        assert_eq!(
            again.config.as_ref(),
            Some(&config),
            "{name} does not round-trip:\n{printed}\n{:?}",
            again.diagnostics
        );
    }
}
