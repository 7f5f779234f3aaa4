//! What `wx-jssdk check-config` prints: every setting the service would run with,
//! where its value came from, and secrets masked, so that an operator can see the
//! merged result of defaults, file and environment before a rollout.

use std::fmt;
use std::path::Path;

use config::{Config, Map, Value, ValueKind};

/// One setting as it would be used.
pub struct Described {
    pub(crate) key: String,
    /// Shown as it would be read, or masked.
    pub(crate) value: String,
    /// `default`, the file's path, or `environment`.
    pub(crate) source: String,
}

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}  # {}", self.key, self.value, self.source)
    }
}

/// Keys whose values are never shown.
const SECRET_FIELDS: [&str; 6] = [
    "secret",
    "corpsecret",
    "token",
    "keys",
    "sentinel_username",
    "sentinel_password",
];

/// Every leaf of the merged layers, sorted by key.
pub(super) fn describe(raw: &Config, file: Option<&Path>) -> Vec<Described> {
    let mut out = Vec::new();
    let file = file.map_or_else(|| "file".into(), |path| path.display().to_string());
    if let Ok(table) = config::Source::collect(raw) {
        walk(&table, "", &file, &mut out);
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

fn walk(table: &Map<String, Value>, prefix: &str, file: &str, out: &mut Vec<Described>) {
    for (name, value) in table {
        let key = match prefix {
            "" => name.clone(),
            _ => format!("{prefix}.{name}"),
        };
        if let ValueKind::Table(inner) = &value.kind {
            walk(inner, &key, file, out);
            continue;
        }
        let field = key.rsplit('.').next().unwrap_or_default();
        let shown = if SECRET_FIELDS.contains(&field) {
            "***".to_string()
        } else if key.starts_with("redis.")
            && matches!(field, "url" | "cluster_urls" | "sentinel_urls")
        {
            show(value, &mask_password)
        } else {
            show(value, &|s| s.to_string())
        };
        let source = match value.origin() {
            None => "default".to_string(),
            Some("the environment") => "environment".to_string(),
            Some(_) => file.to_string(),
        };
        out.push(Described {
            key,
            value: shown,
            source,
        });
    }
}

/// A value as it was written (the environment's are all strings), each string passed
/// through `text`.
fn show(value: &Value, text: &dyn Fn(&str) -> String) -> String {
    match &value.kind {
        ValueKind::Array(items) => {
            let items: Vec<String> = items.iter().map(|v| show(v, text)).collect();
            format!("[{}]", items.join(", "))
        }
        ValueKind::Nil => "(none)".into(),
        ValueKind::String(s) if s.is_empty() => "\"\"".into(),
        ValueKind::String(s) => text(s),
        other => format!("{other}"),
    }
}

/// A Redis URL with its password (and user) replaced by `***`.
fn mask_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() || !parsed.username().is_empty() => {
            let _ = parsed.set_password(Some("***"));
            let _ = parsed.set_username("");
            parsed.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => "(not a URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::mask_password;

    #[test]
    fn passwords_in_redis_urls_are_masked() {
        assert_eq!(
            mask_password("redis://user:hunter2@redis:6379/0"),
            "redis://:***@redis:6379/0"
        );
        assert_eq!(mask_password("redis://redis:6379"), "redis://redis:6379");
        assert_eq!(mask_password("not a url hunter2"), "(not a URL)");
    }
}
