//! The id each request is served under: the one nginx or the client sent in
//! `X-Request-Id` when it is well formed, otherwise a new UUID. The access-log
//! middleware serves each request inside [`scope`], so that whatever is logged while
//! serving it ([`crate::logging`], the access log) and its JSON error body
//! (`crate::error`) carry the id, and the answer returns it in `X-Request-Id`: a
//! user's report ("request id 3f2a…") finds its lines in the logs, and nginx's
//! `$request_id` ties its own log to the instance's.

use std::future::Future;
use std::sync::Arc;

/// The header that carries the id, both ways.
pub(crate) const HEADER: &str = "x-request-id";

/// Longer ids are replaced: nginx's are 32 characters, UUIDs 36, trace ids less.
const MAX_LEN: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RequestId(Arc<str>);

impl RequestId {
    /// The id a request is served under: `sent` (the header's bytes) when well
    /// formed, otherwise a new one.
    pub(crate) fn for_request(sent: Option<&[u8]>) -> Self {
        match sent.and_then(well_formed) {
            Some(id) => Self(id.into()),
            None => Self::new(),
        }
    }

    fn new() -> Self {
        let mut buffer = uuid::Uuid::encode_buffer();
        Self(
            uuid::Uuid::new_v4()
                .hyphenated()
                .encode_lower(&mut buffer)
                .into(),
        )
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for RequestId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// `sent` when it is 1 to [`MAX_LEN`] letters, digits and `-_.:` (nginx's
/// `$request_id`, UUIDs, trace ids): anything else (spaces, quotes, a newline that
/// would forge a log line, kilobytes) is replaced, never echoed.
fn well_formed(sent: &[u8]) -> Option<&str> {
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || b"-_.:".contains(b);
    if sent.is_empty() || sent.len() > MAX_LEN || !sent.iter().all(allowed) {
        return None;
    }
    std::str::from_utf8(sent).ok()
}

tokio::task_local! {
    static CURRENT: RequestId;
}

/// Runs `serving` as the request `id`: [`current`] is `id` within it.
pub(crate) async fn scope<F: Future>(id: RequestId, serving: F) -> F::Output {
    CURRENT.scope(id, serving).await
}

/// The id of the request being served here, if this runs within one (a background
/// renewal does not).
pub(crate) fn current() -> Option<RequestId> {
    CURRENT.try_with(RequestId::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_id_is_kept_and_anything_else_replaced() {
        for kept in [
            "0f4d3b1c9a8e7f6d5c4b3a2918273645",
            "3f2a9c1e-8b7d-4e6f-a5b4-c3d2e1f0a9b8",
            "trace.01:span-02_x",
        ] {
            assert_eq!(RequestId::for_request(Some(kept.as_bytes())).as_str(), kept);
        }
        let long = "a".repeat(MAX_LEN + 1);
        for replaced in [
            "",
            "two words",
            "line\nforged",
            "quote\"d",
            "ünïcode",
            long.as_str(),
        ] {
            let id = RequestId::for_request(Some(replaced.as_bytes()));
            assert_ne!(id.as_str(), replaced);
            assert!(uuid::Uuid::parse_str(id.as_str()).is_ok(), "{id:?}");
        }
        let made = RequestId::for_request(None);
        assert!(uuid::Uuid::parse_str(made.as_str()).is_ok());
        assert_ne!(made, RequestId::for_request(None), "each made id is new");
    }

    #[tokio::test]
    async fn the_id_is_current_within_its_scope_only() {
        let id = RequestId::for_request(Some(b"scoped-id"));
        assert_eq!(current(), None);
        let inside = scope(id.clone(), async { current() }).await;
        assert_eq!(inside, Some(id));
        assert_eq!(current(), None);
    }
}
