//! Service health end to end: the circuit breaker opening on failures, fallback
//! skipping an open service, recovery after the backoff (by a real request's trial or
//! by the background probe), and racing sources. Durations are configured small and
//! every wait is bounded polling, never a fixed long sleep.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::routing::get;
use serde_json::Value;

use crate::common::{
    assert_api_error, eventually, media_playlist, playlist_uris, respond, FakeUpstream, TestApp,
    HANG_GUARD, HLS_TYPE, M3U_TYPE,
};

/// Polls service `name`'s status every 25 ms until `done` holds (panics with the last
/// status after `HANG_GUARD`).
async fn wait_status(
    app: &TestApp,
    name: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually(&format!("{name} to get {what}"), || async {
        let status = app.service_status(name).await;
        if done(&status) {
            Ok(status)
        } else {
            Err(format!("{status:#}"))
        }
    })
    .await
}

/// An RFC 3339 time of the status.
fn wall(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap_or_else(|e| panic!("{v}: {e}"))
}

/// Opens `/api/stream/{id}.m3u8` (must be 200) and returns the bytes of its first URI.
async fn first_segment(app: &TestApp, id: &str) -> Vec<u8> {
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let uris = playlist_uris(&playlist);
    assert_eq!(uris.len(), 1, "{playlist}");
    let resp = app.get(&uris[0]).await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.expect("segment").to_vec()
}

/// An m3u upstream offering channel `Same.tv` whose playlist `/{name}/index.m3u8` is a
/// one-segment VOD playlist answered by `playlist`.
async fn upstream(name: &str, playlist: axum::routing::MethodRouter) -> FakeUpstream {
    let up = FakeUpstream::bind().await;
    let b = up.base();
    up.text(
        "/list.m3u",
        M3U_TYPE,
        format!("#EXTM3U\n#EXTINF:-1 tvg-id=\"Same.tv\",Same {name}\n{b}/{name}/index.m3u8\n"),
    )
    .route(&format!("/{name}/index.m3u8"), playlist)
    .bytes(
        &format!("/{name}/seg.ts"),
        "video/mp2t",
        format!("{name} SEGMENT").into_bytes(),
    )
    .start()
}

/// An m3u upstream whose `/list.m3u` lists one channel `name` while the returned flag
/// is true (it starts as `healthy`) and answers 503 while it is false.
async fn switchable_list(name: &str, healthy: bool) -> (FakeUpstream, Arc<AtomicBool>) {
    let healthy = Arc::new(AtomicBool::new(healthy));
    let flag = healthy.clone();
    let up = FakeUpstream::bind().await;
    let b = up.base();
    let list = format!("#EXTM3U\n#EXTINF:-1,{name}\n{b}/channel/index.m3u8\n");
    let up = up
        .route(
            "/list.m3u",
            get(move || {
                let ok = flag.load(Ordering::SeqCst);
                let list = list.clone();
                async move {
                    if ok {
                        respond(200, M3U_TYPE, list)
                    } else {
                        respond(503, "text/plain", "down")
                    }
                }
            }),
        )
        .start();
    (up, healthy)
}

fn m3u_service(name: &str, priority: u32, up: &FakeUpstream) -> String {
    format!(
        "[[services]]\nname = \"{name}\"\nkind = \"m3u\"\npriority = {priority}\nurl = \"{}/list.m3u\"\n\n",
        up.base()
    )
}

#[tokio::test]
async fn a_failing_service_opens_its_circuit_is_skipped_and_recovers_after_the_backoff() {
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    let bad = upstream(
        "bad",
        get(move || {
            let ok = flag.load(Ordering::SeqCst);
            async move {
                if ok {
                    respond(200, HLS_TYPE, media_playlist(&["seg.ts"]))
                } else {
                    respond(500, "text/plain", "broken")
                }
            }
        }),
    )
    .await;
    let good = upstream(
        "good",
        get(|| async { respond(200, HLS_TYPE, media_playlist(&["seg.ts"])) }),
    )
    .await;
    let config = format!(
        "[health]\ninterval = \"0s\"\nopen_after = 3\nbackoff = \"1s\"\nbackoff_max = \"10s\"\n\n{}{}",
        m3u_service("Bad", 1, &bad),
        m3u_service("Good", 2, &good)
    );
    let app = TestApp::spawn(&config).await;
    let channel = app.channel_named("Same bad").await;
    let id = channel["id"].as_str().unwrap().to_string();

    let fresh = app.service_status("Bad").await;
    assert_eq!(fresh["circuit"], "closed", "{fresh:#}");
    assert_eq!(fresh["retry_at"], Value::Null, "{fresh:#}");

    // Three failures in a row: each request falls back to Good, then the circuit opens.
    for n in 1..=3 {
        assert_eq!(first_segment(&app, &id).await, b"good SEGMENT");
        assert_eq!(bad.hits("/bad/index.m3u8"), n);
    }
    let open = app.service_status("Bad").await;
    assert_eq!(open["circuit"], "open", "{open:#}");
    assert_eq!(open["healthy"], false, "{open:#}");
    assert_eq!(open["consecutive_failures"], 3, "{open:#}");
    assert!(
        open["retry_at"].as_str().is_some_and(|t| t.contains('T')),
        "{open:#}"
    );
    assert!(open["success_rate"].as_f64().unwrap() < 1.0, "{open:#}");
    assert!(
        open["last_error"].as_str().unwrap().contains("500"),
        "{open:#}"
    );

    // While open, fallback goes straight to Good: Bad counts no request.
    assert_eq!(first_segment(&app, &id).await, b"good SEGMENT");
    assert_eq!(bad.hits("/bad/index.m3u8"), 3);
    // ... unless Bad is the only source left: then it is still tried, last.
    let body = assert_api_error(
        app.get(&format!("/api/stream/{id}.m3u8?service=Bad")).await,
        502,
    )
    .await;
    let tried: Vec<_> = body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["service"].as_str().unwrap())
        .collect();
    assert_eq!(tried, ["Bad"], "{body:#}");
    assert_eq!(bad.hits("/bad/index.m3u8"), 4);
    let still = app.service_status("Bad").await;
    assert_eq!(
        still["circuit"], "open",
        "a last-resort failure keeps it open: {still:#}"
    );
    let (a, b) = (wall(&open["retry_at"]), wall(&still["retry_at"]));
    let drift = a
        .duration_since(b)
        .or_else(|_| b.duration_since(a))
        .unwrap();
    assert!(
        drift < Duration::from_millis(100),
        "a last-resort failure does not lengthen the backoff: {open:#} {still:#}"
    );

    // Bad works again; after the backoff the next request is its trial and closes it.
    healthy.store(true, Ordering::SeqCst);
    wait_status(&app, "Bad", "half_open", |s| s["circuit"] == "half_open").await;
    assert_eq!(first_segment(&app, &id).await, b"bad SEGMENT");
    assert_eq!(bad.hits("/bad/index.m3u8"), 5);
    let closed = app.service_status("Bad").await;
    assert_eq!(closed["circuit"], "closed", "{closed:#}");
    assert_eq!(closed["healthy"], true, "{closed:#}");
    assert_eq!(closed["consecutive_failures"], 0, "{closed:#}");
    assert_eq!(closed["retry_at"], Value::Null, "{closed:#}");
    assert!(closed["latency_ewma_ms"].is_u64(), "{closed:#}");
}

#[tokio::test]
async fn a_failed_trial_doubles_the_backoff() {
    let bad = upstream(
        "bad",
        get(|| async { respond(500, "text/plain", "broken") }),
    )
    .await;
    let config = format!(
        "[health]\ninterval = \"0s\"\nopen_after = 2\nbackoff = \"1s\"\nbackoff_max = \"10s\"\n\n{}",
        m3u_service("Bad", 1, &bad)
    );
    let app = TestApp::spawn(&config).await;
    let id = app.channel_id("Same bad").await;
    // A circuit reads "open" only until its backoff has passed: each status below is
    // read a request after the failure, well within a backoff of 1 s even on a loaded
    // machine (200 ms was not).
    for _ in 0..2 {
        assert_api_error(app.get(&format!("/api/stream/{id}.m3u8")).await, 502).await;
    }
    let first = app.service_status("Bad").await;
    let seen = SystemTime::now();
    assert_eq!(first["circuit"], "open", "{first:#}");
    let first_left = wall(&first["retry_at"])
        .duration_since(seen)
        .unwrap_or_default();
    assert!(first_left <= Duration::from_secs(1), "{first:#}");
    wait_status(&app, "Bad", "half_open", |s| s["circuit"] == "half_open").await;
    // The trial fails: open again, now for 2 s.
    let before = SystemTime::now();
    assert_api_error(app.get(&format!("/api/stream/{id}.m3u8")).await, 502).await;
    let second = app.service_status("Bad").await;
    assert_eq!(second["circuit"], "open", "{second:#}");
    let second_left = wall(&second["retry_at"])
        .duration_since(before)
        .unwrap_or_default();
    assert!(second_left >= Duration::from_millis(1999), "{second:#}");
}

#[tokio::test]
async fn the_background_probe_opens_and_closes_the_circuit_without_traffic() {
    let (up, healthy) = switchable_list("Probed", false).await;
    let config = format!(
        "[health]\ninterval = \"50ms\"\nopen_after = 2\nbackoff = \"200ms\"\nbackoff_max = \"400ms\"\n\n{}",
        m3u_service("Flaky", 1, &up)
    );
    let app = TestApp::spawn(&config).await;
    let open = wait_status(&app, "Flaky", "an open circuit", |s| s["circuit"] == "open").await;
    assert!(open["retry_at"].is_string(), "{open:#}");
    assert!(
        open["last_error"].as_str().unwrap().contains("503"),
        "{open:#}"
    );
    // A probe after the backoff is the trial; it fails, so the circuit stays open.
    let failures = open["failures"].as_u64().unwrap();
    let reopened = wait_status(&app, "Flaky", "a failed trial", |s| {
        s["failures"].as_u64().unwrap() > failures
    })
    .await;
    assert_ne!(reopened["circuit"], "closed", "{reopened:#}");

    healthy.store(true, Ordering::SeqCst);
    let closed = wait_status(&app, "Flaky", "a closed circuit", |s| {
        s["circuit"] == "closed"
    })
    .await;
    assert_eq!(closed["channel_count"], 1, "{closed:#}");
    assert_eq!(closed["consecutive_failures"], 0, "{closed:#}");
    assert!(closed["success_rate"].as_f64().unwrap() > 0.0, "{closed:#}");
}

#[tokio::test]
async fn racing_takes_the_fast_secondary_and_drops_the_slow_primary() {
    let slow_finished = Arc::new(AtomicBool::new(false));
    let finished = slow_finished.clone();
    let slow = upstream(
        "slow",
        get(move || {
            let finished = finished.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                finished.store(true, Ordering::SeqCst);
                respond(200, HLS_TYPE, media_playlist(&["seg.ts"]))
            }
        }),
    )
    .await;
    let fast = upstream(
        "fast",
        get(|| async { respond(200, HLS_TYPE, media_playlist(&["seg.ts"])) }),
    )
    .await;
    let config = format!(
        "[streams]\nrace = 2\n\n[health]\ninterval = \"0s\"\n\n{}{}",
        m3u_service("Slow", 1, &slow),
        m3u_service("Fast", 2, &fast)
    );
    let app = TestApp::spawn(&config).await;
    let channel = app.channel_named("Same slow").await;
    let id = channel["id"].as_str().unwrap().to_string();

    let fast_before = app.service_status("Fast").await["successes"]
        .as_u64()
        .unwrap();
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    // Sequentially, the healthy primary would have been asked alone and answered
    // after 2 s. Racing: answered before the primary finished its answer, from Fast.
    assert!(
        !slow_finished.load(Ordering::SeqCst),
        "the stream waited for the slow primary"
    );
    assert!(slow.hits("/slow/index.m3u8") <= 1);
    assert_eq!(fast.hits("/fast/index.m3u8"), 1);
    let uris = playlist_uris(&playlist);
    assert_eq!(uris.len(), 1, "{playlist}");
    let resp = app.get(&uris[0]).await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"fast SEGMENT");
    // The dropped primary is neither a failure nor a success of its stream.
    let s = app.service_status("Slow").await;
    assert_eq!(s["failures"], 0, "{s:#}");
    assert_eq!(s["circuit"], "closed", "{s:#}");
    let f = app.service_status("Fast").await;
    assert_eq!(f["successes"].as_u64().unwrap(), fast_before + 1, "{f:#}");
}

#[tokio::test]
async fn a_failing_service_keeps_its_last_channels_and_is_not_asked_while_open() {
    let (up, healthy) = switchable_list("Kept Channel", true).await;
    // No probes: every list request below comes from a lineup rebuild. Lists and the
    // lineup expire after 300 ms; an open circuit stays open for an hour.
    let config = format!(
        "[cache]\nchannels_ttl = \"300ms\"\n\n[health]\ninterval = \"0s\"\nopen_after = 2\nbackoff = \"1h\"\nbackoff_max = \"1h\"\n\n{}",
        m3u_service("Flaky", 1, &up)
    );
    let app = TestApp::spawn(&config).await;
    assert!(app
        .get_text_ok("/playlist.m3u")
        .await
        .contains("Kept Channel"));

    // The list fails from now on: each rebuild asks again until the circuit opens,
    // and every playlist meanwhile still lists the channel.
    healthy.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        tokio::time::sleep(Duration::from_millis(350)).await;
        let playlist = app.get_text_ok("/playlist.m3u").await;
        assert!(playlist.contains("Kept Channel"), "{playlist}");
        let status = app.service_status("Flaky").await;
        if status["circuit"] == "open" {
            assert!(
                status["last_error"].as_str().unwrap().contains("503"),
                "{status:#}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the circuit never opened: {status:#}"
        );
    }

    // While open, rebuilds keep the last list and do not ask the upstream.
    let asked = up.hits("/list.m3u");
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(350)).await;
        let playlist = app.get_text_ok("/playlist.m3u").await;
        assert!(playlist.contains("Kept Channel"), "{playlist}");
    }
    assert_eq!(up.hits("/list.m3u"), asked, "an open circuit was asked");
}
