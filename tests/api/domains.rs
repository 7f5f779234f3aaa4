//! Per-app page domains (`allowed_domains`) and browser origins (`cors_origins`) on the
//! signing routes.

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Method;

use crate::helpers::{error_code, spawn_app_with, Options, Service, TestApp};

const SHOP_APPID: &str = "wxshop000000000001";

/// `default` signs for example.com and anything below example.org; `shop` for any host.
fn with_domains() -> Options {
    Options {
        extra_apps: vec![("shop", SHOP_APPID)],
        allowed_domains: vec![("default", &["example.com", "*.example.org"])],
        ..Options::default()
    }
}

async fn keys_in_redis(app: &TestApp) -> usize {
    redis::cmd("DBSIZE")
        .query_async(&mut app.redis().connection().await)
        .await
        .expect("DBSIZE")
}

#[actix_web::test]
async fn pages_outside_the_allowed_domains_are_refused_before_any_cache_or_wechat_work() {
    let app = spawn_app_with(with_domains()).await;
    for page in [
        "https://www.example.com/",        // an exact domain covers no subdomain
        "https://example.org/",            // a wildcard does not cover its domain itself
        "https://badexample.org/",         // nor a host that merely ends like it
        "https://a.example.org.evil.net/", // nor one that contains it
        "https://example.com.evil.net/a",  //
        "https://evil.net/?u=https://example.com/", // only the host counts
    ] {
        let response = app.sign(page).await;
        let body = response.text().await.unwrap();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            json["error"]["code"], "domain_not_allowed",
            "{page}: {body}"
        );
        // The page author is told why; the configuration key is the operator's business.
        assert!(body.contains("JS interface safe domains"), "{body}");
    }
    // The same on the v1 route, with the URL in a JSON body.
    let response = app
        .post_config_for("default", "https://www.example.com/")
        .await;
    assert_eq!(error_code(response, 403).await, "domain_not_allowed");

    let calls = app.sandbox.calls();
    assert_eq!(
        (calls.stable_token, calls.token, calls.getticket),
        (0, 0, 0),
        "a refused page made WeChat calls: {calls:?}"
    );
    assert_eq!(
        keys_in_redis(&app).await,
        0,
        "a refused page touched the cache"
    );
}

#[actix_web::test]
async fn pages_inside_the_allowed_domains_are_signed_whatever_the_case_port_or_depth() {
    let app = spawn_app_with(with_domains()).await;
    for page in [
        "https://example.com/a?b=1",
        "https://EXAMPLE.com/",
        "http://example.com:8080/",
        "https://a.example.org/",
        "https://a.b.c.Example.ORG:8443/deep",
    ] {
        let config = app.sign_and_check(page).await;
        assert_eq!(config["url"], page, "signed as sent");
    }
}

#[actix_web::test]
async fn an_app_without_allowed_domains_signs_any_host() {
    let app = spawn_app_with(with_domains()).await;
    let response = app
        .config_for("shop", "https://anything.example.net/")
        .await;
    assert_eq!(response.status(), 200);
    let config: serde_json::Value = response.json().await.unwrap();
    assert_eq!(config["appId"], SHOP_APPID);
    // ...while the app that has a list keeps refusing that host.
    let response = app
        .config_for("default", "https://anything.example.net/")
        .await;
    assert_eq!(error_code(response, 403).await, "domain_not_allowed");
}

const PAGE_ORIGIN: &str = "https://a.example.com";

/// `default` accepts calls from PAGE_ORIGIN, `shop` from any origin, `blog` from none.
fn with_origins() -> Options {
    Options {
        extra_apps: vec![("shop", SHOP_APPID), ("blog", "wxblog000000000001")],
        cors_origins: vec![
            ("default", &[PAGE_ORIGIN, "http://localhost:3000"]),
            ("shop", &["*"]),
        ],
        ..Options::default()
    }
}

/// The page [`sign_from`] asks to sign.
const SIGNED_PAGE: &str = "https://a.example.com/page";

async fn sign_from(app: &TestApp, route: &str, origin: &str) -> reqwest::Response {
    app.request(Method::GET, route)
        .header("origin", origin)
        .query(&[("url", SIGNED_PAGE)])
        .send()
        .await
        .expect("request the signature")
}

async fn preflight(app: &TestApp, route: &str, origin: &str) -> reqwest::Response {
    app.request(Method::OPTIONS, route)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("send the preflight")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .map(|v| v.to_str().expect("a text header"))
}

fn varies_on_origin(headers: &HeaderMap) -> bool {
    headers
        .get_all("vary")
        .iter()
        .filter_map(|v: &HeaderValue| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case("origin"))
        })
}

#[actix_web::test]
async fn a_listed_origin_gets_its_origin_echoed_on_answers_and_errors() {
    let app = spawn_app_with(with_origins()).await;
    for route in ["/wxJssdk/getJssdk", "/v1/apps/default/jssdk/config"] {
        let sent = std::time::Instant::now();
        let response = sign_from(&app, route, PAGE_ORIGIN).await;
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(
            header(headers, "access-control-allow-origin"),
            Some(PAGE_ORIGIN)
        );
        assert!(varies_on_origin(headers), "{headers:?}");
        assert_eq!(
            header(headers, "access-control-allow-credentials"),
            None,
            "credentials are never allowed"
        );
        let config = response.json().await.unwrap();
        assert!(app.signed_with_a_valid_ticket(&config, SIGNED_PAGE, sent));
    }
    // A page can read why it failed.
    let response = app
        .request(Method::GET, "/wxJssdk/getJssdk")
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(response.headers(), "access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_eq!(error_code(response, 400).await, "missing_url");
}

#[actix_web::test]
async fn an_origin_not_listed_gets_no_cors_headers() {
    let app = spawn_app_with(with_origins()).await;
    for (route, origin) in [
        ("/wxJssdk/getJssdk", "https://evil.example.net"),
        ("/wxJssdk/getJssdk", "http://a.example.com"), // another scheme is another origin
        ("/wxJssdk/getJssdk", "https://a.example.com:8443"),
        ("/wxJssdk/getJssdk", "null"),
        // Each app has its own list: default's origin is not blog's.
        ("/v1/apps/blog/jssdk/config", PAGE_ORIGIN),
    ] {
        let response = sign_from(&app, route, origin).await;
        // The server still answers (CORS is enforced by the browser)...
        assert_eq!(response.status(), 200, "{route} from {origin}");
        // ...but without the header that would let the script read the answer.
        let headers = response.headers();
        assert_eq!(
            header(headers, "access-control-allow-origin"),
            None,
            "{origin}"
        );
        let preflight = preflight(&app, route, origin).await;
        let headers = preflight.headers();
        assert_eq!(
            header(headers, "access-control-allow-origin"),
            None,
            "{origin}"
        );
        assert_eq!(
            header(headers, "access-control-allow-methods"),
            None,
            "{origin}"
        );
    }
}

#[actix_web::test]
async fn a_preflight_from_a_listed_origin_is_answered_204_with_methods_and_headers() {
    let app = spawn_app_with(with_origins()).await;
    for route in ["/wxJssdk/getJssdk", "/v1/apps/default/jssdk/config"] {
        let response = preflight(&app, route, PAGE_ORIGIN).await;
        assert_eq!(response.status(), 204, "{route}");
        let headers = response.headers();
        assert_eq!(
            header(headers, "access-control-allow-origin"),
            Some(PAGE_ORIGIN)
        );
        let methods = header(headers, "access-control-allow-methods").unwrap_or_default();
        for method in ["GET", "POST", "OPTIONS"] {
            assert!(methods.contains(method), "{methods}");
        }
        let allowed = header(headers, "access-control-allow-headers").unwrap_or_default();
        assert!(allowed.eq_ignore_ascii_case("content-type"), "{allowed}");
        assert!(varies_on_origin(headers));
        assert_eq!(header(headers, "access-control-allow-credentials"), None);
        assert!(response.bytes().await.unwrap().is_empty());
    }
    // A preflight is no signature: WeChat was not asked.
    assert_eq!(app.sandbox.calls().stable_token, 0);
    // A preflight for an app that does not exist is still a 404.
    let response = preflight(&app, "/v1/apps/nope/jssdk/config", PAGE_ORIGIN).await;
    assert_eq!(error_code(response, 404).await, "unknown_app");
}

#[actix_web::test]
async fn a_star_echoes_any_origin_and_never_answers_star() {
    let app = spawn_app_with(with_origins()).await;
    for origin in ["https://any.example.net", "http://localhost:5173"] {
        let response = sign_from(&app, "/v1/apps/shop/jssdk/config", origin).await;
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(header(headers, "access-control-allow-origin"), Some(origin));
        assert_eq!(header(headers, "access-control-allow-credentials"), None);
        let preflight = preflight(&app, "/v1/apps/shop/jssdk/config", origin).await;
        assert_eq!(preflight.status(), 204);
        assert_eq!(
            header(preflight.headers(), "access-control-allow-origin"),
            Some(origin)
        );
    }
}

#[actix_web::test]
async fn a_refused_domain_is_readable_by_a_listed_origin() {
    let mut options = with_origins();
    options.allowed_domains = vec![("default", &["*.example.com"])];
    let app = spawn_app_with(options).await;
    let response = app
        .request(Method::GET, "/wxJssdk/getJssdk")
        .header("origin", PAGE_ORIGIN)
        .query(&[("url", "https://elsewhere.example.net/")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(response.headers(), "access-control-allow-origin"),
        Some(PAGE_ORIGIN)
    );
    assert_eq!(error_code(response, 403).await, "domain_not_allowed");
    assert_eq!(app.sandbox.calls().getticket, 0);
}
