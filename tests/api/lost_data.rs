//! A store that loses data (a flush, a restart without persistence, a failover that
//! lost writes) or cannot be written: the instances' copies go back into it, and
//! nothing is fetched while any instance holds a usable value. In classic mode a
//! needless fetch would kill, 5 minutes later, the token every other backend holds.

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use wx_jssdk::cache::Record;
use wx_sandbox::Endpoint;

use crate::helpers::{
    fault, spawn_app_with, wait_until, Options, Service, TestApp, TestRedis, APPID,
};

const ADMIN_KEY: &str = "lost-data-admin-key-0123456789";

fn classic_with_keys() -> Options {
    Options {
        admin_keys: vec![ADMIN_KEY],
        ..Options::default()
    }
    .set("wechat.token_mode", "classic")
}

async fn stored(redis: &TestRedis, name: &str) -> Option<Record> {
    let raw: Option<String> = redis
        .connection()
        .await
        .get(format!("wxjssdk:{{{APPID}}}:{name}"))
        .await
        .unwrap();
    raw.and_then(|raw| Record::from_json(&raw))
}

/// The token other backends get from `app`.
async fn shared_token(app: &TestApp) -> String {
    let body = app
        .get_with_key("/v1/apps/default/access_token", ADMIN_KEY)
        .await;
    body["access_token"].as_str().expect("a token").to_string()
}

/// Keeps the instances signing until the store holds both values again.
async fn sign_until_restored(instances: &[&TestApp], redis: &TestRedis) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for app in instances {
            app.sign_and_check("https://page.example.com/").await;
        }
        let token = stored(redis, "access_token").await;
        let ticket = stored(redis, "jsapi_ticket").await;
        if token.is_some() && ticket.is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "the store was not restored");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn the_instances_restore_what_the_store_lost(lose: impl AsyncFnOnce(&TestRedis)) {
    let first = spawn_app_with(classic_with_keys()).await;
    let others = [first.spawn_instance(), first.spawn_instance()];
    let instances = [&first, &others[0], &others[1]];
    for app in instances {
        app.sign_and_check("https://page.example.com/").await;
    }
    let token = stored(first.redis(), "access_token")
        .await
        .expect("a token");
    let ticket = stored(first.redis(), "jsapi_ticket")
        .await
        .expect("a ticket");
    let calls = first.sandbox.calls();
    assert_eq!((calls.token, calls.getticket), (1, 1));

    lose(first.redis()).await;
    sign_until_restored(&instances, first.redis()).await;

    assert_eq!(first.sandbox.calls(), calls, "written back, not fetched");
    assert_eq!(
        stored(first.redis(), "access_token").await,
        Some(token.clone())
    );
    assert_eq!(stored(first.redis(), "jsapi_ticket").await, Some(ticket));
    for app in instances {
        assert_eq!(
            shared_token(app).await,
            token.value,
            "other backends keep their token"
        );
    }
}

#[actix_web::test]
async fn after_a_flush_the_instances_copies_go_back_and_no_token_is_minted() {
    the_instances_restore_what_the_store_lost(async |redis: &TestRedis| {
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut redis.connection().await)
            .await
            .unwrap();
    })
    .await;
}

#[actix_web::test]
async fn after_a_restart_without_persistence_the_instances_copies_go_back() {
    the_instances_restore_what_the_store_lost(async |redis: &TestRedis| {
        redis.kill();
        redis.restart();
    })
    .await;
}

/// Redis dies while WeChat is answering a renewal: the value fetched is served from
/// the instance, and written to Redis when it is back, without a second fetch.
#[actix_web::test]
async fn a_value_that_could_not_be_stored_is_served_and_written_back_later() {
    let app = spawn_app_with(Options::default()).await;
    // Half the service's bound on one WeChat call: answered, not retried.
    app.sandbox.inject(fault(Endpoint::GetTicket, None, 500));
    let sent = Instant::now();
    let (response, ()) = futures_util::future::join(app.sign("https://page.example.com/"), async {
        wait_until(Duration::from_secs(10), "the ticket call", || {
            app.sandbox.calls().getticket == 1
        })
        .await;
        app.redis().kill();
    })
    .await;
    assert_eq!(response.status(), 200, "the fetched ticket is served");
    let config = response.json().await.unwrap();
    assert!(app.signed_with_a_valid_ticket(&config, "https://page.example.com/", sent));
    for _ in 0..5 {
        app.sign_and_check("https://page.example.com/").await;
    }

    app.redis().restart();
    let ticket = app.sandbox.current_ticket(APPID);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored(app.redis(), "jsapi_ticket").await.map(|r| r.value) != ticket {
        assert!(Instant::now() < deadline, "the ticket was not written back");
        app.sign_and_check("https://page.example.com/").await;
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = app.sandbox.calls();
    assert_eq!((calls.stable_token, calls.getticket), (1, 1), "{calls:?}");
}
