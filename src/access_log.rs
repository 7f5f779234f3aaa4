//! One log line per request: client address, method, path (never the query, which
//! carries page URLs and signatures), status and latency.
//!
//! A hand-rolled middleware rather than actix's `Logger`: that one renders its format
//! (client address, timestamps) for every request even when the line is filtered out,
//! which profiling showed on the signing path. Here nothing is computed unless the
//! `wx_jssdk::access` target is enabled at info level (`RUST_LOG`).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::Error;

const TARGET: &str = "wx_jssdk::access";

/// Paths polled by load balancers and orchestrators: logging them would bury the rest.
const PROBES: [&str; 2] = ["/healthz", "/readyz"];

pub async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if !log::log_enabled!(target: TARGET, log::Level::Info) || PROBES.contains(&req.path()) {
        return next.call(req).await;
    }
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_string();
    let peer = req.peer_addr();
    let response = next.call(req).await;
    let status = match &response {
        Ok(res) => res.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    let peer = peer
        .map(|p| p.ip().to_string())
        .unwrap_or_else(|| "-".into());
    log::info!(target: TARGET, "{peer} \"{method} {path}\" {status} {:.3}ms", started.elapsed().as_secs_f64() * 1000.0);
    response
}
