//! Builds the running service from its settings: the store, the credential cache, the
//! HTTP server with its routes.

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

use crate::access::AdminKeys;
use crate::access_log;
use crate::cache::{CredentialCache, KeySpace, MemoryStore, RedisStore, Store, StoreError};
use crate::configuration::Settings;
use crate::routes::{self, AppState, Apps};
use crate::wechat::WechatClient;

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
}

pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Binds `server.bind` (port 0 picks a free port) and prepares the server; it
    /// serves once [`Application::run_until_stopped`] is awaited.
    pub fn build(settings: Settings) -> Result<Self, StartupError> {
        let bind = settings.server.bind.clone();
        let listener =
            TcpListener::bind(&bind).map_err(|source| StartupError::Bind { bind, source })?;
        let port = listener.local_addr()?.port();
        let server = run(listener, settings)?;
        Ok(Self { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT/SIGTERM (graceful: in-flight requests finish).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
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

fn run(listener: TcpListener, settings: Settings) -> Result<Server, StartupError> {
    let (store, keys) = store_for(&settings)?;
    let cache = CredentialCache::new(
        store,
        keys,
        settings.cache.clone(),
        settings.wechat.token_mode,
    );
    let state = web::Data::new(AppState {
        apps: Apps::from_settings(&settings),
        cache: std::sync::Arc::new(cache),
        admin: AdminKeys::new(&settings.admin.keys),
        verify_max_age_secs: settings.wechat.verify_max_age_secs,
    });
    let wechat_settings = settings.wechat.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(access_log::log_request))
            .app_data(state.clone())
            // awc clients are bound to their thread: one per worker.
            .app_data(web::Data::new(WechatClient::new(&wechat_settings)))
            .configure(routes::configure)
            .default_service(web::to(routes::not_found))
    });
    if let Some(workers) = settings.server.workers {
        server = server.workers(workers);
    }
    Ok(server.listen(listener)?.run())
}
