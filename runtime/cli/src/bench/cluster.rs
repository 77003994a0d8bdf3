//! WC-1 across worker processes (`squall bench wc1 --workers W`, W > 1).
//!
//! Contract: starts a private cluster in a fresh temporary directory — nimbus in this process
//! on an ephemeral loopback port, and one `squall supervisor` child process (this executable)
//! with W slots — submits WC-1's topology with this executable as its artifact and W workers,
//! so its tasks run in W worker processes that talk over TCP on loopback. The run is timed
//! from the first emitted sentence to the last acked one (acking on) or the last counted word
//! (acking off), as nimbus's figures show them; workers report every 50 ms, so the time is
//! good to about a tenth of a second. The topology is then killed: its workers stop
//! gracefully and each count task writes its counts to a file, which are checked as in one
//! process. The supervisor, its workers and the directory are gone when it returns.

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
use squall_engine::topology;

/// How often workers report their figures during a benchmark.
const HEARTBEAT_MS: &str = "50";
/// Generous bounds for the steps that are not the benchmark itself.
const SETUP: Duration = Duration::from_secs(120);
/// A run that makes no progress for this long has failed.
const STALL: Duration = Duration::from_secs(60);

/// Runs WC-1 over `b.workers` worker processes; returns (seconds, words counted, count of
/// "the", sentences acked, sentences failed).
pub async fn wc1(b: &Wc1) -> Result<(f64, u64, u64, u64, u64), BoxError> {
    let dir = TempDir::new("wc1")?;
    let secret = format!("bench-{}", fastrand::u64(..));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let nimbus_addr = listener.local_addr()?.to_string();
    let slots = vec!["0"; b.workers].join(", ");
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
    let mut supervisor = tokio::process::Command::new(&exe)
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
    let result = run(b, &client, &exe, &dir.0).await;

    // Stop the supervisor as Ctrl-C would (it stops its workers), then nimbus.
    if let Some(pid) = supervisor.id() {
        // SAFETY: kill(2) with a valid signal on our own child, not yet reaped.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), supervisor.wait()).await;
    let _ = supervisor.start_kill();
    let _ = stop_nimbus.send(());
    let _ = nimbus.await;
    result
}

async fn run(
    b: &Wc1,
    client: &Client,
    exe: &Path,
    dir: &Path,
) -> Result<(f64, u64, u64, u64, u64), BoxError> {
    let reports = dir.join("counts");
    std::fs::create_dir_all(&reports)?;
    let text = topology_text(b, &reports);
    let def = topology::load_str("wc1.toml", &text, &|_| None, &super::worker_registry())
        .map_err(|d| format!("the benchmark's topology: {d}"))?;
    let bytes = std::fs::read(exe)?;
    let artifact = sha256_hex(&bytes);
    client.upload_artifact(&artifact, bytes).await?;
    client
        .submit(&SubmitRequest {
            name: "wc1".into(),
            text,
            layout: Layout::of(&def),
            artifact,
            resources: None,
        })
        .await?;

    let words = 32 * b.n / 5;
    let setup_end = Instant::now() + SETUP;
    let mut started: Option<Instant> = None;
    let (mut last_progress, mut stalled_since) = (0, Instant::now());
    let (elapsed, acked, failed) = loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let status = match client.status("wc1").await {
            Ok(s) => s,
            Err(e) if started.is_none() && Instant::now() < setup_end => {
                tracing::debug!("waiting for nimbus: {e}");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let figure = |id: &str, f: fn(&squall_engine::metrics::ComponentStats) -> u64| {
            status.snapshot.components.get(id).map_or(0, f)
        };
        let (emitted, acked, failed) = (
            figure("sentences", |s| s.emitted),
            figure("sentences", |s| s.acked),
            figure("sentences", |s| s.failed),
        );
        let counted = figure("count", |s| s.executed);
        if started.is_none() {
            if emitted > 0 {
                started = Some(Instant::now());
            } else if Instant::now() > setup_end {
                return Err("the workers did not start within two minutes".into());
            }
        }
        let progress = acked + counted;
        if progress != last_progress {
            (last_progress, stalled_since) = (progress, Instant::now());
        } else if started.is_some() && stalled_since.elapsed() > STALL {
            return Err(format!(
                "no progress for {}s: {acked} sentences acked, {counted} words counted",
                STALL.as_secs()
            )
            .into());
        }
        let done = if b.acking { acked >= b.n } else { counted >= words };
        if let (true, Some(t0)) = (done, started) {
            break (t0.elapsed(), acked, failed);
        }
    };

    client.kill("wc1", &KillRequest { wait_secs: Some(0) }).await?;
    let deadline = Instant::now() + SETUP;
    let mut counts = WordMap::default();
    loop {
        let files: Vec<_> = std::fs::read_dir(&reports)?.flatten().map(|e| e.path()).collect();
        if files.iter().filter(|p| p.extension().is_some_and(|e| e == "json")).count() >= b.p {
            for path in files {
                let text = std::fs::read_to_string(&path)?;
                let part: HashMap<String, u64> = serde_json::from_str(&text)?;
                for (w, c) in part {
                    *counts.entry(w).or_default() += c;
                }
            }
            break;
        }
        if Instant::now() > deadline {
            return Err("the count tasks did not report their counts after the run".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
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
