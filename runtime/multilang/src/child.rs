//! One child process speaking the multi-lang protocol: started, handshaken, fed and read.
//!
//! Contract: [`Child::start`] spawns the command in its directory with its environment,
//! writes the handshake (with a fresh, private pid directory) and waits, up to a timeout, for
//! the child's `{"pid": N}`. Afterwards a writer thread writes what [`Child::send`] hands it
//! (flushing whenever it runs out of work, so back-to-back messages share a write), a reader
//! thread frames and decodes the child's stdout into [`Event`]s on a bounded queue (a child
//! that writes faster than its task reads waits on its pipe), and a third thread forwards
//! each stderr line to the log, tagged with component and task, keeping the last few for
//! fault reports. A child that closes its stdout, dies, or writes something that is not the
//! protocol yields one [`Event::Gone`] naming why (with the offending text, or the exit
//! status and its last stderr lines). Dropping a [`Child`] kills it, reaps it and removes its
//! pid directory; its threads end with its pipes.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use squall_api::TaskId;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::codec::{self, ChildMsg, Framer, MAX_MESSAGE};

/// Messages read ahead of the task: a child that writes more waits.
const READ_AHEAD: usize = 1024;
/// stderr lines kept for a fault report.
const STDERR_KEPT: usize = 8;
/// Write buffers larger than this are not reused.
const SPARE_MAX: usize = 64 << 10;

/// What to run, and who runs it (for the log).
#[derive(Debug, Clone)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
    pub component: Arc<str>,
    pub task: TaskId,
}

/// What the reader saw.
#[derive(Debug)]
pub enum Event {
    Msg(ChildMsg),
    /// The child is no longer usable: why.
    Gone(String),
}

pub struct Child {
    process: std::process::Child,
    pub pid: u32,
    to_child: std_mpsc::Sender<Vec<u8>>,
    spare: std_mpsc::Receiver<Vec<u8>>,
    from_child: mpsc::Receiver<Event>,
    pid_dir: PathBuf,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl Child {
    /// Starts the child and does the handshake (see the module docs).
    pub async fn start(
        spec: &Spec,
        conf: &serde_json::Value,
        context: &serde_json::Value,
        timeout: Duration,
    ) -> Result<Child, String> {
        static STARTS: AtomicU64 = AtomicU64::new(0);
        let pid_dir = std::env::temp_dir().join("squall-multilang").join(format!(
            "{}-{}-{}-{}",
            std::process::id(),
            spec.component,
            spec.task,
            STARTS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&pid_dir)
            .map_err(|e| format!("cannot create the pid directory {}: {e}", pid_dir.display()))?;
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .current_dir(&spec.dir)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut process = command.spawn().map_err(|e| {
            let _ = std::fs::remove_dir_all(&pid_dir);
            format!("cannot run {} (in {}): {e}", spec.program.display(), spec.dir.display())
        })?;
        let (stdin, stdout, stderr) = (
            process.stdin.take().expect("stdin is piped"),
            process.stdout.take().expect("stdout is piped"),
            process.stderr.take().expect("stderr is piped"),
        );
        let (to_child, writer_rx) = std_mpsc::channel::<Vec<u8>>();
        let (spare_tx, spare) = std_mpsc::channel();
        let (events_tx, from_child) = mpsc::channel(READ_AHEAD);
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let name = format!("shell-{}-{}", spec.component, spec.task);
        spawn_thread(&name, move || write_loop(stdin, writer_rx, spare_tx))?;
        spawn_thread(&name, move || read_loop(stdout, events_tx))?;
        let (component, task, tail) = (spec.component.clone(), spec.task, stderr_tail.clone());
        spawn_thread(&name, move || stderr_loop(stderr, &component, task, &tail))?;
        let mut child =
            Child { pid: process.id(), process, to_child, spare, from_child, pid_dir, stderr_tail };
        let mut buf = child.buffer();
        codec::encode_handshake(&mut buf, conf, &child.pid_dir.to_string_lossy(), context);
        child.send(buf);
        match child.recv_until(Instant::now() + timeout).await {
            Some(Event::Msg(ChildMsg::Pid(pid))) => {
                if pid != child.pid {
                    tracing::debug!(component = %spec.component, task = spec.task, "child {} says its pid is {pid}", child.pid);
                }
                Ok(child)
            }
            Some(Event::Msg(other)) => {
                Err(format!("answered the handshake with {other:?}, not {{\"pid\": N}}"))
            }
            Some(Event::Gone(why)) => Err(child.gone(why).await),
            None => Err(format!("did not answer the handshake within {}s", timeout.as_secs_f64())),
        }
    }

    /// An empty buffer to encode a message into (a reused one when there is one).
    pub fn buffer(&self) -> Vec<u8> {
        self.spare.try_recv().unwrap_or_default()
    }

    /// Queues a message for the child; never waits. A child that is gone shows as an
    /// [`Event::Gone`] on the read side.
    pub fn send(&self, buf: Vec<u8>) {
        let _ = self.to_child.send(buf);
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<Event> {
        match self.from_child.try_recv() {
            Ok(event) => Some(event),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(Event::Gone("closed its stdout".into())),
        }
    }

    /// The next event, or `None` once `deadline` passes.
    pub async fn recv_until(&mut self, deadline: Instant) -> Option<Event> {
        match tokio::time::timeout_at(deadline, self.from_child.recv()).await {
            Ok(Some(event)) => Some(event),
            Ok(None) => Some(Event::Gone("closed its stdout".into())),
            Err(_) => None,
        }
    }

    /// Why the child is gone, in full: `why`, its exit status if it exited, its last stderr.
    pub async fn gone(&mut self, why: String) -> String {
        let mut status = None;
        for _ in 0..50 {
            if let Ok(Some(s)) = self.process.try_wait() {
                status = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut text = format!("child pid {} {why}", self.pid);
        if let Some(status) = status {
            text.push_str(&format!(" ({status})"));
        }
        let tail = self.stderr_tail.lock().unwrap_or_else(|p| p.into_inner());
        if !tail.is_empty() {
            text.push_str("; its last stderr: ");
            text.push_str(&tail.iter().cloned().collect::<Vec<_>>().join(" | "));
        }
        text
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.pid_dir);
    }
}

fn spawn_thread(name: &str, body: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name(name.chars().take(15).collect())
        .spawn(body)
        .map(drop)
        .map_err(|e| format!("cannot start a thread for the child: {e}"))
}

fn write_loop(stdin: ChildStdin, queue: std_mpsc::Receiver<Vec<u8>>, spare: std_mpsc::Sender<Vec<u8>>) {
    let mut out = std::io::BufWriter::with_capacity(64 << 10, stdin);
    let recycle = |mut buf: Vec<u8>| {
        if buf.capacity() <= SPARE_MAX {
            buf.clear();
            let _ = spare.send(buf);
        }
    };
    while let Ok(buf) = queue.recv() {
        if out.write_all(&buf).is_err() {
            return;
        }
        recycle(buf);
        while let Ok(buf) = queue.try_recv() {
            if out.write_all(&buf).is_err() {
                return;
            }
            recycle(buf);
        }
        if out.flush().is_err() {
            return;
        }
    }
}

fn read_loop(stdout: ChildStdout, events: mpsc::Sender<Event>) {
    let mut input = BufReader::with_capacity(64 << 10, stdout);
    let mut line = Vec::with_capacity(256);
    let mut framer = Framer::default();
    loop {
        line.clear();
        let read = (&mut input).take(MAX_MESSAGE as u64 + 1).read_until(b'\n', &mut line);
        let event = match read {
            Ok(0) => Event::Gone("closed its stdout".into()),
            Err(e) => Event::Gone(format!("cannot be read from: {e}")),
            Ok(_) => match framer.push_line(&line) {
                Ok(None) => continue,
                Ok(Some(message)) => {
                    let decoded = codec::decode(message);
                    framer.clear();
                    match decoded {
                        Ok(msg) => Event::Msg(msg),
                        Err(e) => Event::Gone(format!("wrote something that is not the protocol: {e}")),
                    }
                }
                Err(e) => Event::Gone(format!("wrote something that is not the protocol: {e}")),
            },
        };
        let last = matches!(event, Event::Gone(_));
        if events.blocking_send(event).is_err() || last {
            return;
        }
    }
}

fn stderr_loop(
    stderr: std::process::ChildStderr,
    component: &str,
    task: TaskId,
    tail: &Mutex<VecDeque<String>>,
) {
    let mut input = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut input).take(64 << 10).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end();
                tracing::info!(component, task, "stderr: {text}");
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == STDERR_KEPT {
                    tail.pop_front();
                }
                tail.push_back(text.to_string());
            }
        }
    }
}
