//! Helpers for the tests of the web UI, REST API and metrics: plain HTTP/1.1 requests, and a
//! `squall local FILE --ui 127.0.0.1:0` run that says where its UI listens.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::{Running, TempDir};

/// The secret local runs of these tests get (`SQUALL_SECRET`).
pub const LOCAL_SECRET: &str = "ui-secret";

/// One request (`connection: close`): the status and the body.
pub fn http(addr: &str, method: &str, path: &str, secret: Option<&str>, body: &str) -> (u16, String) {
    let attempt = || -> std::io::Result<(u16, String)> {
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let header = secret.map(|s| format!("x-squall-secret: {s}\r\n")).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{header}content-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        let status = reply.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Ok((status, body))
    };
    attempt().unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

/// `GET path` as JSON; panics unless it answers 200 with JSON.
#[track_caller]
pub fn get_json(addr: &str, path: &str) -> Value {
    let (status, body) = http(addr, "GET", path, None, "");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"))
}

/// `squall local FILE --ui 127.0.0.1:0` (for up to 10 minutes) and where its UI listens.
pub fn local_ui(dir: &TempDir, file: &Path) -> (Running, String) {
    let mut running = dir
        .squall(["local"])
        .arg(file)
        .arg("--ui")
        .arg("127.0.0.1:0")
        .arg("--for")
        .arg("600s")
        .env("SQUALL_SECRET", LOCAL_SECRET)
        .timeout(Duration::from_secs(900))
        .spawn();
    let line =
        running.wait_for_stderr_line(Duration::from_secs(120), |l| l.contains("ui listening on http://"));
    let Some(line) = line else {
        panic!("squall local --ui did not say where it listens\n{}", running.stderr_seen().join("\n"))
    };
    let addr = line.rsplit("ui listening on http://").next().unwrap_or_default().trim().trim_end_matches('/');
    (running, addr.to_string())
}

/// Polls `done` every 200 ms until it holds; panics naming `what` after `deadline`.
#[track_caller]
pub fn wait_for(deadline: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + deadline;
    while !done() {
        assert!(std::time::Instant::now() < end, "waited {deadline:?} in vain until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Headless Chromium (Debian's `chromium`, installed once if missing) with a fresh profile in
/// `dir`, given `args` and then `url`; its stdout. Panics if it fails or takes over 3 minutes.
pub fn chromium(dir: &TempDir, args: &[&str], url: &str) -> String {
    let bin = squall_testkit::tools::require(&squall_testkit::tools::CHROMIUM)
        .unwrap_or_else(|e| panic!("the web UI's tests need Chromium: {e}"));
    let profile = dir.join(format!("chromium-profile-{}", next_profile()));
    let mut child = std::process::Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start chromium: {e}"));
    let stdout = child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        })
    });
    let stderr = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        })
    });
    let end = std::time::Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium took over 3 minutes on {url}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = stdout.and_then(|t| t.join().ok()).unwrap_or_default();
    let err = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    assert!(status.success(), "chromium on {url}: {status}\n{err}");
    out
}

/// A name no other test of this process uses.
fn next_profile() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The number in attribute `attr` of the first element whose tag holds `marker`.
pub fn attr_of(dom: &str, marker: &str, attr: &str) -> Option<f64> {
    let at = dom.find(marker)?;
    let tag_start = dom[..at].rfind('<')?;
    let tag = &dom[tag_start..at + dom[at..].find('>')?];
    let value = tag.split(&format!("{attr}=\"")).nth(1)?.split('"').next()?;
    value.parse().ok()
}
