//! One header line, as nginx's `ngx_http_parse_header_line` reads it; shared by request
//! and response heads. nginx 1.22 takes only the space around a value as white space:
//! a tab is part of the value (`Transfer-Encoding:<TAB>chunked` is an unknown coding).

/// Where the machine is in a header line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum State {
    #[default]
    Start,
    Name,
    SpaceBeforeValue,
    Value,
    SpaceAfterValue,
    /// An upstream's repeated status line (IIS sends one), skipped as nginx skips it.
    IgnoreLine,
    AlmostDone,
    HeaderAlmostDone,
}

/// Offsets of the line in progress.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Marks {
    /// Where the line began; kept past the line's end, as nginx's `header_name_start`
    /// is, since the buffer limits measure from it.
    pub name_start: Option<usize>,
    pub name_end: usize,
    pub value_start: usize,
    pub value_end: usize,
    /// A name byte outside letters, digits, `-` (and `_` when allowed).
    pub invalid: bool,
}

/// What a byte did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    More,
    /// A header line is complete (its offsets in the marks).
    Line,
    /// The empty line: the head is complete.
    Done,
    /// nginx's NGX_HTTP_PARSE_INVALID_HEADER.
    Invalid,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Machine {
    pub state: State,
    pub marks: Marks,
}

impl Machine {
    /// Where the next byte that could change the state is, from `from`: a run of
    /// ordinary bytes inside a name or a value is passed over in one go (the values are
    /// most of a head's bytes).
    pub fn skip(&self, bytes: &[u8], from: usize) -> usize {
        let rest = &bytes[from..];
        let run = match self.state {
            State::Value => rest
                .iter()
                .position(|&b| matches!(b, b' ' | b'\r' | b'\n' | 0)),
            State::Name => rest.iter().position(|&b| !is_name_char(b)),
            _ => Some(0),
        };
        from + run.unwrap_or(rest.len())
    }

    /// Feeds the byte at offset `p`. `upstream`: a response's head (its bytes so far),
    /// where a repeated status line is skipped.
    pub fn step(&mut self, ch: u8, p: usize, underscores: bool, upstream: Option<&[u8]>) -> Step {
        let f = &mut self.marks;
        self.state = match self.state {
            State::Start => {
                f.name_start = Some(p);
                f.invalid = false;
                match ch {
                    b'\r' => State::HeaderAlmostDone,
                    b'\n' => return Step::Done,
                    _ if is_name_char(ch) => State::Name,
                    b'_' => {
                        f.invalid |= !underscores;
                        State::Name
                    }
                    _ if ch <= 0x20 || ch == 0x7f || ch == b':' => return Step::Invalid,
                    _ => {
                        f.invalid = true;
                        State::Name
                    }
                }
            }
            State::Name => match ch {
                _ if is_name_char(ch) => State::Name,
                b'_' => {
                    f.invalid |= !underscores;
                    State::Name
                }
                b':' => {
                    f.name_end = p;
                    State::SpaceBeforeValue
                }
                b'\r' | b'\n' => {
                    // A line with no colon is a header with an empty value, as nginx has it.
                    f.name_end = p;
                    f.value_start = p;
                    f.value_end = p;
                    if ch == b'\n' {
                        self.state = State::Start;
                        return Step::Line;
                    }
                    State::AlmostDone
                }
                b'/' if upstream.is_some_and(|bytes| {
                    f.name_start
                        .is_some_and(|s| p - s == 4 && &bytes[s..p] == b"HTTP")
                }) =>
                {
                    State::IgnoreLine
                }
                _ if ch <= 0x20 || ch == 0x7f => return Step::Invalid,
                _ => {
                    f.invalid = true;
                    State::Name
                }
            },
            State::SpaceBeforeValue => match ch {
                b' ' => State::SpaceBeforeValue,
                b'\r' | b'\n' => {
                    f.value_start = p;
                    f.value_end = p;
                    if ch == b'\n' {
                        self.state = State::Start;
                        return Step::Line;
                    }
                    State::AlmostDone
                }
                0 => return Step::Invalid,
                _ => {
                    f.value_start = p;
                    State::Value
                }
            },
            State::Value => match ch {
                b' ' => {
                    f.value_end = p;
                    State::SpaceAfterValue
                }
                b'\r' => {
                    f.value_end = p;
                    State::AlmostDone
                }
                b'\n' => {
                    f.value_end = p;
                    self.state = State::Start;
                    return Step::Line;
                }
                0 => return Step::Invalid,
                _ => State::Value,
            },
            State::SpaceAfterValue => match ch {
                b' ' => State::SpaceAfterValue,
                b'\r' => State::AlmostDone,
                b'\n' => {
                    self.state = State::Start;
                    return Step::Line;
                }
                0 => return Step::Invalid,
                _ => State::Value,
            },
            State::IgnoreLine => match ch {
                b'\n' => State::Start,
                _ => State::IgnoreLine,
            },
            State::AlmostDone => match ch {
                b'\n' => {
                    self.state = State::Start;
                    return Step::Line;
                }
                b'\r' => State::AlmostDone,
                _ => return Step::Invalid,
            },
            State::HeaderAlmostDone => {
                if ch != b'\n' {
                    return Step::Invalid;
                }
                return Step::Done;
            }
        };
        Step::More
    }
}

/// Letters, digits and `-`: a valid header name byte (`_` depends on
/// `underscores_in_headers`).
pub(crate) fn is_name_char(ch: u8) -> bool {
    ch.is_ascii_alphanumeric() || ch == b'-'
}
