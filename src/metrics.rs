//! Prometheus metrics: the counters, gauges and histograms freesky keeps, and their
//! rendering for `GET /metrics` (Prometheus text format, `text/plain; version=0.0.4`).
//!
//! The metrics live in one process-wide [`Metrics`] ([`get`]), not in `AppState`: the
//! places that count (the registry's outcome record, the media cache, `.ts` sessions,
//! failover) do not see `AppState`, and threading a handle through all of them would
//! touch every constructor. So several freesky instances in one process (the tests)
//! share counters: tests assert how a counter *moved*, never its absolute value.
//!
//! What is known at scrape time (circuit state, guide refreshes, running `.ts`
//! sessions) is not kept here: `http::metrics` reads it at each scrape into a [`Now`]
//! that [`render`] writes, so it is never stale.
//!
//! Labels are bounded: routes are axum route templates (never the raw path), services
//! come from the config, channels are lineup channel ids. Nothing secret is exported.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::error::UpstreamError;

/// The content type of `/metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

fn histogram() -> Histogram {
    // 5 ms .. ~10 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

/// The metrics recorded as things happen.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<Labels, Counter>,
    upstream_requests: Family<Labels, Counter>,
    upstream_duration: Family<Labels, Histogram, fn() -> Histogram>,
    cache_hits: Family<Labels, Counter>,
    cache_misses: Family<Labels, Counter>,
    coalesced: Family<Labels, Counter>,
    active_viewers: Family<Labels, Gauge>,
    failovers: Family<Labels, Counter>,
    logo_refused: Family<Labels, Counter>,
    upstream_refused: Family<Labels, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics (see the module doc for why they are global).
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            http_requests: Family::default(),
            upstream_requests: Family::default(),
            upstream_duration: Family::new_with_constructor(histogram as fn() -> Histogram),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            coalesced: Family::default(),
            active_viewers: Family::default(),
            failovers: Family::default(),
            logo_refused: Family::default(),
            upstream_refused: Family::default(),
        };
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "freesky_http_requests",
            "HTTP requests served, by route template and status",
            m.http_requests.clone(),
        );
        registry.register(
            "freesky_upstream_requests",
            "Upstream calls recorded by the service registry, by service and outcome",
            m.upstream_requests.clone(),
        );
        registry.register(
            "freesky_upstream_request_duration_seconds",
            "Duration of the upstream calls recorded by the service registry",
            m.upstream_duration.clone(),
        );
        registry.register(
            "freesky_cache_hits",
            "Requests answered from the media cache (cache = playlist|segment)",
            m.cache_hits.clone(),
        );
        registry.register(
            "freesky_cache_misses",
            "Requests that started an upstream fetch (cache = playlist|segment)",
            m.cache_misses.clone(),
        );
        registry.register(
            "freesky_coalesced_requests",
            "Requests that joined an upstream fetch already in flight",
            m.coalesced.clone(),
        );
        registry.register(
            "freesky_active_viewers",
            "Viewers reading a .ts session, by lineup channel id",
            m.active_viewers.clone(),
        );
        registry.register(
            "freesky_failovers",
            "Switches to the next source during playback, by lineup channel id",
            m.failovers.clone(),
        );
        registry.register(
            "freesky_logo_refused",
            "Logos refused from upstreams (reason = html|not_image|too_large)",
            m.logo_refused.clone(),
        );
        registry.register(
            "freesky_upstream_refused",
            "Upstream fetches refused before connecting, by service: a loopback, private \
             or link-local address not the service's own, or freesky's own address (every \
             fetch: lists, guides, streams, segments, movies, logos)",
            m.upstream_refused.clone(),
        );
        // The series whose labels are known up front are there from the start, at 0:
        // an alert on them sees 0, not "no data", until the first event.
        for cache in ["playlist", "segment"] {
            let l = labels(&[("cache", cache)]);
            for family in [&m.cache_hits, &m.cache_misses, &m.coalesced] {
                drop(family.get_or_create(&l));
            }
        }
        for reason in ["html", "not_image", "too_large"] {
            drop(m.logo_refused.get_or_create(&labels(&[("reason", reason)])));
        }
        Metrics { registry, ..m }
    }

    /// One HTTP request answered: `route` is the matched route template or "unmatched".
    pub fn http_request(&self, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&labels(&[
                ("route", route),
                ("status", &status.to_string()),
            ]))
            .inc();
    }

    /// One upstream call of `service` ended with `result` after `latency`.
    pub fn upstream<T>(&self, service: &str, result: &Result<T, UpstreamError>, latency: Duration) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => outcome_of(e),
        };
        self.upstream_requests
            .get_or_create(&labels(&[("service", service), ("outcome", outcome)]))
            .inc();
        self.upstream_duration
            .get_or_create(&labels(&[("service", service)]))
            .observe(latency.as_secs_f64());
    }

    /// A media cache lookup (`cache` = "playlist" or "segment").
    pub fn cache(&self, cache: &'static str, lookup: Lookup) {
        let family = match lookup {
            Lookup::Hit => &self.cache_hits,
            Lookup::Miss => &self.cache_misses,
            Lookup::Coalesced => &self.coalesced,
        };
        family.get_or_create(&labels(&[("cache", cache)])).inc();
    }

    /// A `.ts` viewer of lineup channel `channel` arrived; it leaves when the guard drops.
    pub fn viewer(&self, channel: &str) -> ViewerGuard {
        let l = labels(&[("channel", channel)]);
        self.active_viewers.get_or_create(&l).inc();
        ViewerGuard(l)
    }

    /// A logo an upstream sent was refused (`reason`: html, not_image, too_large).
    pub fn logo_refused(&self, reason: &'static str) {
        self.logo_refused
            .get_or_create(&labels(&[("reason", reason)]))
            .inc();
    }

    /// A fetch of `service` was refused before connecting (a private or freesky's own
    /// address).
    pub fn upstream_refused(&self, service: &str) {
        self.upstream_refused
            .get_or_create(&labels(&[("service", service)]))
            .inc();
    }

    /// Playback of lineup channel `channel` moved to its next source.
    pub fn failover(&self, channel: &str) {
        self.failovers
            .get_or_create(&labels(&[("channel", channel)]))
            .inc();
    }
}

/// How a media cache request was answered.
#[derive(Debug, Clone, Copy)]
pub enum Lookup {
    /// From a complete cached entry.
    Hit,
    /// It started the upstream fetch.
    Miss,
    /// It joined a fetch another request had started.
    Coalesced,
}

/// Counts one active viewer while alive.
pub struct ViewerGuard(Labels);

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        get().active_viewers.get_or_create(&self.0).dec();
    }
}

/// The `outcome` label of a failed upstream call.
fn outcome_of(e: &UpstreamError) -> &'static str {
    match e {
        UpstreamError::Timeout(_) | UpstreamError::TimedOut { .. } => "timeout",
        UpstreamError::Status { .. } | UpstreamError::RangeNotSatisfiable { .. } => "http_error",
        UpstreamError::Request { .. } => "request_error",
        UpstreamError::TooLarge { .. } | UpstreamError::ListTooLarge { .. } => "too_large",
        UpstreamError::Invalid(_) => "invalid",
        UpstreamError::NoChannel(_) => "no_channel",
        UpstreamError::Busy(_) => "busy",
        UpstreamError::Throttled { .. } => "throttled",
        UpstreamError::PrivateAddress { .. } | UpstreamError::OwnAddress { .. } => {
            "refused_private"
        }
    }
}

/// `freesky_circuit_state` values: 0 closed, 1 half-open, 2 open.
fn circuit_value(circuit: &str) -> i64 {
    match circuit {
        "closed" => 0,
        "half_open" => 1,
        _ => 2,
    }
}

/// What `/metrics` reads from the running server at each scrape (`http::metrics`).
pub struct Now {
    /// Per service: its name, its circuit (`closed`, `half-open`, `open`), and whether
    /// its last guide refresh worked (`None` before its guide was tried).
    pub services: Vec<(String, String, Option<bool>)>,
    /// Running `.ts` sessions.
    pub ts_sessions: usize,
    /// HLS viewers by channel.
    pub hls_viewers: Vec<(String, usize)>,
    /// Started and not draining.
    pub started: bool,
    /// Listed channels of the last lineup built.
    pub lineup_channels: Option<usize>,
    /// HDHomeRun tuners in use and their count, when the emulation is on.
    pub tuners: Option<(usize, u32)>,
}

/// The whole `/metrics` text: the recorded metrics, then those read `now`.
pub fn render(read: &Now) -> String {
    let mut now = Registry::default();
    let circuit: Family<Labels, Gauge> = Family::default();
    let guide_ok: Family<Labels, Gauge> = Family::default();
    let sessions: Gauge = Gauge::default();
    for (name, state, guide) in &read.services {
        circuit
            .get_or_create(&labels(&[("service", name)]))
            .set(circuit_value(state));
        if let Some(ok) = guide {
            guide_ok
                .get_or_create(&labels(&[("service", name)]))
                .set(i64::from(*ok));
        }
    }
    sessions.set(i64::try_from(read.ts_sessions).unwrap_or(i64::MAX));
    let hls: Family<Labels, Gauge> = Family::default();
    for (channel, n) in &read.hls_viewers {
        hls.get_or_create(&labels(&[("channel", channel)]))
            .set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    let build: Family<Labels, Gauge> = Family::default();
    build
        .get_or_create(&labels(&[("version", env!("CARGO_PKG_VERSION"))]))
        .set(1);
    now.register(
        "freesky_build_info",
        "Always 1; the label names the running version",
        build,
    );
    let ready: Gauge = Gauge::default();
    ready.set(i64::from(read.started));
    now.register(
        "freesky_started",
        "1 once the first lineup loaded and while not draining (GET /ready also checks the state store)",
        ready,
    );
    let channels: Gauge = Gauge::default();
    if let Some(n) = read.lineup_channels {
        channels.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    now.register(
        "freesky_lineup_channels",
        "Listed channels of the last lineup built (0 before the first)",
        channels,
    );
    now.register(
        "freesky_circuit_state",
        "Circuit breaker of each service: 0 closed, 1 half-open, 2 open",
        circuit,
    );
    now.register(
        "freesky_guide_last_refresh_success",
        "1 when the last guide refresh of the service succeeded, 0 when it failed",
        guide_ok,
    );
    now.register(
        "freesky_hls_viewers",
        "HLS players (client addresses) that fetched a playlist of the channel in the last 30 s",
        hls,
    );
    if let Some((in_use, count)) = read.tuners {
        let busy: Gauge = Gauge::default();
        busy.set(i64::try_from(in_use).unwrap_or(i64::MAX));
        now.register(
            "freesky_tuners_in_use",
            "HDHomeRun tuners streaming now (each /auto/v{n} viewer holds one)",
            busy,
        );
        let total: Gauge = Gauge::default();
        total.set(i64::from(count));
        now.register(
            "freesky_tuners",
            "HDHomeRun tuners offered (hdhomerun.tuner_count)",
            total,
        );
    }
    now.register(
        "freesky_ts_sessions",
        "Running .ts sessions (one per channel, shared by its viewers)",
        sessions,
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode_registry(&mut out, &get().registry);
    let _ = encode_registry(&mut out, &now);
    to_prometheus_text(&out)
}

/// The encoder writes OpenMetrics, whose counter families are named without `_total`
/// (`# TYPE x counter` over samples `x_total`). Prometheus text 0.0.4 names a family
/// like its samples, so the HELP and TYPE lines of counters get the suffix here.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_families_are_named_like_their_samples() {
        let om = "# HELP a_x Things.\n# TYPE a_x counter\na_x_total{k=\"v\"} 1\n\
                  # HELP g A gauge.\n# TYPE g gauge\ng 2\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP a_x_total Things.\n# TYPE a_x_total counter\na_x_total{k=\"v\"} 1\n\
             # HELP g A gauge.\n# TYPE g gauge\ng 2\n"
        );
    }

    #[test]
    fn counters_with_fixed_labels_are_there_at_zero_from_the_start() {
        let fresh = Metrics::new();
        let mut out = String::new();
        encode_registry(&mut out, &fresh.registry).unwrap();
        let text = to_prometheus_text(&out);
        for series in [
            "freesky_cache_hits_total{cache=\"segment\"} 0\n",
            "freesky_cache_misses_total{cache=\"playlist\"} 0\n",
            "freesky_coalesced_requests_total{cache=\"segment\"} 0\n",
            "freesky_logo_refused_total{reason=\"too_large\"} 0\n",
            "freesky_logo_refused_total{reason=\"html\"} 0\n",
        ] {
            assert!(text.contains(series), "{series}: {text}");
        }
    }

    #[test]
    fn recorded_metrics_render_with_their_names() {
        get().http_request("/metrics-unit-test", 200);
        let mut out = String::new();
        encode_registry(&mut out, &get().registry).unwrap();
        let text = to_prometheus_text(&out);
        assert!(
            text.contains("# TYPE freesky_http_requests_total counter\n"),
            "{text}"
        );
        assert!(text.contains(
            "freesky_http_requests_total{route=\"/metrics-unit-test\",status=\"200\"} 1\n"
        ));
    }
}
