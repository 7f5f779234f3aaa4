//! `wx.config` signing: inputs, answers and errors.

use reqwest::Method;
use wx_sandbox::Endpoint;

use crate::helpers::{
    error_code, fault, spawn_app, spawn_app_with, Options, Service, APPID, SECRET,
    WECHAT_TIMEOUT_MS,
};

#[actix_web::test]
async fn the_config_has_every_field_and_a_signature_that_verifies() {
    let app = spawn_app().await;
    let config = app
        .sign_and_check("https://page.example.com/a?b=1#/route")
        .await;
    assert_eq!(config["appId"], APPID);
    assert_eq!(config["url"], "https://page.example.com/a?b=1");
    let nonce = config["nonceStr"].as_str().unwrap();
    assert!(nonce.len() >= 16 && nonce.chars().all(|c| c.is_ascii_alphanumeric()));
    let timestamp = config["timestamp"]
        .as_u64()
        .expect("timestamp in integer seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        timestamp.abs_diff(now) < 60,
        "timestamp {timestamp} is not in seconds"
    );
}

#[actix_web::test]
async fn the_url_may_come_as_json_or_form_on_post_and_on_the_v1_route() {
    let app = spawn_app().await;
    let url = "http://page.example.com/x?y=%E4%BD%A0";
    let sent = std::time::Instant::now();
    let json = app
        .request(Method::POST, "/wxJssdk/getJssdk")
        .json(&serde_json::json!({ "url": url }))
        .send()
        .await
        .unwrap();
    let form = app
        .request(Method::POST, "/v1/apps/default/jssdk/config")
        .form(&[("url", url)])
        .send()
        .await
        .unwrap();
    for response in [json, form] {
        assert_eq!(response.status(), 200);
        let config: serde_json::Value = response.json().await.unwrap();
        assert_eq!(config["url"], url);
        assert!(
            app.signed_with_a_valid_ticket(&config, url, sent),
            "{config}"
        );
    }
}

#[actix_web::test]
async fn nonces_differ_and_nothing_secret_is_answered() {
    let app = spawn_app().await;
    let a = app.sign_and_check("https://page.example.com/").await;
    let b = app.sign_and_check("https://page.example.com/").await;
    assert_ne!(a["nonceStr"], b["nonceStr"]);
    let ticket = app.sandbox.current_ticket(APPID).unwrap();
    for body in [a.to_string(), b.to_string()] {
        assert!(
            !body.contains(&ticket) && !body.contains(SECRET) && !body.contains("sbx-"),
            "{body}"
        );
    }
}

#[actix_web::test]
async fn bad_urls_and_bodies_get_clear_json_errors() {
    let app = spawn_app().await;
    let endpoint = "/wxJssdk/getJssdk";
    let long = format!("https://a.example.com/{}", "x".repeat(5000));
    for (url, code) in [
        ("", "invalid_url"),
        ("/relative/path", "invalid_url"),
        ("javascript:alert(1)", "invalid_url"),
        ("data:text/html,hi", "invalid_url"),
        ("https://a.example.com/\r\nSet-Cookie: x=y", "invalid_url"),
        (long.as_str(), "invalid_url"),
    ] {
        let response = app.sign(url).await;
        assert_eq!(error_code(response, 400).await, code, "url {url:.40}");
    }
    let no_url = app.get(endpoint).await;
    assert_eq!(error_code(no_url, 400).await, "missing_url");
    let empty_json = app
        .request(Method::POST, endpoint)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(empty_json, 400).await, "missing_url");
    let post = |content_type: &'static str, body: &'static str| {
        app.request(Method::POST, endpoint)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    for (content_type, body) in [
        ("application/json", "{not json"),
        ("application/json", r#"{"url": 42}"#),
        ("text/plain", "https://a.example.com/"),
    ] {
        let response = post(content_type, body).await.unwrap();
        assert_eq!(
            error_code(response, 400).await,
            "invalid_body",
            "{content_type} {body}"
        );
    }
    let huge = app
        .request(Method::POST, endpoint)
        .header("content-type", "application/json")
        .body(vec![b' '; 100 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(huge, 413).await, "body_too_large");
    let unknown = app.get("/v1/apps/nope/jssdk/config").await;
    assert_eq!(error_code(unknown, 404).await, "unknown_app");
    assert_eq!(
        app.sandbox.calls().getticket,
        0,
        "no bad request may reach WeChat"
    );
}

#[actix_web::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let app = spawn_app().await;
    let missing = app.get("/nope").await;
    assert_eq!(error_code(missing, 404).await, "not_found");
    let wrong_method = app
        .request(Method::DELETE, "/wxJssdk/getJssdk")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(wrong_method, 405).await, "method_not_allowed");
}

#[actix_web::test]
async fn wechat_refusing_the_credentials_is_a_502_that_says_so_but_not_wechats_answer() {
    let app = spawn_app().await;
    app.sandbox
        .inject(fault(Endpoint::StableToken, Some(40125), 0));
    let response = app.sign("https://page.example.com/").await;
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_error");
    // The page learns what happened; WeChat's errcode and the key to check are the
    // operator's (the log, and the admin routes: trust.rs).
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("refused this app's credentials"), "{body}");
    assert!(
        !message.contains("40125") && !message.contains("apps."),
        "{body}"
    );
    assert!(!body.to_string().contains(SECRET));
}

#[actix_web::test]
async fn wechat_timing_out_is_a_503_with_retry_after() {
    let app = spawn_app().await;
    // Every attempt (the first and both retries) outlasts the service's timeout.
    let mut slow = fault(Endpoint::StableToken, None, WECHAT_TIMEOUT_MS + 500);
    slow.times = 3;
    app.sandbox.inject(slow);
    let response = app.sign("https://page.example.com/").await;
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    assert_eq!(error_code(response, 503).await, "unavailable");
}

#[actix_web::test]
async fn passing_wechat_failures_are_retried() {
    let app = spawn_app().await;
    app.sandbox.inject(fault(Endpoint::GetTicket, Some(-1), 0));
    app.sandbox
        .inject(fault(Endpoint::GetTicket, None, WECHAT_TIMEOUT_MS + 500));
    app.sign_and_check("https://page.example.com/").await;
    assert_eq!(app.sandbox.calls().getticket, 3);
}

#[actix_web::test]
async fn errors_wechat_means_are_not_retried() {
    let app = spawn_app().await;
    app.sandbox
        .inject(fault(Endpoint::GetTicket, Some(45009), 0));
    let response = app.sign("https://page.example.com/").await;
    assert_eq!(error_code(response, 502).await, "upstream_error");
    assert_eq!(app.sandbox.calls().getticket, 1);
}

#[actix_web::test]
async fn without_redis_the_in_process_store_serves_one_instance() {
    let app = spawn_app_with(Options {
        with_redis: false,
        ..Options::default()
    })
    .await;
    app.sign_and_check("https://page.example.com/").await;
    app.sign_and_check("https://page.example.com/other").await;
    assert_eq!(app.sandbox.calls().getticket, 1);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
}
