//! A real cluster on 127.0.0.1 for the end-to-end tests: one `squall nimbus` and N
//! `squall supervisor`s, each a process of the binary under test with its own cluster file
//! in a [`TempDir`], workers on ephemeral ports (slots = 0).
//!
//! [`Cluster::start`] waits until nimbus listens and every supervisor has registered; the
//! cluster verbs run through [`Cluster::squall`] with the cluster's file. Processes are killed
//! on drop; workers end with their supervisor (they watch their parent), so nothing outlives
//! a test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Running, Squall, TempDir};

/// The secret of test clusters.
pub const SECRET: &str = "e2e-secret";

/// Seconds without a heartbeat before nimbus moves a supervisor's work: short, for tests, but
/// eight heartbeats, so that a supervisor slowed by a loaded 2-core machine is not taken for
/// lost (a test then waits in vain for the placement it set up).
pub const SUPERVISOR_TIMEOUT_SECS: u64 = 8;

pub struct Cluster<'a> {
    dir: &'a TempDir,
    nimbus: Option<Running>,
    nimbus_addr: String,
    supervisors: Vec<Option<Running>>,
    slots: usize,
    /// Where nimbus serves the web UI, REST API and metrics (`host:port`).
    ui_addr: String,
    /// `[cluster] tls` of every daemon and client, if on.
    tls: Option<squall_engine::tls::TlsFiles>,
}

impl<'a> Cluster<'a> {
    /// Nimbus and `supervisors` supervisors of `slots` slots each, in `dir`.
    pub fn start(dir: &'a TempDir, supervisors: usize, slots: usize) -> Cluster<'a> {
        Cluster::start_with_tls(dir, supervisors, slots, None)
    }

    /// [`Cluster::start`] with `[cluster] tls` set to `tls` in every cluster file.
    pub fn start_with_tls(
        dir: &'a TempDir,
        supervisors: usize,
        slots: usize,
        tls: Option<squall_engine::tls::TlsFiles>,
    ) -> Cluster<'a> {
        let mut cluster = Cluster {
            tls,
            dir,
            nimbus: None,
            nimbus_addr: "127.0.0.1:0".into(),
            supervisors: Vec::new(),
            slots,
            ui_addr: String::new(),
        };
        cluster.start_nimbus();
        for i in 0..supervisors {
            cluster.supervisors.push(None);
            cluster.start_supervisor(i);
        }
        cluster.wait_until(Duration::from_secs(120), "every supervisor registers", |c| {
            c.supervisors_alive() == supervisors
        });
        cluster
    }

    /// The cluster file of clients (and of nimbus).
    pub fn config(&self) -> PathBuf {
        self.dir.join("cluster.toml")
    }

    fn write_config(&self, name: &str, supervisor: Option<usize>) -> PathBuf {
        let dir = self.dir.path().display();
        let mut text = format!(
            "[cluster]\nsecret = \"{SECRET}\"\nnimbus = \"{}\"\n\n[nimbus]\nstate_dir = \"{dir}/nimbus\"\n\
             supervisor_timeout_secs = {SUPERVISOR_TIMEOUT_SECS}\n\n[ui]\nlisten = \"127.0.0.1:0\"\n",
            self.nimbus_addr
        );
        if let Some(tls) = &self.tls {
            text = text.replacen("\n\n[nimbus]", &format!("\n{}\n[nimbus]", crate::tls::toml_line(tls)), 1);
        }
        if let Some(i) = supervisor {
            let slots = vec!["0"; self.slots].join(", ");
            text.push_str(&format!(
                "\n[supervisor]\nid = \"sup-{i}\"\ndata_dir = \"{dir}/sup-{i}\"\nslots = [{slots}]\nheartbeat_secs = 1\n"
            ));
        }
        self.dir.write(name, &text)
    }

    /// Starts nimbus (again, on the address it had, once it had one).
    pub fn start_nimbus(&mut self) {
        let config = self.write_config("cluster.toml", None);
        let mut running =
            self.dir.squall(["nimbus", "--config"]).arg(&config).timeout(Duration::from_secs(3600)).spawn();
        let line =
            running.wait_for_stderr_line(Duration::from_secs(60), |l| l.contains("nimbus listening on "));
        let Some(line) = line else {
            let seen = running.stderr_seen().join("\n");
            panic!(
                "nimbus did not say where it listens\n{seen}\n{}",
                running.wait_for_exit(Duration::from_secs(10))
            );
        };
        let addr = line.rsplit("nimbus listening on ").next().unwrap_or_default();
        self.nimbus_addr =
            addr.split_whitespace().next().unwrap_or_default().trim_end_matches(',').to_string();
        let ui = running.wait_for_stderr_line(Duration::from_secs(60), |l| l.contains("ui listening on "));
        let ui = ui.unwrap_or_else(|| panic!("nimbus did not say where its ui listens"));
        let ui = ui.rsplit("ui listening on ").next().unwrap_or_default();
        let ui = ui.trim_start_matches("http://").trim_start_matches("https://");
        self.ui_addr = ui.trim().trim_end_matches('/').to_string();
        self.write_config("cluster.toml", None);
        self.nimbus = Some(running);
    }

    /// kill -9 of nimbus.
    pub fn kill_nimbus(&mut self) {
        if let Some(n) = self.nimbus.take() {
            n.kill_hard();
        }
    }

    pub fn start_supervisor(&mut self, i: usize) {
        let config = self.write_config(&format!("supervisor-{i}.toml"), Some(i));
        let mut running = self
            .dir
            .squall(["supervisor", "--config"])
            .arg(&config)
            .timeout(Duration::from_secs(3600))
            .spawn();
        if running.wait_for_stderr_line(Duration::from_secs(60), |l| l.contains("supervisor sup-")).is_none()
        {
            let seen = running.stderr_seen().join("\n");
            panic!(
                "supervisor {i} did not start\n{seen}\n{}",
                running.wait_for_exit(Duration::from_secs(10))
            );
        }
        self.supervisors[i] = Some(running);
    }

    /// The pid of supervisor `i`, if it runs.
    pub fn supervisor_pid(&self, i: usize) -> Option<u32> {
        self.supervisors[i].as_ref().map(|r| r.pid())
    }

    /// kill -9 of supervisor `i` and, at the same moment, of its workers.
    pub fn kill_supervisor_and_workers(&mut self, i: usize) -> usize {
        let workers = self.supervisor_pid(i).map(child_workers).unwrap_or_default();
        if let Some(s) = self.supervisors[i].take() {
            kill9(s.pid());
            let _ = s.wait_for_exit(Duration::from_secs(60));
        }
        for &w in &workers {
            kill9(w);
        }
        workers.len()
    }

    /// The worker processes of every running supervisor.
    pub fn worker_pids(&self) -> Vec<u32> {
        (0..self.supervisors.len()).filter_map(|i| self.supervisor_pid(i)).flat_map(child_workers).collect()
    }

    /// The worker processes of supervisor `i`.
    pub fn workers_of(&self, i: usize) -> Vec<u32> {
        self.supervisor_pid(i).map(child_workers).unwrap_or_default()
    }

    /// A cluster verb with this cluster's file: `squall VERB … --config FILE`.
    pub fn squall<I, S>(&self, args: I) -> Squall
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.dir.squall(args).arg("--config").arg(self.config())
    }

    /// `squall list --json`.
    pub fn list(&self) -> Vec<Value> {
        let out = self.squall(["list", "--json"]).run();
        out.assert_success();
        match serde_json::from_str(out.stdout.trim()) {
            Ok(Value::Array(items)) => items,
            _ => panic!("list --json printed no JSON array\n{out}"),
        }
    }

    /// The `squall list` entry of `name`, if listed.
    pub fn listed(&self, name: &str) -> Option<Value> {
        self.list().into_iter().find(|t| t["name"] == name)
    }

    /// `squall status NAME --json`, or `None` if that fails.
    pub fn status(&self, name: &str) -> Option<Value> {
        let out = self.squall(["status", name, "--json"]).run();
        out.status.success().then(|| serde_json::from_str(out.stdout.trim()).ok()).flatten()
    }

    /// How many supervisors nimbus counts as alive (from its API).
    pub fn supervisors_alive(&self) -> usize {
        let reply = match &self.tls {
            Some(tls) => {
                let header = signed_get_header(SECRET, "/v1/supervisors");
                crate::tls::https_get(&self.nimbus_addr, "/v1/supervisors", &crate::tls::load(tls), &header)
            }
            None => http_get(&self.nimbus_addr, "/v1/supervisors", Some(SECRET)),
        };
        let Ok(reply) = reply else { return 0 };
        match serde_json::from_str::<Value>(&reply.1) {
            Ok(Value::Array(items)) => items.iter().filter(|s| s["alive"] == true).count(),
            _ => 0,
        }
    }

    /// Where nimbus serves the web UI, REST API and metrics (`host:port`).
    pub fn ui_addr(&self) -> &str {
        &self.ui_addr
    }

    pub fn nimbus_addr(&self) -> &str {
        &self.nimbus_addr
    }

    /// Polls `done` every 200 ms until it holds; panics naming `what` after `deadline`.
    #[track_caller]
    pub fn wait_until(&self, deadline: Duration, what: &str, mut done: impl FnMut(&Self) -> bool) {
        let end = Instant::now() + deadline;
        while !done(self) {
            if Instant::now() > end {
                panic!("waited {deadline:?} in vain until {what}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The supervisors' worker logs, for a failing test's message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 0..self.supervisors.len() {
            let dir = self.dir.join(format!("sup-{i}/logs"));
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                out.push_str(&format!("--- {}\n", e.path().display()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// The children of `parent` whose command line has `worker` in it.
pub fn child_workers(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // pid (comm) state ppid …: comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let state = rest.split_whitespace().next().unwrap_or("");
        if state != "Z" && cmdline.split(|&b| b == 0).any(|arg| arg == b"worker") {
            out.push(pid);
        }
    }
    out
}

/// True if process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

/// kill -9.
pub fn kill9(pid: u32) {
    // SAFETY: kill(2) with a valid signal; a pid that is gone gives ESRCH, which is ignored.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// A plain HTTP/1.1 GET (no client library: the tests check what nimbus does with raw
/// requests too), signed with `secret` if given. Returns (status, body).
pub fn http_get(addr: &str, path: &str, secret: Option<&str>) -> std::io::Result<(u16, String)> {
    let header = secret.map(|s| signed_get_header(s, path)).unwrap_or_default();
    http_get_raw(addr, path, &header)
}

/// The header line (CRLF-terminated) that signs a GET of `path` with `secret` now.
pub fn signed_get_header(secret: &str, path: &str) -> String {
    use squall_engine::auth::{body_sha256, HttpSignature, Secret, SIGNATURE_HEADER};
    let signature =
        HttpSignature::header(&Secret::new(secret), "GET", path, body_sha256(b"")).expect("a nonce");
    format!("{SIGNATURE_HEADER}: {signature}\r\n")
}

/// A plain HTTP/1.1 GET with `headers` (each line CRLF-terminated) as given.
pub fn http_get_raw(addr: &str, path: &str, headers: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nhost: {addr}\r\n{headers}connection: close\r\n\r\n")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let status = reply.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// The numbers `file-sink` wrote to `path` (field `n`), as a set; empty if no file yet.
pub fn numbers_in(path: &Path) -> std::collections::BTreeSet<u64> {
    let Ok(text) = std::fs::read_to_string(path) else { return Default::default() };
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["n"].as_u64())
        .collect()
}

/// Where the workers listen, from their logs (`…: listening on ADDR, hosting …`).
pub fn worker_ports(dir: &TempDir, supervisor: usize) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join(format!("sup-{supervisor}/logs"))) else {
        return Vec::new();
    };
    let mut addrs = Vec::new();
    for e in entries.flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for line in text.lines() {
            if let Some((_, rest)) = line.split_once(": listening on ") {
                addrs.extend(rest.split_once(", hosting").map(|(addr, _)| addr.to_string()));
            }
        }
    }
    addrs
}

/// What a worker sends a peer after the handshake: a hello for `topology` version `version`
/// as worker 0, then for every task id below 16 a batch of one tuple on stream 0 from task 0
/// whose one value is `n`.
pub fn hello_and_batches(topology: &str, version: u64, n: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut frame = |body: Vec<u8>| {
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&body);
    };
    let mut hello = vec![0x81, 0xa1, b'H', 0x95, 0x01, 0xa0 | topology.len() as u8];
    hello.extend_from_slice(topology.as_bytes());
    hello.push(0xcf);
    hello.extend_from_slice(&version.to_be_bytes());
    hello.extend_from_slice(&[0x00, 0x00]);
    frame(hello);
    for task in 0..16u8 {
        let mut batch = vec![0x81, 0xa1, b'B', 0x93, task, 0xc2, 0x91, 0x94, 0x00, 0x00, 0x91, 0xce];
        batch.extend_from_slice(&n.to_be_bytes());
        batch.push(0x90);
        frame(batch);
    }
    bytes
}

/// A topology `pipeline`: `in` (log-spout, 3 tasks) → flaky (2 tasks, a tenth of first
/// attempts fail) → `out` (log-sink, 2 tasks), on the `squall broker` at `broker`.
pub fn log_flaky_pipeline(broker: &str, workers: usize, max_spout_pending: u64) -> String {
    format!(
        r#"
name = "pipeline"
workers = {workers}

[settings]
message_timeout_secs = 5
max_spout_pending = {max_spout_pending}

[[spouts]]
id = "in"
kind = "log-spout"
parallelism = 3
config = {{ topic = "in", broker = "{broker}", retry_backoff_ms = 10, commit_interval_ms = 200 }}

[[bolts]]
id = "flaky"
kind = "flaky"
parallelism = 2
inputs = [{{ from = "in", grouping = "shuffle" }}]
config = {{ fail_fraction = 0.1, seed = 3, first_attempt_only = true }}

[[bolts]]
id = "out"
kind = "log-sink"
parallelism = 2
inputs = [{{ from = "flaky", grouping = "shuffle" }}]
config = {{ topic = "out", broker = "{broker}" }}
"#
    )
}

/// How many of the keys `0..records` are not in `topic` of the embedded log in `data` (read
/// once its broker stopped).
pub fn keys_missing(data: &Path, topic: &str, records: u64) -> usize {
    let log = squall_broker::log::Log::open(data).expect("the broker's log opens");
    let mut seen = std::collections::BTreeSet::new();
    for p in log.describe(topic).expect("the topic exists").partitions {
        let mut offset = p.log_start;
        while offset < p.high_watermark {
            let fetched = log.read(topic, p.partition, offset, 1 << 20).expect("read");
            for r in &fetched.records {
                seen.insert(String::from_utf8_lossy(r.key.as_deref().expect("keyed")).into_owned());
            }
            offset = fetched.records.last().expect("records below the high watermark").offset + 1;
        }
    }
    (0..records).filter(|k| !seen.contains(&k.to_string())).count()
}
