//! CORS on the signing routes: scripts on the origins in `apps.NAME.cors_origins` may
//! call them from the browser, for pages served from another host than this service.
//!
//! The request's origin is echoed (never `*`), and credentials are never allowed: the
//! signing routes need no cookie, and echoing any origin together with credentials
//! would let every site call them as the user. An origin that is not listed gets no
//! CORS header at all, so the browser keeps the answer from the script. Requests
//! without `Origin` (same-origin pages, servers) pass untouched.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse};

use super::SelectedApp;

/// The methods of the signing routes, for preflights and `Allow`.
const METHODS: &str = "GET, POST, OPTIONS";
/// The request header a page may add: `Content-Type`, for a JSON body.
const HEADERS: &str = "Content-Type";
/// How long a browser may reuse a preflight's answer, in seconds: one preflight per
/// page session rather than one per signature.
const MAX_AGE: &str = "600";

/// Middleware of the signing routes: answers allowed preflights itself, and marks the
/// answers to allowed origins (errors included, so a page can read why it failed).
pub(crate) async fn cors(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    // `None`: the app has no CORS origins, or is unknown (the handler says so).
    let allowed = match req.extract::<SelectedApp>().await {
        Ok(app) if !app.0.cors_origins.is_empty() => {
            Some(origin.to_str().is_ok_and(|o| app.0.cors_origins.allows(o)))
        }
        _ => None,
    };
    let Some(allowed) = allowed else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if allowed && preflight {
        let answer = HttpResponse::NoContent()
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, METHODS))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, HEADERS))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, MAX_AGE))
            .insert_header((header::VARY, "Origin"))
            .finish();
        return Ok(req.into_response(answer).map_into_right_body());
    }
    let mut response = next.call(req).await?;
    let headers = response.headers_mut();
    // The answer depends on the origin: a shared cache must not hand one to another.
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if allowed {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        // So that a page can back off as a 503 or 429 asks.
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After"),
        );
    }
    Ok(response.map_into_left_body())
}

/// `OPTIONS` on a signing route that is not an allowed preflight: the methods it takes,
/// and no CORS header (for a preflight, the browser then blocks the call).
pub(crate) async fn options(_app: SelectedApp) -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::ALLOW, METHODS))
        .finish()
}
