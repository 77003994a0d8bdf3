//! Nimbus high availability on etcd (`[cluster] coordination = "etcd://…"`).
//!
//! Contract: several nimbus processes share one etcd. Topology records live there under
//! [`TOPOLOGIES`] (`/squall/topologies/<name>`, the JSON of a [`TopologyRecord`]), written
//! only by the leader and only while the leader key [`LEADER_KEY`] still has the create
//! revision it won it at ([`EtcdStore`]): a deposed leader's write is refused, and it stops
//! leading. The leader key holds the leader's API address, attached to a lease of
//! [`LEASE_TTL_SECS`] that the leader keeps alive every [`TICK`]; it vanishes when the leader
//! dies. [`lead_or_follow`] runs the loop of one nimbus:
//! - following: it notes the leader (stderr `nimbus at ME following LEADER`), fetches from it
//!   every artifact and resources archive the stored topologies name that it lacks, deletes
//!   those it holds that none names (killed topologies': a follower is sent no uploads), and only
//!   once it holds them all, and no leader key exists, campaigns (Storm's rule: any nimbus
//!   that may lead can serve every topology's code);
//! - leading (stderr `nimbus at ME leading`): it loads the records from etcd into a fresh
//!   coordinator, whose supervisors named in stored assignments get the supervisor timeout as
//!   grace, so running topologies stay where they are; it steps down (stderr `nimbus at ME no
//!   longer leads: WHY`) when the lease expires, the key is gone or another's, or etcd has not
//!   answered for [`LEASE_TTL_SECS`] less a second.
//!
//! etcd unreachable or restarted: followers keep retrying; a leader that loses etcd for the
//! lease's time steps down and campaigns again once etcd answers.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::etcd::{Campaign, Etcd};
use crate::state::{StateError, Store, TopologyRecord};

use super::coordinator::Coordinator;
use super::Nimbus;

/// The leader key: the leader's API address, under its lease.
pub const LEADER_KEY: &str = "/squall/leader";
/// The prefix of the topology records.
pub const TOPOLOGIES: &str = "/squall/topologies/";
/// The leader's lease: another nimbus may lead this long after the leader died.
pub const LEASE_TTL_SECS: u64 = 5;
/// How often the loop runs (keep-alive, leader check, artifact fetch, campaign).
pub const TICK: Duration = Duration::from_secs(1);

/// This nimbus's part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Role {
    /// No coordination: the one nimbus, always leading.
    Alone,
    Leader,
    /// The leader's address, if one leads.
    Following(Option<String>),
}

/// The leader's address from the leader key's value.
pub fn decode_leader(value: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(value).map_err(|_| "the leader key is not UTF-8".to_string())?;
    crate::config::Seeds::parse(text)
        .ok()
        .filter(|s| s.list().len() == 1)
        .map(|s| s.first().to_string())
        .ok_or_else(|| format!("the leader key holds `{text}`, not a host:port address"))
}

/// The artifacts and resources `records` name.
pub fn named_artifacts(records: &[TopologyRecord]) -> HashSet<String> {
    records.iter().flat_map(|r| [Some(&r.artifact), r.resources.as_ref()]).flatten().cloned().collect()
}

/// The artifacts and resources `records` name that `has` says are missing, each once.
pub fn missing_artifacts(records: &[TopologyRecord], has: impl Fn(&str) -> bool) -> Vec<String> {
    let mut missing: Vec<String> = named_artifacts(records).into_iter().filter(|sha| !has(sha)).collect();
    missing.sort();
    missing
}

/// Topology records in etcd, written only while this nimbus leads (see the module docs). Its
/// calls block: they run on a runtime of their own, so they may be made from anywhere
/// (nimbus persists under its mutex, inside handlers).
pub(super) struct EtcdStore {
    etcd: Arc<Etcd>,
    runtime: Option<tokio::runtime::Runtime>,
    /// The leader key's create revision while this nimbus leads, else 0.
    guard: AtomicI64,
}

fn coordination(e: impl std::fmt::Display) -> StateError {
    StateError::Coordination(e.to_string())
}

impl EtcdStore {
    pub(super) fn new(endpoints: Vec<String>) -> Result<EtcdStore, StateError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("squall-etcd")
            .enable_all()
            .build()
            .map_err(|e| coordination(format!("cannot start the etcd client: {e}")))?;
        Ok(EtcdStore {
            etcd: Arc::new(Etcd::new(endpoints)),
            runtime: Some(runtime),
            guard: AtomicI64::new(0),
        })
    }

    /// Runs `future` on the store's runtime and waits for it.
    fn block<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, StateError> {
        let runtime = self.runtime.as_ref().ok_or_else(|| coordination("the etcd client stopped"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv().map_err(|_| coordination("the etcd client stopped"))
    }

    fn leading_revision(&self) -> Result<i64, StateError> {
        match self.guard.load(Ordering::SeqCst) {
            0 => Err(coordination("this nimbus no longer leads")),
            revision => Ok(revision),
        }
    }

    /// Every record under [`TOPOLOGIES`]; a record that does not parse, or whose key is not
    /// its name, is an error naming the key.
    async fn load_from(etcd: &Etcd) -> Result<Vec<TopologyRecord>, StateError> {
        let mut out = Vec::new();
        for kv in etcd.get_prefix(TOPOLOGIES).await.map_err(coordination)? {
            let record: TopologyRecord = serde_json::from_slice(&kv.value).map_err(|e| {
                coordination(format!("etcd key {} is corrupt ({e}); delete it to go on without it", kv.key))
            })?;
            if kv.key.strip_prefix(TOPOLOGIES) != Some(record.name.as_str()) {
                return Err(coordination(format!("etcd key {} holds topology `{}`", kv.key, record.name)));
            }
            out.push(record);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

impl Store for EtcdStore {
    fn load(&self) -> Result<Vec<TopologyRecord>, StateError> {
        let etcd = self.etcd.clone();
        self.block(async move { EtcdStore::load_from(&etcd).await })?
    }

    fn save(&self, record: &TopologyRecord) -> Result<(), StateError> {
        let revision = self.leading_revision()?;
        let json = serde_json::to_vec(record)
            .map_err(|source| StateError::Encode { name: record.name.clone(), source })?;
        let (etcd, key) = (self.etcd.clone(), format!("{TOPOLOGIES}{}", record.name));
        let written = self.block(async move { etcd.put_guarded(LEADER_KEY, revision, &key, &json).await })?;
        self.written(written)
    }

    fn remove(&self, name: &str) -> Result<(), StateError> {
        let revision = self.leading_revision()?;
        let (etcd, key) = (self.etcd.clone(), format!("{TOPOLOGIES}{name}"));
        let written = self.block(async move { etcd.delete_guarded(LEADER_KEY, revision, &key).await })?;
        self.written(written)
    }
}

impl EtcdStore {
    fn written(&self, written: Result<bool, crate::etcd::EtcdError>) -> Result<(), StateError> {
        match written.map_err(coordination)? {
            true => Ok(()),
            false => {
                self.guard.store(0, Ordering::SeqCst);
                Err(coordination("this nimbus no longer leads (the leader key changed)"))
            }
        }
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The lease this nimbus holds while it leads.
struct Lead {
    lease: i64,
    /// When etcd last confirmed the lease.
    renewed: Instant,
}

/// Runs one nimbus's part in the election until the process ends (see the module docs).
/// `me` is its API address, as clients reach it.
pub(super) async fn lead_or_follow(
    nimbus: Arc<Nimbus>,
    store: Arc<EtcdStore>,
    me: String,
    secret: String,
    tls: Option<squall_engine::tls::Tls>,
) {
    let etcd = Etcd::new(store.etcd.endpoints().split(',').map(str::to_string).collect());
    let fetcher = |leader: &str| Client::new(leader, &secret).with_tls(tls.as_ref());
    let mut lead: Option<Lead> = None;
    let mut said = String::new();
    let mut say = |line: String| {
        if line != said {
            eprintln!("{line}");
            said = line;
        }
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(held) = lead.as_mut() {
            match still_leading(&etcd, held.lease, store.guard.load(Ordering::SeqCst)).await {
                Ok(None) => held.renewed = Instant::now(),
                Ok(Some(why)) => step_down(&nimbus, &store, &etcd, &mut lead, &me, &why, &mut say).await,
                Err(e) if held.renewed.elapsed() >= Duration::from_secs(LEASE_TTL_SECS - 1) => {
                    let why = format!("etcd has not answered for {LEASE_TTL_SECS}s ({e})");
                    step_down(&nimbus, &store, &etcd, &mut lead, &me, &why, &mut say).await
                }
                Err(_) => {}
            }
            continue;
        }
        let holder = match etcd.get(LEADER_KEY).await {
            Ok(holder) => holder,
            Err(e) => {
                nimbus.set_role(Role::Following(None));
                say(format!("nimbus at {me}: cannot reach {e}; retrying"));
                continue;
            }
        };
        let leader = holder.as_ref().and_then(|kv| decode_leader(&kv.value).ok());
        nimbus.set_role(Role::Following(leader.clone()));
        let records = match EtcdStore::load_from(&etcd).await {
            Ok(records) => records,
            Err(e) => {
                say(format!("nimbus at {me}: {e}; retrying"));
                continue;
            }
        };
        let artifacts = nimbus.state.artifacts();
        // A follower is sent no uploads: what no record names (killed topologies') goes, as
        // the leader deletes its own.
        let named = named_artifacts(&records);
        for sha256 in artifacts.stored().into_iter().filter(|sha| !named.contains(sha)) {
            match artifacts.remove(&sha256) {
                Ok(true) => tracing::info!("artifact {sha256} deleted: no topology refers to it"),
                Ok(false) => {}
                Err(e) => tracing::warn!("cannot delete artifact {sha256}: {e}"),
            }
        }
        let mut missing = missing_artifacts(&records, |sha| artifacts.has(sha));
        if let Some(leader) = leader.as_deref().filter(|l| *l != me && !missing.is_empty()) {
            let client = fetcher(leader);
            for sha256 in std::mem::take(&mut missing) {
                let fetched = match client.download_artifact(&sha256).await {
                    Ok(bytes) => artifacts.put(&sha256, &bytes).await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match fetched {
                    Ok(()) => tracing::info!("artifact {sha256} fetched from the leader {leader}"),
                    Err(e) => {
                        tracing::warn!("cannot fetch artifact {sha256} from the leader {leader}: {e}");
                        missing.push(sha256);
                    }
                }
            }
        }
        match (&leader, missing.len()) {
            (Some(leader), 0) => say(format!("nimbus at {me} following {leader}")),
            (Some(leader), n) => {
                say(format!("nimbus at {me} following {leader}; {n} artifacts still to fetch"))
            }
            (None, 0) => {}
            (None, n) => {
                say(format!("nimbus at {me}: no leader, and {n} artifacts missing here: not campaigning"))
            }
        }
        if holder.is_some() || !missing.is_empty() {
            continue;
        }
        match campaign(&etcd, &me).await {
            Ok(Some((lease, revision))) => {
                // Loaded again now that nobody else may write.
                match EtcdStore::load_from(&etcd).await {
                    Ok(records) => {
                        store.guard.store(revision, Ordering::SeqCst);
                        let count = records.len();
                        nimbus.take_lead(records);
                        lead = Some(Lead { lease, renewed: Instant::now() });
                        say(format!(
                            "nimbus at {me} leading ({count} topologies, etcd {})",
                            etcd.endpoints()
                        ));
                    }
                    Err(e) => {
                        let _ = etcd.revoke(lease).await;
                        say(format!("nimbus at {me}: {e}; retrying"));
                    }
                }
            }
            Ok(None) => {}
            Err(e) => say(format!("nimbus at {me}: cannot campaign ({e}); retrying")),
        }
    }
}

/// Puts the leader key with a fresh lease; the lease and the key's create revision if won.
async fn campaign(etcd: &Etcd, me: &str) -> Result<Option<(i64, i64)>, crate::etcd::EtcdError> {
    let lease = etcd.grant(LEASE_TTL_SECS).await?;
    match etcd.campaign(LEADER_KEY, me, lease).await {
        Ok(Campaign::Won { create_revision }) => Ok(Some((lease, create_revision))),
        Ok(Campaign::Lost(_)) => {
            let _ = etcd.revoke(lease).await;
            Ok(None)
        }
        Err(e) => {
            let _ = etcd.revoke(lease).await;
            Err(e)
        }
    }
}

/// Keeps the lease alive and checks the leader key: `Some(why)` once this nimbus no longer
/// leads; an error if etcd did not answer.
async fn still_leading(
    etcd: &Etcd,
    lease: i64,
    revision: i64,
) -> Result<Option<String>, crate::etcd::EtcdError> {
    if etcd.keep_alive(lease).await? <= 0 {
        return Ok(Some("its lease expired".into()));
    }
    Ok(match etcd.get(LEADER_KEY).await? {
        Some(kv) if kv.create_revision == revision && revision != 0 => None,
        Some(_) => Some("another nimbus holds the leader key".into()),
        None => Some("the leader key is gone".into()),
    })
}

async fn step_down(
    nimbus: &Nimbus,
    store: &EtcdStore,
    etcd: &Etcd,
    lead: &mut Option<Lead>,
    me: &str,
    why: &str,
    say: &mut impl FnMut(String),
) {
    store.guard.store(0, Ordering::SeqCst);
    nimbus.set_role(Role::Following(None));
    if let Some(held) = lead.take() {
        let _ = etcd.revoke(held.lease).await;
    }
    say(format!("nimbus at {me} no longer leads: {why}"));
}

impl Nimbus {
    /// Starts leading with `records` (from etcd): a fresh coordinator, supervisors of stored
    /// assignments in grace.
    fn take_lead(&self, records: Vec<TopologyRecord>) {
        let mut inner = self.lock();
        let timeout = inner.core.supervisor_timeout;
        inner.core = Coordinator::new(records, timeout, Instant::now());
        drop(inner);
        self.set_role(Role::Leader);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_key_decodes_to_one_address_or_a_one_line_error() {
        assert_eq!(decode_leader(b"127.0.0.1:6627"), Ok("127.0.0.1:6627".to_string()));
        assert_eq!(decode_leader(b"nimbus-b.example:6628"), Ok("nimbus-b.example:6628".to_string()));
        for bad in [&b"127.0.0.1"[..], b"", b"a:1,b:2", b"\xff\xfe"] {
            let err = decode_leader(bad).unwrap_err();
            assert!(err.contains("leader key") && !err.contains('\n'), "{err}");
        }
    }

    #[tokio::test]
    async fn a_nimbus_that_does_not_lead_refuses_requests_with_503_saying_so() {
        use crate::client::ClientError;
        let dir = crate::state::tests::TempDir::new("ha");
        // etcd on a port nobody listens on: this nimbus never leads.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let mut config = crate::config::ClusterConfig::default();
        config.cluster.secret = "s3cret".into();
        config.nimbus.state_dir = dir.path().to_path_buf();
        config.cluster.coordination = Some(crate::config::Coordination { etcd: vec![dead] });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(super::super::serve(config, listener, async move {
            let _ = stopped.await;
        }));
        let err = Client::new(&addr, "s3cret").list().await.unwrap_err();
        assert!(matches!(err, ClientError::Refused { status: 503, .. }), "{err:?}");
        assert_eq!(err.to_string(), "not the leader; no nimbus leads yet");
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    }

    #[test]
    fn the_missing_artifacts_are_each_named_once() {
        let record = |artifact: &str, resources: Option<&str>| {
            let mut r: TopologyRecord = serde_json::from_value(serde_json::json!({
                "name": "t", "text": "", "artifact": artifact, "status": "active", "submitted_ms": 0,
                "assignment": null, "next_version": 1,
                "layout": {"workers": 1, "components": [], "ackers": 0, "message_timeout_secs": 30,
                           "coordinator": false, "exactly_once": false},
            }))
            .unwrap();
            r.resources = resources.map(str::to_string);
            r
        };
        let records = vec![record("a", Some("r")), record("a", None), record("b", Some("r"))];
        assert_eq!(missing_artifacts(&records, |sha| sha == "b"), vec!["a".to_string(), "r".to_string()]);
        assert!(missing_artifacts(&records, |_| true).is_empty());
    }
}
