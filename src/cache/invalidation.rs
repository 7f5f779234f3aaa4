//! Invalidation on a caller's word: another backend (or an operator) says WeChat refused
//! a value this service handed out or holds. It is dropped only if it is still the
//! current value, at most once per [`INVALIDATE_SPACING`] per credential of an app and
//! `cache.invalidations_per_day` times a (China) day across the deployment, and
//! replaced the way a refusal met by the service itself is ([`CredentialCache::reject`]).

use std::sync::Arc;
use std::time::Duration;

use super::budget::{Allowance, INVALIDATE_SPACING};
use super::jobs::Outcome;
use super::record::Record;
use super::{CacheError, Context, Credential, CredentialCache, Slot};
use crate::clock::now_ms;

/// What [`CredentialCache::invalidate`] did.
#[derive(Debug)]
pub(crate) enum Invalidation {
    /// The value was current: it was dropped and this is its replacement (the same
    /// value when WeChat hands it out again: WeChat Work, or a stable token past its
    /// forced-refresh budget).
    Replaced(Arc<Record>),
    /// The value was not (or no longer) current: nothing was dropped; this is current.
    NotCurrent(Arc<Record>),
    /// The value is current, but the credential was invalidated less than
    /// [`INVALIDATE_SPACING`] ago.
    TooSoon { retry_after: Duration },
    /// The value is current, but today's invalidations are spent.
    DailyLimit { retry_after: Duration },
}

impl CredentialCache {
    /// `value` of the app's `credential` was refused by WeChat, a caller says: it is
    /// replaced if it is still the current one; otherwise the current one is answered,
    /// so a caller that held a stale value catches up without spending quota. Looked
    /// up, spaced and dropped by the app's cache id (a WeChat Work app's is
    /// `CORPID/AGENTID`: every application of a corp has its own token).
    pub(crate) async fn invalidate(
        self: &Arc<Self>,
        ctx: &Context,
        credential: Credential,
        value: &str,
    ) -> Result<Invalidation, CacheError> {
        let slot = self.slot(ctx, credential);
        let current = self.current(ctx, &slot).await?;
        if current.value != value {
            return Ok(Invalidation::NotCurrent(current));
        }
        let now = now_ms();
        let gate = self.keys.invalidate_gate(&slot.id, credential);
        let reopens_at = now + INVALIDATE_SPACING.as_millis() as u64;
        let spacing = INVALIDATE_SPACING;
        if !self
            .store
            .set_nx(&gate, &reopens_at.to_string(), spacing)
            .await?
        {
            return self.invalidation_refused(ctx, &slot, &gate, value).await;
        }
        let allowance = self.count_invalidation(&slot.id, credential, now).await?;
        if let Allowance::DailyLimit { retry_after } = allowance {
            log::warn!(
                "{}: an invalidation was refused: today's {} (cache.invalidations_per_day) are spent",
                slot.key,
                self.settings.invalidations_per_day
            );
            return Ok(Invalidation::DailyLimit { retry_after });
        }
        log::warn!(
            "{} is invalidated at a caller's request; replacing it",
            slot.key
        );
        self.reject(ctx, credential, &current).await?;
        Ok(Invalidation::Replaced(self.get(ctx, credential).await?))
    }

    /// The current value as the store has it (this instance's copy may lag it by up to
    /// `local_recheck_ms`), or a new one when there is none.
    async fn current(self: &Arc<Self>, ctx: &Context, slot: &Slot) -> Outcome {
        match self.reconcile(slot).await?.current {
            Some(current) => Ok(current),
            None => self.get(ctx, slot.credential).await,
        }
    }

    /// Another invalidation of the credential happened within [`INVALIDATE_SPACING`].
    /// If it replaced `value` (or is replacing it right now: the store holds its
    /// tombstone), the caller gets the replacement, so that callers sharing one refused
    /// value all learn the new one; if `value` is still current, it has to wait.
    async fn invalidation_refused(
        self: &Arc<Self>,
        ctx: &Context,
        slot: &Slot,
        gate: &str,
        value: &str,
    ) -> Result<Invalidation, CacheError> {
        match self.reconcile(slot).await?.current {
            Some(current) if current.value != value => Ok(Invalidation::NotCurrent(current)),
            Some(_) => {
                let reopens_at = self.store.get(gate).await?.and_then(|v| v.parse().ok());
                let left_ms = reopens_at.unwrap_or(0u64).saturating_sub(now_ms());
                let retry_after = Duration::from_secs(left_ms.div_ceil(1000).max(1));
                Ok(Invalidation::TooSoon { retry_after })
            }
            None => Ok(Invalidation::NotCurrent(
                self.get(ctx, slot.credential).await?,
            )),
        }
    }
}
