//! Every setting's name, so that a mistyped one stops start-up instead of being
//! ignored in favour of its default (`[cache] lock_wait_msec = 5` would otherwise run
//! with the default 5000 ms and no word about it).
//!
//! serde's `deny_unknown_fields` would refuse such a key too, but it can say neither
//! which table the key is in nor where it came from: here the file and the environment
//! are checked apart, each before the layers are merged, so that the message names the
//! file's key or the environment variable as the operator wrote it, and the closest
//! valid name when one is close.

use std::collections::BTreeSet;

use config::{Map, Value, ValueKind};

use super::{ConfigError, ENV_PREFIX, ENV_SEPARATOR};

/// The keys of each table; `apps.NAME` tables share [`APP_KEYS`].
const TABLES: [(&str, &[&str]); 7] = [
    (
        "server",
        &[
            "bind",
            "ops_bind",
            "workers",
            "shutdown_timeout_secs",
            "client_request_timeout_ms",
            "client_body_timeout_ms",
            "client_disconnect_timeout_ms",
            "max_connections",
            "trusted_proxies",
        ],
    ),
    (
        "redis",
        &[
            "url",
            "cluster_urls",
            "sentinel_urls",
            "sentinel_master",
            "sentinel_username",
            "sentinel_password",
            "tls_ca_file",
            "tls_cert_file",
            "tls_key_file",
            "key_prefix",
            "pool_size",
            "timeout_ms",
        ],
    ),
    (
        "wechat",
        &[
            "api_base",
            "work_api_base",
            "token_mode",
            "timeout_ms",
            "retries",
            "verify_max_age_secs",
        ],
    ),
    (
        "cache",
        &[
            "safety_margin_secs",
            "refresh_ahead_secs",
            "lock_ttl_ms",
            "lock_wait_ms",
            "local_recheck_ms",
            "invalidations_per_day",
        ],
    ),
    ("admin", &["keys"]),
    ("gateway", &["enabled", "max_body_bytes", "timeout_ms"]),
    ("log", &["format"]),
];

/// The keys of an `[apps.NAME]` table (`corpid` and `corpsecret` are WeChat Work's
/// spellings of `appid` and `secret`).
pub(super) const APP_KEYS: [&str; 11] = [
    "kind",
    "appid",
    "corpid",
    "secret",
    "corpsecret",
    "agentid",
    "token",
    "allowed_domains",
    "cors_origins",
    "card_sign_public",
    "domain_verify_files",
];

/// The two spellings of the keys that have two: an app may use either, not both.
pub(super) const ALIASES: [(&str, &str); 2] = [("appid", "corpid"), ("secret", "corpsecret")];

/// Whether `key` (dotted, lowercase as the environment gives it) names a setting.
fn is_known(key: &str) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    match parts.as_slice() {
        ["apps", _, field] => APP_KEYS.contains(field),
        // A table of file names (which have dots of their own) in the file.
        ["apps", _, "domain_verify_files", _, ..] => true,
        [table, field] => TABLES
            .iter()
            .any(|(name, fields)| name == table && fields.contains(field)),
        _ => false,
    }
}

/// Every valid key of the table `key` is in, for suggestions.
fn candidates(key: &str) -> Vec<String> {
    let parts: Vec<&str> = key.split('.').collect();
    match parts.as_slice() {
        ["apps", name, _] => APP_KEYS
            .iter()
            .map(|f| format!("apps.{name}.{f}"))
            .collect(),
        [table, ..] if TABLES.iter().any(|(name, _)| name == table) => TABLES
            .iter()
            .filter(|(name, _)| name == table)
            .flat_map(|(name, fields)| fields.iter().map(move |f| format!("{name}.{f}")))
            .collect(),
        _ => TABLES
            .iter()
            .flat_map(|(name, fields)| fields.iter().map(move |f| format!("{name}.{f}")))
            .collect(),
    }
}

/// The valid key closest to `key`, if one is close enough to be a typo of it.
fn closest(key: &str) -> Option<String> {
    let (distance, best) = candidates(key)
        .into_iter()
        .map(|candidate| (edit_distance(key, &candidate), candidate))
        .min()?;
    let last = key.rsplit('.').next().unwrap_or(key);
    (distance <= 3.max(last.len() / 3)).then_some(best)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// The dotted keys of a nested table (lists are values: their items are not keys).
fn dotted_keys(table: &Map<String, Value>, prefix: &str, keys: &mut Vec<String>) {
    for (name, value) in table {
        let key = match prefix {
            "" => name.clone(),
            _ => format!("{prefix}.{name}"),
        };
        match &value.kind {
            ValueKind::Table(inner) => dotted_keys(inner, &key, keys),
            _ => keys.push(key),
        }
    }
}

/// Refuses a key of the file that names no setting, and an app named so that the
/// environment could not reach it.
pub(super) fn check_file(file: &str, table: &Map<String, Value>) -> Result<(), ConfigError> {
    let mut keys = Vec::new();
    dotted_keys(table, "", &mut keys);
    if let Some(apps) = table.get("apps").and_then(|v| v.clone().into_table().ok()) {
        for name in apps.keys() {
            check_app_name(name, &format!("[apps.{name}] in {file}"))?;
        }
    }
    for key in keys {
        if !is_known(&key) {
            let hint = closest(&key)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_else(|| format!("; {}", valid_keys_hint(&key)));
            return Err(ConfigError::Unknown(format!(
                "`{key}` in {file} is not a setting{hint}"
            )));
        }
    }
    check_aliases(keys_of_apps(table), &format!("in {file}"))
}

/// Refuses an override (`--dev`'s, or a test's) that names no setting: a mistyped one
/// would run with the default as silently as a mistyped key in the file.
pub(super) fn check_overrides(overrides: &[(&str, &str)]) -> Result<(), ConfigError> {
    match overrides.iter().find(|(key, _)| !is_known(key)) {
        Some((key, _)) => {
            let hint = closest(key)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            Err(ConfigError::Unknown(format!(
                "the override `{key}` is not a setting{hint}"
            )))
        }
        None => Ok(()),
    }
}

/// Refuses a `WXJSSDK__...` variable that maps to no setting, named as it was set.
pub(super) fn check_environment(variables: &[(String, String)]) -> Result<(), ConfigError> {
    let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}").to_lowercase();
    let mut app_keys = BTreeSet::new();
    for (variable, _) in variables {
        let lower = variable.to_lowercase();
        let Some(rest) = lower.strip_prefix(&prefix) else {
            continue;
        };
        let key = rest.replace(ENV_SEPARATOR, ".");
        if !is_known(&key) {
            let hint = closest(&key)
                .map(|k| format!("; did you mean {} (`{k}`)?", variable_for(&k)))
                .unwrap_or_else(|| format!("; {}", valid_keys_hint(&key)));
            return Err(ConfigError::Unknown(format!(
                "environment variable {variable} maps to no setting (`{key}`){hint}"
            )));
        }
        if let ["apps", name, field] = key.split('.').collect::<Vec<_>>().as_slice() {
            app_keys.insert((name.to_string(), field.to_string()));
        }
    }
    check_aliases(app_keys, "in the environment")
}

/// `(app name, key)` of every `WXJSSDK__APPS__NAME__KEY` variable.
pub(super) fn keys_of_environment(variables: &[(String, String)]) -> BTreeSet<(String, String)> {
    let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}apps{ENV_SEPARATOR}").to_lowercase();
    variables
        .iter()
        .filter_map(|(variable, _)| {
            let rest = variable.to_lowercase().strip_prefix(&prefix)?.to_string();
            let (name, field) = rest.split_once(ENV_SEPARATOR)?;
            Some((name.to_string(), field.to_string()))
        })
        .collect()
}

/// The environment variable that sets `key`.
pub(super) fn variable_for(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{ENV_SEPARATOR}{}",
        key.to_uppercase().replace('.', ENV_SEPARATOR)
    )
}

fn valid_keys_hint(key: &str) -> String {
    let tables: Vec<&str> = TABLES.iter().map(|(name, _)| *name).collect();
    match key.split('.').next() {
        Some(table) if tables.contains(&table) || table == "apps" => {
            "see config/example.toml for the valid keys".to_string()
        }
        _ => format!("the tables are [{}] and [apps.NAME]", tables.join("], [")),
    }
}

/// `(app name, key)` of every key of every `[apps.NAME]` table.
pub(super) fn keys_of_apps(table: &Map<String, Value>) -> BTreeSet<(String, String)> {
    let Some(apps) = table.get("apps").and_then(|v| v.clone().into_table().ok()) else {
        return BTreeSet::new();
    };
    apps.into_iter()
        .filter_map(|(name, app)| Some((name, app.into_table().ok()?)))
        .flat_map(|(name, app)| app.into_keys().map(move |key| (name.clone(), key)))
        .collect()
}

/// Refuses both spellings of one setting for one app `whence` (one layer, or
/// across the file and the environment).
pub(super) fn check_aliases(
    keys: BTreeSet<(String, String)>,
    whence: &str,
) -> Result<(), ConfigError> {
    for (name, _) in &keys {
        for (one, other) in ALIASES {
            let has = |field: &str| keys.contains(&(name.clone(), field.to_string()));
            if has(one) && has(other) {
                return Err(ConfigError::Unknown(format!(
                    "`apps.{name}.{one}` and `apps.{name}.{other}` are both set {whence}: they are \
                     two spellings of one setting; use one per app (in the file and the \
                     environment alike, e.g. {} to override the file's `{other}`)",
                    variable_for(&format!("apps.{name}.{other}"))
                )));
            }
        }
    }
    Ok(())
}

/// App names are lowercase letters, digits, `_` and `-`: environment variables are
/// read in lowercase, so `[apps.Shop]` could never be given `WXJSSDK__APPS__SHOP__SECRET`,
/// and the name is a path segment of `/v1/apps/NAME/...`.
pub(super) fn check_app_name(name: &str, whence: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        return Ok(());
    }
    Err(ConfigError::Unknown(format!(
        "the app name `{name}` ({whence}) may only have lowercase letters, digits, `_` and `-`: \
         environment variables are read in lowercase and could not reach it, and it is part \
         of the URL /v1/apps/NAME/; rename it (e.g. `{}`)",
        suggested_name(name)
    )))
}

fn suggested_name(name: &str) -> String {
    let name: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.is_empty() {
        "shop".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_is_matched_to_the_closest_key_of_its_table() {
        assert_eq!(
            closest("cache.lock_wait_msec").as_deref(),
            Some("cache.lock_wait_ms")
        );
        assert_eq!(
            closest("apps.shop.secrte").as_deref(),
            Some("apps.shop.secret")
        );
        assert_eq!(closest("server.bnd").as_deref(), Some("server.bind"));
        assert_eq!(closest("cache.something_else_entirely"), None);
    }

    #[test]
    fn known_keys_are_known_and_others_are_not() {
        for key in [
            "server.bind",
            "server.ops_bind",
            "apps.x.corpsecret",
            "apps.x.card_sign_public",
            "admin.keys",
        ] {
            assert!(is_known(key), "{key}");
        }
        for key in [
            "server",
            "apps.x",
            "apps.x.y.z",
            "cache.lock_wait_msec",
            "x.y",
        ] {
            assert!(!is_known(key), "{key}");
        }
    }

    #[test]
    fn the_environment_is_named_as_set_and_answered_with_its_variable() {
        let vars = [(
            "WXJSSDK__CACHE__LOCK_WAIT_MSEC".to_string(),
            "5".to_string(),
        )];
        let err = check_environment(&vars).unwrap_err().to_string();
        assert!(err.contains("WXJSSDK__CACHE__LOCK_WAIT_MSEC"), "{err}");
        assert!(err.contains("WXJSSDK__CACHE__LOCK_WAIT_MS "), "{err}");
        let other = [("WXJSSDK_CONFIG".to_string(), "x".to_string())];
        assert!(check_environment(&other).is_ok());
    }

    #[test]
    fn overrides_are_checked_like_the_file() {
        assert!(check_overrides(&[("cache.lock_wait_ms", "1")]).is_ok());
        let err = check_overrides(&[("cache.lock_wait_msec", "1")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("did you mean `cache.lock_wait_ms`"),
            "{err}"
        );
    }

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
