//! `wx-jssdk --dev`, the newcomer's first command: works with nothing configured.

use std::process::Stdio;

use crate::helpers::{wechat_signature, RunningBinary};

#[actix_web::test]
async fn dev_mode_signs_and_verifies_with_nothing_configured() {
    let dev = RunningBinary::start(&["--dev"], &[], Stdio::null()).await;
    let client = reqwest::Client::new();
    let signed = client
        .get(format!("{}/wxJssdk/getJssdk", dev.address))
        .query(&[("url", "https://example.com/page")])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 200);
    let config: serde_json::Value = signed.json().await.unwrap();
    assert_eq!(config["url"], "https://example.com/page");
    assert_eq!(config["signature"].as_str().map(str::len), Some(40));

    let verified = client
        .get(format!("{}/wxJssdk", dev.address))
        .query(&[
            (
                "signature",
                wechat_signature("dev-token", "1", "2").as_str(),
            ),
            ("timestamp", "1"),
            ("nonce", "2"),
            ("echostr", "ok"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);
    assert_eq!(verified.text().await.unwrap(), "ok");
}
