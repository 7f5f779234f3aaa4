//! The shared credential cache: valid access tokens and JS-SDK tickets for every app,
//! fetched from WeChat once per validity window however many instances run.
//!
//! A read is one store `GET`. A value is renewed in two situations:
//! * it is due for renewal but still usable: one process (the [`RefreshLock`] holder)
//!   renews it while every request keeps being answered with the current value;
//! * it is missing or expired: one process renews it and the others wait for the new
//!   value, bounded by `cache.lock_wait_ms`, polling the store.
//!
//! Inside a process, requests for the same key queue on a local mutex first, so that a
//! burst on a cold cache makes one lock attempt per process, not one per request.

mod lock;
mod memory;
mod record;
mod redis;
mod store;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

pub use lock::RefreshLock;
pub use memory::MemoryStore;
pub use record::{now_ms, Record};
pub use redis::RedisStore;
pub use store::{Store, StoreError};

use crate::configuration::{AppSettings, CacheSettings, TokenMode};
use crate::wechat::{Fetched, WechatClient, WechatError};

/// WeChat allows a forced stable-token refresh at most this often...
const FORCE_REFRESH_SPACING: Duration = Duration::from_secs(30);
/// ...and this many times a day.
const FORCE_REFRESH_DAILY_LIMIT: u64 = 20;
const DAY: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("the credential store failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Upstream(#[from] WechatError),
    #[error("another instance is refreshing the {0} and did not finish in time")]
    LockWaitTimeout(&'static str),
}

/// The credentials the cache holds for each app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    AccessToken,
    JsapiTicket,
}

impl Credential {
    fn name(self) -> &'static str {
        match self {
            Self::AccessToken => "access_token",
            Self::JsapiTicket => "jsapi_ticket",
        }
    }
}

/// Builds every key the cache uses. The `{appid}` hash tag puts all keys of one app
/// in the same Redis Cluster slot.
#[derive(Debug, Clone)]
pub struct KeySpace {
    prefix: String,
}

impl KeySpace {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    pub fn value(&self, appid: &str, credential: Credential) -> String {
        format!("{}:{{{appid}}}:{}", self.prefix, credential.name())
    }

    pub fn lock(&self, appid: &str, credential: Credential) -> String {
        format!("{}:{{{appid}}}:lock:{}", self.prefix, credential.name())
    }

    fn force_refresh_gate(&self, appid: &str) -> String {
        format!("{}:{{{appid}}}:force_refresh:gate", self.prefix)
    }

    fn force_refresh_count(&self, appid: &str) -> String {
        format!("{}:{{{appid}}}:force_refresh:count", self.prefix)
    }
}

pub struct CredentialCache {
    store: Store,
    keys: KeySpace,
    settings: CacheSettings,
    token_mode: TokenMode,
    local: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl CredentialCache {
    pub fn new(
        store: Store,
        keys: KeySpace,
        settings: CacheSettings,
        token_mode: TokenMode,
    ) -> Self {
        Self {
            store,
            keys,
            settings,
            token_mode,
            local: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A usable JS-SDK ticket for `app`.
    pub async fn jsapi_ticket(
        &self,
        app: &AppSettings,
        wechat: &WechatClient,
    ) -> Result<Record, CacheError> {
        self.get_or_refresh(app, Credential::JsapiTicket, || {
            self.fetch_ticket(app, wechat)
        })
        .await
    }

    /// A usable access token for `app`.
    pub async fn access_token(
        &self,
        app: &AppSettings,
        wechat: &WechatClient,
    ) -> Result<Record, CacheError> {
        self.get_or_refresh(app, Credential::AccessToken, || {
            self.fetch_token(app, wechat, false)
        })
        .await
    }

    /// Fetches a ticket with the cached token. If WeChat says that token is no longer
    /// good, it is dropped (only if it is still the current one: another process may
    /// have replaced it already) and the ticket is fetched once more with a new one.
    async fn fetch_ticket(
        &self,
        app: &AppSettings,
        wechat: &WechatClient,
    ) -> Result<Fetched, CacheError> {
        let token = self.access_token(app, wechat).await?;
        match wechat.jsapi_ticket(&token.value).await {
            Err(WechatError::InvalidCredential(code)) => {
                log::warn!(
                    "WeChat rejected the cached access_token of {} (errcode {code}); replacing it once",
                    app.appid
                );
                let token = self.replace_access_token(app, wechat, &token).await?;
                Ok(wechat.jsapi_ticket(&token.value).await?)
            }
            other => Ok(other?),
        }
    }

    async fn replace_access_token(
        &self,
        app: &AppSettings,
        wechat: &WechatClient,
        rejected: &Record,
    ) -> Result<Record, CacheError> {
        let key = self.keys.value(&app.appid, Credential::AccessToken);
        self.store
            .delete_if_equals(&key, &rejected.to_json())
            .await?;
        self.get_or_refresh(app, Credential::AccessToken, || {
            self.fetch_token(app, wechat, true)
        })
        .await
    }

    /// Fetches a token. `replacing` asks for a new stable token (`force_refresh`),
    /// which is granted only within WeChat's limits, counted across the deployment.
    async fn fetch_token(
        &self,
        app: &AppSettings,
        wechat: &WechatClient,
        replacing: bool,
    ) -> Result<Fetched, CacheError> {
        let force = replacing
            && self.token_mode == TokenMode::Stable
            && self.may_force_refresh(&app.appid).await?;
        Ok(wechat.access_token(app, self.token_mode, force).await?)
    }

    async fn may_force_refresh(&self, appid: &str) -> Result<bool, StoreError> {
        let gate = self.keys.force_refresh_gate(appid);
        if !self.store.set_nx(&gate, "1", FORCE_REFRESH_SPACING).await? {
            log::warn!("stable token of {appid} was force-refreshed less than 30 s ago; asking without force_refresh");
            return Ok(false);
        }
        let count = self
            .store
            .incr_with_ttl(&self.keys.force_refresh_count(appid), DAY)
            .await?;
        if count > FORCE_REFRESH_DAILY_LIMIT {
            log::error!("stable token of {appid}: {FORCE_REFRESH_DAILY_LIMIT} forced refreshes in 24 h used up; asking without force_refresh");
            return Ok(false);
        }
        Ok(true)
    }

    async fn get_or_refresh<F, Fut>(
        &self,
        app: &AppSettings,
        credential: Credential,
        fetch: F,
    ) -> Result<Record, CacheError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Fetched, CacheError>>,
    {
        let slot = Slot::new(&self.keys, &app.appid, credential);
        if let Some(record) = self.read(&slot.key).await? {
            let now = now_ms();
            if !record.is_due_for_renewal(now) {
                return Ok(record);
            }
            if record.is_usable(now) {
                return Ok(self.renew_ahead(&slot, record, &fetch).await);
            }
        }
        self.refresh_or_wait(&slot, &fetch).await
    }

    /// Renews a still-usable value unless someone else is already doing it; any
    /// failure leaves the current value in service.
    async fn renew_ahead<F, Fut>(&self, slot: &Slot, current: Record, fetch: &F) -> Record
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Fetched, CacheError>>,
    {
        let local = self.local_mutex(&slot.key);
        let Ok(_queue) = local.try_lock() else {
            return current;
        };
        match self.try_refresh(slot, fetch).await {
            Ok(Some(renewed)) => renewed,
            Ok(None) => current,
            Err(e) => {
                log::warn!(
                    "renewing {} ahead of expiry failed; the current value stays in use: {e}",
                    slot.key
                );
                current
            }
        }
    }

    /// Gets a usable value when there is none: refreshes it if the lock is free,
    /// otherwise waits for the holder's result, until `lock_wait_ms` runs out.
    async fn refresh_or_wait<F, Fut>(&self, slot: &Slot, fetch: &F) -> Result<Record, CacheError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Fetched, CacheError>>,
    {
        let deadline = Instant::now() + Duration::from_millis(self.settings.lock_wait_ms);
        let timeout = || CacheError::LockWaitTimeout(slot.credential.name());
        let local = self.local_mutex(&slot.key);
        let _queue = tokio::time::timeout_at(deadline, local.lock())
            .await
            .map_err(|_| timeout())?;
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(record) = self
                .read(&slot.key)
                .await?
                .filter(|r| r.is_usable(now_ms()))
            {
                return Ok(record);
            }
            if let Some(record) = self.try_refresh(slot, fetch).await? {
                return Ok(record);
            }
            if Instant::now() + pause >= deadline {
                return Err(timeout());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Refreshes under the refresh lock; `None` when another process holds it.
    async fn try_refresh<F, Fut>(
        &self,
        slot: &Slot,
        fetch: &F,
    ) -> Result<Option<Record>, CacheError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Fetched, CacheError>>,
    {
        let ttl = Duration::from_millis(self.settings.lock_ttl_ms);
        let Some(lock) = RefreshLock::try_acquire(&self.store, slot.lock_key.clone(), ttl).await?
        else {
            return Ok(None);
        };
        let result = self.refresh_locked(slot, fetch).await;
        lock.release(&self.store).await;
        result.map(Some)
    }

    async fn refresh_locked<F, Fut>(&self, slot: &Slot, fetch: &F) -> Result<Record, CacheError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Fetched, CacheError>>,
    {
        // The previous holder may have finished between our read and our lock.
        let current = self.read(&slot.key).await?;
        if let Some(record) = current.as_ref().filter(|r| !r.is_due_for_renewal(now_ms())) {
            return Ok(record.clone());
        }
        let fetched = fetch().await?;
        let record = Record::from_fetched(fetched, current.as_ref(), now_ms(), &self.settings);
        self.store.put_record(&slot.key, &record).await?;
        log::info!(
            "refreshed {} (usable for {} s)",
            slot.key,
            record.ttl_ms(now_ms()) / 1000
        );
        Ok(record)
    }

    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let raw = self.store.get(key).await?;
        Ok(raw.and_then(|raw| {
            let record = Record::from_json(&raw);
            if record.is_none() {
                log::warn!("ignoring an unreadable value at {key}");
            }
            record
        }))
    }

    fn local_mutex(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.local.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key.to_string()).or_default().clone()
    }
}

/// The keys of one credential of one app.
struct Slot {
    credential: Credential,
    key: String,
    lock_key: String,
}

impl Slot {
    fn new(keys: &KeySpace, appid: &str, credential: Credential) -> Self {
        Self {
            credential,
            key: keys.value(appid, credential),
            lock_key: keys.lock(appid, credential),
        }
    }
}
