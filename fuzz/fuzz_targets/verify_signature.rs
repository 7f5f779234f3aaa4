//! `verify_server_signature` with the input split at newlines into token, timestamp,
//! nonce and signature: it must never panic, must accept the signature WeChat's rule
//! gives, and must accept no other (up to the case of the hex digits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sha1::{Digest, Sha1};
use wx_jssdk::wechat::signature::verify_server_signature;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let mut next = || parts.next().unwrap_or("");
    let (token, timestamp, nonce, signature) = (next(), next(), next(), next());

    let mut sorted = [token, timestamp, nonce];
    sorted.sort_unstable();
    let right = hex::encode(Sha1::digest(sorted.concat().as_bytes()));

    assert!(verify_server_signature(token, timestamp, nonce, &right));
    assert_eq!(
        verify_server_signature(token, timestamp, nonce, signature),
        signature.eq_ignore_ascii_case(&right)
    );
});
