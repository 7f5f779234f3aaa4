//! The deployment's schedule of renewal attempts after a failure, one per credential,
//! kept in the store so that N instances make one attempt, not N.
//!
//! After a failed renewal the next attempt waits 1 s, then 2, 4 ... up to 60 s while
//! a usable value is still being served, and never past the moment that value stops
//! being usable: a value is not left to lapse without an attempt at its end. While no
//! usable value exists, the wait is at most 5 s, so the deployment recovers within
//! seconds of WeChat coming back. Requests that find no value meanwhile fail at once
//! with `503` and a `Retry-After` that says when the next attempt is, instead of each
//! starting a call. A success clears the schedule.
//!
//! Only the holder of the refresh lock writes it (after its attempt failed) or clears
//! it (after its attempt succeeded); everybody reads it before trying the lock, and the
//! holder reads it again under the lock, so an attempt that just failed elsewhere is
//! not repeated at once.

use std::time::Duration;

use serde::{Deserialize, Serialize};

const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait while a usable value is served.
const MAX_WAIT_WITH_VALUE: Duration = Duration::from_secs(60);
/// The longest wait while nothing usable exists.
const MAX_WAIT_WITHOUT_VALUE: Duration = Duration::from_secs(5);
/// How long the schedule outlives its next attempt in the store: failures this far
/// apart are not counted as a series.
const FORGOTTEN_AFTER: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Backoff {
    /// Failed attempts in a row.
    pub(crate) failures: u32,
    /// No attempt before this (Unix ms).
    pub(crate) next_attempt_at: u64,
    /// What the last attempt met (no secret, token or ticket: error messages never hold
    /// one), told to the requests that fail meanwhile.
    pub(crate) cause: String,
}

impl Backoff {
    /// The schedule after an attempt failed at `now` with `cause`. `usable_until` is
    /// the deadline of the value still served, if any.
    pub(crate) fn after_failure(
        previous: Option<&Backoff>,
        now: u64,
        usable_until: Option<u64>,
        cause: String,
    ) -> Self {
        let failures = previous.map_or(0, |p| p.failures).saturating_add(1);
        let usable_until = usable_until.filter(|&until| until > now);
        let most = match usable_until {
            Some(_) => MAX_WAIT_WITH_VALUE,
            None => MAX_WAIT_WITHOUT_VALUE,
        };
        let wait = FIRST_WAIT
            .saturating_mul(1 << (failures - 1).min(16))
            .min(most);
        let next = now.saturating_add(wait.as_millis() as u64);
        Self {
            failures,
            next_attempt_at: usable_until.map_or(next, |until| next.min(until)),
            cause,
        }
    }

    pub(crate) fn is_in_force(&self, now: u64) -> bool {
        now < self.next_attempt_at
    }

    /// The time to the next attempt, in whole seconds rounded up (`Retry-After`).
    pub(crate) fn retry_after(&self, now: u64) -> Duration {
        let left_ms = self.next_attempt_at.saturating_sub(now);
        Duration::from_secs(left_ms.div_ceil(1000).max(1))
    }

    /// How long the store keeps the schedule.
    pub(crate) fn store_ttl(&self, now: u64) -> Duration {
        Duration::from_millis(self.next_attempt_at.saturating_sub(now)) + FORGOTTEN_AFTER
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub(crate) fn from_json(raw: &str) -> Option<Self> {
        serde_json::from_str(raw).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The waits of `n` failures in a row, each at the previous next attempt.
    fn waits(n: usize, usable_until: Option<u64>) -> Vec<u64> {
        let mut schedule: Option<Backoff> = None;
        let mut now = 0;
        let mut waits = Vec::new();
        for _ in 0..n {
            let next = Backoff::after_failure(schedule.as_ref(), now, usable_until, "busy".into());
            waits.push(next.next_attempt_at - now);
            now = next.next_attempt_at;
            schedule = Some(next);
        }
        waits
    }

    #[test]
    fn waits_double_up_to_a_minute_while_a_value_is_served() {
        assert_eq!(
            waits(9, Some(u64::MAX)),
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]
        );
    }

    #[test]
    fn waits_are_at_most_5_s_while_nothing_usable_exists() {
        assert_eq!(waits(5, None), [1_000, 2_000, 4_000, 5_000, 5_000]);
        assert_eq!(waits(5, Some(0)), [1_000, 2_000, 4_000, 5_000, 5_000]);
    }

    #[test]
    fn no_wait_runs_past_the_end_of_the_usable_value() {
        let failed = Backoff::after_failure(None, 0, Some(300), "busy".into());
        assert_eq!(failed.next_attempt_at, 300);
        let later = Backoff::after_failure(Some(&failed), 300, Some(300), "busy".into());
        assert_eq!(
            later.next_attempt_at,
            300 + 2_000,
            "then the 5 s cap applies"
        );
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        let b = Backoff::after_failure(None, 0, None, "busy".into());
        assert!(b.is_in_force(999) && !b.is_in_force(1_000));
        assert_eq!(b.retry_after(0), Duration::from_secs(1));
        assert_eq!(b.retry_after(999), Duration::from_secs(1));
        assert_eq!(b.retry_after(5_000), Duration::from_secs(1));
        let long = Backoff {
            next_attempt_at: 4_001,
            ..b.clone()
        };
        assert_eq!(long.retry_after(0), Duration::from_secs(5));
        assert_eq!(Backoff::from_json(&b.to_json()), Some(b));
    }
}
