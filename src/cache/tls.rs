//! TLS for the Redis connections: `rediss://` URLs verify the servers against the
//! public roots built in (webpki-roots, the same as for the WeChat API), or against
//! the private CA of `redis.tls_ca_file`, and present the client certificate of
//! `redis.tls_cert_file` when it is set.

use redis::{ClientTlsConfig, ConnectionInfo, RedisResult, TlsCertificates};

use crate::configuration::RedisTls;

/// The certificates in the form redis-rs takes them.
pub(super) fn certificates(tls: &RedisTls) -> TlsCertificates {
    TlsCertificates {
        client_tls: tls.client.as_ref().map(|(cert, key)| ClientTlsConfig {
            client_cert: cert.clone(),
            client_key: key.clone(),
        }),
        root_cert: tls.ca.clone(),
    }
}

/// A client of the server at `url`, with `tls`'s certificates when there are any.
pub(super) fn client(url: &str, tls: Option<&RedisTls>) -> RedisResult<redis::Client> {
    match tls {
        Some(tls) => redis::Client::build_with_tls(url, certificates(tls)),
        None => redis::Client::open(url),
    }
}

/// What to connect to for `url`, with `tls`'s certificates when there are any.
/// deadpool-redis's own `Config` drops them (its copy of the address has no TLS
/// parameters), so the pool is built from this instead.
pub(super) fn connection_info(url: &str, tls: Option<&RedisTls>) -> RedisResult<ConnectionInfo> {
    Ok(client(url, tls)?.get_connection_info().clone())
}
