//! The metrics listener of `fulcrum run --metrics ADDR:PORT` (or global_defs'
//! `fulcrum_metrics ADDR:PORT`): Prometheus metrics at `/metrics` (each scrape a fresh
//! snapshot of the node, encoded by `fulcrum_metrics`), the dashboard at `/` and its
//! server-sent `/events`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::info;

/// Where a scrape gets its numbers.
pub type Sources = Arc<fulcrum_node::Node>;

/// The exposition text of one scrape.
pub async fn render(src: &Sources) -> String {
    fulcrum_metrics::render(src.snapshot().await)
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn respond(status: StatusCode, kind: &str, body: impl Into<Bytes>) -> Response<Body> {
    use http_body_util::BodyExt;
    Response::builder()
        .status(status)
        .header("content-type", kind)
        .body(Full::new(body.into()).boxed())
        .expect("static response parts")
}

/// The server-sent events of the dashboard: the whole state every half second.
fn events_stream(src: Sources, events: Arc<crate::dashboard::Events>) -> Response<Body> {
    use http_body_util::BodyExt;
    let stream = futures::stream::unfold(
        (
            src,
            events,
            tokio::time::interval(std::time::Duration::from_millis(500)),
        ),
        |(src, events, mut tick)| async move {
            tick.tick().await;
            let state = events.current(&src).await;
            let frame = hyper::body::Frame::data(Bytes::from(format!("data: {state}\n\n")));
            Some((
                Ok::<_, std::convert::Infallible>(frame),
                (src, events, tick),
            ))
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(http_body_util::StreamBody::new(stream).boxed())
        .expect("static response parts")
}

/// Serves `/metrics`, the dashboard at `/` and its `/events` on `addr`.
pub async fn serve(addr: SocketAddr, src: Sources) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("metrics: cannot listen on {addr}: {e}"))?;
    info!(%addr, "metrics at /metrics, dashboard at /");
    let events = Arc::new(crate::dashboard::Events::default());
    crate::dashboard::sample(src.clone(), Arc::clone(&events));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let src = src.clone();
            let events = Arc::clone(&events);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let src = src.clone();
                        let events = Arc::clone(&events);
                        async move {
                            let resp = match req.uri().path() {
                                "/metrics" => respond(
                                    StatusCode::OK,
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                    render(&src).await,
                                ),
                                "/" => respond(
                                    StatusCode::OK,
                                    "text/html; charset=utf-8",
                                    crate::dashboard::page(&src, &events).await,
                                ),
                                "/events" => events_stream(src, events),
                                _ => respond(
                                    StatusCode::NOT_FOUND,
                                    "text/plain",
                                    "see / and /metrics\n",
                                ),
                            };
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(())
}
