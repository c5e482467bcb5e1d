//! Body framing and upstream response heads.

use bytes::{Bytes, BytesMut};
use fulcrum_http1::{BodyDecoder, BodyError, Chunk, Framing, ResponseError, ResponseParser};

/// The whole body from `raw` fed in pieces of `step` bytes; what is left after it.
fn decode(framing: Framing, raw: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), BodyError> {
    let mut d = BodyDecoder::new(framing);
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut fed = 0;
    loop {
        match d.decode(&mut buf, 7)? {
            Some(Chunk::Data(b)) => body.extend_from_slice(&b),
            Some(Chunk::End) => {
                buf.extend_from_slice(&raw[fed..]);
                return Ok((body, buf.to_vec()));
            }
            None if fed < raw.len() => {
                let n = step.min(raw.len() - fed);
                buf.extend_from_slice(&raw[fed..fed + n]);
                fed += n;
            }
            None => match d.eof()? {
                Chunk::End => return Ok((body, buf.to_vec())),
                Chunk::Data(_) => unreachable!(),
            },
        }
    }
}

#[test]
fn chunked_as_nginx_reads_it() {
    type Case = (&'static [u8], Result<&'static [u8], BodyError>);
    let cases: &[Case] = &[
        (b"3\r\nabc\r\n0\r\n\r\nNEXT", Ok(b"abc")),
        (b"3\nabc\n0\n\nNEXT", Ok(b"abc")),
        (
            b"3;ext=1\r\nabc\r\n0;x\r\nTrailer: v\r\n\r\nNEXT",
            Ok(b"abc"),
        ),
        (b"A \r\n0123456789\r\n0\r\n\r\nNEXT", Ok(b"0123456789")),
        (b"3\r\nabcd\r\n0\r\n\r\n", Err(BodyError::Invalid)),
        (b"x\r\n", Err(BodyError::Invalid)),
        (b"-1\r\n", Err(BodyError::Invalid)),
        (b"fffffffffffffffff\r\n", Err(BodyError::Invalid)),
        (b"3\r\nab", Err(BodyError::Truncated)),
    ];
    for (raw, want) in cases {
        for step in [1, 2, 5, 1000] {
            let got = decode(Framing::Chunked, raw, step);
            match want {
                Ok(body) => {
                    let (b, rest) = got.unwrap_or_else(|e| panic!("{e} {raw:?}"));
                    assert_eq!(&b[..], *body, "{raw:?}");
                    assert_eq!(&rest[..], b"NEXT", "{raw:?}");
                }
                Err(e) => assert_eq!(got.unwrap_err(), *e, "{raw:?} step {step}"),
            }
        }
    }
}

#[test]
fn length_and_close() {
    let (b, rest) = decode(Framing::Length(5), b"helloNEXT", 3).unwrap();
    assert_eq!((&b[..], &rest[..]), (&b"hello"[..], &b"NEXT"[..]));
    assert_eq!(
        decode(Framing::Length(5), b"hel", 3).unwrap_err(),
        BodyError::Truncated
    );
    let (b, _) = decode(Framing::Close, b"all of it", 4).unwrap();
    assert_eq!(&b[..], b"all of it");
    let (b, rest) = decode(Framing::Empty, b"NEXT", 4).unwrap();
    assert!(b.is_empty());
    assert_eq!(&rest[..], b"NEXT");
}

#[test]
fn data_pieces_are_slices_of_the_buffer() {
    let mut buf = BytesMut::from(&b"5\r\nhello\r\n0\r\n\r\n"[..]);
    let start = buf.as_ptr() as usize;
    let mut d = BodyDecoder::new(Framing::Chunked);
    let Some(Chunk::Data(b)) = d.decode(&mut buf, 1 << 20).unwrap() else {
        panic!("data expected")
    };
    assert_eq!(b.as_ptr() as usize, start + 3, "no copy");
}

fn response(raw: &[u8], head: bool) -> Result<fulcrum_http1::ResponseHead, ResponseError> {
    let mut p = ResponseParser::new(4096, head);
    let mut buf = BytesMut::from(raw);
    Ok(p.parse(&mut buf)?.expect("complete"))
}

#[test]
fn response_heads() {
    let r = response(
        b"HTTP/1.1 200 Fine Thanks\r\nX-Port: 1\r\nx_under: 2\r\nContent-Length: 3\r\n\r\nabc",
        false,
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(&r.status_line[..], b"200 Fine Thanks");
    assert_eq!(r.framing, Framing::Length(3));
    assert!(r.keep_alive);
    let names: Vec<Bytes> = r.headers.iter().map(|h| h.name.clone()).collect();
    assert_eq!(names, ["X-Port", "x_under", "Content-Length"]);

    let r = response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(
        r.framing,
        Framing::Chunked,
        "chunked wins, as in nginx 1.22"
    );
    let r = response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true).unwrap();
    assert_eq!(r.framing, Framing::Empty, "HEAD has no body");
    let r = response(
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(r.framing, Framing::Empty);
    let r = response(b"HTTP/1.0 200 OK\r\n\r\n", false).unwrap();
    assert_eq!(r.framing, Framing::Close);
    assert!(!r.keep_alive);
    let r = response(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        false,
    )
    .unwrap();
    assert!(!r.keep_alive);
    let r = response(b"HTTP/1.1 404\nServer: x\n\n", false).unwrap();
    assert_eq!(&r.status_line[..], b"404");
    let r = response(b"HTTP/1.1 200 OK\r\nHTTP/1.1 200 OK\r\nA: b\r\n\r\n", false).unwrap();
    assert_eq!(r.headers.len(), 1, "IIS's repeated status line is skipped");
    let r = response(b"hello world", false).unwrap();
    assert!(r.http09);
    assert_eq!(r.framing, Framing::Close);
    assert_eq!(
        response(b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n", false).unwrap_err(),
        ResponseError::Invalid
    );
    let mut big = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
    big.resize(5000, b'v');
    let mut p = ResponseParser::new(4096, false);
    assert_eq!(
        p.parse(&mut BytesMut::from(&big[..])).unwrap_err(),
        ResponseError::TooBig
    );
}
