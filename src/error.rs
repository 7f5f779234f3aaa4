//! Every error a client can see, and the one place where errors become HTTP answers:
//! `{"error": {"code": "...", "message": "...", "request_id": "..."}}` with a fitting
//! status; the request id ([`crate::request_id`]) is the one the answer's
//! `X-Request-Id` and the request's log lines carry.
//!
//! Messages never carry a secret, token or ticket. Who reads them decides how much
//! they say: a page (anyone) gets the code and what it can do about it
//! ([`ApiError::public_message`]), never WeChat's `errmsg`, a configuration key or the
//! store's error text; the log, and the company's own backends on admin-authenticated
//! routes ([`Detailed`]), get the whole story (the error's `Display`).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::cache::CacheError;
use crate::log_throttle::warn_throttled;
use crate::request_id::{self, RequestId};
use crate::wechat::signature::PageUrlError;
use crate::wechat::WechatError;

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_SECS: &str = "1";

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("the `url` parameter is required (query, JSON body or form field)")]
    MissingUrl,
    #[error("the `url` parameter is invalid: {0}")]
    InvalidUrl(#[from] PageUrlError),
    #[error("the request body is invalid: {0}")]
    InvalidBody(String),
    #[error("the `{0}` parameter is required")]
    MissingParameter(&'static str),
    #[error("the query string is invalid: {0}")]
    InvalidQuery(String),
    #[error("the signature does not match: this request does not come from WeChat, or the configured token differs")]
    InvalidSignature,
    #[error("the request's `timestamp` is not a number of seconds within {0} s of this server's clock: a replayed or delayed request (or a clock off by that much)")]
    StaleRequest(u64),
    #[error("no app named `{0}` is configured")]
    UnknownApp(String),
    #[error("no app serves the short routes: name one `default`, or use /v1/apps/NAME/...")]
    NoDefaultApp,
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("the request body did not arrive within {0} ms")]
    BodyTimeout(u64),
    #[error("no such route")]
    NotFound,
    #[error("this app has no server token: only official accounts' server URLs are verified here")]
    NoServerToken,
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    #[error("WeChat failed: {0}")]
    Upstream(WechatError),
    #[error("the service is temporarily unavailable: {0}")]
    Unavailable(String),
    /// Renewals back off after a failure, and nothing usable is cached meanwhile.
    #[error("the service is temporarily unavailable: {message}")]
    BackingOff {
        message: String,
        retry_after_secs: u64,
    },
    /// The page's host (not a secret: the page sent it) is outside `allowed_domains`.
    #[error("the page's host `{0}` is not among this app's allowed_domains (its JS interface safe domains)")]
    DomainNotAllowed(String),
    #[error("this route needs `Authorization: Bearer KEY` with one of the configured admin keys")]
    Unauthorized,
    #[error("{what}; retry in {retry_after_secs} s")]
    RateLimited { what: String, retry_after_secs: u64 },
}

impl ApiError {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::MissingUrl => "missing_url",
            Self::InvalidUrl(_) => "invalid_url",
            Self::InvalidBody(_) => "invalid_body",
            Self::MissingParameter(_) => "missing_parameter",
            Self::InvalidQuery(_) => "invalid_query",
            Self::InvalidSignature => "invalid_signature",
            Self::StaleRequest(_) => "stale_request",
            Self::UnknownApp(_) | Self::NoDefaultApp => "unknown_app",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::BodyTimeout(_) => "request_timeout",
            Self::NotFound => "not_found",
            Self::NoServerToken => "no_server_token",
            Self::Unsupported(_) => "unsupported",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Upstream(_) => "upstream_error",
            Self::Unavailable(_) | Self::BackingOff { .. } => "unavailable",
            Self::DomainNotAllowed(_) => "domain_not_allowed",
            Self::Unauthorized => "unauthorized",
            Self::RateLimited { .. } => "rate_limited",
        }
    }
}

impl ApiError {
    /// What an anonymous caller is told: what happened and what it can do, without
    /// the internals (WeChat's answer, configuration keys, the store's errors) that
    /// the log and [`Detailed`] answers carry.
    pub(crate) fn public_message(&self) -> String {
        match self {
            Self::Upstream(w) => match w {
                WechatError::InvalidAppId
                | WechatError::InvalidSecret
                | WechatError::IpNotWhitelisted
                | WechatError::InvalidCredential(_) => {
                    "WeChat refused this app's credentials; the operator has been told".into()
                }
                WechatError::QuotaExceeded => {
                    "WeChat's daily call quota for this app is used up; the operator has been told"
                        .into()
                }
                _ => "WeChat answered with an error; the operator has been told".into(),
            },
            Self::Unavailable(_) => "the service is temporarily unavailable; retry shortly".into(),
            Self::BackingOff {
                retry_after_secs, ..
            } => format!(
                "the service is temporarily unavailable: WeChat is failing and is asked again \
                 in {retry_after_secs} s; retry then"
            ),
            Self::DomainNotAllowed(host) => format!(
                "the page's host `{host}` is not among this app's JS interface safe domains"
            ),
            Self::NoDefaultApp => "no app serves the short routes: use /v1/apps/NAME/...".into(),
            other => other.to_string(),
        }
    }

    /// The HTTP answer, with the public message or (`detailed`) the whole one.
    fn render(&self, detailed: bool) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            warn_throttled(self.code(), || {
                format!("{} {}: {self}", status.as_u16(), self.code())
            });
        }
        let mut response = HttpResponse::build(status);
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        match self {
            Self::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
            }
            Self::RateLimited {
                retry_after_secs, ..
            }
            | Self::BackingOff {
                retry_after_secs, ..
            } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            // The rest of the body is still on its way: the connection cannot be reused.
            Self::BodyTimeout(_) => {
                response.force_close();
            }
            // RFC 6750: a 401 says which scheme would do; no detail on what was wrong.
            Self::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"wx-jssdk\""));
            }
            _ => {}
        }
        let message = match detailed {
            true => self.to_string(),
            false => self.public_message(),
        };
        response.json(ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message,
                request_id: request_id::current(),
            },
        })
    }
}

/// An error answered to a caller that proved it is one of the company's backends (an
/// admin key): the whole message, as the log has it, since that caller is the
/// operator's own and needs it to act.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(crate) struct Detailed(#[from] pub ApiError);

impl From<CacheError> for Detailed {
    fn from(e: CacheError) -> Self {
        Self(e.into())
    }
}

impl ResponseError for Detailed {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        self.0.render(true)
    }
}

impl From<CacheError> for ApiError {
    fn from(e: CacheError) -> Self {
        match e {
            // WeChat timing out or busy is passing: the client may retry shortly.
            CacheError::Upstream(ref w) if w.is_transient() => Self::Unavailable(e.to_string()),
            CacheError::Upstream(w) => Self::Upstream(w),
            CacheError::BackingOff { retry_after, .. } => Self::BackingOff {
                retry_after_secs: retry_after.as_secs().max(1),
                message: e.to_string(),
            },
            CacheError::Store(_) | CacheError::LockWaitTimeout(_) => {
                Self::Unavailable(e.to_string())
            }
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
    /// Absent only outside a request (unit tests).
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<RequestId>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::MissingUrl
            | Self::InvalidUrl(_)
            | Self::InvalidBody(_)
            | Self::MissingParameter(_)
            | Self::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            Self::InvalidSignature | Self::StaleRequest(_) => StatusCode::UNAUTHORIZED,
            Self::UnknownApp(_) | Self::NoDefaultApp | Self::NotFound | Self::NoServerToken => {
                StatusCode::NOT_FOUND
            }
            Self::Unsupported(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Unavailable(_) | Self::BackingOff { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::DomainNotAllowed(_) => StatusCode::FORBIDDEN,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.render(false)
    }
}
