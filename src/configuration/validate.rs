//! Checks of what parsing alone cannot see: how settings relate to each other (an
//! operations listener apart from the public one, one content per verification file
//! name across apps, exactly one Redis topology), lower bounds, and the entries of
//! lists, named by position. Every problem names its key.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{invalid, keys, AppKind, ConfigError, Settings};
use crate::access::admin_key_problem;
use crate::secret::Secret;

impl Settings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.apps.is_empty() {
            return Err(invalid("apps", "needs at least one [apps.NAME] table"));
        }
        for (name, app) in &self.apps {
            keys::check_app_name(name, &format!("[apps.{name}]"))?;
            let key = |field: &str| format!("apps.{name}.{field}");
            if app.appid.trim().is_empty() {
                return Err(invalid(key("appid"), "is empty"));
            }
            if app.secret.expose().is_empty() {
                return Err(invalid(key("secret"), "is empty"));
            }
            let has =
                |value: &Option<Secret>| value.as_ref().is_some_and(|v| !v.expose().is_empty());
            match app.kind {
                AppKind::Official if !has(&app.token) => {
                    return Err(invalid(key("token"), "is required for an official account"));
                }
                AppKind::Work if app.agentid.as_deref().is_none_or(|a| a.trim().is_empty()) => {
                    return Err(invalid(key("agentid"), "is required for a WeChat Work app"));
                }
                _ => {}
            }
        }
        if let Some(redis) = &self.redis {
            redis.topology()?;
            redis.tls()?;
            if redis.pool_size == 0 {
                return Err(invalid("redis.pool_size", "must be at least 1"));
            }
        }
        let c = &self.cache;
        for (key, value, least) in [
            ("cache.lock_ttl_ms", c.lock_ttl, 30),
            ("cache.lock_wait_ms", c.lock_wait, 1),
            ("cache.local_recheck_ms", c.local_recheck, 1),
        ] {
            if value < Duration::from_millis(least) {
                return Err(invalid(key, &format!("must be at least {least}")));
            }
        }
        self.validate_listeners()?;
        if self.server.workers == Some(0) {
            return Err(invalid("server.workers", "must be at least 1"));
        }
        // 0 would mean "no limit" to actix: a slow client could hold a connection forever.
        if self.server.client_request_timeout.is_zero() {
            return Err(invalid(
                "server.client_request_timeout_ms",
                "must be at least 1 (0 would let a client that never finishes its headers hold a connection)",
            ));
        }
        if self.server.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        if self.server.client_body_timeout.is_zero() {
            return Err(invalid(
                "server.client_body_timeout_ms",
                "must be at least 1 (0 would let a client that never finishes its body hold a connection)",
            ));
        }
        if self.gateway.max_body_bytes == 0 {
            return Err(invalid("gateway.max_body_bytes", "must be at least 1"));
        }
        if self.gateway.timeout.is_zero() {
            return Err(invalid("gateway.timeout_ms", "must be at least 1"));
        }
        self.validate_access()
    }

    /// `server.bind` and `server.ops_bind` must be addresses to listen on, and two
    /// different ones: start-up would otherwise fail later, without naming the key.
    fn validate_listeners(&self) -> Result<(), ConfigError> {
        let listeners = [
            ("server.bind", Some(&self.server.bind)),
            ("server.ops_bind", self.server.ops_bind.as_ref()),
        ];
        for (key, bind) in listeners {
            let Some(bind) = bind else { continue };
            if std::net::ToSocketAddrs::to_socket_addrs(bind.as_str()).is_err() {
                return Err(invalid(
                    key,
                    &format!("= {bind:?} is not an address to listen on: write HOST:PORT, e.g. 0.0.0.0:8080 (port 0: any free port)"),
                ));
            }
        }
        if self.server.ops_bind.as_ref() == Some(&self.server.bind)
            && !self.server.bind.ends_with(":0")
        {
            return Err(invalid("server.ops_bind", "is the same address as `server.bind`: give the operations listener a port of its own"));
        }
        Ok(())
    }

    /// Page domains, CORS origins and admin keys. A bad list entry is named by its
    /// position; a domain or origin is shown (it is public), a key never.
    fn validate_access(&self) -> Result<(), ConfigError> {
        for (name, app) in &self.apps {
            let bad = [
                ("allowed_domains", app.allowed_domains.first_problem()),
                ("cors_origins", app.cors_origins.first_problem()),
            ];
            if let Some((list, Some(entry))) = bad.into_iter().find(|(_, bad)| bad.is_some()) {
                return Err(invalid(
                    format!("apps.{name}.{list}[{}]", entry.index),
                    &format!("= {:?} {}", entry.raw, entry.problem),
                ));
            }
        }
        if let Some(entry) = self.server.trusted_proxies.first_problem() {
            return Err(invalid(
                format!("server.trusted_proxies[{}]", entry.index),
                &format!("= {:?} {}", entry.raw, entry.problem),
            ));
        }
        self.validate_verify_files()?;
        for (i, key) in self.admin.keys.iter().enumerate() {
            if let Some(problem) = admin_key_problem(key) {
                return Err(invalid(format!("admin.keys[{i}]"), &problem));
            }
        }
        Ok(())
    }

    /// Domain verification files: names WeChat could ask for (`MP_verify_x.txt`),
    /// short printable contents, and one content per name across the apps (they are
    /// all served at the root).
    fn validate_verify_files(&self) -> Result<(), ConfigError> {
        let mut seen: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
        for (name, app) in &self.apps {
            for (file, content) in &app.domain_verify_files {
                let key = format!("apps.{name}.domain_verify_files.{file}");
                if !is_verify_file_name(file) {
                    return Err(invalid(
                        key,
                        "is not a verification file name: letters, digits, `_` and `-`, ending in .txt (e.g. MP_verify_abc123.txt)",
                    ));
                }
                let printable = content.bytes().all(|b| b.is_ascii_graphic());
                if content.is_empty() || content.len() > 256 || !printable {
                    return Err(invalid(
                        key,
                        "must be the file's content as WeChat gave it: 1 to 256 printable ASCII characters",
                    ));
                }
                if let Some((other, other_content)) = seen.insert(file, (name, content)) {
                    if other_content != content {
                        return Err(invalid(
                            key,
                            &format!("differs from apps.{other}.domain_verify_files.{file}: one file name has one content"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A name a verification file may have: what WeChat hands out (`MP_verify_…`,
/// `WW_verify_…`) and nothing that could name another route.
pub(crate) fn is_verify_file_name(name: &str) -> bool {
    name.strip_suffix(".txt").is_some_and(|stem| {
        !stem.is_empty()
            && stem.len() <= 64
            && stem
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}
