//! The store's atomic operations behave the same on Redis and in memory.

use std::time::Duration;

use wx_jssdk::cache::{MemoryStore, Record, RedisStore, Store};
use wx_jssdk::clock::now_ms;
use wx_jssdk::configuration::RedisSettings;
use wx_jssdk::secret::Secret;

use crate::helpers::TestRedis;

fn record(value: &str, renew_at: u64, expires_at: u64) -> Record {
    Record {
        value: value.into(),
        fetched_at: renew_at / 2,
        renew_at,
        usable_until: expires_at,
        expires_at,
        rejected: false,
    }
}

async fn stored(store: &Store, key: &str) -> Option<Record> {
    let raw = store.get(key).await.unwrap();
    raw.map(|raw| Record::from_json(&raw).expect("a record"))
}

/// The contract of every store; also run against a Redis Cluster (`cluster.rs`).
pub async fn check_semantics(store: &Store) {
    let now = now_ms();
    let newer = record("newer", now + 50_000, now + 60_000);
    let older = record("older", now + 40_000, now + 50_000);
    assert!(store.put_record("k", &newer, true).await.unwrap());
    assert!(
        !store.put_record("k", &older, true).await.unwrap(),
        "an older record may not replace a newer one"
    );
    assert_eq!(store.get("k").await.unwrap(), Some(newer.to_json()));
    let rescheduled = record("newer", now + 55_000, now + 60_000);
    assert!(store.put_record("k", &rescheduled, false).await.unwrap());
    assert!(
        !store.put_record("k", &rescheduled, true).await.unwrap(),
        "no change"
    );

    check_tombstones(store, now).await;

    assert!(store
        .set_nx("lock", "a", Duration::from_secs(10))
        .await
        .unwrap());
    assert!(!store
        .set_nx("lock", "b", Duration::from_secs(10))
        .await
        .unwrap());
    assert!(
        !store.delete_if_equals("lock", "b").await.unwrap(),
        "only the holder may release"
    );
    assert!(store.delete_if_equals("lock", "a").await.unwrap());
    assert!(store
        .set_nx("lock", "b", Duration::from_millis(50))
        .await
        .unwrap());

    assert_eq!(
        store
            .incr_with_ttl("n", Duration::from_secs(10))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .incr_with_ttl("n", Duration::from_secs(10))
            .await
            .unwrap(),
        2
    );

    // A lock extended by its holder outlives its first TTL; an abandoned one expires.
    assert!(store
        .set_nx("held", "h", Duration::from_millis(300))
        .await
        .unwrap());
    assert!(!store
        .extend_if_equals("held", "intruder", Duration::from_secs(10))
        .await
        .unwrap());
    assert!(store
        .extend_if_equals("held", "h", Duration::from_secs(10))
        .await
        .unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !store
        .set_nx("lock", "c", Duration::from_secs(10))
        .await
        .unwrap()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "an abandoned lock must expire"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    actix_web::rt::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !store
            .set_nx("held", "x", Duration::from_secs(1))
            .await
            .unwrap(),
        "the extended lock is still held"
    );
}

/// A refused value is buried (only if it is still the value there), its tombstone keeps
/// copies of it out, and gives way to a longer-lasting value or to WeChat handing the
/// same value out again.
async fn check_tombstones(store: &Store, now: u64) {
    let refused = record("refused", now + 50_000, now + 60_000);
    assert!(store.put_record("t", &refused, true).await.unwrap());
    assert!(
        !store
            .reject("t", &record("other", 1, 2).rejected())
            .await
            .unwrap(),
        "only the value named is buried"
    );
    assert!(store.reject("t", &refused.rejected()).await.unwrap());
    assert!(
        !store.reject("t", &refused.rejected()).await.unwrap(),
        "once"
    );
    assert_eq!(stored(store, "t").await, Some(refused.rejected()));

    let copy_renewed_later = record("refused", now + 55_000, now + 60_000);
    assert!(
        !store
            .put_record("t", &copy_renewed_later, false)
            .await
            .unwrap(),
        "an instance's copy of a refused value is not put back"
    );
    let older = record("older", now + 40_000, now + 50_000);
    assert!(!store.put_record("t", &older, true).await.unwrap());
    assert!(
        store
            .put_record("t", &copy_renewed_later, true)
            .await
            .unwrap(),
        "WeChat handed the value out again"
    );
    assert!(store
        .reject("t", &copy_renewed_later.rejected())
        .await
        .unwrap());
    let replacement = record("replacement", now + 70_000, now + 80_000);
    assert!(store.put_record("t", &replacement, false).await.unwrap());
    assert_eq!(stored(store, "t").await, Some(replacement));
    assert!(!store.reject("gone", &refused.rejected()).await.unwrap());

    store
        .set("plain", "v", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(store.get("plain").await.unwrap().as_deref(), Some("v"));
    store.delete("plain").await.unwrap();
    assert_eq!(store.get("plain").await.unwrap(), None);
}

/// Settings of a store on the one Redis at `url`, and nothing else.
pub fn single_redis(url: String) -> RedisSettings {
    RedisSettings {
        url: Some(Secret::new(url)),
        cluster_urls: None,
        sentinel_urls: None,
        sentinel_master: None,
        sentinel_username: None,
        sentinel_password: None,
        tls_ca_file: None,
        tls_cert_file: None,
        tls_key_file: None,
        key_prefix: "t".into(),
        pool_size: 2,
        timeout: Duration::from_millis(1000),
    }
}

#[actix_web::test]
async fn redis_store_semantics() {
    let redis = TestRedis::start();
    let store = Store::Redis(RedisStore::new(&single_redis(redis.url())).unwrap());
    check_semantics(&store).await;
}

#[actix_web::test]
async fn memory_store_semantics() {
    check_semantics(&Store::Memory(MemoryStore::new())).await;
}
