//! WeChat's token endpoints, answered from the shared cache: an SDK pointed here gets
//! the deployment's token instead of minting its own (which, in classic mode, would
//! kill everyone else's 5 minutes later, and in any mode spends the daily quota).
//!
//! Who may have a token: whoever holds the app's secret, exactly as with WeChat. The
//! secret is compared in constant time; a wrong one is answered as WeChat answers it.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use wechat_wire::{Answer, StableTokenRequest, CLIENT_CREDENTIAL};

use super::{counted, credential_answer, query_param, GatewayError};
use crate::cache::{Context, Credential, Invalidation, Record};
use crate::clock::now_ms;
use crate::configuration::{AppKind, AppSettings};
use crate::error::ApiError;
use crate::limits::read_body;
use crate::routes::AppState;
use crate::wechat::WechatClient;

/// `GET /cgi-bin/token?grant_type=client_credential&appid=A&secret=S`.
pub(super) async fn classic(
    req: HttpRequest,
    state: web::Data<AppState>,
    wechat: web::Data<WechatClient>,
) -> Result<HttpResponse, GatewayError> {
    let query = |name| query_param(req.query_string(), name);
    let app = official_app(
        &state,
        query("grant_type").as_deref(),
        query("appid"),
        query("secret"),
    );
    counted("token", shared_token(&state, wechat, app).await)
}

/// `POST /cgi-bin/stable_token` with `{"grant_type","appid","secret","force_refresh"}`.
/// `force_refresh: true` asks for the token to be replaced: it goes through the same
/// coordinated, rate-limited invalidation as `POST .../access_token/invalidate`, and
/// beyond its limits the current token is answered.
pub(super) async fn stable(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    wechat: web::Data<WechatClient>,
) -> Result<HttpResponse, GatewayError> {
    let answer = async {
        let body = read_body(&req, payload).await.map_err(|e| match e {
            ApiError::BodyTooLarge(limit) => GatewayError::BodyTooLarge(limit as u64),
            _ => GatewayError::DataFormat("the body could not be read"),
        })?;
        let request: StableTokenRequest = serde_json::from_slice(&body)
            .map_err(|_| GatewayError::DataFormat("the body is not the JSON expected"))?;
        let app = official_app(
            &state,
            request.grant_type.as_deref(),
            request.appid.map(String::from),
            request.secret.map(String::from),
        )?;
        let ctx = context(app, wechat);
        let mut token = state.cache.access_token(&ctx).await?;
        if request.force_refresh == Some(true) {
            token = forced_refresh(&state, &ctx, token).await?;
        }
        Ok(token_answer(&ctx.app, &token))
    };
    counted("stable_token", answer.await)
}

/// `GET /cgi-bin/gettoken?corpid=C&corpsecret=S` (WeChat Work): the token of the
/// corp's application whose secret it is.
pub(super) async fn work(
    req: HttpRequest,
    state: web::Data<AppState>,
    wechat: web::Data<WechatClient>,
) -> Result<HttpResponse, GatewayError> {
    let query = |name| query_param(req.query_string(), name);
    let app = work_app(&state, query("corpid"), query("corpsecret"));
    counted("gettoken", shared_token(&state, wechat, app).await)
}

/// The shared token of `app` (when the caller proved to be entitled to it), as
/// WeChat answers it.
async fn shared_token(
    state: &AppState,
    wechat: web::Data<WechatClient>,
    app: Result<Arc<AppSettings>, GatewayError>,
) -> Result<HttpResponse, GatewayError> {
    let ctx = context(app?, wechat);
    let token = state.cache.access_token(&ctx).await?;
    Ok(token_answer(&ctx.app, &token))
}

fn context(app: Arc<AppSettings>, wechat: web::Data<WechatClient>) -> Context {
    Context {
        app,
        wechat: wechat.into_inner(),
    }
}

/// The official account `appid` names, if `secret` is its secret; checked in WeChat's
/// order (grant type, appid present, secret present, appid known, secret right).
fn official_app(
    state: &AppState,
    grant_type: Option<&str>,
    appid: Option<String>,
    secret: Option<String>,
) -> Result<Arc<AppSettings>, GatewayError> {
    if grant_type != Some(CLIENT_CREDENTIAL) {
        return Err(GatewayError::GrantType);
    }
    let appid = appid
        .filter(|a| !a.is_empty())
        .ok_or(GatewayError::AppIdMissing)?;
    let secret = secret
        .filter(|s| !s.is_empty())
        .ok_or(GatewayError::SecretMissing)?;
    let app = state
        .apps
        .all()
        .find(|app| app.kind == AppKind::Official && app.appid == appid)
        .ok_or(GatewayError::UnknownApp)?;
    match app.secret.matches(&secret) {
        true => Ok(app.clone()),
        false => Err(GatewayError::WrongSecret),
    }
}

/// The WeChat Work application of the corp `corpid` whose secret `secret` is. Every
/// application of the corp is compared (in constant time), so that the time taken
/// does not tell which one nearly matched.
fn work_app(
    state: &AppState,
    corpid: Option<String>,
    secret: Option<String>,
) -> Result<Arc<AppSettings>, GatewayError> {
    let corpid = corpid.ok_or(GatewayError::AppIdMissing)?;
    let secret = secret.ok_or(GatewayError::SecretMissing)?;
    let corp: Vec<&Arc<AppSettings>> = state
        .apps
        .all()
        .filter(|app| app.kind == AppKind::Work && app.appid == corpid)
        .collect();
    if corp.is_empty() {
        return Err(GatewayError::UnknownApp);
    }
    let matching: Vec<&&Arc<AppSettings>> = corp
        .iter()
        .filter(|app| app.secret.matches(&secret))
        .collect();
    matching
        .first()
        .map(|app| Arc::clone(app))
        .ok_or(GatewayError::WrongCorpSecret)
}

/// A forced refresh: the current token is invalidated for the whole deployment, within
/// the invalidation limits; beyond them (or when another caller just replaced it) the
/// current token is the answer.
async fn forced_refresh(
    state: &AppState,
    ctx: &Context,
    current: Arc<Record>,
) -> Result<Arc<Record>, GatewayError> {
    let invalidation = state
        .cache
        .invalidate(ctx, Credential::AccessToken, &current.value)
        .await?;
    Ok(match invalidation {
        Invalidation::Replaced(new) | Invalidation::NotCurrent(new) => new,
        Invalidation::TooSoon { .. } | Invalidation::DailyLimit { .. } => {
            log::info!(
                "gateway: a forced refresh of {}'s access_token was beyond the invalidation limits; the current token was answered",
                ctx.app.cache_id()
            );
            current
        }
    })
}

/// WeChat's token answer: `{"access_token","expires_in"}`, with `errcode: 0` for
/// WeChat Work as it states it.
fn token_answer(app: &AppSettings, token: &Record) -> HttpResponse {
    let answer = Answer::access_token(token.value.clone(), token.usable_secs(now_ms()));
    credential_answer(match app.kind {
        AppKind::Official => answer,
        AppKind::Work => answer.ok(),
    })
}
