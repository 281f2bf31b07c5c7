//! A title's media through freesky (`freesky::http::media::play`): progressive files
//! with `Range` passed through (206 bytes exact against the file), `HEAD`, fallback to
//! the next source, a dropped client stopping the upstream read, an HLS VOD playlist
//! rewritten, and ffmpeg seeking into a proxied MP4.
//!
//! Until the catalogue routes exist, a tiny router here maps `/title/{name}` to a fixed
//! list of sources and calls `play`, merged with freesky's own router (so the `/proxy/`
//! links of a rewritten playlist open). Upstreams are real HTTP servers on 127.0.0.1.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use freesky::streams::media::MediaSource;
use tempfile::TempDir;

use crate::common::{eventually, playlist_uris, FakeUpstream, HANG_GUARD, HLS_TYPE};

/// freesky's state behind the test router; the temp state dir lives as long as it.
struct Player {
    base: String,
    client: reqwest::Client,
    _dir: TempDir,
    _server: tokio::task::JoinHandle<()>,
}

impl Player {
    /// Services `A` and `B` both on `upstream` (so its loopback address is their own
    /// host), `A` sending `User-Agent: movie-agent`; `titles` maps names to sources.
    async fn start(upstream: &str, titles: Vec<(&str, Vec<MediaSource>)>) -> Player {
        let dir = tempfile::tempdir().expect("temp state dir");
        let config = format!(
            "[server]\nstate_dir = '{}'\n\n\
             [[services]]\nname = \"A\"\nkind = \"m3u\"\nurl = \"{upstream}/a.m3u\"\n\
             headers = {{ \"User-Agent\" = \"movie-agent\" }}\n\n\
             [[services]]\nname = \"B\"\nkind = \"m3u\"\nurl = \"{upstream}/b.m3u\"\npriority = 2\n",
            dir.path().display()
        );
        let config = freesky::config::Config::parse(&config, "test.toml", &|_| None)
            .unwrap_or_else(|e| panic!("test config: {e}"));
        let state = freesky::state(config).expect("state builds");
        let titles: Arc<HashMap<String, Vec<MediaSource>>> = Arc::new(
            titles
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        );
        let router = Router::new()
            .route(
                "/title/{name}",
                any(
                    move |State(s): State<freesky::app::AppState>,
                          UrlPath(name): UrlPath<String>,
                          method: Method,
                          headers: HeaderMap| {
                        let sources = titles.get(&name).cloned().unwrap_or_default();
                        async move {
                            let what = format!("title {name}");
                            freesky::http::media::play(&s, &what, sources, &method, &headers).await
                        }
                    },
                ),
            )
            .with_state(state.clone())
            .merge(freesky::http::app(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serves");
        });
        Player {
            base,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(HANG_GUARD)
                .build()
                .expect("client"),
            _dir: dir,
            _server: server,
        }
    }

    fn url(&self, title: &str) -> String {
        format!("{}/title/{title}", self.base)
    }

    async fn get(&self, title: &str, range: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(self.url(title));
        if let Some(r) = range {
            req = req.header(header::RANGE, r);
        }
        req.send().await.expect("GET title")
    }
}

fn source(service: &str, url: String) -> MediaSource {
    MediaSource {
        service: service.to_string(),
        url,
        headers: vec![("Referer".to_string(), "http://panel.example/".to_string())],
    }
}

/// GET (and HEAD) `path` serves `bytes` as `ctype` the way a web server serves a file:
/// one `Range` honoured with 206 and `Content-Range`, else the whole file.
fn file_route(bytes: Arc<Vec<u8>>, ctype: &'static str) -> axum::routing::MethodRouter {
    get(move |headers: HeaderMap| {
        let bytes = bytes.clone();
        async move {
            let len = bytes.len();
            let range = headers
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.split_once('-'))
                .and_then(|(a, b)| {
                    let (from, to) = if a.is_empty() {
                        (len - b.parse::<usize>().ok()?.min(len), len - 1)
                    } else {
                        let to = if b.is_empty() {
                            len - 1
                        } else {
                            b.parse().ok()?
                        };
                        (a.parse().ok()?, to)
                    };
                    Some((from, to.min(len - 1)))
                });
            let builder = Response::builder()
                .header(header::CONTENT_TYPE, ctype)
                .header(header::ACCEPT_RANGES, "bytes");
            match range {
                Some((from, to)) if from <= to => builder
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header(header::CONTENT_RANGE, format!("bytes {from}-{to}/{len}"))
                    .body(Body::from(bytes[from..=to].to_vec()))
                    .expect("response"),
                Some(_) => builder
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                    .body(Body::empty())
                    .expect("response"),
                None => builder.body(Body::from(bytes.to_vec())).expect("response"),
            }
        }
    })
}

/// A small MP4 made by ffmpeg (10 s, a keyframe every second), and its bytes.
fn make_mp4(dir: &Path) -> Vec<u8> {
    make_mp4_of(dir, "160x90")
}

/// `make_mp4` in frames of `size` ("1280x720": about half a megabyte).
fn make_mp4_of(dir: &Path, size: &str) -> Vec<u8> {
    let out = std::process::Command::new("ffmpeg")
        .current_dir(dir)
        .args(["-nostdin", "-hide_banner", "-v", "error", "-y"])
        .args(["-f", "lavfi", "-i", &format!("testsrc=size={size}:rate=10")])
        .args([
            "-t",
            "10",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "10",
        ])
        .args(["-pix_fmt", "yuv420p", "movie.mp4"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ffmpeg` ({e}): this test needs ffmpeg on PATH"));
    assert!(
        out.status.success(),
        "ffmpeg could not make the test movie: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dir.join("movie.mp4")).expect("movie.mp4 written")
}

/// Bytes that are neither HTML nor a playlist: an MPEG-TS sync byte pattern.
fn pseudo_media(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| if i % 188 == 0 { 0x47 } else { (i % 251) as u8 })
        .collect()
}

#[tokio::test]
async fn ranges_pass_through_with_the_exact_bytes() {
    let file = Arc::new(pseudo_media(300_000));
    let up = FakeUpstream::bind()
        .await
        .route(
            "/movie/7.mkv",
            file_route(file.clone(), "application/octet-stream"),
        )
        .start();
    let player = Player::start(
        &up.base(),
        vec![("m", vec![source("A", up.url("/movie/7.mkv"))])],
    )
    .await;
    let len = file.len();

    let whole = player.get("m", None).await;
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()[header::ACCEPT_RANGES], "bytes");
    assert_eq!(whole.headers()[header::CONTENT_TYPE], "video/x-matroska");
    assert_eq!(
        whole.headers()[header::CONTENT_LENGTH],
        len.to_string().as_str()
    );
    assert_eq!(whole.bytes().await.expect("body").as_ref(), file.as_slice());

    for (asked, from, to) in [
        ("bytes=1000-1999", 1000, 1999),
        ("bytes=123456-", 123_456, len - 1),
        ("bytes=-500", len - 500, len - 1),
    ] {
        let part = player.get("m", Some(asked)).await;
        assert_eq!(part.status(), 206, "{asked}");
        let h = part.headers().clone();
        assert_eq!(
            h[header::CONTENT_RANGE],
            format!("bytes {from}-{to}/{len}").as_str(),
            "{asked}"
        );
        assert_eq!(
            h[header::CONTENT_LENGTH],
            (to - from + 1).to_string().as_str(),
            "{asked}"
        );
        assert_eq!(h[header::ACCEPT_RANGES], "bytes", "{asked}");
        let body = part.bytes().await.expect("body");
        assert!(
            body.as_ref() == &file[from..=to],
            "{asked}: not the file's bytes"
        );
    }
    // A range past the end is the client's mistake, answered as such.
    let past = player.get("m", Some("bytes=900000-")).await;
    assert_eq!(past.status(), 416);
    // With the file's length, as RFC 9110 asks, so the player can ask again.
    assert_eq!(
        past.headers()[header::CONTENT_RANGE],
        format!("bytes */{}", file.len()).as_str()
    );
    // Each request carried the service's headers and the source's own.
    let got = up.requests_to("/movie/7.mkv");
    assert_eq!(got.len(), 5);
    for r in &got {
        assert_eq!(r.header("user-agent"), Some("movie-agent"));
        assert_eq!(r.header("referer"), Some("http://panel.example/"));
    }
    assert_eq!(got[1].header("range"), Some("bytes=1000-1999"));
}

#[tokio::test]
async fn head_answers_the_head_without_a_body() {
    let file = Arc::new(pseudo_media(50_000));
    let up = FakeUpstream::bind()
        .await
        .route("/film.mp4", file_route(file.clone(), "video/mp4"))
        .start();
    let player = Player::start(
        &up.base(),
        vec![("m", vec![source("A", up.url("/film.mp4"))])],
    )
    .await;

    let head = player
        .client
        .head(player.url("m"))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()[header::CONTENT_TYPE], "video/mp4");
    assert_eq!(head.headers()[header::CONTENT_LENGTH], "50000");
    assert_eq!(head.headers()[header::ACCEPT_RANGES], "bytes");
    assert!(head.bytes().await.expect("body").is_empty());

    let head = player
        .client
        .head(player.url("m"))
        .header(header::RANGE, "bytes=100-199")
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), 206);
    assert_eq!(head.headers()[header::CONTENT_RANGE], "bytes 100-199/50000");
    assert_eq!(head.headers()[header::CONTENT_LENGTH], "100");
    assert!(head.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn a_failing_source_falls_back_to_the_next() {
    let file = Arc::new(pseudo_media(40_000));
    let login = "<!DOCTYPE html><html><body>Please log in</body></html>";
    let up = FakeUpstream::bind()
        .await
        .status("/gone.mp4", 404)
        .text("/login.mp4", "text/html; charset=utf-8", login)
        .bytes(
            "/disguised.mp4",
            "application/octet-stream",
            login.as_bytes().to_vec(),
        )
        .route("/good.mp4", file_route(file.clone(), "video/mp4"))
        .start();
    let failing = vec![
        source("A", up.url("/gone.mp4")),
        source("B", up.url("/login.mp4")),
        source("B", up.url("/disguised.mp4")),
        source(
            "A",
            format!("http://127.0.0.1:{}/refused.mp4", closed_port().await),
        ),
    ];
    let mut ok = failing.clone();
    ok.push(source("B", up.url("/good.mp4")));
    let player = Player::start(&up.base(), vec![("ok", ok), ("bad", failing)]).await;

    let resp = player.get("ok", Some("bytes=10-19")).await;
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.expect("body").as_ref(), &file[10..20]);
    for path in ["/gone.mp4", "/login.mp4", "/disguised.mp4", "/good.mp4"] {
        assert_eq!(up.hits(path), 1, "{path}");
    }

    let resp = player.get("bad", None).await;
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.expect("json error");
    assert_eq!(
        body["error"], "every source of `title bad` failed",
        "{body}"
    );
    let tried = body["detail"].as_array().expect("detail lists the tries");
    assert_eq!(tried.len(), 4, "{body}");
    assert!(
        tried[1]["error"].as_str().unwrap().contains("not media"),
        "{body}"
    );
}

/// A port nobody listens on.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn a_dropped_client_stops_the_upstream_read() {
    const TOTAL: u64 = 1 << 30;
    let sent = Arc::new(AtomicU64::new(0));
    let stopped = Arc::new(AtomicBool::new(false));
    let (s, st) = (sent.clone(), stopped.clone());
    let up = FakeUpstream::bind()
        .await
        .route(
            "/huge.ts",
            get(move || {
                let (sent, stopped) = (s.clone(), st.clone());
                async move {
                    /// Marks the body dropped (the connection closed or the body ended).
                    struct Guard(Arc<AtomicBool>);
                    impl Drop for Guard {
                        fn drop(&mut self) {
                            self.0.store(true, Ordering::SeqCst);
                        }
                    }
                    let chunk = bytes::Bytes::from(pseudo_media(64 << 10));
                    let guard = Guard(stopped);
                    let body = futures::stream::unfold(0u64, move |at| {
                        let _keep = &guard;
                        let chunk = chunk.clone();
                        let sent = sent.clone();
                        async move {
                            (at < TOTAL).then(|| {
                                sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                                (
                                    Ok::<_, std::io::Error>(chunk.clone()),
                                    at + chunk.len() as u64,
                                )
                            })
                        }
                    });
                    Response::builder()
                        .header(header::CONTENT_TYPE, "video/mp2t")
                        .header(header::CONTENT_LENGTH, TOTAL)
                        .body(Body::from_stream(body))
                        .expect("response")
                }
            }),
        )
        .start();
    let player = Player::start(
        &up.base(),
        vec![("m", vec![source("A", up.url("/huge.ts"))])],
    )
    .await;

    let mut resp = player.get("m", None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()[header::CONTENT_LENGTH],
        TOTAL.to_string().as_str()
    );
    let mut read = 0;
    while read < (1 << 20) {
        read += resp.chunk().await.expect("body").expect("more body").len();
    }
    drop(resp);
    eventually("the upstream body to be dropped", || async {
        if stopped.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(format!("{} bytes sent so far", sent.load(Ordering::SeqCst)))
        }
    })
    .await;
    let at_stop = sent.load(Ordering::SeqCst);
    assert!(
        at_stop < 64 << 20,
        "the upstream sent {at_stop} bytes for a client that read 1 MiB"
    );
}

#[tokio::test]
async fn an_hls_vod_source_is_rewritten_through_the_hls_engine() {
    let segment = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/seg0.ts"))
        .expect("demo segment");
    let vod = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n\
               #EXTINF:4.0,\nseg0.ts\n#EXTINF:4.0,\nseg1.ts\n#EXT-X-ENDLIST\n";
    let up = FakeUpstream::bind()
        .await
        .text("/vod/index.m3u8", HLS_TYPE, vod)
        .bytes("/vod/seg0.ts", "video/mp2t", segment.clone())
        .start();
    let player = Player::start(
        &up.base(),
        vec![("m", vec![source("A", up.url("/vod/index.m3u8"))])],
    )
    .await;

    let resp = player.get("m", None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], HLS_TYPE);
    let body = resp.text().await.expect("playlist");
    assert!(body.contains("#EXT-X-ENDLIST"), "{body}");
    // A `HEAD` says the playlist's length, not the empty body's.
    let head = player
        .client
        .head(player.url("m"))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()[header::CONTENT_LENGTH],
        body.len().to_string().as_str()
    );
    let uris = playlist_uris(&body);
    assert_eq!(uris.len(), 2, "{body}");
    for u in &uris {
        assert!(u.starts_with(&format!("{}/proxy/", player.base)), "{u}");
    }
    let seg = player.client.get(&uris[0]).send().await.expect("segment");
    assert_eq!(seg.status(), 200);
    assert_eq!(
        seg.bytes().await.expect("segment body").as_ref(),
        segment.as_slice()
    );
    let got = up.requests_to("/vod/seg0.ts");
    assert_eq!(got[0].header("referer"), Some("http://panel.example/"));
}

#[tokio::test]
async fn ffmpeg_seeks_into_a_proxied_mp4() {
    let dir = tempfile::tempdir().expect("temp dir");
    let movie = Arc::new(make_mp4(dir.path()));
    let up = FakeUpstream::bind()
        .await
        .route("/movie/u/p/42.mp4", file_route(movie.clone(), "video/mp4"))
        .start();
    let player = Player::start(
        &up.base(),
        vec![("m", vec![source("A", up.url("/movie/u/p/42.mp4"))])],
    )
    .await;

    let run = tokio::process::Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-v", "error", "-ss", "5", "-i"])
        .arg(player.url("m"))
        .args(["-frames:v", "1", "-f", "image2", "-y"])
        .arg(dir.path().join("frame.png"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("ffmpeg hung")
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg could not seek through freesky: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("frame.png").exists(), "no frame decoded");
    // ffmpeg reached the middle by asking for bytes past the start: the ranges went
    // through freesky to the origin.
    let ranges: Vec<String> = up
        .requests_to("/movie/u/p/42.mp4")
        .iter()
        .filter_map(|r| r.header("range").map(str::to_string))
        .collect();
    assert!(
        ranges.iter().any(|r| !r.starts_with("bytes=0-")),
        "no seek reached the origin: {ranges:?}"
    );
}

/// An origin that ignores `Range` (every answer the whole file, no `Accept-Ranges`),
/// serving an MP4 whose index is at its end: freesky must not claim ranges it cannot
/// give, or ffmpeg seeks for the index and the file does not open.
#[tokio::test]
async fn a_movie_from_an_origin_without_ranges_opens_in_ffmpeg() {
    let dir = tempfile::tempdir().expect("temp dir");
    let movie = make_mp4_of(dir.path(), "1280x720");
    let moov = movie
        .windows(4)
        .position(|w| w == b"moov")
        .expect("an index");
    let mdat = movie
        .windows(4)
        .position(|w| w == b"mdat")
        .expect("media data");
    // Past ffmpeg's first read (32 KB): it must seek, or read on, to find it.
    assert!(
        moov > mdat && moov > 256 * 1024,
        "the test needs the index after the media data, far in: at {moov}"
    );
    let up = FakeUpstream::bind()
        .await
        .bytes("/plain/42.mp4", "video/mp4", movie)
        .start();
    let player = Player::start(
        &up.base(),
        vec![("m", vec![source("A", up.url("/plain/42.mp4"))])],
    )
    .await;

    let whole = player.get("m", None).await;
    assert_eq!(whole.status(), 200);
    assert!(
        whole.headers().get(header::ACCEPT_RANGES).is_none(),
        "ranges claimed for an origin without them: {:?}",
        whole.headers()
    );
    drop(whole);

    let run = tokio::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(player.url("m"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("ffprobe hung")
        .expect("ffprobe runs");
    let duration = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && duration.trim().starts_with("10"),
        "ffprobe could not open the movie through freesky: {duration} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
