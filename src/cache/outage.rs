//! Logs store outages once, not once per request: the first failure, a reminder every
//! minute while it lasts (through the shared [`Throttle`]), and the recovery.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::redis::StoreError;
use crate::log_throttle::Throttle;

const REMINDER_EVERY: Duration = Duration::from_secs(60);
const KEY: &str = "store_outage";

struct Down {
    since: Instant,
    failures: u64,
}

pub(crate) struct OutageLog {
    down: Mutex<Option<Down>>,
    reminders: Throttle,
}

impl Default for OutageLog {
    fn default() -> Self {
        Self {
            down: Mutex::new(None),
            reminders: Throttle::new(REMINDER_EVERY),
        }
    }
}

impl OutageLog {
    pub(crate) fn failed(&self, error: &StoreError) {
        crate::metrics::store_read(false);
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        match down.as_mut() {
            None => {
                log::error!("credential store unreachable: {error}; instances keep serving their copies while they last");
                self.reminders.reset(KEY);
                self.reminders.allow(KEY);
                *down = Some(Down {
                    since: Instant::now(),
                    failures: 1,
                });
            }
            Some(d) => {
                d.failures += 1;
                if self.reminders.allow(KEY).is_some() {
                    log::warn!(
                        "credential store still unreachable after {} s ({} failed operations): {error}",
                        d.since.elapsed().as_secs(),
                        d.failures
                    );
                }
            }
        }
    }

    pub(crate) fn succeeded(&self) {
        crate::metrics::store_read(true);
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = down.take() {
            log::info!(
                "credential store reachable again after {} s ({} failed operations)",
                d.since.elapsed().as_secs(),
                d.failures
            );
        }
    }
}
