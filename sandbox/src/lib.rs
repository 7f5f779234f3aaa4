//! An in-process stand-in for the WeChat API: official accounts (`api.weixin.qq.com`)
//! and WeChat Work (`qyapi.weixin.qq.com`), whose paths do not collide, so one sandbox
//! serves both bases.
//!
//! Integration tests, the `--dev` demo mode and the local stack point the service at
//! this sandbox instead of WeChat, so that token and ticket caching can be exercised
//! without real credentials, quotas or network access. It is meant to be as awkward as
//! the real thing (`../shared/wechat-api.md`), because a stand-in that only walks the
//! happy path lets a cache pass that WeChat would break:
//!
//! - `GET /cgi-bin/token`: every call mints a new token; the previous one keeps working
//!   for a grace period (WeChat: 5 minutes), then answers 40001 ("not latest").
//! - `POST /cgi-bin/stable_token`: one current token per appid, independent of the
//!   classic one, answered with its *remaining* `expires_in` and rotated in the last
//!   quarter of its life (at most the last 300 s, as WeChat does about 5 minutes
//!   early); `force_refresh` mints a new one.
//! - `GET /cgi-bin/ticket/getticket` (`jsapi`, `wx_card`), WeChat Work's
//!   `GET /cgi-bin/get_jsapi_ticket` (one per corp) and `GET /cgi-bin/ticket/get?type=
//!   agent_config` (one per application), and WeChat Work's `GET /cgi-bin/gettoken`
//!   (one per application).
//!
//! **Re-issued values.** An endpoint in re-issue mode answers the value it handed out
//! last, as long as that value is valid, with a *fresh* `expires_in`: the value still
//! dies at its first expiry, whatever the answer says. WeChat Work documents this for
//! its token and both tickets, so it is on by default for those three endpoints; it is
//! widely reported for official accounts' tickets too, and can be switched on for any
//! endpoint ([`Sandbox::set_reissue`], `POST /sandbox/settings`).
//!
//! **Errors.** A token the sandbox never issued answers 40014 (invalid), one replaced
//! after its grace period or revoked answers 40001 (not latest), an expired one 42001.
//! Like WeChat, every API error is an HTTP 200 with `{"errcode": N, "errmsg": "..."}`,
//! unless a [`Fault`] says otherwise: an errcode, a delay, or a failure of the
//! transport itself ([`Transport`]: a 502 with an HTML page, an HTML page with a 200, a
//! body cut short, a connection closed without an answer). A fault applies `times`
//! calls, or until it is cleared (`times: 0`).
//!
//! Tests steer it through [`Sandbox`] methods, or over HTTP through `/sandbox/*` when
//! the sandbox runs as a separate process, and read what it did: call counts per
//! endpoint, a log of every call with its time, and every ticket it issued with its
//! real validity (so that a signature can be checked against the ticket that was valid
//! when it was made).
//!
//! Deliberately not modelled: the caller-IP whitelist (40164), daily quotas (45009) and
//! the force-refresh rate limit, message pushes, and persistence across restarts. Time
//! comes from [`Instant`], so expiry is real wall-clock expiry; tests get short windows
//! through a small `expires_in`.
//!
//! Handlers never panic on bad input, and a poisoned mutex is recovered rather than
//! propagated.
//!
//! The protocol itself (paths, `type` values, errcodes, the JSON shapes) comes from
//! [`wechat_wire`], which the service's client reads too: what the sandbox answers and
//! what the client asks for are written once. So do the ticket kinds: a WeChat Work
//! corp's jsapi ticket is a [`TicketKind::Jsapi`] like an official account's, told
//! apart by whose it is (the corp's, fetched from `get_jsapi_ticket`), and tests ask
//! for it by the CorpID. The sandbox is its own crate, outside the service's library,
//! which never needs it to serve; the `wx-jssdk` binary runs it for `--dev` and
//! `wx-jssdk sandbox`.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::body::SizedStream;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha1::{Digest, Sha1};
use uuid::Uuid;
use wechat_wire::{errcode, path, Answer, StableTokenRequest, CLIENT_CREDENTIAL};

pub mod api;
pub use api::ApiCall;

/// The tickets the sandbox issues: the protocol's kinds. A WeChat Work corp's jsapi
/// ticket is a [`TicketKind::Jsapi`] held by the corp: ask for it by the CorpID.
pub use wechat_wire::TicketKind;

/// Longest lifetime the sandbox will represent; larger `expires_in` values are clamped so
/// that `Instant` arithmetic can never overflow (and panic) on hostile settings.
const MAX_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// How long expired tokens and tickets are remembered, so that they answer 42001
/// ("expired") rather than 40014 ("unknown"), and a signature made earlier can still be
/// checked, without the maps growing forever.
const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Pruning is amortised: it runs only when the maps have doubled since the last pass.
const PRUNE_MIN: usize = 1024;
/// The call log keeps this many calls (the oldest are dropped): hours of calls at the
/// rates a cache under test makes.
const CALL_LOG_MAX: usize = 100_000;
/// WeChat rotates a stable token about 5 minutes before it expires.
const STABLE_ROTATION_MAX: Duration = Duration::from_secs(300);

/// Startup configuration of a [`Sandbox`].
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Lifetime in seconds of newly minted tokens and tickets (WeChat: 7200).
    pub expires_in: u64,
    /// Known `(appid, secret)` pairs. Empty means any non-empty appid/secret is accepted,
    /// which is what demos want; tests that check 40013/40125 list their apps.
    pub apps: Vec<(String, String)>,
    /// How long a token keeps working after a newer one replaced it (WeChat: 5 minutes).
    pub old_token_grace_secs: u64,
    /// Endpoints that re-issue their current value with a fresh `expires_in`.
    pub reissue: HashSet<Endpoint>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            expires_in: 7200,
            apps: Vec::new(),
            old_token_grace_secs: 300,
            reissue: Endpoint::WORK.into_iter().collect(),
        }
    }
}

/// Number of requests each WeChat endpoint has received, including failed ones, so tests
/// can assert how often the service really went upstream.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CallCounts {
    pub token: u64,
    /// Every `stable_token` call, forced or not.
    pub stable_token: u64,
    /// The subset of `stable_token` calls with `force_refresh=true`.
    pub stable_token_force: u64,
    /// WeChat Work: `gettoken`, `get_jsapi_ticket` and agent-ticket calls.
    #[serde(default)]
    pub work_token: u64,
    #[serde(default)]
    pub work_jsapi_ticket: u64,
    #[serde(default)]
    pub agent_ticket: u64,
    /// `getticket`, both `jsapi` and `wx_card`.
    pub getticket: u64,
    /// Every other API call ([`Endpoint::Api`]: menus, users, media, ...).
    #[serde(default)]
    pub api: u64,
}

impl CallCounts {
    /// Calls of `endpoint`.
    pub fn of(&self, endpoint: Endpoint) -> u64 {
        match endpoint {
            Endpoint::Token => self.token,
            Endpoint::StableToken => self.stable_token,
            Endpoint::GetTicket => self.getticket,
            Endpoint::WorkToken => self.work_token,
            Endpoint::WorkJsapiTicket => self.work_jsapi_ticket,
            Endpoint::AgentTicket => self.agent_ticket,
            Endpoint::Api => self.api,
        }
    }
}

/// One call the sandbox received: when, and of which endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub at: Instant,
    pub endpoint: Endpoint,
}

/// A scripted misbehaviour of one endpoint, to test retries, timeouts and error handling.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Which endpoint it applies to.
    pub endpoint: Endpoint,
    /// Answer `{"errcode": N, "errmsg": "sandbox injected"}` instead of the normal answer.
    #[serde(default)]
    pub errcode: Option<i64>,
    /// Fail below the API: the answer is not WeChat's JSON at all.
    #[serde(default)]
    pub transport: Option<Transport>,
    /// Sleep this long before answering (whatever the answer is).
    #[serde(default)]
    pub delay_ms: u64,
    /// How many calls this fault applies to before it is removed (0 = until cleared).
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

impl Fault {
    /// A fault of the next call of `endpoint` that changes nothing yet.
    fn on(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            errcode: None,
            transport: None,
            delay_ms: 0,
            times: 1,
        }
    }

    /// WeChat answers `errcode` to the next call of `endpoint`.
    pub fn errcode(endpoint: Endpoint, errcode: i64) -> Self {
        Self {
            errcode: Some(errcode),
            ..Self::on(endpoint)
        }
    }

    /// The next call of `endpoint` is answered normally, after `delay`.
    pub fn delay(endpoint: Endpoint, delay: Duration) -> Self {
        Self {
            delay_ms: delay.as_millis().try_into().unwrap_or(u64::MAX),
            ..Self::on(endpoint)
        }
    }

    /// The next call of `endpoint` fails in its transport.
    pub fn transport(endpoint: Endpoint, transport: Transport) -> Self {
        Self {
            transport: Some(transport),
            ..Self::on(endpoint)
        }
    }

    /// The same fault for `times` calls (0: until cleared).
    pub fn times(mut self, times: u32) -> Self {
        self.times = times;
        self
    }
}

/// Ways an answer can fail below WeChat's API, as proxies, gateways and networks do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// HTTP 502 with an HTML error page, as a gateway in front of WeChat answers.
    BadGateway,
    /// HTTP 200 with an HTML page instead of JSON (a captive portal, a proxy's notice).
    HtmlPage,
    /// HTTP 200 announcing a JSON body that stops halfway: the connection closes early.
    Truncated,
    /// The connection is closed before any answer.
    Reset,
}

/// The WeChat endpoints a [`Fault`] can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Token,
    StableToken,
    /// Serialised as `get_ticket`; `getticket` (the URL spelling) is accepted too.
    #[serde(alias = "getticket")]
    GetTicket,
    /// WeChat Work `cgi-bin/gettoken`.
    #[serde(alias = "gettoken")]
    WorkToken,
    /// WeChat Work `cgi-bin/get_jsapi_ticket` (the corp's `wx.config` ticket).
    #[serde(alias = "get_jsapi_ticket")]
    WorkJsapiTicket,
    /// WeChat Work `cgi-bin/ticket/get?type=agent_config` (`wx.agentConfig`).
    AgentTicket,
    /// Any other call under WeChat's API roots (`cgi-bin/menu/get`, `cgi-bin/user/info`,
    /// `cgi-bin/media/upload`, `datacube/...`): see [`api`].
    Api,
}

impl Endpoint {
    /// The WeChat Work endpoints, which re-issue their values by default.
    pub(crate) const WORK: [Self; 3] = [Self::WorkToken, Self::WorkJsapiTicket, Self::AgentTicket];

    /// Where WeChat serves it.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Self::Token => path::TOKEN,
            Self::StableToken => path::STABLE_TOKEN,
            Self::GetTicket => path::GET_TICKET,
            Self::WorkToken => path::WORK_TOKEN,
            Self::WorkJsapiTicket => path::WORK_JSAPI_TICKET,
            Self::AgentTicket => path::WORK_TICKET,
            Self::Api => api::PATTERN,
        }
    }
}

/// A WeChat-style error answer.
#[derive(Debug, Clone, Copy)]
struct WxErr(i64, &'static str);

const BAD_GRANT: WxErr = WxErr(errcode::INVALID_GRANT_TYPE, "invalid grant_type");
const APPID_MISSING: WxErr = WxErr(errcode::APPID_MISSING, "appid missing");
const SECRET_MISSING: WxErr = WxErr(errcode::APPSECRET_MISSING, "appsecret missing");
const BAD_APPID: WxErr = WxErr(errcode::INVALID_APPID, "invalid appid");
const BAD_SECRET: WxErr = WxErr(errcode::INVALID_APPSECRET, "invalid appsecret");
const TOKEN_MISSING: WxErr = WxErr(errcode::ACCESS_TOKEN_MISSING, "access_token missing");
const TOKEN_NOT_LATEST: WxErr = WxErr(
    errcode::INVALID_CREDENTIAL,
    "invalid credential, access_token is invalid or not latest",
);
const TOKEN_UNKNOWN: WxErr = WxErr(errcode::INVALID_ACCESS_TOKEN, "invalid access_token");
const TOKEN_EXPIRED: WxErr = WxErr(errcode::ACCESS_TOKEN_EXPIRED, "access_token expired");
const BAD_TICKET_TYPE: WxErr = WxErr(errcode::INVALID_ARGS, "invalid args");
const DATA_FORMAT: WxErr = WxErr(errcode::DATA_FORMAT_ERROR, "data format error");

fn wx_json(errcode: i64, errmsg: &str) -> HttpResponse {
    HttpResponse::Ok().json(Answer::error(errcode, errmsg))
}

fn respond(result: Result<Answer, WxErr>) -> HttpResponse {
    match result {
        Ok(answer) => HttpResponse::Ok().json(answer),
        Err(WxErr(code, msg)) => wx_json(code, msg),
    }
}

fn bad_request(msg: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": msg.to_string() }))
}

const HTML_ERROR_PAGE: &str =
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>";

/// The answer of a transport failure.
fn failed_transport(transport: Transport) -> HttpResponse {
    let html = "text/html; charset=utf-8";
    match transport {
        Transport::BadGateway => HttpResponse::BadGateway()
            .content_type(html)
            .body(HTML_ERROR_PAGE),
        Transport::HtmlPage => HttpResponse::Ok().content_type(html).body(HTML_ERROR_PAGE),
        Transport::Truncated => {
            let half = futures_util::stream::iter([
                Ok(web::Bytes::from_static(
                    br#"{"errcode":0,"errmsg":"ok","tic"#,
                )),
                Err(std::io::Error::other("sandbox: body cut short")),
            ]);
            HttpResponse::Ok()
                .content_type("application/json")
                .body(SizedStream::new(200, half))
        }
        Transport::Reset => {
            let nothing = futures_util::stream::iter([Err::<web::Bytes, _>(
                std::io::Error::other("sandbox: connection reset"),
            )]);
            HttpResponse::Ok().body(SizedStream::new(200, nothing))
        }
    }
}

/// Query parameters as a map; an unparsable query behaves like an empty one, so the handler
/// answers with the WeChat "missing parameter" error instead of an actix 400.
fn query_map(req: &HttpRequest) -> HashMap<String, String> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default()
}

/// `now + secs`, clamped so that it cannot overflow.
fn deadline(now: Instant, secs: u64) -> Instant {
    let lifetime = Duration::from_secs(secs).min(MAX_LIFETIME);
    now.checked_add(lifetime).unwrap_or(now)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TokenKind {
    Classic,
    Stable,
    /// WeChat Work: one per application.
    Work,
}

impl TokenKind {
    fn endpoint(self) -> Endpoint {
        match self {
            Self::Classic => Endpoint::Token,
            Self::Stable => Endpoint::StableToken,
            Self::Work => Endpoint::WorkToken,
        }
    }
}

/// Why a token stops working, which decides the errcode once it is past its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenStatus {
    Live,
    /// A newer token of the same kind cut this one's life short: WeChat says "not latest".
    Superseded,
    Revoked,
}

/// Who a token or ticket belongs to, which decides which values are one and the same
/// (handed out again) and which are independent of each other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owner {
    /// An official account, by its appid: its tokens and its jsapi and card tickets.
    Account(String),
    /// A WeChat Work corp, by its corpid: its jsapi ticket (`wx.config`), one for all
    /// its applications.
    Corp(String),
    /// A WeChat Work application: its token and its agent ticket. WeChat knows it by its
    /// corpid and secret (the agentid never reaches WeChat), the sandbox by the corpid
    /// and a digest of the secret.
    Application {
        corpid: String,
        secret_digest: String,
    },
}

impl Owner {
    fn application(corpid: &str, secret: &str) -> Self {
        let digest = hex::encode(Sha1::digest(secret.as_bytes()));
        Self::Application {
            corpid: corpid.to_owned(),
            secret_digest: digest[..8].to_owned(),
        }
    }

    /// The appid or corpid that tests ask about its values by.
    fn id(&self) -> &str {
        match self {
            Self::Account(id) | Self::Corp(id) => id,
            Self::Application { corpid, .. } => corpid,
        }
    }
}

#[derive(Debug)]
struct TokenRec {
    owner: Owner,
    kind: TokenKind,
    expires_at: Instant,
    status: TokenStatus,
}

#[derive(Debug)]
struct TicketRec {
    owner: Owner,
    kind: TicketKind,
    issued_at: Instant,
    expires_at: Instant,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsRequest {
    expires_in: Option<u64>,
    /// Endpoints to switch re-issue mode on (`true`) or off.
    #[serde(default)]
    reissue: HashMap<Endpoint, bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    appid: String,
}

#[derive(Debug)]
struct State {
    expires_in: u64,
    apps: Vec<(String, String)>,
    grace_secs: u64,
    reissue: HashSet<Endpoint>,
    calls: CallCounts,
    call_log: Vec<Call>,
    faults: Vec<Fault>,
    tokens: HashMap<String, TokenRec>,
    /// (kind, owner) -> the token of that kind handed out last.
    current: HashMap<(TokenKind, Owner), String>,
    tickets: HashMap<String, TicketRec>,
    /// (owner, kind) -> the ticket handed out last.
    newest_ticket: HashMap<(Owner, TicketKind), String>,
    prune_at: usize,
    /// Every API call answered ([`Endpoint::Api`]), oldest first.
    api_calls: Vec<ApiCall>,
}

impl State {
    fn new(config: SandboxConfig) -> Self {
        Self {
            expires_in: config.expires_in,
            apps: config.apps,
            grace_secs: config.old_token_grace_secs,
            reissue: config.reissue,
            calls: CallCounts::default(),
            call_log: Vec::new(),
            faults: Vec::new(),
            tokens: HashMap::new(),
            current: HashMap::new(),
            tickets: HashMap::new(),
            newest_ticket: HashMap::new(),
            prune_at: PRUNE_MIN,
            api_calls: Vec::new(),
        }
    }

    fn count(&mut self, endpoint: Endpoint, force: bool, now: Instant) {
        let c = &mut self.calls;
        match endpoint {
            Endpoint::Token => c.token += 1,
            Endpoint::StableToken => {
                c.stable_token += 1;
                c.stable_token_force += u64::from(force);
            }
            Endpoint::GetTicket => c.getticket += 1,
            Endpoint::WorkToken => c.work_token += 1,
            Endpoint::WorkJsapiTicket => c.work_jsapi_ticket += 1,
            Endpoint::AgentTicket => c.agent_ticket += 1,
            Endpoint::Api => c.api += 1,
        }
        if self.call_log.len() >= CALL_LOG_MAX {
            self.call_log.drain(..CALL_LOG_MAX / 2);
        }
        self.call_log.push(Call { at: now, endpoint });
    }

    /// The first queued fault for `endpoint`, consuming one of its `times`.
    fn take_fault(&mut self, endpoint: Endpoint) -> Option<Fault> {
        let idx = self.faults.iter().position(|f| f.endpoint == endpoint)?;
        let applied = self.faults[idx].clone();
        match applied.times {
            0 => {}
            1 => {
                self.faults.remove(idx);
            }
            _ => self.faults[idx].times -= 1,
        }
        Some(applied)
    }

    /// Checks grant type and credentials in WeChat's order; returns the appid.
    fn check_credentials(
        &self,
        grant_type: Option<&str>,
        appid: Option<&str>,
        secret: Option<&str>,
    ) -> Result<String, WxErr> {
        if grant_type != Some(CLIENT_CREDENTIAL) {
            return Err(BAD_GRANT);
        }
        let appid = appid.filter(|s| !s.is_empty()).ok_or(APPID_MISSING)?;
        let secret = secret.filter(|s| !s.is_empty()).ok_or(SECRET_MISSING)?;
        if self.apps.is_empty() {
            return Ok(appid.to_owned());
        }
        match self.apps.iter().find(|(id, _)| id == appid) {
            None => Err(BAD_APPID),
            Some((_, s)) if s != secret => Err(BAD_SECRET),
            Some(_) => Ok(appid.to_owned()),
        }
    }

    /// Older still-valid tokens of the same owner and kind keep working only for the grace period.
    fn supersede(&mut self, owner: &Owner, kind: TokenKind, now: Instant) {
        let cutoff = deadline(now, self.grace_secs);
        for rec in self.tokens.values_mut() {
            let same = rec.owner == *owner && rec.kind == kind;
            if same && rec.status == TokenStatus::Live && cutoff < rec.expires_at {
                rec.expires_at = cutoff;
                rec.status = TokenStatus::Superseded;
            }
        }
    }

    /// A new token of `kind` for `owner`, which becomes its current one.
    fn mint_token(&mut self, owner: Owner, kind: TokenKind, now: Instant) -> Answer {
        self.prune(now);
        if kind != TokenKind::Work {
            self.supersede(&owner, kind, now);
        }
        let prefix = match kind {
            TokenKind::Classic => "sbx-at-",
            TokenKind::Stable => "sbx-st-",
            TokenKind::Work => "sbx-wt-",
        };
        let token = format!("{prefix}{}", Uuid::new_v4().simple());
        log::debug!("sandbox: minted {kind:?} token for {}", owner.id());
        let rec = TokenRec {
            owner: owner.clone(),
            kind,
            expires_at: deadline(now, self.expires_in),
            status: TokenStatus::Live,
        };
        self.tokens.insert(token.clone(), rec);
        self.current.insert((kind, owner), token.clone());
        Answer::access_token(token, self.expires_in)
    }

    /// The current token of `kind` for `owner` if it still works, with the time it has left.
    fn current_token(
        &self,
        kind: TokenKind,
        owner: &Owner,
        now: Instant,
    ) -> Option<(String, Duration)> {
        let token = self.current.get(&(kind, owner.clone()))?;
        self.check_token(token, now).ok()?;
        let rec = self.tokens.get(token)?;
        Some((token.clone(), rec.expires_at.saturating_duration_since(now)))
    }

    /// A token for `owner`: the current one again in re-issue mode (with a fresh
    /// `expires_in`), otherwise a new one.
    fn hand_out_token(&mut self, owner: Owner, kind: TokenKind, now: Instant) -> Answer {
        if self.reissue.contains(&kind.endpoint()) {
            if let Some((token, _)) = self.current_token(kind, &owner, now) {
                return Answer::access_token(token, self.expires_in);
            }
        }
        self.mint_token(owner, kind, now)
    }

    /// The owner of `token` if it can be used right now.
    fn check_token(&self, token: &str, now: Instant) -> Result<Owner, WxErr> {
        let rec = self.tokens.get(token).ok_or(TOKEN_UNKNOWN)?;
        match rec.status {
            TokenStatus::Revoked => Err(TOKEN_NOT_LATEST),
            _ if now < rec.expires_at => Ok(rec.owner.clone()),
            TokenStatus::Superseded => Err(TOKEN_NOT_LATEST),
            TokenStatus::Live => Err(TOKEN_EXPIRED),
        }
    }

    fn classic_token(
        &mut self,
        q: &HashMap<String, String>,
        now: Instant,
    ) -> Result<Answer, WxErr> {
        let get = |k: &str| q.get(k).map(String::as_str);
        let appid = self.check_credentials(get("grant_type"), get("appid"), get("secret"))?;
        Ok(self.hand_out_token(Owner::Account(appid), TokenKind::Classic, now))
    }

    fn stable_token(&mut self, req: &StableTokenRequest, now: Instant) -> Result<Answer, WxErr> {
        let appid = self.check_credentials(
            req.grant_type.as_deref(),
            req.appid.as_deref(),
            req.secret.as_deref(),
        )?;
        let owner = Owner::Account(appid);
        let kind = TokenKind::Stable;
        if req.force_refresh.unwrap_or(false) {
            return Ok(self.mint_token(owner, kind, now));
        }
        if self.reissue.contains(&Endpoint::StableToken) {
            return Ok(self.hand_out_token(owner, kind, now));
        }
        // The current token with the time it has left, until its last stretch.
        let rotate_within = (Duration::from_secs(self.expires_in) / 4).min(STABLE_ROTATION_MAX);
        match self.current_token(kind, &owner, now) {
            Some((token, left)) if left > rotate_within => {
                Ok(Answer::access_token(token, left.as_secs().max(1)))
            }
            _ => Ok(self.mint_token(owner, kind, now)),
        }
    }

    /// WeChat Work `gettoken`: the application's token.
    fn work_token(&mut self, q: &HashMap<String, String>, now: Instant) -> Result<Answer, WxErr> {
        let get = |k: &str| q.get(k).map(String::as_str);
        let corpid =
            self.check_credentials(Some(CLIENT_CREDENTIAL), get("corpid"), get("corpsecret"))?;
        let owner = Owner::application(&corpid, get("corpsecret").unwrap_or_default());
        Ok(self.hand_out_token(owner, TokenKind::Work, now).ok())
    }

    /// A call of a ticket `endpoint` (`getticket`, or WeChat Work's `get_jsapi_ticket`
    /// and `ticket/get`): the kind the wire format says its `type` asks for there.
    fn ticket(
        &mut self,
        endpoint: Endpoint,
        q: &HashMap<String, String>,
        now: Instant,
    ) -> Result<Answer, WxErr> {
        let token = q.get("access_token").filter(|t| !t.is_empty());
        let token_owner = self.check_token(token.ok_or(TOKEN_MISSING)?, now)?;
        let asked = q.get("type").map(String::as_str);
        let kind = TicketKind::requested_at(endpoint.path(), asked).ok_or(BAD_TICKET_TYPE)?;
        // An agent ticket belongs to the application, the one of WeChat Work's
        // get_jsapi_ticket to the corp, every other ticket to the account: fetched with
        // a new token, it is the same ticket.
        let owner = match (endpoint, kind) {
            (_, TicketKind::Agent) => token_owner,
            (Endpoint::WorkJsapiTicket, _) => Owner::Corp(token_owner.id().to_owned()),
            _ => Owner::Account(token_owner.id().to_owned()),
        };
        let ticket = match self.reissuable_ticket(endpoint, &owner, kind, now) {
            Some(ticket) => ticket,
            None => self.mint_ticket(owner, kind, now),
        };
        Ok(Answer::ticket(ticket, self.expires_in))
    }

    /// In re-issue mode, the ticket handed out last if it is still valid. Its life is
    /// not extended: the answer's fresh `expires_in` is WeChat's, not the ticket's.
    fn reissuable_ticket(
        &self,
        endpoint: Endpoint,
        owner: &Owner,
        kind: TicketKind,
        now: Instant,
    ) -> Option<String> {
        if !self.reissue.contains(&endpoint) {
            return None;
        }
        let ticket = self.newest_ticket.get(&(owner.clone(), kind))?;
        let rec = self.tickets.get(ticket)?;
        (now < rec.expires_at).then(|| ticket.clone())
    }

    fn mint_ticket(&mut self, owner: Owner, kind: TicketKind, now: Instant) -> String {
        self.prune(now);
        let prefix = match (kind, &owner) {
            (TicketKind::Jsapi, Owner::Corp(_)) => "sbx-cj-",
            (TicketKind::Jsapi, _) => "sbx-tk-",
            (TicketKind::Card, _) => "sbx-ck-",
            (TicketKind::Agent, _) => "sbx-ag-",
        };
        let ticket = format!("{prefix}{}", Uuid::new_v4().simple());
        log::debug!("sandbox: minted {kind:?} ticket for {}", owner.id());
        let rec = TicketRec {
            owner: owner.clone(),
            kind,
            issued_at: now,
            expires_at: deadline(now, self.expires_in),
        };
        self.tickets.insert(ticket.clone(), rec);
        self.newest_ticket.insert((owner, kind), ticket.clone());
        ticket
    }

    /// Forgets tokens and tickets expired longer than [`RETENTION`], amortised.
    fn prune(&mut self, now: Instant) {
        if self.tokens.len() + self.tickets.len() < self.prune_at {
            return;
        }
        let keep = |exp: Instant| now.saturating_duration_since(exp) < RETENTION;
        self.tokens.retain(|_, r| keep(r.expires_at));
        self.tickets.retain(|_, r| keep(r.expires_at));
        self.prune_at = (2 * (self.tokens.len() + self.tickets.len())).max(PRUNE_MIN);
    }
}

/// A handle on one sandbox; clones share the same state.
#[derive(Clone)]
pub struct Sandbox {
    state: Arc<Mutex<State>>,
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::new(config))),
        }
    }

    /// A panicking test must not take every later request down with it, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers every sandbox route (WeChat endpoints and `/sandbox/*` control endpoints).
    ///
    /// Handlers capture this handle directly rather than going through `app_data`, so the
    /// sandbox cannot collide with the host app's own `web::Data`.
    pub(crate) fn configure(&self, cfg: &mut web::ServiceConfig) {
        let s = self.clone();
        cfg.route(
            Endpoint::Token.path(),
            web::get().to(move |req: HttpRequest| s.clone().token_handler(req)),
        );
        let s = self.clone();
        cfg.route(
            Endpoint::StableToken.path(),
            web::post().to(move |body: web::Bytes| s.clone().stable_token_handler(body)),
        );
        // WeChat Work's endpoints (`qyapi.weixin.qq.com`) too: the service's
        // `work_api_base` points here as well as its `api_base`, as the paths do not collide.
        let s = self.clone();
        cfg.route(
            Endpoint::WorkToken.path(),
            web::get().to(move |req: HttpRequest| s.clone().work_token_handler(req)),
        );
        for endpoint in [
            Endpoint::GetTicket,
            Endpoint::WorkJsapiTicket,
            Endpoint::AgentTicket,
        ] {
            let s = self.clone();
            cfg.route(
                endpoint.path(),
                web::get().to(move |req: HttpRequest| s.clone().ticket_handler(endpoint, req)),
            );
        }
        let s = self.clone();
        cfg.route(
            Endpoint::Api.path(),
            web::route()
                .to(move |req: HttpRequest, body: web::Payload| s.clone().api_handler(req, body)),
        );
        self.configure_control(cfg);
    }

    fn configure_control(&self, cfg: &mut web::ServiceConfig) {
        let s = self.clone();
        cfg.route(
            "/sandbox/calls",
            web::get().to(move || {
                let calls = s.calls();
                async move { HttpResponse::Ok().json(calls) }
            }),
        );
        let s = self.clone();
        cfg.route(
            "/sandbox/calls/reset",
            web::post().to(move || {
                s.reset_calls();
                async { HttpResponse::NoContent().finish() }
            }),
        );
        let s = self.clone();
        cfg.route(
            "/sandbox/faults",
            web::post().to(move |body: web::Bytes| s.clone().control_fault(body)),
        );
        let s = self.clone();
        cfg.route(
            "/sandbox/faults",
            web::delete().to(move || {
                s.clear_faults();
                async { HttpResponse::NoContent().finish() }
            }),
        );
        let s = self.clone();
        cfg.route(
            "/sandbox/settings",
            web::post().to(move |body: web::Bytes| s.clone().control_settings(body)),
        );
        let s = self.clone();
        cfg.route(
            "/sandbox/revoke",
            web::post().to(move |body: web::Bytes| s.clone().control_revoke(body)),
        );
        let s = self.clone();
        cfg.route(
            "/sandbox/ticket",
            web::get().to(move |req: HttpRequest| s.clone().control_ticket(req)),
        );
    }

    /// Runs the sandbox on an already-bound listener with one worker and no signal handling
    /// (the caller owns the process); the returned server must be spawned or awaited.
    pub fn serve(&self, listener: TcpListener) -> std::io::Result<actix_web::dev::Server> {
        let sandbox = self.clone();
        let server = HttpServer::new(move || {
            let sandbox = sandbox.clone();
            App::new().configure(move |cfg| sandbox.configure(cfg))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        Ok(server)
    }

    pub fn calls(&self) -> CallCounts {
        self.lock().calls.clone()
    }

    /// Every call received (the newest [`CALL_LOG_MAX`] at most), oldest first.
    pub fn call_log(&self) -> Vec<Call> {
        self.lock().call_log.clone()
    }

    pub fn reset_calls(&self) {
        let mut state = self.lock();
        state.calls = CallCounts::default();
        state.call_log.clear();
        state.api_calls.clear();
    }

    /// Every API call answered ([`Endpoint::Api`]), oldest first, with the token it
    /// carried and the body it brought.
    pub fn api_calls(&self) -> Vec<ApiCall> {
        self.lock().api_calls.clone()
    }

    /// Removes every queued fault: WeChat is healthy again.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Queues a fault; faults apply in the order they were injected.
    pub fn inject(&self, fault: Fault) {
        log::debug!("sandbox: fault injected: {fault:?}");
        self.lock().faults.push(fault);
    }

    /// Lifetime of tokens and tickets minted from now on.
    pub fn set_expires_in(&self, secs: u64) {
        self.lock().expires_in = secs;
    }

    /// Re-issue mode of `endpoint`: on, it answers the value it handed out last, while
    /// that value is valid, with a fresh `expires_in` (the value still dies at its first
    /// expiry). On by default for the WeChat Work endpoints.
    pub fn set_reissue(&self, endpoint: Endpoint, on: bool) {
        let mut state = self.lock();
        if on {
            state.reissue.insert(endpoint);
        } else {
            state.reissue.remove(&endpoint);
        }
    }

    /// Invalidates every token of `appid` (or corpid) at once, as if another process had
    /// refreshed it.
    pub fn revoke_tokens(&self, appid: &str) {
        let mut st = self.lock();
        for rec in st.tokens.values_mut().filter(|r| r.owner.id() == appid) {
            rec.status = TokenStatus::Revoked;
        }
    }

    /// The newest jsapi ticket issued for `appid` (or corpid), expired or not.
    pub fn current_ticket(&self, appid: &str) -> Option<String> {
        self.newest_of_kind(appid, TicketKind::Jsapi)
    }

    fn newest_of_kind(&self, appid: &str, kind: TicketKind) -> Option<String> {
        let state = self.lock();
        state
            .tickets
            .iter()
            .filter(|(_, t)| t.owner.id() == appid && t.kind == kind)
            .max_by_key(|(_, t)| t.issued_at)
            .map(|(ticket, _)| ticket.clone())
    }

    /// Every jsapi ticket of `appid` (or of the corp `appid` names) that is still valid:
    /// a page signed with any of them passes `wx.config`.
    pub fn valid_tickets(&self, appid: &str) -> Vec<String> {
        self.valid_of_kind(appid, TicketKind::Jsapi)
    }

    /// Every valid card api_ticket of `appid`.
    pub fn valid_card_tickets(&self, appid: &str) -> Vec<String> {
        self.valid_of_kind(appid, TicketKind::Card)
    }

    /// Every valid WeChat Work jsapi ticket of `corpid` (`wx.config`): a corp's jsapi
    /// tickets are [`TicketKind::Jsapi`] ones, asked for by the CorpID, so this is
    /// [`Sandbox::valid_tickets`] under the name a WeChat Work test reads best.
    pub fn valid_corp_tickets(&self, corpid: &str) -> Vec<String> {
        self.valid_tickets(corpid)
    }

    /// Every valid WeChat Work agent ticket of `corpid`'s applications (`wx.agentConfig`).
    pub fn valid_agent_tickets(&self, corpid: &str) -> Vec<String> {
        self.valid_of_kind(corpid, TicketKind::Agent)
    }

    fn valid_of_kind(&self, appid: &str, kind: TicketKind) -> Vec<String> {
        let now = Instant::now();
        self.tickets_where(appid, kind, |t| t.issued_at <= now && now < t.expires_at)
    }

    /// Every ticket of `kind` of `appid` (the corpid for a corp's jsapi tickets and for
    /// agent tickets) that was
    /// valid at some moment between `from` and `to`: the tickets a signature made in
    /// that interval may use and still pass WeChat's check.
    pub fn tickets_valid_during(
        &self,
        appid: &str,
        kind: TicketKind,
        from: Instant,
        to: Instant,
    ) -> Vec<String> {
        self.tickets_where(appid, kind, |t| t.issued_at <= to && from < t.expires_at)
    }

    fn tickets_where(
        &self,
        appid: &str,
        kind: TicketKind,
        valid: impl Fn(&TicketRec) -> bool,
    ) -> Vec<String> {
        let state = self.lock();
        state
            .tickets
            .iter()
            .filter(|(_, t)| t.owner.id() == appid && t.kind == kind && valid(t))
            .map(|(ticket, _)| ticket.clone())
            .collect()
    }

    pub fn is_valid_ticket(&self, appid: &str, ticket: &str) -> bool {
        self.valid_tickets(appid).iter().any(|t| t == ticket)
    }

    /// Counts the call and plays the first matching fault. `Some` is the faulty answer;
    /// `None` means the normal answer follows (possibly after a delay).
    async fn enter(&self, endpoint: Endpoint, force: bool) -> Option<HttpResponse> {
        let fault = {
            let mut st = self.lock();
            st.count(endpoint, force, Instant::now());
            st.take_fault(endpoint)
        }?;
        if fault.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
        }
        if let Some(transport) = fault.transport {
            return Some(failed_transport(transport));
        }
        fault.errcode.map(|code| wx_json(code, "sandbox injected"))
    }

    async fn token_handler(self, req: HttpRequest) -> HttpResponse {
        if let Some(resp) = self.enter(Endpoint::Token, false).await {
            return resp;
        }
        let q = query_map(&req);
        respond(self.lock().classic_token(&q, Instant::now()))
    }

    async fn stable_token_handler(self, body: web::Bytes) -> HttpResponse {
        let parsed = serde_json::from_slice::<StableTokenRequest>(&body);
        let force = parsed
            .as_ref()
            .is_ok_and(|r| r.force_refresh.unwrap_or(false));
        if let Some(resp) = self.enter(Endpoint::StableToken, force).await {
            return resp;
        }
        let result = match parsed {
            Ok(req) => self.lock().stable_token(&req, Instant::now()),
            Err(_) => Err(DATA_FORMAT),
        };
        respond(result)
    }

    async fn work_token_handler(self, req: HttpRequest) -> HttpResponse {
        if let Some(resp) = self.enter(Endpoint::WorkToken, false).await {
            return resp;
        }
        respond(self.lock().work_token(&query_map(&req), Instant::now()))
    }

    /// `getticket`, and WeChat Work's `get_jsapi_ticket` and `ticket/get`.
    async fn ticket_handler(self, endpoint: Endpoint, req: HttpRequest) -> HttpResponse {
        if let Some(resp) = self.enter(endpoint, false).await {
            return resp;
        }
        let q = query_map(&req);
        respond(self.lock().ticket(endpoint, &q, Instant::now()))
    }

    /// Any other API call: the token is checked as WeChat checks it, the body read to
    /// its end, and the call echoed ([`api`]).
    async fn api_handler(self, req: HttpRequest, body: web::Payload) -> HttpResponse {
        if let Some(resp) = self.enter(Endpoint::Api, false).await {
            return resp;
        }
        let q = query_map(&req);
        let token = q.get("access_token").filter(|t| !t.is_empty());
        let checked = match token {
            None => Err(TOKEN_MISSING),
            Some(token) => self.lock().check_token(token, Instant::now()),
        };
        if let Err(WxErr(code, msg)) = checked {
            return wx_json(code, msg);
        }
        let received = api::Received::read(body).await;
        let call = received.call(&req, token.cloned().unwrap_or_default());
        self.lock().api_calls.push(call.clone());
        api::answer(&q, &call, &received)
    }

    async fn control_fault(self, body: web::Bytes) -> HttpResponse {
        match serde_json::from_slice::<Fault>(&body) {
            Ok(fault) => {
                self.inject(fault);
                HttpResponse::NoContent().finish()
            }
            Err(e) => bad_request(e),
        }
    }

    async fn control_settings(self, body: web::Bytes) -> HttpResponse {
        let settings = match serde_json::from_slice::<SettingsRequest>(&body) {
            Ok(s) => s,
            Err(e) => return bad_request(e),
        };
        if let Some(secs) = settings.expires_in {
            self.set_expires_in(secs);
        }
        for (endpoint, on) in settings.reissue {
            self.set_reissue(endpoint, on);
        }
        HttpResponse::NoContent().finish()
    }

    async fn control_revoke(self, body: web::Bytes) -> HttpResponse {
        match serde_json::from_slice::<RevokeRequest>(&body) {
            Ok(r) if !r.appid.is_empty() => {
                self.revoke_tokens(&r.appid);
                HttpResponse::NoContent().finish()
            }
            Ok(_) => bad_request("appid must not be empty"),
            Err(e) => bad_request(e),
        }
    }

    async fn control_ticket(self, req: HttpRequest) -> HttpResponse {
        let q = query_map(&req);
        let Some(appid) = q.get("appid").filter(|a| !a.is_empty()) else {
            return bad_request("appid missing");
        };
        // A page test checks wx.agentConfig (and card signatures) like wx.config: it
        // needs those tickets as well. `appid` is the CorpID for the WeChat Work tickets;
        // `corp_jsapi` says "a corp's jsapi ticket", which is `jsapi` asked by the CorpID.
        let kind = match q.get("type").map(String::as_str) {
            None | Some("corp_jsapi") => Some(TicketKind::Jsapi),
            Some(value) => TicketKind::from_type_param(value),
        };
        let Some(kind) = kind else {
            return bad_request("type: one of jsapi, wx_card, corp_jsapi, agent_config");
        };
        match self.newest_of_kind(appid, kind) {
            Some(ticket) => HttpResponse::Ok().json(json!({ "ticket": ticket })),
            None => HttpResponse::NotFound().json(json!({ "error": "no ticket" })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test as atest, App};
    use serde_json::Value;

    const APP: &str = "wx-app";

    fn sandbox(grace: u64) -> Sandbox {
        Sandbox::new(SandboxConfig {
            apps: vec![(APP.into(), "s3cret".into())],
            old_token_grace_secs: grace,
            ..SandboxConfig::default()
        })
    }

    /// GETs `$uri` and decodes the JSON answer.
    macro_rules! get {
        ($app:expr, $uri:expr) => {{
            let req = atest::TestRequest::get().uri($uri).to_request();
            let body: Value = atest::call_and_read_body_json($app, req).await;
            body
        }};
    }

    /// POSTs `$body` as JSON to `$uri` and decodes the JSON answer.
    macro_rules! post {
        ($app:expr, $uri:expr, $body:expr) => {{
            let req = atest::TestRequest::post().uri($uri).set_json($body);
            let body: Value = atest::call_and_read_body_json($app, req.to_request()).await;
            body
        }};
    }

    fn token_uri() -> String {
        format!("/cgi-bin/token?grant_type=client_credential&appid={APP}&secret=s3cret")
    }

    fn ticket_uri(token: &Value) -> String {
        let token = token["access_token"].as_str().unwrap_or_default();
        format!("/cgi-bin/ticket/getticket?access_token={token}&type=jsapi")
    }

    #[actix_web::test]
    async fn classic_token_replaces_previous_after_grace() {
        let sb = sandbox(0);
        let app = atest::init_service(App::new().configure(|c| sb.configure(c))).await;
        let first = get!(&app, &token_uri());
        assert_eq!(first["expires_in"], 7200);
        assert_eq!(get!(&app, &ticket_uri(&first))["errcode"], 0);
        let second = get!(&app, &token_uri());
        assert_ne!(first["access_token"], second["access_token"]);
        assert_eq!(get!(&app, &ticket_uri(&first))["errcode"], 40001);
        assert_eq!(get!(&app, &ticket_uri(&second))["errcode"], 0);
    }

    #[actix_web::test]
    async fn stable_token_is_reused_unless_forced() {
        let sb = sandbox(300);
        let app = atest::init_service(App::new().configure(|c| sb.configure(c))).await;
        let body = json!({ "grant_type": "client_credential", "appid": APP, "secret": "s3cret" });
        let a = post!(&app, "/cgi-bin/stable_token", body.clone());
        let b = post!(&app, "/cgi-bin/stable_token", body.clone());
        assert_eq!(a["access_token"], b["access_token"]);
        assert!(b["expires_in"]
            .as_u64()
            .is_some_and(|n| (1..=7200).contains(&n)));
        let mut forced = body;
        forced["force_refresh"] = json!(true);
        let c = post!(&app, "/cgi-bin/stable_token", forced);
        assert_ne!(a["access_token"], c["access_token"]);
        assert_eq!(get!(&app, &ticket_uri(&a))["errcode"], 0, "grace");
        let calls = sb.calls();
        assert_eq!((calls.stable_token, calls.stable_token_force), (3, 1));
        assert_eq!(calls.getticket, 1);
    }

    #[actix_web::test]
    async fn revoked_token_gets_40001_and_expired_42001() {
        let sb = sandbox(300);
        let app = atest::init_service(App::new().configure(|c| sb.configure(c))).await;
        let token = get!(&app, &token_uri());
        sb.revoke_tokens(APP);
        assert_eq!(get!(&app, &ticket_uri(&token))["errcode"], 40001);
        sb.set_expires_in(0);
        let short = get!(&app, &token_uri());
        assert_eq!(get!(&app, &ticket_uri(&short))["errcode"], 42001);
    }

    #[actix_web::test]
    async fn injected_errcode_applies_times_then_stops() {
        let sb = sandbox(300);
        let app = atest::init_service(App::new().configure(|c| sb.configure(c))).await;
        let fault = json!({ "endpoint": "token", "errcode": -1, "times": 2 });
        let req = atest::TestRequest::post()
            .uri("/sandbox/faults")
            .set_json(fault);
        let resp = atest::call_service(&app, req.to_request()).await;
        assert_eq!(resp.status(), 204);
        for _ in 0..2 {
            let answer = get!(&app, &token_uri());
            assert_eq!(answer["errcode"], -1);
            assert_eq!(answer["errmsg"], "sandbox injected");
        }
        assert!(get!(&app, &token_uri())["access_token"].is_string());
        assert_eq!(sb.calls().token, 3);
    }

    /// The answer of `State::get_ticket` for `token` at `now`.
    fn ticket_at(state: &mut State, token: &str, now: Instant) -> Value {
        let q = HashMap::from([
            ("access_token".to_string(), token.to_string()),
            ("type".to_string(), "jsapi".to_string()),
        ]);
        match state.ticket(Endpoint::GetTicket, &q, now) {
            Ok(answer) => json!(answer),
            Err(WxErr(code, _)) => json!({ "errcode": code }),
        }
    }

    fn classic_token_at(state: &mut State, now: Instant) -> String {
        let q = HashMap::from([
            ("grant_type".to_string(), "client_credential".to_string()),
            ("appid".to_string(), APP.to_string()),
            ("secret".to_string(), "s3cret".to_string()),
        ]);
        let answer = json!(state.classic_token(&q, now).unwrap_or_default());
        answer["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn state(reissue: &[Endpoint]) -> State {
        State::new(SandboxConfig {
            apps: vec![(APP.into(), "s3cret".into())],
            expires_in: 100,
            reissue: reissue.iter().copied().collect(),
            ..SandboxConfig::default()
        })
    }

    #[test]
    fn by_default_every_ticket_call_mints_a_new_ticket() {
        let mut st = state(&[]);
        let t0 = Instant::now();
        let token = classic_token_at(&mut st, t0);
        let a = ticket_at(&mut st, &token, t0);
        let b = ticket_at(&mut st, &token, t0 + Duration::from_secs(1));
        assert_ne!(a["ticket"], b["ticket"]);
    }

    /// WeChat's re-issue: the same ticket, with a fresh expires_in, even with a new
    /// token; it still dies at its first expiry, and only then comes a new one.
    #[test]
    fn a_reissued_ticket_comes_with_a_fresh_expires_in_and_dies_at_its_first_expiry() {
        let mut st = state(&[Endpoint::GetTicket]);
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let token = classic_token_at(&mut st, at(0));
        let first = ticket_at(&mut st, &token, at(0));
        let ticket = first["ticket"].as_str().unwrap().to_string();

        let newer_token = classic_token_at(&mut st, at(90));
        let again = ticket_at(&mut st, &newer_token, at(90));
        assert_eq!(again["ticket"], first["ticket"], "re-issued, not minted");
        assert_eq!(again["expires_in"], 100, "with a fresh expires_in");
        let rec = &st.tickets[&ticket];
        assert_eq!(rec.expires_at, at(100), "its life is not extended");

        let after = ticket_at(&mut st, &newer_token, at(100));
        assert_ne!(
            after["ticket"], first["ticket"],
            "a new one after the expiry"
        );
    }

    #[test]
    fn tokens_that_were_never_issued_replaced_or_expired_answer_their_own_errcodes() {
        let mut st = state(&[]);
        st.grace_secs = 30;
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert_eq!(ticket_at(&mut st, "made-up", at(0))["errcode"], 40014);
        let old = classic_token_at(&mut st, at(0));
        let new = classic_token_at(&mut st, at(10));
        assert_eq!(ticket_at(&mut st, &old, at(10 + 29))["errcode"], 0, "grace");
        assert_eq!(ticket_at(&mut st, &old, at(10 + 30))["errcode"], 40001);
        assert_eq!(ticket_at(&mut st, &new, at(10 + 100))["errcode"], 42001);
    }

    fn stable_at(st: &mut State, force: bool, now: Instant) -> Value {
        let req = StableTokenRequest {
            grant_type: Some("client_credential".into()),
            appid: Some(APP.into()),
            secret: Some("s3cret".into()),
            force_refresh: Some(force),
        };
        json!(st.stable_token(&req, now).unwrap_or_default())
    }

    /// The stable token states the time it has left, and is rotated in its last
    /// quarter (at most 300 s before the end).
    #[test]
    fn a_stable_token_tells_its_remaining_life_and_rotates_near_its_end() {
        let mut st = state(&[]);
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let first = stable_at(&mut st, false, at(0));
        let later = stable_at(&mut st, false, at(60));
        assert_eq!(later["access_token"], first["access_token"]);
        assert_eq!(later["expires_in"], 40);
        let rotated = stable_at(&mut st, false, at(76));
        assert_ne!(rotated["access_token"], first["access_token"]);
        assert_eq!(rotated["expires_in"], 100);
        let forced = stable_at(&mut st, true, at(77));
        assert_ne!(forced["access_token"], rotated["access_token"]);
    }

    fn work_token_at(st: &mut State, secret: &str, now: Instant) -> Value {
        let q = HashMap::from([
            ("corpid".to_string(), "corp".to_string()),
            ("corpsecret".to_string(), secret.to_string()),
        ]);
        json!(st.work_token(&q, now).unwrap_or_default())
    }

    fn work_ticket_at(st: &mut State, kind: &str, token: &Value, now: Instant) -> Value {
        let token = token["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut q = HashMap::from([("access_token".to_string(), token)]);
        let answer = if kind == "agent" {
            q.insert("type".into(), "agent_config".into());
            st.ticket(Endpoint::AgentTicket, &q, now)
        } else {
            st.ticket(Endpoint::WorkJsapiTicket, &q, now)
        };
        json!(answer.unwrap_or_default())
    }

    /// WeChat Work: each application (secret) has its own token, the same one until it
    /// expires; the corp ticket is the corp's, the agent ticket the application's.
    #[test]
    fn work_tokens_and_agent_tickets_belong_to_an_application_and_are_reissued() {
        let mut st = State::new(SandboxConfig {
            expires_in: 100,
            ..SandboxConfig::default()
        });
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let a = work_token_at(&mut st, "secret-a", at(0));
        let b = work_token_at(&mut st, "secret-b", at(0));
        assert_ne!(a["access_token"], b["access_token"]);
        let a_late = work_token_at(&mut st, "secret-a", at(99));
        assert_eq!(
            a_late["access_token"], a["access_token"],
            "no early rotation"
        );
        assert_eq!(a_late["expires_in"], 100);
        assert_ne!(
            work_token_at(&mut st, "secret-a", at(100))["access_token"],
            a["access_token"]
        );

        let corp_a = work_ticket_at(&mut st, "corp", &a, at(1));
        let corp_b = work_ticket_at(&mut st, "corp", &b, at(1));
        assert_eq!(corp_a["ticket"], corp_b["ticket"], "one corp ticket");
        let agent_a = work_ticket_at(&mut st, "agent", &a, at(1));
        let agent_b = work_ticket_at(&mut st, "agent", &b, at(1));
        assert_ne!(
            agent_a["ticket"], agent_b["ticket"],
            "an agent ticket per app"
        );
        assert_eq!(
            work_ticket_at(&mut st, "agent", &a, at(2))["ticket"],
            agent_a["ticket"]
        );
    }

    #[test]
    fn tickets_valid_during_an_interval_include_those_that_expired_within_it() {
        let sb = sandbox(300);
        let t0 = Instant::now();
        let (token, ticket) = {
            let mut st = sb.lock();
            st.expires_in = 10;
            let token = classic_token_at(&mut st, t0);
            let ticket = ticket_at(&mut st, &token, t0)["ticket"]
                .as_str()
                .unwrap()
                .to_string();
            (token, ticket)
        };
        let during = |from: u64, to: u64| {
            sb.tickets_valid_during(
                APP,
                TicketKind::Jsapi,
                t0 + Duration::from_secs(from),
                t0 + Duration::from_secs(to),
            )
        };
        assert_eq!(during(0, 1), vec![ticket.clone()]);
        assert_eq!(during(9, 12), vec![ticket.clone()]);
        assert!(during(10, 12).is_empty(), "expired");
        assert!(!token.is_empty());
    }

    #[actix_web::test]
    async fn bad_input_answers_errors() {
        let sb = sandbox(300);
        let app = atest::init_service(App::new().configure(|c| sb.configure(c))).await;
        let cases = [
            ("/cgi-bin/token?grant_type=x&appid=a&secret=b", 40002),
            (
                "/cgi-bin/token?grant_type=client_credential&secret=b",
                41002,
            ),
            ("/cgi-bin/token?grant_type=client_credential&appid=a", 41004),
            (
                "/cgi-bin/token?grant_type=client_credential&appid=a&secret=b",
                40013,
            ),
            (
                "/cgi-bin/token?grant_type=client_credential&appid=wx-app&secret=b",
                40125,
            ),
            ("/cgi-bin/ticket/getticket?type=jsapi", 41001),
        ];
        for (uri, code) in cases {
            assert_eq!(get!(&app, uri)["errcode"], code, "{uri}");
        }
        let token = get!(&app, &token_uri());
        let uri = ticket_uri(&token).replace("jsapi", "nope");
        assert_eq!(get!(&app, &uri)["errcode"], 40097);
        let req = atest::TestRequest::post()
            .uri("/cgi-bin/stable_token")
            .set_payload("{not json")
            .to_request();
        let answer: Value = atest::call_and_read_body_json(&app, req).await;
        assert_eq!(answer["errcode"], 47001);
        let req = atest::TestRequest::post()
            .uri("/sandbox/settings")
            .set_payload("{\"expires_in\": -1}")
            .to_request();
        assert_eq!(atest::call_service(&app, req).await.status(), 400);
        sb.set_expires_in(u64::MAX);
        assert_eq!(get!(&app, &token_uri())["expires_in"], u64::MAX);
    }

    #[actix_web::test]
    async fn serve_answers_over_http_after_injected_delay() -> Result<(), Box<dyn std::error::Error>>
    {
        let sb = sandbox(300);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let base = format!("http://{}", listener.local_addr()?);
        let server = sb.serve(listener)?;
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let client = reqwest::Client::new();
        let fault = json!({ "endpoint": "getticket", "delay_ms": 20 });
        let resp = client
            .post(format!("{base}/sandbox/faults"))
            .json(&fault)
            .send()
            .await?;
        assert_eq!(resp.status(), 204);
        let token: Value = client
            .get(format!("{base}{}", token_uri()))
            .send()
            .await?
            .json()
            .await?;
        let started = Instant::now();
        let ticket: Value = client
            .get(format!("{base}{}", ticket_uri(&token)))
            .send()
            .await?
            .json()
            .await?;
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert_eq!(
            ticket["errcode"], 0,
            "a delay-only fault still answers normally"
        );
        let calls: CallCounts = client
            .get(format!("{base}/sandbox/calls"))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!((calls.token, calls.getticket), (1, 1));
        let resp = client
            .get(format!("{base}/sandbox/ticket?appid=nobody"))
            .send()
            .await?;
        assert_eq!(resp.status(), 404);
        let newest: Value = client
            .get(format!("{base}/sandbox/ticket?appid={APP}&type=jsapi"))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(newest["ticket"], ticket["ticket"]);
        for (kind, status) in [("wx_card", 404), ("agent_config", 404), ("card", 400)] {
            let resp = client
                .get(format!("{base}/sandbox/ticket?appid={APP}&type={kind}"))
                .send()
                .await?;
            assert_eq!(resp.status(), status, "type={kind}");
        }
        handle.stop(false).await;
        Ok(())
    }
}
