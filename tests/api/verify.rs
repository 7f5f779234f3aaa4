//! WeChat's server-URL verification and message pushes.

use crate::helpers::{
    error_code, spawn_app_with, wechat_signature, Options, Service, SERVER_TOKEN,
};

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
        let response = app.verify(path, &signed_query(SERVER_TOKEN)).await;
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
    let response = app.verify("/wxJssdk", &signed_query("another-token")).await;
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
        let response = app.verify("/wxJssdk", &query).await;
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
    let push = async |token: &str| {
        let query: Vec<_> = signed_query(token)
            .into_iter()
            .filter(|(k, _)| *k != "echostr")
            .collect();
        let body = "<xml><MsgType><![CDATA[event]]></MsgType></xml>";
        app.push("/wxJssdk", &query, body).await
    };
    let response = push(SERVER_TOKEN).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "success");
    assert_eq!(
        error_code(push("forged").await, 401).await,
        "invalid_signature"
    );
}

#[actix_web::test]
async fn an_unknown_app_is_a_json_404() {
    let app = app().await;
    let response = app
        .verify("/v1/apps/nope/verify", &signed_query(SERVER_TOKEN))
        .await;
    assert_eq!(error_code(response, 404).await, "unknown_app");
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A query WeChat would sign with the right token, at `timestamp`.
fn signed_at(timestamp: &str) -> Vec<(&'static str, String)> {
    let nonce = "nonce123";
    vec![
        (
            "signature",
            wechat_signature(SERVER_TOKEN, timestamp, nonce),
        ),
        ("timestamp", timestamp.into()),
        ("nonce", nonce.into()),
        ("echostr", "echo-5837".into()),
    ]
}

#[actix_web::test]
async fn with_a_replay_window_old_future_and_non_numeric_timestamps_are_stale() {
    const WINDOW: u64 = 60;
    let app = spawn_app_with(
        Options {
            with_redis: false,
            ..Options::default()
        }
        .set("wechat.verify_max_age_secs", WINDOW),
    )
    .await;
    let check = async |timestamp: String| app.verify("/wxJssdk", &signed_at(&timestamp)).await;
    let push = async |timestamp: String| {
        let query: Vec<_> = signed_at(&timestamp)
            .into_iter()
            .filter(|(k, _)| *k != "echostr")
            .collect();
        app.push("/v1/apps/default/verify", &query, "<xml/>").await
    };
    // Inside the window, a few seconds from either edge (the clock ticks meanwhile;
    // the exact bounds are the unit test's).
    let now = now_secs();
    for fresh in [now, now - (WINDOW - 5), now + (WINDOW - 5)] {
        let response = check(fresh.to_string()).await;
        assert_eq!(response.status(), 200, "{fresh} vs {now}");
        assert_eq!(push(fresh.to_string()).await.status(), 200);
    }
    // Correctly signed, but outside: refused before the signature counts.
    for stale in [
        (now - (WINDOW + 5)).to_string(),
        (now + WINDOW + 5).to_string(),
        "1414587457".to_string(),
        "soon".to_string(),
        format!("{now}.0"),
        String::new(),
    ] {
        let response = check(stale.clone()).await;
        assert_eq!(
            error_code(response, 401).await,
            "stale_request",
            "{stale:?}"
        );
        let response = push(stale.clone()).await;
        assert_eq!(
            error_code(response, 401).await,
            "stale_request",
            "{stale:?}"
        );
    }
    // A fresh timestamp does not make a wrong signature right.
    let mut forged = signed_at(&now.to_string());
    forged[0].1 = wechat_signature("another-token", &now.to_string(), "nonce123");
    let response = app.verify("/wxJssdk", &forged).await;
    assert_eq!(error_code(response, 401).await, "invalid_signature");
}

#[actix_web::test]
async fn without_a_replay_window_any_timestamp_with_a_good_signature_passes() {
    let app = app().await;
    for timestamp in ["1414587457", "0", "not-a-number", "99999999999"] {
        let response = app.verify("/wxJssdk", &signed_at(timestamp)).await;
        assert_eq!(response.status(), 200, "{timestamp}");
    }
}
