use std::os::unix::process::CommandExt;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::artifacts::sha256_hex;
use crate::{SupervisorReply, SECRET_HEADER};
use squall_engine::auth::{HttpSignature, Secret, SIGNATURE_HEADER};

fn order(topology: &str, worker: usize, slot: usize) -> WorkerOrder {
    WorkerOrder {
        topology: topology.into(),
        version: 1,
        worker,
        slot,
        port: 6700 + slot as u16,
        artifact: "a".repeat(64),
        resources: None,
    }
}

#[test]
fn decide_stops_what_is_not_ordered_and_starts_what_is_missing() {
    let (a, b, c) = (order("t", 0, 0), order("t", 1, 1), order("u", 0, 2));
    let d = decide(&[a.clone(), c.clone()], &[&a, &b], &[], 4);
    assert_eq!(d, Decision { stop: vec![b.clone()], start: vec![c.clone()], refused: vec![] });
    let d = decide(&[a.clone(), b.clone()], &[&a, &b], &[], 4);
    assert_eq!(d, Decision::default(), "nothing to do when what runs is what is ordered");
    let d = decide(&[], &[&a, &b], &[], 4);
    assert_eq!(d.stop, vec![a, b]);
    assert!(d.start.is_empty());
}

#[test]
fn decide_starts_on_a_slot_only_once_its_old_worker_is_gone() {
    let old = order("t", 0, 1);
    let mut new = old.clone();
    new.version = 2;
    let d = decide(std::slice::from_ref(&new), &[&old], &[], 2);
    assert_eq!(d.stop, vec![old.clone()]);
    assert!(d.start.is_empty(), "the old worker still holds slot 1: {d:?}");
    let d = decide(std::slice::from_ref(&new), &[], &[1], 2);
    assert_eq!(d, Decision::default(), "slot 1 is still being stopped");
    let d = decide(std::slice::from_ref(&new), &[], &[0], 2);
    assert_eq!(d.start, vec![new]);
}

#[test]
fn decide_keeps_a_worker_a_new_assignment_keeps_and_starts_only_the_moved_one() {
    // Version 2 moved worker 0 here (a lost supervisor's) and kept worker 1, which nimbus
    // orders under the version it was started with.
    let kept = order("t", 1, 1);
    let mut moved = order("t", 0, 0);
    moved.version = 2;
    let d = decide(&[moved.clone(), kept.clone()], &[&kept], &[], 2);
    assert_eq!(d, Decision { stop: vec![], start: vec![moved], refused: vec![] });
}

#[test]
fn decide_refuses_slots_it_does_not_have_and_runs_one_worker_per_slot() {
    let (a, b, far) = (order("t", 0, 0), order("u", 0, 0), order("t", 1, 5));
    let d = decide(&[a.clone(), b, a.clone(), far.clone()], &[], &[], 2);
    assert_eq!(d.start, vec![a], "the first order for a slot wins; duplicates are ignored");
    assert_eq!(d.refused.len(), 1);
    assert_eq!(d.refused[0].0, far);
    assert!(d.refused[0].1.contains("slot 5 does not exist"), "{}", d.refused[0].1);
}

#[test]
fn backoff_doubles_while_a_worker_keeps_crashing_and_resets_after_a_long_run() {
    let now = Instant::now();
    let quick = Duration::from_secs(2);
    let mut b = Backoff::after_failure(None, quick, now);
    assert_eq!(b.delay, Duration::from_secs(1));
    assert_eq!(b.not_before, now + Duration::from_secs(1));
    let mut delays = Vec::new();
    for _ in 0..6 {
        b = Backoff::after_failure(Some(b), quick, now);
        delays.push(b.delay.as_secs());
    }
    assert_eq!(delays, vec![2, 4, 8, 16, 30, 30]);
    let b = Backoff::after_failure(Some(b), BACKOFF_RESET, now);
    assert_eq!(b.delay, Duration::from_secs(1));
}

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("squall-sup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn an_artifact_is_stored_executable_only_if_its_hash_matches() {
    let dir = TempDir::new("store");
    let store = ArtifactStore::open(&dir.0, &dir.0, true).unwrap();
    let bytes = b"#!/bin/sh\necho hi\n";
    let sha = sha256_hex(bytes);
    assert!(is_sha256(&sha));
    let err = store_artifact(&store, &"0".repeat(64), bytes).await.unwrap_err();
    assert!(matches!(err, SupervisorError::Mismatch { .. }), "{err}");
    let err = err.to_string();
    assert!(err.contains("hashes to") && err.contains(&sha), "{err}");
    assert!(!err.contains('\n'));
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0, "nothing is left of a mismatch");

    store_artifact(&store, &sha, bytes).await.unwrap();
    let path = dir.0.join(&sha);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o755);
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 1, "no temporary file is left");
    assert!(!is_sha256("../../etc/passwd") && !is_sha256(&sha.to_uppercase()));
}

#[tokio::test]
async fn stopping_a_worker_terminates_it_and_kills_it_if_it_lingers() {
    let child = Command::new("sleep").arg("30").kill_on_drop(true).spawn().unwrap();
    let pid = child.id().unwrap();
    let (status, killed) = stop_child(child, pid, Duration::from_secs(5)).await.unwrap();
    assert!(!killed);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGTERM));

    let child = Command::new("sh")
        .args(["-c", "trap '' TERM; echo ready; sleep 30; true"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut child = child;
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    tokio::io::AsyncReadExt::read_exact(&mut out, &mut buf).await.unwrap();
    let pid = child.id().unwrap();
    let started = Instant::now();
    let (status, killed) = stop_child(child, pid, Duration::from_millis(300)).await.unwrap();
    assert!(killed, "it ignores SIGTERM");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn leftovers_of_a_previous_run_are_killed_and_nothing_else() {
    let spawn = |arg0: &str, supervisor: &str| {
        std::process::Command::new("sleep")
            .arg0(arg0)
            .arg("30")
            .env(SUPERVISOR_PID_ENV, supervisor)
            .spawn()
            .unwrap()
    };
    let mut ours = spawn("worker", "999999");
    let mut other_supervisor = spawn("worker", "999998");
    let mut not_a_worker = spawn("sleeper", "999999");
    let entry = |pid: u32| RunningWorker { topology: "t".into(), version: 1, worker: 0, slot: 0, pid };
    let file = PidFile {
        supervisor_pid: 999999,
        workers: vec![
            entry(ours.id()),
            entry(other_supervisor.id()),
            entry(not_a_worker.id()),
            entry(0),
            entry(1),
            entry(std::process::id()),
        ],
    };
    let killed = kill_leftovers(&file);
    assert_eq!(killed.iter().map(|w| w.pid).collect::<Vec<_>>(), vec![ours.id()]);
    let status = ours.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
    assert!(!is_leftover(ours.id(), 999999), "a dead (reaped) worker is no leftover");
    for child in [&mut other_supervisor, &mut not_a_worker] {
        assert!(child.try_wait().unwrap().is_none(), "{} was left alone", child.id());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// A stand-in for nimbus: serves orders to heartbeats, and artifacts.
#[derive(Default)]
struct Fake {
    orders: Vec<WorkerOrder>,
    beats: Vec<SupervisorHeartbeat>,
    artifacts: HashMap<String, Vec<u8>>,
}

type Shared = Arc<Mutex<Fake>>;

async fn fake_nimbus(fake: Shared) -> String {
    async fn heartbeat(
        State(fake): State<Shared>,
        headers: HeaderMap,
        Json(beat): Json<SupervisorHeartbeat>,
    ) -> Result<Json<SupervisorReply>, StatusCode> {
        let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let signed = HttpSignature::parse(signature)
            .and_then(|s| s.verify(&Secret::new("s3cret"), "POST", "/v1/supervisors/heartbeat"));
        if signed.is_err() || headers.contains_key(SECRET_HEADER) {
            return Err(StatusCode::UNAUTHORIZED);
        }
        let mut fake = fake.lock().unwrap();
        fake.beats.push(beat);
        Ok(Json(SupervisorReply { workers: fake.orders.clone() }))
    }
    async fn artifact(
        State(fake): State<Shared>,
        UrlPath(sha): UrlPath<String>,
    ) -> Result<Vec<u8>, StatusCode> {
        fake.lock().unwrap().artifacts.get(&sha).cloned().ok_or(StatusCode::NOT_FOUND)
    }
    let app = Router::new()
        .route("/v1/supervisors/heartbeat", post(heartbeat))
        .route("/v1/artifacts/{sha}", get(artifact))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Waits until the last heartbeat satisfies `ok`; returns its running workers.
async fn until(fake: &Shared, what: &str, ok: impl Fn(&[RunningWorker]) -> bool) -> Vec<RunningWorker> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let last = fake.lock().unwrap().beats.last().map(|b| b.running.clone());
        if let Some(running) = last.filter(|r| ok(r)) {
            return running;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn pid_of(running: &[RunningWorker], worker: usize) -> Option<u32> {
    running.iter().find(|r| r.worker == worker).map(|r| r.pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_restarts_and_stops_what_nimbus_orders() {
    let dir = TempDir::new("serve");
    let script = b"#!/bin/sh\necho \"args: $*\"\necho \"secret: ${SQUALL_SECRET:+set}\"\nexec sleep 600\n";
    let sha = sha256_hex(script);
    let fake: Shared = Arc::default();
    let nimbus = fake_nimbus(fake.clone()).await;
    let order = |worker: usize, slot: usize| WorkerOrder {
        topology: "t".into(),
        version: 1,
        worker,
        slot,
        port: 0,
        artifact: sha.clone(),
        resources: None,
    };
    {
        let mut f = fake.lock().unwrap();
        f.artifacts.insert(sha.clone(), script.to_vec());
        f.orders = vec![order(0, 0), order(1, 1)];
    }
    let mut config = ClusterConfig::default();
    config.cluster.nimbus = nimbus.clone().into();
    config.cluster.secret = "s3cret".into();
    config.supervisor.id = Some("sup-t".into());
    config.supervisor.data_dir = dir.0.clone();
    config.supervisor.slots = vec![0, 0];
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        serve(&config, Duration::from_millis(100), Duration::from_millis(500), async {
            let _ = stop_rx.await;
        })
        .await
    });

    // Both ordered workers run, from the downloaded artifact, with their flags and secret.
    let running = until(&fake, "two workers run", |r| r.len() == 2).await;
    let (w0, w1) = (pid_of(&running, 0).unwrap(), pid_of(&running, 1).unwrap());
    assert!(alive(w0) && alive(w1));
    let artifact = dir.0.join("artifacts").join(&sha);
    assert_eq!(std::fs::metadata(&artifact).unwrap().permissions().mode() & 0o777, 0o755);
    let log = dir.0.join("logs").join("t-w1.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("secret: set") {
        assert!(Instant::now() < deadline, "worker 1 never wrote its log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let expected = format!(
        "args: worker --nimbus {nimbus} --topology t --version 1 --worker 1 --port 0 --host 127.0.0.1"
    );
    assert!(text.contains(&expected), "{text}");
    assert!(!text.contains("s3cret"), "the secret stays off the command line");
    let pids: PidFile = serde_json::from_slice(&std::fs::read(dir.0.join("workers.json")).unwrap()).unwrap();
    assert_eq!(pids.supervisor_pid, std::process::id());
    let mut listed: Vec<u32> = pids.workers.iter().map(|w| w.pid).collect();
    listed.sort_unstable();
    let mut expected_pids = vec![w0, w1];
    expected_pids.sort_unstable();
    assert_eq!(listed, expected_pids);

    // A worker killed with SIGKILL is restarted.
    unsafe { libc::kill(w0 as i32, libc::SIGKILL) };
    let running =
        until(&fake, "worker 0 is restarted", |r| r.len() == 2 && pid_of(r, 0).is_some_and(|p| p != w0))
            .await;
    assert_eq!(pid_of(&running, 1), Some(w1), "worker 1 kept running");

    // A worker no longer ordered is stopped; an artifact that does not match its hash
    // never runs.
    let bad = sha256_hex(b"something else");
    {
        let mut f = fake.lock().unwrap();
        f.artifacts.insert(bad.clone(), script.to_vec());
        let mut other = order(0, 1);
        other.topology = "bad".into();
        other.artifact = bad.clone();
        f.orders = vec![order(0, 0), other];
    }
    until(&fake, "worker 1 is stopped", |r| r.len() == 1 && pid_of(r, 0).is_some()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(w1) {
        assert!(Instant::now() < deadline, "worker 1 (pid {w1}) is still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let running = until(&fake, "a heartbeat", |_| true).await;
    assert!(running.iter().all(|r| r.topology == "t"), "{running:?}");
    assert!(!dir.0.join("artifacts").join(&bad).exists());

    // Stopping the supervisor stops its workers.
    let w0 = pid_of(&running, 0).unwrap();
    stop_tx.send(()).unwrap();
    served.await.unwrap().unwrap();
    assert!(!alive(w0), "worker 0 (pid {w0}) outlived its supervisor");
    let pids: PidFile = serde_json::from_slice(&std::fs::read(dir.0.join("workers.json")).unwrap()).unwrap();
    assert!(pids.workers.is_empty(), "{pids:?}");
}
