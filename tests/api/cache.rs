//! The shared cache across instances: one upstream call per window, the refresh lock,
//! recovery from rejected tokens, and Redis failures.

use std::time::Duration;

use futures_util::future::join_all;
use redis::AsyncCommands;
use wx_jssdk::cache::{now_ms, Record};
use wx_jssdk::configuration::TokenMode;
use wx_jssdk::sandbox::Endpoint;

use crate::helpers::{error_code, fault, spawn_app, spawn_app_with, Options, TestApp, APPID};

fn key(name: &str) -> String {
    format!("wxjssdk:{{{APPID}}}:{name}")
}

async fn stored(app: &TestApp, name: &str) -> Option<Record> {
    let raw: Option<String> = app.redis().connection().await.get(key(name)).await.unwrap();
    raw.map(|r| serde_json::from_str(&r).expect("a stored record"))
}

async fn store(app: &TestApp, name: &str, record: &Record) {
    let _: () = app
        .redis()
        .connection()
        .await
        .set(key(name), serde_json::to_string(record).unwrap())
        .await
        .unwrap();
}

async fn delete(app: &TestApp, name: &str) {
    let _: () = app.redis().connection().await.del(key(name)).await.unwrap();
}

#[actix_web::test]
async fn a_cold_burst_on_two_instances_makes_one_token_and_one_ticket_call() {
    let first = spawn_app().await;
    let second = first.spawn_instance();
    let requests = (0..200).map(|i| {
        let instance = if i % 2 == 0 { &first } else { &second };
        instance.sign_and_check("https://page.example.com/burst")
    });
    join_all(requests).await;
    let calls = first.sandbox.calls();
    assert_eq!((calls.stable_token, calls.getticket), (1, 1), "{calls:?}");
}

#[actix_web::test]
async fn instances_on_one_redis_sign_with_the_same_ticket() {
    let first = spawn_app().await;
    let second = first.spawn_instance();
    first.sign_and_check("https://page.example.com/a").await;
    second.sign_and_check("https://page.example.com/b").await;
    assert_eq!(first.sandbox.calls().getticket, 1);
    let record = stored(&first, "jsapi_ticket")
        .await
        .expect("the ticket is in redis");
    assert_eq!(Some(record.value), first.sandbox.current_ticket(APPID));
}

#[actix_web::test]
async fn a_dead_lock_holder_is_replaced_once_its_lock_expires() {
    let app = spawn_app().await;
    let mut conn = app.redis().connection().await;
    let lock = key("lock:jsapi_ticket");
    let _: () = redis::cmd("SET")
        .arg(&lock)
        .arg("dead-holder")
        .arg("PX")
        .arg(1500)
        .query_async(&mut conn)
        .await
        .unwrap();
    app.sign_and_check("https://page.example.com/").await;
    assert_eq!(app.sandbox.calls().getticket, 1);
    let left: Option<String> = conn.get(&lock).await.unwrap();
    assert_eq!(left, None, "the new holder released its lock");
}

#[actix_web::test]
async fn waiting_longer_than_lock_wait_answers_503_with_retry_after() {
    let mut options = Options::default();
    options.cache.lock_wait_ms = 300;
    let app = spawn_app_with(options).await;
    let mut conn = app.redis().connection().await;
    let _: () = redis::cmd("SET")
        .arg(key("lock:jsapi_ticket"))
        .arg("slow-holder")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let response = app.sign("https://page.example.com/").await;
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(error_code(response, 503).await, "unavailable");
    assert_eq!(app.sandbox.calls().getticket, 0);
}

#[actix_web::test]
async fn a_rejected_stable_token_is_force_refreshed_once_and_then_spaced() {
    let app = spawn_app().await;
    app.sign_and_check("https://page.example.com/").await;
    let old_token = stored(&app, "access_token").await.unwrap();

    app.sandbox.revoke_tokens(APPID);
    delete(&app, "jsapi_ticket").await; // the ticket's window ends
    app.sign_and_check("https://page.example.com/").await;
    let calls = app.sandbox.calls();
    assert_eq!(
        (calls.stable_token_force, calls.getticket),
        (1, 3),
        "{calls:?}"
    );
    assert_ne!(
        stored(&app, "access_token").await.unwrap().value,
        old_token.value
    );

    // A second rejection within 30 s may not force again (WeChat allows one per 30 s).
    app.sandbox.revoke_tokens(APPID);
    delete(&app, "jsapi_ticket").await;
    app.sign_and_check("https://page.example.com/").await;
    let calls = app.sandbox.calls();
    assert_eq!(
        (calls.stable_token_force, calls.stable_token),
        (1, 3),
        "{calls:?}"
    );
}

#[actix_web::test]
async fn a_rejected_classic_token_is_replaced_once() {
    let app = spawn_app_with(Options {
        token_mode: TokenMode::Classic,
        ..Options::default()
    })
    .await;
    app.sign_and_check("https://page.example.com/").await;
    app.sandbox.revoke_tokens(APPID);
    delete(&app, "jsapi_ticket").await;
    app.sign_and_check("https://page.example.com/").await;
    let calls = app.sandbox.calls();
    assert_eq!(
        (calls.token, calls.stable_token, calls.getticket),
        (2, 0, 3),
        "{calls:?}"
    );
}

#[actix_web::test]
async fn a_rejected_token_that_another_instance_already_replaced_is_kept() {
    let app = spawn_app().await;
    app.sign_and_check("https://page.example.com/").await;
    let current = stored(&app, "access_token").await.unwrap();
    // This instance's ticket refresh will use a token WeChat no longer knows...
    let stale = Record {
        value: "an-older-token".into(),
        ..current.clone()
    };
    store(&app, "access_token", &stale).await;
    delete(&app, "jsapi_ticket").await;
    app.sandbox.inject(fault(Endpoint::GetTicket, None, 300));
    let signing = actix_web::rt::spawn({
        let (client, url) = (
            app.client.clone(),
            format!("{}/wxJssdk/getJssdk", app.address),
        );
        async move {
            client
                .get(url)
                .query(&[("url", "https://page.example.com/")])
                .send()
                .await
        }
    });
    // ...and while WeChat is answering, another instance replaces it.
    while app.sandbox.calls().getticket < 2 {
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    store(&app, "access_token", &current).await;
    let response = signing.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert!(app.signed_with_a_valid_ticket(&response.json().await.unwrap()));
    assert_eq!(
        stored(&app, "access_token").await.unwrap().value,
        current.value
    );
    assert_eq!(
        app.sandbox.calls().stable_token,
        1,
        "the replacement was used, not a new token fetched"
    );
}

#[actix_web::test]
async fn a_value_due_for_renewal_is_renewed_while_still_served() {
    let app = spawn_app().await;
    app.sign_and_check("https://page.example.com/").await;
    let mut due = stored(&app, "jsapi_ticket").await.unwrap();
    due.renew_at = now_ms() - 1;
    store(&app, "jsapi_ticket", &due).await;

    // A failing renewal keeps the current ticket in service.
    app.sandbox.inject(fault(Endpoint::GetTicket, Some(-1), 0));
    app.sign_and_check("https://page.example.com/").await;
    assert_eq!(stored(&app, "jsapi_ticket").await.unwrap().value, due.value);

    app.sign_and_check("https://page.example.com/").await;
    let renewed = stored(&app, "jsapi_ticket").await.unwrap();
    assert_ne!(renewed.value, due.value);
    assert!(renewed.renew_at > now_ms());
    assert_eq!(app.sandbox.calls().getticket, 3);
}

#[actix_web::test]
async fn a_ticket_reissued_unchanged_keeps_its_first_expiry() {
    let app = spawn_app().await;
    app.sandbox.set_reuse_ticket(true);
    app.sign_and_check("https://page.example.com/").await;
    let mut due = stored(&app, "jsapi_ticket").await.unwrap();
    due.renew_at = now_ms() - 1;
    store(&app, "jsapi_ticket", &due).await;
    app.sign_and_check("https://page.example.com/").await;
    assert_eq!(app.sandbox.calls().getticket, 2);
    let after = stored(&app, "jsapi_ticket").await.unwrap();
    assert_eq!(
        (after.value.as_str(), after.expires_at),
        (due.value.as_str(), due.expires_at)
    );
    assert!(
        after.renew_at > now_ms(),
        "the next attempt is scheduled, not immediate"
    );
}

#[actix_web::test]
async fn redis_down_is_a_503_and_service_resumes_when_it_is_back() {
    let app = spawn_app().await;
    app.sign_and_check("https://page.example.com/").await;
    app.redis().kill();
    let response = app.sign("https://page.example.com/").await;
    assert_eq!(error_code(response, 503).await, "unavailable");
    let ready = app.get("/readyz").await;
    assert_eq!(error_code(ready, 503).await, "unavailable");
    let alive = app.get("/healthz").await;
    assert_eq!(alive.status(), 200);

    app.redis().restart();
    // The pool reconnects by itself; the restarted Redis is empty, so the next
    // signature refetches.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = app.sign("https://page.example.com/").await;
        if response.status() == 200 || std::time::Instant::now() > deadline {
            assert_eq!(
                response.status(),
                200,
                "service did not resume after redis came back"
            );
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
}
