//! Layered settings: built-in defaults < a TOML file (`--config FILE` or
//! `WXJSSDK_CONFIG`) < environment variables `WXJSSDK__SECTION__KEY`.
//!
//! Every problem is reported at start-up with the key it concerns, so that a
//! misconfigured instance never starts serving.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

/// The name of the app that serves the short, seed-compatible routes (`/wxJssdk...`)
/// when several apps are configured.
pub const DEFAULT_APP: &str = "default";

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub server: ServerSettings,
    /// Absent: the in-process store, which is only correct for a single instance.
    pub redis: Option<RedisSettings>,
    pub wechat: WechatSettings,
    pub cache: CacheSettings,
    #[serde(default)]
    pub apps: BTreeMap<String, AppSettings>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub bind: String,
    /// Worker threads; defaults to the number of CPUs.
    pub workers: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    pub url: Secret,
    pub key_prefix: String,
    pub pool_size: usize,
    /// Bound on connecting to Redis and on each command.
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenMode {
    /// `POST cgi-bin/stable_token`: independent of other callers' tokens.
    Stable,
    /// `GET cgi-bin/token`: every call invalidates the previous token after 5 minutes.
    Classic,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WechatSettings {
    pub api_base: String,
    pub token_mode: TokenMode,
    /// Bound on one call to WeChat.
    pub timeout_ms: u64,
    /// Further attempts after a call fails in a passing way (errcode -1, timeout,
    /// connection error), with exponential backoff and jitter.
    pub retries: u32,
}

/// How long cached values are trusted and how refreshes are coordinated.
#[derive(Debug, Clone, Deserialize)]
pub struct CacheSettings {
    /// A value is not handed out in the last this-many seconds before WeChat's
    /// `expires_in` ends, so that a page has time to call `wx.config` with it.
    /// Capped at a fifth of `expires_in` for short-lived values.
    pub safety_margin_secs: u64,
    /// A value is renewed (by one instance, while all keep using it) this long before
    /// it stops being handed out: the time WeChat has to recover from an outage before
    /// anyone notices. Capped at half of the usable life.
    pub refresh_ahead_secs: u64,
    /// Lifetime of the refresh lock: if its holder dies, another instance takes over
    /// after this long. A live holder extends it while it works.
    pub lock_ttl_ms: u64,
    /// How long a request waits for a refresh before answering 503.
    pub lock_wait_ms: u64,
    /// How often an instance compares its in-memory copy with the store: the bound on
    /// how long a change made by another instance takes to reach this one.
    pub local_recheck_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AppSettings {
    pub appid: String,
    pub secret: Secret,
    /// The Token entered in the account's server configuration, used to verify
    /// that requests to the server URL come from WeChat.
    pub token: Secret,
}

/// A string that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: `{key}` {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.to_string(),
    }
}

/// Built-in defaults, the lowest layer.
const DEFAULTS: [(&str, &str); 10] = [
    ("server.bind", "127.0.0.1:8080"),
    ("wechat.api_base", "https://api.weixin.qq.com"),
    ("wechat.token_mode", "stable"),
    ("wechat.timeout_ms", "5000"),
    ("wechat.retries", "2"),
    ("cache.safety_margin_secs", "60"),
    ("cache.refresh_ahead_secs", "900"),
    ("cache.lock_ttl_ms", "5000"),
    ("cache.lock_wait_ms", "5000"),
    ("cache.local_recheck_ms", "1000"),
];

/// Defaults every `[redis]` table gets, so that a table with just `url` is complete.
const REDIS_DEFAULTS: [(&str, &str); 3] = [
    ("redis.key_prefix", "wxjssdk"),
    ("redis.pool_size", "16"),
    ("redis.timeout_ms", "1000"),
];

impl Settings {
    /// Loads defaults, then `overrides` (used by `--dev`), then `file`, then the
    /// environment, and validates the result.
    pub fn load(file: Option<&Path>, overrides: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let mut builder = Config::builder();
        for (key, value) in DEFAULTS.iter().chain(overrides) {
            builder = builder.set_default(*key, *value)?;
        }
        if let Some(path) = file {
            builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
        }
        let env = Environment::with_prefix("WXJSSDK")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(false);
        let raw = builder.add_source(env).build()?;
        let raw = Self::with_redis_defaults(raw)?;
        let settings: Settings = raw.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
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

    fn validate(&self) -> Result<(), ConfigError> {
        if self.apps.is_empty() {
            return Err(invalid("apps", "needs at least one [apps.NAME] table"));
        }
        for (name, app) in &self.apps {
            let key = |field: &str| format!("apps.{name}.{field}");
            if app.appid.trim().is_empty() {
                return Err(invalid(key("appid"), "is empty"));
            }
            if app.secret.expose().is_empty() {
                return Err(invalid(key("secret"), "is empty"));
            }
            if app.token.expose().is_empty() {
                return Err(invalid(key("token"), "is empty"));
            }
        }
        let scheme_ok = |s: &str| s.starts_with("http://") || s.starts_with("https://");
        if !scheme_ok(&self.wechat.api_base) {
            return Err(invalid(
                "wechat.api_base",
                "must start with http:// or https://",
            ));
        }
        if let Some(redis) = &self.redis {
            if !redis.url.expose().starts_with("redis://")
                && !redis.url.expose().starts_with("rediss://")
            {
                return Err(invalid(
                    "redis.url",
                    "must start with redis:// or rediss://",
                ));
            }
            if redis.pool_size == 0 {
                return Err(invalid("redis.pool_size", "must be at least 1"));
            }
        }
        let c = &self.cache;
        for (key, value, least) in [
            ("cache.lock_ttl_ms", c.lock_ttl_ms, 30),
            ("cache.lock_wait_ms", c.lock_wait_ms, 1),
            ("cache.local_recheck_ms", c.local_recheck_ms, 1),
        ] {
            if value < least {
                return Err(invalid(key, &format!("must be at least {least}")));
            }
        }
        if self.server.workers == Some(0) {
            return Err(invalid("server.workers", "must be at least 1"));
        }
        Ok(())
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
