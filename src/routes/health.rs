//! Liveness and readiness, for load balancers and orchestrators.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::error::ApiError;

/// The process is up and serving HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The instance can do its job: the store answers and apps are configured.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.apps.is_empty() {
        return Err(ApiError::Unavailable("no app is configured".into()));
    }
    state
        .cache
        .store()
        .ping()
        .await
        .map_err(|e| ApiError::Unavailable(format!("the credential store does not answer: {e}")))?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready", "apps": state.apps.len()})))
}
