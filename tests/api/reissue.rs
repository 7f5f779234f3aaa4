//! Values WeChat hands out again: the same ticket (or WeChat Work token) with a fresh
//! `expires_in`, valid only until its first expiry. Three instances on one Redis keep
//! signing across several windows: no answer fails, every signature verifies with a
//! ticket that was valid when it was made, and each credential costs at most 3 calls
//! in any validity window (the renewal that finds the same value, the call at its
//! expiry, and one more if WeChat still hands out the old value at that instant).

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use wx_jssdk::wechat::signature::sign_url;
use wx_sandbox::{Endpoint, TicketKind};

use crate::helpers::{most_calls_in_a_window, spawn_app_with, Options, Service, TestApp};

/// The sandbox's `expires_in`: a window of 3 s (usable 2.4 s, renewed from 1.2 s).
const LIFE: Duration = Duration::from_secs(3);
/// Four windows of load.
const RUN: Duration = Duration::from_secs(12);

/// Keeps `instances` signing with `check` every 20 ms each for [`RUN`].
async fn steady_load(instances: &[&TestApp], check: impl AsyncFn(&TestApp)) -> usize {
    let started = Instant::now();
    let signed = join_all(instances.iter().map(|app| async {
        let mut signed = 0;
        while started.elapsed() < RUN {
            check(app).await;
            signed += 1;
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        signed
    }))
    .await;
    signed.iter().sum()
}

fn assert_within_budget(app: &TestApp, endpoints: &[Endpoint]) {
    let calls = app.sandbox.calls();
    for &endpoint in endpoints {
        let most = most_calls_in_a_window(&app.sandbox, endpoint, LIFE);
        eprintln!(
            "{endpoint:?}: {} calls in {RUN:?}, at most {most} in a {LIFE:?} window",
            calls.of(endpoint)
        );
        assert!(
            most <= 3,
            "{most} {endpoint:?} calls within one {LIFE:?} window: {calls:?}"
        );
        // Something was renewed: at least one call per window after the first.
        assert!(
            calls.of(endpoint) >= 4,
            "{endpoint:?} was not renewed: {calls:?}"
        );
    }
}

#[actix_web::test]
async fn reissued_tickets_are_served_to_their_first_expiry_within_3_calls_a_window() {
    let first = spawn_app_with(Options::default()).await;
    first.sandbox.set_reissue(Endpoint::GetTicket, true);
    first.sandbox.set_expires_in(LIFE.as_secs());
    let (second, third) = (first.spawn_instance(), first.spawn_instance());
    let signed = steady_load(&[&first, &second, &third], async |app: &TestApp| {
        // 200, over the URL asked for, with a ticket valid since the request.
        app.sign_and_check("https://page.example.com/reissued")
            .await;
    })
    .await;
    assert!(signed > 600, "steady load: {signed} signatures");
    assert_within_budget(&first, &[Endpoint::GetTicket, Endpoint::StableToken]);
}

const CORPID: &str = "wwreissue0000000001";

/// Checks a WeChat Work app's answer: `wx.config` with a corp ticket and
/// `wx.agentConfig` with an agent ticket, each valid since `sent`.
async fn work_config_and_check(app: &TestApp) {
    let url = "https://work.example.com/reissued";
    let sent = Instant::now();
    let response = app.config_for("work", url).await;
    assert_eq!(response.status(), 200);
    let config: serde_json::Value = response.json().await.expect("a JSON config");
    let verifies = |kind: TicketKind, fields: &serde_json::Value| {
        let tickets = app
            .sandbox
            .tickets_valid_during(CORPID, kind, sent, Instant::now());
        tickets.iter().any(|ticket| {
            let expected = sign_url(
                ticket,
                fields["nonceStr"].as_str().unwrap_or_default(),
                fields["timestamp"].as_u64().unwrap_or_default(),
                url,
            );
            fields["signature"] == expected.as_str()
        })
    };
    assert!(verifies(TicketKind::Jsapi, &config), "{config}");
    assert!(
        verifies(TicketKind::Agent, &config["agentConfig"]),
        "{config}"
    );
}

/// WeChat Work re-issues its token and both tickets (the sandbox's default, as
/// WeChat Work documents it).
#[actix_web::test]
async fn a_work_apps_reissued_token_and_tickets_stay_within_3_calls_a_window() {
    let first = spawn_app_with(Options {
        work_apps: vec![("work", CORPID, "1000002")],
        ..Options::default()
    })
    .await;
    first.sandbox.set_expires_in(LIFE.as_secs());
    let (second, third) = (first.spawn_instance(), first.spawn_instance());
    let signed = steady_load(&[&first, &second, &third], work_config_and_check).await;
    assert!(signed > 600, "steady load: {signed} signatures");
    assert_within_budget(
        &first,
        &[
            Endpoint::WorkToken,
            Endpoint::WorkJsapiTicket,
            Endpoint::AgentTicket,
        ],
    );
}

/// WeChat minted the ticket a moment after the request that brought it (here 300 ms):
/// at the expiry recorded for it, WeChat still hands out the same ticket. It is asked
/// for once more a second later, while requests wait for it instead of failing.
#[actix_web::test]
async fn a_ticket_handed_out_again_just_past_its_expiry_is_asked_for_once_more() {
    let app = spawn_app_with(Options::default()).await;
    app.sandbox.set_reissue(Endpoint::GetTicket, true);
    app.sandbox.set_expires_in(LIFE.as_secs());
    app.sandbox.inject(wx_sandbox::Fault::delay(
        Endpoint::GetTicket,
        Duration::from_millis(300),
    ));
    let started = Instant::now();
    // Through the expiry (3 s) and the second ask (4 s): every answer a signature.
    while started.elapsed() < Duration::from_millis(5_000) {
        app.sign_and_check("https://page.example.com/just-past")
            .await;
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let at: Vec<f64> = app
        .sandbox
        .call_log()
        .iter()
        .filter(|c| c.endpoint == Endpoint::GetTicket)
        .map(|c| (c.at - started).as_secs_f64())
        .collect();
    // The first fetch, the renewal that finds it re-issued, the call at its expiry
    // that still gets it, and one more a second later.
    assert_eq!(at.len(), 4, "ticket calls at {at:?} s");
    let (stale, again) = (at[2], at[3]);
    assert!(
        (2.9..3.5).contains(&stale),
        "the call at the expiry came at {stale} s"
    );
    assert!(
        (0.9..1.5).contains(&(again - stale)),
        "asked again after {} s",
        again - stale
    );
}
