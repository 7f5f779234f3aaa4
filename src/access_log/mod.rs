//! The per-request middleware: one log line per request (client address (behind
//! `server.trusted_proxies`, the forwarded one), method, path
//! (never the query, which carries page URLs and signatures), status and latency), and
//! the request metrics ([`crate::metrics::http_request`]).
//!
//! A hand-rolled middleware rather than actix's `Logger`: that one renders its format
//! (client address, timestamps) for every request even when the line is filtered out,
//! which profiling showed on the signing path. Here nothing is rendered unless the
//! `wx_jssdk::access` target is enabled at info level (`RUST_LOG`). Metrics are
//! recorded in the same layer rather than in one of their own: every `from_fn` layer
//! costs a boxed future per request.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error};

use crate::metrics;
use crate::routes::AppState;

const TARGET: &str = "wx_jssdk::access";

/// Paths polled by load balancers, orchestrators and Prometheus: logging them would
/// bury the rest. They are still counted in the metrics.
const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

pub(crate) async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let line = (log::log_enabled!(target: TARGET, log::Level::Info)
        && !PROBES.contains(&req.path()))
    .then(|| {
        (
            req.method().clone(),
            req.path().to_string(),
            req.app_data::<web::Data<AppState>>()
                .map(|state| state.client_of(req.request())),
        )
    });
    let response = next.call(req).await;
    let elapsed = started.elapsed();
    let status = match &response {
        Ok(res) => res.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    metrics::http_request(response.as_ref().ok().map(|r| r.request()), status, elapsed);
    if let Some((method, path, peer)) = line {
        let peer = peer.map_or_else(|| "-".into(), |ip| ip.to_string());
        let status = status.as_u16();
        log::info!(target: TARGET, "{peer} \"{method} {path}\" {status} {:.3}ms", elapsed.as_secs_f64() * 1000.0);
    }
    response
}
