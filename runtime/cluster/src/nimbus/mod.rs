//! Nimbus: the cluster's coordinator (`squall nimbus`).
//!
//! Contract: [`run`] refuses to start with the default secret `change-me` unless both
//! where it listens and `[ui] listen` are loopback addresses (and warns on loopback); it
//! binds `[nimbus] listen`, by default the first `[cluster] nimbus` seed (port 0: any free port), prints one line
//! `nimbus listening on <addr>` to stderr, and serves the HTTP API of [`crate`]
//! until SIGINT or SIGTERM; [`serve`] does the same on a given listener until a given future
//! ends (for in-process use). Every request must be signed with `[cluster] secret` as
//! [`squall_engine::auth`] says (the secret itself never travels): a missing, wrong, stale
//! (clock skew over [`squall_engine::auth::MAX_SKEW`]) or replayed signature, or a body that
//! is not the one signed, is refused with 401 and a one-line reason; so is the secret in
//! clear in [`SECRET_HEADER`], as older clients sent it. Errors are one-line JSON
//! `{"error": …}`: 400 for a bad request, 401, 404 for an unknown topology or artifact, 409
//! for a state conflict, 413 for an artifact over [`MAX_ARTIFACT_BYTES`], 500 if the state
//! directory cannot be written. [`run`] also binds `[ui] listen`, prints `ui listening on
//! http://<addr>/`, and serves there the web UI, the Storm-style REST API and `/metrics`
//! (`squall_ui`, over the views of [`observe`]); [`serve`] serves the API alone. With
//! `[cluster] tls` both ports speak TLS only (`https://` in that line) and refuse, during the
//! handshake, a client without a certificate signed by its `ca`; a bad PEM file stops [`run`]
//! before it listens, with one line naming the key and the file.
//!
//! Storm's nimbus semantics:
//! - Topologies, their assignments and artifacts live in the state directory
//!   ([`super::state`]); every change is persisted before it is answered or acted on, and a
//!   restarted nimbus resumes from it. When a topology is removed, the artifacts (and
//!   resources) no remaining topology refers to are deleted. Supervisors and worker heartbeats are memory only.
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
//!   assignment (killing ones included) are taken. A new assignment keeps every task it can
//!   where it was ([`crate::scheduler::reschedule`]); when its routing is unchanged (a lost
//!   supervisor's workers moved whole, a rebalance that moves no task), the workers that stay
//!   on their slot keep running under the version they were started with (unless the
//!   topology has exactly-once state, where every worker starts again from the last
//!   checkpoint). A live rebalance (only the worker count or components' parallelism
//!   changed, every task kept its id, no checkpoint coordinator) keeps running, under a new
//!   routing version, every worker that stays on its slot; any other layout change (the
//!   ackers, a renumbering) starts every worker again (see `coordinator::kept_workers`).
//! - A supervisor's heartbeat reply orders exactly the workers that current assignments place
//!   on it (each under the version it was started with). A worker's heartbeat reply says
//!   Stop if its topology is gone or the current assignment does not run it under its
//!   version, Inactive while the topology is not Active, else Active, with the address
//!   each worker of the current assignment last reported and that assignment's routing
//!   version (a kept worker on an older one switches to it live).
//!
//! Connections are bounded as [`squall_ui::bounded`] says, as on the UI's port: a client that
//! sends no request headers within 10 s is closed, at most 1,024 are open at once.
//!
//! With `[cluster] coordination` (see [`ha`]): the records live in etcd instead of the state
//! directory (artifacts stay there), and only the elected leader serves the API; every
//! request to another nimbus is answered 503 `{"error": "not the leader; leader is ADDR",
//! "leader": ADDR}` (or `"no nimbus leads yet"` without `leader`), which the client follows.
//! `[nimbus] listen` (default: the first `[cluster] nimbus` seed) is where it listens.
//!
//! One mutex guards the state; it is never held across an await (state files are written
//! with blocking calls inside it: they are small and requests are rare).

use std::collections::{HashMap, HashSet};
use std::future::Future;
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
use squall_api::{Role, TaskId};
use tokio::net::TcpListener;

use super::artifacts::{self, ArtifactError};
use super::client::ErrorBody;
use super::config::ClusterConfig;
use super::state::{self, StateDir, StateError, Store, TopologyRecord};
use super::*;

mod api;
mod coordinator;
pub mod ha;
mod moments;
mod observe;
mod tap;
#[cfg(test)]
mod tests;

use api::*;
use coordinator::{Change, Coordinator};

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

/// Why nimbus cannot start, or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum NimbusError {
    #[error("[cluster] secret must not be empty")]
    EmptySecret,
    /// The default secret off loopback: the line says what to set.
    #[error("{0}")]
    DefaultSecret(String),
    /// The state directory cannot be opened or read.
    #[error(transparent)]
    State(#[from] StateError),
    /// `signal` is SIGINT or SIGTERM.
    #[error("cannot listen for {signal}: {source}")]
    Signal { signal: &'static str, source: std::io::Error },
    /// `[cluster] nimbus` cannot be bound.
    #[error("nimbus cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    /// The bound listener has no local address.
    #[error("nimbus cannot listen: {0}")]
    LocalAddr(std::io::Error),
    #[error("nimbus stopped serving: {0}")]
    Serve(std::io::Error),
    /// `[cluster] tls` cannot be loaded: the line names the key and the file.
    #[error(transparent)]
    Tls(#[from] squall_engine::tls::TlsError),
}

/// Runs nimbus as `squall nimbus` does (see the module docs).
pub async fn run(config: ClusterConfig) -> Result<(), NimbusError> {
    use tokio::signal::unix::{signal, SignalKind};
    // Off loopback, anyone who can reach nimbus (or its UI's actions) would know the default.
    let mut warnings = Vec::new();
    for (who, listen) in
        [("nimbus", config.nimbus_listen()), ("nimbus's ui ([ui] listen)", &config.ui.listen)]
    {
        let checked = squall_engine::auth::check_default_secret(&config.cluster.secret, who, listen);
        warnings.extend(checked.map_err(NimbusError::DefaultSecret)?);
    }
    // Refused before any warning; the same default on both addresses is one warning.
    if let Some(warning) = warnings.first() {
        eprintln!("{warning}");
    }
    let nimbus = Nimbus::open(&config)?;
    let tls = config.tls()?;
    let listen = |kind, name: &'static str| {
        signal(kind).map_err(|source| NimbusError::Signal { signal: name, source })
    };
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT")?;
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM")?;
    let listen = config.nimbus_listen();
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| NimbusError::Bind { addr: listen.to_string(), source })?;
    let addr = listener.local_addr().map_err(NimbusError::LocalAddr)?;
    eprintln!("nimbus listening on {addr}");
    let electing = start_electing(&nimbus, &config, listen, addr, tls.clone());
    let ui = serve_ui(&nimbus, &config, tls.clone()).await?;
    let shutdown = async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    };
    let served = serve_nimbus(nimbus, listener, tls, shutdown).await;
    ui.abort();
    if let Some(electing) = electing {
        electing.abort();
    }
    served
}

/// Starts serving the web UI, REST API and metrics on `[ui] listen` (see [`observe`]).
async fn serve_ui(
    nimbus: &Arc<Nimbus>,
    config: &ClusterConfig,
    tls: Option<squall_engine::tls::Tls>,
) -> Result<tokio::task::JoinHandle<()>, NimbusError> {
    let listener = TcpListener::bind(&config.ui.listen)
        .await
        .map_err(|source| NimbusError::Bind { addr: config.ui.listen.clone(), source })?;
    let addr = listener.local_addr().map_err(NimbusError::LocalAddr)?;
    eprintln!("ui listening on {}://{addr}/", if tls.is_some() { "https" } else { "http" });
    let options =
        squall_ui::UiOptions { secret: config.cluster.secret.clone(), public_read: config.ui.public_read() };
    let router = squall_ui::router(Arc::new(observe::NimbusSource(nimbus.clone())), options);
    Ok(tokio::spawn(async move {
        if let Err(e) = squall_ui::server::serve_tls(listener, router, tls, std::future::pending()).await {
            tracing::error!("the ui stopped serving: {e}");
        }
    }))
}

/// Serves nimbus on `listener` until `shutdown` completes (see the module docs). Loads the
/// state directory first; an unreadable state is an error.
pub async fn serve(
    config: ClusterConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NimbusError> {
    let tls = config.tls()?;
    let nimbus = Nimbus::open(&config)?;
    let addr = listener.local_addr().map_err(NimbusError::LocalAddr)?;
    let electing = start_electing(&nimbus, &config, config.nimbus_listen(), addr, tls.clone());
    let served = serve_nimbus(nimbus, listener, tls, shutdown).await;
    if let Some(electing) = electing {
        electing.abort();
    }
    served
}

/// With coordination, starts this nimbus's part in the election ([`ha::lead_or_follow`]),
/// known to the others as `listen`, or as `addr` (where it listens) if `listen`'s port is 0.
fn start_electing(
    nimbus: &Arc<Nimbus>,
    config: &ClusterConfig,
    listen: &str,
    addr: std::net::SocketAddr,
    tls: Option<squall_engine::tls::Tls>,
) -> Option<tokio::task::JoinHandle<()>> {
    let store = nimbus.ha.clone()?;
    let me = if listen.ends_with(":0") { addr.to_string() } else { listen.to_string() };
    Some(tokio::spawn(ha::lead_or_follow(nimbus.clone(), store, me, config.cluster.secret.clone(), tls)))
}

async fn serve_nimbus(
    nimbus: Arc<Nimbus>,
    listener: TcpListener,
    tls: Option<squall_engine::tls::Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NimbusError> {
    let ticker = {
        let nimbus = nimbus.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(RECONCILE_EVERY);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if !nimbus.leading() {
                    continue;
                }
                let nimbus = nimbus.clone();
                let _ = tokio::task::spawn_blocking(move || nimbus.lock().reconcile()).await;
            }
        })
    };
    let limits = squall_ui::bounded::Limits::default();
    let served = squall_ui::bounded::serve_tls(listener, router(nimbus), limits, tls, shutdown).await;
    ticker.abort();
    served.map_err(NimbusError::Serve)
}

struct Nimbus {
    /// What requests are signed with.
    secret: squall_engine::auth::Secret,
    /// The nonces of the signed requests within the allowed skew.
    replays: Mutex<squall_engine::auth::ReplayGuard>,
    state: Arc<StateDir>,
    inner: Mutex<Inner>,
    /// What the UI alone needs (worker restarts).
    observed: observe::Observed,
    /// The open `squall tap`s.
    taps: tap::TapRelay,
    /// With `[cluster] coordination`: the records in etcd, and whether this nimbus leads.
    ha: Option<Arc<ha::EtcdStore>>,
    role: Mutex<ha::Role>,
}

/// The coordinator and the store its changes are persisted to, under one mutex.
struct Inner {
    /// The artifacts.
    state: Arc<StateDir>,
    /// The topology records: the state directory, or etcd.
    store: Arc<dyn Store>,
    core: Coordinator,
}

/// The handlers read and change the coordinator's state through the lock.
impl std::ops::Deref for Inner {
    type Target = Coordinator;

    fn deref(&self) -> &Coordinator {
        &self.core
    }
}

impl std::ops::DerefMut for Inner {
    fn deref_mut(&mut self) -> &mut Coordinator {
        &mut self.core
    }
}

/// Writes a coordinator's change to the store.
fn persist(state: &dyn Store, change: Change<'_>) -> Result<(), StateError> {
    match change {
        Change::Save(record) => state.save(record),
        Change::Remove(name) => state.remove(name),
    }
}

impl Inner {
    /// Saves `record` and makes it the current one.
    fn commit(&mut self, record: TopologyRecord) -> Result<(), StateError> {
        let store = &*self.store;
        self.core.commit(record, &mut |c| persist(store, c))
    }

    /// Removes the topology `name` durably.
    fn remove(&mut self, name: &str) -> Result<(), StateError> {
        let before = self.artifacts_in_use();
        let store = &*self.store;
        let removed = self.core.remove(name, &mut |c| persist(store, c));
        self.delete_artifacts_no_longer_used(before);
        removed
    }

    /// A reconcile pass now (see [`Coordinator::reconcile`]).
    fn reconcile(&mut self) {
        let (count, before) = (self.core.topologies.len(), self.artifacts_in_use());
        let store = &*self.store;
        self.core.reconcile(Instant::now(), state::now_ms(), &mut |c| persist(store, c));
        if self.core.topologies.len() < count {
            self.delete_artifacts_no_longer_used(before);
        }
    }

    /// The artifacts and resources the topologies refer to.
    fn artifacts_in_use(&self) -> HashSet<String> {
        let records = self.core.topologies.values();
        records.flat_map(|r| [Some(&r.artifact), r.resources.as_ref()]).flatten().cloned().collect()
    }

    /// Deletes those of `before` that no topology refers to any more (several may share one).
    /// Artifacts uploaded for a submit still to come are not in `before`, so never deleted.
    fn delete_artifacts_no_longer_used(&self, before: HashSet<String>) {
        let now = self.artifacts_in_use();
        for sha256 in before.difference(&now) {
            match self.state.artifacts().remove(sha256) {
                Ok(true) => tracing::info!("artifact {sha256} deleted: no topology refers to it"),
                Ok(false) => {}
                Err(e) => tracing::warn!("cannot delete artifact {sha256}: {e}"),
            }
        }
    }
}

impl Nimbus {
    fn open(config: &ClusterConfig) -> Result<Arc<Nimbus>, NimbusError> {
        if config.cluster.secret.is_empty() {
            return Err(NimbusError::EmptySecret);
        }
        let state = Arc::new(StateDir::open(&config.nimbus.state_dir)?);
        // With coordination, the records are etcd's, loaded when this nimbus takes the lead.
        let ha = match &config.cluster.coordination {
            Some(c) => Some(Arc::new(ha::EtcdStore::new(c.etcd.clone())?)),
            None => None,
        };
        let records = if ha.is_some() { Vec::new() } else { state.load()? };
        if !records.is_empty() {
            tracing::info!(
                "nimbus state {}: {} topologies, waiting up to {}s for {} supervisors to heartbeat",
                state.root().display(),
                records.len(),
                config.nimbus.supervisor_timeout_secs,
                records
                    .iter()
                    .filter_map(|r| r.assignment.as_ref())
                    .flat_map(|a| a.workers.iter().map(|w| w.supervisor.as_str()))
                    .collect::<HashSet<_>>()
                    .len()
            );
        }
        let timeout = Duration::from_secs(config.nimbus.supervisor_timeout_secs.max(1));
        let store: Arc<dyn Store> = match &ha {
            Some(etcd) => etcd.clone(),
            None => state.clone(),
        };
        let core = Coordinator::new(records, timeout, Instant::now());
        let inner = Inner { state: state.clone(), store, core };
        let role = if ha.is_some() { ha::Role::Following(None) } else { ha::Role::Alone };
        Ok(Arc::new(Nimbus {
            secret: squall_engine::auth::Secret::new(&config.cluster.secret),
            replays: Mutex::default(),
            state,
            inner: Mutex::new(inner),
            observed: observe::Observed::default(),
            taps: tap::TapRelay::default(),
            ha,
            role: Mutex::new(role),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn role(&self) -> ha::Role {
        self.role.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn set_role(&self, role: ha::Role) {
        *self.role.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = role;
    }

    /// Whether this nimbus decides: always without coordination, else while it leads.
    fn leading(&self) -> bool {
        matches!(self.role(), ha::Role::Alone | ha::Role::Leader)
    }
}
