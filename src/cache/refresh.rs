//! What a request does (the two-tier read) and what a job does: reconcile this
//! instance's copy with the store, and renew the value under the lock when it is due
//! or gone, within the deployment's backoff schedule.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::backoff::Backoff;
use super::jobs::{Outcome, Receiver, Registration};
use super::reconcile::Known;
use super::record::{Record, Stale};
use super::redis::StoreError;
use super::{CacheError, Context, Credential, CredentialCache, RefreshLock, Slot};
use crate::clock::now_ms;
use crate::metrics::{self, CacheEvent, Tier};
use crate::wechat::WechatError;

/// Polling of the store while another instance renews: from the first to the last.
const POLL_FIRST: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(200);
/// WeChat may still hand out a re-issued value a moment past the expiry recorded for
/// it (clocks differ, and the value was minted a moment after the request that brought
/// it): it is asked for once more after this pause, not in a loop.
const STALE_RETRY: Duration = Duration::from_secs(1);

tokio::task_local! {
    /// Set while a job runs: its own waits (a ticket renewal waiting for its token)
    /// are not a request's, and are left out of the lock-wait metrics.
    static IN_JOB: ();
}

fn waited_by_request() -> bool {
    IN_JOB.try_with(|_| ()).is_err()
}

enum Renewal {
    /// A value that needs no renewal now: just fetched, or written by another holder.
    Renewed(Arc<Record>),
    Failed(CacheError),
    /// Another instance holds the refresh lock.
    LockHeld,
}

impl CredentialCache {
    /// The copy when it is usable (starting a background check when one is due);
    /// otherwise the outcome of this instance's job for the credential, waited for at
    /// most `lock_wait_ms`. While the deployment backs off after a failed renewal, a
    /// request with nothing usable fails at once. Whatever fails, a value still in its
    /// margin is served rather than nothing.
    pub(super) async fn get(self: &Arc<Self>, ctx: &Context, credential: Credential) -> Outcome {
        let now = now_ms();
        let found = self.local.lookup(ctx.app.cache_id(), credential, now);
        metrics::cache_lookup(Tier::Local, found.usable);
        if let (true, Some(copy)) = (found.usable, &found.servable) {
            if found.check_due {
                self.start_job(ctx, &self.slot(ctx, credential));
            }
            return Ok(copy.clone());
        }
        // Past the warm path, which must not build the store keys (four strings:
        // `perf` showed them at 3.6 % of a signature).
        let slot = self.slot(ctx, credential);
        if let Some(backoff) = &found.backoff {
            return found
                .servable
                .ok_or_else(|| self.backing_off(&slot, backoff, now));
        }
        let outcome = match self.wait_for_job(ctx, &slot).await {
            // The job began before this instance learnt that WeChat refused its value.
            Ok(record) if self.local.is_rejected(&slot.id, credential, &record.value) => {
                self.wait_for_job(ctx, &slot).await
            }
            outcome => outcome,
        };
        outcome.or_else(|e| self.last_resort(&slot).ok_or(e))
    }

    /// The copy in its margin, when nothing newer could be had.
    fn last_resort(&self, slot: &Slot) -> Option<Arc<Record>> {
        self.local
            .lookup(&slot.id, slot.credential, now_ms())
            .servable
    }

    async fn wait_for_job(self: &Arc<Self>, ctx: &Context, slot: &Slot) -> Outcome {
        let mut result = self.start_job(ctx, slot);
        let by_request = waited_by_request();
        if by_request {
            metrics::lock_wait();
        }
        let wait = self.settings.lock_wait;
        let finished = tokio::time::timeout(wait, result.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(|done| done.ok().and_then(|d| d.clone()));
        finished.unwrap_or_else(|| {
            if by_request {
                metrics::lock_wait_timeout();
            }
            Err(CacheError::LockWaitTimeout(slot.credential.name()))
        })
    }

    /// Joins the credential's running job, or starts one on this worker.
    fn start_job(self: &Arc<Self>, ctx: &Context, slot: &Slot) -> Receiver {
        let (publisher, result) = match self.jobs.join_or_register(&slot.key) {
            Registration::Running(result) => return result,
            Registration::New { publisher, result } => (publisher, result),
        };
        let (cache, ctx, slot) = (self.clone(), ctx.clone(), slot.clone());
        // Boxed: a ticket job starts token jobs, so the future type refers to itself.
        let job: Pin<Box<dyn Future<Output = ()>>> = Box::pin(async move {
            let outcome = cache.refresh(&ctx, &slot).await;
            publisher.publish(outcome);
        });
        actix_web::rt::spawn(IN_JOB.scope((), job));
        result
    }

    /// A job: brings this instance's copy up to date with the store and, when the
    /// value is due for renewal or nothing usable is left, renews it. A usable value
    /// stays in service whatever fails (the failure is logged and scheduled); with
    /// nothing usable, the job waits for another instance's renewal, or fails.
    async fn refresh(self: &Arc<Self>, ctx: &Context, slot: &Slot) -> Outcome {
        let settings = &self.settings;
        let deadline = Instant::now() + settings.lock_ttl + settings.lock_wait;
        let mut pause = POLL_FIRST;
        loop {
            let known = self.reconcile(slot).await.inspect_err(|_| {
                self.local.store_failed(&slot.id, slot.credential);
            })?;
            self.check_the_others(ctx, slot);
            let now = now_ms();
            let usable = known.current.clone().filter(|c| c.is_usable(now));
            if let Some(current) = usable.clone().filter(|c| !c.is_due_for_renewal(now)) {
                return Ok(current);
            }
            match self.renew(ctx, slot, &known).await {
                Renewal::Renewed(record) => return Ok(record),
                Renewal::Failed(e) => return usable.ok_or(e),
                Renewal::LockHeld => {
                    if let Some(current) = usable {
                        return Ok(current);
                    }
                }
            }
            if Instant::now() + pause >= deadline {
                return Err(CacheError::LockWaitTimeout(slot.credential.name()));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    /// Starts the checks of the app's other credentials that this instance holds and
    /// that are due, whether requests use them or not: the token of an app that only
    /// signs pages is compared with the store too, so that a renewal or a replacement
    /// by another instance reaches it, and a store that lost it gets it back before an
    /// instance that starts cold fetches one (in classic mode, a token fetched for
    /// nothing kills, 5 minutes later, the one every other backend holds).
    fn check_the_others(self: &Arc<Self>, ctx: &Context, slot: &Slot) {
        for credential in self.local.due_for_a_check(&slot.id) {
            if credential != slot.credential {
                self.start_job(ctx, &self.slot(ctx, credential));
            }
        }
    }

    /// Renews the value under the refresh lock, unless the deployment is backing off
    /// or another instance holds the lock.
    async fn renew(self: &Arc<Self>, ctx: &Context, slot: &Slot, known: &Known) -> Renewal {
        let now = now_ms();
        match self.backoff_in_force(slot, now).await {
            Ok(Some(backoff)) => return Renewal::Failed(self.backing_off(slot, &backoff, now)),
            Ok(None) => {}
            Err(e) => return Renewal::Failed(e.into()),
        }
        let ttl = self.settings.lock_ttl;
        let taken =
            RefreshLock::try_acquire(&self.store, &self.held_locks, slot.lock_key.clone(), ttl);
        let lock = match taken.await {
            Ok(Some(lock)) => lock,
            Ok(None) => return Renewal::LockHeld,
            Err(e) => return Renewal::Failed(e.into()),
        };
        let work = self.renew_locked(ctx, slot, known);
        let renewal = lock.keep_alive_while(&self.store, ttl, work).await;
        lock.release(&self.store).await;
        renewal
    }

    async fn renew_locked(self: &Arc<Self>, ctx: &Context, slot: &Slot, seen: &Known) -> Renewal {
        // Look again under the lock: the previous holder may just have renewed, or failed.
        let known = match self.reconcile(slot).await {
            Ok(known) => known,
            Err(e) => return Renewal::Failed(e.into()),
        };
        let now = now_ms();
        let current = known.current.clone();
        if let Some(fine) = current
            .clone()
            .filter(|c| c.is_usable(now) && !c.is_due_for_renewal(now))
        {
            return Renewal::Renewed(fine);
        }
        let backoff = match self.read_backoff(slot).await {
            Ok(backoff) => backoff,
            Err(e) => return Renewal::Failed(e.into()),
        };
        if let Some(backoff) = backoff.as_ref().filter(|b| b.is_in_force(now)) {
            return Renewal::Failed(self.backing_off(slot, backoff, now));
        }
        let previous = known.newest.clone().or_else(|| seen.newest.clone());
        match self.fetch_record(ctx, slot, previous.as_deref()).await {
            Ok(record) => Renewal::Renewed(self.save(slot, record, backoff.is_some()).await),
            Err(e) => {
                self.schedule_retry(slot, backoff.as_ref(), current.as_deref(), &e)
                    .await;
                Renewal::Failed(e)
            }
        }
    }

    /// Fetches the value and makes its record. A value WeChat hands out again past its
    /// known expiry is asked for once more, after [`STALE_RETRY`].
    async fn fetch_record(
        self: &Arc<Self>,
        ctx: &Context,
        slot: &Slot,
        previous: Option<&Record>,
    ) -> Result<Record, CacheError> {
        let (id, credential) = (&slot.id, slot.credential);
        let replacing = previous
            .is_some_and(|p| p.rejected || self.local.is_rejected(id, credential, &p.value));
        let mut asked_again = false;
        loop {
            let requested_at = now_ms();
            let fetched = self.fetch(ctx, credential, replacing).await?;
            let made =
                Record::from_fetched(fetched, previous, requested_at, now_ms(), &self.settings);
            match made {
                Ok(record) => return Ok(record),
                Err(Stale) if !asked_again => {
                    metrics::cache_event(CacheEvent::Stale);
                    log::info!(
                        "{}: WeChat handed out the value that has just expired; asking again in {} ms",
                        slot.key,
                        STALE_RETRY.as_millis()
                    );
                    asked_again = true;
                    tokio::time::sleep(STALE_RETRY).await;
                }
                Err(Stale) => return Err(WechatError::StaleValue.into()),
            }
        }
    }

    /// Stores a value just fetched, and adopts it. If the store refuses it (a value
    /// that lasts longer landed meanwhile, from a holder whose lock this one outlived),
    /// that value is adopted instead, unless WeChat refused it. If the store cannot be
    /// written, the value is served from this instance and written back when the store
    /// answers again ([`Self::reconcile`]): a fetched value is never thrown away.
    async fn save(&self, slot: &Slot, record: Record, backed_off: bool) -> Arc<Record> {
        let (id, credential) = (&slot.id, slot.credential);
        // WeChat just handed it out: if this instance had it for refused, it is not.
        self.local.confirm(id, credential, &record.value);
        let mut record = Arc::new(record);
        match self.store.put_record(&slot.key, &record, true).await {
            Ok(true) => {}
            Ok(false) => {
                let now = now_ms();
                let newer = self.read(&slot.key).await.ok().flatten().filter(|r| {
                    r.is_usable(now) && !self.local.is_rejected(id, credential, &r.value)
                });
                if let Some(newer) = newer {
                    record = newer;
                }
            }
            Err(e) => log::warn!(
                "{} was renewed but could not be stored ({e}); this instance serves it and writes it back when the store answers",
                slot.key
            ),
        }
        if backed_off {
            if let Err(e) = self.store.delete(&slot.backoff_key).await {
                log::warn!("{}: could not clear the backoff schedule: {e}", slot.key);
            }
        }
        self.local.set_backoff(id, credential, None);
        self.local.put(id, credential, record.clone());
        self.publish_life(slot);
        metrics::refresh(credential.name(), true);
        if record.is_reissued() {
            metrics::cache_event(CacheEvent::Reissued);
        }
        let now = now_ms();
        log::info!(
            "refreshed {} ({}usable for {} s)",
            slot.key,
            if record.is_reissued() {
                "re-issued by WeChat, "
            } else {
                ""
            },
            record.usable_until.saturating_sub(now) / 1000
        );
        record
    }

    /// After a failed renewal: the deployment's next attempt waits (see
    /// [`Backoff::after_failure`]). Only WeChat's failures are scheduled in the store: a
    /// store that fails has its own backoff per instance (and its outage is logged
    /// once), and a ticket whose token is backing off waits here for the token's next
    /// attempt, so that requests meanwhile fail at once rather than each starting a job.
    async fn schedule_retry(
        &self,
        slot: &Slot,
        previous: Option<&Backoff>,
        current: Option<&Record>,
        error: &CacheError,
    ) {
        if let CacheError::BackingOff {
            retry_after, cause, ..
        } = error
        {
            let until = Backoff {
                failures: 0,
                next_attempt_at: now_ms() + retry_after.as_millis() as u64,
                cause: cause.clone(),
            };
            self.local
                .set_backoff(&slot.id, slot.credential, Some(until));
            return;
        }
        if !matches!(error, CacheError::Upstream(_)) {
            return;
        }
        metrics::refresh(slot.credential.name(), false);
        if let CacheError::Upstream(e) = error {
            metrics::renewal_failure(&slot.app, slot.credential.name(), e.kind());
        }
        let now = now_ms();
        let usable_until = current.filter(|c| c.is_usable(now)).map(|c| c.usable_until);
        let backoff = Backoff::after_failure(previous, now, usable_until, error.to_string());
        log::warn!(
            "renewing {} failed ({} in a row): {error}; the next attempt is in {} ms{}",
            slot.key,
            backoff.failures,
            backoff.next_attempt_at.saturating_sub(now),
            if usable_until.is_some() {
                "; the current value stays in service"
            } else {
                ""
            }
        );
        let ttl = backoff.store_ttl(now);
        if let Err(e) = self
            .store
            .set(&slot.backoff_key, &backoff.to_json(), ttl)
            .await
        {
            log::warn!("{}: could not store the backoff schedule: {e}", slot.key);
        }
        self.local
            .set_backoff(&slot.id, slot.credential, Some(backoff));
    }

    /// The deployment's backoff in force, as this instance knows it or, failing that,
    /// as the store has it.
    async fn backoff_in_force(&self, slot: &Slot, now: u64) -> Result<Option<Backoff>, StoreError> {
        if let Some(known) = self.local.lookup(&slot.id, slot.credential, now).backoff {
            return Ok(Some(known));
        }
        Ok(self
            .read_backoff(slot)
            .await?
            .filter(|b| b.is_in_force(now)))
    }

    /// The backoff schedule in the store, which this instance then knows too.
    async fn read_backoff(&self, slot: &Slot) -> Result<Option<Backoff>, StoreError> {
        let raw = self.store.get(&slot.backoff_key).await?;
        let backoff = raw.and_then(|raw| Backoff::from_json(&raw));
        self.local
            .set_backoff(&slot.id, slot.credential, backoff.clone());
        Ok(backoff)
    }

    /// The error of a request that finds nothing usable while the deployment backs off.
    fn backing_off(&self, slot: &Slot, backoff: &Backoff, now: u64) -> CacheError {
        metrics::cache_event(CacheEvent::BackedOff);
        CacheError::BackingOff {
            credential: slot.credential.name(),
            retry_after: backoff.retry_after(now),
            cause: backoff.cause.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::reconcile::tests::{cache, slot, ID};

    /// A ticket whose renewal failed because its token backs off waits, in this
    /// instance, until the token's next attempt: requests meanwhile fail at once.
    #[tokio::test]
    async fn a_ticket_waits_for_its_tokens_next_attempt() {
        let cache = cache();
        let slot = slot(&cache);
        let token_backs_off = CacheError::BackingOff {
            credential: "access_token",
            retry_after: Duration::from_secs(3),
            cause: "WeChat is busy".into(),
        };
        let before = now_ms();
        cache
            .schedule_retry(&slot, None, None, &token_backs_off)
            .await;
        let backoff = cache.local.lookup(ID, slot.credential, now_ms()).backoff;
        let next = backoff.expect("a backoff in force").next_attempt_at;
        assert!(
            (before + 3_000..=now_ms() + 3_000).contains(&next),
            "{next} vs {before}"
        );
        assert!(
            cache.store.get(&slot.backoff_key).await.unwrap().is_none(),
            "only here"
        );
    }
}
