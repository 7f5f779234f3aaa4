//! Every other call under WeChat's API roots, forwarded to WeChat for holders of a
//! current token: the method, the query, the body and its content type go up, WeChat's
//! status, content type and body come back, both bodies streamed (a media upload or
//! download is not held in memory), within `gateway.max_body_bytes` and
//! `gateway.timeout_ms`.
//!
//! **Not an open proxy.** A call is forwarded only when its `access_token` is a
//! current token of a configured app (or the one it replaced, while WeChat still takes
//! it); otherwise it is answered 40001 here and WeChat never sees it. Only WeChat's
//! API bases are ever called, and only at the path the caller asked for under them.
//!
//! **Self-healing.** When WeChat answers 40001, 40014 or 42001 while the token is still
//! the deployment's current one, the token is invalidated the coordinated way (one new
//! token for the deployment, within the daily budgets) and the call is sent once more
//! with the new token, marked `X-WxJssdk-Retried: 1`. Only a body of at most
//! [`REPLAYABLE_BYTES`] is kept to be sent again; a larger one is streamed and its
//! refusal passed back (the invalidation still happens, so the caller's next token is
//! the new one). A refusal is found by reading at most [`PEEKED_BYTES`] of a JSON or
//! text answer: WeChat's error answers are short, and a long answer is no refusal.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::stream::{self, LocalBoxStream};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::time::Instant;

use super::{holder, query_param, GatewayError};
use crate::cache::{Context, Credential, Invalidation, Record, TokenStanding};
use crate::configuration::{AppKind, GatewaySettings, WechatSettings};
use crate::metrics;
use crate::routes::AppState;
use crate::wechat::WechatClient;

/// The forwarded roots: those of WeChat's API whose calls take the `access_token` as a
/// query parameter.
pub(crate) const ROOTS: [&str; 7] = [
    "cgi-bin",
    "datacube",
    "card",
    "customservice",
    "merchant",
    "wxa",
    "shakearound",
];

/// The route of forwarded calls: any path under one of [`ROOTS`].
pub(super) const PATTERN: &str =
    "/{root:cgi-bin|datacube|card|customservice|merchant|wxa|shakearound}/{path:.*}";

/// Request bodies up to this size are read whole before forwarding, so that a call can
/// be sent again after a refused token; larger ones are streamed and never retried.
pub(crate) const REPLAYABLE_BYTES: usize = 1024 * 1024;

/// How much of a JSON or text answer is read before deciding whether it is WeChat
/// refusing the token (`{"errcode":40001,"errmsg":"… rid: …"}` is well under it).
const PEEKED_BYTES: usize = 1024;

/// The errcodes that say the token is no longer good.
const REFUSED_TOKEN: [i64; 3] = [
    wechat_wire::errcode::INVALID_CREDENTIAL,
    wechat_wire::errcode::INVALID_ACCESS_TOKEN,
    wechat_wire::errcode::ACCESS_TOKEN_EXPIRED,
];

type BoxError = Box<dyn std::error::Error>;
type Chunks = LocalBoxStream<'static, Result<Bytes, BoxError>>;

/// The forwarding client of one worker (an awc client is bound to its thread), with
/// WeChat's two API bases and the gateway's bounds.
pub(crate) struct Upstream {
    http: awc::Client,
    official_base: String,
    work_base: String,
    max_body: u64,
    timeout: Duration,
}

impl Upstream {
    pub(crate) fn new(wechat: &WechatSettings, gateway: &GatewaySettings) -> Self {
        let base = |url: &url::Url| url.as_str().trim_end_matches('/').to_string();
        Self {
            http: awc::Client::builder()
                .timeout(gateway.timeout)
                .disable_redirects()
                .finish(),
            official_base: base(&wechat.api_base),
            work_base: base(&wechat.work_api_base),
            max_body: gateway.max_body_bytes,
            timeout: gateway.timeout,
        }
    }

    fn base(&self, kind: AppKind) -> &str {
        match kind {
            AppKind::Official => &self.official_base,
            AppKind::Work => &self.work_base,
        }
    }
}

/// `GET` or `POST` of any path under [`ROOTS`] but the token and ticket endpoints.
pub(super) async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    wechat: web::Data<WechatClient>,
    upstream: web::Data<Upstream>,
) -> Result<HttpResponse, GatewayError> {
    let root = ROOTS
        .into_iter()
        .find(|root| req.match_info().get("root") == Some(root))
        .unwrap_or("cgi-bin");
    let forwarded = Call::new(&req, &upstream)
        .forward(payload, &state, wechat)
        .await;
    let result = match &forwarded {
        Ok((_, outcome)) => outcome.label(),
        Err(e) => e.kind(),
    };
    metrics::gateway_request(root, result);
    forwarded.map(|(response, _)| response)
}

/// How a forwarded call ended, for the metrics.
enum Outcome {
    /// WeChat's answer, passed back.
    Answered,
    /// WeChat refused the token; the call was sent again with the new one.
    Retried,
    /// WeChat refused the token and the call could not be sent again: passed back.
    Refused,
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Self::Answered => "forwarded",
            Self::Retried => "retried",
            Self::Refused => "refused_token",
        }
    }
}

/// One call being forwarded.
struct Call<'a> {
    req: &'a HttpRequest,
    upstream: &'a Upstream,
    /// The whole exchange ends by then, bodies included.
    deadline: Instant,
}

impl<'a> Call<'a> {
    fn new(req: &'a HttpRequest, upstream: &'a Upstream) -> Self {
        Self {
            req,
            upstream,
            deadline: Instant::now() + upstream.timeout,
        }
    }

    async fn forward(
        &self,
        payload: web::Payload,
        state: &AppState,
        wechat: web::Data<WechatClient>,
    ) -> Result<(HttpResponse, Outcome), GatewayError> {
        let query = self.req.query_string();
        let token = query_param(query, "access_token").ok_or(GatewayError::TokenMissing)?;
        let (ctx, standing) = holder(state, wechat, &token, None).await?;
        if self
            .declared_length()
            .is_some_and(|n| n > self.upstream.max_body)
        {
            return Err(GatewayError::BodyTooLarge(self.upstream.max_body));
        }
        let base = self.upstream.base(ctx.app.kind);
        let (body, replayable) = self.read_body(payload).await?;
        let answer = self.send(base, query, body).await?;
        let refused = answer.refused_token();
        if !refused || !matches!(standing, TokenStanding::Current) {
            let outcome = if refused {
                Outcome::Refused
            } else {
                Outcome::Answered
            };
            return Ok((answer.respond(self.deadline, false), outcome));
        }
        let Some(new) = replace_token(state, &ctx, &token).await else {
            return Ok((answer.respond(self.deadline, false), Outcome::Refused));
        };
        let Some(body) = replayable else {
            return Ok((answer.respond(self.deadline, false), Outcome::Refused));
        };
        let query = with_token(query, &new.value);
        let again = self.send(base, &query, Outgoing::Bytes(body)).await?;
        Ok((again.respond(self.deadline, true), Outcome::Retried))
    }

    /// The body's length as the caller declared it (`Content-Length`), if it did.
    fn declared_length(&self) -> Option<u64> {
        let value = self.req.headers().get(header::CONTENT_LENGTH)?;
        value.to_str().ok()?.parse().ok()
    }

    /// The body to send: read whole when it is at most [`REPLAYABLE_BYTES`] (and then
    /// also kept for a retry), otherwise streamed from what has been read on, bounded
    /// by `gateway.max_body_bytes`.
    async fn read_body(
        &self,
        mut payload: web::Payload,
    ) -> Result<(Outgoing, Option<Bytes>), GatewayError> {
        let declared = self.declared_length();
        let mut read = BytesMut::new();
        if declared.is_none_or(|n| n <= REPLAYABLE_BYTES as u64) {
            while read.len() <= REPLAYABLE_BYTES {
                match self.before_deadline(payload.next()).await? {
                    None => {
                        let body = read.freeze();
                        return Ok((Outgoing::Bytes(body.clone()), Some(body)));
                    }
                    Some(Ok(chunk)) => read.extend_from_slice(&chunk),
                    Some(Err(_)) => return Err(GatewayError::DataFormat("the body was cut short")),
                }
            }
        }
        let limit = self.upstream.max_body;
        let too_large = Rc::new(Cell::new(false));
        let chunks = limited(read.freeze(), payload, limit, too_large.clone());
        Ok((
            Outgoing::Stream {
                chunks,
                length: declared,
                too_large,
            },
            None,
        ))
    }

    async fn before_deadline<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, GatewayError> {
        tokio::time::timeout_at(self.deadline, work)
            .await
            .map_err(|_| GatewayError::Timeout(self.upstream.timeout.as_millis() as u64))
    }

    /// Sends the call to WeChat at `base` with `query`, and reads the start of the answer.
    async fn send(&self, base: &str, query: &str, body: Outgoing) -> Result<Answer, GatewayError> {
        let url = format!("{base}{}?{query}", self.req.path());
        let left = self.deadline.saturating_duration_since(Instant::now());
        let method = match *self.req.method() {
            Method::POST => Method::POST,
            _ => Method::GET,
        };
        let mut request = self.upstream.http.request(method, url).timeout(left);
        if let Some(content_type) = self.req.headers().get(header::CONTENT_TYPE) {
            request = request.insert_header((header::CONTENT_TYPE, content_type.clone()));
        }
        let (sending, too_large) = match body {
            Outgoing::Bytes(bytes) if bytes.is_empty() => (request.send(), None),
            Outgoing::Bytes(bytes) => (request.send_body(bytes), None),
            Outgoing::Stream {
                chunks,
                length: Some(length),
                too_large,
            } => (
                request.send_body(SizedStream::new(length, chunks)),
                Some(too_large),
            ),
            Outgoing::Stream {
                chunks,
                length: None,
                too_large,
            } => (request.send_stream(chunks), Some(too_large)),
        };
        let response = sending.await.map_err(|e| {
            if too_large.is_some_and(|flag| flag.get()) {
                return GatewayError::BodyTooLarge(self.upstream.max_body);
            }
            match e {
                awc::error::SendRequestError::Timeout => {
                    GatewayError::Timeout(self.upstream.timeout.as_millis() as u64)
                }
                // Not the error's text: it may quote the URL, which carries the token.
                _ => GatewayError::Unreachable,
            }
        })?;
        Answer::peek(response, self).await
    }
}

/// A request body on its way to WeChat.
enum Outgoing {
    Bytes(Bytes),
    Stream {
        chunks: Chunks,
        /// `Content-Length`, when the caller declared it (WeChat then gets it too).
        length: Option<u64>,
        /// Set when the stream passed `gateway.max_body_bytes`.
        too_large: Rc<Cell<bool>>,
    },
}

/// `read` followed by the rest of `payload`, failing (and setting `too_large`) once
/// more than `limit` bytes went through.
fn limited(read: Bytes, payload: web::Payload, limit: u64, too_large: Rc<Cell<bool>>) -> Chunks {
    let mut sent = 0u64;
    stream::once(async move { Ok::<_, BoxError>(read) })
        .chain(payload.map(|chunk| chunk.map_err(|e| Box::new(e) as BoxError)))
        .map(move |chunk| {
            let chunk = chunk?;
            sent += chunk.len() as u64;
            if sent > limit {
                too_large.set(true);
                return Err("the request body passed gateway.max_body_bytes".into());
            }
            Ok(chunk)
        })
        .filter(|chunk| std::future::ready(!matches!(chunk, Ok(bytes) if bytes.is_empty())))
        .boxed_local()
}

/// awc's answer, as its (uncompressed: no `compress` feature) body stream.
type UpstreamResponse = awc::ClientResponse;

/// WeChat's answer, with the start of its body already read.
struct Answer {
    response: UpstreamResponse,
    head: Bytes,
    /// The whole body is in `head`.
    complete: bool,
}

#[derive(Deserialize)]
struct Errcode {
    errcode: Option<i64>,
}

impl Answer {
    /// Reads the start of a JSON or text answer (where a refusal would be); other
    /// answers (a media file) are left unread.
    async fn peek(mut response: UpstreamResponse, call: &Call<'_>) -> Result<Self, GatewayError> {
        let mut head = BytesMut::new();
        let mut complete = false;
        if is_textual(response.headers()) {
            while head.len() < PEEKED_BYTES {
                match call.before_deadline(response.next()).await? {
                    Some(Ok(chunk)) => head.extend_from_slice(&chunk),
                    Some(Err(_)) => return Err(GatewayError::Unreachable),
                    None => {
                        complete = true;
                        break;
                    }
                }
            }
        }
        Ok(Self {
            response,
            head: head.freeze(),
            complete,
        })
    }

    /// Whether WeChat refused the call's token.
    fn refused_token(&self) -> bool {
        self.complete
            && serde_json::from_slice::<Errcode>(&self.head)
                .ok()
                .and_then(|answer| answer.errcode)
                .is_some_and(|code| REFUSED_TOKEN.contains(&code))
    }

    /// The answer to the caller: WeChat's status, content type and body (the rest of
    /// it streamed, until `deadline`).
    fn respond(self, deadline: Instant, retried: bool) -> HttpResponse {
        let mut response = HttpResponse::build(self.response.status());
        for name in [header::CONTENT_TYPE, header::CONTENT_DISPOSITION] {
            if let Some(value) = self.response.headers().get(&name) {
                response.insert_header((name, value.clone()));
            }
        }
        if retried {
            response.insert_header(("x-wxjssdk-retried", HeaderValue::from_static("1")));
        }
        let length = content_length(self.response.headers());
        // A finished body must not be polled again (awc panics).
        let rest = (!self.complete).then_some(self.response);
        let body = rest_of(self.head, rest, deadline);
        match length {
            Some(length) => response.body(SizedStream::new(length, body)),
            None => response.streaming(body),
        }
    }
}

/// `head`, then the rest of `response`'s body (`None`: `head` is all of it) until `deadline` (past it, the body is
/// cut short: the caller sees a broken answer rather than waiting without end).
fn rest_of(head: Bytes, response: Option<UpstreamResponse>, deadline: Instant) -> Chunks {
    let rest = stream::unfold(response, move |response| async move {
        let mut response = response?;
        match tokio::time::timeout_at(deadline, response.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(response))),
            Ok(Some(Err(e))) => Some((Err(Box::new(e) as BoxError), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err("WeChat's answer passed gateway.timeout_ms".into()),
                None,
            )),
        }
    });
    stream::once(async move { Ok::<_, BoxError>(head) })
        .chain(rest)
        .filter(|chunk| std::future::ready(!matches!(chunk, Ok(bytes) if bytes.is_empty())))
        .boxed_local()
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Whether an answer may be WeChat's JSON: WeChat states `application/json` or
/// `text/plain` for its JSON answers, and some answers state nothing.
fn is_textual(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let content_type = content_type
        .to_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    content_type.starts_with("application/json") || content_type.starts_with("text/")
}

/// The token that replaces `token`, which WeChat refused while it was current: the
/// coordinated invalidation's replacement, or the token another caller's invalidation
/// put in its place. An invalidation of the token that another instance is making
/// right now (the gate is closed, the store still holds the token) is waited for, a
/// little. `None` when the invalidation limits say no (or it failed): the refusal is
/// then passed back.
async fn replace_token(state: &AppState, ctx: &Context, token: &str) -> Option<Arc<Record>> {
    for _ in 0..REPLACEMENT_POLLS {
        match state
            .cache
            .invalidate(ctx, Credential::AccessToken, token)
            .await
        {
            Ok(Invalidation::Replaced(new) | Invalidation::NotCurrent(new)) => {
                return (new.value != token).then_some(new);
            }
            Ok(Invalidation::TooSoon { .. }) => {
                tokio::time::sleep(REPLACEMENT_POLL).await;
            }
            Ok(Invalidation::DailyLimit { .. }) => return None,
            Err(e) => {
                log::warn!(
                    "gateway: WeChat refused {}'s current access_token on a forwarded call, and it could not be replaced: {e}",
                    ctx.app.cache_id()
                );
                return None;
            }
        }
    }
    None
}

/// How often, and how many times, [`replace_token`] looks for another instance's
/// replacement of a refused token: a replacement takes a few store round trips and
/// one WeChat call, and an invalidation made within the last `INVALIDATE_SPACING` whose
/// token is refused again is not worth a longer wait.
const REPLACEMENT_POLL: Duration = Duration::from_millis(50);
const REPLACEMENT_POLLS: u32 = 40;

/// `query` with its `access_token` replaced by `token`, everything else as it was.
fn with_token(query: &str, token: &str) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    out.append_pair("access_token", token);
    let others = query
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some("access_token"));
    let mut query = out.finish();
    for pair in others {
        query.push('&');
        query.push_str(pair);
    }
    query
}

#[cfg(test)]
mod tests {
    use super::{with_token, PATTERN, ROOTS};

    #[test]
    fn the_route_matches_exactly_the_forwarded_roots() {
        // Both braces, so that the braces of this module stay balanced for
        // tests/architecture.rs, which counts them.
        let alternatives = PATTERN
            .split(['{', '}'])
            .nth(1)
            .and_then(|root| root.strip_prefix("root:"))
            .map(|roots| roots.split('|').collect::<Vec<_>>());
        assert_eq!(alternatives, Some(ROOTS.to_vec()));
    }

    #[test]
    fn only_the_token_of_a_query_is_replaced() {
        assert_eq!(
            with_token("access_token=old&openid=o%2B1&lang=zh_CN", "new+1"),
            "access_token=new%2B1&openid=o%2B1&lang=zh_CN"
        );
        assert_eq!(
            with_token("type=x&access_token=old", "n"),
            "access_token=n&type=x"
        );
    }
}
