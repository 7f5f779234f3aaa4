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
//! the log. The format is [`AccessLog::render`] and [`lost_lines`] alone: another one
//! (JSON, request ids) replaces those two functions.

mod writer;

use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, Uri};
use actix_web::middleware::Next;
use actix_web::{web, Error};

use crate::metrics;
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
    /// The writer thread, so that a stopping server can let it finish.
    thread: Option<std::sync::Arc<std::thread::JoinHandle<()>>>,
}

impl AccessLog {
    /// On, writing to stderr, when `RUST_LOG` enables `wx_jssdk::access` at info level
    /// (the default); otherwise off, and a request costs nothing here.
    pub(crate) fn from_log_level() -> std::io::Result<Self> {
        if !log::log_enabled!(target: TARGET, log::Level::Info) {
            return Ok(Self {
                lines: None,
                thread: None,
            });
        }
        let (lines, thread) =
            LineWriter::spawn(std::io::stderr(), PENDING_BYTES, Box::new(lost_lines))?;
        Ok(Self {
            lines: Some(lines),
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

    /// One request's line.
    fn render(out: &mut Vec<u8>, entry: &Entry) {
        let peer: &dyn std::fmt::Display = match &entry.client {
            Some(ip) => ip,
            None => &"-",
        };
        // Milliseconds with three decimals, from integers: formatting an f64 cost more
        // than the rest of the line (`perf`).
        let micros = entry.elapsed.as_micros();
        let _ = writeln!(
            out,
            "[{} INFO  {TARGET}] {peer} \"{} {}\" {} {}.{:03}ms",
            Timestamp(entry.at),
            entry.method,
            entry.uri.path(),
            entry.status.as_u16(),
            micros / 1000,
            micros % 1000
        );
    }
}

/// The writer's notice that `lost` lines were dropped since its last one.
fn lost_lines(out: &mut Vec<u8>, lost: u64) {
    let _ = writeln!(
        out,
        "[{} WARN  {TARGET}] {lost} access-log lines dropped: stderr was slower than the requests (wxjssdk_access_log_dropped_total)",
        Timestamp(SystemTime::now())
    );
}

/// What a line says about a request; copies and reference counts, no allocation.
struct Entry {
    at: SystemTime,
    client: Option<IpAddr>,
    method: Method,
    uri: Uri,
    status: StatusCode,
    elapsed: Duration,
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
    let line = match req
        .app_data::<AccessLog>()
        .and_then(|log| log.lines.as_ref())
    {
        Some(lines) if !PROBES.contains(&req.path()) => Some((
            lines.clone(),
            req.method().clone(),
            req.uri().clone(),
            req.app_data::<web::Data<AppState>>()
                .map(|state| state.client_of(req.request())),
        )),
        _ => None,
    };
    let response = next.call(req).await;
    let elapsed = started.elapsed();
    let status = match &response {
        Ok(res) => res.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    metrics::http_request(response.as_ref().ok().map(|r| r.request()), status, elapsed);
    if let Some((lines, method, uri, client)) = line {
        let entry = Entry {
            at: SystemTime::now(),
            client,
            method,
            uri,
            status,
            elapsed,
        };
        lines.append(|out| AccessLog::render(out, &entry));
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
            status: StatusCode::OK,
            elapsed: Duration::from_micros(1234),
        };
        let mut out = Vec::new();
        AccessLog::render(&mut out, &entry);
        // The same second again (from the thread's cache), then the next one.
        let later = Entry {
            at: entry.at + Duration::from_millis(999),
            elapsed: Duration::from_micros(56),
            ..entry
        };
        AccessLog::render(&mut out, &later);
        let next = Entry {
            at: later.at + Duration::from_millis(1),
            elapsed: Duration::from_millis(2500),
            ..later
        };
        AccessLog::render(&mut out, &next);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[2026-11-25T12:05:16Z INFO  wx_jssdk::access] 203.0.113.7 \"GET /wxJssdk/getJssdk\" 200 1.234ms\n\
             [2026-11-25T12:05:16Z INFO  wx_jssdk::access] 203.0.113.7 \"GET /wxJssdk/getJssdk\" 200 0.056ms\n\
             [2026-11-25T12:05:17Z INFO  wx_jssdk::access] 203.0.113.7 \"GET /wxJssdk/getJssdk\" 200 2500.000ms\n"
        );
    }
}
