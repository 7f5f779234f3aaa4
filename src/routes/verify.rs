//! The account's server URL: WeChat's one-time verification (GET with `echostr`) and
//! the message pushes that follow once the URL is enabled (POST).

use actix_web::{http::header, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::params::from_query;
use super::SelectedApp;
use crate::error::ApiError;
use crate::wechat::signature::verify_server_signature;

#[derive(Deserialize)]
pub(super) struct SignedQuery {
    signature: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
    echostr: Option<String>,
}

impl SignedQuery {
    fn parse(req: &HttpRequest) -> Result<Self, ApiError> {
        from_query(req)
    }

    /// Checks the signature WeChat puts on every request to the server URL.
    fn verify(&self, app: &SelectedApp) -> Result<(), ApiError> {
        let signature = required(&self.signature, "signature")?;
        let timestamp = required(&self.timestamp, "timestamp")?;
        let nonce = required(&self.nonce, "nonce")?;
        let token = app.0.token.as_ref().ok_or(ApiError::NoServerToken)?;
        if verify_server_signature(token.expose(), timestamp, nonce, signature) {
            Ok(())
        } else {
            Err(ApiError::InvalidSignature)
        }
    }
}

fn required<'a>(value: &'a Option<String>, name: &'static str) -> Result<&'a str, ApiError> {
    value.as_deref().ok_or(ApiError::MissingParameter(name))
}

fn plain_text(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// WeChat checks the server URL by expecting `echostr` back verbatim.
pub async fn server_url_check(
    app: SelectedApp,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = SignedQuery::parse(&req)?;
    let echostr = required(&query.echostr, "echostr")?.to_string();
    query.verify(&app)?;
    Ok(plain_text(echostr))
}

/// A message or event push. This service answers none of them, and `success` tells
/// WeChat so (anything else within 5 s makes users see "service unavailable").
pub async fn message_push(app: SelectedApp, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    SignedQuery::parse(&req)?.verify(&app)?;
    Ok(plain_text("success".to_string()))
}
