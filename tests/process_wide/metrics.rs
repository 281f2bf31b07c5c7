//! `GET /metrics`: Prometheus text that an independent parser (`prometheus-parse`)
//! reads line by line, and counters and gauges that move with real traffic through the
//! demo service (playlists and segments through the proxy, a `.ts` viewer, a 404).
//!
//! The metrics are process-wide, so this test runs alone (`common::alone`) and asserts
//! how values moved between two scrapes, not absolute values.

use futures::StreamExt;
use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};

use crate::common::{playlist_uris, TestApp, HANG_GUARD};

const DEMO: &str =
    "[streams]\nidle_stop = \"1s\"\n\n[[services]]\nname = \"Demo\"\nkind = \"demo\"\n";

type Scrape = MetricsExposition<PrometheusType, PrometheusValue>;

/// Scrapes `/metrics`, checks the content type and that the whole text parses (the
/// parser is a strict grammar: any bad line fails it).
async fn scrape(app: &TestApp) -> Scrape {
    let resp = app.get("/metrics").await;
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        ctype.starts_with("text/plain; version=0.0.4"),
        "content-type {ctype}"
    );
    let text = resp.text().await.expect("metrics body");
    parse_prometheus(&text).unwrap_or_else(|e| panic!("/metrics does not parse: {e:?}\n{text}"))
}

/// The samples of metric family `name`.
fn samples<'a>(
    s: &'a Scrape,
    name: &str,
) -> impl Iterator<Item = &'a openmetrics_parser::Sample<PrometheusValue>> {
    s.families
        .get(name)
        .into_iter()
        .flat_map(|f| f.iter_samples())
}

fn labels_match(x: &openmetrics_parser::Sample<PrometheusValue>, want: &[(&str, &str)]) -> bool {
    let set = x.get_labelset().expect("labels");
    set.iter().count() == want.len() && want.iter().all(|(k, v)| set.get_label_value(k) == Some(*v))
}

/// The value of sample `name` with exactly the labels `want` (0 when absent).
fn value(s: &Scrape, name: &str, want: &[(&str, &str)]) -> f64 {
    samples(s, name)
        .find(|x| labels_match(x, want))
        .map(|x| match &x.value {
            PrometheusValue::Counter(c) => c.value.as_f64(),
            PrometheusValue::Gauge(v) | PrometheusValue::Unknown(v) => v.as_f64(),
            other => panic!("{name} is not a single value: {other:?}"),
        })
        .unwrap_or(0.0)
}

fn has(s: &Scrape, name: &str, want: &[(&str, &str)]) -> bool {
    samples(s, name).any(|x| labels_match(x, want))
}

/// Every `route` label value in the scrape.
fn routes(s: &Scrape) -> Vec<String> {
    samples(s, "freesky_http_requests_total")
        .filter_map(|x| {
            x.get_labelset()
                .ok()
                .and_then(|l| l.get_label_value("route").map(str::to_string))
        })
        .collect()
}

/// Polls `/metrics` until `ok` holds for the viewers of `channel` (bounded).
async fn wait_viewers(app: &TestApp, channel: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let what = format!("freesky_active_viewers{{channel={channel}}} to move");
    crate::common::eventually(&what, || async {
        let v = value(
            &scrape(app).await,
            "freesky_active_viewers",
            &[("channel", channel)],
        );
        if ok(v) {
            Ok(v)
        } else {
            Err(v)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_traffic() {
    let _alone = crate::common::alone().await;
    let app = TestApp::spawn(DEMO).await;
    let id = app.channel_id("Demo").await;

    let before = scrape(&app).await;
    assert_eq!(
        value(
            &before,
            "freesky_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(value(&before, "freesky_lineup_channels", &[]), 1.0);
    crate::common::eventually_true("freesky_started is 1 once /ready is", || async {
        app.get("/ready").await.status() == 200
            && value(&scrape(&app).await, "freesky_started", &[]) == 1.0
    })
    .await;
    // Computed at scrape time from the registry: one sample per service, closed = 0.
    assert!(has(
        &before,
        "freesky_circuit_state",
        &[("service", "Demo")]
    ));
    assert_eq!(
        value(&before, "freesky_circuit_state", &[("service", "Demo")]),
        0.0
    );

    // HLS through the proxy: the channel playlist, nested playlists, one segment twice.
    let mut playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let mut segment = None;
    for _ in 0..3 {
        let uris = playlist_uris(&playlist);
        let first = uris.first().cloned().expect("a proxied URI").to_string();
        let body = app.get_text_ok(&first).await;
        if body.starts_with("#EXTM3U") {
            playlist = body;
        } else {
            segment = Some(first);
            break;
        }
    }
    let segment = segment.expect("a segment link in the demo playlists");
    let again = app.get(&segment).await;
    assert_eq!(again.status(), 200);
    again.bytes().await.expect("segment body");

    // A 404 from no route at all.
    assert_eq!(app.get("/no/such/endpoint").await.status(), 404);

    let after = scrape(&app).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let requests = "freesky_http_requests_total";
    assert!(
        moved(
            requests,
            &[("route", "/api/stream/{file}"), ("status", "200")]
        ) >= 1.0
    );
    assert!(
        moved(
            requests,
            &[("route", "/proxy/{token}/{item}/{name}"), ("status", "200")]
        ) >= 2.0,
        "{:?}",
        routes(&after)
    );
    assert_eq!(
        moved(requests, &[("route", "unmatched"), ("status", "404")]),
        1.0
    );
    // Route labels are templates, never a raw path.
    let segment_path = segment.trim_start_matches(&app.base).to_string();
    for r in routes(&after) {
        assert!(r != segment_path && !r.contains("/no/such"), "raw path {r}");
    }

    assert!(moved("freesky_cache_misses_total", &[("cache", "segment")]) >= 1.0);
    assert!(
        moved("freesky_cache_hits_total", &[("cache", "segment")]) >= 1.0,
        "the second fetch of {segment} was not a cache hit"
    );
    assert!(moved("freesky_cache_misses_total", &[("cache", "playlist")]) >= 1.0);
    assert!(
        moved(
            "freesky_upstream_requests_total",
            &[("service", "Demo"), ("outcome", "ok")]
        ) >= 1.0
    );
    assert!(has(
        &after,
        "freesky_upstream_request_duration_seconds",
        &[("service", "Demo")]
    ));

    // A .ts viewer counts while it reads, and no longer once it has left.
    let resp = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    tokio::time::timeout(HANG_GUARD, body.next())
        .await
        .expect("first .ts bytes")
        .expect("a chunk")
        .expect("chunk ok");
    let watching = wait_viewers(&app, &id, |v| v >= 1.0).await;
    assert_eq!(watching, 1.0);
    assert!(value(&scrape(&app).await, "freesky_ts_sessions", &[]) >= 1.0);
    drop(body);
    wait_viewers(&app, &id, |v| v == 0.0).await;
}
