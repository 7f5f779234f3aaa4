//! Every key the cache uses, built in one place. Each carries the app's cache id as a
//! `{hash tag}`, so that all keys of one app live in the same Redis Cluster slot and a
//! script may touch any of them.

use super::Credential;

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

    fn key(&self, id: &str, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}:{{{id}}}:{rest}", self.prefix)
    }

    /// The credential's record (see `record::Record`).
    pub fn value(&self, id: &str, credential: Credential) -> String {
        self.key(id, format_args!("{}", credential.name()))
    }

    /// The refresh lock of the credential (see `lock::RefreshLock`).
    pub fn lock(&self, id: &str, credential: Credential) -> String {
        self.key(id, format_args!("lock:{}", credential.name()))
    }

    /// When the credential's next renewal attempt may be made, after a failure.
    pub(crate) fn backoff(&self, id: &str, credential: Credential) -> String {
        self.key(id, format_args!("backoff:{}", credential.name()))
    }

    /// Spaces forced refreshes of the stable token (WeChat: 30 s apart).
    pub(crate) fn force_refresh_gate(&self, id: &str) -> String {
        self.key(id, format_args!("force_refresh:gate"))
    }

    /// Forced refreshes of the stable token on China day `day` (WeChat: 20 a day).
    pub(crate) fn force_refresh_count(&self, id: &str, day: u64) -> String {
        self.key(id, format_args!("force_refresh:count:{day}"))
    }

    /// Spaces invalidations of the credential on callers' requests; holds when it
    /// reopens (Unix ms).
    pub(crate) fn invalidate_gate(&self, id: &str, credential: Credential) -> String {
        self.key(id, format_args!("invalidate:gate:{}", credential.name()))
    }

    /// Invalidations of the credential on callers' requests on China day `day`.
    pub(crate) fn invalidate_count(&self, id: &str, credential: Credential, day: u64) -> String {
        self.key(
            id,
            format_args!("invalidate:count:{}:{day}", credential.name()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of an app carries the same hash tag, so a Redis Cluster keeps them in
    /// one slot; the tag is the whole cache id, `/` of a WeChat Work app included.
    #[test]
    fn every_key_of_an_app_shares_its_hash_tag() {
        let keys = KeySpace::new("wxjssdk");
        let id = "wwcorp/1000002";
        let all = [
            keys.value(id, Credential::AccessToken),
            keys.lock(id, Credential::JsapiTicket),
            keys.backoff(id, Credential::AgentTicket),
            keys.force_refresh_gate(id),
            keys.force_refresh_count(id, 20_000),
            keys.invalidate_gate(id, Credential::CardTicket),
            keys.invalidate_count(id, Credential::AccessToken, 20_000),
        ];
        for key in &all {
            assert!(key.starts_with("wxjssdk:{wwcorp/1000002}:"), "{key}");
        }
        assert_eq!(all[0], "wxjssdk:{wwcorp/1000002}:access_token");
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
    }
}
