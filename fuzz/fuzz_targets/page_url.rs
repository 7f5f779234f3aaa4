//! `page_url` on arbitrary text: it must never panic, and a URL it accepts must be
//! one we can sign as is: the input up to `#`, bounded, http(s), no control characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wx_jssdk::wechat::signature::{page_url, MAX_URL_LEN};

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    if let Ok(url) = page_url(&raw) {
        let url = url.as_str();
        assert_eq!(url, raw.split('#').next().unwrap());
        assert!(url.len() <= MAX_URL_LEN);
        let scheme = url.get(..8).unwrap_or(url).to_ascii_lowercase();
        assert!(scheme.starts_with("http://") || scheme.starts_with("https://"));
        assert!(!url.chars().any(|c| c.is_whitespace() || c.is_control()));
    }
});
