//! Integration tests: the real service, a private Redis and the sandbox WeChat API.

mod cache;
mod cluster;
mod config;
mod deployment;
mod dev;
mod faults;
mod helpers;
mod jssdk;
mod logs;
mod ops;
mod store;
mod verify;
