//! Builds the running service from its settings: the store, the credential cache, the
//! HTTP server with its routes.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

use crate::access::AdminKeys;
use crate::access_log::{self, AccessLog};
use crate::cache::{CredentialCache, KeySpace, MemoryStore, RedisStore, Store, StoreError};
use crate::configuration::{RedisSettings, Settings};
use crate::limits::BodyTimeout;
use crate::routes::{self, AppState, Apps, Upstream};
use crate::wechat::WechatClient;
use crate::{limits, metrics, shutdown};

/// The key prefix of the in-process store (it has no `[redis]` table to name one).
const MEMORY_KEY_PREFIX: &str = "wxjssdk";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on `{key}` = {address:?}: {source}")]
    Bind {
        key: &'static str,
        address: String,
        source: std::io::Error,
    },
    #[error("cannot start the HTTP server: {0}")]
    Server(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot set up the metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot start the access log's writer thread: {0}")]
    AccessLog(std::io::Error),
}

pub struct Application {
    port: u16,
    server: Server,
    /// The operations listener (`server.ops_bind`), when configured.
    ops: Option<(u16, Server)>,
    /// Kept to release its refresh locks once the server has stopped.
    cache: Arc<CredentialCache>,
    redis: Option<RedisSettings>,
    /// Kept to write its last lines once the server has stopped.
    access_log: AccessLog,
}

impl Application {
    /// Binds `server.bind` (port 0 picks a free port) and prepares the server; it
    /// serves once [`Application::run_until_stopped`] is awaited.
    pub fn build(settings: Settings) -> Result<Self, StartupError> {
        let listener = bind("server.bind", &settings.server.bind)?;
        let ops_listener = match &settings.server.ops_bind {
            Some(ops_bind) => Some(bind("server.ops_bind", ops_bind)?),
            None => None,
        };
        let port = listener.local_addr()?.port();
        metrics::init()?;
        let redis = settings.redis.clone();
        let state = app_state(&settings)?;
        let cache = state.cache.clone();
        let access_log =
            AccessLog::from_log_level(settings.log.format).map_err(StartupError::AccessLog)?;
        let server = run(
            listener,
            &settings,
            state.clone(),
            access_log.clone(),
            ops_listener.is_none(),
        )?;
        let ops = match ops_listener {
            Some(listener) => Some((listener.local_addr()?.port(), run_ops(listener, state)?)),
            None => None,
        };
        Ok(Self {
            port,
            server,
            ops,
            cache,
            redis,
            access_log,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the operations listener, when `server.ops_bind` is set.
    pub fn ops_port(&self) -> Option<u16> {
        self.ops.as_ref().map(|(port, _)| *port)
    }

    /// Serves until SIGTERM (graceful: in-flight requests finish, for at most
    /// `server.shutdown_timeout_secs`) or SIGINT (at once), then releases the refresh
    /// locks this instance still holds.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let ops = async {
            match self.ops {
                Some((_, server)) => server.await,
                None => Ok(()),
            }
        };
        // Both servers stop on the same signals.
        let (served, ops_served) = futures_util::future::join(self.server, ops).await;
        self.access_log.close(Duration::from_secs(1)).await;
        shutdown::release_held_locks(&self.cache, self.redis.as_ref()).await;
        served.and(ops_served)
    }
}

/// Binds a listener, naming the setting when it cannot.
fn bind(key: &'static str, address: &str) -> Result<TcpListener, StartupError> {
    TcpListener::bind(address).map_err(|source| StartupError::Bind {
        key,
        address: address.to_string(),
        source,
    })
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
pub(crate) fn app_state(settings: &Settings) -> Result<web::Data<AppState>, StoreError> {
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
        verify_max_age: settings.wechat.verify_max_age,
        failed_authentications: Default::default(),
        trusted_proxies: settings.server.trusted_proxies.clone(),
        gateway_enabled: settings.gateway.enabled,
    }))
}

/// The public server: every route, and `/metrics` unless the operations listener
/// serves it.
fn run(
    listener: TcpListener,
    settings: &Settings,
    state: web::Data<AppState>,
    access_log: AccessLog,
    with_metrics: bool,
) -> Result<Server, StartupError> {
    let wechat_settings = settings.wechat.clone();
    let gateway_settings = settings.gateway.clone();
    let body_timeout = BodyTimeout(settings.server.client_body_timeout);
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(access_log::log_request))
            .app_data(state.clone())
            .app_data(access_log.clone())
            // awc clients are bound to their thread: one per worker.
            .app_data(web::Data::new(WechatClient::new(&wechat_settings)))
            .app_data(web::Data::new(Upstream::new(
                &wechat_settings,
                &gateway_settings,
            )))
            .configure(move |cfg| limits::configure(cfg, body_timeout))
            .configure(|cfg| routes::configure(cfg, with_metrics))
            .default_service(web::to(routes::not_found))
    });
    if let Some(workers) = settings.server.workers {
        server = server.workers(workers);
    }
    let limits = &settings.server;
    let server = server
        .shutdown_timeout(limits.shutdown_timeout.as_secs())
        .client_request_timeout(limits.client_request_timeout)
        .client_disconnect_timeout(limits.client_disconnect_timeout)
        .max_connections(limits.max_connections);
    Ok(server.listen(listener)?.run())
}

/// The operations server (`server.ops_bind`): probes and metrics, on one worker of its
/// own, so that a scrape is answered even while the public workers are saturated.
fn run_ops(listener: TcpListener, state: web::Data<AppState>) -> Result<Server, StartupError> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(routes::configure_ops)
            .default_service(web::to(routes::not_found))
    })
    .workers(1)
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    Ok(server)
}
