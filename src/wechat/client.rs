//! The WeChat API client: fetches access tokens and JS-SDK tickets, and turns
//! WeChat's `errcode` answers into typed errors.
//!
//! It holds no cache and no retry policy of its own: deciding *when* to call WeChat
//! is the job of [`crate::cache`]. An `awc::Client` is bound to the thread that made
//! it, so each actix worker owns one `WechatClient`.

use std::time::Duration;

use actix_web::web;

use wechat_wire::{errcode, path, Answer, StableTokenRequest, CLIENT_CREDENTIAL};

use crate::configuration::{AppKind, AppSettings, TokenMode, WechatSettings};

/// The tickets WeChat hands out for page-side signatures, as the wire format names them.
pub use wechat_wire::TicketKind;

/// The endpoint a ticket comes from, as the metrics name it.
fn ticket_endpoint(app: AppKind, kind: TicketKind) -> &'static str {
    match (app, kind) {
        (AppKind::Official, TicketKind::Card) => "getticket_wx_card",
        (AppKind::Official, _) => "getticket",
        (AppKind::Work, TicketKind::Agent) => "agent_ticket",
        (AppKind::Work, _) => "get_jsapi_ticket",
    }
}

/// A value WeChat handed out, with its lifetime in seconds as WeChat stated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub value: String,
    pub expires_in: u64,
}

/// WeChat's failures, by what the operator or the cache should do about them.
/// Messages never contain a secret, token or ticket.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WechatError {
    #[error("WeChat rejected the access_token (errcode {0}): invalid, expired or not the latest")]
    InvalidCredential(i64),
    #[error("WeChat's daily call quota for this account is used up (errcode 45009)")]
    QuotaExceeded,
    #[error("WeChat is busy (errcode -1)")]
    Busy,
    #[error("WeChat does not know this appid (errcode 40013): check apps.*.appid")]
    InvalidAppId,
    #[error("WeChat rejected the app secret (errcode 40125): check apps.*.secret")]
    InvalidSecret,
    #[error(
        "this server's IP address is not on the account's IP whitelist (errcode 40164): \
         add it in the WeChat console (基本配置 → IP白名单)"
    )]
    IpNotWhitelisted,
    #[error("WeChat answered errcode {code}: {message}")]
    Api { code: i64, message: String },
    #[error("WeChat handed out the value it had issued before, too close to its expiry to use; asking again later")]
    StaleValue,
    #[error("{0:?} tickets do not exist for this kind of app")]
    NoSuchTicket(TicketKind),
    #[error("WeChat did not answer within {0} ms")]
    Timeout(u64),
    #[error("WeChat could not be reached: {0}")]
    Transport(String),
    #[error("WeChat's answer could not be understood: {0}")]
    Decode(String),
}

impl WechatError {
    /// Failures that say nothing about the request itself and may pass on a retry:
    /// WeChat busy or slow, and anything that went wrong below its API (a gateway's
    /// 5xx, an HTML page, a body cut short, a dropped connection), which is how an
    /// outage looks from here.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Busy | Self::Timeout(_) | Self::Transport(_) | Self::Decode(_) | Self::StaleValue
        )
    }

    /// What kind of failure, in a few fixed words: the `result` label of
    /// `wxjssdk_upstream_calls_total` (never the message, which would make a series per
    /// errmsg).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::InvalidCredential(_) => "invalid_credential",
            Self::QuotaExceeded => "quota",
            Self::Busy => "busy",
            Self::InvalidAppId => "invalid_appid",
            Self::InvalidSecret => "invalid_secret",
            Self::IpNotWhitelisted => "ip_not_whitelisted",
            Self::Api { .. } => "api_error",
            Self::StaleValue => "stale_value",
            Self::Timeout(_) => "timeout",
            Self::Transport(_) => "transport",
            Self::Decode(_) => "decode",
            Self::NoSuchTicket(_) => "no_such_ticket",
        }
    }

    fn from_errcode(code: i64, message: String) -> Self {
        use errcode::*;
        match code {
            INVALID_CREDENTIAL | INVALID_ACCESS_TOKEN | ACCESS_TOKEN_EXPIRED => {
                Self::InvalidCredential(code)
            }
            QUOTA_EXCEEDED => Self::QuotaExceeded,
            SYSTEM_BUSY => Self::Busy,
            INVALID_APPID => Self::InvalidAppId,
            INVALID_APPSECRET => Self::InvalidSecret,
            IP_NOT_WHITELISTED => Self::IpNotWhitelisted,
            _ => Self::Api { code, message },
        }
    }
}

/// Which field of a successful answer holds the value asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerValue {
    /// `access_token`: `/cgi-bin/token`, `/cgi-bin/stable_token`, WeChat Work's `gettoken`.
    AccessToken,
    /// `ticket`: the JS-SDK, card and agent tickets.
    Ticket,
}

/// The parser of WeChat's JSON answers, exactly as the client runs it on every body it
/// receives. Public so that the fuzzer (`fuzz/fuzz_targets/wechat_answer.rs`) drives
/// the production path: whatever bytes come back, the result is a value or a typed
/// error, never a panic.
pub fn parse_answer(body: &[u8], wanted: AnswerValue) -> Result<Fetched, WechatError> {
    let answer: Answer = serde_json::from_slice(body).map_err(decode_error)?;
    let value = match wanted {
        AnswerValue::AccessToken => answer.access_token.clone(),
        AnswerValue::Ticket => answer.ticket.clone(),
    };
    into_fetched(answer, value)
}

/// `answer`'s error, or `value` (taken from it) with its lifetime.
fn into_fetched(answer: Answer, value: Option<String>) -> Result<Fetched, WechatError> {
    let code = answer.code();
    if code != errcode::OK {
        let message = answer.errmsg.unwrap_or_default();
        return Err(WechatError::from_errcode(code, message));
    }
    match (value, answer.expires_in) {
        (Some(value), Some(expires_in)) if !value.is_empty() && expires_in > 0 => {
            Ok(Fetched { value, expires_in })
        }
        _ => Err(WechatError::Decode(
            "no value or expires_in in the answer".into(),
        )),
    }
}

/// The first pause before a retry; it doubles with each attempt, plus up to as much
/// again of random jitter, so that instances retrying together spread out.
const RETRY_BASE: Duration = Duration::from_millis(100);

pub struct WechatClient {
    http: awc::Client,
    api_base: String,
    work_api_base: String,
    timeout: Duration,
    retries: u32,
}

impl WechatClient {
    pub fn new(settings: &WechatSettings) -> Self {
        let timeout = settings.timeout;
        let http = awc::Client::builder()
            .timeout(timeout)
            .disable_redirects()
            .finish();
        Self {
            http,
            api_base: settings.api_base.as_str().trim_end_matches('/').to_string(),
            work_api_base: settings
                .work_api_base
                .as_str()
                .trim_end_matches('/')
                .to_string(),
            timeout,
            retries: settings.retries,
        }
    }

    /// Fetches an access token. For an official account in stable mode
    /// `force_refresh` mints a new one (WeChat allows that 20 times a day, 30 s apart);
    /// in classic mode every call does. A WeChat Work app gets its corp token.
    pub async fn access_token(
        &self,
        app: &AppSettings,
        mode: TokenMode,
        force_refresh: bool,
    ) -> Result<Fetched, WechatError> {
        let endpoint = match (app.kind, mode) {
            (AppKind::Work, _) => "gettoken",
            (AppKind::Official, TokenMode::Stable) => "stable_token",
            (AppKind::Official, TokenMode::Classic) => "token",
        };
        self.with_retries(endpoint, || {
            self.access_token_once(app, mode, force_refresh)
        })
        .await
    }

    async fn access_token_once(
        &self,
        app: &AppSettings,
        mode: TokenMode,
        force_refresh: bool,
    ) -> Result<Fetched, WechatError> {
        let secret = app.secret.expose();
        let answer = match (app.kind, mode) {
            (AppKind::Work, _) => {
                let query = [("corpid", app.appid.as_str()), ("corpsecret", secret)];
                self.get(&self.work_api_base, path::WORK_TOKEN, &query)
                    .await?
            }
            (AppKind::Official, TokenMode::Stable) => {
                let body = StableTokenRequest::new(&app.appid, secret, force_refresh);
                let url = format!("{}{}", self.api_base, path::STABLE_TOKEN);
                self.read(self.http.post(url).send_json(&body)).await?
            }
            (AppKind::Official, TokenMode::Classic) => {
                let query = [
                    ("grant_type", CLIENT_CREDENTIAL),
                    ("appid", app.appid.as_str()),
                    ("secret", secret),
                ];
                self.get(&self.api_base, path::TOKEN, &query).await?
            }
        };
        parse_answer(&answer, AnswerValue::AccessToken)
    }

    /// Fetches a ticket with a valid access token: the JS-SDK ticket (`wx.config`), the
    /// card api_ticket of an official account, or a WeChat Work agent ticket
    /// (`wx.agentConfig`).
    pub async fn ticket(
        &self,
        app: &AppSettings,
        kind: TicketKind,
        access_token: &str,
    ) -> Result<Fetched, WechatError> {
        self.with_retries(ticket_endpoint(app.kind, kind), || {
            self.ticket_once(app, kind, access_token)
        })
        .await
    }

    async fn ticket_once(
        &self,
        app: &AppSettings,
        kind: TicketKind,
        access_token: &str,
    ) -> Result<Fetched, WechatError> {
        let (base, request) = match app.kind {
            AppKind::Official => (&self.api_base, kind.official_account_request()),
            AppKind::Work => (&self.work_api_base, kind.work_request()),
        };
        let Some(request) = request else {
            return Err(WechatError::NoSuchTicket(kind));
        };
        let mut query = vec![("access_token", access_token)];
        query.extend(request.type_param.map(|value| ("type", value)));
        let answer = self.get(base, request.path, &query).await?;
        parse_answer(&answer, AnswerValue::Ticket)
    }

    async fn get(
        &self,
        base: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<web::Bytes, WechatError> {
        let request = self
            .http
            .get(format!("{base}{path}"))
            .query(&query)
            .map_err(decode_error)?;
        self.read(request.send()).await
    }

    /// Runs `call`, retrying transient failures up to `retries` times with exponential
    /// backoff and jitter. Errors WeChat means (bad secret, quota, rejected token) are
    /// returned at once: repeating the call cannot change them and would burn quota.
    /// Each attempt is counted under `endpoint` (the `endpoint` label of
    /// `wxjssdk_upstream_calls_total`).
    async fn with_retries<F, Fut>(
        &self,
        endpoint: &'static str,
        call: F,
    ) -> Result<Fetched, WechatError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Fetched, WechatError>>,
    {
        let mut attempt = 0;
        loop {
            let result = call().await;
            let outcome = result.as_ref().map_or_else(WechatError::kind, |_| "ok");
            crate::metrics::upstream_call(endpoint, outcome);
            match result {
                Err(e) if e.is_transient() && attempt < self.retries => {
                    let backoff = RETRY_BASE * 2u32.pow(attempt);
                    let jitter = backoff.mul_f64(rand::random::<f64>());
                    log::warn!(
                        "WeChat call failed ({e}); retrying in {} ms",
                        (backoff + jitter).as_millis()
                    );
                    tokio::time::sleep(backoff + jitter).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Sends a request and reads WeChat's answer, for [`parse_answer`]. Transport
    /// errors are described without the request URL, which carries the secret or the
    /// token.
    async fn read(&self, sending: awc::SendClientRequest) -> Result<web::Bytes, WechatError> {
        let mut response = sending.await.map_err(|e| match e {
            awc::error::SendRequestError::Timeout => {
                WechatError::Timeout(self.timeout.as_millis() as u64)
            }
            other => WechatError::Transport(transport_summary(&other)),
        })?;
        if !response.status().is_success() {
            return Err(WechatError::Transport(format!(
                "HTTP status {}",
                response.status()
            )));
        }
        // A body that cannot be read whole is the connection failing, not WeChat.
        response
            .body()
            .limit(64 * 1024)
            .await
            .map_err(|e| WechatError::Transport(format!("body: {e}")))
    }
}

fn decode_error(e: impl std::fmt::Display) -> WechatError {
    WechatError::Decode(e.to_string())
}

/// A description of a failed send that cannot leak the URL.
fn transport_summary(error: &awc::error::SendRequestError) -> String {
    use awc::error::SendRequestError as E;
    match error {
        E::Url(_) => "invalid api_base url".into(),
        E::Connect(e) => format!("connect: {e}"),
        E::Send(e) => format!("send: {e}"),
        E::Response(e) => format!("response: {e}"),
        E::Http(_) | E::H2(_) => "protocol error".into(),
        E::Timeout => "timeout".into(),
        E::TunnelNotSupported => "tunnel not supported".into(),
        E::Body(e) => format!("body: {e}"),
        E::Custom(..) => "client error".into(),
        _ => "request failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_has_a_fixed_kind() {
        for (error, kind) in [
            (WechatError::Busy, "busy"),
            (WechatError::Timeout(1000), "timeout"),
            (
                WechatError::Transport("connect: refused".into()),
                "transport",
            ),
            (WechatError::InvalidCredential(40001), "invalid_credential"),
            (WechatError::QuotaExceeded, "quota"),
            (
                WechatError::Api {
                    code: 48001,
                    message: "api unauthorized rid: 1234".into(),
                },
                "api_error",
            ),
        ] {
            assert_eq!(error.kind(), kind);
        }
    }

    fn answer(json: &str) -> Answer {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn errcodes_map_to_what_they_mean() {
        for (code, expected) in [
            (40001, WechatError::InvalidCredential(40001)),
            (40014, WechatError::InvalidCredential(40014)),
            (42001, WechatError::InvalidCredential(42001)),
            (45009, WechatError::QuotaExceeded),
            (-1, WechatError::Busy),
            (40013, WechatError::InvalidAppId),
            (40125, WechatError::InvalidSecret),
            (40164, WechatError::IpNotWhitelisted),
        ] {
            let a = answer(&format!(r#"{{"errcode":{code},"errmsg":"x"}}"#));
            assert_eq!(into_fetched(a, None), Err(expected));
        }
        let a = answer(r#"{"errcode":48001,"errmsg":"api unauthorized"}"#);
        assert_eq!(
            into_fetched(a, None),
            Err(WechatError::Api {
                code: 48001,
                message: "api unauthorized".into()
            })
        );
    }

    #[test]
    fn success_needs_value_and_lifetime() {
        let a = answer(r#"{"errcode":0,"errmsg":"ok","ticket":"T","expires_in":7200}"#);
        let ticket = a.ticket.clone();
        assert_eq!(
            into_fetched(a, ticket),
            Ok(Fetched {
                value: "T".into(),
                expires_in: 7200
            })
        );
        let a = answer(r#"{"access_token":"A"}"#);
        let token = a.access_token.clone();
        assert!(matches!(
            into_fetched(a, token),
            Err(WechatError::Decode(_))
        ));
    }

    #[test]
    fn parse_answer_takes_the_field_asked_for() {
        let body = br#"{"access_token":"A","ticket":"T","expires_in":7200}"#;
        let token = parse_answer(body, AnswerValue::AccessToken).unwrap();
        assert_eq!(token.value, "A");
        assert_eq!(parse_answer(body, AnswerValue::Ticket).unwrap().value, "T");
        for garbage in [
            &b""[..],
            b"[]",
            b"{",
            b"<html>502</html>",
            b"{\"errcode\":1e999}",
        ] {
            assert!(matches!(
                parse_answer(garbage, AnswerValue::Ticket),
                Err(WechatError::Decode(_))
            ));
        }
    }

    #[test]
    fn ip_whitelist_error_tells_the_operator_what_to_do() {
        assert!(WechatError::IpNotWhitelisted
            .to_string()
            .contains("IP whitelist"));
    }
}
