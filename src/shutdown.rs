//! What the process does once its HTTP server has stopped (SIGTERM, SIGINT): give back
//! the refresh locks it still holds, so that another instance can renew at once
//! instead of waiting out `cache.lock_ttl_ms`.
//!
//! A lock is still held at that point when its refresh job was dropped with the worker
//! that ran it (WeChat slow, the job mid-call): actix stops a worker once its requests
//! are answered, and background tasks on its runtime die with it.

use std::time::{Duration, Instant};

use crate::cache::{CredentialCache, RedisStore, Store};
use crate::configuration::RedisSettings;

/// Bound on the whole release, whatever Redis does: a process asked to stop must stop.
/// Each command is already bounded by `redis.timeout_ms`; this caps the sum.
const RELEASE_BUDGET: Duration = Duration::from_secs(5);

/// Releases the locks `cache` still holds (compare-and-delete, so never another
/// process's) and refuses new ones. `redis` is the `[redis]` table the cache's store
/// was built from, `None` for the in-process store.
///
/// The cache's Redis pool cannot do it: its connections were opened on the worker
/// runtimes, whose tasks (each connection's I/O driver) are gone, so a command on them
/// would fail or wait for the timeout. A fresh pool on the calling runtime is used
/// instead; the in-process store is plain memory and is used as it is.
pub(crate) async fn release_held_locks(cache: &CredentialCache, redis: Option<&RedisSettings>) {
    let held = cache.held_locks();
    if held.is_empty() {
        // Still close the registry: a job that outlived its worker must not take one.
        held.release_all(cache.store()).await;
        return;
    }
    let fresh;
    let store = match redis {
        Some(settings) => match RedisStore::new(settings) {
            Ok(store) => {
                fresh = Store::Redis(store);
                &fresh
            }
            Err(e) => {
                log::warn!("cannot release refresh locks at shutdown (their TTL will): {e}");
                return;
            }
        },
        None => cache.store(),
    };
    let started = Instant::now();
    let count = held.len();
    match tokio::time::timeout(RELEASE_BUDGET, held.release_all(store)).await {
        Ok(released) => log::info!(
            "shutdown: released {released} of {count} refresh lock(s) in {} ms",
            started.elapsed().as_millis()
        ),
        Err(_) => log::warn!(
            "shutdown: releasing refresh locks took over {} s; the rest expire with their TTL",
            RELEASE_BUDGET.as_secs()
        ),
    }
}
