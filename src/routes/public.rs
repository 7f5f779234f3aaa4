//! Files for web pages, under `/wxJssdk/public/`: the page helper `wx-jssdk.js` and a
//! demo page that uses it; and at the root, the domain verification files WeChat asks
//! for (`apps.NAME.domain_verify_files`).
//!
//! The files are compiled into the binary (`include_str!`): serving them touches no
//! filesystem, a deployment is one file as before, and a request can only ever get one
//! of the entries of [`FILES`]. `..`, encoded slashes and the like name no entry, so
//! path traversal is impossible by construction rather than by a check.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::AppState;
use crate::error::ApiError;

/// Long enough that a page's visitors do not refetch the helper on every view, short
/// enough that a fixed helper reaches every page within minutes of a deployment (the
/// file names carry no version to bust a longer cache with).
const CACHE_CONTROL: &str = "public, max-age=300";

/// The demo page runs on the service's own origin: it may load scripts only from there
/// and from WeChat's CDN (the official JS-SDK), and talk only to the service. Its inline
/// `<style>` is the one exception, harmless for styles.
const DEMO_CSP: &str = "default-src 'none'; script-src 'self' https://res.wx.qq.com; \
    connect-src 'self'; img-src 'self' https: data:; style-src 'unsafe-inline'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct File {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    /// Extra response headers of this file.
    headers: &'static [(&'static str, &'static str)],
}

const FILES: &[File] = &[
    File {
        name: "wx-jssdk.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../public/wx-jssdk.js"),
        headers: &[],
    },
    File {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../public/index.html"),
        headers: &[("content-security-policy", DEMO_CSP)],
    },
    File {
        name: "demo.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../public/demo.js"),
        headers: &[],
    },
];

/// `GET|HEAD /wxJssdk/public/{file}`.
pub(crate) async fn file(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    serve(&name)
}

/// `GET|HEAD /{file}.txt`: a domain verification file of `apps.NAME.domain_verify_files`
/// (`MP_verify_….txt`), its content as plain text, exactly as configured.
pub(crate) async fn verify_file(
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let content = state.apps.verify_file(&name).ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(content.to_string()))
}

/// `GET|HEAD /wxJssdk/public/`: the demo page.
pub(crate) async fn index() -> Result<HttpResponse, ApiError> {
    serve("index.html")
}

/// `/wxJssdk/public` without the slash: the demo's relative script URLs would resolve
/// one level too high, so send the browser to the folder. The location is relative, so
/// it stays right behind a proxy that mounts the service under a prefix.
pub(crate) async fn folder() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "public/"))
        .finish()
}

fn serve(name: &str) -> Result<HttpResponse, ApiError> {
    let file = FILES
        .iter()
        .find(|f| f.name == name)
        .ok_or(ApiError::NotFound)?;
    let mut response = HttpResponse::Ok();
    response
        .content_type(file.content_type)
        .insert_header((header::CACHE_CONTROL, CACHE_CONTROL))
        // Never let a browser guess another type for these bytes.
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    for &header in file.headers {
        response.insert_header(header);
    }
    Ok(response.body(file.body))
}
