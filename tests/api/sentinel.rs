//! The service on Redis Sentinel: warm instances keep signing while the master is
//! SIGKILLed and the sentinels promote the replica; the store then writes to the new
//! master without a restart, a renewal there costs one WeChat call, and a cold
//! instance started after the failover works.

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use wx_jssdk::cache::Store;

use crate::helpers::{
    redis_store_with, renew_and_start_cold_after_failover, sign_until_written, spawn_app_with,
    wait_until_replicated, Options, TestSentinel, APPID,
};

const ADMIN_KEY: &str = "sentinel-admin-key-0123456789";

fn on_sentinels(sentinel: &TestSentinel) -> Options {
    Options {
        // The store is the sentinels', set below: not a redis-server of its own.
        with_redis: false,
        admin_keys: vec![ADMIN_KEY],
        ..Options::default()
    }
    .set_all(sentinel.settings())
}

/// A store of the service's own kind on the sentinels, as an instance builds it.
fn store_on(sentinel: &TestSentinel) -> Store {
    redis_store_with(&sentinel.settings())
}

#[actix_web::test]
async fn after_a_failover_the_instances_write_to_the_new_master_without_a_restart() {
    fails_over(TestSentinel::start(), "sentinel failover").await;
}

/// The same over TLS, as a managed Redis runs it: sentinels and data nodes speak TLS
/// only, with certificates of a private CA, and want a client certificate; the service
/// verifies both with `redis.tls_ca_file` and shows `redis.tls_cert_file`.
#[actix_web::test]
async fn over_tls_with_a_private_ca_and_client_certificates_too() {
    fails_over(TestSentinel::start_tls(), "sentinel failover over TLS").await;
}

/// Three warm instances sign through a SIGKILL of the master; the store then writes
/// to the promoted replica without a restart, with no WeChat call for the failover, a
/// renewal there costs one, and a cold instance started after it works.
async fn fails_over(sentinel: TestSentinel, name: &str) {
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
    wait_until_replicated(
        &mut sentinel.node(sentinel.master_port).await,
        &mut sentinel.node(sentinel.replica_port).await,
    )
    .await;

    sentinel.kill_master();
    let killed = Instant::now();
    // Every instance keeps signing (from its copy in memory) until the store writes
    // again, now to the promoted replica.
    let (written, signed) = sign_until_written(&instances, &probe, "probe", killed).await;
    println!(
        "{name}: first successful write {:.2} s after the master was killed \
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
    // The probe's write there, no WeChat call for the failover; a renewal on the new
    // master, and a cold instance started after the failover.
    renew_and_start_cold_after_failover(
        &first,
        &instances,
        &mut new_master,
        "probe",
        &key,
        ADMIN_KEY,
        calls,
    )
    .await;
}
