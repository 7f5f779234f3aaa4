//! The HTTP surface. Each route group has its own module; this one holds what they
//! share: the state handed to handlers, the app a request is for, and the routing
//! table (the one place to look to see where a request goes).

mod admin;
mod card;
mod cors;
mod gateway;
mod health;
mod jssdk;
mod openapi;
mod params;
mod public;
mod verify;

use std::collections::BTreeMap;
use std::future::{ready, Ready};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use actix_web::dev::{HttpServiceFactory, Payload};
use actix_web::{guard, http::Method, web, FromRequest, HttpRequest};

use crate::access::{AdminKeys, FailedAuthentications, TrustedProxies};
use crate::cache::{Context, Credential, CredentialCache};
use crate::configuration::{AppSettings, Settings};
use crate::error::ApiError;
use crate::wechat::WechatClient;

pub(crate) use gateway::Upstream;

/// Shared by every worker.
pub(crate) struct AppState {
    pub(crate) apps: Apps,
    pub(crate) cache: Arc<CredentialCache>,
    /// Keys of the admin routes (`admin.keys`); none: those routes do not exist.
    pub(crate) admin: AdminKeys,
    /// `wechat.verify_max_age_secs`: the replay window of server-URL requests, if any.
    pub(crate) verify_max_age: Option<std::time::Duration>,
    /// Who guessed admin keys wrong lately.
    pub(crate) failed_authentications: FailedAuthentications,
    /// `server.trusted_proxies`: how the client of a request is found.
    pub(crate) trusted_proxies: TrustedProxies,
    /// `gateway.enabled`: whether WeChat's own routes are answered ([`gateway`]).
    pub(crate) gateway_enabled: bool,
}

impl AppState {
    /// The client of `req`: its peer, or behind trusted proxies the address they
    /// forwarded. A request without a peer (only in-process tests make those) is
    /// counted as the unspecified address.
    pub(crate) fn client_of(&self, req: &HttpRequest) -> IpAddr {
        let peer = req
            .peer_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok());
        self.trusted_proxies.client(peer, forwarded)
    }
}

/// The configured apps, by name.
pub(crate) struct Apps {
    by_name: BTreeMap<String, Arc<AppSettings>>,
    default: Option<String>,
    /// Every app's domain verification files, by name (one content per name: checked
    /// at start-up).
    verify_files: BTreeMap<String, String>,
}

impl Apps {
    pub(crate) fn from_settings(settings: &Settings) -> Self {
        Self {
            by_name: settings
                .apps
                .iter()
                .map(|(name, app)| (name.clone(), Arc::new(app.clone().named(name))))
                .collect(),
            default: settings.default_app().map(|(name, _)| name.to_string()),
            verify_files: settings
                .apps
                .values()
                .flat_map(|app| app.domain_verify_files.clone())
                .collect(),
        }
    }

    /// The content of the domain verification file `name`, if an app has one.
    fn verify_file(&self, name: &str) -> Option<&str> {
        self.verify_files.get(name).map(String::as_str)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Every app's cache id (its keys' hash tag).
    pub(crate) fn cache_ids(&self) -> impl Iterator<Item = &str> {
        self.by_name.values().map(|app| app.cache_id())
    }

    /// Every configured app.
    fn all(&self) -> impl Iterator<Item = &Arc<AppSettings>> {
        self.by_name.values()
    }

    fn named(&self, name: &str) -> Result<Arc<AppSettings>, ApiError> {
        self.by_name
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::UnknownApp(name.chars().take(64).collect()))
    }

    fn default_app(&self) -> Result<Arc<AppSettings>, ApiError> {
        let name = self.default.as_deref().ok_or(ApiError::NoDefaultApp)?;
        self.named(name)
    }
}

/// The app a request is for: `{name}` in `/v1/apps/{name}/...`, or the default app
/// on the short routes.
pub(crate) struct SelectedApp(pub(crate) Arc<AppSettings>);

impl SelectedApp {
    /// What the cache needs to fetch this app's credentials on this worker.
    pub(crate) fn context(&self, wechat: web::Data<WechatClient>) -> Context {
        Context {
            app: self.0.clone(),
            wechat: wechat.into_inner(),
        }
    }
}

impl FromRequest for SelectedApp {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::Unavailable(
                "application state missing".into(),
            )));
        };
        let app = match req.match_info().get("name") {
            Some(name) => state.apps.named(name),
            None => state.apps.default_app(),
        };
        ready(app.map(SelectedApp))
    }
}

/// The routing table. Every route is described in `openapi.json` (a test checks it).
/// `/metrics` is served here unless an operations listener serves it
/// ([`configure_ops`]); the probes are served on both, since load balancers probe
/// the public one.
///
/// **Order.** actix tries the resources in the order they are registered, and a
/// pattern with a `{name}` segment is matched with a regex. The probes and the
/// signing routes (nearly all of the traffic) come first, so that `/healthz` and the
/// seed-compatible `/wxJssdk/getJssdk` are found by string comparisons alone, and
/// `/v1/apps/{name}/jssdk/config` by the first regex tried. No two patterns match the
/// same path, so the order changes nothing else.
pub(crate) fn configure(cfg: &mut web::ServiceConfig, with_metrics: bool) {
    probes(cfg);
    cfg.service(signing_resource("/wxJssdk/getJssdk", jssdk::config))
        .service(signing_resource(
            "/v1/apps/{name}/jssdk/config",
            jssdk::config,
        ));
    if with_metrics {
        cfg.service(metrics());
    }
    cfg.service(with_methods(
        web::resource("/openapi.json").route(web::get().to(openapi::document)),
    ))
    .service(verify_resource("/wxJssdk"))
    .service(verify_resource("/v1/apps/{name}/verify"))
    .service(signing_resource("/v1/apps/{name}/card/sign", card::sign))
    .service(public_resource("/wxJssdk/public/{name}", public::file))
    .service(public_resource("/wxJssdk/public/", public::index))
    .service(public_resource("/wxJssdk/public", public::folder))
    .service(public_resource(
        "/{file:[A-Za-z0-9_-]+\\.txt}",
        public::verify_file,
    ))
    .service(admin_resource(
        "/v1/apps/{name}/access_token",
        web::get().to(admin::access_token),
    ))
    .service(admin_resource(
        "/v1/apps/{name}/access_token/invalidate",
        admin::invalidation(Credential::AccessToken),
    ))
    .service(admin_resource(
        "/v1/apps/{name}/jsapi_ticket/invalidate",
        admin::invalidation(Credential::JsapiTicket),
    ))
    .service(admin_resource(
        "/v1/apps/{name}/card_ticket/invalidate",
        admin::invalidation(Credential::CardTicket),
    ))
    .service(admin_resource(
        "/v1/apps/{name}/agent_ticket/invalidate",
        admin::invalidation(Credential::AgentTicket),
    ));
    gateway::configure(cfg);
}

/// The routes of the operations listener (`server.ops_bind`).
pub(crate) fn configure_ops(cfg: &mut web::ServiceConfig) {
    probes(cfg);
    cfg.service(metrics());
}

/// Liveness and readiness: HEAD too, which some load balancers send.
fn probes(cfg: &mut web::ServiceConfig) {
    cfg.service(with_methods(
        counted("/healthz")
            .route(web::get().to(health::healthz))
            .route(web::head().to(health::healthz)),
    ))
    .service(with_methods(
        counted("/readyz")
            .route(web::get().to(health::readyz))
            .route(web::head().to(health::readyz)),
    ));
}

fn metrics() -> actix_web::Resource {
    with_methods(web::resource("/metrics").route(web::get().to(health::metrics)))
}

/// A page file: `GET`, and `HEAD` for clients that check a file before fetching it.
fn public_resource<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    with_methods(
        web::resource(path)
            .route(web::get().to(handler.clone()))
            .route(web::head().to(handler)),
    )
}

fn verify_resource(path: &str) -> actix_web::Resource {
    with_methods(
        web::resource(path)
            .route(web::get().to(verify::server_url_check))
            .route(web::post().to(verify::message_push)),
    )
}

/// A signing route (`wx.config`, cards): GET and POST, with CORS for the app's
/// `cors_origins` (preflights included), since pages call it from the browser.
fn signing_resource<F, Args>(path: &str, handler: F) -> impl HttpServiceFactory
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    with_methods(
        counted(path)
            .route(web::get().to(handler.clone()))
            .route(web::post().to(handler))
            .route(web::method(Method::OPTIONS).to(cors::options)),
    )
    .wrap(actix_web::middleware::from_fn(cors::cors))
}

/// A resource of the hot routes (probes, signing), with its request metrics resolved
/// once here rather than looked up by label for every request
/// ([`crate::metrics::RouteSeries`]).
fn counted(path: &str) -> actix_web::Resource {
    let resource = web::resource(path);
    match crate::metrics::RouteSeries::new(path) {
        Some(series) => resource.app_data(series),
        None => resource,
    }
}

/// A route that exists only when `admin.keys` are configured: otherwise its path is
/// unknown (a JSON 404), like any other.
fn admin_resource(path: &str, route: actix_web::Route) -> actix_web::Resource {
    with_methods(
        web::resource(path)
            .guard(guard::fn_guard(admin::enabled))
            .route(route),
    )
}

/// Answers other methods on a known path with a JSON 405.
fn with_methods(resource: actix_web::Resource) -> actix_web::Resource {
    resource.default_service(web::to(|| async {
        Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed)
    }))
}

/// Answers unknown paths with a JSON 404.
pub(crate) async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// Parses `query` and a `body` of `content_type` into the parameters of every route
/// that reads them (`wx.config` and card signing, server-URL verification), with the
/// same functions the handlers use, and reports how many parsed. The handlers read
/// bodies inside actix's runtime; this is the pure part behind them, public so that
/// the fuzzer (`fuzz/fuzz_targets/request_params.rs`) can reach it without a server.
pub fn parse_request_params(query: &str, content_type: &str, body: &[u8]) -> usize {
    use params::{parse_body, parse_query};
    // An error must render too: its message goes back to the client.
    fn ok<T>(parsed: Result<T, ApiError>) -> usize {
        parsed.map_err(|e| e.to_string()).is_ok().into()
    }
    ok(parse_query::<jssdk::UrlParam>(query))
        + ok(parse_query::<card::CardParams>(query))
        + ok(parse_query::<verify::SignedQuery>(query))
        + ok(parse_body::<jssdk::UrlParam>(content_type, body))
        + ok(parse_body::<card::CardParams>(content_type, body))
}
