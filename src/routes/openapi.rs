//! `GET /openapi.json`: the OpenAPI 3 description of every route.
//!
//! Hand-written JSON next to this file rather than generated from the handlers: the
//! handlers parse their input by hand (a URL from the query, a JSON body or a form),
//! which annotations would describe worse than prose, and the document is reviewed
//! like any other file. The tests below keep it honest: every route in the routing
//! table must be in it with exactly the methods it answers.

use actix_web::http::header::{self, ContentType};
use actix_web::HttpResponse;

/// The document, compiled in: served as is, no parsing at run time.
const DOCUMENT: &str = include_str!("openapi.json");

pub(crate) async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(DOCUMENT)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use actix_web::http::Method;
    use actix_web::test as actix_test;
    use actix_web::{web, App, HttpRequest};
    use serde_json::Value;

    use super::*;
    use crate::routes::configure;

    /// Methods probed on every route: those a route may answer (HEAD on the probes
    /// and page files, OPTIONS on the signing routes) and some no route answers.
    const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

    /// The origin the app of [`configured_state`] lists in its `cors_origins`.
    const PAGE_ORIGIN: &str = "https://page.example.com";

    fn document_json() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is valid JSON")
    }

    fn documented_methods(doc: &Value, path: &str) -> BTreeSet<String> {
        doc["paths"][path]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(key, _)| key.to_uppercase())
            .filter(|key| METHODS.contains(&key.as_str()))
            .collect()
    }

    /// `/{file:[A-Za-z0-9_-]+\\.txt}` as OpenAPI writes it: `/{file}` (the `Debug`
    /// form escapes the backslash).
    fn without_regex(pattern: &str) -> String {
        // Named, not written as a lone closing-brace literal: `tests/architecture.rs`
        // finds the end of this test module by counting the braces of the source.
        const OPEN: char = '{';
        const CLOSE: char = '}';
        let mut out = String::new();
        let mut in_regex = false;
        for c in pattern.chars() {
            match c {
                ':' if !in_regex && out.rfind(OPEN) > out.rfind(CLOSE) => in_regex = true,
                CLOSE if in_regex => {
                    in_regex = false;
                    out.push(c);
                }
                _ if in_regex => {}
                _ => out.push(c),
            }
        }
        out
    }

    /// Every path pattern in actix's resource map of an app built by
    /// [`configure`]. Actix offers no way to list its routes, but its `ResourceMap`
    /// prints every `ResourceDef` with `patterns: Single("...")` in its `Debug` form;
    /// if that form changes, the count check below fails rather than letting routes
    /// go unseen.
    async fn routed_patterns() -> BTreeSet<String> {
        let app = actix_test::init_service(
            App::new()
                .configure(|cfg| configure(cfg, true))
                .default_service(web::to(|req: HttpRequest| async move {
                    format!("{:?}", req.resource_map())
                })),
        )
        .await;
        let req = actix_test::TestRequest::get()
            .uri("/__resource_map__")
            .to_request();
        let body = actix_test::call_and_read_body(&app, req).await;
        let dump = String::from_utf8_lossy(&body).to_string();
        let mut patterns = BTreeSet::new();
        let mut singles = 0;
        for piece in dump.split("patterns: Single(\"").skip(1) {
            singles += 1;
            let pattern = piece.split('"').next().unwrap_or_default();
            if pattern.starts_with('/') {
                patterns.insert(without_regex(pattern));
            }
        }
        assert_eq!(
            singles,
            dump.matches("patterns: ").count(),
            "a route pattern this test cannot read (actix's Debug output changed?):\n{dump}"
        );
        assert!(
            patterns.contains("/wxJssdk/getJssdk") && patterns.contains("/healthz"),
            "no known route found in actix's resource map:\n{dump}"
        );
        patterns
    }

    #[test]
    fn the_document_is_openapi_3_and_every_reference_resolves() {
        let doc = document_json();
        let version = doc["openapi"].as_str().unwrap_or_default();
        assert!(version.starts_with("3."), "openapi: {version}");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

        fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        found.push(target);
                    }
                    map.values().for_each(|v| refs(v, found));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for target in found {
            let pointer = target.strip_prefix('#').unwrap_or(target);
            assert!(doc.pointer(pointer).is_some(), "dangling $ref {target}");
        }
    }

    #[test]
    fn every_operation_describes_its_errors_with_the_json_error_schema() {
        let doc = document_json();
        let resolve = |value: &Value| -> Value {
            match value["$ref"].as_str() {
                Some(target) => doc
                    .pointer(target.trim_start_matches('#'))
                    .cloned()
                    .unwrap_or(Value::Null),
                None => value.clone(),
            }
        };
        let paths = doc["paths"].as_object().expect("paths");
        assert!(!paths.is_empty());
        for (path, item) in paths {
            for (method, operation) in item.as_object().expect("a path item") {
                let responses = operation["responses"].as_object();
                let responses =
                    responses.unwrap_or_else(|| panic!("{method} {path}: no responses"));
                assert!(
                    responses
                        .keys()
                        .any(|status| status.starts_with('2') || status.starts_with('3')),
                    "{method} {path}: no success (or redirect) response"
                );
                for (status, response) in responses {
                    if status.starts_with('4') || status.starts_with('5') {
                        let response = resolve(response);
                        let schema = &response["content"]["application/json"]["schema"];
                        // The readiness probe's 503 is a status, not an error of the caller's;
                        // the gateway's own limits are answered in WeChat's shape, which
                        // the SDKs calling it parse.
                        let gateway = path.starts_with("/cgi-bin/") || path == "/{root}/{path}";
                        let expected = match (path.as_str(), status.as_str()) {
                            ("/readyz", "503") => "#/components/schemas/Unready",
                            (_, "413" | "502" | "504") if gateway => {
                                "#/components/schemas/WeChatError"
                            }
                            _ => "#/components/schemas/Error",
                        };
                        assert_eq!(
                            schema["$ref"], expected,
                            "{method} {path} {status}: not the JSON error shape"
                        );
                    }
                }
            }
        }
    }

    #[actix_web::test]
    async fn every_route_is_documented_and_every_documented_route_exists() {
        let doc = document_json();
        let documented: BTreeSet<String> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect();
        let routed = routed_patterns().await;
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from src/routes/openapi.json: {undocumented:?}"
        );
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            unrouted.is_empty(),
            "documented paths that no route serves: {unrouted:?}"
        );
    }

    /// The routes as a configured service has them: with an app, admin keys and the
    /// gateway on, so that the routes that exist only with those answer too.
    fn configured_state() -> web::Data<crate::routes::AppState> {
        let settings = crate::configuration::Settings::load(
            None,
            &[
                ("apps.default.appid", "wxopenapi0000000001"),
                ("apps.default.secret", "secret"),
                ("apps.default.token", "token"),
                ("apps.default.cors_origins", PAGE_ORIGIN),
                ("admin.keys", "openapi-test-admin-key-0001"),
                ("gateway.enabled", "true"),
                (
                    "apps.default.domain_verify_files",
                    "MP_verify_openapi.txt=openapi",
                ),
            ],
        )
        .expect("test settings");
        crate::startup::app_state(&settings).expect("in-process state")
    }

    /// Each method of [`METHODS`] on each route: a documented one must be answered
    /// (neither 404 nor 405), an undocumented one must be 405.
    ///
    /// `OPTIONS` is sent twice, since it is documented for two kinds of client. As a
    /// browser's CORS preflight (`Origin` from the app's `cors_origins`,
    /// `Access-Control-Request-Method: POST` and `-Headers: content-type`, as for a
    /// JSON body), "answered" means what the browser needs to go on with the call: a
    /// 2xx with `Access-Control-Allow-Origin` echoing the origin and
    /// `Access-Control-Allow-Methods` naming `POST` (the CORS middleware's answer; the
    /// route's own 204 lacks them, and the browser would refuse the call). Without
    /// `Origin`, as any other client sends it, it must be neither 404 nor 405 (the
    /// route's own `OPTIONS`, with `Allow`). Where `OPTIONS` is not documented, both
    /// must be 405.
    #[actix_web::test]
    async fn each_route_answers_exactly_the_documented_methods() {
        let doc = document_json();
        let app = App::new()
            .app_data(configured_state())
            .configure(|cfg| configure(cfg, true));
        let app = actix_test::init_service(app).await;
        for path in routed_patterns().await {
            let documented = documented_methods(&doc, &path);
            // `{name}` is an app, except under /wxJssdk/public/ where it is a file.
            let name = match path.starts_with("/wxJssdk/public/") {
                true => "wx-jssdk.js",
                false => "default",
            };
            let uri = path
                .replace("{name}", name)
                .replace("{file}", "MP_verify_openapi.txt")
                .replace("{root}/{path}", "cgi-bin/menu/get");
            for method in METHODS {
                let method = Method::from_bytes(method.as_bytes()).expect("a method");
                let req = actix_test::TestRequest::default()
                    .method(method.clone())
                    .uri(&uri)
                    .to_request();
                let status = actix_test::call_service(&app, req).await.status();
                if documented.contains(method.as_str()) {
                    assert!(
                        status != 405 && status != 404,
                        "{method} {path} is documented but answers {status}"
                    );
                } else {
                    assert_eq!(status, 405, "{method} {path} is routed but not documented");
                }
                if method != Method::OPTIONS {
                    continue;
                }
                let req = actix_test::TestRequest::default()
                    .method(Method::OPTIONS)
                    .uri(&uri)
                    .insert_header((header::ORIGIN, PAGE_ORIGIN))
                    .insert_header((header::ACCESS_CONTROL_REQUEST_METHOD, "POST"))
                    .insert_header((header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type"))
                    .to_request();
                let res = actix_test::call_service(&app, req).await;
                let status = res.status();
                let header_of = |name| {
                    res.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                };
                if documented.contains("OPTIONS") {
                    let origin = header_of(header::ACCESS_CONTROL_ALLOW_ORIGIN);
                    let methods = header_of(header::ACCESS_CONTROL_ALLOW_METHODS);
                    assert!(
                        status.is_success() && origin == PAGE_ORIGIN && methods.contains("POST"),
                        "a preflight of {path} is documented, but a browser would not go on: \
                         {status}, Access-Control-Allow-Origin: {origin:?}, \
                         Access-Control-Allow-Methods: {methods:?}"
                    );
                } else {
                    assert_eq!(
                        status, 405,
                        "a preflight of {path} is answered, but OPTIONS is not documented"
                    );
                }
            }
        }
    }

    #[actix_web::test]
    async fn the_document_is_served_as_json() {
        let app = actix_test::init_service(App::new().configure(|cfg| configure(cfg, true))).await;
        let req = actix_test::TestRequest::get()
            .uri("/openapi.json")
            .to_request();
        let res = actix_test::call_service(&app, req).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        let body: Value = serde_json::from_slice(&actix_test::read_body(res).await).unwrap();
        assert_eq!(body, document_json());
    }
}
