//! Operations, with the real binary: what `/metrics` reports, what SIGTERM does to
//! requests in flight and to the refresh locks, and how the HTTP layer treats clients
//! that send too much or too slowly. Each test runs its own process, so the counters
//! it reads are its own.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use wx_jssdk::cache::{ChinaDay, Record};
use wx_jssdk::clock::now_ms;
use wx_sandbox::Endpoint;

use crate::deployment::{Answer, Deployment, PAGE_URL};
use crate::helpers::{fault, RunningBinary, Service, APPID};

/// The value of one series (`name{labels}` exactly as exposed) in a scrape, 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a numeric sample"))
        .unwrap_or(0.0)
}

async fn scrape(deployment: &Deployment, i: usize) -> String {
    let response = deployment.instances[i].get("/metrics").await;
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
    let instance = &deployment.instances[0];
    // WeChat busy once: the retry succeeds, and both attempts are counted.
    deployment
        .sandbox
        .inject(fault(Endpoint::StableToken, Some(-1), 0));
    deployment.sign_and_check(0).await; // cold: waits for the renewal
    deployment.sign_and_check(0).await; // warm: the instance's copy
    let named = instance
        .config_for("default", "https://page.example.com/named")
        .await;
    assert_eq!(named.status(), 200);
    let unknown = instance.get("/probe/path-4711").await;
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

const OPS_ADMIN_KEY: &str = "ops-admin-key-0123456789";

/// The stored record of the default app's `credential`.
async fn stored(deployment: &Deployment, credential: &str) -> Record {
    let mut redis = deployment.redis.connection().await;
    let raw: String = redis
        .get(format!("wxjssdk:{{{APPID}}}:{credential}"))
        .await
        .expect("a stored record");
    serde_json::from_str(&raw).expect("a record")
}

/// Invalidates the default app's current `credential` (`access_token`, `jsapi_ticket`)
/// with the admin key, naming it in `field` as a caller would; the answer's status.
async fn invalidate_current(deployment: &Deployment, credential: &str, field: &str) -> u16 {
    let value = stored(deployment, credential).await.value;
    let response = deployment.instances[0]
        .invalidate(
            "default",
            credential,
            serde_json::json!({ field: value }),
            OPS_ADMIN_KEY,
        )
        .await;
    response.status().as_u16()
}

/// What the alert rules watch follows the cache: each credential's deadline is its
/// record's, and goes with a refused copy; a renewal WeChat refuses is counted with
/// its reason; a forced token refresh is counted for its China day; Redis's state
/// follows the readiness check.
#[actix_web::test]
async fn the_metrics_the_alerts_watch_follow_deadlines_refusals_forced_refreshes_and_redis() {
    let deployment = Deployment::start(1, &format!("[admin]\nkeys = [\"{OPS_ADMIN_KEY}\"]")).await;
    let deadline = |credential: &str| {
        format!(
            r#"wxjssdk_credential_usable_until_timestamp_seconds{{app="default",credential="{credential}"}}"#
        )
    };
    deployment.sign_and_check(0).await;
    assert_eq!(deployment.status(0, "/readyz").await, 200);
    let text = scrape(&deployment, 0).await;
    for credential in ["access_token", "jsapi_ticket"] {
        let record = stored(&deployment, credential).await;
        assert_eq!(
            sample(&text, &deadline(credential)),
            record.usable_until as f64 / 1000.0,
            "{text}"
        );
    }
    assert_eq!(sample(&text, "wxjssdk_store_up"), 1.0, "{text}");

    // An operator drops the ticket, and WeChat refuses its replacement (45009).
    deployment
        .sandbox
        .inject(fault(Endpoint::GetTicket, Some(45009), 0));
    assert_eq!(
        invalidate_current(&deployment, "jsapi_ticket", "ticket").await,
        502
    );
    let text = scrape(&deployment, 0).await;
    let failures = r#"wxjssdk_credential_renewal_failures_total{app="default",credential="jsapi_ticket",reason="quota"}"#;
    assert_eq!(sample(&text, failures), 1.0, "{text}");
    assert!(
        !text.contains(&deadline("jsapi_ticket")),
        "the refused ticket's deadline is still exported:\n{text}"
    );

    // A caller invalidates the token: its replacement is a forced refresh.
    let before = now_ms();
    assert_eq!(
        invalidate_current(&deployment, "access_token", "access_token").await,
        200
    );
    let after = now_ms();
    let text = scrape(&deployment, 0).await;
    assert_eq!(
        sample(&text, r#"wxjssdk_forced_refreshes_today{app="default"}"#),
        1.0,
        "{text}"
    );
    // The end of the China day (UTC+8) of the refresh, which midnight may have split.
    let day_end = |at| ((ChinaDay::of(at).number + 1) * 86_400 - 8 * 3_600) as f64;
    let exported = sample(
        &text,
        r#"wxjssdk_forced_refreshes_day_end_timestamp_seconds{app="default"}"#,
    );
    assert!(
        [day_end(before), day_end(after)].contains(&exported),
        "{exported} is not the end of the China day:\n{text}"
    );
    let record = stored(&deployment, "access_token").await;
    assert_eq!(
        sample(&text, &deadline("access_token")),
        record.usable_until as f64 / 1000.0,
        "the replacement's deadline"
    );

    deployment.redis.kill();
    assert_eq!(deployment.status(0, "/readyz").await, 503);
    let text = scrape(&deployment, 0).await;
    assert!(text.contains("\nwxjssdk_store_up 0\n"), "{text}");
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
    let sent = Instant::now();
    let in_flight = deployment.sign_in_flight(0);
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
            &body,
            PAGE_URL,
            sent
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

/// Reads from `stream` until the server closes it (or `limit` passes); returns what
/// was read and when the connection ended.
fn read_until_closed(mut stream: TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(limit))
        .expect("a read timeout");
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(_) => {
                // Timed out: the server kept the connection open.
                return (String::from_utf8_lossy(&received).to_string(), None);
            }
        }
    }
    (
        String::from_utf8_lossy(&received).to_string(),
        Some(started.elapsed()),
    )
}

fn connect(address: &str) -> TcpStream {
    TcpStream::connect(address.trim_start_matches("http://")).expect("connect to the instance")
}

/// Sends `head` (a request's whole head) and returns the status line of the answer.
fn status_line_for(address: &str, head: &[u8]) -> String {
    let mut stream = connect(address);
    stream.write_all(head).expect("send the request");
    let (answer, closed) = read_until_closed(stream, Duration::from_secs(10));
    assert!(closed.is_some(), "no answer within 10 s: {answer}");
    answer.lines().next().unwrap_or_default().to_string()
}

#[actix_web::test]
async fn slow_and_oversized_requests_are_cut_off_and_the_process_stays_up() {
    let instance = RunningBinary::start(
        &["--dev"],
        &[("WXJSSDK__SERVER__CLIENT_REQUEST_TIMEOUT_MS", "1000")],
        Stdio::null(),
    )
    .await;
    let address = instance.address.clone();

    // Slowloris: a request line, or headers, that never end.
    for partial in [
        "GET /wxJssdk/getJs",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ",
    ] {
        let mut stream = connect(&address);
        stream.write_all(partial.as_bytes()).unwrap();
        let (answer, closed) = read_until_closed(stream, Duration::from_secs(10));
        let closed = closed.unwrap_or_else(|| panic!("{partial:?}: still open after 10 s"));
        assert!(
            closed < Duration::from_secs(4),
            "{partial:?}: disconnected only after {closed:?}"
        );
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{partial:?}: {answer}"
        );
    }

    // actix-http refuses a head over 128 KiB or with more than 96 headers: 431.
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(130 * 1024)
    );
    let long_uri = format!(
        "GET /wxJssdk/getJssdk?url={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(130 * 1024)
    );
    let many_headers = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..100)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    for (what, head) in [
        ("a 130 KiB header", big_header),
        ("a 130 KiB URI", long_uri),
        ("100 headers", many_headers),
    ] {
        let status = status_line_for(&address, head.as_bytes());
        assert!(status.starts_with("HTTP/1.1 431"), "{what}: {status:?}");
    }

    // Still serving.
    assert_eq!(instance.get("/healthz").await.status(), 200);
}
