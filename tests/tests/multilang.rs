//! Components in other languages: `shell-bolt` and `shell-spout` run pystorm components
//! (from the Python package index, installed once into the tools cache) unchanged, through
//! the real `squall` binary.
//!
//! Pins: a pystorm split bolt gives word counts identical to the Rust split bolt's, acked; a
//! pystorm spout's message ids, failed a tenth of the time by `flaky`, are all acked in the
//! end; a Python bolt that raises has its tuples failed and replayed, and is started again; a
//! child killed with kill -9, or silent past its `timeout_secs`, is reported, started again,
//! and loses nothing; `need_task_ids`
//! answers name the tasks tuples went to, and direct emits reach the task named; scripts are
//! found in the `resources/` folder beside the topology file; a child that writes something
//! that is not the protocol is reported with the offending line; on a cluster, `squall submit`
//! carries the `resources/` folder to the supervisors, whose workers run the script from it;
//! the README's Python word count runs as shown.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use squall_tests::{read_json_lines, repo_file, Outcome, TempDir};

/// Far beyond what a healthy run needs on a loaded two-core machine with a debug build.
const DEADLINE: Duration = Duration::from_secs(120);

fn python() -> PathBuf {
    squall_testkit::python::pystorm().unwrap_or_else(|e| panic!("{e}"))
}

/// A scratch directory with `resources/` holding `scripts` (name, text).
fn project(label: &str, scripts: &[(&str, &str)]) -> TempDir {
    let dir = TempDir::new(label);
    std::fs::create_dir_all(dir.join("resources")).unwrap();
    for (name, text) in scripts {
        std::fs::write(dir.join("resources").join(name), text).unwrap();
    }
    dir
}

fn local(dir: &TempDir, file: &str, args: &[&str]) -> Outcome {
    dir.squall(["local", file].iter().chain(args)).env("PYTHON", python()).timeout(DEADLINE).run()
}

/// Final count per word from a file-sink after `word-count`: each word's counts are 1..=k,
/// once each, so k is its count.
fn final_counts(path: &std::path::Path) -> BTreeMap<String, u64> {
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for row in read_json_lines(path) {
        seen.entry(row["word"].as_str().unwrap().to_string())
            .or_default()
            .push(row["count"].as_u64().unwrap());
    }
    seen.into_iter()
        .map(|(word, mut counts)| {
            counts.sort_unstable();
            let k = counts.len() as u64;
            assert!(counts.iter().copied().eq(1..=k), "{word}: each of 1..={k} once, got {counts:?}");
            (word, k)
        })
        .collect()
}

fn word_count(split: &str, out: &str) -> String {
    format!(
        r#"name = "wc"
[settings]
acking = true

[[spouts]]
id = "sentences"
kind = "random-sentence"
config = {{ limit = 2000, seed = 7 }}

[[bolts]]
id = "split"
parallelism = 2
{split}
inputs = [{{ from = "sentences", grouping = "shuffle" }}]

[[bolts]]
id = "count"
kind = "word-count"
parallelism = 2
inputs = [{{ from = "split", grouping = {{ fields = ["word"] }} }}]

[[bolts]]
id = "sink"
kind = "file-sink"
config = {{ path = "{out}" }}
inputs = [{{ from = "count" }}]
"#
    )
}

#[test]
fn pystorm_split_bolt_counts_words_exactly_as_the_rust_one_with_acking() {
    let script = std::fs::read_to_string(repo_file("config/resources/split_sentence.py")).unwrap();
    let dir = project("ml-wc", &[("split_sentence.py", &script)]);
    let python_split = r#"kind = "shell-bolt"
config = { command = ["${PYTHON}", "split_sentence.py"], fields = ["word"] }"#;
    dir.topology("py.toml", &word_count(python_split, "py.jsonl"));
    dir.topology("rs.toml", &word_count(r#"kind = "split-sentence""#, "rs.jsonl"));
    let py = local(&dir, "py.toml", &["--json"]);
    py.assert_success();
    local(&dir, "rs.toml", &[]).assert_success();

    let (py_counts, rs_counts) = (final_counts(&dir.join("py.jsonl")), final_counts(&dir.join("rs.jsonl")));
    assert!(rs_counts.len() > 10, "{rs_counts:?}");
    assert_eq!(py_counts, rs_counts, "{py}");
    let summary = py.summary();
    assert_eq!(summary.component("sentences").acked(), 2000, "{py}");
    assert_eq!(summary.component("split").text("kind"), "shell-bolt");
    assert_eq!(summary.component("split").acked(), 2000, "{py}");
    for id in ["sentences", "split", "count"] {
        assert_eq!(summary.component(id).failed(), 0, "{id}\n{py}");
    }
}

/// A pystorm spout: ids 0..COUNT once each, replaying what fails; every ack and fail is
/// appended to `outcomes.txt` in its directory (`ack N` / `fail N`).
const RELIABLE_SPOUT: &str = r#"
import os
from collections import deque
from pystorm import Spout

COUNT = int(os.environ["COUNT"])

class Numbers(Spout):
    def initialize(self, conf, context):
        self.next_n = 0
        self.replay = deque()
        self.log_file = open("outcomes.txt", "a", buffering=1)

    def next_tuple(self):
        if self.replay:
            n = self.replay.popleft()
        elif self.next_n < COUNT:
            n = self.next_n
            self.next_n += 1
        else:
            return
        self.emit([n], tup_id=n)

    def ack(self, tup_id):
        self.log_file.write("ack %d\n" % tup_id)

    def fail(self, tup_id):
        self.log_file.write("fail %d\n" % tup_id)
        self.replay.append(tup_id)

if __name__ == "__main__":
    Numbers().run()
"#;

fn outcomes(dir: &TempDir) -> (BTreeSet<u64>, usize) {
    let text = std::fs::read_to_string(dir.join("resources/outcomes.txt")).unwrap_or_default();
    let mut acked = BTreeSet::new();
    let mut fails = 0;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("ack", n)) => {
                assert!(acked.insert(n.parse().unwrap()), "{n} acked twice");
            }
            Some(("fail", _)) => fails += 1,
            _ => {}
        }
    }
    (acked, fails)
}

#[test]
fn pystorm_spout_ids_failed_by_flaky_are_all_acked_in_the_end() {
    let dir = project("ml-spout", &[("count_spout.py", RELIABLE_SPOUT)]);
    dir.topology(
        "spout.toml",
        r#"name = "py-spout"
[settings]
message_timeout_secs = 30

[[spouts]]
id = "numbers"
kind = "shell-spout"
config = { command = ["${PYTHON}", "count_spout.py"], fields = ["n"], env = { COUNT = "1000" } }

[[bolts]]
id = "flaky"
kind = "flaky"
config = { fail_fraction = 0.1, seed = 3 }
inputs = [{ from = "numbers" }]
"#,
    );
    let mut run = dir.squall(["local", "spout.toml"]).env("PYTHON", python()).timeout(DEADLINE).spawn();
    let started = Instant::now();
    let (mut acked, mut fails) = outcomes(&dir);
    while acked.len() < 1000 && started.elapsed() < DEADLINE && !run.has_exited() {
        std::thread::sleep(Duration::from_millis(200));
        (acked, fails) = outcomes(&dir);
    }
    run.interrupt();
    let out = run.wait();
    let missing: Vec<u64> = (0..1000).filter(|n| !acked.contains(n)).collect();
    assert!(missing.is_empty(), "never acked: {missing:?}\n{out}");
    assert!(fails > 0, "a tenth of the tuples fail and are replayed\n{out}");
}

/// A bolt that raises the first time it sees a multiple of 50 (and remembers it in a file,
/// since pystorm exits after an exception), else passes the number on.
const RAISING_BOLT: &str = r#"
import os
from pystorm import Bolt

class Fussy(Bolt):
    def process(self, tup):
        n = tup.values[0]
        mark = "raised-%d" % n
        if n % 50 == 0 and not os.path.exists(mark):
            open(mark, "w").close()
            raise ValueError("no multiples of fifty: %d" % n)
        self.emit([n])

if __name__ == "__main__":
    Fussy().run()
"#;

fn numbers_through(script: &str, count: u32, rate: u32) -> String {
    format!(
        r#"name = "numbers"
[settings]
message_timeout_secs = 30

[[spouts]]
id = "numbers"
kind = "sequence"
config = {{ count = {count}, rate = {rate} }}

[[bolts]]
id = "py"
kind = "shell-bolt"
config = {{ command = ["${{PYTHON}}", "{script}"], fields = ["n"] }}
inputs = [{{ from = "numbers" }}]

[[bolts]]
id = "sink"
kind = "file-sink"
config = {{ path = "numbers.jsonl" }}
inputs = [{{ from = "py" }}]
"#
    )
}

fn numbers_seen(dir: &TempDir) -> BTreeSet<u64> {
    read_json_lines(&dir.join("numbers.jsonl")).iter().map(|row| row["n"].as_u64().unwrap()).collect()
}

#[test]
fn a_python_bolt_that_raises_has_its_tuples_failed_replayed_and_is_started_again() {
    let dir = project("ml-raise", &[("fussy.py", RAISING_BOLT)]);
    dir.topology("raise.toml", &numbers_through("fussy.py", 400, 0));
    let out = local(&dir, "raise.toml", &["--json"]);
    out.assert_success();
    let seen = numbers_seen(&dir);
    let missing: Vec<u64> = (0..400).filter(|n| !seen.contains(n)).collect();
    assert!(missing.is_empty(), "never arrived: {missing:?}\n{out}");
    let summary = out.summary();
    assert_eq!(summary.component("numbers").acked(), 400, "{out}");
    assert!(summary.component("numbers").failed() >= 8, "each multiple of 50 failed once\n{out}");
    assert!(out.stderr.contains("no multiples of fifty"), "the Python error is reported\n{out}");
    assert!(out.stderr.contains("starting it again"), "the child is restarted\n{out}");
}

/// Passes numbers on; writes its pid to `pids/PID` when it starts.
const PID_BOLT: &str = r#"
import os
from pystorm import Bolt

class Pass(Bolt):
    def initialize(self, conf, context):
        os.makedirs("pids", exist_ok=True)
        open(os.path.join("pids", str(os.getpid())), "w").close()

    def process(self, tup):
        self.emit([tup.values[0]])

if __name__ == "__main__":
    Pass().run()
"#;

fn pids(dir: &TempDir) -> Vec<i32> {
    std::fs::read_dir(dir.join("resources/pids"))
        .map(|entries| entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

#[test]
fn a_child_killed_with_kill_9_is_started_again_and_nothing_is_lost() {
    let dir = project("ml-kill", &[("pass.py", PID_BOLT)]);
    dir.topology("kill.toml", &numbers_through("pass.py", 3000, 300));
    let mut run =
        dir.squall(["local", "kill.toml", "--json"]).env("PYTHON", python()).timeout(DEADLINE).spawn();
    let started = Instant::now();
    while pids(&dir).is_empty() && started.elapsed() < DEADLINE && !run.has_exited() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = *pids(&dir).first().unwrap_or_else(|| panic!("the child never started"));
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: kill(2) on the child's pid, which it wrote itself and which is alive.
    assert_eq!(unsafe { libc::kill(first, libc::SIGKILL) }, 0);
    let out = run.wait();
    out.assert_success();
    let seen = numbers_seen(&dir);
    let missing: Vec<u64> = (0..3000).filter(|n| !seen.contains(n)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}\n{out}");
    assert_eq!(out.summary().component("numbers").acked(), 3000, "{out}");
    assert!(pids(&dir).len() >= 2, "a second child was started\n{out}");
    assert!(
        out.stderr.contains("SIGKILL") || out.stderr.contains("signal: 9"),
        "the kill is reported\n{out}"
    );
}

/// Emits each number on `default` asking for the task ids, reports them on `report`, and
/// emits it directly to the `direct` task picked by the number.
const ROUTER_BOLT: &str = r#"
import json
from pystorm import Bolt

class Router(Bolt):
    def initialize(self, conf, context):
        tasks = context["task->component"]
        self.targets = sorted(int(t) for t, c in tasks.items() if c == "direct")

    def process(self, tup):
        n = tup.values[0]
        went = self.emit([n], need_task_ids=True)
        self.emit([n, json.dumps(went)], stream="report")
        target = self.targets[n % len(self.targets)]
        self.emit([n, target], stream="picked", direct_task=target)

if __name__ == "__main__":
    Router().run()
"#;

/// Passes its input on with its own task id appended.
const ECHO_BOLT: &str = r#"
from pystorm import Bolt

class Echo(Bolt):
    def process(self, tup):
        self.emit(list(tup.values) + [self.task_id])

if __name__ == "__main__":
    Echo().run()
"#;

#[test]
fn need_task_ids_name_the_receiving_tasks_and_direct_emits_reach_the_named_task() {
    let dir = project("ml-direct", &[("router.py", ROUTER_BOLT), ("echo.py", ECHO_BOLT)]);
    dir.topology(
        "direct.toml",
        r#"name = "direct"
[[spouts]]
id = "numbers"
kind = "sequence"
config = { count = 200 }

[[bolts]]
id = "router"
kind = "shell-bolt"
config = { command = ["${PYTHON}", "router.py"], fields = ["n"], streams = { report = ["n", "tasks"], picked = { fields = ["n", "target"], direct = true } } }
inputs = [{ from = "numbers" }]

[[bolts]]
id = "keyed"
kind = "shell-bolt"
parallelism = 3
config = { command = ["${PYTHON}", "echo.py"], fields = ["n", "task"] }
inputs = [{ from = "router", grouping = { fields = ["n"] } }]

[[bolts]]
id = "direct"
kind = "shell-bolt"
parallelism = 2
config = { command = ["${PYTHON}", "echo.py"], fields = ["n", "target", "task"] }
inputs = [{ from = "router", stream = "picked", grouping = "direct" }]

[[bolts]]
id = "reports"
kind = "file-sink"
config = { path = "reports.jsonl" }
inputs = [{ from = "router", stream = "report" }]

[[bolts]]
id = "received"
kind = "file-sink"
config = { path = "received.jsonl" }
inputs = [{ from = "keyed" }]

[[bolts]]
id = "directed"
kind = "file-sink"
config = { path = "directed.jsonl" }
inputs = [{ from = "direct" }]
"#,
    );
    let out = local(&dir, "direct.toml", &["--json"]);
    out.assert_success();
    let reported: BTreeMap<u64, Vec<u64>> = read_json_lines(&dir.join("reports.jsonl"))
        .iter()
        .map(|r| (r["n"].as_u64().unwrap(), serde_json::from_str(r["tasks"].as_str().unwrap()).unwrap()))
        .collect();
    let received: BTreeMap<u64, u64> = read_json_lines(&dir.join("received.jsonl"))
        .iter()
        .map(|r| (r["n"].as_u64().unwrap(), r["task"].as_u64().unwrap()))
        .collect();
    assert_eq!(reported.len(), 200, "{out}");
    for (n, tasks) in &reported {
        assert_eq!(tasks, &[received[n]], "number {n}: reported tasks vs the task that got it\n{out}");
    }
    let directed = read_json_lines(&dir.join("directed.jsonl"));
    assert_eq!(directed.len(), 200, "{out}");
    let targets: BTreeSet<u64> = directed.iter().map(|r| r["target"].as_u64().unwrap()).collect();
    assert_eq!(targets.len(), 2, "both direct tasks are picked\n{out}");
    for r in &directed {
        assert_eq!(r["target"], r["task"], "a direct emit reaches the task it names: {r:?}");
    }
}

#[test]
fn a_child_that_writes_something_else_is_reported_with_the_offending_line() {
    let chatty = r#"
import sys
from pystorm import Bolt

class Chatty(Bolt):
    def process(self, tup):
        sys.__stdout__.write("hello, not the protocol\n")
        sys.__stdout__.flush()
        self.emit([tup.values[0]])

if __name__ == "__main__":
    Chatty().run()
"#;
    let dir = project("ml-chatty", &[("chatty.py", chatty)]);
    dir.topology("chatty.toml", &numbers_through("chatty.py", 5, 0));
    let mut run = dir.squall(["local", "chatty.toml"]).env("PYTHON", python()).timeout(DEADLINE).spawn();
    let line = run.wait_for_stderr_line(DEADLINE, |l| l.contains("not the protocol"));
    run.interrupt();
    let line = line.unwrap_or_else(|| panic!("no report\n{}", run.wait()));
    assert!(line.contains("hello, not the protocol"), "the offending line is quoted: {line}");
    assert!(line.contains("py") && line.contains("task"), "component and task are named: {line}");
}

#[test]
fn a_missing_script_fails_the_run_with_a_one_line_error() {
    let dir = project("ml-missing", &[]);
    dir.topology("missing.toml", &numbers_through("nowhere.py", 5, 0));
    let out = local(&dir, "missing.toml", &[]);
    out.assert_failure();
    assert!(out.stderr.contains("py task"), "{out}");
}

/// The final counts in a file-sink's output once its words add up to `total`; `None` before.
fn counts_once_complete(path: &std::path::Path, total: u64) -> Option<BTreeMap<String, u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    // A line being written may be incomplete: count only whole lines.
    let complete = text.lines().filter(|l| l.ends_with('}')).count() as u64;
    (complete == total).then(|| final_counts(path))
}

#[test]
fn the_python_word_count_runs_on_a_cluster_of_two_supervisors_with_its_resources_uploaded() {
    let script = std::fs::read_to_string(repo_file("config/resources/split_sentence.py")).unwrap();
    let dir = TempDir::new("ml-cluster");
    // The topology and its resources live in their own folder: workers run elsewhere, and
    // find the script only in what their supervisor unpacked.
    std::fs::create_dir_all(dir.join("topo/resources")).unwrap();
    std::fs::write(dir.join("topo/resources/split_sentence.py"), &script).unwrap();
    let expected_out = dir.join("expected.jsonl");
    dir.topology("rs.toml", &word_count(r#"kind = "split-sentence""#, &expected_out.display().to_string()));
    local(&dir, "rs.toml", &[]).assert_success();
    let expected = final_counts(&expected_out);
    let total: u64 = expected.values().sum();

    let out = dir.join("cluster.jsonl");
    let python_split = r#"kind = "shell-bolt"
config = { command = ["${PYTHON}", "split_sentence.py"], fields = ["word"] }"#;
    let text = word_count(python_split, &out.display().to_string())
        .replace("name = \"wc\"", "name = \"wc\"\nworkers = 2");
    std::fs::write(dir.join("topo/wc.toml"), text).unwrap();

    let cluster = squall_tests::cluster::Cluster::start(&dir, 2, 1);
    let submitted = cluster.squall(["submit"]).arg(dir.join("topo/wc.toml")).env("PYTHON", python()).run();
    submitted.assert_success();
    cluster.wait_until(Duration::from_secs(240), "every word is counted on the cluster", |_| {
        counts_once_complete(&out, total).is_some()
    });
    assert_eq!(counts_once_complete(&out, total), Some(expected));
    let unpacked: Vec<PathBuf> = (0..2)
        .flat_map(|i| std::fs::read_dir(dir.join(format!("sup-{i}/resources"))).into_iter().flatten())
        .flatten()
        .map(|e| e.path().join("split_sentence.py"))
        .collect();
    assert!(!unpacked.is_empty() && unpacked.iter().all(|p| p.is_file()), "{unpacked:?}\n{}", cluster.logs());
    let killed = cluster.squall(["kill", "wc", "--wait", "1"]).run();
    killed.assert_success();
}

#[test]
fn the_readme_python_word_count_runs_from_the_repository() {
    let dir = TempDir::new("ml-readme");
    let file = repo_file("config/wordcount-python.toml").display().to_string();
    let out = dir
        .squall(["local", &file, "--json"])
        .env("PYTHON", python())
        .env("SENTENCES", "1000")
        .env_remove("RATE")
        .timeout(DEADLINE)
        .run();
    out.assert_success();
    let summary = out.summary();
    assert_eq!(summary.component("sentences").acked(), 1000, "{out}");
    assert_eq!(summary.component("split").failed(), 0, "{out}");
    assert_eq!(summary.component("count").executed(), summary.component("split").emitted(), "{out}");
}

/// Hangs (for good) the first time it sees 5; passes every other number on.
const HANGING_BOLT: &str = r#"
import os, time
from pystorm import Bolt

class Stuck(Bolt):
    def process(self, tup):
        n = tup.values[0]
        if n == 5 and not os.path.exists("hung"):
            open("hung", "w").close()
            time.sleep(3600)
        self.emit([n])

if __name__ == "__main__":
    Stuck().run()
"#;

#[test]
fn a_child_that_stops_answering_heartbeats_is_replaced_and_its_tuples_replayed() {
    let dir = project("ml-hang", &[("stuck.py", HANGING_BOLT)]);
    let topology = numbers_through("stuck.py", 200, 0)
        .replace(r#"fields = ["n"] }"#, r#"fields = ["n"], timeout_secs = 2 }"#);
    assert!(topology.contains("timeout_secs = 2"));
    dir.topology("hang.toml", &topology);
    let out = local(&dir, "hang.toml", &["--json"]);
    out.assert_success();
    let seen = numbers_seen(&dir);
    let missing: Vec<u64> = (0..200).filter(|n| !seen.contains(n)).collect();
    assert!(missing.is_empty(), "never arrived: {missing:?}\n{out}");
    assert!(out.stderr.contains("did not answer"), "the silence is reported\n{out}");
    assert!(out.summary().component("numbers").failed() >= 1, "its tuples were failed\n{out}");
}
