use super::*;
use crate::client::{Client, ClientError};
use crate::state::tests::TempDir;
use squall_engine::auth::{self, HttpSignature, Secret};
use tokio::sync::oneshot;

const SECRET: &str = "s3cret";

/// A nimbus served in this process.
struct Served {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), NimbusError>>,
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
        components: vec![component("numbers", "sequence", true, 2), component("sink", "file-sink", false, 3)],
        ackers: 1,
        message_timeout_secs: 30,
        coordinator: false,
        exactly_once: false,
        numbering: None,
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
        resources: None,
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
    worker_beat_at(client, topology, version, worker, tasks, 0).await
}

/// A worker's heartbeat with figures read at `taken_ms`.
async fn worker_beat_at(
    client: &Client,
    topology: &str,
    version: u64,
    worker: usize,
    tasks: Vec<TaskFigures>,
    taken_ms: u64,
) -> WorkerReply {
    let addr: SocketAddr = format!("127.0.0.1:{}", 7000 + worker).parse().unwrap();
    let beat = WorkerHeartbeat {
        topology: topology.into(),
        version,
        worker,
        addr,
        tasks,
        restarted: false,
        taken_ms,
        taps: Vec::new(),
    };
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

/// A request to nimbus signed with `secret` at `timestamp` with `nonce`, whose signature
/// names `signed_body` (and carries `body`).
fn signed_request(
    addr: &str,
    path: &str,
    secret: &str,
    timestamp: u64,
    nonce: u8,
    signed_body: &[u8],
    body: &[u8],
) -> reqwest::RequestBuilder {
    let signature = HttpSignature::sign_with(
        &Secret::new(secret),
        "POST",
        path,
        auth::body_sha256(signed_body),
        timestamp,
        [nonce; auth::REQUEST_NONCE_LEN],
    );
    reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header(auth::SIGNATURE_HEADER, signature.to_string())
        .header("content-type", "application/json")
        .body(body.to_vec())
}

async fn refusal(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    (status, body["error"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn requests_without_the_right_signature_are_refused() {
    let dir = TempDir::new("nimbus");
    let nimbus = Served::start(&dir, 10).await;
    let wrong = Client::new(&nimbus.addr, "not-it");
    let err = wrong.list().await.unwrap_err();
    assert_eq!(status_of(&err), 401);
    assert!(
        err.to_string().contains("wrong signature") && err.to_string().contains("[cluster] secret"),
        "{err}"
    );
    let sha = artifacts::sha256_hex(b"x");
    assert_eq!(status_of(&wrong.upload_artifact(&sha, b"x".to_vec()).await.unwrap_err()), 401);
    assert_eq!(status_of(&wrong.has_artifact(&sha).await.unwrap_err()), 401);

    let plain = reqwest::Client::new();
    let (status, error) = refusal(plain.get(format!("http://{}/v1/topologies", nimbus.addr))).await;
    assert_eq!(status, 401);
    assert!(error.contains("unsigned request") && error.contains("[cluster] secret"), "{error}");
    // The secret in clear, as clients before signatures sent it, is no longer enough.
    let clear = plain.get(format!("http://{}/v1/topologies", nimbus.addr)).header(SECRET_HEADER, SECRET);
    let (status, error) = refusal(clear).await;
    assert_eq!(status, 401);
    assert!(error.contains("no longer accepted"), "{error}");
    let (status, _) = refusal(plain.get(format!("http://{}/v1/nothing", nimbus.addr))).await;
    assert_eq!(status, 401, "unknown paths are refused too");

    let client = nimbus.client();
    assert!(client.list().await.unwrap().is_empty());
    // A name that travels percent-encoded is signed as it travels: nimbus reads the request.
    let err = client.status("no such name").await.unwrap_err();
    assert_eq!(status_of(&err), 400, "{err}");
    assert!(err.to_string().contains("not a valid topology name"), "{err}");
    let err = error_of_unknown_path(&client).await;
    assert!(err.contains("no such endpoint"), "{err}");
    nimbus.stop().await;
}

#[tokio::test]
async fn a_replayed_stale_or_altered_signed_request_is_refused() {
    let dir = TempDir::new("nimbus");
    let nimbus = Served::start(&dir, 10).await;
    let path = "/v1/topologies/nope/activate";
    let now = auth::unix_now();
    // Well signed: it reaches the handler (no such topology).
    let (status, error) = refusal(signed_request(&nimbus.addr, path, SECRET, now, 1, b"", b"")).await;
    assert_eq!(status, 404, "{error}");
    // The same request again, byte for byte: a replay.
    let (status, error) = refusal(signed_request(&nimbus.addr, path, SECRET, now, 1, b"", b"")).await;
    assert_eq!((status, error.contains("replayed")), (401, true), "{error}");
    // Signed ten minutes ago, or from a clock ten minutes ahead.
    for timestamp in [now - 600, now + 600] {
        let (status, error) =
            refusal(signed_request(&nimbus.addr, path, SECRET, timestamp, 2, b"", b"")).await;
        assert_eq!((status, error.contains("clock")), (401, true), "{error}");
    }
    // A body other than the one signed.
    let kill = "/v1/topologies/nope/kill";
    let altered =
        signed_request(&nimbus.addr, kill, SECRET, now, 3, b"{\"wait_secs\":30}", b"{\"wait_secs\":0}");
    let (status, error) = refusal(altered).await;
    assert_eq!((status, error.contains("body")), (401, true), "{error}");
    // Another path than the one signed.
    let signature =
        HttpSignature::sign_with(&Secret::new(SECRET), "POST", path, auth::body_sha256(b""), now, [4; 16]);
    let moved = reqwest::Client::new()
        .post(format!("http://{}{kill}", nimbus.addr))
        .header(auth::SIGNATURE_HEADER, signature.to_string());
    let (status, error) = refusal(moved).await;
    assert_eq!((status, error.contains("wrong signature")), (401, true), "{error}");
    nimbus.stop().await;
}

/// The error of a request to a path nimbus does not serve.
async fn error_of_unknown_path(client: &Client) -> String {
    let path = "/v1/nothing";
    let signature = HttpSignature::header(&Secret::new(SECRET), "GET", path, auth::body_sha256(b"")).unwrap();
    let response = reqwest::Client::new()
        .get(format!("http://{}{path}", client.addr()))
        .header(auth::SIGNATURE_HEADER, signature)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    response.json::<ErrorBody>().await.unwrap().error
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
async fn status_sums_every_workers_figures_of_the_latest_moment_all_of_them_reported() {
    let dir = TempDir::new("nimbus");
    let nimbus = Served::start(&dir, 10).await;
    let client = nimbus.client();
    submit(&client, "numbers", 2).await;
    beat(&client, "sup-a", 4).await;
    let a = client.assignment("numbers").await.unwrap();
    let figures = |w: usize, emitted| {
        a.workers[w].tasks.iter().map(|&task| TaskFigures { task, emitted, ..Default::default() }).collect()
    };
    let status = client.status("numbers").await.unwrap();
    // Task ids past the components' are the ackers' (not in the components' sums).
    let component_tasks: usize = status.snapshot.components.values().map(|c| c.tasks).sum();
    let counted =
        |w: usize| a.workers[w].tasks.iter().filter(|&&t| (t as usize) < component_tasks).count() as u64;
    let emitted = async || {
        let status = client.status("numbers").await.unwrap();
        status.snapshot.components.values().map(|c| c.emitted).sum::<u64>()
    };
    for w in 0..2 {
        worker_beat_at(&client, "numbers", 1, w, figures(w, 10), 1_000).await;
    }
    let at_1000 = 10 * (counted(0) + counted(1));
    assert_eq!(emitted().await, at_1000, "every task read at 1000");
    // Worker 0 reports its reading of 2000 before worker 1 does: status stays at 1000.
    worker_beat_at(&client, "numbers", 1, 0, figures(0, 50), 2_000).await;
    assert_eq!(emitted().await, at_1000, "worker 0's newer figures wait for worker 1's of the same moment");
    worker_beat_at(&client, "numbers", 1, 1, figures(1, 40), 2_000).await;
    assert_eq!(emitted().await, 50 * counted(0) + 40 * counted(1), "both read at 2000");
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
        let figures =
            slot.tasks.iter().map(|&task| TaskFigures { task, emitted: 10, ..Default::default() }).collect();
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

    // Only sup-b keeps heartbeating: sup-a's worker moves there, at the same index with the
    // same tasks; sup-b's own worker keeps running under the version it was started with.
    let orders = eventually("sup-b runs both workers", async || {
        let orders = beat(&client, "sup-b", 2).await;
        (orders.len() == 2).then_some(orders)
    })
    .await;
    let now = client.assignment("moves").await.unwrap();
    assert!(now.version > 1);
    assert!(now.workers.iter().all(|w| w.supervisor == "sup-b"), "{now:?}");
    let tasks = |a: &crate::Assignment| a.workers.iter().map(|w| w.tasks.clone()).collect::<Vec<_>>();
    assert_eq!(tasks(&now), tasks(&first), "every worker index keeps its tasks");
    let versions: Vec<(usize, u64)> = orders.iter().map(|o| (o.worker, o.version)).collect();
    assert!(versions.contains(&(0, now.version)) && versions.contains(&(1, 1)), "{versions:?}");
    assert_eq!(now.routing_version(), 1, "the routing did not change");
    assert_eq!(worker_beat(&client, "moves", 1, 0).await.control, WorkerControl::Stop);
    let kept = worker_beat(&client, "moves", 1, 1).await;
    assert_eq!((kept.control, kept.routing), (WorkerControl::Active, 1), "it speaks the same routing");
    assert_eq!(worker_beat(&client, "moves", now.version, 1).await.control, WorkerControl::Stop);
    assert_eq!(worker_beat(&client, "moves", now.version, 0).await.control, WorkerControl::Active);
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
    assert_eq!(status_of(&client.rebalance("soon", &RebalanceRequest::default()).await.unwrap_err()), 409);
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
    let mut sizes: Vec<usize> = a.workers.iter().map(|w| w.tasks.len()).collect();
    sizes.sort_unstable();
    assert!(sizes == [2, 3, 3] || sizes == [2, 2, 4], "within a task of an even share: {sizes:?}");
    // The sink's tasks keep their ids (2, 3, 4: the acker keeps 5) and its new ones come after.
    assert_eq!(a.layout.numbering().components[1], [2, 3, 4, 6, 7]);
    // A live rebalance: worker 0 keeps its slot and its spout tasks, so it runs on under the
    // version it was started with and learns the new routing from its heartbeat reply.
    assert!(a.workers[0].tasks.starts_with(&[0, 1]), "{a:?}");
    assert_eq!((a.started_version(0), a.routing_version()), (1, 2));
    let kept = worker_beat(&client, "grow", 1, 0).await;
    assert_eq!((kept.control, kept.routing), (WorkerControl::Active, 2));
    assert_eq!(worker_beat(&client, "grow", 2, 0).await.control, WorkerControl::Stop);
    assert_eq!(worker_beat(&client, "grow", 2, 2).await.control, WorkerControl::Active);
    let orders = [beat(&client, "sup-a", 2).await, beat(&client, "sup-b", 2).await].concat();
    let mut versions: Vec<(usize, u64)> = orders.iter().map(|o| (o.worker, o.version)).collect();
    versions.sort_unstable();
    assert_eq!(versions, [(0, 1), (1, 2), (2, 2)]);

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
    // Worker 0 kept its slot and spout tasks through the rebalance: it runs on from version 1.
    let started = before.started_version(0);
    assert_eq!((started, before.version), (1, 2));
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
    assert_eq!(worker_beat(&client, "lasting", started, 0).await.control, WorkerControl::Inactive);

    // The supervisors' orders continue unchanged.
    assert_eq!(beat(&client, "sup-a", 2).await, orders_a);
    assert_eq!(beat(&client, "sup-b", 2).await, orders_b);
    assert_eq!(client.assignment("lasting").await.unwrap(), before);

    // And the verbs work on what was there.
    client.activate("lasting").await.unwrap();
    assert_eq!(worker_beat(&client, "lasting", started, 0).await.control, WorkerControl::Active);
    client.kill("dying", &KillRequest { wait_secs: Some(0) }).await.unwrap();
    let request = RebalanceRequest { workers: Some(4), wait_secs: Some(0), ..Default::default() };
    let done = client.rebalance("lasting", &request).await.unwrap();
    assert_eq!((done.workers, done.version), (4, before.version + 1));
    assert_eq!(client.list().await.unwrap().len(), 1);
    nimbus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_closed_while_requests_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = TempDir::new("nimbus");
    let nimbus = Served::start(&dir, 10).await;
    let client = nimbus.client();
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(tokio::net::TcpStream::connect(&nimbus.addr).await.unwrap());
    }
    let mut half = tokio::net::TcpStream::connect(&nimbus.addr).await.unwrap();
    half.write_all(b"GET /v1/topologies HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    assert!(client.list().await.unwrap().is_empty(), "served meanwhile");
    let closed = tokio::time::timeout(squall_ui::bounded::Limits::default().header_timeout * 4, async {
        for stream in silent.iter_mut().chain([&mut half]) {
            let mut buf = [0u8; 256];
            // A timed-out connection may get a 408 before it closes.
            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                let _ = n;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "idle connections were kept open past the header timeout");
    assert!(client.list().await.unwrap().is_empty(), "still served");
    nimbus.stop().await;
}

#[tokio::test]
async fn kill_and_rebalance_waits_and_workers_past_their_maximum_are_refused() {
    let dir = TempDir::new("nimbus");
    let nimbus = Served::start(&dir, 10).await;
    let client = nimbus.client();
    beat(&client, "sup-a", 2).await;
    submit(&client, "t", 1).await;
    let forever = RebalanceRequest { wait_secs: Some(u64::MAX), ..Default::default() };
    let err = client.rebalance("t", &forever).await.unwrap_err();
    assert_eq!(status_of(&err), 400, "{err}");
    assert!(err.to_string().contains("at most 86400 s"), "{err}");
    let many = RebalanceRequest { workers: Some(usize::MAX), wait_secs: Some(0), ..Default::default() };
    assert_eq!(status_of(&client.rebalance("t", &many).await.unwrap_err()), 400);
    let err = client.kill("t", &KillRequest { wait_secs: Some(u64::MAX) }).await.unwrap_err();
    assert_eq!(status_of(&err), 400, "{err}");
    let listed = client.list().await.unwrap();
    assert_eq!(listed[0].status, Status::Active, "nothing changed");
    nimbus.stop().await;
}

#[tokio::test]
async fn the_artifact_of_killed_topologies_is_deleted_once_no_topology_refers_to_it() {
    let dir = TempDir::new("nimbus");
    let nimbus = Served::start(&dir, 10).await;
    let client = nimbus.client();
    // Two topologies share one artifact; a third artifact is uploaded for a submit to come.
    submit(&client, "a", 1).await;
    let shared = submit(&client, "b", 1).await;
    assert_eq!(shared.name, "b");
    let sha = upload(&client).await;
    let pending = b"#!/bin/true\n".to_vec();
    let pending_sha = artifacts::sha256_hex(&pending);
    client.upload_artifact(&pending_sha, pending).await.unwrap();
    let stored = |sha: &str| dir.path().join("artifacts").join(sha).is_file();

    client.kill("a", &KillRequest { wait_secs: Some(0) }).await.unwrap();
    assert!(stored(&sha), "b still refers to it");
    // A kill that waits: the topology is removed by a reconcile pass at its deadline.
    client.kill("b", &KillRequest { wait_secs: Some(1) }).await.unwrap();
    eventually("b is removed", async || client.list().await.unwrap().is_empty().then_some(())).await;
    eventually("its artifact is deleted", async || (!stored(&sha)).then_some(())).await;
    assert!(stored(&pending_sha), "an artifact no topology referred to yet is kept");
    nimbus.stop().await;
}
