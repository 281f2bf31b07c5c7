//! The desktop players people point at an IPTV M3U play freesky's output: VLC
//! (`cvlc`) and mpv open `/playlist.m3u` and an account's `get.php` M3U, follow the
//! first entry (the built-in demo channel) and play it.
//!
//! VLC and mpv must be on PATH (scripts/test.sh installs them): without them these
//! tests fail (they do not skip).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::{run_within, TestApp};

/// Bound on one player run; reaching it means a hang (not a speed check).
const PLAYER_GUARD: Duration = Duration::from_secs(60);
const USER: &str = "viewer";
const PASSWORD: &str = "pl4yer-pw";
/// What VLC must have recorded before it is stopped: a few seconds of the demo.
const VLC_ENOUGH_BYTES: u64 = 150_000;

async fn app() -> TestApp {
    TestApp::spawn(&format!(
        r#"
[[services]]
name = "Demo"
kind = "demo"

[[users]]
name = "{USER}"
password = "{PASSWORD}"
max_connections = 4
"#
    ))
    .await
}

/// The two M3U forms players are given: freesky's own playlist and an account's
/// Xtream `get.php` (whose entries are `/live/USER/PASSWORD/N.ts`).
fn playlists(app: &TestApp, password: &str) -> [String; 2] {
    [
        app.url("/playlist.m3u"),
        app.url(&format!(
            "/get.php?username={USER}&password={password}&type=m3u_plus&output=ts"
        )),
    ]
}

/// Plays `url` in mpv (no video or audio output) until 50 frames have been shown;
/// its output when it could not (mpv exits 2 when a file fails to load or play).
async fn mpv_plays(url: &str) -> Result<(), String> {
    let out = run_within(
        tokio::process::Command::new("mpv")
            .args(["--no-config", "--vo=null", "--ao=null", "--frames=50"])
            .args(["--ytdl=no", "--term-status-msg="])
            .arg(url),
        PLAYER_GUARD,
        "mpv installed and on PATH",
    )
    .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // `VO: [null] WxH` is printed once the first video frame is decoded.
    if out.status.success() && text.contains("VO: [null]") {
        Ok(())
    } else {
        Err(format!("mpv on {url}: {:?}\n{text}", out.status))
    }
}

/// Plays `url` in VLC, recording what it plays to a TS file until it holds a few
/// seconds of video (or VLC gives up); the video frames ffprobe reads from that file,
/// and VLC's log.
/// VLC refuses to run as root, so as root it runs as `nobody`.
async fn vlc_recorded_frames(url: &str, dir: &Path) -> (u64, String) {
    let home = dir.join("home");
    std::fs::create_dir_all(&home).expect("VLC's home");
    let out = dir.join("recorded.ts");
    for d in [dir, home.as_path()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    let as_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let mut cmd = if as_root {
        let mut c = tokio::process::Command::new("setpriv");
        c.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "cvlc",
        ]);
        c
    } else {
        tokio::process::Command::new("cvlc")
    };
    let mut child = cmd
        .env("HOME", &home)
        .args(["-I", "dummy", "--play-and-exit", "--no-video-title-show"])
        .arg("--sout")
        .arg(format!("#std{{access=file,mux=ts,dst={}}}", out.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `cvlc` ({e}): this test needs VLC (vlc-bin, vlc-plugin-base) on PATH"
            )
        });
    // VLC's own stop options (`--run-time`) apply to the M3U, not to the channel it
    // opens: stop it once the recording is long enough.
    let deadline = tokio::time::Instant::now() + PLAYER_GUARD;
    loop {
        let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        if size >= VLC_ENOUGH_BYTES {
            break;
        }
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "VLC recorded {size} bytes of {url} within {PLAYER_GUARD:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = child.kill().await;
    let stderr = child
        .wait_with_output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default();
    if !out.exists() {
        panic!("VLC recorded nothing from {url}:\n{stderr}");
    }
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ffprobe` ({e}): this test needs ffmpeg on PATH"));
    let counted = String::from_utf8_lossy(&probe.stdout);
    // One line per stream section and per program section: the first is the stream.
    let frames = counted
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or(0);
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let log = format!(
        "{size} bytes recorded; ffprobe: {counted:?} {}\nVLC's log:\n{stderr}",
        String::from_utf8_lossy(&probe.stderr)
    );
    (frames, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpv_plays_playlist_m3u_and_get_php() {
    let app = app().await;
    for url in playlists(&app, PASSWORD) {
        if let Err(e) = mpv_plays(&url).await {
            panic!("{e}");
        }
    }
    // The check above sees a broken stream: a wrong password's get.php does not play.
    let [_, wrong] = playlists(&app, "wrong-pw");
    assert!(mpv_plays(&wrong).await.is_err(), "mpv 'played' {wrong}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vlc_records_video_from_playlist_m3u_and_get_php() {
    let app = app().await;
    for url in playlists(&app, PASSWORD) {
        let dir = tempfile::tempdir().expect("temp dir");
        let (frames, log) = vlc_recorded_frames(&url, dir.path()).await;
        assert!(
            frames >= 25,
            "VLC recorded {frames} video frames of {url}:\n{log}"
        );
    }
}

/// The big listings are sent gzipped to a client that takes gzip (10,000 channels
/// are megabytes of M3U or JSON), the same text once unzipped, with `Vary`; never a
/// stream. `curl --compressed` reads them as any player's HTTP stack does.
#[tokio::test]
async fn big_listings_are_gzipped_for_clients_that_take_it_and_streams_never() {
    use std::io::Read;
    let app = app().await;
    let raw = reqwest::Client::builder()
        .no_proxy()
        .no_gzip()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let account = format!("username={USER}&password={PASSWORD}");
    let paths = [
        "/playlist.m3u".to_string(),
        "/playlist.m3u8".to_string(),
        "/lineup.json".to_string(),
        format!("/player_api.php?{account}&action=get_live_streams"),
        format!("/get.php?{account}&type=m3u_plus&output=ts"),
    ];
    for path in &paths {
        let plain = raw.get(app.url(path)).send().await.unwrap();
        assert_eq!(plain.status(), 200, "{path}");
        assert!(plain.headers().get("content-encoding").is_none(), "{path}");
        let plain = plain.bytes().await.unwrap();
        let zipped = raw
            .get(app.url(path))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(zipped.status(), 200, "{path}");
        let h = zipped.headers().clone();
        assert_eq!(
            h.get("content-encoding").map(|v| v.to_str().unwrap()),
            Some("gzip"),
            "{path}"
        );
        assert!(
            h.get_all("vary").iter().any(|v| v
                .to_str()
                .unwrap()
                .to_ascii_lowercase()
                .contains("accept-encoding")),
            "{path}: {h:?}"
        );
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(&zipped.bytes().await.unwrap()[..])
            .read_to_end(&mut text)
            .unwrap();
        assert_eq!(text, plain, "{path}");
    }
    // curl, as a client of its own.
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--compressed",
            "--noproxy",
            "*",
            "-m",
            "20",
            "-D",
            "-",
        ])
        .arg(app.url("/playlist.m3u"))
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.contains("content-encoding: gzip"), "{text}");
    assert!(text.contains("#extm3u"), "{text}");
    // A stream is never compressed.
    let playlist = String::from_utf8(
        raw.get(app.url("/playlist.m3u"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    let stream = playlist.lines().find(|l| l.starts_with("http")).unwrap();
    let resp = raw
        .get(stream)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success() || resp.status().is_redirection(),
        "{}",
        resp.status()
    );
    assert!(
        resp.headers().get("content-encoding").is_none(),
        "{:?}",
        resp.headers()
    );
}
