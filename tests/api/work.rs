//! WeChat Work apps (`wx.config` with the corp ticket, `wx.agentConfig` with the agent
//! ticket) and card signatures of official accounts.

use futures_util::future::join_all;
use wx_jssdk::wechat::signature::sign_url;

use reqwest::Method;

use crate::helpers::{error_code, sorted_sha1, spawn_app_with, Options, Service, TestApp, APPID};

const CORPID: &str = "wwtestcorp000000001";
const AGENTID: &str = "1000002";

/// The admin key card signatures for `wx.addCard` are asked for with.
const ADMIN_KEY: &str = "work-test-admin-key-0123456789";

async fn app() -> TestApp {
    spawn_app_with(Options {
        work_apps: vec![("work", CORPID, AGENTID)],
        admin_keys: vec![ADMIN_KEY],
        ..Options::default()
    })
    .await
}

/// Whether `signature` is `sign_url` over the page URL with one of `tickets`.
fn signed_with(
    tickets: &[String],
    signature: &serde_json::Value,
    nonce: &serde_json::Value,
    timestamp: u64,
    url: &str,
) -> bool {
    tickets.iter().any(|ticket| {
        let expected = sign_url(ticket, nonce.as_str().unwrap_or_default(), timestamp, url);
        signature == expected.as_str()
    })
}

async fn work_config(app: &TestApp) -> serde_json::Value {
    let response = app
        .config_for("work", "https://work.example.com/page?x=1#frag")
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[actix_web::test]
async fn a_work_app_gets_wx_config_and_agent_config_signed_with_the_right_tickets() {
    let app = app().await;
    let config = work_config(&app).await;
    let url = "https://work.example.com/page?x=1";
    assert_eq!(
        (config["appId"].as_str(), config["url"].as_str()),
        (Some(CORPID), Some(url))
    );
    let timestamp = config["timestamp"].as_u64().unwrap();
    let corp = app.sandbox.valid_corp_tickets(CORPID);
    assert!(
        signed_with(
            &corp,
            &config["signature"],
            &config["nonceStr"],
            timestamp,
            url
        ),
        "{config}"
    );

    let agent = &config["agentConfig"];
    assert_eq!(
        (agent["corpid"].as_str(), agent["agentid"].as_str()),
        (Some(CORPID), Some(AGENTID))
    );
    let agent_timestamp = agent["timestamp"].as_u64().unwrap();
    let tickets = app.sandbox.valid_agent_tickets(CORPID);
    assert!(
        signed_with(
            &tickets,
            &agent["signature"],
            &agent["nonceStr"],
            agent_timestamp,
            url
        ),
        "{agent}"
    );
    assert!(!signed_with(
        &corp,
        &agent["signature"],
        &agent["nonceStr"],
        agent_timestamp,
        url
    ));

    let calls = app.sandbox.calls();
    assert_eq!(
        (
            calls.work_token,
            calls.work_jsapi_ticket,
            calls.agent_ticket
        ),
        (1, 1, 1),
        "{calls:?}"
    );
    assert_eq!(
        (calls.token, calls.stable_token, calls.getticket),
        (0, 0, 0),
        "{calls:?}"
    );
}

#[actix_web::test]
async fn a_cold_burst_on_a_work_app_fetches_each_credential_once() {
    let first = app().await;
    let second = first.spawn_instance();
    join_all((0..100).map(|i| work_config(if i % 2 == 0 { &first } else { &second }))).await;
    let calls = first.sandbox.calls();
    assert_eq!(
        (
            calls.work_token,
            calls.work_jsapi_ticket,
            calls.agent_ticket
        ),
        (1, 1, 1),
        "{calls:?}"
    );
}

#[actix_web::test]
async fn official_accounts_have_no_agent_config_and_work_apps_no_server_verification() {
    let app = app().await;
    let config = app.sign_and_check("https://page.example.com/").await;
    assert!(config.get("agentConfig").is_none(), "{config}");
    let query = [
        ("signature", "x"),
        ("timestamp", "1"),
        ("nonce", "2"),
        ("echostr", "e"),
    ];
    let response = app.verify("/v1/apps/work/verify", &query).await;
    assert_eq!(error_code(response, 404).await, "no_server_token");
}

/// A card signature, asked for by a backend with the admin key.
async fn card_sign(app: &TestApp, query: &[(&str, &str)]) -> reqwest::Response {
    app.card("default", query, Some(ADMIN_KEY)).await
}

#[actix_web::test]
async fn add_card_gets_a_card_ext_signed_over_the_sorted_values() {
    let app = app().await;
    let response = card_sign(
        &app,
        &[
            ("card_id", "pCard123"),
            ("code", "0001"),
            ("openid", "oUser"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["cardId"], "pCard123");
    let ext: serde_json::Value = serde_json::from_str(answer["cardExt"].as_str().unwrap()).unwrap();
    assert_eq!(
        (ext["code"].as_str(), ext["openid"].as_str()),
        (Some("0001"), Some("oUser"))
    );
    let timestamp = ext["timestamp"].as_str().unwrap();
    let nonce = ext["nonce_str"].as_str().unwrap();
    let verifies = app.sandbox.valid_card_tickets(APPID).iter().any(|ticket| {
        ext["signature"]
            == sorted_sha1(&[ticket, timestamp, nonce, "pCard123", "0001", "oUser"]).as_str()
    });
    assert!(verifies, "{answer}");
    assert_eq!(answer["signature"], ext["signature"]);
    let calls = app.sandbox.calls();
    assert_eq!(
        (calls.stable_token, calls.getticket),
        (1, 1),
        "the wx_card ticket only: {calls:?}"
    );
}

#[actix_web::test]
async fn choose_card_gets_a_card_sign_with_the_appid_and_shop() {
    let app = app().await;
    let query = [
        ("purpose", "choose_card"),
        ("shop_id", "shop9"),
        ("card_type", "GROUPON"),
    ];
    let answer: serde_json::Value = card_sign(&app, &query).await.json().await.unwrap();
    assert_eq!(
        (answer["shopId"].as_str(), answer["signType"].as_str()),
        (Some("shop9"), Some("SHA1"))
    );
    let timestamp = answer["timestamp"].as_u64().unwrap().to_string();
    let nonce = answer["nonceStr"].as_str().unwrap();
    let verifies = app.sandbox.valid_card_tickets(APPID).iter().any(|ticket| {
        answer["cardSign"]
            == sorted_sha1(&[ticket, APPID, "shop9", &timestamp, nonce, "", "GROUPON"]).as_str()
    });
    assert!(verifies, "{answer}");
}

#[actix_web::test]
async fn card_requests_that_cannot_be_signed_are_clear_errors() {
    let app = app().await;
    assert_eq!(
        error_code(card_sign(&app, &[("code", "1")]).await, 400).await,
        "missing_parameter"
    );
    let bad_purpose = card_sign(&app, &[("purpose", "steal"), ("card_id", "c")]).await;
    assert_eq!(error_code(bad_purpose, 400).await, "invalid_query");
    let work = app.card("work", &[("card_id", "c")], Some(ADMIN_KEY)).await;
    assert_eq!(error_code(work, 400).await, "unsupported");
    assert_eq!(app.sandbox.calls().getticket, 0);
}

#[actix_web::test]
async fn pages_on_another_origin_may_ask_for_card_signatures_too() {
    let app = spawn_app_with(Options {
        cors_origins: vec![("default", &["https://shop.example.com"])],
        ..Options::default()
    })
    .await;
    let preflight = app
        .request(Method::OPTIONS, "/v1/apps/default/card/sign")
        .header("Origin", "https://shop.example.com")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let signed = app
        .request(Method::GET, "/v1/apps/default/card/sign")
        .query(&[("purpose", "choose_card"), ("card_id", "c1")])
        .header("Origin", "https://shop.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 200);
    let allowed = signed
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(allowed.as_deref(), Some("https://shop.example.com"));
}
