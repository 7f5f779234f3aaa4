//! Fetching a value from WeChat for a renewal: which call each credential needs, and
//! what happens when WeChat refuses the token a ticket was asked with.

use std::sync::Arc;

use super::record::Record;
use super::redis::StoreError;
use super::{CacheError, Context, Credential, CredentialCache};
use crate::clock::now_ms;
use crate::configuration::{AppKind, TokenMode};
use crate::metrics::{self, CacheEvent};
use crate::wechat::{Fetched, TicketKind, WechatError};

impl CredentialCache {
    /// Fetches `credential` from WeChat. `replacing`: the value it replaces was refused
    /// by WeChat (a stable token is then asked with `force_refresh`, within budget).
    pub(super) async fn fetch(
        self: &Arc<Self>,
        ctx: &Context,
        credential: Credential,
        replacing: bool,
    ) -> Result<Fetched, CacheError> {
        match credential.ticket() {
            None => self.fetch_token(ctx, replacing).await,
            Some(kind) => self.fetch_ticket(ctx, kind).await,
        }
    }

    /// Fetches a ticket with the current token. If WeChat says that token is no longer
    /// good (40001, 40014, 42001), it is buried (only if it is still the current one:
    /// another instance may have replaced it already) and the ticket is fetched once
    /// more with its replacement.
    async fn fetch_ticket(
        self: &Arc<Self>,
        ctx: &Context,
        kind: TicketKind,
    ) -> Result<Fetched, CacheError> {
        let token = self.get(ctx, Credential::AccessToken).await?;
        match ctx.wechat.ticket(&ctx.app, kind, &token.value).await {
            Err(WechatError::InvalidCredential(code)) => {
                log::warn!(
                    "WeChat refused the access_token of {} (errcode {code}); replacing it once",
                    ctx.app.cache_id()
                );
                self.reject(ctx, Credential::AccessToken, &token).await?;
                let token = self.get(ctx, Credential::AccessToken).await?;
                Ok(ctx.wechat.ticket(&ctx.app, kind, &token.value).await?)
            }
            other => Ok(other?),
        }
    }

    /// Fetches a token. A stable token that replaces a refused one is asked with
    /// `force_refresh` when WeChat's limits, counted across the deployment, allow it.
    async fn fetch_token(&self, ctx: &Context, replacing: bool) -> Result<Fetched, CacheError> {
        let force = replacing
            && ctx.app.kind == AppKind::Official
            && self.token_mode == TokenMode::Stable
            && self
                .may_force_refresh(ctx.app.cache_id(), ctx.app.name(), now_ms())
                .await?;
        Ok(ctx
            .wechat
            .access_token(&ctx.app, self.token_mode, force)
            .await?)
    }

    /// WeChat refused `record`'s value: it is forgotten here, and buried in the store if
    /// it is still the value there (a tombstone, so that no instance puts its copy
    /// back). The next request for the credential renews it. True when this call
    /// buried it.
    pub(super) async fn reject(
        &self,
        ctx: &Context,
        credential: Credential,
        record: &Record,
    ) -> Result<bool, StoreError> {
        let slot = self.slot(ctx, credential);
        self.local.reject(&slot.id, credential, &record.value);
        self.publish_life(&slot);
        let buried = self.store.reject(&slot.key, &record.rejected()).await?;
        if buried {
            metrics::cache_event(CacheEvent::Rejected);
        }
        Ok(buried)
    }
}
