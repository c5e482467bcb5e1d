//! keepalived.conf's lexical layer: files, includes, comments, `@ID` conditionals, `$NAME`
//! definitions and their substitution, quoting, and `{`/`}` as lines of their own.
//!
//! This follows keepalived's `read_line()`: every logical line is decommented first, then
//! its `@ID` prefix is checked, then it is either a definition or has definitions
//! substituted (repeatedly, so definitions may use definitions), then `include` is handled,
//! and last the line is split at every brace outside quotes. Every character keeps the
//! column it came from, so a diagnostic about a substituted token points at the `$` that
//! produced it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fulcrum_diag::{Diagnostic, FileId, SourceMap, Span};

/// One word of a logical line, with the place it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    pub span: Span,
    /// Written between double quotes (so `"{"` is a word, not a brace).
    pub quoted: bool,
}

impl Token {
    pub fn is_open(&self) -> bool {
        !self.quoted && self.text == "{"
    }

    pub fn is_close(&self) -> bool {
        !self.quoted && self.text == "}"
    }
}

/// The words of one logical line; a brace is always a line of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub tokens: Vec<Token>,
}

/// How the lexer reads files.
#[derive(Debug, Clone)]
pub struct LexOptions {
    /// Selects `@ID` lines (keepalived's `-i`). `None` behaves like keepalived without an id:
    /// `@ID` lines are skipped and `@^ID` lines kept.
    pub config_id: Option<String>,
    /// Follow `include` directives. Off for untrusted text (the fuzz targets).
    pub includes: bool,
}

impl Default for LexOptions {
    fn default() -> LexOptions {
        LexOptions {
            config_id: None,
            includes: true,
        }
    }
}

/// A character of a logical line and the column it was written at.
type Chars = Vec<(char, u32)>;

/// Limits that keep hostile input (definitions that expand themselves) bounded.
const MAX_SUBSTITUTION_PASSES: usize = 32;
const MAX_LINE_CHARS: usize = 65_536;
const MAX_INCLUDE_DEPTH: usize = 32;

#[derive(Debug, Clone)]
struct Definition {
    /// One entry per line; more than one only for a multi-line definition.
    lines: Vec<String>,
    multiline: bool,
}

/// A multi-line definition being collected from the lines that follow it.
#[derive(Debug)]
struct Collecting {
    name: String,
}

/// Reads files and hands each logical line to `sink` as soon as it is complete.
pub(crate) struct Lexer<'a> {
    options: &'a LexOptions,
    pub sources: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
    sink: &'a mut dyn FnMut(Line),
    definitions: HashMap<String, Definition>,
    include_stack: Vec<PathBuf>,
}

impl<'a> Lexer<'a> {
    pub fn new(options: &'a LexOptions, sink: &'a mut dyn FnMut(Line)) -> Lexer<'a> {
        Lexer {
            options,
            sources: SourceMap::new(),
            diagnostics: Vec::new(),
            sink,
            definitions: HashMap::new(),
            include_stack: Vec::new(),
        }
    }

    /// Reads the top-level configuration file.
    pub fn read_root(&mut self, path: &Path) {
        match std::fs::read(path) {
            Ok(bytes) => self.lex_file(path, &bytes),
            Err(e) => self.diagnostics.push(Diagnostic::error(
                None,
                format!("cannot read configuration file {}: {e}", path.display()),
            )),
        }
    }

    /// Lexes text that did not come from disk (tests, fuzzing, stdin).
    pub fn lex_file(&mut self, path: &Path, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let file = self.sources.add(path, text.clone());
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.include_stack.push(canonical);
        let mut collecting: Option<Collecting> = None;
        for (idx, raw) in text.split('\n').enumerate() {
            let line_no = u32::try_from(idx + 1).unwrap_or(u32::MAX);
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            let (chars, continued) = self.decomment(raw, file, line_no);
            if let Some(c) = &collecting {
                // A multi-line definition goes on while its lines end in '\'.
                let name = c.name.clone();
                let body: String = chars.iter().map(|&(ch, _)| ch).collect();
                let body = body.trim_end().to_string();
                if !body.is_empty() {
                    if let Some(def) = self.definitions.get_mut(&name) {
                        def.lines.push(body);
                    }
                }
                if !continued {
                    collecting = None;
                }
                continue;
            }
            if chars.is_empty() {
                continue;
            }
            let span = Span::new(file, line_no, chars[0].1, 1);
            self.process_line(chars, continued, span, &mut collecting, 0);
        }
        self.include_stack.pop();
    }

    /// keepalived's `decomment()`: drops leading and trailing blanks and comments outside
    /// double quotes, unescapes `\#` and `\!`, and reports a trailing `\` (continuation).
    fn decomment(&mut self, raw: &str, file: FileId, line: u32) -> (Chars, bool) {
        let mut out: Chars = Vec::with_capacity(raw.len());
        let mut quote = false;
        let mut quote_col = 0;
        let mut continued = false;
        let mut it = raw.chars().zip(1u32..).peekable();
        while let Some((c, col)) = it.next() {
            match c {
                '"' => {
                    quote = !quote;
                    quote_col = col;
                    out.push((c, col));
                }
                '\\' => match it.peek() {
                    None => continued = true,
                    Some(&(next @ ('#' | '!'), ncol)) if !quote => {
                        out.push((next, ncol));
                        it.next();
                    }
                    Some(&(next, ncol)) => {
                        out.push((c, col));
                        out.push((next, ncol));
                        it.next();
                    }
                },
                '#' | '!' if !quote => break,
                _ => out.push((c, col)),
            }
        }
        if quote {
            self.diagnostics.push(Diagnostic::error(
                Span::new(file, line, quote_col, 1),
                "unterminated quote",
            ));
        }
        let start = out
            .iter()
            .position(|&(c, _)| c != ' ' && c != '\t')
            .unwrap_or(out.len());
        out.drain(..start);
        while matches!(out.last(), Some(&(' ' | '\t', _))) {
            out.pop();
        }
        (out, continued)
    }

    /// Conditionals, definitions, substitution and includes for one logical line; what is
    /// left is split into lines of words.
    fn process_line(
        &mut self,
        mut chars: Chars,
        continued: bool,
        origin: Span,
        collecting: &mut Option<Collecting>,
        depth: usize,
    ) {
        let mut passes = 0;
        loop {
            if chars.first().map(|c| c.0) == Some('@') {
                match self.strip_condition(&chars) {
                    Some(rest) => chars = rest,
                    None => return,
                }
                if chars.is_empty() {
                    return;
                }
            }
            if chars[0].0 == '$' {
                if let Some((name, value)) = parse_definition(&chars) {
                    let multiline = continued;
                    let lines = if value.is_empty() {
                        Vec::new()
                    } else {
                        vec![value]
                    };
                    self.definitions
                        .insert(name.clone(), Definition { lines, multiline });
                    if multiline {
                        *collecting = Some(Collecting { name });
                    }
                    return;
                }
            }
            if chars[0].0 == '~' {
                self.diagnostics.push(
                    Diagnostic::warning(
                        origin,
                        "'~SEQ' and other '~' lines are not supported by fulcrum; line ignored",
                    )
                    .peer_accepts(),
                );
                return;
            }
            if self.definitions.is_empty() || !chars.iter().any(|c| c.0 == '$') {
                break;
            }
            match self.substitute(&chars) {
                Substituted::Unchanged => break,
                Substituted::Line(new) => {
                    chars = new;
                    passes += 1;
                    if passes > MAX_SUBSTITUTION_PASSES || chars.len() > MAX_LINE_CHARS {
                        self.diagnostics.push(Diagnostic::error(
                            origin,
                            "definitions expand without end (a definition uses itself?)",
                        ));
                        return;
                    }
                    if chars.is_empty() {
                        return;
                    }
                }
                Substituted::Lines(lines, col) => {
                    if depth > MAX_SUBSTITUTION_PASSES {
                        self.diagnostics.push(Diagnostic::error(
                            origin,
                            "definitions expand without end (a definition uses itself?)",
                        ));
                        return;
                    }
                    for l in lines {
                        let expanded: Chars = l.chars().map(|c| (c, col)).collect();
                        if !expanded.is_empty() {
                            self.process_line(expanded, false, origin, collecting, depth + 1);
                        }
                    }
                    return;
                }
            }
        }
        self.finish_line(chars, origin.file, origin.line);
    }

    /// `@ID rest` keeps `rest` only when ID is the config id; `@^ID rest` only when it is not.
    fn strip_condition(&self, chars: &Chars) -> Option<Chars> {
        let (negate, start) = if chars.get(1).map(|c| c.0) == Some('^') {
            (true, 2)
        } else {
            (false, 1)
        };
        let end = chars
            .iter()
            .skip(start)
            .position(|&(c, _)| c == ' ' || c == '\t')?
            + start;
        let id: String = chars[start..end].iter().map(|c| c.0).collect();
        let matches = self.options.config_id.as_deref() == Some(id.as_str());
        if matches == negate {
            return None;
        }
        let rest_start = chars[end..]
            .iter()
            .position(|&(c, _)| c != ' ' && c != '\t')
            .map_or(chars.len(), |p| p + end);
        Some(chars[rest_start..].to_vec())
    }

    fn substitute(&self, chars: &Chars) -> Substituted {
        let mut out: Chars = Vec::with_capacity(chars.len());
        let mut changed = false;
        let mut i = 0;
        while i < chars.len() {
            let (c, col) = chars[i];
            if c != '$' {
                out.push((c, col));
                i += 1;
                continue;
            }
            match reference_at(chars, i) {
                Some((name, end)) => match self.definitions.get(&name) {
                    Some(def) if def.multiline => {
                        // keepalived expands a multi-line definition only alone on its line.
                        if i == 0 && end == chars.len() {
                            return Substituted::Lines(def.lines.clone(), col);
                        }
                        out.push((c, col));
                        i += 1;
                    }
                    Some(def) => {
                        let value = def.lines.first().map(String::as_str).unwrap_or("");
                        out.extend(value.chars().map(|v| (v, col)));
                        changed = true;
                        i = end;
                    }
                    None => {
                        out.push((c, col));
                        i += 1;
                    }
                },
                None => {
                    out.push((c, col));
                    i += 1;
                }
            }
        }
        if changed {
            Substituted::Line(out)
        } else {
            Substituted::Unchanged
        }
    }

    /// Handles `include`, or splits the line at braces into lines of words.
    fn finish_line(&mut self, chars: Chars, file: FileId, line: u32) {
        let words = tokenize(&chars, file, line);
        if words
            .first()
            .is_some_and(|t| t.text == "include" && !t.quoted)
            && words.len() == 2
        {
            self.include(&words[1]);
            return;
        }
        let mut current: Vec<Token> = Vec::new();
        for t in words {
            if t.is_open() || t.is_close() {
                if !current.is_empty() {
                    (self.sink)(Line {
                        tokens: std::mem::take(&mut current),
                    });
                }
                (self.sink)(Line { tokens: vec![t] });
            } else {
                current.push(t);
            }
        }
        if !current.is_empty() {
            (self.sink)(Line { tokens: current });
        }
    }

    fn include(&mut self, pattern: &Token) {
        if !self.options.includes {
            self.diagnostics.push(Diagnostic::warning(
                pattern.span,
                "include is disabled here; file not read",
            ));
            return;
        }
        if self.include_stack.len() >= MAX_INCLUDE_DEPTH {
            self.diagnostics.push(Diagnostic::error(
                pattern.span,
                format!("includes nested deeper than {MAX_INCLUDE_DEPTH} levels"),
            ));
            return;
        }
        // Relative patterns are relative to the directory of the including file, as
        // keepalived changes into that directory while it reads a file.
        let base = self
            .sources
            .path(pattern.span.file)
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let full = if Path::new(&pattern.text).is_absolute() {
            PathBuf::from(&pattern.text)
        } else {
            base.join(&pattern.text)
        };
        let full_text = full.to_string_lossy().into_owned();
        let paths = match glob::glob(&full_text) {
            Ok(paths) => paths.filter_map(Result::ok).collect::<Vec<_>>(),
            Err(e) => {
                self.diagnostics.push(Diagnostic::error(
                    pattern.span,
                    format!("invalid include pattern '{}': {}", pattern.text, e.msg),
                ));
                return;
            }
        };
        let mut matched = 0;
        for path in paths {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                continue;
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o111 != 0 {
                    self.diagnostics.push(Diagnostic::warning(
                        pattern.span,
                        format!(
                            "configuration file '{}' is executable; keepalived skips it, and so does fulcrum",
                            path.display()
                        ),
                    ));
                    continue;
                }
            }
            matched += 1;
            let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if let Some(pos) = self.include_stack.iter().position(|p| *p == canonical) {
                let mut chain: Vec<String> = self.include_stack[pos..]
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                chain.push(canonical.display().to_string());
                self.diagnostics.push(Diagnostic::error(
                    pattern.span,
                    format!("include cycle: {}", chain.join(" -> ")),
                ));
                continue;
            }
            match std::fs::read(&path) {
                Ok(bytes) => self.lex_file(&path, &bytes),
                Err(e) => self.diagnostics.push(Diagnostic::error(
                    pattern.span,
                    format!("cannot read included file {}: {e}", path.display()),
                )),
            }
        }
        if matched == 0 {
            // keepalived logs it and goes on (with -e it is an error, as --strict here).
            self.diagnostics.push(
                Diagnostic::warning(
                    pattern.span,
                    format!("no configuration files matched '{}'", pattern.text),
                )
                .peer_accepts(),
            );
        }
    }
}

enum Substituted {
    Unchanged,
    Line(Chars),
    /// A multi-line definition that was alone on its line, and the column of its `$`.
    Lines(Vec<String>, u32),
}

/// `$NAME=value`: the name and the value. As in keepalived, nothing may stand between the
/// name and `=` (so `$A = b` is an ordinary line, not a definition).
fn parse_definition(chars: &Chars) -> Option<(String, String)> {
    let text: String = chars.iter().map(|c| c.0).collect();
    let rest = text.strip_prefix('$')?;
    let first = rest.chars().next()?;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return None;
    }
    let name_len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let name = &rest[..name_len];
    let value = rest[name_len..].strip_prefix('=')?;
    Some((
        name.to_string(),
        value.trim_matches([' ', '\t']).to_string(),
    ))
}

/// A reference `$NAME` or `${NAME}` starting at `i`: its name and the index after it.
fn reference_at(chars: &Chars, i: usize) -> Option<(String, usize)> {
    let braces = chars.get(i + 1).map(|c| c.0) == Some('{');
    let start = if braces { i + 2 } else { i + 1 };
    let first = chars.get(start)?.0;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return None;
    }
    let mut end = start;
    while end < chars.len() && (chars[end].0.is_ascii_alphanumeric() || chars[end].0 == '_') {
        end += 1;
    }
    let name: String = chars[start..end].iter().map(|c| c.0).collect();
    if braces {
        if chars.get(end).map(|c| c.0) != Some('}') {
            return None;
        }
        return Some((name, end + 1));
    }
    match chars.get(end).map(|c| c.0) {
        None | Some(' ' | '\t' | ',' | ')') => Some((name, end)),
        _ => None,
    }
}

/// Splits a logical line into words: blanks separate, double quotes group (and are
/// dropped), and an unquoted brace is a word of its own even when glued to another.
fn tokenize(chars: &Chars, file: FileId, line: u32) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut text = String::new();
    let mut first_col: Option<u32> = None;
    let mut last_col = 0;
    let mut quoted = false;
    let mut in_quote = false;
    let flush = |tokens: &mut Vec<Token>,
                 text: &mut String,
                 first_col: &mut Option<u32>,
                 last_col: u32,
                 quoted: &mut bool| {
        if let Some(col) = first_col.take() {
            let len = if last_col >= col {
                last_col - col + 1
            } else {
                1
            };
            tokens.push(Token {
                text: std::mem::take(text),
                span: Span::new(file, line, col, len),
                quoted: *quoted,
            });
            *quoted = false;
        }
    };
    for &(c, col) in chars {
        if in_quote {
            if c == '"' {
                in_quote = false;
                last_col = col;
            } else {
                text.push(c);
                last_col = col;
            }
            continue;
        }
        match c {
            ' ' | '\t' => flush(
                &mut tokens,
                &mut text,
                &mut first_col,
                last_col,
                &mut quoted,
            ),
            '"' => {
                in_quote = true;
                quoted = true;
                first_col.get_or_insert(col);
                last_col = col;
            }
            '{' | '}' => {
                flush(
                    &mut tokens,
                    &mut text,
                    &mut first_col,
                    last_col,
                    &mut quoted,
                );
                tokens.push(Token {
                    text: c.to_string(),
                    span: Span::new(file, line, col, 1),
                    quoted: false,
                });
            }
            _ => {
                first_col.get_or_insert(col);
                text.push(c);
                last_col = col;
            }
        }
    }
    flush(
        &mut tokens,
        &mut text,
        &mut first_col,
        last_col,
        &mut quoted,
    );
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lex(text: &str, id: Option<&str>) -> (Vec<Vec<String>>, Vec<Diagnostic>) {
        let options = LexOptions {
            config_id: id.map(str::to_string),
            includes: false,
        };
        let mut lines: Vec<Vec<String>> = Vec::new();
        let mut sink = |l: Line| lines.push(l.tokens.iter().map(|t| t.text.clone()).collect());
        let mut lexer = Lexer::new(&options, &mut sink);
        lexer.lex_file(Path::new("t.conf"), text.as_bytes());
        let diagnostics = lexer.diagnostics;
        (lines, diagnostics)
    }

    fn words(lines: &[&[&str]]) -> Vec<Vec<String>> {
        lines
            .iter()
            .map(|l| l.iter().map(|w| w.to_string()).collect())
            .collect()
    }

    #[test]
    fn comments_quotes_and_braces() {
        let (lines, diags) = lex(
            "vrrp_instance VI_1{ # a comment\n  notify \"/bin/echo a # b\" ! more\n}state MASTER\n",
            None,
        );
        assert!(diags.is_empty());
        assert_eq!(
            lines,
            words(&[
                &["vrrp_instance", "VI_1"],
                &["{"],
                &["notify", "/bin/echo a # b"],
                &["}"],
                &["state", "MASTER"],
            ])
        );
    }

    #[test]
    fn escaped_comment_characters() {
        let (lines, _) = lex("auth_pass ab\\#cd\\!e\n", None);
        assert_eq!(lines, words(&[&["auth_pass", "ab#cd!e"]]));
    }

    #[test]
    fn conditionals_follow_config_id() {
        let text = "@lb1 priority 150\n@lb2 priority 100\n@^lb1 state BACKUP\n@lb1\n";
        assert_eq!(lex(text, Some("lb1")).0, words(&[&["priority", "150"]]));
        assert_eq!(
            lex(text, Some("lb2")).0,
            words(&[&["priority", "100"], &["state", "BACKUP"]])
        );
        assert_eq!(lex(text, None).0, words(&[&["state", "BACKUP"]]));
    }

    #[test]
    fn definitions_substitute_recursively_with_columns() {
        let options = LexOptions {
            config_id: None,
            includes: false,
        };
        let mut collected: Vec<Line> = Vec::new();
        let mut sink = |l: Line| collected.push(l);
        let mut lexer = Lexer::new(&options, &mut sink);
        lexer.lex_file(
            Path::new("t.conf"),
            b"$IF=  eth0\n$NOT = x\n$IFACE=${IF}\n  interface $IFACE\n  track $IF,x\n  keep $IFX\n",
        );
        drop(lexer);
        let lines: Vec<&Line> = collected.iter().collect();
        assert_eq!(
            lines[0].tokens[0].text, "$NOT",
            "a blank before '=' is no definition"
        );
        let lines = &lines[1..];
        assert_eq!(lines[0].tokens[1].text, "eth0");
        assert_eq!(lines[0].tokens[1].span.col, 13, "points at the $");
        assert_eq!(lines[1].tokens[1].text, "eth0,x");
        assert_eq!(
            lines[2].tokens[1].text, "$IFX",
            "undefined names stay as written"
        );
    }

    #[test]
    fn multiline_definitions_expand_alone_on_a_line() {
        let text =
            "$PEERS=10.0.0.2 \\\n    10.0.0.3 \\\n 10.0.0.4\nunicast_peer {\n$PEERS\n}\nx $PEERS\n";
        let (lines, _) = lex(text, None);
        assert_eq!(
            lines,
            words(&[
                &["unicast_peer"],
                &["{"],
                &["10.0.0.2"],
                &["10.0.0.3"],
                &["10.0.0.4"],
                &["}"],
                &["x", "$PEERS"],
            ])
        );
    }

    #[test]
    fn self_referencing_definition_is_an_error_not_a_hang() {
        let (_, diags) = lex("$A=$A $A\nkey $A\n", None);
        assert!(diags.iter().any(|d| d.message.contains("without end")));
    }

    #[test]
    fn unterminated_quote_is_reported_at_the_quote() {
        let (_, diags) = lex("  notify \"/bin/true\n", None);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].message, "unterminated quote");
        assert_eq!(diags[0].span.unwrap().col, 10);
    }
}
