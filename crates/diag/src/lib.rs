//! Source files, locations and diagnostics shared by Fulcrum's configuration parsers.
//!
//! Owns how a problem in a configuration file is located (`FILE:LINE:COL`) and shown to an
//! operator (the source line with a caret under the column, like rustc). It knows nothing
//! about keepalived.conf or nginx.conf.

use std::fmt;
use std::path::{Path, PathBuf};

/// Index of a file in a [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// A place in a source file: 1-based line and column (columns count characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub file: FileId,
    pub line: u32,
    pub col: u32,
    /// Width to underline, in characters (at least 1 when rendered).
    pub len: u32,
}

impl Span {
    pub fn new(file: FileId, line: u32, col: u32, len: u32) -> Span {
        Span {
            file,
            line,
            col,
            len,
        }
    }
}

/// One file read by a parser, kept so that diagnostics can quote it.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    /// The text of a 1-based line, without its line ending.
    pub fn line(&self, line: u32) -> Option<&str> {
        let idx = usize::try_from(line).ok()?.checked_sub(1)?;
        self.text
            .split('\n')
            .nth(idx)
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
    }
}

/// Every file a parse read, in the order it was read.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    pub fn add(&mut self, path: impl Into<PathBuf>, text: impl Into<String>) -> FileId {
        let id = FileId(u32::try_from(self.files.len()).unwrap_or(u32::MAX));
        self.files.push(SourceFile {
            path: path.into(),
            text: text.into(),
        });
        id
    }

    pub fn get(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id.0 as usize)
    }

    pub fn path(&self, id: FileId) -> Option<&Path> {
        self.get(id).map(|f| f.path.as_path())
    }

    pub fn files(&self) -> impl Iterator<Item = &SourceFile> {
        self.files.iter()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// What went wrong (or looks wrong), and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    /// `None` for problems that belong to no place in a file (a missing file, say).
    pub span: Option<Span>,
    /// What to do about it, when there is something useful to say.
    pub help: Option<String>,
    /// A warning the peer's own check (`keepalived -t`, `nginx -t`) passes without a word,
    /// where by default a warning is something the peer's check counts as an error:
    /// keywords the peer knows and Fulcrum skips, or leniencies the peer applies silently.
    pub peer_accepts: bool,
}

impl Diagnostic {
    pub fn error(span: impl Into<Option<Span>>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            span: span.into(),
            help: None,
            peer_accepts: false,
        }
    }

    pub fn warning(span: impl Into<Option<Span>>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            message: message.into(),
            span: span.into(),
            help: None,
            peer_accepts: false,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Marks a warning that the peer's own check accepts silently.
    pub fn peer_accepts(mut self) -> Diagnostic {
        self.peer_accepts = true;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `FILE:LINE:COL` of the diagnostic, or `FILE` alone when it has no place.
    pub fn location(&self, sources: &SourceMap) -> Option<String> {
        let span = self.span?;
        let path = sources.path(span.file)?;
        Some(format!("{}:{}:{}", path.display(), span.line, span.col))
    }

    /// Renders the diagnostic as `FILE:LINE:COL: error: message`, then the source line with a
    /// caret under the column.
    pub fn render(&self, sources: &SourceMap) -> String {
        let mut out = String::new();
        match self.location(sources) {
            Some(loc) => out.push_str(&format!("{loc}: {}: {}\n", self.severity, self.message)),
            None => out.push_str(&format!("{}: {}\n", self.severity, self.message)),
        }
        if let Some(span) = self.span {
            if let Some(text) = sources.get(span.file).and_then(|f| f.line(span.line)) {
                let number = span.line.to_string();
                let pad = " ".repeat(number.len());
                out.push_str(&format!("{number} | {text}\n"));
                // Reproduce tabs before the column so the caret lines up in any terminal.
                let lead: String = text
                    .chars()
                    .take(span.col.saturating_sub(1) as usize)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                let width = span.len.max(1) as usize;
                out.push_str(&format!("{pad} | {lead}{}\n", "^".repeat(width)));
            }
        }
        if let Some(help) = &self.help {
            out.push_str(&format!("  = help: {help}\n"));
        }
        out
    }
}

/// Turns every warning into an error (`--strict`).
pub fn deny_warnings(diagnostics: &mut [Diagnostic]) {
    for d in diagnostics {
        d.severity = Severity::Error;
    }
}

pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(Diagnostic::is_error)
}

/// Sorts diagnostics by file, then position, keeping the order of equal places.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by_key(|d| d.span.map(|s| (s.file, s.line, s.col)));
}

/// Renders all diagnostics and a one-line summary, the way `fulcrum check` prints them.
pub fn render_all(diagnostics: &[Diagnostic], sources: &SourceMap) -> String {
    let mut out = String::new();
    for d in diagnostics {
        out.push_str(&d.render(sources));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_line_and_caret() {
        let mut map = SourceMap::new();
        let f = map.add("k.conf", "vrrp_instance VI_1 {\n\tpriority 0\n}\n");
        let d = Diagnostic::error(Span::new(f, 2, 11, 1), "priority 0 is out of range 1..255")
            .with_help("0 is reserved for a master that is stopping");
        assert_eq!(
            d.render(&map),
            "k.conf:2:11: error: priority 0 is out of range 1..255\n\
             2 | \tpriority 0\n  \
               | \t         ^\n  \
             = help: 0 is reserved for a master that is stopping\n"
        );
    }

    #[test]
    fn renders_without_span() {
        let map = SourceMap::new();
        let d = Diagnostic::warning(None, "no configuration file given");
        assert_eq!(d.render(&map), "warning: no configuration file given\n");
    }

    #[test]
    fn line_lookup_handles_crlf_and_out_of_range() {
        let mut map = SourceMap::new();
        let f = map.add("x", "a\r\nb");
        let file = map.get(f).unwrap();
        assert_eq!(file.line(1), Some("a"));
        assert_eq!(file.line(2), Some("b"));
        assert_eq!(file.line(3), None);
        assert_eq!(file.line(0), None);
    }
}
