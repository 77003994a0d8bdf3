//! Nimbus's durable state directory (`[nimbus] state_dir`).
//!
//! Contract: the directory holds
//! - `artifacts/<sha256>`: uploaded executables, content-addressed: an [`ArtifactStore`]
//!   (see [`crate::artifacts`]), whose temporary files are written in `tmp/`.
//! - `topologies/<name>.json`: one [`TopologyRecord`] per topology, everything nimbus knows of
//!   it (its text, layout, artifact, status, assignment, next version, pending kill or
//!   rebalance). [`StateDir::save`] writes a temporary file, fsyncs it, renames it into place
//!   and fsyncs the directory: after a crash a record is either the old or the new one.
//! - `tmp/`: temporary files, emptied on open.
//!
//! [`StateDir::load`] returns every record; a file that cannot be read or parsed, or whose
//! name does not match its record, is an error naming the file: nimbus refuses to start
//! rather than silently forget a topology (which would stop its workers). Times are wall
//! clock milliseconds since the Unix epoch, so deadlines survive a restart.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::artifacts::ArtifactStore;

use super::{Assignment, Layout, RebalanceRequest, Status};

/// Everything nimbus keeps about one topology.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopologyRecord {
    pub name: String,
    /// The substituted topology file.
    pub text: String,
    /// The current layout (a rebalance changes it).
    pub layout: Layout,
    /// sha256 of its executable.
    pub artifact: String,
    /// sha256 of its packed `resources/` folder, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<String>,
    pub status: Status,
    /// When it was submitted (ms since the epoch).
    pub submitted_ms: u64,
    /// Where its tasks run now; `None` while no slot could be found.
    pub assignment: Option<Assignment>,
    /// When the current assignment was made (ms since the epoch).
    #[serde(default)]
    pub assigned_ms: u64,
    /// The version the next assignment gets (versions start at 1).
    pub next_version: u64,
    /// When the pending kill or rebalance happens (ms since the epoch).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// The pending rebalance (status [`Status::Rebalancing`]).
    #[serde(default)]
    pub rebalance: Option<RebalanceRequest>,
    /// The status to return to once the pending rebalance is done.
    #[serde(default)]
    pub resume_status: Option<Status>,
}

impl TopologyRecord {
    /// The current assignment's version, 0 if none.
    pub fn version(&self) -> u64 {
        self.assignment.as_ref().map_or(0, |a| a.version)
    }
}

/// The state directory.
#[derive(Debug)]
pub struct StateDir {
    root: PathBuf,
    artifacts: ArtifactStore,
    topologies: PathBuf,
    tmp: PathBuf,
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn temp_name(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{what}.{}.{}.tmp", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Why the state directory cannot be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The artifacts directory cannot be created (the error names it).
    #[error(transparent)]
    Artifacts(std::io::Error),
    #[error("cannot create {}: {source}", path.display())]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot remove {}: {source}", path.display())]
    Remove { path: PathBuf, source: std::io::Error },
    /// Making a rename or removal in the directory durable failed.
    #[error("cannot fsync {}: {source}", dir.display())]
    Sync { dir: PathBuf, source: std::io::Error },
    /// The record of the topology `name` cannot be encoded.
    #[error("cannot encode {name}: {source}")]
    Encode { name: String, source: serde_json::Error },
    /// A stored record does not parse: nimbus refuses to start rather than forget it.
    #[error("{} is corrupt ({source}); move it away to start without it", path.display())]
    Corrupt { path: PathBuf, source: serde_json::Error },
    /// The coordination service (etcd) refused or did not answer a read or a write, or this
    /// nimbus is no longer the leader.
    #[error("{0}")]
    Coordination(String),
    /// A stored record's file name is not its topology's name.
    #[error("{} holds topology `{holds}`, not `{name}`; move it away to start without it", path.display())]
    Misnamed { path: PathBuf, holds: String, name: String },
}

/// Where nimbus keeps its topology records: the state directory, or etcd with
/// `[cluster] coordination`. The coordinator's changes go through it, whichever it is.
pub trait Store: Send + Sync {
    /// Every stored topology, by name order.
    fn load(&self) -> Result<Vec<TopologyRecord>, StateError>;
    /// Writes `record` durably.
    fn save(&self, record: &TopologyRecord) -> Result<(), StateError>;
    /// Forgets the topology `name` durably.
    fn remove(&self, name: &str) -> Result<(), StateError>;
}

impl Store for StateDir {
    fn load(&self) -> Result<Vec<TopologyRecord>, StateError> {
        StateDir::load(self)
    }

    fn save(&self, record: &TopologyRecord) -> Result<(), StateError> {
        StateDir::save(self, record)
    }

    fn remove(&self, name: &str) -> Result<(), StateError> {
        StateDir::remove(self, name)
    }
}

fn fsync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StateError::Sync { dir: dir.to_path_buf(), source })
}

fn read_error(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Read { path: path.to_path_buf(), source }
}

impl StateDir {
    /// Opens (creating if needed) the state directory `root`, and empties its `tmp/`.
    pub fn open(root: &Path) -> Result<StateDir, StateError> {
        let tmp = root.join("tmp");
        let artifacts =
            ArtifactStore::open(&root.join("artifacts"), &tmp, false).map_err(StateError::Artifacts)?;
        let dir = StateDir { root: root.to_path_buf(), artifacts, topologies: root.join("topologies"), tmp };
        for d in [&dir.topologies, &dir.tmp] {
            fs::create_dir_all(d).map_err(|source| StateError::Create { path: d.clone(), source })?;
        }
        let leftovers = fs::read_dir(&dir.tmp).map_err(read_error(&dir.tmp))?;
        for entry in leftovers.flatten() {
            let _ = fs::remove_file(entry.path());
        }
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn topology_path(&self, name: &str) -> PathBuf {
        self.topologies.join(format!("{name}.json"))
    }

    /// Every stored topology, by name order; an error names the first bad file.
    pub fn load(&self) -> Result<Vec<TopologyRecord>, StateError> {
        let entries = fs::read_dir(&self.topologies).map_err(read_error(&self.topologies))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(read_error(&self.topologies))?;
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let text = fs::read_to_string(&path).map_err(read_error(&path))?;
            let record: TopologyRecord = serde_json::from_str(&text)
                .map_err(|source| StateError::Corrupt { path: path.clone(), source })?;
            if record.name != name {
                return Err(StateError::Misnamed { name: name.to_string(), holds: record.name, path });
            }
            out.push(record);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Writes `record` durably (see the module docs).
    pub fn save(&self, record: &TopologyRecord) -> Result<(), StateError> {
        let json = serde_json::to_vec_pretty(record)
            .map_err(|source| StateError::Encode { name: record.name.clone(), source })?;
        let tmp = self.tmp.join(temp_name(&record.name));
        let path = self.topology_path(&record.name);
        let written = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(source) = written {
            let _ = fs::remove_file(&tmp);
            return Err(StateError::Write { path, source });
        }
        fsync_dir(&self.topologies)
    }

    /// Forgets the topology `name` durably.
    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        let path = self.topology_path(name);
        match fs::remove_file(&path) {
            Ok(()) => fsync_dir(&self.topologies),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Remove { path, source }),
        }
    }

    /// The uploaded executables.
    pub fn artifacts(&self) -> &ArtifactStore {
        &self.artifacts
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::artifacts::sha256_hex;
    use crate::{ComponentLayout, WorkerSlot};

    /// A directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(what: &str) -> TempDir {
            static N: AtomicU64 = AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "squall-{what}-{}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed),
                now_ms()
            ));
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn record(name: &str) -> TopologyRecord {
        let layout = Layout {
            workers: 2,
            components: vec![ComponentLayout {
                id: "s".into(),
                kind: "sequence".into(),
                spout: true,
                parallelism: 1,
            }],
            ackers: 1,
            message_timeout_secs: 30,
            coordinator: false,
            exactly_once: false,
            numbering: None,
        };
        let artifact = sha256_hex(b"exe");
        TopologyRecord {
            name: name.into(),
            text: "name = \"x\"\n".into(),
            layout: layout.clone(),
            artifact: artifact.clone(),
            resources: None,
            status: Status::Rebalancing,
            submitted_ms: 1234,
            assignment: Some(Assignment {
                topology: name.into(),
                version: 3,
                submitted_ms: 1234,
                artifact,
                resources: None,
                text: "name = \"x\"\n".into(),
                layout,
                workers: vec![WorkerSlot { supervisor: "a".into(), slot: 1, port: 0, tasks: vec![0, 1] }],
                routing: 2,
                started: vec![2],
            }),
            assigned_ms: 5678,
            next_version: 4,
            deadline_ms: Some(9999),
            rebalance: Some(RebalanceRequest {
                workers: Some(3),
                parallelism: [("s".to_string(), 2)].into(),
                wait_secs: None,
            }),
            resume_status: Some(Status::Inactive),
        }
    }

    fn comparable(r: &TopologyRecord) -> String {
        serde_json::to_string(r).unwrap()
    }

    #[test]
    fn a_saved_record_loads_back_the_same_after_reopening() {
        let dir = TempDir::new("state");
        let state = StateDir::open(dir.path()).unwrap();
        let (a, b) = (record("alpha"), record("beta.v2"));
        state.save(&b).unwrap();
        state.save(&a).unwrap();
        let mut a2 = a.clone();
        a2.status = Status::Active;
        state.save(&a2).unwrap();
        drop(state);

        fs::write(dir.path().join("tmp").join("leftover.tmp"), b"half").unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "tmp/ is emptied on open");
        let loaded = state.load().unwrap();
        assert_eq!(loaded.iter().map(comparable).collect::<Vec<_>>(), vec![comparable(&a2), comparable(&b)]);

        state.remove("alpha").unwrap();
        state.remove("alpha").unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert_eq!(state.load().unwrap().iter().map(comparable).collect::<Vec<_>>(), vec![comparable(&b)]);
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_its_file() {
        let dir = TempDir::new("state");
        let state = StateDir::open(dir.path()).unwrap();
        state.save(&record("good")).unwrap();
        fs::write(dir.path().join("topologies").join("bad.json"), b"{\"name\": ").unwrap();
        let err = state.load().unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        let err = err.to_string();
        assert!(err.contains("bad.json") && err.contains("corrupt"), "{err}");
        assert!(!err.contains('\n'), "{err}");

        fs::remove_file(dir.path().join("topologies").join("bad.json")).unwrap();
        let mut other = record("other");
        other.name = "good".into();
        fs::write(dir.path().join("topologies").join("other.json"), serde_json::to_vec(&other).unwrap())
            .unwrap();
        let err = state.load().unwrap_err();
        assert!(matches!(err, StateError::Misnamed { .. }), "{err}");
        let err = err.to_string();
        assert!(err.contains("other.json") && err.contains("`good`"), "{err}");
    }
}
