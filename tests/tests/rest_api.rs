//! The REST API (Storm UI's `/api/v1/…` shape) and Prometheus `/metrics`, end to end: against
//! `squall local FILE --ui ADDR` and against a real cluster's nimbus (`[ui] listen`), read as a
//! script or Prometheus would, with the actions refused without the cluster secret.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_parse::{Scrape, Value as Prom};
use serde_json::Value;
use squall_tests::cluster::{kill9, Cluster, SECRET};
use squall_tests::ui::{get_json, http, local_ui, wait_for, LOCAL_SECRET};
use squall_tests::TempDir;

const LONG: Duration = Duration::from_secs(180);

/// One cluster or local run at a time: each is a handful of processes on a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// numbers (sequence, 300/s) and lines (file-spout, following a file with a malformed line)
/// → flaky (fails 10%) → sink.
fn observed_topology(dir: &TempDir, name: &str, workers: usize) -> PathBuf {
    let lines = dir.write("lines.jsonl", "{\"n\": 1}\nnot json at all\n{\"n\": 2}\n");
    let out = dir.join("out.jsonl");
    dir.topology(
        &format!("{name}.toml"),
        &format!(
            r#"
name = "{name}"
workers = {workers}

[settings]
message_timeout_secs = 5
max_spout_pending = 200

[[spouts]]
id = "numbers"
kind = "sequence"
config = {{ count = 100000000, rate = 300 }}

[[spouts]]
id = "lines"
kind = "file-spout"
config = {{ path = "{}", format = "jsonl", fields = ["n"], follow = true }}

[[bolts]]
id = "flaky"
kind = "flaky"
parallelism = 2
inputs = [{{ from = "numbers", grouping = "shuffle" }}, {{ from = "lines", grouping = "shuffle" }}]
config = {{ fail_fraction = 0.1, seed = 7 }}

[[bolts]]
id = "sink"
kind = "file-sink"
inputs = [{{ from = "flaky", grouping = "shuffle" }}]
config = {{ path = "{}" }}
"#,
            lines.display(),
            out.display()
        ),
    )
}

/// The entry of `list` (`spouts` or `bolts`) whose `key` is `id`.
fn entry<'a>(page: &'a Value, list: &str, key: &str, id: &str) -> &'a Value {
    page[list]
        .as_array()
        .and_then(|items| items.iter().find(|c| c[key] == id))
        .unwrap_or_else(|| panic!("no {list} entry {id} in {page:#}"))
}

fn scrape(addr: &str) -> Scrape {
    let (status, body) = http(addr, "GET", "/metrics", None, "");
    assert_eq!(status, 200, "{body}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The value of the sample `metric` whose labels include `labels` (a histogram: its count).
fn sample(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Prom::Counter(v) | Prom::Gauge(v) | Prom::Untyped(v) => *v,
            Prom::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Prom::Summary(_) => f64::NAN,
        })
}

#[track_caller]
fn post(addr: &str, path: &str, secret: Option<&str>, body: &str) -> (u16, Value) {
    let (status, text) = http(addr, "POST", path, secret, body);
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: not JSON ({e}): {text}")))
}

/// Actions without the secret, or with a wrong one, are refused with 401 and change nothing.
#[track_caller]
fn actions_need_the_secret(addr: &str, name: &str) {
    for secret in [None, Some("wrong")] {
        for action in ["activate", "deactivate", "kill", "rebalance"] {
            let (status, body) = post(addr, &format!("/api/v1/topology/{name}/{action}"), secret, "{}");
            assert_eq!(status, 401, "{action} with {secret:?}: {body}");
            assert!(body["error"].as_str().unwrap_or_default().contains("secret"), "{body}");
        }
    }
    assert_eq!(get_json(addr, &format!("/api/v1/topology/{name}"))["status"], "ACTIVE");
}

/// Reads the API while the topology runs: Storm's names, each component's sums, errors.
#[track_caller]
fn wait_for_live_figures(addr: &str, name: &str) -> Value {
    let path = format!("/api/v1/topology/{name}");
    let mut page = Value::Null;
    let what = "flaky executed tuples, numbers saw acks and failures, lines reported its bad line";
    wait_for(LONG, what, || {
        page = get_json(addr, &path);
        let numbers = entry(&page, "spouts", "spoutId", "numbers");
        entry(&page, "bolts", "boltId", "flaky")["executed"].as_u64() > Some(0)
            && numbers["failed"].as_u64() > Some(0)
            && numbers["completeLatency"].as_f64() > Some(0.0)
            && entry(&page, "spouts", "spoutId", "lines")["lastError"]
                .as_str()
                .unwrap_or_default()
                .contains(":2:")
    });
    page
}

#[track_caller]
fn check_topology_page(page: &Value, name: &str) {
    assert_eq!(page["name"], name);
    assert_eq!(page["status"], "ACTIVE");
    assert!(page["uptimeSeconds"].is_u64(), "{page:#}");
    assert!(page["tasksTotal"].as_u64() >= Some(5), "{page:#}");
    let numbers = entry(page, "spouts", "spoutId", "numbers");
    for key in ["emitted", "transferred", "acked", "failed"] {
        assert!(numbers[key].is_u64(), "{key}: {numbers:#}");
    }
    assert!(numbers["completeLatency"].as_f64() > Some(0.0), "{numbers:#}");
    let flaky = entry(page, "bolts", "boltId", "flaky");
    assert_eq!(flaky["tasks"], 2);
    for key in ["capacity", "executeLatency", "processLatency"] {
        assert!(flaky[key].is_f64(), "{key}: {flaky:#}");
    }
    assert!(flaky["failed"].as_u64() > Some(0), "{flaky:#}");
    // Failure forensics: the spout's failed trees are put down to flaky, which failed them.
    let failed_by = numbers["failedBy"].as_array().cloned().unwrap_or_default();
    assert!(
        failed_by
            .iter()
            .any(|f| f["component"] == "flaky" && f["cause"] == "failed" && f["count"].as_u64() > Some(0)),
        "{numbers:#}"
    );
    // Storm's windows: the page's own, and one entry of topologyStats per window.
    assert_eq!(
        (&page["window"], &page["windowPretty"]),
        (&Value::from(":all-time"), &Value::from("All time"))
    );
    let windows: Vec<&str> =
        page["topologyStats"].as_array().into_iter().flatten().filter_map(|w| w["window"].as_str()).collect();
    assert_eq!(windows, ["600", "10800", ":all-time"], "{page:#}");
    let edges = page["edges"].as_array().cloned().unwrap_or_default();
    let has = |from: &str, to: &str| edges.iter().any(|e| e["from"] == from && e["to"] == to);
    assert!(has("numbers", "flaky") && has("lines", "flaky") && has("flaky", "sink"), "{edges:?}");
}

#[track_caller]
fn check_component_page(addr: &str, name: &str) -> Value {
    let flaky = get_json(addr, &format!("/api/v1/topology/{name}/component/flaky"));
    assert_eq!(flaky["componentType"], "bolt");
    assert_eq!(flaky["executorStats"].as_array().map(Vec::len), Some(2), "{flaky:#}");
    assert_eq!(flaky["inputs"].as_array().map(Vec::len), Some(2), "{flaky:#}");
    let lines = get_json(addr, &format!("/api/v1/topology/{name}/component/lines"));
    let errors = lines["componentErrors"].as_array().cloned().unwrap_or_default();
    assert!(
        errors.iter().any(|e| e["error"].as_str().unwrap_or_default().contains("malformed")),
        "{lines:#}"
    );
    let (status, _) = http(addr, "GET", &format!("/api/v1/topology/{name}/component/nope"), None, "");
    assert_eq!(status, 404);
    // A window Storm knows is taken; any other is refused with a one-line reason.
    let last = get_json(addr, &format!("/api/v1/topology/{name}/component/flaky?window=600"));
    assert_eq!((&last["window"], &last["windowPretty"]), (&Value::from("600"), &Value::from("10m 0s")));
    assert_eq!(get_json(addr, &format!("/api/v1/topology/{name}?window=10800"))["window"], "10800");
    let (status, body) = http(addr, "GET", &format!("/api/v1/topology/{name}?window=42"), None, "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("600, 10800 or :all-time") && body.lines().count() == 1, "{body}");
    let (status, _) = http(addr, "GET", "/api/v1/topology/nope", None, "");
    assert_eq!(status, 404);
    flaky
}

/// /metrics parses as Prometheus text, and its counters move between two scrapes.
#[track_caller]
fn check_metrics_move(addr: &str, name: &str) {
    let labels = [("topology", name), ("component", "flaky")];
    let first = scrape(addr);
    let executed = sample(&first, "squall_executed_total", &labels).expect("squall_executed_total of flaky");
    let complete = [("topology", name), ("component", "numbers")];
    assert!(sample(&first, "squall_complete_latency_seconds", &complete) > Some(0.0));
    assert!(sample(&first, "squall_failed_total", &complete) > Some(0.0));
    let by_flaky = [("topology", name), ("component", "numbers"), ("cause", "failed"), ("by", "flaky")];
    assert!(sample(&first, "squall_failed_trees_total", &by_flaky) > Some(0.0), "failed trees by cause");
    assert!(sample(&first, "squall_capacity", &labels).is_some());
    assert!(
        sample(&first, "squall_execute_latency_seconds", &labels) > Some(0.0),
        "no sampled execute latency"
    );
    assert!(
        sample(&first, "squall_errors_total", &[("topology", name), ("component", "lines")]) >= Some(1.0)
    );
    wait_for(LONG, "squall_executed_total of flaky grows", || {
        sample(&scrape(addr), "squall_executed_total", &labels) > Some(executed)
    });
}

#[test]
fn a_local_run_serves_the_rest_api_and_metrics_and_takes_actions_with_the_secret() {
    let _serial = serial();
    let dir = TempDir::new("rest-local");
    let file = observed_topology(&dir, "observed", 1);
    let (mut run, addr) = local_ui(&dir, &file);

    let summary = get_json(&addr, "/api/v1/topology/summary");
    assert_eq!(summary["topologies"][0]["name"], "observed", "{summary:#}");
    let cluster = get_json(&addr, "/api/v1/cluster/summary");
    assert_eq!((cluster["supervisors"].as_u64(), cluster["topologies"].as_u64()), (Some(1), Some(1)));

    let page = wait_for_live_figures(&addr, "observed");
    check_topology_page(&page, "observed");
    let flaky = check_component_page(&addr, "observed");
    assert_eq!(flaky["executorStats"][0]["supervisorId"], "local");
    check_metrics_move(&addr, "observed");

    // `squall errors --ui` reads a local run's errors as nimbus's.
    let errors = dir.squall(["errors", "observed", "--ui", &addr]).run();
    errors.assert_success();
    let lines = errors.stdout.lines().skip_while(|l| !l.starts_with("lines: ")).nth(1).unwrap_or_default();
    assert!(
        lines.contains("task ") && lines.contains("worker 0 (localhost)") && lines.contains("malformed"),
        "{errors}"
    );
    let unknown = dir.squall(["errors", "nope", "--ui", &addr]).run();
    unknown.assert_failure();
    assert!(
        unknown.stderr.contains("no topology named `nope`") && unknown.stderr.lines().count() == 1,
        "{unknown}"
    );

    actions_need_the_secret(&addr, "observed");
    let (status, reply) = post(&addr, "/api/v1/topology/observed/deactivate", Some(LOCAL_SECRET), "");
    assert_eq!((status, &reply["status"]), (200, &Value::from("success")), "{reply}");
    assert_eq!(get_json(&addr, "/api/v1/topology/observed")["status"], "INACTIVE");
    let (status, reply) =
        post(&addr, "/api/v1/topology/observed/rebalance", Some(LOCAL_SECRET), "{\"workers\": 2}");
    assert_eq!(status, 409, "a local run cannot be rebalanced: {reply}");
    let (status, _) = post(&addr, "/api/v1/topology/observed/activate", Some(LOCAL_SECRET), "");
    assert_eq!(status, 200);
    assert_eq!(get_json(&addr, "/api/v1/topology/observed")["status"], "ACTIVE");

    // Kill ends the run as Ctrl-C does: the spouts stop, in-flight tuples drain, it exits.
    let (status, reply) =
        post(&addr, "/api/v1/topology/observed/kill", Some(LOCAL_SECRET), "{\"wait_secs\": 0}");
    assert_eq!(status, 200, "{reply}");
    wait_for(LONG, "the killed local run exits", || run.has_exited());
    run.wait_for_exit(Duration::from_secs(30)).assert_success();
}

fn submit(cluster: &Cluster, file: &Path) {
    let out = cluster.squall(["submit"]).arg(file).run();
    out.assert_success();
}

#[test]
fn nimbus_serves_the_rest_api_and_metrics_of_a_cluster_and_takes_actions_with_the_secret() {
    let _serial = serial();
    let dir = TempDir::new("rest-cluster");
    let cluster = Cluster::start(&dir, 1, 2);
    let addr = cluster.ui_addr().to_string();
    submit(&cluster, &observed_topology(&dir, "observed", 1));

    let page = wait_for_live_figures(&addr, "observed");
    check_topology_page(&page, "observed");
    assert_eq!(page["workersTotal"], 1);
    assert_eq!(page["workers"][0]["supervisorId"], "sup-0");
    let flaky = check_component_page(&addr, "observed");
    let task = &flaky["executorStats"][0];
    assert_eq!(task["supervisorId"], "sup-0");
    assert!(task["port"].as_u64() > Some(0), "{task:#}");
    check_metrics_move(&addr, "observed");

    // `squall errors` shows each component's errors with time, task and worker.
    let errors = cluster.squall(["errors", "observed"]).run();
    errors.assert_success();
    assert!(errors.stdout.contains("numbers: no errors"), "{errors}");
    let lines = errors.stdout.lines().skip_while(|l| !l.starts_with("lines: ")).nth(1).unwrap_or_default();
    assert!(lines.contains("worker 0 (127.0.0.1:") && lines.contains("malformed"), "{errors}");
    let json = cluster.squall(["errors", "observed", "--json"]).run();
    json.assert_success();
    let json: Value = serde_json::from_str(json.stdout.trim()).expect("errors --json prints one JSON object");
    assert_eq!(json, get_json(&addr, "/api/v1/topology/observed/errors"));
    let unknown = cluster.squall(["errors", "nope"]).run();
    unknown.assert_failure();
    assert!(unknown.stderr.contains("no topology named `nope`"), "{unknown}");

    // `status --window` shows the figures over one of Storm's windows, and refuses others.
    let last = cluster.squall(["status", "observed", "--window", "600", "--ui", &addr]).run();
    last.assert_success();
    assert!(last.stdout.lines().next().unwrap_or_default().ends_with("figures over: 10m 0s"), "{last}");
    assert!(last.stdout.contains("failed trees") && last.stdout.contains("flaky"), "{last}");
    let json = cluster.squall(["status", "observed", "--window", "10800", "--json", "--ui", &addr]).run();
    json.assert_success();
    let json: Value = serde_json::from_str(json.stdout.trim()).expect("status --json prints one JSON object");
    assert!(json["components"]["numbers"]["acked"].as_u64() > Some(0), "{json}");
    let bad = cluster.squall(["status", "observed", "--window", "7", "--ui", &addr]).run();
    bad.assert_failure();
    assert!(bad.stderr.contains("600, 10800 or :all-time") && bad.stderr.lines().count() == 1, "{bad}");

    let summary = get_json(&addr, "/api/v1/cluster/summary");
    let slots = |s: &Value| (s["supervisors"].as_u64(), s["slotsTotal"].as_u64(), s["slotsUsed"].as_u64());
    assert_eq!(slots(&summary), (Some(1), Some(2), Some(1)), "{summary:#}");
    let supervisors = get_json(&addr, "/api/v1/supervisor/summary");
    assert_eq!(supervisors["supervisors"][0]["id"], "sup-0");
    assert_eq!(supervisors["supervisors"][0]["alive"], true);
    let metrics = scrape(&addr);
    assert_eq!(sample(&metrics, "squall_supervisors", &[("state", "alive")]), Some(1.0));
    assert_eq!(sample(&metrics, "squall_slots", &[("state", "free")]), Some(1.0));

    // A worker killed -9 is restarted by its supervisor, and the restart is counted.
    let workers = cluster.worker_pids();
    assert_eq!(workers.len(), 1, "{workers:?}");
    kill9(workers[0]);
    wait_for(LONG, "the worker's restart is counted", || {
        get_json(&addr, "/api/v1/cluster/summary")["workerRestarts"].as_u64() >= Some(1)
    });
    assert!(sample(&scrape(&addr), "squall_worker_restarts_total", &[]) >= Some(1.0));

    actions_need_the_secret(&addr, "observed");
    let (status, reply) = post(&addr, "/api/v1/topology/observed/deactivate", Some(SECRET), "");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(cluster.listed("observed").map(|t| t["status"].clone()), Some(Value::from("inactive")));
    let (status, _) = post(&addr, "/api/v1/topology/observed/activate", Some(SECRET), "");
    assert_eq!(status, 200);
    let body = "{\"workers\": 2, \"parallelism\": {\"flaky\": 3}, \"wait_secs\": 0}";
    let (status, reply) = post(&addr, "/api/v1/topology/observed/rebalance", Some(SECRET), body);
    assert_eq!(status, 200, "{reply}");
    wait_for(LONG, "the rebalanced topology has 2 workers and 3 flaky tasks", || {
        let page = get_json(&addr, "/api/v1/topology/observed");
        page["workersTotal"] == 2 && entry(&page, "bolts", "boltId", "flaky")["tasks"] == 3
    });
    let (status, reply) =
        post(&addr, "/api/v1/topology/observed/rebalance", Some(SECRET), "{\"workers\": 0}");
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = post(&addr, "/api/v1/topology/observed/kill/0", Some(SECRET), "");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(get_json(&addr, "/api/v1/topology/summary")["topologies"], Value::Array(Vec::new()));
    let (status, _) = http(&addr, "GET", "/api/v1/topology/observed", None, "");
    assert_eq!(status, 404);
}
