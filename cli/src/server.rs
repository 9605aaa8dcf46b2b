//! The local server's connections: accept them up to a cap (in all, and per
//! address), give each hyper's header deadline (which is also the idle
//! keep-alive timeout), hand every request to the router, and stop within a
//! bounded time.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::slots::Slots;

/// The connection limits.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections from one address.
    pub max_per_address: usize,
    /// Time to send a request's headers, and the longest a kept-alive
    /// connection may wait idle for its next request.
    pub header_timeout: Duration,
    /// Time the requests in flight get once stopping begins.
    pub shutdown_grace: Duration,
}

/// Serves `router` on `listener` until `stop` completes, then lets the
/// requests in flight finish for at most `limits.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let per_address: Arc<Slots<IpAddr>> = Arc::new(Slots::new(limits.max_per_address));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, usually: pause rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Past a cap, the connection is closed at once (dropped); the open
        // ones go on being served.
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            tracing::debug!(%peer, "connection refused: the server holds its limit of connections");
            continue;
        };
        let Some(slot) = per_address.try_acquire(&peer.ip()) else {
            tracing::debug!(%peer, "connection refused: this address holds its limit of connections");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            router.clone().oneshot(req)
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop((permit, slot));
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(grace = ?limits.shutdown_grace, "requests still in flight after the grace period; stopping anyway");
        }
    }
}
