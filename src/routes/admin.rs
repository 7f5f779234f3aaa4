//! The central access_token for the company's other backends (WeChat's recommended
//! "central control server"): they read the app's token here instead of fetching their
//! own, which would spend the daily quota and, in classic mode, kill this service's
//! token and each other's. When WeChat refuses a token, or an operator knows it rotated
//! a ticket early, they say so here, and the value is replaced once for the whole
//! deployment. Open only to `Authorization: Bearer KEY` with a key from `admin.keys`;
//! without keys these routes do not exist.
//!
//! Errors here carry their whole message ([`Detailed`]): the callers are the
//! operator's own backends, which need WeChat's answer to act on it.
//!
//! Tickets are never answered here, only invalidated: a ticket signs for any page of
//! the app's domains, so an admin key alone does not get it. (The gateway answers them
//! as WeChat does, to holders of a current token, who could ask WeChat anyway.)

use std::time::Instant;

use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::Serialize;

use super::{AppState, SelectedApp};
use crate::access::guesses;
use crate::cache::{Context, Credential, Invalidation, Record, INVALIDATE_SPACING};
use crate::clock::now_ms;
use crate::configuration::AppKind;
use crate::error::{ApiError, Detailed};
use crate::limits::read_body;
use crate::wechat::WechatClient;

/// `GET /v1/apps/{name}/access_token`: the shared token, as the signing path uses it.
pub(crate) async fn access_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    wechat: web::Data<WechatClient>,
) -> Result<HttpResponse, Detailed> {
    let ctx = authorized_context(&req, &state, wechat).await?;
    let token = state.cache.access_token(&ctx).await?;
    Ok(answer(Credential::AccessToken, None, &token))
}

/// The route of `POST /v1/apps/{name}/{credential}/invalidate`.
pub(crate) fn invalidation(credential: Credential) -> actix_web::Route {
    web::post().to(
        move |req: HttpRequest,
              payload: web::Payload,
              state: web::Data<AppState>,
              wechat: web::Data<WechatClient>| {
            invalidate(req, payload, state, wechat, credential)
        },
    )
}

/// `POST /v1/apps/{name}/access_token/invalidate` with `{"access_token": "..."}`, or
/// `.../jsapi_ticket/invalidate` (`card_ticket`, `agent_ticket`) with `{"ticket":
/// "..."}`: the caller says WeChat refused that value (errcode 40001 or 42001 for a
/// token). It is replaced if it is still the current one; otherwise the current one is
/// answered (a token), or said to be current (a ticket).
async fn invalidate(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    wechat: web::Data<WechatClient>,
    credential: Credential,
) -> Result<HttpResponse, Detailed> {
    let ctx = authorized_context(&req, &state, wechat).await?;
    if !exists_for(ctx.app.kind, credential) {
        return Err(Detailed(ApiError::Unsupported(match credential {
            Credential::CardTicket => "card tickets exist for official accounts only",
            _ => "agent tickets exist for WeChat Work apps only",
        })));
    }
    let body = read_body(&req, payload).await?;
    let value = invalidated_value(&body, field(credential))?;
    let limited = |why: String, retry_after: std::time::Duration| ApiError::RateLimited {
        what: why,
        retry_after_secs: retry_after.as_secs().max(1),
    };
    match state.cache.invalidate(&ctx, credential, &value).await? {
        Invalidation::Replaced(new) => Ok(answer(credential, Some(true), &new)),
        Invalidation::NotCurrent(current) => Ok(answer(credential, Some(false), &current)),
        Invalidation::TooSoon { retry_after } => Err(Detailed(limited(
            format!(
                "this app's {} was already invalidated in the last {spacing} s (once per \
                 {spacing} s per app), and the value sent is still the current one",
                credential.name(),
                spacing = INVALIDATE_SPACING.as_secs()
            ),
            retry_after,
        ))),
        Invalidation::DailyLimit { retry_after } => Err(Detailed(limited(
            format!(
                "today's invalidations of this app's {} are spent (cache.invalidations_per_day; \
                 the day is China's, UTC+8)",
                credential.name()
            ),
            retry_after,
        ))),
    }
}

/// Whether an app of `kind` has `credential`.
fn exists_for(kind: AppKind, credential: Credential) -> bool {
    match credential {
        Credential::AccessToken | Credential::JsapiTicket => true,
        Credential::CardTicket => kind == AppKind::Official,
        Credential::AgentTicket => kind == AppKind::Work,
    }
}

/// The body field that names the refused value.
fn field(credential: Credential) -> &'static str {
    match credential {
        Credential::AccessToken => "access_token",
        _ => "ticket",
    }
}

/// The `field` of a `{"field": "..."}` body. Errors say where the body is wrong but
/// never quote it: it holds a token or ticket.
fn invalidated_value(body: &[u8], field: &str) -> Result<String, ApiError> {
    let expected = format!(r#"send {{"{field}": "..."}}"#);
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| {
            let problem = match e.classify() {
                serde_json::error::Category::Data => "is not a JSON object",
                _ => "is not JSON",
            };
            ApiError::InvalidBody(format!(
                "the body {problem} (line {}, column {}): {expected}",
                e.line(),
                e.column()
            ))
        })?;
    match object.remove(field) {
        Some(serde_json::Value::String(value)) if !value.is_empty() => Ok(value),
        _ => Err(ApiError::InvalidBody(format!(
            "`{field}` is missing, empty or not a string: {expected}"
        ))),
    }
}

/// Checks the key before anything else (an unknown app included: names are not
/// revealed to callers without a key), then selects the app.
async fn authorized_context(
    req: &HttpRequest,
    state: &AppState,
    wechat: web::Data<WechatClient>,
) -> Result<Context, ApiError> {
    authenticate(req, state)?;
    let app = SelectedApp::extract(req).await?;
    Ok(Context {
        app: app.0,
        wechat: wechat.into_inner(),
    })
}

/// Whether `req` carries one of the admin keys (`Authorization: Bearer KEY`). A client
/// whose keys failed too often lately is refused (429) before its key is compared; a
/// request without `Authorization` is refused (401) without counting as a guess.
pub(super) fn authenticate(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let client = state.client_of(req);
    let now = Instant::now();
    if let Err(retry_after) = state.failed_authentications.check(client, now) {
        return Err(ApiError::RateLimited {
            what: format!(
                "too many failed admin authentications from this client ({} within {} s)",
                guesses::MAX_FAILURES,
                guesses::WINDOW.as_secs()
            ),
            retry_after_secs: retry_after.as_secs_f64().ceil().max(1.0) as u64,
        });
    }
    let Some(authorization) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized);
    };
    let presented = authorization.to_str().ok().and_then(bearer);
    if presented.is_some_and(|key| state.admin.accepts(key)) {
        return Ok(());
    }
    state.failed_authentications.record(client, now);
    Err(ApiError::Unauthorized)
}

/// The key of `Bearer KEY` (the scheme in any case, as RFC 7235 has it).
fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, key) = authorization.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

#[derive(Serialize)]
struct Answer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    invalidated: Option<bool>,
    /// The token; never a ticket.
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<&'a str>,
    /// Whole seconds the value may still be used (WeChat's lifetime less the safety margin).
    expires_in: u64,
}

fn answer(credential: Credential, invalidated: Option<bool>, current: &Record) -> HttpResponse {
    let token = (credential == Credential::AccessToken).then_some(current.value.as_str());
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(Answer {
            invalidated,
            access_token: token,
            expires_in: current.usable_secs(now_ms()),
        })
}

/// Whether the admin routes exist: only with at least one key configured.
pub(crate) fn enabled(ctx: &actix_web::guard::GuardContext<'_>) -> bool {
    ctx.app_data::<web::Data<AppState>>()
        .is_some_and(|state| state.admin.is_configured())
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn the_bearer_key_is_read_with_the_scheme_in_any_case() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearerabc"), None);
    }
}
