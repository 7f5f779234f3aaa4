//! The wall clock, in the one unit the service stores and compares times in: Unix
//! milliseconds. Records shared through Redis carry such times, so every instance must
//! read the same clock the same way (and the machines must agree on it: NTP).

/// Now, as Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Now, as Unix seconds: the `timestamp` of signatures and of WeChat's requests.
pub(crate) fn now_secs() -> u64 {
    now_ms() / 1000
}
