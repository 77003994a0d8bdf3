//! A Python with pystorm, for the tests of components in other languages.
//!
//! Contract: [`pystorm`] returns the interpreter of a virtual environment in the tools
//! directory (`<tools dir>/python`, see [`crate::tools::tools_dir`]) that can `import
//! pystorm`, creating it first (`python3 -m venv`, then `pip install pystorm==`[`PYSTORM`])
//! when it cannot: once, under the same lock file as every other install, so concurrent
//! callers wait and then use what the first one made. The system's `python3` (3.8 or later)
//! and network access to the Python package index are what it needs; without them it is an
//! error naming the package, never a skip.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::tools::{tools_dir, FileLock};

/// The pystorm release the tests run against (its last: 3.1.4, October 2018).
pub const PYSTORM: &str = "3.1.4";

/// The virtual environment's directory.
pub fn venv_dir() -> PathBuf {
    tools_dir().join("python")
}

fn interpreter() -> PathBuf {
    venv_dir().join("bin").join("python3")
}

fn has_pystorm() -> bool {
    Command::new(interpreter())
        .args(["-c", "import pystorm"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A Python interpreter that can `import pystorm` (see the module docs).
pub fn pystorm() -> Result<PathBuf, String> {
    if has_pystorm() {
        return Ok(interpreter());
    }
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    let _guard = IN_PROCESS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tools_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let _lock = FileLock::acquire(&dir.join(".install.lock"))?;
    if has_pystorm() {
        return Ok(interpreter());
    }
    eprintln!("squall-testkit: installing pystorm=={PYSTORM} into {} (once)", venv_dir().display());
    run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(venv_dir()))?;
    run(Command::new(venv_dir().join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("pystorm=={PYSTORM}")))?;
    match has_pystorm() {
        true => Ok(interpreter()),
        false => Err(format!(
            "installed package `pystorm=={PYSTORM}`, yet {} cannot import it",
            interpreter().display()
        )),
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    let output = command.stdin(Stdio::null()).output().map_err(|e| {
        format!("cannot install package `pystorm=={PYSTORM}` (it needs python3 with venv and pip): cannot run {shown}: {e}")
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    Err(format!(
        "cannot install package `pystorm=={PYSTORM}`: {shown} failed ({}): {}",
        output.status,
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    ))
}
