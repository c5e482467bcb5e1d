//! Lines of words into statements: `keyword args... [{ statements }]`, one top-level
//! statement at a time.
//!
//! keepalived opens a block with a `{` at the end of the keyword's line or alone on the
//! next line; the lexer has already made every brace a line of its own, so here a `{` line
//! belongs to the statement just before it. Each top-level statement is handed on as soon as
//! it is complete, so a large file is never held as one tree.

use fulcrum_diag::{Diagnostic, Span};

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
