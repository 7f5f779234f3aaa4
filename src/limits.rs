//! What a client may send: the request body limits (size and time), applied the same
//! way to every route that reads a body.
//!
//! Bodies here are tiny (`{"url": ...}`, a card's few fields, a token), so anything
//! over [`MAX_BODY_BYTES`] is refused with a JSON 413 `body_too_large` before more of it
//! is buffered. A handler takes its body in one of two ways, both limited:
//!
//! * through actix's `web::Json` / `web::Form` extractors, whose configurations are
//!   installed app-wide by [`configure`] (413 `body_too_large`, or 400 `invalid_body`
//!   for a body that does not parse);
//! * as a stream (`web::Payload`, when the format depends on the content type), read
//!   with [`read_body`], which also bounds the time the body may take to arrive
//!   (`server.client_body_timeout_ms`, installed as [`BodyTimeout`]): actix bounds only
//!   the request head, so a client could otherwise hold a connection by sending a body
//!   a byte at a time. Every handler that reads a body reads it this way.
//!
//! `web::Bytes` and `String` are limited too (app-wide `PayloadConfig`), but actix
//! answers their overflow with a plain-text 413, so handlers do not use them.
//!
//! The limits of the HTTP layer itself (the request head, slow clients, connections)
//! are actix-http's and the `[server]` settings, applied in [`crate::startup`].

use std::time::Duration;

use actix_web::error::{JsonPayloadError, UrlencodedError};
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;

use crate::error::ApiError;

/// The largest request body any route accepts.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a request body may take to arrive once its handler reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyTimeout(pub(crate) Duration);

impl Default for BodyTimeout {
    fn default() -> Self {
        Self(Duration::from_secs(10))
    }
}

/// Installs the body limits and their JSON errors for every extractor, app-wide.
pub(crate) fn configure(cfg: &mut web::ServiceConfig, body_timeout: BodyTimeout) {
    cfg.app_data(body_timeout)
        .app_data(
            web::JsonConfig::default()
                .limit(MAX_BODY_BYTES)
                .error_handler(|error, _| json_error(error).into()),
        )
        .app_data(
            web::FormConfig::default()
                .limit(MAX_BODY_BYTES)
                .error_handler(|error, _| form_error(error).into()),
        )
        .app_data(web::PayloadConfig::new(MAX_BODY_BYTES));
}

fn json_error(error: JsonPayloadError) -> ApiError {
    match error {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::BodyTooLarge(MAX_BODY_BYTES)
        }
        JsonPayloadError::ContentType => {
            ApiError::InvalidBody("send it as JSON (content-type: application/json)".into())
        }
        other => ApiError::InvalidBody(format!("not the expected JSON: {other}")),
    }
}

fn form_error(error: UrlencodedError) -> ApiError {
    match error {
        UrlencodedError::Overflow { .. } => ApiError::BodyTooLarge(MAX_BODY_BYTES),
        other => ApiError::InvalidBody(format!("not the expected form: {other}")),
    }
}

/// Reads a streamed body, refusing it as soon as it passes [`MAX_BODY_BYTES`], or
/// when it has not all arrived within the app's [`BodyTimeout`] (408, and the
/// connection is closed: what is left of the body will not be read).
pub(crate) async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<web::BytesMut, ApiError> {
    let limit = req.app_data::<BodyTimeout>().copied().unwrap_or_default().0;
    tokio::time::timeout(limit, read_within_limit(payload))
        .await
        .map_err(|_| ApiError::BodyTimeout(limit.as_millis() as u64))?
}

async fn read_within_limit(mut payload: web::Payload) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::InvalidBody(e.to_string()))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::BodyTooLarge(MAX_BODY_BYTES));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::ContentType;
    use actix_web::{test, App, HttpRequest, HttpResponse};
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Token {
        access_token: String,
    }

    async fn echo_json(body: web::Json<Token>) -> HttpResponse {
        HttpResponse::Ok().body(body.into_inner().access_token)
    }

    async fn echo_form(body: web::Form<Token>) -> HttpResponse {
        HttpResponse::Ok().body(body.into_inner().access_token)
    }

    async fn echo_stream(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, ApiError> {
        Ok(HttpResponse::Ok().body(read_body(&req, body).await?.freeze()))
    }

    /// The status and error code of a request to an app with the limits installed.
    async fn answer(req: test::TestRequest) -> (u16, String) {
        let app = test::init_service(
            App::new()
                .configure(|cfg| configure(cfg, BodyTimeout::default()))
                .route("/json", web::post().to(echo_json))
                .route("/form", web::post().to(echo_form))
                .route("/stream", web::post().to(echo_stream)),
        )
        .await;
        let res = test::call_service(&app, req.to_request()).await;
        let status = res.status().as_u16();
        let body = test::read_body(res).await;
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .map(|v| v["error"]["code"].as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).to_string());
        (status, code)
    }

    fn post(path: &str) -> test::TestRequest {
        test::TestRequest::post().uri(path)
    }

    #[actix_web::test]
    async fn every_way_of_reading_a_body_refuses_more_than_the_limit_with_json() {
        let huge = "x".repeat(MAX_BODY_BYTES + 1);
        let json = format!(r#"{{"access_token":"{huge}"}}"#);
        let form = format!("access_token={huge}");
        for req in [
            post("/json")
                .insert_header(ContentType::json())
                .set_payload(json.clone()),
            post("/form")
                .insert_header(ContentType::form_url_encoded())
                .set_payload(form),
            post("/stream").set_payload(json),
        ] {
            assert_eq!(answer(req).await, (413, "body_too_large".into()));
        }
    }

    #[actix_web::test]
    async fn bodies_within_the_limit_are_read_and_bad_ones_are_invalid_body() {
        let ok = post("/json")
            .insert_header(ContentType::json())
            .set_payload(r#"{"access_token":"t"}"#);
        assert_eq!(answer(ok).await, (200, "t".into()));
        let ok = post("/form")
            .insert_header(ContentType::form_url_encoded())
            .set_payload("access_token=t");
        assert_eq!(answer(ok).await, (200, "t".into()));
        let not_json = post("/json")
            .insert_header(ContentType::json())
            .set_payload("{");
        assert_eq!(answer(not_json).await, (400, "invalid_body".into()));
        let wrong_type = post("/json")
            .insert_header(ContentType::plaintext())
            .set_payload(r#"{"access_token":"t"}"#);
        assert_eq!(answer(wrong_type).await, (400, "invalid_body".into()));
    }
}
