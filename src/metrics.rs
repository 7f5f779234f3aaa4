//! Prometheus metrics of this process, served at `GET /metrics` in the text exposition
//! format. The rest of the code records through the named functions below (one line
//! at each place), never through the `prometheus` types.
//!
//! **One registry per process, in a `static`.** Prometheus scrapes every instance and
//! adds the series up itself, so each process reports only what it did. The counters
//! are bumped from places that hold no application state (the WeChat client of each
//! worker, the credential cache's background jobs), and threading a handle through
//! their constructors would touch every caller for no gain: a process has exactly one
//! set of counters. The one cost: several services started in one process (the
//! in-process integration tests) share them, so tests that count exactly run the real
//! binary.
//!
//! [`init`] builds the registry at start-up, so a metric that could not be registered
//! stops the service there, not on a request. Before it (unit tests of the cache or
//! the client) every recording function does nothing.
//!
//! **Hot path.** A signature costs one atomic increment for the local cache hit and,
//! in the request middleware, an increment and a histogram observation on series its
//! route resolved when it was built ([`RouteSeries`]). Routes without them (the rare
//! ones) cost two series lookups (an FNV hash of the labels and a read lock) plus the
//! route pattern that actix builds.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::HttpRequest;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric name starts with this, followed by `_`.
const NAMESPACE: &str = "wxjssdk";

/// The `route` label of a request no route matched: the raw path would give one series
/// per path a scanner tries.
pub(crate) const UNMATCHED: &str = "unmatched";

/// Buckets of the request-duration histogram, in seconds: a warm signature takes well
/// under a millisecond, a cold one waits for WeChat (up to `cache.lock_wait_ms`, 5 s).
const DURATION_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Which cache tier a lookup went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    /// The instance's in-memory copy (every request).
    Local,
    /// Redis or the in-process store (background checks and cold starts).
    Store,
}

/// Things that happen to cached values, counted in `wxjssdk_cache_events_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheEvent {
    /// The store had lost a value (or held an older one) and an instance wrote its copy back.
    Restored,
    /// WeChat handed out the value already held: it is served to its first expiry.
    Reissued,
    /// WeChat handed out the value that had just expired; it was asked for again.
    Stale,
    /// A value WeChat refused was buried in the store (a 40001, or a caller's invalidation).
    Rejected,
    /// A request found nothing usable while the deployment backed off, and got a 503.
    BackedOff,
}

impl CacheEvent {
    const ALL: [Self; 5] = [
        Self::Restored,
        Self::Reissued,
        Self::Stale,
        Self::Rejected,
        Self::BackedOff,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Restored => "restored",
            Self::Reissued => "reissued",
            Self::Stale => "stale",
            Self::Rejected => "rejected",
            Self::BackedOff => "backed_off",
        }
    }
}

struct Metrics {
    registry: Registry,
    upstream_calls: IntCounterVec,
    refreshes: IntCounterVec,
    lock_waits: IntCounter,
    lock_wait_timeouts: IntCounter,
    /// `wxjssdk_cache_lookups_total` by [tier][hit]: resolved once, so that the
    /// signing path's lookup is a single atomic increment.
    cache_lookups: [[IntCounter; 2]; 2],
    /// `wxjssdk_cache_events_total` by [`CacheEvent`], in the order of `CacheEvent::ALL`.
    cache_events: Vec<IntCounter>,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    gateway_requests: IntCounterVec,
    access_log_dropped: IntCounter,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Builds and registers every metric; later calls do nothing.
pub(crate) fn init() -> Result<(), prometheus::Error> {
    if METRICS.get().is_none() {
        // Two services starting at once in one process may both build a set; the
        // first one stored wins and the other is dropped unused.
        let _ = METRICS.set(Metrics::new()?);
    }
    init_credential_metrics()
}

impl Metrics {
    fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some(NAMESPACE.into()), None)?;
        let upstream_calls = IntCounterVec::new(
            Opts::new(
                "upstream_calls_total",
                "Calls to the WeChat API, each attempt counted (retries too), by endpoint and result (ok or the kind of failure).",
            ),
            &["endpoint", "result"],
        )?;
        let refreshes = IntCounterVec::new(
            Opts::new(
                "refreshes_total",
                "Renewals of a credential by this instance under the refresh lock that wrote a new value (ok) or failed (error).",
            ),
            &["credential", "result"],
        )?;
        let lock_waits = IntCounter::new(
            "lock_waits_total",
            "Requests that found no usable copy (cold start, or expiry during an outage) and waited for a refresh job.",
        )?;
        let lock_wait_timeouts = IntCounter::new(
            "lock_wait_timeouts_total",
            "Requests whose wait for a refresh job ran out of cache.lock_wait_ms (answered 503).",
        )?;
        let lookups = IntCounterVec::new(
            Opts::new(
                "cache_lookups_total",
                "Credential lookups by tier (local: the instance's copy, on every signature; store: Redis, on background checks and cold starts) and result (hit: a usable value was found).",
            ),
            &["tier", "result"],
        )?;
        let lookup =
            |tier: &str, result: &str| lookups.get_metric_with_label_values(&[tier, result]);
        let cache_lookups = [
            [lookup("local", "miss")?, lookup("local", "hit")?],
            [lookup("store", "miss")?, lookup("store", "hit")?],
        ];
        let events = IntCounterVec::new(
            Opts::new(
                "cache_events_total",
                "What happened to cached values: restored (an instance wrote its copy back to a store that had lost it), reissued (WeChat handed out the value already held), stale (WeChat handed out a value that had just expired), rejected (a value WeChat refused was dropped), backed_off (a request found nothing usable while renewals back off, and got a 503).",
            ),
            &["event"],
        )?;
        let cache_events = CacheEvent::ALL
            .iter()
            .map(|e| events.get_metric_with_label_values(&[e.label()]))
            .collect::<Result<Vec<_>, _>>()?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by route pattern (`unmatched` for unknown paths) and status code.",
            ),
            &["route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from receiving a request's head to producing its response, by route pattern.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route"],
        )?;
        let gateway_requests = IntCounterVec::new(
            Opts::new(
                "gateway_requests_total",
                "Requests to the WeChat-compatible gateway, by api (token, stable_token, gettoken, ticket, or the root of a forwarded call: cgi-bin, datacube, ...) and result (ok, forwarded, retried, refused_token, token_not_current, wrong_secret, unknown_app, bad_request, too_large, timeout, unreachable, unavailable).",
            ),
            &["api", "result"],
        )?;
        let access_log_dropped = IntCounter::new(
            "access_log_dropped_total",
            "Access-log lines dropped because stderr was slower than the requests (a worker never waits for the log).",
        )?;
        registry.register(Box::new(gateway_requests.clone()))?;
        registry.register(Box::new(upstream_calls.clone()))?;
        registry.register(Box::new(refreshes.clone()))?;
        registry.register(Box::new(lock_waits.clone()))?;
        registry.register(Box::new(lock_wait_timeouts.clone()))?;
        registry.register(Box::new(lookups))?;
        registry.register(Box::new(events))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        Ok(Self {
            registry,
            upstream_calls,
            refreshes,
            lock_waits,
            lock_wait_timeouts,
            cache_lookups,
            cache_events,
            http_requests,
            http_duration,
            gateway_requests,
            access_log_dropped,
        })
    }
}

/// One attempt of a call to WeChat's `endpoint` (`token`, `stable_token`,
/// `getticket`, ...) and how it ended.
pub(crate) fn upstream_call(endpoint: &'static str, result: &'static str) {
    let Some(m) = METRICS.get() else { return };
    if let Ok(counter) = m
        .upstream_calls
        .get_metric_with_label_values(&[endpoint, result])
    {
        counter.inc();
    }
}

/// A renewal under the refresh lock of `credential` (`access_token`, `jsapi_ticket`,
/// ...) that wrote a new value (`ok`) or failed.
pub(crate) fn refresh(credential: &'static str, ok: bool) {
    let Some(m) = METRICS.get() else { return };
    let result = if ok { "ok" } else { "error" };
    if let Ok(counter) = m
        .refreshes
        .get_metric_with_label_values(&[credential, result])
    {
        counter.inc();
    }
}

/// A request found no usable copy and waits for a refresh job.
pub(crate) fn lock_wait() {
    if let Some(m) = METRICS.get() {
        m.lock_waits.inc();
    }
}

/// A request's wait for a refresh job ran out of `cache.lock_wait_ms`.
pub(crate) fn lock_wait_timeout() {
    if let Some(m) = METRICS.get() {
        m.lock_wait_timeouts.inc();
    }
}

/// A credential lookup in `tier`; `hit` when it found a usable value.
pub(crate) fn cache_lookup(tier: Tier, hit: bool) {
    if let Some(m) = METRICS.get() {
        let tier = match tier {
            Tier::Local => 0,
            Tier::Store => 1,
        };
        m.cache_lookups[tier][usize::from(hit)].inc();
    }
}

/// Something happened to a cached value.
pub(crate) fn cache_event(event: CacheEvent) {
    if let Some(m) = METRICS.get() {
        if let Some(counter) = CacheEvent::ALL
            .iter()
            .position(|e| *e == event)
            .and_then(|i| m.cache_events.get(i))
        {
            counter.inc();
        }
    }
}

/// The request series of one route, resolved when the route is built: set as the
/// route's app data (see `routes::counted`), it makes [`http_request`] an atomic
/// increment and a histogram observation, where otherwise it builds the route's
/// pattern (a `String`) and looks two series up by their labels.
#[derive(Clone)]
pub(crate) struct RouteSeries {
    route: Arc<str>,
    ok: IntCounter,
    duration: Histogram,
}

impl RouteSeries {
    /// The series of the route `pattern`; `None` before [`init`].
    pub(crate) fn new(pattern: &str) -> Option<Self> {
        let m = METRICS.get()?;
        Some(Self {
            route: pattern.into(),
            ok: m
                .http_requests
                .get_metric_with_label_values(&[pattern, StatusCode::OK.as_str()])
                .ok()?,
            duration: m
                .http_duration
                .get_metric_with_label_values(&[pattern])
                .ok()?,
        })
    }
}

/// An answered HTTP request: `request` is the routed request (`None` when the
/// response was lost to an error before routing), labelled with the pattern of the
/// route that matched it.
pub(crate) fn http_request(request: Option<&HttpRequest>, status: StatusCode, elapsed: Duration) {
    let Some(m) = METRICS.get() else { return };
    if let Some(series) = request.and_then(HttpRequest::app_data::<RouteSeries>) {
        if status == StatusCode::OK {
            series.ok.inc();
        } else if let Ok(counter) = m
            .http_requests
            .get_metric_with_label_values(&[&series.route, status.as_str()])
        {
            counter.inc();
        }
        series.duration.observe(elapsed.as_secs_f64());
        return;
    }
    let pattern = request.and_then(HttpRequest::match_pattern);
    let route = pattern.as_deref().unwrap_or(UNMATCHED);
    if let Ok(counter) = m
        .http_requests
        .get_metric_with_label_values(&[route, status.as_str()])
    {
        counter.inc();
    }
    if let Ok(histogram) = m.http_duration.get_metric_with_label_values(&[route]) {
        histogram.observe(elapsed.as_secs_f64());
    }
}

/// A request to the gateway's `api` (an endpoint it answers, or the root of a
/// forwarded call) and how it ended.
pub(crate) fn gateway_request(api: &'static str, result: &'static str) {
    let Some(m) = METRICS.get() else { return };
    if let Ok(counter) = m
        .gateway_requests
        .get_metric_with_label_values(&[api, result])
    {
        counter.inc();
    }
}

/// An access-log line was dropped: the sink had fallen behind.
pub(crate) fn access_log_dropped() {
    if let Some(m) = METRICS.get() {
        m.access_log_dropped.inc();
    }
}

/// The metrics the alert rules (`deploy/prometheus/alerts.yml`) need beyond the ones
/// above: the state of each credential of each app, and of the store. Labelled by the
/// app's name in `[apps.NAME]` and the credential's kind only (a bounded set, fixed by
/// the configuration), never by a value. Registered into the same registry by [`init`].
struct CredentialMetrics {
    usable_until: GaugeVec,
    renewal_failures: IntCounterVec,
    forced_refreshes_today: IntGaugeVec,
    forced_refreshes_day_end: IntGaugeVec,
    store_up: IntGaugeVec,
}

static CREDENTIALS: OnceLock<CredentialMetrics> = OnceLock::new();

/// Builds the [`CredentialMetrics`] and registers them with [`Metrics`]' registry;
/// later calls do nothing.
fn init_credential_metrics() -> Result<(), prometheus::Error> {
    let Some(m) = METRICS.get() else {
        return Ok(());
    };
    if CREDENTIALS.get().is_some() {
        return Ok(());
    }
    // Only the set that is stored is registered: two services starting at once in one
    // process must not register the same names twice.
    if CREDENTIALS.set(CredentialMetrics::new()?).is_ok() {
        if let Some(c) = CREDENTIALS.get() {
            m.registry.register(Box::new(c.usable_until.clone()))?;
            m.registry.register(Box::new(c.renewal_failures.clone()))?;
            m.registry
                .register(Box::new(c.forced_refreshes_today.clone()))?;
            m.registry
                .register(Box::new(c.forced_refreshes_day_end.clone()))?;
            m.registry.register(Box::new(c.store_up.clone()))?;
        }
    }
    Ok(())
}

impl CredentialMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            // A deadline rather than the seconds left: it stays right between the
            // moments the instance learns something (PromQL subtracts `time()`), with no
            // timer in the service to keep a countdown current.
            usable_until: GaugeVec::new(
                Opts::new(
                    "credential_usable_until_timestamp_seconds",
                    "When (Unix seconds) the copy of each credential this instance serves stops being handed out (its safety margin begins); minus time(): its remaining usable life. A renewal moves it forward; no series while the instance holds no copy.",
                ),
                &["app", "credential"],
            )?,
            renewal_failures: IntCounterVec::new(
                Opts::new(
                    "credential_renewal_failures_total",
                    "Renewals of a credential from WeChat by this instance that failed, by app, credential and reason (the result label of wxjssdk_upstream_calls_total: quota, ip_not_whitelisted, invalid_secret, timeout, ...).",
                ),
                &["app", "credential", "reason"],
            )?,
            forced_refreshes_today: IntGaugeVec::new(
                Opts::new(
                    "forced_refreshes_today",
                    "Forced stable-token refreshes (force_refresh=true) the deployment has spent on the app today, China time, of WeChat's 20 a day, as last counted by this instance; it counts for the day that ends at wxjssdk_forced_refreshes_day_end_timestamp_seconds.",
                ),
                &["app"],
            )?,
            forced_refreshes_day_end: IntGaugeVec::new(
                Opts::new(
                    "forced_refreshes_day_end_timestamp_seconds",
                    "When (Unix seconds) the China day of wxjssdk_forced_refreshes_today ends, and WeChat's count starts again from zero.",
                ),
                &["app"],
            )?,
            // A vector without labels: no series until the first read, so that an
            // instance nobody probed yet does not look like one that cannot reach Redis.
            store_up: IntGaugeVec::new(
                Opts::new(
                    "store_up",
                    "1 when this instance's last read of the credential store (the readiness check, or a background check of a credential) answered, 0 when it failed. No series before the first read.",
                ),
                &[],
            )?,
        })
    }
}

/// The copy of `credential` of `app` this instance serves is usable until
/// `usable_until_ms` (Unix ms); `None`: the instance holds no copy.
pub(crate) fn credential_usable_until(
    app: &str,
    credential: &'static str,
    usable_until_ms: Option<u64>,
) {
    let Some(c) = CREDENTIALS.get() else { return };
    match usable_until_ms {
        Some(ms) => {
            if let Ok(gauge) = c
                .usable_until
                .get_metric_with_label_values(&[app, credential])
            {
                gauge.set(ms as f64 / 1000.0);
            }
        }
        None => {
            // Absent already is fine: nothing to remove.
            let _ = c.usable_until.remove_label_values(&[app, credential]);
        }
    }
}

/// A renewal of `credential` of `app` from WeChat failed, for `reason`
/// ([`crate::wechat::WechatError::kind`]).
pub(crate) fn renewal_failure(app: &str, credential: &'static str, reason: &'static str) {
    let Some(c) = CREDENTIALS.get() else { return };
    if let Ok(counter) = c
        .renewal_failures
        .get_metric_with_label_values(&[app, credential, reason])
    {
        counter.inc();
    }
}

/// The deployment has spent `used` forced refreshes of `app`'s stable token in the
/// China day that ends at `day_end_secs` (Unix seconds).
pub(crate) fn forced_refreshes(app: &str, used: u64, day_end_secs: u64) {
    let Some(c) = CREDENTIALS.get() else { return };
    let gauges = (
        c.forced_refreshes_today
            .get_metric_with_label_values(&[app]),
        c.forced_refreshes_day_end
            .get_metric_with_label_values(&[app]),
    );
    if let (Ok(today), Ok(day_end)) = gauges {
        today.set(i64::try_from(used).unwrap_or(i64::MAX));
        day_end.set(i64::try_from(day_end_secs).unwrap_or(i64::MAX));
    }
}

/// A read of the credential store answered (`true`) or failed.
pub(crate) fn store_read(answered: bool) {
    let Some(c) = CREDENTIALS.get() else { return };
    if let Ok(gauge) = c.store_up.get_metric_with_label_values::<&str>(&[]) {
        gauge.set(i64::from(answered));
    }
}

/// This process's metrics in the Prometheus text format, and its content type.
pub(crate) fn render() -> Result<(Vec<u8>, String), prometheus::Error> {
    let m = METRICS
        .get()
        .ok_or_else(|| prometheus::Error::Msg("the metrics are not initialised".into()))?;
    let encoder = TextEncoder::new();
    let mut body = Vec::with_capacity(8 * 1024);
    encoder.encode(&m.registry.gather(), &mut body)?;
    Ok((body, encoder.format_type().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition() -> String {
        init().unwrap();
        let mut body = Vec::new();
        TextEncoder::new()
            .encode(&METRICS.get().unwrap().registry.gather(), &mut body)
            .unwrap();
        String::from_utf8(body).unwrap()
    }

    /// The value of the series `line_start` (name and labels as exposed), or 0.
    fn value(text: &str, line_start: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or(0.0)
    }

    #[test]
    fn recorded_values_are_exposed_with_the_prefix() {
        let before = exposition();
        let key = "wxjssdk_upstream_calls_total{endpoint=\"getticket\",result=\"quota\"}";
        upstream_call("getticket", "quota");
        let local_hits = "wxjssdk_cache_lookups_total{result=\"hit\",tier=\"local\"}";
        cache_lookup(Tier::Local, true);
        let unmatched = "wxjssdk_http_requests_total{route=\"unmatched\",status=\"404\"}";
        http_request(None, StatusCode::NOT_FOUND, Duration::from_micros(300));
        let dropped = "wxjssdk_access_log_dropped_total";
        access_log_dropped();
        let after = exposition();
        assert!(value(&after, key) >= value(&before, key) + 1.0, "{after}");
        assert!(value(&after, local_hits) >= value(&before, local_hits) + 1.0);
        assert!(value(&after, unmatched) >= value(&before, unmatched) + 1.0);
        assert!(value(&after, dropped) >= value(&before, dropped) + 1.0);
        assert!(after.contains("# TYPE wxjssdk_http_request_duration_seconds histogram"));
    }

    /// The per-app metrics carry the app's name and the credential's kind, and a
    /// credential the instance stopped holding leaves no series behind.
    #[test]
    fn credential_metrics_are_labelled_by_app_and_dropped_with_the_copy() {
        init().unwrap();
        credential_usable_until("metrics-test", "card_ticket", Some(1_796_054_400_500));
        renewal_failure("metrics-test", "card_ticket", "quota");
        forced_refreshes("metrics-test", 3, 1_796_054_400);
        store_read(true);
        let text = exposition();
        let deadline = "wxjssdk_credential_usable_until_timestamp_seconds{app=\"metrics-test\",credential=\"card_ticket\"}";
        assert_eq!(value(&text, deadline), 1_796_054_400.5, "{text}");
        let failures = "wxjssdk_credential_renewal_failures_total{app=\"metrics-test\",credential=\"card_ticket\",reason=\"quota\"}";
        assert!(value(&text, failures) >= 1.0, "{text}");
        assert_eq!(
            value(
                &text,
                "wxjssdk_forced_refreshes_today{app=\"metrics-test\"}"
            ),
            3.0
        );
        // Its value is left alone: the cache's unit tests may read a failing store meanwhile.
        assert!(text.contains("\nwxjssdk_store_up "), "{text}");
        credential_usable_until("metrics-test", "card_ticket", None);
        assert!(!exposition().contains(deadline));
    }
}
