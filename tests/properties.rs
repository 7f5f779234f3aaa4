//! Property tests of the pure rules everything else rests on: the two WeChat
//! signatures, the page-URL rules and the lifetime arithmetic of cached credentials.
//! The unit tests pin known answers; these check the rules hold for inputs nobody
//! thought to write down (unicode, `#`, huge numbers). The fuzz targets in `fuzz/`
//! cover the same functions with unstructured bytes.
//!
//! 256 cases per property (proptest's default; `PROPTEST_CASES` overrides it).

use proptest::prelude::*;
use sha1::{Digest, Sha1};
use std::time::Duration;

use wx_jssdk::cache::{Record, MAX_LIFE_SECS};
use wx_jssdk::configuration::CacheSettings;
use wx_jssdk::wechat::signature::{
    page_url, sign_card, sign_url, verify_server_signature, MAX_URL_LEN,
};
use wx_jssdk::wechat::Fetched;

/// The reference: SHA-1 of one formatted string, lowercase hex. Deliberately naive,
/// so that it cannot share a mistake with the incremental hashing of the product.
fn sha1_hex(input: &str) -> String {
    hex::encode(Sha1::digest(input.as_bytes()))
}

/// WeChat's `wx.config` rule, straight from its documentation.
fn reference_sign_url(ticket: &str, nonce: &str, timestamp: u64, url: &str) -> String {
    sha1_hex(&format!(
        "jsapi_ticket={ticket}&noncestr={nonce}&timestamp={timestamp}&url={url}"
    ))
}

/// WeChat's server-URL rule: `[token, timestamp, nonce]` sorted, concatenated, SHA-1.
fn reference_server_signature(token: &str, timestamp: &str, nonce: &str) -> String {
    let mut parts = [token, timestamp, nonce];
    parts.sort();
    sha1_hex(&parts.concat())
}

/// URLs as pages have them: schemes in any case, unicode and percent-escapes in paths,
/// query strings, fragments (SPA routes with their own `?`), and plain garbage.
fn page_like_url() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            "(?i:https?)",
            "[a-z0-9.-]{1,20}(:[0-9]{1,5})?",
            "(/[a-zA-Z0-9._~%你好-]{0,12}){0,4}",
            "(\\?[a-z0-9=&%+é]{0,30})?",
            "(#[/a-z0-9?=&# ]{0,20})?",
        )
            .prop_map(|(s, h, p, q, f)| format!("{s}://{h}{p}{q}{f}")),
        "(?i:https?):[/\\\\]{0,3}[a-z.]{0,10}[#?/ ]?.{0,10}",
        any::<String>(),
    ]
}

fn settings() -> impl Strategy<Value = CacheSettings> {
    (0..=100_000u64, 0..=100_000u64).prop_map(|(margin, ahead)| CacheSettings {
        safety_margin: Duration::from_secs(margin),
        refresh_ahead: Duration::from_secs(ahead),
        lock_ttl: Duration::from_millis(5_000),
        lock_wait: Duration::from_millis(5_000),
        local_recheck: Duration::from_millis(1_000),
        invalidations_per_day: 100,
    })
}

/// Lifetimes WeChat states (7200 s), edge cases, and anything a broken answer holds.
fn expires_in() -> impl Strategy<Value = u64> {
    prop_oneof![Just(7200u64), 0..=20u64, 0..=1_000_000u64, any::<u64>()]
}

/// Unix milliseconds: today's, and anything up to the end of `u64`.
fn now() -> impl Strategy<Value = u64> {
    prop_oneof![1_700_000_000_000..=2_000_000_000_000u64, any::<u64>()]
}

proptest! {
    #[test]
    fn sign_url_matches_the_documented_rule(
        ticket in any::<String>(),
        nonce in "[a-zA-Z0-9]{0,32}|.{0,16}",
        timestamp in any::<u64>(),
        url in page_like_url(),
    ) {
        prop_assert_eq!(
            sign_url(&ticket, &nonce, timestamp, &url),
            reference_sign_url(&ticket, &nonce, timestamp, &url)
        );
    }

    #[test]
    fn server_signature_accepts_exactly_the_right_one(
        token in "[a-zA-Z0-9]{3,32}|.{0,8}",
        timestamp in "[0-9]{10}|.{0,8}",
        nonce in "[0-9]{1,10}|.{0,8}",
        other in "[0-9a-f]{40}",
        position in 0..40usize,
        replacement in "[0-9a-zA-Z]",
    ) {
        let right = reference_server_signature(&token, &timestamp, &nonce);
        prop_assert!(verify_server_signature(&token, &timestamp, &nonce, &right));
        // WeChat sends lowercase; uppercase has always been accepted too.
        prop_assert!(verify_server_signature(&token, &timestamp, &nonce, &right.to_uppercase()));
        if other != right {
            prop_assert!(!verify_server_signature(&token, &timestamp, &nonce, &other));
        }
        let mut changed = right.clone().into_bytes();
        changed[position] = replacement.as_bytes()[0];
        let changed = String::from_utf8(changed).unwrap();
        if !changed.eq_ignore_ascii_case(&right) {
            prop_assert!(!verify_server_signature(&token, &timestamp, &nonce, &changed));
        }
        // Truncated or extended: a prefix match is no match.
        prop_assert!(!verify_server_signature(&token, &timestamp, &nonce, &right[..position]));
        let longer = format!("{right}{replacement}");
        prop_assert!(!verify_server_signature(&token, &timestamp, &nonce, &longer));
    }

    #[test]
    fn page_url_accepts_only_signable_prefixes(raw in page_like_url()) {
        if let Ok(url) = page_url(&raw) {
            let url = url.as_str();
            prop_assert!(raw.starts_with(url), "not a prefix of the input");
            prop_assert!(!url.contains('#'));
            prop_assert!(url.len() <= MAX_URL_LEN);
            let scheme = url.get(..8).unwrap_or(url).to_ascii_lowercase();
            prop_assert!(
                scheme.starts_with("http://") || scheme.starts_with("https://"),
                "{url:?} does not start with http:// or https://"
            );
            prop_assert!(!url.chars().any(|c| c.is_whitespace() || c.is_control()));
            // The fragment alone is cut: what is left is the input up to the first `#`.
            prop_assert_eq!(url, raw.split('#').next().unwrap());
        }
    }

    #[test]
    fn page_url_never_panics_on_long_input(
        raw in ("(?i:https?)://a.com/", ".{0,5}", 4080..4110usize)
            .prop_map(|(s, tail, n)| format!("{s}{}{tail}", "x".repeat(n))),
    ) {
        let accepted = page_url(&raw);
        prop_assert!(accepted.is_err() || raw.len() <= MAX_URL_LEN);
    }

    #[test]
    fn card_signature_ignores_the_order_of_values(
        values in prop::collection::vec(".{0,12}", 0..8),
        seed in any::<u64>(),
    ) {
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let mut shuffled = refs.clone();
        // A deterministic shuffle from the seed: proptest shrinks the seed too.
        let n = shuffled.len();
        for i in (1..n).rev() {
            let j = (seed.rotate_left(i as u32) % (i as u64 + 1)) as usize;
            shuffled.swap(i, j);
        }
        prop_assert_eq!(sign_card(&refs), sign_card(&shuffled));
        let mut sorted = refs.clone();
        sorted.sort();
        prop_assert_eq!(sign_card(&refs), sha1_hex(&sorted.concat()));
    }

    #[test]
    fn records_keep_their_deadlines_in_order_and_never_outlive_a_value(
        value in "[A-C]",
        lifetime in expires_in(),
        previous in prop::option::of(("[A-C]", now(), any::<u64>(), any::<u64>(), any::<bool>())),
        requested_at in now(),
        latency in 0..=10_000u64,
        settings in settings(),
    ) {
        let previous = previous.map(|(value, a, b, c, rejected)| {
            let mut deadlines = [a, b, c];
            deadlines.sort_unstable();
            Record {
                value,
                fetched_at: deadlines[0] / 2,
                renew_at: deadlines[0],
                usable_until: deadlines[1],
                expires_at: deadlines[2],
                rejected,
            }
        });
        let answered_at = requested_at.saturating_add(latency);
        let fetched = Fetched { value: value.clone(), expires_in: lifetime };
        let made = Record::from_fetched(fetched, previous.as_ref(), requested_at, answered_at, &settings);
        let stated_expiry = requested_at.saturating_add(lifetime.min(MAX_LIFE_SECS) * 1000);
        let again = previous.as_ref().filter(|p| p.value == value);
        match (made, again) {
            (Ok(record), again) => {
                prop_assert!(
                    record.renew_at <= record.usable_until && record.usable_until <= record.expires_at,
                    "{record:?}"
                );
                prop_assert_eq!(&record.value, &value);
                prop_assert!(!record.rejected, "WeChat handed it out: it is no tombstone");
                prop_assert!(record.expires_at <= stated_expiry, "{record:?} outlives what WeChat stated");
                match again {
                    Some(previous) => {
                        prop_assert!(record.expires_at <= previous.expires_at, "{record:?} outlives {previous:?}");
                        prop_assert!(record.expires_at > answered_at, "{record:?} is already dead");
                        prop_assert!(record.renew_at > answered_at, "asked again at once: {record:?}");
                        prop_assert_eq!(record.fetched_at, previous.fetched_at);
                    }
                    None => prop_assert!(record.renew_at >= requested_at.min(record.expires_at), "{record:?}"),
                }
            }
            // Stale only when the value handed out again has reached its earlier expiry.
            (Err(_), Some(previous)) => prop_assert!(stated_expiry.min(previous.expires_at) <= answered_at),
            (Err(_), None) => prop_assert!(false, "a new value is always recorded"),
        }
    }
}
