//! `squall state dump FILE COMPONENT [--json]`: a stateful component's last committed state.
//!
//! Contract: reads the topology file as `squall validate` does (a file with mistakes is an
//! error naming the first), finds COMPONENT (it must be a stateful bolt kind), opens the
//! state backend that `[settings] state` names through the registry, and prints the
//! component's committed state on stdout as one JSON object, key → value. Keys and values are
//! decoded from the MessagePack the backends keep; a key that decodes to a string is used as
//! it is, any other key as its JSON text. Without `--json` the object is pretty-printed with
//! its keys sorted and a last line on stderr names the committed checkpoint (or says there is
//! none yet); with `--json` it is one compact line and nothing else. The memory backend keeps
//! nothing after a run, which is an error saying so. `--data-dir` sets the embedded log's
//! directory (for `backend = "log"` with `broker = "embedded"`). Every failure is returned as
//! one line for the caller to print after `error: `.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use clap::Subcommand;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;
use squall_api::{BackendConfig, Registry};
use squall_engine::topology;

#[derive(Subcommand, Debug)]
pub enum StateCommand {
    /// Print a stateful component's last committed state, read from the backend its topology
    /// file names: one JSON object, key → value
    Dump {
        /// The topology file (TOML)
        file: PathBuf,
        /// The stateful component's id
        component: String,
        /// One compact line of JSON, nothing on stderr
        #[arg(long)]
        json: bool,
        /// The embedded log's directory, for `backend = "log"` with `broker = "embedded"`
        /// [default: $SQUALL_DATA_DIR, else ./squall-data]
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

/// Runs a `squall state` verb.
pub async fn state(command: StateCommand, registry: &Registry) -> Result<(), String> {
    match command {
        StateCommand::Dump { file, component, json, data_dir } => {
            if let Some(dir) = data_dir {
                squall_broker::set_data_dir(dir);
            }
            dump(&file, &component, json, registry).await
        }
    }
}

async fn dump(
    file: &std::path::Path,
    component: &str,
    json: bool,
    registry: &Registry,
) -> Result<(), String> {
    let def = topology::load(file, registry).map_err(|d| {
        let first = d.0.first().map_or_else(String::new, ToString::to_string);
        match d.0.len() {
            1 => first,
            n => format!("{first} (and {} more mistakes: see `squall validate {}`)", n - 1, file.display()),
        }
    })?;
    let Some(found) = def.component(component) else {
        let stateful: Vec<&str> =
            def.bolts.iter().filter(|c| registry.is_stateful(&c.kind)).map(|c| c.id.as_str()).collect();
        return Err(format!(
            "topology {} has no component \"{component}\"; its stateful components: {}",
            def.name,
            if stateful.is_empty() { "none".to_string() } else { stateful.join(", ") }
        ));
    };
    if !registry.is_stateful(&found.kind) {
        return Err(format!(
            "component \"{component}\" of topology {} is a {} (not a stateful bolt): it keeps no state",
            def.name, found.kind
        ));
    }
    let settings = &def.settings.state;
    let config = BackendConfig { topology: &def.name, table: &settings.table };
    let backend = registry
        .build_state_backend(&settings.backend, &config)
        .map_err(|e| format!("state backend \"{}\": {e}", settings.backend))?;
    if !backend.durable() {
        return Err(format!(
            "topology {} keeps its state in the {} backend, which keeps nothing after a run: there \
             is nothing to dump (use backend = \"log\" or \"redis\" in [settings] state to keep it)",
            def.name, settings.backend
        ));
    }
    let entries = backend.load(component).await.map_err(|e| one_line(&e.to_string()))?;
    let last = backend.last_committed().await.map_err(|e| one_line(&e.to_string()))?;
    let object = to_json(&entries)?;
    let text = if json { serde_json::to_string(&object) } else { serde_json::to_string_pretty(&object) }
        .map_err(|e| format!("cannot print the state as JSON: {e}"))?;
    println!("{text}");
    if !json {
        match last {
            Some(c) => eprintln!(
                "{component}: {} keys as of checkpoint {} committed in {}",
                object.len(),
                c.id,
                backend.describe()
            ),
            None => eprintln!("{component}: no checkpoint committed yet in {}", backend.describe()),
        }
    }
    Ok(())
}

fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// The state as a JSON object: keys and values decoded from MessagePack, sorted by key.
pub fn to_json(entries: &[(Vec<u8>, Vec<u8>)]) -> Result<BTreeMap<String, Json>, String> {
    let mut object = BTreeMap::new();
    for (k, v) in entries {
        let key = decode(k).map_err(|e| format!("a key that is not MessagePack ({e}): {}", hex(k)))?;
        let key = match key {
            Json::String(s) => s,
            other => other.to_string(),
        };
        let value = decode(v).map_err(|e| format!("the value of key {key:?} is not MessagePack: {e}"))?;
        object.insert(key, value);
    }
    Ok(object)
}

fn hex(bytes: &[u8]) -> String {
    let shown: String = bytes.iter().take(32).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > 32 {
        format!("{shown}… ({} bytes)", bytes.len())
    } else {
        shown
    }
}

/// The deepest nesting of lists and maps a key or value may have.
const MAX_DEPTH: usize = 128;

/// One MessagePack value as JSON (see [`AnyJson`]).
fn decode(bytes: &[u8]) -> Result<Json, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    // Each level is a few frames of recursion: stay far within a thread's stack.
    de.set_max_depth(MAX_DEPTH);
    let AnyJson(value) = AnyJson::deserialize(&mut de)?;
    if de.position() != bytes.len() as u64 {
        return Err(rmp_serde::decode::Error::Syntax("bytes after the value".into()));
    }
    Ok(value)
}

/// Any self-describing value as JSON: binary data as text when it is UTF-8, else as an array
/// of numbers; map keys as text (a string as it is, anything else as its JSON text); a float
/// JSON cannot hold (NaN, infinity) as null.
struct AnyJson(Json);

impl<'de> Deserialize<'de> for AnyJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyVisitor).map(AnyJson)
    }
}

struct AnyVisitor;

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any MessagePack value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Json, E> {
        Ok(match std::str::from_utf8(v) {
            Ok(s) => Json::String(s.to_string()),
            Err(_) => Json::Array(v.iter().map(|&b| Json::from(b)).collect()),
        })
    }
    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        AnyJson::deserialize(d).map(|AnyJson(v)| v)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        AnyJson::deserialize(d).map(|AnyJson(v)| v)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        // No capacity from the size hint: it comes from outside.
        let mut items = Vec::new();
        while let Some(AnyJson(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some((AnyJson(k), AnyJson(v))) = map.next_entry()? {
            let key = match k {
                Json::String(s) => s,
                other => other.to_string(),
            };
            object.insert(key, v);
        }
        Ok(Json::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_api::state::encode;
    use std::collections::HashMap;

    #[derive(serde::Serialize)]
    struct Point {
        x: i32,
        label: Option<String>,
    }

    #[test]
    fn keys_and_values_decode_to_json_with_string_keys_as_they_are() {
        let entries = vec![
            (encode("cow").unwrap(), encode(&42u64).unwrap()),
            (encode(&7i64).unwrap(), encode(&Point { x: -1, label: None }).unwrap()),
            (encode(&("a", 2)).unwrap(), encode(&vec![1.5f64, f64::NAN]).unwrap()),
            (encode(&HashMap::from([(1u8, true)])).unwrap(), encode(&()).unwrap()),
        ];
        let object = to_json(&entries).unwrap();
        let text = serde_json::to_string(&object).unwrap();
        assert_eq!(
            text,
            r#"{"7":{"label":null,"x":-1},"[\"a\",2]":[1.5,null],"cow":42,"{\"1\":true}":null}"#
        );
    }

    #[test]
    fn bytes_show_as_text_when_they_are_utf8() {
        let bin = rmp_serde::to_vec(&serde_bytes_like(b"hi")).unwrap();
        assert_eq!(decode(&bin).unwrap(), Json::String("hi".into()));
        let bin = rmp_serde::to_vec(&serde_bytes_like(&[0xff, 0])).unwrap();
        assert_eq!(decode(&bin).unwrap(), serde_json::json!([255, 0]));
    }

    struct Bin<'a>(&'a [u8]);
    impl serde::Serialize for Bin<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }
    fn serde_bytes_like(b: &[u8]) -> Bin<'_> {
        Bin(b)
    }

    #[test]
    fn bytes_that_are_not_one_value_are_an_error_not_data() {
        assert!(decode(b"").is_err());
        assert!(decode(b"\xc1").is_err(), "a reserved byte");
        assert!(decode(b"\x01\x02").is_err(), "two values");
        assert!(decode(b"\xdd\xff\xff\xff\xff").is_err(), "an array longer than its bytes");
        let mut deep = vec![0x91u8; 100_000];
        deep.push(0xc0);
        assert!(decode(&deep).is_err(), "nesting deeper than the decoder's limit");
        let err = to_json(&[(b"\xc1".to_vec(), b"\x01".to_vec())]).unwrap_err();
        assert!(err.starts_with("a key that is not MessagePack") && err.ends_with("c1"), "{err}");
    }
}
