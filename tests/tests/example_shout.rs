//! The README's own-project example, `examples/shout`, builds and runs its topology: every
//! random word reaches the `log` bolt shouted with the file's suffix, and `shout kinds`
//! knows the new kind beside the shipped ones.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use squall_tests::{repo_file, workspace_root, Summary, TempDir};

/// Builds the example's binary (`cargo build -p shout`) and returns its path, as
/// `squall_tests::squall_bin` does for `squall`.
fn build_shout() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args(["build", "--quiet", "-p", "shout", "--message-format", "json-render-diagnostics"])
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&cargo).display()));
    assert!(output.status.success(), "building the shout example failed ({})", output.status);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let bin = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "shout")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo names the shout executable");
    assert!(bin.is_file(), "no shout binary at {}", bin.display());
    bin
}

/// `shout ARGS…` in `dir`, run to its end: status, stdout, stderr. (The runs are short and
/// bounded: the topology's spout stops after 20 words.)
fn shout(bin: &Path, dir: &TempDir, args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let output = Command::new(bin)
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status, text(&output.stdout), text(&output.stderr))
}

#[test]
fn shout_example_runs_its_topology_locally() {
    let bin = build_shout();
    let dir = TempDir::new("shout");
    let topology = repo_file("examples/shout/shout.toml");
    let (status, stdout, stderr) = shout(&bin, &dir, &["local", topology.to_str().unwrap(), "--json"]);
    let out = format!("{status}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}");
    assert!(status.success(), "{out}");
    let summary = Summary(serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}\n{out}")));
    assert_eq!(summary.topology(), "shout", "{out}");
    assert_eq!(summary.component("words").acked(), 20, "{out}");
    assert_eq!(summary.component("shout").executed(), 20, "{out}");
    assert_eq!(summary.component("print").executed(), 20, "{out}");
    let printed: Vec<&str> = stderr.lines().filter(|l| l.starts_with("shout[")).collect();
    assert_eq!(printed.len(), 20, "{out}");
    for line in printed {
        assert!(line.contains("word=\"") && line.ends_with("?\""), "{line}\n{out}");
    }
    let (status, stdout, stderr) = shout(&bin, &dir, &["kinds", "shout"]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.starts_with("shout (bolt): Emits each word with a suffix."), "{stdout}");
}
