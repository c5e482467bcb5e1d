//! Properties: no input panics; a head we write reads back as itself; how bytes are
//! split across reads never changes what is parsed.

use bytes::BytesMut;
use fulcrum_http1::{
    write, BodyDecoder, Chunk, Framing, Header, Headers, Limits, RequestParser, ResponseParser,
    Version,
};
use proptest::prelude::*;

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9-]{1,20}"
}

fn value() -> impl Strategy<Value = String> {
    // Values as nginx stores them: no surrounding spaces, no CR, LF or NUL.
    "[!-~]([ -~]{0,30}[!-~])?"
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((token(), value()), 0..20).prop_map(|v| {
        // Names nginx refuses twice, and the framing ones, are left to other tests.
        v.into_iter()
            .filter(|(n, _)| {
                let l = n.to_ascii_lowercase();
                !matches!(
                    l.as_str(),
                    "host"
                        | "content-length"
                        | "transfer-encoding"
                        | "if-modified-since"
                        | "if-unmodified-since"
                        | "if-match"
                        | "if-none-match"
                        | "content-range"
                        | "if-range"
                        | "expect"
                        | "authorization"
                )
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn requests_never_panic(raw in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut p = RequestParser::new(Limits { header_buffer: 64, large_buffer: 256, ..Limits::default() });
        let mut buf = BytesMut::from(&raw[..]);
        for _ in 0..4 {
            match p.parse(&mut buf) {
                Ok(Some(h)) => { let _ = BodyDecoder::new(h.framing).decode(&mut buf, 100); }
                _ => break,
            }
        }
    }

    #[test]
    fn responses_and_bodies_never_panic(raw in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut p = ResponseParser::new(512, false);
        let mut buf = BytesMut::from(&raw[..]);
        if let Ok(Some(h)) = p.parse(&mut buf) {
            let mut d = BodyDecoder::new(h.framing);
            while let Ok(Some(Chunk::Data(_))) = d.decode(&mut buf, 64) {}
        }
        let mut d = BodyDecoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&raw[..]);
        while let Ok(Some(Chunk::Data(_))) = d.decode(&mut buf, 64) {}
    }

    #[test]
    fn a_written_request_reads_back(
        method in "[A-Z]{1,10}",
        path in "/[!-~&&[^?#%]]{0,40}",
        hs in headers(),
        split in 1usize..64,
    ) {
        prop_assume!(method != "CONNECT" && method != "TRACE");
        let mut list: Headers = hs.iter().map(|(n, v)| Header::new(n.clone(), v.clone())).collect();
        list.push("Host", "example.com");
        let mut out = BytesMut::new();
        write::request_head(&mut out, method.as_bytes(), path.as_bytes(), Version::HTTP_11, &list);
        let wire = out.clone();
        // Fed in pieces of `split` bytes.
        let mut p = RequestParser::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut head = None;
        for piece in wire.chunks(split) {
            buf.extend_from_slice(piece);
            if let Some(h) = p.parse(&mut buf).unwrap() {
                head = Some(h);
            }
        }
        let head = head.expect("complete");
        prop_assert_eq!(&head.method_name[..], method.as_bytes());
        prop_assert_eq!(&head.uri[..], path.as_bytes());
        prop_assert_eq!(head.headers, list);
        prop_assert_eq!(head.len, wire.len());
    }

    #[test]
    fn a_written_response_reads_back(code in 200u16..600, hs in headers()) {
        prop_assume!(code != 204 && code != 304);
        let list: Headers = hs.iter().map(|(n, v)| Header::new(n.clone(), v.clone())).collect();
        let line = write::status_line(code);
        let mut out = BytesMut::new();
        write::response_head(&mut out, line.trim_end().as_bytes(), &list);
        let head = ResponseParser::new(1 << 16, false).parse(&mut out).unwrap().expect("complete");
        prop_assert_eq!(head.status, code);
        prop_assert_eq!(head.headers, list);
        prop_assert!(out.is_empty());
    }

    #[test]
    fn chunked_round_trip(pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..10), split in 1usize..50) {
        let mut wire = BytesMut::new();
        for p in &pieces {
            write::chunk_head(&mut wire, p.len());
            wire.extend_from_slice(p);
            wire.extend_from_slice(write::CHUNK_END);
        }
        wire.extend_from_slice(write::LAST_CHUNK);
        let mut d = BodyDecoder::new(Framing::Chunked);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut chunks = wire.chunks(split);
        loop {
            match d.decode(&mut buf, 100).unwrap() {
                Some(Chunk::Data(b)) => body.extend_from_slice(&b),
                Some(Chunk::End) => break,
                None => buf.extend_from_slice(chunks.next().expect("more input")),
            }
        }
        prop_assert_eq!(body, pieces.concat());
        prop_assert!(buf.is_empty());
    }
}
