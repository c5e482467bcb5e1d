//! `fulcrum check` over the corpus in tests/corpus: every valid file is accepted and every
//! broken one rejected, each with exactly the diagnostics its `# expect:` lines name.
//!
//! A corpus file says what it expects in comment lines (both languages treat `#` as a
//! comment):
//!   `# expect: error LINE:COL message`            a diagnostic in this file
//!   `# expect: warning OTHER/FILE LINE:COL msg`   one in a file it includes (relative path)
//!   `# expect: error - message`                   one with no location
//!   `# args: ...`                                 check's arguments (default --no-host-checks)
//! `{DIR}` in a message stands for the corpus file's directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use common::corpus_files;
use fulcrum_e2e as common;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Expected {
    file: Option<PathBuf>,
    line: u32,
    col: u32,
    severity: String,
    message: String,
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn expectations(path: &Path) -> (Vec<String>, Vec<Expected>) {
    let text = std::fs::read_to_string(path).unwrap();
    let dir = canonical(path.parent().unwrap());
    let mut args = vec!["--no-host-checks".to_string()];
    let mut expected = Vec::new();
    for line in text.lines() {
        if let Some(a) = line.strip_prefix("# args:") {
            args = a.split_whitespace().map(str::to_string).collect();
        }
        let Some(rest) = line.strip_prefix("# expect: ") else {
            continue;
        };
        let (severity, rest) = rest.split_once(' ').unwrap();
        let (first, rest) = rest.split_once(' ').unwrap();
        let (file, loc, message) = if first == "-" {
            (None, None, rest)
        } else if first.contains(':') {
            (Some(canonical(path)), Some(first), rest)
        } else {
            let (loc, message) = rest.split_once(' ').unwrap();
            (Some(canonical(&dir.join(first))), Some(loc), message)
        };
        let (line, col) = loc.map_or((0, 0), |l| {
            let (a, b) = l.split_once(':').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        });
        expected.push(Expected {
            file,
            line,
            col,
            severity: severity.to_string(),
            message: message.replace("{DIR}", &dir.display().to_string()),
        });
    }
    expected.sort();
    (args, expected)
}

/// Reads `FILE:LINE:COL: severity: message` and `severity: message` lines from check's output.
fn diagnostics(output: &str) -> Vec<Expected> {
    let mut out = Vec::new();
    for line in output.lines() {
        for sev in ["error", "warning"] {
            if let Some(message) = line.strip_prefix(&format!("{sev}: ")) {
                out.push(Expected {
                    file: None,
                    line: 0,
                    col: 0,
                    severity: sev.into(),
                    message: message.into(),
                });
            }
            let marker = format!(": {sev}: ");
            if let Some(i) = line.find(&marker) {
                let loc = &line[..i];
                let mut parts = loc.rsplitn(3, ':');
                let (Some(col), Some(l), Some(file)) = (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let (Ok(col), Ok(l)) = (col.parse(), l.parse()) else {
                    continue;
                };
                out.push(Expected {
                    file: Some(canonical(Path::new(file))),
                    line: l,
                    col,
                    severity: sev.into(),
                    message: line[i + marker.len()..].to_string(),
                });
            }
        }
    }
    out.sort();
    out
}

fn run_check(flag: &str, path: &Path, args: &[String]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .arg("check")
        .args(args)
        .arg(flag)
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), text)
}

fn check_corpus(lang: &str, flag: &str) {
    let mut failures = Vec::new();
    for (kind, want_code) in [("valid", 0), ("broken", 1)] {
        let files = corpus_files(lang, kind);
        assert!(!files.is_empty());
        for f in files {
            let (args, expected) = expectations(&f);
            if kind == "broken" {
                assert!(
                    expected.iter().any(|e| e.severity == "error"),
                    "{} expects no error",
                    f.display()
                );
            }
            let (code, output) = run_check(flag, &f, &args);
            let got = diagnostics(&output);
            if code != want_code || got != expected {
                failures.push(format!(
                    "{}: exit {code} (want {want_code})\n  expected: {expected:#?}\n  got: {got:#?}\n  output:\n{output}",
                    f.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn keepalived_corpus() {
    check_corpus("keepalived", "-f");
}

#[test]
fn nginx_corpus() {
    check_corpus("nginx", "-c");
}

#[test]
fn corpus_sizes() {
    assert!(corpus_files("keepalived", "valid").len() >= 25);
    assert!(corpus_files("nginx", "valid").len() >= 10);
}
