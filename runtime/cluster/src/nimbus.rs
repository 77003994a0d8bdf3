//! Nimbus: the cluster's coordinator (`squall nimbus`).
//!
//! Contract: [`run`] binds `[cluster] nimbus` (port 0: any free port), prints one line
//! `nimbus listening on <addr>` to stderr, and serves the HTTP API of [`crate`]
//! until SIGINT or SIGTERM; [`serve`] does the same on a given listener until a given future
//! ends (for in-process use). Every request must carry `[cluster] secret` in
//! [`SECRET_HEADER`] (compared in constant time), else 401. Errors are one-line JSON
//! `{"error": …}`: 400 for a bad request, 401, 404 for an unknown topology or artifact, 409
//! for a state conflict, 413 for an artifact over [`MAX_ARTIFACT_BYTES`], 500 if the state
//! directory cannot be written.
//!
//! Storm's nimbus semantics:
//! - Topologies, their assignments and artifacts live in the state directory
//!   ([`super::state`]); every change is persisted before it is answered or acted on, and a
//!   restarted nimbus resumes from it. Supervisors and worker heartbeats are memory only.
//! - Submit refuses a name already present in any status (409) and an artifact not uploaded
//!   (400); the topology is scheduled at once if slots are free (else it waits at version 0).
//! - activate / deactivate set the status (workers learn it from their heartbeat replies).
//! - kill: status Killing (workers told Inactive, so in-flight trees drain) until now + wait
//!   (default the message timeout), then the topology is removed; wait 0 removes it at once.
//! - rebalance: status Rebalancing (workers told Inactive) until now + wait, then the new
//!   workers / parallelism are applied, a new assignment (new version) is made, and the
//!   status before the rebalance returns; wait 0 does it at once.
//! - A supervisor is alive while heard from within `[nimbus] supervisor_timeout_secs`. A
//!   supervisor named in a stored assignment but not yet heard from since nimbus started gets
//!   that long as grace, so a restarted nimbus leaves running topologies in place.
//! - A reconcile pass (every [`RECONCILE_EVERY`] and on every supervisor heartbeat) acts on
//!   due deadlines, reschedules (new version) every topology with a worker on a dead
//!   supervisor or on a slot its supervisor no longer offers, schedules topologies without an
//!   assignment when a slot is free, and grows topologies with fewer workers than they want
//!   when a slot is free (never while one of their supervisors is still in grace). Each of
//!   those conditions is false right after the action, so nothing is rescheduled in a loop.
//!   A rescheduled topology's own slots count as free for it; slots of every other current
//!   assignment (killing ones included) are taken.
//! - A supervisor's heartbeat reply orders exactly the workers that current assignments place
//!   on it. A worker's heartbeat reply says Stop if its topology is gone or its version is
//!   not current, Inactive while the topology is not Active, else Active, with the address
//!   each worker of the current assignment last reported.
//!
//! One mutex guards the state; it is never held across an await (state files are written
//! with blocking calls inside it: they are small and requests are rare).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use squall_api::{Role, TaskId};
use tokio::net::TcpListener;

use super::artifacts::{self, ArtifactError};
use super::client::ErrorBody;
use super::config::ClusterConfig;
use super::scheduler::{self, FreeSlot};
use super::state::{self, StateDir, TopologyRecord};
use super::*;
use squall_engine::metrics::{Snapshot, TaskFigures};

/// The largest artifact accepted.
pub const MAX_ARTIFACT_BYTES: u64 = 2 << 30;
/// The largest JSON body accepted.
const MAX_JSON_BYTES: usize = 64 << 20;
/// How often the reconcile pass runs.
pub const RECONCILE_EVERY: Duration = Duration::from_millis(500);
/// A worker heard from within this long counts as reporting.
const REPORTING_WITHIN: Duration = Duration::from_secs(5);
/// The longest topology name.
const MAX_NAME_LEN: usize = 200;

/// Runs nimbus as `squall nimbus` does (see the module docs).
pub async fn run(config: ClusterConfig) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let nimbus = Nimbus::open(&config)?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot listen for SIGINT: {e}"))?;
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot listen for SIGTERM: {e}"))?;
    let listener = TcpListener::bind(&config.cluster.nimbus)
        .await
        .map_err(|e| format!("nimbus cannot listen on {}: {e}", config.cluster.nimbus))?;
    let addr = listener.local_addr().map_err(|e| format!("nimbus cannot listen: {e}"))?;
    eprintln!("nimbus listening on {addr}");
    let shutdown = async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    };
    serve_nimbus(nimbus, listener, shutdown).await
}

/// Serves nimbus on `listener` until `shutdown` completes (see the module docs). Loads the
/// state directory first; an unreadable state is an error.
pub async fn serve(
    config: ClusterConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    serve_nimbus(Nimbus::open(&config)?, listener, shutdown).await
}

async fn serve_nimbus(
    nimbus: Arc<Nimbus>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let ticker = {
        let nimbus = nimbus.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(RECONCILE_EVERY);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let nimbus = nimbus.clone();
                let _ = tokio::task::spawn_blocking(move || nimbus.lock().reconcile()).await;
            }
        })
    };
    let served = axum::serve(listener, router(nimbus)).with_graceful_shutdown(shutdown).await;
    ticker.abort();
    served.map_err(|e| format!("nimbus stopped serving: {e}"))
}

fn router(nimbus: Arc<Nimbus>) -> Router {
    Router::new()
        .route(
            "/v1/artifacts/{sha256}",
            put(put_artifact).get(get_artifact).head(head_artifact).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/topologies", post(submit).get(list))
        .route("/v1/topologies/{name}", get(status))
        .route("/v1/topologies/{name}/activate", post(activate))
        .route("/v1/topologies/{name}/deactivate", post(deactivate))
        .route("/v1/topologies/{name}/kill", post(kill))
        .route("/v1/topologies/{name}/rebalance", post(rebalance))
        .route("/v1/assignments/{name}", get(assignment))
        .route("/v1/supervisors/heartbeat", post(supervisor_heartbeat))
        .route("/v1/supervisors", get(supervisors))
        .route("/v1/workers/heartbeat", post(worker_heartbeat))
        .fallback(no_such_endpoint)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .layer(middleware::from_fn_with_state(nimbus.clone(), authorize))
        .with_state(nimbus)
}

// ---------------------------------------------------------------------------------------
// Errors

/// A refused request: its status and one-line reason.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, message)
}

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, message)
}

fn internal(message: impl Into<String>) -> ApiError {
    let message = message.into();
    tracing::error!("{message}");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.message.replace(['\n', '\r'], " ");
        (self.status, Json(ErrorBody { error })).into_response()
    }
}

impl From<ArtifactError> for ApiError {
    fn from(e: ArtifactError) -> ApiError {
        match e {
            e if e.is_refusal() => bad_request(e.to_string()),
            e => internal(e.to_string()),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

async fn no_such_endpoint(request: Request) -> ApiError {
    not_found(format!("no such endpoint: {} {}", request.method(), request.uri().path()))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", request.method(), request.uri().path()),
    )
}

/// Parses a JSON body (an empty one reads as `{}`).
fn parse<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| bad_request(format!("bad request body: {e}")))
}

/// Refuses a name that is not `[A-Za-z0-9_.-]+` (or is `.`/`..`, or too long).
fn check_name(name: &str) -> ApiResult<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(bad_request(format!(
            "`{name}` is not a valid topology name (letters, digits, `_`, `.` and `-`, at most \
             {MAX_NAME_LEN})"
        )))
    }
}

// ---------------------------------------------------------------------------------------
// The shared state

struct Nimbus {
    /// sha256 of the secret: compared digest to digest, in constant time.
    secret: [u8; 32],
    state: Arc<StateDir>,
    inner: Mutex<Inner>,
}

struct Inner {
    state: Arc<StateDir>,
    supervisor_timeout: Duration,
    topologies: BTreeMap<String, TopologyRecord>,
    supervisors: BTreeMap<String, Supervisor>,
    /// (topology, version, worker) → its latest heartbeat; current versions only.
    workers: HashMap<(String, u64, usize), WorkerBeat>,
}

struct Supervisor {
    host: String,
    /// Its slots' ports; `None` until it heartbeats to this nimbus (known only from a stored
    /// assignment: in grace).
    slots: Option<Vec<u16>>,
    last_seen: Instant,
}

struct WorkerBeat {
    addr: SocketAddr,
    tasks: Vec<TaskFigures>,
    last_seen: Instant,
}

impl Nimbus {
    fn open(config: &ClusterConfig) -> Result<Arc<Nimbus>, String> {
        if config.cluster.secret.is_empty() {
            return Err("[cluster] secret must not be empty".into());
        }
        let state = Arc::new(StateDir::open(&config.nimbus.state_dir)?);
        let records = state.load()?;
        let now = Instant::now();
        let mut supervisors = BTreeMap::new();
        for a in records.iter().filter_map(|r| r.assignment.as_ref()) {
            for w in &a.workers {
                supervisors.entry(w.supervisor.clone()).or_insert_with(|| Supervisor {
                    host: String::new(),
                    slots: None,
                    last_seen: now,
                });
            }
        }
        if !records.is_empty() {
            tracing::info!(
                "nimbus state {}: {} topologies, waiting up to {}s for {} supervisors to heartbeat",
                state.root().display(),
                records.len(),
                config.nimbus.supervisor_timeout_secs,
                supervisors.len()
            );
        }
        let inner = Inner {
            state: state.clone(),
            supervisor_timeout: Duration::from_secs(config.nimbus.supervisor_timeout_secs.max(1)),
            topologies: records.into_iter().map(|r| (r.name.clone(), r)).collect(),
            supervisors,
            workers: HashMap::new(),
        };
        Ok(Arc::new(Nimbus {
            secret: Sha256::digest(config.cluster.secret.as_bytes()).into(),
            state,
            inner: Mutex::new(inner),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn secret_matches(&self, given: &[u8]) -> bool {
        let given: [u8; 32] = Sha256::digest(given).into();
        given.iter().zip(self.secret.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

impl Inner {
    fn alive(&self, s: &Supervisor, now: Instant) -> bool {
        now.saturating_duration_since(s.last_seen) < self.supervisor_timeout
    }

    /// Saves `record` and makes it the current one.
    fn commit(&mut self, record: TopologyRecord) -> Result<(), String> {
        self.state.save(&record)?;
        self.topologies.insert(record.name.clone(), record);
        self.forget_stale_workers();
        Ok(())
    }

    /// Removes the topology `name` durably.
    fn remove(&mut self, name: &str) -> Result<(), String> {
        self.state.remove(name)?;
        self.topologies.remove(name);
        self.forget_stale_workers();
        Ok(())
    }

    /// Drops worker heartbeats of topologies or versions that are gone.
    fn forget_stale_workers(&mut self) {
        let topologies = &self.topologies;
        self.workers.retain(|(t, v, _), _| topologies.get(t).is_some_and(|r| r.version() == *v));
    }

    /// Slots of live supervisors that no current assignment uses, except that those of
    /// `except`'s count as free.
    fn free_slots(&self, except: Option<&str>, now: Instant) -> Vec<FreeSlot> {
        let used: HashSet<(&str, usize)> = self
            .topologies
            .values()
            .filter(|r| Some(r.name.as_str()) != except)
            .filter_map(|r| r.assignment.as_ref())
            .flat_map(|a| a.workers.iter().map(|w| (w.supervisor.as_str(), w.slot)))
            .collect();
        let mut free = Vec::new();
        for (id, s) in &self.supervisors {
            let Some(slots) = s.slots.as_ref().filter(|_| self.alive(s, now)) else { continue };
            for (slot, &port) in slots.iter().enumerate() {
                if !used.contains(&(id.as_str(), slot)) {
                    free.push(FreeSlot { supervisor: id.clone(), slot, port });
                }
            }
        }
        free
    }

    /// Gives `record` a new assignment (a new version) over the free slots, or none if there
    /// is no free slot.
    fn reassign(&self, record: &mut TopologyRecord, now: Instant) {
        let free = self.free_slots(Some(&record.name), now);
        match scheduler::schedule(&record.layout, &free) {
            Ok(workers) => {
                record.assignment = Some(Assignment {
                    topology: record.name.clone(),
                    version: record.next_version,
                    submitted_ms: record.submitted_ms,
                    artifact: record.artifact.clone(),
                    text: record.text.clone(),
                    layout: record.layout.clone(),
                    workers,
                });
                record.next_version += 1;
                record.assigned_ms = state::now_ms();
            }
            Err(_) => record.assignment = None,
        }
    }

    /// Why `record` must be (re)scheduled now, if it must.
    fn needs_scheduling(&self, record: &TopologyRecord, now: Instant) -> Option<String> {
        if record.status == Status::Killing {
            return None;
        }
        let Some(a) = &record.assignment else {
            let free = record.status != Status::Rebalancing && !self.free_slots(None, now).is_empty();
            return free.then(|| "a worker slot is free".to_string());
        };
        for w in &a.workers {
            match self.supervisors.get(&w.supervisor) {
                None => return Some(format!("supervisor {} is unknown", w.supervisor)),
                Some(s) if !self.alive(s, now) => {
                    return Some(format!("supervisor {} stopped heartbeating", w.supervisor))
                }
                Some(Supervisor { slots: Some(slots), .. }) if slots.get(w.slot) != Some(&w.port) => {
                    return Some(format!("supervisor {} no longer offers slot {}", w.supervisor, w.slot))
                }
                Some(_) => {}
            }
        }
        let short = a.workers.len() < scheduler::wanted_workers(&record.layout);
        let all_heard =
            a.workers.iter().all(|w| self.supervisors.get(&w.supervisor).is_some_and(|s| s.slots.is_some()));
        (record.status != Status::Rebalancing && short && all_heard && !self.free_slots(None, now).is_empty())
            .then(|| {
                format!("it has {} of {} workers and a slot is free", a.workers.len(), record.layout.workers)
            })
    }

    /// Applies `record`'s pending rebalance and gives it a new assignment.
    fn finish_rebalance(&self, record: &mut TopologyRecord, now: Instant) {
        if let Some(request) = record.rebalance.take() {
            apply_rebalance(&mut record.layout, &request);
        }
        record.status = record.resume_status.take().unwrap_or(Status::Active);
        record.deadline_ms = None;
        self.reassign(record, now);
    }

    /// Acts on due deadlines and (re)schedules what needs it (see the module docs).
    fn reconcile(&mut self) {
        let now = Instant::now();
        let now_ms = state::now_ms();
        let due: Vec<String> = self
            .topologies
            .values()
            .filter(|r| r.deadline_ms.is_some_and(|d| d <= now_ms))
            .map(|r| r.name.clone())
            .collect();
        for name in due {
            let Some(mut record) = self.topologies.get(&name).cloned() else { continue };
            let done = if record.status == Status::Killing {
                self.remove(&name).map(|()| tracing::info!("topology {name} killed and removed"))
            } else {
                if record.status == Status::Rebalancing {
                    self.finish_rebalance(&mut record, now);
                    tracing::info!("topology {name} rebalanced: {}", describe(&record));
                } else {
                    record.deadline_ms = None;
                }
                self.commit(record)
            };
            if let Err(e) = done {
                tracing::error!("topology {name}: {e}");
            }
        }
        let names: Vec<String> = self.topologies.keys().cloned().collect();
        for name in names {
            let Some(record) = self.topologies.get(&name) else { continue };
            let Some(reason) = self.needs_scheduling(record, now) else { continue };
            let mut next = record.clone();
            self.reassign(&mut next, now);
            if next.assignment.is_none() && record.assignment.is_none() {
                continue;
            }
            tracing::info!("topology {name} rescheduled ({reason}): {}", describe(&next));
            if let Err(e) = self.commit(next) {
                tracing::error!("topology {name}: {e}");
            }
        }
    }

    fn info(&self, record: &TopologyRecord) -> TopologyInfo {
        TopologyInfo {
            name: record.name.clone(),
            status: record.status,
            workers: record.assignment.as_ref().map_or(0, |a| a.workers.len()),
            tasks: record.layout.task_count(),
            uptime_secs: state::now_ms().saturating_sub(record.submitted_ms) / 1000,
            version: record.version(),
        }
    }

    fn record(&self, name: &str) -> ApiResult<&TopologyRecord> {
        check_name(name)?;
        self.topologies.get(name).ok_or_else(|| not_found(format!("no topology named `{name}`")))
    }
}

/// `version 3: 2 workers on sup-a, sup-b` or `no assignment (no free worker slot)`.
fn describe(record: &TopologyRecord) -> String {
    match &record.assignment {
        Some(a) => {
            let on: Vec<String> = a.workers.iter().map(|w| format!("{}#{}", w.supervisor, w.slot)).collect();
            format!("version {}: {} workers on {}", a.version, a.workers.len(), on.join(", "))
        }
        None => "no assignment (no free worker slot)".to_string(),
    }
}

/// Checks a submitted layout.
fn check_layout(layout: &Layout) -> Result<(), String> {
    if layout.workers == 0 {
        return Err("a topology needs at least 1 worker".into());
    }
    if layout.components.is_empty() {
        return Err("a topology needs at least one component".into());
    }
    let mut ids = HashSet::new();
    for c in &layout.components {
        if c.parallelism == 0 {
            return Err(format!("component `{}` has parallelism 0; it must be at least 1", c.id));
        }
        if !ids.insert(c.id.as_str()) {
            return Err(format!("component `{}` is listed twice", c.id));
        }
    }
    check_spout_tasks(layout)
}

/// Tasks a topology may have in all: far more than any cluster runs, far below where task
/// ids (u32) or the scheduler's work could overflow.
const MAX_TASKS: usize = 1 << 20;

fn check_spout_tasks(layout: &Layout) -> Result<(), String> {
    let tasks = layout.components.iter().fold(layout.ackers, |n, c| n.saturating_add(c.parallelism));
    if tasks > MAX_TASKS {
        return Err(format!("{tasks} tasks; at most {MAX_TASKS} are supported"));
    }
    let spout_tasks: usize = layout.components.iter().filter(|c| c.spout).map(|c| c.parallelism).sum();
    if spout_tasks > squall_engine::acker::MAX_SPOUT_TASKS {
        return Err(format!(
            "{spout_tasks} spout tasks; at most {} are supported",
            squall_engine::acker::MAX_SPOUT_TASKS
        ));
    }
    Ok(())
}

/// Checks a rebalance request against the layout it would change.
fn check_rebalance(name: &str, layout: &Layout, request: &RebalanceRequest) -> Result<(), String> {
    if request.workers == Some(0) {
        return Err("a topology needs at least 1 worker".into());
    }
    for (id, &parallelism) in &request.parallelism {
        if !layout.components.iter().any(|c| &c.id == id) {
            let known: Vec<&str> = layout.components.iter().map(|c| c.id.as_str()).collect();
            return Err(format!("topology `{name}` has no component `{id}` (it has {})", known.join(", ")));
        }
        if parallelism == 0 {
            return Err(format!("parallelism of `{id}` must be at least 1"));
        }
    }
    let mut after = layout.clone();
    apply_rebalance(&mut after, request);
    check_spout_tasks(&after)
}

fn apply_rebalance(layout: &mut Layout, request: &RebalanceRequest) {
    if let Some(workers) = request.workers {
        layout.workers = workers;
    }
    for (id, &parallelism) in &request.parallelism {
        if let Some(c) = layout.components.iter_mut().find(|c| &c.id == id) {
            c.parallelism = parallelism;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Handlers

type Shared = State<Arc<Nimbus>>;

async fn authorize(State(nimbus): Shared, request: Request, next: Next) -> Response {
    let given = request.headers().get(SECRET_HEADER).map_or(&b""[..], |v| v.as_bytes());
    if !nimbus.secret_matches(given) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "missing or wrong cluster secret ({SECRET_HEADER}); see [cluster] secret in the cluster file"
            ),
        )
        .into_response();
    }
    next.run(request).await
}

async fn put_artifact(
    State(nimbus): Shared,
    Path(sha256): Path<String>,
    headers: HeaderMap,
    mut body: Body,
) -> ApiResult<StatusCode> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_ARTIFACT_BYTES) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the artifact is larger than {MAX_ARTIFACT_BYTES} bytes"),
        ));
    }
    let mut writer = nimbus.state.artifacts().writer(&sha256, MAX_ARTIFACT_BYTES).await?;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| bad_request(format!("the artifact upload broke off: {e}")))?;
        if let Ok(data) = frame.into_data() {
            writer.write(&data).await?;
        }
    }
    writer.finish().await?;
    tracing::info!("artifact {sha256} stored");
    Ok(StatusCode::NO_CONTENT)
}

async fn get_artifact(State(nimbus): Shared, Path(sha256): Path<String>) -> ApiResult<Response> {
    if !artifacts::is_sha256(&sha256) {
        return Err(not_found(format!("no artifact {sha256}")));
    }
    let path = nimbus.state.artifacts().path(&sha256);
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(not_found(format!("no artifact {sha256}"))),
        Err(e) => Err(internal(format!("cannot read {}: {e}", path.display()))),
    }
}

async fn head_artifact(State(nimbus): Shared, Path(sha256): Path<String>) -> ApiResult<Response> {
    match nimbus.state.artifacts().len_of(&sha256) {
        Some(len) => Ok(([(header::CONTENT_LENGTH, len.to_string())], StatusCode::OK).into_response()),
        None => Err(not_found(format!("no artifact {sha256}"))),
    }
}

async fn submit(State(nimbus): Shared, body: Bytes) -> ApiResult<Json<TopologyInfo>> {
    let request: SubmitRequest = parse(&body)?;
    check_name(&request.name)?;
    check_layout(&request.layout).map_err(|e| bad_request(format!("topology `{}`: {e}", request.name)))?;
    if !nimbus.state.artifacts().has(&request.artifact) {
        return Err(bad_request(format!(
            "nimbus has no artifact {}: upload the artifact first",
            request.artifact
        )));
    }
    let mut inner = nimbus.lock();
    if let Some(existing) = inner.topologies.get(&request.name) {
        return Err(conflict(format!(
            "topology `{}` is already submitted (status {}); kill it first or choose another name",
            request.name, existing.status
        )));
    }
    let mut record = TopologyRecord {
        name: request.name,
        text: request.text,
        layout: request.layout,
        artifact: request.artifact,
        status: Status::Active,
        submitted_ms: state::now_ms(),
        assignment: None,
        assigned_ms: 0,
        next_version: 1,
        deadline_ms: None,
        rebalance: None,
        resume_status: None,
    };
    inner.reassign(&mut record, Instant::now());
    tracing::info!("topology {} submitted: {}", record.name, describe(&record));
    let info = inner.info(&record);
    inner.commit(record).map_err(internal)?;
    Ok(Json(info))
}

async fn list(State(nimbus): Shared) -> Json<Vec<TopologyInfo>> {
    let inner = nimbus.lock();
    Json(inner.topologies.values().map(|r| inner.info(r)).collect())
}

async fn status(State(nimbus): Shared, Path(name): Path<String>) -> ApiResult<Json<TopologyStatus>> {
    let inner = nimbus.lock();
    let record = inner.record(&name)?;
    let info = inner.info(record);
    let now = Instant::now();
    let version = record.version();
    let mut figures: HashMap<TaskId, &TaskFigures> = HashMap::new();
    let mut workers_reporting = 0;
    for worker in 0..info.workers {
        if let Some(beat) = inner.workers.get(&(name.clone(), version, worker)) {
            if now.saturating_duration_since(beat.last_seen) < REPORTING_WITHIN {
                workers_reporting += 1;
            }
            figures.extend(beat.tasks.iter().map(|f| (f.task, f)));
        }
    }
    let elapsed = match record.assignment {
        Some(_) => state::now_ms().saturating_sub(record.assigned_ms) as f64 / 1000.0,
        None => 0.0,
    };
    let mut first: TaskId = 0;
    let components: Vec<_> = record
        .layout
        .components
        .iter()
        .map(|c| {
            let tasks = first..first + c.parallelism as TaskId;
            first = tasks.end;
            let reported: Vec<TaskFigures> =
                tasks.filter_map(|t| figures.get(&t).map(|&f| f.clone())).collect();
            let role = if c.spout { Role::Spout } else { Role::Bolt };
            (c.id.as_str(), c.kind.as_str(), role, c.parallelism, reported)
        })
        .collect();
    let snapshot = Snapshot::sum(&name, components, elapsed);
    let order = record.layout.components.iter().map(|c| c.id.clone()).collect();
    Ok(Json(TopologyStatus { info, workers_reporting, order, snapshot }))
}

async fn activate(nimbus: Shared, name: Path<String>) -> ApiResult<Json<TopologyInfo>> {
    set_status(nimbus, name, Status::Active)
}

async fn deactivate(nimbus: Shared, name: Path<String>) -> ApiResult<Json<TopologyInfo>> {
    set_status(nimbus, name, Status::Inactive)
}

fn set_status(State(nimbus): Shared, Path(name): Path<String>, to: Status) -> ApiResult<Json<TopologyInfo>> {
    let mut inner = nimbus.lock();
    let record = inner.record(&name)?;
    match record.status {
        Status::Killing => return Err(conflict(format!("topology `{name}` is being killed"))),
        Status::Rebalancing => {
            return Err(conflict(format!("topology `{name}` is being rebalanced; try again when it is done")))
        }
        _ if record.status == to => return Ok(Json(inner.info(record))),
        _ => {}
    }
    let mut record = record.clone();
    record.status = to;
    tracing::info!("topology {name} is now {to}");
    let info = inner.info(&record);
    inner.commit(record).map_err(internal)?;
    Ok(Json(info))
}

async fn kill(State(nimbus): Shared, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<TopologyInfo>> {
    let request: KillRequest = parse(&body)?;
    let mut inner = nimbus.lock();
    let mut record = inner.record(&name)?.clone();
    let wait = request.wait_secs.unwrap_or(record.layout.message_timeout_secs);
    record.status = Status::Killing;
    record.rebalance = None;
    record.resume_status = None;
    record.deadline_ms = Some(state::now_ms().saturating_add(wait.saturating_mul(1000)));
    let info = inner.info(&record);
    if wait == 0 {
        inner.remove(&name).map_err(internal)?;
        tracing::info!("topology {name} killed and removed");
    } else {
        inner.commit(record).map_err(internal)?;
        tracing::info!("topology {name} killed: deactivated, removed in {wait}s");
    }
    Ok(Json(info))
}

async fn rebalance(
    State(nimbus): Shared,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<TopologyInfo>> {
    let request: RebalanceRequest = parse(&body)?;
    let mut inner = nimbus.lock();
    let mut record = inner.record(&name)?.clone();
    match record.status {
        Status::Killing => return Err(conflict(format!("topology `{name}` is being killed"))),
        Status::Rebalancing => {
            return Err(conflict(format!("topology `{name}` is already being rebalanced")))
        }
        _ => {}
    }
    check_rebalance(&name, &record.layout, &request).map_err(bad_request)?;
    let wait = request.wait_secs.unwrap_or(record.layout.message_timeout_secs);
    record.resume_status = Some(record.status);
    record.status = Status::Rebalancing;
    record.rebalance = Some(request);
    record.deadline_ms = Some(state::now_ms().saturating_add(wait.saturating_mul(1000)));
    if wait == 0 {
        inner.finish_rebalance(&mut record, Instant::now());
        tracing::info!("topology {name} rebalanced: {}", describe(&record));
    } else {
        tracing::info!("topology {name} rebalancing: deactivated, re-assigned in {wait}s");
    }
    let info = inner.info(&record);
    inner.commit(record).map_err(internal)?;
    Ok(Json(info))
}

async fn assignment(State(nimbus): Shared, Path(name): Path<String>) -> ApiResult<Json<Assignment>> {
    let inner = nimbus.lock();
    let record = inner.record(&name)?;
    match &record.assignment {
        Some(a) => Ok(Json(a.clone())),
        None => Err(not_found(format!("topology `{name}` has no assignment yet (no free worker slot)"))),
    }
}

async fn supervisor_heartbeat(State(nimbus): Shared, body: Bytes) -> ApiResult<Json<SupervisorReply>> {
    let beat: SupervisorHeartbeat = parse(&body)?;
    if beat.id.is_empty() {
        return Err(bad_request("a supervisor heartbeat needs an id"));
    }
    let mut inner = nimbus.lock();
    let now = Instant::now();
    let previous = inner
        .supervisors
        .insert(beat.id.clone(), Supervisor { host: beat.host, slots: Some(beat.slots), last_seen: now });
    match previous {
        None => tracing::info!("supervisor {} joined", beat.id),
        Some(p) if p.slots.is_some() && !inner.alive(&p, now) => {
            tracing::info!("supervisor {} is back", beat.id)
        }
        Some(_) => {}
    }
    inner.reconcile();
    let mut workers = Vec::new();
    for record in inner.topologies.values() {
        let Some(a) = &record.assignment else { continue };
        for (worker, w) in a.workers.iter().enumerate().filter(|(_, w)| w.supervisor == beat.id) {
            workers.push(WorkerOrder {
                topology: a.topology.clone(),
                version: a.version,
                worker,
                slot: w.slot,
                port: w.port,
                artifact: a.artifact.clone(),
            });
        }
    }
    Ok(Json(SupervisorReply { workers }))
}

async fn supervisors(State(nimbus): Shared) -> Json<Vec<SupervisorInfo>> {
    let inner = nimbus.lock();
    let now = Instant::now();
    let mut used: HashMap<&str, usize> = HashMap::new();
    for a in inner.topologies.values().filter_map(|r| r.assignment.as_ref()) {
        for w in &a.workers {
            *used.entry(w.supervisor.as_str()).or_default() += 1;
        }
    }
    Json(
        inner
            .supervisors
            .iter()
            .map(|(id, s)| SupervisorInfo {
                id: id.clone(),
                host: s.host.clone(),
                slots: s.slots.as_ref().map_or(0, Vec::len),
                used_slots: used.get(id.as_str()).copied().unwrap_or(0),
                last_heartbeat_secs: now.saturating_duration_since(s.last_seen).as_secs_f64(),
                alive: inner.alive(s, now),
            })
            .collect(),
    )
}

async fn worker_heartbeat(State(nimbus): Shared, body: Bytes) -> ApiResult<Json<WorkerReply>> {
    let beat: WorkerHeartbeat = parse(&body)?;
    let mut inner = nimbus.lock();
    let stop = Json(WorkerReply { control: WorkerControl::Stop, peers: Vec::new() });
    let Some(record) = inner.topologies.get(&beat.topology) else { return Ok(stop) };
    let Some(a) = record.assignment.as_ref().filter(|a| a.version == beat.version) else { return Ok(stop) };
    if beat.worker >= a.workers.len() {
        return Ok(stop);
    }
    let control = match record.status {
        Status::Active => WorkerControl::Active,
        Status::Inactive | Status::Killing | Status::Rebalancing => WorkerControl::Inactive,
    };
    let count = a.workers.len();
    let key = (beat.topology, beat.version, beat.worker);
    inner
        .workers
        .insert(key.clone(), WorkerBeat { addr: beat.addr, tasks: beat.tasks, last_seen: Instant::now() });
    let (topology, version, _) = key;
    let mut key = (topology, version, 0);
    let peers = (0..count)
        .map(|worker| {
            key.2 = worker;
            inner.workers.get(&key).map(|w| w.addr)
        })
        .collect();
    Ok(Json(WorkerReply { control, peers }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Client, ClientError};
    use crate::state::tests::TempDir;
    use tokio::sync::oneshot;

    const SECRET: &str = "s3cret";

    /// A nimbus served in this process.
    struct Served {
        addr: String,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<Result<(), String>>,
    }

    impl Served {
        async fn start(dir: &TempDir, supervisor_timeout_secs: u64) -> Served {
            let mut config = ClusterConfig::default();
            config.cluster.secret = SECRET.into();
            config.nimbus.state_dir = dir.path().to_path_buf();
            config.nimbus.supervisor_timeout_secs = supervisor_timeout_secs;
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve(config, listener, async move {
                let _ = stopped.await;
            }));
            Served { addr, stop: Some(stop), task }
        }

        fn client(&self) -> Client {
            Client::new(&self.addr, SECRET)
        }

        async fn stop(mut self) {
            let _ = self.stop.take().unwrap().send(());
            self.task.await.unwrap().unwrap();
        }
    }

    /// numbers (2 tasks) → sink (3 tasks), 1 acker: 6 tasks.
    fn layout(workers: usize) -> Layout {
        let component = |id: &str, kind: &str, spout, parallelism| ComponentLayout {
            id: id.into(),
            kind: kind.into(),
            spout,
            parallelism,
        };
        Layout {
            workers,
            components: vec![
                component("numbers", "sequence", true, 2),
                component("sink", "file-sink", false, 3),
            ],
            ackers: 1,
            message_timeout_secs: 30,
        }
    }

    async fn upload(client: &Client) -> String {
        let bytes = b"#!/bin/false\n".to_vec();
        let sha = artifacts::sha256_hex(&bytes);
        client.upload_artifact(&sha, bytes).await.unwrap();
        sha
    }

    fn submission(name: &str, workers: usize, artifact: &str) -> SubmitRequest {
        SubmitRequest {
            name: name.into(),
            text: format!("name = \"{name}\"\n"),
            layout: layout(workers),
            artifact: artifact.into(),
        }
    }

    async fn submit(client: &Client, name: &str, workers: usize) -> TopologyInfo {
        let artifact = upload(client).await;
        client.submit(&submission(name, workers, &artifact)).await.unwrap()
    }

    async fn beat(client: &Client, id: &str, slots: usize) -> Vec<WorkerOrder> {
        let beat = SupervisorHeartbeat {
            id: id.into(),
            host: "127.0.0.1".into(),
            slots: vec![0; slots],
            running: Vec::new(),
        };
        let mut orders = client.supervisor_heartbeat(&beat).await.unwrap().workers;
        orders.sort_by(|a, b| (&a.topology, a.worker).cmp(&(&b.topology, b.worker)));
        orders
    }

    async fn worker_beat(client: &Client, topology: &str, version: u64, worker: usize) -> WorkerReply {
        worker_beat_with(client, topology, version, worker, Vec::new()).await
    }

    async fn worker_beat_with(
        client: &Client,
        topology: &str,
        version: u64,
        worker: usize,
        tasks: Vec<TaskFigures>,
    ) -> WorkerReply {
        let addr: SocketAddr = format!("127.0.0.1:{}", 7000 + worker).parse().unwrap();
        let beat = WorkerHeartbeat { topology: topology.into(), version, worker, addr, tasks };
        client.worker_heartbeat(&beat).await.unwrap()
    }

    async fn info(client: &Client, name: &str) -> TopologyInfo {
        client.list().await.unwrap().into_iter().find(|t| t.name == name).expect(name)
    }

    /// Calls `f` until it returns something (30 s at most).
    async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(t) = f().await {
                return t;
            }
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn status_of(e: &ClientError) -> u16 {
        match e {
            ClientError::Refused { status, .. } => *status,
            other => panic!("not a refusal: {other}"),
        }
    }

    #[tokio::test]
    async fn requests_without_the_right_secret_are_refused() {
        let dir = TempDir::new("nimbus");
        let nimbus = Served::start(&dir, 10).await;
        let wrong = Client::new(&nimbus.addr, "not-it");
        let err = wrong.list().await.unwrap_err();
        assert_eq!(status_of(&err), 401);
        assert!(
            err.to_string().contains("x-squall-secret") && err.to_string().contains("[cluster] secret"),
            "{err}"
        );
        let sha = artifacts::sha256_hex(b"x");
        assert_eq!(status_of(&wrong.upload_artifact(&sha, b"x".to_vec()).await.unwrap_err()), 401);
        assert_eq!(status_of(&wrong.has_artifact(&sha).await.unwrap_err()), 401);

        let plain = reqwest::Client::new();
        let response = plain.get(format!("http://{}/v1/topologies", nimbus.addr)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401);
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("missing or wrong cluster secret"), "{body}");
        let response = plain.get(format!("http://{}/v1/nothing", nimbus.addr)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "unknown paths are refused too");

        let client = nimbus.client();
        assert!(client.list().await.unwrap().is_empty());
        let err = error_of_unknown_path(&client).await;
        assert!(err.contains("no such endpoint"), "{err}");
        nimbus.stop().await;
    }

    /// The error of a request to a path nimbus does not serve.
    async fn error_of_unknown_path(client: &Client) -> String {
        {
            let response = reqwest::Client::new()
                .get(format!("http://{}/v1/nothing", client.addr()))
                .header(SECRET_HEADER, SECRET)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 404);
            response.json::<ErrorBody>().await.unwrap().error
        }
    }

    #[tokio::test]
    async fn artifacts_are_kept_by_their_checked_hash() {
        let dir = TempDir::new("nimbus");
        let nimbus = Served::start(&dir, 10).await;
        let client = nimbus.client();
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let sha = artifacts::sha256_hex(&bytes);
        assert!(!client.has_artifact(&sha).await.unwrap());
        assert!(client.download_artifact(&sha).await.unwrap_err().is_not_found());
        client.upload_artifact(&sha, bytes.clone()).await.unwrap();
        assert!(client.has_artifact(&sha).await.unwrap());
        assert_eq!(client.download_artifact(&sha).await.unwrap(), bytes);

        let other = artifacts::sha256_hex(b"other");
        let err = client.upload_artifact(&other, bytes).await.unwrap_err();
        assert_eq!(status_of(&err), 400);
        assert!(err.to_string().contains(&sha), "{err}");
        assert!(!client.has_artifact(&other).await.unwrap());
        let err = client.upload_artifact("not-a-hash", b"x".to_vec()).await.unwrap_err();
        assert_eq!(status_of(&err), 400);
        nimbus.stop().await;
    }

    #[tokio::test]
    async fn submit_list_status_and_activation() {
        let dir = TempDir::new("nimbus");
        let nimbus = Served::start(&dir, 10).await;
        let client = nimbus.client();

        // No supervisor yet: it waits at version 0.
        let submitted = submit(&client, "numbers", 2).await;
        assert_eq!(
            (submitted.status, submitted.workers, submitted.tasks, submitted.version),
            (Status::Active, 0, 6, 0)
        );
        assert!(client.assignment("numbers").await.unwrap_err().is_not_found());

        // A supervisor appears: its first heartbeat already carries the orders.
        let orders = beat(&client, "sup-a", 4).await;
        assert_eq!(orders.len(), 2, "{orders:?}");
        assert!(orders.iter().all(|o| o.version == 1 && o.topology == "numbers"));
        assert_eq!(orders[0].artifact, upload(&client).await);
        let listed = info(&client, "numbers").await;
        assert_eq!((listed.workers, listed.tasks, listed.version), (2, 6, 1));
        let a = client.assignment("numbers").await.unwrap();
        assert_eq!(a.version, 1);
        assert_eq!(a.text, "name = \"numbers\"\n");

        // Workers report their figures; status sums them per component.
        let status = client.status("numbers").await.unwrap();
        assert_eq!(status.workers_reporting, 0);
        assert_eq!(status.snapshot.components["sink"].tasks, 3);
        assert_eq!(status.snapshot.components["numbers"].role, "spout");
        for (w, slot) in a.workers.iter().enumerate() {
            let figures = slot
                .tasks
                .iter()
                .map(|&task| TaskFigures { task, emitted: 10, ..Default::default() })
                .collect();
            let reply = worker_beat_with(&client, "numbers", 1, w, figures).await;
            assert_eq!(reply.control, WorkerControl::Active);
            assert_eq!(reply.peers.len(), 2);
            assert!(reply.peers[w].is_some());
        }
        let status = client.status("numbers").await.unwrap();
        assert_eq!(status.workers_reporting, 2);
        assert_eq!(status.info.version, 1);
        assert_eq!(status.snapshot.topology, "numbers");
        assert_eq!(status.snapshot.components["numbers"].emitted, 20);
        assert_eq!(status.snapshot.components["sink"].emitted, 30);
        assert!(!status.snapshot.components.contains_key("__acker"));
        let reply = worker_beat(&client, "numbers", 1, 0).await;
        assert_eq!(
            reply.peers,
            vec![Some("127.0.0.1:7000".parse().unwrap()), Some("127.0.0.1:7001".parse().unwrap())]
        );

        // Deactivate and activate: workers learn it from their heartbeats.
        assert_eq!(client.deactivate("numbers").await.unwrap().status, Status::Inactive);
        assert_eq!(worker_beat(&client, "numbers", 1, 1).await.control, WorkerControl::Inactive);
        assert_eq!(client.activate("numbers").await.unwrap().status, Status::Active);
        assert_eq!(worker_beat(&client, "numbers", 1, 1).await.control, WorkerControl::Active);
        assert_eq!(worker_beat(&client, "numbers", 1, 2).await.control, WorkerControl::Stop, "no worker 2");
        assert_eq!(worker_beat(&client, "other", 1, 0).await.control, WorkerControl::Stop);
        assert_eq!(info(&client, "numbers").await.version, 1, "nothing was rescheduled");
        nimbus.stop().await;
    }

    #[tokio::test]
    async fn bad_submissions_are_refused() {
        let dir = TempDir::new("nimbus");
        let nimbus = Served::start(&dir, 10).await;
        let client = nimbus.client();
        submit(&client, "twice", 1).await;
        let artifact = upload(&client).await;
        let err = client.submit(&submission("twice", 1, &artifact)).await.unwrap_err();
        assert_eq!(status_of(&err), 409);
        assert!(err.to_string().contains("already submitted"), "{err}");
        client.deactivate("twice").await.unwrap();
        assert_eq!(status_of(&client.submit(&submission("twice", 1, &artifact)).await.unwrap_err()), 409);

        let unknown = artifacts::sha256_hex(b"never uploaded");
        let err = client.submit(&submission("fresh", 1, &unknown)).await.unwrap_err();
        assert_eq!(status_of(&err), 400);
        assert!(err.to_string().contains("upload the artifact first"), "{err}");

        for name in ["", "a/b", "sp ace", "..", "ünï"] {
            let err = client.submit(&submission(name, 1, &artifact)).await.unwrap_err();
            assert_eq!(status_of(&err), 400, "{name:?}: {err}");
        }
        let mut zero = submission("zero", 1, &artifact);
        zero.layout.components[1].parallelism = 0;
        let err = client.submit(&zero).await.unwrap_err();
        assert!(status_of(&err) == 400 && err.to_string().contains("`sink` has parallelism 0"), "{err}");

        let err = client.status("missing").await.unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(client.kill("missing", &KillRequest { wait_secs: None }).await.unwrap_err().is_not_found());
        assert!(client.rebalance("missing", &RebalanceRequest::default()).await.unwrap_err().is_not_found());
        assert!(client.activate("missing").await.unwrap_err().is_not_found());
        assert_eq!(client.list().await.unwrap().len(), 1);
        nimbus.stop().await;
    }

    #[tokio::test]
    async fn two_supervisors_get_their_orders_spread_evenly() {
        let dir = TempDir::new("nimbus");
        let nimbus = Served::start(&dir, 10).await;
        let client = nimbus.client();
        assert!(beat(&client, "sup-a", 2).await.is_empty());
        assert!(beat(&client, "sup-b", 2).await.is_empty());
        submit(&client, "even", 4).await;
        let (a, b) = (beat(&client, "sup-a", 2).await, beat(&client, "sup-b", 2).await);
        assert_eq!((a.len(), b.len()), (2, 2), "{a:?} {b:?}");
        let mut slots: Vec<(usize, usize)> = a.iter().chain(&b).map(|o| (o.worker, o.slot)).collect();
        slots.sort_unstable();
        assert_eq!(slots, vec![(0, 0), (1, 0), (2, 1), (3, 1)]);
        let assignment = client.assignment("even").await.unwrap();
        let sizes: Vec<usize> = assignment.workers.iter().map(|w| w.tasks.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1, 1]);

        // A second topology takes what is left: nothing, so it waits.
        let waiting = submit(&client, "later", 1).await;
        assert_eq!(waiting.version, 0);
        let supervisors = client.supervisors().await.unwrap();
        assert_eq!(supervisors.len(), 2);
        assert!(supervisors
            .iter()
            .all(|s| s.alive && s.slots == 2 && s.used_slots == 2 && s.host == "127.0.0.1"));

        // Slots appear: the waiting one is placed there, and nothing else moves.
        let c = beat(&client, "sup-c", 1).await;
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].topology.as_str(), c[0].version), ("later", 1));
        for _ in 0..5 {
            beat(&client, "sup-a", 2).await;
            beat(&client, "sup-b", 2).await;
            beat(&client, "sup-c", 1).await;
            tokio::time::sleep(RECONCILE_EVERY / 2).await;
        }
        assert_eq!(info(&client, "even").await.version, 1);
        assert_eq!(info(&client, "later").await.version, 1);
        nimbus.stop().await;
    }

    #[tokio::test]
    async fn a_topology_short_of_workers_grows_when_slots_appear_and_then_stays() {
        let dir = TempDir::new("nimbus");
        let nimbus = Served::start(&dir, 10).await;
        let client = nimbus.client();
        beat(&client, "sup-a", 1).await;
        let submitted = submit(&client, "grows", 3).await;
        assert_eq!((submitted.workers, submitted.version), (1, 1));
        let b = beat(&client, "sup-b", 4).await;
        assert_eq!(b.len(), 2, "{b:?}");
        assert!(b.iter().all(|o| o.version == 2));
        for _ in 0..5 {
            beat(&client, "sup-a", 1).await;
            beat(&client, "sup-b", 4).await;
            tokio::time::sleep(RECONCILE_EVERY / 2).await;
        }
        let listed = info(&client, "grows").await;
        assert_eq!((listed.workers, listed.version), (3, 2));
        nimbus.stop().await;
    }

    #[tokio::test]
    async fn a_lost_supervisor_has_its_workers_moved() {
        let dir = TempDir::new("nimbus");
        let nimbus = Served::start(&dir, 1).await;
        let client = nimbus.client();
        beat(&client, "sup-a", 2).await;
        beat(&client, "sup-b", 2).await;
        submit(&client, "moves", 2).await;
        let first = client.assignment("moves").await.unwrap();
        assert_eq!(first.version, 1);
        let on: Vec<&str> = first.workers.iter().map(|w| w.supervisor.as_str()).collect();
        assert_eq!(on, vec!["sup-a", "sup-b"]);
        assert_eq!(worker_beat(&client, "moves", 1, 0).await.control, WorkerControl::Active);

        // Only sup-b keeps heartbeating.
        let orders = eventually("sup-b runs every worker of a newer version", async || {
            let orders = beat(&client, "sup-b", 2).await;
            (orders.len() == 2 && orders.iter().all(|o| o.version > 1)).then_some(orders)
        })
        .await;
        let now = client.assignment("moves").await.unwrap();
        assert_eq!(now.version, orders[0].version);
        assert!(now.workers.iter().all(|w| w.supervisor == "sup-b"), "{now:?}");
        assert_eq!(worker_beat(&client, "moves", 1, 0).await.control, WorkerControl::Stop);
        assert_eq!(worker_beat(&client, "moves", 1, 1).await.control, WorkerControl::Stop);
        assert_eq!(worker_beat(&client, "moves", now.version, 1).await.control, WorkerControl::Active);
        let supervisors = client.supervisors().await.unwrap();
        let a = supervisors.iter().find(|s| s.id == "sup-a").unwrap();
        assert!(!a.alive && a.used_slots == 0, "{a:?}");

        // sup-a comes back: it gets no orders (the topology has all its workers).
        assert!(beat(&client, "sup-a", 2).await.is_empty());
        nimbus.stop().await;
    }

    #[tokio::test]
    async fn kill_deactivates_then_removes() {
        let dir = TempDir::new("nimbus");
        let nimbus = Served::start(&dir, 10).await;
        let client = nimbus.client();
        beat(&client, "sup-a", 4).await;
        submit(&client, "now", 1).await;
        submit(&client, "soon", 1).await;
        assert_eq!(beat(&client, "sup-a", 4).await.len(), 2);

        let killed = client.kill("now", &KillRequest { wait_secs: Some(0) }).await.unwrap();
        assert_eq!(killed.status, Status::Killing);
        assert!(client.status("now").await.unwrap_err().is_not_found());
        assert_eq!(worker_beat(&client, "now", 1, 0).await.control, WorkerControl::Stop);
        let orders = beat(&client, "sup-a", 4).await;
        assert_eq!(orders.iter().map(|o| o.topology.as_str()).collect::<Vec<_>>(), vec!["soon"]);

        let killing = client.kill("soon", &KillRequest { wait_secs: Some(1) }).await.unwrap();
        assert_eq!(killing.status, Status::Killing);
        assert_eq!(info(&client, "soon").await.status, Status::Killing);
        assert_eq!(worker_beat(&client, "soon", 1, 0).await.control, WorkerControl::Inactive);
        assert_eq!(
            status_of(&client.rebalance("soon", &RebalanceRequest::default()).await.unwrap_err()),
            409
        );
        assert_eq!(status_of(&client.activate("soon").await.unwrap_err()), 409);
        eventually("the killed topology is removed", async || {
            client.list().await.unwrap().is_empty().then_some(())
        })
        .await;
        assert!(beat(&client, "sup-a", 4).await.is_empty());
        assert_eq!(worker_beat(&client, "soon", 1, 0).await.control, WorkerControl::Stop);

        // The name is free again.
        assert_eq!(submit(&client, "soon", 1).await.version, 1);
        nimbus.stop().await;
    }

    #[tokio::test]
    async fn rebalance_makes_a_new_version_with_the_new_layout() {
        let dir = TempDir::new("nimbus");
        let nimbus = Served::start(&dir, 10).await;
        let client = nimbus.client();
        beat(&client, "sup-a", 2).await;
        beat(&client, "sup-b", 2).await;
        assert_eq!(submit(&client, "grow", 1).await.workers, 1);

        let refused = |workers, parallelism: &[(&str, usize)]| RebalanceRequest {
            workers,
            parallelism: parallelism.iter().map(|&(c, p)| (c.to_string(), p)).collect(),
            wait_secs: Some(0),
        };
        for (request, expected) in [
            (refused(None, &[("nope", 2)]), "no component `nope`"),
            (refused(None, &[("sink", 0)]), "at least 1"),
            (refused(Some(0), &[]), "at least 1 worker"),
        ] {
            let err = client.rebalance("grow", &request).await.unwrap_err();
            assert_eq!(status_of(&err), 400, "{err}");
            assert!(err.to_string().contains(expected), "{err}");
        }
        assert_eq!(info(&client, "grow").await.version, 1, "refused requests change nothing");

        let request = RebalanceRequest {
            workers: Some(3),
            parallelism: [("sink".to_string(), 5)].into(),
            wait_secs: Some(1),
        };
        let rebalancing = client.rebalance("grow", &request).await.unwrap();
        assert_eq!(rebalancing.status, Status::Rebalancing);
        assert_eq!(worker_beat(&client, "grow", 1, 0).await.control, WorkerControl::Inactive);
        let done = eventually("the rebalance is done", async || {
            let listed = info(&client, "grow").await;
            (listed.version == 2).then_some(listed)
        })
        .await;
        assert_eq!((done.status, done.workers, done.tasks), (Status::Active, 3, 8));
        let a = client.assignment("grow").await.unwrap();
        assert_eq!(a.layout.workers, 3);
        assert_eq!(a.layout.components[1].parallelism, 5);
        assert_eq!(a.workers.iter().map(|w| w.tasks.len()).collect::<Vec<_>>(), vec![3, 3, 2]);
        assert_eq!(worker_beat(&client, "grow", 1, 0).await.control, WorkerControl::Stop);
        assert_eq!(worker_beat(&client, "grow", 2, 2).await.control, WorkerControl::Active);
        let orders = [beat(&client, "sup-a", 2).await, beat(&client, "sup-b", 2).await].concat();
        assert_eq!(orders.len(), 3);
        assert!(orders.iter().all(|o| o.version == 2));

        // An inactive topology returns to inactive.
        client.deactivate("grow").await.unwrap();
        let request = RebalanceRequest { workers: Some(4), wait_secs: Some(0), ..Default::default() };
        let done = client.rebalance("grow", &request).await.unwrap();
        assert_eq!((done.status, done.workers, done.version), (Status::Inactive, 4, 3));
        nimbus.stop().await;
    }

    #[tokio::test]
    async fn a_restarted_nimbus_resumes_what_runs() {
        let dir = TempDir::new("nimbus");
        let nimbus = Served::start(&dir, 10).await;
        let client = nimbus.client();
        beat(&client, "sup-a", 2).await;
        beat(&client, "sup-b", 2).await;
        submit(&client, "lasting", 2).await;
        client.deactivate("lasting").await.unwrap();
        let request = RebalanceRequest { workers: Some(3), wait_secs: Some(0), ..Default::default() };
        client.rebalance("lasting", &request).await.unwrap();
        submit(&client, "dying", 1).await;
        client.kill("dying", &KillRequest { wait_secs: Some(3600) }).await.unwrap();
        let before = client.assignment("lasting").await.unwrap();
        let orders_a = beat(&client, "sup-a", 2).await;
        let orders_b = beat(&client, "sup-b", 2).await;
        let listed = client.list().await.unwrap();
        nimbus.stop().await;

        let nimbus = Served::start(&dir, 10).await;
        let client = nimbus.client();
        // Before any supervisor heartbeats: the same topologies, the supervisors in grace.
        let again = client.list().await.unwrap();
        let brief = |l: &[TopologyInfo]| -> Vec<_> {
            l.iter().map(|t| (t.name.clone(), t.status, t.workers, t.version)).collect()
        };
        assert_eq!(brief(&again), brief(&listed));
        assert_eq!(client.assignment("lasting").await.unwrap(), before);
        let supervisors = client.supervisors().await.unwrap();
        assert_eq!(
            supervisors.iter().map(|s| (s.id.as_str(), s.alive)).collect::<Vec<_>>(),
            vec![("sup-a", true), ("sup-b", true)]
        );
        assert_eq!(worker_beat(&client, "lasting", before.version, 0).await.control, WorkerControl::Inactive);

        // The supervisors' orders continue unchanged.
        assert_eq!(beat(&client, "sup-a", 2).await, orders_a);
        assert_eq!(beat(&client, "sup-b", 2).await, orders_b);
        assert_eq!(client.assignment("lasting").await.unwrap(), before);

        // And the verbs work on what was there.
        client.activate("lasting").await.unwrap();
        assert_eq!(worker_beat(&client, "lasting", before.version, 0).await.control, WorkerControl::Active);
        client.kill("dying", &KillRequest { wait_secs: Some(0) }).await.unwrap();
        let request = RebalanceRequest { workers: Some(4), wait_secs: Some(0), ..Default::default() };
        let done = client.rebalance("lasting", &request).await.unwrap();
        assert_eq!((done.workers, done.version), (4, before.version + 1));
        assert_eq!(client.list().await.unwrap().len(), 1);
        nimbus.stop().await;
    }
}
