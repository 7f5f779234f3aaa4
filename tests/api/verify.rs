//! WeChat's server-URL verification and message pushes.

use crate::helpers::{error_code, spawn_app_with, wechat_signature, Options, SERVER_TOKEN};

fn signed_query(token: &str) -> Vec<(&'static str, String)> {
    let (timestamp, nonce) = ("1414587457", "nonce123");
    vec![
        ("signature", wechat_signature(token, timestamp, nonce)),
        ("timestamp", timestamp.into()),
        ("nonce", nonce.into()),
        ("echostr", "echo-5837".into()),
    ]
}

async fn app() -> crate::helpers::TestApp {
    spawn_app_with(Options {
        with_redis: false,
        extra_apps: vec![("shop", "wxshop000000000001")],
        ..Options::default()
    })
    .await
}

#[actix_web::test]
async fn a_correctly_signed_check_gets_echostr_back_as_plain_text() {
    let app = app().await;
    for path in [
        "/wxJssdk",
        "/v1/apps/default/verify",
        "/v1/apps/shop/verify",
    ] {
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .query(&signed_query(SERVER_TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        assert_eq!(response.text().await.unwrap(), "echo-5837");
    }
}

#[actix_web::test]
async fn a_wrong_signature_is_refused() {
    let app = app().await;
    let response = app
        .client
        .get(format!("{}/wxJssdk", app.address))
        .query(&signed_query("another-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 401).await, "invalid_signature");
}

#[actix_web::test]
async fn every_missing_parameter_is_named() {
    let app = app().await;
    for missing in ["signature", "timestamp", "nonce", "echostr"] {
        let query: Vec<_> = signed_query(SERVER_TOKEN)
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        let response = app
            .client
            .get(format!("{}/wxJssdk", app.address))
            .query(&query)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "without {missing}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "missing_parameter");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(missing),
            "{body}"
        );
    }
}

#[actix_web::test]
async fn message_pushes_are_acknowledged_only_when_signed() {
    let app = app().await;
    let push = |token: &str| {
        let query: Vec<_> = signed_query(token)
            .into_iter()
            .filter(|(k, _)| *k != "echostr")
            .collect();
        app.client
            .post(format!("{}/wxJssdk", app.address))
            .query(&query)
            .header("content-type", "text/xml")
            .body("<xml><MsgType><![CDATA[event]]></MsgType></xml>")
            .send()
    };
    let response = push(SERVER_TOKEN).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "success");
    assert_eq!(
        error_code(push("forged").await.unwrap(), 401).await,
        "invalid_signature"
    );
}

#[actix_web::test]
async fn an_unknown_app_is_a_json_404() {
    let app = app().await;
    let response = app
        .client
        .get(format!("{}/v1/apps/nope/verify", app.address))
        .query(&signed_query(SERVER_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 404).await, "unknown_app");
}
