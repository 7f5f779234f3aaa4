//! WeChat's daily limits, counted across the deployment in the store: forced
//! refreshes of the stable token (20 a day, at least 30 s apart), and the deployment's
//! own cap on invalidations asked for by callers (`cache.invalidations_per_day`),
//! which keeps one misbehaving caller from spending the account's token quota.
//!
//! WeChat resets its daily counters at midnight China time (UTC+8), whatever the
//! server's time zone: so are these.

use std::time::Duration;

use super::redis::StoreError;
use super::{Credential, CredentialCache};

/// WeChat allows a forced stable-token refresh at most this often...
pub(crate) const FORCE_REFRESH_SPACING: Duration = Duration::from_secs(30);
/// ...and this many times a (China) day.
pub(crate) const FORCE_REFRESH_DAILY_LIMIT: u64 = 20;

/// Invalidations of one credential on callers' requests are at least this far apart,
/// deployment-wide (WeChat allows a forced stable-token refresh every 30 s).
pub const INVALIDATE_SPACING: Duration = FORCE_REFRESH_SPACING;

const DAY_MS: u64 = 24 * 3600 * 1000;
/// China Standard Time is UTC+8, with no daylight saving.
const CHINA_OFFSET_MS: u64 = 8 * 3600 * 1000;

/// A calendar day in China time: its number (days since 1970-01-01 there) and the
/// time left until the next one begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChinaDay {
    pub number: u64,
    pub ends_in: Duration,
}

impl ChinaDay {
    /// The China day of `now` (Unix ms).
    pub fn of(now: u64) -> Self {
        let local = now.saturating_add(CHINA_OFFSET_MS);
        Self {
            number: local / DAY_MS,
            ends_in: Duration::from_millis(DAY_MS - local % DAY_MS),
        }
    }

    /// How long a counter of this day is kept: to its end, and a little longer so that
    /// an instance whose clock lags a little still counts into it.
    fn counter_ttl(self) -> Duration {
        self.ends_in + Duration::from_secs(3600)
    }
}

/// What a caller-requested invalidation may do, by the deployment's budget.
pub(crate) enum Allowance {
    Granted,
    /// `cache.invalidations_per_day` is spent: the next China day begins in `retry_after`.
    DailyLimit {
        retry_after: Duration,
    },
}

impl CredentialCache {
    /// Whether a forced refresh of the stable token of `id` is within WeChat's limits
    /// now; counts it if so. The day's count is exported under the app's `name`, for the
    /// alert on a budget nearly spent.
    pub(super) async fn may_force_refresh(
        &self,
        id: &str,
        name: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        let gate = self.keys.force_refresh_gate(id);
        if !self.store.set_nx(&gate, "1", FORCE_REFRESH_SPACING).await? {
            log::warn!(
                "the stable token of {id} was force-refreshed less than {} s ago; asking without force_refresh",
                FORCE_REFRESH_SPACING.as_secs()
            );
            return Ok(false);
        }
        let day = ChinaDay::of(now);
        let key = self.keys.force_refresh_count(id, day.number);
        let count = self.store.incr_with_ttl(&key, day.counter_ttl()).await?;
        // Exact: a China day ends on a whole second.
        let day_end = (now + day.ends_in.as_millis() as u64) / 1000;
        crate::metrics::forced_refreshes(name, count.min(FORCE_REFRESH_DAILY_LIMIT), day_end);
        if count > FORCE_REFRESH_DAILY_LIMIT {
            log::error!("the stable token of {id}: the {FORCE_REFRESH_DAILY_LIMIT} forced refreshes of today (China time) are used up; asking without force_refresh");
            return Ok(false);
        }
        Ok(true)
    }

    /// Counts an invalidation of `credential` of `id` against today's cap.
    pub(super) async fn count_invalidation(
        &self,
        id: &str,
        credential: Credential,
        now: u64,
    ) -> Result<Allowance, StoreError> {
        let day = ChinaDay::of(now);
        let key = self.keys.invalidate_count(id, credential, day.number);
        let count = self.store.incr_with_ttl(&key, day.counter_ttl()).await?;
        if count > self.settings.invalidations_per_day {
            return Ok(Allowance::DailyLimit {
                retry_after: Duration::from_secs(day.ends_in.as_secs().max(1)),
            });
        }
        Ok(Allowance::Granted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-30 15:59:59.999 UTC is 23:59:59.999 in China; a millisecond later the
    /// next China day begins, although it is still the same day in UTC.
    #[test]
    fn china_days_begin_at_midnight_utc_plus_8() {
        let before = 1_796_054_399_999;
        let day = ChinaDay::of(before);
        let next = ChinaDay::of(before + 1);
        assert_eq!(next.number, day.number + 1);
        assert_eq!(day.ends_in, Duration::from_millis(1));
        assert_eq!(next.ends_in, Duration::from_millis(DAY_MS));
        assert_eq!(
            ChinaDay::of(before + 1 + 8 * 3600 * 1000).number,
            next.number
        );
        // 1970-01-01 00:00 UTC was 08:00 in China, on its day 0.
        assert_eq!(ChinaDay::of(0).number, 0);
        assert_eq!(ChinaDay::of(0).ends_in, Duration::from_secs(16 * 3600));
    }

    /// A day's counter lives at least to the day's end: one that expired earlier would
    /// let the day's last hours start counting from zero again.
    #[test]
    fn a_days_counter_outlives_the_day() {
        for now in [1_796_054_399_999, 1_796_054_400_000, 1_796_100_000_000] {
            let day = ChinaDay::of(now);
            assert!(day.counter_ttl() > day.ends_in, "{day:?}");
            assert!(day.counter_ttl() <= day.ends_in + Duration::from_secs(2 * 3600));
        }
    }
}
