//! wx-jssdk: the backend of the WeChat JS-SDK.
//!
//! A request travels through three layers, each in its own module:
//!
//! * [`routes`]: the HTTP surface (verification of WeChat's server URL, `wx.config`
//!   signing, health). Handlers parse input, pick the app and call the layers below.
//! * [`cache`]: the shared credential cache. It answers "give me a valid
//!   access_token / jsapi_ticket for this app" from Redis (or memory), and makes sure
//!   exactly one process in the deployment asks WeChat when a value must be renewed.
//! * [`wechat`]: the WeChat protocol: the signature rules and the API client.
//!
//! [`access`] decides who may use an app (page domains, CORS origins, admin keys).
//! [`configuration`] loads the layered settings, [`startup`] wires everything into an
//! actix-web server, [`error`] maps every failure to one JSON error shape, and
//! [`sandbox`] is a stand-in for the WeChat API used by tests and `--dev`.
//!
//! Operations: [`metrics`] (Prometheus, `GET /metrics`), [`limits`] (request body
//! limits), [`shutdown`] (what happens after SIGTERM), [`access_log`].

pub mod access;
pub mod access_log;
pub mod cache;
pub mod configuration;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod routes;
pub mod sandbox;
pub mod shutdown;
pub mod startup;
pub mod wechat;
