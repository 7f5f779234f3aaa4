//! Logs store outages once, not once per request: the first failure, a reminder every
//! minute while it lasts, and the recovery.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::store::StoreError;

const REMINDER_EVERY: Duration = Duration::from_secs(60);

struct Down {
    since: Instant,
    last_logged: Instant,
    failures: u64,
}

#[derive(Default)]
pub struct OutageLog {
    down: Mutex<Option<Down>>,
}

impl OutageLog {
    pub fn failed(&self, error: &StoreError) {
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match down.as_mut() {
            None => {
                log::error!("credential store unreachable: {error}; instances keep serving their copies while they last");
                *down = Some(Down {
                    since: now,
                    last_logged: now,
                    failures: 1,
                });
            }
            Some(d) => {
                d.failures += 1;
                if now.duration_since(d.last_logged) >= REMINDER_EVERY {
                    log::warn!(
                        "credential store still unreachable after {} s ({} failed operations): {error}",
                        now.duration_since(d.since).as_secs(),
                        d.failures
                    );
                    d.last_logged = now;
                }
            }
        }
    }

    pub fn succeeded(&self) {
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
