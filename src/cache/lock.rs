//! The refresh lock: at most one process in the deployment calls WeChat for a given
//! credential at a time.
//!
//! Taking it is one `SET key <uuid> NX PX <ttl>` (a single command, so it works on
//! Redis Cluster, unlike MULTI or a pipeline). Releasing it is a compare-and-delete,
//! so a holder whose lock already expired can never release its successor's. If the
//! holder dies, the TTL frees the lock and another process takes over.
//!
//! A process that stops on purpose (SIGTERM, SIGINT) should not make the others wait
//! for that TTL: every lock it takes is recorded in its [`HeldLocks`] until released,
//! and whatever is still recorded when the server has stopped (a refresh job dropped
//! with its worker) is released from there, see [`HeldLocks::release_all`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::redis::StoreError;
use super::store::Store;

#[must_use = "a taken lock must be released"]
pub(crate) struct RefreshLock {
    key: String,
    holder: String,
    held: HeldLocks,
}

impl RefreshLock {
    /// Takes the lock if it is free; `None` when another process holds it, or when
    /// this process is shutting down (`held` was closed: nothing may be left behind).
    pub(crate) async fn try_acquire(
        store: &Store,
        held: &HeldLocks,
        key: String,
        ttl: Duration,
    ) -> Result<Option<Self>, StoreError> {
        if held.is_closed() {
            return Ok(None);
        }
        let holder = uuid::Uuid::new_v4().to_string();
        if !store.set_nx(&key, &holder, ttl).await? {
            return Ok(None);
        }
        if !held.insert(&key, &holder) {
            // Shutdown began while SET was in flight: give the lock back at once.
            let _ = store.delete_if_equals(&key, &holder).await;
            return Ok(None);
        }
        Ok(Some(Self {
            key,
            holder,
            held: held.clone(),
        }))
    }

    /// Runs `work` while extending the lock every third of its TTL, so that a slow
    /// WeChat does not let the lock lapse under a live holder. If an extension finds
    /// the lock gone (this process stalled longer than the TTL), `work` still finishes;
    /// the store's newer-wins write keeps that harmless.
    pub(crate) async fn keep_alive_while<T>(
        &self,
        store: &Store,
        ttl: Duration,
        work: impl Future<Output = T>,
    ) -> T {
        let keep_alive = async {
            loop {
                tokio::time::sleep(ttl / 3).await;
                match store.extend_if_equals(&self.key, &self.holder, ttl).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => log::warn!("could not extend refresh lock {}: {e}", self.key),
                }
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            result = work => result,
            () = keep_alive => unreachable!("keep_alive never completes"),
        }
    }

    /// Releases the lock if it is still ours. A failure is logged, not returned: the
    /// lock's TTL frees it anyway, and the refresh it guarded has already succeeded or
    /// failed on its own.
    pub(crate) async fn release(self, store: &Store) {
        self.held.remove(&self.key, &self.holder);
        release(store, &self.key, &self.holder).await;
    }
}

/// Compare-and-delete of `key` if it still holds `holder`, failures logged.
async fn release(store: &Store, key: &str, holder: &str) -> bool {
    match store.delete_if_equals(key, holder).await {
        Ok(true) => true,
        Ok(false) => {
            log::warn!(
                "refresh lock {key} had expired before its holder released it (the holder stalled longer than cache.lock_ttl_ms)"
            );
            false
        }
        Err(e) => {
            log::warn!("could not release refresh lock {key} (its TTL will): {e}");
            false
        }
    }
}

/// The refresh locks this process holds: key to holder id. A lock is recorded when
/// taken and forgotten when released, not when its [`RefreshLock`] is dropped: a job
/// dropped with its worker at shutdown never releases, and that is exactly the lock
/// this registry is for. Cheap to clone (one registry per credential cache).
#[derive(Clone, Default)]
pub(crate) struct HeldLocks(Arc<Mutex<Registry>>);

#[derive(Default)]
struct Registry {
    locks: HashMap<String, String>,
    /// Set by [`HeldLocks::release_all`]: no lock may be taken after it.
    closed: bool,
}

impl HeldLocks {
    /// Every operation leaves the map consistent, so a poisoned lock is safe to reuse.
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_closed(&self) -> bool {
        self.registry().closed
    }

    /// Records a taken lock; false when closed (the caller gives it back).
    fn insert(&self, key: &str, holder: &str) -> bool {
        let mut registry = self.registry();
        if !registry.closed {
            registry.locks.insert(key.to_string(), holder.to_string());
        }
        !registry.closed
    }

    fn remove(&self, key: &str, holder: &str) {
        let mut registry = self.registry();
        if registry.locks.get(key).is_some_and(|h| h == holder) {
            registry.locks.remove(key);
        }
    }

    /// How many locks are recorded as held.
    pub(crate) fn len(&self) -> usize {
        self.registry().locks.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// For shutdown: refuses every later [`RefreshLock::try_acquire`], then releases
    /// each recorded lock with compare-and-delete through `store` (a lock that expired
    /// and was taken by another process is left alone). Returns how many were released.
    ///
    /// `store` must be usable on the calling runtime: once the server has stopped, the
    /// Redis pool's connections belong to worker runtimes that are gone, so the caller
    /// passes a store with a fresh pool (see `startup`).
    pub(crate) async fn release_all(&self, store: &Store) -> usize {
        let locks: Vec<(String, String)> = {
            let mut registry = self.registry();
            registry.closed = true;
            registry.locks.drain().collect()
        };
        let mut released = 0;
        for (key, holder) in locks {
            if release(store, &key, &holder).await {
                log::info!("released refresh lock {key} at shutdown");
                released += 1;
            }
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::MemoryStore;

    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_lock_dropped_without_release_is_released_at_shutdown() {
        let store = Store::Memory(MemoryStore::new());
        let held = HeldLocks::default();
        let lock = RefreshLock::try_acquire(&store, &held, "k".into(), TTL)
            .await
            .unwrap()
            .expect("a free lock");
        // What happens to a job's lock when its worker runtime is dropped.
        std::mem::forget(lock);
        assert_eq!(held.len(), 1);
        assert!(
            !store.set_nx("k", "other", TTL).await.unwrap(),
            "still held"
        );

        assert_eq!(held.release_all(&store).await, 1);
        assert!(held.is_empty());
        assert!(store.set_nx("k", "other", TTL).await.unwrap(), "free again");
    }

    #[tokio::test]
    async fn released_locks_are_forgotten_and_no_lock_is_taken_after_shutdown() {
        let store = Store::Memory(MemoryStore::new());
        let held = HeldLocks::default();
        let lock = RefreshLock::try_acquire(&store, &held, "k".into(), TTL)
            .await
            .unwrap()
            .expect("a free lock");
        lock.release(&store).await;
        assert!(held.is_empty());

        assert_eq!(held.release_all(&store).await, 0);
        let late = RefreshLock::try_acquire(&store, &held, "k".into(), TTL)
            .await
            .unwrap();
        assert!(late.is_none(), "a lock taken during shutdown would linger");
        assert!(store.get("k").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_lock_that_expired_and_changed_hands_is_not_released() {
        let store = Store::Memory(MemoryStore::new());
        let held = HeldLocks::default();
        let lock = RefreshLock::try_acquire(&store, &held, "k".into(), Duration::from_millis(30))
            .await
            .unwrap()
            .expect("a free lock");
        std::mem::forget(lock);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(store.set_nx("k", "successor", TTL).await.unwrap());
        assert_eq!(held.release_all(&store).await, 0);
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some("successor"));
    }
}
