//! What every integration test needs: a private `redis-server` on a free port (or a
//! private Redis Cluster, [`TestCluster`]), the sandbox WeChat API, and the service
//! itself on a random port, spawned through [`spawn_app`] (or
//! [`TestApp::spawn_instance`] for more instances on the same Redis).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wx_jssdk::access::{AllowedDomains, CorsOrigins, TrustedProxies};
use wx_jssdk::configuration::{
    AdminSettings, AppSettings, CacheSettings, RedisSettings, ServerSettings, Settings, TokenMode,
    WechatSettings,
};
use wx_jssdk::secret::Secret;
use wx_jssdk::startup::Application;
use wx_jssdk::wechat::signature::sign_url;
use wx_sandbox::{Endpoint, Fault, Sandbox, SandboxConfig, TicketKind};

pub const APPID: &str = "wxtest0000000000001";
pub const SECRET: &str = "test-app-secret-do-not-leak";
pub const SERVER_TOKEN: &str = "test-server-token";
/// The service's bound on one WeChat call in tests.
pub const WECHAT_TIMEOUT_MS: u64 = 1000;

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
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}", missing_redis("redis-server", e)));
        *self.child.lock().unwrap() = Some(child);
        wait_for_ping(self.port, None);
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

/// Why a test cannot go on without the Redis tools: they never skip silently.
fn missing_redis(tool: &str, error: std::io::Error) -> String {
    format!(
        "cannot run {tool} ({error}). The tests start their own Redis servers and Redis \
         Cluster on free ports: install Redis first, e.g. `apt-get install -y redis-server` \
         (it brings redis-server and redis-cli)"
    )
}

/// Waits (bounded) until the Redis on `port` answers `PING`; on failure, shows `log`.
fn wait_for_ping(port: u16, log: Option<&Path>) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("valid redis url");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut conn) = client.get_connection() {
            if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = log
        .and_then(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_default();
    panic!("redis-server on port {port} did not answer PING within 10 s\n{log}");
}

/// A local Redis Cluster of three primaries without replicas: `redis-server`s of our
/// own on free ports, their state and logs in a temporary directory, joined with
/// `redis-cli --cluster create`. Every node is killed when dropped.
pub struct TestCluster {
    nodes: Mutex<Vec<Child>>,
    pub ports: Vec<u16>,
    dir: tempfile::TempDir,
}

const CLUSTER_NODES: usize = 3;

impl TestCluster {
    /// Starts the nodes, joins them, and returns once every node reports
    /// `cluster_state:ok` (all 16384 slots served).
    pub fn start() -> Self {
        // Each node also needs a free port for the cluster bus (the default, port +
        // 10000, may be taken or out of range).
        let mut ports = free_ports(2 * CLUSTER_NODES);
        let bus_ports = ports.split_off(CLUSTER_NODES);
        let cluster = Self {
            nodes: Mutex::new(Vec::new()),
            ports,
            dir: tempfile::tempdir().expect("a temporary directory for the cluster"),
        };
        for (&port, &bus_port) in cluster.ports.iter().zip(&bus_ports) {
            cluster.start_node(port, bus_port);
        }
        for &port in &cluster.ports {
            wait_for_ping(port, Some(&cluster.log_path(port)));
        }
        cluster.join();
        cluster.wait_until_ok();
        cluster
    }

    fn log_path(&self, port: u16) -> std::path::PathBuf {
        self.dir.path().join(format!("node-{port}.log"))
    }

    fn start_node(&self, port: u16, bus_port: u16) {
        let dir = self.dir.path();
        let log = std::fs::File::create(self.log_path(port)).expect("a node log file");
        let child = Command::new("redis-server")
            .current_dir(dir)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus_port.to_string(),
            ])
            .arg("--cluster-config-file")
            .arg(dir.join(format!("nodes-{port}.conf")))
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::from(log.try_clone().expect("a node log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("{}", missing_redis("redis-server", e)));
        self.nodes.lock().unwrap().push(child);
    }

    /// Assigns the slots evenly over the nodes and introduces them to each other.
    fn join(&self) {
        let mut command = Command::new("redis-cli");
        command.arg("--cluster").arg("create");
        command.args(self.ports.iter().map(|port| format!("127.0.0.1:{port}")));
        command.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let output = run_bounded(command, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{}", missing_redis("redis-cli", e)));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for &port in &self.ports {
            let client =
                redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("valid redis url");
            let mut last = String::new();
            while !last.contains("cluster_state:ok") {
                assert!(
                    Instant::now() < deadline,
                    "the cluster node on port {port} did not reach cluster_state:ok within 20 s:\n{last}"
                );
                std::thread::sleep(Duration::from_millis(20));
                last = client
                    .get_connection()
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                    .unwrap_or_else(|e| e.to_string());
            }
        }
    }

    /// Kills the node on `port` (its slots become unavailable; the others keep serving).
    pub fn kill_node(&self, port: u16) {
        let index = self
            .ports
            .iter()
            .position(|&p| p == port)
            .expect("a node of this cluster");
        let mut nodes = self.nodes.lock().unwrap();
        let _ = nodes[index].kill();
        let _ = nodes[index].wait();
    }

    /// The seed URLs the service is configured with.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// A connection to the whole cluster, routing each command like the service does.
    pub async fn connection(&self) -> redis::cluster_async::ClusterConnection {
        redis::cluster::ClusterClient::new(self.urls())
            .expect("valid cluster urls")
            .get_async_connection()
            .await
            .expect("connect to the test cluster")
    }

    /// A direct connection to one node, for what only that node can tell.
    pub async fn node(&self, port: u16) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .expect("valid redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to a cluster node")
    }

    /// `CLUSTER KEYSLOT key`, as the cluster computes it.
    pub async fn keyslot(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut self.node(self.ports[0]).await)
            .await
            .expect("CLUSTER KEYSLOT")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for mut node in self
            .nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// Runs `command` to completion, killing it if it takes longer than `limit`.
fn run_bounded(mut command: Command, limit: Duration) -> std::io::Result<Output> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + limit;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output()?;
            panic!(
                "{command:?} did not finish within {limit:?}:\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output()
}

pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free ports: the listeners are all held until every port is known.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port on loopback"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

/// Knobs a test may turn before the service starts.
pub struct Options {
    pub token_mode: TokenMode,
    pub cache: CacheSettings,
    pub with_redis: bool,
    /// With `with_redis`: a local three-node Redis Cluster instead of one redis-server.
    pub redis_cluster: bool,
    /// More official accounts: (name, appid).
    pub extra_apps: Vec<(&'static str, &'static str)>,
    /// WeChat Work apps: (name, corpid, agentid).
    pub work_apps: Vec<(&'static str, &'static str, &'static str)>,
    /// `allowed_domains` of the apps named (the others have none: any host).
    pub allowed_domains: Vec<(&'static str, &'static [&'static str])>,
    /// `cors_origins` of the apps named (the others have none).
    pub cors_origins: Vec<(&'static str, &'static [&'static str])>,
    /// `admin.keys`; none: the admin routes do not exist.
    pub admin_keys: Vec<&'static str>,
    /// `wechat.verify_max_age_secs`: the replay window of server-URL requests; 0: off.
    pub verify_max_age_secs: u64,
    /// Apps whose `card_sign_public` is set.
    pub card_sign_public: Vec<&'static str>,
    /// `server.trusted_proxies`.
    pub trusted_proxies: Vec<&'static str>,
    /// Whether to serve `/metrics` on an operations listener (`server.ops_bind`).
    pub ops_listener: bool,
    /// `server.client_body_timeout_ms`.
    pub client_body_timeout_ms: u64,
    /// `domain_verify_files` of the apps named: (app, file name, content).
    pub domain_verify_files: Vec<(&'static str, &'static str, &'static str)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token_mode: TokenMode::Stable,
            cache: CacheSettings {
                safety_margin_secs: 60,
                refresh_ahead_secs: 900,
                lock_ttl_ms: 5_000,
                lock_wait_ms: 5_000,
                local_recheck_ms: 1_000,
                invalidations_per_day: 100,
            },
            with_redis: true,
            redis_cluster: false,
            extra_apps: Vec::new(),
            work_apps: Vec::new(),
            allowed_domains: Vec::new(),
            cors_origins: Vec::new(),
            admin_keys: Vec::new(),
            verify_max_age_secs: 0,
            card_sign_public: Vec::new(),
            trusted_proxies: Vec::new(),
            ops_listener: false,
            client_body_timeout_ms: 10_000,
            domain_verify_files: Vec::new(),
        }
    }
}

pub struct TestApp {
    pub address: String,
    /// The operations listener, with `Options::ops_listener`.
    pub ops_address: Option<String>,
    pub sandbox: Sandbox,
    pub sandbox_url: String,
    pub redis: Option<Arc<TestRedis>>,
    pub cluster: Option<Arc<TestCluster>>,
    pub client: reqwest::Client,
    options: Arc<Options>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let with = |cluster: bool| options.with_redis && options.redis_cluster == cluster;
    let redis = with(false).then(|| Arc::new(TestRedis::start()));
    let cluster = with(true).then(|| Arc::new(TestCluster::start()));
    let (sandbox, sandbox_url) = start_sandbox();
    start(sandbox, sandbox_url, redis, cluster, Arc::new(options))
}

/// The sandbox WeChat API on a free port, served by this test's runtime.
pub fn start_sandbox() -> (Sandbox, String) {
    let sandbox = Sandbox::new(SandboxConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the sandbox");
    let sandbox_url = format!("http://{}", listener.local_addr().expect("sandbox address"));
    actix_web::rt::spawn(sandbox.serve(listener).expect("start the sandbox"));
    (sandbox, sandbox_url)
}

fn start(
    sandbox: Sandbox,
    sandbox_url: String,
    redis: Option<Arc<TestRedis>>,
    cluster: Option<Arc<TestCluster>>,
    options: Arc<Options>,
) -> TestApp {
    let redis_settings = match (&redis, &cluster) {
        (Some(redis), _) => Some(redis_settings(Some(redis.url()), None)),
        (None, Some(cluster)) => Some(redis_settings(None, Some(cluster.urls()))),
        (None, None) => None,
    };
    let settings = settings(&options, redis_settings, &sandbox_url);
    let app = Application::build(settings).expect("build the application");
    let address = format!("http://127.0.0.1:{}", app.port());
    let ops_address = app
        .ops_port()
        .map(|port| format!("http://127.0.0.1:{port}"));
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        ops_address,
        sandbox,
        sandbox_url,
        redis,
        cluster,
        client: reqwest::Client::new(),
        options,
    }
}

/// The service's `[redis]` table for one server (`url`) or a cluster (`cluster_urls`).
pub fn redis_settings(url: Option<String>, cluster_urls: Option<Vec<String>>) -> RedisSettings {
    RedisSettings {
        url: url.map(Secret::new),
        cluster_urls: cluster_urls.map(|urls| urls.into_iter().map(Secret::new).collect()),
        key_prefix: "wxjssdk".into(),
        pool_size: 8,
        timeout_ms: 1000,
    }
}

fn settings(options: &Options, redis: Option<RedisSettings>, api_base: &str) -> Settings {
    let list = |lists: &[(&str, &'static [&'static str])], name: &str| {
        let found = lists.iter().find(|(app, _)| *app == name);
        found.map_or(&[][..], |(_, list)| *list).iter().copied()
    };
    let app = |name: &str, appid: &str| {
        let mut app = AppSettings::official(appid, Secret::new(SECRET), Secret::new(SERVER_TOKEN));
        app.allowed_domains = AllowedDomains::new(list(&options.allowed_domains, name));
        app.cors_origins = CorsOrigins::new(list(&options.cors_origins, name));
        app.card_sign_public = options.card_sign_public.contains(&name);
        app.domain_verify_files = options
            .domain_verify_files
            .iter()
            .filter(|(app, _, _)| *app == name)
            .map(|(_, file, content)| (file.to_string(), content.to_string()))
            .collect();
        app
    };
    let mut apps = BTreeMap::from([("default".to_string(), app("default", APPID))]);
    for (name, appid) in &options.extra_apps {
        apps.insert(name.to_string(), app(name, appid));
    }
    for (name, corpid, agentid) in &options.work_apps {
        apps.insert(
            name.to_string(),
            AppSettings::work(corpid, Secret::new(SECRET), agentid),
        );
    }
    Settings {
        server: ServerSettings {
            bind: "127.0.0.1:0".into(),
            ops_bind: options.ops_listener.then(|| "127.0.0.1:0".into()),
            client_body_timeout_ms: options.client_body_timeout_ms,
            trusted_proxies: TrustedProxies::new(options.trusted_proxies.iter().copied()),
            workers: Some(2),
            shutdown_timeout_secs: 30,
            client_request_timeout_ms: 5000,
            client_disconnect_timeout_ms: 1000,
            max_connections: 25_000,
        },
        redis,
        wechat: WechatSettings {
            api_base: api_base.to_string(),
            work_api_base: api_base.to_string(),
            token_mode: options.token_mode,
            timeout_ms: WECHAT_TIMEOUT_MS,
            retries: 2,
            verify_max_age_secs: options.verify_max_age_secs,
        },
        cache: options.cache.clone(),
        apps,
        admin: AdminSettings {
            keys: options.admin_keys.iter().map(|k| Secret::new(*k)).collect(),
        },
    }
}

impl TestApp {
    /// Another instance of the service, on the same Redis and sandbox.
    pub fn spawn_instance(&self) -> TestApp {
        start(
            self.sandbox.clone(),
            self.sandbox_url.clone(),
            self.redis.clone(),
            self.cluster.clone(),
            self.options.clone(),
        )
    }

    pub fn redis(&self) -> &TestRedis {
        self.redis
            .as_deref()
            .expect("this test app runs with redis")
    }

    pub fn cluster(&self) -> &TestCluster {
        self.cluster
            .as_deref()
            .expect("this test app runs with a redis cluster")
    }

    /// The JSON answer to `GET path` with `Authorization: Bearer key`.
    pub async fn get_with_key(&self, path: &str, key: &str) -> serde_json::Value {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .bearer_auth(key)
            .send()
            .await
            .expect("request the service");
        response.json().await.expect("a JSON answer")
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
        let sent = Instant::now();
        let response = self.sign(page_url).await;
        assert_eq!(response.status(), 200, "signing {page_url}");
        let body: serde_json::Value = response.json().await.expect("a JSON config");
        assert!(
            self.signed_with_a_valid_ticket(&body, page_url, sent),
            "signature of {page_url} does not verify with a ticket valid since the request: {body}"
        );
        body
    }

    /// See [`signed_with_a_valid_ticket`].
    pub fn signed_with_a_valid_ticket(
        &self,
        config: &serde_json::Value,
        page_url: &str,
        sent: Instant,
    ) -> bool {
        signed_with_a_valid_ticket(&self.sandbox, config, page_url, sent)
    }
}

/// Sends 200 signing requests at once to `first` and a second instance on the same
/// store (returned), and checks that the cold cache was filled with exactly one token
/// and one ticket call upstream.
pub async fn cold_burst_on_two_instances(first: &TestApp) -> TestApp {
    let second = first.spawn_instance();
    let requests = (0..200).map(|i| {
        let instance = if i % 2 == 0 { first } else { &second };
        instance.sign_and_check("https://page.example.com/burst")
    });
    futures_util::future::join_all(requests).await;
    let calls = first.sandbox.calls();
    assert_eq!((calls.stable_token, calls.getticket), (1, 1), "{calls:?}");
    second
}

/// Whether a `wx.config` answer for `page_url`, asked for at `sent`, passes WeChat's
/// check: it names the page's URL (without `#` and what follows), and its signature is
/// made over that URL with a jsapi ticket of the sandbox that was valid at some moment
/// since `sent` (a ticket that expired before the request, or that was never issued,
/// fails).
pub fn signed_with_a_valid_ticket(
    sandbox: &Sandbox,
    config: &serde_json::Value,
    page_url: &str,
    sent: Instant,
) -> bool {
    let url = page_url.split('#').next().unwrap_or(page_url);
    let tickets = sandbox.tickets_valid_during(APPID, TicketKind::Jsapi, sent, Instant::now());
    config["url"] == url
        && tickets.iter().any(|ticket| {
            let expected = sign_url(
                ticket,
                config["nonceStr"].as_str().unwrap_or_default(),
                config["timestamp"].as_u64().unwrap_or_default(),
                url,
            );
            config["signature"] == expected.as_str()
        })
}

/// Waits (polling every 5 ms) until `done` holds; fails, naming `what`, after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A fault the sandbox applies to the next call of `endpoint`.
pub fn fault(endpoint: Endpoint, errcode: Option<i64>, delay_ms: u64) -> Fault {
    Fault {
        endpoint,
        errcode,
        transport: None,
        delay_ms,
        times: 1,
    }
}

/// The `Retry-After` header of `response`, if any.
pub fn retry_after(response: &reqwest::Response) -> Option<String> {
    let value = response.headers().get("retry-after")?;
    value.to_str().ok().map(str::to_string)
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
    sorted_sha1(&[token, timestamp, nonce])
}

/// WeChat's "sort the values as strings, concatenate, SHA-1" rule (server verification,
/// card signatures), written independently of the service's own.
pub fn sorted_sha1(values: &[&str]) -> String {
    use sha1::{Digest, Sha1};
    let mut parts = values.to_vec();
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
        Self::start_on(free_port(), args, env, output).await
    }

    /// [`RunningBinary::start`] on `port`: an instance restarted where it was.
    pub async fn start_on(port: u16, args: &[&str], env: &[(&str, &str)], output: Stdio) -> Self {
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

    /// The port it serves on.
    pub fn port(&self) -> u16 {
        self.address
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("an address with a port")
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM, as an orchestrator does to stop an instance gracefully.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }

    /// Waits (polling, at most `limit`) for the process to exit, and returns how.
    pub async fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the process") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "wx-jssdk still running {limit:?} after being asked to stop"
            );
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RunningBinary {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The most calls of `endpoint` in the sandbox's log that fall within any `window`
/// (sliding, each window starting at a call): the number a per-window budget bounds.
pub fn most_calls_in_a_window(sandbox: &Sandbox, endpoint: Endpoint, window: Duration) -> usize {
    let calls: Vec<Instant> = sandbox
        .call_log()
        .iter()
        .filter(|c| c.endpoint == endpoint)
        .map(|c| c.at)
        .collect();
    (0..calls.len())
        .map(|i| {
            calls[i..]
                .iter()
                .take_while(|&&at| at < calls[i] + window)
                .count()
        })
        .max()
        .unwrap_or(0)
}
