//! A real player end to end: ffmpeg decodes freesky's HLS output for the built-in demo
//! channel and for an m3u channel whose origin (a real HTTP server here) serves the
//! demo's real MPEG-TS segments and refuses requests without the configured Referer.
//!
//! ffmpeg must be on PATH: without it this test fails (it does not skip).

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{
    media_playlist, respond, run_within, FakeUpstream, TestApp, HANG_GUARD, HLS_TYPE, M3U_TYPE,
};
use axum::routing::get;

/// Bound on one ffmpeg run; reaching it means a hang (not a speed check).
const FFMPEG_GUARD: Duration = Duration::from_secs(60);
const REFERER: &str = "http://player.example/embed/42";

/// Decodes up to 3 s of video from `url` with ffmpeg; returns the frames decoded.
async fn decoded_video_frames(url: &str) -> u64 {
    decoded_frames_of(url, 3).await
}

/// Decodes up to `seconds` of video from `url` with ffmpeg; returns the frames decoded.
async fn decoded_frames_of(url: &str, seconds: u32) -> u64 {
    let seconds = seconds.to_string();
    let out = run_within(
        tokio::process::Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-v", "error", "-i", url])
            .args(["-t", &seconds, "-map", "0:v:0", "-f", "null", "-"])
            .args(["-progress", "pipe:1"]),
        FFMPEG_GUARD,
        "ffmpeg installed and on PATH",
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ffmpeg failed on {url}: {:?}\n{stderr}",
        out.status
    );
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no frame= in ffmpeg's progress for {url}:\n{stdout}\n{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_decodes_the_demo_and_a_proxied_channel() {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    let names = ["seg0.ts", "seg1.ts", "seg2.ts", "seg3.ts"];
    let mut origin = FakeUpstream::bind()
        .await
        .require_header("referer", REFERER)
        .text("/vod/index.m3u8", HLS_TYPE, media_playlist(&names));
    for name in names {
        let bytes = std::fs::read(assets.join(name)).expect("demo asset");
        origin = origin.bytes(&format!("/vod/{name}"), "video/mp2t", bytes);
    }
    let origin = origin.start();
    let portal = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n#EXTINF:-1 tvg-id=\"Origin.example\" group-title=\"Test\",Origin TV\n#EXTVLCOPT:http-referrer={REFERER}\n{}\n",
                origin.url("/vod/index.m3u8")
            ),
        )
        .start();
    let app = TestApp::spawn(&format!(
        r#"
[[services]]
name = "Demo"
kind = "demo"

[[services]]
name = "Origin"
kind = "m3u"
url = "{}/list.m3u"
"#,
        portal.base()
    ))
    .await;
    let channels = app.channels().await;
    let id = |name: &str| {
        channels
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["id"].as_str())
            .unwrap_or_else(|| panic!("no {name} in {channels:#?}"))
            .to_string()
    };
    let demo_url = app.url(&format!("/api/stream/{}.m3u8", id("Demo")));
    let origin_url = app.url(&format!("/api/stream/{}.m3u8", id("Origin TV")));

    let demo_ts = app.url(&format!("/api/stream/{}.ts", id("Demo")));
    let origin_ts = app.url(&format!("/api/stream/{}.ts", id("Origin TV")));
    let origin_number = channels
        .iter()
        .find(|c| c["name"] == "Origin TV")
        .and_then(|c| c["number"].as_u64())
        .expect("Origin TV has a number");
    // What Plex and Jellyfin play: the HDHomeRun tuner URL from lineup.json.
    let (_, lineup) = app.get_json("/lineup.json").await;
    let tuner_url = lineup
        .as_array()
        .and_then(|l| l.iter().find(|e| e["GuideName"] == "Origin TV"))
        .and_then(|e| e["URL"].as_str())
        .expect("Origin TV in lineup.json")
        .to_string();
    assert_eq!(tuner_url, app.url(&format!("/auto/v{origin_number}")));

    let (demo_frames, origin_frames, demo_ts_frames, origin_ts_frames, tuner_frames) = tokio::join!(
        decoded_video_frames(&demo_url),
        decoded_video_frames(&origin_url),
        decoded_video_frames(&demo_ts),
        decoded_video_frames(&origin_ts),
        decoded_video_frames(&tuner_url)
    );
    assert!(tuner_frames > 0, "no video decoded from the tuner URL");
    assert!(demo_frames > 0, "no video decoded from the demo channel");
    assert!(
        origin_frames > 0,
        "no video decoded from the proxied channel"
    );
    assert!(
        demo_ts_frames > 0,
        "no video decoded from the demo's .ts stream"
    );
    assert!(
        origin_ts_frames > 0,
        "no video decoded from the proxied .ts stream"
    );

    // ffmpeg got through freesky to the origin, past the first segment, and every
    // request carried the channel's Referer.
    let requests = origin.requests();
    assert!(origin.hits("/vod/index.m3u8") >= 1, "{:?}", origin.paths());
    let segments: std::collections::BTreeSet<_> = requests
        .iter()
        .filter(|r| r.path.ends_with(".ts"))
        .map(|r| r.path.clone())
        .collect();
    assert!(segments.len() >= 2, "segments fetched: {segments:?}");
    for r in &requests {
        assert_eq!(
            r.header("referer"),
            Some(REFERER),
            "{} without Referer",
            r.path
        );
    }
}

/// Runs ffmpeg with `args`, failing the test with its output when it fails.
fn ffmpeg_make(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("ffmpeg")
        .current_dir(dir)
        .args(["-nostdin", "-hide_banner", "-v", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc=size=160x90:rate=10"])
        .args([
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "10",
        ])
        .args(["-pix_fmt", "yuv420p", "-f", "hls", "-hls_time", "1"])
        .args(["-hls_playlist_type", "vod"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ffmpeg` ({e}): this test needs ffmpeg on PATH"));
    assert!(
        out.status.success(),
        "ffmpeg could not make the test stream: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An AES-128 encrypted stream and an fMP4 (EXT-X-MAP) stream, made by ffmpeg here,
/// served by an origin that wants the channel's Referer, play through freesky.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_plays_aes128_and_fmp4_streams_through_freesky() {
    let dir = tempfile::tempdir().unwrap();
    let aes = dir.path().join("aes");
    let fmp4 = dir.path().join("fmp4");
    std::fs::create_dir_all(&aes).unwrap();
    std::fs::create_dir_all(&fmp4).unwrap();
    std::fs::write(aes.join("enc.key"), b"0123456789abcdef").unwrap();
    std::fs::write(
        aes.join("keyinfo"),
        format!("enc.key\n{}\n", aes.join("enc.key").display()),
    )
    .unwrap();
    ffmpeg_make(&aes, &["-hls_key_info_file", "keyinfo", "index.m3u8"]);
    ffmpeg_make(
        &fmp4,
        &[
            "-hls_segment_type",
            "fmp4",
            "-hls_fmp4_init_filename",
            "init.mp4",
            "index.m3u8",
        ],
    );
    let aes_playlist = std::fs::read_to_string(aes.join("index.m3u8")).unwrap();
    assert!(aes_playlist.contains("METHOD=AES-128"), "{aes_playlist}");
    let fmp4_playlist = std::fs::read_to_string(fmp4.join("index.m3u8")).unwrap();
    assert!(fmp4_playlist.contains("#EXT-X-MAP"), "{fmp4_playlist}");

    let origin = FakeUpstream::bind()
        .await
        .require_header("referer", REFERER)
        .dir("/aes", &aes)
        .dir("/fmp4", &fmp4)
        .start();
    let portal = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n\
#EXTINF:-1 tvg-id=\"Aes.example\",Encrypted\n#EXTVLCOPT:http-referrer={REFERER}\n{}\n\
#EXTINF:-1 tvg-id=\"Fmp4.example\",Fragmented\n#EXTVLCOPT:http-referrer={REFERER}\n{}\n",
                origin.url("/aes/index.m3u8"),
                origin.url("/fmp4/index.m3u8")
            ),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        portal.url("/list.m3u")
    ))
    .await;
    let id = |c: serde_json::Value| c["id"].as_str().unwrap().to_string();
    let aes_url = app.url(&format!(
        "/api/stream/{}.m3u8",
        id(app.channel_named("Encrypted").await)
    ));
    let fmp4_url = app.url(&format!(
        "/api/stream/{}.m3u8",
        id(app.channel_named("Fragmented").await)
    ));
    let (aes_frames, fmp4_frames) = tokio::join!(
        decoded_video_frames(&aes_url),
        decoded_video_frames(&fmp4_url)
    );
    assert!(aes_frames > 0, "no video decoded from the AES-128 stream");
    assert!(fmp4_frames > 0, "no video decoded from the fMP4 stream");
    let paths = origin.paths();
    assert!(paths.iter().any(|p| p == "/aes/enc.key"), "{paths:?}");
    assert!(paths.iter().any(|p| p == "/fmp4/init.mp4"), "{paths:?}");
    for r in origin.requests() {
        assert_eq!(
            r.header("referer"),
            Some(REFERER),
            "{} without Referer",
            r.path
        );
    }
}

/// A live origin looping the demo's real segments: a master playlist with one
/// variant, whose 3-segment window moves every 2 s and is numbered from `first_seq`.
/// `down` makes it answer 503 to everything.
async fn live_demo_origin(down: Arc<AtomicBool>, first_seq: u64) -> FakeUpstream {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    let segs: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..4)
            .map(|i| std::fs::read(assets.join(format!("seg{i}.ts"))).expect("demo asset"))
            .collect(),
    );
    let start = std::time::Instant::now();
    let down2 = down.clone();
    let down3 = down.clone();
    FakeUpstream::bind()
        .await
        .route(
            "/live/master.m3u8",
            get(move || {
                let down = down3.load(Ordering::SeqCst);
                async move {
                    if down {
                        return respond(503, "text/plain", "down");
                    }
                    respond(
                        200,
                        HLS_TYPE,
                        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=300000\nindex.m3u8\n",
                    )
                }
            }),
        )
        .route(
            "/live/index.m3u8",
            get(move || {
                let n = first_seq + start.elapsed().as_secs() / 2;
                let down = down.load(Ordering::SeqCst);
                async move {
                    if down {
                        return respond(503, "text/plain", "down");
                    }
                    let mut s = format!(
                        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{n}\n"
                    );
                    for seq in n..n + 3 {
                        if (seq - first_seq).is_multiple_of(4) && seq > first_seq {
                            // The demo loops: its timestamps start over.
                            s.push_str("#EXT-X-DISCONTINUITY\n");
                        }
                        s.push_str(&format!("#EXTINF:2.0,\nseg{seq}.ts\n"));
                    }
                    respond(200, HLS_TYPE, s)
                }
            }),
        )
        .route(
            "/live/{seg}",
            get(move |axum::extract::Path(seg): axum::extract::Path<String>| {
                let segs = segs.clone();
                let down = down2.load(Ordering::SeqCst);
                async move {
                    let seq: usize = seg
                        .trim_start_matches("seg")
                        .trim_end_matches(".ts")
                        .parse()
                        .unwrap_or(0);
                    if down {
                        return respond(503, "text/plain", "down");
                    }
                    respond(200, "video/mp2t", segs[(seq - first_seq as usize) % 4].clone())
                }
            }),
        )
        .start()
}

/// ffmpeg reads a channel's continuous MPEG-TS; its primary origin goes down midway;
/// ffmpeg keeps decoding frames from the secondary after the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_keeps_decoding_the_ts_stream_across_a_failover() {
    keeps_decoding_across_a_failover("ts").await;
}

/// The same over HLS: the player keeps reloading its media playlist link, which
/// freesky switches to the secondary (renumbered, with a discontinuity).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_keeps_decoding_the_hls_stream_across_a_failover() {
    keeps_decoding_across_a_failover("m3u8").await;
}

/// Over HLS when the channel's stream URL is a media playlist: ffmpeg reloads the
/// channel URL itself, which answers from the secondary, numbered on from the
/// primary's (its own numbers, far lower, would have ffmpeg wait for them to catch up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_keeps_decoding_a_media_playlist_channel_across_a_failover() {
    keeps_decoding_across_a_failover_of("m3u8", "/live/index.m3u8").await;
}

async fn keeps_decoding_across_a_failover(ext: &str) {
    keeps_decoding_across_a_failover_of(ext, "/live/master.m3u8").await;
}

/// ffmpeg plays `/api/stream/{id}.{ext}` of a channel listed at `entry` on two origins.
async fn keeps_decoding_across_a_failover_of(ext: &str, entry: &str) {
    let primary_down = Arc::new(AtomicBool::new(false));
    // Numbered far apart: the player of the primary must not notice the secondary's
    // own numbers.
    let primary = live_demo_origin(primary_down.clone(), 5000).await;
    let secondary = live_demo_origin(Arc::new(AtomicBool::new(false)), 10).await;
    let list = |origin: &FakeUpstream| {
        format!(
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"Live.example\",Live\n{}\n",
            origin.url(entry)
        )
    };
    let one = FakeUpstream::bind()
        .await
        .text("/l.m3u", M3U_TYPE, list(&primary))
        .start();
    let two = FakeUpstream::bind()
        .await
        .text("/l.m3u", M3U_TYPE, list(&secondary))
        .start();
    let app = TestApp::spawn(&format!(
        r#"
[cache]
playlist_ttl = "500ms"

[streams]
failover_after = 2

[[services]]
name = "One"
kind = "m3u"
priority = 1
timeout = "2s"
url = "{}"

[[services]]
name = "Two"
kind = "m3u"
priority = 2
url = "{}"
"#,
        one.url("/l.m3u"),
        two.url("/l.m3u")
    ))
    .await;
    let id = app.channel_id("Live").await;
    let url = app.url(&format!("/api/stream/{id}.{ext}"));

    let mut child = tokio::process::Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-v", "error", "-i", &url])
        .args(["-map", "0:v:0", "-f", "null", "-", "-progress", "pipe:1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `ffmpeg` ({e}): this test needs ffmpeg on PATH"));
    let frames = Arc::new(AtomicU64::new(0));
    let stdout = child.stdout.take().unwrap();
    let counter = frames.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(n) = line
                .strip_prefix("frame=")
                .and_then(|n| n.trim().parse().ok())
            {
                counter.store(n, Ordering::SeqCst);
            }
        }
    });
    let wait_for = |min: u64, what: &'static str| {
        let frames = frames.clone();
        async move {
            tokio::time::timeout(FFMPEG_GUARD, async {
                while frames.load(Ordering::SeqCst) < min {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{what}: ffmpeg decoded {} frames, wanted {min}",
                    frames.load(Ordering::SeqCst)
                )
            })
        }
    };
    wait_for(1, "before the failover").await;
    primary_down.store(true, Ordering::SeqCst);
    // Once the secondary serves its first segment, everything the primary sent has long
    // been decoded (the switch takes two failed reloads, seconds): frames decoded from
    // then on can only come from the secondary.
    tokio::time::timeout(FFMPEG_GUARD, async {
        while !secondary.paths().iter().any(|p| p.ends_with(".ts")) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no failover: the secondary saw {:?}", secondary.paths()));
    let at_switch = frames.load(Ordering::SeqCst);
    // One demo segment is 2 s of video (dozens of frames).
    wait_for(at_switch + 20, "after the failover").await;
    let _ = child.kill().await;
}

/// freesky listing one channel, "Plain TS", whose source is a `seconds` clip of MPEG-TS
/// sent as a live encoder would (`paced_mpeg_ts`), `looped` or once per connection;
/// with the origin (its `/tv/live.ts`) and the list's server.
async fn plain_ts_channel(seconds: u32, looped: bool) -> (TestApp, FakeUpstream, FakeUpstream) {
    plain_ts_channel_of(crate::common::mpeg_ts_clip(seconds), looped).await
}

/// `plain_ts_channel` of `clip`.
async fn plain_ts_channel_of(
    clip: Arc<Vec<u8>>,
    looped: bool,
) -> (TestApp, FakeUpstream, FakeUpstream) {
    let paced = crate::common::paced_mpeg_ts(clip, looped);
    let origin = FakeUpstream::bind()
        .await
        .route("/tv/live.ts", paced)
        .start();
    let list = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n#EXTINF:-1,Plain TS\n{}\n",
                origin.url("/tv/live.ts")
            ),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Plain\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    (app, origin, list)
}

/// A channel whose source is plain MPEG-TS (an Xtream panel set to TS, a `.ts` URL in
/// a list) plays as real HLS at its `.m3u8` URL: a live playlist of segments cut at key
/// frames from the channel's one upstream connection, which ffmpeg's HLS demuxer (the
/// way AVPlayer, hls.js and ExoPlayer take an `.m3u8`) decodes. Its segment links are
/// sealed like every other link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_mpeg_ts_channel_plays_as_hls() {
    // 16 s, sent at twice real time, over and over: one endless stream.
    let (app, origin, _list) = plain_ts_channel(16, true).await;
    let id = app.channel_id("Plain TS").await;
    let url = app.url(&format!("/api/stream/{id}.m3u8"));

    // Two players at once: one packager, one upstream connection.
    let path = format!("/api/stream/{id}.m3u8");
    let (resp, other) = tokio::join!(app.get(&path), app.get(&path));
    assert_eq!(other.status(), 200);
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/vnd.apple.mpegurl"));
    let playlist = resp.text().await.unwrap();
    assert!(playlist.starts_with("#EXTM3U\n"), "{playlist}");
    assert!(playlist.contains("#EXT-X-TARGETDURATION:6\n"), "{playlist}");
    let links: Vec<&str> = playlist.lines().filter(|l| !l.starts_with('#')).collect();
    // Key frames every second: the first playlist already lists two short segments.
    assert!(links.len() >= 2, "{playlist}");
    let first: f64 = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXTINF:"))
        .and_then(|d| d.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no EXTINF in {playlist}"));
    assert!(first < 2.5, "a quick first segment: {playlist}");
    for l in &links {
        assert!(
            l.starts_with(&format!("{}/packaged/", app.base)),
            "{playlist}"
        );
        assert!(
            !l.contains("live.ts") && !l.contains(&origin.base()),
            "{playlist}"
        );
    }

    // A segment alone is decodable MPEG-TS: it starts with the programme tables.
    let segment = app.get(links[0]).await;
    assert_eq!(segment.status(), 200);
    assert_eq!(segment.headers()["content-type"], "video/mp2t");
    let bytes = segment.bytes().await.unwrap();
    assert_eq!(bytes.len() % 188, 0);
    assert_eq!(
        (bytes[0], bytes[1] & 0x1F, bytes[2]),
        (0x47, 0, 0),
        "PAT first"
    );

    // Tampered, and another segment's number under this link: refused, as JSON (a
    // link opens its own segment only: counting up numbers leads nowhere).
    let (head, tail) = links[0].rsplit_once('/').unwrap();
    let token = head.rsplit_once('/').unwrap().1;
    let mut forged = token.to_string().into_bytes();
    forged[5] = if forged[5] == b'A' { b'B' } else { b'A' };
    let forged = head.replace(token, std::str::from_utf8(&forged).unwrap());
    crate::common::assert_api_error(app.get(&format!("{forged}/{tail}")).await, 403).await;
    let n: u64 = tail.trim_end_matches(".ts").parse().unwrap();
    crate::common::assert_api_error(app.get(&format!("{head}/{}.ts", n + 1)).await, 403).await;
    // A link is the same in every playlist that lists its segment (hls.js requires it).
    let again = app.get_text_ok(&path).await;
    assert!(
        again.contains(links[0]) || !again.contains(&format!("/{n}.ts")),
        "{again}"
    );

    // 10 s of a stream that arrives at twice real time: ffmpeg reloads the playlist
    // as new segments are cut, and decodes across them.
    let frames = decoded_frames_of(&url, 10).await;
    assert!(
        frames >= 240,
        "ffmpeg decoded only {frames} frames of the packaged HLS"
    );
    // One connection: the one whose first bytes told it is MPEG-TS goes on to feed
    // the packager, for both players.
    assert_eq!(origin.hits("/tv/live.ts"), 1, "{:?}", origin.paths());
}

/// An upstream that closes its MPEG-TS stream (a provider dropping the connection, a
/// finite file) does not end the channel: the session opens it again and joins it on
/// (timestamps continuous), so a `.ts` viewer (a DVR recording) stays connected past
/// the close, and the HLS playlist goes on, its numbers never going back, and ffmpeg
/// decodes across it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packaged_channel_goes_on_when_its_upstream_closes_the_stream() {
    // 8 s sent at real time, then the connection closes.
    let (app, origin, _list) = plain_ts_channel(8, false).await;
    let id = app.channel_id("Plain TS").await;
    // A `.ts` viewer reads past the first connection's end: half as much again as the
    // whole clip (what one connection sends).
    let clip = crate::common::mpeg_ts_clip(8).len();
    let mut ts = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(ts.status(), 200);
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < clip * 3 / 2 {
            match ts.chunk().await {
                Ok(Some(c)) => got += c.len(),
                _ => break,
            }
        }
        got
    });
    let path = format!("/api/stream/{id}.m3u8");
    // A player's reloads for 17 s: past the second stream's end (the first playlist
    // comes 2 to 4 s after the stream's start).
    let mut sequences = Vec::new();
    for _ in 0..34 {
        let text = app.get_text_ok(&path).await;
        assert!(!text.contains("#EXT-X-ENDLIST"), "{text}");
        assert!(text.contains("#EXT-X-TARGETDURATION:6\n"), "{text}");
        let tag = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {text}"))
        };
        sequences.push(tag("#EXT-X-MEDIA-SEQUENCE:"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(sequences.windows(2).all(|w| w[0] <= w[1]), "{sequences:?}");
    assert!(origin.hits("/tv/live.ts") >= 3, "{:?}", origin.paths());
    let got = tokio::time::timeout(FFMPEG_GUARD, reader)
        .await
        .expect("the .ts viewer read on")
        .unwrap();
    assert!(
        got >= clip * 3 / 2,
        "the .ts viewer was dropped when the upstream closed: {got} of a {clip}-byte clip"
    );
    let frames = decoded_frames_of(&app.url(&path), 10).await;
    assert!(
        frames >= 200,
        "ffmpeg decoded only {frames} frames across the reopen"
    );
}

/// A viewer who joins a relayed plain MPEG-TS stream (an Xtream panel's `output=ts`)
/// midway starts on a picture: its first bytes are the programme tables and a key
/// frame, the last GOP sent, not the middle of one, which ffmpeg (like any
/// decoder) cannot read until the next key frame ("non-existing PPS", "no frame!").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_joining_a_relayed_mpeg_ts_stream_starts_on_a_key_frame() {
    // 16 s at twice real time, looped, with a key frame every 3 s of media: farther
    // apart than the cut's 1.5 s limit (1.5 s of wall time).
    let clip = crate::common::mpeg_ts_clip_gop(16, 75);
    let (app, origin, _list) = plain_ts_channel_of(clip, true).await;
    let id = app.channel_id("Plain TS").await;
    let path = format!("/api/stream/{id}.ts");
    // The first viewer keeps the session going.
    let mut first = app.get(&path).await;
    assert_eq!(first.status(), 200);
    let keep = tokio::spawn(async move { while let Ok(Some(_)) = first.chunk().await {} });
    for round in 0..3 {
        // Joined at different points of the GOPs.
        tokio::time::sleep(Duration::from_millis(1_300 + 170 * round)).await;
        let mut joiner = app.get(&path).await;
        assert_eq!(joiner.status(), 200);
        let mut head = Vec::new();
        while head.len() < 188 * 8 {
            match joiner.chunk().await.unwrap() {
                Some(c) => head.extend_from_slice(&c),
                None => panic!("the stream ended"),
            }
        }
        drop(joiner);
        let pid = |p: &[u8]| u16::from(p[1] & 0x1F) << 8 | u16::from(p[2]);
        assert_eq!(head[0], 0x47, "round {round}");
        assert_eq!(pid(&head[..188]), 0, "round {round}: not the PAT first");
        // After the tables, the first packet of another PID starts a PES (a frame)
        // whose adaptation field marks a random access point.
        let tables_pids = [0, pid(&head[188..376])];
        let frame = head
            .chunks_exact(188)
            .find(|p| !tables_pids.contains(&pid(p)))
            .unwrap();
        let pusi = frame[1] & 0x40 != 0;
        let random_access = frame[3] & 0x20 != 0 && frame[4] > 0 && frame[5] & 0x40 != 0;
        assert!(pusi && random_access, "round {round}: {:02x?}", &frame[..8]);
    }
    // ffmpeg joining midway decodes from its first bytes, without an error.
    let out = run_within(
        tokio::process::Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-v", "error", "-i"])
            .arg(app.url(&path))
            .args(["-t", "2", "-map", "0:v:0", "-f", "null", "-"]),
        FFMPEG_GUARD,
        "ffmpeg installed and on PATH",
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "ffmpeg joining midway: {stderr}");
    keep.abort();
    assert_eq!(origin.hits("/tv/live.ts"), 1, "one upstream connection");
}

/// A relayed plain MPEG-TS source with bytes in front of its packets (a panel's or a
/// proxy's junk, here again at every loop of the clip), between two packets inside a
/// chunk, or with bytes lost from a packet, reaches `.ts` viewers as whole packets
/// only: the junk and the torn packet are dropped and every 188th byte is a sync byte
/// from the first. Before, the first byte decided that the stream was not MPEG-TS: the junk
/// went to the viewers and packet alignment was off for the whole stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_in_front_of_a_relayed_mpeg_ts_stream_is_dropped() {
    let junk = b"#junk from a panel\r\n\r\n".repeat(5);
    let clip = crate::common::mpeg_ts_clip(8);
    // In front; between two packets inside a chunk; and 50 bytes lost from a packet.
    let (a, b) = (188 * 100, 188 * 400 + 30);
    let mut stream = junk.clone();
    stream.extend_from_slice(&clip[..a]);
    stream.extend_from_slice(&junk);
    stream.extend_from_slice(&clip[a..b]);
    stream.extend_from_slice(&clip[b + 50..]);
    // In real time, looped: junk every 8 s.
    let (app, origin, _list) = plain_ts_channel_of(Arc::new(stream), true).await;
    let id = app.channel_id("Plain TS").await;
    let mut ts = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(ts.status(), 200);
    assert_eq!(ts.headers()["content-type"], "video/MP2T");
    // Past the second loop's junk.
    let mut got = Vec::new();
    while got.len() < clip.len() * 8 / 5 {
        match tokio::time::timeout(HANG_GUARD, ts.chunk()).await {
            Ok(Ok(Some(c))) => got.extend_from_slice(&c),
            other => panic!("the stream ended after {} bytes: {other:?}", got.len()),
        }
    }
    assert!(origin.hits("/tv/live.ts") >= 1);
    let lost: Vec<usize> = (0..got.len() / 188)
        .filter(|k| got[k * 188] != 0x47)
        .take(5)
        .collect();
    assert!(
        lost.is_empty(),
        "packets out of place at {lost:?} (first bytes {:?})",
        String::from_utf8_lossy(&got[..24])
    );
    assert!(
        !got.windows(6).any(|w| w == b"#junk "),
        "the junk reached the viewer"
    );
}
