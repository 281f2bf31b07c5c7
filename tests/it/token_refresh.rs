//! Tokenised upstream URLs are refreshed while someone watches (issue 5, item 5): an
//! origin whose resolve answer carries `?expires=<now + 3 s>` and that refuses (403)
//! every playlist or segment request with an expired token. Viewers of the `.ts`
//! session and HLS players polling their media playlist link keep playing well past
//! two expiries, without a single refused request and without gaps or repeats.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query};
use axum::routing::get;
use futures::StreamExt;

use crate::common::{playlist_uris, respond, FakeUpstream, TestApp, HANG_GUARD, HLS_TYPE};

/// Lifetime of each token the origin hands out.
const TOKEN_SECS: u64 = 3;
/// How long the viewers watch: well past two expiries.
const WATCH: Duration = Duration::from_secs(8);

/// What the origin counted.
#[derive(Default)]
struct Counts {
    resolves: AtomicUsize,
    /// Requests refused because their token had expired (or was missing).
    refused: AtomicUsize,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// One segment's bytes: a marker naming its sequence number, padded to a TS packet.
fn segment(n: u64) -> Vec<u8> {
    let mut b = format!("<seg {n:08}>").into_bytes();
    b.resize(188, b' ');
    b
}

/// The sequence numbers of every segment marker in `bytes`, in order.
fn markers(bytes: &[u8]) -> Vec<u64> {
    let text = String::from_utf8_lossy(bytes);
    text.match_indices("<seg ")
        .filter_map(|(i, _)| text.get(i + 5..i + 13)?.parse().ok())
        .collect()
}

/// A json_api origin: `/api/channels` lists channel `live`; every `/api/stream/live`
/// hands out a fresh `master.m3u8?expires=...`; the master names
/// `media.m3u8?expires=<same>`, a live playlist (one new 1 s segment per second, a
/// window of 4) whose segments carry the same token. Anything with an expired or
/// missing token is answered 403.
async fn origin() -> (FakeUpstream, Arc<Counts>) {
    origin_with(TOKEN_SECS).await
}

/// `origin`, handing out tokens valid for `token_secs`.
async fn origin_with(token_secs: u64) -> (FakeUpstream, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let fake = FakeUpstream::bind().await;
    let base = fake.base();
    let t0 = Instant::now();
    // Sequence numbers follow the clock, starting high enough to have a window.
    let live_seq = move || 100 + t0.elapsed().as_secs();
    let valid = {
        let counts = counts.clone();
        move |q: &HashMap<String, String>| {
            let ok = q
                .get("expires")
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|t| t >= unix_now());
            if !ok {
                counts.refused.fetch_add(1, Ordering::SeqCst);
            }
            ok
        }
    };
    let resolve = {
        let counts = counts.clone();
        let base = base.clone();
        move || {
            counts.resolves.fetch_add(1, Ordering::SeqCst);
            let url = format!("{base}/hls/master.m3u8?expires={}", unix_now() + token_secs);
            async move { axum::Json(serde_json::json!({ "url": url })) }
        }
    };
    let master = {
        let valid = valid.clone();
        move |Query(q): Query<HashMap<String, String>>| {
            let answer = if valid(&q) {
                let token = q.get("expires").cloned().unwrap_or_default();
                respond(
                    200,
                    HLS_TYPE,
                    format!(
                        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nmedia.m3u8?expires={token}\n"
                    ),
                )
            } else {
                respond(403, "text/plain", "token expired")
            };
            async move { answer }
        }
    };
    let media = {
        let valid = valid.clone();
        move |Query(q): Query<HashMap<String, String>>| {
            let answer = if valid(&q) {
                let token = q.get("expires").cloned().unwrap_or_default();
                let last = live_seq();
                let first = last - 3;
                let mut body = format!(
                    "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
                );
                for n in first..=last {
                    body.push_str(&format!("#EXTINF:1.000,\nseg/{n}.ts?expires={token}\n"));
                }
                respond(200, HLS_TYPE, body)
            } else {
                respond(403, "text/plain", "token expired")
            };
            async move { answer }
        }
    };
    let seg = move |Path(file): Path<String>, Query(q): Query<HashMap<String, String>>| {
        let n = file.strip_suffix(".ts").and_then(|n| n.parse::<u64>().ok());
        let answer = match n {
            Some(n) if valid(&q) => respond(200, "video/mp2t", segment(n)),
            Some(_) => respond(403, "text/plain", "token expired"),
            None => respond(404, "text/plain", "no such segment"),
        };
        async move { answer }
    };
    let fake = fake
        .route(
            "/api/channels",
            get(|| async {
                axum::Json(serde_json::json!({ "items": [{ "id": "live", "title": "Live" }] }))
            }),
        )
        .route("/api/stream/live", get(resolve))
        .route("/hls/master.m3u8", get(master))
        .route("/hls/media.m3u8", get(media))
        .route("/hls/seg/{file}", get(seg))
        .start();
    (fake, counts)
}

async fn app_for(origin: &FakeUpstream) -> TestApp {
    TestApp::spawn(&format!(
        r#"
[[services]]
name = "Tokens"
kind = "json_api"
base_url = "{}/api"
[services.channels]
path = "channels"
list = "/items"
id = "/id"
name = "/title"
[services.stream]
path = "stream/{{channel_id}}"
url = "/url"
"#,
        origin.base()
    ))
    .await
}

/// Asserts that `seqs` (after the first) go up one by one: no gap, no repeat.
fn assert_consecutive(seqs: &[u64]) {
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "segments out of order: {seqs:?}");
    }
}

#[tokio::test]
async fn a_ts_viewer_keeps_playing_across_token_expiries() {
    let (origin, counts) = origin().await;
    let app = app_for(&origin).await;

    let resp = app.get("/api/stream/live.ts").await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let started = Instant::now();
    let mut bytes = Vec::new();
    // When each chunk arrived, since the start.
    let mut arrivals = Vec::new();
    while started.elapsed() < WATCH {
        let left = WATCH.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, body.next()).await {
            Ok(Some(chunk)) => {
                bytes.extend_from_slice(&chunk.expect("the .ts body keeps flowing"));
                arrivals.push(started.elapsed());
            }
            Ok(None) => panic!("the .ts stream ended after {:?}", started.elapsed()),
            Err(_) => break,
        }
    }
    drop(body);

    let seqs = markers(&bytes);
    assert!(seqs.len() >= 6, "too few segments in {WATCH:?}: {seqs:?}");
    assert_consecutive(&seqs);
    // Bytes kept coming until the end, not only before the first expiry.
    let last = arrivals.last().copied().unwrap_or_default();
    assert!(
        last > WATCH - Duration::from_secs(3),
        "nothing arrived after {last:?}"
    );
    assert!(
        counts.resolves.load(Ordering::SeqCst) >= 3,
        "the token was not refreshed: {} resolves",
        counts.resolves.load(Ordering::SeqCst)
    );
    assert_eq!(
        counts.refused.load(Ordering::SeqCst),
        0,
        "freesky used an expired token"
    );
}

#[tokio::test]
async fn an_hls_player_keeps_playing_across_token_expiries() {
    let (origin, counts) = origin().await;
    let app = app_for(&origin).await;

    let master = app.get_text_ok("/api/stream/live.m3u8").await;
    let link = playlist_uris(&master)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no variant link in {master}"));
    assert!(link.starts_with(&format!("{}/proxy/", app.base)), "{link}");

    let started = Instant::now();
    let mut got: Vec<u64> = Vec::new();
    while started.elapsed() < WATCH {
        let resp = tokio::time::timeout(HANG_GUARD, app.client.get(&link).send())
            .await
            .expect("playlist answered in time")
            .expect("playlist request");
        assert_eq!(
            resp.status(),
            200,
            "media playlist refused after {:?}",
            started.elapsed()
        );
        let body = resp.text().await.expect("playlist body");
        let first: u64 = body
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no media sequence in {body}"));
        assert!(!body.contains("#EXT-X-DISCONTINUITY"), "{body}");
        for (i, uri) in playlist_uris(&body).into_iter().enumerate() {
            let seq = first + i as u64;
            // Like a player: new segments only, starting near the live edge.
            if got.last().is_some_and(|&l| seq <= l) {
                continue;
            }
            let seg = app.client.get(&uri).send().await.expect("segment request");
            assert_eq!(seg.status(), 200, "segment {seq} refused: {uri}");
            let bytes = seg.bytes().await.expect("segment body");
            assert_eq!(markers(&bytes), [seq], "segment {seq} has other bytes");
            got.push(seq);
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }

    assert!(got.len() >= 8, "too few segments in {WATCH:?}: {got:?}");
    assert_consecutive(&got);
    assert!(
        counts.resolves.load(Ordering::SeqCst) >= 3,
        "the token was not refreshed: {} resolves",
        counts.resolves.load(Ordering::SeqCst)
    );
    assert_eq!(
        counts.refused.load(Ordering::SeqCst),
        0,
        "freesky used an expired token"
    );
}

/// Whether a playlist link's upstream token is due is judged by freesky's clock: moved
/// to a minute before an hour-long token runs out, the next request of the media
/// playlist link resolves the channel afresh, with no wait and no refused request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_due_by_the_clock_is_refreshed_at_the_next_playlist_request() {
    const HOUR: u64 = 3600;
    let (origin, counts) = origin_with(HOUR).await;
    let app = app_for(&origin).await;
    let id = app.channel_named("Live").await["id"]
        .as_str()
        .expect("channel id")
        .to_string();
    let master = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let media = playlist_uris(&master).remove(0);
    let resolves = || counts.resolves.load(Ordering::SeqCst);
    app.get_text_ok(&media).await;
    app.get_text_ok(&media).await;
    assert_eq!(resolves(), 1, "a fresh token is not refreshed");

    app.clock.advance(Duration::from_secs(HOUR - 60));
    let body = app.get_text_ok(&media).await;
    assert!(body.contains("#EXTINF"), "{body}");
    assert_eq!(resolves(), 2, "the due token was not refreshed");
    assert_eq!(counts.refused.load(Ordering::SeqCst), 0);
}
