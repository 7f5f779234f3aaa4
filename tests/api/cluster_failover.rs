//! The service on a Redis Cluster whose primaries have replicas: warm instances keep
//! signing while the primary of the app's slot is SIGKILLed and its replica promoted;
//! the store then writes to the new primary without a restart, and a renewal there
//! costs one WeChat call. And a primary that hangs (SIGSTOP) costs only the apps it
//! serves: readiness reads the configured apps' keys, not every node.

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use wx_jssdk::cache::{RedisStore, Store};

use crate::helpers::{
    cluster_settings, renew_and_start_cold_after_failover, sign_until_written, spawn_app_with,
    wait_until_replicated, Options, Service, TestCluster, APPID,
};

const ADMIN_KEY: &str = "cluster-admin-key-0123456789";

fn on_a_cluster_with_replicas() -> Options {
    Options {
        redis_cluster: true,
        cluster_replicas: true,
        admin_keys: vec![ADMIN_KEY],
        ..Options::default()
    }
}

/// The primary that serves `key`, asked of every node in turn (one may be dead).
async fn primary_of(cluster: &TestCluster, key: &str) -> u16 {
    let slot = cluster.keyslot(key).await;
    cluster
        .primary_of_slot(slot, cluster.ports[0])
        .await
        .expect("a primary serves the slot")
}

#[actix_web::test]
async fn after_a_cluster_failover_the_instances_write_to_the_promoted_replica() {
    let first = spawn_app_with(on_a_cluster_with_replicas()).await;
    let instances = [first.spawn_instance(), first.spawn_instance()];
    let instances = [&first, &instances[0], &instances[1]];
    for instance in instances {
        instance.sign_and_check("https://page.example.com/").await;
    }
    let cluster = first.cluster();
    let key = format!("wxjssdk:{{{APPID}}}:jsapi_ticket");
    let primary = primary_of(cluster, &key).await;
    let replica = cluster.replica_of(primary).await;
    let stored: Option<String> = cluster.node(primary).await.get(&key).await.unwrap();
    assert!(
        stored.is_some(),
        "the ticket is stored on the app's primary"
    );
    // A store whose pool holds a connection to the primary that is about to die; its
    // probe key lives in the app's slot.
    let probe = Store::Redis(RedisStore::new(&cluster_settings(&cluster.urls())).unwrap());
    let probe_key = format!("probe:{{{APPID}}}");
    probe
        .set(&probe_key, "before", Duration::from_secs(60))
        .await
        .unwrap();
    let calls = first.sandbox.calls();
    wait_until_replicated(
        &mut cluster.node(primary).await,
        &mut cluster.node(replica).await,
    )
    .await;

    cluster.kill_node(primary);
    let killed = Instant::now();
    // Every instance keeps signing (from its copy in memory) until the store writes
    // again in the app's slot, now on the promoted replica.
    let (written, signed) = sign_until_written(&instances, &probe, &probe_key, killed).await;
    println!(
        "cluster failover: first successful write {:.2} s after the primary was killed \
         ({signed} signatures meanwhile, all 200)",
        written.as_secs_f64()
    );
    assert_eq!(
        cluster.role(replica).await,
        "master",
        "the replica was promoted"
    );
    assert_eq!(
        cluster
            .primary_of_slot(cluster.keyslot(&key).await, replica)
            .await,
        Some(replica),
        "the promoted replica serves the app's slot"
    );
    let mut new_primary = cluster.node(replica).await;
    // The probe's write there, no WeChat call for the failover; a renewal on the new
    // primary, and a cold instance started after the failover.
    renew_and_start_cold_after_failover(
        &first,
        &instances,
        &mut new_primary,
        &probe_key,
        &key,
        ADMIN_KEY,
        calls,
    )
    .await;
}

/// How long `/readyz` takes, and its status.
async fn readiness(app: &crate::helpers::TestApp) -> (u16, Duration) {
    let asked = Instant::now();
    let status = app.get("/readyz").await.status().as_u16();
    (status, asked.elapsed())
}

#[actix_web::test]
async fn a_hung_primary_costs_only_the_apps_it_serves() {
    // No replicas: the default cluster-node-timeout (15 s) outlasts the hangs here, so
    // the stopped node is neither failed nor replaced.
    let first = spawn_app_with(Options {
        redis_cluster: true,
        ..Options::default()
    })
    .await;
    let second = first.spawn_instance();
    let instances = [&first, &second];
    for instance in instances {
        instance.sign_and_check("https://page.example.com/").await;
    }
    let cluster = first.cluster();
    let key = format!("wxjssdk:{{{APPID}}}:access_token");
    let primary = primary_of(cluster, &key).await;
    let idle = *cluster.ports.iter().find(|&&p| p != primary).unwrap();
    let timeout = Duration::from_millis(1000); // redis.timeout_ms as shipped

    // A node that serves no configured app hangs: nothing changes.
    cluster.signal_node(idle, "STOP");
    let stopped = Instant::now();
    let mut slowest = Duration::ZERO;
    while stopped.elapsed() < Duration::from_secs(3) {
        for instance in instances {
            instance.sign_and_check("https://page.example.com/").await;
            let (status, took) = readiness(instance).await;
            assert_eq!(status, 200, "ready with the idle node hung");
            slowest = slowest.max(took);
        }
    }
    cluster.signal_node(idle, "CONT");
    println!(
        "idle primary hung: /readyz 200 throughout, slowest answer {} ms",
        slowest.as_millis()
    );

    // The app's primary hangs: warm instances sign from their copies; readiness says
    // the store fails, within about redis.timeout_ms.
    cluster.signal_node(primary, "STOP");
    for instance in instances {
        instance.sign_and_check("https://page.example.com/").await;
        let asked = Instant::now();
        let response = instance.get("/readyz").await;
        let took = asked.elapsed();
        assert_eq!(response.status(), 503);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({"status": "unready", "reason": "store"})
        );
        assert!(took < timeout + Duration::from_millis(500), "took {took:?}");
        println!("app's primary hung: /readyz 503 in {} ms", took.as_millis());
    }
    cluster.signal_node(primary, "CONT");
    let woken = Instant::now();
    for instance in instances {
        loop {
            if readiness(instance).await.0 == 200 {
                break;
            }
            assert!(woken.elapsed() < Duration::from_secs(10), "not ready again");
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        instance.sign_and_check("https://page.example.com/").await;
    }
    println!(
        "app's primary woken: ready again within {} ms",
        woken.elapsed().as_millis()
    );
}
