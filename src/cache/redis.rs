//! The Redis store, through a deadpool-redis connection pool.
//!
//! Every operation is a single command or a Lua script over a single key, so it is
//! atomic and works unchanged on Redis Cluster. Each is bounded by `timeout_ms`: a
//! Redis that stops answering turns into an error, never into a hung request.

use std::time::Duration;

use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use redis::Script;

use super::record::{now_ms, Record};
use super::store::StoreError;
use crate::configuration::RedisSettings;

/// Writes ARGV[1] (a record) unless the stored record has a later
/// (expires_at, renew_at), given as ARGV[2], ARGV[3]; the key lives ARGV[4] ms.
const PUT_RECORD: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, c = pcall(cjson.decode, current)
  if ok and type(c) == 'table' and tonumber(c.expires_at) and tonumber(c.renew_at) then
    local e, r = tonumber(ARGV[2]), tonumber(ARGV[3])
    if c.expires_at > e or (c.expires_at == e and c.renew_at >= r) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
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

pub struct RedisStore {
    pool: Pool,
    timeout: Duration,
    put_record: Script,
    delete_if_equals: Script,
    extend_if_equals: Script,
    incr_with_ttl: Script,
}

impl RedisStore {
    /// Builds the pool; connections are made on first use, so a Redis that is down at
    /// start-up does not stop the service (it answers 503 until Redis is back).
    pub fn new(settings: &RedisSettings) -> Result<Self, StoreError> {
        let timeout = Duration::from_millis(settings.timeout_ms);
        let mut config = Config::from_url(settings.url.expose());
        let mut pool_config = PoolConfig::new(settings.pool_size);
        pool_config.timeouts = Timeouts {
            wait: Some(timeout),
            create: Some(timeout),
            recycle: Some(timeout),
        };
        config.pool = Some(pool_config);
        let pool = config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| StoreError::Redis(format!("invalid redis settings: {e}")))?;
        Ok(Self {
            pool,
            timeout,
            put_record: Script::new(PUT_RECORD),
            delete_if_equals: Script::new(DELETE_IF_EQUALS),
            extend_if_equals: Script::new(EXTEND_IF_EQUALS),
            incr_with_ttl: Script::new(INCR_WITH_TTL),
        })
    }

    /// Runs one operation on a pooled connection within the timeout.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(deadpool_redis::Connection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let work = async {
            let conn = self
                .pool
                .get()
                .await
                .map_err(|e| StoreError::Redis(e.to_string()))?;
            op(conn).await.map_err(|e| StoreError::Redis(e.to_string()))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout.as_millis() as u64))?
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.run(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await
    }

    pub async fn put_record(&self, key: &str, record: &Record) -> Result<bool, StoreError> {
        let ttl = record.store_ttl_ms(now_ms());
        let json = record.to_json();
        let written: i64 = self
            .run(|mut c| async move {
                self.put_record
                    .key(key)
                    .arg(json)
                    .arg(record.expires_at)
                    .arg(record.renew_at)
                    .arg(ttl)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(written == 1)
    }

    pub async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StoreError> {
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

    pub async fn delete_if_equals(&self, key: &str, expected: &str) -> Result<bool, StoreError> {
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

    pub async fn extend_if_equals(
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

    pub async fn incr_with_ttl(&self, key: &str, ttl: Duration) -> Result<u64, StoreError> {
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

    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self
            .run(|mut c| async move { redis::cmd("PING").query_async(&mut c).await })
            .await?;
        Ok(())
    }
}
