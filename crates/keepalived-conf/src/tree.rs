//! Lines of words into a tree of statements: `keyword args... [{ statements }]`.
//!
//! keepalived opens a block with a `{` at the end of the keyword's line or alone on the
//! next line; the lexer has already made every brace a line of its own, so here a `{` line
//! belongs to the statement just before it.

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

    /// The span from the keyword to the last argument, for messages about the whole line.
    pub fn span(&self) -> Span {
        self.keyword.span
    }
}

struct Frame {
    open: Span,
    nodes: Vec<Node>,
    /// False for a block that belongs to no statement (an unexpected `{`): kept only to
    /// keep the braces balanced, then dropped.
    attached: bool,
}

pub(crate) fn build(lines: Vec<Line>, diagnostics: &mut Vec<Diagnostic>) -> Vec<Node> {
    let mut root: Vec<Node> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    // Whether the previous line was a statement that a `{` may still open a block for.
    let mut can_open = false;
    for line in lines {
        let first = &line.tokens[0];
        if first.is_open() {
            let current = match stack.last_mut() {
                Some(f) => &mut f.nodes,
                None => &mut root,
            };
            let attached = can_open && current.last().is_some_and(|n| n.block.is_none());
            if !attached {
                diagnostics.push(Diagnostic::error(first.span, "unexpected '{'"));
            }
            stack.push(Frame {
                open: first.span,
                nodes: Vec::new(),
                attached,
            });
            can_open = false;
            continue;
        }
        if first.is_close() {
            can_open = false;
            match stack.pop() {
                None => diagnostics.push(Diagnostic::error(first.span, "extra '}' found")),
                Some(frame) => {
                    if frame.attached {
                        let parent = match stack.last_mut() {
                            Some(f) => &mut f.nodes,
                            None => &mut root,
                        };
                        if let Some(node) = parent.last_mut() {
                            node.block = Some(Block {
                                open: frame.open,
                                nodes: frame.nodes,
                            });
                        }
                    }
                }
            }
            continue;
        }
        let mut tokens = line.tokens.into_iter();
        let Some(keyword) = tokens.next() else {
            continue;
        };
        let node = Node {
            keyword,
            args: tokens.collect(),
            block: None,
        };
        match stack.last_mut() {
            Some(f) => f.nodes.push(node),
            None => root.push(node),
        }
        can_open = true;
    }
    // Blocks never closed: report each at its '{', innermost last, and keep what they hold.
    while let Some(frame) = stack.pop() {
        diagnostics.push(Diagnostic::error(
            frame.open,
            "this '{' is never closed: missing '}'",
        ));
        if frame.attached {
            let parent = match stack.last_mut() {
                Some(f) => &mut f.nodes,
                None => &mut root,
            };
            if let Some(node) = parent.last_mut() {
                node.block = Some(Block {
                    open: frame.open,
                    nodes: frame.nodes,
                });
            }
        }
    }
    root
}
