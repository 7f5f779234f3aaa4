//! The in-process tier: each instance's copy of the values it uses, so that a warm
//! instance signs with no Redis and no WeChat I/O, and what this instance knows about
//! each value besides (a backoff in force, values WeChat refused).
//!
//! The store stays the source of truth: a copy is compared with it in the background
//! every `cache.local_recheck_ms`, so a change made by another instance (a renewal, a
//! refused token) reaches this one within that interval. When the store cannot be
//! read, the next check backs off exponentially (up to [`MAX_CHECK_BACKOFF`]), so an
//! unreachable store is not hammered.
//!
//! The copy is never a value this instance knows WeChat refused: [`LocalTier::reject`]
//! drops it, and [`LocalTier::put`] refuses it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::record::Record;
use super::Credential;

const MAX_CHECK_BACKOFF: Duration = Duration::from_secs(60);
/// Refused values remembered per credential: WeChat refuses one at a time, and each is
/// replaced at once.
const REJECTED_KEPT: usize = 4;
/// How long WeChat keeps accepting a token after a newer one replaced it (5 minutes,
/// `shared/wechat-api.md`): a backend that was handed the previous token still holds it.
const REPLACED_GRACE_MS: u64 = 5 * 60 * 1000;

/// What this instance knows of one credential.
#[derive(Default)]
struct Known {
    copy: Option<Arc<Record>>,
    /// When a background check of the copy is next due (`None`: at once).
    next_check: Option<Instant>,
    store_failures: u32,
    /// The deployment's backoff after a failed renewal, as last read or written.
    backoff: Option<Backoff>,
    rejected: VecDeque<String>,
    /// The value the copy replaced, and until when (Unix ms) WeChat still accepts it.
    replaced: Option<(String, u64)>,
}

/// What a request finds in this instance, without I/O.
pub(crate) struct Lookup {
    /// The copy, if it may be served at all (possibly in its margin).
    pub(crate) servable: Option<Arc<Record>>,
    /// The copy may be served without asking for a newer one.
    pub(crate) usable: bool,
    /// A background check of the copy is due.
    pub(crate) check_due: bool,
    /// The deployment backs off from renewing: no attempt before this.
    pub(crate) backoff: Option<Backoff>,
}

/// What this instance knows, by cache id, then by credential: looked up with the
/// request's `&str` id, so the hot path allocates nothing.
type Entries = HashMap<String, [Known; Credential::COUNT]>;

pub(crate) struct LocalTier {
    entries: Mutex<Entries>,
    recheck: Duration,
}

impl LocalTier {
    pub(crate) fn new(recheck: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            recheck,
        }
    }

    /// Every operation leaves the map consistent, so a poisoned lock is safe to reuse.
    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<T>(&self, id: &str, credential: Credential, f: impl FnOnce(&mut Known) -> T) -> T {
        let mut entries = self.entries();
        if !entries.contains_key(id) {
            entries.insert(id.to_string(), Default::default());
        }
        let mut fallback = Known::default();
        let known = entries
            .get_mut(id)
            .map_or(&mut fallback, |k| &mut k[credential.index()]);
        f(known)
    }

    /// What a request for the credential finds here at `now` (Unix ms).
    pub(crate) fn lookup(&self, id: &str, credential: Credential, now: u64) -> Lookup {
        let entries = self.entries();
        let known = entries.get(id).map(|k| &k[credential.index()]);
        let servable = known
            .and_then(|k| k.copy.clone())
            .filter(|c| c.is_servable(now));
        Lookup {
            usable: servable.as_ref().is_some_and(|c| c.is_usable(now)),
            servable,
            check_due: known
                .and_then(|k| k.next_check)
                .is_none_or(|at| Instant::now() >= at),
            backoff: known
                .and_then(|k| k.backoff.clone())
                .filter(|b| b.is_in_force(now)),
        }
    }

    /// The copy, whatever its state.
    pub(crate) fn copy(&self, id: &str, credential: Credential) -> Option<Arc<Record>> {
        self.entries()
            .get(id)
            .and_then(|k| k[credential.index()].copy.clone())
    }

    /// The credentials of `id` this instance holds a copy of whose check is due.
    pub(crate) fn due_for_a_check(&self, id: &str) -> Vec<Credential> {
        let entries = self.entries();
        let Some(known) = entries.get(id) else {
            return Vec::new();
        };
        let now = Instant::now();
        Credential::ALL
            .into_iter()
            .filter(|c| {
                let known = &known[c.index()];
                known.copy.is_some() && known.next_check.is_none_or(|at| now >= at)
            })
            .collect()
    }

    /// Adopts `record` as this instance's copy, just compared with the store. A value
    /// this instance knows WeChat refused is not adopted.
    pub(crate) fn put(&self, id: &str, credential: Credential, record: Arc<Record>) {
        let next_check = Instant::now() + self.recheck;
        self.with(id, credential, |known| {
            if record.rejected || known.rejected.contains(&record.value) {
                return;
            }
            if let Some(old) = known.copy.as_ref().filter(|c| c.value != record.value) {
                let until = old
                    .expires_at
                    .min(crate::clock::now_ms() + REPLACED_GRACE_MS);
                known.replaced = Some((old.value.clone(), until));
            }
            known.copy = Some(record);
            known.next_check = Some(next_check);
            known.store_failures = 0;
        });
    }

    /// The store could not be read: the next check waits twice as long as the last.
    pub(crate) fn store_failed(&self, id: &str, credential: Credential) {
        self.with(id, credential, |known| {
            known.store_failures = known.store_failures.saturating_add(1);
            let wait = self
                .recheck
                .saturating_mul(1 << known.store_failures.min(16));
            known.next_check = Some(Instant::now() + wait.min(MAX_CHECK_BACKOFF));
        });
    }

    /// Records the deployment's backoff (`None`: none is in force).
    pub(crate) fn set_backoff(&self, id: &str, credential: Credential, backoff: Option<Backoff>) {
        self.with(id, credential, |known| known.backoff = backoff);
    }

    /// WeChat refused `value`: it is dropped, and never adopted again.
    pub(crate) fn reject(&self, id: &str, credential: Credential, value: &str) {
        self.with(id, credential, |known| {
            if known.copy.as_ref().is_some_and(|c| c.value == value) {
                known.copy = None;
                known.next_check = None;
            }
            if known.replaced.as_ref().is_some_and(|(r, _)| r == value) {
                known.replaced = None;
            }
            if !known.rejected.iter().any(|r| r == value) {
                if known.rejected.len() == REJECTED_KEPT {
                    known.rejected.pop_front();
                }
                known.rejected.push_back(value.to_string());
            }
        });
    }

    /// WeChat handed `value` out again, refused or not: it is current after all.
    pub(crate) fn confirm(&self, id: &str, credential: Credential, value: &str) {
        self.with(id, credential, |known| {
            known.rejected.retain(|r| r != value)
        });
    }

    /// The value the copy replaced, while WeChat still accepts it at `now` (Unix ms).
    pub(crate) fn replaced(&self, id: &str, credential: Credential, now: u64) -> Option<String> {
        let entries = self.entries();
        let (value, until) = entries.get(id)?[credential.index()].replaced.as_ref()?;
        (now < *until).then(|| value.clone())
    }

    pub(crate) fn is_rejected(&self, id: &str, credential: Credential, value: &str) -> bool {
        self.entries()
            .get(id)
            .is_some_and(|k| k[credential.index()].rejected.iter().any(|r| r == value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "wx-app";
    const TICKET: Credential = Credential::JsapiTicket;

    fn record(value: &str, usable_until: u64, expires_at: u64) -> Arc<Record> {
        Arc::new(Record {
            value: value.into(),
            fetched_at: 0,
            renew_at: usable_until / 2,
            usable_until,
            expires_at,
            rejected: false,
        })
    }

    #[test]
    fn a_copy_is_usable_then_servable_in_its_margin_then_gone() {
        let local = LocalTier::new(Duration::from_secs(1));
        local.put(ID, TICKET, record("T", 100, 120));
        let at = |now| local.lookup(ID, TICKET, now);
        assert!(at(99).usable && at(99).servable.is_some());
        assert!(
            !at(100).usable && at(100).servable.is_some(),
            "in its margin"
        );
        assert!(at(120).servable.is_none(), "expired");
        assert!(!at(99).check_due, "just compared with the store");
    }

    #[test]
    fn a_refused_value_is_dropped_and_never_adopted_again() {
        let local = LocalTier::new(Duration::from_secs(1));
        local.put(ID, TICKET, record("T", 100, 120));
        local.reject(ID, TICKET, "T");
        assert!(local.copy(ID, TICKET).is_none());
        assert!(local.lookup(ID, TICKET, 0).check_due);
        local.put(ID, TICKET, record("T", 100, 120));
        assert!(
            local.copy(ID, TICKET).is_none(),
            "re-adopted a refused value"
        );
        assert!(local.is_rejected(ID, TICKET, "T"));
        local.confirm(ID, TICKET, "T");
        assert!(
            !local.is_rejected(ID, TICKET, "T"),
            "WeChat handed it out again"
        );
        local.reject(ID, TICKET, "T");
        local.put(ID, TICKET, record("U", 100, 120));
        assert_eq!(
            local.copy(ID, TICKET).map(|c| c.value.clone()),
            Some("U".into())
        );
        let tombstone = Arc::new(record("V", 100, 120).rejected());
        local.put(ID, TICKET, tombstone);
        assert_eq!(
            local.copy(ID, TICKET).map(|c| c.value.clone()),
            Some("U".into())
        );
    }

    #[test]
    fn a_replaced_value_is_remembered_for_wechats_grace_unless_refused() {
        let local = LocalTier::new(Duration::from_secs(1));
        let now = crate::clock::now_ms();
        local.put(ID, TICKET, record("T", u64::MAX, u64::MAX));
        assert_eq!(local.replaced(ID, TICKET, now), None);
        local.put(ID, TICKET, record("U", u64::MAX, u64::MAX));
        assert_eq!(local.replaced(ID, TICKET, now).as_deref(), Some("T"));
        let after_grace = crate::clock::now_ms() + REPLACED_GRACE_MS;
        assert_eq!(local.replaced(ID, TICKET, after_grace), None);
        local.put(ID, TICKET, record("U", u64::MAX, u64::MAX));
        assert_eq!(
            local.replaced(ID, TICKET, now).as_deref(),
            Some("T"),
            "the same value again replaces nothing"
        );
        local.reject(ID, TICKET, "T");
        assert_eq!(local.replaced(ID, TICKET, now), None, "WeChat refused it");
        local.put(ID, TICKET, record("V", 100, 120));
        local.put(ID, TICKET, record("W", 100, 120));
        assert_eq!(
            local.replaced(ID, TICKET, 119).as_deref(),
            Some("V"),
            "until its expiry"
        );
        assert_eq!(local.replaced(ID, TICKET, 120), None, "expired");
    }

    #[test]
    fn only_the_last_few_refusals_are_remembered() {
        let local = LocalTier::new(Duration::from_secs(1));
        for value in ["A", "B", "C", "D", "E"] {
            local.reject(ID, TICKET, value);
        }
        assert!(!local.is_rejected(ID, TICKET, "A"));
        assert!(["B", "C", "D", "E"]
            .iter()
            .all(|v| local.is_rejected(ID, TICKET, v)));
        assert!(!local.is_rejected(ID, Credential::AccessToken, "E"));
    }

    #[test]
    fn store_failures_space_the_next_checks_out() {
        let local = LocalTier::new(Duration::from_millis(50));
        local.put(ID, TICKET, record("T", u64::MAX, u64::MAX));
        for _ in 0..3 {
            local.store_failed(ID, TICKET);
        }
        // Past the plain interval (50 ms), well before the backed-off one (400 ms).
        std::thread::sleep(Duration::from_millis(100));
        assert!(!local.lookup(ID, TICKET, 0).check_due);
    }
}
