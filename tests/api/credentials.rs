//! A Redis that wants a password (`requirepass`) or an ACL user, as managed Redis
//! services do: the store works with the right credentials from the URL, and the wrong
//! ones are a clear error that names no password, in the store's errors and in the
//! service's logs.

use std::io::Write;
use std::process::Stdio;

use wx_jssdk::cache::{RedisStore, Store};

use crate::common::free_port;
use crate::helpers::{RunningBinary, Service, APPID, SECRET, SERVER_TOKEN};
use crate::store::single_redis;
use crate::tls::{refused, RedisProcess};

const PASSWORD: &str = "requirepass-5b1e7c";
const USER: &str = "wx";
const USER_PASSWORD: &str = "acl-pass-9d24f0";
const WRONG: &str = "wrong-pass-3a8c61";

/// A `redis-server` whose default user needs [`PASSWORD`], with an ACL user [`USER`]
/// of its own password.
fn start(log: &std::path::Path) -> RedisProcess {
    let port = free_port();
    let (port_option, user_password) = (port.to_string(), format!(">{USER_PASSWORD}"));
    let options = [
        "--port",
        &port_option,
        "--requirepass",
        PASSWORD,
        "--user",
        USER,
        "on",
        &user_password,
        "~*",
        "+@all",
    ];
    RedisProcess::start(port, &options, log)
}

async fn round_trip(url: String) -> Result<(), String> {
    let store = Store::Redis(RedisStore::new(&single_redis(url)).unwrap());
    store
        .set("credentials", "v", std::time::Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(
        store.get("credentials").await.unwrap().as_deref(),
        Some("v")
    );
    Ok(())
}

#[actix_web::test]
async fn the_store_works_with_the_right_credentials_and_names_no_password_with_wrong_ones() {
    let dir = tempfile::tempdir().unwrap();
    let redis = start(&dir.path().join("redis.log"));
    let url = |user: &str, password: &str| {
        format!("redis://{user}:{password}@127.0.0.1:{}/0", redis.port)
    };
    round_trip(url("", PASSWORD)).await.expect("requirepass");
    round_trip(url(USER, USER_PASSWORD))
        .await
        .expect("ACL user");

    for (user, password) in [
        ("", WRONG),
        (USER, WRONG),
        (USER, PASSWORD),
        ("nobody", USER_PASSWORD),
    ] {
        let store = Store::Redis(RedisStore::new(&single_redis(url(user, password))).unwrap());
        let error = refused(&store).await;
        assert!(
            error.contains("authentication failed"),
            "user `{user}`: {error}"
        );
        for secret in [WRONG, PASSWORD, USER_PASSWORD, "redis://"] {
            assert!(!error.contains(secret), "`{secret}` in: {error}");
        }
    }
    // Without credentials, the server says so.
    let anonymous = format!("redis://127.0.0.1:{}/0", redis.port);
    let error = round_trip(anonymous).await.expect_err("NOAUTH");
    assert!(
        error.contains("NOAUTH") || error.contains("Authentication"),
        "{error}"
    );
}

#[actix_web::test]
async fn a_wrong_password_is_logged_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let redis = start(&dir.path().join("redis.log"));
    let mut config = tempfile::NamedTempFile::new().unwrap();
    write!(
        config,
        "[redis]\nurl = \"redis://{USER}:{WRONG}@127.0.0.1:{}/0\"\n\
         [wechat]\napi_base = \"http://127.0.0.1:{}\"\n\
         [apps.default]\nappid = \"{APPID}\"\nsecret = \"{SECRET}\"\ntoken = \"{SERVER_TOKEN}\"\n",
        redis.port,
        free_port(),
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
    assert_eq!(binary.get("/readyz").await.status(), 503);
    assert!(!binary
        .sign("https://page.example.com/")
        .await
        .status()
        .is_success());
    binary.stop();

    let printed = std::fs::read_to_string(logs.path()).unwrap();
    assert!(
        printed.contains("credential store unreachable")
            && printed.contains("authentication failed"),
        "the refusal should be logged:\n{printed}"
    );
    for secret in [WRONG, "redis://"] {
        assert!(
            !printed.contains(secret),
            "`{secret}` appears in the logs:\n{printed}"
        );
    }
}
