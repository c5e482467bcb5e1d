//! Body framing: Content-Length, chunked (`ngx_http_parse_chunked` of nginx 1.22, bare LF
//! line ends accepted, chunk extensions and trailers read and dropped as nginx drops
//! them), or until the connection closes. Pieces are split off the connection's buffer,
//! never copied.

use bytes::{Bytes, BytesMut};

use crate::head::Framing;

/// What the decoder gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// A piece of the body.
    Data(Bytes),
    /// The body is complete; what follows in the buffer is the next message.
    End,
}

/// A body nginx would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Bad chunked framing ("client sent invalid chunked body").
    Invalid,
    /// The connection closed before the framing said the body was complete.
    Truncated,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BodyError::Invalid => "invalid chunked body",
            BodyError::Truncated => "prematurely closed connection",
        })
    }
}

impl std::error::Error for BodyError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ChunkStart,
    ChunkSize,
    ChunkExtension,
    ChunkExtensionAlmostDone,
    ChunkData,
    AfterData,
    AfterDataAlmostDone,
    LastChunkExtension,
    LastChunkExtensionAlmostDone,
    Trailer,
    TrailerAlmostDone,
    TrailerHeader,
    TrailerHeaderAlmostDone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Length(u64),
    Chunked { state: State, size: u64 },
    Close,
    Done,
}

/// Takes a body off a connection's buffer, piece by piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyDecoder {
    kind: Kind,
}

/// Chunk sizes past this are refused (nginx: NGX_MAX_OFF_T_VALUE / 16).
const MAX_SIZE: u64 = (i64::MAX as u64) / 16;

impl BodyDecoder {
    pub fn new(framing: Framing) -> BodyDecoder {
        let kind = match framing {
            Framing::Empty | Framing::Length(0) => Kind::Done,
            Framing::Length(n) => Kind::Length(n),
            Framing::Chunked => Kind::Chunked {
                state: State::ChunkStart,
                size: 0,
            },
            Framing::Close => Kind::Close,
        };
        BodyDecoder { kind }
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        self.kind == Kind::Done
    }

    /// Bytes of body still to come, where the framing says (Content-Length).
    pub fn remaining(&self) -> Option<u64> {
        match self.kind {
            Kind::Length(n) => Some(n),
            Kind::Done => Some(0),
            _ => None,
        }
    }

    /// The next piece from `buf`, at most `max` bytes; `Ok(None)` when `buf` holds no
    /// more of the body yet.
    pub fn decode(&mut self, buf: &mut BytesMut, max: usize) -> Result<Option<Chunk>, BodyError> {
        let max = max.max(1);
        match &mut self.kind {
            Kind::Done => Ok(Some(Chunk::End)),
            Kind::Length(n) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = (*n).min(buf.len() as u64).min(max as u64) as usize;
                *n -= take as u64;
                if *n == 0 {
                    self.kind = Kind::Done;
                }
                Ok(Some(Chunk::Data(buf.split_to(take).freeze())))
            }
            Kind::Close => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = buf.len().min(max);
                Ok(Some(Chunk::Data(buf.split_to(take).freeze())))
            }
            Kind::Chunked { state, size } => {
                let (data, done) = chunked(state, size, buf, max)?;
                if done {
                    self.kind = Kind::Done;
                    return Ok(Some(Chunk::End));
                }
                Ok(data.map(Chunk::Data))
            }
        }
    }

    /// The connection closed: the end of a body read until close, else an error.
    pub fn eof(&mut self) -> Result<Chunk, BodyError> {
        match self.kind {
            Kind::Close | Kind::Done => {
                self.kind = Kind::Done;
                Ok(Chunk::End)
            }
            _ => Err(BodyError::Truncated),
        }
    }
}

/// Runs the chunked machine over `buf`: a data piece (split off), or the end.
fn chunked(
    state: &mut State,
    size: &mut u64,
    buf: &mut BytesMut,
    max: usize,
) -> Result<(Option<Bytes>, bool), BodyError> {
    let mut used = 0;
    loop {
        if *state == State::ChunkData {
            if *size == 0 {
                *state = State::AfterData;
                continue;
            }
            let _ = buf.split_to(used);
            if buf.is_empty() {
                return Ok((None, false));
            }
            let take = (*size).min(buf.len() as u64).min(max as u64) as usize;
            *size -= take as u64;
            if *size == 0 {
                *state = State::AfterData;
            }
            return Ok((Some(buf.split_to(take).freeze()), false));
        }
        let Some(&ch) = buf.get(used) else {
            let _ = buf.split_to(used);
            return Ok((None, false));
        };
        used += 1;
        *state = match *state {
            State::ChunkStart => {
                *size = u64::from(hex(ch).ok_or(BodyError::Invalid)?);
                State::ChunkSize
            }
            State::ChunkSize => {
                if *size > MAX_SIZE {
                    return Err(BodyError::Invalid);
                }
                if let Some(d) = hex(ch) {
                    *size = *size * 16 + u64::from(d);
                    State::ChunkSize
                } else if *size == 0 {
                    match ch {
                        b'\r' => State::LastChunkExtensionAlmostDone,
                        b'\n' => State::Trailer,
                        b';' | b' ' | b'\t' => State::LastChunkExtension,
                        _ => return Err(BodyError::Invalid),
                    }
                } else {
                    match ch {
                        b'\r' => State::ChunkExtensionAlmostDone,
                        b'\n' => State::ChunkData,
                        b';' | b' ' | b'\t' => State::ChunkExtension,
                        _ => return Err(BodyError::Invalid),
                    }
                }
            }
            State::ChunkExtension => match ch {
                b'\r' => State::ChunkExtensionAlmostDone,
                b'\n' => State::ChunkData,
                _ => State::ChunkExtension,
            },
            State::ChunkExtensionAlmostDone => {
                if ch != b'\n' {
                    return Err(BodyError::Invalid);
                }
                State::ChunkData
            }
            State::AfterData => match ch {
                b'\r' => State::AfterDataAlmostDone,
                b'\n' => State::ChunkStart,
                _ => return Err(BodyError::Invalid),
            },
            State::AfterDataAlmostDone => {
                if ch != b'\n' {
                    return Err(BodyError::Invalid);
                }
                State::ChunkStart
            }
            State::LastChunkExtension => match ch {
                b'\r' => State::LastChunkExtensionAlmostDone,
                b'\n' => State::Trailer,
                _ => State::LastChunkExtension,
            },
            State::LastChunkExtensionAlmostDone => {
                if ch != b'\n' {
                    return Err(BodyError::Invalid);
                }
                State::Trailer
            }
            State::Trailer => match ch {
                b'\r' => State::TrailerAlmostDone,
                b'\n' => {
                    let _ = buf.split_to(used);
                    return Ok((None, true));
                }
                _ => State::TrailerHeader,
            },
            State::TrailerAlmostDone => {
                if ch != b'\n' {
                    return Err(BodyError::Invalid);
                }
                let _ = buf.split_to(used);
                return Ok((None, true));
            }
            State::TrailerHeader => match ch {
                b'\r' => State::TrailerHeaderAlmostDone,
                b'\n' => State::Trailer,
                _ => State::TrailerHeader,
            },
            State::TrailerHeaderAlmostDone => {
                if ch != b'\n' {
                    return Err(BodyError::Invalid);
                }
                State::Trailer
            }
            // Taken care of before a byte is read.
            State::ChunkData => State::ChunkData,
        };
    }
}

fn hex(ch: u8) -> Option<u8> {
    match ch {
        b'0'..=b'9' => Some(ch - b'0'),
        b'a'..=b'f' => Some(ch - b'a' + 10),
        b'A'..=b'F' => Some(ch - b'A' + 10),
        _ => None,
    }
}
