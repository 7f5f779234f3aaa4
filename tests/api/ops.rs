//! Operations, with the real binary: what `/metrics` reports and what SIGTERM does to
//! requests in flight and to the refresh locks. Each test runs its own process, so
//! the counters it reads are its own.

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use wx_jssdk::sandbox::Endpoint;

use crate::deployment::{Answer, Deployment};
use crate::helpers::{fault, APPID};

/// The value of one series (`name{labels}` exactly as exposed) in a scrape, 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a numeric sample"))
        .unwrap_or(0.0)
}

async fn scrape(deployment: &Deployment, i: usize) -> String {
    let response = deployment
        .client
        .get(format!("{}/metrics", deployment.instances[i].address))
        .send()
        .await
        .expect("scrape /metrics");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4",
        "Prometheus' text exposition format"
    );
    response.text().await.expect("a text body")
}

#[actix_web::test]
async fn metrics_count_wechat_calls_refreshes_lookups_and_requests_by_route_pattern() {
    let deployment = Deployment::start(1, "").await;
    let address = deployment.instances[0].address.clone();
    // WeChat busy once: the retry succeeds, and both attempts are counted.
    deployment
        .sandbox
        .inject(fault(Endpoint::StableToken, Some(-1), 0));
    deployment.sign_and_check(0).await; // cold: waits for the renewal
    deployment.sign_and_check(0).await; // warm: the instance's copy
    let named = deployment
        .client
        .get(format!("{address}/v1/apps/default/jssdk/config"))
        .query(&[("url", "https://page.example.com/named")])
        .send()
        .await
        .unwrap();
    assert_eq!(named.status(), 200);
    let unknown = deployment
        .client
        .get(format!("{address}/probe/path-4711"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    let text = scrape(&deployment, 0).await;
    for (series, expected) in [
        (
            r#"wxjssdk_upstream_calls_total{endpoint="stable_token",result="busy"}"#,
            1.0,
        ),
        (
            r#"wxjssdk_upstream_calls_total{endpoint="stable_token",result="ok"}"#,
            1.0,
        ),
        (
            r#"wxjssdk_upstream_calls_total{endpoint="getticket",result="ok"}"#,
            1.0,
        ),
        (
            r#"wxjssdk_refreshes_total{credential="access_token",result="ok"}"#,
            1.0,
        ),
        (
            r#"wxjssdk_refreshes_total{credential="jsapi_ticket",result="ok"}"#,
            1.0,
        ),
        // The first request waited; the ticket renewal's wait for its token is not a request's.
        ("wxjssdk_lock_waits_total", 1.0),
        ("wxjssdk_lock_wait_timeouts_total", 0.0),
        // Misses: the first request's ticket, then the renewal's token; hits: the next two.
        (
            r#"wxjssdk_cache_lookups_total{result="miss",tier="local"}"#,
            2.0,
        ),
        (
            r#"wxjssdk_cache_lookups_total{result="hit",tier="local"}"#,
            2.0,
        ),
        (
            r#"wxjssdk_http_requests_total{route="/wxJssdk/getJssdk",status="200"}"#,
            2.0,
        ),
        (
            r#"wxjssdk_http_requests_total{route="/v1/apps/{name}/jssdk/config",status="200"}"#,
            1.0,
        ),
        (
            r#"wxjssdk_http_requests_total{route="unmatched",status="404"}"#,
            1.0,
        ),
        (
            r#"wxjssdk_http_request_duration_seconds_count{route="/wxJssdk/getJssdk"}"#,
            2.0,
        ),
    ] {
        assert_eq!(sample(&text, series), expected, "{series} in:\n{text}");
    }
    assert!(
        sample(
            &text,
            r#"wxjssdk_cache_lookups_total{result="miss",tier="store"}"#
        ) >= 1.0,
        "the cold start looked in Redis:\n{text}"
    );
    // Labels are route patterns: no raw path, no app name.
    for raw in ["path-4711", "/v1/apps/default", "page.example.com"] {
        assert!(!text.contains(raw), "`{raw}` in the metrics:\n{text}");
    }
}

#[actix_web::test]
async fn a_request_that_waits_out_lock_wait_ms_is_counted_as_a_lock_wait_timeout() {
    let deployment = Deployment::start(1, "[cache]\nlock_wait_ms = 300").await;
    deployment
        .sandbox
        .inject(fault(Endpoint::StableToken, None, 2_000));
    match deployment.sign(0).await {
        Answer::Status(503, Some(_), body) => assert_eq!(body["error"]["code"], "unavailable"),
        Answer::Status(status, _, body) => panic!("{status}: {body}"),
        Answer::Signed(config) => panic!("signed while WeChat was slow: {config}"),
    }
    let text = scrape(&deployment, 0).await;
    assert_eq!(sample(&text, "wxjssdk_lock_waits_total"), 1.0, "{text}");
    assert_eq!(
        sample(&text, "wxjssdk_lock_wait_timeouts_total"),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"wxjssdk_http_requests_total{route="/wxJssdk/getJssdk",status="503"}"#
        ),
        1.0,
        "{text}"
    );
}

#[actix_web::test]
async fn sigterm_answers_the_request_in_flight_exits_and_releases_the_refresh_locks() {
    // Locks that would outlive the test if nobody released them.
    let mut deployment = Deployment::start(
        1,
        "[server]\nshutdown_timeout_secs = 20\n[cache]\nlock_ttl_ms = 120000\nlock_wait_ms = 1500",
    )
    .await;
    deployment
        .sandbox
        .inject(fault(Endpoint::StableToken, None, 60_000));
    let in_flight = deployment.client.get(format!(
        "{}/wxJssdk/getJssdk?url=https://page.example.com/",
        deployment.instances[0].address
    ));
    let in_flight = actix_web::rt::spawn(in_flight.send());
    let deadline = Instant::now() + Duration::from_secs(10);
    while deployment.sandbox.calls().stable_token < 1 {
        assert!(Instant::now() < deadline, "WeChat was never called");
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    // The instance holds the token lock while WeChat takes its time.
    let token_lock = format!("wxjssdk:{{{APPID}}}:lock:access_token");
    let ticket_lock = format!("wxjssdk:{{{APPID}}}:lock:jsapi_ticket");
    let mut redis = deployment.redis.connection().await;
    let ttl: i64 = redis.pttl(&token_lock).await.unwrap();
    assert!(ttl > 100_000, "the token lock is held (pttl {ttl})");

    let asked = Instant::now();
    deployment.instances[0].terminate();
    let answer = in_flight
        .await
        .expect("the request task")
        .expect("the request in flight is answered, not reset");
    let status = answer.status().as_u16();
    let body: serde_json::Value = answer.json().await.expect("a JSON answer");
    match status {
        200 => assert!(crate::helpers::signed_with_a_valid_ticket(
            &deployment.sandbox,
            &body
        )),
        503 => assert_eq!(body["error"]["code"], "unavailable", "{body}"),
        other => panic!("{other}: {body}"),
    }
    let exit = deployment.instances[0]
        .exit_within(Duration::from_secs(15))
        .await;
    assert!(exit.success(), "exit status {exit}");
    let stopped_in = asked.elapsed();

    // Right after the exit, not after the 120 s TTL.
    for key in [&token_lock, &ticket_lock] {
        let exists: bool = redis.exists(key).await.unwrap();
        assert!(!exists, "{key} still held after the process exited");
    }
    let log = deployment.log(0);
    assert!(
        log.contains(&format!("released refresh lock {token_lock} at shutdown")),
        "stopped in {stopped_in:?}:\n{log}"
    );
}
