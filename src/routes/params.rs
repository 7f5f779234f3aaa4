//! Request parameters the way the JS-SDK routes take them: in the query string, or on
//! POST in a JSON body or a form, whichever the page finds easiest.

use actix_web::{http::header, web, HttpRequest};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The query string as `T`.
pub fn from_query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::InvalidQuery(e.to_string()))
}

/// The body as `T`, by its content type; `None` when there is no body.
pub async fn from_body<T: DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Option<T>, ApiError> {
    let body = crate::limits::read_body(payload).await?;
    if body.is_empty() {
        return Ok(None);
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/json") {
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| ApiError::InvalidBody(format!("not the expected JSON object: {e}")))
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        serde_urlencoded::from_bytes(&body)
            .map(Some)
            .map_err(|e| ApiError::InvalidBody(format!("not a valid form: {e}")))
    } else {
        Err(ApiError::InvalidBody(
            "send JSON (application/json) or a form (application/x-www-form-urlencoded)".into(),
        ))
    }
}
