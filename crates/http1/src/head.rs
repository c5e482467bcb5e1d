//! What a parsed head holds: the version, the method, and header lines with their names
//! in the case they were sent, in the order they were sent.

use bytes::Bytes;

/// An HTTP version as nginx keeps it: `major * 1000 + minor` (HTTP/0.9 is 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u32);

impl Version {
    pub const HTTP_09: Version = Version(9);
    pub const HTTP_10: Version = Version(1000);
    pub const HTTP_11: Version = Version(1001);

    pub fn major(self) -> u32 {
        self.0 / 1000
    }

    pub fn minor(self) -> u32 {
        self.0 % 1000
    }

    /// `HTTP/1.1`, as `$server_protocol` and a request line write it.
    pub fn as_str(self) -> std::borrow::Cow<'static, str> {
        match self {
            Version::HTTP_09 => "HTTP/0.9".into(),
            Version::HTTP_10 => "HTTP/1.0".into(),
            Version::HTTP_11 => "HTTP/1.1".into(),
            v => format!("HTTP/{}.{}", v.major(), v.minor()).into(),
        }
    }
}

/// The methods nginx knows by name; any other token of `A-Z`, `_` and `-` is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Mkcol,
    Copy,
    Move,
    Options,
    Propfind,
    Proppatch,
    Lock,
    Unlock,
    Patch,
    Trace,
    Connect,
    Other,
}

impl Method {
    /// nginx's method table (ngx_http_parse_request_line).
    pub fn from_bytes(name: &[u8]) -> Method {
        match name {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"MKCOL" => Method::Mkcol,
            b"COPY" => Method::Copy,
            b"MOVE" => Method::Move,
            b"OPTIONS" => Method::Options,
            b"PROPFIND" => Method::Propfind,
            b"PROPPATCH" => Method::Proppatch,
            b"LOCK" => Method::Lock,
            b"UNLOCK" => Method::Unlock,
            b"PATCH" => Method::Patch,
            b"TRACE" => Method::Trace,
            b"CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }
}

/// One header line: its name as sent (case kept) and its value with the spaces and tabs
/// around it removed, as nginx stores it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Header {
    pub name: Bytes,
    pub value: Bytes,
}

impl Header {
    pub fn new(name: impl Into<Bytes>, value: impl Into<Bytes>) -> Header {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }

    /// Whether the name is `name`, ignoring ASCII case.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The value as text, if it is UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            String::from_utf8_lossy(&self.name),
            String::from_utf8_lossy(&self.value)
        )
    }
}

/// Header lines in their order, names in their case. Lookups ignore case; a list of a
/// few dozen lines is searched faster than it would be hashed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    list: Vec<Header>,
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.list).finish()
    }
}

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    pub fn with_capacity(n: usize) -> Headers {
        Headers {
            list: Vec::with_capacity(n),
        }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.list.iter().find(|h| h.is(name)).map(|h| &h.value)
    }

    /// The first value of `name` as text.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Bytes> + 'a {
        self.list
            .iter()
            .filter(move |h| h.is(name))
            .map(|h| &h.value)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.list.iter().any(|h| h.is(name))
    }

    pub fn push(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.list.push(Header::new(name, value));
    }

    /// Replaces every line of `name` by one, where the first stood (or at the end).
    pub fn set(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        let h = Header::new(name, value);
        match self
            .list
            .iter()
            .position(|x| x.name.eq_ignore_ascii_case(&h.name))
        {
            Some(i) => {
                let name = h.name.clone();
                self.list[i] = h;
                let mut j = i + 1;
                while j < self.list.len() {
                    if self.list[j].name.eq_ignore_ascii_case(&name) {
                        self.list.remove(j);
                    } else {
                        j += 1;
                    }
                }
            }
            None => self.list.push(h),
        }
    }

    /// Gives the first line of `name` this value (its name kept as written) and drops the
    /// others; appends `name: value` when there is none.
    pub fn set_value(&mut self, name: &str, value: impl Into<Bytes>) {
        match self.list.iter().position(|x| x.is(name)) {
            Some(i) => {
                let kept = Header::new(self.list[i].name.clone(), value);
                self.remove(name);
                self.list.insert(i, kept);
            }
            None => self.push(name.to_string(), value),
        }
    }

    /// Removes every line of `name`; how many there were.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.list.len();
        self.list.retain(|h| !h.is(name));
        before - self.list.len()
    }

    pub fn retain(&mut self, keep: impl FnMut(&Header) -> bool) {
        self.list.retain(keep);
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.list.iter()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

impl FromIterator<Header> for Headers {
    fn from_iter<T: IntoIterator<Item = Header>>(iter: T) -> Self {
        Headers {
            list: iter.into_iter().collect(),
        }
    }
}

/// How a message's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length: N`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// nginx's `ngx_strcasestrn`: whether `needle` occurs in `hay`, ignoring ASCII case.
pub(crate) fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// nginx's `ngx_atoof`: decimal digits only, no sign or space, no overflow.
pub(crate) fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &c in v {
        if !c.is_ascii_digit() {
            return None;
        }
        // off_t's limit, as nginx's NGX_MAX_OFF_T_VALUE.
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        if n > i64::MAX as u64 {
            return None;
        }
    }
    Some(n)
}
