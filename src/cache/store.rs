//! Where cached credentials live: Redis, shared by every instance (production), or
//! process memory (one instance only: `[redis]` left out, or `--dev`).
//!
//! The store offers the few atomic operations the cache needs, each one command or
//! one single-key-slot Lua script, so that they stay atomic on Redis Cluster too.

use std::time::Duration;

use super::memory::MemoryStore;
use super::record::Record;
use super::redis::{RedisStore, StoreError};

// One store per process, behind an `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
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

    /// Writes `record` if it should replace the stored one ([`Record::replaces`]): it
    /// lasts longer, so a slow writer can never put an older value over a newer one;
    /// a tombstone gives way only to a value that lasts longer, or to the same value
    /// `confirmed` (just handed out again by WeChat), so a copy of a refused value is
    /// never put back. The key expires with the record.
    pub async fn put_record(
        &self,
        key: &str,
        record: &Record,
        confirmed: bool,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Redis(s) => s.put_record(key, record, confirmed).await,
            Self::Memory(s) => Ok(s.put_record(key, record, confirmed)),
        }
    }

    /// Turns the record at `key` into `tombstone` if it still holds `tombstone.value`
    /// (and is not a tombstone yet), keeping its expiry; true when it did.
    pub async fn reject(&self, key: &str, tombstone: &Record) -> Result<bool, StoreError> {
        match self {
            Self::Redis(s) => s.reject(key, tombstone).await,
            Self::Memory(s) => Ok(s.reject(key, tombstone)),
        }
    }

    /// `SET key value PX ttl`.
    pub async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        match self {
            Self::Redis(s) => s.set(key, value, ttl).await,
            Self::Memory(s) => {
                s.set(key, value, ttl);
                Ok(())
            }
        }
    }

    /// `DEL key`.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Self::Redis(s) => s.delete(key).await,
            Self::Memory(s) => {
                s.delete(key);
                Ok(())
            }
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
