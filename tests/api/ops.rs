//! Operations, with the real binary: what `/metrics` reports. Each test runs its own
//! process, so the counters it reads are its own.

use wx_jssdk::sandbox::Endpoint;

use crate::deployment::{Answer, Deployment};
use crate::helpers::fault;

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
