//! `wx-jssdk --dev`, the newcomer's first command: works with nothing configured.

use std::process::Stdio;

use crate::helpers::{wechat_signature, RunningBinary, Service};

#[actix_web::test]
async fn dev_mode_signs_and_verifies_with_nothing_configured() {
    let dev = RunningBinary::start(&["--dev"], &[], Stdio::null()).await;
    let signed = dev.sign("https://example.com/page").await;
    assert_eq!(signed.status(), 200);
    let config: serde_json::Value = signed.json().await.unwrap();
    assert_eq!(config["url"], "https://example.com/page");
    assert_eq!(config["signature"].as_str().map(str::len), Some(40));

    let signature = wechat_signature("dev-token", "1", "2");
    let query = [
        ("signature", signature.as_str()),
        ("timestamp", "1"),
        ("nonce", "2"),
        ("echostr", "ok"),
    ];
    let verified = dev.verify("/wxJssdk", &query).await;
    assert_eq!(verified.status(), 200);
    assert_eq!(verified.text().await.unwrap(), "ok");
}
