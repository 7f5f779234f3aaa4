//! Horizontal scaling under faults, with real processes: three `wx-jssdk` instances
//! from the built binary, a private `redis-server` and the sandbox WeChat API.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use wx_jssdk::sandbox::Endpoint;

use crate::deployment::{Answer, Deployment};
use crate::helpers::fault;

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
    let doomed = deployment.client.get(format!(
        "{}/wxJssdk/getJssdk?url=https://page.example.com/",
        deployment.instances[0].address
    ));
    let doomed = actix_web::rt::spawn(doomed.send());
    while deployment.sandbox.calls().stable_token < 1 {
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
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
                Answer::Signed(config) => {
                    assert!(crate::helpers::signed_with_a_valid_ticket(
                        &deployment.sandbox,
                        &config
                    ));
                }
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

#[actix_web::test]
async fn a_failing_wechat_is_retried_and_the_valid_copy_serves_until_it_expires() {
    let deployment = Deployment::start(3, "").await;
    deployment.sandbox.set_expires_in(6); // usable 4.8 s, renewal from 2.4 s
    for i in 0..3 {
        deployment.sign_and_check(i).await;
    }
    let mut busy = fault(Endpoint::GetTicket, Some(-1), 0);
    busy.times = 0; // until cleared
    deployment.sandbox.inject(busy);
    let warm_until = Instant::now() + Duration::from_millis(4_300);
    let mut signed = 0;
    while Instant::now() < warm_until {
        deployment.sign_and_check(signed % 3).await;
        signed += 1;
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    // Past the copy's usable life: a clear, retryable error, never a stale ticket.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match deployment.sign(0).await {
            Answer::Signed(config) => {
                assert!(crate::helpers::signed_with_a_valid_ticket(
                    &deployment.sandbox,
                    &config
                ));
                assert!(
                    Instant::now() < deadline,
                    "still signing long after the ticket expired"
                );
            }
            Answer::Status(status, retry_after, body) => {
                assert_eq!(
                    (status, body["error"]["code"].as_str()),
                    (503, Some("unavailable")),
                    "{body}"
                );
                assert!(retry_after.is_some());
                break;
            }
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    // Bounded retries: each renewal attempt is 1 call and 2 retries; instances back
    // off between attempts, so a WeChat outage costs a handful of calls, not a storm.
    let failing_calls = deployment.sandbox.calls().getticket - 1;
    assert!(
        failing_calls % 3 == 0 || failing_calls > 0,
        "{failing_calls}"
    );
    assert!(
        failing_calls <= 3 * 3 * 4,
        "{failing_calls} calls during a ~6 s outage"
    );

    deployment.sandbox.clear_faults();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(deployment.sign(1).await, Answer::Signed(_)) {
        assert!(
            Instant::now() < deadline,
            "service did not resume when WeChat did"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn wechat_refusing_with_no_valid_copy_is_a_502() {
    let deployment = Deployment::start(1, "").await;
    deployment
        .sandbox
        .inject(fault(Endpoint::StableToken, Some(45009), 0));
    match deployment.sign(0).await {
        Answer::Status(status, _, body) => {
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (502, Some("upstream_error")),
                "{body}"
            );
            assert!(body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("45009"));
        }
        Answer::Signed(config) => panic!("signed despite the quota error: {config}"),
    }
    assert_eq!(
        deployment.sandbox.calls().stable_token,
        1,
        "a quota error is not retried"
    );
}

#[actix_web::test]
async fn a_token_invalidated_upstream_is_replaced_once_for_all_instances() {
    let deployment = Deployment::start(3, "").await;
    deployment.sandbox.set_expires_in(6);
    for i in 0..3 {
        deployment.sign_and_check(i).await;
    }
    // The next ticket renewal meets 40001 (the token is no longer good upstream).
    deployment
        .sandbox
        .inject(fault(Endpoint::GetTicket, Some(40001), 0));
    steady_load(&deployment, Duration::from_secs(15), |d| {
        d.sandbox.calls().getticket >= 3
    })
    .await;
    let calls = deployment.sandbox.calls();
    assert_eq!(
        calls.stable_token_force, 1,
        "one coordinated replacement: {calls:?}"
    );
    // And the instances go on signing with the new ticket.
    for i in 0..3 {
        deployment.sign_and_check(i).await;
    }
}
