//! Trust boundaries: who may get a card signature, what guessing admin keys costs,
//! what strangers are told, where metrics are served, and how long a body may take.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use wx_sandbox::{Endpoint, Fault};

use crate::helpers::{
    error_code, retry_after, spawn_app_with, wechat_signature, Options, RunningBinary, Service,
    TestApp, SERVER_TOKEN,
};

const KEY: &str = "trust-test-admin-key-0123456789";
const WRONG: &str = "wrong-admin-key-guessed-0123456";

const ADD: [(&str, &str); 3] = [
    ("card_id", "pCard"),
    ("code", "CODE-1"),
    ("openid", "oUser"),
];

#[actix_web::test]
async fn add_card_needs_an_admin_key_and_choose_card_does_not() {
    let app = spawn_app_with(Options {
        admin_keys: vec![KEY],
        extra_apps: vec![("open", "wxopen0000000001")],
        card_sign_public: vec!["open"],
        ..Options::default()
    })
    .await;
    let anonymous = app.card("default", &ADD, None).await;
    let challenge = anonymous.headers().get("www-authenticate").cloned();
    assert_eq!(error_code(anonymous, 401).await, "unauthorized");
    assert!(challenge.is_some_and(|c| c.to_str().unwrap().starts_with("Bearer")));
    assert_eq!(
        error_code(app.card("default", &ADD, Some(WRONG)).await, 401).await,
        "unauthorized"
    );
    // Without a key nothing was signed, so no card ticket was fetched either.
    assert_eq!(app.sandbox.calls().getticket, 0);

    let signed = app.card("default", &ADD, Some(KEY)).await;
    assert_eq!(signed.status(), 200);
    let answer: serde_json::Value = signed.json().await.unwrap();
    assert!(answer["cardExt"].as_str().unwrap().contains("CODE-1"));

    let choose = [("purpose", "choose_card"), ("shop_id", "s1")];
    assert_eq!(app.card("default", &choose, None).await.status(), 200);

    // An app that opted in signs for browsers.
    let public = app.card("open", &ADD, None).await;
    assert_eq!(public.status(), 200);
}

#[actix_web::test]
async fn add_card_is_refused_when_no_admin_key_is_configured() {
    let app = spawn_app_with(Options::default()).await;
    assert_eq!(
        error_code(app.card("default", &ADD, Some(KEY)).await, 401).await,
        "unauthorized"
    );
}

/// The default app's access_token, with `key`, from the client `forwarded_for` names
/// if any (as a proxy in front would say).
async fn access_token(
    app: &TestApp,
    key: Option<&str>,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut request = app.request(reqwest::Method::GET, "/v1/apps/default/access_token");
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(client) = forwarded_for {
        request = request.header("X-Forwarded-For", client);
    }
    request.send().await.expect("request the service")
}

#[actix_web::test]
async fn ten_wrong_keys_in_a_minute_and_the_client_waits_for_the_minute_to_end() {
    let app = spawn_app_with(Options {
        admin_keys: vec![KEY],
        ..Options::default()
    })
    .await;
    // Requests without a key are not guesses.
    for _ in 0..20 {
        assert_eq!(access_token(&app, None, None).await.status(), 401);
    }
    for guess in 0..10 {
        let refused = access_token(&app, Some(WRONG), None).await;
        assert_eq!(refused.status(), 401, "guess {guess}");
    }
    for key in [WRONG, KEY] {
        let limited = access_token(&app, Some(key), None).await;
        let wait: u64 = retry_after(&limited).expect("Retry-After").parse().unwrap();
        assert!((1..=60).contains(&wait), "Retry-After: {wait}");
        assert_eq!(error_code(limited, 429).await, "rate_limited");
    }
    // The card route counts against the same budget.
    assert_eq!(
        error_code(app.card("default", &ADD, Some(KEY)).await, 429).await,
        "rate_limited"
    );
    assert_eq!(
        app.sandbox.calls().stable_token,
        0,
        "no key was compared, nothing fetched"
    );
}

#[actix_web::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let app = spawn_app_with(Options {
        admin_keys: vec![KEY],
        trusted_proxies: vec!["127.0.0.1"],
        ..Options::default()
    })
    .await;
    for _ in 0..10 {
        access_token(&app, Some(WRONG), Some("203.0.113.9")).await;
    }
    let guesser = access_token(&app, Some(KEY), Some("203.0.113.9")).await;
    assert_eq!(guesser.status(), 429);
    // A client cannot pose as another by writing the header itself: what it wrote is
    // left of the address the proxy appended.
    let spoofed = access_token(&app, Some(KEY), Some("198.51.100.1, 203.0.113.9")).await;
    assert_eq!(spoofed.status(), 429);
    let other = access_token(&app, Some(KEY), Some("203.0.113.10")).await;
    assert_eq!(other.status(), 200);
}

#[actix_web::test]
async fn without_trusted_proxies_the_forwarded_header_does_not_reset_the_budget() {
    let app = spawn_app_with(Options {
        admin_keys: vec![KEY],
        ..Options::default()
    })
    .await;
    for i in 0..10 {
        access_token(&app, Some(WRONG), Some(&format!("203.0.113.{i}"))).await;
    }
    let next = access_token(&app, Some(KEY), Some("203.0.113.200")).await;
    assert_eq!(next.status(), 429);
}

/// What no anonymous answer may contain: WeChat's errmsg and errcodes, configuration
/// keys, the store's error text.
const INTERNALS: [&str; 9] = [
    "sandbox injected",
    "errcode",
    "40125",
    "apps.",
    "secret",
    "redis",
    "connection refused",
    "os error",
    "check ",
];

fn assert_tells_nothing(body: &str) {
    for internal in INTERNALS {
        assert!(
            !body.to_lowercase().contains(internal),
            "{internal:?} in {body}"
        );
    }
}

#[actix_web::test]
async fn strangers_get_the_code_and_operators_get_wechats_answer() {
    let app = spawn_app_with(Options {
        admin_keys: vec![KEY],
        ..Options::default()
    })
    .await;
    app.sandbox
        .inject(Fault::errcode(Endpoint::StableToken, 40125).times(100));
    let page = app.sign("https://page.example.com/").await;
    let status = page.status().as_u16();
    let body = page.text().await.unwrap();
    assert!(matches!(status, 502 | 503), "{status} {body}");
    assert!(body.contains("\"code\""), "{body}");
    assert_tells_nothing(&body);

    let operator = access_token(&app, Some(KEY), None).await;
    assert!(operator.status().is_server_error());
    let detail = operator.text().await.unwrap();
    assert!(
        detail.contains("40125"),
        "the operator is told WeChat's answer: {detail}"
    );

    let other = spawn_app_with(Options::default()).await;
    other
        .sandbox
        .inject(Fault::errcode(Endpoint::GetTicket, 48001).times(100));
    let page = other.sign("https://page.example.com/").await;
    assert_eq!(page.status(), 502);
    assert_tells_nothing(&page.text().await.unwrap());
}

#[actix_web::test]
async fn a_lost_store_is_named_but_its_error_is_not_told() {
    let app = spawn_app_with(Options::default()).await;
    app.redis().kill();
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"status": "unready", "reason": "store"})
    );
    let page = app.sign("https://page.example.com/").await;
    assert_eq!(page.status(), 503);
    assert_tells_nothing(&page.text().await.unwrap());
}

#[actix_web::test]
async fn with_an_operations_listener_metrics_are_served_there_only() {
    let app = spawn_app_with(Options {
        ops_listener: true,
        ..Options::default()
    })
    .await;
    assert!(app.ops_address.is_some(), "an operations listener");
    assert_eq!(
        error_code(app.get("/metrics").await, 404).await,
        "not_found"
    );
    let metrics = app.ops_get("/metrics").await;
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("wxjssdk_"));
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(app.get(probe).await.status(), 200, "public {probe}");
        assert_eq!(app.ops_get(probe).await.status(), 200, "ops {probe}");
    }
    // The operations listener signs nothing.
    let signing = app
        .ops_get("/wxJssdk/getJssdk?url=https://page.example.com/")
        .await;
    assert_eq!(signing.status(), 404);
    // Without one, metrics stay on the public listener.
    let plain = spawn_app_with(Options::default()).await;
    assert!(plain.ops_address.is_none());
    assert_eq!(plain.get("/metrics").await.status(), 200);
}

/// Sends `head` and the first bytes of a body that never completes, and returns
/// everything the server answered until it closed the connection.
fn send_a_slow_body(address: &str, head: &str) -> String {
    let host = address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).expect("connect");
    // A guard against a hang, far above the deadline under test.
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(b"{\"url\": \"https://pa").unwrap();
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("the server answers and closes the connection");
    String::from_utf8_lossy(&answer).to_string()
}

#[actix_web::test]
async fn a_body_that_does_not_arrive_in_time_is_answered_408_and_the_connection_closed() {
    let app = spawn_app_with(Options::default().set("server.client_body_timeout_ms", 300)).await;
    let signature = wechat_signature(SERVER_TOKEN, "1", "2");
    let push = format!("/v1/apps/default/verify?signature={signature}&timestamp=1&nonce=2");
    for path in ["/v1/apps/default/jssdk/config", push.as_str()] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 1000\r\n\r\n"
        );
        let address = app.address.clone();
        let answer = actix_web::rt::task::spawn_blocking(move || send_a_slow_body(&address, &head))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
    }
    // A body that arrives in time is read as before.
    let signed = app
        .post_config_for("default", "https://page.example.com/")
        .await;
    assert_eq!(signed.status(), 200);
}

#[actix_web::test]
async fn the_first_refusal_of_a_guessing_window_is_logged_with_the_client_address() {
    let logs = tempfile::NamedTempFile::new().unwrap();
    let binary = RunningBinary::start(
        &["--dev"],
        &[("RUST_LOG", "warn"), ("WXJSSDK__ADMIN__KEYS", KEY)],
        Stdio::from(logs.reopen().unwrap()),
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..13 {
        let response = binary.access_token("default", Some(WRONG)).await;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [[401; 10].as_slice(), &[429; 3]].concat());
    let printed = std::fs::read_to_string(logs.path()).unwrap();
    let refusals: Vec<&str> = printed
        .lines()
        .filter(|line| line.contains("failed admin authentications"))
        .collect();
    assert_eq!(refusals.len(), 1, "{printed}");
    assert!(refusals[0].contains("127.0.0.1"), "{printed}");
    assert!(
        !printed.contains(WRONG),
        "a guessed key is never logged: {printed}"
    );
}
