//! Nimbus's HTTP API: one axum handler per endpoint, each parsing and checking its request,
//! then reading or changing the coordinator's state under the lock, and answering in JSON.
//!
//! Contract: see the module docs of [`super`] for the endpoints' semantics and status codes:
//! every refusal is an [`ApiError`], answered as one-line JSON `{"error": …}`; the messages
//! are what users read from the CLI. Handlers never hold the lock across an await.

use super::coordinator::{apply_rebalance, describe, Supervisor, WorkerBeat};
use super::*;
use squall_engine::auth::{HttpAuthError, HttpSignature, SIGNATURE_HEADER};
use squall_engine::metrics::Snapshot;

/// Nimbus's routes, every one behind the secret check.
pub(super) fn router(nimbus: Arc<Nimbus>) -> Router {
    Router::new()
        .route(
            "/v1/artifacts/{sha256}",
            put(put_artifact).get(get_artifact).head(head_artifact).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/topologies", post(submit).get(list))
        .route("/v1/topologies/{name}", get(status))
        .route("/v1/topologies/{name}/errors", get(errors))
        .route("/v1/topologies/{name}/components/{component}/tap", get(tap))
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
        .layer(middleware::from_fn_with_state(nimbus.clone(), only_the_leader))
        .layer(middleware::from_fn_with_state(nimbus.clone(), authorize))
        .with_state(nimbus)
}

/// A refused request: its status and one-line reason.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }
}

pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

pub(super) fn not_found(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, message)
}

pub(super) fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, message)
}

pub(super) fn internal(message: impl Into<String>) -> ApiError {
    let message = message.into();
    tracing::error!("{message}");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
}

impl ApiError {
    /// The same refusal, as the UI's actions report it.
    pub(super) fn into_action_error(self) -> squall_ui::ActionError {
        squall_ui::ActionError { status: self.status.as_u16(), message: self.message }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.message.replace(['\n', '\r'], " ");
        (self.status, Json(ErrorBody { error })).into_response()
    }
}

impl From<StateError> for ApiError {
    /// The state directory cannot be written: nimbus's fault.
    fn from(e: StateError) -> ApiError {
        internal(e.to_string())
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

pub(super) type ApiResult<T> = Result<T, ApiError>;

pub(super) async fn no_such_endpoint(request: Request) -> ApiError {
    not_found(format!("no such endpoint: {} {}", request.method(), request.uri().path()))
}

pub(super) async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", request.method(), request.uri().path()),
    )
}

/// Parses a JSON body (an empty one reads as `{}`).
pub(super) fn parse<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| bad_request(format!("bad request body: {e}")))
}

/// Refuses a name that is not `[A-Za-z0-9_.-]+` (or is `.`/`..`, or too long).
pub(super) fn check_name(name: &str) -> ApiResult<()> {
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

/// Why a submitted layout or a rebalance request is refused (a 400 with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum RequestError {
    #[error("a topology needs at least 1 worker")]
    NoWorker,
    #[error("a topology needs at least one component")]
    NoComponent,
    #[error("component `{component}` has parallelism 0; it must be at least 1")]
    ZeroParallelism { component: String },
    #[error("component `{component}` is listed twice")]
    DuplicateComponent { component: String },
    #[error("{tasks} tasks; at most {MAX_TASKS} are supported")]
    TooManyTasks { tasks: usize },
    #[error("{spout_tasks} spout tasks; at most {} are supported", squall_engine::acker::MAX_SPOUT_TASKS)]
    TooManySpoutTasks { spout_tasks: usize },
    /// A rebalance names a component the topology does not have; `known` lists those it has.
    #[error("topology `{topology}` has no component `{component}` (it has {})", known.join(", "))]
    UnknownComponent { topology: String, component: String, known: Vec<String> },
    /// A rebalance sets a component's parallelism to 0.
    #[error("parallelism of `{component}` must be at least 1")]
    ZeroRebalanceParallelism { component: String },
    #[error("{workers} workers; at most {MAX_WORKERS} are supported")]
    TooManyWorkers { workers: usize },
    #[error("a wait of {wait} s; at most {MAX_WAIT_SECS} s (a day) is supported")]
    WaitTooLong { wait: u64 },
}

/// Workers a topology may ask for, as in a topology file.
pub(super) const MAX_WORKERS: usize = squall_engine::topology::MAX_WORKERS;
/// The longest `--wait` of a kill or rebalance: the topology stays Killing or Rebalancing
/// that long.
pub(super) const MAX_WAIT_SECS: u64 = 24 * 3600;

/// Checks a kill's or rebalance's `wait_secs`.
pub(super) fn check_wait(wait: Option<u64>) -> Result<(), RequestError> {
    match wait {
        Some(wait) if wait > MAX_WAIT_SECS => Err(RequestError::WaitTooLong { wait }),
        _ => Ok(()),
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> ApiError {
        bad_request(e.to_string())
    }
}

/// Checks a submitted layout.
pub(super) fn check_layout(layout: &Layout) -> Result<(), RequestError> {
    if layout.workers == 0 {
        return Err(RequestError::NoWorker);
    }
    if layout.workers > MAX_WORKERS {
        return Err(RequestError::TooManyWorkers { workers: layout.workers });
    }
    if layout.components.is_empty() {
        return Err(RequestError::NoComponent);
    }
    let mut ids = HashSet::new();
    for c in &layout.components {
        if c.parallelism == 0 {
            return Err(RequestError::ZeroParallelism { component: c.id.clone() });
        }
        if !ids.insert(c.id.as_str()) {
            return Err(RequestError::DuplicateComponent { component: c.id.clone() });
        }
    }
    check_spout_tasks(layout)
}

/// Tasks a topology may have in all: far more than any cluster runs, far below where task
/// ids (u32) or the scheduler's work could overflow.
pub(super) const MAX_TASKS: usize = 1 << 20;

pub(super) fn check_spout_tasks(layout: &Layout) -> Result<(), RequestError> {
    let tasks = layout.components.iter().fold(layout.ackers, |n, c| n.saturating_add(c.parallelism));
    if tasks > MAX_TASKS {
        return Err(RequestError::TooManyTasks { tasks });
    }
    let spout_tasks: usize = layout.components.iter().filter(|c| c.spout).map(|c| c.parallelism).sum();
    if spout_tasks > squall_engine::acker::MAX_SPOUT_TASKS {
        return Err(RequestError::TooManySpoutTasks { spout_tasks });
    }
    Ok(())
}

/// Checks a rebalance request against the layout it would change.
pub(super) fn check_rebalance(
    name: &str,
    layout: &Layout,
    request: &RebalanceRequest,
) -> Result<(), RequestError> {
    if request.workers == Some(0) {
        return Err(RequestError::NoWorker);
    }
    if let Some(workers) = request.workers.filter(|&w| w > MAX_WORKERS) {
        return Err(RequestError::TooManyWorkers { workers });
    }
    check_wait(request.wait_secs)?;
    for (id, &parallelism) in &request.parallelism {
        if !layout.components.iter().any(|c| &c.id == id) {
            return Err(RequestError::UnknownComponent {
                topology: name.to_string(),
                component: id.clone(),
                known: layout.components.iter().map(|c| c.id.clone()).collect(),
            });
        }
        if parallelism == 0 {
            return Err(RequestError::ZeroRebalanceParallelism { component: id.clone() });
        }
    }
    let mut after = layout.clone();
    apply_rebalance(&mut after, request);
    check_spout_tasks(&after)
}

impl Inner {
    fn info(&self, record: &TopologyRecord) -> TopologyInfo {
        TopologyInfo {
            name: record.name.clone(),
            status: record.status,
            workers: record.assignment.as_ref().map_or(0, |a| a.workers.len()),
            tasks: record.layout.task_count(),
            uptime_secs: state::now_ms().saturating_sub(record.submitted_ms) / 1000,
            version: record.version(),
            drain_secs: match record.status {
                Status::Killing | Status::Rebalancing => {
                    record.deadline_ms.map(|d| d.saturating_sub(state::now_ms()).div_ceil(1000))
                }
                _ => None,
            },
        }
    }

    /// Per worker of the current assignment: its latest heartbeat, if any.
    pub(super) fn beats(&self, record: &TopologyRecord) -> Vec<Option<&WorkerBeat>> {
        let workers = record.assignment.as_ref().map_or(0, |a| a.workers.len());
        let mut key = (record.name.clone(), record.version(), 0);
        (0..workers)
            .map(|worker| {
                key.2 = worker;
                self.workers.get(&key)
            })
            .collect()
    }

    fn record(&self, name: &str) -> ApiResult<&TopologyRecord> {
        check_name(name)?;
        self.topologies.get(name).ok_or_else(|| not_found(format!("no topology named `{name}`")))
    }
}

/// The figures of `beats` read at one moment (see [`super::moments`]), in their order.
pub(super) fn at_one_moment<'a>(beats: &[&'a WorkerBeat], now: Instant) -> Vec<&'a [TaskFigures]> {
    let workers: Vec<_> = beats
        .iter()
        .map(|b| super::moments::Worker {
            moments: &b.moments,
            latest: &b.tasks,
            reporting: reporting(b, now),
        })
        .collect();
    super::moments::at_one_moment(&workers)
}

/// A worker heard from within [`REPORTING_WITHIN`].
pub(super) fn reporting(beat: &WorkerBeat, now: Instant) -> bool {
    now.saturating_duration_since(beat.last_seen) < REPORTING_WITHIN
}

/// How long the current assignment's tasks have run, in seconds (for capacity).
pub(super) fn running_secs(record: &TopologyRecord) -> f64 {
    match record.assignment {
        Some(_) => state::now_ms().saturating_sub(record.assigned_ms) as f64 / 1000.0,
        None => 0.0,
    }
}

pub(super) type Shared = State<Arc<Nimbus>>;

/// A nimbus that does not lead answers every request with 503 naming the leader (see the
/// module docs of `nimbus`).
pub(super) async fn only_the_leader(State(nimbus): Shared, request: Request, next: Next) -> Response {
    match nimbus.role() {
        super::ha::Role::Alone | super::ha::Role::Leader => next.run(request).await,
        super::ha::Role::Following(leader) => {
            let error = match &leader {
                Some(addr) => format!("not the leader; leader is {addr}"),
                None => "not the leader; no nimbus leads yet".to_string(),
            };
            let status = StatusCode::from_u16(crate::client::NOT_LEADER_STATUS)
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            (status, Json(serde_json::json!({ "error": error, "leader": leader }))).into_response()
        }
    }
}

/// Lets a request through only if it is signed with the cluster secret (see
/// [`squall_engine::auth`]): the signature checks in constant time, its time is within the
/// skew, its nonce was not seen, and the body is the one it signs. An artifact's body is not
/// read here: its signed hash must be the sha256 it is uploaded under, which the store checks
/// as it writes. Else 401 with the reason.
pub(super) async fn authorize(State(nimbus): Shared, request: Request, next: Next) -> Response {
    match verify_signed(&nimbus, request).await {
        Ok(request) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

async fn verify_signed(nimbus: &Nimbus, request: Request) -> Result<Request, ApiError> {
    let unauthorized = |e: HttpAuthError| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string());
    let signature = match request.headers().get(SIGNATURE_HEADER) {
        Some(value) => value.to_str().map_err(|_| HttpAuthError::Malformed("it is not text".into())),
        None if request.headers().contains_key(SECRET_HEADER) => Err(HttpAuthError::ClearSecret),
        None => Err(HttpAuthError::Missing),
    }
    .and_then(HttpSignature::parse)
    .map_err(unauthorized)?;
    let uri = request.uri();
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    signature.verify(&nimbus.secret, request.method().as_str(), path).map_err(unauthorized)?;
    let artifact = (request.method() == axum::http::Method::PUT)
        .then(|| uri.path().strip_prefix("/v1/artifacts/"))
        .flatten()
        .map(str::to_string);
    let (parts, body) = request.into_parts();
    let body = match artifact {
        Some(sha256) => {
            if squall_engine::auth::hex(&signature.body_sha256) != sha256 {
                return Err(unauthorized(HttpAuthError::Body));
            }
            body
        }
        None => {
            let bytes = axum::body::to_bytes(body, MAX_JSON_BYTES).await.map_err(|e| {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("cannot read the request's body: {e}"))
            })?;
            if squall_engine::auth::body_sha256(&bytes) != signature.body_sha256 {
                return Err(unauthorized(HttpAuthError::Body));
            }
            Body::from(bytes)
        }
    };
    let admitted = nimbus
        .replays
        .lock()
        .map_err(|_| internal("the replay guard is poisoned"))?
        .admit(&signature, squall_engine::auth::unix_now());
    admitted.map_err(unauthorized)?;
    Ok(Request::from_parts(parts, body))
}

pub(super) async fn put_artifact(
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

pub(super) async fn get_artifact(State(nimbus): Shared, Path(sha256): Path<String>) -> ApiResult<Response> {
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

pub(super) async fn head_artifact(State(nimbus): Shared, Path(sha256): Path<String>) -> ApiResult<Response> {
    match nimbus.state.artifacts().len_of(&sha256) {
        Some(len) => Ok(([(header::CONTENT_LENGTH, len.to_string())], StatusCode::OK).into_response()),
        None => Err(not_found(format!("no artifact {sha256}"))),
    }
}

pub(super) async fn submit(State(nimbus): Shared, body: Bytes) -> ApiResult<Json<TopologyInfo>> {
    let request: SubmitRequest = parse(&body)?;
    check_name(&request.name)?;
    check_layout(&request.layout).map_err(|e| bad_request(format!("topology `{}`: {e}", request.name)))?;
    if !nimbus.state.artifacts().has(&request.artifact) {
        return Err(bad_request(format!(
            "nimbus has no artifact {}: upload the artifact first",
            request.artifact
        )));
    }
    if let Some(resources) = request.resources.as_ref().filter(|r| !nimbus.state.artifacts().has(r)) {
        return Err(bad_request(format!("nimbus has no resources archive {resources}: upload it first")));
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
        resources: request.resources,
        status: Status::Active,
        submitted_ms: state::now_ms(),
        assignment: None,
        assigned_ms: 0,
        next_version: 1,
        deadline_ms: None,
        rebalance: None,
        resume_status: None,
    };
    inner.reassign(&mut record, Instant::now(), state::now_ms());
    tracing::info!("topology {} submitted: {}", record.name, describe(&record));
    let info = inner.info(&record);
    inner.commit(record)?;
    Ok(Json(info))
}

pub(super) async fn list(State(nimbus): Shared) -> Json<Vec<TopologyInfo>> {
    let inner = nimbus.lock();
    Json(inner.topologies.values().map(|r| inner.info(r)).collect())
}

pub(super) async fn status(
    State(nimbus): Shared,
    Path(name): Path<String>,
) -> ApiResult<Json<TopologyStatus>> {
    let inner = nimbus.lock();
    let record = inner.record(&name)?;
    let info = inner.info(record);
    let now = Instant::now();
    let mut figures: HashMap<TaskId, &TaskFigures> = HashMap::new();
    let mut workers_reporting = 0;
    let mut worker_restarts = 0;
    let beats: Vec<&WorkerBeat> = inner.beats(record).into_iter().flatten().collect();
    for (beat, tasks) in beats.iter().zip(at_one_moment(&beats, now)) {
        if reporting(beat, now) {
            workers_reporting += 1;
        }
        worker_restarts += beat.restarts;
        figures.extend(tasks.iter().map(|f| (f.task, f)));
    }
    let elapsed = running_secs(record);
    let numbering = record.layout.numbering();
    let components: Vec<_> = record
        .layout
        .components
        .iter()
        .zip(&numbering.components)
        .map(|(c, tasks)| {
            let reported: Vec<TaskFigures> =
                tasks.iter().filter_map(|t| figures.get(t).map(|&f| f.clone())).collect();
            let role = if c.spout { Role::Spout } else { Role::Bolt };
            (c.id.as_str(), c.kind.as_str(), role, c.parallelism, reported)
        })
        .collect();
    let snapshot = Snapshot::sum(&name, components, elapsed);
    let order = record.layout.components.iter().map(|c| c.id.clone()).collect();
    Ok(Json(TopologyStatus { info, workers_reporting, worker_restarts, order, snapshot }))
}

pub(super) async fn errors(
    State(nimbus): Shared,
    Path(name): Path<String>,
) -> ApiResult<Json<squall_ui::rest::TopologyErrors>> {
    let inner = nimbus.lock();
    let record = inner.record(&name)?;
    Ok(Json(squall_ui::rest::topology_errors(&super::observe::view(&inner, record))))
}

#[derive(Debug, Deserialize)]
pub(super) struct TapQuery {
    stream: Option<String>,
}

/// `squall tap`: the component's sampled tuples as JSON lines, until the client hangs up.
pub(super) async fn tap(
    State(nimbus): Shared,
    Path((name, component)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<TapQuery>,
) -> Response {
    use squall_ui::Source;
    let source = super::observe::NimbusSource(nimbus);
    squall_ui::server::tap_reply(source.tap(&name, &component, q.stream.as_deref()))
}

pub(super) async fn activate(nimbus: Shared, name: Path<String>) -> ApiResult<Json<TopologyInfo>> {
    set_status(nimbus, name, Status::Active)
}

pub(super) async fn deactivate(nimbus: Shared, name: Path<String>) -> ApiResult<Json<TopologyInfo>> {
    set_status(nimbus, name, Status::Inactive)
}

pub(super) fn set_status(
    State(nimbus): Shared,
    Path(name): Path<String>,
    to: Status,
) -> ApiResult<Json<TopologyInfo>> {
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
    inner.commit(record)?;
    Ok(Json(info))
}

pub(super) async fn kill(
    State(nimbus): Shared,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<TopologyInfo>> {
    let request: KillRequest = parse(&body)?;
    kill_topology(&nimbus, &name, request).map(Json)
}

/// Kills the topology `name` (see the module docs of [`super`]).
pub(super) fn kill_topology(nimbus: &Nimbus, name: &str, request: KillRequest) -> ApiResult<TopologyInfo> {
    check_wait(request.wait_secs)?;
    let mut inner = nimbus.lock();
    let mut record = inner.record(name)?.clone();
    let wait = request.wait_secs.unwrap_or(record.layout.message_timeout_secs);
    record.status = Status::Killing;
    record.rebalance = None;
    record.resume_status = None;
    record.deadline_ms = Some(state::now_ms().saturating_add(wait.saturating_mul(1000)));
    let info = inner.info(&record);
    if wait == 0 {
        inner.remove(name)?;
        tracing::info!("topology {name} killed and removed");
    } else {
        inner.commit(record)?;
        tracing::info!("topology {name} killed: deactivated, removed in {wait}s");
    }
    Ok(info)
}

pub(super) async fn rebalance(
    State(nimbus): Shared,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<TopologyInfo>> {
    let request: RebalanceRequest = parse(&body)?;
    rebalance_topology(&nimbus, &name, request).map(Json)
}

/// Rebalances the topology `name` (see the module docs of [`super`]).
pub(super) fn rebalance_topology(
    nimbus: &Nimbus,
    name: &str,
    request: RebalanceRequest,
) -> ApiResult<TopologyInfo> {
    let mut inner = nimbus.lock();
    let mut record = inner.record(name)?.clone();
    match record.status {
        Status::Killing => return Err(conflict(format!("topology `{name}` is being killed"))),
        Status::Rebalancing => {
            return Err(conflict(format!("topology `{name}` is already being rebalanced")))
        }
        _ => {}
    }
    check_rebalance(name, &record.layout, &request)?;
    let wait = request.wait_secs.unwrap_or(record.layout.message_timeout_secs);
    record.resume_status = Some(record.status);
    record.status = Status::Rebalancing;
    record.rebalance = Some(request);
    record.deadline_ms = Some(state::now_ms().saturating_add(wait.saturating_mul(1000)));
    if wait == 0 {
        inner.finish_rebalance(&mut record, Instant::now(), state::now_ms());
        tracing::info!("topology {name} rebalanced: {}", describe(&record));
    } else {
        tracing::info!("topology {name} rebalancing: deactivated, re-assigned in {wait}s");
    }
    let info = inner.info(&record);
    inner.commit(record)?;
    Ok(info)
}

pub(super) async fn assignment(
    State(nimbus): Shared,
    Path(name): Path<String>,
) -> ApiResult<Json<Assignment>> {
    let inner = nimbus.lock();
    let record = inner.record(&name)?;
    match &record.assignment {
        Some(a) => Ok(Json(a.clone())),
        None => Err(not_found(format!("topology `{name}` has no assignment yet (no free worker slot)"))),
    }
}

pub(super) async fn supervisor_heartbeat(
    State(nimbus): Shared,
    body: Bytes,
) -> ApiResult<Json<SupervisorReply>> {
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
    // A worker is current while the assignment runs it under that version (a kept worker
    // runs under the version it was started with).
    let current = |topology: &str, version| {
        inner
            .topologies
            .get(topology)
            .and_then(|r| r.assignment.as_ref())
            .is_some_and(|a| (0..a.workers.len()).any(|w| a.started_version(w) == version))
    };
    nimbus.observed.running(&beat.id, &beat.running, current);
    let mut workers = Vec::new();
    for record in inner.topologies.values() {
        let Some(a) = &record.assignment else { continue };
        for (worker, w) in a.workers.iter().enumerate().filter(|(_, w)| w.supervisor == beat.id) {
            workers.push(WorkerOrder {
                topology: a.topology.clone(),
                version: a.started_version(worker),
                worker,
                slot: w.slot,
                port: w.port,
                artifact: a.artifact.clone(),
                resources: a.resources.clone(),
            });
        }
    }
    Ok(Json(SupervisorReply { workers }))
}

pub(super) async fn supervisors(State(nimbus): Shared) -> Json<Vec<SupervisorInfo>> {
    Json(nimbus.lock().supervisor_infos())
}

impl Inner {
    /// Every supervisor heard from, with the slots current assignments use.
    pub(super) fn supervisor_infos(&self) -> Vec<SupervisorInfo> {
        let now = Instant::now();
        let mut used: HashMap<&str, usize> = HashMap::new();
        for a in self.topologies.values().filter_map(|r| r.assignment.as_ref()) {
            for w in &a.workers {
                *used.entry(w.supervisor.as_str()).or_default() += 1;
            }
        }
        self.supervisors
            .iter()
            .map(|(id, s)| SupervisorInfo {
                id: id.clone(),
                host: s.host.clone(),
                slots: s.slots.as_ref().map_or(0, Vec::len),
                used_slots: used.get(id.as_str()).copied().unwrap_or(0),
                last_heartbeat_secs: now.saturating_duration_since(s.last_seen).as_secs_f64(),
                alive: self.alive(s, now),
            })
            .collect()
    }
}

pub(super) async fn worker_heartbeat(State(nimbus): Shared, body: Bytes) -> ApiResult<Json<WorkerReply>> {
    let mut beat: WorkerHeartbeat = parse(&body)?;
    let mut inner = nimbus.lock();
    let stop =
        Json(WorkerReply { control: WorkerControl::Stop, peers: Vec::new(), taps: Vec::new(), routing: 0 });
    nimbus.taps.retain(|t| inner.topologies.contains_key(t));
    let Some(record) = inner.topologies.get(&beat.topology) else { return Ok(stop) };
    // The worker runs under the version it was started with, which a kept worker carries on.
    let Some(a) = record
        .assignment
        .as_ref()
        .filter(|a| beat.worker < a.workers.len() && a.started_version(beat.worker) == beat.version)
    else {
        return Ok(stop);
    };
    if beat.restarted && record.layout.exactly_once && record.status != Status::Killing {
        // Its tasks' state is behind the others': every worker starts again from the last
        // committed checkpoint, under a new assignment version.
        let mut record = record.clone();
        inner.reassign(&mut record, Instant::now(), state::now_ms());
        tracing::warn!(
            "topology {}: worker {} restarted; restarting every worker from the last committed checkpoint ({})",
            record.name,
            beat.worker,
            super::coordinator::describe(&record)
        );
        inner.commit(record)?;
        return Ok(stop);
    }
    let control = match record.status {
        Status::Active => WorkerControl::Active,
        Status::Inactive | Status::Killing | Status::Rebalancing => WorkerControl::Inactive,
    };
    let count = a.workers.len();
    let routing = a.routing_version();
    nimbus.taps.deliver(&beat.topology, std::mem::take(&mut beat.taps));
    let taps = nimbus.taps.wants(&beat.topology);
    let key = (beat.topology, a.version, beat.worker);
    inner.heartbeat(key.clone(), beat.addr, beat.tasks, beat.taken_ms, Instant::now());
    let (topology, version, _) = key;
    let mut key = (topology, version, 0);
    let peers = (0..count)
        .map(|worker| {
            key.2 = worker;
            inner.workers.get(&key).map(|w| w.addr)
        })
        .collect();
    Ok(Json(WorkerReply { control, peers, taps, routing }))
}
