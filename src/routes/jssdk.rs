//! `wx.config` signing: the page sends its URL, we answer the fields `wx.config` needs.
//! The ticket itself never leaves the service.

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::{AppState, SelectedApp};
use crate::cache::Context;
use crate::error::ApiError;
use crate::wechat::signature::{nonce, page_url, sign_url};
use crate::wechat::WechatClient;

#[derive(Deserialize)]
struct UrlParam {
    url: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JssdkConfig<'a> {
    app_id: &'a str,
    timestamp: u64,
    nonce_str: String,
    signature: String,
    url: &'a str,
}

pub async fn config(
    app: SelectedApp,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    wechat: web::Data<WechatClient>,
) -> Result<HttpResponse, ApiError> {
    let raw = requested_url(&req, payload).await?;
    let url = page_url(&raw)?;
    let ctx = Context {
        app: app.0.clone(),
        wechat: wechat.into_inner(),
    };
    let ticket = state.cache.jsapi_ticket(&ctx).await?;
    let timestamp = crate::cache::now_ms() / 1000;
    let nonce_str = nonce();
    let signature = sign_url(&ticket.value, &nonce_str, timestamp, url);
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(JssdkConfig {
            app_id: &app.0.appid,
            timestamp,
            nonce_str,
            signature,
            url,
        }))
}

/// The page URL, from `?url=` or, on POST, a JSON body or a form field.
async fn requested_url(req: &HttpRequest, payload: web::Payload) -> Result<String, ApiError> {
    let query: UrlParam = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::InvalidQuery(e.to_string()))?;
    if let Some(url) = query.url {
        return Ok(url);
    }
    let body = crate::limits::read_body(payload).await?;
    if body.is_empty() {
        return Err(ApiError::MissingUrl);
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let param: UrlParam = if content_type.starts_with("application/json") {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::InvalidBody(format!("not a JSON object with a string `url`: {e}"))
        })?
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        serde_urlencoded::from_bytes(&body)
            .map_err(|e| ApiError::InvalidBody(format!("not a valid form: {e}")))?
    } else {
        return Err(ApiError::InvalidBody(
            "send the url as JSON (application/json) or a form (application/x-www-form-urlencoded)"
                .into(),
        ));
    };
    param.url.ok_or(ApiError::MissingUrl)
}
