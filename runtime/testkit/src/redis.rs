//! A private Redis server for the `redis` state backend's tests: Debian's `redis-server`,
//! installed once on first use (see [`crate::tools`]).
//!
//! Contract: [`Redis::start`] runs `redis-server` on 127.0.0.1 and a free port, with its data
//! in a fresh temporary directory and every write fsynced to its append-only file before the
//! reply (`appendonly yes`, `appendfsync always`: what the backend needs to call a write
//! durable), and returns once it answers PING. [`Redis::kill`] kills it with SIGKILL, as a
//! crash would; [`Redis::restart`] kills it and starts it again on the same port and data.
//! Dropping it kills the server and removes the directory. A server that cannot be installed
//! or started is an error naming the package and what it said.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a starting server may take to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Tries with a fresh port when the one picked was taken meanwhile.
const PORT_TRIES: usize = 3;

/// A running `redis-server`.
pub struct Redis {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Installs `redis-server` if it is nowhere, and starts a private one.
    pub fn start() -> Result<Redis, String> {
        let bin = crate::tools::require(&crate::tools::REDIS_SERVER)?;
        let dir = crate::tansu::fresh_dir("redis")?;
        let mut last = String::new();
        for _ in 0..PORT_TRIES {
            let mut redis =
                Redis { bin: bin.clone(), dir: dir.clone(), port: crate::tansu::free_port()?, child: None };
            match redis.spawn() {
                Ok(()) => return Ok(redis),
                Err(e) => {
                    // Keep the directory for the next try: `redis` would remove it on drop.
                    redis.dir = PathBuf::new();
                    last = e;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        crate::tansu::kill(&mut self.child);
    }

    /// Kills the server and starts it again on the same port with the same data.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        crate::tansu::tail(&self.dir.join("redis.log"))
    }

    fn spawn(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let child = Command::new(&self.bin)
            .args(["--port", &port, "--bind", "127.0.0.1", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--logfile", "redis.log", "--daemonize", "no", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {} (package `redis-server`): {e}", self.bin.display()))?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Waits until the server answers PING.
    fn wait_ready(&mut self) -> Result<(), String> {
        let (port, dir) = (self.port, self.dir.clone());
        let log = || crate::tansu::tail(&dir.join("redis.log"));
        crate::tansu::wait_ready(&mut self.child, "redis-server", port, START_TIMEOUT, || ping(port), log)
    }
}

/// Whether a Redis server on this port answers PING with PONG.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_started_server_answers_and_survives_a_restart_and_is_gone_on_drop() {
        let mut redis = Redis::start().unwrap();
        let (port, dir) = (redis.port(), redis.dir().to_path_buf());
        assert!(ping(port));
        redis.restart().unwrap();
        assert!(ping(port), "answers again on the same port");
        drop(redis);
        assert!(!dir.exists(), "its directory is removed");
        let deadline = Instant::now() + Duration::from_secs(30);
        while ping(port) {
            assert!(Instant::now() < deadline, "the server still answers after drop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
