//! auth_basic as nginx's module runs it: the user and password from `Authorization:
//! Basic` (ngx_http_auth_basic_user, which `$remote_user` shares), the htpasswd file read
//! for each request, its line for the user, and the password checked against the hash
//! the way ngx_crypt does: `$apr1$`, `{PLAIN}`, `{SSHA}` and `{SHA}` itself, the rest by
//! the system's crypt(3) (`$1$`, `$5$`, `$6$`, bcrypt, DES, yescrypt, ...).

use std::path::Path;

use base64::Engine as _;
use fulcrum_http1::Headers;
use md5::{Digest as _, Md5};
use sha1::Sha1;

use crate::site::Level;

/// The user and password of `Authorization: Basic`, as nginx decodes them: base64 that
/// may lack its padding, a user before the first `:` that is not empty.
pub(crate) fn basic_user(headers: &Headers) -> Option<(Vec<u8>, Vec<u8>)> {
    let v = headers.get("authorization")?;
    if v.len() < 6 || !v[..6].eq_ignore_ascii_case(b"Basic ") {
        return None;
    }
    let encoded = &v[6..];
    let encoded = &encoded[encoded.iter().take_while(|c| **c == b' ').count()..];
    let decoded = decode_base64(encoded)?;
    let colon = decoded.iter().position(|c| *c == b':')?;
    if colon == 0 {
        return None;
    }
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// ngx_decode_base64: up to the first `=`, every byte of the alphabet, not one left
/// over; what follows the `=` is not looked at.
fn decode_base64(src: &[u8]) -> Option<Vec<u8>> {
    let len = src.iter().position(|c| *c == b'=').unwrap_or(src.len());
    let body = &src[..len];
    if body.is_empty() || len % 4 == 1 {
        return None;
    }
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(body)
        .ok()
}

/// What auth_basic decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    /// 401 with `WWW-Authenticate: Basic realm="..."`.
    Challenge,
    /// 403 (no user file) or 500 (a file that cannot be read).
    Status(u16),
}

/// Checks the request's credentials against `file`, writing nginx's lines through `log`.
pub(crate) fn check(headers: &Headers, file: &Path, log: &mut dyn FnMut(Level, &str)) -> Verdict {
    let Some((user, password)) = basic_user(headers) else {
        log(
            Level::Info,
            "no user/password was provided for basic authentication",
        );
        return Verdict::Challenge;
    };
    // nginx opens and reads the file for each request (blocking, in its worker); so do
    // we: a changed file counts at once, and htpasswd files are small and cached.
    let text = match std::fs::read(file) {
        Ok(t) => t,
        Err(e) => {
            let message = format!(
                "open() \"{}\" failed ({})",
                file.display(),
                crate::handler::strerror(&e)
            );
            if e.kind() == std::io::ErrorKind::NotFound {
                log(Level::Error, &message);
                return Verdict::Status(403);
            }
            log(Level::Crit, &message);
            return Verdict::Status(500);
        }
    };
    let user_text = String::from_utf8_lossy(&user);
    let Some(hash) = entry(&text, &user) else {
        log(
            Level::Error,
            &format!(
                "user \"{user_text}\" was not found in \"{}\"",
                file.display()
            ),
        );
        return Verdict::Challenge;
    };
    if verify(&password, hash) {
        return Verdict::Pass;
    }
    // (crypt(3) answers a scheme it does not know with a failure token, which matches
    // nothing: the same line.)
    log(
        Level::Error,
        &format!("user \"{user_text}\": password mismatch"),
    );
    Verdict::Challenge
}

/// The hash of `user` in an htpasswd file: `user:hash[:comment]` lines, `#` comments,
/// the first line of the user (ngx_http_auth_basic_handler's scanner).
fn entry<'a>(text: &'a [u8], user: &[u8]) -> Option<&'a [u8]> {
    for line in text.split(|c| *c == b'\n' || *c == b'\r') {
        if line.first() == Some(&b'#') {
            continue;
        }
        let Some(colon) = line.iter().position(|c| *c == b':') else {
            continue;
        };
        if &line[..colon] != user {
            continue;
        }
        let rest = &line[colon + 1..];
        let end = rest.iter().position(|c| *c == b':').unwrap_or(rest.len());
        return Some(&rest[..end]);
    }
    None
}

/// Whether `password` matches `hash`, as nginx's ngx_crypt: `{PLAIN}`, `{SHA}`,
/// `{SSHA}` and `$apr1$` computed here, every other hash by the system's crypt(3)
/// (libxcrypt: MD5, SHA-256/512, bcrypt, DES, yescrypt, ...), as nginx leaves them to it.
fn verify(password: &[u8], hash: &[u8]) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(rest) = hash.strip_prefix(b"{PLAIN}") {
        return rest == password;
    }
    if let Some(rest) = hash.strip_prefix(b"{SSHA}") {
        let Ok(decoded) = b64.decode(rest) else {
            return false;
        };
        if decoded.len() < 20 {
            return false;
        }
        let salt = &decoded[20..];
        let mut h = Sha1::new();
        h.update(password);
        h.update(salt);
        return h.finalize()[..] == decoded[..20];
    }
    if let Some(rest) = hash.strip_prefix(b"{SHA}") {
        let digest = Sha1::digest(password);
        return b64.encode(digest).as_bytes() == rest;
    }
    if let Some(rest) = hash.strip_prefix(b"$apr1$") {
        return md5_crypt(password, salt_of(rest), b"$apr1$").as_bytes() == hash;
    }
    fulcrum_sys::crypt(password, hash).is_some_and(|h| h == hash)
}

/// The salt of an MD5-crypt hash: up to 8 bytes, until `$`.
fn salt_of(rest: &[u8]) -> &[u8] {
    let end = rest
        .iter()
        .take(8)
        .position(|c| *c == b'$')
        .unwrap_or(rest.len().min(8));
    &rest[..end]
}

/// Poul-Henning Kamp's MD5-crypt, with its `$1$` magic or Apache's `$apr1$`.
fn md5_crypt(password: &[u8], salt: &[u8], magic: &[u8]) -> String {
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let alt = {
        let mut h = Md5::new();
        h.update(password);
        h.update(salt);
        h.update(password);
        h.finalize()
    };
    let mut h = Md5::new();
    h.update(password);
    h.update(magic);
    h.update(salt);
    for chunk in password.chunks(16) {
        h.update(&alt[..chunk.len()]);
    }
    let mut n = password.len();
    while n > 0 {
        if n & 1 == 1 {
            h.update([0u8]);
        } else {
            h.update(&password[..1]);
        }
        n >>= 1;
    }
    let mut fin = h.finalize();
    for i in 0..1000 {
        let mut h = Md5::new();
        if i & 1 == 1 {
            h.update(password);
        } else {
            h.update(fin);
        }
        if i % 3 != 0 {
            h.update(salt);
        }
        if i % 7 != 0 {
            h.update(password);
        }
        if i & 1 == 1 {
            h.update(fin);
        } else {
            h.update(password);
        }
        fin = h.finalize();
    }
    let mut out = Vec::with_capacity(magic.len() + salt.len() + 23);
    out.extend_from_slice(magic);
    out.extend_from_slice(salt);
    out.push(b'$');
    let mut put = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize]);
            v >>= 6;
        }
    };
    let b = |i: usize| u32::from(fin[i]);
    put(b(0) << 16 | b(6) << 8 | b(12), 4);
    put(b(1) << 16 | b(7) << 8 | b(13), 4);
    put(b(2) << 16 | b(8) << 8 | b(14), 4);
    put(b(3) << 16 | b(9) << 8 | b(15), 4);
    put(b(4) << 16 | b(10) << 8 | b(5), 4);
    put(b(11), 2);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(v: &str) -> Headers {
        let mut h = Headers::new();
        h.push("Authorization", v.to_string());
        h
    }

    #[test]
    fn credentials_as_nginx_decodes_them() {
        // alice:secret
        let ok = Some((b"alice".to_vec(), b"secret".to_vec()));
        assert_eq!(basic_user(&auth("Basic YWxpY2U6c2VjcmV0")), ok);
        assert_eq!(basic_user(&auth("basic   YWxpY2U6c2VjcmV0")), ok);
        // No padding needed; what follows `=` is not read.
        assert_eq!(
            basic_user(&auth("Basic YTpi")),
            Some((b"a".to_vec(), b"b".to_vec()))
        );
        assert_eq!(
            basic_user(&auth("Basic YTpiYw==junk")),
            Some((b"a".to_vec(), b"bc".to_vec()))
        );
        for bad in [
            "Bearer x",
            "Basic",
            "Basic ",
            "Basic OnNlY3JldA==",
            "Basic YWxpY2U=",
            "Basic !!!!",
        ] {
            assert_eq!(basic_user(&auth(bad)), None, "{bad}");
        }
    }

    #[test]
    fn hashes_as_openssl_and_htpasswd_make_them() {
        // openssl passwd -apr1 -salt abcdefgh secret; -1 -salt xyz; -5 and -6 -salt saltsalt
        for hash in [
            "$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/",
            "$1$xyz$Qia9Wq6FxQkYcwNWMk/RM0",
            "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA",
            "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
            // bcrypt, DES and yescrypt, as Python's crypt module (libcrypt) made them.
            "$2y$05$BROeI9Bdxv2wF/OX2Fc6BehEHhwrhkemu0pN.e0mUZ7YAlCbNI0VO",
            "abNANd1rDfiNc",
            "$y$j9T$abcdefghijklmnopqrstu.$7uryFExhLbAhrpK1WytVzeNObCUVaK3VoKccP3fJEIB",
            "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
            "{PLAIN}secret",
            "{SSHA}+rvziNkZ1S+q3I9Y4L7TlBR47kZOYUNsMTIzNA==",
        ] {
            assert!(verify(b"secret", hash.as_bytes()), "{hash}");
            assert!(!verify(b"Secret", hash.as_bytes()), "{hash}");
        }
        // A scheme the system does not know matches nothing.
        assert!(!verify(b"secret", b"$unknown$abc"));
        assert!(!verify(b"", b""));
    }

    #[test]
    fn the_users_line_in_an_htpasswd_file() {
        let f = b"# admins\nbob:{PLAIN}b:comment\r\nalice:{PLAIN}a\nalice:{PLAIN}second\n";
        assert_eq!(entry(f, b"alice"), Some(&b"{PLAIN}a"[..]));
        assert_eq!(entry(f, b"bob"), Some(&b"{PLAIN}b"[..]));
        assert_eq!(entry(f, b"# admins"), None);
        assert_eq!(entry(f, b"carol"), None);
    }
}
