//! Serving nimbus's HTTP on a listener, with bounds on what a client can hold open.
//!
//! Contract: [`serve`] accepts HTTP/1 connections on a listener and answers them with a
//! router until `shutdown` ends; then it stops accepting, lets every connection finish the
//! request in hand (up to [`DRAIN`]) and returns. A client must send a request's headers
//! within [`HEADER_TIMEOUT`] of connecting, and of finishing its previous request on a
//! kept-alive connection: an idle or half-sent connection is closed then, so no number of
//! silent clients holds nimbus's memory or descriptors for long. At most [`MAX_CONNECTIONS`]
//! are served at once; a client past that is closed at once (logged once in a while).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long a client may take to send a request's headers, from connecting or from the end
/// of its previous request on the same connection.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once at most.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a shutdown waits for requests in hand.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown` completes (see the module docs).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let open = Arc::new(AtomicUsize::new(0));
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    let mut refused = 0u64;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: try again shortly.
                    tracing::warn!("nimbus: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!("nimbus: {refused} connections refused: {MAX_CONNECTIONS} are open");
            }
            continue; // dropping the stream closes it
        }
        open.fetch_add(1, Ordering::Relaxed);
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let (open, mut stop) = (open.clone(), stop_rx.clone());
        tokio::spawn(async move {
            tokio::pin!(connection);
            let stopping = async move { stop.wait_for(|&s| s).await.is_ok() };
            let stopped = tokio::select! {
                _ = connection.as_mut() => false,
                stopped = stopping => stopped,
            };
            if stopped {
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(DRAIN, connection).await;
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + DRAIN;
    while open.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
