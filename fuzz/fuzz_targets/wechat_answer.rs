//! WeChat's JSON answer parser (`parse_answer`), on any bytes a server or a proxy in
//! between could send, and the cache record made from what it accepts: neither may
//! panic (no overflow on absurd `expires_in`), and an accepted value is usable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wx_jssdk::cache::Record;
use wx_jssdk::configuration::CacheSettings;
use wx_jssdk::wechat::client::{parse_answer, AnswerValue};

/// A fixed "now" (2026), so that a crash replays exactly.
const NOW_MS: u64 = 1_795_608_316_000;

fuzz_target!(|data: &[u8]| {
    let settings = CacheSettings::shipped();
    for wanted in [AnswerValue::AccessToken, AnswerValue::Ticket] {
        match parse_answer(data, wanted) {
            Ok(fetched) => {
                assert!(!fetched.value.is_empty() && fetched.expires_in > 0);
                let first = Record::from_fetched(fetched.clone(), None, NOW_MS, NOW_MS, &settings)
                    .expect("a new value is always recorded");
                assert!(first.renew_at <= first.usable_until && first.usable_until <= first.expires_at);
                // WeChat handing the same value out again, later.
                let later = first.renew_at;
                if let Ok(again) = Record::from_fetched(fetched, Some(&first), later, later, &settings) {
                    assert!(again.expires_at <= first.expires_at);
                    assert!(again.renew_at <= again.usable_until && again.usable_until <= again.expires_at);
                }
            }
            // The message of every error is logged: it must render.
            Err(e) => drop(e.to_string()),
        }
    }
});
