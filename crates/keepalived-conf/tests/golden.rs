//! Golden tests over the valid corpus (tests/corpus/keepalived/valid): the lexer's words
//! for the files that exercise the lexical features, and the canonical print of every
//! file, checked in under tests/corpus/keepalived/golden. Each print also parses back to
//! the same model. `UPDATE_GOLDEN=1 cargo test` rewrites the golden files; review the diff.

use std::path::{Path, PathBuf};

use fulcrum_keepalived_conf::{load, parse_str, print, LexOptions, LoadOptions};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus/keepalived")
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

/// The `-i` a corpus file asks for in its `# args:` line.
fn lex_options(path: &Path) -> LexOptions {
    let text = std::fs::read_to_string(path).unwrap();
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("# args:"))
        .and_then(|a| {
            let words: Vec<&str> = a.split_whitespace().collect();
            words
                .iter()
                .position(|w| *w == "-i")
                .and_then(|i| words.get(i + 1).map(|s| s.to_string()))
        });
    LexOptions {
        config_id: id,
        includes: true,
    }
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
    assert_eq!(actual, expected, "{} differs from its golden file", name);
}

#[test]
fn lexer_golden() {
    for f in valid_files() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if !["21-", "22-", "23-", "24-"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let dump = fulcrum_keepalived_conf::token_dump(&f, &lex_options(&f));
        golden(&format!("{name}.tokens"), &dump);
    }
}

#[test]
fn print_golden_and_round_trip() {
    for f in valid_files() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let options = LoadOptions {
            lex: lex_options(&f),
            ..LoadOptions::default()
        };
        let loaded = load(&f, &options);
        let config = loaded
            .config
            .unwrap_or_else(|| panic!("{name}: {:?}", loaded.diagnostics));
        let printed = print(&config);
        golden(&format!("{name}.printed"), &printed);
        let again = parse_str(Path::new("printed.conf"), &printed, &LoadOptions::default());
        assert_eq!(
            again.config.as_ref(),
            Some(&config),
            "{name} does not round-trip:\n{printed}\n{:?}",
            again.diagnostics
        );
    }
}
