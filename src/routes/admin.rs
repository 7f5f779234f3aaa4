//! The central access_token for the company's other backends (WeChat's recommended
//! "central control server"): they read the app's token here instead of fetching their
//! own, which would spend the daily quota and, in classic mode, kill this service's
//! token and each other's. Open only to `Authorization: Bearer KEY` with a key from
//! `admin.keys`; without keys these routes do not exist.

use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::Serialize;

use super::{AppState, SelectedApp};
use crate::cache::{now_ms, Context, Invalidation, Record};
use crate::error::ApiError;
use crate::limits::read_body;
use crate::wechat::WechatClient;

/// `GET /v1/apps/{name}/access_token`: the shared token, as the signing path uses it.
pub async fn access_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    wechat: web::Data<WechatClient>,
) -> Result<HttpResponse, ApiError> {
    let ctx = authorized_context(&req, &state, wechat).await?;
    let token = state.cache.access_token(&ctx).await?;
    Ok(token_answer(None, &token))
}

/// `POST /v1/apps/{name}/access_token/invalidate` with `{"access_token": "..."}`: the
/// caller says WeChat refused that token (errcode 40001 or 42001). It is replaced if
/// it is still the current one; otherwise the current one is answered.
pub async fn invalidate(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    wechat: web::Data<WechatClient>,
) -> Result<HttpResponse, ApiError> {
    let ctx = authorized_context(&req, &state, wechat).await?;
    let body = read_body(payload).await?;
    let token = invalidated_token(&body)?;
    match state.cache.invalidate_access_token(&ctx, &token).await? {
        Invalidation::Replaced(token) => Ok(token_answer(Some(true), &token)),
        Invalidation::NotCurrent(token) => Ok(token_answer(Some(false), &token)),
        Invalidation::TooSoon { retry_after } => Err(ApiError::RateLimited {
            what: "this app's access_token was already invalidated in the last 30 s (once per \
                   30 s per app), and the token sent is still the current one",
            retry_after_secs: retry_after.as_secs(),
        }),
    }
}

/// The `access_token` of a `{"access_token": "..."}` body. Errors say where the body
/// is wrong but never quote it: it holds a token.
fn invalidated_token(body: &[u8]) -> Result<String, ApiError> {
    const EXPECTED: &str = r#"send {"access_token": "..."}"#;
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| {
            let problem = match e.classify() {
                serde_json::error::Category::Data => "is not a JSON object",
                _ => "is not JSON",
            };
            ApiError::InvalidBody(format!(
                "the body {problem} (line {}, column {}): {EXPECTED}",
                e.line(),
                e.column()
            ))
        })?;
    match object.remove("access_token") {
        Some(serde_json::Value::String(token)) if !token.is_empty() => Ok(token),
        _ => Err(ApiError::InvalidBody(format!(
            "`access_token` is missing, empty or not a string: {EXPECTED}"
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
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer);
    if !presented.is_some_and(|key| state.admin.accepts(key)) {
        return Err(ApiError::Unauthorized);
    }
    let app = SelectedApp::extract(req).await?;
    Ok(Context {
        app: app.0,
        wechat: wechat.into_inner(),
    })
}

/// The key of `Bearer KEY` (the scheme in any case, as RFC 7235 has it).
fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, key) = authorization.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

#[derive(Serialize)]
struct TokenAnswer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    invalidated: Option<bool>,
    access_token: &'a str,
    /// Whole seconds the token may still be used (WeChat's lifetime less the safety margin).
    expires_in: u64,
}

fn token_answer(invalidated: Option<bool>, token: &Record) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(TokenAnswer {
            invalidated,
            access_token: &token.value,
            expires_in: token.ttl_ms(now_ms()) / 1000,
        })
}

/// Whether the admin routes exist: only with at least one key configured.
pub fn enabled(ctx: &actix_web::guard::GuardContext<'_>) -> bool {
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
