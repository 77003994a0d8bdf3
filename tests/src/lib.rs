//! Helpers for the end-to-end tests: they run the real `squall` binary as a user would.
//!
//! - [`squall_bin`] builds the binary once per test process (or takes `SQUALL_BIN`).
//! - [`TempDir`] is a scratch directory removed on drop; commands run inside it.
//! - [`Squall`] builds a command line, runs it with a generous deadline and captures its
//!   output ([`Outcome`]); [`Squall::spawn`] starts it and lets a test watch stderr line by
//!   line and interrupt it ([`Running`]). A child is killed on timeout and on drop, so no
//!   process outlives its test.
//! - [`Summary`] reads the JSON summary of `squall local --json`; [`read_json_lines`] reads
//!   what a `file-sink` wrote.
//! - [`tansu::TansuBroker`] runs a Tansu broker (Kafka API) for the Kafka tests.
//! - [`ui`]: HTTP requests to the web UI, REST API and metrics, and `squall local --ui`.
//! - [`tls`]: certificates made at test time, HTTPS and raw TLS connections.

pub mod pipeline;
pub mod tansu;
pub mod tls;
pub mod ui;

use std::ffi::OsStr;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

pub mod cluster;

/// How long a command may run before it is killed and the test fails. Generous: the tests
/// run in parallel on small, busy machines with a debug build.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives inside the workspace").to_path_buf()
}

/// A file of the workspace, e.g. `repo_file("config/wordcount.toml")`.
pub fn repo_file(relative: &str) -> PathBuf {
    workspace_root().join(relative)
}

/// The `squall` binary under test: `SQUALL_BIN` if set, else a debug build made once per test
/// process with `cargo build -p squall-topologies --bin squall` in the workspace.
pub fn squall_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("SQUALL_BIN") {
        // Absolute, since commands run in other directories.
        Some(bin) => std::path::absolute(bin).expect("SQUALL_BIN is a usable path"),
        None => build_squall(),
    })
}

fn build_squall() -> PathBuf {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args(["build", "--quiet", "-p", "squall-topologies", "--bin", "squall"])
        .args(["--message-format", "json-render-diagnostics"])
        .current_dir(&root)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&cargo).display()));
    assert!(output.status.success(), "building the squall binary failed ({})", output.status);
    // Cargo names the executable it built; the target directory (CARGO_TARGET_DIR, or the
    // workspace's target/) is the fallback should it not.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let built = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "squall")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from));
    let bin = built.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|dir| root.join(dir)) // a relative CARGO_TARGET_DIR is relative to the cwd: root
            .unwrap_or_else(|| root.join("target"));
        target.join("debug").join("squall")
    });
    assert!(bin.is_file(), "no squall binary at {}", bin.display());
    bin
}

/// A fresh directory under the system temp dir, removed with everything in it on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `squall-e2e-<label>-<pid>-<n>-<nanos>`.
    pub fn new(label: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "squall-e2e-{label}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.path.join(relative)
    }

    /// Writes `contents` to `name` in this directory and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Writes a topology file; same as [`TempDir::write`], named for what it holds.
    pub fn topology(&self, name: &str, toml: &str) -> PathBuf {
        self.write(name, toml)
    }

    /// A [`Squall`] command running in this directory, so relative paths (topology files,
    /// file-sink outputs) land here.
    pub fn squall<I, S>(&self, args: I) -> Squall
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Squall::new(args).current_dir(&self.path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A `squall` command line, run with stdin closed (or fed [`Squall::stdin`]) and stdout and
/// stderr captured.
#[derive(Debug)]
pub struct Squall {
    command: Command,
    shown: String,
    timeout: Duration,
    input: Option<Vec<u8>>,
}

impl Squall {
    /// `squall ARGS…`, running in the current directory until it ends or [`DEFAULT_TIMEOUT`].
    pub fn new<I, S>(args: I) -> Squall
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(squall_bin());
        let mut shown = String::from("squall");
        for arg in args {
            shown.push(' ');
            shown.push_str(&arg.as_ref().to_string_lossy());
            command.arg(arg);
        }
        Squall { command, shown, timeout: DEFAULT_TIMEOUT, input: None }
    }

    /// One more argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Squall {
        self.shown.push(' ');
        self.shown.push_str(&arg.as_ref().to_string_lossy());
        self.command.arg(arg);
        self
    }

    /// Feeds `input` to the command's stdin, then closes it.
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Squall {
        self.input = Some(input.into());
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Squall {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Squall {
        self.command.env_remove(key);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Squall {
        self.command.current_dir(dir);
        self
    }

    /// Runs the command with at most `n` open files (RLIMIT_NOFILE, soft and hard, set in the
    /// child before it execs `squall`).
    #[cfg(unix)]
    pub fn max_open_files(mut self, n: u64) -> Squall {
        use std::os::unix::process::CommandExt;
        let limit = libc::rlimit { rlim_cur: n as libc::rlim_t, rlim_max: n as libc::rlim_t };
        // SAFETY: between fork and exec the closure only makes one async-signal-safe call.
        unsafe {
            self.command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self
    }

    /// Kill the command and fail the test if it runs longer than this.
    pub fn timeout(mut self, timeout: Duration) -> Squall {
        self.timeout = timeout;
        self
    }

    /// Runs the command to its end and returns what it did; panics (after killing it) if it
    /// runs past its timeout.
    pub fn run(self) -> Outcome {
        let timeout = self.timeout;
        self.spawn().wait_for_exit(timeout)
    }

    /// Starts the command; see [`Running`].
    pub fn spawn(mut self) -> Running {
        let stdin = if self.input.is_some() { Stdio::piped() } else { Stdio::null() };
        let mut child = self
            .command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.shown));
        if let (Some(input), Some(mut pipe)) = (self.input.take(), child.stdin.take()) {
            // A thread, so that a command that reads slowly (or not at all) cannot block the
            // test; stdin closes when it is done.
            thread::spawn(move || {
                use std::io::Write;
                let _ = pipe.write_all(&input);
            });
        }
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let stdout_reader = thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stdout.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        });
        let (lines_tx, lines) = mpsc::channel();
        let stderr_reader = thread::spawn(move || {
            let mut all = String::new();
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&line).into_owned();
                all.push_str(&text);
                let _ = lines_tx.send(text.trim_end_matches(['\n', '\r']).to_string());
                line.clear();
            }
            all
        });
        Running {
            child,
            shown: self.shown,
            started: Instant::now(),
            timeout: self.timeout,
            stdout_reader: Some(stdout_reader),
            stderr_reader: Some(stderr_reader),
            lines,
            seen: Vec::new(),
        }
    }
}

/// A started `squall` command. Dropping it kills the process if it still runs.
pub struct Running {
    child: Child,
    shown: String,
    started: Instant,
    timeout: Duration,
    stdout_reader: Option<JoinHandle<String>>,
    stderr_reader: Option<JoinHandle<String>>,
    lines: Receiver<String>,
    /// Stderr lines already handed out by [`Running::wait_for_stderr_line`].
    seen: Vec<String>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `deadline` for a stderr line matching `pred` and returns it; `None` if the
    /// deadline passes or stderr closes first.
    pub fn wait_for_stderr_line(
        &mut self,
        deadline: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Whether the process has ended (without waiting).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The stderr lines read so far by [`Running::wait_for_stderr_line`].
    pub fn stderr_seen(&self) -> &[String] {
        &self.seen
    }

    /// Sends SIGINT, as Ctrl-C in a terminal would.
    #[cfg(unix)]
    pub fn interrupt(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) with a valid signal on a child we have not reaped yet (it is waited
        // for only in `wait_for_exit` and `drop`), so the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, libc::SIGINT) };
        assert_eq!(rc, 0, "kill -INT {pid}: {}", std::io::Error::last_os_error());
    }

    /// Sends SIGKILL, as `kill -9` would: the process dies at once, with no cleanup. Returns
    /// what it printed.
    #[cfg(unix)]
    pub fn kill_hard(self) -> Outcome {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: as in `interrupt`: a valid signal to our own child, not reaped yet.
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
        self.wait_for_exit(DEFAULT_TIMEOUT)
    }

    /// Waits up to `timeout` (from now) for the process to end and returns what it did;
    /// kills it and panics with its output so far if it does not.
    pub fn wait_for_exit(mut self, timeout: Duration) -> Outcome {
        let end = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= end => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let (stdout, stderr) = self.collect_output();
                    panic!(
                        "`{}` still ran after {timeout:?} and was killed\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}",
                        self.shown
                    );
                }
                Ok(None) => thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("cannot wait for `{}`: {e}", self.shown),
            }
        };
        let elapsed = self.started.elapsed();
        let (stdout, stderr) = self.collect_output();
        Outcome { command: std::mem::take(&mut self.shown), status, stdout, stderr, elapsed }
    }

    /// [`Running::wait_for_exit`] with the command's own timeout, counted from its start.
    pub fn wait(self) -> Outcome {
        let left = self.timeout.saturating_sub(self.started.elapsed());
        self.wait_for_exit(left)
    }

    /// All of stdout and stderr, once the process has ended (its pipes closed).
    fn collect_output(&mut self) -> (String, String) {
        let join = |reader: Option<JoinHandle<String>>| {
            reader.map(|r| r.join().unwrap_or_default()).unwrap_or_default()
        };
        (join(self.stdout_reader.take()), join(self.stderr_reader.take()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished command did.
#[derive(Debug)]
pub struct Outcome {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Outcome {
    /// Panics, showing the output, unless the command exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Outcome {
        assert!(self.status.success(), "expected success\n{self}");
        self
    }

    /// Panics, showing the output, unless the command exited with a non-zero status (not by
    /// a signal).
    #[track_caller]
    pub fn assert_failure(&self) -> &Outcome {
        assert!(
            matches!(self.status.code(), Some(code) if code != 0),
            "expected a non-zero exit status\n{self}"
        );
        self
    }

    /// The stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }

    /// Stdout parsed as the JSON summary of `squall local --json`.
    #[track_caller]
    pub fn summary(&self) -> Summary {
        match serde_json::from_str(self.stdout.trim()) {
            Ok(json) => Summary(json),
            Err(e) => panic!("stdout is not one JSON object ({e})\n{self}"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` ended with {} after {:.1?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.command, self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// The JSON summary of a local run:
/// `{"topology": …, "components": {id: {"kind", "tasks", "emitted", …}}}`.
#[derive(Debug, Clone)]
pub struct Summary(pub Value);

impl Summary {
    pub fn topology(&self) -> &str {
        self.0["topology"].as_str().expect("`topology` is a string")
    }

    /// The ids of the components, sorted.
    pub fn component_ids(&self) -> Vec<&str> {
        let components = self.0["components"].as_object().expect("`components` is an object");
        let mut ids: Vec<&str> = components.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    /// The figures of component `id`.
    #[track_caller]
    pub fn component(&self, id: &str) -> ComponentSummary {
        match self.0["components"].get(id).and_then(Value::as_object) {
            Some(figures) => ComponentSummary { id: id.to_string(), figures: figures.clone() },
            None => panic!("no component {id:?} in the summary: {}", self.0),
        }
    }
}

/// One component's figures in a [`Summary`].
#[derive(Debug, Clone)]
pub struct ComponentSummary {
    id: String,
    figures: Map<String, Value>,
}

impl ComponentSummary {
    /// An integer figure: "emitted", "acked", "tasks", ….
    #[track_caller]
    pub fn count(&self, key: &str) -> u64 {
        match self.figures.get(key).and_then(Value::as_u64) {
            Some(n) => n,
            None => panic!("{}.{key} is not a count: {:?}", self.id, self.figures),
        }
    }

    /// A string figure: "kind", ….
    #[track_caller]
    pub fn text(&self, key: &str) -> &str {
        match self.figures.get(key).and_then(Value::as_str) {
            Some(s) => s,
            None => panic!("{}.{key} is not a string: {:?}", self.id, self.figures),
        }
    }

    pub fn emitted(&self) -> u64 {
        self.count("emitted")
    }

    pub fn executed(&self) -> u64 {
        self.count("executed")
    }

    pub fn acked(&self) -> u64 {
        self.count("acked")
    }

    pub fn failed(&self) -> u64 {
        self.count("failed")
    }

    /// A spout's failed trees by cause: (component, cause) → count, from `failed_by`.
    pub fn failed_by(&self) -> std::collections::BTreeMap<(String, String), u64> {
        let entries = self.figures.get("failed_by").and_then(Value::as_array).cloned().unwrap_or_default();
        entries
            .iter()
            .map(|e| {
                let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                ((text("component"), text("cause")), e["count"].as_u64().unwrap_or_default())
            })
            .collect()
    }
}

/// A `squall broker` serving a data directory, started by [`BrokerServer::start`]; killed on
/// drop if still running.
pub struct BrokerServer {
    running: Running,
    addr: String,
}

impl BrokerServer {
    /// `squall broker --listen 127.0.0.1:0 --data-dir DATA` in `dir`, once it says where it
    /// listens.
    pub fn start(dir: &TempDir, data: &Path) -> BrokerServer {
        BrokerServer::start_on(dir, data, "127.0.0.1:0")
    }

    /// [`BrokerServer::start`] on a given address (to restart a server where it was).
    pub fn start_on(dir: &TempDir, data: &Path, listen: &str) -> BrokerServer {
        let data = data.display().to_string();
        let args = ["broker", "--listen", listen, "--data-dir", &data];
        BrokerServer::spawn(dir.squall(args).env_remove("SQUALL_DATA_DIR"))
    }

    /// Starts `command` (a `squall broker …`) and waits for its `listening on ADDR` line.
    pub fn spawn(command: Squall) -> BrokerServer {
        let mut running = command.timeout(Duration::from_secs(600)).spawn();
        let line = running
            .wait_for_stderr_line(Duration::from_secs(60), |l| l.starts_with("squall broker: listening on "));
        let Some(line) = line else {
            let seen = running.stderr_seen().join("\n");
            let outcome = running.wait_for_exit(Duration::from_secs(10));
            panic!("the broker did not say where it listens\n{seen}\n{outcome}");
        };
        let addr = BrokerServer::listen_addr(&line).to_string();
        BrokerServer { running, addr }
    }

    /// ADDR in `squall broker: listening on ADDR, data in DIR`.
    pub fn listen_addr(line: &str) -> &str {
        let rest = line.strip_prefix("squall broker: listening on ").expect("a listening line");
        rest.split_once(',').map_or(rest, |(addr, _)| addr)
    }

    /// Where it listens: `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn running(&mut self) -> &mut Running {
        &mut self.running
    }

    /// Stops it as Ctrl-C would and returns what it did.
    #[cfg(unix)]
    pub fn stop(self) -> Outcome {
        self.running.interrupt();
        self.running.wait_for_exit(Duration::from_secs(60))
    }
}

/// The objects of a JSON-lines file, as a `file-sink` writes it: one object per line.
#[track_caller]
pub fn read_json_lines(path: &Path) -> Vec<Map<String, Value>> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .map(|(i, line)| match serde_json::from_str(line) {
            Ok(Value::Object(object)) => object,
            _ => panic!("{}:{}: not a JSON object: {line:?}", path.display(), i + 1),
        })
        .collect()
}
