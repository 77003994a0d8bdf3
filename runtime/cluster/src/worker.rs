//! `squall worker`: one worker process of a topology's assignment, started by a supervisor
//! (never by hand).
//!
//! Contract: [`run`] reads the cluster's secret from `SQUALL_SECRET` (never the command
//! line, which `ps` shows), and `[cluster] tls` from `SQUALL_TLS_*` (its links to nimbus,
//! its peers and brokers are then TLS), and fetches its topology's [`Assignment`] from nimbus,
//! retrying for up to a minute while nimbus is unreachable. An assignment that does not run
//! this worker under `--version` (the version it was started with:
//! [`Assignment::started_version`]), or a topology nimbus no longer knows, means this worker is
//! stale: it exits 0 at once. Its links to the other workers speak the assignment's routing
//! version, so a worker a later version keeps (same slot, same tasks, same routing) goes on
//! talking with the replacements of the workers that moved. Otherwise it loads the topology
//! from the assignment's text with this binary's registry (a load error ends it, as one
//! line), applies the assignment's [`Layout`](super::Layout) and its task ids
//! ([`Layout::numbering`](super::Layout::numbering)), plans it with the assignment's task
//! placement, binds its [`Transport`] on `--host`:`--port`
//! (port 0: any free port), heartbeats once to publish its address and learn its peers', and
//! starts the tasks `workers[--worker]` of the assignment lists.
//!
//! Then, every second (`SQUALL_WORKER_HEARTBEAT_MS` overrides it), it sends nimbus a
//! [`WorkerHeartbeat`] with its tasks' figures and its transport address, and follows the
//! reply: peers' addresses go to the transport (only when they changed), `active` /
//! `inactive` to the spouts (only when it changed), `stop` starts a graceful stop. While
//! nimbus is unreachable it keeps running and keeps trying (one warning per outage).
//!
//! A reply naming a routing version newer than the one its links speak (a live rebalance
//! that keeps this worker: [`WorkerReply::routing`]) makes it fetch the assignment and switch
//! to it without stopping ([`Running::rewire`]): the transport rewires to the new plan, the
//! running tasks route by it from their next batch, tasks no longer placed here retire, new
//! ones start. Its spouts are activated only once the switch is done, so what they emit
//! goes where the new plan says. A switch that fails ends the worker with an error: its
//! supervisor starts it again, and it runs the new assignment from the start.
//!
//! It ends:
//! - with exit 0 after a graceful stop, on `stop`, SIGTERM or SIGINT, or when its parent
//!   process changes (its supervisor died: an orphan must not linger). A graceful stop tells
//!   the spouts to stop (they stop emitting, in-flight trees drain), waits until every local
//!   spout task has ended or 5 s passed, closes the transport's inbound side (in a worker a
//!   bolt's inbox is also held by the transport, so bolts end only then), and waits up to 5 s
//!   more for the other tasks, so bolts' cleanup runs and sinks flush. Signals that arrive
//!   during a graceful stop change nothing (the supervisor kills what does not end in time).
//! - with an error (non-zero exit, and the supervisor restarts it) when a task fails or
//!   panics.
//!
//! Logs go through `tracing` to stderr, which the supervisor appends to the worker's log file.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use squall_api::{Registry, Role, TaskId};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{error, info, warn};

use super::client::{Client, ClientError};
use super::tap_feed::TapFeed;
use super::transport::{Transport, TransportOptions};
use super::{Assignment, WorkerControl, WorkerHeartbeat, WorkerReply};
use squall_engine::checkpoint::Checkpointing;
use squall_engine::executor::{Control, TaskError};
use squall_engine::launch::{self, Running};
use squall_engine::plan::{Plan, PlanError};
use squall_engine::topology;

/// The environment variable that carries the cluster's secret to a worker.
pub const SECRET_ENV: &str = "SQUALL_SECRET";
/// Set by the supervisor to its own pid: a worker whose parent is not that pid at start is
/// already an orphan and exits.
pub const SUPERVISOR_PID_ENV: &str = "SQUALL_SUPERVISOR_PID";

/// Set (to `1`) by the supervisor when it starts a worker again after that worker exited.
pub const RESTARTED_ENV: &str = "SQUALL_WORKER_RESTARTED";
/// Overrides the heartbeat period (milliseconds; benchmarks use it).
pub const HEARTBEAT_ENV: &str = "SQUALL_WORKER_HEARTBEAT_MS";

const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a starting worker keeps asking an unreachable nimbus for its assignment.
const ASSIGNMENT_PATIENCE: Duration = Duration::from_secs(60);
/// How often the parent process is checked.
const PARENT_CHECK: Duration = Duration::from_millis(250);
/// A graceful stop waits this long for the local spouts to end...
const SPOUT_GRACE: Duration = Duration::from_secs(5);
/// ...and then this long for every other task.
const REST_GRACE: Duration = Duration::from_secs(5);

/// `squall worker`'s flags (the supervisor passes them; the secret comes from
/// `SQUALL_SECRET`).
#[derive(clap::Args, Debug, Clone)]
pub struct WorkerArgs {
    /// Where nimbus listens (host:port)
    #[arg(long, value_name = "ADDR")]
    pub nimbus: String,
    /// The topology's name
    #[arg(long, value_name = "NAME")]
    pub topology: String,
    /// The assignment version this worker belongs to
    #[arg(long, value_name = "V")]
    pub version: u64,
    /// This worker's index in the assignment
    #[arg(long = "worker", value_name = "INDEX")]
    pub worker: usize,
    /// The port the transport listens on (0: any free port)
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub port: u16,
    /// The address to bind and to advertise to the other workers
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// The topology's unpacked `resources/` folder, if it carries one
    #[arg(long, value_name = "DIR")]
    pub resources: Option<std::path::PathBuf>,
}

/// A heartbeat request on its way.
type BeatInFlight = Pin<Box<dyn Future<Output = Result<WorkerReply, ClientError>> + Send>>;
/// An assignment request on its way.
type AssignmentInFlight = Pin<Box<dyn Future<Output = Result<Assignment, ClientError>> + Send>>;

/// Why a worker stops gracefully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Nimbus,
    Signal,
    Orphaned,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::Nimbus => "nimbus says this assignment is over",
            StopReason::Signal => "asked to stop by a signal",
            StopReason::Orphaned => "our supervisor is gone",
        })
    }
}

/// Why a worker cannot start, or ended with an error. `worker` is `worker I of T vV`; `file`
/// is `T (from nimbus)`, the name the assignment's topology text is loaded under.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{SECRET_ENV} is not set (a worker is started by a supervisor)")]
    NoSecret,
    /// `SQUALL_TLS_*` (the supervisor's `[cluster] tls`) cannot be loaded.
    #[error(transparent)]
    Tls(#[from] squall_engine::tls::TlsError),
    /// The state backend the topology names cannot be opened.
    #[error("{worker}: cannot open the state backend \"{backend}\": {message}")]
    State { worker: String, backend: String, message: String },
    /// A tree failed with exactly-once state: the worker exits to start again from the last
    /// committed checkpoint.
    #[error("{worker}: a tuple tree failed with guarantee = \"exactly_once\"; exiting to restart from the last committed checkpoint")]
    Rollback { worker: String },
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
    /// Nimbus answered the assignment request with a client error (4xx).
    #[error("{worker}: nimbus refused the assignment: {source}")]
    AssignmentRefused { worker: String, source: ClientError },
    /// Nimbus could not be reached (or failed) for [`ASSIGNMENT_PATIENCE`].
    #[error("{worker}: cannot fetch the assignment: {source}")]
    AssignmentUnreachable { worker: String, source: ClientError },
    /// The assignment's topology does not load with this binary's registry: its first
    /// diagnostic, and how many more there are.
    #[error("{first}{}", and_more(*.more))]
    Load { first: String, more: usize },
    /// The assignment's topology cannot be planned.
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(
        "{file}: the topology has {planned} tasks but its assignment places {assigned} (does this \
         binary hold the same components as the one submitted?)"
    )]
    TaskCountMismatch { file: String, planned: usize, assigned: usize },
    #[error("{file}: the assignment has {workers} workers, there is no worker {me}")]
    NoSuchWorker { file: String, workers: usize, me: usize },
    #[error("{file}: the assignment gives worker {me} task {task}, which does not exist")]
    NoSuchTask { file: String, me: usize, task: TaskId },
    #[error("cannot resolve --host {host}: {source}")]
    Resolve { host: String, source: std::io::Error },
    #[error("--host {host} resolves to no address")]
    NoAddress { host: String },
    /// The transport cannot bind its port.
    #[error("{worker}: cannot listen on {addr}: {source}")]
    Bind { worker: String, addr: SocketAddr, source: std::io::Error },
    /// The tasks cannot be started.
    #[error("{worker}: {source}")]
    Start { worker: String, source: TaskError },
    /// A task failed or panicked: the worker exits so that its supervisor restarts it.
    #[error("{worker}: {failure}")]
    TaskFailed { worker: String, failure: String },
}

/// ` (and N more)`, or nothing for 0.
fn and_more(more: usize) -> String {
    if more > 0 {
        format!(" (and {more} more)")
    } else {
        String::new()
    }
}

/// Runs the worker until it stops (see the module docs).
pub async fn run(args: WorkerArgs, registry: &Registry) -> Result<(), WorkerError> {
    let secret = std::env::var(SECRET_ENV).map_err(|_| WorkerError::NoSecret)?;
    let name = format!("worker {} of {} v{}", args.worker, args.topology, args.version);
    let parent = parent_pid();
    if let Some(supervisor) = std::env::var(SUPERVISOR_PID_ENV).ok().and_then(|p| p.parse::<i32>().ok()) {
        if supervisor != parent {
            info!("{name}: our supervisor (pid {supervisor}) is gone; exiting");
            return Ok(());
        }
    }
    let mut signals = Signals::new()?;
    // `[cluster] tls` of the supervisor, in SQUALL_TLS_*: every link of this worker uses it.
    let tls = squall_engine::tls::TlsFiles::from_env()
        .and_then(|f| squall_engine::tls::Tls::load_optional(f.as_ref()))?;
    let client = Client::new(&args.nimbus, &secret).with_tls(tls.as_ref());

    let assignment = tokio::select! {
        fetched = fetch_assignment(&client, &args, parent) => match fetched? {
            Some(assignment) => assignment,
            None => return Ok(()),
        },
        _ = signals.recv() => {
            info!("{name}: stopped by a signal before it started");
            return Ok(());
        }
    };
    if assignment.layout.exactly_once && std::env::var(RESTARTED_ENV).is_ok_and(|v| v == "1") {
        return wait_for_restart(&client, &args, &name, &mut signals).await;
    }
    let (mut plan, hosted) = prepare(&assignment, args.worker, registry)?;
    let checkpointing = open_state(&assignment, registry)
        .map_err(|(backend, message)| WorkerError::State { worker: name.clone(), backend, message })?;
    plan.resources = args.resources.as_deref().map(Into::into);
    let spout_tasks = hosted.iter().filter(|&&t| plan_role(&plan, t) == Some(Role::Spout)).count();

    let (peers_tx, peers_rx) = watch::channel(vec![None; assignment.workers.len()]);
    let bind_addr = resolve(&args.host, args.port).await?;
    let link_secret = squall_engine::auth::Secret::new(&secret);
    let mut transport = Transport::bind_with(
        bind_addr,
        &link_secret,
        &args.topology,
        assignment.routing_version(),
        args.worker,
        peers_rx,
        TransportOptions { tls, ..Default::default() },
    )
    .await
    .map_err(|source| WorkerError::Bind { worker: name.clone(), addr: bind_addr, source })?;
    let addr = transport.local_addr();
    info!(
        "{name}: listening on {addr}, hosting {} of {} tasks ({spout_tasks} spout tasks)",
        hosted.len(),
        plan.task_count()
    );

    let mut follower = Follower::new(peers_tx);
    let beat = |tasks, taps, taken_ms| WorkerHeartbeat {
        topology: args.topology.clone(),
        version: args.version,
        worker: args.worker,
        addr,
        tasks,
        restarted: false,
        taken_ms,
        taps,
    };
    let mut outage = Outage::default();
    match client.worker_heartbeat(&beat(Vec::new(), Vec::new(), 0)).await {
        Ok(reply) => {
            if follower.apply(reply) == Some(WorkerControl::Stop) {
                info!("{name}: nimbus says this assignment is over; exiting before starting");
                return Ok(());
            }
        }
        Err(e) => outage.failed(&name, &e),
    }

    let mut running = launch::start(&plan, registry, &hosted, Some(&mut transport), checkpointing.as_ref())
        .map_err(|source| WorkerError::Start { worker: name.clone(), source })?;
    let mut tap_feed = TapFeed::new(&plan, &hosted, running.taps.clone());
    if follower.control == WorkerControl::Inactive {
        let _ = running.control.send(Control::Inactive);
    }
    info!("{name}: started ({})", follower.control_name());

    // Figures are read at moments every worker shares (see `next_moment`).
    let period = heartbeat_every();
    let mut moment = next_moment(wall_ms(), period);
    let mut parent_check = tokio::time::interval(PARENT_CHECK);
    parent_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut in_flight: Option<BeatInFlight> = None;
    // The routing this worker's links speak, and the assignment being fetched to switch to
    // a newer one (a live rebalance that keeps this worker).
    let mut routing = assignment.routing_version();
    let mut switching: Option<AssignmentInFlight> = None;

    let reason = loop {
        tokio::select! {
            joined = running.tasks.join_next(), if !running.tasks.is_empty() => {
                if let Some(joined) = joined {
                    if let Some(failure) = task_failure(joined) {
                        error!("{name}: {failure}; exiting");
                        return Err(WorkerError::TaskFailed { worker: name, failure });
                    }
                }
            }
            _ = rollback_asked(checkpointing.as_ref()) => {
                running.tasks.abort_all();
                return Err(WorkerError::Rollback { worker: name });
            }
            _ = tokio::time::sleep(Duration::from_millis(moment.saturating_sub(wall_ms()))) => {
                let taken_ms = moment;
                // Past this moment, even if the sleep ended a little early.
                moment = next_moment(wall_ms().max(taken_ms), period);
                if in_flight.is_none() {
                    let client = client.clone();
                    let beat = beat(running.metrics.figures(&running.hosted), tap_feed.take(), taken_ms);
                    in_flight = Some(Box::pin(async move { client.worker_heartbeat(&beat).await }));
                }
            }
            reply = async { in_flight.as_mut().expect("guarded by is_some").await }, if in_flight.is_some() => {
                in_flight = None;
                match reply {
                    Ok(reply) => {
                        outage.recovered(&name);
                        tap_feed.follow(&reply.taps);
                        let rerouted = reply.routing != 0 && reply.routing != routing;
                        if rerouted && switching.is_none() {
                            let client = client.clone();
                            let topology = args.topology.clone();
                            switching = Some(Box::pin(async move { client.assignment(&topology).await }));
                        }
                        match follower.apply(reply) {
                            Some(WorkerControl::Stop) => break StopReason::Nimbus,
                            // Spouts wake up only once the new routing is in place (see the
                            // switch below): what they emit goes where the new plan says.
                            Some(WorkerControl::Active) if rerouted => {}
                            Some(WorkerControl::Active) => {
                                info!("{name}: activated");
                                let _ = running.control.send(Control::Active);
                            }
                            Some(WorkerControl::Inactive) => {
                                info!("{name}: deactivated");
                                let _ = running.control.send(Control::Inactive);
                            }
                            None => {}
                        }
                    }
                    Err(e) => outage.failed(&name, &e),
                }
            }
            fetched = async { switching.as_mut().expect("guarded by is_some").await }, if switching.is_some() => {
                switching = None;
                let next = match fetched {
                    Ok(next) => next,
                    Err(e) => {
                        // The next heartbeat asks again.
                        warn!("{name}: cannot fetch the rebalanced assignment yet: {e}");
                        continue;
                    }
                };
                if args.worker >= next.workers.len() || next.started_version(args.worker) != args.version {
                    // Not kept: nimbus stops this worker (and says so in its next reply).
                    continue;
                }
                if next.routing_version() == routing {
                    if follower.control == WorkerControl::Active {
                        let _ = running.control.send(Control::Active);
                    }
                    continue;
                }
                match switch(&next, args.worker, registry, &mut running, &mut transport, &args) {
                    Ok((next_plan, added, removed)) => {
                        routing = next.routing_version();
                        if follower.control == WorkerControl::Active {
                            let _ = running.control.send(Control::Active);
                        }
                        tap_feed = TapFeed::new(&next_plan, &running.hosted, running.taps.clone());
                        info!(
                            "{name}: switched live to routing version {routing}: hosting {} tasks \
                             ({added} started, {removed} retired)",
                            running.hosted.len()
                        );
                    }
                    Err(failure) => {
                        // Started again by its supervisor, it runs the new assignment anew.
                        error!("{name}: cannot switch live to the rebalanced assignment: {failure}; exiting");
                        return Err(WorkerError::TaskFailed { worker: name, failure });
                    }
                }
            }
            _ = parent_check.tick() => {
                if parent_pid() != parent {
                    break StopReason::Orphaned;
                }
            }
            _ = signals.recv() => break StopReason::Signal,
        }
    };
    info!("{name}: {reason}; stopping gracefully");
    running.release_links();
    let left = graceful_stop(running.tasks, &running.control, &transport, &name).await;
    drop(running.metrics);
    if left > 0 {
        warn!("{name}: {left} tasks did not end in time; stopped them");
    } else {
        info!("{name}: stopped");
    }
    Ok(())
}

/// Switches `running` live to assignment `next` (its routing changed, this worker kept):
/// the new plan, and how many tasks started and retired here. An error leaves the worker to
/// exit, and its supervisor to start it anew on `next`.
fn switch(
    next: &Assignment,
    me: usize,
    registry: &Registry,
    running: &mut Running,
    transport: &mut Transport,
    args: &WorkerArgs,
) -> Result<(Plan, usize, usize), String> {
    let (mut plan, hosted) = prepare(next, me, registry).map_err(|e| e.to_string())?;
    plan.resources = args.resources.as_deref().map(Into::into);
    let before = running.hosted.clone();
    let added = hosted.iter().filter(|t| !before.contains(t)).count();
    let removed = before.iter().filter(|t| !hosted.contains(t)).count();
    running
        .rewire(std::sync::Arc::new(plan.clone()), registry, &hosted, next.routing_version(), transport)
        .map_err(|e| e.to_string())?;
    Ok((plan, added, removed))
}

/// Fetches the assignment; `None` if this worker is stale (another version is current, or the
/// topology is gone) or its parent died while it waited.
async fn fetch_assignment(
    client: &Client,
    args: &WorkerArgs,
    parent: i32,
) -> Result<Option<Assignment>, WorkerError> {
    let name = format!("worker {} of {} v{}", args.worker, args.topology, args.version);
    let deadline = Instant::now() + ASSIGNMENT_PATIENCE;
    let mut warned = false;
    loop {
        match client.assignment(&args.topology).await {
            // A worker the current assignment kept runs under the version it was started with.
            Ok(a) if args.worker >= a.workers.len() || a.started_version(args.worker) != args.version => {
                info!(
                    "{name}: the current assignment is version {}; this worker is stale, exiting",
                    a.version
                );
                return Ok(None);
            }
            Ok(a) => return Ok(Some(a)),
            Err(e) if e.is_not_found() => {
                info!("{name}: nimbus no longer knows {}; exiting", args.topology);
                return Ok(None);
            }
            Err(e @ ClientError::Refused { status, .. }) if status < 500 => {
                return Err(WorkerError::AssignmentRefused { worker: name, source: e });
            }
            Err(e) => {
                if Instant::now() >= deadline {
                    return Err(WorkerError::AssignmentUnreachable { worker: name, source: e });
                }
                if !warned {
                    warn!("{name}: cannot fetch the assignment yet ({e}); retrying");
                    warned = true;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if parent_pid() != parent {
            info!("{name}: our supervisor is gone; exiting");
            return Ok(None);
        }
    }
}

/// The plan of `assignment` as worker `me` runs it, and the tasks it hosts.
/// A restarted worker of an exactly-once topology: its tasks' state would be behind the
/// others', so it runs none; it tells nimbus, which starts every worker of the topology again
/// from the last committed checkpoint (a new assignment), and exits once nimbus says so.
async fn wait_for_restart(
    client: &Client,
    args: &WorkerArgs,
    name: &str,
    signals: &mut Signals,
) -> Result<(), WorkerError> {
    warn!("{name}: restarted with exactly-once state; asking nimbus to restart the topology from its last checkpoint");
    let beat = WorkerHeartbeat {
        topology: args.topology.clone(),
        version: args.version,
        worker: args.worker,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        tasks: Vec::new(),
        restarted: true,
        taken_ms: 0,
        taps: Vec::new(),
    };
    loop {
        match client.worker_heartbeat(&beat).await {
            Ok(reply) if reply.control == WorkerControl::Stop => return Ok(()),
            Ok(_) => {}
            Err(e) => warn!("{name}: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(heartbeat_every()) => {}
            _ = signals.recv() => return Ok(()),
        }
    }
}

/// Resolves when a tree fails with exactly-once state (never otherwise).
async fn rollback_asked(checkpointing: Option<&Checkpointing>) {
    match checkpointing {
        Some(c) if c.guarantee == squall_api::Guarantee::ExactlyOnce => c.restart.notified().await,
        _ => std::future::pending().await,
    }
}

/// The state backend of an assignment's topology, if it has stateful bolts.
fn open_state(
    assignment: &Assignment,
    registry: &Registry,
) -> Result<Option<Checkpointing>, (String, String)> {
    let file = format!("{} (from nimbus)", assignment.topology);
    match topology::load_str(&file, &assignment.text, &|_| None, registry) {
        Ok(mut def) => {
            assignment.layout.apply(&mut def);
            Checkpointing::open(&def, registry)
        }
        // `prepare` reported it already.
        Err(_) => Ok(None),
    }
}

fn prepare(
    assignment: &Assignment,
    me: usize,
    registry: &Registry,
) -> Result<(Plan, Vec<TaskId>), WorkerError> {
    let file = format!("{} (from nimbus)", assignment.topology);
    let mut def = topology::load_str(&file, &assignment.text, &|_| None, registry).map_err(|d| {
        let first = d.0.first().map(|d| d.to_string()).unwrap_or_else(|| format!("{file}: invalid"));
        WorkerError::Load { first, more: d.0.len().saturating_sub(1) }
    })?;
    assignment.layout.apply(&mut def);
    let ackers = if def.settings.acking { def.settings.ackers.max(1) } else { 0 };
    let planned =
        def.components().map(|c| c.parallelism).sum::<usize>() + ackers + usize::from(def.checkpoints());
    let assigned = assignment.layout.task_count();
    if planned != assigned {
        return Err(WorkerError::TaskCountMismatch { file, planned, assigned });
    }
    let mut plan = Plan::numbered(&def, &assignment.layout.numbering())?;
    let slot = assignment.workers.get(me).ok_or_else(|| WorkerError::NoSuchWorker {
        file: file.clone(),
        workers: assignment.workers.len(),
        me,
    })?;
    plan.task_worker = assignment.task_worker();
    // One deployment across every worker, restart and rebalance of this submission: spouts
    // that persist where they are (kafka-spout) tell a restart from a first start by it.
    plan.id = format!("{}-{}", assignment.topology, assignment.submitted_ms);
    let mut hosted = slot.tasks.clone();
    hosted.sort_unstable();
    hosted.dedup();
    if let Some(&t) = hosted.iter().find(|&&t| t as usize >= plan.task_count() || plan.is_hole(t)) {
        return Err(WorkerError::NoSuchTask { file, me, task: t });
    }
    Ok((plan, hosted))
}

fn plan_role(plan: &Plan, task: TaskId) -> Option<Role> {
    plan.task_component[task as usize].map(|c| plan.components[c].role)
}

/// Follows nimbus's replies: peers to the transport's watch, and the control last heard.
struct Follower {
    peers: watch::Sender<Vec<Option<SocketAddr>>>,
    /// Spouts start active (see [`local::start`]).
    control: WorkerControl,
}

impl Follower {
    fn new(peers: watch::Sender<Vec<Option<SocketAddr>>>) -> Follower {
        Follower { peers, control: WorkerControl::Active }
    }

    /// Publishes the reply's peers if they changed; returns the control if it changed.
    fn apply(&mut self, reply: WorkerReply) -> Option<WorkerControl> {
        let peers = reply.peers;
        self.peers.send_if_modified(|current| {
            if *current == peers {
                return false;
            }
            *current = peers;
            true
        });
        (reply.control != self.control).then(|| {
            self.control = reply.control;
            reply.control
        })
    }

    fn control_name(&self) -> &'static str {
        match self.control {
            WorkerControl::Active => "active",
            WorkerControl::Inactive => "inactive",
            WorkerControl::Stop => "stopping",
        }
    }
}

/// Logs an unreachable nimbus once per outage.
#[derive(Default)]
struct Outage {
    down: bool,
}

impl Outage {
    fn failed(&mut self, name: &str, e: &ClientError) {
        if !self.down {
            warn!("{name}: heartbeat failed ({e}); running on and retrying");
            self.down = true;
        }
    }

    fn recovered(&mut self, name: &str) {
        if self.down {
            info!("{name}: nimbus answers again");
            self.down = false;
        }
    }
}

/// The failure of a task that ended, if it failed.
fn task_failure(joined: Result<Result<(), TaskError>, tokio::task::JoinError>) -> Option<String> {
    match joined {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("task failed: {e}")),
        Err(e) if e.is_panic() => {
            let p = e.into_panic();
            let message = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Some(format!("a task panicked: {message}"))
        }
        Err(_) => None,
    }
}

/// Stops the tasks of a worker (see the module docs); returns how many had to be aborted.
async fn graceful_stop(
    mut tasks: JoinSet<Result<(), TaskError>>,
    control: &watch::Sender<Control>,
    transport: &Transport,
    name: &str,
) -> usize {
    let _ = control.send(Control::Stop);
    // Only spout executors hold a receiver of the control channel (local::start hands it to
    // them alone): once none is left, every local spout task has ended.
    let spouts_ended = tokio::time::timeout(SPOUT_GRACE, control.closed()).await.is_ok();
    if !spouts_ended {
        warn!("{name}: spouts did not end within {SPOUT_GRACE:?}; closing the inbound side anyway");
    }
    transport.close_inbound();
    let deadline = Instant::now() + REST_GRACE;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(joined)) => {
                if let Some(failure) = task_failure(joined) {
                    warn!("{name}: while stopping: {failure}");
                }
            }
            Ok(None) => break,
            Err(_) => break,
        }
    }
    let left = tasks.len();
    tasks.shutdown().await;
    left
}

/// The heartbeat period: `SQUALL_WORKER_HEARTBEAT_MS`, else a second.
/// The first moment after `now_ms` that is a multiple of `period` on the wall clock: the
/// moments every worker of the cluster reads its figures at (clocks kept by NTP agree to a
/// few milliseconds), so that nimbus sums figures of one moment.
fn next_moment(now_ms: u64, period: Duration) -> u64 {
    let period = (period.as_millis() as u64).max(1);
    (now_ms / period + 1) * period
}

/// Now on the wall clock, in milliseconds since the epoch.
fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn heartbeat_every() -> Duration {
    heartbeat_from(std::env::var(HEARTBEAT_ENV).ok().as_deref())
}

fn heartbeat_from(value: Option<&str>) -> Duration {
    match value.map(|v| v.trim().parse::<u64>()) {
        None => DEFAULT_HEARTBEAT,
        Some(Ok(ms)) if ms > 0 => Duration::from_millis(ms),
        Some(_) => {
            warn!("{HEARTBEAT_ENV} must be a number of milliseconds above 0; using {DEFAULT_HEARTBEAT:?}");
            DEFAULT_HEARTBEAT
        }
    }
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, WorkerError> {
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| WorkerError::Resolve { host: host.to_string(), source })?
        .next()
        .ok_or_else(|| WorkerError::NoAddress { host: host.to_string() })
}

fn parent_pid() -> i32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    unsafe { libc::getppid() }
}

/// SIGTERM and SIGINT.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> Result<Signals, WorkerError> {
        let listen = |kind| signal(kind).map_err(WorkerError::Signals);
        Ok(Signals { term: listen(SignalKind::terminate())?, int: listen(SignalKind::interrupt())? })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    use squall_api::{
        async_trait, values, BasicBolt, BasicCollector, BoxError, NoConfig, OutputDeclarer, Spout,
        SpoutCollector, Tuple,
    };

    use super::*;
    use crate::{Layout, WorkerSlot};

    /// Counts up forever, reliably.
    struct Counter {
        next: u64,
    }

    #[async_trait]
    impl Spout for Counter {
        fn declare_outputs(&self, out: &mut OutputDeclarer) {
            out.declare(["n"]);
        }
        async fn next_tuple(&mut self, out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
            out.emit_with_id(values![self.next as i64], (self.next as i64).into())?;
            self.next += 1;
            Ok(())
        }
    }

    /// Counts what it sees; raises a flag in cleanup.
    struct Sink {
        seen: Arc<AtomicU64>,
        cleaned: Arc<AtomicBool>,
    }

    #[async_trait]
    impl BasicBolt for Sink {
        async fn execute(&mut self, _input: &Tuple, _out: &mut BasicCollector<'_>) -> Result<(), BoxError> {
            self.seen.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        async fn cleanup(&mut self) {
            self.cleaned.store(true, Ordering::Relaxed);
        }
    }

    fn registry(seen: &Arc<AtomicU64>, cleaned: &Arc<AtomicBool>) -> Registry {
        let mut r = Registry::new();
        r.spout("counter", |_: NoConfig| Ok(Counter { next: 0 }));
        let (seen, cleaned) = (seen.clone(), cleaned.clone());
        r.basic_bolt("sink", move |_: NoConfig| Ok(Sink { seen: seen.clone(), cleaned: cleaned.clone() }));
        r
    }

    const TEXT: &str = r#"
name = "t"
workers = 2

[[spouts]]
id = "numbers"
kind = "counter"
parallelism = 2

[[bolts]]
id = "sink"
kind = "sink"
parallelism = 2
inputs = [{ from = "numbers", grouping = "shuffle" }]
"#;

    /// An assignment of TEXT: tasks 0..=4 (2 spouts, 2 sinks, 1 acker) over `placement`.
    fn assignment(registry: &Registry, placement: &[&[TaskId]]) -> Assignment {
        let def = topology::load_str("t.toml", TEXT, &|_| None, registry).unwrap();
        Assignment {
            topology: "t".into(),
            version: 3,
            submitted_ms: 1,
            artifact: "0".repeat(64),
            resources: None,
            text: TEXT.into(),
            layout: Layout::of(&def),
            workers: placement
                .iter()
                .enumerate()
                .map(|(i, tasks)| WorkerSlot {
                    supervisor: "s".into(),
                    slot: i,
                    port: 0,
                    tasks: tasks.to_vec(),
                })
                .collect(),
            routing: 0,
            started: Vec::new(),
        }
    }

    fn flags() -> (Arc<AtomicU64>, Arc<AtomicBool>) {
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)))
    }

    #[test]
    fn prepare_hosts_the_workers_tasks_and_places_the_rest() {
        let (seen, cleaned) = flags();
        let registry = registry(&seen, &cleaned);
        let a = assignment(&registry, &[&[0, 2, 4], &[1, 3]]);
        let (plan, hosted) = prepare(&a, 1, &registry).unwrap();
        assert_eq!(hosted, vec![1, 3]);
        assert_eq!(plan.task_worker, vec![0, 1, 0, 1, 0]);
        let (_, hosted) = prepare(&a, 0, &registry).unwrap();
        assert_eq!(hosted, vec![0, 2, 4]);
        let err = prepare(&a, 2, &registry).unwrap_err();
        assert!(matches!(err, WorkerError::NoSuchWorker { .. }), "{err}");
        assert!(err.to_string().contains("no worker 2"), "{err}");
    }

    #[test]
    fn prepare_applies_a_rebalanced_layout() {
        let (seen, cleaned) = flags();
        let registry = registry(&seen, &cleaned);
        let mut a = assignment(&registry, &[&[]]);
        a.layout.workers = 1;
        a.layout.components[1].parallelism = 3;
        a.workers[0].tasks = (0..6).collect();
        let (plan, hosted) = prepare(&a, 0, &registry).unwrap();
        assert_eq!(plan.workers, 1);
        assert_eq!(plan.components[1].tasks, vec![2, 3, 4]);
        assert_eq!(plan.acker_tasks, vec![5]);
        assert_eq!(hosted.len(), 6);
    }

    #[test]
    fn prepare_refuses_what_this_binary_cannot_run_in_one_line() {
        let (seen, cleaned) = flags();
        let registry = registry(&seen, &cleaned);
        let mut a = assignment(&registry, &[&[0, 1, 2, 3, 4]]);
        a.text = a.text.replace("kind = \"sink\"", "kind = \"nope\"").replace("\"counter\"", "\"nada\"");
        let err = prepare(&a, 0, &registry).unwrap_err().to_string();
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains("t (from nimbus):") && err.contains("(and 1 more)"), "{err}");

        let mut a = assignment(&registry, &[&[0, 1, 2, 3, 4]]);
        a.layout.ackers = 2;
        let err = prepare(&a, 0, &registry).unwrap_err();
        assert!(matches!(err, WorkerError::TaskCountMismatch { .. }), "{err}");
        assert!(err.to_string().contains("5 tasks but its assignment places 6"), "{err}");
    }

    #[test]
    fn follower_passes_on_only_changes() {
        let (tx, mut rx) = watch::channel(vec![None, None]);
        let mut f = Follower::new(tx);
        let a: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let reply = |control, peers: Vec<Option<SocketAddr>>| WorkerReply {
            control,
            peers,
            taps: Vec::new(),
            routing: 0,
        };

        assert_eq!(f.apply(reply(WorkerControl::Active, vec![None, None])), None);
        assert!(!rx.has_changed().unwrap(), "the same peers are not published again");

        assert_eq!(
            f.apply(reply(WorkerControl::Inactive, vec![Some(a), None])),
            Some(WorkerControl::Inactive)
        );
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), vec![Some(a), None]);

        assert_eq!(f.apply(reply(WorkerControl::Inactive, vec![Some(a), None])), None);
        assert!(!rx.has_changed().unwrap());
        assert_eq!(f.apply(reply(WorkerControl::Active, vec![Some(a), None])), Some(WorkerControl::Active));
        assert_eq!(f.apply(reply(WorkerControl::Stop, vec![Some(a), None])), Some(WorkerControl::Stop));
    }

    #[test]
    fn figures_are_read_at_moments_every_worker_shares() {
        let second = Duration::from_secs(1);
        assert_eq!(next_moment(1_700_000_000_123, second), 1_700_000_001_000);
        assert_eq!(next_moment(1_700_000_001_000, second), 1_700_000_002_000, "strictly after");
        assert_eq!(next_moment(1_234, Duration::from_millis(250)), 1_250);
        assert_eq!(next_moment(5, Duration::ZERO), 6);
    }

    #[test]
    fn heartbeat_period_comes_from_the_environment_value() {
        assert_eq!(heartbeat_from(None), Duration::from_secs(1));
        assert_eq!(heartbeat_from(Some("250")), Duration::from_millis(250));
        assert_eq!(heartbeat_from(Some("0")), Duration::from_secs(1));
        assert_eq!(heartbeat_from(Some("fast")), Duration::from_secs(1));
    }

    #[test]
    fn a_panic_or_an_error_is_a_failure_and_a_clean_end_is_not() {
        assert_eq!(task_failure(Ok(Ok(()))), None);
        let e = TaskError { component: "sink".into(), task: 3, message: "boom".into() };
        assert_eq!(task_failure(Ok(Err(e))).unwrap(), "task failed: sink task 3: boom");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn graceful_stop_ends_spouts_then_bolts_and_runs_cleanup() {
        let (seen, cleaned) = flags();
        let registry = registry(&seen, &cleaned);
        let a = assignment(&registry, &[&[0, 1, 2, 3, 4]]);
        let (plan, hosted) = prepare(&a, 0, &registry).unwrap();
        let (_peers_tx, peers_rx) = watch::channel(vec![None]);
        let mut transport = Transport::bind(
            "127.0.0.1:0".parse().unwrap(),
            &squall_engine::auth::Secret::new("s"),
            "t",
            3,
            0,
            peers_rx,
        )
        .await
        .unwrap();
        let Running { tasks, control, metrics, .. } =
            launch::start(&plan, &registry, &hosted, Some(&mut transport), None).unwrap();
        let started = Instant::now();
        while seen.load(Ordering::Relaxed) < 100 {
            assert!(started.elapsed() < Duration::from_secs(10), "the topology does not run");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stopping = Instant::now();
        let left = graceful_stop(tasks, &control, &transport, "test").await;
        assert_eq!(left, 0, "every task ended by itself");
        assert!(stopping.elapsed() < SPOUT_GRACE, "took {:?}", stopping.elapsed());
        assert!(cleaned.load(Ordering::Relaxed), "bolts' cleanup ran");
        let acked: u64 = metrics.figures(&[0, 1]).iter().map(|f| f.acked).sum();
        let emitted: u64 = metrics.figures(&[0, 1]).iter().map(|f| f.emitted).sum();
        assert_eq!(acked, emitted, "in-flight trees drained before the end");
    }
}
