//! proxy_buffering on (nginx's default): the upstream's response is read as fast as the
//! upstream sends it, into memory up to proxy_buffers and then into a temporary file up to
//! proxy_max_temp_file_size, while the client takes it at its own pace. A slow client
//! then holds neither the upstream's connection nor its worker: the connection goes back
//! to the keepalive pool as soon as the whole response has been read. Past both limits the
//! upstream waits for the client, as with buffering off.
//!
//! A task (the pump) reads the upstream body and queues pieces in order: data in memory,
//! or a length of the temporary file, which the client side reads back at its own offset.
//! The file is unlinked as soon as it is made; it goes when both sides have let go.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use crate::stream::{BoxError, Source};

/// What the pump queues for the client, in the upstream's order.
enum Piece {
    Memory(Bytes),
    /// The next `len` bytes of the temporary file.
    File(Arc<File>, u64),
    Failed(BoxError),
}

/// Memory held by one response's queue, and a wake-up for the pump when it shrinks.
#[derive(Default)]
struct Level {
    bytes: AtomicU64,
    drained: Notify,
}

/// The client's side of a buffered response.
pub struct Spooled {
    rx: mpsc::UnboundedReceiver<Piece>,
    /// Where the next file piece starts.
    offset: u64,
    level: Arc<Level>,
    /// The upstream's Content-Length, if it sent one.
    length: Option<u64>,
}

impl std::fmt::Debug for Spooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spooled").finish_non_exhaustive()
    }
}

/// The limits of one buffered response.
#[derive(Debug, Clone)]
pub struct Limits {
    pub memory: u64,
    pub file: u64,
    pub dir: PathBuf,
}

/// Starts reading `body` into a spool; what the client gets reads it back.
pub fn spool<B>(body: B, length: Option<u64>, limits: Limits) -> Spooled
where
    B: Source + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let level = Arc::new(Level::default());
    tokio::spawn(pump(body, tx, level.clone(), limits));
    Spooled {
        rx,
        offset: 0,
        level,
        length,
    }
}

fn temp_file(dir: &Path) -> std::io::Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!(
        "fulcrum-proxy-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

async fn pump<B>(mut body: B, tx: mpsc::UnboundedSender<Piece>, level: Arc<Level>, limits: Limits)
where
    B: Source,
{
    let mut file: Option<Arc<File>> = None;
    let mut written = 0u64;
    loop {
        let next = tokio::select! {
            f = std::future::poll_fn(|cx| body.poll_next(cx)) => f,
            // The client went away: so does the upstream connection.
            _ = tx.closed() => return,
        };
        let data = match next {
            None => return,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                let _ = tx.send(Piece::Failed(e));
                return;
            }
        };
        let len = data.len() as u64;
        // Memory full: the client's side gets one turn to take from it before the piece
        // goes to the file, as nginx writes its buffers out only when the client is not
        // taking them (on one thread, the pump would otherwise read the whole response
        // before the client side ever ran).
        let mut turned = false;
        loop {
            let drained = level.drained.notified();
            let held = level.bytes.load(Ordering::Acquire);
            // Memory first (and always room for one piece when none is held).
            if held == 0 || held + len <= limits.memory {
                level.bytes.fetch_add(len, Ordering::AcqRel);
                if tx.send(Piece::Memory(data)).is_err() {
                    return;
                }
                break;
            }
            if !std::mem::replace(&mut turned, true) {
                tokio::task::yield_now().await;
                continue;
            }
            if written + len <= limits.file {
                if file.is_none() {
                    match temp_file(&limits.dir) {
                        Ok(f) => file = Some(Arc::new(f)),
                        Err(e) => {
                            tracing::warn!(dir = %limits.dir.display(), "temporary file: {e}; the upstream waits for the client");
                            written = limits.file;
                            continue;
                        }
                    }
                }
                if let Some(f) = &file {
                    match f.write_all_at(&data, written) {
                        Ok(()) => {
                            written += len;
                            if tx.send(Piece::File(f.clone(), len)).is_err() {
                                return;
                            }
                            break;
                        }
                        Err(e) => {
                            tracing::warn!("writing a temporary file: {e}");
                            let _ = tx.send(Piece::Failed(e.into()));
                            return;
                        }
                    }
                }
            }
            // Both full: wait for the client to take some.
            tokio::select! {
                _ = drained => {}
                _ = tx.closed() => return,
            }
        }
    }
}

impl Spooled {
    /// The length the upstream announced.
    pub fn exact_len(&self) -> Option<u64> {
        self.length
    }

    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        let piece = match self.rx.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(p)) => p,
        };
        Poll::Ready(Some(match piece {
            Piece::Memory(data) => {
                self.level
                    .bytes
                    .fetch_sub(data.len() as u64, Ordering::AcqRel);
                self.level.drained.notify_one();
                Ok(data)
            }
            Piece::File(file, len) => {
                // From the page cache, as nginx reads its temporary files back.
                let mut buf = vec![0u8; len as usize];
                match file.read_exact_at(&mut buf, self.offset) {
                    Ok(()) => {
                        self.offset += len;
                        Ok(Bytes::from(buf))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Piece::Failed(e) => Err(e),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// An upstream body that yields its pieces as fast as asked, counting how many it gave.
    struct Pieces(VecDeque<Bytes>, Arc<AtomicU64>);

    impl Source for Pieces {
        fn poll_next(&mut self, _: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
            let next = self.0.pop_front();
            if next.is_some() {
                self.1.fetch_add(1, Ordering::Relaxed);
            }
            Poll::Ready(next.map(Ok))
        }
    }

    async fn next(s: &mut Spooled) -> Option<Result<Bytes, BoxError>> {
        std::future::poll_fn(|cx| s.poll_next(cx)).await
    }

    fn upstream(parts: &[Bytes]) -> (Pieces, Arc<AtomicU64>) {
        let given = Arc::new(AtomicU64::new(0));
        (
            Pieces(parts.iter().cloned().collect(), given.clone()),
            given,
        )
    }

    fn pieces(n: usize, size: usize) -> Vec<Bytes> {
        (0..n)
            .map(|i| Bytes::from(vec![b'a' + (i % 26) as u8; size]))
            .collect()
    }

    fn limits(memory: u64, file: u64) -> Limits {
        Limits {
            memory,
            file,
            dir: std::env::temp_dir(),
        }
    }

    /// Lets the pump run until it has read all it may.
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_response_is_read_whole_into_memory_and_file_before_the_client_reads() {
        let sent = pieces(40, 1000);
        let (upstream, given) = upstream(&sent);
        let mut s = spool(upstream, None, limits(8 * 1024, 1 << 20));
        settle().await;
        // The whole response was read before the client took a byte; memory holds at
        // most its limit, the rest went to the file, in order.
        assert_eq!(given.load(Ordering::Relaxed), 40);
        assert!(s.level.bytes.load(Ordering::Acquire) <= 8 * 1024);
        let mut got = Vec::new();
        while let Some(f) = next(&mut s).await {
            got.extend_from_slice(&f.unwrap());
        }
        assert_eq!(got, sent.concat());
    }

    #[tokio::test]
    async fn past_both_limits_the_upstream_waits_for_the_client() {
        let sent = pieces(40, 1000);
        let (upstream, given) = upstream(&sent);
        let mut s = spool(upstream, None, limits(4 * 1024, 0));
        settle().await;
        // Four pieces in memory, no file, the rest not yet read from the upstream (the
        // fifth is in hand, waiting for room).
        assert_eq!(s.level.bytes.load(Ordering::Acquire), 4000);
        assert_eq!(given.load(Ordering::Relaxed), 5);
        let mut got = Vec::new();
        while let Some(f) = next(&mut s).await {
            got.extend_from_slice(&f.unwrap());
        }
        assert_eq!(got, sent.concat());
    }

    #[tokio::test]
    async fn an_upstream_error_reaches_the_client_after_what_came_before() {
        struct Broken(u8);
        impl Source for Broken {
            fn poll_next(&mut self, _: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
                self.0 += 1;
                Poll::Ready(Some(if self.0 == 1 {
                    Ok(Bytes::from_static(b"head"))
                } else {
                    Err("upstream reset".into())
                }))
            }
        }
        let mut s = spool(Broken(0), None, limits(1024, 0));
        let first = next(&mut s).await.unwrap().unwrap();
        assert_eq!(&first[..], b"head");
        assert!(next(&mut s).await.unwrap().is_err());
    }
}
