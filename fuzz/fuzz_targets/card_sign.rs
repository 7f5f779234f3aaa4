//! `sign_card` on values split at newlines: it must never panic, and the signature
//! must not depend on the order in which the route lists the values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wx_jssdk::wechat::signature::sign_card;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let values: Vec<&str> = text.split('\n').collect();
    let signature = sign_card(&values);
    assert_eq!(signature.len(), 40);

    let mut reversed = values.clone();
    reversed.reverse();
    assert_eq!(sign_card(&reversed), signature);
    let mut rotated = values.clone();
    rotated.rotate_left(values.len() / 2);
    assert_eq!(sign_card(&rotated), signature);
});
