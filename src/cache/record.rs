//! A cached credential and the arithmetic of its lifetime.

use serde::{Deserialize, Serialize};

use crate::configuration::CacheSettings;
use crate::wechat::Fetched;

/// How long a record outlives its usable life in the store: longer than WeChat's
/// safety margin, so it covers the rest of the value's real life.
const KEEP_AFTER_EXPIRY_MS: u64 = 15 * 60 * 1000;

/// The longest life we believe WeChat states for a value. It states 7200 s; an answer
/// claiming more is broken, and trusting it as is would overflow the deadline
/// arithmetic (here, and `Instant + ttl` in the memory store) and keep the value
/// cached long after WeChat has dropped it.
pub const MAX_LIFE_SECS: u64 = 24 * 60 * 60;

/// A token or ticket as stored, with its deadlines as Unix milliseconds. The deadlines
/// travel inside the value so that one read gives both: a TTL read separately could
/// lapse between the two reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub value: String,
    /// From here on one process renews the value while everybody keeps using it.
    pub renew_at: u64,
    /// From here on the value is not used (WeChat's expiry minus a safety margin).
    pub expires_at: u64,
}

impl Record {
    /// The record for a value WeChat just handed out at `now`.
    ///
    /// When WeChat hands out the value we already had (the stable token near the end of
    /// its life, or a ticket re-issued with a fresh `expires_in`), its real age is
    /// unknown, so the earlier expiry stands and the next renewal attempt comes halfway
    /// to it. `None` when that earlier expiry has already passed: the value must not be
    /// used, whatever `expires_in` now says.
    pub fn from_fetched(
        fetched: Fetched,
        previous: Option<&Record>,
        now: u64,
        settings: &CacheSettings,
    ) -> Option<Self> {
        let life = fetched.expires_in.min(MAX_LIFE_SECS) * 1000;
        let margin = settings
            .safety_margin_secs
            .saturating_mul(1000)
            .min(life / 5);
        // `life - margin` cannot underflow (margin <= life / 5); the sum saturates so
        // that no clock reading can overflow it.
        let expires_at = now.saturating_add(life - margin);
        if let Some(previous) = previous.filter(|p| p.value == fetched.value) {
            let expires_at = expires_at.min(previous.expires_at);
            return (expires_at > now).then(|| Record {
                value: fetched.value,
                renew_at: now + (expires_at - now) / 2,
                expires_at,
            });
        }
        let ahead = settings
            .refresh_ahead_secs
            .saturating_mul(1000)
            .min((expires_at - now) / 2);
        Some(Record {
            value: fetched.value,
            renew_at: expires_at - ahead,
            expires_at,
        })
    }

    pub fn is_usable(&self, now: u64) -> bool {
        now < self.expires_at
    }

    pub fn is_due_for_renewal(&self, now: u64) -> bool {
        now >= self.renew_at
    }

    /// Milliseconds until the record is no longer usable.
    pub fn ttl_ms(&self, now: u64) -> u64 {
        self.expires_at.saturating_sub(now).max(1)
    }

    /// Milliseconds the store keeps the record: past its usable life, so that a value
    /// WeChat hands out again can still be recognised (see [`Record::from_fetched`]).
    pub fn store_ttl_ms(&self, now: u64) -> u64 {
        self.ttl_ms(now).saturating_add(KEEP_AFTER_EXPIRY_MS)
    }

    pub fn to_json(&self) -> String {
        // A struct of strings and integers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(raw: &str) -> Option<Self> {
        serde_json::from_str(raw).ok()
    }

    /// Whether this record should replace `current` (see `Store::put_record`).
    pub fn supersedes(&self, current: &Record) -> bool {
        (self.expires_at, self.renew_at) > (current.expires_at, current.renew_at)
    }
}

/// Now, as Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped defaults: 60 s margin, renewal 900 s ahead.
    fn settings() -> CacheSettings {
        CacheSettings {
            safety_margin_secs: 60,
            refresh_ahead_secs: 900,
            lock_ttl_ms: 5_000,
            lock_wait_ms: 5_000,
            local_recheck_ms: 1_000,
        }
    }

    fn record(value: &str, expires_in: u64, previous: Option<&Record>, now: u64) -> Option<Record> {
        let fetched = Fetched {
            value: value.into(),
            expires_in,
        };
        Record::from_fetched(fetched, previous, now, &settings())
    }

    #[test]
    fn full_window_keeps_margin_and_renews_ahead() {
        let r = record("T", 7200, None, 0).unwrap();
        assert_eq!((r.renew_at, r.expires_at), (6_240_000, 7_140_000));
    }

    #[test]
    fn short_windows_scale_margins_down() {
        let r = record("T", 10, None, 0).unwrap();
        assert_eq!((r.renew_at, r.expires_at), (4_000, 8_000));
    }

    #[test]
    fn a_reissued_value_keeps_its_first_expiry() {
        let first = record("T", 7200, None, 0).unwrap();
        let again = record("T", 7200, Some(&first), 6_240_000).unwrap();
        assert_eq!(again.expires_at, first.expires_at);
        assert_eq!(
            again.renew_at, 6_690_000,
            "next attempt halfway to the expiry"
        );
        assert!(again.supersedes(&first));
        let other = record("U", 7200, Some(&first), 6_240_000).unwrap();
        assert_eq!(other.expires_at, 6_240_000 + 7_140_000);
    }

    #[test]
    fn a_value_reissued_after_its_expiry_is_refused() {
        let first = record("T", 7200, None, 0).unwrap();
        assert_eq!(record("T", 7200, Some(&first), first.expires_at), None);
        assert!(record("U", 7200, Some(&first), first.expires_at).is_some());
    }

    /// Found by tests/properties.rs: an absurd `expires_in` (in a broken answer)
    /// overflowed the deadline arithmetic.
    #[test]
    fn absurd_lifetimes_are_capped_not_overflowed() {
        let now = 1_795_608_316_000;
        for expires_in in [5_905_308_935_784_686, u64::MAX] {
            let r = record("T", expires_in, None, now).unwrap();
            let capped = record("T", MAX_LIFE_SECS, None, now).unwrap();
            assert_eq!(r, capped);
            assert!(r.renew_at <= r.expires_at);
            assert!(r.store_ttl_ms(now) < 2 * MAX_LIFE_SECS * 1000);
        }
        let r = record("T", u64::MAX, None, u64::MAX - 1).unwrap();
        assert!(r.renew_at <= r.expires_at);
    }

    #[test]
    fn the_store_keeps_a_record_past_its_usable_life() {
        let r = record("T", 7200, None, 0).unwrap();
        assert_eq!(r.ttl_ms(0), 7_140_000);
        assert!(r.store_ttl_ms(0) > 7_200_000);
    }

    #[test]
    fn older_records_never_supersede_newer_ones() {
        let old = record("A", 7200, None, 0).unwrap();
        let new = record("B", 7200, None, 1_000).unwrap();
        assert!(new.supersedes(&old));
        assert!(!old.supersedes(&new));
        assert!(!new.supersedes(&new));
    }
}
