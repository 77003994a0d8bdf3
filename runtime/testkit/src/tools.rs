//! The outside programs the tests and benchmarks run against (Tansu, Chromium, Redis), found where a
//! user may already have them, or installed once on first use.
//!
//! Contract: [`find`] looks for a [`Tool`]'s binary, in this order: the path in its
//! environment variable (`SQUALL_TANSU`, …; a path that is not a file is an error), `PATH`,
//! the tools directory's `bin/` (`$SQUALL_TOOLS_DIR`, else `~/.cache/squall/tools`), and
//! `$CARGO_HOME/bin` or `~/.cargo/bin`. [`require`] does the same and, when the binary is
//! nowhere, installs it (`cargo install` into the tools directory, or Debian's `apt-get`),
//! once: concurrent callers, in this process or others, wait on a lock file in the tools
//! directory and then find what the first one installed. A tool that cannot be had is an
//! error naming it, its package and what failed; nothing is skipped.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// How a tool gets installed.
#[derive(Debug)]
pub enum Install {
    /// `cargo install CRATE ARGS… --root <tools dir>`.
    Cargo { krate: &'static str, args: &'static [&'static str] },
    /// `apt-get install -y PACKAGE` (after one `apt-get update`).
    Apt { package: &'static str },
}

/// An outside program.
#[derive(Debug)]
pub struct Tool {
    /// The executable's file name.
    pub bin: &'static str,
    /// The environment variable that names the executable, overriding the search.
    pub env: &'static str,
    pub install: Install,
}

/// Tansu, a Kafka-API broker: the Kafka tests and `bench log1 --broker kafka` run against it.
pub const TANSU: Tool = Tool {
    bin: "tansu",
    env: "SQUALL_TANSU",
    install: Install::Cargo {
        krate: "tansu",
        args: &["--locked", "--no-default-features", "--features", "libsql"],
    },
};

/// Debian's Chromium: the web UI's tests load the page in it, headless.
pub const CHROMIUM: Tool =
    Tool { bin: "chromium", env: "SQUALL_CHROMIUM", install: Install::Apt { package: "chromium" } };

/// Debian's Redis server: the `redis` state backend's tests run against it.
pub const REDIS_SERVER: Tool = Tool {
    bin: "redis-server",
    env: "SQUALL_REDIS_SERVER",
    install: Install::Apt { package: "redis-server" },
};

/// Debian's etcd server (binary `etcd`): nimbus high availability's tests run against it.
pub const ETCD_SERVER: Tool =
    Tool { bin: "etcd", env: "SQUALL_ETCD", install: Install::Apt { package: "etcd-server" } };

impl Tool {
    /// How to install it by hand, for messages.
    pub fn hint(&self) -> String {
        match &self.install {
            Install::Cargo { krate, args } => format!("cargo install {krate} {}", args.join(" ")),
            Install::Apt { package } => format!("apt-get install -y {package}"),
        }
    }

    fn package(&self) -> &'static str {
        match &self.install {
            Install::Cargo { krate, .. } => krate,
            Install::Apt { package } => package,
        }
    }
}

/// Where installed tools live: `$SQUALL_TOOLS_DIR`, else `~/.cache/squall/tools`.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SQUALL_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    home().join(".cache").join("squall").join("tools")
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"))
}

/// The tool's binary, if it is anywhere (see the module docs); never installs.
pub fn find(tool: &Tool) -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os(tool.env) {
        let bin = PathBuf::from(bin);
        return match bin.is_file() {
            true => Ok(bin),
            false => Err(format!(
                "{}={} is not a file; install it with `{}`",
                tool.env,
                bin.display(),
                tool.hint()
            )),
        };
    }
    let on_path: Vec<PathBuf> =
        std::env::var_os("PATH").map(|paths| std::env::split_paths(&paths).collect()).unwrap_or_default();
    let cargo_homes = [std::env::var_os("CARGO_HOME").map(PathBuf::from), Some(home().join(".cargo"))];
    on_path
        .into_iter()
        .chain([tools_dir().join("bin")])
        .chain(cargo_homes.into_iter().flatten().map(|home| home.join("bin")))
        .map(|dir| dir.join(tool.bin))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "no `{}` on PATH, in {} or in ~/.cargo/bin; install it with `{}` or set {}",
                tool.bin,
                tools_dir().join("bin").display(),
                tool.hint(),
                tool.env
            )
        })
}

/// The tool's binary, installed first when it is nowhere (see the module docs).
pub fn require(tool: &Tool) -> Result<PathBuf, String> {
    if let Ok(bin) = find(tool) {
        return Ok(bin);
    }
    // One installer at a time in this process; the lock file serializes processes.
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    let _guard = IN_PROCESS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tools_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let _lock = FileLock::acquire(&dir.join(".install.lock"))?;
    if let Ok(bin) = find(tool) {
        return Ok(bin);
    }
    eprintln!("squall-testkit: `{}` is not installed; installing it with `{}` (once)", tool.bin, tool.hint());
    install(tool, &dir)?;
    find(tool).map_err(|e| format!("installed package `{}`, yet: {e}", tool.package()))
}

fn install(tool: &Tool, dir: &Path) -> Result<(), String> {
    match &tool.install {
        Install::Cargo { krate, args } => {
            let cargo: OsString = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut command = Command::new(cargo);
            command
                .arg("install")
                .arg(krate)
                .args(*args)
                .arg("--root")
                .arg(dir)
                // Its own build directory: the caller's may be locked by the `cargo test`
                // that runs us.
                .env_remove("CARGO_TARGET_DIR")
                .env("CARGO_TARGET_DIR", dir.join("build"));
            run(command, tool)?;
            // The build directory is only needed while installing.
            let _ = std::fs::remove_dir_all(dir.join("build"));
            Ok(())
        }
        Install::Apt { package } => {
            let mut update = Command::new("apt-get");
            update.arg("update");
            run(update, tool)?;
            let mut command = Command::new("apt-get");
            command
                .args(["install", "-y", "--no-install-recommends", package])
                .env("DEBIAN_FRONTEND", "noninteractive");
            run(command, tool)
        }
    }
}

fn run(mut command: Command, tool: &Tool) -> Result<(), String> {
    let shown = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot install package `{}`: cannot run {shown}: {e}", tool.package()))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    Err(format!(
        "cannot install package `{}` (`{}` is needed): {shown} failed ({}): {}",
        tool.package(),
        tool.bin,
        output.status,
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    ))
}

/// An exclusive `flock` on a file, released on drop.
pub(crate) struct FileLock(File);

impl FileLock {
    pub(crate) fn acquire(path: &Path) -> Result<FileLock, String> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor this File owns for as long as the lock is held.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!("cannot lock {}: {}", path.display(), std::io::Error::last_os_error()));
        }
        Ok(FileLock(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocking the descriptor locked in `acquire`.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}
