//! Politeness towards upstreams and credentials from files (issue 5, items 6 and 7):
//! `rate_limit` as a token bucket, `max_concurrent`, 429/503 `Retry-After` pauses,
//! `idle_timeout`, and `token_file`. Fake upstreams on 127.0.0.1 record when requests
//! arrive; timing assertions have wide margins and check order, not speed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::common::{respond, FakeUpstream, TestApp, HANG_GUARD, M3U_TYPE};
use freesky::config::Config;
use freesky::upstream::{Http, ServiceHttp};

/// A `ServiceHttp` for a service with `keys` (TOML lines of the `[[services]]` table),
/// as the kinds build it.
fn service_http(keys: &str) -> ServiceHttp {
    let text = format!(
        "[[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"http://127.0.0.1:9/list.m3u\"\n{keys}\n"
    );
    let cfg = Config::parse(&text, "test.toml", &|_| None).unwrap_or_else(|e| panic!("{e}"));
    ServiceHttp::new(Http::new(1 << 20), &cfg.services[0], None)
}

fn url(fake: &FakeUpstream, path: &str) -> url::Url {
    url::Url::parse(&fake.url(path)).expect("fake URL")
}

/// When each request arrived at a fake.
type Arrivals = Arc<Mutex<Vec<Instant>>>;

fn arrivals(log: &Arrivals) -> Vec<Instant> {
    let mut v = log.lock().unwrap().clone();
    v.sort();
    v
}

/// A body of `chunks` chunks, `gap` apart.
fn drip(chunks: usize, gap: Duration, guard: impl Send + 'static) -> Body {
    Body::from_stream(futures::stream::unfold(
        (0, guard),
        move |(i, guard)| async move {
            if i == chunks {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            Some((
                Ok::<_, std::io::Error>(Bytes::from("chunk ")),
                (i + 1, guard),
            ))
        },
    ))
}

#[tokio::test]
async fn rate_limit_allows_a_burst_then_the_rate() {
    let log = Arrivals::default();
    let fake = {
        let log = log.clone();
        FakeUpstream::bind()
            .await
            .route(
                "/hit",
                get(move || {
                    log.lock().unwrap().push(Instant::now());
                    async { "ok" }
                }),
            )
            .start()
    };
    let http = service_http("rate_limit = \"5/s\"");
    let target = url(&fake, "/hit");
    let results = futures::future::join_all((0..12).map(|_| {
        let http = http.clone();
        let target = target.clone();
        async move { http.get_text(&target, &Default::default()).await }
    }))
    .await;
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    let at = arrivals(&log);
    assert_eq!(at.len(), 12);
    let since = |i: usize| at[i] - at[0];
    // The burst: 5 requests at once (spacing them evenly would take 800 ms).
    assert!(
        since(4) < Duration::from_millis(400),
        "burst took {:?}",
        since(4)
    );
    // Then 5/s: the other 7 need about 1.4 s.
    assert!(
        since(11) >= Duration::from_millis(1200),
        "12 requests in {:?}",
        since(11)
    );
    // Within any second starting at the first request: the burst plus 5 more, at most.
    let in_first_second = at
        .iter()
        .filter(|t| **t - at[0] < Duration::from_secs(1))
        .count();
    assert!(
        in_first_second <= 10,
        "{in_first_second} requests in the first second"
    );
}

/// Counts requests in flight at the fake: from arrival until the body is sent.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A fake whose `/slow` answers at once but sends its body over about 300 ms, counting
/// requests in flight (and the most seen at once).
async fn slow_fake() -> (FakeUpstream, Arc<AtomicUsize>) {
    let current = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let fake = {
        let most = most.clone();
        FakeUpstream::bind()
            .await
            .route(
                "/slow",
                get(move || {
                    let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let guard = InFlight(current.clone());
                    async move {
                        Response::builder()
                            .header("content-type", "video/mp2t")
                            .body(drip(4, Duration::from_millis(100), guard))
                            .unwrap()
                    }
                }),
            )
            .start()
    };
    (fake, most)
}

#[tokio::test]
async fn max_concurrent_caps_requests_in_flight_until_their_bodies_end() {
    let (fake, most) = slow_fake().await;
    let http = service_http("max_concurrent = 2");
    let target = url(&fake, "/slow");
    let results = futures::future::join_all((0..6).map(|_| {
        let http = http.clone();
        let target = target.clone();
        async move { http.get_text(&target, &Default::default()).await }
    }))
    .await;
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(fake.hits("/slow"), 6);
    assert_eq!(most.load(Ordering::SeqCst), 2, "requests in flight at once");
}

#[tokio::test]
async fn a_request_waiting_too_long_for_a_slot_fails_clearly() {
    let (fake, _) = slow_fake().await;
    let http = service_http("max_concurrent = 1\ntimeout = \"300ms\"");
    let target = url(&fake, "/slow");
    // A response whose body is not read yet holds the only slot.
    let held = http.get(&target, &Default::default(), None).await.unwrap();
    let started = Instant::now();
    let err = http
        .get(&target, &Default::default(), None)
        .await
        .err()
        .expect("no slot free");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(err.to_string().contains("max_concurrent"), "{err}");
    assert_eq!(fake.hits("/slow"), 1);
    // Reading the body to its end gives the slot back.
    held.bytes(1 << 20).await.unwrap();
    http.get(&target, &Default::default(), None).await.unwrap();
    assert_eq!(fake.hits("/slow"), 2);
}

#[tokio::test]
async fn a_long_retry_after_is_capped_and_fails_fast_meanwhile() {
    let fake = FakeUpstream::bind()
        .await
        .route(
            "/busy",
            get(|| async {
                Response::builder()
                    .status(503)
                    .header("retry-after", "100000")
                    .body(Body::from("busy"))
                    .unwrap()
            }),
        )
        .start();
    // A request that waited for the pause would take the whole timeout (20 s); one
    // that does not is answered far sooner, however loaded the machine.
    let http = service_http("timeout = \"20s\"");
    let target = url(&fake, "/busy");
    let first = http
        .get(&target, &Default::default(), None)
        .await
        .err()
        .unwrap();
    let host = format!("127.0.0.1:{}", target.port().unwrap());
    assert_eq!(
        first.to_string(),
        format!("HTTP 503, retry after 300 s: {host} asked for the pause")
    );
    assert!(http.paused_until(&target).is_some());
    // The pause is longer than the timeout: the next request fails without waiting and
    // without reaching the upstream.
    let started = Instant::now();
    let second = http
        .get(&target, &Default::default(), None)
        .await
        .err()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        second.to_string().starts_with("HTTP 503, retry after")
            && second.to_string().ends_with(&format!(
                ": {host} is paused, as it answered another request with 503 and Retry-After"
            )),
        "{second}"
    );
    assert_eq!(fake.hits("/busy"), 1);
}

/// A pause is the asking host's: a logo host or a CDN that answers 503 with
/// `Retry-After` (any viewer can make freesky fetch a logo) pauses the service's
/// requests to that host only, not to its panel or its other hosts; a redirect to the
/// paused host is not followed meanwhile.
#[tokio::test]
async fn a_retry_after_pauses_only_the_host_that_asked() {
    let busy = FakeUpstream::bind()
        .await
        .route(
            "/logo.png",
            get(|| async {
                Response::builder()
                    .status(503)
                    .header("retry-after", "4")
                    .body(Body::from("busy"))
                    .unwrap()
            }),
        )
        .start();
    let panel = FakeUpstream::bind().await;
    let to_busy = busy.url("/logo.png");
    let panel = panel
        .text("/list.m3u", M3U_TYPE, "#EXTM3U\n")
        .route(
            "/moved",
            get(move || {
                let to = to_busy.clone();
                async move {
                    Response::builder()
                        .status(302)
                        .header("location", to)
                        .body(Body::empty())
                        .unwrap()
                }
            }),
        )
        .start();
    let http = service_http("timeout = \"20s\"\nallow_private = true");
    let logo = url(&busy, "/logo.png");
    let err = http
        .get(&logo, &Default::default(), None)
        .await
        .err()
        .unwrap();
    let host = format!("127.0.0.1:{}", logo.port().unwrap());
    assert_eq!(
        err.to_string(),
        format!("HTTP 503, retry after 4 s: {host} asked for the pause")
    );
    assert!(http.paused_until(&logo).is_some());
    // The panel is another host: asked at once.
    let list = url(&panel, "/list.m3u");
    assert!(http.paused_until(&list).is_none());
    http.get(&list, &Default::default(), None)
        .await
        .expect("the panel is not paused");
    // A redirect to the paused host fails at once, without asking it again (a pause
    // shorter than the timeout is not waited for there, holding the request's slot).
    let started = Instant::now();
    let err = http
        .get(&url(&panel, "/moved"), &Default::default(), None)
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string().starts_with("HTTP 503, retry after")
            && err.to_string().contains(&format!("{host} is paused")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(3), "{err}");
    assert_eq!(busy.hits("/logo.png"), 1);
    assert_eq!(panel.hits("/list.m3u"), 1);
}

#[tokio::test]
async fn retry_after_pauses_the_service_and_the_status_shows_it() {
    let list_arrivals = Arrivals::default();
    let answered_429 = Arc::new(Mutex::new(None::<Instant>));
    let fake = {
        let log = list_arrivals.clone();
        let answered_429 = answered_429.clone();
        let builder = FakeUpstream::bind().await;
        let list = format!(
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"Paced.us\",Paced One\n{}\n",
            builder.url("/live/one.m3u8")
        );
        builder
            .route(
                "/list.m3u",
                get(move || {
                    let now = Instant::now();
                    log.lock().unwrap().push(now);
                    let mut first = answered_429.lock().unwrap();
                    let resp = if first.is_none() {
                        *first = Some(now);
                        Response::builder()
                            .status(429)
                            .header("retry-after", "1")
                            .body(Body::from("slow down"))
                            .unwrap()
                    } else {
                        respond(200, M3U_TYPE, list.clone())
                    };
                    async move { resp }
                }),
            )
            .start()
    };
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Paced\"\nkind = \"m3u\"\nurl = \"{}\"\ntimeout = \"5s\"\n",
        fake.url("/list.m3u")
    ))
    .await;

    // The first listing meets the 429 (whether a request or a warm-up asked first).
    let _ = app.get("/api/channels/all").await;
    let status = crate::common::eventually("a 429 in the status", || async {
        let s = app.service_status("Paced").await;
        if s["last_error"].as_str().is_some_and(|e| e.contains("429")) {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await;
    let host = url(&fake, "/list.m3u");
    assert_eq!(
        status["last_error"],
        format!(
            "HTTP 429, retry after 1 s: 127.0.0.1:{} asked for the pause",
            host.port().unwrap()
        ),
        "{status}"
    );

    // Re-enabling drops the cached lineup; the next listing waits out the pause.
    let resp = app.post("/api/services/Paced/enable").await;
    assert_eq!(resp.status(), 200);
    let names = app.channel_names().await;
    assert_eq!(names, ["Paced One"]);
    let at = arrivals(&list_arrivals);
    let t429 = answered_429.lock().unwrap().expect("a 429 was sent");
    assert!(at.len() >= 2, "{at:?}");
    for later in at.iter().filter(|t| **t > t429) {
        assert!(
            *later - t429 >= Duration::from_millis(950),
            "a request came {:?} after the 429 with Retry-After: 1",
            *later - t429
        );
    }
    let status = app.service_status("Paced").await;
    assert_eq!(status["last_error"], Value::Null, "{status}");
}

#[tokio::test]
async fn idle_timeout_bounds_the_gaps_of_a_body_not_its_length() {
    let fake = FakeUpstream::bind()
        .await
        .route(
            "/trickle",
            get(|| async {
                // One chunk, then nothing: a hung upstream.
                let body =
                    futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("first ")) })
                        .chain(futures::stream::pending());
                Response::builder()
                    .header("content-type", "video/mp2t")
                    .body(Body::from_stream(body))
                    .unwrap()
            }),
        )
        .route(
            "/drip",
            get(|| async {
                Response::builder()
                    .header("content-type", "video/mp2t")
                    .body(drip(8, Duration::from_millis(100), ()))
                    .unwrap()
            }),
        )
        .start();
    let http = service_http("timeout = \"10s\"\nidle_timeout = \"400ms\"");

    let started = Instant::now();
    let f = http
        .get(&url(&fake, "/trickle"), &Default::default(), None)
        .await
        .unwrap();
    let err = tokio::time::timeout(HANG_GUARD, f.bytes(1 << 20))
        .await
        .expect("the idle bound ends the body")
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(err.to_string(), "timed out after 400ms");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // 8 chunks 100 ms apart: longer than the idle bound in all, never idle that long.
    let f = http
        .get(&url(&fake, "/drip"), &Default::default(), None)
        .await
        .unwrap();
    let body = f.bytes(1 << 20).await.unwrap();
    assert_eq!(body.len(), 8 * "chunk ".len());
}

#[tokio::test]
async fn a_bearer_token_from_a_file_authenticates_and_is_never_shown() {
    const TOKEN: &str = "file-token-7d1e2b9c";
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("api_token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();

    let api = FakeUpstream::bind()
        .await
        .route(
            "/v1/channels",
            get(|h: HeaderMap| async move {
                if h.get("authorization").and_then(|v| v.to_str().ok())
                    != Some(&*format!("Bearer {TOKEN}"))
                {
                    return respond(401, "application/json", r#"{"error":"unauthorized"}"#);
                }
                let body = json!({"items": [{"id": "f1", "title": "File One"}]});
                respond(200, "application/json", body.to_string())
            }),
        )
        // The stream endpoint breaks, so an error body is produced too.
        .status("/v1/stream/f1", 500)
        .start();
    let config = format!(
        r#"
[[services]]
name = "FileAuth"
kind = "json_api"
base_url = "{}/v1"
[services.channels]
path = "channels"
list = "/items"
name = "/title"
[services.stream]
path = "stream/{{channel_id}}"
url = "/hls"
[services.auth]
bearer = {{ token_file = '{}' }}
"#,
        api.base(),
        token_file.display()
    );
    let app = TestApp::spawn(&config).await;

    assert_eq!(app.channel_names().await, ["File One"]);
    let sent = api.requests_to("/v1/channels");
    assert_eq!(
        sent[0].header("authorization"),
        Some(&*format!("Bearer {TOKEN}")),
        "the trailing newline of the file is not part of the token"
    );
    let status = app.service_status("FileAuth").await;
    assert_eq!(status["channel_count"], 1, "{status}");

    let error = app.get("/api/stream/FileAuth:f1.m3u8").await;
    assert_eq!(error.status(), 502);
    let error_text = error.text().await.unwrap();
    assert!(error_text.contains("500"), "{error_text}");
    let status_text = app.get_text_ok("/api/services/status").await;
    for text in [&error_text, &status_text] {
        assert!(!text.contains(TOKEN), "token leaked: {text}");
    }
}

#[tokio::test]
async fn an_unreadable_secret_file_is_a_config_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no_such_secret");
    let path = dir.path().join("freesky.toml");
    std::fs::write(
        &path,
        format!(
            "[[services]]\nname = \"A\"\nkind = \"m3u\"\nurl = \"http://127.0.0.1:9/x.m3u\"\n\n[services.auth.basic]\nuser = \"me\"\npassword_file = '{}'\n",
            missing.display()
        ),
    )
    .unwrap();
    let err = Config::load_file(&path).unwrap_err().to_string();
    let expected = format!(
        "{}:8: services[0].auth.basic.password_file: cannot read",
        path.display()
    );
    assert!(err.starts_with(&expected), "{err}");
    assert!(err.contains("no_such_secret"), "{err}");
}
