//! The cluster file (config/cluster.toml), as the daemons and the cluster verbs read it.
//!
//! Contract: [`load`] reads the file `--config` names, else config/cluster.toml if it exists,
//! else nothing (built-in defaults). The text gets the topology files' `${VAR:-default}`
//! substitution; then every table is checked: an unknown table or key is a mistake, reported
//! as one line `FILE:LINE:COL: what is wrong`. Keys left out take the defaults that
//! docs/cluster-file.md lists: secret `change-me`, nimbus 127.0.0.1:6627, state_dir
//! squall-state/nimbus, supervisor_timeout_secs 10, supervisor id from the host name and its
//! first slot, data_dir squall-state/supervisor, slots 6700–6703, heartbeat_secs 1, host
//! 127.0.0.1, ui listen 127.0.0.1:8080, public_read true on a loopback listen address, else false. A nimbus address with port 0 makes nimbus listen on any free port (it prints the
//! one it got).

use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::Deserialize;

use squall_engine::config_file::{self, DEFAULT_CLUSTER_FILE};

/// The whole cluster file, defaults filled in.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    #[serde(default)]
    pub cluster: ClusterTable,
    #[serde(default)]
    pub nimbus: NimbusTable,
    #[serde(default)]
    pub supervisor: SupervisorTable,
    #[serde(default)]
    pub ui: UiTable,
    /// `squall broker`'s table, read by it alone.
    #[serde(default, rename = "broker")]
    _broker: Option<IgnoredAny>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterTable {
    /// Every request to nimbus carries it.
    pub secret: String,
    /// Where clients find nimbus (`host:port`), or a list of seeds with `coordination`: as
    /// text, the seeds joined by commas (what [`crate::client::Client::new`] takes).
    pub nimbus: Seeds,
    /// `etcd://host:port[,host:port]`: several nimbus processes elect a leader there and keep
    /// topologies and assignments there; absent, one nimbus keeps them in its state_dir.
    #[serde(deserialize_with = "coordination")]
    pub coordination: Option<Coordination>,
    /// `tls = { cert, key, ca }`: TLS on every daemon link, peers checked against `ca`.
    pub tls: Option<squall_engine::tls::TlsFiles>,
}

impl Default for ClusterTable {
    fn default() -> Self {
        ClusterTable {
            secret: "change-me".into(),
            nimbus: "127.0.0.1:6627".into(),
            coordination: None,
            tls: None,
        }
    }
}

/// `[cluster] nimbus`: one address or a non-empty list of seeds (`host:port` each). It derefs
/// to the seeds joined by commas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeds {
    list: Vec<String>,
    joined: String,
}

/// The most nimbus seeds a cluster file may list.
pub const MAX_SEEDS: usize = 64;

impl Seeds {
    /// The seeds of `text`: addresses separated by commas; `None` if one is not `host:port`.
    pub fn parse(text: &str) -> Result<Seeds, String> {
        let list: Vec<String> = text.split(',').map(|s| s.trim().to_string()).collect();
        Seeds::new(list)
    }

    fn new(list: Vec<String>) -> Result<Seeds, String> {
        if list.is_empty() {
            return Err("must name at least one nimbus address".into());
        }
        if list.len() > MAX_SEEDS {
            return Err(format!("must list at most {MAX_SEEDS} nimbus seeds, found {}", list.len()));
        }
        if let Some(bad) = list.iter().find(|a| !is_host_port(a)) {
            return Err(format!("`{bad}` is not a host:port address"));
        }
        Ok(Seeds { joined: list.join(","), list })
    }

    /// Every seed, in the file's order.
    pub fn list(&self) -> &[String] {
        &self.list
    }

    /// The first seed.
    pub fn first(&self) -> &str {
        &self.list[0]
    }
}

impl std::ops::Deref for Seeds {
    type Target = str;

    fn deref(&self) -> &str {
        &self.joined
    }
}

impl std::fmt::Display for Seeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.joined)
    }
}

impl From<&str> for Seeds {
    /// One address, unchecked (defaults and tests).
    fn from(addr: &str) -> Seeds {
        Seeds { list: vec![addr.to_string()], joined: addr.to_string() }
    }
}

impl From<String> for Seeds {
    fn from(addr: String) -> Seeds {
        Seeds::from(addr.as_str())
    }
}

impl PartialEq<&str> for Seeds {
    fn eq(&self, other: &&str) -> bool {
        self.joined == *other
    }
}

impl<'de> Deserialize<'de> for Seeds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Seeds, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let list = match OneOrMany::deserialize(d).map_err(|_| {
            serde::de::Error::custom("[cluster] nimbus must be a \"host:port\" or a list of them")
        })? {
            OneOrMany::One(addr) => vec![addr],
            OneOrMany::Many(list) => list,
        };
        Seeds::new(list).map_err(|e| serde::de::Error::custom(format!("[cluster] nimbus {e}")))
    }
}

/// `host:port` with a port number (the host may be a name, an IPv4 or a bracketed IPv6).
fn is_host_port(addr: &str) -> bool {
    addr.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok()
    })
}

/// `[cluster] coordination`: the etcd endpoints (`host:port` each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordination {
    pub etcd: Vec<String>,
}

impl Coordination {
    /// `etcd://host:port[,host:port]`.
    pub fn parse(text: &str) -> Result<Coordination, String> {
        let Some(rest) = text.strip_prefix("etcd://") else {
            return Err(format!("`{text}` is not etcd://host:port[,host:port]"));
        };
        let etcd: Vec<String> = rest.trim_end_matches('/').split(',').map(|s| s.trim().to_string()).collect();
        if etcd.len() > MAX_SEEDS {
            return Err(format!("must list at most {MAX_SEEDS} etcd endpoints, found {}", etcd.len()));
        }
        if let Some(bad) = etcd.iter().find(|a| !is_host_port(a)) {
            return Err(format!("`{bad}` in `{text}` is not a host:port address"));
        }
        Ok(Coordination { etcd })
    }
}

fn coordination<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Coordination>, D::Error> {
    let text = String::deserialize(d)?;
    Coordination::parse(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("[cluster] coordination: {e}")))
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NimbusTable {
    /// Topologies, assignments and artifacts.
    pub state_dir: PathBuf,
    /// A supervisor not heard from for this long has its work reassigned.
    #[serde(deserialize_with = "seconds")]
    pub supervisor_timeout_secs: u64,
    /// Where this nimbus listens (`host:port`); default: the first `[cluster] nimbus` seed.
    pub listen: Option<String>,
}

impl Default for NimbusTable {
    fn default() -> Self {
        NimbusTable { state_dir: "squall-state/nimbus".into(), supervisor_timeout_secs: 10, listen: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorTable {
    /// Default: `<hostname>-<first slot>`.
    pub id: Option<String>,
    /// Artifacts and worker logs.
    pub data_dir: PathBuf,
    /// One worker process per slot; each entry is its port (0: any free port).
    #[serde(deserialize_with = "slots")]
    pub slots: Vec<u16>,
    #[serde(deserialize_with = "seconds")]
    pub heartbeat_secs: u64,
    /// The address its workers listen on and advertise to their peers.
    pub host: String,
}

impl Default for SupervisorTable {
    fn default() -> Self {
        SupervisorTable {
            id: None,
            data_dir: "squall-state/supervisor".into(),
            slots: vec![6700, 6701, 6702, 6703],
            heartbeat_secs: 1,
            host: "127.0.0.1".into(),
        }
    }
}

/// The longest timeout or interval a cluster file may give, in seconds: one day.
pub const MAX_SECONDS: u64 = 24 * 3600;
/// The most slots one supervisor may have.
pub const MAX_SLOTS: usize = 1024;

/// A number of seconds from 1 to [`MAX_SECONDS`]; out of range is an error at the value.
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = i128::deserialize(d)?;
    if !(1..=i128::from(MAX_SECONDS)).contains(&n) {
        return Err(serde::de::Error::custom(format!("must be from 1 to {MAX_SECONDS} seconds, found {n}")));
    }
    Ok(n as u64)
}

/// At most [`MAX_SLOTS`] ports.
fn slots<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    let slots = Vec::<u16>::deserialize(d)?;
    if slots.len() > MAX_SLOTS {
        return Err(serde::de::Error::custom(format!(
            "must list at most {MAX_SLOTS} ports, found {}",
            slots.len()
        )));
    }
    Ok(slots)
}

/// `[ui]`: nimbus's web UI, REST API and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiTable {
    /// Where nimbus serves them (`host:port`; port 0: any free port).
    pub listen: String,
    /// Reading without the secret (actions always need it); unset: only on loopback (see
    /// [`UiTable::public_read`]).
    pub public_read: Option<bool>,
}

impl Default for UiTable {
    fn default() -> Self {
        UiTable { listen: "127.0.0.1:8080".into(), public_read: None }
    }
}

impl UiTable {
    /// Whether reading needs no secret: as set, else true when `listen` is a loopback
    /// address (`127.0.0.0/8`, `::1`, `localhost`), so a UI opened to the network is not
    /// readable by everyone on it unless asked for.
    pub fn public_read(&self) -> bool {
        self.public_read.unwrap_or_else(|| {
            let host = self.listen.rsplit_once(':').map_or(self.listen.as_str(), |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        })
    }
}

impl ClusterConfig {
    /// `[cluster] tls`, loaded: `Ok(None)` without it; a bad PEM file is one line naming it.
    pub fn tls(&self) -> Result<Option<squall_engine::tls::Tls>, squall_engine::tls::TlsError> {
        squall_engine::tls::Tls::load_optional(self.cluster.tls.as_ref())
    }

    /// The supervisor's id: as configured, else the host name and its first slot.
    pub fn supervisor_id(&self) -> String {
        if let Some(id) = &self.supervisor.id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("{host}-{}", self.supervisor.slots.first().copied().unwrap_or(0))
    }

    /// Where this nimbus listens: `[nimbus] listen`, else the first `[cluster] nimbus` seed.
    pub fn nimbus_listen(&self) -> &str {
        self.nimbus.listen.as_deref().unwrap_or_else(|| self.cluster.nimbus.first())
    }

    /// Checks what serde cannot: one line per mistake, the first one wins.
    fn check(&self, file: &str) -> Result<(), ConfigError> {
        let file = file.to_string();
        if let Some(listen) = self.nimbus.listen.as_deref().filter(|l| !is_host_port(l)) {
            return Err(ConfigError::BadListen { file, listen: listen.to_string() });
        }
        if self.cluster.secret.is_empty() {
            return Err(ConfigError::EmptySecret { file });
        }
        if self.nimbus.supervisor_timeout_secs == 0 {
            return Err(ConfigError::ZeroSupervisorTimeout { file });
        }
        if self.supervisor.heartbeat_secs == 0 {
            return Err(ConfigError::ZeroHeartbeat { file });
        }
        if self.supervisor.slots.is_empty() {
            return Err(ConfigError::NoSlots { file });
        }
        let mut ports: Vec<u16> = self.supervisor.slots.iter().copied().filter(|&p| p != 0).collect();
        ports.sort_unstable();
        if let Some(w) = ports.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::DuplicatePort { file, port: w[0] });
        }
        Ok(())
    }
}

/// Why a cluster file was refused: one line naming the file (and the place, for a file that
/// does not parse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read or parsed, or has an unknown field: the reader's line.
    #[error("{0}")]
    File(#[from] config_file::ConfigFileError),
    #[error("{file}: [cluster] secret must not be empty")]
    EmptySecret { file: String },
    #[error("{file}: [nimbus] supervisor_timeout_secs must be at least 1")]
    ZeroSupervisorTimeout { file: String },
    #[error("{file}: [supervisor] heartbeat_secs must be at least 1")]
    ZeroHeartbeat { file: String },
    #[error("{file}: [supervisor] slots must list at least one port")]
    NoSlots { file: String },
    #[error("{file}: [supervisor] slots lists port {port} twice")]
    DuplicatePort { file: String, port: u16 },
    #[error("{file}: [nimbus] listen `{listen}` is not a host:port address")]
    BadListen { file: String, listen: String },
}

/// The cluster file `file`, else [`DEFAULT_CLUSTER_FILE`] if it exists, else the defaults.
pub fn load(file: Option<&Path>) -> Result<ClusterConfig, ConfigError> {
    let config: ClusterConfig = config_file::load(file)?;
    config.check(&file.unwrap_or(Path::new(DEFAULT_CLUSTER_FILE)).display().to_string())?;
    Ok(config)
}

/// The cluster file `text` (the contents of `file`); `env` looks up `${VAR}`s.
pub fn parse(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ClusterConfig, ConfigError> {
    let config: ClusterConfig = config_file::parse(file, text, env)?;
    config.check(file)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "SECRET").then(|| "s3cret".to_string())
    }

    #[test]
    fn reads_every_table_with_defaults_for_what_is_left_out() {
        let text = r#"
[cluster]
secret = "${SECRET:-change-me}"
nimbus = "127.0.0.1:0"

[supervisor]
id = "sup-a"
slots = [0, 0, 6701]

[broker]
listen = "127.0.0.1:6650"
"#;
        let c = parse("cluster.toml", text, &env).unwrap();
        assert_eq!(c.cluster.secret, "s3cret");
        assert_eq!(c.cluster.nimbus, "127.0.0.1:0");
        assert_eq!(c.nimbus, NimbusTable::default());
        assert_eq!(c.supervisor.slots, vec![0, 0, 6701]);
        assert_eq!(c.supervisor_id(), "sup-a");
        assert_eq!(c.supervisor.heartbeat_secs, 1);
        assert_eq!(c.ui, UiTable::default());
    }

    #[test]
    fn ui_table_sets_where_the_ui_listens_and_who_may_read() {
        let text = "[ui]\nlisten = \"127.0.0.1:0\"\npublic_read = false\n";
        let c = parse("cluster.toml", text, &env).unwrap();
        assert_eq!(c.ui, UiTable { listen: "127.0.0.1:0".into(), public_read: Some(false) });
        assert!(!c.ui.public_read());
        let open = |listen: &str| UiTable { listen: listen.into(), public_read: None }.public_read();
        assert!(open("127.0.0.1:8080") && open("localhost:80") && open("[::1]:8080"));
        assert!(!open("0.0.0.0:8080") && !open("10.1.2.3:8080") && !open("ui.example:8080"));
        let forced = UiTable { listen: "0.0.0.0:8080".into(), public_read: Some(true) };
        assert!(forced.public_read());
        let err = parse("cluster.toml", "[ui]\nport = 80\n", &env).unwrap_err().to_string();
        assert!(err.contains("cluster.toml:2:1: unknown field `port`"), "{err}");
    }

    #[test]
    fn tls_names_three_pem_files_with_variables_substituted() {
        let text = "[cluster]\ntls = { cert = \"${SECRET}/node.pem\", key = \"k.pem\", ca = \"ca.pem\" }\n";
        let c = parse("cluster.toml", text, &env).unwrap();
        let files = c.cluster.tls.clone().unwrap();
        assert_eq!(files.cert, Path::new("s3cret/node.pem"));
        assert_eq!((files.key.as_path(), files.ca.as_path()), (Path::new("k.pem"), Path::new("ca.pem")));
        // Loading reads the files: a missing one is one line naming the key and the file.
        let err = c.tls().unwrap_err().to_string();
        assert!(
            err.starts_with("[cluster] tls cert = ") && err.contains("s3cret/node.pem: cannot read"),
            "{err}"
        );
        assert!(parse("cluster.toml", "", &env).unwrap().tls().unwrap().is_none());
        let err = parse("cluster.toml", "[cluster]\ntls = { cert = \"c\", key = \"k\" }\n", &env)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cluster.toml:2:") && err.contains("missing field `ca`"), "{err}");
    }

    #[test]
    fn nimbus_takes_one_address_or_a_list_of_seeds_and_coordination_names_etcd() {
        let c = parse("cluster.toml", "[cluster]\nnimbus = \"10.0.0.1:6627\"\n", &env).unwrap();
        assert_eq!(c.cluster.nimbus.list(), ["10.0.0.1:6627"]);
        assert_eq!((c.cluster.coordination.clone(), c.nimbus_listen()), (None, "10.0.0.1:6627"));
        let text = r#"
[cluster]
nimbus = ["127.0.0.1:6627", "nimbus-b:6628", "[::1]:6629"]
coordination = "etcd://127.0.0.1:2379,etcd-b:2379"

[nimbus]
listen = "127.0.0.1:6628"
"#;
        let c = parse("cluster.toml", text, &env).unwrap();
        assert_eq!(c.cluster.nimbus.list(), ["127.0.0.1:6627", "nimbus-b:6628", "[::1]:6629"]);
        assert_eq!(
            &*c.cluster.nimbus, "127.0.0.1:6627,nimbus-b:6628,[::1]:6629",
            "derefs to the seeds joined"
        );
        assert_eq!(c.cluster.coordination.clone().unwrap().etcd, ["127.0.0.1:2379", "etcd-b:2379"]);
        assert_eq!(c.nimbus_listen(), "127.0.0.1:6628");
        let seeds = Seeds::parse("a:1, b:2").unwrap();
        assert_eq!(seeds.list(), ["a:1", "b:2"]);
        assert!(Seeds::parse("a:1,").is_err() && Seeds::parse("a").is_err());
    }

    #[test]
    fn bad_seeds_coordination_or_listen_are_one_line_naming_the_key() {
        let cases = [
            (
                "[cluster]\nnimbus = []\n",
                "cluster.toml:2:10: [cluster] nimbus must name at least one nimbus address",
            ),
            ("[cluster]\nnimbus = [\"a:1\", \"b\"]\n", "[cluster] nimbus `b` is not a host:port address"),
            ("[cluster]\nnimbus = 6627\n", "[cluster] nimbus must be a \"host:port\" or a list of them"),
            ("[cluster]\nnimbus = \"host:99999\"\n", "[cluster] nimbus `host:99999` is not a host:port"),
            (
                "[cluster]\ncoordination = \"zk://h:2181\"\n",
                "cluster.toml:2:16: [cluster] coordination: `zk://h:2181` is not etcd://",
            ),
            (
                "[cluster]\ncoordination = \"etcd://h\"\n",
                "[cluster] coordination: `h` in `etcd://h` is not a host:port",
            ),
            ("[cluster]\ncoordination = 1\n", "cluster.toml:2:16:"),
            (
                "[nimbus]\nlisten = \"nowhere\"\n",
                "cluster.toml: [nimbus] listen `nowhere` is not a host:port address",
            ),
        ];
        for (text, expected) in cases {
            let err = parse("cluster.toml", text, &env).expect_err(text).to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn more_slots_than_the_maximum_is_a_mistake_at_the_list() {
        let ports: Vec<String> = (0..=MAX_SLOTS).map(|i| (10_000 + i).to_string()).collect();
        let text = format!("[supervisor]\nslots = [{}]\n", ports.join(", "));
        let err = parse("cluster.toml", &text, &env).expect_err("too many slots").to_string();
        assert!(err.starts_with("cluster.toml:2:9: must list at most 1024 ports, found 1025"), "{err}");
    }

    #[test]
    fn every_mistake_is_one_line_with_its_place() {
        let cases = [
            ("[nimbus]\nstate_dirr = \"x\"\n", "cluster.toml:2:1: unknown field `state_dirr`"),
            ("[supervisors]\n", "cluster.toml:1:2: unknown field `supervisors`"),
            ("[supervisor]\nslots = \"6700\"\n", "cluster.toml:2:9:"),
            ("[supervisor]\nslots = [6700, 6700]\n", "lists port 6700 twice"),
            ("[supervisor]\nslots = []\n", "at least one port"),
            ("[cluster]\nsecret = \"\"\n", "secret must not be empty"),
            (
                "[nimbus]\nsupervisor_timeout_secs = 0\n",
                "cluster.toml:2:27: must be from 1 to 86400 seconds, found 0",
            ),
            (
                "[supervisor]\nheartbeat_secs = 18446744073709551615\n",
                "cluster.toml:2:18: must be from 1 to 86400 seconds, found 18446744073709551615",
            ),
            (
                "[supervisor]\nheartbeat_secs = -1\n",
                "cluster.toml:2:18: must be from 1 to 86400 seconds, found -1",
            ),
        ];
        for (text, expected) in cases {
            let err = parse("cluster.toml", text, &env).expect_err(text).to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
