//! What every integration test needs: a private `redis-server` on a free port, the
//! sandbox WeChat API, and the service itself on a random port, spawned through
//! [`spawn_app`] (or [`TestApp::spawn_instance`] for more instances on the same Redis).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wx_jssdk::configuration::{
    AppSettings, CacheSettings, RedisSettings, Secret, ServerSettings, Settings, TokenMode,
    WechatSettings,
};
use wx_jssdk::sandbox::{Endpoint, Fault, Sandbox, SandboxConfig};
use wx_jssdk::startup::Application;
use wx_jssdk::wechat::signature::sign_url;

pub const APPID: &str = "wxtest0000000000001";
pub const SECRET: &str = "test-app-secret-do-not-leak";
pub const SERVER_TOKEN: &str = "test-server-token";

/// A `redis-server` of our own, killed when dropped.
pub struct TestRedis {
    child: Mutex<Option<Child>>,
    pub port: u16,
}

impl TestRedis {
    pub fn start() -> Self {
        let redis = Self {
            child: Mutex::new(None),
            port: free_port(),
        };
        redis.restart();
        redis
    }

    /// Starts the server (again, after [`TestRedis::kill`]) on the same port, empty.
    pub fn restart(&self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}). The tests start their own Redis on a free port: \
                     install it first, e.g. `apt-get install -y redis-server`"
                )
            });
        *self.child.lock().unwrap() = Some(child);
        self.wait_until_ready();
    }

    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn wait_until_ready(&self) {
        let client = redis::Client::open(self.url()).expect("valid redis url");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut conn) = client.get_connection() {
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not answer PING within 10 s",
            self.port
        );
    }

    /// A direct connection, for tests that look at or tamper with what is stored.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("valid redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis")
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on loopback")
}

/// Knobs a test may turn before the service starts.
pub struct Options {
    pub token_mode: TokenMode,
    pub cache: CacheSettings,
    pub with_redis: bool,
    pub extra_apps: Vec<(&'static str, &'static str)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token_mode: TokenMode::Stable,
            cache: CacheSettings {
                safety_margin_secs: 300,
                refresh_ahead_secs: 300,
                lock_ttl_ms: 10_000,
                lock_wait_ms: 5_000,
            },
            with_redis: true,
            extra_apps: Vec::new(),
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub sandbox: Sandbox,
    pub sandbox_url: String,
    pub redis: Option<Arc<TestRedis>>,
    pub client: reqwest::Client,
    options: Arc<Options>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let redis = options.with_redis.then(|| Arc::new(TestRedis::start()));
    let sandbox = Sandbox::new(SandboxConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the sandbox");
    let sandbox_url = format!("http://{}", listener.local_addr().expect("sandbox address"));
    actix_web::rt::spawn(sandbox.serve(listener).expect("start the sandbox"));
    start(sandbox, sandbox_url, redis, Arc::new(options))
}

fn start(
    sandbox: Sandbox,
    sandbox_url: String,
    redis: Option<Arc<TestRedis>>,
    options: Arc<Options>,
) -> TestApp {
    let settings = settings(&options, redis.as_deref(), &sandbox_url);
    let app = Application::build(settings).expect("build the application");
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        sandbox,
        sandbox_url,
        redis,
        client: reqwest::Client::new(),
        options,
    }
}

fn settings(options: &Options, redis: Option<&TestRedis>, api_base: &str) -> Settings {
    let app = |appid: &str| AppSettings {
        appid: appid.to_string(),
        secret: Secret::new(SECRET),
        token: Secret::new(SERVER_TOKEN),
    };
    let mut apps = BTreeMap::from([("default".to_string(), app(APPID))]);
    for (name, appid) in &options.extra_apps {
        apps.insert(name.to_string(), app(appid));
    }
    Settings {
        server: ServerSettings {
            bind: "127.0.0.1:0".into(),
            workers: Some(2),
        },
        redis: redis.map(|r| RedisSettings {
            url: Some(Secret::new(r.url())),
            cluster_urls: None,
            key_prefix: "wxjssdk".into(),
            pool_size: 8,
            timeout_ms: 1000,
        }),
        wechat: WechatSettings {
            api_base: api_base.to_string(),
            token_mode: options.token_mode,
            timeout_ms: 2000,
        },
        cache: options.cache.clone(),
        apps,
    }
}

impl TestApp {
    /// Another instance of the service, on the same Redis and sandbox.
    pub fn spawn_instance(&self) -> TestApp {
        start(
            self.sandbox.clone(),
            self.sandbox_url.clone(),
            self.redis.clone(),
            self.options.clone(),
        )
    }

    pub fn redis(&self) -> &TestRedis {
        self.redis
            .as_deref()
            .expect("this test app runs with redis")
    }

    /// `GET` a path of the service.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request the service")
    }

    pub async fn sign(&self, page_url: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/wxJssdk/getJssdk", self.address))
            .query(&[("url", page_url)])
            .send()
            .await
            .expect("request the signature")
    }

    /// Signs `page_url` and checks the answer against the sandbox's tickets.
    pub async fn sign_and_check(&self, page_url: &str) -> serde_json::Value {
        let response = self.sign(page_url).await;
        assert_eq!(response.status(), 200, "signing {page_url}");
        let body: serde_json::Value = response.json().await.expect("a JSON config");
        assert!(
            self.signed_with_a_valid_ticket(&body),
            "signature does not verify with any valid sandbox ticket: {body}"
        );
        body
    }

    /// Whether the config's signature is the one made with the sandbox's current ticket.
    pub fn signed_with_a_valid_ticket(&self, config: &serde_json::Value) -> bool {
        let Some(ticket) = self.sandbox.current_ticket(APPID) else {
            return false;
        };
        let expected = sign_url(
            &ticket,
            config["nonceStr"].as_str().unwrap_or_default(),
            config["timestamp"].as_u64().unwrap_or_default(),
            config["url"].as_str().unwrap_or_default(),
        );
        self.sandbox.is_valid_ticket(APPID, &ticket) && config["signature"] == expected.as_str()
    }
}

/// A fault the sandbox applies to the next call of `endpoint`.
pub fn fault(endpoint: Endpoint, errcode: Option<i64>, delay_ms: u64) -> Fault {
    Fault {
        endpoint,
        errcode,
        delay_ms,
        times: 1,
    }
}

/// Checks the JSON error shape and returns its code.
pub async fn error_code(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status(), status);
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "error without a message: {body}");
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The server-URL signature WeChat would send.
pub fn wechat_signature(token: &str, timestamp: &str, nonce: &str) -> String {
    use sha1::{Digest, Sha1};
    let mut parts = [token, timestamp, nonce];
    parts.sort_unstable();
    hex::encode(Sha1::digest(parts.concat().as_bytes()))
}

/// The real `wx-jssdk` binary, serving on a free port; killed when dropped.
pub struct RunningBinary {
    child: Child,
    pub address: String,
}

impl RunningBinary {
    /// Starts the binary with `args` and `env` (its `server.bind` is set here) and
    /// waits until it answers `/healthz`.
    pub async fn start(args: &[&str], env: &[(&str, &str)], output: Stdio) -> Self {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_wx-jssdk"));
        command
            .args(args)
            .envs(env.iter().copied())
            .env("WXJSSDK__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env_remove("WXJSSDK_CONFIG")
            .stdout(Stdio::null())
            .stderr(output);
        let binary = Self {
            child: command.spawn().expect("start wx-jssdk"),
            address: format!("http://127.0.0.1:{port}"),
        };
        binary.wait_until_up().await;
        binary
    }

    async fn wait_until_up(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while client
            .get(format!("{}/healthz", self.address))
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

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RunningBinary {
    fn drop(&mut self) {
        self.stop();
    }
}
