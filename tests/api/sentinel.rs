//! The service on Redis Sentinel: warm instances keep signing while the master is
//! SIGKILLed and the sentinels promote the replica; the store then writes to the new
//! master without a restart, a renewal there costs one WeChat call, and a cold
//! instance started after the failover works.

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use wx_jssdk::cache::{RedisStore, Store};

use crate::helpers::{
    renew_and_start_cold_after_failover, shipped_settings_with, sign_until_written, spawn_app_with,
    Options, TestSentinel, APPID, SECRET, SENTINEL_MASTER, SERVER_TOKEN,
};

const ADMIN_KEY: &str = "sentinel-admin-key-0123456789";

fn on_sentinels(sentinel: &TestSentinel) -> Options {
    Options {
        // The store is the sentinels', set below: not a redis-server of its own.
        with_redis: false,
        admin_keys: vec![ADMIN_KEY],
        ..Options::default()
    }
    .set("redis.sentinel_urls", sentinel.urls().join(","))
    .set("redis.sentinel_master", SENTINEL_MASTER)
}

/// A store of the service's own kind on the sentinels, as an instance builds it.
fn store_on(sentinel: &TestSentinel) -> Store {
    let settings = shipped_settings_with(&[
        ("redis.sentinel_urls", sentinel.urls().join(",").as_str()),
        ("redis.sentinel_master", SENTINEL_MASTER),
        ("apps.default.appid", APPID),
        ("apps.default.secret", SECRET),
        ("apps.default.token", SERVER_TOKEN),
    ]);
    Store::Redis(RedisStore::new(&settings.redis.expect("a [redis] table")).unwrap())
}

#[actix_web::test]
async fn after_a_failover_the_instances_write_to_the_new_master_without_a_restart() {
    let sentinel = TestSentinel::start();
    let first = spawn_app_with(on_sentinels(&sentinel)).await;
    let instances = [first.spawn_instance(), first.spawn_instance()];
    let instances = [&first, &instances[0], &instances[1]];
    for instance in instances {
        instance.sign_and_check("https://page.example.com/").await;
    }
    let key = format!("wxjssdk:{{{APPID}}}:jsapi_ticket");
    let stored: Option<String> = sentinel
        .node(sentinel.master_port)
        .await
        .get(&key)
        .await
        .unwrap();
    assert!(stored.is_some(), "the ticket is stored on the master");
    // A store whose pool holds a connection to the master that is about to die.
    let probe = store_on(&sentinel);
    probe
        .set("probe", "before", Duration::from_secs(60))
        .await
        .unwrap();
    let calls = first.sandbox.calls();

    sentinel.kill_master();
    let killed = Instant::now();
    // Every instance keeps signing (from its copy in memory) until the store writes
    // again, now to the promoted replica.
    let (written, signed) = sign_until_written(&instances, &probe, "probe", killed).await;
    println!(
        "sentinel failover: first successful write {:.2} s after the master was killed \
         ({signed} signatures meanwhile, all 200)",
        written.as_secs_f64()
    );
    for &port in &sentinel.sentinel_ports {
        assert_eq!(
            sentinel.master_named_by(port).await,
            Some(sentinel.replica_port),
            "the sentinel on {port} names the replica as the master"
        );
    }
    let mut new_master = sentinel.node(sentinel.replica_port).await;
    let probed: Option<String> = new_master.get("probe").await.unwrap();
    assert_eq!(
        probed.as_deref(),
        Some("after"),
        "written on the new master"
    );
    assert_eq!(
        first.sandbox.calls(),
        calls,
        "no WeChat call for the failover"
    );

    // A renewal on the new master, and a cold instance started after the failover.
    renew_and_start_cold_after_failover(
        &first,
        &instances,
        &mut new_master,
        &key,
        ADMIN_KEY,
        calls,
    )
    .await;
}
