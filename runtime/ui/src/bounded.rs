//! Serving an axum router on a listener with bounds on what clients can hold open: the UI's
//! port faces browsers and scripts, so no number of silent or slow clients may exhaust it.
//!
//! Contract: [`serve`] accepts HTTP/1 connections and answers them with the router until
//! `shutdown` ends; then it stops accepting, lets every connection finish the request in hand
//! (up to [`DRAIN`]) and returns.
//! - A client must send a request's headers within [`Limits::header_timeout`] of connecting,
//!   and of finishing its previous request on a kept-alive connection: an idle or half-sent
//!   connection is closed then.
//! - At most [`Limits::max_connections`] are open at once. A client past that is still
//!   served: the oldest connection with no request in hand (idle, or its headers half sent)
//!   is closed to make room, so a flood of idle connections cannot lock well-behaved clients
//!   out; only when every connection has a request in hand is the new one closed at once.
//!   Refusals and evictions are logged once in a while.
//! - Request bodies are bounded by the router (see `server.rs`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{service_fn, Service};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

/// How long a shutdown waits for requests in hand.
pub const DRAIN: Duration = Duration::from_secs(5);

/// The bounds [`serve`] keeps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// Connections open at once at most.
    pub max_connections: usize,
}

impl Default for Limits {
    /// Nimbus's API port's bounds: 10 s for the headers, 1,024 connections.
    fn default() -> Self {
        Limits { header_timeout: Duration::from_secs(10), max_connections: 1024 }
    }
}

/// One open connection, as the accept loop sees it.
#[derive(Default)]
struct Conn {
    /// Requests in hand (0: idle, or headers not complete yet).
    busy: AtomicUsize,
    /// Closes the connection.
    evict: Notify,
}

/// The open connections, oldest first (by accept order).
#[derive(Default)]
struct Open {
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
}

impl Open {
    fn len(&self) -> usize {
        lock(&self.conns).len()
    }

    /// Takes the oldest connection with no request in hand out, and tells it to close.
    fn evict_oldest_idle(&self) -> bool {
        let mut conns = lock(&self.conns);
        let oldest = conns.iter().find(|(_, c)| c.busy.load(Ordering::Acquire) == 0).map(|(&id, _)| id);
        match oldest.and_then(|id| conns.remove(&id)) {
            Some(conn) => {
                conn.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes (see the module
/// docs).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_tls(listener, router, limits, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is set (`[cluster] tls`): a client must present a
/// certificate signed by the cluster's CA; one that does not is refused during the handshake
/// (within the header timeout), logged in one line, and never reaches the router.
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<squall_engine::tls::Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handshake_failures = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let open = Arc::new(Open::default());
    let running = Arc::new(AtomicUsize::new(0));
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let (mut refused, mut evicted) = (0u64, 0u64);
    let mut next_id = 0u64;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: try again shortly.
                    tracing::warn!("ui: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if open.len() >= limits.max_connections.max(1) {
            if open.evict_oldest_idle() {
                evicted += 1;
                if evicted.is_power_of_two() {
                    tracing::warn!("ui: {evicted} idle connections closed to make room for new ones");
                }
            } else {
                refused += 1;
                if refused.is_power_of_two() {
                    tracing::warn!("ui: {refused} connections refused: {} are busy", limits.max_connections);
                }
                continue; // dropping the stream closes it
            }
        }
        next_id += 1;
        let id = next_id;
        let conn = Arc::new(Conn::default());
        lock(&open.conns).insert(id, conn.clone());
        let service = {
            let conn = conn.clone();
            let inner = TowerToHyperService::new(router.clone());
            service_fn(move |request: hyper::Request<Incoming>| {
                let conn = conn.clone();
                let call = inner.call(request.map(Body::new));
                async move {
                    conn.busy.fetch_add(1, Ordering::AcqRel);
                    let response = call.await;
                    conn.busy.fetch_sub(1, Ordering::AcqRel);
                    Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
                }
            })
        };
        let (open, running, mut stop) = (open.clone(), running.clone(), stop_rx.clone());
        let (builder, tls, failures) = (builder.clone(), tls.clone(), handshake_failures.clone());
        running.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            let handshake = tokio::select! {
                accepted = squall_engine::tls::accept(tls.as_ref(), stream, peer) => Some(accepted),
                _ = conn.evict.notified() => None,
            };
            match handshake {
                Some(Ok(stream)) => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(connection);
                    let stopping = async move { stop.wait_for(|&s| s).await.is_ok() };
                    let stopped = tokio::select! {
                        _ = connection.as_mut() => false,
                        _ = conn.evict.notified() => false,
                        stopped = stopping => stopped,
                    };
                    if stopped {
                        connection.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(DRAIN, connection).await;
                    }
                }
                Some(Err(e)) => {
                    let n = failures.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!("http: refused a connection: {e} ({n} so far)");
                    } else {
                        tracing::debug!("http: refused a connection: {e}");
                    }
                }
                None => {}
            }
            lock(&open.conns).remove(&id);
            running.fetch_sub(1, Ordering::AcqRel);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + DRAIN;
    while running.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(limits: Limits) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let router = Router::new().route("/", get(|| async { "ok" }));
        tokio::spawn(serve(listener, router, limits, std::future::pending()));
        addr
    }

    /// Reads until the server closes the connection (a timed-out one may get a 408 first).
    async fn until_closed(stream: &mut TcpStream) {
        let mut buf = [0u8; 256];
        while let Ok(1..) = stream.read(&mut buf).await {}
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_and_half_sent_connections_neither_lock_out_a_get_nor_stay_open() {
        let header_timeout = Duration::from_secs(2);
        let addr = start(Limits { header_timeout, ..Limits::default() }).await;
        let mut idle = Vec::new();
        for _ in 0..2000 {
            idle.push(TcpStream::connect(&addr).await.unwrap());
        }
        let mut half = TcpStream::connect(&addr).await.unwrap();
        half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let client = reqwest::Client::new();
        let answer = client.get(format!("http://{addr}/")).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.unwrap(), "ok");
        // Every idle and half-sent connection is closed: the oldest to make room, the rest at
        // the header timeout.
        let closed = tokio::time::timeout(header_timeout * 30, async {
            for stream in idle.iter_mut().chain([&mut half]) {
                until_closed(stream).await;
            }
        })
        .await;
        assert!(closed.is_ok(), "idle connections were kept open past the header timeout");
        // (A new client: the first one's kept-alive connection was closed as idle too.)
        let again = reqwest::get(format!("http://{addr}/")).await.unwrap();
        assert_eq!(again.status(), 200, "still served");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_the_bound_the_oldest_idle_connection_makes_room() {
        let addr = start(Limits { header_timeout: Duration::from_secs(600), max_connections: 3 }).await;
        let mut oldest = TcpStream::connect(&addr).await.unwrap();
        let _second = TcpStream::connect(&addr).await.unwrap();
        let _third = TcpStream::connect(&addr).await.unwrap();
        let answer = reqwest::get(format!("http://{addr}/")).await.unwrap();
        assert_eq!(answer.status(), 200);
        let closed = tokio::time::timeout(Duration::from_secs(60), until_closed(&mut oldest)).await;
        assert!(closed.is_ok(), "the oldest idle connection was not closed");
    }
}
