//! nginx.conf's syntax: words, `;`, blocks, comments, quotes, and `include`.
//!
//! Follows `ngx_conf_read_token()`: `#` starts a comment only where a word could start,
//! `"..."` and `'...'` group words with `\"`, `\'`, `\\`, `\t`, `\r`, `\n` escapes, a
//! `{` right after `$` belongs to a `${name}` variable, and a quoted word must be followed
//! by a blank, `;` or `{`. Messages are nginx's own.

use std::path::{Path, PathBuf};

use fulcrum_diag::{Diagnostic, FileId, SourceMap, Span};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub span: Span,
    pub quoted: bool,
}

/// A directive: its name, arguments, and its block if it opened one.
#[derive(Debug, Clone)]
pub struct Directive {
    pub name: Word,
    pub args: Vec<Word>,
    pub block: Option<Vec<Directive>>,
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(Word),
    Semicolon(Span),
    Open(Span),
    Close(Span),
}

const MAX_INCLUDE_DEPTH: usize = 32;

fn lex(text: &str, file: FileId, diags: &mut Vec<Diagnostic>) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut line = 1u32;
    let mut col = 0u32;
    let mut chars = text.chars().peekable();
    let mut need_space = false;
    let mut cur: Option<(String, Span, bool)> = None;
    let flush = |cur: &mut Option<(String, Span, bool)>, out: &mut Vec<Tok>, end_col: u32| {
        if let Some((text, mut span, quoted)) = cur.take() {
            if !quoted {
                span.len = end_col.saturating_sub(span.col) + 1;
            }
            out.push(Tok::Word(Word { text, span, quoted }));
        }
    };
    let mut last_col = 0;
    while let Some(c) = chars.next() {
        if c == '\n' {
            flush(&mut cur, &mut out, last_col);
            need_space = false;
            line += 1;
            col = 0;
            continue;
        }
        col += 1;
        let here = Span::new(file, line, col, 1);
        if need_space {
            need_space = false;
            // `)` may follow a quoted word (`if ($a = "b")`) and starts a word of its own.
            if !matches!(c, ' ' | '\t' | '\r' | ';' | '{' | ')') {
                diags.push(Diagnostic::error(here, format!("unexpected \"{c}\"")));
            }
        }
        match c {
            ' ' | '\t' | '\r' => flush(&mut cur, &mut out, last_col),
            ';' => {
                flush(&mut cur, &mut out, last_col);
                out.push(Tok::Semicolon(here));
            }
            '{' if !cur.as_ref().is_some_and(|(t, _, _)| t.ends_with('$')) => {
                flush(&mut cur, &mut out, last_col);
                out.push(Tok::Open(here));
            }
            '}' if !cur
                .as_ref()
                .is_some_and(|(t, _, _)| t.contains("${") && !t.ends_with('}')) =>
            {
                flush(&mut cur, &mut out, last_col);
                out.push(Tok::Close(here));
            }
            '#' if cur.is_none() => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        line += 1;
                        col = 0;
                        break;
                    }
                }
            }
            '"' | '\'' if cur.is_none() => {
                let quote = c;
                let start = here;
                let mut text = String::new();
                let mut closed = false;
                let mut end_col = col;
                while let Some(n) = chars.next() {
                    if n == '\n' {
                        line += 1;
                        col = 0;
                        text.push('\n');
                        continue;
                    }
                    col += 1;
                    if n == '\\' {
                        let Some(e) = chars.next() else { break };
                        if e == '\n' {
                            line += 1;
                            col = 0;
                            text.push('\\');
                            text.push('\n');
                            continue;
                        }
                        col += 1;
                        match e {
                            '"' | '\'' | '\\' => text.push(e),
                            't' => text.push('\t'),
                            'r' => text.push('\r'),
                            'n' => text.push('\n'),
                            other => {
                                text.push('\\');
                                text.push(other);
                            }
                        }
                        continue;
                    }
                    if n == quote {
                        closed = true;
                        end_col = col;
                        break;
                    }
                    text.push(n);
                }
                if !closed {
                    diags.push(Diagnostic::error(
                        start,
                        "unexpected end of file, expecting \";\" or \"}\"",
                    ));
                    return out;
                }
                let mut span = start;
                span.len = if span.line == line {
                    end_col - start.col + 1
                } else {
                    1
                };
                out.push(Tok::Word(Word {
                    text,
                    span,
                    quoted: true,
                }));
                need_space = true;
            }
            '\\' => {
                let entry = cur.get_or_insert_with(|| (String::new(), here, false));
                if let Some(&e) = chars.peek() {
                    if e != '\n' {
                        chars.next();
                        col += 1;
                        match e {
                            '"' | '\'' | '\\' => entry.0.push(e),
                            't' => entry.0.push('\t'),
                            'r' => entry.0.push('\r'),
                            'n' => entry.0.push('\n'),
                            other => {
                                entry.0.push('\\');
                                entry.0.push(other);
                            }
                        }
                    }
                }
                last_col = col;
            }
            _ => {
                cur.get_or_insert_with(|| (String::new(), here, false))
                    .0
                    .push(c);
                last_col = col;
            }
        }
    }
    flush(&mut cur, &mut out, last_col);
    out
}

/// Reads nginx.conf files into directive trees, following includes.
pub(crate) struct Reader {
    pub sources: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
    /// Directory that relative includes are resolved against (nginx's conf prefix: the
    /// directory of the main configuration file).
    prefix: PathBuf,
    include_stack: Vec<PathBuf>,
    pub includes: bool,
    /// An unexpected end of file is reported once, by the innermost open block.
    eof_reported: bool,
}

impl Reader {
    pub fn new(main: &Path, includes: bool) -> Reader {
        Reader {
            sources: SourceMap::new(),
            diagnostics: Vec::new(),
            prefix: main.parent().map(Path::to_path_buf).unwrap_or_default(),
            include_stack: Vec::new(),
            includes,
            eof_reported: false,
        }
    }

    pub fn read_file(&mut self, path: &Path) -> Option<Vec<Directive>> {
        match std::fs::read(path) {
            Ok(bytes) => Some(self.parse_text(path, &bytes)),
            Err(e) => {
                self.diagnostics.push(Diagnostic::error(
                    None,
                    format!("open() \"{}\" failed ({e})", path.display()),
                ));
                None
            }
        }
    }

    pub fn parse_text(&mut self, path: &Path, bytes: &[u8]) -> Vec<Directive> {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let file = self.sources.add(path, text.clone());
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.include_stack.push(canonical);
        let toks = lex(&text, file, &mut self.diagnostics);
        let mut pos = 0;
        let eof_span = {
            let lines = text.split('\n').count() as u32;
            Span::new(file, lines.max(1), 1, 1)
        };
        let saved = std::mem::replace(&mut self.eof_reported, false);
        let out = self.block(&toks, &mut pos, false, eof_span);
        self.eof_reported = saved;
        self.include_stack.pop();
        out
    }

    fn block(&mut self, toks: &[Tok], pos: &mut usize, nested: bool, eof: Span) -> Vec<Directive> {
        let mut out = Vec::new();
        let mut words: Vec<Word> = Vec::new();
        while *pos < toks.len() {
            let t = &toks[*pos];
            *pos += 1;
            match t {
                Tok::Word(w) => words.push(w.clone()),
                Tok::Semicolon(span) => {
                    if words.is_empty() {
                        self.diagnostics
                            .push(Diagnostic::error(*span, "unexpected \";\""));
                        continue;
                    }
                    let mut it = std::mem::take(&mut words).into_iter();
                    let Some(name) = it.next() else { continue };
                    let d = Directive {
                        name,
                        args: it.collect(),
                        block: None,
                    };
                    if d.name.text == "include" && !d.name.quoted {
                        self.include(d, &mut out);
                    } else {
                        out.push(d);
                    }
                }
                Tok::Open(span) => {
                    if words.is_empty() {
                        self.diagnostics
                            .push(Diagnostic::error(*span, "unexpected \"{\""));
                    }
                    let inner = self.block(toks, pos, true, eof);
                    let mut it = std::mem::take(&mut words).into_iter();
                    if let Some(name) = it.next() {
                        out.push(Directive {
                            name,
                            args: it.collect(),
                            block: Some(inner),
                        });
                    }
                }
                Tok::Close(span) => {
                    if !words.is_empty() || !nested {
                        self.diagnostics
                            .push(Diagnostic::error(*span, "unexpected \"}\""));
                        words.clear();
                        if !nested {
                            continue;
                        }
                    }
                    return out;
                }
            }
        }
        if nested {
            if !self.eof_reported {
                self.eof_reported = true;
                self.diagnostics.push(Diagnostic::error(
                    eof,
                    "unexpected end of file, expecting \"}\"",
                ));
            }
        } else if !words.is_empty() && !self.eof_reported {
            self.diagnostics.push(Diagnostic::error(
                eof,
                "unexpected end of file, expecting \";\" or \"}\"",
            ));
        }
        out
    }

    fn include(&mut self, d: Directive, out: &mut Vec<Directive>) {
        if d.args.len() != 1 {
            self.diagnostics.push(Diagnostic::error(
                d.name.span,
                "invalid number of arguments in \"include\" directive",
            ));
            return;
        }
        let pattern = &d.args[0];
        if !self.includes {
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
        let full = if Path::new(&pattern.text).is_absolute() {
            PathBuf::from(&pattern.text)
        } else {
            self.prefix.join(&pattern.text)
        };
        let has_glob = pattern.text.contains(['*', '?', '[']);
        let paths: Vec<PathBuf> = if has_glob {
            match glob::glob(&full.to_string_lossy()) {
                Ok(p) => p.filter_map(Result::ok).filter(|p| p.is_file()).collect(),
                Err(e) => {
                    self.diagnostics.push(Diagnostic::error(
                        pattern.span,
                        format!("invalid include pattern \"{}\": {}", pattern.text, e.msg),
                    ));
                    return;
                }
            }
        } else {
            // nginx: a file named without wildcards must exist.
            vec![full]
        };
        for path in paths {
            let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if self.include_stack.contains(&canonical) {
                self.diagnostics.push(Diagnostic::error(
                    pattern.span,
                    format!("include cycle: \"{}\" includes itself", canonical.display()),
                ));
                continue;
            }
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let inner = self.parse_text(&path, &bytes);
                    out.extend(inner);
                }
                Err(e) => self.diagnostics.push(Diagnostic::error(
                    pattern.span,
                    format!("open() \"{}\" failed ({e})", path.display()),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> (Vec<Directive>, Vec<Diagnostic>) {
        let mut r = Reader::new(Path::new("n.conf"), false);
        let d = r.parse_text(Path::new("n.conf"), text.as_bytes());
        (d, r.diagnostics)
    }

    #[test]
    fn comments_quotes_escapes_and_variables() {
        let (d, diags) = words(
            "a b#c 'x y' \"q\\\"t\\n\" ${host}x; # comment\nlog_format main '$remote_addr - \"$request\"';\n",
        );
        assert!(diags.is_empty(), "{diags:?}");
        let args: Vec<&str> = d[0].args.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(args, ["b#c", "x y", "q\"t\n", "${host}x"]);
        assert_eq!(d[1].args[1].text, "$remote_addr - \"$request\"");
    }

    #[test]
    fn nested_blocks() {
        let (d, diags) = words("http { server { listen 80; location / { } } }");
        assert!(diags.is_empty());
        let server = &d[0].block.as_ref().unwrap()[0];
        assert_eq!(server.name.text, "server");
        assert_eq!(server.block.as_ref().unwrap().len(), 2);
    }

    #[test]
    fn nginx_messages_for_broken_structure() {
        assert_eq!(words("a;\n}\n").1[0].message, "unexpected \"}\"");
        assert_eq!(
            words("http {\n a b;\n").1[0].message,
            "unexpected end of file, expecting \"}\""
        );
        assert_eq!(words("a 'b'c;").1[0].message, "unexpected \"c\"");
        assert_eq!(words(";").1[0].message, "unexpected \";\"");
    }
}
