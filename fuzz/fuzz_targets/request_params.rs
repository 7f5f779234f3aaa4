//! The signing and verification routes' parameter parsing (query string, JSON body,
//! form body) through `parse_request_params`, the pure part the handlers use. The
//! first byte picks the Content-Type; the rest is `query \n body`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wx_jssdk::routes::parse_request_params;

const CONTENT_TYPES: [&str; 5] = [
    "application/json",
    "application/x-www-form-urlencoded",
    "application/json; charset=utf-8",
    "text/plain",
    "",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[selector as usize % CONTENT_TYPES.len()];
    let (query, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    // actix hands the query string over as &str.
    let query = String::from_utf8_lossy(query);
    parse_request_params(&query, content_type, body);
});
