//! A failing dependency fails every request: its log lines are throttled, per kind of
//! failure, so that an outage is a few lines rather than one per request. One
//! mechanism for every throttled line: [`Throttle`], and [`warn_throttled`] for the
//! common case (a warning at most every 10 s per code, saying how many were left out).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often [`warn_throttled`] logs lines of one code.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Lets through one line per key per `every`, and counts the ones it holds back.
pub(crate) struct Throttle {
    every: Duration,
    last: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(lines held back since the last one let through)` when a line of `key` may
    /// be logged now; `None` when it is held back.
    pub(crate) fn allow(&self, key: &'static str) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.get_mut(key) {
            Some((at, held_back)) if at.elapsed() < self.every => {
                *held_back += 1;
                None
            }
            Some((at, held_back)) => {
                let held = std::mem::take(held_back);
                *at = Instant::now();
                Some(held)
            }
            None => {
                last.insert(key, (Instant::now(), 0));
                Some(0)
            }
        }
    }

    /// Forgets `key`: its next line is let through at once.
    pub(crate) fn reset(&self, key: &'static str) {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Logs `message` as a warning unless a line with the same `code` was logged less than
/// 10 s ago; the next line says how many were left out meanwhile.
pub(crate) fn warn_throttled(code: &'static str, message: impl FnOnce() -> String) {
    static THROTTLE: std::sync::OnceLock<Throttle> = std::sync::OnceLock::new();
    let throttle = THROTTLE.get_or_init(|| Throttle::new(WARN_EVERY));
    match throttle.allow(code) {
        Some(0) => log::warn!("{}", message()),
        Some(left_out) => log::warn!("{} ({left_out} more like it since)", message()),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_period_and_the_count_of_the_rest() {
        let throttle = Throttle::new(Duration::from_millis(50));
        assert_eq!(throttle.allow("a"), Some(0));
        assert_eq!(throttle.allow("a"), None);
        assert_eq!(throttle.allow("a"), None);
        assert_eq!(throttle.allow("b"), Some(0), "keys are apart");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(throttle.allow("a"), Some(2));
        throttle.reset("a");
        assert_eq!(throttle.allow("a"), Some(0));
    }
}
