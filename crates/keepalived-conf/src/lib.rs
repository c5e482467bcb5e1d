//! keepalived.conf, understood exactly: the whole language (comments, quotes, braces,
//! `include` with globs, `$NAME` definitions, `@ID` conditionals) and a typed model of the
//! blocks Fulcrum runs: global_defs, vrrp_script, track_file, vrrp_sync_group,
//! vrrp_instance, virtual_server_group, virtual_server, real_server and its checkers.
//!
//! Reading files is the only IO here; whether an interface exists is asked through a
//! callback so that host checks stay the caller's decision.

#![forbid(unsafe_code)]

mod build;
pub mod lexer;
pub mod model;
mod print;
pub mod tree;

use std::path::Path;

use fulcrum_diag::{Diagnostic, SourceMap};

pub use lexer::LexOptions;
pub use model::*;
pub use print::print;

/// The warning for scripts that run while `enable_script_security` is off: what
/// keepalived -t counts as a security violation (its exit code 6).
pub const SCRIPT_SECURITY_OFF: &str =
    "scripts are configured but script security is off: they run as root";

/// How to load a configuration.
#[derive(Default)]
pub struct LoadOptions<'a> {
    pub lex: LexOptions,
    /// Answers whether a network interface exists here; `None` turns host checks off.
    pub interface_exists: Option<&'a dyn Fn(&str) -> bool>,
    /// Answers whether a user exists here; `None` turns host checks off.
    pub user_exists: Option<&'a dyn Fn(&str) -> bool>,
}

impl std::fmt::Debug for LoadOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("lex", &self.lex)
            .field("host_checks", &self.interface_exists.is_some())
            .finish()
    }
}

/// The result of a load: the model when there were no errors, every diagnostic (errors and
/// warnings, in file order), and the files read, to render the diagnostics with.
#[derive(Debug)]
pub struct Loaded {
    pub config: Option<KeepalivedConfig>,
    pub diagnostics: Vec<Diagnostic>,
    pub sources: SourceMap,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        fulcrum_diag::has_errors(&self.diagnostics)
    }
}

/// Loads a keepalived.conf from disk, following its includes.
pub fn load(path: &Path, options: &LoadOptions<'_>) -> Loaded {
    run(options, |lexer| lexer.read_root(path))
}

/// Parses keepalived.conf text that did not come from a file; `name` is used in messages
/// and as the base for relative includes.
pub fn parse_str(name: &Path, text: &str, options: &LoadOptions<'_>) -> Loaded {
    run(options, |lexer| lexer.lex_file(name, text.as_bytes()))
}

/// Lexes, builds statements and reads them into the model as one stream: each top-level
/// statement is read and dropped as soon as it is complete.
fn run(options: &LoadOptions<'_>, read: impl FnOnce(&mut lexer::Lexer<'_>)) -> Loaded {
    let mut statements = tree::TreeBuilder::default();
    let mut builder = build::Builder::new(options.interface_exists, options.user_exists);
    let (sources, lex_diagnostics) = {
        let mut sink = |line: lexer::Line| {
            if let Some(node) = statements.push(line) {
                builder.statement(&node);
            }
        };
        let mut lexer = lexer::Lexer::new(&options.lex, &mut sink);
        read(&mut lexer);
        (
            std::mem::take(&mut lexer.sources),
            std::mem::take(&mut lexer.diagnostics),
        )
    };
    if let Some(node) = statements.finish() {
        builder.statement(&node);
    }
    let (config, mut diagnostics) = builder.finish();
    diagnostics.extend(lex_diagnostics);
    diagnostics.append(&mut statements.diagnostics);
    fulcrum_diag::sort(&mut diagnostics);
    let config = if fulcrum_diag::has_errors(&diagnostics) {
        None
    } else {
        Some(config)
    };
    Loaded {
        config,
        diagnostics,
        sources,
    }
}

/// The lexer's output for a file: its logical lines of words (braces alone on a line),
/// for tools and golden tests. `FILE:LINE:COL word` per word, one logical line per line.
pub fn token_dump(path: &Path, options: &LexOptions) -> String {
    let mut lines = Vec::new();
    let mut sink = |line: lexer::Line| lines.push(line);
    let (sources, diagnostics) = {
        let mut lexer = lexer::Lexer::new(options, &mut sink);
        lexer.read_root(path);
        (
            std::mem::take(&mut lexer.sources),
            std::mem::take(&mut lexer.diagnostics),
        )
    };
    let mut out = String::new();
    for line in &lines {
        let words: Vec<String> = line
            .tokens
            .iter()
            .map(|t| {
                let file = sources
                    .path(t.span.file)
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let q = if t.quoted { "q" } else { "" };
                format!("{file}:{}:{}{q} {:?}", t.span.line, t.span.col, t.text)
            })
            .collect();
        out.push_str(&words.join("  "));
        out.push('\n');
    }
    for d in &diagnostics {
        out.push_str(&format!("diagnostic: {}\n", d.message));
    }
    out
}
