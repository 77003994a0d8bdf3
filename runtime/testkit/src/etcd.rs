//! A private etcd for nimbus high availability's tests: Debian's `etcd-server`, installed
//! once on first use (see [`crate::tools`]).
//!
//! Contract: [`Etcd::start`] runs one etcd member on 127.0.0.1 with a free client port and a
//! free peer port, its data in a fresh temporary directory, and returns once it answers
//! `/health` with `true`. [`Etcd::kill`] kills it with SIGKILL, as a crash would;
//! [`Etcd::restart`] kills it and starts it again on the same ports and data. Dropping it
//! kills the server and removes the directory. A server that cannot be installed or started
//! is an error naming the package and what it said.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a starting server may take to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Tries with fresh ports when one picked was taken meanwhile.
const PORT_TRIES: usize = 3;

/// A running etcd member.
pub struct Etcd {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Etcd {
    /// Installs `etcd-server` if etcd is nowhere, and starts a private one.
    pub fn start() -> Result<Etcd, String> {
        let bin = crate::tools::require(&crate::tools::ETCD_SERVER)?;
        let dir = crate::tansu::fresh_dir("etcd")?;
        let mut last = String::new();
        for _ in 0..PORT_TRIES {
            let (port, peer_port) = (crate::tansu::free_port()?, crate::tansu::free_port()?);
            let mut etcd = Etcd { bin: bin.clone(), dir: dir.clone(), port, peer_port, child: None };
            match etcd.spawn() {
                Ok(()) => return Ok(etcd),
                Err(e) => {
                    // Keep the directory for the next try: `etcd` would remove it on drop.
                    etcd.dir = PathBuf::new();
                    last = e;
                    let _ = std::fs::remove_dir_all(dir.join("data"));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last)
    }

    /// `127.0.0.1:PORT`, its client address.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `etcd://127.0.0.1:PORT`, as `[cluster] coordination` names it.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.addr())
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

    /// Kills the server and starts it again on the same ports with the same data.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        crate::tansu::tail(&self.dir.join("etcd.log"))
    }

    fn spawn(&mut self) -> Result<(), String> {
        let client = format!("http://127.0.0.1:{}", self.port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .map_err(|e| format!("cannot open {}: {e}", self.dir.join("etcd.log").display()))?;
        let err = log.try_clone().map_err(|e| format!("cannot open etcd's log: {e}"))?;
        let child = Command::new(&self.bin)
            .args(["--name", "squall-test"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("squall-test={peer}")])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {} (package `etcd-server`): {e}", self.bin.display()))?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Waits until the server says it is healthy.
    fn wait_ready(&mut self) -> Result<(), String> {
        let (port, dir) = (self.port, self.dir.clone());
        let log = || crate::tansu::tail(&dir.join("etcd.log"));
        crate::tansu::wait_ready(&mut self.child, "etcd", port, START_TIMEOUT, || healthy(port), log)
    }
}

/// Whether the etcd on this port answers `/health` with `"health":"true"`.
pub fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut reply = Vec::new();
    let _ = stream.take(64 * 1024).read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).contains("\"health\":\"true\"")
}

impl Drop for Etcd {
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
    fn a_started_etcd_answers_and_survives_a_restart_and_is_gone_on_drop() {
        // /health is a read through raft: on a loaded machine one may time out, so it is polled.
        let answers = |port| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !healthy(port) {
                if Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            true
        };
        let mut etcd = Etcd::start().unwrap();
        let (port, dir) = (etcd.port(), etcd.dir().to_path_buf());
        assert!(answers(port));
        etcd.kill();
        assert!(!healthy(port), "a killed etcd does not answer");
        etcd.restart().unwrap();
        assert!(answers(port), "answers again on the same port");
        drop(etcd);
        assert!(!dir.exists(), "its directory is removed");
        let deadline = Instant::now() + Duration::from_secs(30);
        while healthy(port) {
            assert!(Instant::now() < deadline, "the server still answers after drop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
