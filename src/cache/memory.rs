//! The in-process store: the same semantics as Redis, for a single instance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::record::Record;

#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<HashMap<String, (String, Instant)>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` on the live entries. A poisoned lock is recovered: every operation
    /// leaves the map consistent, so a panic elsewhere cannot corrupt it.
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, (String, Instant)>) -> T) -> T {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        entries.retain(|_, (_, deadline)| *deadline > now);
        f(&mut entries)
    }

    pub(crate) fn get(&self, key: &str) -> Option<String> {
        self.with(|m| m.get(key).map(|(v, _)| v.clone()))
    }

    pub(crate) fn put_record(&self, key: &str, record: &Record, confirmed: bool) -> bool {
        let ttl = Duration::from_millis(record.store_ttl_ms(crate::clock::now_ms()));
        self.with(|m| {
            let current = m.get(key).and_then(|(v, _)| Record::from_json(v));
            if current.is_some_and(|c| !record.replaces(&c, confirmed)) {
                return false;
            }
            m.insert(key.to_string(), (record.to_json(), Instant::now() + ttl));
            true
        })
    }

    pub(crate) fn reject(&self, key: &str, tombstone: &Record) -> bool {
        self.with(|m| match m.get_mut(key) {
            Some((raw, _)) => {
                let current = Record::from_json(raw);
                let buries = current.is_some_and(|c| !c.rejected && c.value == tombstone.value);
                if buries {
                    *raw = tombstone.to_json();
                }
                buries
            }
            None => false,
        })
    }

    pub(crate) fn set(&self, key: &str, value: &str, ttl: Duration) {
        self.with(|m| m.insert(key.to_string(), (value.to_string(), Instant::now() + ttl)));
    }

    pub(crate) fn delete(&self, key: &str) {
        self.with(|m| m.remove(key));
    }

    pub(crate) fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> bool {
        self.with(|m| {
            if m.contains_key(key) {
                return false;
            }
            m.insert(key.to_string(), (value.to_string(), Instant::now() + ttl));
            true
        })
    }

    pub(crate) fn delete_if_equals(&self, key: &str, expected: &str) -> bool {
        self.with(|m| {
            if m.get(key).is_some_and(|(v, _)| v == expected) {
                m.remove(key);
                return true;
            }
            false
        })
    }

    pub(crate) fn extend_if_equals(&self, key: &str, expected: &str, ttl: Duration) -> bool {
        self.with(|m| match m.get_mut(key) {
            Some((value, deadline)) if value == expected => {
                *deadline = Instant::now() + ttl;
                true
            }
            _ => false,
        })
    }

    pub(crate) fn incr_with_ttl(&self, key: &str, ttl: Duration) -> u64 {
        self.with(|m| {
            let entry = m
                .entry(key.to_string())
                .or_insert_with(|| ("0".to_string(), Instant::now() + ttl));
            let count = entry.0.parse::<u64>().unwrap_or(0) + 1;
            entry.0 = count.to_string();
            count
        })
    }
}
