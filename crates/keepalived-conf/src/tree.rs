//! Lines of words into statements: `keyword args... [{ statements }]`, one top-level
//! statement at a time.
//!
//! keepalived opens a block with a `{` at the end of the keyword's line or alone on the
//! next line; the lexer has already made every brace a line of its own, so here a `{` line
//! belongs to the statement just before it. Each top-level statement is handed on as soon as
//! it is complete, so a large file is never held as one tree.

use fulcrum_diag::{Diagnostic, FileId, Span};

use crate::lexer::{Line, Token};

/// One statement: its keyword, its arguments, and its block if it has one.
#[derive(Debug, Clone)]
pub struct Node {
    pub keyword: Token,
    pub args: Vec<Token>,
    pub block: Option<Block>,
}

#[derive(Debug, Clone)]
pub struct Block {
    pub open: Span,
    pub nodes: Vec<Node>,
}

impl Node {
    pub fn name(&self) -> &str {
        &self.keyword.text
    }

    /// Where the statement starts, for messages about the whole statement.
    pub fn span(&self) -> Span {
        self.keyword.span
    }
}

/// keepalived's keywords that take a block (those it registers with sub-keywords, and
/// those whose handler reads a block of values), in every context, including the ones
/// Fulcrum does not run. After any other keyword a `{` glued to the word before it (as in
/// an undefined `${NAME}`) is keepalived's "Unexpected '{' - ignoring".
const BLOCK_KEYWORDS: &[&str] = &[
    "global_defs",
    "vrrp_script",
    "vrrp_track_file",
    "track_file",
    "vrrp_track_process",
    "track_process",
    "vrrp_sync_group",
    "vrrp_instance",
    "virtual_server_group",
    "virtual_server",
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "linkbeat_interfaces",
    "garp_group",
    "bfd_instance",
    "SSL",
    "notification_email",
    "group",
    "track_interface",
    "track_script",
    "track_bfd",
    "interfaces",
    "virtual_ipaddress",
    "virtual_ipaddress_excluded",
    "virtual_routes",
    "virtual_rules",
    "unicast_peer",
    "authentication",
    "real_server",
    "HTTP_GET",
    "SSL_GET",
    "TCP_CHECK",
    "SMTP_CHECK",
    "MISC_CHECK",
    "DNS_CHECK",
    "UDP_CHECK",
    "PING_CHECK",
    "FILE_CHECK",
    "BFD_CHECK",
    "url",
    "host",
];

#[derive(Debug)]
struct Frame {
    open: Span,
    nodes: Vec<Node>,
    /// False for a block that belongs to no statement (an unexpected `{`): kept only to
    /// keep the braces balanced, then dropped.
    attached: bool,
}

/// Builds statements from lines, handing back each top-level statement when it is complete.
#[derive(Debug, Default)]
pub(crate) struct TreeBuilder {
    /// The top-level statement being built.
    top: Option<Node>,
    /// Blocks open inside it, innermost last.
    stack: Vec<Frame>,
    /// Whether the previous line was a statement that a `{` may still open a block for.
    can_open: bool,
    /// Where the previous statement's last word ended (file, line, column after it).
    last_end: Option<(FileId, u32, u32)>,
    pub diagnostics: Vec<Diagnostic>,
}

impl TreeBuilder {
    /// The statement a new `{` would open a block for, if it may.
    fn last_open_candidate(&mut self) -> Option<&mut Node> {
        if !self.can_open {
            return None;
        }
        let node = match self.stack.last_mut() {
            Some(f) => f.nodes.last_mut(),
            None => self.top.as_mut(),
        }?;
        node.block.is_none().then_some(node)
    }

    /// Attaches a closed block to its statement; a completed top-level statement is returned.
    fn close(&mut self, frame: Frame) -> Option<Node> {
        if !frame.attached {
            return None;
        }
        let block = Block {
            open: frame.open,
            nodes: frame.nodes,
        };
        match self.stack.last_mut() {
            Some(parent) => {
                if let Some(node) = parent.nodes.last_mut() {
                    node.block = Some(block);
                }
                None
            }
            None => {
                let mut top = self.top.take()?;
                top.block = Some(block);
                Some(top)
            }
        }
    }

    /// Takes one line; returns a top-level statement that this line completed.
    pub fn push(&mut self, line: Line) -> Option<Node> {
        let first = line.tokens.first()?;
        if first.is_open() {
            let span = first.span;
            let glued = self.last_end == Some((span.file, span.line, span.col));
            // keepalived reads `router_id ${UNDEFINED}` as `router_id $`, `{`, `UNDEFINED`,
            // `}`: the brace after a keyword that takes no block is ignored, and the `}`
            // then closes the enclosing block early. So here, for a brace glued to the word
            // before it (a keyword written `name{` that takes a block still opens it).
            let ignored = glued
                .then(|| self.last_open_candidate())
                .flatten()
                .map(|n| n.name().to_string())
                .filter(|name| !BLOCK_KEYWORDS.contains(&name.as_str()));
            if let Some(name) = ignored {
                self.diagnostics.push(
                    Diagnostic::warning(
                        span,
                        format!("unexpected '{{' after '{name}', which takes no block (an undefined ${{NAME}}?): ignored as keepalived ignores it, so the '}}' that follows closes the enclosing block"),
                    )
                    .peer_accepts(),
                );
                self.can_open = false;
                self.last_end = None;
                return None;
            }
            let attached = self.last_open_candidate().is_some();
            if !attached {
                self.diagnostics
                    .push(Diagnostic::error(span, "unexpected '{'"));
            }
            self.stack.push(Frame {
                open: span,
                nodes: Vec::new(),
                attached,
            });
            self.can_open = false;
            return None;
        }
        self.last_end = None;
        if first.is_close() {
            self.can_open = false;
            match self.stack.pop() {
                // keepalived logs "Extra '}' found" and goes on (its -t counts it as an
                // error, but the daemon runs): a warning here, so such a file still runs.
                None => {
                    self.diagnostics.push(Diagnostic::warning(
                        first.span,
                        "extra '}' found; ignored, as keepalived ignores it",
                    ));
                    None
                }
                Some(frame) => self.close(frame),
            }
        } else {
            self.last_end = line
                .tokens
                .last()
                .filter(|t| !t.quoted)
                .map(|t| (t.span.file, t.span.line, t.span.col + t.span.len));
            let mut tokens = line.tokens.into_iter();
            let keyword = tokens.next()?;
            let node = Node {
                keyword,
                args: tokens.collect(),
                block: None,
            };
            self.can_open = true;
            match self.stack.last_mut() {
                Some(f) => {
                    f.nodes.push(node);
                    None
                }
                // A new top-level statement completes the previous one, which had no block.
                None => self.top.replace(node),
            }
        }
    }

    /// End of input: blocks never closed are reported at their `{` (what they hold is
    /// kept), and the last top-level statement is returned.
    pub fn finish(&mut self) -> Option<Node> {
        let mut done = None;
        while let Some(frame) = self.stack.pop() {
            self.diagnostics.push(Diagnostic::error(
                frame.open,
                "this '{' is never closed: missing '}'",
            ));
            if let Some(top) = self.close(frame) {
                done = Some(top);
            }
        }
        done.or_else(|| self.top.take())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{parse_str, LoadOptions};

    fn load(text: &str) -> crate::Loaded {
        parse_str(Path::new("k.conf"), text, &LoadOptions::default())
    }

    #[test]
    fn a_brace_glued_to_a_block_keyword_still_opens_it() {
        let l = load("vrrp_instance VI_1{\n interface eth0\n virtual_router_id 5\n virtual_ipaddress{\n 10.0.0.1\n }\n}\n");
        assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);
        let k = l.config.unwrap();
        assert_eq!(k.vrrp_instances[0].virtual_ipaddress.len(), 1);
    }

    #[test]
    fn an_undefined_definition_closes_the_block_as_keepalived_does() {
        let l = load("global_defs {\n router_id ${UNSET}\n script_user nobody\n}\n");
        let messages: Vec<&str> = l.diagnostics.iter().map(|d| d.message.as_str()).collect();
        assert!(
            messages[0].starts_with("unexpected '{' after 'router_id'"),
            "{messages:?}"
        );
        assert!(l.diagnostics[0].peer_accepts);
        // script_user lands at the top level, and the last '}' is extra.
        assert!(messages.contains(&"unknown keyword 'script_user' in the top level; ignored"));
        assert!(messages.contains(&"extra '}' found; ignored, as keepalived ignores it"));
        let k = l.config.unwrap();
        assert_eq!(k.global_defs.router_id.as_deref(), Some("$"));
        assert!(k.global_defs.script_user.is_none());
    }

    #[test]
    fn a_spaced_brace_after_a_scalar_is_still_an_error() {
        let l = load("global_defs {\n router_id x {\n }\n}\n");
        assert!(l
            .diagnostics
            .iter()
            .any(|d| d.is_error() && d.message == "'router_id' does not take a block"));
    }
}
