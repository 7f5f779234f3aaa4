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
use super::Credential;

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

/// Copies by appid, then by credential: looked up with the request's `&str` appid,
/// so the hot path allocates nothing.
type Copies = HashMap<String, [Option<Copy>; Credential::COUNT]>;

pub struct LocalTier {
    copies: Mutex<Copies>,
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
    fn map(&self) -> MutexGuard<'_, Copies> {
        self.copies.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_copy<T>(
        &self,
        appid: &str,
        credential: Credential,
        f: impl FnOnce(&mut Option<Copy>) -> T,
    ) -> T {
        let mut map = self.map();
        if !map.contains_key(appid) {
            map.insert(appid.to_string(), Default::default());
        }
        let copies = map.get_mut(appid).map(|c| &mut c[credential.index()]);
        f(copies.unwrap_or(&mut None))
    }

    pub fn get(&self, appid: &str, credential: Credential) -> Option<Copy> {
        self.map()
            .get(appid)
            .and_then(|c| c[credential.index()].clone())
    }

    /// Adopts `record` as this instance's copy, just checked.
    pub fn put(&self, appid: &str, credential: Credential, record: Arc<Record>) {
        let next_check = Instant::now() + self.recheck;
        self.with_copy(appid, credential, |copy| {
            *copy = Some(Copy {
                record,
                next_check,
                failures: 0,
            })
        });
    }

    /// Records a failed check or renewal: the next one waits twice as long as the last.
    pub fn failed(&self, appid: &str, credential: Credential) {
        self.with_copy(appid, credential, |copy| {
            if let Some(copy) = copy {
                copy.failures = copy.failures.saturating_add(1);
                let backoff = self.recheck.saturating_mul(1 << copy.failures.min(16));
                copy.next_check = Instant::now() + backoff.min(MAX_BACKOFF);
            }
        });
    }

    /// Forgets the copy if it still holds `value`.
    pub fn remove_if(&self, appid: &str, credential: Credential, value: &str) {
        self.with_copy(appid, credential, |copy| {
            if copy.as_ref().is_some_and(|c| c.record.value == value) {
                *copy = None;
            }
        });
    }
}
