//! An in-process stand-in for the WeChat API: official accounts (`api.weixin.qq.com`)
//! and WeChat Work (`qyapi.weixin.qq.com`), whose paths do not collide, so one sandbox
//! serves both bases.
//!
//! Integration tests, the `--dev` demo mode and the local stack point the service at this
//! sandbox instead of WeChat, so that token/ticket caching can be exercised without real
//! credentials, quotas or network access.
//!
//! It mirrors the endpoints the service depends on, with the upstream semantics that
//! matter for caching (see the WeChat API notes in the README):
//! - `GET /cgi-bin/token`: every call mints a new token; earlier ones die after a grace period.
//! - `POST /cgi-bin/stable_token`: one current token per appid, independent of the classic
//!   one, rotated in the last quarter of its life.
//! - `GET /cgi-bin/ticket/getticket`: jsapi / wx_card tickets, optionally reused (the same
//!   ticket with a fresh `expires_in`, as WeChat Work does).
//! - WeChat Work: `GET /cgi-bin/gettoken` (the same token while it lasts),
//!   `GET /cgi-bin/get_jsapi_ticket` and `GET /cgi-bin/ticket/get?type=agent_config`.
//!
//! Tests steer it through [`Sandbox`] methods, or over HTTP through `/sandbox/*` when the
//! sandbox runs as a separate process: call counters, injected errcodes and delays, a
//! configurable `expires_in`, and revocation ("someone else refreshed the token").
//!
//! Deliberately not modelled: the caller-IP whitelist (40164), daily quotas (45009) and the
//! force-refresh rate limit, the separate agent tickets of a corp's applications, message
//! pushes, and persistence across restarts. Time comes from [`Instant`], so expiry is real
//! wall-clock expiry; tests get "expired" states through a zero `expires_in` or grace
//! period rather than by waiting.
//!
//! Like WeChat, every API error is an HTTP 200 with `{"errcode": N, "errmsg": "..."}`.
//! Handlers never panic on bad input, and a poisoned mutex is recovered rather than propagated.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

/// Longest lifetime the sandbox will represent; larger `expires_in` values are clamped so that
/// `Instant` arithmetic can never overflow (and panic) on hostile settings.
const MAX_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// How long expired tokens/tickets are remembered, so that they answer 42001 ("expired")
/// rather than 40001 ("unknown") for a while, without the maps growing forever.
const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Pruning is amortised: it runs only when the maps have doubled since the last pass.
const PRUNE_MIN: usize = 1024;

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
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            expires_in: 7200,
            apps: Vec::new(),
            old_token_grace_secs: 300,
        }
    }
}

/// Number of requests each WeChat endpoint has received, including rejected ones, so tests
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
    pub getticket: u64,
}

/// A scripted misbehaviour of one endpoint, to test retries, timeouts and error handling.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    /// Which endpoint it applies to.
    pub endpoint: Endpoint,
    /// Answer `{"errcode": N, "errmsg": "sandbox injected"}` instead of the normal answer.
    #[serde(default)]
    pub errcode: Option<i64>,
    /// Sleep this long before answering (errcode or normal answer).
    #[serde(default)]
    pub delay_ms: u64,
    /// How many calls this fault applies to before it is removed (0 = forever).
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

/// The WeChat endpoints a [`Fault`] can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// WeChat Work answers carry `errcode: 0` on success too.
fn with_ok(mut answer: Value) -> Value {
    if let Some(fields) = answer.as_object_mut() {
        fields.insert("errcode".into(), json!(0));
        fields.insert("errmsg".into(), json!("ok"));
    }
    answer
}

/// A WeChat-style error answer.
#[derive(Debug, Clone, Copy)]
struct WxErr(i64, &'static str);

const BAD_GRANT: WxErr = WxErr(40002, "invalid grant_type");
const APPID_MISSING: WxErr = WxErr(41002, "appid missing");
const SECRET_MISSING: WxErr = WxErr(41004, "appsecret missing");
const BAD_APPID: WxErr = WxErr(40013, "invalid appid");
const BAD_SECRET: WxErr = WxErr(40125, "invalid appsecret");
const TOKEN_MISSING: WxErr = WxErr(41001, "access_token missing");
const TOKEN_INVALID: WxErr = WxErr(
    40001,
    "invalid credential, access_token is invalid or not latest",
);
const TOKEN_EXPIRED: WxErr = WxErr(42001, "access_token expired");
const BAD_TICKET_TYPE: WxErr = WxErr(40097, "invalid args");
const DATA_FORMAT: WxErr = WxErr(47001, "data format error");

fn wx_json(errcode: i64, errmsg: &str) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "errcode": errcode, "errmsg": errmsg }))
}

fn respond(result: Result<Value, WxErr>) -> HttpResponse {
    match result {
        Ok(body) => HttpResponse::Ok().json(body),
        Err(WxErr(code, msg)) => wx_json(code, msg),
    }
}

fn bad_request(msg: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": msg.to_string() }))
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
    /// WeChat Work: like a stable token, the same one is handed out while it lasts.
    Work,
}

/// Why a token stops working, which decides the errcode once it is past its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenStatus {
    Live,
    /// A newer token of the same kind cut this one's life short: WeChat says "not latest".
    Superseded,
    Revoked,
}

#[derive(Debug)]
struct TokenRec {
    appid: String,
    kind: TokenKind,
    expires_at: Instant,
    status: TokenStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TicketKind {
    Jsapi,
    WxCard,
    /// WeChat Work: the corp's jsapi ticket.
    CorpJsapi,
    /// WeChat Work: an application's agent_config ticket (one per corp here: the sandbox
    /// does not tell a corp's applications apart).
    Agent,
}

impl TicketKind {
    fn parse(s: Option<&str>) -> Result<Self, WxErr> {
        match s {
            Some("jsapi") => Ok(Self::Jsapi),
            Some("wx_card") => Ok(Self::WxCard),
            _ => Err(BAD_TICKET_TYPE),
        }
    }
}

#[derive(Debug)]
struct TicketRec {
    appid: String,
    kind: TicketKind,
    expires_at: Instant,
}

#[derive(Debug, Deserialize)]
struct StableTokenRequest {
    grant_type: Option<String>,
    appid: Option<String>,
    secret: Option<String>,
    force_refresh: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsRequest {
    expires_in: Option<u64>,
    reuse_ticket: Option<bool>,
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
    reuse_ticket: bool,
    calls: CallCounts,
    faults: Vec<Fault>,
    tokens: HashMap<String, TokenRec>,
    /// (kind, appid) -> its current stable or WeChat Work token.
    current: HashMap<(TokenKind, String), String>,
    tickets: HashMap<String, TicketRec>,
    /// (appid, kind) -> newest ticket issued.
    newest_ticket: HashMap<(String, TicketKind), String>,
    prune_at: usize,
}

impl State {
    fn new(config: SandboxConfig) -> Self {
        Self {
            expires_in: config.expires_in,
            apps: config.apps,
            grace_secs: config.old_token_grace_secs,
            reuse_ticket: false,
            calls: CallCounts::default(),
            faults: Vec::new(),
            tokens: HashMap::new(),
            current: HashMap::new(),
            tickets: HashMap::new(),
            newest_ticket: HashMap::new(),
            prune_at: PRUNE_MIN,
        }
    }

    fn count(&mut self, endpoint: Endpoint, force: bool) {
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
        }
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
        if grant_type != Some("client_credential") {
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

    /// Older still-valid tokens of the same appid and kind keep working only for the grace period.
    fn supersede(&mut self, appid: &str, kind: TokenKind, now: Instant) {
        let cutoff = deadline(now, self.grace_secs);
        for rec in self.tokens.values_mut() {
            let same = rec.appid == appid && rec.kind == kind;
            if same && rec.status == TokenStatus::Live && cutoff < rec.expires_at {
                rec.expires_at = cutoff;
                rec.status = TokenStatus::Superseded;
            }
        }
    }

    fn mint_token(&mut self, appid: &str, kind: TokenKind, now: Instant) -> Value {
        self.prune(now);
        self.supersede(appid, kind, now);
        let prefix = match kind {
            TokenKind::Classic => "sbx-at-",
            TokenKind::Stable => "sbx-st-",
            TokenKind::Work => "sbx-wt-",
        };
        let token = format!("{prefix}{}", Uuid::new_v4().simple());
        let rec = TokenRec {
            appid: appid.to_owned(),
            kind,
            expires_at: deadline(now, self.expires_in),
            status: TokenStatus::Live,
        };
        self.tokens.insert(token.clone(), rec);
        if kind != TokenKind::Classic {
            self.current.insert((kind, appid.to_owned()), token.clone());
        }
        log::debug!("sandbox: minted {kind:?} token for {appid}");
        json!({ "access_token": token, "expires_in": self.expires_in })
    }

    /// The appid owning `token` if it can be used right now.
    fn check_token(&self, token: &str, now: Instant) -> Result<String, WxErr> {
        let rec = self.tokens.get(token).ok_or(TOKEN_INVALID)?;
        match rec.status {
            TokenStatus::Revoked => Err(TOKEN_INVALID),
            _ if now < rec.expires_at => Ok(rec.appid.clone()),
            TokenStatus::Superseded => Err(TOKEN_INVALID),
            TokenStatus::Live => Err(TOKEN_EXPIRED),
        }
    }

    fn classic_token(&mut self, q: &HashMap<String, String>, now: Instant) -> Result<Value, WxErr> {
        let get = |k: &str| q.get(k).map(String::as_str);
        let appid = self.check_credentials(get("grant_type"), get("appid"), get("secret"))?;
        Ok(self.mint_token(&appid, TokenKind::Classic, now))
    }

    fn stable_token(&mut self, req: &StableTokenRequest, now: Instant) -> Result<Value, WxErr> {
        let appid = self.check_credentials(
            req.grant_type.as_deref(),
            req.appid.as_deref(),
            req.secret.as_deref(),
        )?;
        if !req.force_refresh.unwrap_or(false) {
            if let Some(answer) = self.current_token(TokenKind::Stable, &appid, now) {
                return Ok(answer);
            }
        }
        Ok(self.mint_token(&appid, TokenKind::Stable, now))
    }

    /// WeChat Work `gettoken`: the corp application's current token while it lasts.
    fn work_token(&mut self, q: &HashMap<String, String>, now: Instant) -> Result<Value, WxErr> {
        let get = |k: &str| q.get(k).map(String::as_str);
        let corpid =
            self.check_credentials(Some("client_credential"), get("corpid"), get("corpsecret"))?;
        let answer = match self.current_token(TokenKind::Work, &corpid, now) {
            Some(answer) => answer,
            None => self.mint_token(&corpid, TokenKind::Work, now),
        };
        Ok(with_ok(answer))
    }

    /// The current stable token with its remaining lifetime, if it is still usable and
    /// not yet in its last stretch: like WeChat, which hands out a new stable token about
    /// 5 minutes before the current one expires (here: a quarter of `expires_in`, at
    /// most 300 s, so that short test windows rotate too).
    fn current_token(&self, kind: TokenKind, appid: &str, now: Instant) -> Option<Value> {
        let token = self.current.get(&(kind, appid.to_owned()))?;
        self.check_token(token, now).ok()?;
        let rec = self.tokens.get(token)?;
        let remaining = rec.expires_at.saturating_duration_since(now);
        let rotate_within = Duration::from_secs(self.expires_in.min(1200)) / 4;
        if remaining <= rotate_within {
            return None;
        }
        Some(json!({ "access_token": token, "expires_in": remaining.as_secs().max(1) }))
    }

    fn get_ticket(&mut self, q: &HashMap<String, String>, now: Instant) -> Result<Value, WxErr> {
        let kind = TicketKind::parse(q.get("type").map(String::as_str));
        self.issue_ticket(q, kind, now)
    }

    /// WeChat Work `get_jsapi_ticket`.
    fn work_jsapi_ticket(
        &mut self,
        q: &HashMap<String, String>,
        now: Instant,
    ) -> Result<Value, WxErr> {
        self.issue_ticket(q, Ok(TicketKind::CorpJsapi), now)
    }

    /// WeChat Work `ticket/get?type=agent_config`.
    fn agent_ticket(&mut self, q: &HashMap<String, String>, now: Instant) -> Result<Value, WxErr> {
        let kind = match q.get("type").map(String::as_str) {
            Some("agent_config") => Ok(TicketKind::Agent),
            _ => Err(BAD_TICKET_TYPE),
        };
        self.issue_ticket(q, kind, now)
    }

    fn issue_ticket(
        &mut self,
        q: &HashMap<String, String>,
        kind: Result<TicketKind, WxErr>,
        now: Instant,
    ) -> Result<Value, WxErr> {
        let token = q.get("access_token").filter(|t| !t.is_empty());
        let appid = self.check_token(token.ok_or(TOKEN_MISSING)?, now)?;
        let kind = kind?;
        let ticket = match self.reusable_ticket(&appid, kind, now) {
            Some(ticket) => ticket,
            None => self.mint_ticket(&appid, kind, now),
        };
        Ok(json!({ "errcode": 0, "errmsg": "ok", "ticket": ticket, "expires_in": self.expires_in }))
    }

    /// In reuse mode, the newest unexpired ticket, its life extended to a full `expires_in`
    /// (WeChat Work answers a refetch with the same ticket and a fresh `expires_in`).
    fn reusable_ticket(&mut self, appid: &str, kind: TicketKind, now: Instant) -> Option<String> {
        if !self.reuse_ticket {
            return None;
        }
        let ticket = self.newest_ticket.get(&(appid.to_owned(), kind))?;
        let rec = self
            .tickets
            .get_mut(ticket)
            .filter(|r| now < r.expires_at)?;
        rec.expires_at = deadline(now, self.expires_in);
        Some(ticket.clone())
    }

    fn mint_ticket(&mut self, appid: &str, kind: TicketKind, now: Instant) -> String {
        self.prune(now);
        let prefix = match kind {
            TicketKind::Jsapi => "sbx-tk-",
            TicketKind::WxCard => "sbx-ck-",
            TicketKind::CorpJsapi => "sbx-cj-",
            TicketKind::Agent => "sbx-ag-",
        };
        let ticket = format!("{prefix}{}", Uuid::new_v4().simple());
        let rec = TicketRec {
            appid: appid.to_owned(),
            kind,
            expires_at: deadline(now, self.expires_in),
        };
        self.tickets.insert(ticket.clone(), rec);
        self.newest_ticket
            .insert((appid.to_owned(), kind), ticket.clone());
        log::debug!("sandbox: minted {kind:?} ticket for {appid}");
        ticket
    }

    fn is_valid_ticket(&self, appid: &str, ticket: &str, now: Instant) -> bool {
        self.tickets
            .get(ticket)
            .is_some_and(|r| r.appid == appid && r.kind == TicketKind::Jsapi && now < r.expires_at)
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
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        let s = self.clone();
        cfg.route(
            "/cgi-bin/token",
            web::get().to(move |req: HttpRequest| s.clone().token_handler(req)),
        );
        let s = self.clone();
        cfg.route(
            "/cgi-bin/stable_token",
            web::post().to(move |body: web::Bytes| s.clone().stable_token_handler(body)),
        );
        let s = self.clone();
        cfg.route(
            "/cgi-bin/ticket/getticket",
            web::get().to(move |req: HttpRequest| s.clone().ticket_handler(req)),
        );
        self.configure_work(cfg);
        self.configure_control(cfg);
    }

    /// The WeChat Work endpoints (`qyapi.weixin.qq.com`): the service's `work_api_base`
    /// points here as well as its `api_base`, as the paths do not collide.
    fn configure_work(&self, cfg: &mut web::ServiceConfig) {
        let s = self.clone();
        cfg.route(
            "/cgi-bin/gettoken",
            web::get().to(move |req: HttpRequest| s.clone().work_token_handler(req)),
        );
        let s = self.clone();
        cfg.route(
            "/cgi-bin/get_jsapi_ticket",
            web::get().to(move |req: HttpRequest| s.clone().work_jsapi_ticket_handler(req)),
        );
        let s = self.clone();
        cfg.route(
            "/cgi-bin/ticket/get",
            web::get().to(move |req: HttpRequest| s.clone().agent_ticket_handler(req)),
        );
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

    pub fn reset_calls(&self) {
        self.lock().calls = CallCounts::default();
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

    /// When on, getticket returns the current ticket with a fresh `expires_in` instead of
    /// minting one per call, as WeChat Work does.
    pub fn set_reuse_ticket(&self, on: bool) {
        self.lock().reuse_ticket = on;
    }

    /// Invalidates every token of `appid` at once, as if another process had refreshed it.
    pub fn revoke_tokens(&self, appid: &str) {
        let mut st = self.lock();
        for rec in st.tokens.values_mut().filter(|r| r.appid == appid) {
            rec.status = TokenStatus::Revoked;
        }
    }

    /// The newest jsapi ticket issued for `appid`, expired or not.
    pub fn current_ticket(&self, appid: &str) -> Option<String> {
        self.newest_of_kind(appid, TicketKind::Jsapi)
    }

    fn newest_of_kind(&self, appid: &str, kind: TicketKind) -> Option<String> {
        let key = (appid.to_owned(), kind);
        self.lock().newest_ticket.get(&key).cloned()
    }

    /// Whether `ticket` is a jsapi ticket issued for `appid` and not yet expired.
    /// Every jsapi ticket of `appid` that is still valid: a page signed with any of
    /// them passes `wx.config`.
    pub fn valid_tickets(&self, appid: &str) -> Vec<String> {
        self.valid_of_kind(appid, TicketKind::Jsapi)
    }

    /// Every valid card api_ticket of `appid`.
    pub fn valid_card_tickets(&self, appid: &str) -> Vec<String> {
        self.valid_of_kind(appid, TicketKind::WxCard)
    }

    /// Every valid WeChat Work jsapi ticket of `corpid` (`wx.config`).
    pub fn valid_corp_tickets(&self, corpid: &str) -> Vec<String> {
        self.valid_of_kind(corpid, TicketKind::CorpJsapi)
    }

    /// Every valid WeChat Work agent ticket of `corpid` (`wx.agentConfig`).
    pub fn valid_agent_tickets(&self, corpid: &str) -> Vec<String> {
        self.valid_of_kind(corpid, TicketKind::Agent)
    }

    fn valid_of_kind(&self, appid: &str, kind: TicketKind) -> Vec<String> {
        let now = Instant::now();
        let state = self.lock();
        state
            .tickets
            .iter()
            .filter(|(_, t)| t.appid == appid && t.kind == kind && t.expires_at > now)
            .map(|(ticket, _)| ticket.clone())
            .collect()
    }

    pub fn is_valid_ticket(&self, appid: &str, ticket: &str) -> bool {
        self.lock().is_valid_ticket(appid, ticket, Instant::now())
    }

    /// Counts the call and plays the first matching fault. `Some` is the injected error
    /// answer; `None` means the normal answer follows (possibly after a delay).
    async fn enter(&self, endpoint: Endpoint, force: bool) -> Option<HttpResponse> {
        let fault = {
            let mut st = self.lock();
            st.count(endpoint, force);
            st.take_fault(endpoint)
        }?;
        if fault.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
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

    async fn work_jsapi_ticket_handler(self, req: HttpRequest) -> HttpResponse {
        if let Some(resp) = self.enter(Endpoint::WorkJsapiTicket, false).await {
            return resp;
        }
        respond(
            self.lock()
                .work_jsapi_ticket(&query_map(&req), Instant::now()),
        )
    }

    async fn agent_ticket_handler(self, req: HttpRequest) -> HttpResponse {
        if let Some(resp) = self.enter(Endpoint::AgentTicket, false).await {
            return resp;
        }
        respond(self.lock().agent_ticket(&query_map(&req), Instant::now()))
    }

    async fn ticket_handler(self, req: HttpRequest) -> HttpResponse {
        if let Some(resp) = self.enter(Endpoint::GetTicket, false).await {
            return resp;
        }
        let q = query_map(&req);
        respond(self.lock().get_ticket(&q, Instant::now()))
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
        if let Some(on) = settings.reuse_ticket {
            self.set_reuse_ticket(on);
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
        // needs those tickets as well. `appid` is the CorpID for the WeChat Work kinds.
        let kind = match q.get("type").map(String::as_str) {
            None | Some("jsapi") => TicketKind::Jsapi,
            Some("wx_card") => TicketKind::WxCard,
            Some("corp_jsapi") => TicketKind::CorpJsapi,
            Some("agent_config") => TicketKind::Agent,
            Some(_) => return bad_request("type: one of jsapi, wx_card, corp_jsapi, agent_config"),
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
    use actix_web::{test, App};

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
            let req = test::TestRequest::get().uri($uri).to_request();
            let body: Value = test::call_and_read_body_json($app, req).await;
            body
        }};
    }

    /// POSTs `$body` as JSON to `$uri` and decodes the JSON answer.
    macro_rules! post {
        ($app:expr, $uri:expr, $body:expr) => {{
            let req = test::TestRequest::post().uri($uri).set_json($body);
            let body: Value = test::call_and_read_body_json($app, req.to_request()).await;
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
        let app = test::init_service(App::new().configure(|c| sb.configure(c))).await;
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
        let app = test::init_service(App::new().configure(|c| sb.configure(c))).await;
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
        let app = test::init_service(App::new().configure(|c| sb.configure(c))).await;
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
        let app = test::init_service(App::new().configure(|c| sb.configure(c))).await;
        let fault = json!({ "endpoint": "token", "errcode": -1, "times": 2 });
        let req = test::TestRequest::post()
            .uri("/sandbox/faults")
            .set_json(fault);
        let resp = test::call_service(&app, req.to_request()).await;
        assert_eq!(resp.status(), 204);
        for _ in 0..2 {
            let answer = get!(&app, &token_uri());
            assert_eq!(answer["errcode"], -1);
            assert_eq!(answer["errmsg"], "sandbox injected");
        }
        assert!(get!(&app, &token_uri())["access_token"].is_string());
        assert_eq!(sb.calls().token, 3);
    }

    #[actix_web::test]
    async fn reuse_mode_returns_same_ticket() {
        let sb = sandbox(300);
        let app = test::init_service(App::new().configure(|c| sb.configure(c))).await;
        let token = get!(&app, &token_uri());
        let t1 = get!(&app, &ticket_uri(&token));
        let t2 = get!(&app, &ticket_uri(&token));
        assert_ne!(t1["ticket"], t2["ticket"], "default mode mints per call");
        sb.set_reuse_ticket(true);
        let t3 = get!(&app, &ticket_uri(&token));
        assert_eq!(t2["ticket"], t3["ticket"]);
        assert_eq!(t3["expires_in"], 7200);
        let current = sb.current_ticket(APP);
        assert_eq!(current.as_deref(), t3["ticket"].as_str());
        assert!(current.is_some_and(|t| sb.is_valid_ticket(APP, &t)));
        assert!(!sb.is_valid_ticket("other", t3["ticket"].as_str().unwrap_or_default()));
    }

    #[actix_web::test]
    async fn bad_input_answers_errors() {
        let sb = sandbox(300);
        let app = test::init_service(App::new().configure(|c| sb.configure(c))).await;
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
        let req = test::TestRequest::post()
            .uri("/cgi-bin/stable_token")
            .set_payload("{not json")
            .to_request();
        let answer: Value = test::call_and_read_body_json(&app, req).await;
        assert_eq!(answer["errcode"], 47001);
        let req = test::TestRequest::post()
            .uri("/sandbox/settings")
            .set_payload("{\"expires_in\": -1}")
            .to_request();
        assert_eq!(test::call_service(&app, req).await.status(), 400);
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
