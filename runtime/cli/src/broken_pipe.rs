//! A closed stdout ends the process quietly: `squall status NAME | head -1`, `squall list |
//! true`.
//!
//! Contract: once [`exit_quietly_when_stdout_closes`] has run, a write that raises SIGPIPE
//! while stdout's reader is gone ends the process at once with status 0 and nothing on
//! stderr, whichever verb or thread wrote, through `println!` or otherwise — the way
//! `topic tail` already ended on a closed stdout. A SIGPIPE from any other pipe or socket
//! (a peer that hung up, a child process's stdin) changes nothing: the write fails with
//! EPIPE, as Rust's ignored SIGPIPE has it, and the caller reports the error.
//!
//! Why a handler rather than restoring SIGPIPE's default action (the usual fix for a Rust
//! CLI): the default action would also kill the daemons, workers and the broker client on a
//! socket write to a closed peer (std's vectored TCP writes do raise SIGPIPE), turning errors
//! they report and recover from into silent deaths. And why not a writer that treats
//! `BrokenPipe` as an exit: every verb's `println!` would have to go through it, and one
//! forgotten would panic again; the handler covers them all.

/// Installs the SIGPIPE handler; call it before anything prints.
#[cfg(unix)]
pub fn exit_quietly_when_stdout_closes() {
    // SAFETY: `on_sigpipe` only makes async-signal-safe calls (poll, _exit); the sigaction
    // struct is fully initialized before it is passed.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigpipe as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGPIPE, &action, std::ptr::null_mut());
    }
}

#[cfg(not(unix))]
pub fn exit_quietly_when_stdout_closes() {}

/// Runs on the thread whose write raised SIGPIPE: if stdout is the pipe (or socket) whose
/// reader went away, there is no one left to tell anything; exit. Otherwise return, and the
/// write fails with EPIPE.
#[cfg(unix)]
extern "C" fn on_sigpipe(_signal: libc::c_int) {
    let mut stdout = libc::pollfd { fd: libc::STDOUT_FILENO, events: 0, revents: 0 };
    // SAFETY: poll and _exit are async-signal-safe; `stdout` outlives the call.
    unsafe {
        if libc::poll(&mut stdout, 1, 0) == 1 && stdout.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            libc::_exit(0);
        }
    }
}
