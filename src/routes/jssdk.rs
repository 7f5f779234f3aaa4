//! `wx.config` signing: the page sends its URL, we answer the fields `wx.config` needs.
//! The ticket itself never leaves the service.

use actix_web::mime;
use actix_web::{http::header, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::params::{from_body, from_query};
use super::{AppState, SelectedApp};
use crate::configuration::AppKind;
use crate::error::ApiError;
use crate::wechat::signature::{nonce, page_url, sign_url};
use crate::wechat::WechatClient;

#[derive(Deserialize)]
pub(super) struct UrlParam {
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
    /// WeChat Work apps: what `wx.agentConfig` needs as well.
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_config: Option<AgentConfig<'a>>,
}

/// `wx.agentConfig`: the same signature rule over the same URL, with the agent ticket.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AgentConfig<'a> {
    corpid: &'a str,
    agentid: &'a str,
    timestamp: u64,
    nonce_str: String,
    signature: String,
}

pub(crate) async fn config(
    app: SelectedApp,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    wechat: web::Data<WechatClient>,
) -> Result<HttpResponse, ApiError> {
    let raw = requested_url(&req, payload).await?;
    let url = page_url(&raw)?;
    // Before any cache or WeChat work: a page WeChat would refuse costs nothing.
    if let Some(host) = app.0.allowed_domains.refused_host(url.host()) {
        return Err(ApiError::DomainNotAllowed(host));
    }
    let ctx = app.context(wechat);
    let ticket = state.cache.jsapi_ticket(&ctx).await?;
    let timestamp = crate::clock::now_secs();
    let agent_config = match app.0.agentid.as_deref() {
        Some(agentid) if app.0.kind == AppKind::Work => {
            let agent_ticket = state.cache.agent_ticket(&ctx).await?;
            let nonce_str = nonce();
            Some(AgentConfig {
                corpid: &app.0.appid,
                agentid,
                timestamp,
                signature: sign_url(&agent_ticket.value, &nonce_str, timestamp, url.as_str()),
                nonce_str,
            })
        }
        _ => None,
    };
    let nonce_str = nonce();
    let answer = JssdkConfig {
        app_id: &app.0.appid,
        timestamp,
        signature: sign_url(&ticket.value, &nonce_str, timestamp, url.as_str()),
        nonce_str,
        url: url.as_str(),
        agent_config,
    };
    // Serialised into a buffer already large enough, where `HttpResponse::json` grows
    // a `String` from empty: five reallocations per signature (`perf`).
    let mut body = Vec::with_capacity(ANSWER_CAPACITY + url.as_str().len());
    serde_json::to_writer(&mut body, &answer)
        .map_err(|e| ApiError::Unavailable(format!("the answer did not serialise: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type(mime::APPLICATION_JSON)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body))
}

/// An answer's bytes besides the page URL: the field names, the AppID, the
/// timestamp, the nonce and the signature (about 150), or, for a WeChat Work app,
/// twice that.
const ANSWER_CAPACITY: usize = 320;

/// The page URL, from `?url=` or, on POST, a JSON body or a form field.
async fn requested_url(req: &HttpRequest, payload: web::Payload) -> Result<String, ApiError> {
    if let Some(url) = from_query::<UrlParam>(req)?.url {
        return Ok(url);
    }
    let body: Option<UrlParam> = from_body(req, payload).await?;
    body.and_then(|b| b.url).ok_or(ApiError::MissingUrl)
}
