//! Whether a token a caller presents is one of this deployment's: the check behind
//! the WeChat-compatible gateway, which answers tickets and forwards calls only for
//! holders of a token the cache handed out, so that it is not an open proxy.
//!
//! Decided from this instance's copy when it can be (no I/O: the gateway's hot path),
//! otherwise after one comparison of the copy with the store, never by asking WeChat:
//! a stranger's made-up token must cost nothing upstream.

use super::redis::StoreError;
use super::{Context, Credential, CredentialCache};
use crate::clock::now_ms;
use crate::secret::same;

/// What a presented access token is to the app it was checked against.
#[derive(Debug, Clone)]
pub(crate) enum TokenStanding {
    /// The app's current token.
    Current,
    /// The token the current one replaced, within WeChat's grace period after a
    /// renewal: WeChat still accepts it.
    Replaced,
    /// Not a token of this app (any more).
    Unknown,
}

impl CredentialCache {
    /// `token`'s standing for the app of `ctx`, from this instance's copy alone;
    /// `None` when the copy does not know it (the store may: another instance renewed).
    pub(crate) fn token_standing_here(&self, ctx: &Context, token: &str) -> Option<TokenStanding> {
        let id = ctx.app.cache_id();
        let now = now_ms();
        let copy = self.local.lookup(id, Credential::AccessToken, now).servable;
        if copy.is_some_and(|c| same(&c.value, token)) {
            return Some(TokenStanding::Current);
        }
        self.local
            .replaced(id, Credential::AccessToken, now)
            .filter(|replaced| same(replaced, token))
            .map(|_| TokenStanding::Replaced)
    }

    /// `token`'s standing for the app of `ctx`, comparing this instance's copy with
    /// the store first when the copy alone does not know it.
    pub(crate) async fn token_standing(
        &self,
        ctx: &Context,
        token: &str,
    ) -> Result<TokenStanding, StoreError> {
        if let Some(standing) = self.token_standing_here(ctx, token) {
            return Ok(standing);
        }
        self.reconcile(&self.slot(ctx, Credential::AccessToken))
            .await?;
        Ok(self
            .token_standing_here(ctx, token)
            .unwrap_or(TokenStanding::Unknown))
    }
}
