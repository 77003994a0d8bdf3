//! WC-1 with its split bolt in Python: `squall bench wc1 --split python`.
//!
//! Contract: the split step becomes a `shell-bolt` running the pystorm bolt of
//! `config/resources/split_sentence.py` (embedded here, written to a scratch `resources/`
//! folder for the run) under `$SQUALL_PYTHON`, else `python3`, which must be able to `import
//! pystorm`. Everything else (spout, counter, checks, the result line) is WC-1's.

use squall_api::{BoxError, Registry};
use squall_engine::topology::{ComponentDef, TopologyDef};

use super::TempDir;

/// The pystorm split bolt shipped with the Python word count.
const SPLIT_PY: &str = include_str!("../../../../config/resources/split_sentence.py");

/// Swaps `def`'s split bolt for the Python one and registers `shell-bolt`; returns the
/// scratch folder to use as the run's `resources/` (kept until it is dropped).
pub(super) fn use_python_split(def: &mut TopologyDef, registry: &mut Registry) -> Result<TempDir, BoxError> {
    let dir = TempDir::new("wc1-python")?;
    std::fs::write(dir.0.join("split_sentence.py"), SPLIT_PY)
        .map_err(|e| format!("cannot write {}: {e}", dir.0.display()))?;
    let python = std::env::var("SQUALL_PYTHON").unwrap_or_else(|_| "python3".into());
    let split = def.bolts.iter_mut().find(|b| b.id == "split").ok_or("WC-1 has a split bolt")?;
    let mut python_split = ComponentDef::new("split", "shell-bolt")
        .parallelism(split.parallelism)
        .set("command", toml::Value::Array(vec![python.into(), "split_sentence.py".into()]))
        .set("fields", toml::Value::Array(vec!["word".into()]))
        .emits(["word"]);
    python_split.inputs = std::mem::take(&mut split.inputs);
    *split = python_split;
    registry.bolt("shell-bolt", squall_multilang::build_bolt);
    Ok(dir)
}
