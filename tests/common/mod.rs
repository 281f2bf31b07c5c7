//! Shared harness of the integration tests: a real freesky server on 127.0.0.1:0
//! (`TestApp`) and real HTTP upstreams (`FakeUpstream`) that record what they received.
//! Nothing of freesky is mocked: tests talk HTTP to both sides.

// Each test binary (`it`, `process_wide`) uses a different part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const HLS_TYPE: &str = "application/vnd.apple.mpegurl";
pub const M3U_TYPE: &str = "audio/x-mpegurl";

/// A bound on anything a test waits for that should take milliseconds (server
/// shutdown, a whole HTTP exchange). Reaching it means a hang, which must fail the test
/// instead of blocking the suite; it is not a speed assertion.
pub const HANG_GUARD: Duration = Duration::from_secs(20);

fn init_logging() {
    // `RUST_LOG=freesky=debug cargo test --test it api:: -- --nocapture` shows the server's logs.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HANG_GUARD)
        .build()
        .expect("test client builds")
}

// ---------------------------------------------------------------------------------------
// freesky under test

/// A running freesky: its state dir (deleted on drop), the base URL it answers at, and
/// a way to stop or restart it on the same state dir.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`, no trailing slash. Changes on restart.
    pub base: String,
    pub client: reqwest::Client,
    /// The config text actually loaded (after `{state_dir}` substitution).
    pub config_text: String,
    /// The clock of link expiry and upstream token lifetimes: `advance` it instead of
    /// waiting for an expiry. Kept across restarts.
    pub clock: Arc<freesky::clock::TestClock>,
    dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    /// Starts freesky with `config_toml`. The text may contain `{state_dir}` (then it
    /// also writes its own `[server]` section); otherwise a `[server]` section with a
    /// temporary `state_dir` and `bind = "127.0.0.1:0"` is put in front of it.
    pub async fn spawn(config_toml: &str) -> TestApp {
        init_logging();
        let dir = tempfile::tempdir().expect("temp state dir");
        let state_dir = dir.path().display().to_string();
        let config_text = if config_toml.contains("{state_dir}") {
            config_toml.replace("{state_dir}", &state_dir)
        } else {
            assert!(
                !config_toml.contains("[server]"),
                "a config with its own [server] section must set `state_dir = '{{state_dir}}'`"
            );
            format!("[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{state_dir}'\n\n{config_toml}")
        };
        let mut app = TestApp {
            base: String::new(),
            client: client(),
            config_text,
            clock: Arc::default(),
            dir,
            shutdown: None,
            server: None,
        };
        app.start().await;
        app
    }

    pub async fn start(&mut self) {
        let config = freesky::config::Config::parse(&self.config_text, "test.toml", &|k| {
            std::env::var(k).ok()
        })
        .unwrap_or_else(|e| panic!("test config does not load:\n{e}\n---\n{}", self.config_text));
        assert_eq!(config.server.state_dir, self.dir.path());
        let state =
            freesky::state_with_clock(config, self.clock.clone()).expect("freesky state builds");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(freesky::run(listener, state, async {
            let _ = rx.await;
        }));
        self.base = format!("http://{addr}");
        self.shutdown = Some(tx);
        self.server = Some(server);
    }

    /// Stops the server and waits until it has stopped (its state is dropped).
    pub async fn stop(&mut self) {
        // Idle keep-alive connections of the old client must not keep the server alive.
        self.client = client();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(HANG_GUARD, server)
                .await
                .expect("server did not stop")
                .expect("server task panicked")
                .expect("server failed");
        }
    }

    /// Stops the server and starts a new one (new port, fresh state built from the
    /// same config and the same state dir).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// GET `path` (relative to the base, or an absolute URL).
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub async fn head(&self, path: &str) -> reqwest::Response {
        self.client
            .head(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("HEAD {path}: {e}"))
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.post_auth(path, None).await
    }

    /// POST with an optional raw `Authorization` header value.
    pub async fn post_auth(&self, path: &str, authorization: Option<&str>) -> reqwest::Response {
        let mut req = self.client.post(self.url(path));
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        req.send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// `method path` with a JSON `body` and an optional raw `Authorization` header value.
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &str,
        authorization: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .request(method.clone(), self.url(path))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        req.send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// GET `path` and parse the body as JSON (panics with the body when it is not).
    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        json_of(self.get(path).await).await
    }

    /// GET `path`, which must answer 200 with text.
    pub async fn get_text_ok(&self, path: &str) -> String {
        let resp = self.get(path).await;
        let status = resp.status();
        let body = resp.text().await.expect("body");
        assert_eq!(status, 200, "GET {path} answered {status}: {body}");
        body
    }

    /// `/api/channels/all`, which must answer 200.
    pub async fn channels(&self) -> Vec<Value> {
        let (status, body) = self.get_json("/api/channels/all").await;
        assert_eq!(status, 200, "/api/channels/all: {body}");
        body.as_array().expect("channels are an array").clone()
    }

    /// Names of `/api/channels/all`, sorted.
    pub async fn channel_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .channels()
            .await
            .iter()
            .map(|c| c["name"].as_str().expect("name").to_string())
            .collect();
        names.sort();
        names
    }

    /// The id (slug) of the lineup channel called `name`.
    pub async fn channel_id(&self, name: &str) -> String {
        self.channel_named(name).await["id"]
            .as_str()
            .expect("a channel id")
            .to_string()
    }

    /// The lineup channel called `name` (panics listing the lineup when absent).
    pub async fn channel_named(&self, name: &str) -> Value {
        let all = self.channels().await;
        all.iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no channel named {name:?} in {all:#?}"))
    }

    /// The status object of service `name` from `/api/services/status`.
    pub async fn service_status(&self, name: &str) -> Value {
        let (status, body) = self.get_json("/api/services/status").await;
        assert_eq!(status, 200, "{body}");
        body.as_array()
            .expect("status is an array")
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no service {name:?} in {body:#}"))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Status and JSON body of a response (panics with the raw body when it is not JSON).
pub async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = StatusCode::from_u16(resp.status().as_u16()).expect("status");
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("{status} body is not JSON ({e}), content-type {ctype:?}: {text}")
    });
    (status, value)
}

/// Asserts an API error: `status`, and the SPEC's `{"error": "...", "detail": ...}` body.
/// Returns the body.
pub async fn assert_api_error(resp: reqwest::Response, status: u16) -> Value {
    let url = resp.url().to_string();
    let (got, body) = json_of(resp).await;
    assert_eq!(got.as_u16(), status, "{url}: {body:#}");
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {body}"));
    assert!(
        obj.get("error")
            .and_then(Value::as_str)
            .is_some_and(|e| !e.is_empty()),
        "no `error` text in {body}"
    );
    assert!(obj.contains_key("detail"), "no `detail` key in {body}");
    body
}

// ---------------------------------------------------------------------------------------
// fake upstreams

/// One request a fake upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Log = Arc<Mutex<Vec<Recorded>>>;

/// A real HTTP server on 127.0.0.1:0 standing in for an upstream. Every request is
/// recorded (method, path, query, headers) before it is answered.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    log: Log,
    task: JoinHandle<()>,
}

/// A fake upstream whose port is already bound (so its content can name its own
/// URLs), being given its routes.
pub struct FakeBuilder {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    required: Vec<(HeaderName, String)>,
}

impl FakeUpstream {
    /// Binds a port; add routes to the builder, then `start()` it.
    pub async fn bind() -> FakeBuilder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let addr = listener.local_addr().expect("fake addr");
        FakeBuilder {
            listener,
            addr,
            router: Router::new(),
            required: Vec::new(),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().expect("log lock").clone()
    }

    /// The requests received for `path` (without query).
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    pub fn hits(&self, path: &str) -> usize {
        self.requests_to(path).len()
    }

    /// Paths requested, in order.
    pub fn paths(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.path).collect()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeBuilder {
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Any route (axum path syntax, e.g. `/v1/stream/{id}`).
    pub fn route(mut self, path: &str, handler: MethodRouter) -> Self {
        self.router = self.router.route(path, handler);
        self
    }

    /// GET `path` answers 200 with `body` as `content_type`.
    pub fn text(self, path: &str, content_type: &'static str, body: impl Into<String>) -> Self {
        let body: String = body.into();
        self.route(
            path,
            get(move || {
                let body = body.clone();
                async move { ([(header::CONTENT_TYPE, content_type)], body) }
            }),
        )
    }

    /// GET `path` answers 200 with what `text` holds when asked (the test changes it
    /// between requests: a list that changes upstream).
    pub fn shared_text(self, path: &str, text: &std::sync::Arc<std::sync::Mutex<String>>) -> Self {
        let text = text.clone();
        self.route(
            path,
            get(move || {
                let body = text.lock().expect("shared text lock").clone();
                async move { body }
            }),
        )
    }

    /// GET `path` answers 200 with `bytes` as `content_type`.
    pub fn bytes(self, path: &str, content_type: &'static str, bytes: Vec<u8>) -> Self {
        let bytes = bytes::Bytes::from(bytes);
        self.route(
            path,
            get(move || {
                let bytes = bytes.clone();
                async move { ([(header::CONTENT_TYPE, content_type)], bytes) }
            }),
        )
    }

    /// GET `{prefix}/{file}` serves the files of `dir` (content type by extension).
    pub fn dir(self, prefix: &str, dir: &Path) -> Self {
        let dir = dir.to_path_buf();
        self.route(
            &format!("{prefix}/{{file}}"),
            get(
                move |axum::extract::Path(file): axum::extract::Path<String>| {
                    let path = dir.join(&file);
                    async move {
                        let ctype = match path.extension().and_then(|e| e.to_str()) {
                            Some("m3u8") => HLS_TYPE,
                            Some("ts") => "video/mp2t",
                            Some("mp4" | "m4s") => "video/mp4",
                            _ => "application/octet-stream",
                        };
                        match std::fs::read(&path) {
                            Ok(bytes) if !file.contains("..") => respond(200, ctype, bytes),
                            _ => respond(404, "text/plain", "no such file"),
                        }
                    }
                },
            ),
        )
    }

    /// GET `path` answers `status` with a short text body.
    pub fn status(self, path: &str, status: u16) -> Self {
        let code = StatusCode::from_u16(status).expect("valid status");
        self.route(
            path,
            get(move || async move { (code, format!("fake upstream answers {code}")) }),
        )
    }

    /// GET `path` never answers (the connection stays open with no response head).
    pub fn hang(self, path: &str) -> Self {
        self.route(
            path,
            get(|| async {
                std::future::pending::<()>().await;
                "unreachable"
            }),
        )
    }

    /// Every request without header `name` equal to `value` is answered 403 (after being
    /// recorded), like a CDN that checks the Referer.
    pub fn require_header(mut self, name: &str, value: &str) -> Self {
        self.required.push((
            HeaderName::try_from(name).expect("header name"),
            value.to_string(),
        ));
        self
    }

    pub fn start(self) -> FakeUpstream {
        let log: Log = Arc::default();
        let required = Arc::new(self.required);
        let recorder = {
            let log = log.clone();
            move |req: Request, next: Next| {
                let log = log.clone();
                let required = required.clone();
                async move {
                    log.lock().expect("log lock").push(Recorded {
                        method: req.method().to_string(),
                        path: req.uri().path().to_string(),
                        query: req.uri().query().map(str::to_string),
                        headers: req.headers().clone(),
                    });
                    for (name, value) in required.iter() {
                        let got = req.headers().get(name).and_then(|v| v.to_str().ok());
                        if got != Some(value.as_str()) {
                            return (
                                StatusCode::FORBIDDEN,
                                format!("fake upstream: {name} must be {value:?}, got {got:?}"),
                            )
                                .into_response();
                        }
                    }
                    next.run(req).await
                }
            }
        };
        let app = self
            .router
            .fallback(|| async { (StatusCode::NOT_FOUND, "fake upstream: no such path") })
            .layer(middleware::from_fn(recorder));
        let listener = self.listener;
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("fake upstream serves");
        });
        FakeUpstream {
            addr: self.addr,
            log,
            task,
        }
    }
}

/// A live media playlist (no ENDLIST) of `names` (URIs as given), 2 s each.
pub fn live_playlist(names: &[&str]) -> String {
    let mut s = String::from(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n",
    );
    for n in names {
        s.push_str("#EXTINF:2.0,\n");
        s.push_str(n);
        s.push('\n');
    }
    s
}

/// XMLTV time `hours` from now, on the hour.
pub fn xmltv_at(hours: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    xmltv_time(now - now % 3600 + hours * 3600)
}

/// As `xmltv_at`, but hour 0 starts half an hour ago: the programme "on now" is still
/// on for half an hour, whenever the test runs (with `xmltv_at`, one that builds its
/// guide just before the top of an hour finds the next programme on when it asks).
pub fn xmltv_around(hours: i64) -> String {
    xmltv_time(chrono::Utc::now().timestamp() - 1800 + hours * 3600)
}

fn xmltv_time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .format("%Y%m%d%H%M%S +0000")
        .to_string()
}

/// An XMLTV document: `channels` as (id, display-name), one programme each, titled
/// "<id> show", on now (`xmltv_around`).
pub fn xmltv_guide(channels: &[(&str, &str)]) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<tv>\n");
    for (id, name) in channels {
        s.push_str(&format!(
            "<channel id=\"{id}\"><display-name>{name}</display-name></channel>\n"
        ));
    }
    for (id, _) in channels {
        s.push_str(&format!(
            "<programme start=\"{}\" stop=\"{}\" channel=\"{id}\"><title>{id} show</title></programme>\n",
            xmltv_around(0),
            xmltv_around(1)
        ));
    }
    s.push_str("</tv>\n");
    s
}

/// A VOD media playlist of `segments` (URIs as given), 2 s each.
pub fn media_playlist(segments: &[&str]) -> String {
    let mut out = String::from(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n",
    );
    for s in segments {
        out.push_str("#EXTINF:2.000,\n");
        out.push_str(s);
        out.push('\n');
    }
    out.push_str("#EXT-X-ENDLIST\n");
    out
}

/// Every URI of an HLS playlist: URI lines and `URI="..."` attributes, in order.
pub fn playlist_uris(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with('#') {
            let mut rest = line;
            while let Some(i) = rest.find("URI=\"") {
                let after = &rest[i + 5..];
                let end = after.find('"').expect("closed URI attribute");
                out.push(after[..end].to_string());
                rest = &after[end..];
            }
        } else {
            out.push(line.to_string());
        }
    }
    out
}

/// `seconds` of real MPEG-TS (H.264 with a key frame every second, AAC), made by
/// ffmpeg, which must be on PATH.
pub fn mpeg_ts_clip(seconds: u32) -> Arc<Vec<u8>> {
    mpeg_ts_clip_gop(seconds, 25)
}

/// `mpeg_ts_clip`, with a key frame every `gop` frames (25 a second).
pub fn mpeg_ts_clip_gop(seconds: u32, gop: u32) -> Arc<Vec<u8>> {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new("ffmpeg")
        .current_dir(dir.path())
        .args(["-nostdin", "-hide_banner", "-v", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc=size=160x90:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            &seconds.to_string(),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ])
        .args([
            "-g",
            &gop.to_string(),
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-f",
            "mpegts",
            "clip.ts",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ffmpeg` ({e}): this test needs ffmpeg on PATH"));
    assert!(
        out.status.success(),
        "ffmpeg could not make the test clip: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Arc::new(std::fs::read(dir.path().join("clip.ts")).expect("the clip"))
}

/// A route sending `file` as a live MPEG-TS encoder would: an 80th of it every 100 ms
/// (an 8 s clip in real time, a 16 s one at twice real time), once, or over and over
/// when `looped` (an endless stream).
pub fn paced_mpeg_ts(file: Arc<Vec<u8>>, looped: bool) -> MethodRouter {
    paced_mpeg_ts_every(file, looped, Duration::from_millis(100))
}

/// `paced_mpeg_ts` with an 80th of `file` every `every` (a slow source: longer than
/// 100 ms for an 8 s clip).
pub fn paced_mpeg_ts_every(file: Arc<Vec<u8>>, looped: bool, every: Duration) -> MethodRouter {
    get(move || {
        let file = file.clone();
        async move {
            let step = (file.len() / 80).max(188);
            let chunks = futures::stream::unfold(0usize, move |mut at| {
                let file = file.clone();
                async move {
                    if at >= file.len() {
                        if !looped {
                            return None;
                        }
                        at = 0;
                    }
                    if at > 0 {
                        tokio::time::sleep(every).await;
                    }
                    let end = (at + step).min(file.len());
                    let chunk = bytes::Bytes::copy_from_slice(&file[at..end]);
                    Some((Ok::<_, std::convert::Infallible>(chunk), end))
                }
            });
            respond(200, "video/mp2t", Body::from_stream(chunks))
        }
    })
}

/// A body the fake answers with `status`, for custom handlers.
pub fn respond(status: u16, content_type: &'static str, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .expect("response builds")
}

/// Runs `tv_validate_file` on `xml`; panics with its output when it refuses it.
pub fn tv_validate(xml: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("epg.xml");
    std::fs::write(&path, xml).unwrap();
    let out = std::process::Command::new("tv_validate_file")
        .args(["--dtd-file", "/usr/share/xmltv/xmltv.dtd"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `tv_validate_file` ({e}): install Debian's xmltv-util")
        });
    assert!(
        out.status.success(),
        "tv_validate_file refused the guide:\n{}{}\n---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(xml)
    );
}

/// Peak resident memory of this test process (VmHWM), in kB: the memory bounds of the
/// fault drills read it before and after.
pub fn vm_hwm_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

// ---------------------------------------------------------------------------------------
// waiting for a condition

/// How often `eventually` looks again.
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it answers `Ok`, for at most `bound`; then panics with `what`
/// and the last `Err` (what was seen instead). For conditions that become true on their
/// own (a log line, a counter, a closed connection): a bound on a wait, not a speed
/// assertion.
pub async fn eventually_within<T, E, F, Fut>(bound: Duration, what: &str, mut check: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("{what}: still not so after {bound:?}; last seen: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `eventually_within` bounded by `HANG_GUARD`.
pub async fn eventually<T, E, F, Fut>(what: &str, check: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    eventually_within(HANG_GUARD, what, check).await
}

/// `eventually` for a plain condition (`what` says what was awaited).
pub async fn eventually_true<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(what, || {
        let fut = check();
        async move {
            if fut.await {
                Ok(())
            } else {
                Err("false")
            }
        }
    })
    .await
}

/// `eventually_within` for code outside an async runtime (threads, `#[test]`).
pub fn eventually_blocking<T, E: std::fmt::Display>(
    bound: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = std::time::Instant::now() + bound;
    loop {
        let last = match check() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if std::time::Instant::now() >= deadline {
            panic!("{what}: still not so after {bound:?}; last seen: {last}");
        }
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------
// external programs (real clients)

/// Runs `cmd` (stdin closed, stdout and stderr captured) to its end, bounded by `bound`
/// (a hang guard: the program is killed and the test fails when reached). `needs` names
/// what to install when the program cannot start: the test fails, it does not skip.
pub async fn run_within(
    cmd: &mut tokio::process::Command,
    bound: Duration,
    needs: &str,
) -> std::process::Output {
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{program}` ({e}): this test needs {needs}"));
    tokio::time::timeout(bound, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("`{program}` did not finish within {bound:?}"))
        .unwrap_or_else(|e| panic!("`{program}`'s output: {e}"))
}

// ---------------------------------------------------------------------------------------
// the freesky binary

/// `freesky` (the binary cargo built for these tests) with nothing of the caller's
/// environment that could reach its config: no `FREESKY_CONFIG`, no
/// `FREESKY_ADMIN_TOKEN`; logs at `info`, without colour.
pub fn freesky_command() -> std::process::Command {
    freesky_command_via(&[])
}

/// `freesky_command` run through `wrapper` (such as `ip netns exec NS`), which must
/// exec the binary so that the child is freesky itself.
pub fn freesky_command_via(wrapper: &[&str]) -> std::process::Command {
    let bin = env!("CARGO_BIN_EXE_freesky");
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = std::process::Command::new(program);
            c.args(args).arg(bin);
            c
        }
        None => std::process::Command::new(bin),
    };
    cmd.env_remove("FREESKY_CONFIG")
        .env_remove("FREESKY_ADMIN_TOKEN")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    cmd
}

/// A running `freesky` process serving HTTP: its stderr goes to a log file; it is
/// SIGKILLed on drop (a test that wants a clean exit signals it and `wait_exit`s).
pub struct Process {
    pub child: std::process::Child,
    /// The address of its `serving on http://ADDR` log line.
    pub addr: SocketAddr,
    /// `http://ADDR`.
    pub base: String,
    pub log: std::path::PathBuf,
}

impl Process {
    /// Spawns `cmd` (from `freesky_command()` plus arguments) with stderr to `log`, and
    /// waits (bounded) for it to log that it serves; panics with the log when it exits
    /// first or never does.
    pub fn serve(mut cmd: std::process::Command, log: &Path) -> Process {
        let file = std::fs::File::create(log).expect("log file");
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("the freesky binary starts");
        let mut p = Process {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            base: String::new(),
            log: log.to_path_buf(),
        };
        let addr: String = eventually_blocking(HANG_GUARD, "freesky to serve", || {
            let text = p.log_text();
            if let Some(i) = text.find("serving on http://") {
                return Ok(text[i + "serving on http://".len()..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '"')
                    .collect());
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("freesky exited with {status}:\n{text}");
            }
            Err(format!("the log so far:\n{text}"))
        });
        p.addr = addr
            .parse()
            .unwrap_or_else(|e| panic!("the address {addr:?} it serves on: {e}"));
        p.base = format!("http://{addr}");
        p
    }

    /// Its stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends signal `name` (`TERM`, `HUP`, ...) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (bounded by `bound`, a hang guard) until the log has `needle`; the log.
    pub async fn wait_log(&self, needle: &str, bound: Duration) -> String {
        eventually_within(bound, &format!("the log to show {needle:?}"), || async {
            let text = self.log_text();
            if text.contains(needle) {
                Ok(text)
            } else {
                Err(text)
            }
        })
        .await
    }

    /// Waits (bounded by `bound`, a hang guard) for the process to exit.
    pub async fn wait_exit(&mut self, bound: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "freesky did not exit within {bound:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// SIGKILL now: no shutdown, no flush.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// process-wide measurements

/// Held by every test of the `process_wide` binary for its whole run: those tests read
/// what the whole process did (peak memory, the process-wide metrics), which other
/// tests running at the same time would blur.
pub async fn alone() -> tokio::sync::MutexGuard<'static, ()> {
    static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ALONE.lock().await
}

/// Resets this process's peak resident memory (VmHWM) to what is resident now
/// (Linux: `/proc/self/clear_refs`), so a later `vm_hwm_kb` is this test's peak, not
/// one left by a test that ran earlier in the same process.
pub fn reset_vm_hwm() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM (/proc/self/clear_refs)");
}

/// Another player's address (loopback: the whole 127/8 reaches a test server).
pub const OTHER_PLAYER: [u8; 4] = [127, 0, 0, 2];

/// An HTTP client whose requests come from the local address `ip` (a second player).
pub fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(ip))
        .timeout(HANG_GUARD)
        .build()
        .expect("a client")
}
