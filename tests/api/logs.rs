//! Secrets, tokens and tickets never reach the logs, even at debug level and on the
//! error paths. Runs the real binary and reads everything it printed.

use std::io::Write;
use std::process::Stdio;

use wx_jssdk::sandbox::Endpoint;

use crate::helpers::{fault, spawn_app, RunningBinary, APPID, SECRET, SERVER_TOKEN};

#[actix_web::test]
async fn nothing_secret_is_logged_at_debug_level() {
    // The in-process app is only used for its sandbox and Redis.
    let env = spawn_app().await;
    let mut config = tempfile::NamedTempFile::new().unwrap();
    write!(
        config,
        "[redis]\nurl = \"{}\"\n[wechat]\napi_base = \"{}\"\n\
         [apps.default]\nappid = \"{APPID}\"\nsecret = \"{SECRET}\"\ntoken = \"{SERVER_TOKEN}\"\n",
        env.redis().url(),
        env.sandbox_url
    )
    .unwrap();
    let logs = tempfile::NamedTempFile::new().unwrap();
    let config_path = config.path().to_string_lossy().to_string();
    let mut binary = RunningBinary::start(
        &["--config", &config_path],
        &[("RUST_LOG", "debug")],
        Stdio::from(logs.reopen().unwrap()),
    )
    .await;
    let address = binary.address.clone();

    let sign = || {
        env.client
            .get(format!("{address}/wxJssdk/getJssdk"))
            .query(&[("url", "https://page.example.com/")])
            .send()
    };
    env.sandbox
        .inject(fault(Endpoint::StableToken, Some(40125), 0));
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
    binary.stop();

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
