//! `/wxJssdk/public/`: the page helper and the demo page, compiled into the binary.

use reqwest::Method;

use crate::helpers::{error_code, spawn_app_with, Options, Service};

const FILES: [(&str, &str, &str); 3] = [
    (
        "wx-jssdk.js",
        "text/javascript; charset=utf-8",
        include_str!("../../public/wx-jssdk.js"),
    ),
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../public/index.html"),
    ),
    (
        "demo.js",
        "text/javascript; charset=utf-8",
        include_str!("../../public/demo.js"),
    ),
];

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[actix_web::test]
async fn serves_each_file_with_its_type_and_a_short_public_cache() {
    let app = spawn_app_with(Options {
        with_redis: false,
        ..Options::default()
    })
    .await;
    for (name, content_type, body) in FILES {
        let response = app.get(&format!("/wxJssdk/public/{name}")).await;
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(header(&response, "content-type"), content_type, "{name}");
        assert_eq!(header(&response, "cache-control"), "public, max-age=300");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        assert_eq!(response.text().await.unwrap(), body, "{name}");
    }
    let index = app.get("/wxJssdk/public/").await;
    assert_eq!(index.status(), 200);
    assert!(header(&index, "content-security-policy")
        .contains("script-src 'self' https://res.wx.qq.com"));
    assert_eq!(index.text().await.unwrap(), FILES[1].2);
}

#[actix_web::test]
async fn head_answers_the_headers_without_the_body() {
    let app = spawn_app_with(Options {
        with_redis: false,
        ..Options::default()
    })
    .await;
    let response = app
        .request(Method::HEAD, "/wxJssdk/public/wx-jssdk.js")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), FILES[0].1);
    assert_eq!(
        header(&response, "content-length"),
        FILES[0].2.len().to_string()
    );
    assert_eq!(response.bytes().await.unwrap().len(), 0);
}

#[actix_web::test]
async fn the_folder_without_its_slash_redirects_to_it() {
    let app = spawn_app_with(Options {
        with_redis: false,
        ..Options::default()
    })
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/wxJssdk/public", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(header(&response, "location"), "public/");
}

#[actix_web::test]
async fn anything_else_is_the_json_not_found_of_every_unknown_route() {
    let app = spawn_app_with(Options {
        with_redis: false,
        ..Options::default()
    })
    .await;
    for path in [
        "/wxJssdk/public/nope.js",
        "/wxJssdk/public/WX-JSSDK.JS",
        "/wxJssdk/public/wx-jssdk.js/",
        "/wxJssdk/public/sub/wx-jssdk.js",
        // What a traversal attempt looks like once the client has normalised `..`:
        // an encoded slash inside one segment, which names no file.
        "/wxJssdk/public/..%2FCargo.toml",
        "/wxJssdk/public/..%2F..%2Fsrc%2Fmain.rs",
        "/wxJssdk/public/%2e%2e%5cCargo.toml",
    ] {
        let response = app.get(path).await;
        assert_eq!(error_code(response, 404).await, "not_found", "{path}");
    }
    let post = app
        .request(Method::POST, "/wxJssdk/public/wx-jssdk.js")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(post, 405).await, "method_not_allowed");
}

#[actix_web::test]
async fn domain_verification_files_are_answered_at_the_root_as_configured() {
    let app = spawn_app_with(Options {
        extra_apps: vec![("shop", "wxshop00000000001")],
        domain_verify_files: vec![
            ("default", "MP_verify_abc123XYZ.txt", "abc123XYZ"),
            ("shop", "MP_verify_shop42.txt", "shop42"),
        ],
        ..Options::default()
    })
    .await;
    for (file, content) in [
        ("MP_verify_abc123XYZ.txt", "abc123XYZ"),
        ("MP_verify_shop42.txt", "shop42"),
    ] {
        let response = app.get(&format!("/{file}")).await;
        assert_eq!(response.status(), 200, "{file}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        assert_eq!(
            response.text().await.unwrap(),
            content,
            "exactly the content"
        );
        let head = app
            .request(Method::HEAD, &format!("/{file}"))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200);
    }
    for unknown in [
        "/MP_verify_other.txt",
        "/robots.txt",
        "/mp_verify_abc123xyz.txt",
    ] {
        assert_eq!(
            error_code(app.get(unknown).await, 404).await,
            "not_found",
            "{unknown}"
        );
    }
}
