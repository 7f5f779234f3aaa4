//! Builds the running service from its settings: the store, the credential cache, the
//! HTTP server with its routes.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

use crate::access::AdminKeys;
use crate::cache::{CredentialCache, KeySpace, MemoryStore, RedisStore, Store, StoreError};
use crate::configuration::{RedisSettings, Settings};
use crate::routes::{self, AppState, Apps};
use crate::wechat::WechatClient;
use crate::{access_log, limits, metrics, shutdown};

/// The key prefix of the in-process store (it has no `[redis]` table to name one).
const MEMORY_KEY_PREFIX: &str = "wxjssdk";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {bind}: {source}")]
    Bind {
        bind: String,
        source: std::io::Error,
    },
    #[error("cannot start the HTTP server: {0}")]
    Server(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot set up the metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

pub struct Application {
    port: u16,
    server: Server,
    /// Kept to release its refresh locks once the server has stopped.
    cache: Arc<CredentialCache>,
    redis: Option<RedisSettings>,
}

impl Application {
    /// Binds `server.bind` (port 0 picks a free port) and prepares the server; it
    /// serves once [`Application::run_until_stopped`] is awaited.
    pub fn build(settings: Settings) -> Result<Self, StartupError> {
        let bind = settings.server.bind.clone();
        let listener =
            TcpListener::bind(&bind).map_err(|source| StartupError::Bind { bind, source })?;
        let port = listener.local_addr()?.port();
        metrics::init()?;
        let redis = settings.redis.clone();
        let (server, cache) = run(listener, settings)?;
        Ok(Self {
            port,
            server,
            cache,
            redis,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM (graceful: in-flight requests finish, for at most
    /// `server.shutdown_timeout_secs`) or SIGINT (at once), then releases the refresh
    /// locks this instance still holds.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        shutdown::release_held_locks(&self.cache, self.redis.as_ref()).await;
        served
    }
}

fn store_for(settings: &Settings) -> Result<(Store, KeySpace), StoreError> {
    Ok(match &settings.redis {
        Some(redis) => (
            Store::Redis(RedisStore::new(redis)?),
            KeySpace::new(&redis.key_prefix),
        ),
        None => (
            Store::Memory(MemoryStore::new()),
            KeySpace::new(MEMORY_KEY_PREFIX),
        ),
    })
}

/// What every worker shares: the apps, the credential cache, the admin keys.
pub fn app_state(settings: &Settings) -> Result<web::Data<AppState>, StoreError> {
    let (store, keys) = store_for(settings)?;
    let cache = CredentialCache::new(
        store,
        keys,
        settings.cache.clone(),
        settings.wechat.token_mode,
    );
    Ok(web::Data::new(AppState {
        apps: Apps::from_settings(settings),
        cache: Arc::new(cache),
        admin: AdminKeys::new(&settings.admin.keys),
        verify_max_age_secs: settings.wechat.verify_max_age_secs,
    }))
}

fn run(
    listener: TcpListener,
    settings: Settings,
) -> Result<(Server, Arc<CredentialCache>), StartupError> {
    let state = app_state(&settings)?;
    let cache = state.cache.clone();
    let wechat_settings = settings.wechat.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(access_log::log_request))
            .app_data(state.clone())
            // awc clients are bound to their thread: one per worker.
            .app_data(web::Data::new(WechatClient::new(&wechat_settings)))
            .configure(limits::configure)
            .configure(routes::configure)
            .default_service(web::to(routes::not_found))
    });
    if let Some(workers) = settings.server.workers {
        server = server.workers(workers);
    }
    let limits = &settings.server;
    let server = server
        .shutdown_timeout(limits.shutdown_timeout_secs)
        .client_request_timeout(Duration::from_millis(limits.client_request_timeout_ms))
        .client_disconnect_timeout(Duration::from_millis(limits.client_disconnect_timeout_ms))
        .max_connections(limits.max_connections);
    Ok((server.listen(listener)?.run(), cache))
}
