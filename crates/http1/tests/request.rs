//! Request heads: what nginx 1.22 accepts and refuses (each case checked against the
//! real nginx; `crates/proxy/tests/http1_table.rs` keeps checking them), and that the
//! parser's answer does not depend on how the bytes arrive.

use bytes::BytesMut;
use fulcrum_http1::{Framing, Limits, Method, RequestHead, RequestParser, Version};

fn parse_with(limits: Limits, raw: &[u8]) -> Result<Option<RequestHead>, u16> {
    let mut p = RequestParser::new(limits);
    let mut buf = BytesMut::from(raw);
    p.parse(&mut buf).map_err(|r| r.status)
}

fn parse(raw: &[u8]) -> Result<RequestHead, u16> {
    match parse_with(Limits::default(), raw) {
        Ok(Some(h)) => Ok(h),
        Ok(None) => panic!("incomplete: {:?}", String::from_utf8_lossy(raw)),
        Err(s) => Err(s),
    }
}

/// (request, nginx's status: 0 = accepted and proxied)
const TABLE: &[(&[u8], u16)] = &[
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 0),
    (b"GET /\r\n", 0),
    (b"POST /\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nFoo : b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nFoo: b\r\n c\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: a\nFoo: b\n\n", 0),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.0\r\n\r\n", 0),
    (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 405),
    (b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n", 405),
    (b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n", 0),
    (b"GET http://b.example/x?y HTTP/1.1\r\nHost: a\r\n\r\n", 0),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nIf-Modified-Since: x\r\nIf-Modified-Since: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: x\r\nAuthorization: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: x\r\nExpect: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nIf-Range: x\r\nIf-Range: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nIf-Match: x\r\nif-match: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\nUser-Agent: y\r\n\r\n", 0),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX_Y: x\r\nX.Z: y\r\n\r\n", 0),
    (b"GET / HTTP/1.1\r\nHost: a\r\nFooBar\r\n\r\n", 0),
    (b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 0),
    (b"GET / HTTP/1.1\r\nHost: a..b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", 400),
    (b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 0),
    (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET  /   HTTP/1.1\r\nHost: a\r\n\r\n", 0),
    (b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 0),
    (b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 0),
    (b"GET / HTTP/01.1\r\nHost: a\r\n\r\n", 400),
    (b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
];

#[test]
fn nginx_verdicts() {
    for (raw, want) in TABLE {
        let got = match parse(raw) {
            Ok(_) => 0,
            Err(s) => s,
        };
        assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn fields_keep_case_order_and_trimmed_values() {
    let h = parse(b"GET /p?q HTTP/1.1\r\nHost: a\r\nX-Mixed-Case:  v 1 \t\r\nx-lower: b\r\nFooBar\r\nX_Dropped: 1\r\n\r\n").unwrap();
    assert_eq!(h.method, Method::Get);
    assert_eq!(&h.uri[..], b"/p?q");
    assert_eq!(h.version, Version::HTTP_11);
    let lines: Vec<String> = h.headers.iter().map(|x| format!("{x:?}")).collect();
    assert_eq!(
        lines,
        ["Host: a", "X-Mixed-Case: v 1 \t", "x-lower: b", "FooBar: "]
    );
    assert!(h.keep_alive);
    assert_eq!(h.framing, Framing::Empty);
}

#[test]
fn absolute_form_names_the_host() {
    let h = parse(b"GET http://B.example:99/x?y HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(h.host.as_deref(), Some(&b"B.example:99"[..]));
    assert_eq!(&h.uri[..], b"/x?y");
    assert_eq!(h.host(), Some(&b"B.example:99"[..]));
    let h = parse(b"GET http://b.example HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(&h.uri[..], b"/");
    let h = parse(b"GET http://[::1]:8080/ HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(h.host.as_deref(), Some(&b"[::1]:8080"[..]));
}

#[test]
fn framing_keep_alive_and_expect() {
    let h = parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-Continue\r\nConnection: Keep-Alive, Close\r\n\r\n").unwrap();
    assert_eq!(h.framing, Framing::Length(5));
    assert!(h.expect_continue);
    assert!(!h.keep_alive);
    let h =
        parse(b"POST / HTTP/1.0\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    assert_eq!(h.framing, Framing::Empty);
    assert!(h.keep_alive);
    let h = parse(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").unwrap();
    assert!(!h.expect_continue, "HTTP/1.0 gets no 100 Continue");
    assert!(!h.keep_alive);
    let h = parse(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
    assert_eq!(h.framing, Framing::Chunked);
}

#[test]
fn http09_refusal_is_marked() {
    let mut p = RequestParser::new(Limits::default());
    let r = p
        .parse(&mut BytesMut::from(&b"POST /\r\n"[..]))
        .unwrap_err();
    assert!(r.http09);
    let h = parse(b"GET /x\r\n").unwrap();
    assert_eq!(h.version, Version::HTTP_09);
    assert!(!h.keep_alive);
}

#[test]
fn pipelined_heads_come_one_at_a_time() {
    let mut p = RequestParser::new(Limits::default());
    let mut buf = BytesMut::from(
        &b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: b\r\n\r\nGET"[..],
    );
    let one = p.parse(&mut buf).unwrap().unwrap();
    assert_eq!(&one.uri[..], b"/1");
    let two = p.parse(&mut buf).unwrap().unwrap();
    assert_eq!(&two.uri[..], b"/2");
    assert_eq!(two.headers.get("host").map(|v| &v[..]), Some(&b"b"[..]));
    assert!(p.parse(&mut buf).unwrap().is_none());
    assert!(p.in_progress());
    assert_eq!(&buf[..], b"GET");
}

/// A request line `n` bytes long, CRLF included.
fn line_of(n: usize) -> Vec<u8> {
    let mut v = b"GET /".to_vec();
    v.resize(n - 11, b'a');
    v.extend_from_slice(b" HTTP/1.1\r\n");
    assert_eq!(v.len(), n);
    v
}

#[test]
fn large_client_header_buffers_as_nginx() {
    let l = Limits::default();
    // The request line must fit one large buffer (8k): 414 past it.
    let mut raw = line_of(8192);
    raw.extend_from_slice(b"Host: a\r\n\r\n");
    assert!(parse_with(l, &raw).is_ok());
    let mut raw = line_of(8193);
    raw.extend_from_slice(b"Host: a\r\n\r\n");
    assert_eq!(parse_with(l, &raw).unwrap_err(), 414);
    // A header line likewise: 494.
    let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
    raw.resize(raw.len() + 8200, b'v');
    raw.extend_from_slice(b"\r\n\r\n");
    assert_eq!(parse_with(l, &raw).unwrap_err(), 494);
    // Four large buffers at most: five header lines of 6000 bytes do not fit.
    let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..5 {
        raw.extend_from_slice(format!("X-{i}: ").as_bytes());
        raw.resize(raw.len() + 6000, b'v');
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"\r\n");
    assert_eq!(parse_with(l, &raw).unwrap_err(), 494);
    // Many small headers are fine while the bytes fit: nginx has no count limit.
    let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..500 {
        raw.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    assert_eq!(parse(&raw).unwrap().headers.len(), 501);
}

#[test]
fn a_byte_at_a_time_is_the_same_as_all_at_once() {
    for (raw, _) in TABLE {
        let whole = parse_with(Limits::default(), raw).map(|h| h.map(|h| format!("{h:?}")));
        let mut p = RequestParser::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut got = Ok(None);
        for &b in raw.iter() {
            buf.extend_from_slice(&[b]);
            got = p
                .parse(&mut buf)
                .map_err(|r| r.status)
                .map(|h| h.map(|h| format!("{h:?}")));
            if !matches!(got, Ok(None)) {
                break;
            }
        }
        assert_eq!(got, whole, "{:?}", String::from_utf8_lossy(raw));
    }
}
