//! Secrets, tokens and tickets never reach the logs, even at debug level and on the
//! error paths. Runs the real binary and reads everything it printed.

use wx_jssdk::cache::Record;
use wx_jssdk::clock::now_ms;
use wx_sandbox::Endpoint;

use crate::helpers::{fault, spawn_app, RunningBinary, Service, APPID, SECRET, SERVER_TOKEN};

#[actix_web::test]
async fn nothing_secret_is_logged_at_debug_level() {
    // The in-process app is only used for its sandbox and Redis.
    let env = spawn_app().await;
    let admin_key = "logs-test-admin-key-0123456789";
    let (mut binary, logs) =
        RunningBinary::logging_at_debug(&env, &[("WXJSSDK__ADMIN__KEYS", admin_key)]).await;

    let sign = || binary.sign("https://page.example.com/");
    env.sandbox
        .inject(fault(Endpoint::StableToken, Some(40125), 0));
    assert_eq!(sign().await.status(), 502);
    // The deployment backs off 1 s after the failure: 503 until the next attempt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let response = sign().await;
        if response.status() == 200 {
            break;
        }
        assert_eq!(response.status(), 503);
        assert!(
            std::time::Instant::now() < deadline,
            "no signature after the backoff"
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A refused token: buried, replaced, ticket fetched again. An operator invalidates
    // the ticket; its replacement is asked for with the token WeChat now refuses: a
    // third ticket call (the refused one, and the retry) with a third token call
    // (after the 40125 and the first token).
    env.sandbox.revoke_tokens(APPID);
    let ticket = env.sandbox.current_ticket(APPID).expect("a ticket");
    let body = serde_json::json!({ "ticket": ticket });
    let invalidated = binary
        .invalidate("default", "jsapi_ticket", body, admin_key)
        .await;
    assert_eq!(invalidated.status(), 200);
    let calls = env.sandbox.calls();
    assert_eq!((calls.stable_token, calls.getticket), (3, 3), "{calls:?}");
    assert_eq!(sign().await.status(), 200);
    binary.stop();

    let printed = std::fs::read_to_string(logs.path()).unwrap();
    assert!(
        printed.contains("refreshed"),
        "the run should have logged its refreshes:\n{printed}"
    );
    for secret in [
        SECRET,
        SERVER_TOKEN,
        admin_key,
        "sbx-at-",
        "sbx-st-",
        "sbx-tk-",
    ] {
        assert!(
            !printed.contains(secret),
            "`{secret}` appears in the logs:\n{printed}"
        );
    }
}

/// Deadlines are absolute times written by one instance and read by the others: a
/// record that says it was fetched in this instance's future reveals clocks that
/// disagree, and the operator is told to sync them.
#[actix_web::test]
async fn a_record_from_an_instance_whose_clock_runs_ahead_is_reported() {
    let deployment = crate::deployment::Deployment::start(1, "").await;
    deployment.sign_and_check(0).await;
    let key = format!("wxjssdk:{{{APPID}}}:jsapi_ticket");
    let mut redis = deployment.redis.connection().await;
    let raw: String = redis::AsyncCommands::get(&mut redis, &key).await.unwrap();
    let mut ahead = Record::from_json(&raw).expect("a stored ticket");
    ahead.fetched_at = now_ms() + 60_000;
    let _: () = redis::AsyncCommands::set(&mut redis, &key, ahead.to_json())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !deployment.log(0).contains("clock is at least") {
        assert!(
            std::time::Instant::now() < deadline,
            "no clock warning:\n{}",
            deployment.log(0)
        );
        deployment.sign_and_check(0).await;
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(deployment.log(0).contains("(NTP)"));
}
