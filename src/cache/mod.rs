//! The shared credential cache: valid access tokens and JS-SDK tickets for every app,
//! fetched from WeChat once per validity window however many instances run.
//!
//! Two tiers. Each instance keeps its own copy of each value ([`local`]); the store
//! (Redis, or memory for a single instance) holds the deployment's current value as a
//! [`Record`] with its deadlines. A request is answered from the local copy whenever it
//! is usable: no I/O at all. Everything else happens in a background *job* ([`jobs`]),
//! at most one per credential per instance, which requests join when they need its
//! result ([`refresh`]):
//!
//! 1. it reads the store and reconciles it with the copy: the store's value if it is
//!    newer; this instance's copy, written back, if the store lost it (a flush, a
//!    restart without persistence, a write that failed);
//! 2. if the value is due for renewal or nothing usable is left, it checks the
//!    deployment's [`backoff`] schedule, takes the [`RefreshLock`] and renews the value
//!    from WeChat ([`upstream`]); other instances keep serving their copies meanwhile,
//!    or, with nothing usable, wait for the holder's value to appear in the store.
//!
//! A value's life (fresh, due, in its margin, re-issued, expired) is the arithmetic of
//! [`record`]; docs/architecture.md draws it as a state diagram. WeChat's daily limits are kept
//! deployment-wide in [`budget`], and callers' invalidations go through
//! [`invalidation`]. Whether a token a caller presents is one of ours: [`standing`].
//! Every key is built by [`KeySpace`].

mod backoff;
mod budget;
mod cluster;
mod invalidation;
mod jobs;
mod keys;
mod local;
mod lock;
mod memory;
mod outage;
mod reconcile;
mod record;
mod redis;
mod refresh;
mod sentinel;
mod standing;
mod store;
mod tls;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

pub use budget::{ChinaDay, INVALIDATE_SPACING};
pub(crate) use invalidation::Invalidation;
pub use keys::KeySpace;
pub(crate) use lock::{HeldLocks, RefreshLock};
pub use memory::MemoryStore;
pub use record::{Record, MAX_LIFE_SECS};
pub use redis::{RedisStore, StoreError};
pub(crate) use standing::TokenStanding;
pub use store::Store;

use crate::configuration::{AppSettings, CacheSettings, TokenMode};
use crate::wechat::{TicketKind, WechatClient, WechatError};
use jobs::{Jobs, Outcome};
use local::LocalTier;
use outage::OutageLog;

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CacheError {
    #[error("the credential store failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Upstream(#[from] WechatError),
    #[error("the {0} is being refreshed and was not ready in time")]
    LockWaitTimeout(&'static str),
    /// A renewal failed and the deployment waits before the next attempt; nothing
    /// usable is cached meanwhile.
    #[error("renewing the {credential} failed ({cause}); the next attempt is in {} s", retry_after.as_secs())]
    BackingOff {
        credential: &'static str,
        retry_after: Duration,
        cause: String,
    },
}

/// The credentials the cache holds for each app: its access token, and the tickets
/// fetched with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    AccessToken,
    JsapiTicket,
    CardTicket,
    AgentTicket,
}

impl Credential {
    const COUNT: usize = 4;
    const ALL: [Self; Self::COUNT] = [
        Self::AccessToken,
        Self::JsapiTicket,
        Self::CardTicket,
        Self::AgentTicket,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// Its name in keys, logs, metrics and routes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::AccessToken => "access_token",
            Self::JsapiTicket => "jsapi_ticket",
            Self::CardTicket => "card_ticket",
            Self::AgentTicket => "agent_ticket",
        }
    }

    /// The WeChat ticket this credential is, if it is one.
    fn ticket(self) -> Option<TicketKind> {
        match self {
            Self::AccessToken => None,
            Self::JsapiTicket => Some(TicketKind::Jsapi),
            Self::CardTicket => Some(TicketKind::Card),
            Self::AgentTicket => Some(TicketKind::Agent),
        }
    }
}

/// What a job needs besides the cache: the app and this worker's WeChat client.
#[derive(Clone)]
pub(crate) struct Context {
    pub(crate) app: Arc<AppSettings>,
    pub(crate) wechat: Arc<WechatClient>,
}

pub(crate) struct CredentialCache {
    store: Store,
    keys: KeySpace,
    settings: CacheSettings,
    token_mode: TokenMode,
    local: LocalTier,
    jobs: Arc<Jobs>,
    outage: OutageLog,
    /// The refresh locks this instance holds, released at shutdown if a job is dropped.
    held_locks: HeldLocks,
}

impl CredentialCache {
    pub(crate) fn new(
        store: Store,
        keys: KeySpace,
        settings: CacheSettings,
        token_mode: TokenMode,
    ) -> Self {
        let recheck = settings.local_recheck;
        Self {
            store,
            keys,
            settings,
            token_mode,
            local: LocalTier::new(recheck),
            jobs: Arc::default(),
            outage: OutageLog::default(),
            held_locks: HeldLocks::default(),
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Whether the store can serve the apps of `ids` (their cache ids): the access
    /// token key of each, which lives in the app's slot on a Redis Cluster, is read,
    /// all at once, each read bounded by `redis.timeout_ms`. A store node that serves
    /// none of these apps does not matter; one that serves any of them does.
    pub(crate) async fn readable<'a>(
        &self,
        ids: impl Iterator<Item = &'a str>,
    ) -> Result<(), StoreError> {
        let keys: Vec<String> = ids
            .map(|id| self.keys.value(id, Credential::AccessToken))
            .collect();
        let reads = keys.iter().map(|key| self.store.get(key));
        for read in futures_util::future::join_all(reads).await {
            read?;
        }
        Ok(())
    }

    /// The refresh locks this instance holds (for shutdown: [`HeldLocks::release_all`]).
    pub(crate) fn held_locks(&self) -> &HeldLocks {
        &self.held_locks
    }

    /// A usable JS-SDK ticket for the app (`wx.config`).
    pub(crate) async fn jsapi_ticket(self: &Arc<Self>, ctx: &Context) -> Outcome {
        self.get(ctx, Credential::JsapiTicket).await
    }

    /// A usable card api_ticket for the app (`wx.chooseCard`, `wx.addCard`).
    pub(crate) async fn card_ticket(self: &Arc<Self>, ctx: &Context) -> Outcome {
        self.get(ctx, Credential::CardTicket).await
    }

    /// A usable agent ticket for the WeChat Work app (`wx.agentConfig`).
    pub(crate) async fn agent_ticket(self: &Arc<Self>, ctx: &Context) -> Outcome {
        self.get(ctx, Credential::AgentTicket).await
    }

    /// A usable access token for the app.
    pub(crate) async fn access_token(self: &Arc<Self>, ctx: &Context) -> Outcome {
        self.get(ctx, Credential::AccessToken).await
    }

    fn slot(&self, ctx: &Context, credential: Credential) -> Slot {
        Slot::new(&self.keys, ctx.app.cache_id(), ctx.app.name(), credential)
    }

    /// Exports the usable life of the copy of `slot`'s credential this instance now
    /// serves (none: no series), after the copy changed: the gauge the alert on failing
    /// renewals watches.
    fn publish_life(&self, slot: &Slot) {
        let copy = self.local.copy(&slot.id, slot.credential);
        crate::metrics::credential_usable_until(
            &slot.app,
            slot.credential.name(),
            copy.map(|c| c.usable_until),
        );
    }
}

/// The keys of one credential of one app, by the app's cache id (the AppID, or a
/// WeChat Work app's `CORPID/AGENTID`).
#[derive(Clone)]
struct Slot {
    id: String,
    /// The app's name, for the per-app metrics only: keys are by `id`.
    app: Arc<str>,
    credential: Credential,
    key: String,
    lock_key: String,
    backoff_key: String,
}

impl Slot {
    fn new(keys: &KeySpace, id: &str, app: &Arc<str>, credential: Credential) -> Self {
        Self {
            id: id.to_string(),
            app: Arc::clone(app),
            credential,
            key: keys.value(id, credential),
            lock_key: keys.lock(id, credential),
            backoff_key: keys.backoff(id, credential),
        }
    }
}
