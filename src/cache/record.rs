//! A cached credential and the arithmetic of its lifetime.
//!
//! A value WeChat hands out lives `expires_in` seconds. The record keeps three
//! deadlines, as Unix milliseconds, so that one read of the store gives the value and
//! everything known about its life:
//!
//! ```text
//!  fetched_at          renew_at            usable_until       expires_at
//!      |---- fresh ---------|---- due ----------|---- margin ------|---- expired
//!                        one instance         served only when     never served
//!                        renews, all serve    nothing newer can
//!                        the value            be had
//! ```
//!
//! A *fresh* value keeps a safety margin before WeChat's expiry, so that a page has
//! time to call `wx.config` with it. A value WeChat hands out *again* (a re-issue: the
//! same value with a fresh `expires_in`) keeps its first expiry, since that is when
//! WeChat drops it; there is no other value to serve before then, so it is served to
//! the end and the next attempt comes at its expiry.

use serde::{Deserialize, Serialize};

use crate::configuration::CacheSettings;
use crate::wechat::Fetched;

/// How long a record outlives its expiry in the store: long enough that a value WeChat
/// hands out again after a lapse is recognised, and its first expiry kept.
const KEEP_AFTER_EXPIRY_MS: u64 = 15 * 60 * 1000;

/// The longest life we believe WeChat states for a value. It states 7200 s; an answer
/// claiming more is broken, and trusting it as is would overflow the deadline
/// arithmetic (here, and `Instant + ttl` in the memory store) and keep the value
/// cached long after WeChat has dropped it.
pub const MAX_LIFE_SECS: u64 = 24 * 60 * 60;

/// How much later than the known expiry WeChat may state the expiry of a value it
/// hands out again before that counts as a re-issue with a fresh `expires_in` rather
/// than the value's remaining life (WeChat states whole seconds, and requests take
/// time).
const REISSUE_TOLERANCE_MS: u64 = 1_000;

/// A token or ticket as stored, with its deadlines as Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub value: String,
    /// When the request that first brought the value was sent (as far as this
    /// deployment knows). Only read to check that instances' clocks agree.
    #[serde(default)]
    pub fetched_at: u64,
    /// From here on one instance renews the value while every instance serves it.
    pub renew_at: u64,
    /// From here on (the safety margin) the value is served only when no newer one can
    /// be had. Equal to `expires_at` for a value WeChat re-issued.
    #[serde(default)]
    pub usable_until: u64,
    /// WeChat's expiry: from here on the value is never served.
    pub expires_at: u64,
    /// WeChat refused the value (errcode 40001, 40014, 42001): a tombstone, kept where
    /// the value was so that no instance that still holds it puts it back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rejected: bool,
}

/// A value WeChat handed out again after the expiry it was known to have: it is about
/// to die (or dead), whatever the answer says, and must not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale;

impl Record {
    /// The record of a value WeChat handed out in answer to a request sent at
    /// `requested_at` and answered by `now`. `previous` is the newest record known for
    /// this credential, expired or not (the store keeps records a while past expiry).
    ///
    /// The value's life is counted from `requested_at`: WeChat minted it after that,
    /// so the value never outlives the record.
    pub fn from_fetched(
        fetched: Fetched,
        previous: Option<&Record>,
        requested_at: u64,
        now: u64,
        settings: &CacheSettings,
    ) -> Result<Self, Stale> {
        let life = fetched.expires_in.min(MAX_LIFE_SECS) * 1000;
        let stated_expiry = requested_at.saturating_add(life);
        match previous.filter(|p| p.value == fetched.value) {
            Some(previous) => previous.handed_out_again(stated_expiry, now),
            None => Ok(Self::fresh(fetched.value, requested_at, life, settings)),
        }
    }

    /// A value seen for the first time: usable until the safety margin, renewed ahead
    /// of it. Both scale down for short lives (tests, or a stable token with little
    /// left): the margin is at most a fifth of the life, the renewal at most halfway.
    fn fresh(value: String, requested_at: u64, life: u64, settings: &CacheSettings) -> Self {
        let expires_at = requested_at.saturating_add(life);
        let margin = millis(settings.safety_margin).min(life / 5);
        // Neither subtraction can underflow: margin <= life, ahead <= usable life / 2.
        let usable_until = expires_at - margin;
        let ahead =
            millis(settings.refresh_ahead).min((usable_until - requested_at.min(usable_until)) / 2);
        Self {
            value,
            fetched_at: requested_at,
            renew_at: usable_until - ahead,
            usable_until,
            expires_at,
            rejected: false,
        }
    }

    /// The record after WeChat handed out this record's value again, stating an expiry
    /// of `stated_expiry`. The earlier expiry stands (a re-issued value dies at its
    /// first expiry; the stable token states its remaining life, so both agree).
    ///
    /// - Stated much later than known (a fresh `expires_in`): WeChat re-issues the value
    ///   until it expires and has nothing newer before then. Asking again earlier only
    ///   spends quota, and there is nothing else to serve in the margin: the value is
    ///   served to its expiry, where the next attempt comes.
    /// - Stated as known (its remaining life, like the stable token, which WeChat
    ///   rotates about 5 minutes before the end): the next attempt comes at the
    ///   margin, where a successor is expected; asked again inside the margin, the
    ///   value is the last there is and is served to its expiry.
    fn handed_out_again(&self, stated_expiry: u64, now: u64) -> Result<Self, Stale> {
        let expires_at = stated_expiry.min(self.expires_at);
        if expires_at <= now {
            return Err(Stale);
        }
        let fresh_expires_in = stated_expiry > self.expires_at.saturating_add(REISSUE_TOLERANCE_MS);
        let usable_until = if fresh_expires_in || now >= self.usable_until {
            expires_at
        } else {
            self.usable_until.min(expires_at)
        };
        Ok(Self {
            value: self.value.clone(),
            fetched_at: self.fetched_at,
            renew_at: usable_until,
            usable_until,
            expires_at,
            rejected: false,
        })
    }

    /// This record as a tombstone: WeChat refused its value.
    pub fn rejected(&self) -> Self {
        Self {
            rejected: true,
            ..self.clone()
        }
    }

    /// Served without a second thought: before the safety margin.
    pub(crate) fn is_usable(&self, now: u64) -> bool {
        !self.rejected && now < self.usable_until
    }

    /// May be served at all: before WeChat's expiry (in the margin only as a last
    /// resort, when nothing newer can be had).
    pub(crate) fn is_servable(&self, now: u64) -> bool {
        !self.rejected && now < self.expires_at
    }

    pub(crate) fn is_due_for_renewal(&self, now: u64) -> bool {
        now >= self.renew_at
    }

    /// WeChat handed this value out again: it is served to its expiry.
    pub(crate) fn is_reissued(&self) -> bool {
        self.usable_until == self.expires_at
    }

    /// Whole seconds the value may still be used, as callers are told (`expires_in`):
    /// WeChat's lifetime less the safety margin, at least 1.
    pub(crate) fn usable_secs(&self, now: u64) -> u64 {
        self.usable_until.saturating_sub(now).max(1000) / 1000
    }

    /// Milliseconds until the record may no longer be served.
    pub(crate) fn ttl_ms(&self, now: u64) -> u64 {
        self.expires_at.saturating_sub(now).max(1)
    }

    /// Milliseconds the store keeps the record: past its expiry, so that a value WeChat
    /// hands out again can still be recognised (see [`Record::from_fetched`]).
    pub(crate) fn store_ttl_ms(&self, now: u64) -> u64 {
        self.ttl_ms(now).saturating_add(KEEP_AFTER_EXPIRY_MS)
    }

    pub fn to_json(&self) -> String {
        // A struct of strings, integers and a bool always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a stored record. A record written before `usable_until` existed had its
    /// margin built into `expires_at`: that deadline stands for both.
    pub fn from_json(raw: &str) -> Option<Self> {
        let mut record: Self = serde_json::from_str(raw).ok()?;
        if record.usable_until == 0 {
            record.usable_until = record.expires_at;
        }
        Some(record)
    }

    /// Whether this record is newer than `other`. Of two records of the same value, the
    /// later `renew_at` is the newer knowledge: a value handed out again is renewed only
    /// once it is due, and its record keeps (or tightens) the expiry, so a later write
    /// can carry an earlier `expires_at` (WeChat states whole seconds). Of two values,
    /// the one that lasts longer is newer: a slow writer never puts an older value
    /// over a newer one.
    pub(crate) fn supersedes(&self, other: &Record) -> bool {
        if self.value == other.value {
            return self.renew_at > other.renew_at;
        }
        (self.expires_at, self.renew_at) > (other.expires_at, other.renew_at)
    }

    /// Whether this record should replace `current` in the store (the rule of
    /// `Store::put_record`, which the Redis script repeats). It must be newer
    /// ([`Record::supersedes`]); a tombstone gives way only to a value that outlives it,
    /// whatever its `renew_at`, so that an instance's copy of a refused value is never
    /// put back, or to the very value it buries when WeChat just handed that out again
    /// (`confirmed`).
    pub(crate) fn replaces(&self, current: &Record, confirmed: bool) -> bool {
        if current.rejected {
            return self.expires_at > current.expires_at
                || (confirmed && self.value == current.value);
        }
        self.supersedes(current)
    }

    /// When the value's writer thought it was first fetched, if that is further ahead
    /// of `now` than clocks may disagree: the deadlines of this record come from a
    /// clock that runs ahead of this instance's (by at least the returned ms).
    pub(crate) fn clock_ahead_by(&self, now: u64) -> Option<u64> {
        const TOLERANCE_MS: u64 = 2_000;
        let ahead = self.fetched_at.saturating_sub(now);
        (ahead > TOLERANCE_MS).then_some(ahead)
    }
}

/// `duration` in whole milliseconds, the unit records count in (saturating).
fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped defaults: 60 s margin, renewal 900 s ahead.
    fn settings() -> CacheSettings {
        CacheSettings::shipped()
    }

    /// The record of `value` fetched with a request sent at `requested_at` and
    /// answered at once.
    fn record(
        value: &str,
        expires_in: u64,
        previous: Option<&Record>,
        requested_at: u64,
    ) -> Result<Record, Stale> {
        let fetched = Fetched {
            value: value.into(),
            expires_in,
        };
        Record::from_fetched(fetched, previous, requested_at, requested_at, &settings())
    }

    #[test]
    fn a_fresh_value_keeps_a_margin_and_is_renewed_ahead() {
        let r = record("T", 7200, None, 0).unwrap();
        assert_eq!(
            (r.renew_at, r.usable_until, r.expires_at),
            (6_240_000, 7_140_000, 7_200_000)
        );
        assert!(!r.is_reissued());
        assert_eq!(r.fetched_at, 0);
    }

    #[test]
    fn short_lives_scale_the_margin_and_the_renewal_down() {
        let r = record("T", 10, None, 0).unwrap();
        assert_eq!(
            (r.renew_at, r.usable_until, r.expires_at),
            (4_000, 8_000, 10_000)
        );
    }

    #[test]
    fn the_life_counts_from_the_request_not_the_answer() {
        let fetched = Fetched {
            value: "T".into(),
            expires_in: 7200,
        };
        let slow = Record::from_fetched(fetched, None, 1_000, 4_000, &settings()).unwrap();
        assert_eq!(slow.expires_at, 7_201_000);
    }

    /// A ticket WeChat hands out again with a fresh expires_in dies at its first
    /// expiry: it is served to the end, and asked for again only then.
    #[test]
    fn a_value_reissued_with_a_fresh_expires_in_is_served_to_its_first_expiry() {
        let first = record("T", 7200, None, 0).unwrap();
        let again = record("T", 7200, Some(&first), 6_240_000).unwrap();
        assert_eq!(again.expires_at, first.expires_at);
        assert_eq!(
            again.usable_until, first.expires_at,
            "served through the margin"
        );
        assert_eq!(
            again.renew_at, first.expires_at,
            "no call before the expiry"
        );
        assert!(again.is_reissued());
        assert!(again.supersedes(&first));
        assert_eq!(again.fetched_at, first.fetched_at);
    }

    /// The stable token states its remaining life: it is asked for again at the margin,
    /// where WeChat will have rotated it.
    #[test]
    fn a_value_handed_out_again_with_its_remaining_life_is_asked_for_at_the_margin() {
        let first = record("T", 7200, None, 0).unwrap();
        let again = record("T", 960, Some(&first), 6_240_000).unwrap();
        assert_eq!(
            (again.renew_at, again.usable_until, again.expires_at),
            (7_140_000, 7_140_000, 7_200_000)
        );
        assert!(!again.is_reissued());
        // Still the same inside the margin: the last value there is, to its end.
        let last = record("T", 60, Some(&again), 7_140_000).unwrap();
        assert_eq!((last.renew_at, last.usable_until), (7_200_000, 7_200_000));
    }

    /// WeChat states whole seconds and a request takes time: a stated expiry up to a
    /// second later than the known one is the value's remaining life, not a re-issue.
    #[test]
    fn a_stated_expiry_within_a_second_of_the_known_one_is_the_remaining_life() {
        let first = record("T", 7200, None, 0).unwrap();
        let within = record("T", 7200 - 6_000, Some(&first), 6_001_000).unwrap();
        assert!(!within.is_reissued(), "{within:?}");
        let beyond = record("T", 7200 - 6_000, Some(&first), 6_001_001).unwrap();
        assert!(beyond.is_reissued(), "{beyond:?}");
    }

    #[test]
    fn a_value_handed_out_again_at_or_after_its_expiry_is_stale() {
        let first = record("T", 7200, None, 0).unwrap();
        assert_eq!(
            record("T", 7200, Some(&first), first.expires_at),
            Err(Stale)
        );
        assert_eq!(
            record("T", 7200, Some(&first), first.expires_at + 5),
            Err(Stale)
        );
        assert!(record("U", 7200, Some(&first), first.expires_at).is_ok());
    }

    #[test]
    fn a_value_handed_out_again_after_a_refusal_is_no_longer_a_tombstone() {
        let first = record("T", 7200, None, 0).unwrap().rejected();
        let again = record("T", 7200, Some(&first), 1_000).unwrap();
        assert!(!again.rejected);
        assert!(again.is_usable(1_000));
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
            assert!(r.renew_at <= r.usable_until && r.usable_until <= r.expires_at);
            assert!(r.store_ttl_ms(now) < 2 * MAX_LIFE_SECS * 1000);
        }
        let r = record("T", u64::MAX, None, u64::MAX - 1).unwrap();
        assert!(r.renew_at <= r.usable_until && r.usable_until <= r.expires_at);
    }

    /// Kept a quarter of an hour past its expiry, so that a value WeChat hands out
    /// again after a lapse (an outage, a stale retry) still keeps its first expiry.
    #[test]
    fn the_store_keeps_a_record_past_its_expiry() {
        let r = record("T", 7200, None, 0).unwrap();
        assert_eq!(r.ttl_ms(0), 7_200_000);
        assert_eq!(r.store_ttl_ms(0), 7_200_000 + 15 * 60 * 1000);
    }

    #[test]
    fn usable_servable_and_due_follow_the_deadlines() {
        let r = record("T", 10, None, 0).unwrap();
        assert!(r.is_usable(7_999) && !r.is_usable(8_000));
        assert!(r.is_servable(9_999) && !r.is_servable(10_000));
        assert!(!r.is_due_for_renewal(3_999) && r.is_due_for_renewal(4_000));
        let tombstone = r.rejected();
        assert!(!tombstone.is_usable(0) && !tombstone.is_servable(0));
    }

    /// The stable token states its remaining life in whole seconds: handed out again,
    /// its record may expire a little earlier than the first, and is still the newer.
    #[test]
    fn a_value_handed_out_again_supersedes_its_earlier_record_even_expiring_sooner() {
        let first = record("T", 8, None, 0).unwrap();
        let again = record("T", 3, Some(&first), 4_100).unwrap();
        assert!(again.expires_at < first.expires_at);
        assert!(again.supersedes(&first), "{again:?} over {first:?}");
        assert!(
            !first.supersedes(&again),
            "a stale copy never goes back over it"
        );
        assert!(again.replaces(&first, false));
    }

    #[test]
    fn older_records_never_supersede_newer_ones() {
        let old = record("A", 7200, None, 0).unwrap();
        let new = record("B", 7200, None, 1_000).unwrap();
        assert!(new.supersedes(&old));
        assert!(!old.supersedes(&new));
        assert!(!new.supersedes(&new));
    }

    /// A copy of a refused value never replaces its tombstone, even one renewed later;
    /// WeChat handing the value out again does.
    #[test]
    fn only_a_longer_lasting_or_confirmed_value_replaces_a_tombstone() {
        let refused = record("A", 7200, None, 0).unwrap();
        let tombstone = refused.rejected();
        let later_renewal = Record {
            renew_at: refused.renew_at + 1,
            ..refused.clone()
        };
        assert!(later_renewal.supersedes(&refused));
        assert!(!later_renewal.replaces(&tombstone, false));
        assert!(later_renewal.replaces(&tombstone, true));
        let other = record("B", 7200, None, 1_000).unwrap();
        assert!(other.replaces(&tombstone, false));
        let older = record("C", 7200, None, 0).unwrap();
        assert!(
            !older.replaces(&tombstone, true),
            "confirms only the same value"
        );
        assert!(
            !refused.replaces(&refused, true),
            "no longer-lasting: no write"
        );
    }

    #[test]
    fn records_written_before_usable_until_existed_are_read_conservatively() {
        let old = r#"{"value":"T","renew_at":5,"expires_at":9}"#;
        let r = Record::from_json(old).unwrap();
        assert_eq!((r.usable_until, r.expires_at, r.fetched_at), (9, 9, 0));
        assert!(!r.rejected);
        assert_eq!(Record::from_json(&r.to_json()), Some(r));
    }

    #[test]
    fn a_record_fetched_in_this_instances_future_reveals_a_clock_ahead() {
        let r = record("T", 7200, None, 100_000).unwrap();
        assert_eq!(r.clock_ahead_by(100_000), None);
        assert_eq!(r.clock_ahead_by(99_000), None, "within the tolerance");
        assert_eq!(r.clock_ahead_by(90_000), Some(10_000));
    }
}
