//! The shared credential cache: valid access tokens and JS-SDK tickets for every app,
//! fetched from WeChat once per validity window however many instances run.
//!
//! Two tiers. Each instance keeps its own copy of each value ([`local`]); the store
//! (Redis, or memory for a single instance) holds the deployment's current value.
//! A request is answered from the local copy whenever it is usable: no I/O at all.
//! Everything else happens in a background *job*, at most one per value per instance:
//!
//! * the copy is due for a re-check (every `local_recheck_ms`) or for renewal: the job
//!   reads the store and adopts what it finds; if that is due for renewal too, it tries
//!   the [`RefreshLock`] and, if it gets it, renews the value from WeChat. Requests keep
//!   being answered with the current copy meanwhile, and a failure leaves it in service;
//! * there is no usable copy: the same job runs and requests wait for its result,
//!   bounded by `lock_wait_ms`. If another instance holds the lock, the job polls the
//!   store until that instance's value appears, or its lock expires and this job takes
//!   over.
//!
//! Jobs are detached from requests, so a client that disconnects cannot abandon a
//! refresh halfway, and the lock holder keeps its lock alive while WeChat is slow.

mod local;
mod lock;
mod memory;
mod outage;
mod record;
mod redis;
mod store;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

pub use lock::{HeldLocks, RefreshLock};
pub use memory::MemoryStore;
pub use record::{now_ms, Record};
pub use redis::RedisStore;
pub use store::{Store, StoreError};

use crate::configuration::{AppKind, AppSettings, CacheSettings, TokenMode};
use crate::metrics::{self, Tier};
use crate::wechat::{Fetched, TicketKind, WechatClient, WechatError};
use local::LocalTier;
use outage::OutageLog;

/// WeChat allows a forced stable-token refresh at most this often...
const FORCE_REFRESH_SPACING: Duration = Duration::from_secs(30);
/// ...and this many times a day.
const FORCE_REFRESH_DAILY_LIMIT: u64 = 20;
const DAY: Duration = Duration::from_secs(24 * 3600);
/// Polling of the store while another instance refreshes: from the first to the last.
const POLL_FIRST: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    #[error("the credential store failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Upstream(#[from] WechatError),
    #[error("the {0} is being refreshed and was not ready in time")]
    LockWaitTimeout(&'static str),
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

    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
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

type Outcome = Result<Arc<Record>, CacheError>;

tokio::task_local! {
    /// Set while a job runs: its own waits (a ticket renewal waiting for its token)
    /// are not a request's, and are left out of the lock-wait metrics.
    static IN_JOB: ();
}

fn waited_by_request() -> bool {
    IN_JOB.try_with(|_| ()).is_err()
}

/// What a job needs besides the cache: the app and this worker's WeChat client.
#[derive(Clone)]
pub struct Context {
    pub app: Arc<AppSettings>,
    pub wechat: Arc<WechatClient>,
}

pub struct CredentialCache {
    store: Store,
    keys: KeySpace,
    settings: CacheSettings,
    token_mode: TokenMode,
    local: LocalTier,
    jobs: Mutex<HashMap<String, watch::Receiver<Option<Outcome>>>>,
    outage: OutageLog,
    /// The refresh locks this instance holds, released at shutdown if a job is dropped.
    held_locks: HeldLocks,
}

impl CredentialCache {
    pub fn new(
        store: Store,
        keys: KeySpace,
        settings: CacheSettings,
        token_mode: TokenMode,
    ) -> Self {
        let recheck = Duration::from_millis(settings.local_recheck_ms);
        Self {
            store,
            keys,
            settings,
            token_mode,
            local: LocalTier::new(recheck),
            jobs: Mutex::new(HashMap::new()),
            outage: OutageLog::default(),
            held_locks: HeldLocks::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The refresh locks this instance holds (for shutdown: [`HeldLocks::release_all`]).
    pub fn held_locks(&self) -> &HeldLocks {
        &self.held_locks
    }

    /// A usable JS-SDK ticket for the app (`wx.config`).
    pub async fn jsapi_ticket(self: &Arc<Self>, ctx: &Context) -> Outcome {
        self.get(ctx, Credential::JsapiTicket, None).await
    }

    /// A usable card api_ticket for the app (`wx.chooseCard`, `wx.addCard`).
    pub async fn card_ticket(self: &Arc<Self>, ctx: &Context) -> Outcome {
        self.get(ctx, Credential::CardTicket, None).await
    }

    /// A usable agent ticket for the WeChat Work app (`wx.agentConfig`).
    pub async fn agent_ticket(self: &Arc<Self>, ctx: &Context) -> Outcome {
        self.get(ctx, Credential::AgentTicket, None).await
    }

    /// A usable access token for the app.
    pub async fn access_token(self: &Arc<Self>, ctx: &Context) -> Outcome {
        self.get(ctx, Credential::AccessToken, None).await
    }

    /// The local copy when usable (starting a background check when one is due),
    /// otherwise the result of a job, waited for at most `lock_wait_ms`. `rejected`
    /// names a value WeChat refused: it is not used, and a new one is asked for.
    async fn get(
        self: &Arc<Self>,
        ctx: &Context,
        credential: Credential,
        rejected: Option<&str>,
    ) -> Outcome {
        let copy = self.local.get(ctx.app.cache_id(), credential);
        let copy = copy.filter(|c| acceptable(&c.record, rejected));
        metrics::cache_lookup(Tier::Local, copy.is_some());
        if let Some(copy) = copy {
            if copy.check_is_due() {
                self.start_job(
                    ctx,
                    &Slot::new(&self.keys, ctx.app.cache_id(), credential),
                    None,
                );
            }
            return Ok(copy.record);
        }
        let slot = Slot::new(&self.keys, ctx.app.cache_id(), credential);
        let outcome = self.wait_for_job(ctx, &slot, rejected).await;
        match (&outcome, rejected) {
            // We joined a job that started before the rejection and renewed nothing:
            // run one that knows.
            (Ok(record), Some(rejected)) if record.value == rejected => {
                self.wait_for_job(ctx, &slot, Some(rejected)).await
            }
            _ => outcome,
        }
    }

    async fn wait_for_job(
        self: &Arc<Self>,
        ctx: &Context,
        slot: &Slot,
        rejected: Option<&str>,
    ) -> Outcome {
        let mut outcome = self.start_job(ctx, slot, rejected);
        let by_request = waited_by_request();
        if by_request {
            metrics::lock_wait();
        }
        let wait = Duration::from_millis(self.settings.lock_wait_ms);
        let finished = tokio::time::timeout(wait, outcome.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(|done| done.ok().and_then(|d| d.clone()));
        finished.unwrap_or_else(|| {
            if by_request {
                metrics::lock_wait_timeout();
            }
            Err(CacheError::LockWaitTimeout(slot.credential.name()))
        })
    }

    /// Joins the value's running job, or starts one on this worker.
    fn start_job(
        self: &Arc<Self>,
        ctx: &Context,
        slot: &Slot,
        rejected: Option<&str>,
    ) -> watch::Receiver<Option<Outcome>> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = jobs.get(&slot.key) {
            return running.clone();
        }
        let (done, outcome) = watch::channel(None);
        jobs.insert(slot.key.clone(), outcome.clone());
        let (cache, ctx, slot) = (self.clone(), ctx.clone(), slot.clone());
        let rejected = rejected.map(str::to_string);
        // Boxed: a ticket job starts token jobs, so the future type refers to itself.
        let job: Pin<Box<dyn Future<Output = ()>>> = Box::pin(async move {
            let _registered = JobEntry {
                cache: &cache,
                key: &slot.key,
            };
            let result = cache.run_job(&ctx, &slot, rejected.as_deref()).await;
            if result.is_err() {
                cache.local.failed(&slot.appid, slot.credential);
            }
            let _ = done.send(Some(result));
        });
        actix_web::rt::spawn(IN_JOB.scope((), job));
        outcome
    }

    /// Brings this instance's copy up to date with the store, renewing the value from
    /// WeChat under the lock when it is missing or due. A failure leaves a usable copy
    /// in service (it is answered as the result, and the failure logged).
    async fn run_job(
        self: &Arc<Self>,
        ctx: &Context,
        slot: &Slot,
        rejected: Option<&str>,
    ) -> Outcome {
        let deadline = Instant::now()
            + Duration::from_millis(self.settings.lock_ttl_ms + self.settings.lock_wait_ms);
        let mut pause = POLL_FIRST;
        loop {
            let local = self
                .local
                .get(&slot.appid, slot.credential)
                .map(|c| c.record)
                .filter(|r| acceptable(r, rejected));
            let stored = match self.read(&slot.key).await {
                Ok(stored) => stored.filter(|r| acceptable(r, rejected)),
                Err(e) => return self.keep_or_fail(slot, local, e.into()),
            };
            metrics::cache_lookup(Tier::Store, stored.is_some());
            if let Some(record) = &stored {
                self.local.put(&slot.appid, slot.credential, record.clone());
                if !record.is_due_for_renewal(now_ms()) {
                    return Ok(record.clone());
                }
            }
            let current = stored.or(local);
            match self
                .try_renew(ctx, slot, current.as_deref(), rejected)
                .await
            {
                Ok(Some(renewed)) => return Ok(renewed),
                Ok(None) => {}
                Err(e) => return self.keep_or_fail(slot, current, e),
            }
            // Another instance holds the lock: keep serving what we have (checked again
            // at the next interval), or wait for its result.
            if let Some(current) = current {
                self.local
                    .put(&slot.appid, slot.credential, current.clone());
                return Ok(current);
            }
            if Instant::now() + pause >= deadline {
                return Err(CacheError::LockWaitTimeout(slot.credential.name()));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    fn keep_or_fail(
        &self,
        slot: &Slot,
        current: Option<Arc<Record>>,
        error: CacheError,
    ) -> Outcome {
        match current {
            Some(current) => {
                log::warn!(
                    "refreshing {} failed; the current value stays in use: {error}",
                    slot.key
                );
                self.local.failed(&slot.appid, slot.credential);
                Ok(current)
            }
            None => Err(error),
        }
    }

    /// Renews the value under the refresh lock; `None` when another instance holds it.
    async fn try_renew(
        self: &Arc<Self>,
        ctx: &Context,
        slot: &Slot,
        current: Option<&Record>,
        rejected: Option<&str>,
    ) -> Result<Option<Arc<Record>>, CacheError> {
        let ttl = Duration::from_millis(self.settings.lock_ttl_ms);
        let taken =
            RefreshLock::try_acquire(&self.store, &self.held_locks, slot.lock_key.clone(), ttl);
        let Some(lock) = taken.await? else {
            return Ok(None);
        };
        let work = self.renew_locked(ctx, slot, current, rejected);
        let result = lock.keep_alive_while(&self.store, ttl, work).await;
        lock.release(&self.store).await;
        if result.is_err() {
            metrics::refresh(slot.credential.name(), false);
        }
        let record = result?;
        self.local.put(&slot.appid, slot.credential, record.clone());
        Ok(Some(record))
    }

    async fn renew_locked(
        self: &Arc<Self>,
        ctx: &Context,
        slot: &Slot,
        current: Option<&Record>,
        rejected: Option<&str>,
    ) -> Outcome {
        // The previous holder may have finished between our read and our lock.
        let stored = self.read(&slot.key).await?;
        if let Some(record) = stored
            .as_ref()
            .filter(|r| acceptable(r, rejected) && !r.is_due_for_renewal(now_ms()))
        {
            return Ok(record.clone());
        }
        let fetched = self.fetch(ctx, slot.credential, rejected.is_some()).await?;
        let previous = stored.as_deref().or(current);
        let record = Record::from_fetched(fetched, previous, now_ms(), &self.settings)
            .ok_or(WechatError::StaleValue)?;
        if !self.store.put_record(&slot.key, &record).await? {
            // A newer value landed meanwhile (a holder whose lock we outlived): it wins.
            if let Some(newer) = self
                .read(&slot.key)
                .await?
                .filter(|r| r.is_usable(now_ms()))
            {
                return Ok(newer);
            }
        }
        metrics::refresh(slot.credential.name(), true);
        log::info!(
            "refreshed {} (usable for {} s)",
            slot.key,
            record.ttl_ms(now_ms()) / 1000
        );
        Ok(Arc::new(record))
    }

    async fn fetch(
        self: &Arc<Self>,
        ctx: &Context,
        credential: Credential,
        force: bool,
    ) -> Result<Fetched, CacheError> {
        match credential.ticket() {
            None => self.fetch_token(ctx, force).await,
            Some(kind) => self.fetch_ticket(ctx, kind).await,
        }
    }

    /// Fetches a ticket with the current token. If WeChat says that token is no longer
    /// good, it is dropped (only if it is still the current one: another instance may
    /// have replaced it already) and the ticket is fetched once more with a new one.
    async fn fetch_ticket(
        self: &Arc<Self>,
        ctx: &Context,
        kind: TicketKind,
    ) -> Result<Fetched, CacheError> {
        let token = self.get(ctx, Credential::AccessToken, None).await?;
        match ctx.wechat.ticket(&ctx.app, kind, &token.value).await {
            Err(WechatError::InvalidCredential(code)) => {
                log::warn!(
                    "WeChat rejected the access_token of {} (errcode {code}); replacing it once",
                    ctx.app.appid
                );
                let token = self.replace_access_token(ctx, &token).await?;
                Ok(ctx.wechat.ticket(&ctx.app, kind, &token.value).await?)
            }
            other => Ok(other?),
        }
    }

    /// Drops a token WeChat rejected, everywhere it is still the current one, and gets
    /// another: the one another instance already put in its place, or a new one.
    async fn replace_access_token(self: &Arc<Self>, ctx: &Context, rejected: &Record) -> Outcome {
        let key = self.keys.value(ctx.app.cache_id(), Credential::AccessToken);
        self.local
            .remove_if(ctx.app.cache_id(), Credential::AccessToken, &rejected.value);
        self.store
            .delete_if_equals(&key, &rejected.to_json())
            .await?;
        self.get(ctx, Credential::AccessToken, Some(&rejected.value))
            .await
    }

    /// Fetches a token. `replacing` asks for a new stable token (`force_refresh`),
    /// which is granted only within WeChat's limits, counted across the deployment.
    async fn fetch_token(&self, ctx: &Context, replacing: bool) -> Result<Fetched, CacheError> {
        let force = replacing
            && ctx.app.kind == AppKind::Official
            && self.token_mode == TokenMode::Stable
            && self.may_force_refresh(ctx.app.cache_id()).await?;
        Ok(ctx
            .wechat
            .access_token(&ctx.app, self.token_mode, force)
            .await?)
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

    /// The stored record, if any and readable; store failures are logged once per outage.
    async fn read(&self, key: &str) -> Result<Option<Arc<Record>>, StoreError> {
        match self.store.get(key).await {
            Ok(raw) => {
                self.outage.succeeded();
                Ok(raw.and_then(|raw| {
                    let record = Record::from_json(&raw);
                    if record.is_none() {
                        log::warn!("ignoring an unreadable value at {key}");
                    }
                    record.map(Arc::new)
                }))
            }
            Err(e) => {
                self.outage.failed(&e);
                Err(e)
            }
        }
    }

    /// Drops the app's access token because a caller says WeChat refused it (the
    /// central-token route for the company's other backends), the way a 40001 on the
    /// ticket path does ([`Self::replace_access_token`]): only where `token` is still
    /// the current value (compare-and-delete in the store, and this instance's copy),
    /// then one instance fetches another while the rest adopt it at their next check.
    ///
    /// A `token` that is not the current one is not dropped: the answer is the current
    /// token, so a caller that held a stale one catches up without spending quota.
    /// Real invalidations are spaced [`INVALIDATE_SPACING`] apart per app across the
    /// deployment (`SET NX PX` on `...:invalidate:gate`), so that one misbehaving caller
    /// cannot burn WeChat's daily token quota.
    pub async fn invalidate_access_token(
        self: &Arc<Self>,
        ctx: &Context,
        token: &str,
    ) -> Result<Invalidation, CacheError> {
        let appid = &ctx.app.appid;
        let key = self.keys.value(appid, Credential::AccessToken);
        let now = now_ms();
        let stored = self.read(&key).await?.filter(|r| r.is_usable(now));
        let local = self
            .local
            .get(appid, Credential::AccessToken)
            .map(|c| c.record);
        let current = match stored.or(local.filter(|r| r.is_usable(now))) {
            Some(current) => current,
            None => self.access_token(ctx).await?,
        };
        if current.value != token {
            // This instance may still serve the stale token: it adopts the current one.
            self.local.remove_if(appid, Credential::AccessToken, token);
            return Ok(Invalidation::NotCurrent(current));
        }
        let gate = invalidate_gate_key(&self.keys, appid);
        let reopens_at = now + INVALIDATE_SPACING.as_millis() as u64;
        if !self
            .store
            .set_nx(&gate, &reopens_at.to_string(), INVALIDATE_SPACING)
            .await?
        {
            return self.invalidation_refused(ctx, &key, &gate, token).await;
        }
        log::warn!(
            "the access_token of {appid} is invalidated at a caller's request; replacing it"
        );
        let replaced = self.replace_access_token(ctx, &current).await?;
        Ok(Invalidation::Replaced(replaced))
    }

    /// Another invalidation of the app happened within [`INVALIDATE_SPACING`]. If it
    /// replaced `token` (or is replacing it right now: the store holds no token), the
    /// caller gets the replacement, so that callers sharing one rejected token all
    /// learn the new one; if `token` is still current, it has to wait.
    async fn invalidation_refused(
        self: &Arc<Self>,
        ctx: &Context,
        key: &str,
        gate: &str,
        token: &str,
    ) -> Result<Invalidation, CacheError> {
        match self.read(key).await?.filter(|r| r.is_usable(now_ms())) {
            Some(current) if current.value != token => Ok(Invalidation::NotCurrent(current)),
            Some(_) => {
                let reopens_at = self.store.get(gate).await?.and_then(|v| v.parse().ok());
                let left_ms = reopens_at.unwrap_or(0u64).saturating_sub(now_ms());
                let retry_after = Duration::from_secs(left_ms.div_ceil(1000).max(1));
                Ok(Invalidation::TooSoon { retry_after })
            }
            None => Ok(Invalidation::NotCurrent(
                self.get(ctx, Credential::AccessToken, Some(token)).await?,
            )),
        }
    }
}

/// A running job's place in the registry, given up however the job ends (even by a
/// panic), so that a later request never joins a job that is gone.
struct JobEntry<'a> {
    cache: &'a CredentialCache,
    key: &'a str,
}

impl Drop for JobEntry<'_> {
    fn drop(&mut self) {
        let mut jobs = self.cache.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.remove(self.key);
    }
}

/// Whether `record` may be handed out: usable, and not the value WeChat rejected.
fn acceptable(record: &Record, rejected: Option<&str>) -> bool {
    record.is_usable(now_ms()) && Some(record.value.as_str()) != rejected
}

/// The keys of one credential of one app.
#[derive(Clone)]
struct Slot {
    appid: String,
    credential: Credential,
    key: String,
    lock_key: String,
}

impl Slot {
    fn new(keys: &KeySpace, appid: &str, credential: Credential) -> Self {
        Self {
            appid: appid.to_string(),
            credential,
            key: keys.value(appid, credential),
            lock_key: keys.lock(appid, credential),
        }
    }
}

/// Invalidations of one app's access token on a caller's request are at least this far
/// apart, deployment-wide: WeChat allows a forced stable-token refresh every 30 s.
pub const INVALIDATE_SPACING: Duration = FORCE_REFRESH_SPACING;

/// What [`CredentialCache::invalidate_access_token`] did.
#[derive(Debug)]
pub enum Invalidation {
    /// The token was current: it was dropped and this is its replacement.
    Replaced(Arc<Record>),
    /// The token was not (or no longer) current: nothing was dropped; this is current.
    NotCurrent(Arc<Record>),
    /// The token is current, but the app's token was invalidated less than
    /// [`INVALIDATE_SPACING`] ago.
    TooSoon { retry_after: Duration },
}

/// The key whose `SET NX PX` spaces invalidations (it holds when it reopens, Unix ms).
fn invalidate_gate_key(keys: &KeySpace, appid: &str) -> String {
    format!("{}:{{{appid}}}:invalidate:gate", keys.prefix)
}
