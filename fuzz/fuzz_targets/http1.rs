//! The HTTP/1 codec on arbitrary bytes: request heads (with small buffer limits so the
//! large-buffer path is reached), bodies after them, and upstream responses. The first
//! byte picks how the input is split across reads, which must never change the answer.
#![no_main]

use bytes::BytesMut;
use fulcrum_http1::{BodyDecoder, Chunk, Limits, RequestParser, ResponseParser};
use libfuzzer_sys::fuzz_target;

fn requests(data: &[u8], step: usize) -> Vec<String> {
    let limits = Limits {
        header_buffer: 32,
        large_buffer: 128,
        ..Limits::default()
    };
    let mut p = RequestParser::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut body: Option<BodyDecoder> = None;
    for piece in data.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            if let Some(d) = &mut body {
                match d.decode(&mut buf, 1 << 20) {
                    Ok(Some(Chunk::Data(b))) => out.push(format!("data {}", b.len())),
                    Ok(Some(Chunk::End)) => {
                        out.push("end".into());
                        body = None;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        out.push(format!("{e}"));
                        return out;
                    }
                }
                continue;
            }
            match p.parse(&mut buf) {
                Ok(Some(h)) => {
                    out.push(format!("{h:?}"));
                    body = Some(BodyDecoder::new(h.framing));
                }
                Ok(None) => break,
                Err(r) => {
                    out.push(format!("{r:?}"));
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let whole = requests(rest, rest.len().max(1));
    let split = requests(rest, usize::from(first % 16) + 1);
    // Data pieces differ with the split; heads, ends and errors must not.
    let keep = |v: Vec<String>| -> Vec<String> {
        v.into_iter().filter(|l| !l.starts_with("data")).collect()
    };
    assert_eq!(keep(whole), keep(split));

    let mut buf = BytesMut::from(rest);
    if let Ok(Some(h)) = ResponseParser::new(256, first & 1 == 1).parse(&mut buf) {
        let mut d = BodyDecoder::new(h.framing);
        while let Ok(Some(Chunk::Data(_))) = d.decode(&mut buf, 64) {}
    }
});
