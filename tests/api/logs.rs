//! Secrets, tokens and tickets never reach the logs, even at debug level and on the
//! error paths. Runs the real binary and reads everything it printed.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wx_jssdk::sandbox::{Endpoint, Fault};

use crate::helpers::{free_port, spawn_app, APPID, SECRET, SERVER_TOKEN};

#[actix_web::test]
async fn nothing_secret_is_logged_at_debug_level() {
    // The in-process app is only used for its sandbox and Redis.
    let env = spawn_app().await;
    let port = free_port();
    let mut config = tempfile::NamedTempFile::new().unwrap();
    write!(
        config,
        "[server]\nbind = \"127.0.0.1:{port}\"\n[redis]\nurl = \"{}\"\n[wechat]\napi_base = \"{}\"\n\
         [apps.default]\nappid = \"{APPID}\"\nsecret = \"{SECRET}\"\ntoken = \"{SERVER_TOKEN}\"\n",
        env.redis().url(),
        env.sandbox_url
    )
    .unwrap();
    let logs = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wx-jssdk"))
        .arg("--config")
        .arg(config.path())
        .env("RUST_LOG", "debug")
        .stdout(logs.reopen().unwrap())
        .stderr(Stdio::from(logs.reopen().unwrap()))
        .spawn()
        .unwrap();
    let address = format!("http://127.0.0.1:{port}");
    wait_until_up(&env.client, &address).await;

    let sign = || {
        env.client
            .get(format!("{address}/wxJssdk/getJssdk"))
            .query(&[("url", "https://page.example.com/")])
            .send()
    };
    env.sandbox.inject(Fault {
        endpoint: Endpoint::StableToken,
        errcode: Some(40125),
        delay_ms: 0,
        times: 1,
    });
    assert_eq!(sign().await.unwrap().status(), 502);
    assert_eq!(sign().await.unwrap().status(), 200);
    // A rejected token: dropped, force-refreshed, ticket fetched again.
    env.sandbox.revoke_tokens(APPID);
    let _: () = redis::AsyncCommands::del(
        &mut env.redis().connection().await,
        format!("wxjssdk:{{{APPID}}}:jsapi_ticket"),
    )
    .await
    .unwrap();
    assert_eq!(sign().await.unwrap().status(), 200);
    let _ = child.kill();
    let _ = child.wait();

    let printed = std::fs::read_to_string(logs.path()).unwrap();
    assert!(
        printed.contains("refreshed"),
        "the run should have logged its refreshes:\n{printed}"
    );
    for secret in [SECRET, SERVER_TOKEN, "sbx-at-", "sbx-st-", "sbx-tk-"] {
        assert!(
            !printed.contains(secret),
            "`{secret}` appears in the logs:\n{printed}"
        );
    }
}

async fn wait_until_up(client: &reqwest::Client, address: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .get(format!("{address}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "wx-jssdk did not start within 20 s"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}
