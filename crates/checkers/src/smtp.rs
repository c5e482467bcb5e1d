//! SMTP_CHECK, as keepalived's check_smtp: connect, expect the 220 greeting, say HELO (with
//! `helo_name`, keepalived's default otherwise), expect 250, QUIT. Every host of the
//! checker must pass.

use fulcrum_health::Outcome;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::tcp::{connect, connect_failure};
use crate::Target;

/// keepalived's HELO name when the configuration gives none.
pub const DEFAULT_HELO: &str = "smtpchecker.keepalived.org";

/// Longest reply line read (a server that never ends its line cannot grow our memory).
const MAX_LINE: usize = 4096;

/// Reads one SMTP reply (continuation lines `250-...` up to the final `250 ...`) and
/// returns its code.
async fn reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<u16, String> {
    loop {
        let mut line = String::new();
        let n = AsyncReadExt::take(&mut *r, MAX_LINE as u64)
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        let code: u16 = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("not an SMTP reply: {:?}", line.trim_end()))?;
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(code);
        }
    }
}

async fn one(target: &Target, helo: &str) -> Result<(), String> {
    let stream = connect(target)
        .await
        .map_err(|e| connect_failure(target, &e))?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let to = target.connect;
    match reply(&mut read).await {
        Ok(220) => {}
        Ok(code) => return Err(format!("SMTP greeting {code} from {to}, expected 220")),
        Err(e) => return Err(format!("SMTP greeting from {to}: {e}")),
    }
    write
        .write_all(format!("HELO {helo}\r\n").as_bytes())
        .await
        .map_err(|e| format!("SMTP to {to}: {e}"))?;
    match reply(&mut read).await {
        Ok(250) => {}
        Ok(code) => return Err(format!("SMTP HELO answered {code} by {to}, expected 250")),
        Err(e) => return Err(format!("SMTP HELO to {to}: {e}")),
    }
    let _ = write.write_all(b"QUIT\r\n").await;
    Ok(())
}

/// Runs the check against every host in turn.
pub async fn check_smtp(targets: &[Target], helo: Option<&str>) -> Outcome {
    let helo = helo.unwrap_or(DEFAULT_HELO);
    for t in targets {
        if let Err(e) = one(t, helo).await {
            return Outcome::Failure(e);
        }
    }
    Outcome::Success { weight_delta: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn server(greeting: &'static str, helo_reply: &'static str) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let _ = s.write_all(greeting.as_bytes()).await;
                    let mut buf = [0u8; 256];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if buf[..n].starts_with(b"HELO ") {
                        let _ = s.write_all(helo_reply.as_bytes()).await;
                    }
                    let _ = s.read(&mut buf).await;
                });
            }
        });
        addr
    }

    fn reason(o: Outcome) -> String {
        match o {
            Outcome::Failure(r) => r,
            Outcome::Success { .. } => "success".into(),
        }
    }

    #[tokio::test]
    async fn greeting_and_helo_must_be_right() {
        let good = server("220 mail ESMTP\r\n", "250-mail\r\n250 ok\r\n").await;
        let busy = server("421 busy\r\n", "").await;
        let rude = server("220 mail\r\n", "550 no\r\n").await;
        let t = Target::new;
        assert_eq!(reason(check_smtp(&[t(good)], None).await), "success");
        assert!(reason(check_smtp(&[t(busy)], None).await).contains("greeting 421"));
        assert!(reason(check_smtp(&[t(rude)], Some("me")).await).contains("HELO answered 550"));
        // Every host must pass.
        assert!(reason(check_smtp(&[t(good), t(busy)], None).await).contains("421"));
    }
}
