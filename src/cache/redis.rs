//! The Redis store, through a deadpool-redis connection pool to one Redis server, one
//! shared cluster connection to a Redis Cluster (see [`super::cluster`] for why not a
//! pool), or a pool of connections to the master that Redis Sentinel names (see
//! [`super::sentinel`] for how a failover is followed).
//!
//! Every operation is a single command or a Lua script over a single key, so it is
//! atomic and works unchanged on Redis Cluster: the cluster connection sends it to the
//! node that owns the key's slot. Each is bounded by `timeout_ms`: a Redis that stops
//! answering turns into an error, never into a hung request.

use std::time::Duration;

use deadpool_redis::{PoolConfig, Runtime, Timeouts};
use redis::aio::ConnectionLike;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};

use super::cluster;
use super::record::Record;
use super::{sentinel, tls};
use crate::clock::now_ms;
use crate::configuration::{RedisSettings, RedisTopology};

/// Why a store operation failed. Only Redis fails: the in-process store cannot.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(String),
    #[error("redis did not answer within {0} ms")]
    Timeout(u64),
}

/// Writes ARGV[1] (a record whose expires_at, renew_at and value are ARGV[2..4]) if it
/// should replace the stored one, as `Record::replaces` decides: of the same value, a
/// later renew_at; of another value, a later (expires_at, renew_at); over a tombstone, a
/// later expires_at, or the buried value confirmed by WeChat (ARGV[5] = "1"). The key
/// lives ARGV[6] ms. A stored value that is not a record is replaced.
const PUT_RECORD: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, c = pcall(cjson.decode, current)
  if ok and type(c) == 'table' and tonumber(c.expires_at) and tonumber(c.renew_at) then
    local e, r = tonumber(ARGV[2]), tonumber(ARGV[3])
    local ce, cr = tonumber(c.expires_at), tonumber(c.renew_at)
    if c.rejected == true then
      if not (e > ce or (ARGV[5] == '1' and c.value == ARGV[4])) then
        return 0
      end
    elseif c.value == ARGV[4] then
      if cr >= r then
        return 0
      end
    elseif ce > e or (ce == e and cr >= r) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[6])
return 1
"#;

/// Buries a refused value: replaces the record with ARGV[2] (its tombstone) if it still
/// holds the value ARGV[1] and is not a tombstone yet, keeping the key's expiry.
const REJECT: &str = r#"
local current = redis.call('GET', KEYS[1])
if not current then
  return 0
end
local ok, c = pcall(cjson.decode, current)
if not (ok and type(c) == 'table' and c.value == ARGV[1] and c.rejected ~= true) then
  return 0
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
"#;

/// Compare-and-delete: releases a lock, or drops a token, only if it is still ours.
const DELETE_IF_EQUALS: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Compare-and-expire: extends a lock only if it is still ours.
const EXTEND_IF_EQUALS: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

const INCR_WITH_TTL: &str = r#"
local n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
"#;

/// The pool of either deployment; the operations below do not depend on which.
enum Pool {
    Single(deadpool_redis::Pool),
    Cluster(Box<cluster::Shared>),
    Sentinel(sentinel::Pool),
}

/// A pooled connection of either kind. It is a [`ConnectionLike`], so commands and
/// `Script::invoke_async` run on it unchanged; on a cluster, the connection routes each
/// command by its key (and `SCRIPT LOAD`, after a `NOSCRIPT`, to every node).
enum Connection {
    Single(deadpool_redis::Connection),
    Cluster(redis::cluster_async::ClusterConnection),
    Sentinel(sentinel::Connection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Sentinel(c) => c.get_db(),
        }
    }
}

pub struct RedisStore {
    pool: Pool,
    timeout: Duration,
    put_record: Script,
    reject: Script,
    delete_if_equals: Script,
    extend_if_equals: Script,
    incr_with_ttl: Script,
}

impl RedisStore {
    /// Builds the pool; connections are made on first use, so a Redis that is down at
    /// start-up does not stop the service (it answers 503 until Redis is back).
    /// On a cluster, the shared connection knows the whole cluster and follows its
    /// `MOVED`/`ASK` redirections, so a resharding or a failover needs no restart.
    pub fn new(settings: &RedisSettings) -> Result<Self, StoreError> {
        let timeout = settings.timeout;
        let mut pool_config = PoolConfig::new(settings.pool_size);
        pool_config.timeouts = Timeouts {
            wait: Some(timeout),
            create: Some(timeout),
            recycle: Some(timeout),
        };
        // The messages name what is wrong, never the URL: it may carry a password.
        let invalid =
            |e: &dyn std::fmt::Display| StoreError::Redis(format!("invalid redis settings: {e}"));
        let topology = settings.topology().map_err(|e| invalid(&e))?;
        let tls = settings.tls().map_err(|e| invalid(&e))?;
        let pool = match topology {
            RedisTopology::Single(url) => {
                let info =
                    tls::connection_info(url.expose(), tls.as_ref()).map_err(|e| invalid(&e))?;
                let manager = deadpool_redis::Manager::new(info).map_err(|e| invalid(&e))?;
                let pool = deadpool_redis::Pool::builder(manager)
                    .config(pool_config)
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map_err(|e| invalid(&e))?;
                Pool::Single(pool)
            }
            RedisTopology::Cluster(urls) => {
                let urls: Vec<String> = urls.iter().map(|u| u.expose().to_string()).collect();
                let shared =
                    cluster::Shared::new(urls, tls.as_ref(), timeout).map_err(|e| invalid(&e))?;
                Pool::Cluster(Box::new(shared))
            }
            RedisTopology::Sentinel(topology) => {
                let manager = sentinel::Manager::new(&topology, tls.as_ref(), timeout)
                    .map_err(|e| invalid(&e))?;
                let pool = sentinel::Pool::builder(manager)
                    .config(pool_config)
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map_err(|e| invalid(&e))?;
                Pool::Sentinel(pool)
            }
        };
        Ok(Self {
            pool,
            timeout,
            put_record: Script::new(PUT_RECORD),
            reject: Script::new(REJECT),
            delete_if_equals: Script::new(DELETE_IF_EQUALS),
            extend_if_equals: Script::new(EXTEND_IF_EQUALS),
            incr_with_ttl: Script::new(INCR_WITH_TTL),
        })
    }

    /// Runs one operation on a pooled connection within the timeout.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let work = async {
            let pool_error = |e: &dyn std::fmt::Display| StoreError::Redis(e.to_string());
            let conn = match &self.pool {
                Pool::Single(pool) => pool
                    .get()
                    .await
                    .map(Connection::Single)
                    .map_err(|e| pool_error(&e))?,
                Pool::Cluster(shared) => Connection::Cluster(shared.connection()),
                Pool::Sentinel(pool) => pool
                    .get()
                    .await
                    .map(Connection::Sentinel)
                    .map_err(|e| pool_error(&e))?,
            };
            match (op(conn).await, &self.pool) {
                (Ok(value), _) => Ok(value),
                (Err(e), Pool::Cluster(shared)) => {
                    Err(StoreError::Redis(shared.describe(&e).await))
                }
                (Err(e), _) => Err(StoreError::Redis(e.to_string())),
            }
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout.as_millis() as u64))?
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.run(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await
    }

    pub(crate) async fn put_record(
        &self,
        key: &str,
        record: &Record,
        confirmed: bool,
    ) -> Result<bool, StoreError> {
        let ttl = record.store_ttl_ms(now_ms());
        let json = record.to_json();
        let written: i64 = self
            .run(|mut c| async move {
                self.put_record
                    .key(key)
                    .arg(json)
                    .arg(record.expires_at)
                    .arg(record.renew_at)
                    .arg(&record.value)
                    .arg(if confirmed { "1" } else { "0" })
                    .arg(ttl)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(written == 1)
    }

    pub(crate) async fn reject(&self, key: &str, tombstone: &Record) -> Result<bool, StoreError> {
        let json = tombstone.to_json();
        let buried: i64 = self
            .run(|mut c| async move {
                self.reject
                    .key(key)
                    .arg(&tombstone.value)
                    .arg(json)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(buried == 1)
    }

    pub(crate) async fn set(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let ttl = ttl.as_millis().max(1) as u64;
        self.run(|mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ttl)
                .query_async(&mut c)
                .await
        })
        .await
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.run(|mut c| async move { redis::cmd("DEL").arg(key).query_async(&mut c).await })
            .await
    }

    pub(crate) async fn set_nx(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let ttl = ttl.as_millis().max(1) as u64;
        let answer: Option<String> = self
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(answer.is_some())
    }

    pub(crate) async fn delete_if_equals(
        &self,
        key: &str,
        expected: &str,
    ) -> Result<bool, StoreError> {
        let deleted: i64 = self
            .run(|mut c| async move {
                self.delete_if_equals
                    .key(key)
                    .arg(expected)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(deleted == 1)
    }

    pub(crate) async fn extend_if_equals(
        &self,
        key: &str,
        expected: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let ttl = ttl.as_millis().max(1) as u64;
        let extended: i64 = self
            .run(|mut c| async move {
                self.extend_if_equals
                    .key(key)
                    .arg(expected)
                    .arg(ttl)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(extended == 1)
    }

    pub(crate) async fn incr_with_ttl(&self, key: &str, ttl: Duration) -> Result<u64, StoreError> {
        let ttl = ttl.as_millis().max(1) as u64;
        self.run(|mut c| async move {
            self.incr_with_ttl
                .key(key)
                .arg(ttl)
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    /// Whether Redis answers. On a cluster, one node answering is enough: a plain
    /// `PING` is sent to every primary and needs each one's answer, so a single slow or
    /// failing node would take every instance out of the load balancer at once.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self
            .run(|c| async move {
                match c {
                    Connection::Single(mut c) => redis::cmd("PING").query_async(&mut c).await,
                    Connection::Sentinel(mut c) => redis::cmd("PING").query_async(&mut *c).await,
                    Connection::Cluster(mut c) => {
                        let any_node = RoutingInfo::MultiNode((
                            MultipleNodeRoutingInfo::AllNodes,
                            Some(ResponsePolicy::OneSucceeded),
                        ));
                        let answer = c.route_command(redis::cmd("PING"), any_node).await?;
                        Ok(redis::from_redis_value(answer)?)
                    }
                }
            })
            .await?;
        Ok(())
    }
}
