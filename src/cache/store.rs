//! Where cached credentials live: Redis, shared by every instance (production), or
//! process memory (one instance only: `[redis]` left out, or `--dev`).
//!
//! The store offers the few atomic operations the cache needs, each one command or
//! one single-key-slot Lua script, so that they stay atomic on Redis Cluster too.

use std::time::Duration;

use super::memory::MemoryStore;
use super::record::Record;
use super::redis::RedisStore;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(String),
    #[error("redis did not answer within {0} ms")]
    Timeout(u64),
}

pub enum Store {
    Redis(RedisStore),
    Memory(MemoryStore),
}

impl Store {
    /// The raw value at `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self {
            Self::Redis(s) => s.get(key).await,
            Self::Memory(s) => Ok(s.get(key)),
        }
    }

    /// Writes `record` unless the stored one lasts longer (a later `expires_at`, or the
    /// same one and a later `renew_at`): a slow writer can never replace a newer value
    /// with an older one. The key expires with the record.
    pub async fn put_record(&self, key: &str, record: &Record) -> Result<bool, StoreError> {
        match self {
            Self::Redis(s) => s.put_record(key, record).await,
            Self::Memory(s) => Ok(s.put_record(key, record)),
        }
    }

    /// `SET key value NX PX ttl`: true when the key was free and is now ours.
    pub async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            Self::Redis(s) => s.set_nx(key, value, ttl).await,
            Self::Memory(s) => Ok(s.set_nx(key, value, ttl)),
        }
    }

    /// Deletes `key` only if it still holds `expected`; true when it did.
    pub async fn delete_if_equals(&self, key: &str, expected: &str) -> Result<bool, StoreError> {
        match self {
            Self::Redis(s) => s.delete_if_equals(key, expected).await,
            Self::Memory(s) => Ok(s.delete_if_equals(key, expected)),
        }
    }

    /// Resets the TTL of `key` only if it still holds `expected`; true when it did.
    pub async fn extend_if_equals(
        &self,
        key: &str,
        expected: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Redis(s) => s.extend_if_equals(key, expected, ttl).await,
            Self::Memory(s) => Ok(s.extend_if_equals(key, expected, ttl)),
        }
    }

    /// Increments a counter that lives `ttl` from its first increment; returns the new count.
    pub async fn incr_with_ttl(&self, key: &str, ttl: Duration) -> Result<u64, StoreError> {
        match self {
            Self::Redis(s) => s.incr_with_ttl(key, ttl).await,
            Self::Memory(s) => Ok(s.incr_with_ttl(key, ttl)),
        }
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Redis(s) => s.ping().await,
            Self::Memory(_) => Ok(()),
        }
    }
}
