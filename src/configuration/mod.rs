//! Layered settings: built-in defaults < a TOML file (`--config FILE` or
//! `WXJSSDK_CONFIG`) < environment variables `WXJSSDK__SECTION__KEY`.
//!
//! Every problem is reported at start-up with the key it concerns, so that a
//! misconfigured instance never starts serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat, Map};
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

use crate::access::{AllowedDomains, CorsOrigins, TrustedProxies};
use crate::logging::LogFormat;
use crate::secret::Secret;

mod describe;
mod keys;
mod parse;
mod validate;

pub(crate) use describe::Described;

/// The name of the app that serves the short, seed-compatible routes (`/wxJssdk...`)
/// when several apps are configured.
pub(crate) const DEFAULT_APP: &str = "default";

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub server: ServerSettings,
    /// Absent: the in-process store, which is only correct for a single instance.
    pub redis: Option<RedisSettings>,
    pub wechat: WechatSettings,
    pub cache: CacheSettings,
    #[serde(default)]
    pub apps: BTreeMap<String, AppSettings>,
    /// Keys of the routes for the company's other backends; none: those routes do not exist.
    #[serde(default)]
    pub admin: AdminSettings,
    /// The WeChat-compatible routes for existing SDKs (`routes::gateway`).
    pub gateway: GatewaySettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub bind: String,
    /// The operations listener (`/metrics`, `/healthz`, `/readyz`), e.g. `0.0.0.0:9090`.
    /// Set: `/metrics` is served there only, out of reach of the public listener.
    /// Absent: everything is served on `bind`.
    pub ops_bind: Option<String>,
    /// Worker threads; defaults to the number of CPUs.
    pub workers: Option<usize>,
    /// On SIGTERM, how long requests in flight may take to finish before the workers
    /// are stopped anyway.
    #[serde(rename = "shutdown_timeout_secs", deserialize_with = "parse::seconds")]
    pub shutdown_timeout: Duration,
    /// A client must have sent a request's whole head (request line and headers) this
    /// long after connecting or after its previous request, or it is cut off (408): a
    /// slow client cannot hold a connection open by dribbling headers.
    #[serde(
        rename = "client_request_timeout_ms",
        deserialize_with = "parse::millis"
    )]
    pub client_request_timeout: Duration,
    /// A request's body must have arrived this long after its handler started reading
    /// it, or the request is answered 408 and the connection closed: a slow client
    /// cannot hold a worker's connection by dribbling a body either.
    #[serde(rename = "client_body_timeout_ms", deserialize_with = "parse::millis")]
    pub client_body_timeout: Duration,
    /// How long a closing connection may take to shut down cleanly before it is dropped.
    #[serde(
        rename = "client_disconnect_timeout_ms",
        deserialize_with = "parse::millis"
    )]
    pub client_disconnect_timeout: Duration,
    /// Open connections per worker; beyond it the worker stops accepting until some
    /// close (the kernel's backlog holds the rest).
    pub max_connections: usize,
    /// Reverse proxies (CIDRs such as `10.0.0.0/8`, or single addresses) whose
    /// `X-Forwarded-For` is believed: behind them the client is the last address in
    /// that header that is not itself a trusted proxy. Empty: the peer is the client.
    #[serde(default, deserialize_with = "parse::proxy_list")]
    pub trusted_proxies: TrustedProxies,
}

/// Where the shared store lives: one Redis server (`url`), a Redis Cluster
/// (`cluster_urls`) or a master found through Redis Sentinel (`sentinel_urls`),
/// exactly one of the three; see [`RedisSettings::topology`].
#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    /// A single Redis server (or anything that speaks to clients like one).
    #[serde(default)]
    pub url: Option<Secret>,
    /// Seed nodes of a Redis Cluster. The client learns the rest of the cluster (and
    /// every later resharding) from any one that answers, so listing a few is enough.
    /// A list, or one comma-separated string (the environment's form).
    #[serde(default, deserialize_with = "parse::list_or_comma_separated")]
    pub cluster_urls: Option<Vec<Secret>>,
    /// Redis Sentinels that monitor the master (`sentinel_master`): the store asks
    /// them where the master is, and again after a failover. The URLs' user, password
    /// and database are the data nodes' (the master's); the sentinels' own
    /// credentials are `sentinel_username` and `sentinel_password`. A list, or one
    /// comma-separated string (the environment's form).
    #[serde(default, deserialize_with = "parse::list_or_comma_separated")]
    pub sentinel_urls: Option<Vec<Secret>>,
    /// The name the sentinels monitor the master under (`sentinel monitor NAME ...`).
    #[serde(default)]
    pub sentinel_master: Option<String>,
    /// The user the sentinels ask for (ACL), if any.
    #[serde(default)]
    pub sentinel_username: Option<Secret>,
    /// The password the sentinels ask for (`requirepass` of the sentinels), if any.
    #[serde(default)]
    pub sentinel_password: Option<Secret>,
    /// A PEM file of the CA certificate(s) that signed the Redis servers' certificates
    /// (the private CA of a managed Redis). Set: `rediss://` servers (and sentinels)
    /// are verified against it instead of the public roots built in. Read at start-up.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// A PEM file of the client certificate (chain) to present to servers that ask for
    /// one (`tls-auth-clients yes`); with `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// A PEM file of the private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    pub key_prefix: String,
    pub pool_size: usize,
    /// Bound on connecting to Redis and on each command.
    #[serde(rename = "timeout_ms", deserialize_with = "parse::millis")]
    pub timeout: Duration,
}

/// The Redis deployment [`RedisSettings`] describe, once checked.
#[derive(Debug, Clone, Copy)]
pub enum RedisTopology<'a> {
    Single(&'a Secret),
    Cluster(&'a [Secret]),
    Sentinel(SentinelTopology<'a>),
}

/// A master found through Redis Sentinel, once checked.
#[derive(Debug, Clone, Copy)]
pub struct SentinelTopology<'a> {
    /// The sentinels' addresses; their user, password and database (the same in
    /// every URL) are the data nodes'.
    pub urls: &'a [Secret],
    /// `redis.sentinel_master`.
    pub master: &'a str,
    /// The sentinels' own credentials.
    pub username: Option<&'a Secret>,
    pub password: Option<&'a Secret>,
}

impl RedisSettings {
    /// Which Redis to use: exactly one of `url`, `cluster_urls` and `sentinel_urls`
    /// must be set, and every URL must be `redis://` or `rediss://`. Messages name the
    /// key, never the URL, which may carry a password.
    pub fn topology(&self) -> Result<RedisTopology<'_>, ConfigError> {
        let set: Vec<&str> = [
            ("redis.url", self.url.is_some()),
            ("redis.cluster_urls", self.cluster_urls.is_some()),
            ("redis.sentinel_urls", self.sentinel_urls.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect();
        if let [first, others @ ..] = set.as_slice() {
            if !others.is_empty() {
                let others: Vec<String> = others.iter().map(|k| format!("`{k}`")).collect();
                return Err(invalid(
                    *first,
                    &format!(
                        "and {} are all set: keep one (a single Redis, the nodes of a Redis \
                         Cluster, or the sentinels of a master)",
                        others.join(" and ")
                    ),
                ));
            }
        }
        if self.sentinel_urls.is_none() {
            let sentinel_only = [
                ("redis.sentinel_master", self.sentinel_master.is_some()),
                ("redis.sentinel_username", self.sentinel_username.is_some()),
                ("redis.sentinel_password", self.sentinel_password.is_some()),
            ];
            if let Some((key, _)) = sentinel_only.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    *key,
                    "is only read with `redis.sentinel_urls`, which is not set",
                ));
            }
        }
        match (&self.url, &self.cluster_urls, &self.sentinel_urls) {
            (None, None, None) => Err(invalid(
                "redis.url",
                "or `redis.cluster_urls` or `redis.sentinel_urls` must be set in [redis] \
                 (leave [redis] out for the in-process store)",
            )),
            (_, _, Some(urls)) => self.sentinel_topology(urls),
            (Some(url), _, _) => match uses_tls(url) {
                Some(_) => Ok(RedisTopology::Single(url)),
                None => Err(invalid(
                    "redis.url",
                    "must start with redis:// or rediss://",
                )),
            },
            (None, Some(urls), None) => {
                if urls.is_empty() {
                    return Err(invalid("redis.cluster_urls", "must list at least one node"));
                }
                let mut cluster_tls = None;
                for (i, url) in urls.iter().enumerate() {
                    let key = || format!("redis.cluster_urls[{i}]");
                    let tls = uses_tls(url)
                        .ok_or_else(|| invalid(key(), "must start with redis:// or rediss://"))?;
                    // The cluster client takes TLS, user and password from the first node
                    // for every node it discovers, so a mix cannot work.
                    if *cluster_tls.get_or_insert(tls) != tls {
                        return Err(invalid(
                            key(),
                            "mixes redis:// and rediss:// with the other nodes: a cluster uses one",
                        ));
                    }
                    // A cluster only has database 0; any other makes every connection fail.
                    let database = url::Url::parse(url.expose())
                        .map(|u| u.path().trim_matches('/').to_string())
                        .unwrap_or_default();
                    if !database.is_empty() && database != "0" {
                        return Err(invalid(
                            key(),
                            "names a database: a Redis Cluster only has database 0",
                        ));
                    }
                }
                Ok(RedisTopology::Cluster(urls))
            }
        }
    }

    /// `redis.sentinel_urls` and the keys that go with it, checked.
    fn sentinel_topology<'a>(
        &'a self,
        urls: &'a [Secret],
    ) -> Result<RedisTopology<'a>, ConfigError> {
        if urls.is_empty() {
            return Err(invalid(
                "redis.sentinel_urls",
                "must list at least one sentinel",
            ));
        }
        let master = match self.sentinel_master.as_deref().map(str::trim) {
            Some(master) if !master.is_empty() => master,
            _ => {
                return Err(invalid(
                    "redis.sentinel_master",
                    "is missing: with `redis.sentinel_urls`, name the master as the sentinels \
                     monitor it (`sentinel monitor NAME ...` in their configuration)",
                ))
            }
        };
        // The scheme, user, password and database of each URL: the data nodes'
        // connection, which must be one for all of them.
        let mut first: Option<(bool, String, Option<String>, String)> = None;
        for (i, url) in urls.iter().enumerate() {
            let key = || format!("redis.sentinel_urls[{i}]");
            let tls = uses_tls(url)
                .ok_or_else(|| invalid(key(), "must start with redis:// or rediss://"))?;
            let parsed = url::Url::parse(url.expose())
                .ok()
                .filter(url::Url::has_host)
                .ok_or_else(|| invalid(key(), "is not a URL with a host"))?;
            let database = parsed.path().trim_matches('/').to_string();
            if !database.is_empty() && database.parse::<u32>().is_err() {
                return Err(invalid(key(), "names a database that is not a number"));
            }
            let this = (
                tls,
                parsed.username().to_string(),
                parsed.password().map(str::to_string),
                database,
            );
            match &first {
                None => first = Some(this),
                Some(first) if *first != this => {
                    return Err(invalid(
                        key(),
                        "differs from `redis.sentinel_urls[0]` in scheme, user, password or \
                         database: those are the data nodes' connection, one for all the URLs",
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(RedisTopology::Sentinel(SentinelTopology {
            urls,
            master,
            username: self.sentinel_username.as_ref(),
            password: self.sentinel_password.as_ref(),
        }))
    }
}

/// The files `redis.tls_ca_file`, `redis.tls_cert_file` and `redis.tls_key_file`
/// name, read and checked to hold PEM of the right kind. Not `Debug`: the key is a
/// secret.
pub struct RedisTls {
    /// The CA certificates to verify the servers with; none: the public roots.
    pub ca: Option<Vec<u8>>,
    /// The client certificate chain and its private key, both PEM.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl RedisSettings {
    /// The TLS files, read; `None` when none is set. Each problem (a file missing or
    /// unreadable, or without PEM of its kind, a key without its certificate, TLS
    /// files for `redis://` URLs) names its key.
    pub fn tls(&self) -> Result<Option<RedisTls>, ConfigError> {
        let files = [
            ("redis.tls_ca_file", &self.tls_ca_file),
            ("redis.tls_cert_file", &self.tls_cert_file),
            ("redis.tls_key_file", &self.tls_key_file),
        ];
        let Some((first_set, _)) = files.iter().find(|(_, file)| file.is_some()) else {
            return Ok(None);
        };
        let urls_use_tls = match self.topology()? {
            RedisTopology::Single(url) => uses_tls(url),
            // One scheme for every node: checked by `topology`.
            RedisTopology::Cluster(urls) => uses_tls(&urls[0]),
            RedisTopology::Sentinel(topology) => uses_tls(&topology.urls[0]),
        };
        if urls_use_tls != Some(true) {
            return Err(invalid(
                *first_set,
                "is only read with rediss:// (TLS) URLs, and the Redis URLs are redis://",
            ));
        }
        let ca = match &self.tls_ca_file {
            Some(path) => Some(read_pem(
                "redis.tls_ca_file",
                path,
                "PEM certificate",
                has_certificate,
            )?),
            None => None,
        };
        let client = match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((
                read_pem(
                    "redis.tls_cert_file",
                    cert,
                    "PEM certificate",
                    has_certificate,
                )?,
                read_pem("redis.tls_key_file", key, "PEM private key", |pem| {
                    rustls::pki_types::PrivateKeyDer::from_pem_slice(pem).is_ok()
                })?,
            )),
            (Some(_), None) => {
                return Err(invalid(
                    "redis.tls_key_file",
                    "is missing: `redis.tls_cert_file` needs the file of its private key",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "redis.tls_cert_file",
                    "is missing: `redis.tls_key_file` needs the file of its certificate",
                ))
            }
        };
        Ok(Some(RedisTls { ca, client }))
    }
}

/// Whether `pem` holds at least one certificate, and nothing unreadable.
fn has_certificate(pem: &[u8]) -> bool {
    let certificates: Result<Vec<_>, _> =
        rustls::pki_types::CertificateDer::pem_slice_iter(pem).collect();
    certificates.is_ok_and(|c| !c.is_empty())
}

/// The file at `path`, if it can be read and `holds` what it must (`what`).
fn read_pem(
    key: &str,
    path: &Path,
    what: &str,
    holds: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, ConfigError> {
    let pem = std::fs::read(path)
        .map_err(|e| invalid(key, &format!("cannot be read ({}): {e}", path.display())))?;
    if !holds(&pem) {
        return Err(invalid(
            key,
            &format!("({}) holds no {what}", path.display()),
        ));
    }
    Ok(pem)
}

/// Some(whether it uses TLS) for a Redis URL, None for anything else.
fn uses_tls(url: &Secret) -> Option<bool> {
    let url = url.expose();
    if url.starts_with("rediss://") {
        Some(true)
    } else {
        url.starts_with("redis://").then_some(false)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum TokenMode {
    /// `POST cgi-bin/stable_token`: independent of other callers' tokens.
    Stable,
    /// `GET cgi-bin/token`: every call invalidates the previous token after 5 minutes.
    Classic,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WechatSettings {
    /// The WeChat API (`https://api.weixin.qq.com`; the sandbox in tests and `--dev`).
    #[serde(deserialize_with = "parse::http_url")]
    pub api_base: url::Url,
    /// The WeChat Work API, for apps of `kind = "work"`.
    #[serde(deserialize_with = "parse::http_url")]
    pub work_api_base: url::Url,
    pub token_mode: TokenMode,
    /// Bound on one call to WeChat.
    #[serde(rename = "timeout_ms", deserialize_with = "parse::millis")]
    pub timeout: Duration,
    /// Further attempts after a call fails in a passing way (errcode -1, timeout,
    /// connection error), with exponential backoff and jitter.
    pub retries: u32,
    /// Replay window of the server-URL requests (verification and pushes): one whose
    /// `timestamp` is further than this many seconds from now, either way, or is not a
    /// number, is refused before its signature is checked. `None` (0 in the settings):
    /// off (WeChat's documented check is the signature alone, which a recorded request
    /// passes forever).
    #[serde(
        rename = "verify_max_age_secs",
        deserialize_with = "parse::seconds_or_off"
    )]
    pub verify_max_age: Option<Duration>,
}

/// How long cached values are trusted and how refreshes are coordinated.
#[derive(Debug, Clone, Deserialize)]
pub struct CacheSettings {
    /// A value is not handed out in the last this-many seconds before WeChat's
    /// `expires_in` ends, so that a page has time to call `wx.config` with it, unless
    /// no newer value can be had (WeChat re-issued it, or renewing it failed).
    /// Capped at a fifth of `expires_in` for short-lived values.
    #[serde(rename = "safety_margin_secs", deserialize_with = "parse::seconds")]
    pub safety_margin: Duration,
    /// A value is renewed (by one instance, while all keep using it) this long before
    /// it stops being handed out: the time WeChat has to recover from an outage before
    /// anyone notices. Capped at half of the usable life.
    #[serde(rename = "refresh_ahead_secs", deserialize_with = "parse::seconds")]
    pub refresh_ahead: Duration,
    /// Lifetime of the refresh lock: if its holder dies, another instance takes over
    /// after this long. A live holder extends it while it works.
    #[serde(rename = "lock_ttl_ms", deserialize_with = "parse::millis")]
    pub lock_ttl: Duration,
    /// How long a request waits for a refresh before answering 503.
    #[serde(rename = "lock_wait_ms", deserialize_with = "parse::millis")]
    pub lock_wait: Duration,
    /// How often an instance compares its in-memory copy with the store: the bound on
    /// how long a change made by another instance takes to reach this one.
    #[serde(rename = "local_recheck_ms", deserialize_with = "parse::millis")]
    pub local_recheck: Duration,
    /// Invalidations asked for by callers (`POST .../invalidate`) allowed per
    /// credential of an app per day (China time), deployment-wide: each costs a call
    /// of WeChat's daily quota (about 2000 token calls a day; test accounts 200).
    pub invalidations_per_day: u64,
}

impl CacheSettings {
    /// The defaults that ship (the `cache.*` entries of [`DEFAULTS`]), for code that
    /// needs cache settings without a configuration: unit tests and the fuzzers.
    pub fn shipped() -> Self {
        let cache = DEFAULTS
            .iter()
            .filter_map(|(key, value)| Some((key.strip_prefix("cache.")?, *value)));
        cache
            .fold(Config::builder(), |builder, (key, value)| {
                builder
                    .set_default(key, value)
                    .expect("a key of DEFAULTS is a valid path")
            })
            .build()
            .and_then(Config::try_deserialize)
            .expect("the shipped cache defaults parse")
    }
}

impl TryFrom<String> for TokenMode {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        parse::one_of(
            &value,
            &[("stable", Self::Stable), ("classic", Self::Classic)],
        )
    }
}

/// What kind of WeChat app a `[apps.NAME]` table describes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum AppKind {
    /// An official account (公众号): `api.weixin.qq.com`.
    #[default]
    Official,
    /// A WeChat Work (企业微信) application: `qyapi.weixin.qq.com`.
    Work,
}

impl TryFrom<String> for AppKind {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        parse::one_of(
            &value,
            &[("official", Self::Official), ("work", Self::Work)],
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct AppSettings {
    #[serde(default)]
    pub kind: AppKind,
    /// The AppID of an official account, or the CorpID of a WeChat Work corp
    /// (`corpid` in the file): the `appId` of `wx.config` either way.
    #[serde(alias = "corpid")]
    pub appid: String,
    /// The AppSecret, or the Secret of the WeChat Work application (`corpsecret`).
    #[serde(alias = "corpsecret")]
    pub secret: Secret,
    /// WeChat Work only: the application's AgentId, for `wx.agentConfig`.
    pub agentid: Option<String>,
    /// The Token entered in the account's server configuration, used to verify
    /// that requests to the server URL come from WeChat (official accounts).
    pub token: Option<Secret>,
    /// Hosts of the pages this app signs for (`example.com`, `*.example.com`): the
    /// account's JS interface safe domains. Empty: any host.
    #[serde(default, deserialize_with = "parse::domain_list")]
    pub allowed_domains: AllowedDomains,
    /// Browser origins whose scripts may call this app's signing routes
    /// (`https://a.example.com`, or `*`). Empty: none.
    #[serde(default, deserialize_with = "parse::origin_list")]
    pub cors_origins: CorsOrigins,
    /// Whether browsers may ask for `wx.addCard` signatures (a `cardExt` for any card,
    /// code and user) without an admin key. Off: only a backend with a key may, since
    /// for cards with custom codes a signature is a coupon of the caller's choosing.
    #[serde(default, deserialize_with = "parse::flag")]
    pub card_sign_public: bool,
    /// The domain verification files WeChat asks to find at the root of a JS interface
    /// safe domain (`MP_verify_….txt`, `WW_verify_….txt` for WeChat Work), by name,
    /// with their content: served at `/NAME`, so that when the domain's root reaches
    /// the service no file needs to live on another server.
    #[serde(default, deserialize_with = "parse::verify_files")]
    pub domain_verify_files: BTreeMap<String, String>,
    /// Whose credentials these are in the shared cache: the AppID, or for WeChat
    /// Work `CORPID/AGENTID`, since every application of a corp has its own token.
    #[serde(skip)]
    cache_id: String,
    /// The app's name in `[apps.NAME]`: the `app` label of the per-app metrics (an
    /// operator's word for the app, and bounded by the configuration). Set by the
    /// service when it takes the app from the settings; empty before. Shared, so that
    /// what carries it per request (the cache's slot) copies no string.
    #[serde(skip)]
    name: Arc<str>,
}

impl AppSettings {
    /// An official account.
    pub fn official(appid: &str, secret: Secret, token: Secret) -> Self {
        Self::finish(Self {
            kind: AppKind::Official,
            appid: appid.to_string(),
            secret,
            agentid: None,
            token: Some(token),
            allowed_domains: AllowedDomains::default(),
            cors_origins: CorsOrigins::default(),
            card_sign_public: false,
            domain_verify_files: BTreeMap::new(),
            cache_id: String::new(),
            name: Arc::default(),
        })
    }

    /// A WeChat Work application.
    pub fn work(corpid: &str, secret: Secret, agentid: &str) -> Self {
        Self::finish(Self {
            kind: AppKind::Work,
            appid: corpid.to_string(),
            secret,
            agentid: Some(agentid.to_string()),
            token: None,
            allowed_domains: AllowedDomains::default(),
            cors_origins: CorsOrigins::default(),
            card_sign_public: false,
            domain_verify_files: BTreeMap::new(),
            cache_id: String::new(),
            name: Arc::default(),
        })
    }

    fn finish(mut self) -> Self {
        self.cache_id = match (self.kind, &self.agentid) {
            (AppKind::Work, Some(agentid)) => format!("{}/{agentid}", self.appid),
            _ => self.appid.clone(),
        };
        self
    }

    pub fn cache_id(&self) -> &str {
        &self.cache_id
    }

    /// This app, known by `name` (its `[apps.NAME]`).
    pub(crate) fn named(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    /// Its name in `[apps.NAME]` (empty for an app not taken from the settings).
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }
}

/// `[admin]`: access for the company's other backends (see `routes::admin`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AdminSettings {
    /// Bearer keys, any of which opens the admin routes. Secrets: never printed.
    #[serde(default, deserialize_with = "parse::secret_list")]
    pub keys: Vec<Secret>,
}

/// `[gateway]`: WeChat's own API, answered at the root of the service, so that the
/// company's backends keep their WeChat SDK and only change its base URL (see
/// `routes::gateway`). Off by default: it opens token requests to anyone holding an
/// app secret, and forwarding to anyone holding a current token.
#[derive(Debug, Clone, Deserialize)]
pub struct GatewaySettings {
    #[serde(deserialize_with = "parse::flag")]
    pub enabled: bool,
    /// The largest request body forwarded to WeChat (media uploads are the large
    /// ones: WeChat takes videos up to 10 MB, 20 MiB leaves room for a multipart body).
    pub max_body_bytes: u64,
    /// Bound on a whole forwarded call: sending the body, WeChat's answer and its body.
    /// Longer than `wechat.timeout_ms`, since an upload or a download takes time.
    #[serde(rename = "timeout_ms", deserialize_with = "parse::millis")]
    pub timeout: Duration,
}

/// `[log]`: how the log's lines are written (`crate::logging`).
#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    /// `human` (env_logger's look) or `json` (one object per line, for a log pipeline).
    #[serde(deserialize_with = "parse::log_format")]
    pub format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: `{key}` {problem}")]
    Invalid { key: String, problem: String },
    /// A key that names no setting, or two spellings of one.
    #[error("configuration: {0}")]
    Unknown(String),
}

/// `config`'s deserialisation errors put the key last (`... for key `wechat.token_mode``);
/// these name it first, like every other configuration error, and say where the value
/// came from.
fn explain(error: config::ConfigError) -> ConfigError {
    let whence = |origin: Option<String>| match origin.as_deref() {
        None => String::new(),
        Some("the environment") => " (set in the environment)".to_string(),
        Some(file) => format!(" (in {file})"),
    };
    match error {
        config::ConfigError::At {
            error,
            origin,
            key: Some(key),
        } => ConfigError::Invalid {
            key,
            problem: format!("{}{}", problem_of(&error.to_string()), whence(origin)),
        },
        config::ConfigError::Type {
            origin,
            unexpected,
            expected,
            key: Some(key),
        } => ConfigError::Invalid {
            key,
            problem: format!("is {unexpected}, expected {expected}{}", whence(origin)),
        },
        config::ConfigError::NotFound(key) => ConfigError::Invalid {
            key,
            problem: "is missing".into(),
        },
        other => ConfigError::Load(other),
    }
}

/// serde's `missing field `secret`` as "is missing `secret`"; other messages as they are.
fn problem_of(message: &str) -> String {
    match message.strip_prefix("missing field ") {
        Some(field) => format!("is missing {field}"),
        None => message.to_string(),
    }
}

fn invalid(key: impl Into<String>, problem: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.to_string(),
    }
}

/// Built-in defaults, the lowest layer.
const DEFAULTS: [(&str, &str); 22] = [
    ("server.bind", "127.0.0.1:8080"),
    ("server.client_body_timeout_ms", "10000"),
    ("server.shutdown_timeout_secs", "30"),
    ("server.client_request_timeout_ms", "5000"),
    ("server.client_disconnect_timeout_ms", "1000"),
    ("server.max_connections", "25000"),
    ("wechat.api_base", "https://api.weixin.qq.com"),
    ("wechat.work_api_base", "https://qyapi.weixin.qq.com"),
    ("wechat.token_mode", "stable"),
    ("wechat.timeout_ms", "5000"),
    ("wechat.retries", "2"),
    ("wechat.verify_max_age_secs", "0"),
    ("cache.safety_margin_secs", "60"),
    ("cache.refresh_ahead_secs", "900"),
    ("cache.lock_ttl_ms", "5000"),
    ("cache.lock_wait_ms", "5000"),
    ("cache.local_recheck_ms", "1000"),
    ("cache.invalidations_per_day", "100"),
    ("gateway.enabled", "false"),
    ("gateway.max_body_bytes", "20971520"),
    ("gateway.timeout_ms", "30000"),
    ("log.format", "human"),
];

/// Defaults every `[redis]` table gets, so that a table with just `url` is complete.
const REDIS_DEFAULTS: [(&str, &str); 3] = [
    ("redis.key_prefix", "wxjssdk"),
    ("redis.pool_size", "16"),
    ("redis.timeout_ms", "1000"),
];

/// Prefix of the environment variables: `WXJSSDK__SECTION__KEY`.
const ENV_PREFIX: &str = "WXJSSDK";
const ENV_SEPARATOR: &str = "__";

impl Settings {
    /// Loads defaults, then `overrides` (used by `--dev`), then `file`, then the
    /// environment, and validates the result.
    pub fn load(file: Option<&Path>, overrides: &[(&str, &str)]) -> Result<Self, ConfigError> {
        Self::load_with_environment(file, overrides, None)
    }

    /// [`Settings::load`] with `environment` read instead of the process's variables
    /// (`None`: the process's), so that tests need not change the process environment.
    pub fn load_with_environment(
        file: Option<&Path>,
        overrides: &[(&str, &str)],
        environment: Option<&[(&str, &str)]>,
    ) -> Result<Self, ConfigError> {
        Self::load_described(file, overrides, environment).map(|(settings, _)| settings)
    }

    /// [`Settings::load_with_environment`], and every setting as it will be used, with
    /// where it came from and secrets masked (for `wx-jssdk check-config`).
    pub fn load_described(
        file: Option<&Path>,
        overrides: &[(&str, &str)],
        environment: Option<&[(&str, &str)]>,
    ) -> Result<(Self, Vec<Described>), ConfigError> {
        let raw = Self::layers(file, overrides, environment)?;
        let mut settings: Settings = raw.clone().try_deserialize().map_err(explain)?;
        settings.validate()?;
        for app in settings.apps.values_mut() {
            *app = AppSettings::finish(app.clone());
        }
        Ok((settings, describe::describe(&raw, file)))
    }

    /// The merged layers, before they are read into [`Settings`], once every key of
    /// the file and the environment is known to name a setting.
    fn layers(
        file: Option<&Path>,
        overrides: &[(&str, &str)],
        environment: Option<&[(&str, &str)]>,
    ) -> Result<Config, ConfigError> {
        keys::check_overrides(overrides)?;
        let mut builder = Config::builder();
        for (key, value) in DEFAULTS.iter().chain(overrides) {
            builder = builder.set_default(*key, *value)?;
        }
        let variables: Vec<(String, String)> = match environment {
            Some(vars) => vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            None => std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        };
        keys::check_environment(&variables)?;
        let mut app_keys = keys::keys_of_environment(&variables);
        if let Some(path) = file {
            let source = File::from(path).format(FileFormat::Toml).required(true);
            let table = config::Source::collect(&source)?;
            keys::check_file(&path.display().to_string(), &table)?;
            app_keys.extend(keys::keys_of_apps(&table));
            builder = builder.add_source(source);
        }
        keys::check_aliases(app_keys, "across the file and the environment")?;
        // Every value stays a string: parsing would turn an AppID or secret that looks
        // like a number or a boolean ("0123", "true") into one, and back into a
        // different string ("123"). `config` only splits lists when it parses, so the
        // lists are split by their own deserializers.
        let env = Environment::with_prefix(ENV_PREFIX)
            .prefix_separator(ENV_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .try_parsing(false)
            .source(Some(variables.into_iter().collect::<Map<String, String>>()));
        let raw = builder.add_source(env).build()?;
        Self::with_redis_defaults(raw)
    }

    fn with_redis_defaults(raw: Config) -> Result<Config, ConfigError> {
        if raw.get_table("redis").is_err() {
            return Ok(raw);
        }
        let mut builder = Config::builder();
        for (key, value) in REDIS_DEFAULTS {
            builder = builder.set_default(key, value)?;
        }
        Ok(builder.add_source(raw).build()?)
    }

    /// The app that serves the short routes: the one named `default`, or the only one.
    pub fn default_app(&self) -> Option<(&str, &AppSettings)> {
        if let Some(app) = self.apps.get(DEFAULT_APP) {
            return Some((DEFAULT_APP, app));
        }
        match self.apps.len() {
            1 => self.apps.iter().next().map(|(n, a)| (n.as_str(), a)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_cache_settings_are_the_defaults() {
        let shipped = CacheSettings::shipped();
        assert_eq!(shipped.safety_margin, Duration::from_secs(60));
        assert_eq!(shipped.refresh_ahead, Duration::from_secs(900));
        assert_eq!(shipped.lock_wait, Duration::from_millis(5000));
        assert_eq!(shipped.invalidations_per_day, 100);
    }
}
