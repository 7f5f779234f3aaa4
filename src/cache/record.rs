//! A cached credential and the arithmetic of its lifetime.

use serde::{Deserialize, Serialize};

use crate::configuration::CacheSettings;
use crate::wechat::Fetched;

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
    /// to it.
    pub fn from_fetched(
        fetched: Fetched,
        previous: Option<&Record>,
        now: u64,
        settings: &CacheSettings,
    ) -> Self {
        let life = fetched.expires_in.saturating_mul(1000);
        let margin = (settings.safety_margin_secs * 1000).min(life / 5);
        let expires_at = now + life - margin;
        match previous.filter(|p| p.value == fetched.value) {
            Some(previous) => {
                let expires_at = expires_at.min(previous.expires_at);
                Record {
                    value: fetched.value,
                    renew_at: now + expires_at.saturating_sub(now) / 2,
                    expires_at,
                }
            }
            None => {
                let ahead = (settings.refresh_ahead_secs * 1000).min((expires_at - now) / 4);
                Record {
                    value: fetched.value,
                    renew_at: expires_at - ahead,
                    expires_at,
                }
            }
        }
    }

    pub fn is_usable(&self, now: u64) -> bool {
        now < self.expires_at
    }

    pub fn is_due_for_renewal(&self, now: u64) -> bool {
        now >= self.renew_at
    }

    /// Milliseconds the store should keep the record: until it is no longer usable.
    pub fn ttl_ms(&self, now: u64) -> u64 {
        self.expires_at.saturating_sub(now).max(1)
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

    fn settings() -> CacheSettings {
        CacheSettings {
            safety_margin_secs: 300,
            refresh_ahead_secs: 300,
            lock_ttl_ms: 10_000,
            lock_wait_ms: 5_000,
        }
    }

    fn fetched(value: &str, expires_in: u64) -> Fetched {
        Fetched {
            value: value.into(),
            expires_in,
        }
    }

    #[test]
    fn full_window_keeps_margin_and_renews_ahead() {
        let r = Record::from_fetched(fetched("T", 7200), None, 0, &settings());
        assert_eq!(r.expires_at, 6_900_000);
        assert_eq!(r.renew_at, 6_600_000);
    }

    #[test]
    fn short_windows_scale_margins_down() {
        let r = Record::from_fetched(fetched("T", 10), None, 0, &settings());
        assert_eq!(r.expires_at, 8_000);
        assert_eq!(r.renew_at, 6_000);
    }

    #[test]
    fn a_reissued_value_keeps_its_first_expiry() {
        let first = Record::from_fetched(fetched("T", 7200), None, 0, &settings());
        let again = Record::from_fetched(fetched("T", 7200), Some(&first), 6_600_000, &settings());
        assert_eq!(again.expires_at, first.expires_at);
        assert_eq!(again.renew_at, 6_750_000);
        assert!(again.supersedes(&first));
        let other = Record::from_fetched(fetched("U", 7200), Some(&first), 6_600_000, &settings());
        assert_eq!(other.expires_at, 6_600_000 + 6_900_000);
    }

    #[test]
    fn older_records_never_supersede_newer_ones() {
        let old = Record::from_fetched(fetched("A", 7200), None, 0, &settings());
        let new = Record::from_fetched(fetched("B", 7200), None, 1_000, &settings());
        assert!(new.supersedes(&old));
        assert!(!old.supersedes(&new));
        assert!(!new.supersedes(&new));
    }
}
