//! A real player end to end: ffmpeg decodes freesky's HLS output for the built-in demo
//! channel and for an m3u channel whose origin (a real HTTP server here) serves the
//! demo's real MPEG-TS segments and refuses requests without the configured Referer.
//!
//! ffmpeg must be on PATH: without it this test fails (it does not skip).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{media_playlist, FakeUpstream, TestApp, HLS_TYPE, M3U_TYPE};

/// Bound on one ffmpeg run; reaching it means a hang (not a speed check).
const FFMPEG_GUARD: Duration = Duration::from_secs(60);
const REFERER: &str = "http://player.example/embed/42";

/// Decodes up to 3 s of video from `url` with ffmpeg; returns the frames decoded.
async fn decoded_video_frames(url: &str) -> u64 {
    let child = tokio::process::Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-v", "error", "-i", url])
        .args(["-t", "3", "-map", "0:v:0", "-f", "null", "-"])
        .args(["-progress", "pipe:1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `ffmpeg` ({e}): this test needs ffmpeg installed and on PATH")
        });
    let out = tokio::time::timeout(FFMPEG_GUARD, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("ffmpeg did not finish within {FFMPEG_GUARD:?} on {url}"))
        .expect("ffmpeg output");
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

    let (demo_frames, origin_frames) = tokio::join!(
        decoded_video_frames(&demo_url),
        decoded_video_frames(&origin_url)
    );
    assert!(demo_frames > 0, "no video decoded from the demo channel");
    assert!(
        origin_frames > 0,
        "no video decoded from the proxied channel"
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
