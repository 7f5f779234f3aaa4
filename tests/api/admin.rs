//! The central access_token for other backends: `GET /v1/apps/{name}/access_token` and
//! `POST /v1/apps/{name}/access_token/invalidate`, behind `admin.keys`.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use redis::AsyncCommands;
use reqwest::Method;
use serde_json::json;
use wx_jssdk::cache::{ChinaDay, Record};
use wx_jssdk::clock::now_ms;

use crate::helpers::{
    error_code, spawn_app_with, Options, RunningBinary, Service, TestApp, APPID, SECRET,
    SERVER_TOKEN,
};

const ADMIN_KEY: &str = "first-admin-key-0123456789";
const OTHER_ADMIN_KEY: &str = "second-admin-key-abcdefghij";

fn with_keys() -> Options {
    Options {
        admin_keys: vec![ADMIN_KEY, OTHER_ADMIN_KEY],
        ..Options::default()
    }
}

/// The token a good key gets, with its `expires_in`.
async fn current_token(app: &TestApp) -> (String, u64) {
    let response = app.access_token("default", Some(ADMIN_KEY)).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().expect("a token").to_string();
    (token, body["expires_in"].as_u64().expect("integer seconds"))
}

/// Invalidates the default app's `token` with the admin key.
async fn invalidate(app: &TestApp, token: &str) -> reqwest::Response {
    let body = json!({ "access_token": token });
    app.invalidate("default", "access_token", body, ADMIN_KEY)
        .await
}

/// `(invalidated, access_token)` of a 200 answer.
async fn invalidated(response: reqwest::Response) -> (bool, String) {
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["expires_in"].as_u64().is_some_and(|s| s > 0), "{body}");
    (
        body["invalidated"].as_bool().expect("invalidated"),
        body["access_token"].as_str().expect("access_token").into(),
    )
}

async fn stored_token(app: &TestApp) -> Option<String> {
    let raw: Option<String> = app
        .redis()
        .connection()
        .await
        .get(format!("wxjssdk:{{{APPID}}}:access_token"))
        .await
        .unwrap();
    raw.map(|r| serde_json::from_str::<Record>(&r).expect("a record").value)
}

/// Whether WeChat (the sandbox) takes `token`: a ticket call with it succeeds.
async fn wechat_accepts(app: &TestApp, token: &str) -> bool {
    let answer: serde_json::Value = app
        .client
        .get(format!("{}/cgi-bin/ticket/getticket", app.sandbox_url))
        .query(&[("access_token", token), ("type", "jsapi")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["errcode"] == 0 && answer["ticket"].is_string()
}

#[actix_web::test]
async fn without_admin_keys_the_routes_do_not_exist() {
    let app = spawn_app_with(Options::default()).await;
    let response = app.access_token("default", Some(ADMIN_KEY)).await;
    assert_eq!(error_code(response, 404).await, "not_found");
    let response = invalidate(&app, "whatever").await;
    assert_eq!(error_code(response, 404).await, "not_found");
    assert_eq!(app.sandbox.calls().stable_token, 0);
}

#[actix_web::test]
async fn a_missing_or_wrong_key_is_a_401_that_asks_for_a_bearer_key() {
    // Each request comes from a client of its own (through a trusted proxy), so that
    // the guessing limit (trust.rs) does not answer 429 instead.
    let app = spawn_app_with(Options {
        trusted_proxies: vec!["127.0.0.1"],
        ..with_keys()
    })
    .await;
    let mut clients = 0u32;
    let mut next_client = || {
        clients += 1;
        format!("198.51.100.{}", clients % 250)
    };
    let wrong = [
        None,
        Some("Bearer not-the-key-at-all-000"),
        Some("Bearer first-admin-key-012345678"), // a prefix of a key
        Some("Bearer first-admin-key-01234567890"), // a key and more
        Some("Basic Zmlyc3QtYWRtaW4ta2V5LTAxMjM0NTY3ODk="),
        Some("first-admin-key-0123456789"), // no scheme
        Some("Bearer"),
    ];
    for authorization in wrong {
        for path in [
            "/v1/apps/default/access_token",
            "/v1/apps/nope/access_token", // not even app names are told without a key
        ] {
            let mut request = app
                .request(Method::GET, path)
                .header("x-forwarded-for", next_client());
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            let response = request.send().await.unwrap();
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string());
            assert!(
                challenge
                    .as_deref()
                    .is_some_and(|c| c.starts_with("Bearer")),
                "{authorization:?}: {challenge:?}"
            );
            assert_eq!(error_code(response, 401).await, "unauthorized");
        }
        // Checked before the body is read.
        let mut request = app
            .request(Method::POST, "/v1/apps/default/access_token/invalidate")
            .header("x-forwarded-for", next_client())
            .body("{not json");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(error_code(response, 401).await, "unauthorized");
    }
    assert_eq!(
        app.sandbox.calls().stable_token,
        0,
        "no unauthorized call reached WeChat"
    );
}

#[actix_web::test]
async fn the_token_answered_is_the_shared_one_and_wechat_accepts_it() {
    let app = spawn_app_with(with_keys()).await;
    // Every configured key opens the route.
    let response = app.access_token("default", Some(OTHER_ADMIN_KEY)).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers.get("cache-control").unwrap(), "no-store");
    let body: serde_json::Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    let expires_in = body["expires_in"].as_u64().expect("integer seconds");
    // The sandbox's 7200 s less the 60 s safety margin, give or take the test's time.
    assert!((7000..=7140).contains(&expires_in), "{expires_in}");
    assert_eq!(stored_token(&app).await.as_deref(), Some(token));

    // Signing pages and other instances use the same token: WeChat was asked once.
    app.sign_and_check("https://page.example.com/").await;
    let (again, _) = current_token(&app.spawn_instance()).await;
    assert_eq!(again, token);
    assert_eq!(app.sandbox.calls().stable_token, 1);
    assert!(wechat_accepts(&app, token).await);

    let response = app.access_token("nope", Some(ADMIN_KEY)).await;
    assert_eq!(error_code(response, 404).await, "unknown_app");
}

#[actix_web::test]
async fn invalidating_the_current_token_fetches_one_new_token_that_every_instance_adopts() {
    let app = spawn_app_with(with_keys()).await;
    let other = app.spawn_instance();
    let (old, _) = current_token(&app).await;
    assert_eq!(current_token(&other).await.0, old);

    let (was_current, new) = invalidated(invalidate(&app, &old).await).await;
    assert!(was_current);
    assert_ne!(new, old);
    assert_eq!(stored_token(&app).await.as_deref(), Some(new.as_str()));
    assert!(wechat_accepts(&app, &new).await);
    assert_eq!(current_token(&app).await.0, new);
    let calls = app.sandbox.calls();
    assert_eq!(
        calls.stable_token_force, 1,
        "exactly one forced refetch: {calls:?}"
    );

    // The other instance adopts it at its next check of the store, without asking WeChat.
    let deadline = Instant::now() + Duration::from_secs(5);
    while current_token(&other).await.0 != new {
        assert!(
            Instant::now() < deadline,
            "the other instance kept the old token"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.sandbox.calls(), calls, "adopted, not fetched");
}

#[actix_web::test]
async fn a_stale_token_is_answered_with_the_current_one_at_no_cost() {
    let app = spawn_app_with(with_keys()).await;
    let (current, _) = current_token(&app).await;
    let (was_current, answered) =
        invalidated(invalidate(&app, "sbx-st-an-older-token").await).await;
    assert!(!was_current);
    assert_eq!(answered, current);
    assert_eq!(stored_token(&app).await, Some(current.clone()));
    let calls = app.sandbox.calls();
    assert_eq!(
        (calls.stable_token, calls.stable_token_force),
        (1, 0),
        "{calls:?}"
    );

    // Nor does it use up the window: the current token can still be invalidated.
    let (was_current, new) = invalidated(invalidate(&app, &current).await).await;
    assert!(was_current && new != current);
}

#[actix_web::test]
async fn a_second_invalidation_within_the_window_is_429_with_retry_after_on_any_instance() {
    let app = spawn_app_with(with_keys()).await;
    let (first, _) = current_token(&app).await;
    let (_, second) = invalidated(invalidate(&app, &first).await).await;
    // Another instance, so the limit is the deployment's, not one process's.
    let response = invalidate(&app.spawn_instance(), &second).await;
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("seconds");
    // The window opened with the invalidation just made: about 30 s are left.
    assert!((25..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(error_code(response, 429).await, "rate_limited");
    assert_eq!(app.sandbox.calls().stable_token_force, 1);
    assert_eq!(
        stored_token(&app).await,
        Some(second.clone()),
        "nothing dropped"
    );

    // A caller that still holds the first token is not limited: it learns the current one.
    let (was_current, answered) = invalidated(invalidate(&app, &first).await).await;
    assert!(!was_current);
    assert_eq!(answered, second);
}

#[actix_web::test]
async fn callers_invalidating_one_token_together_cause_one_refetch() {
    let app = spawn_app_with(with_keys()).await;
    let other = app.spawn_instance();
    let (old, _) = current_token(&app).await;
    current_token(&other).await;
    let answers = join_all((0..12).map(|i| {
        let instance = if i % 2 == 0 { &app } else { &other };
        invalidate(instance, &old)
    }))
    .await;
    let mut replacements = Vec::new();
    for response in answers {
        match response.status().as_u16() {
            200 => {
                let (_, token) = invalidated(response).await;
                replacements.push(token);
            }
            429 => assert_eq!(error_code(response, 429).await, "rate_limited"),
            other => panic!("unexpected status {other}"),
        }
    }
    let calls = app.sandbox.calls();
    assert_eq!(calls.stable_token_force, 1, "{calls:?}");
    assert!(!replacements.is_empty());
    let new = stored_token(&app).await.unwrap();
    assert_ne!(new, old);
    assert!(
        replacements.iter().all(|t| *t == new),
        "every 200 answer carries the one replacement: {replacements:?}"
    );
}

#[actix_web::test]
async fn in_classic_mode_an_invalidation_fetches_one_new_token() {
    let app = spawn_app_with(with_keys().set("wechat.token_mode", "classic")).await;
    let (old, _) = current_token(&app).await;
    let (was_current, new) = invalidated(invalidate(&app, &old).await).await;
    assert!(was_current && new != old);
    assert_eq!(app.sandbox.calls().token, 2);
    assert!(wechat_accepts(&app, &new).await);
}

#[actix_web::test]
async fn bad_bodies_are_400_invalid_body() {
    let app = spawn_app_with(with_keys()).await;
    for body in [
        "",
        "{not json",
        "{}",
        r#"{"access_token": 42}"#,
        r#"{"access_token": ""}"#,
        r#"["sbx-st-token"]"#,
    ] {
        let response = app
            .request(Method::POST, "/v1/apps/default/access_token/invalidate")
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(response, 400).await, "invalid_body", "{body}");
    }
    assert_eq!(app.sandbox.calls().stable_token, 0);
}

#[actix_web::test]
async fn no_secret_or_admin_key_appears_in_any_answer() {
    let app = spawn_app_with(with_keys()).await;
    let (token, _) = current_token(&app).await;
    let post = |key: &'static str, body: &'static str| {
        app.request(Method::POST, "/v1/apps/default/access_token/invalidate")
            .bearer_auth(key)
            .body(body)
            .send()
    };
    let mut answers = vec![
        app.access_token("default", Some(ADMIN_KEY)).await,
        app.access_token("default", Some("wrong-admin-key-0000000000"))
            .await,
        app.access_token("default", None).await,
        post(
            ADMIN_KEY,
            r#"{"access_token": ["first-admin-key-0123456789"]}"#,
        )
        .await
        .unwrap(),
        post(ADMIN_KEY, "{first-admin-key-0123456789")
            .await
            .unwrap(),
        post(OTHER_ADMIN_KEY, r#"{"access_token": "stale"}"#)
            .await
            .unwrap(),
        app.access_token("nope", Some(ADMIN_KEY)).await,
    ];
    answers.push(invalidate(&app, &token).await);
    let (_, new) = invalidated(invalidate(&app, "stale").await).await;
    answers.push(invalidate(&app, &new).await); // 429
    let mut statuses = Vec::new();
    for response in answers {
        statuses.push(response.status().as_u16());
        let headers = format!("{:?}", response.headers());
        let body = response.text().await.unwrap();
        for secret in [ADMIN_KEY, OTHER_ADMIN_KEY, SECRET, SERVER_TOKEN] {
            assert!(
                !headers.contains(secret) && !body.contains(secret),
                "`{secret}` answered: {headers} {body}"
            );
        }
    }
    assert_eq!(statuses, [200, 401, 401, 400, 400, 200, 404, 200, 429]);
}

#[actix_web::test]
async fn neither_admin_keys_nor_tokens_reach_the_logs_at_debug_level() {
    // The in-process app is only used for its sandbox and Redis.
    let env = spawn_app_with(Options::default()).await;
    let keys = format!("{ADMIN_KEY},{OTHER_ADMIN_KEY}");
    let (mut binary, logs) =
        RunningBinary::logging_at_debug(&env, &[("WXJSSDK__ADMIN__KEYS", &keys)]).await;
    let get = |key| binary.access_token("default", Some(key));
    let post = |token: &str| {
        let body = json!({ "access_token": token });
        binary.invalidate("default", "access_token", body, OTHER_ADMIN_KEY)
    };
    let wrong_key = "wrong-admin-key-0000000000";
    assert_eq!(get(wrong_key).await.status(), 401);
    let answer: serde_json::Value = get(ADMIN_KEY).await.json().await.unwrap();
    let token = answer["access_token"].as_str().unwrap().to_string();
    assert_eq!(post("sbx-st-stale").await.status(), 200);
    let answer: serde_json::Value = post(&token).await.json().await.unwrap();
    assert_eq!(answer["invalidated"], true);
    let new = answer["access_token"].as_str().unwrap().to_string();
    assert_eq!(post(&new).await.status(), 429);
    binary.stop();

    let printed = std::fs::read_to_string(logs.path()).unwrap();
    assert!(
        printed.contains("invalidated at a caller's request"),
        "the invalidation should be logged:\n{printed}"
    );
    for secret in [
        ADMIN_KEY,
        OTHER_ADMIN_KEY,
        wrong_key,
        &token,
        &new,
        "sbx-st-",
        SECRET,
    ] {
        assert!(
            !printed.contains(secret),
            "`{secret}` appears in the logs:\n{printed}"
        );
    }
}

const CORPID: &str = "wwadmintest00000001";
const AGENTID: &str = "1000002";

/// Every application of a corp has its own token: a WeChat Work app's token is looked
/// up, spaced and dropped under `CORPID/AGENTID`. WeChat Work hands the same token out
/// again until it expires, so the replacement is the same token.
#[actix_web::test]
async fn a_work_apps_token_is_invalidated_under_its_own_cache_id_and_spaced() {
    let app = spawn_app_with(Options {
        work_apps: vec![("work", CORPID, AGENTID)],
        ..with_keys()
    })
    .await;
    let response = app.access_token("work", Some(ADMIN_KEY)).await;
    let body: serde_json::Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().expect("a token").to_string();

    let invalidate = || {
        let body = json!({ "access_token": token });
        app.invalidate("work", "access_token", body, ADMIN_KEY)
    };
    let (was_current, replacement) = invalidated(invalidate().await).await;
    assert!(was_current);
    assert_eq!(replacement, token, "WeChat Work re-issues its token");
    assert_eq!(app.sandbox.calls().work_token, 2);
    let stored: Option<String> = app
        .redis()
        .connection()
        .await
        .get(format!("wxjssdk:{{{CORPID}/{AGENTID}}}:access_token"))
        .await
        .unwrap();
    assert!(stored.is_some_and(|r| r.contains(&token)));

    let response = invalidate().await;
    assert_eq!(error_code(response, 429).await, "rate_limited");
    assert_eq!(app.sandbox.calls().work_token, 2, "refused before WeChat");
    let corp_keys: Vec<String> = app
        .redis()
        .connection()
        .await
        .keys(format!("wxjssdk:{{{CORPID}}}:*"))
        .await
        .unwrap();
    assert!(
        corp_keys.is_empty(),
        "keys under the bare corp id: {corp_keys:?}"
    );
}

/// `cache.invalidations_per_day` real invalidations per China day, deployment-wide:
/// beyond it, 429 until the next China day begins.
#[actix_web::test]
async fn invalidations_beyond_the_daily_cap_are_429_until_the_next_china_day() {
    let options = with_keys()
        .set("wechat.token_mode", "classic")
        .set("cache.invalidations_per_day", 1);
    let app = spawn_app_with(options).await;
    let (first, _) = current_token(&app).await;
    let (was_current, second) = invalidated(invalidate(&app, &first).await).await;
    assert!(was_current);
    // 30 s later, as far as the spacing is concerned.
    let _: () = app
        .redis()
        .connection()
        .await
        .del(format!("wxjssdk:{{{APPID}}}:invalidate:gate:access_token"))
        .await
        .unwrap();
    let response = invalidate(&app.spawn_instance(), &second).await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let next_day = ChinaDay::of(now_ms()).ends_in.as_secs();
    assert!(
        retry_after.abs_diff(next_day) <= 2,
        "{retry_after} vs {next_day}"
    );
    assert_eq!(error_code(response, 429).await, "rate_limited");
    assert_eq!(app.sandbox.calls().token, 2, "one real invalidation");
    assert_eq!(stored_token(&app).await, Some(second));
}

/// An operator who knows WeChat rotated a ticket early has it replaced; the ticket is
/// never answered, and the same rules hold as for the token.
#[actix_web::test]
async fn a_ticket_is_invalidated_by_its_value_and_never_answered() {
    let app = spawn_app_with(Options {
        work_apps: vec![("work", CORPID, AGENTID)],
        ..with_keys()
    })
    .await;
    app.sign_and_check("https://page.example.com/").await;
    let old = app.sandbox.current_ticket(APPID).expect("a ticket");
    let invalidate = |ticket: &str| {
        let body = json!({ "ticket": ticket });
        app.invalidate("default", "jsapi_ticket", body, ADMIN_KEY)
    };

    let response = invalidate("sbx-tk-not-the-current-one").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["invalidated"], false, "{body}");
    assert_eq!(app.sandbox.calls().getticket, 1);

    let response = invalidate(&old).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["invalidated"], true, "{body}");
    assert!(body["expires_in"].as_u64().is_some_and(|s| s > 0), "{body}");
    let fields: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(
        fields,
        ["expires_in", "invalidated"],
        "no ticket is answered"
    );
    let new = app.sandbox.current_ticket(APPID).expect("a ticket");
    assert_ne!(new, old);
    assert_eq!(app.sandbox.calls().getticket, 2);
    let config = app.sign_and_check("https://page.example.com/").await;
    let with_new = wx_jssdk::wechat::signature::sign_url(
        &new,
        config["nonceStr"].as_str().unwrap(),
        config["timestamp"].as_u64().unwrap(),
        "https://page.example.com/",
    );
    assert_eq!(
        config["signature"],
        with_new.as_str(),
        "signed with the new ticket"
    );

    assert_eq!(
        error_code(invalidate(&new).await, 429).await,
        "rate_limited"
    );
    let card_on_work = app.invalidate("work", "card_ticket", json!({ "ticket": "x" }), ADMIN_KEY);
    assert_eq!(error_code(card_on_work.await, 400).await, "unsupported");
    let agent_on_official = app.invalidate(
        "default",
        "agent_ticket",
        json!({ "ticket": "x" }),
        ADMIN_KEY,
    );
    assert_eq!(
        error_code(agent_on_official.await, 400).await,
        "unsupported"
    );
    let wrong_field = app.invalidate(
        "default",
        "card_ticket",
        json!({ "access_token": "x" }),
        ADMIN_KEY,
    );
    assert_eq!(error_code(wrong_field.await, 400).await, "invalid_body");
    assert_eq!(app.sandbox.calls().getticket, 2);
}

/// A token refused while WeChat cannot hand out its replacement: every instance stops
/// answering it within a check interval (its tombstone reaches them), rather than
/// serving it until their copies expire; the replacement follows once WeChat is back.
#[actix_web::test]
async fn a_refused_token_is_dropped_everywhere_even_before_it_is_replaced() {
    let app = spawn_app_with(with_keys()).await;
    let other = app.spawn_instance();
    let (refused, _) = current_token(&app).await;
    assert_eq!(current_token(&other).await.0, refused);
    app.sandbox
        .inject(wx_sandbox::Fault::errcode(wx_sandbox::Endpoint::StableToken, -1).times(0));

    app.sandbox.revoke_tokens(APPID);
    let response = invalidate(&app, &refused).await;
    assert_eq!(error_code(response, 503).await, "unavailable");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = other.access_token("default", Some(ADMIN_KEY)).await;
        if response.status() == 503 {
            break;
        }
        let (token, _) = invalidated_or_current(response).await;
        assert_eq!(token, refused);
        assert!(
            Instant::now() < deadline,
            "the other instance kept answering the refused token"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    // And never again, while WeChat still fails.
    for _ in 0..10 {
        let response = other.access_token("default", Some(ADMIN_KEY)).await;
        assert_eq!(error_code(response, 503).await, "unavailable");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }

    app.sandbox.clear_faults();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = other.access_token("default", Some(ADMIN_KEY)).await;
        if response.status() == 200 {
            let (token, _) = invalidated_or_current(response).await;
            assert_ne!(token, refused);
            assert!(wechat_accepts(&app, &token).await);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no replacement once WeChat was back"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The token of a 200 answer of the token routes.
async fn invalidated_or_current(response: reqwest::Response) -> (String, u64) {
    let body: serde_json::Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().expect("a token").to_string();
    (token, body["expires_in"].as_u64().expect("seconds"))
}
