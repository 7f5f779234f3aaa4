//! The HTTP surface. Each route group has its own module; this one holds what they
//! share: the state handed to handlers, the app a request is for, and the routing
//! table (the one place to look to see where a request goes).

mod health;
mod jssdk;
mod openapi;
mod verify;

use std::collections::BTreeMap;
use std::future::{ready, Ready};
use std::sync::Arc;

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};

use crate::cache::CredentialCache;
use crate::configuration::{AppSettings, Settings};
use crate::error::ApiError;

/// Shared by every worker.
pub struct AppState {
    pub apps: Apps,
    pub cache: Arc<CredentialCache>,
}

/// The configured apps, by name.
pub struct Apps {
    by_name: BTreeMap<String, Arc<AppSettings>>,
    default: Option<String>,
}

impl Apps {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            by_name: settings
                .apps
                .iter()
                .map(|(name, app)| (name.clone(), Arc::new(app.clone())))
                .collect(),
            default: settings.default_app().map(|(name, _)| name.to_string()),
        }
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
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
pub struct SelectedApp(pub Arc<AppSettings>);

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
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(with_methods(
        web::resource("/healthz").route(web::get().to(health::healthz)),
    ))
    .service(with_methods(
        web::resource("/readyz").route(web::get().to(health::readyz)),
    ))
    .service(with_methods(
        web::resource("/metrics").route(web::get().to(crate::metrics::scrape)),
    ))
    .service(with_methods(
        web::resource("/openapi.json").route(web::get().to(openapi::document)),
    ))
    .service(verify_resource("/wxJssdk"))
    .service(verify_resource("/v1/apps/{name}/verify"))
    .service(jssdk_resource("/wxJssdk/getJssdk"))
    .service(jssdk_resource("/v1/apps/{name}/jssdk/config"));
}

fn verify_resource(path: &str) -> actix_web::Resource {
    with_methods(
        web::resource(path)
            .route(web::get().to(verify::server_url_check))
            .route(web::post().to(verify::message_push)),
    )
}

fn jssdk_resource(path: &str) -> actix_web::Resource {
    with_methods(
        web::resource(path)
            .route(web::get().to(jssdk::config))
            .route(web::post().to(jssdk::config)),
    )
}

/// Answers other methods on a known path with a JSON 405.
fn with_methods(resource: actix_web::Resource) -> actix_web::Resource {
    resource.default_service(web::to(|| async {
        Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed)
    }))
}

/// Answers unknown paths with a JSON 404.
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}
