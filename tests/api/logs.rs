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

/// `log.format = "json"`: every line the binary prints is one JSON object with time,
/// level, target and message; a request's lines carry its id, and its access line
/// the fields a pipeline indexes.
#[actix_web::test]
async fn json_logs_are_one_object_per_line_and_a_requests_lines_carry_its_id() {
    let env = spawn_app().await;
    let (mut binary, logs) =
        RunningBinary::logging_at_debug(&env, &[("WXJSSDK__LOG__FORMAT", "json")]).await;
    // WeChat refuses the service's address: the request fails, and the failure is
    // logged while the request is served.
    env.sandbox
        .inject(fault(Endpoint::StableToken, Some(40164), 0));
    let failed = binary
        .request(reqwest::Method::GET, "/wxJssdk/getJssdk")
        .query(&[("url", "https://page.example.com/")])
        .header("x-request-id", "json-log-test-1")
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 502);
    // Access lines are written by a thread of their own, in batches: await this one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let access_line = "\"target\":\"wx_jssdk::access\"";
    while !std::fs::read_to_string(logs.path())
        .unwrap()
        .contains(access_line)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no access line within 10 s"
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    binary.stop();

    let printed = std::fs::read_to_string(logs.path()).unwrap();
    let lines: Vec<serde_json::Value> = printed
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    for line in &lines {
        for field in ["time", "level", "target", "message"] {
            assert!(line[field].is_string(), "no {field}: {line}");
        }
    }
    let of_the_request: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|line| line["request_id"] == "json-log-test-1")
        .collect();
    let access = of_the_request
        .iter()
        .find(|line| line["target"] == "wx_jssdk::access")
        .unwrap_or_else(|| panic!("no access line for the request:\n{printed}"));
    assert_eq!(access["method"], "GET");
    assert_eq!(access["route"], "/wxJssdk/getJssdk");
    assert_eq!(access["path"], "/wxJssdk/getJssdk");
    assert_eq!(access["status"], 502);
    assert_eq!(access["client"], "127.0.0.1");
    assert!(access["duration_ms"].as_f64().is_some(), "{access}");
    assert!(
        of_the_request
            .iter()
            .any(|line| line["level"] == "WARN" && line["target"] != "wx_jssdk::access"),
        "the failure's warning carries the request's id:\n{printed}"
    );
    assert!(
        !printed.contains(SECRET) && !printed.contains("sbx-at-"),
        "{printed}"
    );
}
