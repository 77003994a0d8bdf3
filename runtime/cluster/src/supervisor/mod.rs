//! `squall supervisor`: runs the worker processes nimbus assigns to this machine's slots.
//!
//! Artifacts and unpacked resources that no order, running or stopping worker, or download
//! refers to any more are deleted at the end of the round that let go of them.
//!
//! Contract: [`run`] refuses to start with the default secret `change-me` unless
//! `[supervisor] host` (where its workers listen) is loopback (and warns there); it prints
//! `supervisor <id> started with N slots, nimbus at ADDR` to stderr,
//! then every `heartbeat_secs` sends nimbus a [`SupervisorHeartbeat`] (its id, host, slot
//! ports and the workers it runs with their pids); the reply lists exactly the workers it
//! must run ([`WorkerOrder`]s), and it reconciles what runs with that list:
//! - a worker that runs but is not ordered is stopped (SIGTERM, SIGKILL 5 s later, reaped),
//!   and no new worker starts on its slot before it is gone (the port must be free);
//! - an ordered worker that does not run is started from its artifact, the executable stored
//!   at `<data_dir>/artifacts/<sha256>`: downloaded from nimbus first if missing (in the
//!   background, so heartbeats go on), its sha256 checked (a mismatch is logged and retried,
//!   never run), written to a temporary file, made executable and renamed into place. The
//!   worker runs as `<artifact> worker --nimbus … --topology … --version … --worker … --port
//!   … --host …`, with the secret in `SQUALL_SECRET` (not on the command line), its own pid
//!   in `SQUALL_SUPERVISOR_PID`, and stdout and stderr appended to
//!   `<data_dir>/logs/<topology>-w<worker>.log`; a topology that carries a `resources/`
//!   folder has its archive fetched the same way (an artifact by its sha256), unpacked once
//!   into `<data_dir>/resources/<sha256>/`, and its workers get `--resources` that folder;
//! - a worker that exited (crashed, killed) is restarted, after 1 s, doubling up to 30 s
//!   while it keeps exiting within 30 s of its start.
//!
//! Until nimbus first answers, nothing is started or stopped. While nimbus is unreachable,
//! the workers keep running (crashed ones are restarted from the last orders heard) and
//! heartbeats go on; the failure is logged once per outage. The pids of the workers it runs
//! are kept in `<data_dir>/workers.json`; at start, workers a previous run of this supervisor
//! left behind (alive, `worker` on their command line, started by that supervisor) are killed,
//! so that a restarted supervisor does not run duplicates or find its ports taken. On SIGINT
//! or SIGTERM it stops every worker (SIGTERM, SIGKILL 5 s later) and returns.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{error, info, warn};

use super::artifacts::{self, is_sha256, ArtifactError, ArtifactStore};
use super::client::{Client, ClientError};
use super::config::ClusterConfig;
use super::worker::{RESTARTED_ENV, SECRET_ENV, SUPERVISOR_PID_ENV};
use super::{RunningWorker, SupervisorHeartbeat, WorkerOrder};

/// SIGTERM to SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(12);
/// A crashed worker's first restart delay, doubled per crash up to [`MAX_BACKOFF`]...
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// ...and back to [`MIN_BACKOFF`] once a worker ran this long.
const BACKOFF_RESET: Duration = Duration::from_secs(30);
/// The longest a heartbeat may take.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);
/// A restart due within this much of a round happens in that round (rounds are a heartbeat
/// apart, give or take scheduling).
const SLACK: Duration = Duration::from_millis(100);
/// How long leftovers of a previous run may take to die.
const LEFTOVER_WAIT: Duration = Duration::from_secs(3);

/// Why the supervisor cannot start, a worker cannot be started, or an artifact cannot be
/// fetched.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The default secret with workers listening off loopback: the line says what to set.
    #[error("{0}")]
    DefaultSecret(String),
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
    /// `[supervisor] data_dir` cannot be made absolute.
    #[error("bad data_dir {}: {source}", path.display())]
    DataDir { path: PathBuf, source: std::io::Error },
    /// The artifacts directory cannot be created (the error names it).
    #[error(transparent)]
    Artifacts(std::io::Error),
    #[error("cannot create {}: {source}", path.display())]
    Create { path: PathBuf, source: std::io::Error },
    /// A worker's log file cannot be opened.
    #[error("cannot open {}: {source}", path.display())]
    OpenLog { path: PathBuf, source: std::io::Error },
    /// A worker's artifact cannot be run.
    #[error("cannot run {}: {source}", path.display())]
    Spawn { path: PathBuf, source: std::io::Error },
    #[error("the worker exited at once")]
    ExitedAtOnce,
    /// Nimbus did not hand over the artifact.
    #[error("cannot download artifact {sha256}: {source}")]
    Download { sha256: String, source: ClientError },
    /// The download's task ended without a result.
    #[error("downloading artifact {sha256} broke off")]
    DownloadBrokeOff { sha256: String },
    /// The downloaded bytes do not hash to the artifact's name: never run.
    #[error("artifact {sha256} from nimbus hashes to {got} ({len} bytes): refusing to run it")]
    Mismatch { sha256: String, got: String, len: u64 },
    /// The downloaded artifact cannot be written to `path`.
    #[error("cannot store artifact {}: {source}", path.display())]
    Store { path: PathBuf, source: std::io::Error },
    /// Any other refusal of the artifact store.
    #[error(transparent)]
    Artifact(ArtifactError),
    /// `[cluster] tls` cannot be loaded: the line names the key and the file.
    #[error(transparent)]
    Tls(#[from] squall_engine::tls::TlsError),
}

/// Runs the supervisor until SIGINT or SIGTERM (see the module docs).
pub async fn run(config: ClusterConfig) -> Result<(), SupervisorError> {
    // Its workers listen on [supervisor] host: with the default secret, loopback only.
    let who = "supervisor (its workers listen on [supervisor] host)";
    match squall_engine::auth::check_default_secret(&config.cluster.secret, who, &config.supervisor.host) {
        Ok(Some(warning)) => eprintln!("{warning}"),
        Ok(None) => {}
        Err(refusal) => return Err(SupervisorError::DefaultSecret(refusal)),
    }
    let listen = |kind| signal(kind).map_err(SupervisorError::Signals);
    let mut term = listen(SignalKind::terminate())?;
    let mut int = listen(SignalKind::interrupt())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    let heartbeat = Duration::from_secs(config.supervisor.heartbeat_secs.max(1));
    serve(&config, heartbeat, STOP_GRACE, stop).await
}

/// [`run`], until `stop` completes.
async fn serve(
    config: &ClusterConfig,
    heartbeat: Duration,
    stop_grace: Duration,
    stop: impl Future<Output = ()>,
) -> Result<(), SupervisorError> {
    let mut sup = Supervisor::new(config, stop_grace)?;
    sup.kill_leftovers().await;
    sup.save_pids();
    eprintln!(
        "supervisor {} started with {} slots, nimbus at {}",
        sup.id,
        sup.slots.len(),
        sup.client.addr()
    );
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        let wake = sup.wake.clone();
        tokio::select! {
            _ = tick.tick() => {}
            // A download finished: start its workers now rather than a heartbeat later.
            _ = wake.notified() => {}
            _ = &mut stop => break,
        }
        // A round awaits only its heartbeat; everything else in it is synchronous, so
        // dropping it mid-way (on a stop) leaves the state whole.
        tokio::select! {
            _ = sup.round() => {}
            _ = &mut stop => break,
        }
    }
    info!("supervisor {}: stopping its {} workers", sup.id, sup.running.len());
    sup.shutdown().await;
    info!("supervisor {}: stopped", sup.id);
    Ok(())
}

/// A worker process this supervisor started.
struct Proc {
    child: Child,
    pid: u32,
    started: Instant,
}

/// A worker being stopped, by a task of its own.
struct Stopping {
    order: WorkerOrder,
    pid: u32,
    done: JoinHandle<()>,
}

/// An artifact being downloaded, by a task of its own.
struct Download {
    done: oneshot::Receiver<Result<(), SupervisorError>>,
    task: JoinHandle<()>,
}

/// When a worker (or a download) may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backoff {
    delay: Duration,
    not_before: Instant,
}

impl Backoff {
    /// The backoff after a failure of something that ran for `ran` (zero: it did not start).
    fn after_failure(previous: Option<Backoff>, ran: Duration, now: Instant) -> Backoff {
        let delay = match previous {
            Some(b) if ran < BACKOFF_RESET => (b.delay * 2).min(MAX_BACKOFF),
            _ => MIN_BACKOFF,
        };
        Backoff { delay, not_before: now + delay }
    }
}

/// What `workers.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PidFile {
    /// The supervisor that started them (workers carry it in `SQUALL_SUPERVISOR_PID`).
    supervisor_pid: u32,
    workers: Vec<RunningWorker>,
}

struct Supervisor {
    id: String,
    host: String,
    slots: Vec<u16>,
    secret: String,
    /// `[cluster] tls`, passed on to workers in their environment.
    tls: Option<squall_engine::tls::Tls>,
    client: Client,
    data_dir: PathBuf,
    artifacts: ArtifactStore,
    logs: PathBuf,
    stop_grace: Duration,
    /// The last orders nimbus gave (`None` until it first answered).
    orders: Option<Vec<WorkerOrder>>,
    running: HashMap<WorkerOrder, Proc>,
    stopping: Vec<Stopping>,
    /// Restart delays of ordered workers that exited or failed to start.
    backoff: HashMap<WorkerOrder, Backoff>,
    downloads: HashMap<String, Download>,
    download_backoff: HashMap<String, Backoff>,
    /// Orders already warned about (so a bad order is logged once, not every round).
    warned: HashSet<WorkerOrder>,
    nimbus_down: bool,
    /// Woken when a download ends.
    wake: Arc<Notify>,
    /// The artifacts (and resources) ordered, run or downloaded at the last round: one of
    /// them that no longer is gets deleted.
    in_use: HashSet<String>,
}

/// What a reconcile round does, decided from the orders and what runs.
#[derive(Debug, Default, PartialEq, Eq)]
struct Decision {
    /// Running workers that are not ordered.
    stop: Vec<WorkerOrder>,
    /// Ordered workers that do not run and whose slot is free.
    start: Vec<WorkerOrder>,
    /// Orders that can never run here, with why.
    refused: Vec<(WorkerOrder, String)>,
}

/// Decides a round: stop what runs but is not ordered; start what is ordered but does not run,
/// once its slot is free (no running, kept, or stopping worker holds it). `slots` is how many
/// slots this supervisor has; `stopping` lists the slots of workers still being stopped.
fn decide(orders: &[WorkerOrder], running: &[&WorkerOrder], stopping: &[usize], slots: usize) -> Decision {
    let mut d = Decision::default();
    let ordered: HashSet<&WorkerOrder> = orders.iter().collect();
    let mut busy: HashSet<usize> = stopping.iter().copied().collect();
    for &r in running {
        busy.insert(r.slot);
        if !ordered.contains(r) {
            d.stop.push(r.clone());
        }
    }
    let runs: HashSet<&WorkerOrder> = running.iter().copied().collect();
    let mut seen = HashSet::new();
    for o in orders {
        if !seen.insert(o) || runs.contains(o) {
            continue;
        }
        if o.slot >= slots {
            d.refused
                .push((o.clone(), format!("slot {} does not exist (this supervisor has {slots})", o.slot)));
        } else if busy.insert(o.slot) {
            d.start.push(o.clone());
        }
    }
    d.stop.sort_by_key(|o| o.slot);
    d
}

impl Supervisor {
    fn new(config: &ClusterConfig, stop_grace: Duration) -> Result<Supervisor, SupervisorError> {
        // Absolute, so that artifacts run from the same path whatever a worker's directory.
        let data_dir = std::path::absolute(&config.supervisor.data_dir).map_err(|source| {
            SupervisorError::DataDir { path: config.supervisor.data_dir.clone(), source }
        })?;
        let artifacts_dir = data_dir.join("artifacts");
        // Temporary files are hidden (dot) files of the artifacts directory itself.
        let artifacts =
            ArtifactStore::open(&artifacts_dir, &artifacts_dir, true).map_err(SupervisorError::Artifacts)?;
        let tls = config.tls()?;
        let logs = data_dir.join("logs");
        std::fs::create_dir_all(&logs)
            .map_err(|source| SupervisorError::Create { path: logs.clone(), source })?;
        Ok(Supervisor {
            id: config.supervisor_id(),
            host: config.supervisor.host.clone(),
            slots: config.supervisor.slots.clone(),
            secret: config.cluster.secret.clone(),
            client: Client::new(&config.cluster.nimbus, &config.cluster.secret).with_tls(tls.as_ref()),
            tls,
            data_dir,
            artifacts,
            logs,
            stop_grace,
            orders: None,
            running: HashMap::new(),
            stopping: Vec::new(),
            backoff: HashMap::new(),
            downloads: HashMap::new(),
            download_backoff: HashMap::new(),
            warned: HashSet::new(),
            nimbus_down: false,
            wake: Arc::new(Notify::new()),
            in_use: HashSet::new(),
        })
    }

    fn pid_file(&self) -> PathBuf {
        self.data_dir.join("workers.json")
    }

    /// One heartbeat and reconcile.
    async fn round(&mut self) {
        let now = Instant::now();
        let exited = self.reap();
        let beat = SupervisorHeartbeat {
            id: self.id.clone(),
            host: self.host.clone(),
            slots: self.slots.clone(),
            running: self.running_workers(),
        };
        match tokio::time::timeout(HEARTBEAT_TIMEOUT, self.client.supervisor_heartbeat(&beat)).await {
            Ok(Ok(reply)) => {
                if self.nimbus_down {
                    info!("supervisor {}: nimbus answers again", self.id);
                    self.nimbus_down = false;
                }
                self.orders = Some(reply.workers);
            }
            failed => {
                if !self.nimbus_down {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no heartbeat reply within {HEARTBEAT_TIMEOUT:?}"),
                    };
                    warn!(
                        "supervisor {}: {why}; keeping its {} workers running and retrying",
                        self.id,
                        self.running.len()
                    );
                    self.nimbus_down = true;
                }
            }
        }
        for (order, status, ran) in exited {
            let ordered = self.orders.as_ref().is_some_and(|o| o.contains(&order));
            if ordered {
                let b = Backoff::after_failure(self.backoff.get(&order).copied(), ran, now);
                self.backoff.insert(order.clone(), b);
                warn!("{} exited with {status}; restarting in {:?}", describe(&order), b.delay);
            } else {
                info!("{} exited with {status}", describe(&order));
            }
        }
        self.reconcile(now);
    }

    /// Takes the workers that exited: (order, status, how long it ran).
    fn reap(&mut self) -> Vec<(WorkerOrder, ExitStatus, Duration)> {
        let mut exited = Vec::new();
        for (order, p) in self.running.iter_mut() {
            match p.child.try_wait() {
                Ok(Some(status)) => exited.push((order.clone(), status, p.started.elapsed())),
                Ok(None) => {}
                Err(e) => warn!("{}: cannot check pid {}: {e}", describe(order), p.pid),
            }
        }
        for (order, ..) in &exited {
            self.running.remove(order);
        }
        if !exited.is_empty() {
            self.save_pids();
        }
        exited
    }

    fn running_workers(&self) -> Vec<RunningWorker> {
        let mut out: Vec<RunningWorker> =
            self.running.iter().map(|(o, p)| running_worker(o, p.pid)).collect();
        out.sort_by_key(|w| w.slot);
        out
    }

    fn reconcile(&mut self, now: Instant) {
        let Some(orders) = self.orders.clone() else {
            return;
        };
        let stopped_before = self.stopping.len();
        self.stopping.retain(|s| !s.done.is_finished());
        let mut changed = stopped_before != self.stopping.len();
        let stopping: Vec<usize> = self.stopping.iter().map(|s| s.order.slot).collect();
        let running: Vec<&WorkerOrder> = self.running.keys().collect();
        let decision = decide(&orders, &running, &stopping, self.slots.len());

        for order in decision.stop {
            if let Some(p) = self.running.remove(&order) {
                info!("stopping {} (pid {}): no longer assigned here", describe(&order), p.pid);
                self.stop_worker(order, p);
                changed = true;
            }
        }
        for (order, why) in decision.refused {
            if self.warned.insert(order.clone()) {
                error!("cannot run {}: {why}", describe(&order));
            }
        }
        for order in decision.start {
            if self.backoff.get(&order).is_some_and(|b| b.not_before > now + SLACK) {
                continue;
            }
            let Some(path) = self.artifact(&order.artifact, now) else {
                continue;
            };
            let resources = match &order.resources {
                None => None,
                Some(sha256) => match self.resources(sha256, now) {
                    Some(dir) => Some(dir),
                    None => continue,
                },
            };
            match self.start_worker(&path, resources.as_deref(), &order) {
                Ok(p) => {
                    info!("started {} (pid {}) on port {}", describe(&order), p.pid, order.port);
                    self.running.insert(order, p);
                    changed = true;
                }
                Err(e) => {
                    let b = Backoff::after_failure(self.backoff.get(&order).copied(), Duration::ZERO, now);
                    error!("cannot start {}: {e}; retrying in {:?}", describe(&order), b.delay);
                    self.backoff.insert(order, b);
                }
            }
        }
        let ordered: HashSet<&WorkerOrder> = orders.iter().collect();
        self.backoff.retain(|o, _| ordered.contains(o));
        self.warned.retain(|o| ordered.contains(o));
        let artifacts: HashSet<&str> = orders
            .iter()
            .flat_map(|o| [Some(o.artifact.as_str()), o.resources.as_deref()])
            .flatten()
            .collect();
        self.download_backoff.retain(|a, _| artifacts.contains(a.as_str()));
        self.collect_artifacts(&orders);
        if changed {
            self.save_pids();
        }
    }

    /// Deletes the artifacts and unpacked resources that were in use at the last round and
    /// are no longer: no order, running or stopping worker, or download refers to them (one
    /// artifact may serve several topologies).
    fn collect_artifacts(&mut self, orders: &[WorkerOrder]) {
        let workers = orders.iter().chain(self.running.keys()).chain(self.stopping.iter().map(|s| &s.order));
        let mut in_use: HashSet<String> =
            workers.flat_map(|o| [Some(&o.artifact), o.resources.as_ref()]).flatten().cloned().collect();
        in_use.extend(self.downloads.keys().cloned());
        for sha256 in self.in_use.difference(&in_use) {
            match self.artifacts.remove(sha256) {
                Ok(true) => info!("artifact {sha256} deleted: no worker here uses it any more"),
                Ok(false) => {}
                Err(e) => warn!("cannot delete artifact {sha256}: {e}"),
            }
            let unpacked = self.data_dir.join("resources").join(sha256);
            if is_sha256(sha256) && unpacked.is_dir() {
                if let Err(e) = std::fs::remove_dir_all(&unpacked) {
                    warn!("cannot delete {}: {e}", unpacked.display());
                }
            }
        }
        self.in_use = in_use;
    }

    /// The path of the artifact `sha256` if it is here; else starts (or follows) its
    /// download and says `None`.
    fn artifact(&mut self, sha256: &str, now: Instant) -> Option<PathBuf> {
        if !is_sha256(sha256) {
            if !self.download_backoff.contains_key(sha256) {
                error!("nimbus ordered artifact {sha256:?}, which is not a sha256; not running it");
                self.download_backoff.insert(
                    sha256.to_string(),
                    Backoff { delay: MAX_BACKOFF, not_before: now + MAX_BACKOFF },
                );
            }
            return None;
        }
        let path = self.artifacts.path(sha256);
        if path.is_file() && !self.downloads.contains_key(sha256) {
            return Some(path);
        }
        if let Some(download) = self.downloads.get_mut(sha256) {
            let result = match download.done.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => return None,
                Ok(result) => result,
                Err(oneshot::error::TryRecvError::Closed) => {
                    Err(SupervisorError::DownloadBrokeOff { sha256: sha256.to_string() })
                }
            };
            self.downloads.remove(sha256);
            match result {
                Ok(()) => {
                    info!("artifact {sha256} downloaded");
                    self.download_backoff.remove(sha256);
                    return Some(path);
                }
                Err(e) => {
                    let b = Backoff::after_failure(
                        self.download_backoff.get(sha256).copied(),
                        Duration::ZERO,
                        now,
                    );
                    error!("{e}; retrying in {:?}", b.delay);
                    self.download_backoff.insert(sha256.to_string(), b);
                    return None;
                }
            }
        }
        if self.download_backoff.get(sha256).is_some_and(|b| b.not_before > now + SLACK) {
            return None;
        }
        info!("downloading artifact {sha256} from nimbus");
        let (client, dir, sha) = (self.client.clone(), self.artifacts.clone(), sha256.to_string());
        let wake = self.wake.clone();
        let (tx, done) = oneshot::channel();
        let task = tokio::spawn(async move {
            let _ = tx.send(fetch_artifact(&client, &dir, &sha).await);
            wake.notify_one();
        });
        self.downloads.insert(sha256.to_string(), Download { done, task });
        None
    }

    /// The unpacked `resources/` folder of archive `sha256` (`<data_dir>/resources/<sha256>`)
    /// once its archive is here (see [`Self::artifact`]) and unpacked; else `None`.
    fn resources(&mut self, sha256: &str, now: Instant) -> Option<PathBuf> {
        let archive = self.artifact(sha256, now)?;
        let dir = self.data_dir.join("resources").join(sha256);
        if dir.is_dir() {
            return Some(dir);
        }
        let unpacked = std::fs::read(&archive)
            .map_err(|e| format!("cannot read {}: {e}", archive.display()))
            .and_then(|bytes| {
                std::fs::create_dir_all(self.data_dir.join("resources")).map_err(|e| {
                    format!("cannot create {}: {e}", self.data_dir.join("resources").display())
                })?;
                squall_engine::resources::unpack(&bytes, &dir)
            });
        match unpacked {
            Ok(()) => {
                info!("resources {sha256} unpacked into {}", dir.display());
                Some(dir)
            }
            Err(e) => {
                if !self.download_backoff.contains_key(sha256) {
                    error!("cannot unpack resources {sha256}: {e}; not starting its workers");
                }
                self.download_backoff.insert(
                    sha256.to_string(),
                    Backoff { delay: MAX_BACKOFF, not_before: now + MAX_BACKOFF },
                );
                None
            }
        }
    }

    fn start_worker(
        &self,
        artifact: &Path,
        resources: Option<&Path>,
        order: &WorkerOrder,
    ) -> Result<Proc, SupervisorError> {
        let log_path = self.logs.join(format!("{}-w{}.log", file_safe(&order.topology), order.worker));
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| SupervisorError::OpenLog { path: log_path.clone(), source })?;
        let _ = writeln!(
            log,
            "--- {} supervisor {}: starting worker {} of {} v{} on port {}",
            humantime::format_rfc3339_seconds(SystemTime::now()),
            self.id,
            order.worker,
            order.topology,
            order.version,
            order.port
        );
        let err = log.try_clone().map_err(|source| SupervisorError::OpenLog { path: log_path, source })?;
        let mut command = Command::new(artifact);
        if let Some(dir) = resources {
            command.arg("worker").arg("--resources").arg(dir);
        } else {
            command.arg("worker");
        }
        // `[cluster] tls` travels in the environment (and an inherited one is not passed on).
        match &self.tls {
            Some(tls) => tls.env().into_iter().for_each(|(name, path)| {
                command.env(name, path);
            }),
            None => squall_engine::tls::ENV.into_iter().for_each(|name| {
                command.env_remove(name);
            }),
        }
        let child = command
            .args(["--nimbus", self.client.addr()])
            .args(["--topology", &order.topology])
            .args(["--version", &order.version.to_string()])
            .args(["--worker", &order.worker.to_string()])
            .args(["--port", &order.port.to_string()])
            .args(["--host", &self.host])
            .env(SECRET_ENV, &self.secret)
            .env(SUPERVISOR_PID_ENV, std::process::id().to_string())
            .env(RESTARTED_ENV, if self.backoff.contains_key(order) { "1" } else { "0" })
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(false)
            .spawn()
            .map_err(|source| SupervisorError::Spawn { path: artifact.to_path_buf(), source })?;
        let pid = child.id().ok_or(SupervisorError::ExitedAtOnce)?;
        Ok(Proc { child, pid, started: Instant::now() })
    }

    fn stop_worker(&mut self, order: WorkerOrder, p: Proc) {
        let (what, grace) = (describe(&order), self.stop_grace);
        let pid = p.pid;
        let done = tokio::spawn(async move {
            match stop_child(p.child, pid, grace).await {
                Ok((status, false)) => info!("{what} (pid {pid}) stopped: {status}"),
                Ok((status, true)) => {
                    warn!("{what} (pid {pid}) did not stop within {grace:?}; killed: {status}")
                }
                Err(e) => warn!("{what} (pid {pid}): {e}"),
            }
        });
        self.stopping.push(Stopping { order, pid, done });
    }

    /// Stops every worker and waits until they are gone.
    async fn shutdown(&mut self) {
        for (_, download) in self.downloads.drain() {
            download.task.abort();
        }
        let running: Vec<(WorkerOrder, Proc)> = self.running.drain().collect();
        for (order, p) in running {
            self.stop_worker(order, p);
        }
        self.save_pids();
        for s in std::mem::take(&mut self.stopping) {
            let _ = s.done.await;
        }
        self.save_pids();
    }

    /// Writes the pids of the workers it runs or is stopping to `workers.json`.
    fn save_pids(&self) {
        let mut workers = self.running_workers();
        workers.extend(self.stopping.iter().map(|s| running_worker(&s.order, s.pid)));
        let file = PidFile { supervisor_pid: std::process::id(), workers };
        let path = self.pid_file();
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(&file)
            .map_err(|e| e.to_string())
            .and_then(|bytes| std::fs::write(&tmp, bytes).map_err(|e| e.to_string()))
            .and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| e.to_string()));
        if let Err(e) = written {
            warn!("cannot write {}: {e}", path.display());
        }
    }

    /// Kills the workers a previous run of this supervisor left running.
    async fn kill_leftovers(&self) {
        let path = self.pid_file();
        let Ok(text) = std::fs::read(&path) else {
            return;
        };
        let file: PidFile = match serde_json::from_slice(&text) {
            Ok(file) => file,
            Err(e) => {
                warn!("ignoring {}: {e}", path.display());
                return;
            }
        };
        let killed = kill_leftovers(&file);
        for w in &killed {
            warn!(
                "killed worker {} of {} v{} (pid {}), left running by a previous run of this supervisor",
                w.worker, w.topology, w.version, w.pid
            );
        }
        let deadline = Instant::now() + LEFTOVER_WAIT;
        while killed.iter().any(|w| is_leftover(w.pid, file.supervisor_pid)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn running_worker(o: &WorkerOrder, pid: u32) -> RunningWorker {
    RunningWorker { topology: o.topology.clone(), version: o.version, worker: o.worker, slot: o.slot, pid }
}

fn describe(o: &WorkerOrder) -> String {
    format!("worker {} of {} v{} (slot {})", o.worker, o.topology, o.version, o.slot)
}

/// A topology name made safe for a file name.
fn file_safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

/// Downloads the artifact `sha256` into `store`.
async fn fetch_artifact(client: &Client, store: &ArtifactStore, sha256: &str) -> Result<(), SupervisorError> {
    let bytes = client
        .download_artifact(sha256)
        .await
        .map_err(|source| SupervisorError::Download { sha256: sha256.to_string(), source })?;
    store_artifact(store, sha256, &bytes).await
}

/// Checks `bytes` against `sha256` and stores them as the executable `<sha256>` of `store`
/// (see [`ArtifactStore`]), so the path never holds a partial or unchecked file.
async fn store_artifact(store: &ArtifactStore, sha256: &str, bytes: &[u8]) -> Result<(), SupervisorError> {
    let stored = match artifacts::verify(sha256, bytes) {
        Ok(()) => store.put(sha256, bytes).await.map(drop),
        Err(e) => Err(e),
    };
    stored.map_err(|e| match e {
        ArtifactError::Mismatch { got, len, .. } => {
            SupervisorError::Mismatch { sha256: sha256.to_string(), got, len }
        }
        ArtifactError::Io { source, .. } => SupervisorError::Store { path: store.path(sha256), source },
        e => SupervisorError::Artifact(e),
    })
}

/// SIGTERM, then SIGKILL after `grace`; reaps the child. Returns its status and whether it
/// had to be killed.
async fn stop_child(mut child: Child, pid: u32, grace: Duration) -> std::io::Result<(ExitStatus, bool)> {
    if let Some(status) = child.try_wait()? {
        return Ok((status, false));
    }
    // SAFETY: kill has no memory preconditions; the child is not reaped yet (try_wait said
    // so, and only we reap it), so `pid` is still this child's.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => Ok((status?, false)),
        Err(_) => {
            child.start_kill()?;
            Ok((child.wait().await?, true))
        }
    }
}

/// SIGKILLs the workers listed in `file` that are still alive and were started by its
/// supervisor; returns them.
fn kill_leftovers(file: &PidFile) -> Vec<RunningWorker> {
    let mut killed = Vec::new();
    for w in &file.workers {
        if is_leftover(w.pid, file.supervisor_pid) {
            // SAFETY: kill has no memory preconditions; `is_leftover` refuses pids 0 and 1.
            if unsafe { libc::kill(w.pid as libc::pid_t, libc::SIGKILL) } == 0 {
                killed.push(w.clone());
            }
        }
    }
    killed
}

/// True if `pid` is alive, has `worker` among its arguments, and was started by the
/// supervisor `supervisor_pid` (its environment says so).
fn is_leftover(pid: u32, supervisor_pid: u32) -> bool {
    if pid <= 1 || pid == std::process::id() {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if !cmdline.split(|&b| b == 0).any(|arg| arg == b"worker") {
        return false;
    }
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let expected = format!("{SUPERVISOR_PID_ENV}={supervisor_pid}");
    environ.split(|&b| b == 0).any(|var| var == expected.as_bytes())
}

#[cfg(test)]
mod tests;
