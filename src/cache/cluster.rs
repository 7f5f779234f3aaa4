//! The connection of the Redis Cluster topology: one cluster connection, shared by
//! every operation, so that a hung node costs only the operations on its own slots.
//!
//! Why not a pool (deadpool-redis's `cluster` pool, or any pool of cluster
//! connections): a redis-rs cluster connection is not one socket but a task holding a
//! multiplexed connection to every node, and *making* one waits for every node.
//! `ClusterClient::get_async_connection` connects to each seed node and then, after
//! `CLUSTER SLOTS`, to each node of the slot map, and completes only when each of those
//! connections has answered its `PING` or timed out (`connection_timeout`,
//! `response_timeout`). So while one primary hangs (SIGSTOP, swap, a stuck disk: the
//! TCP connect succeeds, nothing is answered), every new connection takes at least
//! `redis.timeout_ms`, which is also the pool's create timeout and the store's bound on
//! an operation: every checkout that has to make a connection fails, on every slot.
//! Measured (tests/api/cluster_failover.rs, timeout_ms = 1000): with a primary that
//! serves no configured app SIGSTOPped, the first operation that needed a new pooled
//! connection (the pool grows under concurrency) failed after 1004 ms with "Timeout
//! occurred while creating a new object", and `/readyz` answered 503. deadpool-redis's
//! own cluster pool is worse: its recycle sends `PING`, which redis-rs routes to every
//! primary and which succeeds only when all answer, so every checkout waits for the
//! hung node.
//!
//! A cluster connection is made to be shared: it is `Clone`, each clone sends its
//! requests to the same task, which multiplexes them over the per-node connections,
//! reconnects a node that dropped (in the background, with backoff), follows `MOVED`
//! and `ASK`, refreshes its slot map on `MOVED` or an unknown node, and starts over from
//! the seed nodes when it has no node left. So one is made, on first use, and never
//! replaced; it is made pending
//! (`ClusterClient::get_pending_async_connection_with_config`): its connections are
//! made in the background, not under the bound of the operation that first needs it,
//! so even an instance that starts while a node hangs gets connected (its first
//! operations wait for that, within `timeout_ms`). A request is bounded by
//! `response_timeout` = `timeout_ms` at the node, and by `timeout_ms` as a whole in the
//! store; one to the hung node's slots fails, one to another node's slots does not wait
//! for it (measured: see `docs/operations.md`). `redis.pool_size` does not apply here.
//!
//! The connection's task runs on a runtime of its own (one thread), not on the actix
//! worker whose operation happened to make it: actix replaces a worker that died, and
//! the tasks of its runtime die with it, which would leave every other worker's handle
//! sending to nothing ("Unable to send command") until a restart.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisError, RedisResult};

use crate::configuration::RedisTls;

/// The cluster's connection, made on first use; see the module's documentation.
pub(super) struct Shared {
    /// Where the connection's task runs; `None` only while being dropped.
    runtime: Option<tokio::runtime::Runtime>,
    client: ClusterClient,
    config: ClusterConfig,
    connection: OnceLock<ClusterConnection>,
    /// The first seed node alone, asked why when no node can be reached.
    seed: redis::Client,
    timeout: Duration,
    /// When the seed node was last asked, and what it said (`None`: it connected).
    diagnosis: Mutex<Option<(Instant, Option<String>)>>,
}

/// How long one answer of the seed node explains the failures that follow it.
const DIAGNOSIS_INTERVAL: Duration = Duration::from_secs(5);

impl Shared {
    /// The connection to the cluster whose seed nodes are `urls`, each connection to a
    /// node and each answer bounded by `timeout`, every node verified with `tls`'s CA
    /// (and shown its client certificate) when there is one. Fails on URLs or
    /// certificates the client cannot use; connects nothing yet.
    pub(super) fn new(
        urls: Vec<String>,
        tls: Option<&RedisTls>,
        timeout: Duration,
    ) -> RedisResult<Self> {
        let seed = match urls.first() {
            Some(url) => super::tls::client(url, tls)?,
            None => {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "no seed node",
                )))
            }
        };
        let mut builder = ClusterClientBuilder::new(urls)
            .connection_timeout(timeout)
            .response_timeout(timeout);
        if let Some(tls) = tls {
            builder = builder.certs(super::tls::certificates(tls));
        }
        let client = builder.build()?;
        // The builder's timeouts are replaced by the config's (`None` if unset).
        let config = ClusterConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("redis-cluster")
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
            client,
            config,
            connection: OnceLock::new(),
            seed,
            timeout,
            diagnosis: Mutex::new(None),
        })
    }

    /// `error`, said so that an operator can act on it. When no node could be reached,
    /// redis-rs says only that ("No connections found"): why (a certificate the CA
    /// does not sign, a client certificate the nodes want, a wrong password, a refused
    /// port) is in the error of a direct connection to the first seed node, so that
    /// is made and its error added: at most once per [`DIAGNOSIS_INTERVAL`], so that an
    /// outage does not turn every failed operation into another connection attempt,
    /// and within half the operation's bound, so that the operation's error is still
    /// the one reported.
    pub(super) async fn describe(&self, error: &RedisError) -> String {
        if error.kind() != ErrorKind::ClusterConnectionNotFound {
            return error.to_string();
        }
        let recent = self
            .last_diagnosis()
            .filter(|(at, _)| at.elapsed() < DIAGNOSIS_INTERVAL);
        let refusal = match recent {
            Some((_, refusal)) => refusal,
            None => {
                let refusal = self.ask_seed().await;
                *self.diagnosis.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), refusal.clone()));
                refusal
            }
        };
        match refusal {
            Some(refusal) => {
                format!("{error}; the first seed node refuses a connection: {refusal}")
            }
            None => error.to_string(),
        }
    }

    fn last_diagnosis(&self) -> Option<(Instant, Option<String>)> {
        self.diagnosis
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The error of a direct connection to the first seed node, if it fails.
    async fn ask_seed(&self) -> Option<String> {
        let bound = self.timeout / 2;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(bound))
            .set_response_timeout(Some(bound));
        self.seed
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .err()
            .map(|e| e.to_string())
    }

    /// A handle on the shared connection (made, pending, on the first call; its task
    /// spawned on the connection's own runtime).
    pub(super) fn connection(&self) -> ClusterConnection {
        self.connection
            .get_or_init(|| {
                let _on_own_runtime = self.runtime.as_ref().map(|runtime| runtime.enter());
                self.client
                    .get_pending_async_connection_with_config(self.config.clone())
            })
            .clone()
    }
}

impl Drop for Shared {
    /// Stops the connection's runtime without waiting for it: a store may be dropped
    /// inside an async context, where blocking on a runtime's end is not allowed.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
