//! The `[broker]` table of the cluster file, as `squall broker` reads it.
//!
//! Contract: [`load`] reads the file `--config` names, else config/cluster.toml if it exists,
//! else nothing (built-in defaults). The text gets the topology files' `${VAR:-default}`
//! substitution, then only its `[broker]` table and `[cluster] secret` and `tls` are read: other tables
//! and keys are someone else's and ignored, an unknown key inside `[broker]` is a mistake. Every mistake is one line,
//! `FILE:LINE:COL: what is wrong`. Flags given on the command line override the file
//! ([`BrokerSettings::resolve`]); what neither sets is the default: data_dir
//! `$SQUALL_DATA_DIR` else squall-data, listen 127.0.0.1:6650.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use squall_engine::config_file::ConfigFileError;
pub use squall_engine::config_file::DEFAULT_CLUSTER_FILE;
use squall_engine::tls::{Tls, TlsFiles};
/// Where `squall broker` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6650";

/// The `[broker]` table; keys left out are None.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerTable {
    /// The embedded log's directory.
    pub data_dir: Option<PathBuf>,
    /// Where `squall broker` listens.
    pub listen: Option<String>,
}

#[derive(Default, Deserialize)]
struct ClusterFile {
    #[serde(default)]
    broker: BrokerTable,
    #[serde(default)]
    cluster: SecretOnly,
}

/// The keys of `[cluster]` the broker reads; the others are nimbus's.
#[derive(Default, Deserialize)]
struct SecretOnly {
    secret: Option<String>,
    tls: Option<TlsFiles>,
}

/// `[cluster] tls` of `file`, else of [`DEFAULT_CLUSTER_FILE`] if it exists (`None`: not set).
pub fn load_tls(file: Option<&Path>) -> Result<Option<TlsFiles>, ConfigFileError> {
    let parsed: ClusterFile = squall_engine::config_file::load(file)?;
    Ok(parsed.cluster.tls)
}

/// The TLS of a process that reads `file` (see [`crate::tls`]): `SQUALL_TLS_*` if set, else
/// the file's `[cluster] tls`, else none; loaded, or one line saying why not.
pub fn tls_from(file: Option<&Path>) -> Result<Option<Tls>, String> {
    let files = match TlsFiles::from_env().map_err(|e| e.to_string())? {
        Some(files) => Some(files),
        None => load_tls(file).map_err(|e| e.to_string())?,
    };
    Tls::load_optional(files.as_ref()).map_err(|e| e.to_string())
}

/// `[cluster] secret` of `file`, else of [`DEFAULT_CLUSTER_FILE`] if it exists (`None`: not
/// set there).
pub fn load_secret(file: Option<&Path>) -> Result<Option<String>, ConfigFileError> {
    let parsed: ClusterFile = squall_engine::config_file::load(file)?;
    Ok(parsed.cluster.secret)
}

/// The secret of a process that reads `file` (see [`crate::secret`]): `$SQUALL_SECRET` if
/// set, else the file's `[cluster] secret`, else the default. A file that cannot be read is
/// logged and passed over.
pub fn secret_from(file: Option<&Path>) -> String {
    if let Some(secret) = std::env::var("SQUALL_SECRET").ok().filter(|s| !s.is_empty()) {
        return secret;
    }
    match load_secret(file) {
        Ok(Some(secret)) => secret,
        Ok(None) => squall_engine::auth::DEFAULT_SECRET.to_string(),
        Err(e) => {
            tracing::warn!("cannot read the cluster secret: {e}; using the default");
            squall_engine::auth::DEFAULT_SECRET.to_string()
        }
    }
}

/// What `squall broker` runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSettings {
    pub data_dir: PathBuf,
    pub listen: String,
}

impl BrokerSettings {
    /// The flags over the file over the defaults.
    pub fn resolve(file: BrokerTable, data_dir: Option<PathBuf>, listen: Option<String>) -> BrokerSettings {
        BrokerSettings {
            data_dir: data_dir.or(file.data_dir).unwrap_or_else(super::data_dir),
            listen: listen.or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
        }
    }
}

/// The `[broker]` table of `file`, else of [`DEFAULT_CLUSTER_FILE`] if it exists, else empty.
pub fn load(file: Option<&Path>) -> Result<BrokerTable, ConfigFileError> {
    let parsed: ClusterFile = squall_engine::config_file::load(file)?;
    Ok(parsed.broker)
}

/// The `[broker]` table of `text` (the contents of `file`); `env` looks up `${VAR}`s.
pub fn parse(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BrokerTable, ConfigFileError> {
    let parsed: ClusterFile = squall_engine::config_file::parse(file, text, env)?;
    Ok(parsed.broker)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PORT").then(|| "7777".to_string())
    }

    #[test]
    fn reads_the_broker_table_and_ignores_the_others() {
        let text = r#"
[cluster]
secret = "${SQUALL_SECRET_UNSET_HERE:-change-me}"
nimbus = "127.0.0.1:6627"

[supervisor]
slots = [6700, 6701]

[broker]
data_dir = "${DATA_UNSET_HERE:-my-data}"   # ${NOT_SUBSTITUTED}
listen = "0.0.0.0:${PORT}"
"#;
        let table = parse("cluster.toml", text, &env).unwrap();
        assert_eq!(
            table,
            BrokerTable { data_dir: Some(PathBuf::from("my-data")), listen: Some("0.0.0.0:7777".into()) }
        );
    }

    #[test]
    fn no_broker_table_means_defaults() {
        let table = parse("cluster.toml", "[cluster]\nnimbus = \"x:1\"\n", &env).unwrap();
        assert_eq!(table, BrokerTable::default());
        let settings = BrokerSettings::resolve(table, None, None);
        assert_eq!(settings.listen, DEFAULT_LISTEN);
    }

    #[test]
    fn flags_override_the_file() {
        let file = BrokerTable { data_dir: Some("a".into()), listen: Some("h:1".into()) };
        let settings = BrokerSettings::resolve(file.clone(), Some("b".into()), None);
        assert_eq!(settings, BrokerSettings { data_dir: "b".into(), listen: "h:1".into() });
        let settings = BrokerSettings::resolve(file, None, Some("h:2".into()));
        assert_eq!(settings, BrokerSettings { data_dir: "a".into(), listen: "h:2".into() });
    }

    #[test]
    fn an_unknown_key_in_broker_is_a_mistake_with_its_place() {
        let text = "[nimbus]\nwhatever = 1\n\n[broker]\nlisten = \"127.0.0.1:1\"\ndatadir = \"x\"\n";
        let err = parse("cluster.toml", text, &env).unwrap_err().to_string();
        assert!(err.starts_with("cluster.toml:6:1: unknown field `datadir`"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn substitution_and_syntax_mistakes_are_one_line() {
        let err = parse("c.toml", "[broker]\nlisten = \"${NOPE_UNSET}\"\n", &env).unwrap_err().to_string();
        assert!(err.starts_with("c.toml:2:11: "), "{err}");
        let err = parse("c.toml", "[broker]\nlisten = 5\n", &env).unwrap_err().to_string();
        assert!(err.starts_with("c.toml:2:10: invalid type"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let err = parse("c.toml", "[broker\n", &env).unwrap_err().to_string();
        assert!(err.starts_with("c.toml:1:"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
