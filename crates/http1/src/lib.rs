//! HTTP/1.x as nginx 1.22 speaks it, without IO: the proxy's connections feed it bytes
//! and get heads and body pieces back, and it writes heads with their names in the case
//! they came in.
//!
//! - [`RequestParser`]: request heads with nginx's acceptance rules
//!   (`ngx_http_parse_request_line`, `ngx_http_parse_header_line` and the checks of
//!   `ngx_http_request.c`), including its buffer limits (`client_header_buffer_size`,
//!   `large_client_header_buffers`) and the status it answers a refused head with.
//! - [`ResponseParser`]: an upstream's response head, as the proxy module reads it.
//! - [`BodyDecoder`]: Content-Length and chunked framing (`ngx_http_parse_chunked`),
//!   handing out body pieces as slices of the connection's buffer, never copies.
//! - [`write`]: request and response heads, and chunk framing, byte for byte.
//!
//! Why not httparse: its rules are not nginx's, and the differences are the ones a
//! front end must not have. It refuses bare LF in places nginx accepts it, accepts a
//! lowercase method and obs-fold lines that nginx refuses, caps the number of headers
//! (nginx caps bytes), and knows nothing of HTTP/0.9 or of which duplicate headers
//! nginx refuses. The state machines here follow nginx's, state for state, and the
//! differential test in `crates/proxy/tests/http1_table.rs` holds them to the real
//! nginx.
//!
//! Where this departs from nginx, on purpose:
//! - nginx marks URIs that need normalizing as it reads them; here the bytes are only
//!   checked, and the proxy normalizes every URI afterwards (the result is the same).
//! - An absolute-form target with a query and no path (`http://h?x`) has the URI `/?x`
//!   where nginx keeps `?x` for `$request_uri`.

mod body;
mod field;
mod head;
mod request;
mod response;
pub mod write;

pub use body::{BodyDecoder, BodyError, Chunk};
pub use head::{Framing, Header, Headers, Method, Version};
pub use request::{valid_host, Limits, Reject, RequestHead, RequestParser};
pub use response::{ResponseError, ResponseHead, ResponseParser};
