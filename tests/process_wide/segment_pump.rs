//! Segment fetches that never end: the shared segment fetch behind `/proxy/...` stops
//! reading (and closes the upstream connection) when its last reader leaves, keeps no
//! more than a bounded window of an endless body, and ends at `[cache] segment_timeout`
//! even while a reader is still there.
//!
//! The memory figure is the process's peak (VmHWM), reset before it is measured; each
//! test runs alone (`common::alone`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use futures::StreamExt;

use crate::common::{media_playlist, playlist_uris, respond, FakeUpstream, TestApp, M3U_TYPE};

/// What a client may wait for the upstream connection to close. A bound on a wait,
/// not a speed assertion.
const CLOSE_BOUND: Duration = Duration::from_secs(5);
/// Growth of peak resident memory allowed while an endless segment is read and left.
const MEMORY_BOUND_MB: u64 = 200;

/// What the endless segment's upstream saw: bytes it sent, and whether the body it
/// was sending was dropped (hyper drops it when the connection closes).
#[derive(Default)]
struct Seen {
    sent: AtomicU64,
    closed: AtomicBool,
}

/// Sets `closed` when the response body is dropped.
struct OnDrop(Arc<Seen>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::SeqCst);
    }
}

/// An endless MPEG-TS-looking body of 64 KiB chunks. The short pause per chunk only
/// keeps a broken server's growth (and so this test's failure) within the machine.
fn endless(seen: Arc<Seen>, pause: Duration) -> Body {
    let chunk = Bytes::from(vec![0x47u8; 64 << 10]);
    let stream = futures::stream::unfold(OnDrop(seen), move |guard| {
        let chunk = chunk.clone();
        async move {
            tokio::time::sleep(pause).await;
            guard.0.sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            Some((Ok::<_, std::io::Error>(chunk), guard))
        }
    });
    Body::from_stream(stream)
}

/// An origin whose one segment never ends, a freesky with an m3u service listing it
/// (plus `extra` config), and the segment's proxy link.
async fn endless_segment(
    pause: Duration,
    extra: &str,
) -> (Arc<Seen>, FakeUpstream, FakeUpstream, TestApp, String) {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let origin = FakeUpstream::bind()
        .await
        .text(
            "/live/index.m3u8",
            crate::common::HLS_TYPE,
            media_playlist(&["endless.ts"]),
        )
        .route(
            "/live/endless.ts",
            get(move || {
                let s = s.clone();
                async move { respond(200, "video/mp2t", endless(s, pause)) }
            }),
        )
        .start();
    let list = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n#EXTINF:-1,Endless\n{}\n",
                origin.url("/live/index.m3u8")
            ),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "{extra}\n[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let id = app.channel_named("Endless").await["id"]
        .as_str()
        .expect("channel id")
        .to_string();
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let link = playlist_uris(&playlist).remove(0);
    (seen, origin, list, app, link)
}

/// Waits (bounded) until the upstream's body was dropped; false if it never was.
async fn closed_within(seen: &Seen, bound: Duration) -> bool {
    let until = tokio::time::Instant::now() + bound;
    while tokio::time::Instant::now() < until {
        if seen.closed.load(Ordering::SeqCst) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen.closed.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_segment_left_by_its_reader_is_closed_upstream_and_memory_stays_flat() {
    let _alone = crate::common::alone().await;
    let (seen, _origin, _list, app, link) = endless_segment(Duration::from_millis(1), "").await;
    crate::common::reset_vm_hwm();
    let before = crate::common::vm_hwm_kb();

    let resp = app.client.get(&link).send().await.expect("segment answers");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut read = 0usize;
    while read < 1 << 20 {
        match tokio::time::timeout(crate::common::HANG_GUARD, body.next()).await {
            Ok(Some(Ok(chunk))) => read += chunk.len(),
            other => panic!("the segment ended after {read} bytes: {other:?}"),
        }
    }
    // The client leaves.
    drop(body);

    let closed = closed_within(&seen, CLOSE_BOUND).await;
    let sent = seen.sent.load(Ordering::SeqCst);
    let growth_mb = crate::common::vm_hwm_kb().saturating_sub(before) >> 10;
    println!(
        "read {read} bytes; upstream sent {} MB, closed: {closed}; VmHWM +{growth_mb} MB",
        sent >> 20
    );
    assert!(
        closed,
        "the upstream connection was still open {CLOSE_BOUND:?} after the last reader left ({} MB sent)",
        sent >> 20
    );
    assert!(
        growth_mb < MEMORY_BOUND_MB,
        "VmHWM grew by {growth_mb} MB (bound {MEMORY_BOUND_MB} MB)"
    );
    // Nothing is read after the close.
    let after = seen.sent.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen.sent.load(Ordering::SeqCst), after);

    // The server still answers, and the segment can be fetched again from the start.
    let (s, _) = crate::common::json_of(app.get("/health").await).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_that_outlasts_segment_timeout_is_cut_off_while_read() {
    let _alone = crate::common::alone().await;
    // A slow endless segment (16 KiB/s or so), read by a client that stays.
    let (seen, _origin, _list, app, link) = endless_segment(
        Duration::from_millis(250),
        "[cache]\nsegment_timeout = \"1s\"\n",
    )
    .await;
    let resp = app.client.get(&link).send().await.expect("segment answers");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let ended = tokio::time::timeout(crate::common::HANG_GUARD, async {
        loop {
            match body.next().await {
                Some(Ok(_)) => continue,
                Some(Err(_)) => return "an error",
                None => return "the end",
            }
        }
    })
    .await
    .expect("the segment body must end at segment_timeout, not run on");
    println!("the body ended with {ended}");
    assert_eq!(
        ended, "an error",
        "a cut-off segment must not look complete"
    );
    assert!(
        closed_within(&seen, CLOSE_BOUND).await,
        "upstream still open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_of_an_endless_segment_holds_back_the_upstream_read() {
    let _alone = crate::common::alone().await;
    // Bodies over 1 MiB are not cached (8 MiB cache / 8), so past that the shared
    // fetch keeps only what its reader has not read yet.
    let (seen, _origin, _list, app, link) =
        endless_segment(Duration::from_millis(1), "[cache]\nsegment_cache_mb = 8\n").await;
    let resp = app.client.get(&link).send().await.expect("segment answers");
    let mut body = resp.bytes_stream();
    let mut read = 0usize;
    while read < 1 << 20 {
        match tokio::time::timeout(crate::common::HANG_GUARD, body.next()).await {
            Ok(Some(Ok(chunk))) => read += chunk.len(),
            other => panic!("the segment ended after {read} bytes: {other:?}"),
        }
    }
    // The client stops reading but stays. Wait (bounded) for the upstream read to
    // stop growing: it must pause once the window and the sockets are full.
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut last = seen.sent.load(Ordering::SeqCst);
    let mut still = 0;
    while still < 5 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = seen.sent.load(Ordering::SeqCst);
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    println!("upstream sent {} MB while the reader stalled", last >> 20);
    assert!(
        still >= 5 && last < 64 << 20,
        "the upstream read went on while the only reader stalled: {} MB sent",
        last >> 20
    );
    drop(body);
    assert!(
        closed_within(&seen, CLOSE_BOUND).await,
        "upstream still open"
    );
}
