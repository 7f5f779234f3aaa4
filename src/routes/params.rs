//! Request parameters the way the JS-SDK routes take them: in the query string, or on
//! POST in a JSON body or a form, whichever the page finds easiest.

use actix_web::{http::header, web, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Request bodies are tiny (`{"url": ...}`); anything larger is refused.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The query string as `T`.
pub fn from_query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    parse_query(req.query_string())
}

/// A raw query string as `T`. Kept apart from [`from_query`] so that it can be
/// exercised without a request (see [`super::parse_request_params`]).
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    serde_urlencoded::from_str(query).map_err(|e| ApiError::InvalidQuery(e.to_string()))
}

/// The body as `T`, by its content type; `None` when there is no body.
pub async fn from_body<T: DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Option<T>, ApiError> {
    let body = read_body(payload).await?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    parse_body(content_type, &body)
}

/// A body already read, as `T`, by its `content_type`; `None` when it is empty. The
/// pure half of [`from_body`], which the fuzzer reaches without a runtime.
pub fn parse_body<T: DeserializeOwned>(
    content_type: &str,
    body: &[u8],
) -> Result<Option<T>, ApiError> {
    if body.is_empty() {
        return Ok(None);
    }
    if content_type.starts_with("application/json") {
        serde_json::from_slice(body)
            .map(Some)
            .map_err(|e| ApiError::InvalidBody(format!("not the expected JSON object: {e}")))
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        serde_urlencoded::from_bytes(body)
            .map(Some)
            .map_err(|e| ApiError::InvalidBody(format!("not a valid form: {e}")))
    } else {
        Err(ApiError::InvalidBody(
            "send JSON (application/json) or a form (application/x-www-form-urlencoded)".into(),
        ))
    }
}

pub(super) async fn read_body(mut payload: web::Payload) -> Result<web::BytesMut, ApiError> {
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
