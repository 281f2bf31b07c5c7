//! The HLS proxy engine (SPEC section 4, issue "part 2"): every URI of what an origin
//! sends comes back as a signed freesky link, N viewers cause one upstream fetch,
//! segment bytes stream as they arrive, and Range requests work.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use futures::StreamExt;
use tokio::sync::Notify;

use crate::common::{
    assert_api_error, live_playlist, media_playlist, playlist_uris, respond, FakeUpstream, TestApp,
    HANG_GUARD, HLS_TYPE, M3U_TYPE,
};

/// An m3u service "Origin" listing one channel "Live" whose stream URL is `stream_path`
/// on `origin`.
async fn app_for(origin: &FakeUpstream, stream_path: &str, extra: &str) -> (TestApp, FakeUpstream) {
    let list = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n#EXTINF:-1 tvg-id=\"Live.example\",Live\n{}\n",
                origin.url(stream_path)
            ),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "{extra}\n[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    (app, list)
}

fn assert_all_proxied(app: &TestApp, playlist: &str) -> Vec<String> {
    let uris = playlist_uris(playlist);
    assert!(!uris.is_empty(), "{playlist}");
    for u in &uris {
        assert!(
            u.starts_with(&format!("{}/proxy/", app.base)),
            "not a freesky link: {u}\n{playlist}"
        );
    }
    uris
}

#[tokio::test]
async fn every_uri_of_a_master_with_variants_and_an_audio_rendition_is_proxied() {
    let origin = FakeUpstream::bind().await;
    let abs = origin.url("/hls/hi/index.m3u8");
    let master = format!(
        "#EXTM3U\n\
#EXT-X-INDEPENDENT-SEGMENTS\n\
#EXT-X-SESSION-DATA:DATA-ID=\"com.example.title\",URI=\"meta/title.json\"\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"English\",DEFAULT=YES,URI=\"audio/en.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,AUDIO=\"aud\"\n\
lo/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=2400000,RESOLUTION=1280x720,AUDIO=\"aud\"\n\
{abs}\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,URI=\"lo/iframes.m3u8\"\n\
#EXT-X-FUTURE-TAG:KEEP=ME\n"
    );
    let media = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:5\n\
#EXT-X-KEY:METHOD=AES-128,URI=\"../keys/k1.bin\",IV=0x00000000000000000000000000000001\n\
#EXT-X-MAP:URI=\"init.mp4\"\n\
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T10:00:00.000Z\n\
#EXTINF:2.0,\nseg5.m4s\n\
#EXT-X-DISCONTINUITY\n\
#EXT-X-BYTERANGE:1000@0\n#EXTINF:2.0,\n/hls/lo/big.m4s\n";
    let origin = origin
        .text("/hls/master.m3u8", HLS_TYPE, master)
        .text("/hls/lo/index.m3u8", HLS_TYPE, media)
        .start();
    let (app, _list) = app_for(&origin, "/hls/master.m3u8", "").await;
    let id = app.channel_id("Live").await;

    let master_out = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let uris = assert_all_proxied(&app, &master_out);
    assert_eq!(uris.len(), 5, "{master_out}");
    // Everything that is not a URI is kept as it came.
    for keep in [
        "#EXT-X-INDEPENDENT-SEGMENTS",
        "#EXT-X-FUTURE-TAG:KEEP=ME",
        "BANDWIDTH=2400000,RESOLUTION=1280x720,AUDIO=\"aud\"",
        "DATA-ID=\"com.example.title\"",
    ] {
        assert!(master_out.contains(keep), "{keep} lost:\n{master_out}");
    }
    assert!(!master_out.contains(&origin.base()), "{master_out}");

    // The low variant (relative URI) is served through freesky, itself rewritten.
    let media_out = app.get_text_ok(&uris[2]).await;
    assert_eq!(origin.hits("/hls/lo/index.m3u8"), 1);
    let media_uris = assert_all_proxied(&app, &media_out);
    assert_eq!(media_uris.len(), 4, "key, map, two segments:\n{media_out}");
    for keep in [
        "#EXT-X-MEDIA-SEQUENCE:5",
        "#EXT-X-DISCONTINUITY",
        "#EXT-X-BYTERANGE:1000@0",
        "#EXT-X-PROGRAM-DATE-TIME:2026-11-25T10:00:00.000Z",
        "IV=0x00000000000000000000000000000001",
    ] {
        assert!(media_out.contains(keep), "{keep} lost:\n{media_out}");
    }
    // Resolved against the playlist's URL: the key one level up, the rest beside it.
    let _ = app.get(&media_uris[0]).await;
    let _ = app.get(&media_uris[1]).await;
    let _ = app.get(&media_uris[3]).await;
    let paths = origin.paths();
    for p in ["/hls/keys/k1.bin", "/hls/lo/init.mp4", "/hls/lo/big.m4s"] {
        assert!(paths.iter().any(|x| x == p), "{p} not requested: {paths:?}");
    }
}

/// 50 players open the same live channel at once: the origin sees one request for the
/// playlist and one for each segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_viewers_cause_one_upstream_fetch_each() {
    const VIEWERS: usize = 50;
    let segment: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let seg_body = bytes::Bytes::from(segment.clone());
    let live = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:100\n\
#EXTINF:10.0,\ns100.ts\n#EXTINF:10.0,\ns101.ts\n";
    let origin = FakeUpstream::bind()
        .await
        .route(
            "/live/index.m3u8",
            get(move || async move {
                // Slow enough that every viewer asks while the first fetch runs.
                tokio::time::sleep(Duration::from_millis(300)).await;
                respond(200, HLS_TYPE, live)
            }),
        )
        .route(
            "/live/{seg}",
            get(move || {
                let body = seg_body.clone();
                async move { respond(200, "video/mp2t", trickled(&body, 50_000, 50)) }
            }),
        )
        .start();
    let (app, _list) = app_for(
        &origin,
        "/live/index.m3u8",
        "[cache]\nplaylist_ttl = \"5s\"\n",
    )
    .await;
    let id = app.channel_id("Live").await;
    let app = Arc::new(app);

    let playlists = futures::future::join_all((0..VIEWERS).map(|_| {
        let app = app.clone();
        let id = id.clone();
        async move { app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await }
    }))
    .await;
    assert_eq!(origin.hits("/live/index.m3u8"), 1, "{:?}", origin.paths());

    // Each viewer fetches both segments through its own (differently sealed) links.
    let fetched = futures::future::join_all(playlists.iter().flat_map(|p| {
        let uris = assert_all_proxied(&app, p);
        assert_eq!(uris.len(), 2);
        uris.into_iter().map(|u| {
            let app = app.clone();
            async move {
                let resp = app.get(&u).await;
                assert_eq!(resp.status(), 200, "{u}");
                assert_eq!(resp.headers()["content-type"], "video/mp2t");
                resp.bytes().await.expect("segment body").to_vec()
            }
        })
    }))
    .await;
    assert_eq!(fetched.len(), VIEWERS * 2);
    for body in &fetched {
        assert!(
            body == &segment,
            "a viewer got {} bytes, not the segment",
            body.len()
        );
    }
    assert_eq!(origin.hits("/live/s100.ts"), 1, "{:?}", origin.paths());
    assert_eq!(origin.hits("/live/s101.ts"), 1, "{:?}", origin.paths());
}

/// A cache miss streams: the first bytes reach the player while the origin is still
/// sending the rest.
#[tokio::test]
async fn segment_bytes_reach_the_player_before_the_origin_has_finished() {
    let release = Arc::new(Notify::new());
    let origin = FakeUpstream::bind().await;
    let gate = release.clone();
    let origin = origin
        .text("/s/index.m3u8", HLS_TYPE, media_playlist(&["a.ts"]))
        .route(
            "/s/a.ts",
            get(move || {
                let gate = gate.clone();
                async move {
                    let first = futures::stream::once(async {
                        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"FIRST-"))
                    });
                    let rest = futures::stream::once(async move {
                        gate.notified().await;
                        Ok(bytes::Bytes::from_static(b"REST"))
                    });
                    respond(200, "video/mp2t", Body::from_stream(first.chain(rest)))
                }
            }),
        )
        .start();
    let (app, _list) = app_for(&origin, "/s/index.m3u8", "").await;
    let id = app.channel_id("Live").await;
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let seg = assert_all_proxied(&app, &playlist).remove(0);

    let resp = app.get(&seg).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    // The origin holds back the rest until we have seen the first chunk: if freesky
    // waited for the whole body this would never arrive (and the guard fails the test).
    let first = tokio::time::timeout(HANG_GUARD, body.next())
        .await
        .expect("the first bytes did not arrive while the origin was still sending")
        .expect("a chunk")
        .expect("chunk ok");
    assert_eq!(&first[..], b"FIRST-");
    release.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = tokio::time::timeout(HANG_GUARD, body.next())
        .await
        .expect("rest")
    {
        rest.extend_from_slice(&chunk.expect("chunk ok"));
    }
    assert_eq!(rest, b"REST");
}

/// A channel of one 1,000-byte segment from an origin that honours ranges: the bytes,
/// the origin, the app, its list, and the segment's proxy link.
async fn one_ranged_segment() -> (Vec<u8>, FakeUpstream, TestApp, FakeUpstream, String) {
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    let served = bytes.clone();
    let origin = FakeUpstream::bind()
        .await
        .text("/r/index.m3u8", HLS_TYPE, media_playlist(&["r.ts"]))
        .route(
            "/r/r.ts",
            get(move |h: axum::http::HeaderMap| {
                let all = served.clone();
                async move { ranged_origin(&h, &all) }
            }),
        )
        .start();
    let (app, _list) = app_for(&origin, "/r/index.m3u8", "").await;
    let id = app.channel_id("Live").await;
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let seg = assert_all_proxied(&app, &playlist).remove(0);
    (bytes, origin, app, _list, seg)
}

#[tokio::test]
async fn range_and_head_requests_on_a_segment() {
    let (bytes, origin, app, _list, seg) = one_ranged_segment().await;

    let ranged = |range: &'static str| {
        let req = app.client.get(&seg).header("range", range);
        async move { req.send().await.expect("range request") }
    };
    // A range of an uncached segment goes to the origin as a range.
    let resp = ranged("bytes=10-19").await;
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["content-range"], "bytes 10-19/1000");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), bytes[10..20].to_vec());
    assert_eq!(
        origin.requests_to("/r/r.ts")[0].header("range"),
        Some("bytes=10-19")
    );
    // A range past its end is the origin's 416, passed on with the length it gave.
    let past = ranged("bytes=5000-5009").await;
    assert_eq!(past.status(), 416);
    assert_eq!(past.headers()["content-range"], "bytes */1000");

    // The whole segment, then ranges of it from the cache.
    let whole = app.get(&seg).await;
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["content-length"], "1000");
    // Deterministic segment links: a shared cache in front may keep them for segment_ttl.
    assert_eq!(whole.headers()["cache-control"], "public, max-age=120");
    assert_eq!(whole.bytes().await.unwrap().to_vec(), bytes);
    let hits = origin.hits("/r/r.ts");
    let resp = ranged("bytes=990-").await;
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["content-range"], "bytes 990-999/1000");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), bytes[990..].to_vec());
    let resp = ranged("bytes=-5").await;
    assert_eq!(resp.bytes().await.unwrap().to_vec(), bytes[995..].to_vec());
    let unsatisfiable = ranged("bytes=5000-").await;
    assert_eq!(unsatisfiable.status(), 416);
    assert!(unsatisfiable.headers().get("cache-control").is_none());
    // A range written backwards is invalid, so ignored: the whole segment (RFC 9110).
    let backwards = ranged("bytes=5-2").await;
    assert_eq!(backwards.status(), 200);
    assert_eq!(backwards.bytes().await.unwrap().len(), 1000);
    let head = app.client.head(&seg).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "1000");
    assert_eq!(head.headers()["content-type"], "video/mp2t");
    assert_eq!(origin.hits("/r/r.ts"), hits, "served from the cache");
}

/// A playlist's `#EXT-X-DEFINE` variables are substituted before its URIs are sealed
/// (a player cannot substitute inside a proxy link), and low-latency tags, content
/// steering and comments never reach the player.
#[tokio::test]
async fn defines_are_substituted_and_low_latency_and_steering_taken_out() {
    let playlist = "#EXTM3U\n#EXT-X-VERSION:11\n#EXT-X-TARGETDURATION:2\n\
        #EXT-X-DEFINE:NAME=\"p\",VALUE=\"s00\"\n#EXT-X-DEFINE:QUERYPARAM=\"tok\"\n\
        #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=3.0\n\
        #EXT-X-PART-INF:PART-TARGET=1.0\n# packaged at http://origin.internal/\n\
        #EXTINF:2.0,\n{$p}0.ts?t={$tok}\n\
        #EXT-X-PART:DURATION=1.0,URI=\"part1.ts\"\n\
        #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part2.ts\"\n";
    let origin = FakeUpstream::bind()
        .await
        .text("/d/index.m3u8", HLS_TYPE, playlist)
        .bytes("/d/s000.ts", "video/mp2t", b"SEGMENT".to_vec())
        .start();
    let (app, _list) = app_for(&origin, "/d/index.m3u8?tok=abc", "").await;
    let id = app.channel_id("Live").await;
    let out = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    for gone in ["DEFINE", "PART", "SERVER-CONTROL", "origin.internal", "{$"] {
        assert!(!out.contains(gone), "{gone}: {out}");
    }
    let seg = assert_all_proxied(&app, &out).remove(0);
    let resp = app.get(&seg).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), b"SEGMENT");
    let asked = origin.requests_to("/d/s000.ts");
    assert_eq!(asked.len(), 1, "{:?}", origin.paths());
}

/// ffmpeg, mpv and VLC ask every segment with `Range: bytes=0-`: that is the whole
/// segment, fetched once however many players ask.
#[tokio::test]
async fn players_asking_bytes_0_share_one_segment_fetch() {
    let (bytes, origin, app, _list, seg) = one_ranged_segment().await;
    let asks = (0..4).map(|_| {
        let req = app.client.get(&seg).header("range", "bytes=0-");
        async move {
            let resp = req.send().await.expect("range request");
            assert!([200, 206].contains(&resp.status().as_u16()), "{resp:?}");
            resp.bytes().await.unwrap().to_vec()
        }
    });
    for got in futures::future::join_all(asks).await {
        assert_eq!(got, bytes);
    }
    let resp = app
        .client
        .get(&seg)
        .header("range", "bytes=0-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap().to_vec(), bytes);
    assert_eq!(origin.hits("/r/r.ts"), 1, "{:?}", origin.paths());
}

/// A long media file listed as one segment (a VOD playlist's movie) is larger than a
/// cache entry: a player's `bytes=0-` request shares the fetch and is not cut off at
/// `segment_timeout` (it was, once such requests joined the shared fetch).
#[tokio::test]
async fn a_segment_larger_than_a_cache_entry_is_not_cut_off_at_the_segment_timeout() {
    let body: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
    let served = body.clone();
    let origin = FakeUpstream::bind()
        .await
        .text(
            "/v/index.m3u8",
            HLS_TYPE,
            "#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-TARGETDURATION:7200\n#EXTINF:7200,\nmovie.ts\n#EXT-X-ENDLIST\n",
        )
        .route(
            "/v/movie.ts",
            // 8 chunks, 150 ms apart: past the cache entry after 3, past the 1 s
            // segment timeout before the end.
            get(move || {
                let body = served.clone();
                async move { respond(200, "video/mp2t", trickled(&body, 50_000, 150)) }
            }),
        )
        .start();
    // A cache entry is an eighth of the segment cache: 128 KiB here.
    let (app, _list) = app_for(
        &origin,
        "/v/index.m3u8",
        "[cache]\nsegment_cache_mb = 1\nsegment_timeout = \"1s\"\n",
    )
    .await;
    let id = app.channel_id("Live").await;
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let seg = assert_all_proxied(&app, &playlist).remove(0);
    let resp = app
        .client
        .get(&seg)
        .header("range", "bytes=0-")
        .send()
        .await
        .unwrap();
    assert!([200, 206].contains(&resp.status().as_u16()), "{resp:?}");
    let got = resp.bytes().await.expect("the whole body, not cut off");
    assert_eq!(got.len(), body.len());
    assert_eq!(got.to_vec(), body);
}

/// Two viewers share the fetch of a long body (a movie listed as one segment); one
/// stops reading. Once it holds the whole window (4 MiB) while the other has read all
/// of it, it is left behind (its answer ends) and the other reads on at its own pace.
/// Before, the reading viewer waited for the stopped one for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_stops_reading_a_long_body_does_not_hold_back_the_other() {
    // Far more than the window and what loopback sockets buffer for the stopped one.
    let body: Vec<u8> = (0..48_000_000u32).map(|i| (i % 251) as u8).collect();
    let origin = FakeUpstream::bind()
        .await
        .text(
            "/v/index.m3u8",
            HLS_TYPE,
            "#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-TARGETDURATION:7200\n#EXTINF:7200,\nmovie.ts\n#EXT-X-ENDLIST\n",
        )
        .route("/v/movie.ts", {
            let body = body.clone();
            // A moment before answering: both viewers join the one fetch.
            get(move || {
                let body = body.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    respond(200, "video/mp2t", body)
                }
            })
        })
        .start();
    let (app, _list) = app_for(&origin, "/v/index.m3u8", "[cache]\nsegment_cache_mb = 1\n").await;
    let id = app.channel_id("Live").await;
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let seg = assert_all_proxied(&app, &playlist).remove(0);
    // Both open the body before either reads: one fetch.
    let (stopped, reading) = tokio::join!(app.get(&seg), app.get(&seg));
    assert_eq!(stopped.status(), 200);
    assert_eq!(reading.status(), 200);
    let got = tokio::time::timeout(HANG_GUARD, reading.bytes())
        .await
        .expect("the reading viewer got the whole body in time")
        .expect("the whole body");
    assert_eq!(got.len(), body.len());
    assert!(got.as_ref() == body.as_slice());
    assert_eq!(origin.hits("/v/movie.ts"), 1);
    // The stopped one, read at last, ends short of the body.
    let rest = tokio::time::timeout(HANG_GUARD, stopped.bytes()).await;
    assert!(
        !matches!(&rest, Ok(Ok(b)) if b.len() == body.len()),
        "the stopped viewer still got the whole body"
    );
}

#[tokio::test]
async fn bad_proxy_links_are_refused_without_any_upstream_request() {
    let origin = FakeUpstream::bind()
        .await
        .text("/x/index.m3u8", HLS_TYPE, media_playlist(&["x.ts"]))
        .bytes("/x/x.ts", "video/mp2t", b"X".to_vec())
        .start();
    let (app, _list) = app_for(
        &origin,
        "/x/index.m3u8",
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{state_dir}'\nlink_ttl = \"1s\"\n",
    )
    .await;
    let id = app.channel_id("Live").await;
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let seg = assert_all_proxied(&app, &playlist).remove(0);
    let before = origin.requests().len();

    let (prefix, rest) = seg.split_at(app.base.len() + "/proxy/".len());
    let (token, name) = rest.split_once('/').unwrap();
    // Tampered: one character of the token changed, or cut short.
    let mut t = token.as_bytes().to_vec();
    let i = t.len() / 3;
    t[i] = if t[i] == b'x' { b'y' } else { b'x' };
    let tampered = format!("{prefix}{}/{name}", String::from_utf8(t).unwrap());
    assert_api_error(app.get(&tampered).await, 403).await;
    let cut = format!("{prefix}{}/{name}", &token[..token.len() - 4]);
    assert_api_error(app.get(&cut).await, 403).await;
    // Unsigned: a plain URL where the token goes.
    let plain = format!("{prefix}{}/x.ts", urlencode(&origin.url("/x/x.ts")));
    assert_api_error(app.get(&plain).await, 403).await;
    // Expired: past link_ttl (1 s) and the expiry bucket it is rounded up to.
    app.clock.advance(Duration::from_secs(3));
    let body = assert_api_error(app.get(&seg).await, 403).await;
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    assert_eq!(origin.requests().len(), before, "{:?}", origin.paths());
}

/// A key, map or segment link whose upstream fails answers, as a stream open does, with
/// the try in `detail`: the service, the channel and the upstream's answer (redacted:
/// no query). A timeout is a 504.
#[tokio::test]
async fn a_failing_key_map_or_segment_link_says_why_in_detail() {
    let media = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n\
#EXT-X-KEY:METHOD=AES-128,URI=\"k.bin?token=SECRET\"\n\
#EXT-X-MAP:URI=\"init.mp4\"\n\
#EXTINF:2.0,\nseg0.m4s\n#EXTINF:2.0,\nslow.m4s\n#EXT-X-ENDLIST\n";
    let origin = FakeUpstream::bind()
        .await
        .text("/x/index.m3u8", HLS_TYPE, media)
        .status("/x/k.bin", 403)
        .status("/x/init.mp4", 404)
        .status("/x/seg0.m4s", 500)
        .hang("/x/slow.m4s")
        .start();
    let (app, _list) = app_for(
        &origin,
        "/x/index.m3u8",
        "[cache]\nsegment_timeout = \"1s\"\n",
    )
    .await;
    let id = app.channel_id("Live").await;
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let links = assert_all_proxied(&app, &playlist);
    assert_eq!(links.len(), 4, "{playlist}");
    for (link, status, says) in [
        (&links[0], 502, "HTTP 403 from "),
        (&links[1], 502, "HTTP 404 from "),
        (&links[2], 502, "HTTP 500 from "),
        (&links[3], 504, "timed out after 1s"),
    ] {
        let body = assert_api_error(app.get(link).await, status).await;
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{body:#}");
        let tried = body["detail"]
            .as_array()
            .unwrap_or_else(|| panic!("detail lists the try: {body:#}"));
        assert_eq!(tried.len(), 1, "{body:#}");
        assert_eq!(tried[0]["service"], "Origin", "{body:#}");
        assert_eq!(tried[0]["channel_id"], id.as_str(), "{body:#}");
        let why = tried[0]["error"].as_str().unwrap_or_default();
        assert!(why.contains(says), "{body:#}");
        assert!(!body.to_string().contains("SECRET"), "{body:#}");
    }
}

/// An origin that honours `Range: bytes=a-b` (only that form, enough here).
fn ranged_origin(h: &axum::http::HeaderMap, all: &[u8]) -> axum::response::Response {
    let range = h
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
    match range {
        Some((a, _)) if a >= all.len() => {
            let mut resp = respond(416, "text/plain", Vec::new());
            resp.headers_mut().insert(
                "content-range",
                format!("bytes */{}", all.len()).parse().unwrap(),
            );
            resp
        }
        Some((a, b)) => {
            let mut resp = respond(206, "video/mp2t", all[a..=b].to_vec());
            resp.headers_mut().insert(
                "content-range",
                format!("bytes {a}-{b}/{}", all.len()).parse().unwrap(),
            );
            resp
        }
        None => respond(200, "video/mp2t", all.to_vec()),
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Relative, absolute and redirected URIs all resolve against the right base and
/// reach the origin with the channel's headers.
#[tokio::test]
async fn redirected_playlists_resolve_relative_uris_against_the_final_url() {
    let origin = FakeUpstream::bind().await;
    let abs = origin.url("/cdn/abs.ts");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let origin = origin
        .route(
            "/start.m3u8",
            get(move || async move {
                counter.fetch_add(1, Ordering::SeqCst);
                (
                    axum::http::StatusCode::FOUND,
                    [(axum::http::header::LOCATION, "/cdn/edge/live.m3u8")],
                )
            }),
        )
        .text(
            "/cdn/edge/live.m3u8",
            HLS_TYPE,
            media_playlist(&["rel.ts", "../up.ts", abs.as_str()]),
        )
        .bytes("/cdn/edge/rel.ts", "video/mp2t", b"REL".to_vec())
        .bytes("/cdn/up.ts", "video/mp2t", b"UP".to_vec())
        .bytes("/cdn/abs.ts", "video/mp2t", b"ABS".to_vec())
        .start();
    let (app, _list) = app_for(&origin, "/start.m3u8", "").await;
    let id = app.channel_id("Live").await;
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let uris = assert_all_proxied(&app, &playlist);
    let mut got = Vec::new();
    for u in &uris {
        got.push(app.get(u).await.bytes().await.unwrap().to_vec());
    }
    assert_eq!(got, [b"REL".to_vec(), b"UP".to_vec(), b"ABS".to_vec()]);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// A source whose URL is plain MPEG-TS, not HLS: the playlist endpoint redirects to a
/// signed pass-through link, and the `.ts` endpoint relays it.
#[tokio::test]
async fn a_plain_mpeg_ts_source_is_passed_through() {
    let bytes: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let origin = FakeUpstream::bind()
        .await
        .require_header("user-agent", "TestPlayer/1.0")
        .bytes("/raw/stream.ts", "video/mp2t", bytes.clone())
        .start();
    let list = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!(
                // Headers that frame or route a request are not a list's to set.
                "#EXTM3U\n#EXTINF:-1,Raw\n{}|User-Agent=TestPlayer/1.0&Host=evil.example\
                 &Content-Length=5&Accept-Encoding=br&Connection=upgrade\n",
                origin.url("/raw/stream.ts")
            ),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let id = app.channel_id("Raw").await;
    let resp = app.get(&format!("/api/stream/{id}.m3u8")).await;
    assert_eq!(resp.status(), 307);
    // Its first bytes said it is not MPEG-TS: nothing more was opened to find out (a
    // provider that allows one connection would refuse the player's).
    assert_eq!(origin.hits("/raw/stream.ts"), 1);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!("{}/proxy/", app.base)),
        "{location}"
    );
    assert!(
        !location.contains("raw"),
        "the upstream path leaked: {location}"
    );
    let through = app.get(&location).await;
    assert_eq!(through.status(), 200);
    assert_eq!(through.headers()["content-type"], "video/mp2t");
    assert_eq!(through.bytes().await.unwrap().to_vec(), bytes);

    let ts = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(ts.status(), 200);
    assert_eq!(ts.bytes().await.unwrap().to_vec(), bytes);
    let host = origin.base().trim_start_matches("http://").to_string();
    for r in origin.requests() {
        assert_eq!(r.header("user-agent"), Some("TestPlayer/1.0"), "{}", r.path);
        assert_eq!(r.header("host"), Some(host.as_str()), "{}", r.path);
        assert_eq!(r.header("content-length"), None, "{}", r.path);
        assert_ne!(r.header("accept-encoding"), Some("br"), "{}", r.path);
        assert_ne!(r.header("connection"), Some("upgrade"), "{}", r.path);
    }
}

/// MPEG-TS served with a text type (`python3 -m http.server` calls `.ts`
/// `text/vnd.trolltech.linguist`) is told by its bytes and passed through, not refused
/// as "not an HLS playlist"; text that is neither is refused saying what it looks like
/// (an HTML page under a playlist type is called one).
#[tokio::test]
async fn mpeg_ts_with_a_text_type_is_still_passed_through() {
    let mut bytes = Vec::new();
    for i in 0..300u32 {
        let mut packet = vec![0u8; 188];
        packet[0] = 0x47;
        packet[1] = 0x1f; // PID 0x1fff: null packets, nothing to carry on
        packet[2] = 0xff;
        packet[3] = 0x10;
        packet[4] = (i % 256) as u8;
        bytes.extend_from_slice(&packet);
    }
    let origin = FakeUpstream::bind()
        .await
        .bytes(
            "/raw/stream.ts",
            "text/vnd.trolltech.linguist",
            bytes.clone(),
        )
        .bytes(
            "/raw/notes.txt",
            "text/plain",
            b"Good morning, this is not a stream".to_vec(),
        )
        .bytes(
            "/raw/page.m3u8",
            "application/vnd.apple.mpegurl",
            b"\n<!DOCTYPE html><html><body>Sign in</body></html>".to_vec(),
        )
        .bytes(
            "/raw/bare.m3u8",
            "application/vnd.apple.mpegurl",
            b"\xef\xbb\xbf#EXTM3U\n".to_vec(),
        )
        .start();
    let list = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n#EXTINF:-1,Raw\n{}\n#EXTINF:-1,Text\n{}\n#EXTINF:-1,Page\n{}\n#EXTINF:-1,Bare\n{}\n",
                origin.url("/raw/stream.ts"),
                origin.url("/raw/notes.txt"),
                origin.url("/raw/page.m3u8"),
                origin.url("/raw/bare.m3u8")
            ),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let id = |name: &'static str| {
        let app = &app;
        async move { app.channel_id(name).await }
    };
    let resp = app
        .get(&format!("/api/stream/{}.m3u8", id("Raw").await))
        .await;
    assert_eq!(resp.status(), 307);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let through = app.get(&location).await;
    assert_eq!(through.status(), 200);
    assert_eq!(through.bytes().await.unwrap().to_vec(), bytes);
    // As `.ts`, the file whole (then again: a closed MPEG-TS stream is opened again).
    let mut ts = app
        .get(&format!("/api/stream/{}.ts", id("Raw").await))
        .await;
    assert_eq!(ts.status(), 200);
    let mut got = Vec::new();
    while got.len() < bytes.len() {
        match ts.chunk().await.unwrap() {
            Some(c) => got.extend_from_slice(&c),
            None => break,
        }
    }
    drop(ts);
    assert!(
        got.len() >= bytes.len(),
        "{} of {} bytes",
        got.len(),
        bytes.len()
    );
    assert_eq!(&got[..bytes.len()], &bytes[..]);
    // What is neither a playlist nor media is still refused, saying what it looks like:
    // text, an HTML page under a playlist's type (a login or error page), a bare
    // `#EXTM3U` (an offline channel's answer).
    for (name, says) in [
        (
            "Text",
            "answered a body that does not start with #EXTM3U (typed `text/plain`), not an HLS playlist",
        ),
        (
            "Page",
            "answered an HTML page (typed `application/vnd.apple.mpegurl`)",
        ),
        ("Bare", "answered an M3U without HLS tags"),
    ] {
        let resp = app
            .get(&format!("/api/stream/{}.m3u8", id(name).await))
            .await;
        assert_eq!(resp.status(), 502, "{name}");
        let body = resp.text().await.unwrap();
        assert!(body.contains(says), "{name}: {body}");
    }
}

/// A playlist served with a media type (RFC 8216 lets HLS be `audio/mpegurl`; static
/// servers call `.m3u` that, and some call anything `application/octet-stream`) is told
/// by its first bytes and rewritten, not passed through as media.
#[tokio::test]
async fn a_playlist_with_a_media_type_is_still_rewritten() {
    let types = [
        "audio/mpegurl",
        "audio/x-mpegurl",
        "application/octet-stream",
    ];
    let mut origin = FakeUpstream::bind().await;
    for (i, t) in types.iter().enumerate() {
        origin = origin.text(
            &format!("/p{i}/index.m3u8"),
            t,
            format!("\u{feff}\n{}", live_playlist(&["s1.ts", "s2.ts"])),
        );
    }
    let origin = origin.start();
    let mut list = String::from("#EXTM3U\n");
    for i in 0..types.len() {
        list.push_str(&format!(
            "#EXTINF:-1,Typed {i}\n{}\n",
            origin.url(&format!("/p{i}/index.m3u8"))
        ));
    }
    let list = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, list)
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    for (i, t) in types.iter().enumerate() {
        let id = app.channel_id(&format!("Typed {i}")).await;
        let resp = app.get(&format!("/api/stream/{id}.m3u8")).await;
        assert_eq!(resp.status(), 200, "{t}");
        let body = resp.text().await.unwrap();
        let uris = playlist_uris(&body);
        assert_eq!(uris.len(), 2, "{t}: {body}");
        assert!(uris.iter().all(|u| u.contains("/proxy/")), "{t}: {body}");
        assert!(!body.contains(&origin.url("")), "{t}: {body}");
    }
}

/// `bytes` as a body of `chunk`-byte chunks, each sent `ms` milliseconds after the last.
fn trickled(bytes: &[u8], chunk: usize, ms: u64) -> Body {
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = bytes
        .chunks(chunk)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(futures::stream::iter(chunks).then(move |c| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        c
    }))
}

/// The headers of a proxied body that keep a browser from running it.
fn assert_passive(resp: &reqwest::Response, what: &str) {
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(
        h("content-security-policy"),
        "sandbox; default-src 'none'",
        "{what}"
    );
}

#[tokio::test]
async fn active_content_from_an_upstream_is_served_as_media_that_cannot_run() {
    const HTML: &str = "<!doctype html><script>fetch('/api/services')</script>";
    const SVG: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(1)\"/>";
    let playlist = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n\
#EXT-X-KEY:METHOD=AES-128,URI=\"key.html\"\n\
#EXTINF:2.0,\npage.ts\n#EXTINF:2.0,\npicture.ts\n#EXTINF:2.0,\nfine.m4s\n#EXT-X-ENDLIST\n";
    let origin = FakeUpstream::bind()
        .await
        .text("/a/index.m3u8", HLS_TYPE, playlist)
        .text("/a/page.ts", "text/html; charset=utf-8", HTML)
        .text("/a/picture.ts", "image/svg+xml", SVG)
        .text("/a/key.html", "text/html", HTML)
        .bytes("/a/fine.m4s", "video/mp4", b"fMP4".to_vec())
        .start();
    let (app, _list) = app_for(&origin, "/a/index.m3u8", "").await;
    let id = app.channel_id("Live").await;
    let resp = app.get(&format!("/api/stream/{id}.m3u8")).await;
    assert_eq!(resp.status(), 200);
    assert_passive(&resp, "the playlist");
    let playlist = resp.text().await.unwrap();
    let uris = assert_all_proxied(&app, &playlist);
    let [key, page, picture, fine] = &uris[..] else {
        panic!("four links expected: {uris:?}");
    };
    let expected = [
        (key, "application/octet-stream", HTML),
        (page, "video/mp2t", HTML),
        (picture, "video/mp2t", SVG),
        (fine, "video/mp4", "fMP4"),
    ];
    // Twice: the first answer streams from the upstream, the second from the cache.
    for round in ["streamed", "cached"] {
        for (link, ctype, body) in expected {
            let resp = app.get(link).await;
            assert_eq!(resp.status(), 200, "{link}");
            let got = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            assert_eq!(got, ctype, "{round} {link}");
            assert_passive(&resp, link);
            // The bytes themselves pass untouched: only how a browser treats them changes.
            assert_eq!(resp.text().await.unwrap(), body);
        }
    }
    // A byte range of a cached segment too.
    let resp = app
        .client
        .get(page)
        .header("range", "bytes=0-4")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_passive(&resp, "a range");
    assert_eq!(resp.headers()["content-type"], "video/mp2t");
}

#[tokio::test]
async fn every_path_under_proxy_that_is_not_a_sealed_link_is_403_without_an_upstream_request() {
    let origin = FakeUpstream::bind()
        .await
        .text("/x/index.m3u8", HLS_TYPE, media_playlist(&["x.ts"]))
        .bytes("/x/x.ts", "video/mp2t", b"X".to_vec())
        .start();
    let (app, _list) = app_for(&origin, "/x/index.m3u8", "").await;
    let id = app.channel_id("Live").await;
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let seg = assert_all_proxied(&app, &playlist).remove(0);
    let link = seg.strip_prefix(&app.base).unwrap().to_string();
    let before = origin.requests().len();
    let parts: Vec<&str> = link.trim_start_matches("/proxy/").split('/').collect();
    let [token, item, name] = parts[..] else {
        panic!("three parts expected: {link}");
    };
    let target = urlencode(&origin.url("/x/x.ts"));
    let paths = [
        "/proxy".to_string(),
        "/proxy/".to_string(),
        format!("/proxy/{token}"),
        format!("/proxy/{token}/{item}"),
        format!("/proxy/{token}/{item}/"),
        format!("/proxy/{token}//{name}"),
        format!("/proxy/{token}/{item}/{name}/more"),
        format!("/proxy/{token}/{item}/a/b/c/d"),
        format!("/proxy/{item}/{token}/{name}"),
        format!("/proxy/!!!/{item}/{name}"),
        format!("/proxy/{token}/%%%/{name}"),
        format!("/proxy/{target}"),
        format!("/proxy/{target}/{target}/x.ts"),
    ];
    for path in &paths {
        let body = assert_api_error(app.get(path).await, 403).await;
        assert!(
            body["error"].as_str().unwrap().contains("proxy"),
            "{path}: {body}"
        );
    }
    assert_eq!(origin.requests().len(), before, "{:?}", origin.paths());
    // The link itself still plays.
    assert_eq!(app.get(&link).await.status(), 200);
}

/// The `#EXT-X-MEDIA-SEQUENCE` of a media playlist and its segment URIs, keyed by
/// media sequence number.
fn segments_by_sequence(playlist: &str) -> Vec<(u64, String)> {
    let first: u64 = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no media sequence:\n{playlist}"));
    playlist_uris(playlist)
        .into_iter()
        .enumerate()
        .map(|(i, uri)| (first + i as u64, uri))
        .collect()
}

#[tokio::test]
async fn a_segment_keeps_its_link_across_reloads_of_a_live_playlist() {
    // hls.js (from 1.6 on) refuses a reload that gives a media sequence number another
    // URI; the demo's media playlist slides one segment every 2 s.
    let app = TestApp::spawn(
        "[cache]\nplaylist_ttl = \"500ms\"\n\n[[services]]\nname = \"Demo\"\nkind = \"demo\"\n",
    )
    .await;
    let master = app.get_text_ok("/api/stream/demo.m3u8").await;
    let variant = assert_all_proxied(&app, &master).remove(0);
    let media = |app: &TestApp, url: String| {
        let client = app.client.clone();
        async move {
            let resp = client.get(&url).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{url}");
            resp.text().await.unwrap()
        }
    };
    let first = media(&app, variant.clone()).await;
    assert_all_proxied(&app, &first);
    let first = segments_by_sequence(&first);
    let newest = first.last().unwrap().0;

    // Reload until the window has slid (bounded: the demo slides every 2 s).
    let second = crate::common::eventually_within(
        Duration::from_secs(15),
        "the demo playlist to slide",
        || async {
            let again = app.get_text_ok("/api/stream/demo.m3u8").await;
            assert_eq!(
                assert_all_proxied(&app, &again),
                std::slice::from_ref(&variant),
                "the variant link changed"
            );
            let second = segments_by_sequence(&media(&app, variant.clone()).await);
            match second.last() {
                Some((seq, _)) if *seq > newest => Ok(second),
                last => Err(format!("newest segment {last:?}")),
            }
        },
    )
    .await;
    let mut shared = 0;
    for (seq, uri) in &second {
        if let Some((_, before)) = first.iter().find(|(s, _)| s == seq) {
            assert_eq!(uri, before, "segment {seq} changed its link across reloads");
            shared += 1;
        }
    }
    assert!(
        shared > 0,
        "no segment in both renders: {first:?} {second:?}"
    );
}

/// HLS failover into a master: a player holds the variant link of source A (a master
/// of one variant) and keeps reloading it; once A has failed `failover_after` times,
/// the link is answered from source B, whose master lists first a higher variant whose
/// audio is a separate `EXT-X-MEDIA` rendition (`hi`) and then one with its audio
/// muxed in (`lo`). The player, following that one media playlist, gets `lo`'s
/// segments (`hi`'s alone would play silent: nothing fetches the audio rendition).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_into_a_master_follows_the_variant_with_its_audio_muxed_in() {
    let down = Arc::new(AtomicBool::new(false));
    let flag = down.clone();
    let a = FakeUpstream::bind()
        .await
        .text(
            "/a/master.m3u8",
            HLS_TYPE,
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000000\nlive.m3u8\n",
        )
        .route(
            "/a/live.m3u8",
            get(move || {
                let failing = flag.load(Ordering::SeqCst);
                async move {
                    if failing {
                        respond(500, "text/plain", "down")
                    } else {
                        respond(200, HLS_TYPE, live_playlist(&["a0.ts", "a1.ts", "a2.ts"]))
                    }
                }
            }),
        )
        .route(
            "/a/{seg}",
            get(
                |axum::extract::Path(seg): axum::extract::Path<String>| async move {
                    respond(200, "video/mp2t", format!("<a {seg}>"))
                },
            ),
        )
        .start();
    let mut b = FakeUpstream::bind().await.text(
        "/b/master.m3u8",
        HLS_TYPE,
        "#EXTM3U\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"English\",DEFAULT=YES,URI=\"audio/index.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=5000000,CODECS=\"avc1.64001f,mp4a.40.2\",AUDIO=\"aud\"\nhi/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.42e01e,mp4a.40.2\"\nlo/index.m3u8\n",
    );
    for v in ["hi", "lo", "audio"] {
        b = b.text(
            &format!("/b/{v}/index.m3u8"),
            HLS_TYPE,
            live_playlist(&[&format!("{v}0.ts"), &format!("{v}1.ts")]),
        );
    }
    let b = b
        .route(
            "/b/{v}/{seg}",
            get(
                |axum::extract::Path((v, seg)): axum::extract::Path<(String, String)>| async move {
                    respond(200, "video/mp2t", format!("<{v} {seg}>"))
                },
            ),
        )
        .start();
    let (app, _lists) = failing_over(a.url("/a/master.m3u8"), b.url("/b/master.m3u8")).await;
    let id = app.channel_id("Live").await;

    let master = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let variant = assert_all_proxied(&app, &master).remove(0);
    let before = app.get_text_ok(&variant).await;
    let first = assert_all_proxied(&app, &before).remove(0);
    assert_eq!(app.get_text_ok(&first).await, "<a a0.ts>");
    assert_eq!(b.requests().len(), 0, "{:?}", b.paths());

    // A goes down; the player keeps reloading its variant link until it is answered
    // from B (the first failed reloads are the player's errors).
    down.store(true, Ordering::SeqCst);
    let switched = crate::common::eventually("the variant link to fail over to B", || async {
        let resp = app.get(&variant).await;
        let status = resp.status();
        let body = resp.text().await.unwrap();
        if status == 200 && body.contains("#EXT-X-DISCONTINUITY") {
            Ok(body)
        } else {
            Err(format!("{status}: {body}"))
        }
    })
    .await;
    assert!(
        b.hits("/b/lo/index.m3u8") >= 1 && b.hits("/b/hi/index.m3u8") == 0,
        "the switched link follows B's variant with muxed audio (lo), not hi: {:?}",
        b.paths()
    );
    // Its segments are lo's.
    for segment in assert_all_proxied(&app, &switched) {
        let got = app.get_text_ok(&segment).await;
        assert!(got.starts_with("<lo lo"), "{got}:\n{switched}");
    }
}

/// Failover when the channel's stream URL is itself a media playlist (the common M3U
/// entry): the player reloads `/api/stream/{id}.m3u8` itself. Source A's playlist
/// loads but each of its segments fails; once `failover_after` have, the reload is
/// answered from source B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_playlist_whose_segments_fail_falls_back_on_the_next_reload() {
    let up = Arc::new(AtomicBool::new(false));
    let a_up = up.clone();
    let a = FakeUpstream::bind()
        .await
        .text(
            "/a/live.m3u8",
            HLS_TYPE,
            live_playlist(&["a0.ts", "a1.ts"]).replace("SEQUENCE:0", "SEQUENCE:1000"),
        )
        .route("/a/{seg}", segments_while(a_up))
        .start();
    let b = source_b().await;
    let (app, _lists) = failing_over(a.url("/a/live.m3u8"), b.url("/b/live.m3u8")).await;
    let id = app.channel_id("Live").await;
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    assert!(
        playlist.contains("#EXT-X-MEDIA-SEQUENCE:1000\n"),
        "{playlist}"
    );
    assert!(!playlist.contains("#EXT-X-DISCONTINUITY"), "{playlist}");
    let segments = assert_all_proxied(&app, &playlist);
    assert_eq!(segments.len(), 2, "{playlist}");
    for s in &segments {
        let status = app.get(s).await.status();
        assert!(status.is_server_error(), "{s}: {status}");
    }
    assert_eq!(b.requests().len(), 0, "{:?}", b.paths());
    // The source that answers a reload, by its first segment, and where the reload
    // numbers it: each switch goes on where the player stopped (A listed 1000 and
    // 1001), after a discontinuity, however the new source numbers its own.
    let reload = || async {
        let reloaded = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
        let segments = assert_all_proxied(&app, &reloaded);
        let first = app.get_text_ok(&segments[0]).await;
        let seq = reloaded
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .map(str::to_string);
        let before_first = reloaded.contains("#EXT-X-DISCONTINUITY\n#EXTINF:2.0,\n");
        // Never lower than the last answer's (HLS players order timelines by it).
        let dseq = reloaded
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:"))
            .map_or(0, |n| n.parse::<u64>().unwrap());
        (first, seq, before_first, dseq)
    };
    let on_b = ("<b b0.ts>".to_string(), Some("1002".to_string()), true, 0);
    assert_eq!(reload().await, on_b);
    // A recovers. Reloaded within the minute, the channel stays on B (its reloads do
    // not keep A skipped for ever); a minute on, A is tried again.
    up.store(true, Ordering::SeqCst);
    assert_eq!(reload().await, on_b);
    app.clock
        .advance(freesky::streams::failover::RETRY_SKIPPED + Duration::from_secs(1));
    // B's answer carried one discontinuity, which has left the window: A's counts it.
    assert_eq!(
        reload().await,
        ("<a>".to_string(), Some("1004".to_string()), true, 1)
    );
}

/// A service's streams count in its status (review 62 #6): segments and playlists
/// served or failed through freesky, with the last failure's reason and time. They
/// count apart from its calls: one channel's dead stream leaves the success rate and
/// the circuit (which would make fallback skip the service's other channels) alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_stream_failures_show_in_its_status() {
    let a = FakeUpstream::bind()
        .await
        .text("/a/live.m3u8", HLS_TYPE, live_playlist(&["a0.ts", "a1.ts"]))
        .route("/a/{seg}", segments_while(Arc::new(AtomicBool::new(false))))
        .start();
    let b = source_b().await;
    let (app, _lists) = failing_over(a.url("/a/live.m3u8"), b.url("/b/live.m3u8")).await;
    let id = app.channel_id("Live").await;
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let calls = app.service_status("A").await;
    assert_eq!(calls["stream_failures"], 0, "{calls:#}");
    assert!(calls["last_stream_error"].is_null(), "{calls:#}");
    for s in assert_all_proxied(&app, &playlist) {
        let status = app.get(&s).await.status();
        assert!(status.is_server_error(), "{s}: {status}");
    }
    let a_now = app.service_status("A").await;
    assert_eq!(a_now["stream_failures"], 2, "its two segments: {a_now:#}");
    let why = a_now["last_stream_error"].as_str().unwrap_or_default();
    assert!(why.contains("403"), "{a_now:#}");
    assert!(a_now["last_stream_error_at"].is_string(), "{a_now:#}");
    for field in ["successes", "failures", "consecutive_failures", "circuit"] {
        assert_eq!(a_now[field], calls[field], "{field}: {a_now:#}");
    }
    // The reload is answered from B: its playlist and segment count as B's.
    let reloaded = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let segments = assert_all_proxied(&app, &reloaded);
    assert_eq!(app.get_text_ok(&segments[0]).await, "<b b0.ts>");
    let b_now = app.service_status("B").await;
    assert!(b_now["stream_successes"].as_u64() >= Some(1), "{b_now:#}");
    assert_eq!(b_now["stream_failures"], 0, "{b_now:#}");
    // The last failure stays when B plays, with its time; the dashboard's row says it.
    let at = a_now["last_stream_error_at"].as_str().unwrap();
    let a_later = app.service_status("A").await;
    assert_eq!(a_later["last_stream_error"], a_now["last_stream_error"]);
    let page = app.get_text_ok("/").await;
    assert!(
        page.contains(&format!("stream, {at}: ")),
        "no stream error on the dashboard"
    );
}

/// A segment whose upstream body is cut half-way counts as a failure of its service's
/// stream, once its end is known, not as the success its head looked like (review
/// 68 #2).
#[tokio::test]
async fn a_segment_cut_half_way_counts_as_a_stream_failure() {
    let origin = FakeUpstream::bind()
        .await
        .text("/live.m3u8", HLS_TYPE, live_playlist(&["cut.ts"]))
        .route(
            "/cut.ts",
            get(|| async {
                // A packet, then (once it has reached the player) the connection goes.
                let chunks = futures::stream::iter([true, false]).then(|first| async move {
                    if first {
                        Ok(vec![0x47; 188])
                    } else {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Err(std::io::Error::other("the origin went away"))
                    }
                });
                axum::response::Response::builder()
                    .header("content-type", "video/mp2t")
                    .body(Body::from_stream(chunks))
                    .unwrap()
            }),
        )
        .start();
    let (app, _list) = app_for(&origin, "/live.m3u8", "").await;
    let id = app.channel_id("Live").await;
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let segment = assert_all_proxied(&app, &playlist).remove(0);
    let got = app.get(&segment).await.bytes().await;
    assert!(got.is_err(), "the cut reaches the player: {got:?}");
    let status = crate::common::eventually("the cut segment in the status", || async {
        let status = app.service_status("Origin").await;
        if status["stream_failures"] == 1 {
            Ok(status)
        } else {
            Err(status)
        }
    })
    .await;
    assert_eq!(status["stream_successes"], 0, "{status:#}");
    assert!(status["last_stream_error"].is_string(), "{status:#}");
}

/// A source skipped for a minute on the channel URL (its segments failed) is still
/// tried, last, when every other source fails: the reload answers from it rather than
/// a 502 naming only the others (review 68).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_source_is_still_tried_last_before_a_502() {
    let a = FakeUpstream::bind()
        .await
        .text("/a/live.m3u8", HLS_TYPE, live_playlist(&["a0.ts", "a1.ts"]))
        .route("/a/{seg}", segments_while(Arc::new(AtomicBool::new(false))))
        .start();
    let b_up = Arc::new(AtomicBool::new(true));
    let b_flag = b_up.clone();
    let b = FakeUpstream::bind()
        .await
        .route(
            "/b/live.m3u8",
            get(move || {
                let up = b_flag.load(Ordering::SeqCst);
                async move {
                    if up {
                        respond(200, HLS_TYPE, live_playlist(&["b0.ts"]))
                    } else {
                        respond(500, "text/plain", "down")
                    }
                }
            }),
        )
        .route(
            "/b/{seg}",
            get(|| async { respond(200, "video/mp2t", "<b>") }),
        )
        .start();
    let (app, _lists) = failing_over(a.url("/a/live.m3u8"), b.url("/b/live.m3u8")).await;
    let id = app.channel_id("Live").await;
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    for s in assert_all_proxied(&app, &playlist) {
        assert!(app.get(&s).await.status().is_server_error());
    }
    let reloaded = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let segments = assert_all_proxied(&app, &reloaded);
    assert_eq!(app.get_text_ok(&segments[0]).await, "<b>", "A skipped");
    b_up.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await; // B's playlist out of the cache
    let resp = app.get(&format!("/api/stream/{id}.m3u8")).await;
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert_eq!(status, 200, "A, tried last: {body}");
    assert!(a.hits("/a/live.m3u8") >= 2, "{:?}", a.paths());
}

/// Viewers that see one failure of one segment together strike its source once: three
/// of them do not make a channel with `failover_after = 2` leave a source whose other
/// segments may play; a second segment failing does (review 68).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_sharing_one_failed_segment_strike_its_source_once() {
    let a = FakeUpstream::bind()
        .await
        .text("/a/live.m3u8", HLS_TYPE, live_playlist(&["a0.ts", "a1.ts"]))
        .route("/a/{seg}", segments_while(Arc::new(AtomicBool::new(false))))
        .start();
    let b = source_b().await;
    let (app, _lists) = failing_over(a.url("/a/live.m3u8"), b.url("/b/live.m3u8")).await;
    let id = app.channel_id("Live").await;
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let segments = assert_all_proxied(&app, &playlist);
    let app = &app;
    let seen =
        futures::future::join_all((0..3).map(|_| async { app.get(&segments[0]).await.status() }))
            .await;
    assert!(seen.iter().all(|s| s.is_server_error()), "{seen:?}");
    let first_of_reload = || async {
        let reloaded = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
        let segments = assert_all_proxied(app, &reloaded);
        let resp = app.get(&segments[0]).await;
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    assert_eq!(
        first_of_reload().await.0,
        502,
        "still A after one failure seen thrice"
    );
    assert!(app.get(&segments[1]).await.status().is_server_error());
    assert_eq!(
        first_of_reload().await,
        (200, "<b b0.ts>".to_string()),
        "B after a second failure"
    );
}

/// A player given a media playlist by the channel URL reloads that URL: when the next
/// source's stream URL is a master, the reload answers with its variant's media
/// playlist (a master there would end playback), numbered on from A's.
#[tokio::test]
async fn a_reloaded_media_playlist_falls_back_to_a_masters_variant() {
    let a = FakeUpstream::bind()
        .await
        .text("/a/live.m3u8", HLS_TYPE, live_playlist(&["a0.ts", "a1.ts"]))
        .route(
            "/a/{seg}",
            get(|| async { respond(403, "text/plain", "no") }),
        )
        .start();
    let b = FakeUpstream::bind()
        .await
        .text(
            "/b/master.m3u8",
            HLS_TYPE,
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\nv/live.m3u8\n",
        )
        .text(
            "/b/v/live.m3u8",
            HLS_TYPE,
            live_playlist(&["b0.ts", "b1.ts"]),
        )
        .route(
            "/b/v/{seg}",
            get(
                |axum::extract::Path(seg): axum::extract::Path<String>| async move {
                    respond(200, "video/mp2t", format!("<b {seg}>"))
                },
            ),
        )
        .start();
    let (app, _lists) = failing_over(a.url("/a/live.m3u8"), b.url("/b/master.m3u8")).await;
    let id = app.channel_id("Live").await;
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    for s in assert_all_proxied(&app, &playlist) {
        assert!(app.get(&s).await.status().is_server_error(), "{s}");
    }
    let reloaded = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    assert!(!reloaded.contains("#EXT-X-STREAM-INF"), "{reloaded}");
    assert!(reloaded.contains("#EXT-X-MEDIA-SEQUENCE:2\n"), "{reloaded}");
    assert!(reloaded.contains("#EXT-X-DISCONTINUITY\n"), "{reloaded}");
    let segments = assert_all_proxied(&app, &reloaded);
    assert_eq!(app.get_text_ok(&segments[0]).await, "<b b0.ts>");
}

/// An HLS player holding a variant link of service A when an admin disables A: its
/// next reload of that link answers from the channel's next source (numbered on,
/// after a discontinuity), not a 404 that ends playback.
#[tokio::test]
async fn a_playlist_link_of_a_service_disabled_meanwhile_goes_on_with_the_next_source() {
    let a = FakeUpstream::bind()
        .await
        .text(
            "/a/master.m3u8",
            HLS_TYPE,
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nv.m3u8\n",
        )
        .text(
            "/a/v.m3u8",
            HLS_TYPE,
            live_playlist(&["a0.ts", "a1.ts"]).replace("SEQUENCE:0", "SEQUENCE:500"),
        )
        .route(
            "/a/{seg}",
            get(|| async { respond(200, "video/mp2t", "<a>") }),
        )
        .start();
    let b = FakeUpstream::bind()
        .await
        .text("/b/live.m3u8", HLS_TYPE, live_playlist(&["b0.ts", "b1.ts"]))
        .route(
            "/b/{seg}",
            get(|| async { respond(200, "video/mp2t", "<b>") }),
        )
        .start();
    let (app, _lists) = failing_over(a.url("/a/master.m3u8"), b.url("/b/live.m3u8")).await;
    let id = app.channel_id("Live").await;
    let master = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let variant = assert_all_proxied(&app, &master).remove(0);
    let media = app.get_text_ok(&variant).await;
    let app = &app;
    let first = |media: String| async move {
        let segments = assert_all_proxied(app, &media);
        app.get_text_ok(&segments[0]).await
    };
    assert_eq!(first(media).await, "<a>");
    let resp = app
        .send_json(reqwest::Method::POST, "/api/services/A/disable", "", None)
        .await;
    assert_eq!(resp.status(), 200);
    let media = app.get_text_ok(&variant).await;
    // The playlist B answered the link with counts as B's stream (review 68 #1).
    let b_now = app.service_status("B").await;
    assert_eq!(b_now["stream_successes"], 1, "{b_now:#}");
    assert_eq!(first(media.clone()).await, "<b>", "{media}");
    assert!(media.contains("#EXT-X-MEDIA-SEQUENCE:502\n"), "{media}");
    assert!(media.contains("#EXT-X-DISCONTINUITY\n"), "{media}");
}

/// A playlist link already switched to B, when an admin then disables B: its next
/// reload fails over again (A works again), rather than answering from B, whose
/// segments are refused (diff review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_switched_to_a_service_disabled_meanwhile_fails_over_again() {
    let up = Arc::new(AtomicBool::new(false));
    let u = up.clone();
    let a = FakeUpstream::bind()
        .await
        .text(
            "/a/master.m3u8",
            HLS_TYPE,
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nv.m3u8\n",
        )
        .text("/a/v.m3u8", HLS_TYPE, live_playlist(&["a0.ts", "a1.ts"]))
        .route("/a/{seg}", segments_while(u))
        .start();
    let b = FakeUpstream::bind()
        .await
        .text("/b/live.m3u8", HLS_TYPE, live_playlist(&["b0.ts", "b1.ts"]))
        .route(
            "/b/{seg}",
            get(|| async { respond(200, "video/mp2t", "<b>") }),
        )
        .start();
    let (app, _lists) = failing_over(a.url("/a/master.m3u8"), b.url("/b/live.m3u8")).await;
    let id = app.channel_id("Live").await;
    let master = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let variant = assert_all_proxied(&app, &master).remove(0);
    let media = app.get_text_ok(&variant).await;
    for s in assert_all_proxied(&app, &media) {
        assert!(app.get(&s).await.status().is_server_error());
    }
    let media = app.get_text_ok(&variant).await;
    let segs = assert_all_proxied(&app, &media);
    assert_eq!(app.get_text_ok(&segs[0]).await, "<b>", "{media}");
    // A works again; B is disabled by an admin.
    up.store(true, Ordering::SeqCst);
    let resp = app
        .send_json(reqwest::Method::POST, "/api/services/B/disable", "", None)
        .await;
    assert_eq!(resp.status(), 200);
    let media = app.get_text_ok(&variant).await;
    let segs = assert_all_proxied(&app, &media);
    let status = app.get(&segs[segs.len() - 1]).await.status();
    assert!(
        status.is_success(),
        "the reloaded playlist's segments are refused: {status}\n{media}"
    );
}

/// After the channel URL answered a player a media playlist (a one-off fallback to B),
/// a new player (another address) of a channel whose primary A is a master gets the
/// master (its variants to choose from), while the first player, which reloads the URL
/// as a media playlist, gets A's variant numbered on (diff review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_player_gets_the_master_after_a_one_off_fallback() {
    let down = Arc::new(AtomicBool::new(true));
    let d = down.clone();
    let a = FakeUpstream::bind()
        .await
        .route(
            "/a/master.m3u8",
            get(move || {
                let down = d.load(Ordering::SeqCst);
                async move {
                    if down {
                        respond(404, "text/plain", "no")
                    } else {
                        respond(
                            200,
                            HLS_TYPE,
                            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nlo.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=3000000\nhi.m3u8\n",
                        )
                    }
                }
            }),
        )
        .text("/a/hi.m3u8", HLS_TYPE, live_playlist(&["h0.ts", "h1.ts"]))
        .text("/a/lo.m3u8", HLS_TYPE, live_playlist(&["l0.ts", "l1.ts"]))
        .start();
    let b = FakeUpstream::bind()
        .await
        .text("/b/live.m3u8", HLS_TYPE, live_playlist(&["b0.ts", "b1.ts"]))
        .start();
    let (app, _lists) = failing_over(a.url("/a/master.m3u8"), b.url("/b/live.m3u8")).await;
    let id = app.channel_id("Live").await;
    // A is down once: the channel URL answers B's media playlist.
    let first = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    assert!(!first.contains("#EXT-X-STREAM-INF"), "{first}");
    // A is back; a new viewer (a TV switched to the channel) asks for it.
    down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = crate::common::client_from(crate::common::OTHER_PLAYER)
        .get(app.url(&format!("/api/stream/{id}.m3u8")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        fresh.contains("#EXT-X-STREAM-INF"),
        "a new player lost the master (no ABR choice): {fresh}"
    );
    let reloaded = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    assert!(!reloaded.contains("#EXT-X-STREAM-INF"), "{reloaded}");
    assert!(reloaded.contains("#EXT-X-DISCONTINUITY\n"), "{reloaded}");
}

/// Segments answered `<a>` while `up`, else refused (403).
fn segments_while(up: Arc<AtomicBool>) -> axum::routing::MethodRouter {
    get(move || {
        let up = up.load(Ordering::SeqCst);
        async move {
            if up {
                respond(200, "video/mp2t", "<a>")
            } else {
                respond(403, "text/plain", "no")
            }
        }
    })
}

/// Source B of `failing_over`: a live playlist of `b0.ts`, `b1.ts`, each segment
/// answering `<b NAME>`.
async fn source_b() -> FakeUpstream {
    FakeUpstream::bind()
        .await
        .text("/b/live.m3u8", HLS_TYPE, live_playlist(&["b0.ts", "b1.ts"]))
        .route(
            "/b/{seg}",
            get(
                |axum::extract::Path(seg): axum::extract::Path<String>| async move {
                    respond(200, "video/mp2t", format!("<b {seg}>"))
                },
            ),
        )
        .start()
}

/// freesky with services A (priority 1) and B (priority 2), each listing channel "Live"
/// at one of `urls`, failing over after 2 strikes; and the lists' upstreams.
async fn failing_over(a: String, b: String) -> (TestApp, [FakeUpstream; 2]) {
    failing_over_with(a, b, "").await
}

/// `failing_over` with `a_keys` (TOML lines) added to service A.
async fn failing_over_with(a: String, b: String, a_keys: &str) -> (TestApp, [FakeUpstream; 2]) {
    let list = |url: String| async move {
        FakeUpstream::bind()
            .await
            .text(
                "/list.m3u",
                M3U_TYPE,
                format!("#EXTM3U\n#EXTINF:-1 tvg-id=\"Live.example\",Live\n{url}\n"),
            )
            .start()
    };
    let lists = [list(a).await, list(b).await];
    let app = TestApp::spawn(&format!(
        "[cache]\nplaylist_ttl = \"100ms\"\n\n[streams]\nfailover_after = 2\n\n\
         [[services]]\nname = \"A\"\nkind = \"m3u\"\npriority = 1\nurl = \"{}\"\n{a_keys}\n\
         [[services]]\nname = \"B\"\nkind = \"m3u\"\npriority = 2\nurl = \"{}\"\n",
        lists[0].url("/list.m3u"),
        lists[1].url("/list.m3u")
    ))
    .await;
    (app, lists)
}

/// A source whose playlist lists a URI longer than a proxy link carries cannot be
/// played through freesky: the channel opens with its next source, as it does for a
/// source that fails to answer, rather than a 502 naming only the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playlist_no_link_can_be_made_for_falls_back_to_the_next_source() {
    let long = format!("{}.ts", "x".repeat(10_000));
    let a = FakeUpstream::bind()
        .await
        .text("/a/live.m3u8", HLS_TYPE, live_playlist(&["a0.ts", &long]))
        .start();
    let b = source_b().await;
    let (app, _lists) = failing_over(a.url("/a/live.m3u8"), b.url("/b/live.m3u8")).await;
    let id = app.channel_id("Live").await;
    let resp = app.get(&format!("/api/stream/{id}.m3u8")).await;
    assert_eq!(resp.status(), 200);
    let playlist = resp.text().await.unwrap();
    let segment = playlist
        .lines()
        .find(|l| l.contains("/proxy/"))
        .unwrap_or_else(|| panic!("no link: {playlist}"));
    let body = app.get(segment).await.text().await.unwrap();
    assert!(body.starts_with("<b b"), "source B plays: {body}");
    assert!(
        a.paths().contains(&"/a/live.m3u8".to_string()),
        "A was tried first"
    );
}

/// One 188-byte packet of `pid` carrying `payload` (a PSI section after its pointer
/// field when `pusi`), padded with 0xFF.
fn ts_packet(pid: u16, pusi: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0xFF; 188];
    p[0] = 0x47;
    p[1] = ((pid >> 8) as u8 & 0x1F) | if pusi { 0x40 } else { 0 };
    p[2] = pid as u8;
    p[3] = 0x10;
    p[4..4 + payload.len()].copy_from_slice(payload);
    p
}

/// A channel whose MPEG-TS has a programme (H.264 video) but no time stamps cannot be
/// cut: its `.m3u8` is answered within the bounded wait (30 s after the first bytes)
/// with a clear 502, not left hanging until a vague timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_never_gives_a_segment_is_a_clear_502_within_the_bound() {
    // PAT -> PMT 0x1000 -> H.264 on 0x100; then PES starts without a PTS, forever.
    let pat = ts_packet(
        0,
        true,
        &[
            0, 0x00, 0xB0, 13, 0, 1, 0xC1, 0, 0, 0, 1, 0xF0, 0x00, 0, 0, 0, 0,
        ],
    );
    let pmt = ts_packet(
        0x1000,
        true,
        &[
            0, 0x02, 0xB0, 18, 0, 1, 0xC1, 0, 0, 0xE1, 0x00, 0xF0, 0, 0x1B, 0xE1, 0x00, 0xF0, 0, 0,
            0, 0, 0,
        ],
    );
    let pes = ts_packet(
        0x100,
        true,
        &[0, 0, 1, 0xE0, 0, 0, 0x80, 0x00, 0x00, 0, 0, 1, 0x65],
    );
    let mut second = Vec::new();
    for _ in 0..10 {
        second.extend_from_slice(&pat);
        second.extend_from_slice(&pmt);
        for _ in 0..20 {
            second.extend_from_slice(&pes);
        }
    }
    let second = bytes::Bytes::from(second);
    let origin = FakeUpstream::bind()
        .await
        .route(
            "/tv/stamps.ts",
            get(move || {
                let second = second.clone();
                async move {
                    let chunks = futures::stream::unfold((), move |()| {
                        let second = second.clone();
                        async move {
                            tokio::time::sleep(Duration::from_millis(250)).await;
                            Some((Ok::<_, std::convert::Infallible>(second), ()))
                        }
                    });
                    respond(200, "video/mp2t", Body::from_stream(chunks))
                }
            }),
        )
        .start();
    let list = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n#EXTINF:-1,No Stamps\n{}\n",
                origin.url("/tv/stamps.ts")
            ),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let id = app.channel_id("No Stamps").await;
    let started = std::time::Instant::now();
    // Past this harness's usual 20 s request bound: the answer comes at about 30 s.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(75))
        .build()
        .unwrap();
    let resp = client
        .get(app.url(&format!("/api/stream/{id}.m3u8")))
        .send()
        .await
        .unwrap();
    let body = assert_api_error(resp, 502).await;
    let waited = started.elapsed();
    assert!(
        body.to_string().contains("gave no segment"),
        "{body} after {waited:?}"
    );
    // The source it waited on is named, as a failed open names its sources.
    let tried = body["detail"]
        .as_array()
        .unwrap_or_else(|| panic!("detail lists the source: {body:#}"));
    assert_eq!(tried.len(), 1, "{body:#}");
    assert_eq!(tried[0]["service"], "Origin", "{body:#}");
    assert_eq!(tried[0]["channel_id"], id.as_str(), "{body:#}");
}

/// A packaged channel whose upstream dies mid-stream (its connection cut, then every
/// new one refused) ends its playlist (`#EXT-X-ENDLIST`) once no new segment came for
/// 30 s, rather than freezing for as long as players reload it; and its session tries
/// the dead upstream less and less often, not every 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packaged_channel_whose_upstream_dies_ends_its_playlist() {
    let clip = crate::common::mpeg_ts_clip(8);
    let dead = Arc::new(AtomicBool::new(false));
    let hits_after = Arc::new(AtomicUsize::new(0));
    let (d, h) = (dead.clone(), hits_after.clone());
    let origin = FakeUpstream::bind()
        .await
        .route(
            "/tv/live.ts",
            get(move || {
                let (clip, dead, hits_after) = (clip.clone(), d.clone(), h.clone());
                async move {
                    if dead.load(Ordering::SeqCst) {
                        hits_after.fetch_add(1, Ordering::SeqCst);
                        return respond(503, "text/plain", "down");
                    }
                    // The clip over and over at real time, until the upstream dies: then
                    // the connection breaks.
                    let step = (clip.len() / 80).max(188);
                    let chunks = futures::stream::unfold(0usize, move |at| {
                        let (clip, dead) = (clip.clone(), dead.clone());
                        async move {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            if dead.load(Ordering::SeqCst) {
                                return Some((Err(std::io::Error::other("died")), at));
                            }
                            let at = if at >= clip.len() { 0 } else { at };
                            let end = (at + step).min(clip.len());
                            Some((Ok(bytes::Bytes::copy_from_slice(&clip[at..end])), end))
                        }
                    });
                    respond(200, "video/mp2t", Body::from_stream(chunks))
                }
            }),
        )
        .start();
    let list = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!("#EXTM3U\n#EXTINF:-1,Dies\n{}\n", origin.url("/tv/live.ts")),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let id = app.channel_id("Dies").await;
    let path = format!("/api/stream/{id}.m3u8");
    // Playing: segments listed.
    let mut segments = 0;
    for _ in 0..40 {
        let text = app.get_text_ok(&path).await;
        segments = text.lines().filter(|l| l.contains("/packaged/")).count();
        if segments >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(segments >= 2, "the channel never listed two segments");
    dead.store(true, Ordering::SeqCst);
    let died = std::time::Instant::now();
    // A player's reloads, every second: the playlist ends.
    let mut last = String::new();
    while died.elapsed() < Duration::from_secs(75) {
        last = app.get_text_ok(&path).await;
        if last.contains("#EXT-X-ENDLIST") {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        last.contains("#EXT-X-ENDLIST"),
        "still no end {:?} after the upstream died: {last}",
        died.elapsed()
    );
    let hits = hits_after.load(Ordering::SeqCst);
    assert!(
        hits <= 10,
        "the dead upstream was asked {hits} times in {:?}",
        died.elapsed()
    );
}

/// What a one-connection origin saw: requests, and those refused (403) because
/// another of its connections was open.
struct OneConnection {
    hits: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    _list: FakeUpstream,
    _origin: FakeUpstream,
}

impl OneConnection {
    fn counts(&self) -> (usize, usize) {
        (
            self.hits.load(Ordering::SeqCst),
            self.refused.load(Ordering::SeqCst),
        )
    }
}

/// A channel `name` whose source allows one connection at a time (as most panels do
/// for an account: a second one while one is open is a 403), sending as `video/mp2t`
/// chunk after chunk, `chunk(n)` the n-th, one every `pace`.
async fn one_connection_channel(
    name: &str,
    pace: Duration,
    chunk: impl Fn(usize) -> bytes::Bytes + Clone + Send + Sync + 'static,
) -> (TestApp, OneConnection) {
    /// Counts the connection closed when the response body is dropped.
    struct Open(Arc<AtomicUsize>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let open = Arc::new(AtomicUsize::new(0));
    let hits = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let (h, r) = (hits.clone(), refused.clone());
    let origin = FakeUpstream::bind()
        .await
        .route(
            "/tv/one.ts",
            get(move || {
                let (chunk, open, hits, refused) =
                    (chunk.clone(), open.clone(), h.clone(), r.clone());
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    if open.fetch_add(1, Ordering::SeqCst) > 0 {
                        open.fetch_sub(1, Ordering::SeqCst);
                        refused.fetch_add(1, Ordering::SeqCst);
                        return respond(403, "text/plain", "one connection at a time");
                    }
                    let guard = Arc::new(Open(open));
                    let chunks = futures::stream::unfold(0usize, move |n| {
                        let (chunk, guard) = (chunk.clone(), guard.clone());
                        async move {
                            let _held = guard;
                            if n > 0 {
                                tokio::time::sleep(pace).await;
                            }
                            Some((Ok::<_, std::convert::Infallible>(chunk(n)), n + 1))
                        }
                    });
                    respond(200, "video/mp2t", Body::from_stream(chunks))
                }
            }),
        )
        .start();
    let list = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!("#EXTM3U\n#EXTINF:-1,{name}\n{}\n", origin.url("/tv/one.ts")),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    (
        app,
        OneConnection {
            hits,
            refused,
            _list: list,
            _origin: origin,
        },
    )
}

/// An upstream that allows one connection at a time (as most panels do for an
/// account): a channel whose source is plain MPEG-TS plays as `.ts` and as `.m3u8` at
/// once, on the one connection. The first bytes that tell what the stream is are read
/// from the connection that then plays, not from a probe closed just before the real
/// one opens (a panel refuses the second while it has not noticed the first close),
/// and an `.m3u8` of a channel already playing as `.ts` is cut from that session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_mpeg_ts_channel_plays_as_ts_and_hls_on_one_upstream_connection() {
    // The clip over and over at real time (an 80th every 100 ms).
    let clip = crate::common::mpeg_ts_clip(8);
    let step = (clip.len() / 80).max(188);
    let (app, origin) = one_connection_channel("One", Duration::from_millis(100), move |n| {
        let at = (n * step) % clip.len();
        bytes::Bytes::copy_from_slice(&clip[at..(at + step).min(clip.len())])
    })
    .await;
    let id = app.channel_id("One").await;

    // A .ts viewer first: its bytes come on the connection that told what it is.
    let mut viewer = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(viewer.status(), 200);
    let mut got = 0;
    while got < 188 * 100 {
        got += viewer
            .chunk()
            .await
            .unwrap()
            .expect("the stream goes on")
            .len();
    }
    assert_eq!(
        origin.counts(),
        (1, 0),
        "the .ts viewer's start asked the upstream more than once"
    );
    // Then, past the first look's cache (`playlist_ttl`), an HLS player of the same
    // channel: segments from the same session.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let path = format!("/api/stream/{id}.m3u8");
    let mut segments = 0;
    for _ in 0..40 {
        let text = app.get_text_ok(&path).await;
        segments = text.lines().filter(|l| l.contains("/packaged/")).count();
        if segments >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(segments >= 1, "the .m3u8 listed no segment");
    assert_eq!(
        origin.counts(),
        (1, 0),
        "the .m3u8 of a channel playing as .ts asked the upstream again"
    );
    drop(viewer);
}

/// A plain MPEG-TS stream joined mid-packet (a relay that starts wherever its reader
/// is) plays as HLS like any other: its `.m3u8` is cut into segments, not redirected
/// to the raw stream an HLS-only player cannot play. A page typed `video/mp2t` (a
/// panel's error page) is refused as the page it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpeg_ts_joined_mid_packet_is_cut_and_a_page_typed_as_ts_is_refused() {
    let clip = crate::common::mpeg_ts_clip(8);
    let mid: Arc<Vec<u8>> = Arc::new(clip[188 * 10 + 77..].to_vec());
    let origin = FakeUpstream::bind()
        .await
        .route("/tv/mid.ts", crate::common::paced_mpeg_ts(mid, true))
        .route(
            "/tv/page.ts",
            get(|| async {
                respond(
                    200,
                    "video/mp2t",
                    "<!DOCTYPE html><html><body>Account expired</body></html>",
                )
            }),
        )
        .start();
    let list = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n#EXTINF:-1,Mid\n{}\n#EXTINF:-1,Page\n{}\n",
                origin.url("/tv/mid.ts"),
                origin.url("/tv/page.ts")
            ),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let mid = app.channel_id("Mid").await;
    let text = app.get_text_ok(&format!("/api/stream/{mid}.m3u8")).await;
    let segments: Vec<&str> = text.lines().filter(|l| l.contains("/packaged/")).collect();
    assert!(!segments.is_empty(), "{text}");
    let segment = app.get(segments[0]).await;
    assert_eq!(segment.status(), 200);
    let bytes = segment.bytes().await.unwrap();
    assert_eq!(
        (bytes[0], bytes.len() % 188),
        (0x47, 0),
        "a segment of whole packets"
    );

    let page = app.channel_id("Page").await;
    let body = assert_api_error(app.get(&format!("/api/stream/{page}.m3u8")).await, 502).await;
    assert!(body.to_string().contains("an HTML page"), "{body}");
}

/// A stream of MPEG-TS packets without a programme is not cut: its `.m3u8` is a 307
/// to its pass-through link, at once once that is known. The player's fetch of that
/// link reads the response of the look that told it is MPEG-TS: one connection, which
/// a one-connection upstream allows (it may not have noticed a closed one yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncuttable_ts_stream_is_redirected_without_holding_a_second_connection() {
    // Packets of one PID, no tables: never a programme.
    let mut packet = [0xFFu8; 188];
    packet[..4].copy_from_slice(&[0x47, 0x01, 0x00, 0x10]);
    let burst = bytes::Bytes::from(packet.repeat(1000));
    let (app, origin) =
        one_connection_channel("Raw", Duration::from_millis(20), move |_| burst.clone()).await;
    let id = app.channel_id("Raw").await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let m3u8 = app.url(&format!("/api/stream/{id}.m3u8"));
    let first = no_redirects.get(&m3u8).send().await.unwrap();
    assert_eq!(first.status(), 307);
    // Its session gone (idle), the first look's answer expired: asked again, at once.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let again = no_redirects.get(&m3u8).send().await.unwrap();
    assert_eq!(again.status(), 307);
    let link = again.headers()["location"].to_str().unwrap().to_string();
    let looked = origin.counts().0;
    let played = app.get(&link).await;
    assert_eq!(
        played.status(),
        200,
        "the pass-through was refused: {} refused connections",
        origin.counts().1
    );
    // The player's fetch read the response the look kept: no request of its own.
    assert_eq!(origin.counts().0, looked, "the link asked the origin again");
    drop(played);
}

/// Single-file HLS: every segment is an `EXT-X-BYTERANGE` of one file, which players
/// ask with `Range`. A failing range counts towards the channel's failover as a failing
/// segment does: once `failover_after` have failed, the reload is answered from B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_byte_range_segments_fail_over_on_the_next_reload() {
    let a = FakeUpstream::bind()
        .await
        .text(
            "/a/live.m3u8",
            HLS_TYPE,
            "#EXTM3U\n#EXT-X-VERSION:4\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1000\n\
             #EXT-X-BYTERANGE:100@0\n#EXTINF:2.0,\nall.ts\n\
             #EXT-X-BYTERANGE:100@100\n#EXTINF:2.0,\nall.ts\n",
        )
        .route(
            "/a/all.ts",
            get(|| async { respond(404, "text/plain", "gone") }),
        )
        .start();
    let b = source_b().await;
    let (app, _lists) = failing_over(a.url("/a/live.m3u8"), b.url("/b/live.m3u8")).await;
    let id = app.channel_id("Live").await;
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let segments = assert_all_proxied(&app, &playlist);
    assert_eq!(segments.len(), 2, "{playlist}");
    for (s, range) in segments.iter().zip(["bytes=0-99", "bytes=100-199"]) {
        let resp = app
            .client
            .get(s)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_server_error(), "{s}: {}", resp.status());
    }
    let reloaded = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let segments = assert_all_proxied(&app, &reloaded);
    assert_eq!(
        app.get_text_ok(&segments[0]).await,
        "<b b0.ts>",
        "{reloaded}"
    );
}

/// A byte range of a segment that trickles ends at `segment_timeout`, from request to
/// last byte, as a whole segment does: a few slow or stuck fetches must not hold a
/// service's request slots for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_byte_range_ends_at_the_segment_timeout() {
    let origin = FakeUpstream::bind()
        .await
        .text(
            "/live.m3u8",
            HLS_TYPE,
            "#EXTM3U\n#EXT-X-VERSION:4\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-BYTERANGE:100@0\n#EXTINF:2.0,\nall.ts\n",
        )
        .route(
            "/all.ts",
            get(|| async {
                // A byte every half second: never idle, and 50 s for the range.
                let stream = futures::stream::unfold(0u32, |n| async move {
                    (n < 100).then_some(())?;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"G")),
                        n + 1,
                    ))
                });
                axum::response::Response::builder()
                    .status(206)
                    .header("content-type", "video/mp2t")
                    .header("content-range", "bytes 0-99/1000")
                    .header("content-length", "100")
                    .body(Body::from_stream(stream))
                    .unwrap()
            }),
        )
        .start();
    let list = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!("#EXTM3U\n#EXTINF:-1,Live\n{}\n", origin.url("/live.m3u8")),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[cache]\nsegment_timeout = \"1s\"\n\n\
         [[services]]\nname = \"A\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let id = app.channel_id("Live").await;
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let segments = assert_all_proxied(&app, &playlist);
    let resp = app
        .client
        .get(&segments[0])
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    // Well under the client's own timeout, which would end the read too.
    let read = tokio::time::timeout(Duration::from_secs(8), resp.bytes()).await;
    let read = read.expect("the body ends (the guard is 8 s, the timeout 1 s)");
    assert!(read.is_err(), "a cut body, not a whole one: {read:?}");
}

/// A player reloads a channel whose stream URL is a media playlist: a first source
/// whose playlist hangs is waited for once (its `timeout`), then skipped for a minute,
/// not waited for again at every reload while the next source plays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_whose_playlist_timed_out_is_not_waited_for_at_every_reload() {
    let a = FakeUpstream::bind()
        .await
        .route(
            "/a/live.m3u8",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "never"
            }),
        )
        .start();
    let b = FakeUpstream::bind()
        .await
        .text("/b/live.m3u8", HLS_TYPE, live_playlist(&["b0.ts", "b1.ts"]))
        .start();
    let (app, _lists) = failing_over_with(
        a.url("/a/live.m3u8"),
        b.url("/b/live.m3u8"),
        "timeout = \"1s\"",
    )
    .await;
    let id = app.channel_id("Live").await;
    for reload in 0..3 {
        let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
        assert!(playlist.contains("#EXTINF"), "reload {reload}: {playlist}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(a.hits("/a/live.m3u8"), 1, "A waited for once, then skipped");
    assert!(b.hits("/b/live.m3u8") >= 3, "{:?}", b.paths());
}

/// A segment link whose upstream answers 200 without a byte is a failed segment: a 502
/// that says so, not cached (asked again, the upstream is asked again), and never a
/// 200 with nothing, after which a player asking `bytes=0-` got a 416 from the cache.
#[tokio::test]
async fn an_empty_segment_is_a_502_and_not_kept() {
    let origin = FakeUpstream::bind()
        .await
        .text(
            "/x/index.m3u8",
            HLS_TYPE,
            live_playlist(&["empty.ts", "good.ts"]),
        )
        .route(
            "/x/empty.ts",
            axum::routing::get(|| async { respond(200, "video/mp2t", "") }),
        )
        .route(
            "/x/good.ts",
            axum::routing::get(|| async { respond(200, "video/mp2t", "<good>") }),
        )
        .start();
    let (app, _list) = app_for(&origin, "/x/index.m3u8", "").await;
    let id = app.channel_id("Live").await;
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let links = assert_all_proxied(&app, &playlist);
    assert_eq!(links.len(), 2, "{playlist}");
    let body = assert_api_error(app.get(&links[0]).await, 502).await;
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("empty segment"),
        "{body:#}"
    );
    let ranged = app
        .client
        .get(&links[0])
        .header("range", "bytes=0-")
        .send()
        .await
        .unwrap();
    assert_api_error(ranged, 502).await;
    // Another range goes to the upstream on its own: no 206 promising bytes.
    let ranged = app
        .client
        .get(&links[0])
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    let body = assert_api_error(ranged, 502).await;
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("empty segment"),
        "{body:#}"
    );
    assert_eq!(origin.hits("/x/empty.ts"), 3, "{:?}", origin.paths());
    // A segment with bytes is served and kept.
    for _ in 0..2 {
        let resp = app.get(&links[1]).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "<good>");
    }
    assert_eq!(origin.hits("/x/good.ts"), 1, "{:?}", origin.paths());
}
