//! How settings are read from their written forms: lists that arrive from the
//! environment as one comma-separated string, durations in the unit their key names,
//! URLs, booleans, enums that list their values. Each is a `deserialize_with` (or
//! `try_from`) of a field in [`super`], so that a value is parsed once, at start-up,
//! into the type the code uses.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::access::{AllowedDomains, CorsOrigins, TrustedProxies};
use crate::logging::LogFormat;
use crate::secret::Secret;

/// Reads a list of strings, or one string of comma-separated items (spaces around
/// them ignored), which is how a list arrives from an environment variable.
///
/// The `config` crate can split such a variable itself, but only with `try_parsing`
/// on, which would also reparse every other variable (an AppID "0123" would become
/// "123"). A value of the wrong type is reported as `expected`, without being echoed:
/// it may hold a password or a key.
pub(super) fn comma_list<'de, D>(
    deserializer: D,
    expected: &'static str,
) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    let items = match ListOrString::deserialize(deserializer)
        .map_err(|_| serde::de::Error::custom(expected))?
    {
        ListOrString::List(items) => items,
        ListOrString::String(joined) => joined.split(',').map(str::to_string).collect(),
    };
    Ok(items
        .iter()
        .map(|item| item.trim())
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect())
}

/// `redis.cluster_urls`: see [`comma_list`].
pub(super) fn list_or_comma_separated<'de, D>(
    deserializer: D,
) -> Result<Option<Vec<Secret>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let urls = comma_list(
        deserializer,
        "expected a list of redis:// URLs or one comma-separated string",
    )?;
    Ok(Some(urls.into_iter().map(Secret::new).collect()))
}

pub(super) fn domain_list<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<AllowedDomains, D::Error> {
    comma_list(
        d,
        "expected a list of host names like example.com or *.example.com",
    )
    .map(AllowedDomains::new)
}

pub(super) fn proxy_list<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<TrustedProxies, D::Error> {
    comma_list(d, "expected a list of addresses or CIDRs like 10.0.0.0/8").map(TrustedProxies::new)
}

/// `domain_verify_files`: a table of name = content in the file, or one string of
/// `NAME=CONTENT` pairs separated by commas in the environment (whose variable names
/// could not hold a file name's dot or case).
pub(super) fn verify_files<'de, D>(d: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TableOrString {
        Table(BTreeMap<String, String>),
        String(String),
    }
    let expected =
        "expected a table of file name = content, or NAME=CONTENT pairs separated by commas";
    match TableOrString::deserialize(d).map_err(|_| serde::de::Error::custom(expected))? {
        TableOrString::Table(files) => Ok(files),
        TableOrString::String(pairs) => pairs
            .split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                pair.split_once('=')
                    .map(|(name, content)| (name.trim().to_string(), content.trim().to_string()))
                    .ok_or_else(|| serde::de::Error::custom(expected))
            })
            .collect(),
    }
}

pub(super) fn origin_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<CorsOrigins, D::Error> {
    comma_list(d, "expected a list of origins like https://a.example.com").map(CorsOrigins::new)
}

pub(super) fn secret_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    let keys = comma_list(d, "expected a list of keys or one comma-separated string")?;
    Ok(keys.into_iter().map(Secret::new).collect())
}

/// A duration written in milliseconds (the `*_ms` keys).
pub(super) fn millis<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

/// A duration written in seconds (the `*_secs` keys).
pub(super) fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

/// A duration in seconds where 0 means "off".
pub(super) fn seconds_or_off<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    seconds(d).map(|secs| (!secs.is_zero()).then_some(secs))
}

/// An `http://` or `https://` URL; a base URL's final `/` is dropped, so that paths
/// can be appended to it as they are written (`/cgi-bin/token`).
pub(super) fn http_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<url::Url, D::Error> {
    let raw = String::deserialize(d)?;
    url::Url::parse(&raw)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
        .ok_or_else(|| serde::de::Error::custom("must be an http:// or https:// URL"))
}

/// A boolean: `true`/`false` in the file, or as the environment's string.
pub(super) fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum BoolOrString {
        Bool(bool),
        String(String),
    }
    match BoolOrString::deserialize(d) {
        Ok(BoolOrString::Bool(b)) => Ok(b),
        Ok(BoolOrString::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Ok(BoolOrString::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(serde::de::Error::custom("expected true or false")),
    }
}

/// `log.format`: one of [`LogFormat::NAMES`].
pub(super) fn log_format<'de, D: serde::Deserializer<'de>>(d: D) -> Result<LogFormat, D::Error> {
    let value = String::deserialize(d)?;
    one_of(&value, &LogFormat::NAMES).map_err(serde::de::Error::custom)
}

/// The variant written `value` (in any case), or a message listing the valid ones.
/// serde's own message (`enum TokenMode does not have variant constructor fast`)
/// names the type, not the words the operator may write.
pub(super) fn one_of<T: Copy>(value: &str, variants: &[(&str, T)]) -> Result<T, String> {
    variants
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value.trim()))
        .map(|(_, variant)| *variant)
        .ok_or_else(|| {
            let names: Vec<String> = variants.iter().map(|(n, _)| format!("`{n}`")).collect();
            format!("is {value:?}; expected one of {}", names.join(", "))
        })
}
