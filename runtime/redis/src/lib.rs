//! # squall-redis
//!
//! The `redis` state backend: stateful bolts' checkpoints kept in a Redis server
//! (`[settings] state = { backend = "redis", url = "redis://127.0.0.1:6379" }`).
//!
//! Layout, every key of a topology `T` under the hash tag `{T}` (one slot):
//!
//! ```text
//! squall:{T}:state:<component>               hash: the committed state, key -> value
//! squall:{T}:prepared:<id>:<component>:<task> hash: one task's changes under checkpoint id,
//!                                            key -> "+" value, or "-" for a deletion
//! squall:{T}:prepared:<id>                   set: the prepared hashes of checkpoint id
//! squall:{T}:pending                         set: ids with prepared hashes
//! squall:{T}:committed                       hash: {id, meta} of the last commit
//! ```
//!
//! (`<id>` is 20 decimal digits, so ids compare as text. Keys and values are the encoded
//! bytes the runtime hands over.)
//!
//! Contract:
//! - [`RedisBackend::prepare`] replaces the task's prepared hash for the id and indexes it,
//!   in one MULTI/EXEC transaction.
//! - [`RedisBackend::commit`] is one Lua script (atomic in Redis): it applies the prepared
//!   changes of every participant it names to their components' state hashes, records
//!   `{id, meta}` as the last commit, and drops the prepared hashes of this id and of every
//!   older one (rolled back: never committed). Changes prepared by a task the commit does not
//!   name are dropped unseen.
//! - [`RedisBackend::load`] is the component's state hash; [`RedisBackend::last_committed`]
//!   the committed record.
//! - Durable when it returns as far as the server's persistence says: with `appendonly yes`
//!   and `appendfsync always` every write is on disk before the reply, and a script or
//!   transaction cut short by a crash is dropped whole when the AOF is loaded.
//! - The connection is made on first use and made again after it breaks; an unreachable
//!   server is an error naming its URL.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use squall_api::{async_trait, BackendConfig, BoxError, Change, Committed, Participant, StateBackend};
use tokio::sync::OnceCell;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take (a commit of a large checkpoint is one request).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
/// Fields per HSET of a prepare.
const FIELDS_PER_HSET: usize = 1000;

/// Applies a checkpoint's prepared changes, records it as committed, drops prepared hashes.
/// KEYS: committed hash, pending set. ARGV: key prefix, id (20 digits), meta, then
/// component, task for each participant.
const COMMIT_SCRIPT: &str = r#"
local prefix, id, meta = ARGV[1], ARGV[2], ARGV[3]
for i = 4, #ARGV, 2 do
  local component, task = ARGV[i], ARGV[i + 1]
  local prepared = prefix .. 'prepared:' .. id .. ':' .. component .. ':' .. task
  local state = prefix .. 'state:' .. component
  local fields = redis.call('HGETALL', prepared)
  for j = 1, #fields, 2 do
    local v = fields[j + 1]
    if string.sub(v, 1, 1) == '+' then
      redis.call('HSET', state, fields[j], string.sub(v, 2))
    else
      redis.call('HDEL', state, fields[j])
    end
  end
end
for _, other in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if other <= id then
    local index = prefix .. 'prepared:' .. other
    for _, prepared in ipairs(redis.call('SMEMBERS', index)) do
      redis.call('DEL', prepared)
    end
    redis.call('DEL', index)
    redis.call('SREM', KEYS[2], other)
  end
end
redis.call('HSET', KEYS[1], 'id', tostring(ARGV[2]), 'meta', meta)
return 1
"#;

/// The `[settings] state` keys the redis backend takes, besides `backend` and
/// `checkpoint_interval_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisStateConfig {
    /// `url` (required): `redis://[user:password@]host:port[/db]`.
    pub url: String,
}

impl RedisStateConfig {
    /// Reads `url` from the `[settings] state` table; refuses `broker` (the log backend's).
    pub fn from_table(table: &toml::Table) -> Result<RedisStateConfig, BoxError> {
        if table.contains_key("broker") {
            return Err("the redis state backend takes `url` (redis://host:port), not `broker`".into());
        }
        match table.get("url") {
            Some(toml::Value::String(url)) if !url.is_empty() => Ok(RedisStateConfig { url: url.clone() }),
            Some(other) => {
                Err(format!("`url` of the redis state backend must be redis://host:port, found {other}")
                    .into())
            }
            None => Err("the redis state backend needs `url`, e.g. url = \"redis://127.0.0.1:6379\"".into()),
        }
    }
}

/// The `redis` backend's factory, for [`squall_api::Registry::state_backend`].
pub fn factory(config: &BackendConfig<'_>) -> Result<Arc<dyn StateBackend>, BoxError> {
    let settings = RedisStateConfig::from_table(config.table)?;
    Ok(Arc::new(RedisBackend::open(&settings.url, config.topology)?))
}

/// Checkpoints of one topology in a Redis server. See the crate docs.
pub struct RedisBackend {
    client: redis::Client,
    /// The URL for messages, its password hidden.
    url: String,
    /// `squall:{topology}:`
    prefix: String,
    connection: OnceCell<ConnectionManager>,
    script: redis::Script,
}

/// `url` with the password of its user info (`redis://user:PASSWORD@host`) replaced by `***`,
/// for messages.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((userinfo, host)) = rest.rsplit_once('@') else { return url.to_string() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None if scheme.starts_with("redis") && !userinfo.is_empty() => format!("{scheme}://***@{host}"),
        None => url.to_string(),
    }
}

/// A checkpoint id as the keys write it: 20 digits, so that ids compare as text.
fn id_text(id: u64) -> String {
    format!("{id:020}")
}

/// A change as a prepared hash keeps its value: "+" and the value, or "-" for a deletion.
fn marked(change: &Change) -> Vec<u8> {
    match &change.value {
        Some(v) => {
            let mut out = Vec::with_capacity(v.len() + 1);
            out.push(b'+');
            out.extend_from_slice(v);
            out
        }
        None => vec![b'-'],
    }
}

impl RedisBackend {
    /// The backend of `topology` on the server at `url` (checked now; connected on first use).
    pub fn open(url: &str, topology: &str) -> Result<RedisBackend, BoxError> {
        let shown = redacted(url);
        let client = redis::Client::open(url).map_err(|e| format!("redis url \"{shown}\": {e}"))?;
        Ok(RedisBackend {
            client,
            url: shown,
            prefix: format!("squall:{{{topology}}}:"),
            connection: OnceCell::new(),
            script: redis::Script::new(COMMIT_SCRIPT),
        })
    }

    /// The prefix of every key of this topology (`squall:{topology}:`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn connection(&self) -> Result<ConnectionManager, BoxError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(3);
        let manager = self
            .connection
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config))
            .await
            .map_err(|e| self.error(e))?;
        Ok(manager.clone())
    }

    fn error(&self, e: redis::RedisError) -> BoxError {
        format!("redis at {}: {e}", self.url).into()
    }
}

#[async_trait]
impl StateBackend for RedisBackend {
    async fn prepare(&self, component: &str, task: u32, id: u64, changes: &[Change]) -> Result<(), BoxError> {
        let id = id_text(id);
        let prepared = format!("{}prepared:{id}:{component}:{task}", self.prefix);
        let mut pipe = redis::pipe();
        pipe.atomic().del(&prepared).ignore();
        for batch in changes.chunks(FIELDS_PER_HSET) {
            let fields: Vec<(&[u8], Vec<u8>)> = batch.iter().map(|c| (c.key.as_slice(), marked(c))).collect();
            pipe.hset_multiple(&prepared, &fields).ignore();
        }
        pipe.sadd(format!("{}prepared:{id}", self.prefix), &prepared).ignore();
        pipe.sadd(format!("{}pending", self.prefix), &id).ignore();
        let mut con = self.connection().await?;
        pipe.query_async::<()>(&mut con).await.map_err(|e| self.error(e))
    }

    async fn commit(&self, id: u64, participants: &[Participant], meta: &[u8]) -> Result<(), BoxError> {
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(format!("{}committed", self.prefix))
            .key(format!("{}pending", self.prefix))
            .arg(&self.prefix)
            .arg(id_text(id))
            .arg(meta);
        for p in participants {
            invocation.arg(&p.component).arg(p.task);
        }
        let mut con = self.connection().await?;
        invocation.invoke_async::<i64>(&mut con).await.map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn last_committed(&self) -> Result<Option<Committed>, BoxError> {
        let mut con = self.connection().await?;
        let (id, meta): (Option<String>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(format!("{}committed", self.prefix))
            .arg("id")
            .arg("meta")
            .query_async(&mut con)
            .await
            .map_err(|e| self.error(e))?;
        let Some(id) = id else { return Ok(None) };
        let id = id
            .parse::<u64>()
            .map_err(|_| format!("redis at {}: a committed id \"{id}\" that is not one", self.url))?;
        Ok(Some(Committed { id, meta: meta.unwrap_or_default() }))
    }

    async fn load(&self, component: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BoxError> {
        let mut con = self.connection().await?;
        let state = format!("{}state:{component}", self.prefix);
        let entries: Vec<(Vec<u8>, Vec<u8>)> = con.hgetall(&state).await.map_err(|e| self.error(e))?;
        Ok(entries)
    }

    fn describe(&self) -> String {
        format!("redis at {} (keys {}*)", self.url, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_compare_as_text_in_the_order_of_numbers() {
        assert_eq!(id_text(7), "00000000000000000007");
        assert!(id_text(9) < id_text(10) && id_text(u64::MAX - 1) < id_text(u64::MAX));
        assert_eq!(id_text(u64::MAX).len(), 20);
    }

    #[test]
    fn messages_never_show_a_password() {
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redacted("redis://me:s3cret@h:1/0"), "redis://me:***@h:1/0");
        assert_eq!(redacted("rediss://:s3cret@h:1"), "rediss://:***@h:1");
        assert_eq!(redacted("redis://s3cret@h:1"), "redis://***@h:1");
        let backend = RedisBackend::open("redis://me:s3cret@127.0.0.1:1", "t").unwrap();
        assert!(!backend.describe().contains("s3cret"), "{}", backend.describe());
    }

    #[test]
    fn deletions_are_marked() {
        assert_eq!(marked(&Change { key: b"k".to_vec(), value: Some(b"v".to_vec()) }), b"+v");
        assert_eq!(marked(&Change { key: b"k".to_vec(), value: None }), b"-");
    }

    #[test]
    fn config_needs_a_url_and_refuses_broker() {
        let table: toml::Table = toml::from_str("url = \"redis://127.0.0.1:1\"").unwrap();
        assert_eq!(RedisStateConfig::from_table(&table).unwrap().url, "redis://127.0.0.1:1");
        let err = RedisStateConfig::from_table(&toml::Table::new()).unwrap_err().to_string();
        assert!(err.contains("needs `url`"), "{err}");
        let table: toml::Table = toml::from_str("url = \"redis://x\"\nbroker = \"embedded\"").unwrap();
        assert!(RedisStateConfig::from_table(&table).unwrap_err().to_string().contains("not `broker`"));
        let err = RedisBackend::open("http://nope", "t").err().unwrap().to_string();
        assert!(err.starts_with("redis url \"http://nope\""), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_naming_its_url() {
        // A port nothing listens on: bind one, learn it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let backend = RedisBackend::open(&format!("redis://127.0.0.1:{port}"), "t").unwrap();
        let err = backend.load("c").await.unwrap_err().to_string();
        assert!(err.starts_with(&format!("redis at redis://127.0.0.1:{port}")), "{err}");
    }
}
