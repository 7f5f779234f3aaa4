//! The service on a Redis Cluster whose primaries have replicas: warm instances keep
//! signing while the primary of the app's slot is SIGKILLed and its replica promoted;
//! the store then writes to the new primary without a restart, and a renewal there
//! costs one WeChat call.

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use wx_jssdk::cache::{RedisStore, Store};

use crate::helpers::{
    cluster_settings, renew_and_start_cold_after_failover, sign_until_written, spawn_app_with,
    Options, TestCluster, APPID,
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
    let probed: Option<String> = new_primary.get(&probe_key).await.unwrap();
    assert_eq!(
        probed.as_deref(),
        Some("after"),
        "written on the new primary"
    );
    assert_eq!(
        first.sandbox.calls(),
        calls,
        "no WeChat call for the failover"
    );

    // A renewal on the new primary, and a cold instance started after the failover.
    renew_and_start_cold_after_failover(
        &first,
        &instances,
        &mut new_primary,
        &key,
        ADMIN_KEY,
        calls,
    )
    .await;
}
