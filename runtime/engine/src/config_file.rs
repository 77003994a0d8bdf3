//! Reading a TOML settings file the way every Squall file is read: `${VAR}` and
//! `${VAR:-default}` substituted from the environment first, then deserialized with serde.
//!
//! Contract: [`parse`] returns the first mistake as one line, `FILE:LINE:COL: what is wrong`
//! (a substitution mistake says how many more there were). [`load`] reads the file named, else
//! [`DEFAULT_CLUSTER_FILE`] when it exists, else gives the type's defaults. Each reader of the
//! cluster file (the daemons, `squall broker`) deserializes only its own tables through these
//! two functions, so one file serves them all with one notion of a mistake.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::topology::substitute;

/// A settings file that cannot be read or is not valid; each displays as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    /// `FILE:LINE:COL: what is wrong` (a substitution mistake also says how many more).
    #[error("{0}")]
    Invalid(String),
}

/// The cluster file read when `--config` is not given, if it exists.
pub const DEFAULT_CLUSTER_FILE: &str = "config/cluster.toml";

/// The file `file`, else [`DEFAULT_CLUSTER_FILE`] if it exists, else `T::default()`.
pub fn load<T: DeserializeOwned + Default>(file: Option<&Path>) -> Result<T, ConfigFileError> {
    let path = match file {
        Some(path) => path,
        None if Path::new(DEFAULT_CLUSTER_FILE).is_file() => Path::new(DEFAULT_CLUSTER_FILE),
        None => return Ok(T::default()),
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigFileError::Read { path: path.display().to_string(), reason: e.to_string() })?;
    parse(&path.display().to_string(), &text, &|name| std::env::var(name).ok())
}

/// Substitutes `${VAR}`s in `text` (the contents of `file`; `env` looks them up) and
/// deserializes it; the first mistake as one line.
pub fn parse<T: DeserializeOwned>(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<T, ConfigFileError> {
    let substituted = substitute(file, text, env).map_err(|diagnostics| {
        let n = diagnostics.0.len();
        let first = diagnostics.0.into_iter().next().map(|d| d.to_string()).unwrap_or_default();
        ConfigFileError::Invalid(if n > 1 { format!("{first} (and {} more)", n - 1) } else { first })
    })?;
    toml::from_str(substituted.text()).map_err(|e| {
        let (line, col) = substituted.line_col(e.span().map_or(0, |span| span.start));
        let message = e.message().trim().replace('\n', "; ");
        ConfigFileError::Invalid(format!("{file}:{line}:{col}: {message}"))
    })
}
