//! The few etcd v3 calls nimbus's high availability needs, over etcd's JSON gateway (`POST
//! /v3/kv/range`, `/v3/kv/txn`, `/v3/lease/grant`, `/v3/lease/keepalive`, `/v3/lease/revoke`).
//!
//! Why the gateway and not gRPC: every maintained gRPC etcd client crate generates its code
//! from `.proto` files at build time and so needs `protoc` on the building machine; the
//! gateway is etcd's own HTTP/JSON mapping of the same API (keys and values in base64, 64-bit
//! numbers as decimal strings) and needs only reqwest, already here.
//!
//! Contract: an [`Etcd`] is given endpoints (`host:port`); each call tries them in turn
//! (the one that answered last first), each with a deadline of [`CALL_TIMEOUT`], and fails
//! with one line naming the endpoints and the last error. [`Etcd::campaign`] puts a key only
//! if it does not exist (its create revision is 0), attached to a lease, so it vanishes when
//! its holder stops keeping the lease alive; [`Etcd::put_guarded`] and
//! [`Etcd::delete_guarded`] change a key only while a guard key still has the given create
//! revision (a deposed leader's write is refused). The decoding of replies is pure and tested
//! without a server.

use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::client::one_line;

/// How long one call to one endpoint may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest reply read from etcd (a range of every topology record).
const MAX_REPLY_BYTES: usize = 256 << 20;

/// A failed etcd call: one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("etcd at {endpoints}: {message}")]
pub struct EtcdError {
    pub endpoints: String,
    pub message: String,
}

/// A key and its value, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision that created the key (0: it does not exist).
    pub create_revision: i64,
}

/// How a campaign for a key went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Campaign {
    /// The key is ours, created at this revision.
    Won { create_revision: i64 },
    /// Someone holds it (`None` if it vanished meanwhile).
    Lost(Option<KeyValue>),
}

/// A client of an etcd cluster's JSON gateway.
pub struct Etcd {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// The index of the endpoint that answered last.
    last_good: Mutex<usize>,
}

impl Etcd {
    pub fn new(endpoints: Vec<String>) -> Etcd {
        let http = reqwest::Client::builder()
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Etcd { http, endpoints, last_good: Mutex::new(0) }
    }

    /// The endpoints, joined by commas.
    pub fn endpoints(&self) -> String {
        self.endpoints.join(",")
    }

    fn error(&self, message: impl Into<String>) -> EtcdError {
        EtcdError { endpoints: self.endpoints(), message: message.into() }
    }

    /// POSTs `body` to `path` on the endpoints in turn; the first reply that is JSON.
    async fn call(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        if self.endpoints.is_empty() {
            return Err(self.error("no endpoint"));
        }
        let first = *self.last_good.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = String::new();
        for i in 0..self.endpoints.len() {
            let index = (first + i) % self.endpoints.len();
            let url = format!("http://{}{path}", self.endpoints[index]);
            match self.call_one(&url, body).await {
                Ok(reply) => {
                    *self.last_good.lock().unwrap_or_else(|p| p.into_inner()) = index;
                    return Ok(reply);
                }
                Err(e) => last = format!("{}: {e}", self.endpoints[index]),
            }
        }
        Err(self.error(last))
    }

    async fn call_one(&self, url: &str, body: &Value) -> Result<Value, String> {
        let response = self.http.post(url).json(body).send().await.map_err(|e| one_line(&e))?;
        let status = response.status();
        if response.content_length().is_some_and(|n| n > MAX_REPLY_BYTES as u64) {
            return Err(format!("a reply over {MAX_REPLY_BYTES} bytes"));
        }
        let bytes = response.bytes().await.map_err(|e| one_line(&e))?;
        if bytes.len() > MAX_REPLY_BYTES {
            return Err(format!("a reply over {MAX_REPLY_BYTES} bytes"));
        }
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("answered {status} with what is not JSON: {e}"))?;
        if !status.is_success() {
            let message = value.get("message").or_else(|| value.get("error")).and_then(Value::as_str);
            return Err(format!("answered {status}: {}", message.unwrap_or("no reason given")));
        }
        Ok(value)
    }

    /// A lease of `ttl_secs`; its id.
    pub async fn grant(&self, ttl_secs: u64) -> Result<i64, EtcdError> {
        let reply = self.call("/v3/lease/grant", &json!({ "TTL": ttl_secs })).await?;
        let granted: Granted =
            serde_json::from_value(reply).map_err(|e| self.error(format!("lease grant: {e}")))?;
        if granted.id == 0 {
            return Err(self.error(format!("lease not granted: {}", granted.error)));
        }
        Ok(granted.id)
    }

    /// Keeps the lease alive once; its remaining TTL (0: it has expired).
    pub async fn keep_alive(&self, lease: i64) -> Result<i64, EtcdError> {
        let reply = self.call("/v3/lease/keepalive", &json!({ "ID": lease.to_string() })).await?;
        decode_keep_alive(&reply).map_err(|e| self.error(e))
    }

    /// Ends the lease (its keys go with it).
    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", &json!({ "ID": lease.to_string() })).await.map(|_| ())
    }

    /// The key `key`, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, EtcdError> {
        let reply = self.call("/v3/kv/range", &json!({ "key": B64.encode(key) })).await?;
        Ok(decode_range(&reply).map_err(|e| self.error(e))?.into_iter().next())
    }

    /// Every key starting with `prefix`, in key order.
    pub async fn get_prefix(&self, prefix: &str) -> Result<Vec<KeyValue>, EtcdError> {
        let body =
            json!({ "key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix.as_bytes())) });
        let reply = self.call("/v3/kv/range", &body).await?;
        decode_range(&reply).map_err(|e| self.error(e))
    }

    /// Puts `key` = `value` under `lease` unless the key exists.
    pub async fn campaign(&self, key: &str, value: &str, lease: i64) -> Result<Campaign, EtcdError> {
        let k = B64.encode(key);
        let body = json!({
            "compare": [{ "key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0" }],
            "success": [{ "request_put": { "key": k, "value": B64.encode(value), "lease": lease.to_string() } }],
            "failure": [{ "request_range": { "key": k } }],
        });
        let reply = self.call("/v3/kv/txn", &body).await?;
        decode_campaign(&reply).map_err(|e| self.error(e))
    }

    /// Puts `key` = `value` if `guard` still has `create_revision`; false if it has not.
    pub async fn put_guarded(
        &self,
        guard: &str,
        create_revision: i64,
        key: &str,
        value: &[u8],
    ) -> Result<bool, EtcdError> {
        let op = json!({ "request_put": { "key": B64.encode(key), "value": B64.encode(value) } });
        self.guarded(guard, create_revision, op).await
    }

    /// Deletes `key` if `guard` still has `create_revision`; false if it has not.
    pub async fn delete_guarded(
        &self,
        guard: &str,
        create_revision: i64,
        key: &str,
    ) -> Result<bool, EtcdError> {
        let op = json!({ "request_delete_range": { "key": B64.encode(key) } });
        self.guarded(guard, create_revision, op).await
    }

    async fn guarded(&self, guard: &str, create_revision: i64, op: Value) -> Result<bool, EtcdError> {
        let body = json!({
            "compare": [{
                "key": B64.encode(guard), "target": "CREATE", "result": "EQUAL",
                "create_revision": create_revision.to_string(),
            }],
            "success": [op],
        });
        let reply = self.call("/v3/kv/txn", &body).await?;
        let txn: Txn = serde_json::from_value(reply).map_err(|e| self.error(format!("txn: {e}")))?;
        Ok(txn.succeeded)
    }
}

/// The end of the range of keys that start with `prefix`: the prefix with its last byte below
/// 0xff incremented (and what follows dropped); all keys (`\0`) if there is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A 64-bit number the gateway sends as a decimal string (or a number); absent: 0.
fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Text(String),
        Number(i64),
    }
    match Int::deserialize(d)? {
        Int::Number(n) => Ok(n),
        Int::Text(t) => t.parse().map_err(|_| serde::de::Error::custom(format!("`{t}` is not a number"))),
    }
}

#[derive(Deserialize)]
struct Granted {
    #[serde(rename = "ID", default, deserialize_with = "int")]
    id: i64,
    #[serde(default)]
    error: String,
}

#[derive(Deserialize)]
struct RawKv {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "int")]
    create_revision: i64,
}

#[derive(Deserialize)]
struct Range {
    #[serde(default)]
    kvs: Vec<RawKv>,
}

#[derive(Deserialize)]
struct Txn {
    #[serde(default)]
    succeeded: bool,
    #[serde(default)]
    responses: Vec<Value>,
    #[serde(default)]
    header: Header,
}

#[derive(Deserialize, Default)]
struct Header {
    #[serde(default, deserialize_with = "int")]
    revision: i64,
}

fn decode_kv(raw: RawKv) -> Result<KeyValue, String> {
    let key = B64.decode(&raw.key).map_err(|e| format!("a key that is not base64: {e}"))?;
    let key = String::from_utf8(key).map_err(|_| "a key that is not UTF-8".to_string())?;
    let value = B64.decode(&raw.value).map_err(|e| format!("the value of {key} is not base64: {e}"))?;
    Ok(KeyValue { key, value, create_revision: raw.create_revision })
}

/// The keys of a range reply.
pub fn decode_range(reply: &Value) -> Result<Vec<KeyValue>, String> {
    let range = Range::deserialize(reply).map_err(|e| format!("range: {e}"))?;
    range.kvs.into_iter().map(decode_kv).collect()
}

/// A keep-alive reply's TTL (the gateway streams it as `{"result": {…}}`).
pub fn decode_keep_alive(reply: &Value) -> Result<i64, String> {
    #[derive(Deserialize)]
    struct Alive {
        #[serde(rename = "TTL", default, deserialize_with = "int")]
        ttl: i64,
    }
    let result = reply.get("result").unwrap_or(reply);
    Alive::deserialize(result).map(|a| a.ttl).map_err(|e| format!("keepalive: {e}"))
}

/// A campaign's txn reply: won at the txn's revision, or lost to the key its range found.
pub fn decode_campaign(reply: &Value) -> Result<Campaign, String> {
    let txn = Txn::deserialize(reply).map_err(|e| format!("txn: {e}"))?;
    if txn.succeeded {
        return Ok(Campaign::Won { create_revision: txn.header.revision });
    }
    let range = txn.responses.first().and_then(|r| r.get("response_range")).cloned().unwrap_or(Value::Null);
    let holder = if range.is_null() { None } else { decode_range(&range)?.into_iter().next() };
    Ok(Campaign::Lost(holder))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_of_a_prefix_ends_past_its_last_key() {
        assert_eq!(prefix_end(b"/squall/"), b"/squall0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn replies_decode_with_numbers_as_strings_and_defaults_left_out() {
        let range = json!({"header": {"revision": "7"}, "kvs": [
            {"key": B64.encode("/squall/leader"), "create_revision": "5", "mod_revision": "5", "value": B64.encode("127.0.0.1:6627")}
        ], "count": "1"});
        let kvs = decode_range(&range).unwrap();
        assert_eq!(
            kvs,
            vec![KeyValue {
                key: "/squall/leader".into(),
                value: b"127.0.0.1:6627".to_vec(),
                create_revision: 5
            }]
        );
        assert_eq!(decode_range(&json!({"header": {}})).unwrap(), vec![]);
        assert!(decode_range(&json!({"kvs": [{"key": "***"}]})).unwrap_err().contains("base64"));

        assert_eq!(decode_keep_alive(&json!({"result": {"ID": "9", "TTL": "4"}})), Ok(4));
        assert_eq!(decode_keep_alive(&json!({"result": {"ID": "9"}})), Ok(0), "an expired lease has no TTL");

        let won =
            json!({"header": {"revision": "12"}, "succeeded": true, "responses": [{"response_put": {}}]});
        assert_eq!(decode_campaign(&won), Ok(Campaign::Won { create_revision: 12 }));
        let lost = json!({"header": {"revision": "12"}, "responses": [{"response_range": {"kvs": [
            {"key": B64.encode("k"), "value": B64.encode("10.0.0.1:6627"), "create_revision": "3"}
        ]}}]});
        let Campaign::Lost(Some(holder)) = decode_campaign(&lost).unwrap() else {
            panic!("lost to a holder")
        };
        assert_eq!((holder.value.as_slice(), holder.create_revision), (&b"10.0.0.1:6627"[..], 3));
        let vanished = json!({"responses": [{"response_range": {"header": {}}}]});
        assert_eq!(decode_campaign(&vanished), Ok(Campaign::Lost(None)));
    }
}
