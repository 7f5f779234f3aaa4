//! Reconciling: what a job does first. This instance's copy of a value is compared
//! with the store's record; the newer is adopted, and a copy the store lost (or holds
//! an older value than) is written back, so that a value is fetched from WeChat only
//! when no instance has a usable one.

use std::sync::Arc;

use super::record::Record;
use super::redis::StoreError;
use super::{CredentialCache, Slot};
use crate::clock::now_ms;
use crate::metrics::{self, CacheEvent, Tier};

/// What this instance knows after comparing its copy with the store.
pub(super) struct Known {
    /// The value to serve, if any may be (possibly in its margin).
    pub(crate) current: Option<Arc<Record>>,
    /// The newest record seen, expired or refused ones included: a value WeChat hands
    /// out again is recognised by it, and keeps its first expiry.
    pub(super) newest: Option<Arc<Record>>,
}

impl CredentialCache {
    /// Compares this instance's copy with the store and adopts the newer. When the
    /// store lacks the copy, or holds an older value, the copy is written back (the
    /// store lost data, or a write failed), so that a value is fetched only when no
    /// instance has a usable one. A value refused by WeChat (a tombstone in the store,
    /// or known here) is neither adopted nor written back.
    pub(super) async fn reconcile(&self, slot: &Slot) -> Result<Known, StoreError> {
        let stored = self.read(&slot.key).await?;
        let (id, credential) = (&slot.id, slot.credential);
        if let Some(tombstone) = stored.as_ref().filter(|r| r.rejected) {
            self.local.reject(id, credential, &tombstone.value);
            self.publish_life(slot);
        }
        let now = now_ms();
        metrics::cache_lookup(
            Tier::Store,
            stored.as_ref().is_some_and(|r| r.is_servable(now)),
        );
        let copy = self.local.copy(id, credential);
        let newest = match (&stored, &copy) {
            (Some(stored), Some(copy)) if copy.supersedes(stored) => Some(copy.clone()),
            (stored, copy) => stored.clone().or_else(|| copy.clone()),
        };
        let stored_servable = stored
            .filter(|r| r.is_servable(now) && !self.local.is_rejected(id, credential, &r.value));
        let current = match (stored_servable, copy.filter(|c| c.is_servable(now))) {
            (Some(stored), Some(copy)) if copy.supersedes(&stored) => {
                self.restore(slot, &copy).await;
                Some(copy)
            }
            (None, Some(copy)) => {
                self.restore(slot, &copy).await;
                Some(copy)
            }
            (stored, _) => stored,
        };
        if let Some(current) = &current {
            self.local.put(id, credential, current.clone());
            self.publish_life(slot);
        }
        Ok(Known { current, newest })
    }

    /// Writes this instance's copy back to a store that lost it (newer wins).
    async fn restore(&self, slot: &Slot, copy: &Record) {
        match self.store.put_record(&slot.key, copy, false).await {
            Ok(true) => {
                metrics::cache_event(CacheEvent::Restored);
                log::warn!(
                    "{}: the store had lost the current value (or held an older one); this instance's copy was written back",
                    slot.key
                );
            }
            // A newer value, or the value's tombstone, is there: the next check adopts it.
            Ok(false) => {}
            Err(e) => log::warn!(
                "{}: could not write this instance's copy back: {e}",
                slot.key
            ),
        }
    }

    /// The stored record, if any and readable; store failures are logged once per outage.
    pub(super) async fn read(&self, key: &str) -> Result<Option<Arc<Record>>, StoreError> {
        match self.store.get(key).await {
            Ok(raw) => {
                self.outage.succeeded();
                Ok(raw.and_then(|raw| parse(key, &raw)))
            }
            Err(e) => {
                self.outage.failed(&e);
                Err(e)
            }
        }
    }
}

/// A stored record. Deadlines are absolute times written by one instance and read by
/// the others: a record that looks fetched in this instance's future reveals clocks
/// that disagree, which is logged (they must be kept in sync, e.g. by NTP).
fn parse(key: &str, raw: &str) -> Option<Arc<Record>> {
    let Some(record) = Record::from_json(raw) else {
        log::warn!("ignoring an unreadable value at {key}");
        return None;
    };
    if let Some(ahead) = record.clock_ahead_by(now_ms()) {
        crate::log_throttle::warn_throttled("clock_skew", || {
            format!(
                "{key} was written by an instance whose clock is at least {ahead} ms ahead of this one's: \
                 deadlines are shared as absolute times, keep the instances' clocks in sync (NTP)"
            )
        });
    }
    Some(Arc::new(record))
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::{Credential, KeySpace, MemoryStore, Store};
    use crate::configuration::{CacheSettings, TokenMode};

    pub(in crate::cache) const ID: &str = "wx-app";
    const HOUR: u64 = 3_600_000;

    /// A cache on the in-process store, with the shipped settings.
    pub(in crate::cache) fn cache() -> CredentialCache {
        let settings = CacheSettings::shipped();
        let store = Store::Memory(MemoryStore::new());
        CredentialCache::new(store, KeySpace::new("t"), settings, TokenMode::Stable)
    }

    pub(in crate::cache) fn slot(cache: &CredentialCache) -> Slot {
        Slot::new(&cache.keys, ID, &"default".into(), Credential::JsapiTicket)
    }

    /// A record of `value` fetched `ago` ms before now, that lives `life` ms.
    fn record(value: &str, ago: u64, life: u64) -> Record {
        let fetched_at = now_ms() - ago;
        Record {
            value: value.into(),
            fetched_at,
            renew_at: fetched_at + life / 2,
            usable_until: fetched_at + life * 9 / 10,
            expires_at: fetched_at + life,
            rejected: false,
        }
    }

    async fn stored(cache: &CredentialCache, slot: &Slot) -> Option<Record> {
        let raw = cache.store.get(&slot.key).await.unwrap();
        raw.and_then(|raw| Record::from_json(&raw))
    }

    async fn put(cache: &CredentialCache, slot: &Slot, record: &Record) {
        assert!(cache
            .store
            .put_record(&slot.key, record, true)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn a_newer_stored_value_is_adopted() {
        let cache = cache();
        let slot = slot(&cache);
        cache
            .local
            .put(ID, slot.credential, Arc::new(record("old", HOUR, 2 * HOUR)));
        let newer = record("new", 0, 2 * HOUR);
        put(&cache, &slot, &newer).await;
        let known = cache.reconcile(&slot).await.unwrap();
        assert_eq!(known.current.as_deref(), Some(&newer));
        assert_eq!(
            cache.local.copy(ID, slot.credential).as_deref(),
            Some(&newer)
        );
    }

    #[tokio::test]
    async fn a_copy_the_store_lost_or_holds_older_is_written_back() {
        let cache = cache();
        let slot = slot(&cache);
        let copy = record("current", 0, 2 * HOUR);
        cache.local.put(ID, slot.credential, Arc::new(copy.clone()));
        let known = cache.reconcile(&slot).await.unwrap();
        assert_eq!(known.current.as_deref(), Some(&copy));
        assert_eq!(
            stored(&cache, &slot).await,
            Some(copy.clone()),
            "lost: written back"
        );

        let older = record("older", HOUR, 2 * HOUR);
        cache
            .store
            .set(&slot.key, &older.to_json(), Duration::from_secs(60))
            .await
            .unwrap();
        let known = cache.reconcile(&slot).await.unwrap();
        assert_eq!(known.current.as_deref(), Some(&copy));
        assert_eq!(
            stored(&cache, &slot).await,
            Some(copy),
            "older: written back"
        );
    }

    #[tokio::test]
    async fn an_expired_stored_value_is_not_served_but_known_for_what_comes_again() {
        let cache = cache();
        let slot = slot(&cache);
        let expired = record("gone", 2 * HOUR, HOUR);
        put(&cache, &slot, &expired).await;
        let known = cache.reconcile(&slot).await.unwrap();
        assert!(known.current.is_none(), "{:?}", known.current);
        assert_eq!(known.newest.as_deref(), Some(&expired));
    }

    #[tokio::test]
    async fn a_value_refused_is_neither_adopted_nor_written_back() {
        let cache = cache();
        let slot = slot(&cache);
        let refused = record("refused", 0, 2 * HOUR);
        put(&cache, &slot, &refused).await;
        cache.local.reject(ID, slot.credential, "refused");
        let known = cache.reconcile(&slot).await.unwrap();
        assert!(known.current.is_none(), "{:?}", known.current);

        // Buried by another instance: this one drops its copy, and does not put it back.
        let cache = self::cache();
        let copy = record("refused", 0, 2 * HOUR);
        cache.local.put(ID, slot.credential, Arc::new(copy.clone()));
        put(&cache, &slot, &copy).await;
        assert!(cache
            .store
            .reject(&slot.key, &copy.rejected())
            .await
            .unwrap());
        let known = cache.reconcile(&slot).await.unwrap();
        assert!(known.current.is_none());
        assert!(cache.local.copy(ID, slot.credential).is_none());
        assert_eq!(stored(&cache, &slot).await, Some(copy.rejected()));
    }
}
