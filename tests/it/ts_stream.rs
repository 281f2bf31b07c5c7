//! Continuous MPEG-TS (`/api/stream/{id}.ts`): one shared upstream session per
//! channel, failover to the next source mid-stream, and no upstream work once the
//! last viewer has gone.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use futures::StreamExt;

use crate::common::{
    eventually, live_playlist, respond, run_within, FakeUpstream, TestApp, HANG_GUARD, HLS_TYPE,
    M3U_TYPE,
};

/// Reads from a streaming response until `want` bytes have arrived.
async fn read_at_least(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    want: usize,
) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        let chunk = tokio::time::timeout(HANG_GUARD, body.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {want} bytes arrived: {:?}",
                    got.len(),
                    String::from_utf8_lossy(&got)
                )
            })
            .unwrap_or_else(|| panic!("stream ended after {} bytes", got.len()))
            .expect("chunk");
        got.extend_from_slice(&chunk);
    }
    got
}

async fn list_of(entries: &[(&str, String)]) -> FakeUpstream {
    let mut m3u = String::from("#EXTM3U\n");
    for (name, url) in entries {
        m3u.push_str(&format!(
            "#EXTINF:-1 tvg-id=\"Shared.example\",{name}\n{url}\n"
        ));
    }
    FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, m3u)
        .start()
}

/// freesky (`extra` config first) with services A (priority 1) and B (priority 2),
/// each listing channel `name` at one of `urls`; the lists (kept serving) and the
/// channel's id.
async fn two_sources(
    name: &str,
    urls: [String; 2],
    extra: &str,
) -> (TestApp, [FakeUpstream; 2], String) {
    let [a, b] = urls;
    let lists = [list_of(&[(name, a)]).await, list_of(&[(name, b)]).await];
    let app = TestApp::spawn(&format!(
        "{extra}\n[[services]]\nname = \"A\"\nkind = \"m3u\"\npriority = 1\nurl = \"{}\"\n\n\
         [[services]]\nname = \"B\"\nkind = \"m3u\"\npriority = 2\nurl = \"{}\"\n",
        lists[0].url("/list.m3u"),
        lists[1].url("/list.m3u")
    ))
    .await;
    let id = app.channel_id(name).await;
    (app, lists, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_share_one_session_and_it_stops_after_the_last_leaves() {
    let origin = FakeUpstream::bind()
        .await
        .text(
            "/live/index.m3u8",
            HLS_TYPE,
            live_playlist(&["s0.ts", "s1.ts", "s2.ts", "s3.ts"]),
        )
        .route(
            "/live/{seg}",
            get(
                |axum::extract::Path(seg): axum::extract::Path<String>| async move {
                    // Slow enough that the second viewer joins before the first segment is out.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    respond(200, "video/mp2t", format!("<{seg}>"))
                },
            ),
        )
        .start();
    let list = list_of(&[("Shared", origin.url("/live/index.m3u8"))]).await;
    let app = TestApp::spawn(&format!(
        "[streams]\nidle_stop = \"1s\"\n\n[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let id = app.channel_id("Shared").await;

    let open = || async {
        let resp = app.get(&format!("/api/stream/{id}.ts")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "video/MP2T");
        resp.bytes_stream()
    };
    // Both join before the first bytes (the answers wait for them).
    let (mut a, mut b) = tokio::join!(open(), open());
    // The session starts 3 segments before the live edge: s1, s2, s3, in order.
    let want = "<s1.ts><s2.ts><s3.ts>".len();
    let (got_a, got_b) = tokio::join!(read_at_least(&mut a, want), read_at_least(&mut b, want));
    assert_eq!(String::from_utf8_lossy(&got_a), "<s1.ts><s2.ts><s3.ts>");
    assert_eq!(String::from_utf8_lossy(&got_b), "<s1.ts><s2.ts><s3.ts>");
    for seg in ["/live/s1.ts", "/live/s2.ts", "/live/s3.ts"] {
        assert_eq!(origin.hits(seg), 1, "{:?}", origin.paths());
    }
    assert_eq!(origin.hits("/live/s0.ts"), 0);

    // The session keeps polling the live playlist while someone watches...
    let polls = origin.hits("/live/index.m3u8");
    eventually("the session to poll the live playlist again", || async {
        if origin.hits("/live/index.m3u8") > polls {
            Ok(())
        } else {
            Err(format!("{:?}", origin.paths()))
        }
    })
    .await;

    // ...and stops within idle_stop (1 s) plus a poll once both viewers are gone: no
    // upstream request for longer than a poll interval (the playlist's 2 s target
    // duration), within a bound. A quiet spell can only be waited for.
    drop(a);
    drop(b);
    eventually(
        "upstream requests to stop after the last viewer left",
        || async {
            let before = origin.requests().len();
            tokio::time::sleep(Duration::from_millis(2500)).await;
            if origin.requests().len() == before {
                Ok(())
            } else {
                Err(format!("{:?}", origin.paths()))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_stream_continues_from_the_next_source_when_the_first_fails() {
    let broken = Arc::new(AtomicBool::new(false));
    let flag = broken.clone();
    let primary = FakeUpstream::bind()
        .await
        .route(
            "/p/index.m3u8",
            get(move || {
                let failing = flag.load(Ordering::SeqCst);
                async move {
                    if failing {
                        respond(503, "text/plain", "down")
                    } else {
                        respond(200, HLS_TYPE, live_playlist(&["p0.ts", "p1.ts", "p2.ts"]))
                    }
                }
            }),
        )
        .route(
            "/p/{seg}",
            get(
                |axum::extract::Path(seg): axum::extract::Path<String>| async move {
                    respond(200, "video/mp2t", format!("<primary {seg}>"))
                },
            ),
        )
        .start();
    let secondary = FakeUpstream::bind()
        .await
        .text(
            "/s/index.m3u8",
            HLS_TYPE,
            live_playlist(&["s0.ts", "s1.ts", "s2.ts"]),
        )
        .route(
            "/s/{seg}",
            get(
                |axum::extract::Path(seg): axum::extract::Path<String>| async move {
                    respond(200, "video/mp2t", format!("<secondary {seg}>"))
                },
            ),
        )
        .start();
    let one = list_of(&[("Shared", primary.url("/p/index.m3u8"))]).await;
    let two = list_of(&[("Shared", secondary.url("/s/index.m3u8"))]).await;
    let app = TestApp::spawn(&format!(
        r#"
[cache]
playlist_ttl = "100ms"

[streams]
failover_after = 2

[[services]]
name = "One"
kind = "m3u"
priority = 1
url = "{}"

[[services]]
name = "Two"
kind = "m3u"
priority = 2
url = "{}"
"#,
        one.url("/list.m3u"),
        two.url("/list.m3u")
    ))
    .await;
    let id = app.channel_id("Shared").await;
    let resp = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = read_at_least(&mut body, "<primary p0.ts>".len() * 3).await;
    assert_eq!(
        String::from_utf8_lossy(&first),
        "<primary p0.ts><primary p1.ts><primary p2.ts>"
    );
    assert_eq!(secondary.hits("/s/index.m3u8"), 0);

    // The primary goes down: after two failed reloads the stream carries on from Two.
    broken.store(true, Ordering::SeqCst);
    let next = read_at_least(&mut body, "<secondary s0.ts>".len()).await;
    assert!(
        String::from_utf8_lossy(&next).starts_with("<secondary s0.ts>"),
        "{:?}",
        String::from_utf8_lossy(&next)
    );
    assert!(primary.hits("/p/index.m3u8") >= 3, "{:?}", primary.paths());
    // Both show in their service's status: One's segments sent, then its two failed
    // reloads and One given up (three failures, with why); Two's segments sent. Not
    // in the calls' counts.
    let one = app.service_status("One").await;
    assert!(one["stream_successes"].as_u64() >= Some(3), "{one:#}");
    assert_eq!(one["stream_failures"], 3, "{one:#}");
    let why = one["last_stream_error"].as_str().unwrap_or_default();
    assert!(why.contains("503"), "{one:#}");
    assert_eq!(one["circuit"], "closed", "{one:#}");
    let two = eventually("Two's segment in its status", || async {
        let two = app.service_status("Two").await;
        if two["stream_successes"].as_u64() >= Some(1) {
            Ok(two)
        } else {
            Err(two)
        }
    })
    .await;
    assert_eq!(two["stream_failures"], 0, "{two:#}");
}

#[tokio::test]
async fn a_ts_stream_of_an_unknown_channel_or_a_failing_one_is_a_json_error() {
    let origin = FakeUpstream::bind().await.status("/dead.m3u8", 500).start();
    let list = list_of(&[("Dead", origin.url("/dead.m3u8"))]).await;
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    crate::common::assert_api_error(app.get("/api/stream/no-such-channel.ts").await, 404).await;
    let id = app.channel_id("Dead").await;
    let body =
        crate::common::assert_api_error(app.get(&format!("/api/stream/{id}.ts")).await, 502).await;
    assert_eq!(body["detail"][0]["service"], "Origin", "{body}");
}

/// A source whose playlist loads but whose segments never come (404) is an error for
/// the `.ts` viewer and the tuner (502 naming the source; the tuner adds `806 Tune
/// Failed`), not a 200 with an empty body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_whose_segments_never_come_is_a_502_not_an_empty_stream() {
    let origin = FakeUpstream::bind()
        .await
        .text(
            "/live.m3u8",
            HLS_TYPE,
            live_playlist(&["gone-1.ts", "gone-2.ts"]),
        )
        .status("/gone-1.ts", 404)
        .status("/gone-2.ts", 404)
        .start();
    let list = list_of(&[("Hollow", origin.url("/live.m3u8"))]).await;
    let app = TestApp::spawn(&format!(
        "[streams]\nfailover_after = 1\n\n[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let c = app.channel_named("Hollow").await;
    let id = c["id"].as_str().unwrap().to_string();
    let resp = tokio::time::timeout(HANG_GUARD, app.get(&format!("/api/stream/{id}.ts")))
        .await
        .expect("the .ts answer came in time");
    let body = crate::common::assert_api_error(resp, 502).await;
    assert_eq!(body["detail"][0]["service"], "Origin", "{body}");
    assert!(
        body["detail"][0]["error"].as_str().unwrap().contains("404"),
        "{body}"
    );
    let tuner = app.get(&format!("/auto/v{}", c["number"])).await;
    assert_eq!(tuner.headers()["x-hdhomerun-error"], "806 Tune Failed");
    crate::common::assert_api_error(tuner, 502).await;
}

/// A source that ends without sending anything (a finished playlist without
/// segments, or whose one segment fails), or whose segments are empty, is a failed
/// source: the next one plays (an empty segment once held the viewer until the 60 s
/// first-bytes bound). Before,
/// the first hung the viewer (polled for ever, no answer) and the second was a 502
/// without trying the next source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_ends_without_a_byte_hands_over_to_the_next() {
    let finished = |segments: &[&str]| {
        let mut p = live_playlist(segments);
        p.push_str("#EXT-X-ENDLIST\n");
        p
    };
    let origin = FakeUpstream::bind()
        .await
        .text("/empty/index.m3u8", HLS_TYPE, finished(&[]))
        .text("/gone/index.m3u8", HLS_TYPE, finished(&["s0.ts"]))
        .status("/gone/s0.ts", 404)
        // A live playlist whose segments are 200s without a byte.
        .text(
            "/zero/index.m3u8",
            HLS_TYPE,
            live_playlist(&["z0.ts", "z1.ts"]),
        )
        .route(
            "/zero/{seg}",
            get(|| async { respond(200, "video/mp2t", "") }),
        )
        .text(
            "/good/index.m3u8",
            HLS_TYPE,
            live_playlist(&["g0.ts", "g1.ts"]),
        )
        .route(
            "/good/{seg}",
            get(|| async { respond(200, "video/mp2t", "<good>") }),
        )
        .start();
    for first in ["/empty/index.m3u8", "/gone/index.m3u8", "/zero/index.m3u8"] {
        let (app, _lists, id) = two_sources(
            "Shared",
            [origin.url(first), origin.url("/good/index.m3u8")],
            "[streams]\nfailover_after = 1\n",
        )
        .await;
        let resp = tokio::time::timeout(HANG_GUARD, app.get(&format!("/api/stream/{id}.ts")))
            .await
            .unwrap_or_else(|_| panic!("{first}: no answer"));
        assert_eq!(resp.status(), 200, "{first}");
        let mut body = resp.bytes_stream();
        let got = read_at_least(&mut body, "<good>".len()).await;
        assert!(
            String::from_utf8_lossy(&got).starts_with("<good>"),
            "{first}: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    // With `failover_after = 1`, one empty segment hands over: the next is not asked.
    assert_eq!(
        origin.hits("/zero/z0.ts") + origin.hits("/zero/z1.ts"),
        1,
        "{:?}",
        origin.paths()
    );
}

/// A viewer that stops reading never holds the others back: the session keeps
/// fetching and the reading viewer gets every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_viewer_does_not_slow_the_others() {
    const SEGMENTS: usize = 48;
    const SIZE: usize = 512 * 1024;
    let names: Vec<String> = (0..SEGMENTS).map(|i| format!("v{i}.ts")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let origin = FakeUpstream::bind()
        .await
        .text(
            "/vod/index.m3u8",
            HLS_TYPE,
            crate::common::media_playlist(&refs),
        )
        .route(
            "/vod/{seg}",
            get(
                |axum::extract::Path(seg): axum::extract::Path<String>| async move {
                    if seg == "v0.ts" {
                        // Both viewers are in before the first byte goes out.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    respond(200, "video/mp2t", vec![0x47u8; SIZE])
                },
            ),
        )
        .start();
    let list = list_of(&[("Vod", origin.url("/vod/index.m3u8"))]).await;
    let app = TestApp::spawn(&format!(
        "[cache]\nsegment_cache_mb = 0\n\n[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let id = app.channel_id("Vod").await;
    let url = format!("/api/stream/{id}.ts");
    // The stalled viewer: opens the stream (with the reader: the answers wait for the
    // first bytes) and never reads it.
    let (stalled, reader) = tokio::join!(app.get(&url), app.get(&url));
    assert_eq!(stalled.status(), 200);
    let mut body = reader.bytes_stream();
    let mut total = 0usize;
    while let Some(chunk) = tokio::time::timeout(HANG_GUARD, body.next())
        .await
        .unwrap_or_else(|_| panic!("the reading viewer stalled after {total} bytes"))
    {
        total += chunk.expect("chunk").len();
    }
    // 24 MiB is far more than socket buffers hold for the stalled viewer.
    assert_eq!(total, SEGMENTS * SIZE);
    assert_eq!(origin.hits("/vod/v47.ts"), 1);
    drop(stalled);
}

/// A channel whose playlist opens but whose every segment fails (404): the session
/// does not hammer the upstream (it backs off between tries and gives up once every
/// source was tried without sending a byte), and the viewer's stream ends instead of
/// staying open and empty for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_whose_segments_all_fail_ends_without_hammering_the_upstream() {
    let origin = FakeUpstream::bind()
        .await
        .text(
            "/gone/index.m3u8",
            HLS_TYPE,
            live_playlist(&["s0.ts", "s1.ts", "s2.ts"]),
        )
        .start();
    let list = list_of(&[("Gone", origin.url("/gone/index.m3u8"))]).await;
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let id = app.channel_id("Gone").await;
    let body = refused_for_sending_nothing(&app, &id).await;
    assert_eq!(body["detail"][0]["service"], "Origin", "{body}");
    let segments = gone_segment_requests(&origin);
    // Two rounds of `failover_after` (3) failures, a pause between them.
    assert!(
        (1..=12).contains(&segments),
        "{segments} segment requests: {:?}",
        origin.paths()
    );
}

/// The `.ts` answer of channel `id`, none of whose sources sends a byte: a 502 naming
/// each source tried (within HANG_GUARD), never a 200 that sends nothing.
async fn refused_for_sending_nothing(app: &TestApp, id: &str) -> serde_json::Value {
    let resp = tokio::time::timeout(HANG_GUARD, app.get(&format!("/api/stream/{id}.ts")))
        .await
        .expect("the answer for a channel that sends nothing comes");
    crate::common::assert_api_error(resp, 502).await
}

/// Requests for the segments of `/gone/index.m3u8` the origin got.
fn gone_segment_requests(origin: &FakeUpstream) -> usize {
    ["s0.ts", "s1.ts", "s2.ts"]
        .iter()
        .map(|s| origin.hits(&format!("/gone/{s}")))
        .sum()
}

/// The same with a second source that does not even open (its playlist fails): the
/// session still ends once the one that opened has failed twice without a byte,
/// instead of going round the two for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_source_and_one_that_never_opens_end_the_stream() {
    let origin = FakeUpstream::bind()
        .await
        .text(
            "/gone/index.m3u8",
            HLS_TYPE,
            live_playlist(&["s0.ts", "s1.ts", "s2.ts"]),
        )
        .status("/dead/index.m3u8", 500)
        .start();
    let (app, _lists, id) = two_sources(
        "Gone",
        [
            origin.url("/gone/index.m3u8"),
            origin.url("/dead/index.m3u8"),
        ],
        "",
    )
    .await;
    let body = refused_for_sending_nothing(&app, &id).await;
    let services: Vec<&str> = body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["service"].as_str())
        .collect();
    assert!(services.contains(&"A") && services.contains(&"B"), "{body}");
    let segments = gone_segment_requests(&origin);
    assert!((1..=12).contains(&segments), "{:?}", origin.paths());
}

/// Bound on one ffmpeg or ffprobe run; reaching it means a hang (not a speed check).
const FFMPEG_GUARD: Duration = Duration::from_secs(60);

/// ffmpeg's options for a quiet run that overwrites its output.
const QUIET: [&str; 4] = ["-nostdin", "-v", "error", "-y"];

/// The container ffprobe reads in `bytes` (its `format_name`), written to `path` first.
async fn container_of(path: &std::path::Path, bytes: &[u8]) -> String {
    std::fs::write(path, bytes).unwrap();
    let probe = [
        "-v",
        "error",
        "-show_entries",
        "format=format_name",
        "-of",
        "csv=p=0",
    ];
    let (format, _) = run_tool("ffprobe", &[&probe[..], &[path.to_str().unwrap()]].concat()).await;
    format
}

/// Runs ffmpeg or ffprobe with `args` to its end; its stdout and stderr.
async fn run_tool(program: &str, args: &[&str]) -> (String, String) {
    let out = run_within(
        tokio::process::Command::new(program)
            .arg("-hide_banner")
            .args(args),
        FFMPEG_GUARD,
        "ffmpeg (with ffprobe) installed and on PATH",
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{program} {args:?} failed: {stderr}");
    (stdout, stderr)
}

/// What Plex's transcoder or a DVR reads from a tuner URL: a channel whose segments
/// are the demo's real ones looped three times (each loop's timestamps going back from
/// 9.4 s to 1.4 s and every PID's counters restarting, after an
/// `#EXT-X-DISCONTINUITY`), then one moved 5000 s ahead and the loop again (an upstream
/// restart, untagged). freesky's `.ts` stream of it is one continuous MPEG-TS: ffmpeg
/// copying or decoding it reports no corrupt packet and no timestamp out of order, and
/// ffprobe's decode times only go forward, over the whole length of the segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_segments_make_one_continuous_mpeg_ts() {
    let assets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    let dir = tempfile::tempdir().unwrap();
    let seg0 = assets.join("seg0.ts");
    let ahead = dir.path().join("ahead.ts");
    run_tool(
        "ffmpeg",
        &[
            "-nostdin",
            "-v",
            "error",
            "-i",
            seg0.to_str().unwrap(),
            "-map",
            "0",
            "-c",
            "copy",
            "-output_ts_offset",
            "5000",
            "-f",
            "mpegts",
            "-y",
            ahead.to_str().unwrap(),
        ],
    )
    .await;
    let mut playlist = String::from(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n",
    );
    let mut names = Vec::new();
    for round in 0..3 {
        if round > 0 {
            playlist.push_str("#EXT-X-DISCONTINUITY\n");
        }
        for i in 0..4 {
            names.push((
                format!("r{round}s{i}.ts"),
                assets.join(format!("seg{i}.ts")),
            ));
        }
    }
    names.push(("ahead.ts".into(), ahead));
    for i in 1..4 {
        names.push((format!("r3s{i}.ts"), assets.join(format!("seg{i}.ts"))));
    }
    let joined = dir.path().join("joined.ts");
    let bytes = stream_of(&playlist, &names, &joined).await;
    let sent: usize = names
        .iter()
        .map(|(_, f)| std::fs::metadata(f).unwrap().len() as usize)
        .sum();
    assert_eq!(bytes, sent, "every segment, whole");
    for log in ffmpeg_logs(&joined, dir.path()).await {
        for bad in [
            "Packet corrupt",
            "out of order",
            "Non-monotonous",
            "non monotonically",
        ] {
            assert!(!log.contains(bad), "ffmpeg says {bad:?}:\n{log}");
        }
    }
    // Every stream's decode times only go forward, over all 16 segments (2 s each).
    let (first_video, video) = decode_times_go_forward(&joined).await;
    let span = (video - first_video) as f64 / 90_000.0;
    assert!(
        (30.0..33.0).contains(&span),
        "the video spans {span} s of 16 two-second segments"
    );
}

/// Serves `playlist` (each of `names` a segment file, or a tag when it starts with `#`) as a channel's only source, reads
/// its whole `.ts` stream (a finished playlist plays from its start to its end, then
/// EOF) into `out` and says how many bytes came.
async fn stream_of(
    playlist: &str,
    names: &[(String, std::path::PathBuf)],
    out: &std::path::Path,
) -> usize {
    let mut origin = FakeUpstream::bind().await;
    let mut playlist = playlist.to_string();
    for (name, file) in names {
        if name.starts_with('#') {
            // A tag, not a segment.
            playlist.push_str(&format!("{name}\n"));
            continue;
        }
        playlist.push_str(&format!("#EXTINF:2.000,\n{name}\n"));
        origin = origin.bytes(
            &format!("/loop/{name}"),
            "video/mp2t",
            std::fs::read(file).expect("segment file"),
        );
    }
    playlist.push_str("#EXT-X-ENDLIST\n");
    let origin = origin.text("/loop/index.m3u8", HLS_TYPE, playlist).start();
    let list = list_of(&[("Loop", origin.url("/loop/index.m3u8"))]).await;
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let id = app.channel_id("Loop").await;
    let resp = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = tokio::time::timeout(HANG_GUARD, body.next())
        .await
        .expect("the stream of a finished playlist ends")
    {
        bytes.extend_from_slice(&chunk.expect("chunk"));
    }
    std::fs::write(out, &bytes).unwrap();
    bytes.len()
}

/// ffmpeg's warnings reading `joined` as Plex's recorder would (`-c copy`), and as its
/// transcoder would (decoding).
async fn ffmpeg_logs(joined: &std::path::Path, dir: &std::path::Path) -> [String; 2] {
    let joined = joined.to_str().unwrap();
    let copy = dir.join("copy.ts");
    let (_, copying) = run_tool(
        "ffmpeg",
        &[
            "-nostdin",
            "-v",
            "warning",
            "-i",
            joined,
            "-map",
            "0",
            "-c",
            "copy",
            "-f",
            "mpegts",
            "-y",
            copy.to_str().unwrap(),
        ],
    )
    .await;
    let (_, decoding) = run_tool(
        "ffmpeg",
        &[
            "-nostdin", "-v", "warning", "-i", joined, "-map", "0", "-f", "null", "-",
        ],
    )
    .await;
    [copying, decoding]
}

/// Asserts that every stream's decode times (ffprobe's) only go forward; the first and
/// last video DTS.
async fn decode_times_go_forward(joined: &std::path::Path) -> (i64, i64) {
    let (packets, _) = run_tool(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "packet=stream_index,dts",
            "-of",
            "csv=p=0",
            joined.to_str().unwrap(),
        ],
    )
    .await;
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    let mut first_video = None;
    let mut video = 0;
    for line in packets.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split(',');
        let stream = fields.next().unwrap().to_string();
        let dts: i64 = fields
            .next()
            .and_then(|d| d.trim().parse().ok())
            .unwrap_or_else(|| panic!("a packet without DTS: {line:?}"));
        if let Some(prev) = last.insert(stream.clone(), dts) {
            assert!(dts > prev, "stream {stream}: DTS {prev} then {dts}");
        }
        if stream == "0" {
            first_video.get_or_insert(dts);
            video = dts;
        }
    }
    (first_video.expect("video packets"), video)
}

/// What a DVB-fed upstream sends on a bad day: the demo's loop, then the same segments
/// moved so that they start 0.6 s before the last one ended (an encoder that restarted
/// a little behind: no tag), then the loop again after an `#EXT-X-DISCONTINUITY` with
/// one packet of one segment damaged (its sync byte lost, as reception errors do). The
/// step back is closed like any other, and the damaged segment is rewritten like the
/// others but for that one packet: ffmpeg reports nothing out of order, and the only
/// corrupt packet it reports is the video frame the damaged packet belonged to (its
/// 184 bytes of payload are gone whatever we do; a demuxer drops a packet without the
/// sync byte and flags the frame it was part of).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_packet_and_a_small_step_back_still_make_one_continuous_mpeg_ts() {
    let assets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    let dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for i in 0..4 {
        names.push((format!("a{i}.ts"), assets.join(format!("seg{i}.ts"))));
    }
    // The loop's video runs 1.42 s to 9.42 s; moved by 7.4 s, it starts at 8.82 s.
    for i in 0..2 {
        let back = dir.path().join(format!("back{i}.ts"));
        run_tool(
            "ffmpeg",
            &[
                "-nostdin",
                "-v",
                "error",
                "-copyts",
                "-i",
                assets.join(format!("seg{i}.ts")).to_str().unwrap(),
                "-map",
                "0",
                "-c",
                "copy",
                "-muxdelay",
                "0",
                "-muxpreload",
                "0",
                "-output_ts_offset",
                "7.4",
                "-f",
                "mpegts",
                "-y",
                back.to_str().unwrap(),
            ],
        )
        .await;
        names.push((format!("back{i}.ts"), back));
    }
    // Packet 100 of seg2: a video packet inside a frame (not its first).
    let mut damaged = std::fs::read(assets.join("seg2.ts")).unwrap();
    let at = 100 * 188;
    assert_eq!(damaged[at..at + 3], [0x47, 0x01, 0x00], "a video packet");
    damaged[at] = 0x00;
    let damaged_file = dir.path().join("damaged.ts");
    std::fs::write(&damaged_file, &damaged).unwrap();
    names.push(("#EXT-X-DISCONTINUITY".into(), Default::default()));
    names.push(("b0.ts".into(), assets.join("seg0.ts")));
    names.push(("b1.ts".into(), assets.join("seg1.ts")));
    names.push(("b2.ts".into(), damaged_file));
    names.push(("b3.ts".into(), assets.join("seg3.ts")));
    let playlist = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n";
    let joined = dir.path().join("joined.ts");
    stream_of(playlist, &names, &joined).await;

    for log in ffmpeg_logs(&joined, dir.path()).await {
        for bad in ["out of order", "Non-monotonous", "non monotonically"] {
            assert!(!log.contains(bad), "ffmpeg says {bad:?}:\n{log}");
        }
        // ffmpeg names a corrupt packet more than once (its demuxer, then its reader).
        let corrupt: std::collections::BTreeSet<&str> = log
            .lines()
            .filter(|l| l.contains("Packet corrupt"))
            .map(|l| l.split_once("Packet corrupt").unwrap().1)
            .collect();
        assert!(
            corrupt.len() <= 1 && corrupt.iter().all(|l| l.contains("stream = 0")),
            "only the damaged video frame may be corrupt:\n{log}"
        );
    }
    let (first_video, video) = decode_times_go_forward(&joined).await;
    let span = (video - first_video) as f64 / 90_000.0;
    assert!(
        (19.0..21.0).contains(&span),
        "the video spans {span} s of 10 two-second segments"
    );
}

// ---------------------------------------------------------------------------------------
// upstream kinds: byte ranges, AES-128, fMP4, separate audio renditions

/// Makes a 4 s HLS stream (160x120 test pattern and a sine tone, H.264 and AAC, a key
/// frame every 0.4 s) with ffmpeg in `dir`: `index.m3u8` and what `args` (the HLS
/// muxer's options) make of it.
async fn make_hls(dir: &std::path::Path, args: &[&str]) -> String {
    let out = run_within(
        tokio::process::Command::new("ffmpeg")
            .current_dir(dir)
            .args(["-nostdin", "-hide_banner", "-v", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc=size=160x120:rate=25"])
            .args(["-f", "lavfi", "-i", "sine", "-t", "4"])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "10"])
            .args(["-pix_fmt", "yuv420p", "-c:a", "aac"])
            .args(["-f", "hls", "-hls_time", "0.4", "-hls_playlist_type", "vod"])
            .args(args)
            .arg("index.m3u8"),
        FFMPEG_GUARD,
        "ffmpeg installed and on PATH",
    )
    .await;
    assert!(
        out.status.success(),
        "ffmpeg could not make the test stream: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.join("index.m3u8")).expect("ffmpeg's playlist")
}

/// GET answers `file` whole (200), or the one `Range: bytes=a-b` asked (206), as a
/// static file server does.
fn ranged_file(file: Vec<u8>) -> axum::routing::MethodRouter {
    let file = bytes::Bytes::from(file);
    get(move |headers: axum::http::HeaderMap| {
        let file = file.clone();
        async move {
            let range = headers
                .get("range")
                .and_then(|v| v.to_str().ok())
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.split_once('-'))
                .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
            match range {
                Some((a, b)) if a <= b && b < file.len() => axum::response::Response::builder()
                    .status(206)
                    .header("content-type", "video/mp2t")
                    .header("content-range", format!("bytes {a}-{b}/{}", file.len()))
                    .body(axum::body::Body::from(file.slice(a..=b)))
                    .unwrap(),
                _ => respond(200, "video/mp2t", file),
            }
        }
    })
}

/// freesky with one service listing `channels` (name, stream URL), each its own channel.
async fn app_listing(channels: &[(&str, String)]) -> (TestApp, FakeUpstream) {
    let mut m3u = String::from("#EXTM3U\n");
    for (name, url) in channels {
        m3u.push_str(&format!(
            "#EXTINF:-1 tvg-id=\"{name}.example\",{name}\n{url}\n"
        ));
    }
    let list = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, m3u)
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    (app, list)
}

/// The whole `.ts` stream of channel `name` (a finished playlist plays to its end),
/// and its content type.
async fn whole_stream(app: &TestApp, name: &str) -> (String, Vec<u8>) {
    let id = app.channel_id(name).await;
    let resp = tokio::time::timeout(HANG_GUARD, app.get(&format!("/api/stream/{id}.ts")))
        .await
        .unwrap_or_else(|_| panic!("{name}: no answer"));
    assert_eq!(resp.status(), 200, "{name}");
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    let mut body = resp.bytes_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = tokio::time::timeout(HANG_GUARD, body.next())
        .await
        .unwrap_or_else(|_| panic!("{name}: the stream of a finished playlist ends"))
    {
        bytes.extend_from_slice(&chunk.expect("chunk"));
    }
    (ctype, bytes)
}

/// A live channel whose source is a plain media file that is not MPEG-TS (a progressive
/// MP4, Matroska sent as `application/octet-stream`) is relayed byte for byte on `.ts`
/// with its own media type, told by its first bytes: a player told `video/MP2T` would
/// parse MP4 boxes as transport packets. ffprobe reads what came as that container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_is_not_mpeg_ts_is_relayed_with_its_own_media_type() {
    let dir = tempfile::tempdir().unwrap();
    for (file, extra) in [
        ("film.mp4", &["-movflags", "+faststart"][..]),
        ("film.mkv", &[]),
    ] {
        let out = dir.path().join(file);
        let video = [
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=25",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ];
        let args = [&QUIET[..], &video, extra, &[out.to_str().unwrap()]].concat();
        run_tool("ffmpeg", &args).await;
    }
    let mp4 = std::fs::read(dir.path().join("film.mp4")).unwrap();
    let mkv = std::fs::read(dir.path().join("film.mkv")).unwrap();
    let origin = FakeUpstream::bind()
        .await
        .bytes("/live/film", "video/mp4", mp4.clone())
        .bytes("/live/reel", "application/octet-stream", mkv.clone())
        .start();
    // (Without a file extension: a listed `.mp4` is a movie, not a channel.)
    let (app, _list) = app_listing(&[
        ("Film", origin.url("/live/film")),
        ("Reel", origin.url("/live/reel")),
    ])
    .await;
    for (name, file, want_type, want_format) in [
        ("Film", &mp4, "video/mp4", "mp4"),
        ("Reel", &mkv, "video/x-matroska", "matroska"),
    ] {
        let (ctype, bytes) = whole_stream(&app, name).await;
        assert_eq!(ctype, want_type, "{name}");
        assert!(
            bytes == *file,
            "{name}: {} bytes relayed of {}",
            bytes.len(),
            file.len()
        );
        let format = container_of(&dir.path().join(format!("{name}.out")), &bytes).await;
        assert!(
            format.contains(want_format),
            "{name}: ffprobe read {format}"
        );
    }
}

/// HLS whose segments are raw AAC files (ADTS; radio stations publish such) is sent on
/// `.ts` as the AAC it is, typed `audio/aac`: VLC told `video/MP2T` picks its TS
/// demuxer and plays nothing. ffprobe reads what came as AAC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_audio_segments_are_sent_typed_as_their_audio() {
    let dir = tempfile::tempdir().unwrap();
    let mut playlist = String::from(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n",
    );
    for i in 0..3 {
        let out = dir.path().join(format!("a{i}.aac"));
        let audio = ["-f", "lavfi", "-i", "sine=frequency=440:duration=2"];
        let adts = ["-c:a", "aac", "-f", "adts", out.to_str().unwrap()];
        run_tool("ffmpeg", &[&QUIET[..], &audio, &adts].concat()).await;
        playlist.push_str(&format!("#EXTINF:2.0,\na{i}.aac\n"));
    }
    playlist.push_str("#EXT-X-ENDLIST\n");
    let origin = FakeUpstream::bind()
        .await
        .text("/radio/index.m3u8", HLS_TYPE, playlist)
        .dir("/radio", dir.path())
        .start();
    let (app, _list) = app_listing(&[("Radio", origin.url("/radio/index.m3u8"))]).await;
    let (ctype, bytes) = whole_stream(&app, "Radio").await;
    assert_eq!(ctype, "audio/aac");
    let segments: Vec<u8> = (0..3)
        .flat_map(|i| std::fs::read(dir.path().join(format!("a{i}.aac"))).unwrap())
        .collect();
    assert!(
        bytes == segments,
        "{} bytes of {}",
        bytes.len(),
        segments.len()
    );
    let format = container_of(&dir.path().join("radio.out"), &bytes).await;
    assert_eq!(format.trim(), "aac");
}

/// `bytes=a-b` of each `#EXT-X-BYTERANGE:len@off` of `playlist`, in order.
fn byte_ranges(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-BYTERANGE:"))
        .map(|r| {
            let (len, off) = r.split_once('@').expect("ffmpeg writes len@off");
            let (len, off): (u64, u64) = (len.parse().unwrap(), off.parse().unwrap());
            format!("bytes={off}-{}", off + len - 1)
        })
        .collect()
}

/// ffmpeg's `-hls_flags single_file`: each segment is a byte range of one file. The
/// `.ts` stream sends each range once, so the file once (it sent the whole file once
/// per segment), asking the upstream for just that range; from an upstream that
/// ignores `Range` (the whole file each time) it cuts the range out itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_range_segments_send_only_their_range() {
    let dir = tempfile::tempdir().unwrap();
    let playlist = make_hls(dir.path(), &["-hls_flags", "single_file"]).await;
    let ranges = byte_ranges(&playlist);
    assert_eq!(ranges.len(), 10, "{playlist}");
    let file = std::fs::read(dir.path().join("index.ts")).unwrap();
    let origin = FakeUpstream::bind()
        .await
        .text("/ranged/index.m3u8", HLS_TYPE, playlist.clone())
        .route("/ranged/index.ts", ranged_file(file.clone()))
        .text("/whole/index.m3u8", HLS_TYPE, playlist.clone())
        .bytes("/whole/index.ts", "video/mp2t", file.clone())
        .start();
    let (app, _list) = app_listing(&[
        ("Ranged", origin.url("/ranged/index.m3u8")),
        ("Whole", origin.url("/whole/index.m3u8")),
    ])
    .await;
    for name in ["Ranged", "Whole"] {
        let (ctype, got) = whole_stream(&app, name).await;
        assert_eq!(ctype, "video/MP2T");
        assert_eq!(got.len(), file.len(), "{name}: the file's bytes, once");
        assert!(got == file, "{name}: the ranges in order are the file");
    }
    let asked: Vec<String> = origin
        .requests_to("/ranged/index.ts")
        .iter()
        .map(|r| r.header("range").unwrap_or("(whole)").to_string())
        .collect();
    assert_eq!(asked, ranges, "one request per segment, for its range");
}

/// The same single-file HLS played by an HLS player through `.m3u8`: each segment link
/// asked for its `EXT-X-BYTERANGE` answers 206 with just those bytes, also from an
/// upstream that ignores `Range` (it answered the whole file as 200, which a player
/// read as the segment: ffmpeg decoded about a third of the frames). ffmpeg then
/// decodes every frame of both, without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_range_segments_of_an_upstream_ignoring_range_are_cut_for_hls_players() {
    let dir = tempfile::tempdir().unwrap();
    let playlist = make_hls(dir.path(), &["-hls_flags", "single_file"]).await;
    let file = std::fs::read(dir.path().join("index.ts")).unwrap();
    let origin = FakeUpstream::bind()
        .await
        .text("/ranged/index.m3u8", HLS_TYPE, playlist.clone())
        .route("/ranged/index.ts", ranged_file(file.clone()))
        .text("/whole/index.m3u8", HLS_TYPE, playlist.clone())
        .bytes("/whole/index.ts", "video/mp2t", file.clone())
        .start();
    let (app, _list) = app_listing(&[
        ("Ranged", origin.url("/ranged/index.m3u8")),
        ("Whole", origin.url("/whole/index.m3u8")),
    ])
    .await;
    for name in ["Ranged", "Whole"] {
        let id = app.channel_id(name).await;
        let proxied = app.get(&format!("/api/stream/{id}.m3u8")).await;
        assert_eq!(proxied.status(), 200, "{name}");
        let proxied = proxied.text().await.unwrap();
        let ranges = byte_ranges(&proxied);
        let links: Vec<String> = proxied
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        assert_eq!(ranges.len(), 10, "{proxied}");
        assert_eq!(links.len(), ranges.len(), "{proxied}");
        for (link, range) in links.iter().zip(&ranges) {
            let resp = reqwest::Client::new()
                .get(link)
                .header("range", range)
                .send()
                .await
                .expect("segment");
            assert_eq!(resp.status(), 206, "{name} {range}");
            let (from, to) = range
                .trim_start_matches("bytes=")
                .split_once('-')
                .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()))
                .unwrap();
            let want_range = format!("bytes {from}-{to}/{}", file.len());
            assert_eq!(
                resp.headers()["content-range"],
                want_range.as_str(),
                "{name}"
            );
            let got = resp.bytes().await.expect("body");
            assert!(
                got[..] == file[from..=to],
                "{name} {range}: {} bytes",
                got.len()
            );
        }
        let (frames, errors) = run_tool(
            "ffmpeg",
            &[
                "-nostdin",
                "-v",
                "error",
                "-i",
                &app.url(&format!("/api/stream/{id}.m3u8")),
                "-map",
                "0:v",
                "-f",
                "framemd5",
                "-",
            ],
        )
        .await;
        let decoded = frames.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(decoded, 100, "{name}: 4 s at 25 fps; ffmpeg said {errors}");
        assert!(errors.trim().is_empty(), "{name}: {errors}");
    }
}

/// `plain` AES-128-CBC encrypted with `key` and `iv`, PKCS#7 padded (as `openssl
/// aes-128-cbc` and ffmpeg's HLS muxer do).
fn aes_128(plain: &[u8], key: &[u8; 16], iv: &[u8; 16]) -> Vec<u8> {
    use cbc::cipher::{block_padding::Pkcs7, BlockModeEncrypt, KeyIvInit};
    let mut buf = vec![0u8; plain.len() + 16];
    buf[..plain.len()].copy_from_slice(plain);
    cbc::Encryptor::<aes::Aes128>::new(&(*key).into(), &(*iv).into())
        .encrypt_padded::<Pkcs7>(&mut buf, plain.len())
        .expect("room for the padding")
        .to_vec()
}

/// ffmpeg's 10 segments of `make_hls` in `dir` (`index0.ts`...), and a playlist of them
/// numbered from `first` with `tags[i]` before segment `i`.
fn playlist_with(
    dir: &std::path::Path,
    first: u64,
    tags: &[(usize, String)],
) -> (String, Vec<Vec<u8>>) {
    let segments: Vec<Vec<u8>> = (0..10)
        .map(|i| std::fs::read(dir.join(format!("index{i}.ts"))).expect("ffmpeg's segment"))
        .collect();
    let mut p = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
    );
    for i in 0..segments.len() {
        for (_, tag) in tags.iter().filter(|(at, _)| *at == i) {
            p.push_str(tag);
            p.push('\n');
        }
        p.push_str(&format!("#EXTINF:0.4,\nindex{i}.ts\n"));
    }
    p.push_str("#EXT-X-ENDLIST\n");
    (p, segments)
}

/// AES-128 segments (`#EXT-X-KEY:METHOD=AES-128`) are decrypted before they join the
/// stream: a key with an explicit IV, then a rotated key without one (the IV is the
/// segment's media sequence number), then clear segments (`METHOD=NONE`), then the
/// first key again. The `.ts` stream is byte for byte that of the same segments
/// unencrypted (it passed the ciphertext through), each key fetched once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aes_128_segments_are_decrypted() {
    let dir = tempfile::tempdir().unwrap();
    make_hls(dir.path(), &[]).await;
    let (a, b) = (*b"0123456789abcdef", *b"fedcba9876543210");
    let iv_a: [u8; 16] = std::array::from_fn(|i| 0xA0 + i as u8);
    let first = 7u64;
    let tags = [
        (
            0,
            "#EXT-X-KEY:METHOD=AES-128,URI=\"keys/a.key\",IV=0xA0A1A2A3A4A5A6A7A8A9AAABACADAEAF"
                .to_string(),
        ),
        (
            3,
            "#EXT-X-KEY:METHOD=AES-128,URI=\"/enc/keys/b.key\"".to_string(),
        ),
        (6, "#EXT-X-KEY:METHOD=NONE".to_string()),
        (
            8,
            "#EXT-X-KEY:METHOD=AES-128,URI=\"keys/a.key\",IV=0xA0A1A2A3A4A5A6A7A8A9AAABACADAEAF"
                .to_string(),
        ),
    ];
    let (encrypted, segments) = playlist_with(dir.path(), first, &tags);
    let (plain, _) = playlist_with(dir.path(), first, &[]);
    let mut origin = FakeUpstream::bind()
        .await
        .text("/enc/index.m3u8", HLS_TYPE, encrypted)
        .text("/plain/index.m3u8", HLS_TYPE, plain)
        .bytes("/enc/keys/a.key", "application/octet-stream", a.to_vec())
        .bytes("/enc/keys/b.key", "application/octet-stream", b.to_vec());
    for (i, seg) in segments.iter().enumerate() {
        let sealed = match i {
            0..=2 | 8..=9 => aes_128(seg, &a, &iv_a),
            3..=5 => aes_128(seg, &b, &u128::from(first + i as u64).to_be_bytes()),
            _ => seg.clone(),
        };
        origin = origin
            .bytes(&format!("/enc/index{i}.ts"), "video/mp2t", sealed)
            .bytes(&format!("/plain/index{i}.ts"), "video/mp2t", seg.clone());
    }
    let origin = origin.start();
    let (app, _list) = app_listing(&[
        ("Encrypted", origin.url("/enc/index.m3u8")),
        ("Plain", origin.url("/plain/index.m3u8")),
    ])
    .await;
    let (_, want) = whole_stream(&app, "Plain").await;
    let (ctype, got) = whole_stream(&app, "Encrypted").await;
    assert_eq!(ctype, "video/MP2T");
    assert_eq!(got.len(), want.len(), "the decrypted length");
    assert!(got == want, "the decrypted stream is the clear one");
    assert_eq!(origin.hits("/enc/keys/a.key"), 1, "{:?}", origin.paths());
    assert_eq!(origin.hits("/enc/keys/b.key"), 1, "{:?}", origin.paths());
}

/// What a `.ts` stream cannot decrypt fails its source with a clear error rather than
/// sending ciphertext: a SAMPLE-AES source hands over to the next at once (none of its
/// segments fetched), and a key that is not 16 bytes is a 502 saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecryptable_segments_fail_the_source_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    make_hls(dir.path(), &[]).await;
    let sample_aes = [(
        0,
        "#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"k.key\",KEYFORMAT=\"identity\"".to_string(),
    )];
    let (sample, segments) = playlist_with(dir.path(), 0, &sample_aes);
    let short_key = [(0, "#EXT-X-KEY:METHOD=AES-128,URI=\"k.key\"".to_string())];
    let (short, _) = playlist_with(dir.path(), 0, &short_key);
    let (plain, _) = playlist_with(dir.path(), 0, &[]);
    let mut origin = FakeUpstream::bind()
        .await
        .text("/sample/index.m3u8", HLS_TYPE, sample)
        .text("/short/index.m3u8", HLS_TYPE, short)
        .bytes(
            "/short/k.key",
            "application/octet-stream",
            b"fifteen bytes!!".to_vec(),
        )
        .text("/plain/index.m3u8", HLS_TYPE, plain);
    for (i, seg) in segments.iter().enumerate() {
        for at in ["sample", "short", "plain"] {
            origin = origin.bytes(&format!("/{at}/index{i}.ts"), "video/mp2t", seg.clone());
        }
    }
    let origin = origin.start();
    let (app, _lists, id) = two_sources(
        "Sampled",
        [
            origin.url("/sample/index.m3u8"),
            origin.url("/plain/index.m3u8"),
        ],
        "",
    )
    .await;
    let resp = tokio::time::timeout(HANG_GUARD, app.get(&format!("/api/stream/{id}.ts")))
        .await
        .expect("an answer");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let got = read_at_least(&mut body, segments[0].len()).await;
    assert!(
        got[..segments[0].len()] == segments[0][..],
        "the clear source plays"
    );
    assert_eq!(origin.hits("/sample/index0.ts"), 0, "{:?}", origin.paths());

    let (app, _list) = app_listing(&[("Short", origin.url("/short/index.m3u8"))]).await;
    let id = app.channel_id("Short").await;
    let resp = tokio::time::timeout(HANG_GUARD, app.get(&format!("/api/stream/{id}.ts")))
        .await
        .expect("an answer");
    let body = crate::common::assert_api_error(resp, 502).await;
    let error = body["detail"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("is 15 bytes, not 16"), "{body}");
}

/// fMP4 HLS (`EXT-X-MAP`): the stream is the init section, then the fragments, a
/// valid fragmented MP4 that ffprobe reads whole (`video/mp4`, not `video/MP2T`; it
/// sent the fragments without their init section). The init section goes again when
/// the map changes (after a discontinuity), and one that is a byte range of the
/// media file (ffmpeg's fMP4 `single_file`) is sent as that range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fmp4_streams_carry_their_init_section() {
    let split = tempfile::tempdir().unwrap();
    let fmp4 = ["-hls_segment_type", "fmp4"];
    make_hls(
        split.path(),
        &[&fmp4[..], &["-hls_fmp4_init_filename", "init.mp4"]].concat(),
    )
    .await;
    let single = tempfile::tempdir().unwrap();
    let single_playlist = make_hls(
        single.path(),
        &[&fmp4[..], &["-hls_flags", "single_file"]].concat(),
    )
    .await;
    assert!(
        single_playlist.contains("#EXT-X-MAP:URI=\"index.m4s\",BYTERANGE="),
        "{single_playlist}"
    );
    let single_file = std::fs::read(single.path().join("index.m4s")).unwrap();
    let init = std::fs::read(split.path().join("init.mp4")).unwrap();
    let frags: Vec<Vec<u8>> = (0..10)
        .map(|i| std::fs::read(split.path().join(format!("index{i}.m4s"))).unwrap())
        .collect();
    let mut changed = String::from(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:1\n#EXT-X-MAP:URI=\"init.mp4\"\n",
    );
    for i in 0..10 {
        if i == 5 {
            changed.push_str("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"again/init.mp4\"\n");
        }
        changed.push_str(&format!("#EXTINF:0.4,\nindex{i}.m4s\n"));
    }
    changed.push_str("#EXT-X-ENDLIST\n");
    let mut origin = FakeUpstream::bind()
        .await
        .dir("/split", split.path())
        .text("/changed/index.m3u8", HLS_TYPE, changed)
        .bytes("/changed/init.mp4", "video/mp4", init.clone())
        .bytes("/changed/again/init.mp4", "video/mp4", init.clone())
        .text("/single/index.m3u8", HLS_TYPE, single_playlist)
        .route("/single/index.m4s", ranged_file(single_file.clone()));
    for (i, frag) in frags.iter().enumerate() {
        origin = origin.bytes(&format!("/changed/index{i}.m4s"), "video/mp4", frag.clone());
    }
    let origin = origin.start();
    let (app, _list) = app_listing(&[
        ("Fragmented", origin.url("/split/index.m3u8")),
        ("Remapped", origin.url("/changed/index.m3u8")),
        ("Single", origin.url("/single/index.m3u8")),
    ])
    .await;

    let (ctype, got) = whole_stream(&app, "Fragmented").await;
    assert_eq!(ctype, "video/mp4");
    let want = [&init[..], &frags.concat()].concat();
    assert_eq!(
        got.len(),
        want.len(),
        "the init section, then every fragment"
    );
    assert!(got == want, "the init section, then every fragment");
    let file = split.path().join("joined.mp4");
    std::fs::write(&file, &got).unwrap();
    let (streams, _) = run_tool(
        "ffprobe",
        &[
            "-v",
            "error",
            "-count_packets",
            "-show_entries",
            "stream=codec_type,nb_read_packets",
            "-of",
            "csv=p=0",
            file.to_str().unwrap(),
        ],
    )
    .await;
    let streams: Vec<&str> = streams.lines().map(str::trim).collect();
    assert!(streams.contains(&"video,100"), "4 s at 25 fps: {streams:?}");
    assert!(
        streams.iter().any(|s| s.starts_with("audio,")),
        "{streams:?}"
    );

    let (_, got) = whole_stream(&app, "Remapped").await;
    let want = [&init[..], &frags[..5].concat(), &init, &frags[5..].concat()].concat();
    assert!(got == want, "the init section again where the map changed");

    let (ctype, got) = whole_stream(&app, "Single").await;
    assert_eq!(ctype, "video/mp4");
    assert_eq!(
        got.len(),
        single_file.len(),
        "the init range and each fragment's, once"
    );
    assert!(got == single_file);
}

/// A `.ts` session that fails over from an fMP4 source to an MPEG-TS one changes
/// format midway: a viewer joining after the failover gets MPEG-TS from its first
/// byte, labelled `video/MP2T`, not the fMP4 source's init section first (the session
/// used to keep A's init section and send it to every viewer who joined later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_joining_after_a_failover_from_fmp4_to_mpeg_ts_gets_no_init_section() {
    let dir = tempfile::tempdir().unwrap();
    make_hls(
        dir.path(),
        &[
            "-hls_segment_type",
            "fmp4",
            "-hls_fmp4_init_filename",
            "init.mp4",
        ],
    )
    .await;
    let init = std::fs::read(dir.path().join("init.mp4")).unwrap();
    assert_eq!(
        &init[4..8],
        b"ftyp",
        "ffmpeg's init section starts with ftyp"
    );
    let frags: Vec<Vec<u8>> = (0..3)
        .map(|i| std::fs::read(dir.path().join(format!("index{i}.m4s"))).unwrap())
        .collect();
    // Source A: a live fMP4 playlist of three fragments, answering 500 once broken.
    let mut live_fmp4 = String::from(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXT-X-MAP:URI=\"init.mp4\"\n",
    );
    for i in 0..3 {
        live_fmp4.push_str(&format!("#EXTINF:0.4,\nindex{i}.m4s\n"));
    }
    let broken = Arc::new(AtomicBool::new(false));
    let flag = broken.clone();
    let fmp4 = FakeUpstream::bind()
        .await
        .route(
            "/f/live.m3u8",
            get(move || {
                let failing = flag.load(Ordering::SeqCst);
                let body = live_fmp4.clone();
                async move {
                    if failing {
                        respond(500, "text/plain", "down")
                    } else {
                        respond(200, HLS_TYPE, body)
                    }
                }
            }),
        )
        .dir("/f", dir.path())
        .start();
    // Source B: a live MPEG-TS playlist (the demo's segments, round and round) whose
    // window moves on a segment every 0.5 s, so that a viewer joining late gets new
    // segments.
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    let segs: Arc<Vec<bytes::Bytes>> = Arc::new(
        (0..4)
            .map(|i| {
                std::fs::read(demo.join(format!("seg{i}.ts")))
                    .unwrap()
                    .into()
            })
            .collect(),
    );
    let start = std::time::Instant::now();
    let mpeg_ts = FakeUpstream::bind()
        .await
        .route(
            "/m/live.m3u8",
            get(move || async move {
                let n = start.elapsed().as_millis() / 500;
                let mut body = format!(
                    "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{n}\n"
                );
                for k in n..n + 3 {
                    body.push_str(&format!("#EXTINF:0.5,\ns{k}.ts\n"));
                }
                respond(200, HLS_TYPE, body)
            }),
        )
        .route(
            "/m/{seg}",
            get(
                move |axum::extract::Path(seg): axum::extract::Path<String>| {
                    let segs = segs.clone();
                    async move {
                        let k: usize = seg
                            .strip_prefix('s')
                            .and_then(|s| s.strip_suffix(".ts"))
                            .and_then(|k| k.parse().ok())
                            .unwrap_or_default();
                        respond(200, "video/mp2t", segs[k % segs.len()].clone())
                    }
                },
            ),
        )
        .start();
    let (app, _lists, id) = two_sources(
        "Shared",
        [fmp4.url("/f/live.m3u8"), mpeg_ts.url("/m/live.m3u8")],
        "[cache]\nplaylist_ttl = \"100ms\"\n\n[streams]\nfailover_after = 2\n",
    )
    .await;

    let first = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "video/mp4");
    let mut first = first.bytes_stream();
    let fmp4_part = [&init[..], &frags.concat()].concat();
    let mut got = read_at_least(&mut first, fmp4_part.len()).await;
    assert!(
        got[..fmp4_part.len()] == fmp4_part[..],
        "the init section, then the three fragments"
    );

    // A fails: after two failed reloads the session carries on from B, MPEG-TS packets
    // right after the fragments.
    broken.store(true, Ordering::SeqCst);
    let want = (fmp4_part.len() + 3 * 188).saturating_sub(got.len());
    got.extend(read_at_least(&mut first, want).await);
    let after = &got[fmp4_part.len()..];
    assert!(
        (0..3).all(|k| after[k * 188] == 0x47),
        "MPEG-TS packets from B after A's fragments: {:02x?}",
        &after[..16]
    );

    // Joining now: MPEG-TS from the first byte.
    let second = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(second.status(), 200);
    let ctype = second.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    let mut second = second.bytes_stream();
    let got = read_at_least(&mut second, 3 * 188).await;
    assert_ne!(
        &got[4..8],
        b"ftyp",
        "a viewer joining after the failover was sent A's fMP4 init section first"
    );
    assert!(
        (0..3).all(|k| got[k * 188] == 0x47),
        "a viewer joining after the failover gets MPEG-TS packets first: {:02x?}",
        &got[..16]
    );
    assert_eq!(ctype, "video/MP2T");
    drop(first);
}

/// A master playlist whose best variant takes its audio from a separate
/// `EXT-X-MEDIA TYPE=AUDIO` rendition (a URI of its own): the `.ts` stream follows
/// the best variant with its audio muxed in instead (it followed the highest, video
/// only: silent). When every variant needs a separate rendition it still plays the
/// highest (silent; freesky warns once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_with_separate_audio_plays_a_variant_with_its_audio_in() {
    let master = |muxed: bool| {
        let mut m = String::from(
            "#EXTM3U\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"English\",DEFAULT=YES,URI=\"audio/index.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=5000000,CODECS=\"avc1.64001f\",AUDIO=\"aud\"\nhi/index.m3u8\n",
        );
        m.push_str(if muxed {
            "#EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.42e01e,mp4a.40.2\"\nlo/index.m3u8\n"
        } else {
            "#EXT-X-STREAM-INF:BANDWIDTH=800000,AUDIO=\"aud\"\nlo/index.m3u8\n"
        });
        m
    };
    let mut origin = FakeUpstream::bind()
        .await
        .text("/muxed/master.m3u8", HLS_TYPE, master(true))
        .text("/separate/master.m3u8", HLS_TYPE, master(false));
    for at in ["muxed", "separate"] {
        for v in ["hi", "lo", "audio"] {
            origin = origin.text(
                &format!("/{at}/{v}/index.m3u8"),
                HLS_TYPE,
                live_playlist(&["s0.ts", "s1.ts"]),
            );
        }
    }
    let origin =
        origin
            .route(
                "/{at}/{v}/{seg}",
                get(
                    |axum::extract::Path((_, v, _)): axum::extract::Path<(
                        String,
                        String,
                        String,
                    )>| async move { respond(200, "video/mp2t", format!("<{v}>")) },
                ),
            )
            .start();
    let (app, _list) = app_listing(&[
        ("Muxed", origin.url("/muxed/master.m3u8")),
        ("Separate", origin.url("/separate/master.m3u8")),
    ])
    .await;
    for (name, want) in [("Muxed", "<lo>"), ("Separate", "<hi>")] {
        let id = app.channel_id(name).await;
        let resp = tokio::time::timeout(HANG_GUARD, app.get(&format!("/api/stream/{id}.ts")))
            .await
            .expect("an answer");
        assert_eq!(resp.status(), 200, "{name}");
        let mut body = resp.bytes_stream();
        let got = read_at_least(&mut body, want.len()).await;
        assert_eq!(&got[..want.len()], want.as_bytes(), "{name}");
    }
    assert_eq!(
        origin.hits("/muxed/hi/index.m3u8"),
        0,
        "{:?}",
        origin.paths()
    );
}

/// A live playlist that stops moving while its segments fail (fewer than
/// `failover_after`): the source has stopped. After `3 x` its target duration (6 s at
/// least) without a new segment the next source plays; alone, a 502 says why. Before,
/// the viewer waited for the first bytes' 60 s bound and got a 504, the backup untried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_live_playlist_whose_segments_fail_hands_over_to_the_next() {
    let origin = FakeUpstream::bind()
        .await
        .text(
            "/frozen.m3u8",
            HLS_TYPE,
            live_playlist(&["nope7.ts", "nope8.ts"]),
        )
        .status("/nope7.ts", 404)
        .status("/nope8.ts", 404)
        .text("/good.m3u8", HLS_TYPE, live_playlist(&["g0.ts", "g1.ts"]))
        .route(
            "/{seg}",
            get(|| async { respond(200, "video/mp2t", "<good>") }),
        )
        .start();
    let bound = std::time::Duration::from_secs(30);
    let (app, _lists, id) = two_sources(
        "Shared",
        [origin.url("/frozen.m3u8"), origin.url("/good.m3u8")],
        "",
    )
    .await;
    let resp = tokio::time::timeout(bound, app.get(&format!("/api/stream/{id}.ts")))
        .await
        .expect("an answer before the first bytes' bound");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let got = read_at_least(&mut body, "<good>".len()).await;
    assert!(
        String::from_utf8_lossy(&got).starts_with("<good>"),
        "{got:?}"
    );

    let list = list_of(&[("Frozen", origin.url("/frozen.m3u8"))]).await;
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let id = app.channel_id("Frozen").await;
    let resp = tokio::time::timeout(bound, app.get(&format!("/api/stream/{id}.ts")))
        .await
        .expect("an answer before the first bytes' bound");
    let body = crate::common::assert_api_error(resp, 502).await;
    assert_eq!(body["detail"][0]["service"], "Origin", "{body}");
    assert!(
        body["detail"][0]["error"]
            .as_str()
            .unwrap()
            .contains("listed no new segment for 6s"),
        "{body}"
    );
    assert_eq!(
        body["detail"].as_array().unwrap().len(),
        1,
        "tried twice for one reason, listed once: {body}"
    );
}

/// What the stale rule above leaves alone, watched together for 15 s: a source that
/// has sent its window and whose next segment fails is waited for (not reopened,
/// which would send the window again and again), and a live playlist that has listed
/// nothing yet (an upstream starting on demand) is waited for up to the first bytes'
/// bound, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_has_sent_or_listed_nothing_yet_is_waited_for() {
    let origin = FakeUpstream::bind()
        .await
        .text(
            "/sent.m3u8",
            HLS_TYPE,
            live_playlist(&["s0.ts", "s1.ts", "s2.ts"]),
        )
        .bytes("/s0.ts", "video/mp2t", ten_packets(0))
        .bytes("/s1.ts", "video/mp2t", ten_packets(1))
        .status("/s2.ts", 404)
        .text("/empty.m3u8", HLS_TYPE, live_playlist(&[]))
        .start();
    let list = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n#EXTINF:-1,Sent\n{}\n#EXTINF:-1,Empty\n{}\n",
                origin.url("/sent.m3u8"),
                origin.url("/empty.m3u8")
            ),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let (sent, empty) = (app.channel_id("Sent").await, app.channel_id("Empty").await);
    let watch = std::time::Duration::from_secs(15);
    let sent = async {
        let resp = app.get(&format!("/api/stream/{sent}.ts")).await;
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        let mut got = 0;
        let _ = tokio::time::timeout(watch, async {
            while let Some(Ok(chunk)) = body.next().await {
                got += chunk.len();
            }
        })
        .await;
        got
    };
    let empty_path = format!("/api/stream/{empty}.ts");
    let empty = tokio::time::timeout(watch, app.get(&empty_path));
    let (got, empty) = tokio::join!(sent, empty);
    assert_eq!(got, 2 * 1880, "the window once, not again");
    assert!(
        empty.is_err(),
        "still waiting for a first segment: {:?}",
        empty.map(|r| r.status())
    );
}

/// A live playlist that has sent and then freezes (an encoder that died behind a
/// playlist still served, its old segments still there) hands the viewer over to the
/// channel's next source after five target durations (10 s here), rather than keeping
/// it on a still picture for ever; alone, it is waited for (the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_playlist_that_froze_after_sending_hands_over_to_the_next() {
    let origin = good(frozen(FakeUpstream::bind().await)).start();
    let (app, _lists, id) = two_sources(
        "Shared",
        [origin.url("/froze.m3u8"), origin.url("/good.m3u8")],
        "",
    )
    .await;
    let m = markers_until_next(&app, &id, Duration::from_secs(40), "frozen").await;
    let first_b = m.iter().position(|&x| x == 0xbb).unwrap();
    assert_eq!(
        first_b, 30,
        "the frozen source's window once, then the next: {m:?}"
    );
}

/// A source whose playlist answered and then hangs (no answer at all within the
/// service's 10 s `timeout`) hands the viewer over to the next source after that one
/// wait, not after `failover_after` (3) of them: about 33 s of a frozen picture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playlist_that_hangs_mid_stream_hands_over_after_one_timeout() {
    let polls = Arc::new(AtomicUsize::new(0));
    let seen = polls.clone();
    let origin = good(FakeUpstream::bind().await)
        .route(
            "/hangs.m3u8",
            get(move || {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n > 0 {
                        tokio::time::sleep(HANG_GUARD).await;
                    }
                    respond(200, HLS_TYPE, live_playlist(&["h0.ts"]))
                }
            }),
        )
        .bytes("/h0.ts", "video/mp2t", ten_packets(0xaa))
        .start();
    let (app, _lists, id) = two_sources(
        "Shared",
        [origin.url("/hangs.m3u8"), origin.url("/good.m3u8")],
        "",
    )
    .await;
    // One timeout (10 s) and a margin for a loaded machine; three would be 33 s (and
    // the test client gives up after 20).
    let m = markers_until_next(&app, &id, Duration::from_secs(18), "hanging").await;
    assert_eq!(m[0], 0xaa, "the first source played before it hung: {m:?}");
    assert!(
        polls.load(Ordering::SeqCst) >= 2,
        "its playlist was reloaded"
    );
}

/// A playing source whose next segments hang hands over after `failover_after` (2
/// here) waits of three target durations (6 s each), not of `segment_timeout` (60 s
/// each, two minutes of a still picture).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_that_hang_mid_stream_hand_over_in_seconds() {
    let hang = || {
        get(|| async {
            tokio::time::sleep(HANG_GUARD).await;
            respond(200, "video/mp2t", ten_packets(0xcc))
        })
    };
    let origin = good(FakeUpstream::bind().await)
        .text(
            "/a.m3u8",
            HLS_TYPE,
            live_playlist(&["a0.ts", "a1.ts", "a2.ts", "a3.ts"]),
        )
        .bytes("/a1.ts", "video/mp2t", ten_packets(0xaa))
        .route("/a2.ts", hang())
        .route("/a3.ts", hang())
        .start();
    let (app, _lists, id) = two_sources(
        "Shared",
        [origin.url("/a.m3u8"), origin.url("/good.m3u8")],
        "[streams]\nfailover_after = 2\n",
    )
    .await;
    // Two waits of 6 s and a margin, under the test client's 20 s.
    let m = markers_until_next(&app, &id, Duration::from_secs(18), "hanging").await;
    assert_eq!(m[0], 0xaa, "the first source played before it hung: {m:?}");
    assert!(!m.contains(&0xcc), "nothing of a segment cut short: {m:?}");
}

/// The same frozen source when the next one is down too: the session goes back to
/// it after the next one fails, and goes on after the last segment it sent, rather
/// than sending its window again (a 6 s clip looping every 12 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_source_opened_again_does_not_send_its_window_again() {
    let origin = frozen(FakeUpstream::bind().await)
        .status("/down.m3u8", 404)
        .start();
    let (app, _lists, id) = two_sources(
        "Shared",
        [origin.url("/froze.m3u8"), origin.url("/down.m3u8")],
        "",
    )
    .await;
    let resp = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut got = 0;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(18), async {
        while let Some(Ok(chunk)) = body.next().await {
            got += chunk.len();
        }
    })
    .await;
    // The frozen source was given up and opened again meanwhile (after 10 s, then the
    // next source's 404).
    let tried_next = origin.paths().iter().filter(|p| *p == "/down.m3u8").count();
    assert!(
        tried_next >= 1,
        "the next source was never tried: {:?}",
        origin.paths()
    );
    assert_eq!(got, 3 * 1880, "the window once, not again");
}

/// A first source whose segments trickle (a byte every 200 ms: never idle, never
/// done) is given up for the next one within a few target durations, while the viewer
/// still waits for its first bytes, not after `segment_timeout` (60 s, a 504).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_source_whose_segments_trickle_hands_over_to_the_next_in_time() {
    let origin = FakeUpstream::bind()
        .await
        .text("/a.m3u8", HLS_TYPE, live_playlist(&["a0.ts", "a1.ts"]))
        .route(
            "/{seg}",
            get(
                |axum::extract::Path(seg): axum::extract::Path<String>| async move {
                    if seg.starts_with('b') {
                        return respond(200, "video/mp2t", ten_packets(0xbb));
                    }
                    let trickle = futures::stream::unfold(0u32, |n| async move {
                        if n > 0 {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        }
                        Some((Ok::<_, std::convert::Infallible>(vec![0x47u8]), n + 1))
                    });
                    axum::response::Response::builder()
                        .header("content-type", "video/mp2t")
                        .body(axum::body::Body::from_stream(trickle))
                        .unwrap()
                },
            ),
        )
        .text("/b.m3u8", HLS_TYPE, live_playlist(&["b0.ts", "b1.ts"]))
        .start();
    let (app, _lists, id) =
        two_sources("Shared", [origin.url("/a.m3u8"), origin.url("/b.m3u8")], "").await;
    let started = std::time::Instant::now();
    let resp = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let found = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut got = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            got.extend_from_slice(&chunk);
            if got.contains(&0xbb) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        found == Ok(true),
        "the next source's bytes did not come within 20 s ({:?}): {:?}",
        started.elapsed(),
        origin.paths()
    );
}

/// A `.ts` viewer of a channel playing from service A when an admin disables A: the
/// session goes on with the channel's next source (a disabled service's titles are
/// not played), not on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_disabled_while_it_plays_hands_over_to_the_next() {
    let origin = FakeUpstream::bind()
        .await
        .route("/a.m3u8", clock_playlist("a", 3))
        .route(
            "/{seg}",
            get(
                |axum::extract::Path(seg): axum::extract::Path<String>| async move {
                    let marker = if seg.starts_with('a') { 0xaa } else { 0xbb };
                    respond(200, "video/mp2t", ten_packets(marker))
                },
            ),
        )
        .text("/b.m3u8", HLS_TYPE, live_playlist(&["b0.ts", "b1.ts"]))
        .start();
    let (app, _lists, id) =
        two_sources("Shared", [origin.url("/a.m3u8"), origin.url("/b.m3u8")], "").await;
    let resp = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = read_at_least(&mut body, 188).await;
    assert_eq!(first[4], 0xaa);
    // A viewer pinned to A (`?service=A`): nothing else may play for it.
    let pinned = app.get(&format!("/api/stream/{id}.ts?service=A")).await;
    assert_eq!(pinned.status(), 200);
    let mut pinned = pinned.bytes_stream();
    read_at_least(&mut pinned, 188).await;
    let resp = app
        .send_json(reqwest::Method::POST, "/api/services/A/disable", "", None)
        .await;
    assert_eq!(resp.status(), 200);
    // The pinned stream ends rather than holding its viewer with nothing to send.
    tokio::time::timeout(std::time::Duration::from_secs(15), async {
        while let Some(chunk) = pinned.next().await {
            if let Ok(c) = chunk {
                assert!(
                    c.chunks(188).all(|p| p[4] == 0xaa),
                    "the pinned stream played B"
                );
            }
        }
    })
    .await
    .expect("the stream pinned to the disabled service went on");
    let mut got: Vec<u8> = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(15), async {
        while !got.chunks(188).any(|p| p[4] == 0xbb) {
            match body.next().await {
                Some(Ok(chunk)) => got.extend_from_slice(&chunk),
                other => panic!("the stream ended: {other:?}"),
            }
        }
    })
    .await
    .expect("still playing from the disabled service");
}

/// A source opened again after another has played (A, then B, then A) starts near its
/// live edge: it does not resume after the segment it sent before B (its long window
/// still lists it), which would replay what B showed and stay behind live (diff review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_opened_again_after_another_played_starts_near_live() {
    use std::sync::atomic::AtomicU8;
    let phase = Arc::new(AtomicU8::new(0));
    let (pa, pb) = (phase.clone(), phase.clone());
    let origin = FakeUpstream::bind()
        .await
        // A long window (20 s) and a short one, both moving on every second.
        .route("/a.m3u8", clock_playlist("a", 20))
        .route("/b.m3u8", clock_playlist("b", 3))
        .route(
            "/{seg}",
            get(
                move |axum::extract::Path(seg): axum::extract::Path<String>| {
                    let p = if seg.starts_with('a') {
                        pa.load(Ordering::SeqCst)
                    } else {
                        pb.load(Ordering::SeqCst)
                    };
                    async move {
                        if seg.starts_with('a') {
                            if p == 1 {
                                return respond(404, "text/plain", "no");
                            }
                            let n: u64 = seg[1..seg.len() - 3].parse().unwrap();
                            respond(200, "video/mp2t", ten_packets((n % 100) as u8))
                        } else {
                            if p == 2 {
                                return respond(404, "text/plain", "no");
                            }
                            respond(200, "video/mp2t", ten_packets(0xEE))
                        }
                    }
                },
            ),
        )
        .start();
    let (app, _lists, id) =
        two_sources("Shared", [origin.url("/a.m3u8"), origin.url("/b.m3u8")], "").await;
    let resp = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut got: Vec<u8> = Vec::new();
    let markers = |got: &[u8]| got.chunks(188).map(|p| p[4]).collect::<Vec<u8>>();
    // Phase 0: A plays for 3 s.
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(Ok(c)) = body.next().await {
            got.extend_from_slice(&c);
        }
    })
    .await;
    // Phase 1: A's segments fail; B takes over and plays 8 s.
    phase.store(1, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(20), async {
        while !markers(&got).contains(&0xEE) {
            got.extend_from_slice(&body.next().await.unwrap().unwrap());
        }
    })
    .await
    .expect("B never played");
    let _ = tokio::time::timeout(Duration::from_secs(8), async {
        while let Some(Ok(c)) = body.next().await {
            got.extend_from_slice(&c);
        }
    })
    .await;
    // Phase 2: B fails, A is back.
    phase.store(2, Ordering::SeqCst);
    let seen = markers(&got).len();
    let live = unix_secs();
    tokio::time::timeout(Duration::from_secs(20), async {
        while !markers(&got)[seen..].iter().any(|&m| m != 0xEE) {
            got.extend_from_slice(&body.next().await.unwrap().unwrap());
        }
    })
    .await
    .expect("A never came back");
    let m = markers(&got);
    let first_a = *m[seen..].iter().find(|&&x| x != 0xEE).unwrap() as u64;
    // Seconds behind live, mod 100 (a segment newer than `live` is ahead: negative).
    let behind = match ((live % 100) as i64 - first_a as i64).rem_euclid(100) {
        d if d > 50 => d - 100,
        d => d,
    };
    assert!(
        behind <= 4,
        "A resumed {behind} s behind live (replaying what B showed): live {} first {first_a}; {m:?}",
        live % 100
    );
}

/// freesky with one channel, `name`, whose live playlist's poll `n` (from 0) is three
/// 1 s segments numbered from `which(n).0`, named `{which(n).1}{number}.ts`; a segment
/// whose name starts with `b` is ten packets marked 0xbb, any other 0xaa. Answers the
/// app, the channel's `.ts` body, and the poll count.
async fn numbered_live(
    name: &str,
    which: fn(usize) -> (u64, &'static str),
) -> (
    TestApp,
    impl futures::Stream<Item = reqwest::Result<bytes::Bytes>>,
    Arc<AtomicUsize>,
    [FakeUpstream; 2],
) {
    let polls = Arc::new(AtomicUsize::new(0));
    let seen = polls.clone();
    let origin = FakeUpstream::bind()
        .await
        .route(
            "/live.m3u8",
            get(move || {
                let (first, prefix) = which(seen.fetch_add(1, Ordering::SeqCst));
                let mut body = format!(
                    "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
                );
                for i in first..first + 3 {
                    body.push_str(&format!("#EXTINF:1.0,\n{prefix}{i}.ts\n"));
                }
                async move { respond(200, HLS_TYPE, body) }
            }),
        )
        .route(
            "/{seg}",
            get(
                move |axum::extract::Path(seg): axum::extract::Path<String>| async move {
                    let marker = if seg.starts_with('b') { 0xbb } else { 0xaa };
                    respond(200, "video/mp2t", ten_packets(marker))
                },
            ),
        )
        .start();
    let list = list_of(&[(name, origin.url("/live.m3u8"))]).await;
    let app = TestApp::spawn(&format!(
        "[cache]\nplaylist_ttl = \"100ms\"\n\n[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let id = app.channel_id(name).await;
    let resp = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(resp.status(), 200);
    (app, resp.bytes_stream(), polls, [origin, list])
}

/// A live upstream that starts its numbering again (an encoder restart: sequence 100,
/// then 0): the viewer goes on with the new segments from its live edge. Before, it
/// waited for the numbering to reach 103 again, sending nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_playlist_numbered_again_from_zero_goes_on() {
    let (_app, body, polls, _up) =
        numbered_live("Restarted", |n| if n < 2 { (100, "a") } else { (0, "b") }).await;
    let mut body = std::pin::pin!(body);
    let found = tokio::time::timeout(std::time::Duration::from_secs(15), async {
        let mut got = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            got.extend_from_slice(&chunk);
            if got.chunks(188).any(|p| p.get(4) == Some(&0xbb)) {
                return got.len();
            }
        }
        0
    })
    .await;
    assert!(
        found.is_ok_and(|n| n > 0),
        "the new numbering's segments come ({} playlist polls)",
        polls.load(Ordering::SeqCst)
    );
}

/// Two origins out of step behind one name (each poll answered by the other: sequence
/// 100, then 40, then 100...): the viewer is not sent the lower timeline by turns, as
/// it would be if each poll were a restart of the numbering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_playlist_flapping_between_two_numberings_is_not_followed_by_turns() {
    let (_app, body, polls, _up) = numbered_live("Flapping", |n| {
        if n.is_multiple_of(2) {
            (100, "a")
        } else {
            (40, "b")
        }
    })
    .await;
    let mut body = std::pin::pin!(body);
    let mut got = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(6), async {
        while let Some(Ok(chunk)) = body.next().await {
            got.extend_from_slice(&chunk);
        }
    })
    .await;
    let polled = polls.load(Ordering::SeqCst);
    assert!(polled >= 6, "only {polled} playlist polls");
    assert!(
        got.chunks(188).any(|p| p.get(4) == Some(&0xaa)),
        "nothing of the first numbering came"
    );
    assert!(
        !got.chunks(188).any(|p| p.get(4) == Some(&0xbb)),
        "the other origin's segments were sent ({polled} polls)"
    );
}

/// Seconds since the Unix epoch.
fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A live playlist moving on every second: the last `window` 1 s segments, each named
/// `{prefix}{its second}.ts`, numbered by that second.
fn clock_playlist(prefix: &'static str, window: u64) -> axum::routing::MethodRouter {
    get(move || async move {
        let n = unix_secs();
        let first = n + 1 - window;
        let mut s = format!("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
        for i in first..=n {
            s.push_str(&format!("#EXTINF:1.0,\n{prefix}{i}.ts\n"));
        }
        respond(200, HLS_TYPE, s)
    })
}

/// The markers (`ten_packets`) of channel `id`'s `.ts` stream read until the next
/// source's first one (0xbb), within `within`; else a panic naming the `first`
/// source still played.
async fn markers_until_next(app: &TestApp, id: &str, within: Duration, first: &str) -> Vec<u8> {
    let resp = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut got: Vec<u8> = Vec::new();
    let markers = |got: &[u8]| got.chunks(188).map(|p| p[4]).collect::<Vec<u8>>();
    tokio::time::timeout(within, async {
        while !markers(&got).contains(&0xbb) {
            match body.next().await {
                Some(Ok(chunk)) => got.extend_from_slice(&chunk),
                other => panic!("the stream ended: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("still on the {first} source: {:?}", markers(&got)));
    markers(&got)
}

/// `b` serving `/good.m3u8`: a live playlist of two segments marked 0xbb.
fn good(b: crate::common::FakeBuilder) -> crate::common::FakeBuilder {
    b.text("/good.m3u8", HLS_TYPE, live_playlist(&["g0.ts", "g1.ts"]))
        .bytes("/g0.ts", "video/mp2t", ten_packets(0xbb))
        .bytes("/g1.ts", "video/mp2t", ten_packets(0xbb))
}

/// `/froze.m3u8`: a live playlist that lists three segments (marked 0xaa) and never
/// moves on.
fn frozen(b: crate::common::FakeBuilder) -> crate::common::FakeBuilder {
    b.text(
        "/froze.m3u8",
        HLS_TYPE,
        live_playlist(&["f0.ts", "f1.ts", "f2.ts"]),
    )
    .bytes("/f0.ts", "video/mp2t", ten_packets(0xaa))
    .bytes("/f1.ts", "video/mp2t", ten_packets(0xaa))
    .bytes("/f2.ts", "video/mp2t", ten_packets(0xaa))
}

/// Ten 188-byte MPEG-TS packets (a sync byte, zeros) whose fifth byte is `marker`: a
/// segment a test can tell apart in the joined stream (1,880 bytes).
fn ten_packets(marker: u8) -> Vec<u8> {
    let mut p = [0u8; 188];
    p[0] = 0x47;
    p[4] = marker;
    p.repeat(10)
}

/// A live playlist numbered too near the top of u64 for its segments' numbers, and a
/// byte range that ends past any offset, fail their source with an error saying so
/// (the first sent its segments again on every poll; the second counted as empty
/// segments sent, then a timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_sequence_or_byte_range_fails_its_source_saying_so() {
    let segment = vec![0x47u8; 188 * 4];
    let mut seq = String::from(
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:18446744073709551614\n",
    );
    for _ in 0..4 {
        seq.push_str("#EXTINF:2,\nseg.ts\n");
    }
    let range = "#EXTM3U\n#EXT-X-VERSION:4\n#EXT-X-TARGETDURATION:2\n\
                 #EXT-X-BYTERANGE:18446744073709551615@18446744073709551615\n#EXTINF:2,\nseg.ts\n\
                 #EXT-X-BYTERANGE:10\n#EXTINF:2,\nseg.ts\n#EXT-X-ENDLIST\n";
    let origin = FakeUpstream::bind()
        .await
        .text("/seq/index.m3u8", HLS_TYPE, seq)
        .bytes("/seq/seg.ts", "video/mp2t", segment.clone())
        .text("/range/index.m3u8", HLS_TYPE, range)
        .bytes("/range/seg.ts", "video/mp2t", segment)
        .start();
    let (app, _list) = app_listing(&[
        ("Numbered", origin.url("/seq/index.m3u8")),
        ("Ranged", origin.url("/range/index.m3u8")),
    ])
    .await;
    for (name, said) in [
        ("Numbered", "EXT-X-MEDIA-SEQUENCE is malformed"),
        ("Ranged", "ends past any offset"),
    ] {
        let id = app.channel_id(name).await;
        let resp = tokio::time::timeout(HANG_GUARD, app.get(&format!("/api/stream/{id}.ts")))
            .await
            .expect("an answer");
        let body = crate::common::assert_api_error(resp, 502).await;
        let error = body["detail"][0]["error"].as_str().unwrap_or_default();
        assert!(error.contains(said), "{name}: {body}");
    }
    assert_eq!(origin.hits("/seq/seg.ts"), 0, "{:?}", origin.paths());
}

/// A segment that is a playlist (a list naming itself as its segment) or a web page is
/// a failed segment: never sent to the viewer as video. Alone, the channel is a 502
/// saying so; with another source, that one plays. Before, the playlist's text went
/// out as MPEG-TS and the viewer then waited for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_that_is_a_playlist_or_a_web_page_is_no_media() {
    let selfish =
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n#EXTINF:2,\nself.m3u8\n";
    let origin = FakeUpstream::bind()
        .await
        .text("/self.m3u8", HLS_TYPE, selfish)
        .text(
            "/page/index.m3u8",
            HLS_TYPE,
            live_playlist(&["p0.ts", "p1.ts"]),
        )
        .route(
            "/page/{seg}",
            get(|| async { respond(200, "video/mp2t", "\n<!DOCTYPE html><html>Log in</html>") }),
        )
        .route(
            "/good/{seg}",
            get(|| async { respond(200, "video/mp2t", "<good>") }),
        )
        .text(
            "/good/index.m3u8",
            HLS_TYPE,
            live_playlist(&["g0.ts", "g1.ts"]),
        )
        .start();
    let list = list_of(&[("Selfish", origin.url("/self.m3u8"))]).await;
    let app = TestApp::spawn(&format!(
        "[streams]\nfailover_after = 1\n\n[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let id = app.channel_id("Selfish").await;
    let body = refused_for_sending_nothing(&app, &id).await;
    let error = body["detail"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("is a playlist, not media"), "{body}");

    let (app, _lists, id) = two_sources(
        "Shared",
        [
            origin.url("/page/index.m3u8"),
            origin.url("/good/index.m3u8"),
        ],
        "[streams]\nfailover_after = 1\n",
    )
    .await;
    let resp = tokio::time::timeout(HANG_GUARD, app.get(&format!("/api/stream/{id}.ts")))
        .await
        .expect("the .ts answer came in time");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let got = read_at_least(&mut body, "<good>".len()).await;
    assert!(
        String::from_utf8_lossy(&got).starts_with("<good>"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

/// A lone source whose live playlist opens but never lists a segment: the viewer is
/// answered within `segment_timeout` (10 s at least), a 504 whose `detail` names the
/// source it waited on, as a failed open lists its sources (it was `"detail": null`
/// after a fixed 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_opens_but_sends_nothing_is_a_504_naming_it() {
    let origin = FakeUpstream::bind()
        .await
        .text("/empty.m3u8", HLS_TYPE, live_playlist(&[]))
        .start();
    let list = list_of(&[("Quiet", origin.url("/empty.m3u8"))]).await;
    let app = TestApp::spawn(&format!(
        "[cache]\nsegment_timeout = \"2s\"\n\n[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let id = app.channel_id("Quiet").await;
    let started = std::time::Instant::now();
    let resp = tokio::time::timeout(HANG_GUARD, app.get(&format!("/api/stream/{id}.ts")))
        .await
        .expect("the .ts answer came in time");
    let body = crate::common::assert_api_error(resp, 504).await;
    assert!(started.elapsed() >= Duration::from_secs(9), "{body}");
    assert_eq!(body["detail"][0]["service"], "Origin", "{body}");
    let error = body["detail"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("sent no media within 10 s"), "{body}");
}

/// A viewer who joins a session while a segment is being sent gets that segment from
/// its start (its PAT and PMT, a keyframe), not from the middle, where a player finds
/// nothing to decode until the next segment's tables come; and each byte once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_joining_midway_through_a_segment_gets_it_from_its_start() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let opened = gate.clone();
    let origin = FakeUpstream::bind()
        .await
        .text(
            "/live/index.m3u8",
            HLS_TYPE,
            live_playlist(&["s0.ts", "s1.ts", "s2.ts", "s3.ts"]),
        )
        .route(
            "/live/{seg}",
            get(
                move |axum::extract::Path(seg): axum::extract::Path<String>| {
                    let gate = opened.clone();
                    async move {
                        if seg != "s1.ts" {
                            return respond(200, "video/mp2t", format!("<{seg}>"));
                        }
                        // Its first half, then the rest once the second viewer is in.
                        let first =
                            futures::stream::once(async { Ok::<_, std::io::Error>("<s1.ts ") });
                        let rest = futures::stream::once(async move {
                            let _ = gate.acquire().await;
                            Ok("half two>")
                        });
                        respond(
                            200,
                            "video/mp2t",
                            axum::body::Body::from_stream(first.chain(rest)),
                        )
                    }
                },
            ),
        )
        .start();
    let list = list_of(&[("Shared", origin.url("/live/index.m3u8"))]).await;
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let id = app.channel_id("Shared").await;
    let open = || async {
        let resp = app.get(&format!("/api/stream/{id}.ts")).await;
        assert_eq!(resp.status(), 200);
        resp.bytes_stream()
    };
    let mut a = open().await;
    let got_a = read_at_least(&mut a, "<s1.ts ".len()).await;
    assert_eq!(String::from_utf8_lossy(&got_a), "<s1.ts ");
    // B joins with s1 half sent.
    let mut b = open().await;
    gate.add_permits(1);
    let whole = "<s1.ts half two><s2.ts><s3.ts>";
    let (rest_a, got_b) = tokio::join!(
        read_at_least(&mut a, whole.len() - got_a.len()),
        read_at_least(&mut b, whole.len())
    );
    assert_eq!(String::from_utf8_lossy(&rest_a), "half two><s2.ts><s3.ts>");
    assert_eq!(String::from_utf8_lossy(&got_b), whole);
    assert_eq!(origin.hits("/live/s1.ts"), 1, "{:?}", origin.paths());
}

/// A viewer who joins a running session gets the segments a viewer starting it got at
/// once (`live_edge_segments`), each from its start, which a probing player reads
/// without waiting for them in real time; once the session has sent nothing for a
/// while (its source froze), a joiner waits for new bytes as a first viewer does, and
/// is answered 504 when none come, not a 200 with stale bytes and nothing after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_gets_the_last_segments_at_once_and_a_stalled_session_no_stale_bytes() {
    let origin = FakeUpstream::bind()
        .await
        // Never moves on: after its window, the session has nothing new to send.
        .text(
            "/live/index.m3u8",
            HLS_TYPE,
            live_playlist(&["s0.ts", "s1.ts", "s2.ts", "s3.ts"]),
        )
        .route(
            "/live/{seg}",
            get(
                |axum::extract::Path(seg): axum::extract::Path<String>| async move {
                    respond(200, "video/mp2t", format!("<{seg}>"))
                },
            ),
        )
        .start();
    let list = list_of(&[("Frozen", origin.url("/live/index.m3u8"))]).await;
    let app = TestApp::spawn(&format!(
        "[cache]\nsegment_timeout = \"2s\"\n\n[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let id = app.channel_id("Frozen").await;
    let open = || async {
        let resp = app.get(&format!("/api/stream/{id}.ts")).await;
        assert_eq!(resp.status(), 200);
        resp.bytes_stream()
    };
    let window = "<s1.ts><s2.ts><s3.ts>";
    let mut first = open().await;
    assert_eq!(
        String::from_utf8_lossy(&read_at_least(&mut first, window.len()).await),
        window
    );
    let mut joiner = open().await;
    assert_eq!(
        String::from_utf8_lossy(&read_at_least(&mut joiner, window.len()).await),
        window,
        "a joiner gets the window a first viewer got"
    );
    drop(joiner);
    // The first viewer stays; the session sends nothing new.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let started = std::time::Instant::now();
    let resp = tokio::time::timeout(HANG_GUARD, app.get(&format!("/api/stream/{id}.ts")))
        .await
        .expect("the joiner was answered in time");
    let body = crate::common::assert_api_error(resp, 504).await;
    assert!(started.elapsed() >= Duration::from_secs(9), "{body}");
    assert_eq!(body["detail"][0]["service"], "Origin", "{body}");
    drop(first);
}

/// A first source whose first segments hang hands over to the next as soon as the
/// service's own `timeout` gives one up, when that comes before the first-segment
/// deadline (three target durations): before, each hanging segment counted as one of
/// `failover_after` failures, and a shorter `timeout` made the handover slower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_first_segment_hands_over_at_the_services_timeout() {
    let origin = FakeUpstream::bind()
        .await
        .text(
            "/a.m3u8",
            HLS_TYPE,
            live_playlist(&["a0.ts", "a1.ts", "a2.ts"]),
        )
        .hang("/a0.ts")
        .hang("/a1.ts")
        .hang("/a2.ts")
        .text("/b.m3u8", HLS_TYPE, live_playlist(&["b0.ts", "b1.ts"]))
        .route(
            "/{seg}",
            get(|| async { respond(200, "video/mp2t", ten_packets(0xbb)) }),
        )
        .start();
    let lists = [
        list_of(&[("Shared", origin.url("/a.m3u8"))]).await,
        list_of(&[("Shared", origin.url("/b.m3u8"))]).await,
    ];
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"A\"\nkind = \"m3u\"\npriority = 1\ntimeout = \"4s\"\nurl = \"{}\"\n\n\
         [[services]]\nname = \"B\"\nkind = \"m3u\"\npriority = 2\nurl = \"{}\"\n",
        lists[0].url("/list.m3u"),
        lists[1].url("/list.m3u")
    ))
    .await;
    let id = app.channel_id("Shared").await;
    let resp = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = read_at_least(&mut body, 1).await;
    assert!(first.contains(&0xbb), "{first:?}");
    // Handed over after one hanging segment's timeout (4 s), not one per segment.
    let hanging: usize = ["/a0.ts", "/a1.ts", "/a2.ts"]
        .iter()
        .map(|p| origin.hits(p))
        .sum();
    assert_eq!(hanging, 1, "{:?}", origin.paths());
}

/// A relayed plain MPEG-TS source that sends its media slower than it plays (a
/// congested panel trickling a `.ts`) is left for the next source once a 15 s window
/// shows it (`failover_after = 1`): before, its bytes kept it (no byte rate was
/// judged) and its viewers stalled over and over for as long as it trickled. A source
/// that keeps up is kept over the same time; one whose connections close every few
/// seconds, each too short for a window, is judged across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_source_slower_than_real_time_hands_over_to_the_next() {
    let clip = crate::common::mpeg_ts_clip(8);
    let origin = FakeUpstream::bind()
        .await
        // An 8 s clip in 24 s: a third of real time.
        .route(
            "/slow/live.ts",
            crate::common::paced_mpeg_ts_every(clip.clone(), true, Duration::from_millis(300)),
        )
        // In real time.
        .route(
            "/steady/live.ts",
            crate::common::paced_mpeg_ts(clip.clone(), true),
        )
        .route("/next/live.ts", crate::common::paced_mpeg_ts(clip, true))
        // 2 s of media in 8 s, then the connection closes: each connection is too
        // short for a window of its own.
        .route(
            "/closing/live.ts",
            crate::common::paced_mpeg_ts(crate::common::mpeg_ts_clip(2), false),
        )
        .route(
            "/after-closing/live.ts",
            crate::common::paced_mpeg_ts(crate::common::mpeg_ts_clip(8), true),
        )
        .start();
    let watch = |first: &'static str, next: &'static str, failover_after: u32| {
        let origin = &origin;
        async move {
            let (app, _lists, id) = two_sources(
                "Relayed",
                [origin.url(first), origin.url(next)],
                &format!("[streams]\nfailover_after = {failover_after}\n"),
            )
            .await;
            // Read for longer than the test client's whole-request bound: a client
            // without one (each chunk is bounded below).
            let resp = reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .get(app.url(&format!("/api/stream/{id}.ts")))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{first}");
            let mut body = resp.bytes_stream();
            // Past one window (15 s from the source's first open), and for the
            // closing source a second failure.
            let until = tokio::time::Instant::now() + Duration::from_secs(27);
            let mut got = 0;
            while tokio::time::Instant::now() < until {
                match tokio::time::timeout(HANG_GUARD, body.next()).await {
                    Ok(Some(Ok(c))) => got += c.len(),
                    other => panic!("{first}: the viewer was dropped: {other:?}"),
                }
            }
            (app, got)
        }
    };
    let ((_slow_app, slow_got), (_steady_app, steady_got), (_closing_app, closing_got)) = tokio::join!(
        watch("/slow/live.ts", "/next/live.ts", 1),
        watch("/steady/live.ts", "/next/live.ts", 1),
        // Two failures in a row: a close alone (cleared by the next connection's
        // bytes) never hands over.
        watch("/closing/live.ts", "/after-closing/live.ts", 2)
    );
    assert!(slow_got > 0 && steady_got > 0 && closing_got > 0);
    // Opened again after each close (a failure its next bytes clear), then left once
    // the window across its connections showed it slow.
    assert!(origin.hits("/closing/live.ts") >= 2, "{:?}", origin.paths());
    assert_eq!(
        origin.hits("/after-closing/live.ts"),
        1,
        "{:?}",
        origin.paths()
    );
    // The slow source was left (not opened again: one failure is the threshold) for
    // the next, which the steady one never was.
    assert_eq!(origin.hits("/slow/live.ts"), 1, "{:?}", origin.paths());
    assert_eq!(origin.hits("/steady/live.ts"), 1, "{:?}", origin.paths());
    assert_eq!(origin.hits("/next/live.ts"), 1, "{:?}", origin.paths());
}

/// A live playlist numbered below zero (`#EXT-X-MEDIA-SEQUENCE:-5`, which no HLS
/// number is) is a failed playlist that says so: the next source plays, and a lone
/// source is a 502 naming the tag. Before, it was read as 0 at every reload and the
/// `.ts` viewer waited for ever for a segment numbered past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playlist_numbered_below_zero_is_a_clear_failure() {
    let negative = |n: i64| {
        format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{n}\n\
             #EXTINF:2.0,\nn{n}.ts\n#EXTINF:2.0,\nn{}.ts\n",
            n + 1
        )
    };
    let origin = FakeUpstream::bind()
        .await
        .text("/neg/index.m3u8", HLS_TYPE, negative(-5))
        .route(
            "/neg/{seg}",
            get(|| async { respond(200, "video/mp2t", "<neg>") }),
        )
        .text(
            "/good/index.m3u8",
            HLS_TYPE,
            live_playlist(&["g0.ts", "g1.ts"]),
        )
        .route(
            "/good/{seg}",
            get(|| async { respond(200, "video/mp2t", "<good>") }),
        )
        .start();
    let (app, _lists, id) = two_sources(
        "Numbered",
        [
            origin.url("/neg/index.m3u8"),
            origin.url("/good/index.m3u8"),
        ],
        "[streams]\nfailover_after = 1\n",
    )
    .await;
    let resp = tokio::time::timeout(HANG_GUARD, app.get(&format!("/api/stream/{id}.ts")))
        .await
        .expect("an answer");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let got = read_at_least(&mut body, "<good>".len()).await;
    assert!(
        String::from_utf8_lossy(&got).starts_with("<good>"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // Alone, it is a 502 that names the tag.
    let list = list_of(&[("Alone", origin.url("/neg/index.m3u8"))]).await;
    let alone = TestApp::spawn(&format!(
        "[[services]]\nname = \"A\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    let id = alone.channel_id("Alone").await;
    let resp = tokio::time::timeout(HANG_GUARD, alone.get(&format!("/api/stream/{id}.ts")))
        .await
        .expect("an answer");
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(text.contains("EXT-X-MEDIA-SEQUENCE `-5`"), "{text}");
    // An HLS player of it gets the same, not the playlist it would stall on.
    let resp = alone.get(&format!("/api/stream/{id}.m3u8")).await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("EXT-X-MEDIA-SEQUENCE `-5`"), "{text}");
}
