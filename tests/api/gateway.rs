//! The WeChat-compatible gateway (`[gateway] enabled = true`): what an SDK pointed at
//! the service relies on. Tokens from the shared cache for holders of the secret,
//! tickets for holders of a token, every other call forwarded for holders of a
//! current token (and nobody else), bodies streamed both ways, and a refused token
//! healed once for the whole deployment.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use wx_sandbox::{Endpoint, Fault};

use crate::helpers::{
    spawn_app, spawn_app_with, start_sandbox, Options, RunningBinary, Service, TestApp, APPID,
    SECRET,
};

const CORPID: &str = "wwgateway00000001";

fn gateway() -> Options {
    Options::default().set("gateway.enabled", "true")
}

async fn json_of(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200, "WeChat's answers are HTTP 200");
    response.json().await.expect("a JSON answer")
}

/// The default app's token, as an SDK fetches it through the gateway.
async fn token_of(app: &impl Service) -> String {
    let query = [
        ("grant_type", "client_credential"),
        ("appid", APPID),
        ("secret", SECRET),
    ];
    let answer = json_of(app.wechat_get("/cgi-bin/token", &query).await).await;
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("a token: {answer}"))
        .to_string()
}

async fn stable_token(app: &TestApp, force_refresh: bool) -> Value {
    let body = json!({"grant_type": "client_credential", "appid": APPID, "secret": SECRET,
                      "force_refresh": force_refresh});
    let response = app
        .wechat_post(
            "/cgi-bin/stable_token",
            &(),
            "application/json",
            body.to_string(),
        )
        .await;
    json_of(response).await
}

#[actix_web::test]
async fn the_gateway_is_off_by_default() {
    let app = spawn_app().await;
    let query = [
        ("grant_type", "client_credential"),
        ("appid", APPID),
        ("secret", SECRET),
    ];
    for path in [
        "/cgi-bin/token",
        "/cgi-bin/menu/get",
        "/datacube/getusersummary",
    ] {
        assert_eq!(app.wechat_get(path, &query).await.status(), 404, "{path}");
    }
    assert_eq!(
        app.sandbox.calls(),
        Default::default(),
        "nothing went upstream"
    );
}

#[actix_web::test]
async fn holders_of_the_secret_get_the_shared_token_and_nobody_else() {
    let app = spawn_app_with(gateway()).await;
    let token = token_of(&app).await;
    assert_eq!(
        stable_token(&app, false).await["access_token"],
        token.as_str()
    );
    let second = app.spawn_instance();
    assert_eq!(token_of(&second).await, token, "the deployment's one token");
    assert_eq!(
        app.sandbox.calls().stable_token,
        1,
        "one token call upstream"
    );

    let errcode = |query: [(&'static str, &'static str); 3]| {
        let app = &app;
        async move { json_of(app.wechat_get("/cgi-bin/token", &query).await).await["errcode"].clone() }
    };
    let grant = ("grant_type", "client_credential");
    assert_eq!(
        errcode([grant, ("appid", APPID), ("secret", "wrong")]).await,
        40125
    );
    assert_eq!(
        errcode([grant, ("appid", "wxunknown"), ("secret", SECRET)]).await,
        40013
    );
    assert_eq!(
        errcode([("grant_type", "x"), ("appid", APPID), ("secret", SECRET)]).await,
        40002
    );
    assert_eq!(
        errcode([grant, ("appid", APPID), ("secret", "")]).await,
        41004
    );
    let wrong = json!({"grant_type": "client_credential", "appid": APPID, "secret": "nope"});
    let answer = app
        .wechat_post(
            "/cgi-bin/stable_token",
            &(),
            "application/json",
            wrong.to_string(),
        )
        .await;
    let answer = json_of(answer).await;
    assert_eq!(answer["errcode"], 40125);
    assert!(answer.get("access_token").is_none(), "{answer}");
    assert_eq!(
        app.sandbox.calls().stable_token,
        1,
        "refusals cost nothing upstream"
    );
}

#[actix_web::test]
async fn a_forced_refresh_goes_through_the_budgeted_invalidation() {
    let app = spawn_app_with(gateway()).await;
    let first = stable_token(&app, false).await["access_token"].clone();
    let forced = stable_token(&app, true).await["access_token"].clone();
    assert_ne!(forced, first, "a new token");
    assert_eq!(app.sandbox.calls().stable_token_force, 1);
    // Beyond the limits (one invalidation per 30 s per app): the current token.
    let again = stable_token(&app, true).await["access_token"].clone();
    assert_eq!(again, forced);
    assert_eq!(
        app.sandbox.calls().stable_token_force,
        1,
        "no second forced call"
    );
    assert_eq!(token_of(&app).await, forced.as_str().unwrap_or_default());
}

#[actix_web::test]
async fn work_apps_get_their_token_and_tickets_and_their_calls_go_to_wechat_work() {
    // WeChat Work's API on a sandbox of its own, to see where each call goes.
    let (work, work_url) = start_sandbox();
    let mut options = gateway().set("wechat.work_api_base", work_url);
    options.work_apps = vec![("work", CORPID, "1000002")];
    let app = spawn_app_with(options).await;
    let gettoken = |corpid: &'static str, secret: &'static str| {
        let app = &app;
        async move {
            let query = [("corpid", corpid), ("corpsecret", secret)];
            json_of(app.wechat_get("/cgi-bin/gettoken", &query).await).await
        }
    };
    let answer = gettoken(CORPID, SECRET).await;
    assert_eq!(answer["errcode"], 0, "{answer}");
    let token = answer["access_token"]
        .as_str()
        .expect("a token")
        .to_string();
    assert_eq!(
        gettoken(CORPID, SECRET).await["access_token"],
        token.as_str()
    );
    assert_eq!(work.calls().work_token, 1);
    assert_eq!(gettoken(CORPID, "wrong").await["errcode"], 40001);
    assert_eq!(gettoken("wwunknown", SECRET).await["errcode"], 40013);

    let jsapi = app
        .wechat_get("/cgi-bin/get_jsapi_ticket", &[("access_token", &token)])
        .await;
    let jsapi = json_of(jsapi).await;
    assert!(
        work.valid_corp_tickets(CORPID)
            .contains(&jsapi["ticket"].as_str().unwrap_or_default().to_string()),
        "{jsapi}"
    );
    let query = [("access_token", token.as_str()), ("type", "agent_config")];
    let agent = json_of(app.wechat_get("/cgi-bin/ticket/get", &query).await).await;
    let agent_ticket = agent["ticket"].as_str().unwrap_or_default().to_string();
    assert!(
        work.valid_agent_tickets(CORPID).contains(&agent_ticket),
        "{agent}"
    );
    // An official account's token is no Work app's.
    let official = token_of(&app).await;
    let refused = app
        .wechat_get("/cgi-bin/get_jsapi_ticket", &[("access_token", &official)])
        .await;
    assert_eq!(json_of(refused).await["errcode"], 40001);

    let query = [("access_token", token.as_str()), ("userid", "zhangsan")];
    let echo = json_of(app.wechat_get("/cgi-bin/user/get", &query).await).await;
    assert_eq!(
        echo["path"], "/cgi-bin/user/get",
        "forwarded to WeChat Work"
    );
    let official_api = app.sandbox.api_calls();
    assert!(official_api.is_empty(), "{official_api:?}");
    assert_eq!(work.api_calls().len(), 1);
}

#[actix_web::test]
async fn tickets_are_answered_for_a_current_token_only_without_an_upstream_call_otherwise() {
    let app = spawn_app_with(gateway()).await;
    let token = token_of(&app).await;
    let ticket = |token: String, kind: &'static str| {
        let app = &app;
        async move {
            let query = [("access_token", token.as_str()), ("type", kind)];
            json_of(app.wechat_get("/cgi-bin/ticket/getticket", &query).await).await
        }
    };
    let jsapi = ticket(token.clone(), "jsapi").await;
    assert_eq!(
        (jsapi["errcode"].clone(), jsapi["errmsg"].clone()),
        (json!(0), json!("ok"))
    );
    assert_eq!(
        jsapi["ticket"],
        app.sandbox
            .current_ticket(APPID)
            .expect("a ticket")
            .as_str()
    );
    assert!(jsapi["expires_in"].as_u64().is_some_and(|s| s > 0));
    let card = ticket(token.clone(), "wx_card").await;
    let card_ticket = card["ticket"].as_str().unwrap_or_default().to_string();
    assert!(
        app.sandbox.valid_card_tickets(APPID).contains(&card_ticket),
        "{card}"
    );
    let calls = app.sandbox.calls();

    assert_eq!(
        ticket("not-a-token".into(), "jsapi").await["errcode"],
        40001
    );
    assert_eq!(ticket(token.clone(), "other").await["errcode"], 40097);
    let missing = app
        .wechat_get("/cgi-bin/ticket/getticket", &[("type", "jsapi")])
        .await;
    assert_eq!(json_of(missing).await["errcode"], 41001);
    assert_eq!(ticket(token, "jsapi").await["ticket"], jsapi["ticket"]);
    assert_eq!(app.sandbox.calls(), calls, "no call upstream");
}

#[actix_web::test]
async fn the_token_a_renewal_replaced_still_gets_the_ticket_during_wechats_grace() {
    // Classic tokens, 10 s lives: the cache renews the token after a few seconds,
    // and WeChat keeps the replaced one working for 5 minutes.
    let app = spawn_app_with(gateway().set("wechat.token_mode", "classic")).await;
    app.sandbox.set_expires_in(10);
    let replaced = token_of(&app).await;
    token_after(&app, &replaced, Duration::from_secs(20)).await;
    let query = [("access_token", replaced.as_str()), ("type", "jsapi")];
    let answer = json_of(app.wechat_get("/cgi-bin/ticket/getticket", &query).await).await;
    assert_eq!(answer["errcode"], 0, "{answer}");
    let menu = app
        .wechat_get("/cgi-bin/menu/get", &[("access_token", &replaced)])
        .await;
    assert_eq!(
        json_of(menu).await["errcode"],
        0,
        "forwarded: WeChat takes it too"
    );
}

#[actix_web::test]
async fn a_call_with_a_current_token_is_forwarded_as_it_came_and_answered_as_wechat_answered() {
    let app = spawn_app_with(gateway()).await;
    let token = token_of(&app).await;
    let query = [
        ("access_token", token.as_str()),
        ("openid", "o+1 é"),
        ("lang", "zh_CN"),
    ];
    let response = app.wechat_get("/cgi-bin/user/info", &query).await;
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let echo = json_of(response).await;
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/cgi-bin/user/info");
    assert_eq!(echo["query"], json!({"openid": "o+1 é", "lang": "zh_CN"}));

    let menu = json!({"button": [{"type": "click", "name": "今日歌曲", "key": "V1001"}]});
    let response = app
        .wechat_post(
            "/cgi-bin/menu/create",
            &[("access_token", &token)],
            "application/json",
            menu.to_string(),
        )
        .await;
    let echo = json_of(response).await;
    assert_eq!(
        (echo["method"].as_str(), echo["path"].as_str()),
        (Some("POST"), Some("/cgi-bin/menu/create"))
    );
    assert_eq!(echo["content_type"], "application/json");
    assert_eq!(echo["body"], menu.to_string().as_str());
    let other_root = app
        .wechat_post(
            "/datacube/getusersummary",
            &[("access_token", &token)],
            "application/json",
            "{}",
        )
        .await;
    assert_eq!(
        json_of(other_root).await["path"],
        "/datacube/getusersummary"
    );

    let calls = app.sandbox.api_calls();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.access_token == token), "{calls:?}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"wxjssdk_gateway_requests_total{api="cgi-bin",result="forwarded"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"wxjssdk_gateway_requests_total{api="datacube",result="forwarded"}"#)
    );
}

#[actix_web::test]
async fn uploads_and_downloads_of_several_mib_are_streamed_through() {
    let app = spawn_app_with(gateway()).await;
    let token = token_of(&app).await;
    let upload: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let digest = hex::encode(Sha1::digest(&upload));
    let started = Instant::now();
    let query = [("access_token", token.as_str()), ("type", "image")];
    let content_type = "multipart/form-data; boundary=xyz";
    let response = app
        .wechat_post("/cgi-bin/media/upload", &query, content_type, upload)
        .await;
    let echo = json_of(response).await;
    println!("8 MiB upload through the gateway: {:?}", started.elapsed());
    assert_eq!(echo["body_bytes"], 8 * 1024 * 1024);
    assert_eq!(echo["body_sha1"], digest.as_str());
    assert_eq!(echo["content_type"], content_type);

    let size = 5_000_000u64;
    let started = Instant::now();
    let size_text = size.to_string();
    let query = [
        ("access_token", token.as_str()),
        ("media_id", "m1"),
        ("sandbox_download", &size_text),
    ];
    let response = app.wechat_get("/cgi-bin/media/get", &query).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"media.bin\""
    );
    assert_eq!(headers["content-length"], size_text.as_str());
    let body = response.bytes().await.expect("the whole file");
    println!("5 MB download through the gateway: {:?}", started.elapsed());
    assert_eq!(body.len() as u64, size);
    assert!(
        body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8),
        "byte for byte"
    );
}

#[actix_web::test]
async fn a_body_over_the_limit_is_refused_and_a_slow_wechat_cut_off() {
    let options = gateway()
        .set("gateway.max_body_bytes", 2 * 1024 * 1024)
        .set("gateway.timeout_ms", 300);
    let app = spawn_app_with(options).await;
    let token = token_of(&app).await;
    let query = [("access_token", token.as_str()), ("type", "video")];
    let big = vec![7u8; 3 * 1024 * 1024];
    let declared = app
        .wechat_post(
            "/cgi-bin/media/upload",
            &query,
            "application/octet-stream",
            big.clone(),
        )
        .await;
    assert_eq!(declared.status(), 413);
    assert_eq!(declared.json::<Value>().await.unwrap()["errcode"], 45001);
    assert_eq!(app.sandbox.calls().api, 0, "refused before forwarding");
    // Without a declared length: cut off when it passes the limit.
    let path = format!("/cgi-bin/media/upload?access_token={token}&type=video");
    assert_eq!(chunked_post(&app, &path, &big).await, 413);
    assert!(app
        .sandbox
        .api_calls()
        .iter()
        .all(|c| c.body_bytes <= 2 * 1024 * 1024));

    // Every API call slow (the aborted upload may reach the sandbox after this).
    let slow = Fault::delay(Endpoint::Api, Duration::from_secs(3)).times(0);
    app.sandbox.inject(slow);
    let slow = app
        .wechat_get("/cgi-bin/menu/get", &[("access_token", &token)])
        .await;
    assert_eq!(slow.status(), 504);
    assert_eq!(slow.json::<Value>().await.unwrap()["errcode"], -1);
}

/// The status of a `POST path` with `body` sent in chunks, without a `Content-Length`
/// (reqwest has no streamed bodies in this build: the request is written by hand).
async fn chunked_post(app: &TestApp, path: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/octet-stream\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("the head");
    for chunk in body.chunks(256 * 1024) {
        let sized = format!("{:x}\r\n", chunk.len());
        // The service may stop reading once the limit is passed: a failed write is fine.
        if stream.write_all(sized.as_bytes()).await.is_err()
            || stream.write_all(chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer}"))
}

#[actix_web::test]
async fn no_token_of_ours_nothing_forwarded_and_other_paths_are_not_found() {
    let app = spawn_app_with(gateway()).await;
    token_of(&app).await;
    for (query, errcode) in [(vec![("access_token", "made-up")], 40001), (vec![], 41001)] {
        let answer = app.wechat_get("/cgi-bin/message/custom/send", &query).await;
        assert_eq!(json_of(answer).await["errcode"], errcode);
        let post = app
            .wechat_post(
                "/customservice/kfaccount/add",
                &query,
                "application/json",
                "{}",
            )
            .await;
        assert_eq!(json_of(post).await["errcode"], errcode);
    }
    assert_eq!(app.sandbox.calls().api, 0, "WeChat saw none of them");
    for path in [
        "/sns/oauth2/access_token",
        "/cgi-bin",
        "/pay/unifiedorder",
        "/cgi-bin2/menu/get",
    ] {
        assert_eq!(
            app.wechat_get(path, &[("access_token", "x")])
                .await
                .status(),
            404,
            "{path}"
        );
    }
}

#[actix_web::test]
async fn a_refused_token_heals_once_for_the_whole_deployment() {
    let first = spawn_app_with(gateway()).await;
    let second = first.spawn_instance();
    let token = token_of(&first).await;
    assert_eq!(token_of(&second).await, token);
    first.sandbox.revoke_tokens(APPID);
    let menu = json!({"button": []}).to_string();
    let path = "/cgi-bin/menu/create";
    let query = [("access_token", token.as_str())];
    let json = "application/json";
    let (one, two) = futures_util::future::join(
        first.wechat_post(path, &query, json, menu.clone()),
        second.wechat_post(path, &query, json, menu.clone()),
    )
    .await;
    for response in [one, two] {
        assert_eq!(
            response
                .headers()
                .get("x-wxjssdk-retried")
                .map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let echo = json_of(response).await;
        assert_eq!(echo["errcode"], 0, "{echo}");
        assert_eq!(echo["body"], menu.as_str(), "the body was sent again");
    }
    let calls = first.sandbox.calls();
    assert_eq!(
        (calls.stable_token, calls.stable_token_force),
        (2, 1),
        "one new token: {calls:?}"
    );
    let new = token_of(&first).await;
    assert_ne!(new, token);
    assert_eq!(token_of(&second).await, new);
    let tokens: Vec<String> = first
        .sandbox
        .api_calls()
        .into_iter()
        .map(|c| c.access_token)
        .collect();
    assert_eq!(
        tokens.iter().filter(|t| **t == new).count(),
        2,
        "{tokens:?}"
    );
}

#[actix_web::test]
async fn a_large_body_refused_for_its_token_is_not_sent_again() {
    let app = spawn_app_with(gateway()).await;
    let token = token_of(&app).await;
    app.sandbox.revoke_tokens(APPID);
    let upload = vec![1u8; 2 * 1024 * 1024];
    let query = [("access_token", token.as_str()), ("type", "image")];
    let response = app
        .wechat_post("/cgi-bin/media/upload", &query, "image/png", upload)
        .await;
    assert!(response.headers().get("x-wxjssdk-retried").is_none());
    assert_eq!(
        json_of(response).await["errcode"],
        40001,
        "WeChat's refusal, passed back"
    );
    assert_eq!(app.sandbox.calls().api, 1, "sent once");
    assert_eq!(
        app.sandbox.calls().stable_token_force,
        1,
        "the token was replaced"
    );
    assert_ne!(
        token_of(&app).await,
        token,
        "the next call gets the new token"
    );
}

#[actix_web::test]
async fn the_logs_never_show_a_secret_token_or_ticket() {
    let env = spawn_app().await;
    let (binary, logs) =
        RunningBinary::logging_at_debug(&env, &[("WXJSSDK__GATEWAY__ENABLED", "true")]).await;
    let token = token_of(&binary).await;
    let query = [("access_token", token.as_str()), ("type", "jsapi")];
    let ticket = json_of(binary.wechat_get("/cgi-bin/ticket/getticket", &query).await).await;
    let ticket = ticket["ticket"].as_str().expect("a ticket").to_string();
    let menu = binary
        .wechat_get("/cgi-bin/menu/get", &[("access_token", &token)])
        .await;
    assert_eq!(json_of(menu).await["errcode"], 0);
    env.sandbox.revoke_tokens(APPID);
    let healed = binary
        .wechat_get("/cgi-bin/menu/get", &[("access_token", &token)])
        .await;
    assert_eq!(json_of(healed).await["errcode"], 0);
    let new = token_of(&binary).await;
    drop(binary);

    let printed = std::fs::read_to_string(logs.path()).unwrap();
    assert!(
        printed.contains("\"GET /cgi-bin/menu/get\" 200"),
        "the access log: {printed}"
    );
    for (what, value) in [
        ("secret", SECRET),
        ("token", &token),
        ("new token", &new),
        ("ticket", &ticket),
    ] {
        assert!(
            !printed.contains(value),
            "the {what} was logged:\n{printed}"
        );
    }
}

/// The Python of the virtualenv `.ci/run` makes for the SDK clients (wechatpy).
fn sdk_python() -> std::path::PathBuf {
    // As .ci/run has it: $WXJSSDK_SDK_VENV, or the cache directory's wx-jssdk/sdk-clients.
    let cache = std::env::var_os("XDG_CACHE_HOME").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            std::path::Path::new(&home).join(".cache")
        },
        std::path::PathBuf::from,
    );
    let venv = std::env::var_os("WXJSSDK_SDK_VENV").map_or_else(
        || cache.join("wx-jssdk/sdk-clients"),
        std::path::PathBuf::from,
    );
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no {}: the real SDKs' tests need wechatpy in that virtualenv; `bash .ci/run` makes it \
         (or: python3 -m venv {venv} && {venv}/bin/pip install 'wechatpy[cryptography]==1.8.18')",
        python.display(),
        venv = venv.display()
    );
    python
}

/// A real SDK: the program that runs its script in tests/sdk/, and the script.
#[derive(Clone, Copy)]
enum Sdk {
    Wechatpy,
    CoWechatApi,
}

const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk");

impl Sdk {
    fn command(self) -> tokio::process::Command {
        let (program, script) = match self {
            Self::Wechatpy => (sdk_python(), "wechatpy_gateway.py"),
            Self::CoWechatApi => {
                crate::common::npm_ci(std::path::Path::new(SDK_DIR), Duration::from_secs(300));
                ("node".into(), "co_wechat_api_gateway.js")
            }
        };
        let mut command = tokio::process::Command::new(program);
        command.arg(std::path::Path::new(SDK_DIR).join(script));
        command
    }

    /// What the SDK, pointed at `app` as the README says, got doing `what` (`all`, or
    /// `menu`: see its script).
    async fn run(self, app: &TestApp, what: &str) -> Value {
        let mut command = self.command();
        command.args([&app.address, APPID, SECRET, what]);
        let output = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .expect("the SDK finished within 60 s")
            .expect("run the SDK");
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "the SDK failed: {printed}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(&printed).unwrap_or_else(|e| panic!("{e}: {printed}"))
    }
}

/// Two instances and an SDK pointed at them: one token and one ticket upstream for all
/// its runs, its calls forwarded, and after WeChat drops the token its next call heals
/// in the gateway (the SDK's own retry is off), with one new token for the deployment.
async fn an_sdk_gets_the_shared_token_and_ticket_forwards_and_heals(sdk: Sdk) {
    let first = spawn_app_with(gateway()).await;
    let second = first.spawn_instance();
    let got = sdk.run(&first, "all").await;
    assert_eq!(
        got["ticket"],
        first
            .sandbox
            .current_ticket(APPID)
            .expect("a ticket")
            .as_str()
    );
    assert_eq!(
        (got["menu"]["path"].as_str(), got["user"]["path"].as_str()),
        (Some("/cgi-bin/menu/get"), Some("/cgi-bin/user/info"))
    );
    assert!(got["user"]["query"]["openid"]
        .as_str()
        .is_some_and(|o| o.starts_with("o-")));
    let again = sdk.run(&second, "all").await;
    assert_eq!(again["token"], got["token"], "the deployment's one token");
    let calls = first.sandbox.calls();
    assert_eq!(
        (calls.stable_token, calls.getticket, calls.token),
        (1, 1, 0),
        "{calls:?}"
    );

    // WeChat drops the token: the SDK's next run is handed it, and its call, refused
    // upstream, heals in the gateway, with one new token for the deployment.
    first.sandbox.revoke_tokens(APPID);
    let healed = sdk.run(&second, "menu").await;
    assert_eq!(
        healed["token"], got["token"],
        "handed the token WeChat dropped"
    );
    assert_eq!(healed["menu"]["errcode"], 0, "{healed}");
    let calls = first.sandbox.calls();
    assert_eq!(
        (calls.stable_token, calls.stable_token_force),
        (2, 1),
        "{calls:?}"
    );
    // The other instance learns of it within cache.local_recheck_ms.
    let old = got["token"].as_str().unwrap_or_default();
    let new = token_after(&first, old, Duration::from_secs(5)).await;
    assert_eq!(sdk.run(&first, "all").await["token"], new.as_str());
    assert_eq!(first.sandbox.calls().stable_token, 2, "no more tokens");
}

#[actix_web::test]
async fn wechatpy_gets_the_shared_token_and_ticket_forwards_and_heals() {
    an_sdk_gets_the_shared_token_and_ticket_forwards_and_heals(Sdk::Wechatpy).await;
}

#[actix_web::test]
async fn co_wechat_api_gets_the_shared_token_and_ticket_forwards_and_heals() {
    an_sdk_gets_the_shared_token_and_ticket_forwards_and_heals(Sdk::CoWechatApi).await;
}

/// The token `app` answers once it no longer answers `old`, waited for at most `limit`.
async fn token_after(app: &TestApp, old: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let token = token_of(app).await;
        if token != old {
            return token;
        }
        assert!(
            Instant::now() < deadline,
            "still the old token after {limit:?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}
