//! Integration tests: the real service, a private Redis and the sandbox WeChat API.

// Shared with the other test binaries: see its doc comment.
#[path = "../common/mod.rs"]
mod common;

mod access_config;
mod admin;
mod cache;
mod certificates;
mod cluster;
mod cluster_failover;
mod config;
mod credentials;
mod deployment;
mod dev;
mod domains;
mod faults;
mod gateway;
mod helpers;
mod hostile;
mod jssdk;
mod logs;
mod lost_data;
mod monitoring;
mod ops;
mod public;
mod reissue;
mod request_ids;
mod schedule;
mod sentinel;
mod store;
mod tls;
mod trust;
mod upstream;
mod verify;
mod work;
