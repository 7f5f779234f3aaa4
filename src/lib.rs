//! wx-jssdk: the backend of the WeChat JS-SDK.
//!
//! A request travels down through layers; each module uses only the layers below it
//! (`tests/architecture.rs` fails when one reaches up or a cycle comes back):
//!
//! | layer | modules | job |
//! |---|---|---|
//! | HTTP | [`startup`], [`routes`], [`error`], [`limits`], [`access_log`], [`shutdown`] | builds the server; parses requests, picks the app, answers; maps every failure to one JSON error shape; body limits; the access log; what SIGTERM does |
//! | credential cache | [`cache`] | "a valid access_token / ticket for this app", from memory, Redis, or (exactly one instance in the deployment at a time) WeChat |
//! | WeChat protocol | [`wechat`] | the signature rules and the API client, which speaks the wire format of the `wechat-wire` crate |
//! | settings | [`configuration`], [`access`] | the layered settings and the access rules they are made of (page domains, CORS origins, admin keys, trusted proxies) |
//! | foundations | [`clock`], [`secret`], [`log_throttle`], [`metrics`], [`logging`], [`request_id`] | Unix-millisecond time, values never printed, throttled log lines, Prometheus counters, the log's formats, each request's id |
//!
//! A signing request: [`routes`] → [`cache`] (memory, then the [`cache::Store`]) →
//! [`wechat`] only when a value must be renewed → [`wechat::signature`] → JSON.
//!
//! WeChat's side, the stand-in that the tests, `--dev` and `wx-jssdk sandbox` run
//! against, is not in this library: it is the `wx-sandbox` crate (`sandbox/`), which
//! speaks the same `wechat-wire` (`wechat-wire/`) as [`wechat::client`].
//!
//! The public surface is what the binary, the integration tests and the fuzz targets
//! use: [`startup::Application`], [`logging`] and the [`configuration`] types, the [`cache`]'s
//! store and record (tests write Redis directly), the [`wechat::signature`] rules, the
//! parsers the fuzzers drive. Everything else is `pub(crate)`, so that the compiler
//! reports what nothing uses.

pub mod access;
mod access_log;
pub mod cache;
pub mod clock;
pub mod configuration;
mod error;
mod limits;
mod log_throttle;
pub mod logging;
mod metrics;
mod request_id;
pub mod routes;
pub mod secret;
mod shutdown;
pub mod startup;
pub mod wechat;
