//! The shared cache across instances: one upstream call per window, the refresh lock,
//! recovery from rejected tokens, renewal, and Redis failures.
//!
//! Each instance keeps an in-memory copy, so a test that changes what Redis holds
//! observes the effect through a fresh instance (empty memory), or by waiting for the
//! instance's next check of the store.

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use wx_jssdk::cache::{ChinaDay, Record};
use wx_jssdk::clock::now_ms;
use wx_sandbox::Endpoint;

use crate::helpers::{
    cold_burst_on_two_instances, error_code, fault, spawn_app, spawn_app_with, wait_until, Options,
    Service, TestApp, APPID,
};

fn key(name: &str) -> String {
    format!("wxjssdk:{{{APPID}}}:{name}")
}

async fn stored(app: &TestApp, name: &str) -> Option<Record> {
    let raw: Option<String> = app.redis().connection().await.get(key(name)).await.unwrap();
    raw.map(|r| serde_json::from_str(&r).expect("a stored record"))
}

async fn store(app: &TestApp, name: &str, record: &Record) {
    let json = serde_json::to_string(record).unwrap();
    let _: () = app
        .redis()
        .connection()
        .await
        .set(key(name), json)
        .await
        .unwrap();
}

async fn delete(app: &TestApp, name: &str) {
    let _: () = app.redis().connection().await.del(key(name)).await.unwrap();
}

/// Signs until `done` holds, checking every answer; fails after `limit`.
async fn sign_until(app: &TestApp, limit: Duration, done: impl Fn(&TestApp) -> bool) -> usize {
    let deadline = Instant::now() + limit;
    let mut signed = 0;
    while !done(app) {
        assert!(
            Instant::now() < deadline,
            "condition not reached within {limit:?}"
        );
        app.sign_and_check("https://page.example.com/steady").await;
        signed += 1;
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    signed
}

#[actix_web::test]
async fn a_cold_burst_on_two_instances_makes_one_token_and_one_ticket_call() {
    let first = spawn_app().await;
    cold_burst_on_two_instances(&first).await;
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
async fn a_warm_instance_signs_without_redis() {
    let app = spawn_app().await;
    app.sign_and_check("https://page.example.com/").await;
    app.redis().kill();
    for _ in 0..20 {
        app.sign_and_check("https://page.example.com/").await;
    }
    assert_unready(app.get("/readyz").await).await;
}

/// `/readyz` says the store is failing, and nothing more.
async fn assert_unready(ready: reqwest::Response) {
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("a JSON body");
    assert_eq!(
        body,
        serde_json::json!({"status": "unready", "reason": "store"})
    );
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
    let app = spawn_app_with(Options::default().set("cache.lock_wait_ms", 300)).await;
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

/// With admin keys: the ticket-invalidation route drives the tests of refused tokens.
fn with_keys(options: Options) -> Options {
    Options {
        admin_keys: vec![ADMIN_KEY],
        ..options
    }
}

/// Makes WeChat refuse the app's token and has an operator invalidate the current
/// ticket: its replacement, fetched within that request, is asked for with the refused
/// token and meets a 40001. Answers the replacement ticket's invalidation answer.
async fn reject_the_token(app: &TestApp) -> serde_json::Value {
    app.sandbox.revoke_tokens(APPID);
    invalidate_the_ticket(app).await
}

/// Invalidates the current ticket (whatever the spacing: its gate is opened first).
async fn invalidate_the_ticket(app: &TestApp) -> serde_json::Value {
    let ticket = stored(app, "jsapi_ticket").await.expect("a stored ticket");
    delete(app, "invalidate:gate:jsapi_ticket").await;
    let body = serde_json::json!({ "ticket": ticket.value });
    let response = app
        .invalidate("default", "jsapi_ticket", body, ADMIN_KEY)
        .await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.expect("a JSON answer");
    assert_eq!(answer["invalidated"], true, "{answer}");
    answer
}

#[actix_web::test]
async fn a_rejected_stable_token_is_force_refreshed_once_and_then_spaced() {
    let app = spawn_app_with(with_keys(Options::default())).await;
    app.sign_and_check("https://page.example.com/").await;
    let old_token = stored(&app, "access_token").await.unwrap();
    let other = app.spawn_instance();

    reject_the_token(&app).await;
    let calls = app.sandbox.calls();
    assert_eq!(
        (
            calls.stable_token,
            calls.stable_token_force,
            calls.getticket
        ),
        (2, 1, 3),
        "one forced replacement, and the ticket asked again once: {calls:?}"
    );
    assert_ne!(
        stored(&app, "access_token").await.unwrap().value,
        old_token.value
    );
    app.sign_and_check("https://page.example.com/").await;
    other.sign_and_check("https://page.example.com/").await;

    // A second rejection within 30 s may not force again (WeChat allows one per 30 s).
    reject_the_token(&other).await;
    let calls = app.sandbox.calls();
    assert_eq!(
        (
            calls.stable_token,
            calls.stable_token_force,
            calls.getticket
        ),
        (3, 1, 5),
        "{calls:?}"
    );
    app.sign_and_check("https://page.example.com/").await;
}

/// WeChat allows 20 forced refreshes a day (China time): the 21st replacement asks
/// without force_refresh.
#[actix_web::test]
async fn a_rejected_stable_token_is_not_force_refreshed_past_the_20_of_a_china_day() {
    let app = spawn_app_with(with_keys(Options::default())).await;
    app.sign_and_check("https://page.example.com/").await;
    let today = ChinaDay::of(now_ms()).number;
    let count = format!("wxjssdk:{{{APPID}}}:force_refresh:count:{today}");
    let _: () = app
        .redis()
        .connection()
        .await
        .set(&count, 20)
        .await
        .unwrap();

    reject_the_token(&app).await;
    let calls = app.sandbox.calls();
    assert_eq!(
        (
            calls.stable_token,
            calls.stable_token_force,
            calls.getticket
        ),
        (2, 0, 3),
        "{calls:?}"
    );
    let counted: u64 = app.redis().connection().await.get(&count).await.unwrap();
    assert_eq!(counted, 21);
    app.sign_and_check("https://page.example.com/").await;
}

#[actix_web::test]
async fn a_rejected_classic_token_is_replaced_once() {
    let app = spawn_app_with(with_keys(
        Options::default().set("wechat.token_mode", "classic"),
    ))
    .await;
    app.sign_and_check("https://page.example.com/").await;
    reject_the_token(&app).await;
    let calls = app.sandbox.calls();
    assert_eq!(
        (calls.token, calls.stable_token, calls.getticket),
        (2, 0, 3),
        "{calls:?}"
    );
    app.spawn_instance()
        .sign_and_check("https://page.example.com/")
        .await;
}

/// A holder that outlived its lock writes the refused token back (it lasts longer)
/// while the replacement is being fetched: the replacement's write loses, and the
/// instance keeps the replacement rather than taking the refused token from the store.
#[actix_web::test]
async fn a_refused_token_is_never_taken_back_from_the_store() {
    let app = spawn_app_with(with_keys(Options::default())).await;
    app.sign_and_check("https://page.example.com/").await;
    let refused = stored(&app, "access_token").await.unwrap();
    app.sandbox.inject(fault(Endpoint::StableToken, None, 500));
    let replacing = app.spawn_instance();
    let write_back = async {
        wait_until(
            Duration::from_secs(10),
            "the replacement is asked for",
            || app.sandbox.calls().stable_token == 2,
        )
        .await;
        let lasting_longer = Record {
            rejected: false,
            expires_at: refused.expires_at + 3_600_000,
            usable_until: refused.usable_until + 3_600_000,
            ..refused.clone()
        };
        store(&app, "access_token", &lasting_longer).await;
    };
    futures_util::future::join(reject_the_token(&replacing), write_back).await;

    // The ticket was fetched with the replacement, which that instance keeps.
    let calls = app.sandbox.calls();
    assert_eq!((calls.stable_token, calls.getticket), (2, 3), "{calls:?}");
    let token = replacing
        .get_with_key("/v1/apps/default/access_token", ADMIN_KEY)
        .await;
    assert_ne!(token["access_token"], refused.value.as_str(), "{token}");
    replacing.sign_and_check("https://page.example.com/").await;
}

const ADMIN_KEY: &str = "cache-test-admin-key-0123456789";

#[actix_web::test]
async fn a_rejected_token_that_another_instance_already_replaced_is_kept() {
    let app = spawn_app().await;
    app.sign_and_check("https://page.example.com/").await;
    let current = stored(&app, "access_token").await.unwrap();
    // A fresh instance's ticket refresh will use a token WeChat no longer knows...
    let stale = Record {
        value: "an-older-token".into(),
        ..current.clone()
    };
    store(&app, "access_token", &stale).await;
    delete(&app, "jsapi_ticket").await;
    app.sandbox.inject(fault(Endpoint::GetTicket, None, 300));
    let fresh = app.spawn_instance();
    let sent = Instant::now();
    let (response, ()) = futures_util::future::join(
        fresh.sign("https://page.example.com/"),
        // ...and while WeChat is answering, another instance replaces it.
        async {
            wait_until(
                Duration::from_secs(10),
                "the ticket call with the stale token",
                || app.sandbox.calls().getticket >= 2,
            )
            .await;
            store(&app, "access_token", &current).await;
        },
    )
    .await;
    assert_eq!(response.status(), 200);
    let config = response.json().await.unwrap();
    assert!(app.signed_with_a_valid_ticket(&config, "https://page.example.com/", sent));
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
async fn values_roll_over_with_one_call_per_window_and_no_error() {
    let app = spawn_app().await;
    let second = app.spawn_instance();
    app.sandbox.set_expires_in(4); // usable 3.2 s, renewed after 1.6 s
    let started = Instant::now();
    // Steady load on both instances across three renewals.
    let renewed_three_times = |a: &TestApp| a.sandbox.calls().getticket >= 4;
    let limit = Duration::from_secs(20);
    let (a, b) = tokio::join!(
        sign_until(&app, limit, renewed_three_times),
        sign_until(&second, limit, renewed_three_times)
    );
    let elapsed = started.elapsed().as_secs_f64();
    let calls = app.sandbox.calls();
    assert!(
        a > 10 && b > 10,
        "steady load on both instances ({a}, {b} signatures)"
    );
    // One renewal per 1.6 s at most, deployment-wide.
    let most = (elapsed / 1.6).ceil() as u64 + 1;
    assert!(
        calls.getticket <= most && calls.stable_token <= most,
        "{calls:?} in {elapsed:.1} s"
    );
}

#[actix_web::test]
async fn a_failing_renewal_keeps_the_current_ticket_in_service() {
    let app = spawn_app().await;
    app.sandbox.set_expires_in(4);
    app.sign_and_check("https://page.example.com/").await;
    let first = stored(&app, "jsapi_ticket").await.unwrap();
    // The first renewal attempt fails, with its retries.
    let mut busy = fault(Endpoint::GetTicket, Some(-1), 0);
    busy.times = 3;
    app.sandbox.inject(busy);
    sign_until(&app, Duration::from_secs(10), |a| {
        a.sandbox.calls().getticket >= 5
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while stored(&app, "jsapi_ticket").await.map(|r| r.value) == Some(first.value.clone()) {
        assert!(
            Instant::now() < deadline,
            "the renewed ticket was not stored"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn a_ticket_reissued_unchanged_keeps_its_first_expiry() {
    let app = spawn_app().await;
    app.sandbox.set_expires_in(4);
    app.sandbox.set_reissue(Endpoint::GetTicket, true);
    app.sign_and_check("https://page.example.com/").await;
    let first = stored(&app, "jsapi_ticket").await.unwrap();
    sign_until(&app, Duration::from_secs(10), |a| {
        a.sandbox.calls().getticket >= 2
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let renewed = loop {
        let now = stored(&app, "jsapi_ticket").await.unwrap();
        if now.renew_at != first.renew_at {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the re-issued ticket was not recorded"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(renewed.value, first.value);
    assert_eq!(
        renewed.expires_at, first.expires_at,
        "WeChat's fresh expires_in is not trusted"
    );
}

#[actix_web::test]
async fn redis_down_is_a_503_for_cold_instances_and_service_resumes_when_it_is_back() {
    let app = spawn_app().await;
    app.redis().kill();
    let response = app.sign("https://page.example.com/").await;
    assert_eq!(error_code(response, 503).await, "unavailable");
    assert_unready(app.get("/readyz").await).await;
    assert_eq!(app.get("/healthz").await.status(), 200);

    app.redis().restart();
    // The pool reconnects by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = app.sign("https://page.example.com/").await;
        if response.status() == 200 || Instant::now() > deadline {
            assert_eq!(
                response.status(),
                200,
                "service did not resume after redis came back"
            );
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[actix_web::test]
async fn a_value_changed_by_another_instance_reaches_this_one_within_the_recheck_interval() {
    let app = spawn_app_with(Options::default().set("cache.local_recheck_ms", 200)).await;
    app.sign_and_check("https://page.example.com/").await;
    // Another instance renewed the ticket: Redis now holds a newer one.
    let current = stored(&app, "jsapi_ticket").await.unwrap();
    let newer = Record {
        value: "ticket-renewed-elsewhere".into(),
        renew_at: current.renew_at + 1,
        usable_until: current.usable_until + 1,
        expires_at: current.expires_at + 1,
        ..current.clone()
    };
    store(&app, "jsapi_ticket", &newer).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let config: serde_json::Value = app
            .sign("https://page.example.com/")
            .await
            .json()
            .await
            .unwrap();
        let with_newer = wx_jssdk::wechat::signature::sign_url(
            &newer.value,
            config["nonceStr"].as_str().unwrap(),
            config["timestamp"].as_u64().unwrap(),
            config["url"].as_str().unwrap(),
        );
        if config["signature"] == with_newer.as_str() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the instance kept its old copy: {config}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.sandbox.calls().getticket,
        1,
        "adopted from redis, not fetched"
    );
}

/// The holder extends its lock while WeChat is slow: the call outlasts the lock's TTL
/// three times, and still no other instance takes over and asks WeChat again.
#[actix_web::test]
async fn a_slow_wechat_does_not_let_the_lock_lapse_under_its_holder() {
    let options = Options::default()
        .set("cache.lock_ttl_ms", 300)
        .set("cache.lock_wait_ms", 3_000);
    let app = spawn_app_with(options).await;
    let other = app.spawn_instance();
    // Slower than three lock TTLs, faster than the service's bound on a call.
    app.sandbox.inject(fault(Endpoint::StableToken, None, 900));
    futures_util::future::join(
        app.sign_and_check("https://page.example.com/"),
        other.sign_and_check("https://page.example.com/"),
    )
    .await;
    let calls = app.sandbox.calls();
    assert_eq!((calls.stable_token, calls.getticket), (1, 1), "{calls:?}");
}

/// While the deployment backs off with nothing usable, requests fail at once from what
/// the instance already knows: neither WeChat nor Redis hears of them.
#[actix_web::test]
async fn requests_during_a_backoff_touch_neither_wechat_nor_redis() {
    let app = spawn_app().await;
    let mut busy = fault(Endpoint::StableToken, Some(-1), 0);
    busy.times = 0;
    app.sandbox.inject(busy);
    let first = app.sign("https://page.example.com/").await;
    assert_eq!(error_code(first, 503).await, "unavailable");
    let calls = app.sandbox.calls();
    let commands = redis_commands(&app).await;
    // Well inside the first backoff (1 s).
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_millis(500) {
        let response = app.sign("https://page.example.com/").await;
        assert!(response.headers().contains_key("retry-after"));
        assert_eq!(error_code(response, 503).await, "unavailable");
        answered += 1;
    }
    // The two INFO commands of this test, and nothing else.
    let spent = redis_commands(&app).await - commands;
    assert!(answered >= 20, "only {answered} requests in 500 ms");
    assert!(spent <= 3, "{spent} Redis commands for {answered} requests");
    assert_eq!(app.sandbox.calls(), calls, "WeChat was not asked again");
}

/// Commands the test Redis has processed so far.
async fn redis_commands(app: &TestApp) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut app.redis().connection().await)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("total_commands_processed")
}
