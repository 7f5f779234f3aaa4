//! What every integration test needs: a private `redis-server` on a free port (or a
//! private Redis Cluster, [`TestCluster`]), the sandbox WeChat API, and the service
//! itself on a random port, spawned through [`spawn_app`] (or
//! [`TestApp::spawn_instance`] for more instances on the same Redis) with the shipped
//! configuration and the [`Options`] a test asks for. Requests go through [`Service`],
//! one method per family of routes, for the service in-process and the real binary
//! ([`RunningBinary`]) alike.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use wx_jssdk::configuration::{RedisSettings, Settings};
use wx_jssdk::startup::Application;
use wx_jssdk::wechat::signature::sign_url;
use wx_sandbox::{Endpoint, Fault, Sandbox, SandboxConfig, TicketKind};

use crate::certificates::Certificates;
use crate::common::{distinct_free_ports, free_port, run_bounded};

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
        wait_for_ping(self.port, None, None);
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
        node_connection(self.port).await
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain connection to the test's redis-server (or cluster or sentinel data node)
/// on `port`, for tests that look at or tamper with what one server holds.
pub async fn node_connection(port: u16) -> redis::aio::MultiplexedConnection {
    connect_async(port, None).await
}

/// A connection to the test's Redis process on `port`, with TLS when it speaks TLS.
async fn connect_async(port: u16, tls: Option<&Certificates>) -> redis::aio::MultiplexedConnection {
    client_of(port, tls)
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connect to the test redis-server on {port}: {e}"))
}

/// The scheme of the URLs of a test's Redis processes.
fn scheme(tls: Option<&Certificates>) -> &'static str {
    if tls.is_some() {
        "rediss"
    } else {
        "redis"
    }
}

/// Why a test cannot go on without the Redis tools: they never skip silently.
pub fn missing_redis(tool: &str, error: std::io::Error) -> String {
    format!(
        "cannot run {tool} ({error}). The tests start their own Redis servers and Redis \
         Cluster on free ports: install Redis first, e.g. `apt-get install -y redis-server` \
         (it brings redis-server and redis-cli)"
    )
}

/// A client of the test's Redis process on `port`: plain, or with `tls`'s CA and
/// client certificate.
fn client_of(port: u16, tls: Option<&Certificates>) -> redis::Client {
    match tls {
        Some(tls) => tls.client(port),
        None => redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("valid redis url"),
    }
}

/// The options that make a `redis-server` listen on `port`: plain, or with TLS only
/// ([`Certificates::server_options`]).
fn listen_options(port: u16, tls: Option<&Certificates>) -> Vec<(&'static str, String)> {
    match tls {
        Some(tls) => tls.server_options(port),
        None => vec![("port", port.to_string())],
    }
}

/// `--name value` for each option.
fn command_line(options: &[(&'static str, String)]) -> Vec<String> {
    options
        .iter()
        .flat_map(|(name, value)| [format!("--{name}"), value.clone()])
        .collect()
}

/// Waits until the server of `client` (on `port`), if it is a master, streams its
/// writes to `expected` replicas: they are `online` in its `INFO replication`. A
/// replica's own `master_link_status:up` is not enough: it says so while the master
/// still waits to start the full sync, and writes made meanwhile are not on the
/// replica when the master dies.
fn wait_for_replicas(client: &redis::Client, port: u16, expected: usize, deadline: Instant) {
    loop {
        let replication: String = client
            .get_connection()
            .and_then(|mut c| redis::cmd("INFO").arg("replication").query(&mut c))
            .unwrap_or_else(|e| e.to_string());
        let online = replication
            .lines()
            .filter(|line| line.starts_with("slave") && line.contains("state=online"))
            .count();
        if replication.contains("role:slave") || online == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the master on port {port} does not stream to {expected} replica(s):\n{replication}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) until the replica of `replica` has applied every write the master of
/// `master` made so far. Replication is asynchronous: a master killed right after a
/// write may take it with it (Redis's documented loss window, which the service
/// survives with at most one extra WeChat call: see `lost_data.rs`); a test of what a
/// failover keeps waits for this before it kills the master.
pub async fn wait_until_replicated(
    master: &mut redis::aio::MultiplexedConnection,
    replica: &mut redis::aio::MultiplexedConnection,
) {
    let offset = |info: &str, field: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(field)?.trim().parse::<u64>().ok())
    };
    let info = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("INFO")
                .arg("replication")
                .query_async::<String>(&mut conn)
                .await
                .expect("INFO replication")
        }
    };
    let written = offset(&info(master).await, "master_repl_offset:")
        .expect("the master's replication offset");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let last = info(replica).await;
        if offset(&last, "slave_repl_offset:").is_some_and(|applied| applied >= written) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the replica did not apply the master's writes (offset {written}) within 10 s:\n{last}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded) until the Redis on `port` answers `PING`; on failure, shows `log`.
fn wait_for_ping(port: u16, tls: Option<&Certificates>, log: Option<&Path>) {
    let client = client_of(port, tls);
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

/// A local Redis Cluster of three primaries, without replicas ([`TestCluster::start`])
/// or with one replica each ([`TestCluster::start_with_replicas`]): `redis-server`s of
/// our own on free ports, their state and logs in a temporary directory, joined with
/// `redis-cli --cluster create`. Every node is killed when dropped.
pub struct TestCluster {
    nodes: Mutex<Vec<Child>>,
    /// Every node's port, primaries and replicas alike, in the order they were started.
    pub ports: Vec<u16>,
    /// Replicas per primary: 0 or 1.
    replicas: usize,
    /// With certificates: every node speaks TLS only (cluster bus and replication
    /// too) and wants a client certificate.
    tls: Option<Certificates>,
    dir: tempfile::TempDir,
}

const CLUSTER_PRIMARIES: usize = 3;

/// `cluster-node-timeout` of a cluster with replicas: a primary unreachable this long
/// is marked failed and its replica takes over (Redis's default is 15 s).
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 1000;

impl TestCluster {
    /// Starts three primaries without replicas, joins them, and returns once every
    /// node reports `cluster_state:ok` (all 16384 slots served). A node that stops
    /// answering is only marked failed after Redis's default `cluster-node-timeout`
    /// (15 s), so a test may hang one for a few seconds without a failover.
    pub fn start() -> Self {
        Self::start_with(0, None)
    }

    /// Like [`TestCluster::start`], every node speaking TLS only with certificates of
    /// a private CA of the test's own, and wanting a client certificate.
    pub fn start_tls() -> Self {
        Self::start_with(0, Some(Certificates::make()))
    }

    /// Starts three primaries and a replica of each ([`CLUSTER_NODE_TIMEOUT_MS`]: a
    /// primary that dies is replaced by its replica within a few seconds), and returns
    /// once every node reports `cluster_state:ok` and every replica is in sync.
    pub fn start_with_replicas() -> Self {
        Self::start_with(1, None)
    }

    fn start_with(replicas: usize, tls: Option<Certificates>) -> Self {
        let count = CLUSTER_PRIMARIES * (1 + replicas);
        // Each node also needs a free port for the cluster bus (the default, port +
        // 10000, may be taken or out of range).
        let mut ports = distinct_free_ports(2 * count);
        let bus_ports = ports.split_off(count);
        let cluster = Self {
            nodes: Mutex::new(Vec::new()),
            ports,
            replicas,
            tls,
            dir: tempfile::tempdir().expect("a temporary directory for the cluster"),
        };
        for (&port, &bus_port) in cluster.ports.iter().zip(&bus_ports) {
            cluster.start_node(port, bus_port);
        }
        for &port in &cluster.ports {
            wait_for_ping(port, cluster.tls.as_ref(), Some(&cluster.log_path(port)));
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
        let mut command = Command::new("redis-server");
        command
            .current_dir(dir)
            .args(command_line(&listen_options(port, self.tls.as_ref())))
            .args(["--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus_port.to_string(),
            ])
            .arg("--cluster-config-file")
            .arg(dir.join(format!("nodes-{port}.conf")))
            .args(["--save", "", "--appendonly", "no"])
            // A replica's first sync starts at once, not after the default 5 s.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(dir);
        if self.replicas > 0 {
            // A replica takes over however stale its data (it streams from its primary
            // continuously here).
            command
                .args([
                    "--cluster-node-timeout",
                    &CLUSTER_NODE_TIMEOUT_MS.to_string(),
                ])
                .args(["--cluster-replica-validity-factor", "0"]);
        }
        let child = command
            .stdout(Stdio::from(log.try_clone().expect("a node log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("{}", missing_redis("redis-server", e)));
        self.nodes.lock().unwrap().push(child);
    }

    /// Assigns the slots evenly over the nodes and introduces them to each other.
    fn join(&self) {
        let mut command = Command::new("redis-cli");
        if let Some(tls) = &self.tls {
            command.args(tls.cli_options());
        }
        command.arg("--cluster").arg("create");
        command.args(self.ports.iter().map(|port| format!("127.0.0.1:{port}")));
        let replicas = self.replicas.to_string();
        command.args(["--cluster-replicas", &replicas, "--cluster-yes"]);
        let output = run_bounded(&mut command, Duration::from_secs(30))
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
            let client = client_of(port, self.tls.as_ref());
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
            // A replica is only worth a failover once it holds its primary's data.
            let expected = if self.replicas > 0 { 1 } else { 0 };
            wait_for_replicas(&client, port, expected, deadline);
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

    /// Sends `signal` (`STOP`, `CONT`) to the node on `port`: SIGSTOP hangs it (its
    /// connections stay open and nothing is answered), SIGCONT wakes it.
    pub fn signal_node(&self, port: u16, signal: &str) {
        let index = self
            .ports
            .iter()
            .position(|&p| p == port)
            .expect("a node of this cluster");
        let pid = self.nodes.lock().unwrap()[index].id();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// `CLUSTER NODES` as the node on `asked` sees the cluster: (port, flags, primary's
    /// id or "-", id, slot ranges) of every node.
    async fn nodes_seen_by(&self, asked: u16) -> Vec<NodeLine> {
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut self.node(asked).await)
            .await
            .expect("CLUSTER NODES");
        text.lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let port = fields
                    .get(1)?
                    .split(['@', ','])
                    .next()?
                    .rsplit(':')
                    .next()?;
                Some(NodeLine {
                    id: fields[0].to_string(),
                    port: port.parse().ok()?,
                    flags: fields.get(2)?.to_string(),
                    primary: fields.get(3)?.to_string(),
                    slots: fields.iter().skip(8).map(|s| s.to_string()).collect(),
                })
            })
            .collect()
    }

    /// The port of the primary that serves `slot`, as the node on `asked` sees it.
    pub async fn primary_of_slot(&self, slot: u16, asked: u16) -> Option<u16> {
        let serves = |range: &String| {
            let mut bounds = range.split('-').map(|b| b.parse::<u16>().ok());
            match (bounds.next().flatten(), bounds.next()) {
                (Some(first), Some(Some(last))) => (first..=last).contains(&slot),
                (Some(only), None) => only == slot,
                _ => false,
            }
        };
        self.nodes_seen_by(asked)
            .await
            .into_iter()
            .find(|n| n.flags.contains("master") && n.slots.iter().any(serves))
            .map(|n| n.port)
    }

    /// The port of the replica of the primary on `primary`.
    pub async fn replica_of(&self, primary: u16) -> u16 {
        let nodes = self.nodes_seen_by(primary).await;
        let id = &nodes
            .iter()
            .find(|n| n.port == primary)
            .expect("the primary")
            .id;
        nodes
            .iter()
            .find(|n| &n.primary == id)
            .map(|n| n.port)
            .expect("a replica of the primary")
    }

    /// The first field of `ROLE` on the node on `port`: `master` or `slave`.
    pub async fn role(&self, port: u16) -> String {
        let role: Vec<redis::Value> = redis::cmd("ROLE")
            .query_async(&mut self.node(port).await)
            .await
            .expect("ROLE");
        redis::from_redis_value(role[0].clone()).expect("a role name")
    }

    /// The seed URLs the service is configured with.
    pub fn urls(&self) -> Vec<String> {
        let scheme = scheme(self.tls.as_ref());
        self.ports
            .iter()
            .map(|port| format!("{scheme}://127.0.0.1:{port}"))
            .collect()
    }

    /// The service's settings for this cluster: its seed URLs, and with TLS the CA
    /// and the client certificate.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let mut settings = vec![("redis.cluster_urls", self.urls().join(","))];
        settings.extend(self.tls.iter().flat_map(Certificates::settings));
        settings
    }

    /// A connection to the whole cluster, routing each command like the service does.
    pub async fn connection(&self) -> redis::cluster_async::ClusterConnection {
        let mut client = redis::cluster::ClusterClientBuilder::new(self.urls());
        if let Some(tls) = &self.tls {
            client = client.certs(tls.for_redis());
        }
        client
            .build()
            .expect("valid cluster urls")
            .get_async_connection()
            .await
            .expect("connect to the test cluster")
    }

    /// A direct connection to one node, for what only that node can tell.
    pub async fn node(&self, port: u16) -> redis::aio::MultiplexedConnection {
        connect_async(port, self.tls.as_ref()).await
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

/// One line of `CLUSTER NODES`.
struct NodeLine {
    id: String,
    port: u16,
    flags: String,
    primary: String,
    slots: Vec<String>,
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

/// The master's name the sentinels of a [`TestSentinel`] monitor.
pub const SENTINEL_MASTER: &str = "wxmaster";

/// A master, its replica (`--replicaof`) and three sentinels that monitor them (quorum
/// 2, a master down after 1 s): `redis-server`s of our own on free ports, the
/// sentinels' configuration files (which they rewrite) and every log in a temporary
/// directory. Every process is killed when dropped.
pub struct TestSentinel {
    processes: Mutex<Vec<(u16, Child)>>,
    pub master_port: u16,
    pub replica_port: u16,
    pub sentinel_ports: Vec<u16>,
    /// With certificates: data nodes and sentinels speak TLS only and want a client
    /// certificate.
    tls: Option<Certificates>,
    dir: tempfile::TempDir,
}

impl TestSentinel {
    /// Starts them all, and returns once the replica is in sync and every sentinel
    /// knows the replica and the two other sentinels (so that a failover can be
    /// agreed on).
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Like [`TestSentinel::start`], every process speaking TLS only with
    /// certificates of a private CA of the test's own, and wanting a client
    /// certificate.
    pub fn start_tls() -> Self {
        Self::start_with(Some(Certificates::make()))
    }

    fn start_with(tls: Option<Certificates>) -> Self {
        let mut ports = distinct_free_ports(5);
        let sentinel_ports = ports.split_off(2);
        let setup = Self {
            processes: Mutex::new(Vec::new()),
            master_port: ports[0],
            replica_port: ports[1],
            sentinel_ports,
            tls,
            dir: tempfile::tempdir().expect("a temporary directory for the sentinels"),
        };
        let master = setup.master_port.to_string();
        setup.spawn(setup.master_port, &[]);
        setup.wait_for_ping(setup.master_port);
        setup.spawn(setup.replica_port, &["--replicaof", "127.0.0.1", &master]);
        setup.wait_for_ping(setup.replica_port);
        for &port in &setup.sentinel_ports {
            let config = setup.dir.path().join(format!("sentinel-{port}.conf"));
            let name = SENTINEL_MASTER;
            let listen: String = listen_options(port, setup.tls.as_ref())
                .iter()
                .map(|(name, value)| format!("{name} {value}\n"))
                .collect();
            std::fs::write(
                &config,
                format!(
                    "{listen}bind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {name} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {name} 1000\n\
                     sentinel failover-timeout {name} 5000\n\
                     sentinel parallel-syncs {name} 1\n",
                    dir = setup.dir.path().display()
                ),
            )
            .expect("a sentinel configuration file");
            let config = config.to_string_lossy().to_string();
            setup.spawn(port, &[&config, "--sentinel"]);
        }
        for &port in &setup.sentinel_ports {
            setup.wait_for_ping(port);
        }
        setup.wait_until_ready();
        setup
    }

    fn log_path(&self, port: u16) -> std::path::PathBuf {
        self.dir.path().join(format!("redis-{port}.log"))
    }

    fn wait_for_ping(&self, port: u16) {
        wait_for_ping(port, self.tls.as_ref(), Some(&self.log_path(port)));
    }

    fn client(&self, port: u16) -> redis::Client {
        client_of(port, self.tls.as_ref())
    }

    /// `redis-server` on `port`: `args` first (a sentinel's configuration file must
    /// come first), then a data node's settings unless it is a sentinel.
    fn spawn(&self, port: u16, args: &[&str]) {
        let log = std::fs::File::create(self.log_path(port)).expect("a log file");
        let mut command = Command::new("redis-server");
        command.current_dir(self.dir.path()).args(args);
        if !args.contains(&"--sentinel") {
            command
                .args(command_line(&listen_options(port, self.tls.as_ref())))
                .args(["--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--repl-diskless-sync-delay", "0"]);
        }
        let child = command
            .stdout(Stdio::from(log.try_clone().expect("a log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("{}", missing_redis("redis-server", e)));
        self.processes.lock().unwrap().push((port, child));
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let connect = |port: u16| self.client(port).get_connection();
        wait_for_replicas(
            &self.client(self.master_port),
            self.master_port,
            1,
            deadline,
        );
        for &port in &self.sentinel_ports {
            loop {
                let master: redis::RedisResult<std::collections::HashMap<String, String>> =
                    connect(port).and_then(|mut c| {
                        redis::cmd("SENTINEL")
                            .arg("MASTER")
                            .arg(SENTINEL_MASTER)
                            .query(&mut c)
                    });
                let count = |field: &str| {
                    let master = master.as_ref().ok()?;
                    master.get(field)?.parse::<u32>().ok()
                };
                if count("num-slaves") == Some(1) && count("num-other-sentinels") == Some(2) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the sentinel on port {port} does not know the replica and the other \
                     sentinels within 30 s: {master:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// SIGKILLs the master.
    pub fn kill_master(&self) {
        let mut processes = self.processes.lock().unwrap();
        if let Some((_, child)) = processes.iter_mut().find(|(p, _)| *p == self.master_port) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The master's port as the sentinel on `sentinel_port` names it.
    pub async fn master_named_by(&self, sentinel_port: u16) -> Option<u16> {
        let mut conn = self
            .client(sentinel_port)
            .get_multiplexed_async_connection()
            .await
            .ok()?;
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(SENTINEL_MASTER)
            .query_async(&mut conn)
            .await
            .ok()?;
        Some(port)
    }

    /// The sentinel URLs the service is configured with.
    pub fn urls(&self) -> Vec<String> {
        let scheme = scheme(self.tls.as_ref());
        self.sentinel_ports
            .iter()
            .map(|port| format!("{scheme}://127.0.0.1:{port}"))
            .collect()
    }

    /// The service's settings for these sentinels: their URLs, the master's name, and
    /// with TLS the CA and the client certificate.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let mut settings = vec![
            ("redis.sentinel_urls", self.urls().join(",")),
            ("redis.sentinel_master", SENTINEL_MASTER.to_string()),
        ];
        settings.extend(self.tls.iter().flat_map(Certificates::settings));
        settings
    }

    /// A direct connection to the data node on `port`.
    pub async fn node(&self, port: u16) -> redis::aio::MultiplexedConnection {
        connect_async(port, self.tls.as_ref()).await
    }
}

impl Drop for TestSentinel {
    fn drop(&mut self) {
        let mut processes = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        for (_, mut child) in processes.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a test needs the service to do differently from the configuration it ships
/// with. Everything not asked for here runs with the shipped default: the service is
/// configured through the same loader as `wx-jssdk` (see [`shipped_settings_with`]), so
/// the tests exercise the defaults operators get, and a new setting needs nothing here.
pub struct Options {
    /// Whether the service has a Redis of its own (false: the in-process store).
    pub with_redis: bool,
    /// With `with_redis`: a local three-node Redis Cluster instead of one redis-server.
    pub redis_cluster: bool,
    /// With `redis_cluster`: a replica of each primary, ready to take over
    /// ([`TestCluster::start_with_replicas`]).
    pub cluster_replicas: bool,
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
    /// Apps whose `card_sign_public` is set.
    pub card_sign_public: Vec<&'static str>,
    /// `server.trusted_proxies`.
    pub trusted_proxies: Vec<&'static str>,
    /// Whether to serve `/metrics` on an operations listener (`server.ops_bind`).
    pub ops_listener: bool,
    /// `domain_verify_files` of the apps named: (app, file name, content).
    pub domain_verify_files: Vec<(&'static str, &'static str, &'static str)>,
    /// Any other setting, by dotted key, with its value as the environment writes it
    /// (`("cache.lock_wait_ms", "300")`); see [`Options::set`]. Applied last, so it
    /// may also change what the tests set by default (e.g. `wechat.timeout_ms`).
    pub settings: Vec<(&'static str, String)>,
}

impl Default for Options {
    /// The shipped configuration, with one official account (`default`) and a Redis.
    fn default() -> Self {
        Self {
            with_redis: true,
            redis_cluster: false,
            cluster_replicas: false,
            extra_apps: Vec::new(),
            work_apps: Vec::new(),
            allowed_domains: Vec::new(),
            cors_origins: Vec::new(),
            admin_keys: Vec::new(),
            card_sign_public: Vec::new(),
            trusted_proxies: Vec::new(),
            ops_listener: false,
            domain_verify_files: Vec::new(),
            settings: Vec::new(),
        }
    }
}

impl Options {
    /// Sets `key` (dotted, as in `check-config`'s output) to `value`.
    pub fn set(mut self, key: &'static str, value: impl ToString) -> Self {
        self.settings.push((key, value.to_string()));
        self
    }

    /// Each of `settings`, as [`Options::set`] does.
    pub fn set_all(mut self, settings: Vec<(&'static str, String)>) -> Self {
        self.settings.extend(settings);
        self
    }

    /// The overrides of the shipped defaults that make the service of these options,
    /// answering on a free port and calling the sandbox at `sandbox_url`. Lists take
    /// their comma-separated form, as in the environment. `store` is the `redis.url` or
    /// `redis.cluster_urls` setting, if the service has a Redis.
    fn overrides(&self, sandbox_url: &str, store: Option<(&str, String)>) -> Vec<(String, String)> {
        let mut overrides: Vec<(String, String)> = Vec::new();
        let mut set = |key: String, value: String| overrides.push((key, value));
        set("server.bind".into(), "127.0.0.1:0".into());
        // Not one per CPU (the shipped default): many services run side by side here.
        set("server.workers".into(), "2".into());
        if self.ops_listener {
            set("server.ops_bind".into(), "127.0.0.1:0".into());
        }
        if !self.trusted_proxies.is_empty() {
            set(
                "server.trusted_proxies".into(),
                self.trusted_proxies.join(","),
            );
        }
        set("wechat.api_base".into(), sandbox_url.into());
        set("wechat.work_api_base".into(), sandbox_url.into());
        set("wechat.timeout_ms".into(), WECHAT_TIMEOUT_MS.to_string());
        if let Some((key, value)) = store {
            set(key.into(), value);
        }
        let official = std::iter::once(("default", APPID)).chain(self.extra_apps.iter().copied());
        for (name, appid) in official {
            let key = |field: &str| format!("apps.{name}.{field}");
            set(key("appid"), appid.into());
            set(key("secret"), SECRET.into());
            set(key("token"), SERVER_TOKEN.into());
            let lists = [
                ("allowed_domains", &self.allowed_domains),
                ("cors_origins", &self.cors_origins),
            ];
            for (field, lists) in lists {
                if let Some((_, list)) = lists.iter().find(|(app, _)| *app == name) {
                    set(key(field), list.join(","));
                }
            }
            if self.card_sign_public.contains(&name) {
                set(key("card_sign_public"), "true".into());
            }
            let files: Vec<String> = self
                .domain_verify_files
                .iter()
                .filter(|(app, _, _)| *app == name)
                .map(|(_, file, content)| format!("{file}={content}"))
                .collect();
            if !files.is_empty() {
                set(key("domain_verify_files"), files.join(","));
            }
        }
        for (name, corpid, agentid) in &self.work_apps {
            let key = |field: &str| format!("apps.{name}.{field}");
            set(key("kind"), "work".into());
            set(key("appid"), corpid.to_string());
            set(key("secret"), SECRET.into());
            set(key("agentid"), agentid.to_string());
        }
        if !self.admin_keys.is_empty() {
            set("admin.keys".into(), self.admin_keys.join(","));
        }
        for (key, value) in &self.settings {
            set(key.to_string(), value.clone());
        }
        overrides
    }
}

/// The settings `wx-jssdk` would run with, given `overrides` (dotted keys) over its
/// built-in defaults and no file: the binary's own loader and checks, blind to this
/// process's environment (a `WXJSSDK__...` variable of the developer's must not change
/// what the tests run).
pub fn shipped_settings_with<K: AsRef<str>, V: AsRef<str>>(overrides: &[(K, V)]) -> Settings {
    let overrides: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(key, value)| (key.as_ref(), value.as_ref()))
        .collect();
    Settings::load_with_environment(None, &overrides, Some(&[]))
        .unwrap_or_else(|e| panic!("the test's settings do not load: {e}"))
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
    let cluster = with(true).then(|| {
        Arc::new(if options.cluster_replicas {
            TestCluster::start_with_replicas()
        } else {
            TestCluster::start()
        })
    });
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
    let store = match (&redis, &cluster) {
        (Some(redis), _) => Some(("redis.url", redis.url())),
        (None, Some(cluster)) => Some(("redis.cluster_urls", cluster.urls().join(","))),
        (None, None) => None,
    };
    let settings = shipped_settings_with(&options.overrides(&sandbox_url, store));
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

/// The service's `[redis]` table as it ships, for the cluster whose nodes are `urls`.
pub fn cluster_settings(urls: &[String]) -> RedisSettings {
    // The loader checks a whole configuration, and one needs an app.
    let settings = shipped_settings_with(&[
        ("redis.cluster_urls", urls.join(",").as_str()),
        ("apps.default.appid", APPID),
        ("apps.default.secret", SECRET),
        ("apps.default.token", SERVER_TOKEN),
    ]);
    settings.redis.expect("a [redis] table")
}

/// A store of the service's own kind on the Redis of `settings` (`redis.*` keys), as
/// an instance with the default app builds it.
pub fn redis_store_with(settings: &[(&'static str, String)]) -> wx_jssdk::cache::Store {
    let mut settings = settings.to_vec();
    settings.extend([
        ("apps.default.appid", APPID.to_string()),
        ("apps.default.secret", SECRET.to_string()),
        ("apps.default.token", SERVER_TOKEN.to_string()),
    ]);
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let redis = shipped_settings_with(&settings)
        .redis
        .expect("a [redis] table");
    wx_jssdk::cache::Store::Redis(
        wx_jssdk::cache::RedisStore::new(&redis).expect("a store on these settings"),
    )
}

/// The service's routes, one method per family of endpoints, for whatever serves them:
/// a [`TestApp`] in this process or a [`RunningBinary`]. Each sends what a page,
/// WeChat or a backend would send, and hands back the response as it came, so that a
/// test reads as the exchange it checks; [`Service::request`] is for the requests a
/// test makes odd on purpose.
pub trait Service {
    /// Where it answers: `http://127.0.0.1:PORT`.
    fn address(&self) -> &str;

    fn client(&self) -> &reqwest::Client;

    /// A request for `path`, for a test to add what is unusual about it (headers, a
    /// raw body, another method).
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.address());
        self.client().request(method, url)
    }

    /// `GET` a path of the service.
    async fn get(&self, path: &str) -> reqwest::Response {
        send(self.request(Method::GET, path)).await
    }

    /// The JSON answer to `GET path` with `Authorization: Bearer key`.
    async fn get_with_key(&self, path: &str, key: &str) -> serde_json::Value {
        let response = send(self.request(Method::GET, path).bearer_auth(key)).await;
        response.json().await.expect("a JSON answer")
    }

    /// `wx.config` for `page_url` from the default app's short route.
    async fn sign(&self, page_url: &str) -> reqwest::Response {
        self.sign_on("/wxJssdk/getJssdk", page_url).await
    }

    /// `wx.config` for `page_url` from the signing route `route`, URL in the query.
    async fn sign_on(&self, route: &str, page_url: &str) -> reqwest::Response {
        send(self.request(Method::GET, route).query(&[("url", page_url)])).await
    }

    /// `wx.config` for `page_url` from the app `app`'s route, `/v1/apps/{app}/jssdk/config`.
    async fn config_for(&self, app: &str, page_url: &str) -> reqwest::Response {
        self.sign_on(&format!("/v1/apps/{app}/jssdk/config"), page_url)
            .await
    }

    /// [`Service::config_for`] as a `POST` with the URL in a JSON body.
    async fn post_config_for(&self, app: &str, page_url: &str) -> reqwest::Response {
        let route = format!("/v1/apps/{app}/jssdk/config");
        let body = serde_json::json!({ "url": page_url });
        send(self.request(Method::POST, &route).json(&body)).await
    }

    /// A card signature of the app `app` (`/v1/apps/{app}/card/sign`), with a bearer
    /// `key` as a backend asks or without one as a page does.
    async fn card<Q: serde::Serialize + ?Sized>(
        &self,
        app: &str,
        query: &Q,
        key: Option<&str>,
    ) -> reqwest::Response {
        let request = self.request(Method::GET, &format!("/v1/apps/{app}/card/sign"));
        send(with_key(request.query(query), key)).await
    }

    /// WeChat's check of the server URL `route` (`/wxJssdk`, `/v1/apps/{name}/verify`).
    async fn verify<Q: serde::Serialize + ?Sized>(
        &self,
        route: &str,
        query: &Q,
    ) -> reqwest::Response {
        send(self.request(Method::GET, route).query(query)).await
    }

    /// A message WeChat pushes to the server URL `route`.
    async fn push<Q: serde::Serialize + ?Sized>(
        &self,
        route: &str,
        query: &Q,
        body: &'static str,
    ) -> reqwest::Response {
        let request = self.request(Method::POST, route).query(query);
        send(request.header("content-type", "text/xml").body(body)).await
    }

    /// The app `app`'s access_token, as another backend asks for it.
    async fn access_token(&self, app: &str, key: Option<&str>) -> reqwest::Response {
        let request = self.request(Method::GET, &format!("/v1/apps/{app}/access_token"));
        send(with_key(request, key)).await
    }

    /// Asks for the app `app`'s `credential` (`access_token`, `jsapi_ticket`,
    /// `card_ticket`, `agent_ticket`) to be invalidated, `body` naming the value.
    async fn invalidate(
        &self,
        app: &str,
        credential: &str,
        body: serde_json::Value,
        key: &str,
    ) -> reqwest::Response {
        let route = format!("/v1/apps/{app}/{credential}/invalidate");
        send(
            self.request(Method::POST, &route)
                .bearer_auth(key)
                .json(&body),
        )
        .await
    }

    /// A WeChat API call to the gateway (`gateway.enabled`), as an SDK makes it:
    /// `GET path?query` (the token, ticket and forwarded routes alike).
    async fn wechat_get<Q: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        query: &Q,
    ) -> reqwest::Response {
        send(self.request(Method::GET, path).query(query)).await
    }

    /// A WeChat API `POST` to the gateway, with a body of `content_type`.
    async fn wechat_post<Q: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        query: &Q,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let request = self.request(Method::POST, path).query(query);
        send(request.header("content-type", content_type).body(body)).await
    }
}

/// `request` with `Authorization: Bearer key`, if there is a key.
fn with_key(request: reqwest::RequestBuilder, key: Option<&str>) -> reqwest::RequestBuilder {
    match key {
        Some(key) => request.bearer_auth(key),
        None => request,
    }
}

/// Sends `request`; the service always answers, so no answer fails the test.
async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.expect("request the service")
}

impl Service for TestApp {
    fn address(&self) -> &str {
        &self.address
    }

    fn client(&self) -> &reqwest::Client {
        &self.client
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

    /// `GET` a path of the operations listener (`Options::ops_listener`).
    pub async fn ops_get(&self, path: &str) -> reqwest::Response {
        let ops = self.ops_address.as_deref().expect("an operations listener");
        send(self.client.get(format!("{ops}{path}"))).await
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

/// Signs on every instance (each answer checked: 200 and a valid signature) until
/// `probe` can write `probe_key` again after a server was killed at `killed`; fails
/// after 30 s. Returns when the write succeeded, since `killed`, and how many
/// signatures were made meanwhile.
pub async fn sign_until_written(
    instances: &[&TestApp],
    probe: &wx_jssdk::cache::Store,
    probe_key: &str,
    killed: Instant,
) -> (Duration, usize) {
    let mut signed = 0;
    loop {
        let answers = futures_util::future::join_all(
            instances
                .iter()
                .map(|instance| instance.sign_and_check("https://page.example.com/")),
        )
        .await;
        signed += answers.len();
        if probe
            .set(probe_key, "after", Duration::from_secs(60))
            .await
            .is_ok()
        {
            return (killed.elapsed(), signed);
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no write succeeded within 30 s of the kill"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After a failover to the server behind `new_primary`: the probe's write (`probe_key`
/// = "after") landed there, the failover itself cost no WeChat call (`calls`: the
/// counts before), then a renewal there, and a cold instance. The ticket at `key` is
/// invalidated through `first` (an admin key of `admin_key`), a warm instance whose
/// pool held connections to the dead server, and replaced with exactly one WeChat
/// call; every instance then signs with it, and a cold instance started now reads it
/// from the store.
pub async fn renew_and_start_cold_after_failover(
    first: &TestApp,
    instances: &[&TestApp],
    new_primary: &mut redis::aio::MultiplexedConnection,
    probe_key: &str,
    key: &str,
    admin_key: &str,
    calls: wx_sandbox::CallCounts,
) {
    use redis::AsyncCommands;

    let probed: Option<String> = new_primary.get(probe_key).await.unwrap();
    assert_eq!(
        probed.as_deref(),
        Some("after"),
        "written on the new primary"
    );
    assert_eq!(
        first.sandbox.calls(),
        calls,
        "no WeChat call for the failover"
    );

    // Each instance's own connection may still be finding the new primary when
    // another client first wrote there: await what an operator's probe awaits.
    let deadline = Instant::now() + Duration::from_secs(10);
    for instance in instances {
        while instance.get("/readyz").await.status() != 200 {
            assert!(
                Instant::now() < deadline,
                "an instance is not ready within 10 s of the first write on the new primary"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let old: String = new_primary.get(key).await.unwrap();
    let old: serde_json::Value = serde_json::from_str(&old).unwrap();
    let response = first
        .invalidate(
            "default",
            "jsapi_ticket",
            serde_json::json!({ "ticket": old["value"] }),
            admin_key,
        )
        .await;
    assert_eq!(response.status(), 200);
    let renewed = first.sandbox.calls();
    assert_eq!(
        renewed.getticket,
        calls.getticket + 1,
        "one ticket call: {renewed:?}"
    );
    let current = first.sandbox.current_ticket(APPID).expect("a ticket");
    let stored: String = new_primary.get(key).await.unwrap();
    assert!(
        stored.contains(&current),
        "the new primary holds the new ticket"
    );
    for instance in instances {
        instance.sign_and_check("https://page.example.com/").await;
    }
    let cold = first.spawn_instance();
    assert_eq!(cold.get("/readyz").await.status(), 200);
    cold.sign_and_check("https://page.example.com/cold").await;
    assert_eq!(
        first.sandbox.calls(),
        renewed,
        "the cold instance read the store"
    );
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
    /// Bounds every request, so that an instance that stops answering fails the test.
    client: reqwest::Client,
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
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
        };
        binary.wait_until_up().await;
        binary
    }

    /// The binary with the default app on `env`'s Redis and sandbox, configured from a
    /// file, logging at debug level (with `vars` set too) into the file returned: for
    /// the tests that read everything it printed.
    pub async fn logging_at_debug(
        env: &TestApp,
        vars: &[(&str, &str)],
    ) -> (Self, tempfile::NamedTempFile) {
        let mut config = tempfile::NamedTempFile::new().expect("a configuration file");
        let text = format!(
            "[redis]\nurl = \"{}\"\n[wechat]\napi_base = \"{}\"\n\
             [apps.default]\nappid = \"{APPID}\"\nsecret = \"{SECRET}\"\ntoken = \"{SERVER_TOKEN}\"\n",
            env.redis().url(),
            env.sandbox_url
        );
        std::io::Write::write_all(&mut config, text.as_bytes()).expect("write the configuration");
        let logs = tempfile::NamedTempFile::new().expect("a log file");
        let config_path = config.path().to_string_lossy().to_string();
        let mut env_vars = vec![("RUST_LOG", "debug")];
        env_vars.extend_from_slice(vars);
        let binary = Self::start(
            &["--config", &config_path],
            &env_vars,
            Stdio::from(logs.reopen().expect("the log file")),
        )
        .await;
        (binary, logs)
    }

    async fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.request(Method::GET, "/healthz").send().await.is_err() {
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

impl Service for RunningBinary {
    fn address(&self) -> &str {
        &self.address
    }

    fn client(&self) -> &reqwest::Client {
        &self.client
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
