//! The refresh lock: at most one process in the deployment calls WeChat for a given
//! credential at a time.
//!
//! Taking it is one `SET key <uuid> NX PX <ttl>` (a single command, so it works on
//! Redis Cluster, unlike MULTI or a pipeline). Releasing it is a compare-and-delete,
//! so a holder whose lock already expired can never release its successor's. If the
//! holder dies, the TTL frees the lock and another process takes over.

use std::future::Future;
use std::time::Duration;

use super::store::{Store, StoreError};

#[must_use = "a taken lock must be released"]
pub struct RefreshLock {
    key: String,
    holder: String,
}

impl RefreshLock {
    /// Takes the lock if it is free; `None` when another process holds it.
    pub async fn try_acquire(
        store: &Store,
        key: String,
        ttl: Duration,
    ) -> Result<Option<Self>, StoreError> {
        let holder = uuid::Uuid::new_v4().to_string();
        let taken = store.set_nx(&key, &holder, ttl).await?;
        Ok(taken.then_some(Self { key, holder }))
    }

    /// Runs `work` while extending the lock every third of its TTL, so that a slow
    /// WeChat does not let the lock lapse under a live holder. If an extension finds
    /// the lock gone (this process stalled longer than the TTL), `work` still finishes;
    /// the store's newer-wins write keeps that harmless.
    pub async fn keep_alive_while<T>(
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
    pub async fn release(self, store: &Store) {
        match store.delete_if_equals(&self.key, &self.holder).await {
            Ok(true) => {}
            Ok(false) => log::warn!(
                "refresh lock {} had expired before its holder released it (the holder stalled longer than cache.lock_ttl_ms)",
                self.key
            ),
            Err(e) => log::warn!("could not release refresh lock {} (its TTL will): {e}", self.key),
        }
    }
}
