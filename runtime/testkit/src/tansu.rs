//! A local Tansu broker (a Kafka-API-compatible broker written in Rust) for benchmarks and
//! tests: `squall bench log1 --broker kafka` and the end-to-end tests start one each.
//!
//! Contract: [`find`] locates the `tansu` binary and [`require`] also installs it when it is
//! nowhere (see [`crate::tools`]). [`Tansu::start`] runs
//! `tansu broker` on 127.0.0.1 and a free port with the sqlite storage engine in a directory
//! of the caller's (`tansu.db` there; its log in `tansu.log`), and returns once the broker
//! answers Kafka metadata requests; [`Tansu::restart`] kills it and starts it again on the
//! same port and data, as a broker crash and recovery would. The process is killed on drop.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// How long a starting broker may take to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The `tansu` binary, as [`crate::tools::find`] looks for it (no install).
pub fn find() -> Result<PathBuf, String> {
    crate::tools::find(&crate::tools::TANSU)
}

/// The `tansu` binary, installed first if it is nowhere (see [`crate::tools::require`]).
pub fn require() -> Result<PathBuf, String> {
    crate::tools::require(&crate::tools::TANSU)
}

/// A running `tansu broker`.
pub struct Tansu {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Tansu {
    /// Starts a broker with its data in `dir` (which must exist) on a free port of 127.0.0.1.
    /// `bin` is the `tansu` binary ([`find`] or [`require`]).
    pub fn start(bin: PathBuf, dir: &Path) -> Result<Tansu, String> {
        let port = free_port()?;
        let mut tansu = Tansu { bin, dir: dir.to_path_buf(), port, child: None };
        tansu.spawn()?;
        Ok(tansu)
    }

    /// `127.0.0.1:PORT`, for `bootstrap`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `tcp://127.0.0.1:PORT`, as Tansu's own commands take it.
    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `tansu topic create NAME --broker URL --partitions N`.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<(), String> {
        let output = Command::new(&self.bin)
            .args(["topic", "create", name, "--broker", &self.url(), "--partitions", &partitions.to_string()])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        if !output.status.success() {
            return Err(format!(
                "`tansu topic create {name}` failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }

    /// Kills the broker at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Kills the broker and starts it again on the same port with the same data.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }

    /// The last lines of the broker's log, for error messages.
    pub fn log_tail(&self) -> String {
        tail(&self.dir.join("tansu.log"))
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .map_err(|e| format!("cannot open {}: {e}", self.dir.join("tansu.log").display()))?;
        let log_err = log.try_clone().map_err(|e| format!("cannot share the log file: {e}"))?;
        let url = self.url();
        let child = Command::new(&self.bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .env_remove("STORAGE_ENGINE")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Waits until the broker answers a metadata request.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("log_level", "0")
            .create()
            .map_err(|e| format!("cannot create a client: {e}"))?;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("tansu exited at start ({status}):\n{}", self.log_tail()));
                }
            }
            if consumer.fetch_metadata(None, Duration::from_secs(2)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "tansu did not answer on {} within {START_TIMEOUT:?}:\n{}",
                    self.bootstrap(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills a server process (SIGKILL) and reaps it, if there is one.
pub(crate) fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A fresh, empty directory `squall-<what>-<pid>-<n>` under the system's temporary one.
pub(crate) fn fresh_dir(what: &str) -> Result<PathBuf, String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "squall-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Waits up to `timeout` until `ready()`: an error with `log()` if `child` exits first, or if
/// the deadline passes (then the child is killed). `what` names the server in the errors.
pub(crate) fn wait_ready(
    child: &mut Option<Child>,
    what: &str,
    port: u16,
    timeout: Duration,
    ready: impl Fn() -> bool,
    log: impl Fn() -> String,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(running) = child.as_mut() {
            if let Ok(Some(status)) = running.try_wait() {
                *child = None;
                return Err(format!("{what} exited at start ({status}):\n{}", log()));
            }
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            kill(child);
            return Err(format!("{what} did not answer on 127.0.0.1:{port} within {timeout:?}:\n{}", log()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last 20 lines of a server's log file, for error messages.
pub(crate) fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A port of 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("cannot find a free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| format!("cannot find a free port: {e}"))
}
