//! Accepting the API's connections without letting clients exhaust vigil: a client that does
//! not send its request head within [`HEADER_TIMEOUT`] (or idles that long between requests) is
//! disconnected, one that trickles its body is cut at [`BODY_TIMEOUT`], and at most
//! `max_connections` are open at once — the next ones wait, unaccepted, in the kernel's
//! backlog, holding none of vigil's descriptors. So a flood of slow connections can delay an
//! answer, but never make a spawn fail for want of a file descriptor.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;
use tracing::{debug, warn};

/// The longest a client may take to send a request head, or stay idle between requests.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a client may take to send a request body (they are at most 16 KB).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections open at once unless `[api] max_connections` says otherwise: a quarter of the
/// descriptors vigil may open (its soft `RLIMIT_NOFILE`), between 16 and 1024, so that the
/// rest stay free for agents' spawns, pidfds and logs.
pub fn default_max_connections() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    (soft / 4).clamp(16, 1024) as usize
}

/// Read the whole body within [`BODY_TIMEOUT`] (408 otherwise), before any handler runs. A
/// body over the limit is passed on as far as read, for the handler's own 413.
pub async fn body_in_time(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    let max = if parts.uri.path() == "/alertmanager" {
        super::alertmanager::BODY_LIMIT
    } else {
        super::BODY_LIMIT
    };
    let limit = max + 1;
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return super::error::ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {max} bytes"),
            )
            .into_response();
        }
        Err(_) => {
            return super::error::ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body was not sent within {}s",
                    BODY_TIMEOUT.as_secs()
                ),
            )
            .into_response();
        }
    };
    next.run(axum::extract::Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Serve until the process ends.
pub async fn serve(listener: TcpListener, app: Router, max_connections: usize) {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut full_since_logged = false;
    loop {
        if permits.available_permits() == 0 && !full_since_logged {
            warn!(
                "the HTTP API has {max_connections} connections open ([api] max_connections): new ones wait"
            );
            full_since_logged = true;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, or a connection reset before it was accepted: wait a
                // moment rather than spin.
                debug!("HTTP API: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if permits.available_permits() > max_connections / 2 {
            full_since_logged = false;
        }
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    let mut app = app.clone();
                    async move {
                        let request = request.map(Body::new);
                        Ok::<_, Infallible>(match app.call(request).await {
                            Ok(response) => response,
                            Err(never) => match never {},
                        })
                    }
                });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                debug!("HTTP API: connection from {peer}: {e}");
            }
            drop(permit);
        });
    }
}
