//! WeChat's two signature rules, and the page-URL rules that go with `wx.config`.
//!
//! Both signatures are SHA-1 in lowercase hex. They are computed over the raw values:
//! WeChat does not URL-escape anything, so neither do we.

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// The longest page URL we sign. Real page URLs are far shorter; the bound keeps a
/// hostile client from making us hash (and echo back) megabytes.
pub const MAX_URL_LEN: usize = 4096;

/// SHA-1 of the concatenated `parts`, in lowercase hex. Hashed piece by piece: the
/// `wx.config` signature is on every signing request, and building the joined string
/// first would cost an allocation for nothing.
fn sha1_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Sha1::new();
    for part in parts {
        hasher.update(part);
    }
    let mut hex = [0u8; 40];
    // 20 bytes always fit in 40 hex digits.
    let _ = hex::encode_to_slice(hasher.finalize(), &mut hex);
    String::from_utf8_lossy(&hex).into_owned()
}

/// The `wx.config` signature: `sha1("jsapi_ticket=T&noncestr=N&timestamp=S&url=U")`.
pub fn sign_url(ticket: &str, nonce: &str, timestamp: u64, url: &str) -> String {
    let timestamp = timestamp.to_string();
    sha1_hex(&[
        b"jsapi_ticket=",
        ticket.as_bytes(),
        b"&noncestr=",
        nonce.as_bytes(),
        b"&timestamp=",
        timestamp.as_bytes(),
        b"&url=",
        url.as_bytes(),
    ])
}

/// A card signature (`cardSign` of `wx.chooseCard`, the `signature` in `wx.addCard`'s
/// `cardExt`): the values, api_ticket included, sorted as strings, concatenated, SHA-1.
pub fn sign_card(values: &[&str]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sha1_hex(&sorted.iter().map(|v| v.as_bytes()).collect::<Vec<_>>())
}

/// Whether a request carrying `signature, timestamp, nonce` comes from WeChat: the
/// SHA-1 of the three strings `[token, timestamp, nonce]`, sorted and concatenated,
/// must equal `signature`. The comparison is constant-time so that the expected
/// signature cannot be guessed byte by byte from response timings.
pub fn verify_server_signature(token: &str, timestamp: &str, nonce: &str, signature: &str) -> bool {
    let mut parts = [token, timestamp, nonce];
    parts.sort_unstable();
    let expected = sha1_hex(&parts.map(str::as_bytes));
    expected
        .as_bytes()
        .ct_eq(signature.to_ascii_lowercase().as_bytes())
        .into()
}

/// A fresh `nonceStr`: 32 random alphanumeric characters, from the thread's
/// cryptographically secure generator (seeded by the OS, no system call per nonce:
/// this is on every signature's path).
pub(crate) fn nonce() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// Why a page URL cannot be signed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageUrlError {
    #[error("the url is longer than {MAX_URL_LEN} bytes")]
    TooLong,
    #[error("the url contains whitespace or control characters")]
    ControlCharacters,
    #[error("the url is not an absolute http(s) url with a host")]
    NotHttp,
}

/// A page URL that can be signed: what [`page_url`] accepted, so that code holding one
/// need not check it again. It keeps the string WeChat compares, byte for byte, and
/// the host the page is on, as the URL parser leaves it (lowercase, IDNA-encoded,
/// without port or final dot), which is what the safe domains are compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageUrl {
    signed: String,
    host: String,
}

impl PageUrl {
    /// The string to sign: the page's URL up to `#`.
    pub fn as_str(&self) -> &str {
        &self.signed
    }

    /// The host the page is on.
    pub fn host(&self) -> &str {
        &self.host
    }
}

/// The URL to sign for a page: the page's own URL without `#` and what follows (WeChat
/// signs it that way), otherwise byte for byte as given, since any re-encoding would
/// produce a signature for a different string than the one the page checks.
/// Only absolute `http`/`https` URLs with a host are accepted.
pub fn page_url(raw: &str) -> Result<PageUrl, PageUrlError> {
    if raw.len() > MAX_URL_LEN {
        return Err(PageUrlError::TooLong);
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(PageUrlError::ControlCharacters);
    }
    // The WHATWG parser below also takes `http:host` and `http:\\host`, but a page's
    // `location.href` never looks like that: signing such a string signs a URL no page
    // can have, so the failure would only show later, in WeChat's `invalid signature`.
    if !has_written_host(raw) {
        return Err(PageUrlError::NotHttp);
    }
    let without_fragment = raw.split('#').next().unwrap_or(raw);
    let parsed = url::Url::parse(without_fragment).map_err(|_| PageUrlError::NotHttp)?;
    let is_http = matches!(parsed.scheme(), "http" | "https");
    let host = parsed.host_str().unwrap_or_default();
    if !is_http || host.is_empty() {
        return Err(PageUrlError::NotHttp);
    }
    Ok(PageUrl {
        signed: without_fragment.to_string(),
        host: host.strip_suffix('.').unwrap_or(host).to_string(),
    })
}

/// Whether `raw` spells out `scheme://host` as a page's `location.href` always does.
/// The URL parser forgives `http:///x`, `https:host` and `https:\\host`, finding a host
/// that the string signed (the one WeChat compares) does not have where a page's URL
/// has it.
fn has_written_host(raw: &str) -> bool {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
        && !authority.is_empty()
        && !authority.contains('\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_jssdk_example() {
        let signature = sign_url(
            "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg",
            "Wm3WZYTPz0wzccnW",
            1414587457,
            "http://mp.weixin.qq.com?params=value",
        );
        assert_eq!(signature, "0f9de62fce790f9a083d5c99e95740ceb90c27ed");
    }

    #[test]
    fn server_signature_is_over_sorted_parts() {
        // sorted: "1409304348" < "testtoken" < "xxxxxx"
        let expected = sha1_hex(&[b"1409304348testtokenxxxxxx"]);
        assert!(verify_server_signature(
            "testtoken",
            "1409304348",
            "xxxxxx",
            &expected
        ));
        assert!(verify_server_signature(
            "testtoken",
            "1409304348",
            "xxxxxx",
            &expected.to_uppercase()
        ));
        assert!(!verify_server_signature(
            "testtoken",
            "1409304349",
            "xxxxxx",
            &expected
        ));
        assert!(!verify_server_signature(
            "testtoken",
            "1409304348",
            "xxxxxx",
            ""
        ));
    }

    #[test]
    fn card_signature_is_over_the_sorted_values() {
        // sorted: "1404896688" < "card" < "ticket"
        let expected = sha1_hex(&[b"1404896688cardticket"]);
        assert_eq!(sign_card(&["ticket", "1404896688", "card"]), expected);
        assert_eq!(sign_card(&["card", "ticket", "1404896688", ""]), expected);
    }

    #[test]
    fn nonce_is_long_random_alphanumeric() {
        let (a, b) = (nonce(), nonce());
        assert!(a.len() >= 16 && a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    /// What `page_url` would sign for `raw`, if anything.
    fn signed(raw: &str) -> Result<String, PageUrlError> {
        page_url(raw).map(|url| url.as_str().to_string())
    }

    #[test]
    fn page_url_cuts_fragment_and_keeps_the_rest_verbatim() {
        assert_eq!(
            signed("https://a.example.com/p?x=%E4%BD%A0&y=1#/route?z"),
            Ok("https://a.example.com/p?x=%E4%BD%A0&y=1".into())
        );
        assert_eq!(
            signed("http://a.example.com"),
            Ok("http://a.example.com".into())
        );
        assert_eq!(
            signed("HTTPS://A.example.com/"),
            Ok("HTTPS://A.example.com/".into())
        );
    }

    #[test]
    fn the_host_is_the_one_safe_domains_are_compared_with() {
        for (raw, host) in [
            ("HTTPS://A.Example.COM:8443/x", "a.example.com"),
            ("https://example.com./x", "example.com"),
            ("https://www.BÜCHER.example/", "www.xn--bcher-kva.example"),
            ("https://user@evil.net/?example.com", "evil.net"),
        ] {
            assert_eq!(
                page_url(raw).map(|u| u.host().to_string()),
                Ok(host.into()),
                "{raw}"
            );
        }
    }

    #[test]
    fn page_url_refuses_what_cannot_be_a_page() {
        for bad in [
            "",
            "/relative",
            "javascript:alert(1)",
            "data:text/html,x",
            "ftp://h/x",
            "http://",
            "mailto:a@b.c",
            "http:///a.example.com/",
            "https:a.example.com/",
            "https:\\\\a.example.com\\",
            "https://a.example.com\\@b.example.com/",
            "https:/a.example.com/",
            // Found by tests/properties.rs: the URL parser accepts these as
            // `http://a/`, yet no page has such a `location.href`.
            "hTtp:a",
            "http:/a.com/p",
            "https:\\\\a.com\\p",
        ] {
            assert_eq!(signed(bad), Err(PageUrlError::NotHttp), "{bad}");
        }
        assert_eq!(
            signed("http://a.com/\r\nX: y"),
            Err(PageUrlError::ControlCharacters)
        );
        assert_eq!(
            signed("http://a.com/ x"),
            Err(PageUrlError::ControlCharacters)
        );
        let long = format!("http://a.com/{}", "x".repeat(MAX_URL_LEN));
        assert_eq!(signed(&long), Err(PageUrlError::TooLong));
        // The limit itself is allowed.
        let longest = format!("http://a.com/{}", "x".repeat(MAX_URL_LEN - 13));
        assert_eq!(longest.len(), MAX_URL_LEN);
        assert_eq!(signed(&longest), Ok(longest.clone()));
        assert_eq!(signed(&format!("{longest}x")), Err(PageUrlError::TooLong));
    }
}
