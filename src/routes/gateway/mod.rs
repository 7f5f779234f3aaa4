//! WeChat's own API, answered at the root of the service (`[gateway] enabled = true`),
//! so that the company's backends keep their WeChat SDK (wechatpy, WxJava,
//! EasyWeChat, co-wechat-api) and only move its base URL here: every token then comes
//! from the shared cache, the service stays the only caller of WeChat's token
//! endpoints, and its address is the only one on the account's IP whitelist.
//!
//! - [`tokens`]: `cgi-bin/token`, `cgi-bin/stable_token` and WeChat Work's
//!   `cgi-bin/gettoken` answer the shared token to whoever holds the app's secret, as
//!   WeChat does.
//! - [`tickets`]: the ticket endpoints answer the shared ticket to whoever holds a
//!   token of the app (the current one, or the one it replaced while WeChat still
//!   accepts it).
//! - [`forward`]: every other call under WeChat's API roots is passed to WeChat if it
//!   carries a current token; otherwise it is refused here, so the gateway is no open
//!   proxy. A call WeChat refuses because the token died is healed once.
//!
//! Answers have WeChat's shapes (HTTP 200 and an `errcode`), since the SDKs parse
//! them, not the service's JSON errors: see [`GatewayError`].

mod forward;
mod tickets;
mod tokens;

use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{guard, web, HttpResponse, ResponseError};
use wechat_wire::{errcode, path, Answer};

use super::{with_methods, AppState};
use crate::cache::{CacheError, Context, TokenStanding};
use crate::configuration::AppKind;
use crate::log_throttle::warn_throttled;
use crate::metrics;
use crate::wechat::{WechatClient, WechatError};

pub(crate) use forward::Upstream;

/// The gateway's routes, which exist only with `gateway.enabled` (otherwise their
/// paths are unknown: a JSON 404, like any other). The token and ticket endpoints come
/// first: actix tries resources in order, and the forwarded roots match them too.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    let get = || web::get();
    cfg.service(resource(path::TOKEN).route(get().to(tokens::classic)))
        .service(resource(path::STABLE_TOKEN).route(web::post().to(tokens::stable)))
        .service(resource(path::WORK_TOKEN).route(get().to(tokens::work)))
        .service(resource(path::GET_TICKET).route(get().to(tickets::official)))
        .service(resource(path::WORK_JSAPI_TICKET).route(get().to(tickets::work_jsapi)))
        .service(resource(path::WORK_TICKET).route(get().to(tickets::work_agent)))
        .service(
            resource(forward::PATTERN)
                .route(get().to(forward::forward))
                .route(web::post().to(forward::forward)),
        );
}

fn resource(path: &str) -> actix_web::Resource {
    with_methods(web::resource(path).guard(guard::fn_guard(enabled)))
}

/// Whether the gateway's routes exist: `gateway.enabled`.
fn enabled(ctx: &guard::GuardContext<'_>) -> bool {
    ctx.app_data::<web::Data<AppState>>()
        .is_some_and(|state| state.gateway_enabled)
}

/// Why the gateway answered instead of WeChat (or instead of WeChat's answer), in
/// WeChat's terms: each has the `errcode` WeChat would give, and an HTTP status of 200
/// like WeChat's, except for the gateway's own limits (a body too large, WeChat too
/// slow or unreachable), which no WeChat answer describes. Messages never carry a
/// secret or a token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GatewayError {
    #[error("invalid grant_type")]
    GrantType,
    #[error("appid missing")]
    AppIdMissing,
    #[error("appsecret missing")]
    SecretMissing,
    /// No configured app has this appid (or, WeChat Work, this corpid).
    #[error("invalid appid")]
    UnknownApp,
    /// The secret is not the app's.
    #[error("invalid appsecret")]
    WrongSecret,
    /// WeChat Work: no application of the corp has this secret (WeChat Work's code for
    /// a wrong corpsecret is 40001).
    #[error("invalid credential, corpsecret is not one of this corp's applications'")]
    WrongCorpSecret,
    #[error("access_token missing")]
    TokenMissing,
    /// Not a current token of a configured app: nothing is forwarded.
    #[error("invalid credential, access_token is invalid or not latest")]
    TokenNotCurrent,
    #[error("invalid args: the type is not a ticket this endpoint serves")]
    TicketType,
    #[error("data format error: {0}")]
    DataFormat(&'static str),
    #[error(
        "the request body is larger than the gateway's limit of {0} bytes (gateway.max_body_bytes)"
    )]
    BodyTooLarge(u64),
    #[error(
        "system error: WeChat did not answer within the gateway's {0} ms (gateway.timeout_ms)"
    )]
    Timeout(u64),
    #[error("system error: WeChat could not be reached")]
    Unreachable,
    /// The shared token or ticket could not be had.
    #[error("the credential could not be had: {0}")]
    Cache(#[from] CacheError),
}

impl From<crate::cache::StoreError> for GatewayError {
    fn from(e: crate::cache::StoreError) -> Self {
        Self::Cache(e.into())
    }
}

impl GatewayError {
    fn errcode(&self) -> i64 {
        match self {
            Self::GrantType => errcode::INVALID_GRANT_TYPE,
            Self::AppIdMissing => errcode::APPID_MISSING,
            Self::SecretMissing => errcode::APPSECRET_MISSING,
            Self::UnknownApp => errcode::INVALID_APPID,
            Self::WrongSecret => errcode::INVALID_APPSECRET,
            Self::WrongCorpSecret | Self::TokenNotCurrent => errcode::INVALID_CREDENTIAL,
            Self::TokenMissing => errcode::ACCESS_TOKEN_MISSING,
            Self::TicketType => errcode::INVALID_ARGS,
            Self::DataFormat(_) => errcode::DATA_FORMAT_ERROR,
            Self::BodyTooLarge(_) => MEDIA_TOO_LARGE,
            Self::Timeout(_) | Self::Unreachable => errcode::SYSTEM_BUSY,
            Self::Cache(e) => upstream_errcode(e),
        }
    }

    /// The `result` label of the gateway's metrics.
    fn kind(&self) -> &'static str {
        match self {
            Self::GrantType | Self::AppIdMissing | Self::SecretMissing | Self::DataFormat(_) => {
                "bad_request"
            }
            Self::UnknownApp => "unknown_app",
            Self::WrongSecret | Self::WrongCorpSecret => "wrong_secret",
            Self::TokenMissing | Self::TokenNotCurrent => "token_not_current",
            Self::TicketType => "bad_request",
            Self::BodyTooLarge(_) => "too_large",
            Self::Timeout(_) => "timeout",
            Self::Unreachable => "unreachable",
            Self::Cache(_) => "unavailable",
        }
    }

    /// What the caller reads: the shared credential's failure in WeChat's words (its
    /// errcode, when WeChat refused the service), without the store's or WeChat's text.
    fn public_message(&self) -> String {
        match self {
            Self::Cache(CacheError::Upstream(e)) if upstream_errcode_of(e).is_some() => {
                format!("WeChat refused the service's request for the app's credential: {e}")
            }
            Self::Cache(_) => {
                "system busy: the app's shared credential could not be had; retry shortly".into()
            }
            other => other.to_string(),
        }
    }
}

/// WeChat's errcode for a media file larger than allowed.
const MEDIA_TOO_LARGE: i64 = 45001;

/// The errcode of WeChat's own refusal behind a cache failure, passed on (an IP not on
/// the whitelist, a spent quota, a wrong configured secret); -1, "busy", for the rest.
fn upstream_errcode(error: &CacheError) -> i64 {
    match error {
        CacheError::Upstream(e) => upstream_errcode_of(e).unwrap_or(errcode::SYSTEM_BUSY),
        _ => errcode::SYSTEM_BUSY,
    }
}

fn upstream_errcode_of(error: &WechatError) -> Option<i64> {
    match error {
        WechatError::InvalidAppId => Some(errcode::INVALID_APPID),
        WechatError::InvalidSecret => Some(errcode::INVALID_APPSECRET),
        WechatError::IpNotWhitelisted => Some(errcode::IP_NOT_WHITELISTED),
        WechatError::QuotaExceeded => Some(errcode::QUOTA_EXCEEDED),
        WechatError::InvalidCredential(code) => Some(*code),
        WechatError::Api { code, .. } => Some(*code),
        _ => None,
    }
}

impl ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Unreachable => StatusCode::BAD_GATEWAY,
            _ => StatusCode::OK,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if matches!(self, Self::Cache(_) | Self::Timeout(_) | Self::Unreachable) {
            warn_throttled(self.kind(), || format!("gateway: {self}"));
        }
        HttpResponse::build(self.status_code())
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(Answer::error(self.errcode(), self.public_message()))
    }
}

/// Counts an answer of the endpoint `api` in the gateway's metrics.
pub(super) fn counted(
    api: &'static str,
    answer: Result<HttpResponse, GatewayError>,
) -> Result<HttpResponse, GatewayError> {
    let result = answer.as_ref().map_or_else(GatewayError::kind, |_| "ok");
    metrics::gateway_request(api, result);
    answer
}

/// A credential answer: WeChat's JSON, never cached by anything on the way.
fn credential_answer(answer: Answer) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(answer)
}

/// The app `token` belongs to, and its standing there, among the apps of `kind` (any
/// kind: `None`). This instance's copies are asked first, without I/O; only a token
/// none of them knows costs a read of the store per app. A token of no app is
/// [`GatewayError::TokenNotCurrent`].
async fn holder(
    state: &AppState,
    wechat: web::Data<WechatClient>,
    token: &str,
    kind: Option<AppKind>,
) -> Result<(Context, TokenStanding), GatewayError> {
    let wechat: Arc<WechatClient> = wechat.into_inner();
    let contexts: Vec<Context> = state
        .apps
        .all()
        .filter(|app| kind.is_none_or(|kind| app.kind == kind))
        .map(|app| Context {
            app: app.clone(),
            wechat: wechat.clone(),
        })
        .collect();
    for ctx in &contexts {
        if let Some(standing) = state.cache.token_standing_here(ctx, token) {
            return Ok((ctx.clone(), standing));
        }
    }
    for ctx in contexts {
        match state.cache.token_standing(&ctx, token).await? {
            TokenStanding::Unknown => continue,
            standing => return Ok((ctx, standing)),
        }
    }
    Err(GatewayError::TokenNotCurrent)
}

/// The value of the query parameter `name`, decoded; `None` when absent or empty.
fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .filter(|value| !value.is_empty())
}
