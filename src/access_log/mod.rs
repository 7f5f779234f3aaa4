//! The per-request middleware: one log line per request (client address (behind
//! `server.trusted_proxies`, the forwarded one), method, path
//! (never the query, which carries page URLs and signatures), status and latency), and
//! the request metrics ([`crate::metrics::http_request`]).
//!
//! A hand-rolled middleware rather than actix's `Logger`: that one renders its format
//! (client address, timestamps) for every request even when the line is filtered out,
//! which profiling showed on the signing path. Here nothing is rendered unless the
//! `wx_jssdk::access` target is enabled at info level (`RUST_LOG`), decided once at
//! start-up. Metrics are recorded in the same layer rather than in one of their own:
//! every `from_fn` layer costs a boxed future per request.
//!
//! The lines do not go through `log`: a worker renders its line into the buffer of
//! [`writer`], whose thread writes them to stderr in batches and drops (and counts)
//! lines rather than make a worker wait for a slow sink. They keep `env_logger`'s look
//! (`[TIME INFO  wx_jssdk::access] ...`), so that they read like the other lines of
//! the log, or with `log.format = "json"` are JSON objects like the other lines
//! ([`crate::logging`]); the format is [`AccessLog::render`] and [`lost_lines`] alone.
//!
//! Every request is served under its id ([`crate::request_id`]), taken from
//! `X-Request-Id` or made here, and answered with it in `X-Request-Id`, whether the
//! access log is on or not: an error body and any line logged while serving carry it.

mod writer;

use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode, Uri};
use actix_web::middleware::Next;
use actix_web::{web, Error};

use crate::logging::{JsonLine, LogFormat};
use crate::metrics;
use crate::request_id::{self, RequestId};
use crate::routes::AppState;

use writer::LineWriter;

const TARGET: &str = "wx_jssdk::access";

/// Paths polled by load balancers, orchestrators and Prometheus: logging them would
/// bury the rest. They are still counted in the metrics.
const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// How many bytes of lines may wait for a slow sink before lines are dropped: about
/// 8 000 lines, a few seconds of a busy instance's traffic, 1 MiB of memory at most.
const PENDING_BYTES: usize = 1024 * 1024;

/// The access log of a server: on (a writer thread) or off. Shared by its workers as
/// app data.
#[derive(Clone)]
pub(crate) struct AccessLog {
    lines: Option<LineWriter>,
    format: LogFormat,
    /// The writer thread, so that a stopping server can let it finish.
    thread: Option<std::sync::Arc<std::thread::JoinHandle<()>>>,
}

impl AccessLog {
    /// On, writing to stderr, when `RUST_LOG` enables `wx_jssdk::access` at info level
    /// (the default); otherwise off, and a request costs nothing here.
    /// Its lines are written in `format`.
    pub(crate) fn from_log_level(format: LogFormat) -> std::io::Result<Self> {
        if !log::log_enabled!(target: TARGET, log::Level::Info) {
            return Ok(Self {
                lines: None,
                format,
                thread: None,
            });
        }
        let notice = Box::new(move |out: &mut Vec<u8>, lost| lost_lines(out, lost, format));
        let (lines, thread) = LineWriter::spawn(std::io::stderr(), PENDING_BYTES, notice)?;
        Ok(Self {
            lines: Some(lines),
            format,
            thread: Some(std::sync::Arc::new(thread)),
        })
    }

    /// Writes the lines still pending, waiting at most `within` for the sink.
    pub(crate) async fn close(&self, within: Duration) {
        let (Some(lines), Some(thread)) = (&self.lines, &self.thread) else {
            return;
        };
        lines.close();
        let deadline = Instant::now() + within;
        while !thread.is_finished() && Instant::now() < deadline {
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// One request's line, in `format`.
    fn render(out: &mut Vec<u8>, entry: &Entry, format: LogFormat) {
        let peer: &dyn std::fmt::Display = match &entry.client {
            Some(ip) => ip,
            None => &"-",
        };
        // Milliseconds with three decimals, from integers: formatting an f64 cost more
        // than the rest of the line (`perf`).
        let micros = entry.elapsed.as_micros();
        let summary = format_args!(
            "{peer} \"{} {}\" {} {}.{:03}ms",
            entry.method,
            entry.uri.path(),
            entry.status.as_u16(),
            micros / 1000,
            micros % 1000
        );
        match format {
            LogFormat::Human => {
                let _ = writeln!(
                    out,
                    "[{} INFO  {TARGET}] {summary} request_id={}",
                    Timestamp(entry.at),
                    entry.request_id.as_str()
                );
            }
            LogFormat::Json => {
                let line = JsonEntry {
                    time: json_time(entry.at),
                    level: "INFO",
                    target: TARGET,
                    message: summary.to_string(),
                    method: entry.method.as_str(),
                    route: entry.route.as_deref(),
                    path: entry.uri.path(),
                    status: entry.status.as_u16(),
                    duration_ms: entry.elapsed.as_secs_f64() * 1000.0,
                    client: entry.client,
                    request_id: &entry.request_id,
                };
                if serde_json::to_writer(&mut *out, &line).is_ok() {
                    out.push(b'\n');
                }
            }
        }
    }
}

/// The writer's notice that `lost` lines were dropped since its last one.
fn lost_lines(out: &mut Vec<u8>, lost: u64, format: LogFormat) {
    let message = format!(
        "{lost} access-log lines dropped: stderr was slower than the requests (wxjssdk_access_log_dropped_total)"
    );
    match format {
        LogFormat::Human => {
            let _ = writeln!(
                out,
                "[{} WARN  {TARGET}] {message}",
                Timestamp(SystemTime::now())
            );
        }
        LogFormat::Json => {
            let notice = JsonLine {
                time: json_time(SystemTime::now()),
                level: "WARN",
                target: TARGET,
                message,
                request_id: None,
            };
            if serde_json::to_writer(&mut *out, &notice).is_ok() {
                out.push(b'\n');
            }
        }
    }
}

/// RFC 3339 UTC to the millisecond, as the JSON lines of [`crate::logging`] have it.
fn json_time(at: SystemTime) -> String {
    jiff::Timestamp::try_from(at).map_or_else(|_| "-".into(), |ts| format!("{ts:.3}"))
}

/// What a line says about a request; copies and reference counts, no allocation
/// (but the route's pattern, looked up only for the JSON format).
struct Entry {
    at: SystemTime,
    client: Option<IpAddr>,
    method: Method,
    uri: Uri,
    route: Option<String>,
    status: StatusCode,
    elapsed: Duration,
    request_id: RequestId,
}

/// An access-log line of the JSON format: the fields a log pipeline indexes.
#[derive(serde::Serialize)]
struct JsonEntry<'a> {
    time: String,
    level: &'a str,
    target: &'a str,
    message: String,
    method: &'a str,
    /// The route's pattern (`/v1/apps/{name}/jssdk`): a bounded set, unlike paths.
    route: Option<&'a str>,
    path: &'a str,
    status: u16,
    duration_ms: f64,
    client: Option<IpAddr>,
    request_id: &'a RequestId,
}

/// RFC 3339 UTC to the second, as `env_logger` writes it. Rendered once a second per
/// thread: a busy worker writes thousands of lines with the same one.
struct Timestamp(SystemTime);

thread_local! {
    /// The second last rendered on this thread, and its text.
    static LAST_SECOND: std::cell::RefCell<(u64, String)> = const {
        std::cell::RefCell::new((u64::MAX, String::new()))
    };
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Ok(since_epoch) = self.0.duration_since(SystemTime::UNIX_EPOCH) else {
            return f.write_str("-");
        };
        let second = since_epoch.as_secs();
        LAST_SECOND.with_borrow_mut(|(last, text)| {
            if *last != second {
                text.clear();
                match jiff::Timestamp::try_from(self.0) {
                    Ok(ts) => std::fmt::Write::write_fmt(text, format_args!("{ts:.0}"))?,
                    Err(_) => text.push('-'),
                }
                *last = second;
            }
            f.write_str(text)
        })
    }
}

pub(crate) async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let id = RequestId::for_request(
        req.headers()
            .get(request_id::HEADER)
            .map(HeaderValue::as_bytes),
    );
    let line = match req.app_data::<AccessLog>() {
        Some(AccessLog {
            lines: Some(lines),
            format,
            ..
        }) if !PROBES.contains(&req.path()) => Some((
            lines.clone(),
            *format,
            req.method().clone(),
            req.uri().clone(),
            req.app_data::<web::Data<AppState>>()
                .map(|state| state.client_of(req.request())),
        )),
        _ => None,
    };
    let mut response = request_id::scope(id.clone(), next.call(req)).await;
    let elapsed = started.elapsed();
    let status = match &mut response {
        Ok(res) => {
            if let Ok(value) = HeaderValue::from_str(id.as_str()) {
                res.headers_mut()
                    .insert(HeaderName::from_static(request_id::HEADER), value);
            }
            res.status()
        }
        Err(e) => e.as_response_error().status_code(),
    };
    metrics::http_request(response.as_ref().ok().map(|r| r.request()), status, elapsed);
    if let Some((lines, format, method, uri, client)) = line {
        let route = match (format, &response) {
            (LogFormat::Json, Ok(res)) => res.request().match_pattern(),
            _ => None,
        };
        let entry = Entry {
            at: SystemTime::now(),
            client,
            method,
            uri,
            route,
            status,
            elapsed,
            request_id: id,
        };
        lines.append(|out| AccessLog::render(out, &entry, format));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_like_env_loggers_and_never_shows_the_query() {
        let entry = Entry {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_608_316),
            client: Some(IpAddr::from([203, 0, 113, 7])),
            method: Method::GET,
            uri: Uri::from_static("/wxJssdk/getJssdk?url=https%3A%2F%2Fpage.example.com%2F"),
            route: None,
            status: StatusCode::OK,
            elapsed: Duration::from_micros(1234),
            request_id: RequestId::for_request(Some(b"rid-1")),
        };
        let mut out = Vec::new();
        AccessLog::render(&mut out, &entry, LogFormat::Human);
        // The same second again (from the thread's cache), then the next one.
        let later = Entry {
            at: entry.at + Duration::from_millis(999),
            elapsed: Duration::from_micros(56),
            ..entry
        };
        AccessLog::render(&mut out, &later, LogFormat::Human);
        let next = Entry {
            at: later.at + Duration::from_millis(1),
            elapsed: Duration::from_millis(2500),
            ..later
        };
        AccessLog::render(&mut out, &next, LogFormat::Human);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[2026-11-25T12:05:16Z INFO  wx_jssdk::access] 203.0.113.7 \"GET /wxJssdk/getJssdk\" 200 1.234ms request_id=rid-1\n\
             [2026-11-25T12:05:16Z INFO  wx_jssdk::access] 203.0.113.7 \"GET /wxJssdk/getJssdk\" 200 0.056ms request_id=rid-1\n\
             [2026-11-25T12:05:17Z INFO  wx_jssdk::access] 203.0.113.7 \"GET /wxJssdk/getJssdk\" 200 2500.000ms request_id=rid-1\n"
        );
    }

    #[test]
    fn a_json_line_has_the_fields_a_pipeline_indexes_and_never_the_query() {
        let entry = Entry {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_608_316_042),
            client: Some(IpAddr::from([203, 0, 113, 7])),
            method: Method::POST,
            uri: Uri::from_static("/v1/apps/shop/jssdk?url=https%3A%2F%2Fpage.example.com%2F"),
            route: Some("/v1/apps/{name}/jssdk".into()),
            status: StatusCode::BAD_REQUEST,
            elapsed: Duration::from_micros(1234),
            request_id: RequestId::for_request(Some(b"rid-2")),
        };
        let mut out = Vec::new();
        AccessLog::render(&mut out, &entry, LogFormat::Json);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with('\n') && text.lines().count() == 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            line,
            serde_json::json!({
                "time": "2026-11-25T12:05:16.042Z",
                "level": "INFO",
                "target": "wx_jssdk::access",
                "message": "203.0.113.7 \"POST /v1/apps/shop/jssdk\" 400 1.234ms",
                "method": "POST",
                "route": "/v1/apps/{name}/jssdk",
                "path": "/v1/apps/shop/jssdk",
                "status": 400,
                "duration_ms": 1.234,
                "client": "203.0.113.7",
                "request_id": "rid-2",
            })
        );
    }
}
