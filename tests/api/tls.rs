//! `rediss://`: a real TLS `redis-server` whose certificate a private CA of the test's
//! own signed (made with `openssl`), as managed Redis services do.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wx_jssdk::cache::{RedisStore, Store, StoreError};
use wx_jssdk::configuration::{RedisSettings, Settings};

use crate::certificates::Certificates;
use crate::common::free_port;
use crate::config::{check_config, run_with_config, stderr, COMPLETE_APP};
use crate::helpers::{redis_store_with, spawn_app_with, Options, TestCluster};
use crate::store::{check_semantics, single_redis};

/// A `redis-server` of a test's own with the options a test needs (TLS, passwords),
/// logging to `log`; killed when dropped.
pub struct RedisProcess {
    child: Child,
    pub port: u16,
}

impl RedisProcess {
    /// Starts `redis-server` with `options` (which say where it listens on `port`) and
    /// waits, bounded, until it listens: a plain client cannot PING a TLS port or a
    /// server that wants a password, so this waits for the port.
    pub fn start(port: u16, options: &[&str], log: &Path) -> Self {
        let child = Command::new("redis-server")
            .args(options)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--logfile", &log.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}", crate::helpers::missing_redis("redis-server", e)));
        let mut redis = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        let log = || std::fs::read_to_string(log).unwrap_or_default();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = redis.child.try_wait() {
                panic!("redis-server {options:?} exited ({status})\n{}", log());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server {options:?} did not listen on {port} within 10 s\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `redis-server` that only speaks TLS, with the server certificate of `certs`;
/// with `client_certificates`, it asks clients for a certificate of the CA.
struct TlsRedis {
    process: RedisProcess,
    certs: Certificates,
}

impl TlsRedis {
    fn start(client_certificates: bool) -> Self {
        let certs = Certificates::make();
        let port = free_port();
        let path = |name: &str| certs.path(name).display().to_string();
        let (port_option, cert, key, ca) = (
            port.to_string(),
            path("server.crt"),
            path("server.key"),
            path("ca.crt"),
        );
        let options = [
            "--port",
            "0",
            "--tls-port",
            &port_option,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            if client_certificates { "yes" } else { "no" },
        ];
        let process = RedisProcess::start(port, &options, &certs.path("redis.log"));
        Self { process, certs }
    }

    fn url(&self, host: &str) -> String {
        format!("rediss://{host}:{}/0", self.process.port)
    }
}

/// The settings of a store on the Redis at `url`, with time for TLS handshakes on a
/// busy machine.
fn settings(url: String) -> RedisSettings {
    RedisSettings {
        timeout: Duration::from_millis(3000),
        ..single_redis(url)
    }
}

/// The first operation's error, which must come well before the timeout: a refused
/// handshake is an answer, not a hang.
pub async fn refused(store: &Store) -> String {
    let started = Instant::now();
    let error = store
        .get("k")
        .await
        .expect_err("the connection must be refused");
    assert!(
        !matches!(error, StoreError::Timeout(_)),
        "a refused handshake must not wait for the timeout: {error}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "{error}");
    error.to_string()
}

#[actix_web::test]
async fn rediss_with_the_private_ca_reads_and_writes_and_without_it_is_refused() {
    let redis = TlsRedis::start(false);
    let trusting = |host: &str| {
        let mut settings = settings(redis.url(host));
        settings.tls_ca_file = Some(redis.certs.path("ca.crt"));
        Store::Redis(RedisStore::new(&settings).unwrap())
    };
    check_semantics(&trusting("127.0.0.1")).await;
    // By name too: the certificate is checked against the host of the URL.
    let by_name = trusting("localhost");
    by_name
        .set("by-name", "v", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(by_name.get("by-name").await.unwrap().as_deref(), Some("v"));

    // The public roots do not know the private CA.
    let store = Store::Redis(RedisStore::new(&settings(redis.url("127.0.0.1"))).unwrap());
    let error = refused(&store).await;
    assert!(error.to_lowercase().contains("certificate"), "{error}");

    // Nor does a plain connection get through to a TLS port.
    let store = Store::Redis(
        RedisStore::new(&settings(format!(
            "redis://127.0.0.1:{}/0",
            redis.process.port
        )))
        .unwrap(),
    );
    assert!(store.get("k").await.is_err());
}

#[actix_web::test]
async fn a_client_certificate_is_presented_when_the_server_asks_for_one() {
    let redis = TlsRedis::start(true);
    let mut with_certificate = settings(redis.url("127.0.0.1"));
    with_certificate.tls_ca_file = Some(redis.certs.path("ca.crt"));
    with_certificate.tls_cert_file = Some(redis.certs.path("client.crt"));
    with_certificate.tls_key_file = Some(redis.certs.path("client.key"));
    check_semantics(&Store::Redis(RedisStore::new(&with_certificate).unwrap())).await;

    let mut without = settings(redis.url("127.0.0.1"));
    without.tls_ca_file = Some(redis.certs.path("ca.crt"));
    let store = Store::Redis(RedisStore::new(&without).unwrap());
    assert!(
        store.get("k").await.is_err(),
        "the server wants a certificate"
    );
}

/// A Redis Cluster over TLS, as managed clusters run: every node (and the cluster
/// bus) speaks TLS only with certificates of a private CA and wants a client
/// certificate. The service verifies every node it discovers with `redis.tls_ca_file`
/// and shows `redis.tls_cert_file`; without them, it is refused.
#[actix_web::test]
async fn a_cluster_over_tls_is_verified_with_the_private_ca_and_shown_the_client_certificate() {
    let cluster = TestCluster::start_tls();
    check_semantics(&redis_store_with(&cluster.settings())).await;
    // Keys on every primary: one per node's slots, read back through the cluster.
    let store = redis_store_with(&cluster.settings());
    for key in ["{a}", "{b}", "{c}", "{d}", "{e}"] {
        store.set(key, key, Duration::from_secs(10)).await.unwrap();
        assert_eq!(store.get(key).await.unwrap().as_deref(), Some(key));
    }

    // The service on it signs.
    let app = spawn_app_with(
        Options {
            with_redis: false,
            ..Options::default()
        }
        .set_all(cluster.settings()),
    )
    .await;
    app.sign_and_check("https://page.example.com/").await;

    // Without the client certificate, and with the public roots only, it is refused.
    let without_certificate: Vec<_> = cluster
        .settings()
        .into_iter()
        .filter(|(key, _)| !key.starts_with("redis.tls_cert") && !key.starts_with("redis.tls_key"))
        .collect();
    let error = redis_store_with(&without_certificate)
        .get("k")
        .await
        .expect_err("the nodes want a client certificate")
        .to_string();
    // And the error says why, not only that no node could be reached.
    assert!(error.contains("CertificateRequired"), "{error}");
    let public_roots = &cluster.settings()[..1];
    let error = redis_store_with(public_roots)
        .get("k")
        .await
        .expect_err("the public roots do not know the private CA")
        .to_string();
    assert!(error.contains("UnknownIssuer"), "{error}");
}

/// Loads `toml` (with [`COMPLETE_APP`]) as the service would.
fn load(redis: &str) -> Result<Settings, String> {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(
        &mut file,
        format!("{COMPLETE_APP}\n[redis]\n{redis}").as_bytes(),
    )
    .unwrap();
    Settings::load_with_environment(Some(file.path()), &[], Some(&[])).map_err(|e| e.to_string())
}

#[test]
fn tls_files_that_cannot_be_used_stop_startup_naming_the_key() {
    let certs = Certificates::make();
    let ca = certs.path("ca.crt").display().to_string();
    let key = certs.path("client.key").display().to_string();
    let url = "url = \"rediss://:hunter2@redis.example:6380/0\"\n";
    assert!(load(&format!("{url}tls_ca_file = \"{ca}\"\n")).is_ok());
    let cluster = "cluster_urls = [\"rediss://:hunter2@redis.example:7000\"]\n";
    assert!(load(&format!("{cluster}tls_ca_file = \"{ca}\"\n")).is_ok());

    let cases = [
        (
            format!("{url}tls_ca_file = \"/nonexistent/ca.pem\"\n"),
            "redis.tls_ca_file",
            "cannot be read",
        ),
        (
            format!("{url}tls_ca_file = \"{key}\"\n"),
            "redis.tls_ca_file",
            "holds no PEM certificate",
        ),
        (
            format!("{url}tls_cert_file = \"{ca}\"\n"),
            "redis.tls_key_file",
            "is missing",
        ),
        (
            format!("{url}tls_cert_file = \"{ca}\"\ntls_key_file = \"{ca}\"\n"),
            "redis.tls_key_file",
            "holds no PEM private key",
        ),
        (
            format!("url = \"redis://:hunter2@redis.example:6379/0\"\ntls_ca_file = \"{ca}\"\n"),
            "redis.tls_ca_file",
            "rediss://",
        ),
        (
            format!("cluster_urls = [\"redis://:hunter2@redis.example:7000\"]\ntls_ca_file = \"{ca}\"\n"),
            "redis.tls_ca_file",
            "rediss://",
        ),
    ];
    for (redis, key, problem) in cases {
        let error = load(&redis).expect_err(&redis);
        assert!(
            error.contains(key) && error.contains(problem),
            "{redis}: {error}"
        );
        assert!(!error.contains("hunter2"), "{error}");
    }

    // And the binary does not start on them.
    let output = run_with_config(
        &format!("{COMPLETE_APP}\n[redis]\n{url}tls_ca_file = \"/nonexistent/ca.pem\"\n"),
        &[],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("redis.tls_ca_file"),
        "{}",
        stderr(&output)
    );
}

/// The environment's form of a managed Redis: `check-config` shows the URL without
/// its user and password, and the files by path.
#[test]
fn check_config_shows_tls_settings_from_the_environment_and_no_credentials() {
    let certs = Certificates::make();
    let ca = certs.path("ca.crt").display().to_string();
    let output = check_config(
        COMPLETE_APP,
        &[
            (
                "WXJSSDK__REDIS__URL",
                "rediss://wxjssdk:acl-hunter2@r-example.redis.rds.aliyuncs.com:6380/0",
            ),
            ("WXJSSDK__REDIS__TLS_CA_FILE", &ca),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = String::from_utf8_lossy(&output.stdout).to_string();
    for expected in [
        "redis.url = rediss://:***@r-example.redis.rds.aliyuncs.com:6380/0  # environment"
            .to_string(),
        format!("redis.tls_ca_file = {ca}  # environment"),
    ] {
        assert!(out.contains(&expected), "{expected:?} in\n{out}");
    }
    assert!(
        !out.contains("acl-hunter2") && !out.contains("wxjssdk:"),
        "{out}"
    );
}
