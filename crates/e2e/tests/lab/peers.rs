//! The corpus against the real peers: every file `fulcrum check` accepts, Debian's
//! `nginx -t` and `keepalived -t` accept too, and every file it rejects they reject, except
//! where a `# peer: accepts|rejects: reason` line in the file says why they differ.
//!
//! keepalived runs in a network namespace with eth0..eth2, since its -t checks interfaces.
//! Its 2.2.7 ends a successful -t of a configuration with scripts by sending itself
//! SIGTERM (seen with strace), so that exit counts as accepted.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use fulcrum_lab::{require_root, Lab};

use fulcrum_e2e::{corpus_files, installed};

fn files(lang: &str, kind: &str) -> Vec<PathBuf> {
    corpus_files(lang, kind)
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap())
        .collect()
}

fn peer_marker(path: &Path) -> Option<bool> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().find_map(|l| {
        let m = l.strip_prefix("# peer: ")?;
        if m.starts_with("accepts") {
            Some(true)
        } else if m.starts_with("rejects") {
            Some(false)
        } else {
            None
        }
    })
}

fn config_id(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let args = text.lines().find_map(|l| l.strip_prefix("# args:"))?;
    let mut it = args.split_whitespace();
    while let Some(a) = it.next() {
        if a == "-i" {
            return it.next().map(str::to_string);
        }
    }
    None
}

fn compare(lang: &str, accepts: impl Fn(&Path) -> (bool, String)) {
    let mut wrong = Vec::new();
    for (kind, fulcrum_accepts) in [("valid", true), ("broken", false)] {
        for f in files(lang, kind) {
            let want = peer_marker(&f).unwrap_or(fulcrum_accepts);
            let (got, output) = accepts(&f);
            if got != want {
                wrong.push(format!(
                    "{}: the peer {} it (expected it to {})\n{output}",
                    f.display(),
                    if got { "accepts" } else { "rejects" },
                    if want { "accept" } else { "reject" }
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn nginx_agrees_with_the_corpus() {
    if !require_root("nginx_agrees_with_the_corpus") || !installed("nginx") {
        return;
    }
    compare("nginx", |f| {
        let out = Command::new("nginx")
            .args(["-t", "-q", "-e", "/dev/null", "-c"])
            .arg(f)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    });
}

#[test]
fn keepalived_agrees_with_the_corpus() {
    if !require_root("keepalived_agrees_with_the_corpus") || !installed("keepalived") {
        return;
    }
    let mut lab = Lab::new("kat").unwrap();
    let host = lab.host("ka").unwrap();
    let peer = lab.host("peer").unwrap();
    for i in 0..3 {
        lab.link(&host, &format!("eth{i}"), &peer, &format!("p{i}"))
            .unwrap();
    }
    let test = |program: &Path, f: &Path| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.netns])
            .arg(program)
            .args(["-t", "-f"])
            .arg(f);
        if let Some(id) = config_id(f) {
            cmd.args(["-i", &id]);
        }
        // keepalived signals itself; keep it away from the test runner's process group.
        cmd.process_group(0).output().unwrap()
    };
    let real = Path::new("keepalived");
    compare("keepalived", |f| {
        let out = test(real, f);
        let ok = out.status.success() || out.status.signal() == Some(15);
        (ok, String::from_utf8_lossy(&out.stderr).into_owned())
    });
    // Fulcrum as `keepalived -t` (the symlink) exits with the real one's code on every
    // file (also where `fulcrum check` differs: keepalived -t counts what it skips at run
    // time as errors, and so does Fulcrum as keepalived), but where a `# keepalived -t:
    // differs:` line says why not. Where keepalived 2.2.7 ends its own test by SIGTERM
    // (configurations with scripts) or crashes, and where they differ, the code is the
    // one of Fulcrum's verdict: 0 accepted, 5 or 6 rejected.
    let dir = fulcrum_e2e::Scratch::new("katsym");
    let ours = dir.0.join("keepalived");
    std::os::unix::fs::symlink(fulcrum_e2e::bin(), &ours).unwrap();
    let mut wrong = Vec::new();
    for (kind, accepted) in [("valid", true), ("broken", false)] {
        for f in files("keepalived", kind) {
            let got = test(&ours, &f).status.code();
            let differs = std::fs::read_to_string(&f)
                .unwrap()
                .contains("\n# keepalived -t: differs: ");
            let want = match test(real, &f).status.code() {
                _ if differs => None,
                code => code,
            };
            let ok = match want {
                Some(code) => got == Some(code),
                None if accepted => got == Some(0),
                None => matches!(got, Some(5 | 6)),
            };
            if !ok {
                wrong.push(format!(
                    "{}: keepalived -t exits {want:?}, fulcrum as keepalived {got:?}",
                    f.display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
