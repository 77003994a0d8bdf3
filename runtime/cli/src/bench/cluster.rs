//! Benchmarks across worker processes (`squall bench wc1|win1 --workers W`, W > 1).
//!
//! Contract: [`PrivateCluster`] starts a private cluster in a fresh temporary directory —
//! nimbus in this process on an ephemeral loopback port, and one `squall supervisor` child
//! process (this executable) with W slots — and submits a benchmark's topology with this
//! executable as its artifact, so its tasks run in W worker processes that talk over TCP on
//! loopback. A run is timed from its spout's first emit to a figure the benchmark names (the
//! last ack, say), as nimbus's figures show them; workers report every 50 ms, so the time is
//! good to about a tenth of a second. The topology is then killed: its workers stop
//! gracefully and the tasks that gather results write them to files, which are checked as in
//! one process. The supervisor, its workers and the directory are gone once it is stopped.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use squall_api::BoxError;
use tokio::net::TcpListener;

use super::{TempDir, Wc1, WordMap};
use squall_cluster::artifacts::sha256_hex;
use squall_cluster::client::Client;
use squall_cluster::{config, nimbus, KillRequest, Layout, SubmitRequest};
use squall_engine::metrics::{ComponentStats, Snapshot};
use squall_engine::topology;

/// How often workers report their figures during a benchmark.
const HEARTBEAT_MS: &str = "50";
/// Generous bounds for the steps that are not the benchmark itself.
const SETUP: Duration = Duration::from_secs(120);
/// A run that makes no progress for this long has failed.
const STALL: Duration = Duration::from_secs(60);

/// A private cluster for one benchmark run: nimbus in this process, one supervisor child.
pub struct PrivateCluster {
    pub dir: TempDir,
    pub client: Client,
    pub exe: std::path::PathBuf,
    supervisor: tokio::process::Child,
    stop_nimbus: tokio::sync::oneshot::Sender<()>,
    nimbus: tokio::task::JoinHandle<Result<(), nimbus::NimbusError>>,
}

impl PrivateCluster {
    /// Starts nimbus and a supervisor of `slots` slots in a fresh directory labelled `label`.
    pub async fn start(label: &str, slots: usize) -> Result<Self, BoxError> {
        let dir = TempDir::new(label)?;
        let secret = format!("bench-{}", fastrand::u64(..));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let nimbus_addr = listener.local_addr()?.to_string();
        let slots = vec!["0"; slots].join(", ");
        let cluster_file = dir.0.join("cluster.toml");
        let cluster_text = format!(
            "[cluster]\nsecret = \"{secret}\"\nnimbus = \"{nimbus_addr}\"\n\n[nimbus]\nstate_dir = \"{}\"\n\n\
             [supervisor]\nid = \"bench\"\ndata_dir = \"{}\"\nslots = [{slots}]\n",
            dir.0.join("nimbus").display(),
            dir.0.join("supervisor").display()
        );
        std::fs::write(&cluster_file, &cluster_text)?;
        let config = config::parse(&cluster_file.display().to_string(), &cluster_text, &|_| None)?;

        let (stop_nimbus, stopped) = tokio::sync::oneshot::channel::<()>();
        let nimbus = tokio::spawn(nimbus::serve(config, listener, async move {
            let _ = stopped.await;
        }));
        let exe = std::env::current_exe()?;
        let supervisor = tokio::process::Command::new(&exe)
            .arg("supervisor")
            .arg("--config")
            .arg(&cluster_file)
            .env("SQUALL_WORKER_HEARTBEAT_MS", HEARTBEAT_MS)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let client = Client::new(&nimbus_addr, &secret);
        Ok(PrivateCluster { dir, client, exe, supervisor, stop_nimbus, nimbus })
    }

    /// Uploads this executable and submits topology `name` (`text`, a topology file whose
    /// kinds are the benchmarks' own).
    pub async fn submit(&self, name: &str, text: String) -> Result<(), BoxError> {
        let def = topology::load_str(&format!("{name}.toml"), &text, &|_| None, &super::worker_registry())
            .map_err(|d| format!("the benchmark's topology: {d}"))?;
        let bytes = std::fs::read(&self.exe)?;
        let artifact = sha256_hex(&bytes);
        self.client.upload_artifact(&artifact, bytes).await?;
        let request =
            SubmitRequest { name: name.into(), text, layout: Layout::of(&def), artifact, resources: None };
        self.client.submit(&request).await?;
        Ok(())
    }

    /// The worker processes running now (the supervisor's children).
    pub fn worker_pids(&self) -> Vec<u32> {
        let Some(pid) = self.supervisor.id() else { return Vec::new() };
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
        tasks
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|c| c.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
            .collect()
    }

    /// Waits until the run of topology `name` starts (its spout `spout` emits), then until
    /// `done` holds of its figures; returns the time from the first emit, or an error once
    /// no figure named by `progress` has moved for a minute. Polls every 20 ms.
    pub async fn time_run(
        &self,
        name: &str,
        spout: &str,
        progress: impl Fn(&Snapshot) -> u64,
        done: impl Fn(&Snapshot) -> bool,
    ) -> Result<Duration, BoxError> {
        let setup_end = Instant::now() + SETUP;
        let mut started: Option<Instant> = None;
        let (mut last_progress, mut stalled_since) = (0, Instant::now());
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let status = match self.client.status(name).await {
                Ok(s) => s,
                Err(e) if started.is_none() && Instant::now() < setup_end => {
                    tracing::debug!("waiting for nimbus: {e}");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let snapshot = &status.snapshot;
            if started.is_none() {
                if snapshot.components.get(spout).is_some_and(|s| s.emitted > 0) {
                    started = Some(Instant::now());
                } else if Instant::now() > setup_end {
                    return Err("the workers did not start within two minutes".into());
                }
            }
            let moved = progress(snapshot);
            if moved != last_progress {
                (last_progress, stalled_since) = (moved, Instant::now());
            } else if started.is_some() && stalled_since.elapsed() > STALL {
                return Err(format!("no progress for {}s: {moved}", STALL.as_secs()).into());
            }
            if let (true, Some(t0)) = (done(snapshot), started) {
                return Ok(t0.elapsed());
            }
        }
    }

    /// Kills topology `name`: its workers stop gracefully, their tasks cleaned up.
    pub async fn kill(&self, name: &str) -> Result<(), BoxError> {
        self.client.kill(name, &KillRequest { wait_secs: Some(0) }).await?;
        Ok(())
    }

    /// Stops the supervisor as Ctrl-C would (it stops its workers), then nimbus.
    pub async fn stop(mut self) {
        if let Some(pid) = self.supervisor.id() {
            // SAFETY: kill(2) with a valid signal on our own child, not yet reaped.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.supervisor.wait()).await;
        let _ = self.supervisor.start_kill();
        let _ = self.stop_nimbus.send(());
        let _ = self.nimbus.await;
    }
}

/// Waits until `dir` holds `count` JSON reports (`*.json`), then returns their paths.
pub async fn wait_for_reports(dir: &Path, count: usize) -> Result<Vec<std::path::PathBuf>, BoxError> {
    let deadline = Instant::now() + SETUP;
    loop {
        let files: Vec<_> = std::fs::read_dir(dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        if files.len() >= count {
            return Ok(files);
        }
        if Instant::now() > deadline {
            return Err("the tasks did not report their results after the run".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs WC-1 over `b.workers` worker processes; returns (seconds, words counted, count of
/// "the", sentences acked, sentences failed).
pub async fn wc1(b: &Wc1) -> Result<(f64, u64, u64, u64, u64), BoxError> {
    let cluster = PrivateCluster::start("wc1", b.workers).await?;
    let result = run(b, &cluster).await;
    cluster.stop().await;
    result
}

async fn run(b: &Wc1, cluster: &PrivateCluster) -> Result<(f64, u64, u64, u64, u64), BoxError> {
    let reports = cluster.dir.0.join("counts");
    std::fs::create_dir_all(&reports)?;
    cluster.submit("wc1", topology_text(b, &reports)).await?;
    let words = 32 * b.n / 5;
    let figure = |s: &Snapshot, id: &str, f: fn(&ComponentStats) -> u64| s.components.get(id).map_or(0, f);
    let elapsed = cluster
        .time_run(
            "wc1",
            "sentences",
            |s| figure(s, "sentences", |c| c.acked) + figure(s, "count", |c| c.executed),
            |s| {
                if b.acking {
                    figure(s, "sentences", |c| c.acked) >= b.n
                } else {
                    figure(s, "count", |c| c.executed) >= words
                }
            },
        )
        .await?;
    let status = cluster.client.status("wc1").await?;
    let (acked, failed) = (
        figure(&status.snapshot, "sentences", |c| c.acked),
        figure(&status.snapshot, "sentences", |c| c.failed),
    );
    cluster.kill("wc1").await?;
    let mut counts = WordMap::default();
    for path in wait_for_reports(&reports, b.p).await? {
        let text = std::fs::read_to_string(&path)?;
        let part: HashMap<String, u64> = serde_json::from_str(&text)?;
        for (w, c) in part {
            *counts.entry(w).or_default() += c;
        }
    }
    let total: u64 = counts.values().sum();
    let the = counts.get("the").copied().unwrap_or(0);
    Ok((elapsed.as_secs_f64(), total, the, acked, failed))
}

/// WC-1 as a topology file, the count tasks writing their counts to `reports` at cleanup.
fn topology_text(b: &Wc1, reports: &Path) -> String {
    format!(
        r#"name = "wc1"
workers = {workers}

[settings]
acking = {acking}
max_spout_pending = 8192

[[spouts]]
id = "sentences"
kind = "wc1-sentences"
config = {{ n = {n}, reliable = {acking} }}

[[bolts]]
id = "split"
kind = "wc1-split"
parallelism = {p}
inputs = [{{ from = "sentences", grouping = "shuffle" }}]

[[bolts]]
id = "count"
kind = "wc1-count"
parallelism = {p}
inputs = [{{ from = "split", grouping = {{ fields = ["word"] }} }}]
config = {{ report_dir = "{reports}" }}
"#,
        workers = b.workers,
        acking = b.acking,
        n = b.n,
        p = b.p,
        reports = reports.display()
    )
}
