//! `squall top` end to end: against `squall local FILE --ui ADDR`, `--once` prints one row per
//! component with its live rate, as a script reads it; an unknown topology is a one-line error;
//! in a terminal (a pseudo-terminal here) it draws the live view and q quits it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use squall_tests::ui::{local_ui, wait_for, LOCAL_SECRET};
use squall_tests::{squall_bin, TempDir};

const COUNTED: &str = r#"
name = "counted"

[[spouts]]
id = "numbers"
kind = "sequence"
config = { count = 100000000, rate = 2000 }

[[bolts]]
id = "sink"
kind = "log"
parallelism = 2
inputs = [{ from = "numbers", grouping = "shuffle" }]
"#;

/// A pseudo-terminal of `rows` × `cols`: its master and slave ends.
fn pty(rows: u16, cols: u16) -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty writes two fds it opened, which we then own; no name buffer, default
    // termios, the given size.
    let made =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    assert_eq!(made, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just opened by openpty and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

#[test]
fn top_once_shows_every_component_of_a_local_run_with_its_rate() {
    let dir = TempDir::new("top-local");
    let file = dir.topology("counted.toml", COUNTED);
    let (run, addr) = local_ui(&dir, &file);
    let mut shown = String::new();
    wait_for(Duration::from_secs(120), "top shows the sink executing", || {
        let out =
            dir.squall(["top", "counted", "--once", "--ui", &addr]).env("SQUALL_SECRET", LOCAL_SECRET).run();
        out.assert_success();
        shown = out.stdout.clone();
        let sink = shown.lines().find(|l| l.starts_with("sink ")).unwrap_or_default().to_string();
        // The fourth column is the rate: non-zero once the run is going.
        sink.split_whitespace().nth(3).is_some_and(|rate| rate != "0" && rate != "0.0")
    });
    assert!(shown.starts_with("topology counted: ACTIVE"), "{shown}");
    assert!(shown.lines().any(|l| l.starts_with("numbers ") && l.contains("sequence")), "{shown}");

    let out = dir.squall(["top", "nosuch", "--once", "--ui", &addr]).env("SQUALL_SECRET", LOCAL_SECRET).run();
    assert!(!out.status.success());
    assert!(out.stderr.contains("no topology named `nosuch`"), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    run.kill_hard();
}

#[test]
fn top_draws_the_live_view_in_a_terminal_and_quits_on_q() {
    let dir = TempDir::new("top-pty");
    let file = dir.topology("counted.toml", COUNTED);
    let (run, addr) = local_ui(&dir, &file);
    let (master, slave) = pty(30, 140);
    let mut top = Command::new(squall_bin())
        .args(["top", "counted", "--ui", &addr])
        .env("SQUALL_SECRET", LOCAL_SECRET)
        .env("TERM", "xterm-256color")
        .stdin(Stdio::from(slave.try_clone().expect("dup")))
        .stdout(Stdio::from(slave.try_clone().expect("dup")))
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("squall top starts");
    let mut terminal = File::from(master);
    let screen = Arc::new(Mutex::new(String::new()));
    let mut reader = terminal.try_clone().expect("dup");
    let seen = screen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let drawn = || {
        let s = screen.lock().unwrap();
        ["topology counted", "component", "capacity", "numbers", "sequence", "sink"]
            .iter()
            .all(|w| s.contains(w))
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !drawn() {
        assert!(
            Instant::now() < deadline,
            "top did not draw the topology's components in time; the terminal shows:\n{:?}",
            screen
                .lock()
                .unwrap()
                .chars()
                .rev()
                .take(1500)
                .collect::<String>()
                .chars()
                .rev()
                .collect::<String>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    terminal.write_all(b"q").expect("a key reaches top");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = top.try_wait().expect("top's status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = top.kill();
            panic!("top did not quit on q\n{}", screen.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "top exits 0 on q: {status}");
    run.kill_hard();
}
