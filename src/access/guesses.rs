//! Guessing an admin key costs time: a client whose authentications fail
//! [`MAX_FAILURES`] times within a [`WINDOW`] is refused (429) until that window is
//! over, before its key is even compared.
//!
//! Counted per instance, in memory: behind a load balancer spreading a client over N
//! instances the bound is N times as many guesses, which against a key of 16 or more
//! random characters changes nothing; sharing the count through Redis would make
//! every refusal depend on the store. A request without `Authorization` is not a
//! guess and is not counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed authentications a client may make within one [`WINDOW`].
pub(crate) const MAX_FAILURES: u32 = 10;

/// The window failures are counted in: it opens at a client's first failure.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// Clients tracked at once: beyond it, windows that are over are forgotten first and,
/// if every one is still open, new clients share one window, so that many addresses
/// cannot grow the map without bound.
const MAX_CLIENTS: usize = 100_000;

/// The failed authentications of each client in its current window.
#[derive(Default)]
pub(crate) struct FailedAuthentications {
    windows: Mutex<HashMap<Option<IpAddr>, Window>>,
}

struct Window {
    opened: Instant,
    failures: u32,
    /// Whether this window's first refusal has been logged.
    logged: bool,
}

impl FailedAuthentications {
    /// `Err(retry after)` when `client` has used up its failures in the current window.
    pub(crate) fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let key = Some(client);
        let key = if windows.contains_key(&key) {
            key
        } else {
            None
        };
        let Some(window) = windows.get_mut(&key).filter(|w| w.failures >= MAX_FAILURES) else {
            return Ok(());
        };
        let closes = window.opened + WINDOW;
        if now >= closes {
            return Ok(());
        }
        if !std::mem::replace(&mut window.logged, true) {
            log::warn!(
                "{client}: {MAX_FAILURES} failed admin authentications within {} s; refusing its \
                 admin requests for {} s",
                WINDOW.as_secs(),
                (closes - now).as_secs().max(1)
            );
        }
        Err(closes - now)
    }

    /// Counts a failed authentication of `client`.
    pub(crate) fn record(&self, client: IpAddr, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = Some(client);
        if !windows.contains_key(&key) && windows.len() >= MAX_CLIENTS {
            windows.retain(|_, w| now < w.opened + WINDOW);
            if windows.len() >= MAX_CLIENTS {
                key = None;
            }
        }
        let window = windows.entry(key).or_insert(Window {
            opened: now,
            failures: 0,
            logged: false,
        });
        if now >= window.opened + WINDOW {
            *window = Window {
                opened: now,
                failures: 0,
                logged: false,
            };
        }
        window.failures += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eleventh_guess_within_a_minute_waits_for_the_minute_to_end() {
        let guesses = FailedAuthentications::default();
        let (client, other) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let start = Instant::now();
        for i in 0..MAX_FAILURES {
            let at = start + Duration::from_secs(u64::from(i));
            assert_eq!(guesses.check(client, at), Ok(()));
            guesses.record(client, at);
        }
        let at = start + Duration::from_secs(20);
        assert_eq!(guesses.check(client, at), Err(Duration::from_secs(40)));
        assert_eq!(
            guesses.check(other, at),
            Ok(()),
            "another client is not affected"
        );
        assert_eq!(guesses.check(client, start + WINDOW), Ok(()));
        // The next failure opens a new window.
        guesses.record(client, start + WINDOW);
        assert_eq!(guesses.check(client, start + WINDOW), Ok(()));
    }

    #[test]
    fn failures_spread_over_more_than_a_minute_are_never_refused() {
        let guesses = FailedAuthentications::default();
        let client = "192.0.2.1".parse().unwrap();
        let start = Instant::now();
        for i in 0..30 {
            let at = start + Duration::from_secs(7 * i);
            assert_eq!(guesses.check(client, at), Ok(()), "guess {i}");
            guesses.record(client, at);
        }
    }
}
