//! The service on a Redis Cluster: the store keeps its semantics, a cold burst on two
//! instances still makes one upstream call per credential, every key of an app lives
//! in one slot, and the binary takes the cluster's nodes from the environment.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use redis::AsyncCommands;
use wx_jssdk::cache::{ChinaDay, Credential, KeySpace, RedisStore, Store};
use wx_jssdk::clock::now_ms;

use crate::helpers::{
    cluster_settings, cold_burst_on_two_instances, error_code, redis_store_with, spawn_app_with,
    Options, RunningBinary, Service, TestApp, TestCluster, APPID, SECRET, SERVER_TOKEN,
};
use crate::store::check_semantics;

fn on_a_cluster() -> Options {
    Options {
        redis_cluster: true,
        ..Options::default()
    }
}

/// How many keys each node of the cluster holds, in the order of its ports.
async fn keys_per_node(cluster: &TestCluster) -> Vec<u64> {
    let mut counts = Vec::new();
    for &port in &cluster.ports {
        let count: u64 = redis::cmd("DBSIZE")
            .query_async(&mut cluster.node(port).await)
            .await
            .unwrap();
        counts.push(count);
    }
    counts
}

#[actix_web::test]
async fn the_store_keeps_its_semantics_on_a_cluster() {
    let cluster = TestCluster::start();
    let mut settings = cluster_settings(&cluster.urls());
    settings.pool_size = 2;
    let store = Store::Redis(RedisStore::new(&settings).unwrap());
    check_semantics(&store).await;
    store.ping().await.unwrap();
    // The keys of `check_semantics` carry no hash tag: "k" and "n" fall in slots of
    // different nodes, so commands and scripts were routed to more than one node.
    let holding = keys_per_node(&cluster).await;
    assert!(
        holding.iter().filter(|&&n| n > 0).count() >= 2,
        "keys per node: {holding:?}"
    );
}

/// The shared cluster connection is used by every actix worker, each a runtime of its
/// own; actix replaces a worker that died (a panic), and its runtime's tasks die with
/// it. The connection must not be one of them, or every worker's operations would fail
/// until a restart.
#[test]
fn the_cluster_connection_outlives_the_worker_that_made_it() {
    let cluster = TestCluster::start();
    let store = redis_store_with(&cluster.settings());
    let worker = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    // The first worker makes the connection with the first operation, then dies.
    worker()
        .block_on(store.set("outlived", "v", Duration::from_secs(60)))
        .unwrap();
    let read = worker().block_on(store.get("outlived"));
    assert_eq!(read.unwrap().as_deref(), Some("v"));
}

#[actix_web::test]
async fn a_cold_burst_on_two_instances_on_a_cluster_makes_one_token_and_one_ticket_call() {
    let first = spawn_app_with(on_a_cluster()).await;
    let second = cold_burst_on_two_instances(&first).await;
    for instance in [&first, &second] {
        assert_eq!(instance.get("/readyz").await.status(), 200);
    }
}

/// Every key of the app now stored on the cluster, read from all primaries.
async fn stored_keys(app: &TestApp) -> BTreeSet<String> {
    let keys: Vec<String> = app
        .cluster()
        .connection()
        .await
        .keys("wxjssdk:*")
        .await
        .unwrap();
    keys.into_iter().collect()
}

#[actix_web::test]
async fn every_key_of_an_app_lives_in_one_slot_on_one_node() {
    let app = spawn_app_with(on_a_cluster()).await;
    app.sign_and_check("https://page.example.com/").await;
    // A rejected token: dropped with compare-and-delete, force-refreshed under the
    // gate and the daily counter, which adds their keys.
    app.sandbox.revoke_tokens(APPID);
    let keys = KeySpace::new("wxjssdk");
    let _: () = app
        .cluster()
        .connection()
        .await
        .del(keys.value(APPID, Credential::JsapiTicket))
        .await
        .unwrap();
    // A fresh instance (no copy in memory) meets the rejection.
    app.spawn_instance()
        .sign_and_check("https://page.example.com/")
        .await;
    assert_eq!(app.sandbox.calls().stable_token_force, 1);

    let key = |name: &str| format!("wxjssdk:{{{APPID}}}:{name}");
    let stored = stored_keys(&app).await;
    let today = ChinaDay::of(now_ms()).number;
    let expected: BTreeSet<String> = [
        "access_token".to_string(),
        "jsapi_ticket".to_string(),
        "force_refresh:gate".to_string(),
        format!("force_refresh:count:{today}"),
    ]
    .map(|name| key(&name))
    .into();
    assert_eq!(stored, expected, "the refresh locks are released");

    let mut all = stored.clone();
    for credential in [Credential::AccessToken, Credential::JsapiTicket] {
        all.insert(keys.value(APPID, credential));
        all.insert(keys.lock(APPID, credential));
    }
    let mut slots = BTreeSet::new();
    for key in &all {
        slots.insert(app.cluster().keyslot(key).await);
    }
    assert_eq!(slots.len(), 1, "slots of {all:?}: {slots:?}");
    let holding = keys_per_node(app.cluster()).await;
    assert_eq!(
        holding.iter().filter(|&&n| n > 0).collect::<Vec<_>>(),
        [&(stored.len() as u64)],
        "keys per node: {holding:?}"
    );
}

#[actix_web::test]
async fn the_binary_takes_the_cluster_nodes_from_one_environment_variable() {
    // The in-process app is only used for its cluster and sandbox.
    let env = spawn_app_with(on_a_cluster()).await;
    let mut config = tempfile::NamedTempFile::new().unwrap();
    write!(
        config,
        "[wechat]\napi_base = \"{}\"\n\
         [apps.default]\nappid = \"{APPID}\"\nsecret = \"{SECRET}\"\ntoken = \"{SERVER_TOKEN}\"\n",
        env.sandbox_url
    )
    .unwrap();
    let config_path = config.path().to_string_lossy().to_string();
    let urls = env.cluster().urls().join(",");
    let binary = RunningBinary::start(
        &["--config", &config_path],
        &[("WXJSSDK__REDIS__CLUSTER_URLS", &urls)],
        Stdio::null(),
    )
    .await;
    assert_eq!(binary.get("/readyz").await.status(), 200);
    let sent = std::time::Instant::now();
    let response = binary.sign("https://page.example.com/").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let signed = env.signed_with_a_valid_ticket(&body, "https://page.example.com/", sent);
    assert!(signed, "{body}");
    let ticket: Option<String> = env
        .cluster()
        .connection()
        .await
        .get(format!("wxjssdk:{{{APPID}}}:jsapi_ticket"))
        .await
        .unwrap();
    assert!(
        ticket.is_some(),
        "the binary stored its ticket on the cluster"
    );
}

#[actix_web::test]
async fn with_a_node_down_the_instance_stays_ready_and_answers_in_bounded_time() {
    let app = spawn_app_with(on_a_cluster()).await;
    app.sign_and_check("https://page.example.com/").await;
    let holding = keys_per_node(app.cluster()).await;
    let idle = holding
        .iter()
        .position(|&n| n == 0)
        .expect("a node without keys");
    app.cluster().kill_node(app.cluster().ports[idle]);

    // Readiness asks whether any node answers, not whether every one does.
    assert_eq!(app.get("/readyz").await.status(), 200);
    // The cluster client may stall every command while it reconnects to the dead node
    // (redis-rs issue 2092); the per-command timeout turns that into a 503, never into
    // a hung request.
    let started = std::time::Instant::now();
    let response = app.sign("https://page.example.com/").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    if response.status() != 200 {
        assert_eq!(error_code(response, 503).await, "unavailable");
    }
}
