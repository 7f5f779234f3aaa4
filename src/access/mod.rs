//! Who may use an app, decided before any cache or WeChat work:
//!
//! * [`AllowedDomains`]: the hosts of the pages an app signs for (`apps.NAME.allowed_domains`,
//!   the account's JS interface safe domains). WeChat refuses a `wx.config` signed for any
//!   other host anyway; refusing it here keeps the service from being a signing oracle
//!   for pages it does not serve, and tells the page author why at once.
//! * [`CorsOrigins`]: the browser origins whose scripts may call an app's signing routes
//!   (`apps.NAME.cors_origins`).
//! * [`AdminKeys`]: the bearer keys of the company's other backends, which may read and
//!   invalidate the shared access_token and sign cards (`admin.keys`), and
//!   [`FailedAuthentications`], which makes guessing them slow.
//! * [`TrustedProxies`]: whose `X-Forwarded-For` names the client (`server.trusted_proxies`).
//!
//! The two lists keep every entry as written next to what it means (or why it means
//! nothing), so that [`crate::configuration::Settings`] can report a bad entry by its
//! position (`apps.NAME.allowed_domains[i]`) at start-up: serde alone cannot name it.

pub(crate) mod guesses;
mod proxies;

pub(crate) use guesses::FailedAuthentications;
pub use proxies::TrustedProxies;

use sha1::{Digest, Sha1};
use subtle::{Choice, ConstantTimeEq};

use crate::secret::Secret;

/// Shortest admin key accepted: a key a person can remember is a key someone can guess.
pub(crate) const MIN_ADMIN_KEY_LEN: usize = 16;

/// One configured entry, as written, and what it means or why it is refused.
#[derive(Debug, Clone)]
struct Entry<T> {
    raw: String,
    parsed: Result<T, &'static str>,
}

impl<T> Entry<T> {
    /// Every entry of a configured list, each kept as written beside what `parse`
    /// makes of it.
    fn all<S: Into<String>>(
        raw: impl IntoIterator<Item = S>,
        parse: fn(&str) -> Result<T, &'static str>,
    ) -> Vec<Self> {
        raw.into_iter()
            .map(|raw| {
                let raw = raw.into();
                let parsed = parse(&raw);
                Self { raw, parsed }
            })
            .collect()
    }
}

/// A list entry that cannot be used: its position, as written, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadEntry<'a> {
    pub(crate) index: usize,
    pub(crate) raw: &'a str,
    pub(crate) problem: &'static str,
}

fn first_problem<T>(entries: &[Entry<T>]) -> Option<BadEntry<'_>> {
    entries.iter().enumerate().find_map(|(index, entry)| {
        entry.parsed.as_ref().err().map(|problem| BadEntry {
            index,
            raw: &entry.raw,
            problem,
        })
    })
}

/// The hosts an app signs pages for. Empty: any host (the behaviour before the list
/// existed, and what a deployment without a fixed set of sites needs).
#[derive(Debug, Clone, Default)]
pub struct AllowedDomains(Vec<Entry<HostPattern>>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// `example.com`: that host only.
    Exact(String),
    /// `*.example.com`, kept as `.example.com`: any host below it, at any depth, but not
    /// `example.com` itself (WeChat's safe domains cover subdomains the same way).
    Below(String),
}

impl AllowedDomains {
    pub fn new<S: Into<String>>(patterns: impl IntoIterator<Item = S>) -> Self {
        Self(Entry::all(patterns, parse_host_pattern))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first entry that is not a host name or `*.domain` pattern.
    pub(crate) fn first_problem(&self) -> Option<BadEntry<'_>> {
        first_problem(&self.0)
    }

    /// `Some(host)` when a page on `host` may not be signed: the host is outside the
    /// list. `None` when it may.
    ///
    /// `host` is compared as the URL parser leaves a page's host (what
    /// `wechat::signature::PageUrl::host` gives): lowercased, IDNA-encoded, without the
    /// port (a page on `example.com:8443` is on the safe domain `example.com`), and
    /// without a final dot.
    pub fn refused_host(&self, host: &str) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let allowed = self.0.iter().any(|entry| match &entry.parsed {
            Ok(HostPattern::Exact(exact)) => host == exact,
            Ok(HostPattern::Below(suffix)) => host.len() > suffix.len() && host.ends_with(suffix),
            Err(_) => false,
        });
        (!allowed).then(|| host.to_string())
    }
}

/// Reads `example.com` or `*.example.com` (any case, international names allowed) into
/// the form the URL parser gives page hosts, so that matching is plain comparison.
fn parse_host_pattern(raw: &str) -> Result<HostPattern, &'static str> {
    const SHAPE: &str = "is not a host name or *.domain pattern: write it like example.com or \
                         *.example.com, without scheme, port or path";
    if raw == "*" {
        return Err("would allow any host: leave the list empty (or out) for that");
    }
    let (below, host) = match raw.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    if host.contains('*') {
        return Err("may only have `*.` in front (*.example.com), nowhere else");
    }
    // The host parser would percent-decode or read an IPv6 literal; neither is a domain.
    if host.is_empty() || host.contains(['%', '[', ']', ':', '/', '@', '?', '#', '\\']) {
        return Err(SHAPE);
    }
    match url::Host::parse(host) {
        Ok(url::Host::Domain(domain)) if is_host_name(&domain) => Ok(if below {
            HostPattern::Below(format!(".{domain}"))
        } else {
            HostPattern::Exact(domain)
        }),
        Ok(url::Host::Ipv4(ip)) if !below => Ok(HostPattern::Exact(ip.to_string())),
        Ok(url::Host::Ipv4(_)) => Err("puts `*.` in front of an IP address"),
        _ => Err(SHAPE),
    }
}

/// Whether `domain` (lowercase ASCII, as the host parser leaves it) is a DNS host name:
/// labels of letters, digits, `-` and `_`, 1 to 63 long, no `-` at either end.
fn is_host_name(domain: &str) -> bool {
    domain.len() <= 253
        && domain.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

/// The browser origins allowed to call an app's signing routes. Empty: none (the
/// browser blocks cross-origin calls; same-origin pages and servers are unaffected).
#[derive(Debug, Clone, Default)]
pub struct CorsOrigins(Vec<Entry<OriginRule>>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum OriginRule {
    /// `"*"`: any origin (still echoed, never answered as `*`).
    Any,
    /// `scheme://host[:port]`, serialised as browsers send it in `Origin`.
    Exact(String),
}

impl CorsOrigins {
    pub fn new<S: Into<String>>(origins: impl IntoIterator<Item = S>) -> Self {
        Self(Entry::all(origins, parse_origin))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first entry that is not an origin or `"*"`.
    pub(crate) fn first_problem(&self) -> Option<BadEntry<'_>> {
        first_problem(&self.0)
    }

    /// Whether a request carrying `Origin: origin` may read the answer.
    pub fn allows(&self, origin: &str) -> bool {
        self.0.iter().any(|entry| match &entry.parsed {
            Ok(OriginRule::Any) => true,
            Ok(OriginRule::Exact(exact)) => exact.eq_ignore_ascii_case(origin),
            Err(_) => false,
        })
    }
}

/// Reads `https://a.example.com[:port]` (a trailing `/` is tolerated) into the form a
/// browser sends in `Origin`: lowercase host, no default port.
fn parse_origin(raw: &str) -> Result<OriginRule, &'static str> {
    const SHAPE: &str = "is not an origin: write scheme://host[:port], e.g. https://a.example.com \
                         (no path, query or user), or \"*\" for any origin";
    if raw == "*" {
        return Ok(OriginRule::Any);
    }
    if raw.contains('*') {
        return Err("is a pattern: list exact origins (https://a.example.com), or \"*\" for any");
    }
    let url = url::Url::parse(raw).map_err(|_| SHAPE)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must start with http:// or https://");
    }
    let origin_only = url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    if !origin_only {
        return Err(SHAPE);
    }
    Ok(OriginRule::Exact(url.origin().ascii_serialization()))
}

/// The configured admin keys, kept only as SHA-1 digests, so that checking a presented
/// key takes the same time whatever its length and content, and whichever key (if
/// any) it matches.
#[derive(Clone, Default)]
pub(crate) struct AdminKeys {
    digests: Vec<[u8; 20]>,
}

impl AdminKeys {
    pub(crate) fn new(keys: &[Secret]) -> Self {
        Self {
            digests: keys.iter().map(|k| digest(k.expose())).collect(),
        }
    }

    /// Without keys the admin routes do not exist.
    pub(crate) fn is_configured(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Whether `presented` is one of the keys. Every key is compared, in constant time.
    pub(crate) fn accepts(&self, presented: &str) -> bool {
        let presented = digest(presented);
        let found = self
            .digests
            .iter()
            .fold(Choice::from(0), |found, key| found | key.ct_eq(&presented));
        found.into()
    }
}

impl std::fmt::Debug for AdminKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminKeys({} configured)", self.digests.len())
    }
}

fn digest(key: &str) -> [u8; 20] {
    Sha1::digest(key.as_bytes()).into()
}

/// Why `key` cannot be an admin key, if it cannot. Never says what the key is.
pub(crate) fn admin_key_problem(key: &Secret) -> Option<String> {
    let key = key.expose();
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Some(
            "must be printable ASCII without spaces: it travels in the Authorization header".into(),
        );
    }
    (key.len() < MIN_ADMIN_KEY_LEN)
        .then(|| format!("must be at least {MIN_ADMIN_KEY_LEN} characters long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refused host of a page at `url`, as the route finds it.
    fn refused_at(d: &AllowedDomains, url: &str) -> Option<String> {
        let page = crate::wechat::signature::page_url(url).expect("a page URL");
        d.refused_host(page.host())
    }

    fn domains(patterns: &[&str]) -> AllowedDomains {
        let domains = AllowedDomains::new(patterns.iter().copied());
        assert_eq!(domains.first_problem(), None, "{patterns:?}");
        domains
    }

    #[test]
    fn exact_domains_match_their_host_only_in_any_case_and_on_any_port() {
        let d = domains(&["Example.COM"]);
        for allowed in [
            "https://example.com/",
            "http://EXAMPLE.com:8443/a?b#c",
            "https://example.com./x",
        ] {
            assert_eq!(refused_at(&d, allowed), None, "{allowed}");
        }
        for (refused, host) in [
            ("https://www.example.com/", "www.example.com"),
            ("https://notexample.com/", "notexample.com"),
            ("https://example.com.evil.net/", "example.com.evil.net"),
            ("https://user@evil.net/?example.com", "evil.net"),
        ] {
            assert_eq!(refused_at(&d, refused).as_deref(), Some(host), "{refused}");
        }
    }

    #[test]
    fn wildcards_match_subdomains_at_any_depth_but_not_the_domain_itself() {
        let d = domains(&["*.example.com"]);
        for allowed in ["https://a.example.com/", "https://a.b.c.EXAMPLE.com:81/"] {
            assert_eq!(refused_at(&d, allowed), None, "{allowed}");
        }
        for refused in [
            "https://example.com/",
            "https://badexample.com/",
            "https://a.example.com.evil.net/",
        ] {
            assert!(refused_at(&d, refused).is_some(), "{refused}");
        }
    }

    #[test]
    fn an_empty_list_allows_any_host_and_international_names_match_encoded() {
        assert_eq!(refused_at(&AllowedDomains::default(), "https://x.y/"), None);
        let d = domains(&["*.bücher.example", "127.0.0.1"]);
        assert_eq!(refused_at(&d, "https://www.BÜCHER.example/"), None);
        assert_eq!(refused_at(&d, "http://127.0.0.1:8080/"), None);
        assert!(refused_at(&d, "http://[::1]/").is_some());
    }

    #[test]
    fn malformed_domain_patterns_are_named_by_position() {
        for bad in [
            "*",
            "https://example.com",
            "example.com/path",
            "example.com:8080",
            "a.*.example.com",
            "*example.com",
            "*.",
            "",
            "exa mple.com",
            "example..com",
            ".example.com",
            "-a.example.com",
            "*.127.0.0.1",
            "[::1]",
            "user@example.com",
        ] {
            let list = AllowedDomains::new(["ok.example.com", bad]);
            let problem = list.first_problem();
            assert_eq!(problem.as_ref().map(|p| (p.index, p.raw)), Some((1, bad)));
        }
    }

    #[test]
    fn origins_match_exactly_as_browsers_send_them() {
        let o = CorsOrigins::new(["https://A.example.com/", "http://localhost:3000"]);
        assert_eq!(o.first_problem(), None);
        assert!(o.allows("https://a.example.com"));
        assert!(o.allows("http://localhost:3000"));
        for other in [
            "http://a.example.com",
            "https://b.example.com",
            "https://a.example.com:8443",
            "http://localhost:3001",
            "null",
            "",
        ] {
            assert!(!o.allows(other), "{other}");
        }
        let default_port = CorsOrigins::new(["https://a.example.com:443"]);
        assert!(default_port.allows("https://a.example.com"));
        let any = CorsOrigins::new(["*"]);
        assert!(any.allows("https://anything.example.net"));
        assert!(!CorsOrigins::default().allows("https://a.example.com"));
    }

    #[test]
    fn malformed_origins_are_named_by_position() {
        for bad in [
            "a.example.com",
            "https://a.example.com/path",
            "https://*.example.com",
            "ftp://a.example.com",
            "https://user:pw@a.example.com",
            "https://a.example.com?x",
            "",
        ] {
            let list = CorsOrigins::new(["https://ok.example.com", bad]);
            let problem = list.first_problem();
            assert_eq!(problem.as_ref().map(|p| (p.index, p.raw)), Some((1, bad)));
        }
    }

    #[test]
    fn admin_keys_accept_each_configured_key_and_nothing_else() {
        let keys = AdminKeys::new(&[
            Secret::new("first-key-0123456789"),
            Secret::new("second-key-0123456789"),
        ]);
        assert!(keys.is_configured());
        assert!(keys.accepts("first-key-0123456789"));
        assert!(keys.accepts("second-key-0123456789"));
        for wrong in [
            "",
            "first-key",
            "first-key-01234567890",
            "SECOND-key-0123456789",
        ] {
            assert!(!keys.accepts(wrong), "{wrong}");
        }
        assert!(!AdminKeys::default().is_configured());
        assert!(!AdminKeys::default().accepts(""));
    }

    #[test]
    fn admin_keys_must_be_long_printable_ascii() {
        assert_eq!(admin_key_problem(&Secret::new("0123456789abcdef")), None);
        for bad in [
            "short",
            "0123456789abcde",
            "0123456789 abcdef",
            "0123456789abcdéf",
        ] {
            assert!(admin_key_problem(&Secret::new(bad)).is_some(), "{bad}");
        }
    }
}
