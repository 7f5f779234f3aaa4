//! Liveness, readiness and metrics, for load balancers, orchestrators and Prometheus. Both are public
//! (load balancers probe the public listener), so an unready answer says which part
//! is failing, never its error text: that goes to the log.

use actix_web::http::header;
use actix_web::mime;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::error::ApiError;
use crate::log_throttle::warn_throttled;

/// The process is up and serving HTTP. A constant body: probes come often, and
/// building a JSON value to serialise it each time was most of what this cost.
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(mime::APPLICATION_JSON)
        .body(r#"{"status":"ok"}"#)
}

/// The instance can do its job: the keys of the configured apps can be read from the
/// store within `redis.timeout_ms` (each app's access token key, in the app's slot on
/// a Redis Cluster: a node that serves no configured app does not make the instance
/// unready). `503 {"status": "unready", "reason": "store"}` otherwise.
pub(crate) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let read = state.cache.readable(state.apps.cache_ids()).await;
    crate::metrics::store_read(read.is_ok());
    if let Err(e) = read {
        warn_throttled("readyz_store", || {
            format!("readiness: the credential store does not answer: {e}")
        });
        return HttpResponse::ServiceUnavailable()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::RETRY_AFTER, "1"))
            .json(json!({"status": "unready", "reason": "store"}));
    }
    HttpResponse::Ok().json(json!({"status": "ready", "apps": state.apps.len()}))
}

/// `GET /metrics`: this process's metrics in the Prometheus text format.
pub(crate) async fn metrics() -> Result<HttpResponse, ApiError> {
    let (body, content_type) =
        crate::metrics::render().map_err(|e| ApiError::Unavailable(format!("metrics: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body))
}
