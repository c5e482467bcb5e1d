//! The nginx.conf subset that Fulcrum's layer-7 proxy serves, read and checked the way
//! `nginx -t` reads and checks it: the same tokenizer, the same contexts, the same messages
//! (with a column added), and a typed model with nginx's inheritance left to the proxy.
//!
//! Reading files is the only IO; host checks (certificate files exist) are the caller's.

#![forbid(unsafe_code)]

mod build;
pub mod model;
mod print;
pub mod syntax;

use std::path::Path;

use fulcrum_diag::{Diagnostic, SourceMap, Span};

pub use build::{
    parse_expires, parse_size, parse_time, proxy_uri, split_host_port, strip_unix, unix_path_error,
};
pub use model::*;
pub use print::print;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Follow `include` directives. Off for untrusted text (the fuzz targets).
    pub includes: bool,
    /// Check that files the configuration names (certificates, keys) can be read.
    pub host_checks: bool,
    /// nginx's `-g 'DIRECTIVES;'`: main-context directives from the command line, read
    /// before the file's (a directive in both is a duplicate, as in nginx).
    pub globals: Option<String>,
}

/// The name the `-g` directives' diagnostics give as their file, as nginx says "in
/// command line".
pub const COMMAND_LINE: &str = "command line";

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            includes: true,
            host_checks: false,
            globals: None,
        }
    }
}

/// The result of a load: the model when there were no errors, every diagnostic, and the
/// files read.
#[derive(Debug)]
pub struct Loaded {
    pub config: Option<NginxConfig>,
    pub diagnostics: Vec<Diagnostic>,
    pub sources: SourceMap,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        fulcrum_diag::has_errors(&self.diagnostics)
    }
}

pub fn load(path: &Path, options: &LoadOptions) -> Loaded {
    let mut reader = syntax::Reader::new(path, options.includes);
    let mut tree = reader.read_file(path);
    if let (Some(g), Some(t)) = (&options.globals, tree.as_mut()) {
        // Read after the file, so the file stays the first source (its directory is the
        // conf prefix), and placed before its directives, where nginx reads them.
        let mut globals = reader.parse_text(Path::new(COMMAND_LINE), g.as_bytes());
        globals.append(t);
        *t = globals;
    }
    finish(reader, tree, options)
}

pub fn parse_str(name: &Path, text: &str, options: &LoadOptions) -> Loaded {
    let mut reader = syntax::Reader::new(name, options.includes);
    let tree = Some(reader.parse_text(name, text.as_bytes()));
    finish(reader, tree, options)
}

/// The syntax tree of a file, includes expanded: `LINE:COL name args...` per directive,
/// indented by block, for tools and golden tests.
pub fn tree_dump(path: &Path) -> String {
    fn walk(out: &mut String, sources: &SourceMap, ds: &[syntax::Directive], depth: usize) {
        for d in ds {
            let file = sources
                .path(d.name.span.file)
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let args: Vec<String> = d.args.iter().map(|a| format!("{:?}", a.text)).collect();
            out.push_str(&format!(
                "{}{file}:{}:{} {} {}{}\n",
                "  ".repeat(depth),
                d.name.span.line,
                d.name.span.col,
                d.name.text,
                args.join(" "),
                if d.block.is_some() { " {" } else { ";" }
            ));
            if let Some(b) = &d.block {
                walk(out, sources, b, depth + 1);
            }
        }
    }
    let mut reader = syntax::Reader::new(path, true);
    let tree = reader.read_file(path).unwrap_or_default();
    let mut out = String::new();
    walk(&mut out, &reader.sources, &tree, 0);
    for d in &reader.diagnostics {
        out.push_str(&format!("diagnostic: {}\n", d.message));
    }
    out
}

fn finish(
    reader: syntax::Reader,
    tree: Option<Vec<syntax::Directive>>,
    options: &LoadOptions,
) -> Loaded {
    let syntax::Reader {
        sources,
        mut diagnostics,
        ..
    } = reader;
    let mut config = None;
    if let Some(tree) = tree {
        let mut b = build::Builder::new(&mut diagnostics);
        let mut cfg = b.config(&tree);
        cfg.conf_prefix = sources
            .files()
            .next()
            .and_then(|f| f.path.parent())
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf);
        let files = std::mem::take(&mut b.files);
        if options.host_checks {
            check_files(&files, &sources, &mut diagnostics);
        }
        config = Some(cfg);
    }
    fulcrum_diag::sort(&mut diagnostics);
    if fulcrum_diag::has_errors(&diagnostics) {
        config = None;
    }
    Loaded {
        config,
        diagnostics,
        sources,
    }
}

/// nginx -t loads certificates; we at least check that they can be read.
fn check_files(files: &[(String, Span)], sources: &SourceMap, diags: &mut Vec<Diagnostic>) {
    for (path, span) in files {
        let p = Path::new(path);
        let full = if p.is_absolute() {
            p.to_path_buf()
        } else {
            // Relative to the directory of the main file, like nginx's conf prefix.
            sources
                .files()
                .next()
                .and_then(|f| f.path.parent())
                .map(|d| d.join(p))
                .unwrap_or_else(|| p.to_path_buf())
        };
        let full = if full.is_relative() {
            std::env::current_dir()
                .map(|d| d.join(&full))
                .unwrap_or(full)
        } else {
            full
        };
        let full = full.canonicalize().unwrap_or_else(|_| {
            // Not there: canonicalize the directory, to name the file plainly.
            match (
                full.parent().and_then(|d| d.canonicalize().ok()),
                full.file_name(),
            ) {
                (Some(d), Some(n)) => d.join(n),
                _ => full.clone(),
            }
        });
        if let Err(e) = std::fs::File::open(&full) {
            diags.push(Diagnostic::error(
                *span,
                format!("cannot load certificate \"{}\": {e}", full.display()),
            ));
        }
    }
}
