//! The UI's HTTP server: the REST API, `/metrics` and the page, on one axum router.
//!
//! Contract (every reply JSON unless said otherwise; errors are one-line `{"error": …}`):
//!
//! | method and path | reply |
//! |---|---|
//! | `GET /` | the web UI's page (HTML; its script and style under `/ui/`) |
//! | `GET /api/v1/cluster/summary` | [`rest::ClusterSummary`] |
//! | `GET /api/v1/supervisor/summary` | [`rest::SupervisorSummary`] |
//! | `GET /api/v1/topology/summary` | [`rest::TopologySummary`] |
//! | `GET /api/v1/topology/{name}` | [`rest::TopologyPage`] (404 if unknown) |
//! | `GET /api/v1/topology/{name}/component/{id}` | [`rest::ComponentPage`] (404 if unknown) |
//!
//! Both pages take Storm UI's `?window=600|10800|:all-time` (default `:all-time`, as Storm's
//! REST API; any other value is a 400): the figures over that window ([`history`]), from
//! samples of every topology's figures the server takes every [`history::STEP_SECS`] while
//! it runs in a Tokio runtime.
//! | `GET /api/v1/topology/{name}/errors` | [`rest::TopologyErrors`] (404 if unknown) |
//! | `POST /api/v1/topology/{name}/activate`, `…/deactivate` | [`rest::ActionReply`] |
//! | `POST /api/v1/topology/{name}/kill` (body `{"wait_secs": N}`), `…/kill/{wait}` | same |
//! | `POST /api/v1/topology/{name}/rebalance` (body `{"workers": N, "parallelism": {"ID": N}, "wait_secs": N}`), `…/rebalance/{wait}` | same |
//! | `GET /api/v1/topology/{name}/component/{id}/tap` (`?stream=S`) | tuples sampled from what the component emits, as JSON lines ([`TapLine`]), streamed until the client hangs up; a line `{"error": …}` ends it if a worker refused the tap |
//! | `GET /metrics` (`?per_task=true` for per-task series) | Prometheus text ([`prom`]) |
//!
//! Reading (every GET but a tap) needs the cluster secret in [`SECRET_HEADER`] unless
//! `public_read`; a tap (it shows the data itself) and every POST need it always (compared as sha256 digests in constant time), else 401.
//! A custom header cannot be sent cross-origin without the server's consent (which it never
//! gives), so another site's page cannot act through a visitor's browser. Bodies over
//! [`MAX_BODY`] are refused; a refused action answers with the source's status and reason.
//! [`serve`] bounds connections and header time ([`crate::bounded`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::bounded::{self, Limits};
use crate::history::{self, History, Window};
use crate::view::{Action, ActionError, Source, TopologyView};
use crate::{assets, prom, rest};
use squall_engine::tap::{TapLine, TapSession};

/// The header that carries the cluster secret (the same as nimbus's API).
pub const SECRET_HEADER: &str = "x-squall-secret";
/// The largest request body accepted.
pub const MAX_BODY: usize = 64 << 10;

/// Who may read and act.
#[derive(Debug, Clone)]
pub struct UiOptions {
    /// The cluster secret: every action carries it, and reading too unless `public_read`.
    pub secret: String,
    pub public_read: bool,
}

struct Ui {
    source: Arc<dyn Source>,
    /// Samples of the figures, for windows.
    history: Mutex<History>,
    /// The clock of `history`.
    started: Instant,
    /// sha256 of the secret.
    secret: [u8; 32],
    public_read: bool,
}

impl Ui {
    fn secret_matches(&self, given: &[u8]) -> bool {
        let given: [u8; 32] = Sha256::digest(given).into();
        given.iter().zip(self.secret.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

type Shared = State<Arc<Ui>>;

/// The UI's routes over `source`.
pub fn router(source: Arc<dyn Source>, options: UiOptions) -> Router {
    let ui = Arc::new(Ui {
        source,
        history: Mutex::new(History::default()),
        started: Instant::now(),
        secret: Sha256::digest(options.secret.as_bytes()).into(),
        public_read: options.public_read,
    });
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(sample(Arc::downgrade(&ui)));
    }
    Router::new()
        .route("/", get(assets::index))
        .route("/ui/{file}", get(assets::file))
        .route("/api/v1/cluster/summary", get(cluster_summary))
        .route("/api/v1/supervisor/summary", get(supervisor_summary))
        .route("/api/v1/topology/summary", get(topology_summary))
        .route("/api/v1/topology/{name}", get(topology))
        .route("/api/v1/topology/{name}/component/{id}", get(component))
        .route("/api/v1/topology/{name}/errors", get(errors))
        .route("/api/v1/topology/{name}/component/{id}/tap", get(tap))
        .route("/api/v1/topology/{name}/activate", post(activate))
        .route("/api/v1/topology/{name}/deactivate", post(deactivate))
        .route("/api/v1/topology/{name}/kill", post(kill))
        .route("/api/v1/topology/{name}/kill/{wait}", post(kill_after))
        .route("/api/v1/topology/{name}/rebalance", post(rebalance))
        .route("/api/v1/topology/{name}/rebalance/{wait}", post(rebalance_after))
        .route("/metrics", get(metrics))
        .fallback(|request: Request| async move {
            error(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {} {}", request.method(), request.uri().path()),
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(ui.clone(), authorize))
        .with_state(ui)
}

/// Serves `router` on `listener` until `shutdown` completes, within the default [`Limits`]
/// (a 10 s header timeout and 1,024 connections, as nimbus's API port; see `bounded.rs`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    bounded::serve(listener, router, Limits::default(), shutdown).await
}

/// [`serve`], over TLS when `tls` is set (see [`bounded::serve_tls`]).
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    tls: Option<squall_engine::tls::Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    bounded::serve_tls(listener, router, Limits::default(), tls, shutdown).await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let message: String = message.into();
    (status, Json(serde_json::json!({ "error": message.replace(['\n', '\r'], " ") }))).into_response()
}

async fn authorize(State(ui): Shared, request: Request, next: Next) -> Response {
    let reading = (request.method() == axum::http::Method::GET
        || request.method() == axum::http::Method::HEAD)
        && !request.uri().path().ends_with("/tap");
    if !(reading && ui.public_read) {
        let given = request.headers().get(SECRET_HEADER).map_or(&b""[..], |v| v.as_bytes());
        if !ui.secret_matches(given) {
            let what = if reading { "reading" } else { "every action and tap" };
            return error(
                StatusCode::UNAUTHORIZED,
                format!("missing or wrong cluster secret ({SECRET_HEADER}): {what} needs it"),
            );
        }
    }
    next.run(request).await
}

async fn cluster_summary(State(ui): Shared) -> Json<rest::ClusterSummary> {
    Json(rest::cluster_summary(&ui.source.cluster()))
}

async fn supervisor_summary(State(ui): Shared) -> Json<rest::SupervisorSummary> {
    Json(rest::supervisor_summary(&ui.source.cluster()))
}

async fn topology_summary(State(ui): Shared) -> Json<rest::TopologySummary> {
    Json(rest::topology_summary(&ui.source.cluster()))
}

fn no_topology(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no topology named `{name}`"))
}

/// Samples every topology's figures every [`history::STEP_SECS`] until the UI is dropped.
async fn sample(ui: Weak<Ui>) {
    let mut every = tokio::time::interval(Duration::from_secs(history::STEP_SECS));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(ui) = ui.upgrade() else { return };
        let topologies = ui.source.cluster().topologies;
        let now = ui.started.elapsed().as_secs();
        ui.history.lock().unwrap_or_else(|p| p.into_inner()).record(now, &topologies);
    }
}

/// `?window=…` of the pages.
#[derive(Debug, Default, Deserialize)]
struct WindowQuery {
    window: Option<String>,
}

impl WindowQuery {
    fn window(&self) -> Result<Window, String> {
        self.window.as_deref().map_or(Ok(Window::AllTime), Window::parse)
    }
}

impl Ui {
    /// `t` over `window`.
    fn windowed(&self, t: &TopologyView, window: Window) -> TopologyView {
        let now = self.started.elapsed().as_secs();
        self.history.lock().unwrap_or_else(|p| p.into_inner()).window(t, window, now)
    }
}

async fn topology(State(ui): Shared, Path(name): Path<String>, Query(q): Query<WindowQuery>) -> Response {
    let window = match q.window() {
        Ok(w) => w,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    match ui.source.topology(&name) {
        Some(t) => {
            let stats = Window::ALL.iter().map(|&w| rest::window_stats(&ui.windowed(&t, w), w)).collect();
            Json(rest::topology_page(&ui.windowed(&t, window), window, stats)).into_response()
        }
        None => no_topology(&name),
    }
}

async fn component(
    State(ui): Shared,
    Path((name, id)): Path<(String, String)>,
    Query(q): Query<WindowQuery>,
) -> Response {
    let window = match q.window() {
        Ok(w) => w,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let Some(t) = ui.source.topology(&name) else { return no_topology(&name) };
    match rest::component_page(&ui.windowed(&t, window), &id, window) {
        Some(page) => Json(page).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("topology `{name}` has no component `{id}`")),
    }
}

async fn errors(State(ui): Shared, Path(name): Path<String>) -> Response {
    match ui.source.topology(&name) {
        Some(t) => Json(rest::topology_errors(&t)).into_response(),
        None => no_topology(&name),
    }
}

fn act(ui: &Ui, name: &str, action: Action) -> Response {
    let operation = action.name();
    match ui.source.act(name, action) {
        Ok(()) => Json(rest::ActionReply {
            topology_operation: operation.into(),
            topology_id: name.into(),
            status: "success".into(),
        })
        .into_response(),
        Err(ActionError { status, message }) => {
            error(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), message)
        }
    }
}

async fn activate(State(ui): Shared, Path(name): Path<String>) -> Response {
    act(&ui, &name, Action::Activate)
}

async fn deactivate(State(ui): Shared, Path(name): Path<String>) -> Response {
    act(&ui, &name, Action::Deactivate)
}

/// A kill's body (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KillBody {
    #[serde(alias = "wait")]
    wait_secs: Option<u64>,
}

/// A rebalance's body (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RebalanceBody {
    workers: Option<usize>,
    #[serde(default)]
    parallelism: BTreeMap<String, usize>,
    #[serde(alias = "wait")]
    wait_secs: Option<u64>,
}

/// Parses a JSON body; an empty one reads as `{}`.
fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, String> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| format!("bad request body: {e}"))
}

async fn kill(State(ui): Shared, Path(name): Path<String>, body: Bytes) -> Response {
    match parse::<KillBody>(&body) {
        Ok(b) => act(&ui, &name, Action::Kill { wait_secs: b.wait_secs }),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn kill_after(State(ui): Shared, Path((name, wait)): Path<(String, u64)>) -> Response {
    act(&ui, &name, Action::Kill { wait_secs: Some(wait) })
}

async fn rebalance(State(ui): Shared, Path(name): Path<String>, body: Bytes) -> Response {
    match parse::<RebalanceBody>(&body) {
        Ok(b) => act(
            &ui,
            &name,
            Action::Rebalance { workers: b.workers, parallelism: b.parallelism, wait_secs: b.wait_secs },
        ),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn rebalance_after(
    State(ui): Shared,
    Path((name, wait)): Path<(String, u64)>,
    body: Bytes,
) -> Response {
    match parse::<RebalanceBody>(&body) {
        Ok(b) => act(
            &ui,
            &name,
            Action::Rebalance { workers: b.workers, parallelism: b.parallelism, wait_secs: Some(wait) },
        ),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize)]
struct TapQuery {
    stream: Option<String>,
}

/// A tap's replies: one JSON line per sampled tuple, as they come.
struct TapLines(TapSession);

impl futures_core::Stream for TapLines {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|event| {
            event.map(|event| {
                let mut line = match event {
                    Ok(t) => serde_json::to_vec(&TapLine(&t)),
                    // A refusal is the last line: the session's sender is gone after it.
                    Err(e) => serde_json::to_vec(&serde_json::json!({ "error": e })),
                }
                .unwrap_or_default();
                line.push(b'\n');
                Ok(Bytes::from(line))
            })
        })
    }
}

async fn tap(
    State(ui): Shared,
    Path((name, id)): Path<(String, String)>,
    Query(q): Query<TapQuery>,
) -> Response {
    tap_reply(ui.source.tap(&name, &id, q.stream.as_deref()))
}

/// The reply to a tap request: the session's tuples streamed as JSON lines, or the refusal
/// (nimbus's API answers taps with it too).
pub fn tap_reply(opened: Result<TapSession, ActionError>) -> Response {
    match opened {
        Ok(session) => (
            [(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-store")],
            axum::body::Body::from_stream(TapLines(session)),
        )
            .into_response(),
        Err(e) => error(StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST), e.message),
    }
}

#[derive(Debug, Default, Deserialize)]
struct MetricsQuery {
    #[serde(default)]
    per_task: bool,
}

async fn metrics(State(ui): Shared, Query(q): Query<MetricsQuery>) -> Response {
    let text = prom::render(&ui.source.cluster(), q.per_task);
    ([(header::CONTENT_TYPE, prom::CONTENT_TYPE)], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalSource;
    use squall_engine::executor::Control;
    use squall_engine::metrics::TopologyMetrics;
    use squall_engine::plan::Plan;
    use squall_engine::topology::{ComponentDef, GroupingDef, Settings, TopologyDef};

    /// A UI over a local run's source (nothing running) on a real port, and a client.
    async fn start(public_read: bool) -> (String, reqwest::Client, tokio::sync::watch::Receiver<Control>) {
        let def = TopologyDef {
            name: "t".into(),
            workers: 1,
            settings: Settings::default(),
            spouts: vec![ComponentDef::new("s", "sequence")],
            bolts: vec![ComponentDef::new("b", "log").input("s", GroupingDef::Shuffle)],
        };
        let plan = Plan::new(&def).unwrap();
        let metrics = TopologyMetrics::new(plan.task_count());
        let (control, watch) = tokio::sync::watch::channel(Control::Active);
        let taps = squall_engine::tap::Taps::new(&plan);
        let source = Arc::new(LocalSource::new(plan, metrics, control, taps));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(source, UiOptions { secret: "s3cret".into(), public_read });
        tokio::spawn(serve(listener, app, std::future::pending()));
        (format!("http://{addr}"), reqwest::Client::new(), watch)
    }

    #[tokio::test]
    async fn reading_needs_the_secret_unless_public_read() {
        let (base, client, _) = start(false).await;
        for path in ["/api/v1/cluster/summary", "/api/v1/topology/t", "/metrics"] {
            let refused = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(refused.status(), 401, "{path}");
            let read =
                client.get(format!("{base}{path}")).header(SECRET_HEADER, "s3cret").send().await.unwrap();
            assert_eq!(read.status(), 200, "{path}");
        }
        let (base, client, _) = start(true).await;
        let read = client.get(format!("{base}/api/v1/topology/t")).send().await.unwrap();
        assert_eq!(read.status(), 200);
        let page = client.get(format!("{base}/")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("/ui/app.js"), "{page}");
        let missing = client.get(format!("{base}/ui/nope.js")).send().await.unwrap();
        assert_eq!(missing.status(), 404);
    }

    #[tokio::test]
    async fn actions_need_the_secret_even_when_reading_is_public() {
        let (base, client, watch) = start(true).await;
        let url = format!("{base}/api/v1/topology/t/deactivate");
        assert_eq!(client.post(&url).send().await.unwrap().status(), 401);
        assert_eq!(client.post(&url).header(SECRET_HEADER, "wrong").send().await.unwrap().status(), 401);
        assert_eq!(*watch.borrow(), Control::Active);
        let done = client.post(&url).header(SECRET_HEADER, "s3cret").send().await.unwrap();
        assert_eq!(done.status(), 200);
        assert_eq!(*watch.borrow(), Control::Inactive);
        let bad = client
            .post(format!("{base}/api/v1/topology/t/kill"))
            .header(SECRET_HEADER, "s3cret")
            .body("{\"wait\": \"soon\"}")
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        let huge = client
            .post(format!("{base}/api/v1/topology/t/rebalance"))
            .header(SECRET_HEADER, "s3cret")
            .body(vec![b' '; MAX_BODY + 1])
            .send()
            .await
            .unwrap();
        assert_eq!(huge.status(), 413);
    }
}
