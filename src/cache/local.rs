//! The in-process tier: each instance's copy of the values it uses, so that a warm
//! instance signs with no Redis and no WeChat I/O.
//!
//! The store stays the source of truth: a copy is compared with it in the background
//! every `cache.local_recheck_ms`, so a change made by another instance (a renewal, a
//! token dropped after 40001) reaches this one within that interval. After a failed
//! check or renewal the next one backs off exponentially (up to [`MAX_BACKOFF`]), so
//! an unreachable store or a failing WeChat is not hammered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::record::Record;

const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Copy {
    pub record: Arc<Record>,
    /// When a background check of this copy is next due.
    next_check: Instant,
    failures: u32,
}

impl Copy {
    pub fn check_is_due(&self) -> bool {
        Instant::now() >= self.next_check
    }
}

pub struct LocalTier {
    copies: Mutex<HashMap<String, Copy>>,
    recheck: Duration,
}

impl LocalTier {
    pub fn new(recheck: Duration) -> Self {
        Self {
            copies: Mutex::new(HashMap::new()),
            recheck,
        }
    }

    /// Every operation leaves the map consistent, so a poisoned lock is safe to reuse.
    fn map(&self) -> MutexGuard<'_, HashMap<String, Copy>> {
        self.copies.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Copy> {
        self.map().get(key).cloned()
    }

    /// Adopts `record` as this instance's copy, just checked.
    pub fn put(&self, key: &str, record: Arc<Record>) {
        let copy = Copy {
            record,
            next_check: Instant::now() + self.recheck,
            failures: 0,
        };
        self.map().insert(key.to_string(), copy);
    }

    /// Records a failed check or renewal: the next one waits twice as long as the last.
    pub fn failed(&self, key: &str) {
        if let Some(copy) = self.map().get_mut(key) {
            copy.failures = copy.failures.saturating_add(1);
            let backoff = self.recheck.saturating_mul(1 << copy.failures.min(16));
            copy.next_check = Instant::now() + backoff.min(MAX_BACKOFF);
        }
    }

    /// Forgets the copy if it still holds `value`.
    pub fn remove_if(&self, key: &str, value: &str) {
        let mut map = self.map();
        if map.get(key).is_some_and(|c| c.record.value == value) {
            map.remove(key);
        }
    }
}
