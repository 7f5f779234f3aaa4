//! The pool of the Sentinel topology: connections to whichever server the sentinels
//! name as the master, found again after a failover without a restart.
//!
//! Each new connection is made by redis-rs's `SentinelClient`: it asks the sentinels
//! (`SENTINEL MASTERS`, the first one that answers, in the configured order) for the
//! master's address, connects, and keeps the connection only if `ROLE` says `master`.
//! Nothing is cached between connections, so the first connection made after the
//! sentinels have promoted a replica goes to the new master.
//!
//! deadpool-redis has a Sentinel pool of its own (its `sentinel` feature) over that same
//! client, but it checks a pooled connection with `PING` only before handing it out. A
//! connection to a master that was demoted to a replica (it came back after a failover,
//! or a failover was asked for while it was alive) still answers `PING` and refuses
//! every write with `READONLY`, and would be handed out until it breaks. The manager
//! here checks `ROLE` instead, which costs the same round trip: a pooled connection is
//! only reused while its server is still the master, otherwise it is dropped and a new
//! one made through the sentinels. A connection to a master that died is dropped the
//! same way (its `ROLE` fails). The sentinels themselves also disconnect the clients of
//! an instance they reconfigure (`CLIENT KILL TYPE normal`).
//!
//! Making a connection is serialised (the client caches one connection per sentinel
//! behind `&mut self`); during a failover, while the sentinels still name the dead
//! master, making one fails within `timeout_ms` and the operation is an error like
//! any other of an unreachable Redis.

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, IntoConnectionInfo, RedisError, RedisResult, Role, TlsMode};
use tokio::sync::Mutex;

use crate::configuration::{RedisTls, SentinelTopology};

pub(super) type Pool = managed::Pool<Manager>;
pub(super) type Connection = managed::Object<Manager>;

/// Makes connections to the master the sentinels name; see the module's documentation.
pub(super) struct Manager {
    client: Mutex<SentinelClient>,
    connection: AsyncConnectionConfig,
}

impl Manager {
    /// A manager for `topology`, each connection (and the wait for each answer on it)
    /// bounded by `timeout`. Fails on URLs the client cannot use.
    pub(super) fn new(
        topology: &SentinelTopology<'_>,
        tls: Option<&RedisTls>,
        timeout: Duration,
    ) -> RedisResult<Self> {
        let infos = topology
            .urls
            .iter()
            .map(|url| url.expose().into_connection_info())
            .collect::<RedisResult<Vec<_>>>()?;
        let addresses = infos.iter().map(|info| info.addr().clone());
        let mut builder =
            SentinelClientBuilder::new(addresses, topology.master, SentinelServerType::Master)?;
        // The URLs' user, password and database are the data nodes' (the configuration
        // checked that every URL has the same).
        if let Some(first) = infos.first() {
            let node = first.redis_settings();
            if let Some(username) = node.username() {
                builder = builder.set_client_to_redis_username(username);
            }
            if let Some(password) = node.password() {
                builder = builder.set_client_to_redis_password(password);
            }
            builder = builder.set_client_to_redis_db(node.db());
            if topology.urls[0].expose().starts_with("rediss://") {
                builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
            }
        }
        // One CA (and client certificate) for the sentinels and the data nodes: a
        // managed Redis signs both with the same.
        if let Some(tls) = tls {
            let certificates = super::tls::certificates(tls);
            builder = builder
                .set_client_to_redis_certificates(certificates.clone())
                .set_client_to_sentinel_certificates(certificates);
        }
        if let Some(username) = topology.username {
            builder = builder.set_client_to_sentinel_username(username.expose());
        }
        if let Some(password) = topology.password {
            builder = builder.set_client_to_sentinel_password(password.expose());
        }
        Ok(Self {
            client: Mutex::new(builder.build()?),
            connection: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout)),
        })
    }
}

impl managed::Manager for Manager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut client = self.client.lock().await;
        client
            .get_async_connection_with_config(&self.connection)
            .await
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        _: &Metrics,
    ) -> RecycleResult<RedisError> {
        let role: Role = redis::cmd("ROLE").query_async(conn).await?;
        match role {
            Role::Primary { .. } => Ok(()),
            _ => Err(RecycleError::message("the server is no longer the master")),
        }
    }
}
