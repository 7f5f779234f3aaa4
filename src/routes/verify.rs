//! The account's server URL: WeChat's one-time verification (GET with `echostr`) and
//! the message pushes that follow once the URL is enabled (POST).

use std::time::Duration;

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::params::from_query;
use super::{AppState, SelectedApp};
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

    /// Checks the signature WeChat puts on every request to the server URL, after the
    /// replay window (`max_age`, if any): a stale request costs no hashing.
    fn verify(&self, app: &SelectedApp, max_age: Option<Duration>) -> Result<(), ApiError> {
        let signature = required(&self.signature, "signature")?;
        let timestamp = required(&self.timestamp, "timestamp")?;
        let nonce = required(&self.nonce, "nonce")?;
        let now_secs = crate::clock::now_secs();
        if let Some(max_age) = max_age.map(|d| d.as_secs()) {
            if !is_fresh(timestamp, now_secs, max_age) {
                return Err(ApiError::StaleRequest(max_age));
            }
        }
        let token = app.0.token.as_ref().ok_or(ApiError::NoServerToken)?;
        if verify_server_signature(token.expose(), timestamp, nonce, signature) {
            Ok(())
        } else {
            Err(ApiError::InvalidSignature)
        }
    }
}

/// Whether `timestamp` (decimal seconds, as WeChat sends it) is within `max_age_secs`
/// of `now_secs`, in the past or the future (clocks differ both ways). Anything that
/// is not a plain number of seconds is not fresh.
fn is_fresh(timestamp: &str, now_secs: u64, max_age_secs: u64) -> bool {
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    timestamp
        .parse::<u64>()
        .is_ok_and(|sent| sent.abs_diff(now_secs) <= max_age_secs)
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
pub(crate) async fn server_url_check(
    app: SelectedApp,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = SignedQuery::parse(&req)?;
    let echostr = required(&query.echostr, "echostr")?.to_string();
    query.verify(&app, state.verify_max_age)?;
    Ok(plain_text(echostr))
}

/// A message or event push. This service answers none of them, and `success` tells
/// WeChat so (anything else within 5 s makes users see "service unavailable").
pub(crate) async fn message_push(
    app: SelectedApp,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    SignedQuery::parse(&req)?.verify(&app, state.verify_max_age)?;
    // The message is not handled here, but it is read, within the body's size and
    // time limits, so that a slow or huge body cannot hold the connection.
    crate::limits::read_body(&req, payload).await?;
    Ok(plain_text("success".to_string()))
}

#[cfg(test)]
mod tests {
    use super::is_fresh;

    #[test]
    fn the_replay_window_includes_its_bounds_both_ways_and_only_numbers() {
        let now = 1_700_000_000;
        for fresh in ["1700000000", "1699999700", "1700000300", "01700000000"] {
            assert!(is_fresh(fresh, now, 300), "{fresh}");
        }
        for stale in [
            "1699999699",
            "1700000301",
            "0",
            "",
            "-1700000000",
            "+1700000000",
            "1700000000.5",
            " 1700000000",
            "abc",
            "99999999999999999999999",
        ] {
            assert!(!is_fresh(stale, now, 300), "{stale}");
        }
    }
}
