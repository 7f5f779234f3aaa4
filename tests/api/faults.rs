//! Horizontal scaling under faults, with real processes: three `wx-jssdk` instances
//! from the built binary, a private `redis-server` and the sandbox WeChat API.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use wx_sandbox::Endpoint;

use crate::deployment::{Answer, Deployment};
use crate::helpers::{fault, wait_until, Service};

/// Keeps all instances signing in turn until `done` holds; every answer must verify.
async fn steady_load(
    deployment: &Deployment,
    limit: Duration,
    done: impl Fn(&Deployment) -> bool,
) -> usize {
    let deadline = Instant::now() + limit;
    let mut signed = 0;
    while !done(deployment) {
        assert!(
            Instant::now() < deadline,
            "not reached within {limit:?}: {:?}",
            deployment.sandbox.calls()
        );
        deployment
            .sign_and_check(signed % deployment.instances.len())
            .await;
        signed += 1;
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    signed
}

#[actix_web::test]
async fn a_cold_start_of_1000_requests_on_3_instances_makes_one_call_of_each() {
    let deployment = Deployment::start(3, "").await;
    let requests = (0..1000).map(|i| deployment.sign_and_check(i % 3));
    join_all(requests).await;
    let calls = deployment.sandbox.calls();
    assert_eq!((calls.stable_token, calls.getticket), (1, 1), "{calls:?}");
}

#[actix_web::test]
async fn steady_load_across_rollovers_makes_one_call_of_each_per_window() {
    // Classic tokens: each fetch is a new token, so every window's calls are plain to count.
    let deployment = Deployment::start(3, "[wechat]\ntoken_mode = \"classic\"").await;
    deployment.sandbox.set_expires_in(6); // usable 4.8 s, renewed every 2.4 s
    let started = Instant::now();
    let signed = steady_load(&deployment, Duration::from_secs(30), |d| {
        d.sandbox.calls().getticket >= 4
    })
    .await;
    let windows = started.elapsed().as_secs_f64() / 2.4;
    let calls = deployment.sandbox.calls();
    assert!(signed > 50, "steady load: {signed} signatures");
    let most = windows.ceil() as u64 + 1;
    assert!(
        calls.getticket <= most && calls.token <= most,
        "{calls:?} in {windows:.1} windows"
    );
}

#[actix_web::test]
async fn a_lock_holder_killed_mid_call_is_taken_over_and_nobody_hangs() {
    let mut deployment =
        Deployment::start(3, "[cache]\nlock_ttl_ms = 1000\nlock_wait_ms = 2000").await;
    deployment
        .sandbox
        .inject(fault(Endpoint::StableToken, None, 60_000));
    // Instance 0 takes the lock and waits on a slow WeChat...
    let doomed = deployment.sign_in_flight(0);
    wait_until(Duration::from_secs(10), "instance 0 calls WeChat", || {
        deployment.sandbox.calls().stable_token >= 1
    })
    .await;
    // ...and dies.
    deployment.instances[0].stop();
    assert!(
        doomed.await.unwrap().is_err(),
        "the killed instance cannot have answered"
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut unavailable = 0;
    loop {
        let answers = join_all((1..3).map(|i| deployment.sign(i))).await;
        let mut all_signed = true;
        for answer in answers {
            match answer {
                Answer::Signed(_) => {}
                Answer::Status(503, Some(_retry_after), body) => {
                    assert_eq!(body["error"]["code"], "unavailable");
                    unavailable += 1;
                    all_signed = false;
                }
                Answer::Status(status, retry_after, body) => {
                    panic!("{status} (retry-after {retry_after:?}): {body}")
                }
            }
        }
        if all_signed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no instance took over ({unavailable} answers 503)"
        );
    }
    let calls = deployment.sandbox.calls();
    assert_eq!(
        (calls.stable_token, calls.getticket),
        (2, 1),
        "one takeover: {calls:?}"
    );
}

#[actix_web::test]
async fn redis_killed_and_restarted_warm_instances_sign_throughout() {
    let deployment = Deployment::start(3, "").await;
    for i in 0..3 {
        deployment.sign_and_check(i).await;
    }
    deployment.redis.kill();
    let mut signed = 0;
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(3) {
        deployment.sign_and_check(signed % 3).await;
        signed += 1;
    }
    for i in 0..3 {
        assert_eq!(
            deployment.status(i, "/readyz").await,
            503,
            "instance {i} is not ready without redis"
        );
    }
    deployment.redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..3 {
        while deployment.status(i, "/readyz").await != 200 {
            assert!(
                Instant::now() < deadline,
                "instance {i} did not reconnect to redis"
            );
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        deployment.sign_and_check(i).await;
    }
    for i in 0..3 {
        let log = deployment.log(i);
        assert!(!log.contains("panicked"), "instance {i} panicked:\n{log}");
        let lines = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .count();
        assert!(
            lines < 10,
            "instance {i} logged {lines} warnings for a 3 s outage ({signed} requests):\n{log}"
        );
    }
}

/// WeChat busy from the moment the ticket is due for renewal. The deployment makes one
/// attempt per step of its shared backoff (each attempt is a call and 2 retries),
/// never one per instance; the ticket is served through its usable life and then,
/// with nothing newer to be had, through its safety margin until WeChat's own expiry;
/// after that, a clear 503 with `Retry-After`, never an expired ticket.
#[actix_web::test]
async fn a_failing_wechat_is_retried_on_a_shared_schedule_and_the_ticket_serves_until_it_expires() {
    let deployment = Deployment::start(3, "").await;
    deployment.sandbox.set_expires_in(6); // usable 4.8 s, renewal from 2.4 s, dead at 6 s
    let fetched = Instant::now();
    for i in 0..3 {
        deployment.sign_and_check(i).await;
    }
    let mut busy = fault(Endpoint::GetTicket, Some(-1), 0);
    busy.times = 0; // until cleared
    deployment.sandbox.inject(busy);
    let mut signed = 0;
    let mut last_signed_at = Duration::ZERO;
    let retry_after = loop {
        let elapsed = fetched.elapsed();
        assert!(
            elapsed < Duration::from_secs(10),
            "still signing long after the ticket died"
        );
        match deployment.sign(signed % 3).await {
            Answer::Signed(_) => {
                signed += 1;
                last_signed_at = elapsed;
            }
            Answer::Status(status, retry_after, body) => {
                assert_eq!(
                    (status, body["error"]["code"].as_str()),
                    (503, Some("unavailable")),
                    "{body}"
                );
                break retry_after.expect("a Retry-After");
            }
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        last_signed_at > Duration::from_millis(5_000),
        "the ticket was not served in its margin (last signature {last_signed_at:?} after the fetch)"
    );
    let seconds: u64 = retry_after.parse().expect("Retry-After in seconds");
    assert!((1..=5).contains(&seconds), "Retry-After {seconds}");
    // Attempts at the renewal (2.4 s), 1 s later, and at the end of the usable life
    // (4.8 s): then the wait is 4 s, past the ticket's death. Without the shared
    // schedule each of the 3 instances would make its own.
    let failing_calls = deployment.sandbox.calls().getticket - 1;
    assert!(
        failing_calls % 3 == 0 && (6..=9).contains(&failing_calls),
        "{failing_calls} failing calls: not 2 or 3 attempts of 3 calls"
    );

    signs_again_once_wechat_is_back(&deployment, 1).await;
}

/// WeChat is healthy again: instance `i` signs within the longest backoff with nothing
/// usable (5 s), a request's wait and a check interval.
async fn signs_again_once_wechat_is_back(deployment: &Deployment, i: usize) {
    deployment.sandbox.clear_faults();
    let recovering = Instant::now();
    while !matches!(deployment.sign(i).await, Answer::Signed(_)) {
        assert!(
            recovering.elapsed() < Duration::from_secs(8),
            "instance {i} did not sign again within the 5 s backoff cap when WeChat did"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A cold deployment during an outage: WeChat is called about once a second in all
/// (retries included), not once per request or per instance, and every request gets a
/// quick 503 with a `Retry-After`; within seconds of WeChat coming back, signatures.
#[actix_web::test]
async fn an_outage_costs_about_one_call_a_second_and_the_deployment_recovers_within_seconds() {
    let deployment = Deployment::start(3, "").await;
    let mut busy = fault(Endpoint::StableToken, Some(-1), 0);
    busy.times = 0;
    deployment.sandbox.inject(busy);
    let outage = Instant::now();
    let mut answered = 0;
    while outage.elapsed() < Duration::from_secs(10) {
        let asked = Instant::now();
        match deployment.sign(answered % 3).await {
            Answer::Status(503, Some(_), body) => {
                assert_eq!(body["error"]["code"], "unavailable", "{body}")
            }
            Answer::Status(status, retry_after, body) => {
                panic!("{status} (Retry-After {retry_after:?}): {body}")
            }
            Answer::Signed(config) => panic!("signed during the outage: {config}"),
        }
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "a request waited {:?} during the outage",
            asked.elapsed()
        );
        answered += 1;
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    let calls = deployment.sandbox.calls().stable_token;
    let seconds = outage.elapsed().as_secs_f64();
    // Attempts at 0, 1, 3, 7 s, then every 5 s: 3 calls each.
    assert!(
        calls as f64 <= 1.5 * seconds,
        "{calls} calls in {seconds:.1} s of outage ({answered} requests)"
    );
    signs_again_once_wechat_is_back(&deployment, 2).await;
}

#[actix_web::test]
async fn a_token_invalidated_upstream_is_replaced_once_for_all_instances() {
    let deployment =
        Deployment::start(3, "[admin]\nkeys = [\"faults-admin-key-0123456789\"]").await;
    for i in 0..3 {
        deployment.sign_and_check(i).await;
    }
    // WeChat no longer takes the token, and an operator drops the ticket: its
    // replacement is asked for with the refused token and meets a 40001.
    deployment.sandbox.revoke_tokens(crate::helpers::APPID);
    let old = deployment
        .sandbox
        .current_ticket(crate::helpers::APPID)
        .expect("a ticket");
    let response = deployment.instances[0]
        .invalidate(
            "default",
            "jsapi_ticket",
            serde_json::json!({ "ticket": old }),
            "faults-admin-key-0123456789",
        )
        .await;
    assert_eq!(response.status(), 200);
    let calls = deployment.sandbox.calls();
    assert_eq!(
        (
            calls.stable_token,
            calls.stable_token_force,
            calls.getticket
        ),
        (2, 1, 3),
        "one forced replacement, one more ticket call: {calls:?}"
    );
    // Every instance drops the old ticket and signs with the new one within a check
    // interval, without asking WeChat again.
    let new = deployment
        .sandbox
        .current_ticket(crate::helpers::APPID)
        .expect("a ticket");
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let Answer::Signed(config) = deployment.sign(i).await else {
                panic!("instance {i} failed to sign");
            };
            let with_new = wx_jssdk::wechat::signature::sign_url(
                &new,
                config["nonceStr"].as_str().unwrap_or_default(),
                config["timestamp"].as_u64().unwrap_or_default(),
                crate::deployment::PAGE_URL,
            );
            if config["signature"] == with_new.as_str() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "instance {i} kept the old ticket"
            );
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(deployment.sandbox.calls(), calls);
}
