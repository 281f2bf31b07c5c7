//! The dashboard (`GET /`, SPEC "dashboard", issue #7) driven in real headless Chromium
//! through Debian's `chromedriver` (WebDriver over loopback HTTP, fantoccini): load,
//! search as you type, group filter, enable/disable and priority with the admin token
//! (refused without it), the channel test button, a phone-width layout, server-side
//! search that works without JavaScript, and the player: the demo channel (H.264+AAC in
//! MPEG-TS) played through hls.js and through Chromium's own HLS with `currentTime`
//! advancing, an offline channel's error, and a failover during playback. Screenshots land in
//! `target/test-artifacts/dashboard.png` and `dashboard-phone.png`.
//!
//! The page is only reached through its DOM contract (the ids, classes and data
//! attributes of `templates/dashboard.html` that its script relies on too); every
//! change it makes is confirmed through the JSON API with reqwest.

use std::net::TcpListener as StdListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::common::{json_of, respond, FakeUpstream, TestApp, HLS_TYPE, M3U_TYPE};
use crate::dashboard_paging::big_name;

const TOKEN: &str = "dash-board-admin-token";
/// Bound on each thing the browser is waited for (a page load, a fetch and a DOM
/// update). Reaching it is a hang or a missing feature, not slowness.
const WAIT: Duration = Duration::from_secs(10);
/// Bound on the whole browser session, so a wedged chromedriver fails the test (the
/// longest takes 15 s alone on 2 cores; CI runs it beside the whole suite).
const WHOLE_TEST: Duration = Duration::from_secs(180);
const INSTALL_HINT: &str = "run scripts/test.sh, which installs chromium and chromium-driver";

/// The lineup the local origin lists: (name, group, stream path).
const CHANNELS: &[(&str, &str, &str)] = &[
    ("Alpha News", "News", "alpha"),
    ("Beta Sports", "Sports", "beta"),
    ("Gamma Weather", "News", "gamma"),
    ("Delta Goals", "Sports", "delta"),
    ("Écho Culture", "Culture", "echo"),
    ("Zeta Offline", "Culture", OFFLINE),
];
/// The stream of `CHANNELS` the origin does not serve (404).
const OFFLINE: &str = "zeta";

// ---------------------------------------------------------------------------------------
// chromedriver + Chromium

/// `name` found on `PATH`, or a test failure telling how to install it.
fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not installed: {INSTALL_HINT}"))
}

/// A chromedriver child process on a free loopback port, in its own process group so
/// that dropping it kills chromedriver and every Chromium process it started, even
/// when the test panics.
struct Driver {
    child: Child,
    port: u16,
    log: PathBuf,
    profiles: tempfile::TempDir,
}

impl Driver {
    /// Started on a free port; again on another when something took that port between
    /// its choice and chromedriver's bind (another test's server: chromedriver then
    /// logs `Address already in use` and never answers).
    async fn start() -> Driver {
        for _ in 0..3 {
            let driver = Self::start_once();
            if !driver.port_taken().await {
                driver.wait_ready().await;
                return driver;
            }
        }
        panic!("chromedriver found its port taken three times in a row");
    }

    /// Whether chromedriver said its port was taken before it said it was ready.
    async fn port_taken(&self) -> bool {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let until = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < until {
            // Answering as a WebDriver does: its port is its own (whatever it logged
            // of IPv6). Another test's server there answers something else.
            if let Ok(resp) = client.get(format!("{}/status", self.url())).send().await {
                if resp
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v.get("value").is_some())
                {
                    return false;
                }
            }
            if self
                .log_text()
                .contains("bind() failed: Address already in use")
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    fn start_once() -> Driver {
        let chromedriver = require_tool("chromedriver");
        require_tool("chromium");
        let profiles = tempfile::tempdir().expect("temp dir");
        let log = profiles.path().join("chromedriver.log");
        let port = StdListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} ({INSTALL_HINT})",
                    chromedriver.display()
                )
            });
        Driver {
            child,
            port,
            log,
            profiles,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Polls `GET /status` until chromedriver says it is ready.
    async fn wait_ready(&self) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(WAIT)
            .build()
            .unwrap();
        let what = format!("chromedriver on port {} to be ready", self.port);
        crate::common::eventually_within(WAIT, &what, || async {
            let last = match client.get(format!("{}/status", self.url())).send().await {
                Ok(resp) => match resp.json::<Value>().await {
                    Ok(v) if v["value"]["ready"] == true => return Ok(()),
                    Ok(v) => v.to_string(),
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            Err(format!("{last}; log:\n{}", self.log_text()))
        })
        .await
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// A new headless Chromium session (its own empty profile), `width`x`height`.
    async fn session(&self, width: u32, height: u32, javascript: bool) -> Client {
        self.session_with(width, height, javascript, &[]).await
    }

    /// A 1280x900 session whose videos may start without a click (headless Chromium
    /// refuses autoplay without a real gesture, even muted).
    async fn player_session(&self) -> Client {
        self.session_with(
            1280,
            900,
            true,
            &["--autoplay-policy=no-user-gesture-required"],
        )
        .await
    }

    /// Fails `what` with chromedriver's log unless it finished in time; then stops
    /// chromedriver and its Chromium.
    fn finished(self, in_time: bool, what: &str) {
        assert!(
            in_time,
            "{what} did not finish within {WHOLE_TEST:?}; chromedriver log:\n{}",
            self.log_text()
        );
    }

    /// `session`, with Chromium's command line extended by `extra`.
    async fn session_with(
        &self,
        width: u32,
        height: u32,
        javascript: bool,
        extra: &[&str],
    ) -> Client {
        let profile = tempfile::Builder::new()
            .prefix("chromium-profile")
            .tempdir_in(self.profiles.path())
            .expect("profile dir")
            .keep();
        let mut options = json!({
            "binary": require_tool("chromium"),
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--force-device-scale-factor=1",
                format!("--user-data-dir={}", profile.display()),
                format!("--window-size={width},{height}"),
            ],
        });
        if let Some(args) = options["args"].as_array_mut() {
            args.extend(extra.iter().map(|a| json!(a)));
        }
        if !javascript {
            options["prefs"] = json!({ "webkit.webprefs.javascript_enabled": false });
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&self.url()),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no Chromium session within 30 s; chromedriver log:\n{}",
                self.log_text()
            )
        })
        .unwrap_or_else(|e| {
            panic!(
                "Chromium session refused: {e}; chromedriver log:\n{}",
                self.log_text()
            )
        })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium processes it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `$probe` (an expression that evaluates to `Ok(value)` when done or
/// `Err(what was seen)`) until it succeeds; after `WAIT`, fails naming `$what`.
macro_rules! wait_for {
    ($what:expr, $probe:expr) => {{
        crate::common::eventually_within(WAIT, &format!("{}", $what), || async {
            let seen: Result<_, String> = $probe;
            seen
        })
        .await
    }};
}

/// Waits until service row `row` shows `.state` `state` and the matching `.toggle`
/// text (`disable` when enabled, `enable` when disabled), after `after`.
async fn wait_row_state(c: &Client, row: &str, state: &str, after: &str) {
    let want_button = if state == "enabled" {
        "disable"
    } else {
        "enable"
    };
    wait_for!(
        format!("{row} to show .state `{state}` and .toggle `{want_button}` after {after}"),
        {
            let shown = text_of(c, &format!("{row} .state")).await;
            let button = text_of(c, &format!("{row} .toggle")).await;
            if shown.as_deref() == Some(state) && button.as_deref() == Some(want_button) {
                Ok(())
            } else {
                Err(format!(
                    ".state {shown:?}, .toggle {button:?}, #message {:?}",
                    text_of(c, "#message").await
                ))
            }
        }
    );
}

/// Clicks service row `row`'s `.toggle` and waits for the row to show `state`.
async fn click_toggle_and_see(c: &Client, row: &str, state: &str, what: &str) {
    find(c, &format!("{row} .toggle"))
        .await
        .click()
        .await
        .expect("click .toggle");
    wait_row_state(c, row, state, what).await;
}

/// Runs `script` (a function body; `arguments` available) in the page.
async fn js(c: &Client, script: &str, args: Vec<Value>) -> Value {
    c.execute(script, args)
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
}

async fn find(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element `{css}` on the page: {e}"))
}

/// Trimmed text of the first element matching `css`, or `None` when there is none.
async fn text_of(c: &Client, css: &str) -> Option<String> {
    let v = js(
        c,
        "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : null;",
        vec![json!(css)],
    )
    .await;
    v.as_str().map(str::to_string)
}

/// Clicks `.test` in channel row `row` and waits for its `.test-result` to get class
/// `ok` or `failed`; returns its class and text.
async fn channel_test(c: &Client, row: &str) -> (String, String) {
    let result = format!("{row} .test-result");
    // The list may be drawn again meanwhile (after the step before it, on a loaded
    // machine): the list is waited for, the row must start with an empty result.
    wait_channels_ready(c).await;
    wait_for!(format!("{result}, empty, on the page"), {
        match text_of(c, &result).await {
            Some(t) if t.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    find(c, &format!("{row} button.test"))
        .await
        .click()
        .await
        .expect("click .test");
    wait_for!(format!("{result} to get class ok or failed"), {
        let v = js(
            c,
            "const e = document.querySelector(arguments[0]); return e ? [e.className, e.textContent.trim()] : null;",
            vec![json!(result)],
        )
        .await;
        let class = v[0].as_str().unwrap_or_default().to_string();
        let text = v[1].as_str().unwrap_or_default().to_string();
        if class.split_whitespace().any(|c| c == "ok" || c == "failed") {
            Ok((class, text))
        } else {
            Err(format!("class {class:?}, text {text:?}"))
        }
    })
}

/// Waits until the channel browser has shown its latest page (`data-state="ready"`
/// on `#channel-browser`, set by the script once the page's rows are in).
async fn wait_channels_ready(c: &Client) {
    wait_for!("#channel-browser to show its first page", {
        let state = js(
            c,
            "const b = document.querySelector('#channel-browser'); return b ? (b.dataset.state || '') : null;",
            vec![],
        )
        .await;
        if state == "ready" {
            Ok(())
        } else {
            Err(format!(
                "data-state {state}, #message {:?}",
                text_of(c, "#message").await
            ))
        }
    });
}

/// Names (`.name` cells) of the channel rows a user sees: not `hidden`, rendered.
async fn visible_channels(c: &Client) -> Vec<String> {
    let v = js(
        c,
        "return Array.from(document.querySelectorAll('#channels tr[data-channel]'))
           .filter(r => !r.hidden && r.getClientRects().length > 0)
           .map(r => r.querySelector('.name').textContent.trim());",
        vec![],
    )
    .await;
    serde_json::from_value(v).expect("a list of names")
}

/// The number shown in `#channel-count`.
async fn channel_count(c: &Client) -> Option<usize> {
    let text = text_of(c, "#channel-count").await?;
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn names(list: &[&str]) -> Vec<String> {
    sorted(list.iter().map(|s| s.to_string()).collect())
}

/// Waits until exactly `expected` channel rows are visible and `#channel-count` says so.
async fn wait_visible(c: &Client, what: &str, expected: &[&str]) {
    let expected = names(expected);
    wait_for!(
        format!(
            "{what}: visible rows {expected:?} and #channel-count {}",
            expected.len()
        ),
        {
            let rows = sorted(visible_channels(c).await);
            let count = channel_count(c).await;
            if rows == expected && count == Some(expected.len()) {
                Ok(())
            } else {
                Err(format!("rows {rows:?}, #channel-count {count:?}"))
            }
        }
    );
}

// ---------------------------------------------------------------------------------------
// fixtures

/// 8 MPEG-TS null packets (188 bytes each, sync byte 0x47, PID 0x1FFF).
fn ts_segment(seq: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..8u8 {
        let mut packet = vec![0xFF; 188];
        packet[..4].copy_from_slice(&[0x47, 0x1F, 0xFF, 0x10 | (i & 0x0F)]);
        packet[4] = seq;
        out.extend(packet);
    }
    out
}

/// A live media playlist of three 2 s segments (no ENDLIST).
fn live_playlist(stream: &str) -> String {
    let mut out = String::from(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:40\n",
    );
    for seq in 40..43 {
        out.push_str(&format!("#EXTINF:2.000,\n{stream}-{seq}.ts\n"));
    }
    out
}

/// An XMLTV guide for Alpha News only: a programme on now and the next one.
fn guide() -> String {
    let now = chrono::Utc::now();
    let at = |h: i64| (now + chrono::Duration::hours(h)).format("%Y%m%d%H%M%S +0000");
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<tv>
  <channel id="alpha.example.net"><display-name>Alpha News</display-name></channel>
  <programme start="{}" stop="{}" channel="alpha.example.net"><title>Morning Briefing</title></programme>
  <programme start="{}" stop="{}" channel="alpha.example.net"><title>Market Watch</title></programme>
</tv>
"#,
        at(-1),
        at(1),
        at(1),
        at(2)
    )
}

/// The local origin: an M3U list of `CHANNELS` and their HLS streams.
async fn origin() -> FakeUpstream {
    let up = FakeUpstream::bind().await;
    let mut list = String::from("#EXTM3U\n");
    for (name, group, stream) in CHANNELS {
        list.push_str(&format!(
            "#EXTINF:-1 tvg-id=\"{stream}.example.net\" group-title=\"{group}\",{name}\n{}\n",
            up.url(&format!("/hls/{stream}.m3u8"))
        ));
    }
    let mut up = up
        .text("/list.m3u", M3U_TYPE, list)
        .text("/epg.xml", "application/xml", guide());
    for (_, _, stream) in CHANNELS.iter().filter(|c| c.2 != OFFLINE) {
        up = up.text(
            &format!("/hls/{stream}.m3u8"),
            HLS_TYPE,
            live_playlist(stream),
        );
        for seq in 40..43u8 {
            up = up.bytes(
                &format!("/hls/{stream}-{seq}.ts"),
                "video/mp2t",
                ts_segment(seq),
            );
        }
    }
    up.start()
}

async fn app(origin: &FakeUpstream) -> TestApp {
    TestApp::spawn(&format!(
        r#"[server]
bind = "127.0.0.1:0"
state_dir = '{{state_dir}}'
admin_token = "{TOKEN}"

[[services]]
name = "Demo"
kind = "demo"
priority = 50

[[services]]
name = "Origin"
kind = "m3u"
url = "{}"
priority = 10
epg_url = "{}"
"#,
        origin.url("/list.m3u"),
        origin.url("/epg.xml")
    ))
    .await
}

/// `target/test-artifacts/` (under `CARGO_TARGET_DIR` when set).
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

/// Resizes the window until the page's viewport is `width`x`height` (even headless,
/// the window has some frame around the viewport, of a size that varies).
async fn set_viewport(c: &Client, width: u32, height: u32) {
    let (mut outer_w, mut outer_h) = (width, height);
    let mut seen = Vec::new();
    for _ in 0..5 {
        c.set_window_size(outer_w, outer_h)
            .await
            .expect("set the window size");
        let v = js(c, "return [window.innerWidth, window.innerHeight];", vec![]).await;
        let inner_w = v[0].as_i64().unwrap_or(0);
        let inner_h = v[1].as_i64().unwrap_or(0);
        if (inner_w, inner_h) == (i64::from(width), i64::from(height)) {
            return;
        }
        seen.push(format!(
            "window {outer_w}x{outer_h}: viewport {inner_w}x{inner_h}"
        ));
        let (w, h) = c.get_window_size().await.expect("window size");
        outer_w = (w as i64 + i64::from(width) - inner_w).max(1) as u32;
        outer_h = (h as i64 + i64::from(height) - inner_h).max(1) as u32;
    }
    panic!("no {width}x{height} viewport: {seen:?}");
}

/// Saves a screenshot of the viewport to `name` and checks it is a real PNG of the
/// viewport's size with some content.
async fn screenshot(c: &Client, name: &str) -> PathBuf {
    let png = c.screenshot().await.expect("screenshot");
    let path = artifacts_dir().join(name);
    std::fs::write(&path, &png).expect("write screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR",
        "{} is not a PNG",
        path.display()
    );
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    let viewport = js(c, "return [window.innerWidth, window.innerHeight];", vec![]).await;
    assert_eq!(
        json!([width, height]),
        viewport,
        "{} is not of the viewport's size",
        path.display()
    );
    assert!(
        png.len() > 8 * 1024,
        "{} is only {} bytes: an empty page?",
        path.display(),
        png.len()
    );
    path
}

// ---------------------------------------------------------------------------------------
// the test

/// The step a long browser session is at, for the message of one that did not finish.
#[derive(Default)]
struct Progress(std::sync::Mutex<&'static str>);

impl Progress {
    fn at(&self, step: &'static str) {
        *self.0.lock().unwrap() = step;
    }

    fn step(&self) -> &'static str {
        *self.0.lock().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_headless_chromium() {
    let origin = origin().await;
    let app = app(&origin).await;
    let driver = Driver::start().await;
    let browser = driver.session(1280, 900, true).await;
    let progress = Progress::default();
    let outcome = tokio::time::timeout(WHOLE_TEST, drive(&app, &origin, &browser, &progress)).await;
    let _ = browser.close().await;
    outcome.unwrap_or_else(|_| {
        panic!(
            "the browser test did not finish within {WHOLE_TEST:?}, at step {:?}; chromedriver log:\n{}",
            progress.step(),
            driver.log_text()
        )
    });
    let no_js = driver.session(1280, 900, false).await;
    let outcome =
        tokio::time::timeout(WHOLE_TEST, without_javascript(&app, &no_js, &progress)).await;
    let _ = no_js.close().await;
    outcome.unwrap_or_else(|_| {
        panic!(
            "the JavaScript-off session did not finish within {WHOLE_TEST:?}, at step {:?}; chromedriver log:\n{}",
            progress.step(),
            driver.log_text()
        )
    });
    drop(driver);
}

/// Bound on the player reaching a state (hls.js loaded, the playlist and the first
/// segments fetched, decoding started): a live stream of 2 s segments is playing
/// within a few seconds; reaching this is a failure, not slowness.
const PLAY_WAIT: Duration = Duration::from_secs(30);
/// The hls.js the dashboard serves (`assets/vendor/hls.js/`).
const HLS_JS_VERSION: &str = "1.6.19";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_player_previews_a_channel_in_headless_chromium() {
    let origin = origin().await;
    let app = app(&origin).await;
    let driver = Driver::start().await;
    let browser = driver.player_session().await;
    let outcome = tokio::time::timeout(WHOLE_TEST, play(&app, &browser)).await;
    let _ = browser.close().await;
    driver.finished(outcome.is_ok(), "the player test");
}

/// The player's state: `[data-state, #player-status text, its class, hidden,
/// video.currentTime, video.error code, data-fragments, #player-log lines, history]`;
/// `history`: every log line since `record_player_log`, oldest first (empty before).
async fn player_state(c: &Client) -> Value {
    js(
        c,
        "const p = document.querySelector('#player'), v = document.querySelector('#player-video'),
               s = document.querySelector('#player-status');
         return { state: p.dataset.state || '', status: s.textContent.trim(), class: s.className,
                  hidden: p.hidden, time: v.currentTime, error: v.error ? v.error.code : null,
                  fragments: Number(p.dataset.fragments || 0),
                  log: Array.from(document.querySelectorAll('#player-log li')).map(l => l.textContent),
                  history: window.playerHistory || [] };",
        vec![],
    )
    .await
}

/// From now on, keeps every line the player's log shows, oldest first, for
/// `player_state`'s `history`: the page shows only the last 8, and a check of what came
/// after what must not depend on a poll seeing them before they scroll out (a slow
/// player adds stall notes and live-edge segments meanwhile).
async fn record_player_log(c: &Client) {
    js(
        c,
        "window.playerHistory = [];
         new MutationObserver((changes) => {
           for (const c of changes) for (const n of c.addedNodes) window.playerHistory.push(n.textContent);
         }).observe(document.querySelector('#player-log'), { childList: true });
         return null;",
        vec![],
    )
    .await;
}

/// Clicks *play* in the row of channel `id`, once the script has listed it.
async fn click_play(c: &Client, id: &str) {
    let button = format!("#channels tr[data-channel=\"{id}\"] button.play");
    wait_for!(format!("{button} to be listed"), {
        match c.find(Locator::Css(&button)).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    });
    find(c, &button)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click play on {id}: {e}"));
}

/// Polls the player until `done` says so, for at most `PLAY_WAIT`.
async fn wait_player(c: &Client, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    crate::common::eventually_within(PLAY_WAIT, &format!("the player: {what}"), || async {
        let state = player_state(c).await;
        if done(&state) {
            Ok(state)
        } else {
            Err(format!("{state:#}"))
        }
    })
    .await
}

async fn play(app: &TestApp, c: &Client) {
    wait_for!("the lineup with the demo channel", {
        let list = app.channels().await;
        if list.len() == CHANNELS.len() + 1 {
            Ok(())
        } else {
            Err(format!("{} channels", list.len()))
        }
    });
    c.goto(&app.url("/")).await.expect("load /");
    record_player_log(c).await;
    let before = player_state(c).await;
    assert_eq!(
        before["hidden"], true,
        "the player shows before any play: {before}"
    );

    // hls.js is served by freesky itself, pinned and cached for long.
    let resp = reqwest::Client::new()
        .get(app.url(&format!("/assets/hls.light.min.js?v={HLS_JS_VERSION}")))
        .send()
        .await
        .expect("GET hls.js");
    assert_eq!(resp.status(), 200);
    let cache = resp.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cache.contains("immutable"),
        "hls.js cache-control {cache:?}"
    );

    // What this Chromium can do: the test says so when it fails.
    let caps = js(
        c,
        "return { native: document.createElement('video').canPlayType('application/vnd.apple.mpegurl'),
                  mse_h264_aac: window.MediaSource ? MediaSource.isTypeSupported('video/mp4; codecs=\"avc1.42c01e,mp4a.40.2\"') : null };",
        vec![],
    )
    .await;
    eprintln!(
        "chromium: native HLS {:?}, MSE H.264+AAC {}",
        caps["native"], caps["mse_h264_aac"]
    );

    // a. the demo channel plays: currentTime advances by more than a second.
    click_play(c, "demo").await;
    let started = wait_player(c, "currentTime > 0.5 on the demo channel", |s| {
        s["time"].as_f64().unwrap_or(0.0) > 0.5 && s["state"] == "playing"
    })
    .await;
    let t0 = started["time"].as_f64().unwrap();
    let playing = wait_player(c, "currentTime advancing by 1.5 s", |s| {
        s["time"].as_f64().unwrap_or(0.0) > t0 + 1.5
    })
    .await;
    assert_eq!(playing["hidden"], false);
    assert_eq!(playing["state"], "playing", "{playing:#}");
    assert_eq!(playing["class"], "ok", "{playing:#}");
    assert_eq!(playing["error"], Value::Null, "{playing:#}");
    let log = playing["history"].to_string();
    assert!(
        log.contains("sources, in the order they are tried: Demo"),
        "{log}"
    );
    // Chromium has Media Source Extensions: hls.js played it, segment by segment.
    assert!(log.contains(&format!("hls.js {HLS_JS_VERSION}")), "{log}");
    assert!(log.contains("playlist loaded"), "{log}");
    assert!(
        playing["fragments"].as_u64().unwrap_or(0) >= 1,
        "{playing:#}"
    );
    eprintln!(
        "hls.js played the demo channel to {} s; player log {log}",
        playing["time"]
    );

    // b. without Media Source Extensions (older iPhones) the browser's own HLS plays
    // it, where there is one (this Chromium has one when canPlayType says so).
    if !caps["native"].as_str().unwrap_or_default().is_empty() {
        js(
            c,
            "window.MediaSource = undefined; window.ManagedMediaSource = undefined; window.WebKitMediaSource = undefined;",
            vec![],
        )
        .await;
        click_play(c, "demo").await;
        let native = wait_player(c, "the browser's own HLS: currentTime > 1.5", |s| {
            s["log"].to_string().contains("the browser's own HLS")
                && s["time"].as_f64().unwrap_or(0.0) > 1.5
        })
        .await;
        assert_eq!(native["state"], "playing", "{native:#}");
        // Back to a page with Media Source Extensions.
        c.goto(&app.url("/")).await.expect("reload /");
    }

    // c. a channel whose every source fails shows why, with the HTTP status and the
    // API's error.
    let zeta = app.channel_id("Zeta Offline").await;
    click_play(c, &zeta).await;
    let failed = wait_player(c, "an error for the offline channel", |s| {
        s["state"] == "error"
    })
    .await;
    let status = failed["status"].as_str().unwrap_or_default();
    assert_eq!(failed["class"], "error", "{failed:#}");
    eprintln!("the offline channel: {status}");
    assert!(
        status.contains("HTTP 502") && status.contains("Origin"),
        "the offline channel's error lacks the status or the failing source: {failed:#}"
    );

    // d. close stops and hides it.
    find(c, "#player-close").await.click().await.expect("close");
    let closed = wait_player(c, "closed", |s| s["hidden"] == true).await;
    assert_eq!(closed["state"], "closed");
}

/// A second source of the demo channel: an origin serving the demo's own live stream
/// (a master playlist, the clock-following media playlist, the real H.264+AAC
/// segments) until `down` is set, then 404 for everything of the stream.
async fn demo_origin(down: Arc<AtomicBool>) -> FakeUpstream {
    let segments: [&'static [u8]; 4] = [
        include_bytes!("../../assets/demo/seg0.ts"),
        include_bytes!("../../assets/demo/seg1.ts"),
        include_bytes!("../../assets/demo/seg2.ts"),
        include_bytes!("../../assets/demo/seg3.ts"),
    ];
    let up = FakeUpstream::bind().await;
    let list = format!(
        "#EXTM3U\n#EXTINF:-1 group-title=\"Demo\",Demo\n{}\n",
        up.url("/demo.m3u8")
    );
    let (down_list, down_segment) = (down.clone(), down);
    up.text("/list.m3u", M3U_TYPE, list)
        .text(
            "/demo.m3u8",
            HLS_TYPE,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-STREAM-INF:BANDWIDTH=200000,RESOLUTION=320x180\nlive.m3u8\n",
        )
        .route(
            "/live.m3u8",
            axum::routing::get(move || {
                let down = down_list.load(Ordering::SeqCst);
                async move {
                    if down {
                        return respond(404, "text/plain", "gone");
                    }
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    respond(200, HLS_TYPE, freesky::services::demo::live_playlist(now))
                }
            }),
        )
        .route(
            "/live/{file}",
            axum::routing::get(move |axum::extract::Path(file): axum::extract::Path<String>| {
                let down = down_segment.load(Ordering::SeqCst);
                async move {
                    let seq = file.strip_suffix(".ts").and_then(|n| n.parse::<usize>().ok());
                    match seq {
                        Some(seq) if !down => respond(200, "video/mp2t", segments[seq % segments.len()]),
                        _ => respond(404, "text/plain", "gone"),
                    }
                }
            }),
        )
        .start()
}

/// e. failover during playback shows in the player: the demo channel from an origin
/// first, then (the origin gone) from the built-in demo after a discontinuity, while
/// the video keeps playing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_player_shows_a_failover_in_headless_chromium() {
    let down = Arc::new(AtomicBool::new(false));
    let origin = demo_origin(down.clone()).await;
    let app = TestApp::spawn(&format!(
        r#"[server]
bind = "127.0.0.1:0"
state_dir = '{{state_dir}}'

[streams]
failover_after = 2

[[services]]
name = "Origin"
kind = "m3u"
url = "{}"
priority = 10

[[services]]
name = "Demo"
kind = "demo"
priority = 50
"#,
        origin.url("/list.m3u")
    ))
    .await;
    let driver = Driver::start().await;
    let browser = driver.player_session().await;
    let outcome = tokio::time::timeout(WHOLE_TEST, failover(&app, &down, &browser)).await;
    let _ = browser.close().await;
    driver.finished(outcome.is_ok(), "the failover test");
}

async fn failover(app: &TestApp, down: &AtomicBool, c: &Client) {
    let demo = wait_for!("one Demo channel with the sources Origin, Demo", {
        let list = app.channels().await;
        let sources: Vec<Value> = list
            .iter()
            .flat_map(|ch| ch["sources"].as_array().cloned().unwrap_or_default())
            .map(|s| s["service"].clone())
            .collect();
        if list.len() == 1 && sources == [json!("Origin"), json!("Demo")] {
            Ok(list[0]["id"].as_str().unwrap_or_default().to_string())
        } else {
            Err(format!("{list:?}"))
        }
    });
    c.goto(&app.url("/")).await.expect("load /");
    record_player_log(c).await;
    click_play(c, &demo).await;
    let before = wait_player(c, "the origin's stream playing for a second", |s| {
        s["state"] == "playing" && s["time"].as_f64().unwrap_or(0.0) > 1.0
    })
    .await;
    assert!(
        before["history"]
            .to_string()
            .contains("sources, in the order they are tried: Origin, Demo"),
        "{before:#}"
    );
    let hits_before = app.get_text_ok("/metrics").await;
    down.store(true, Ordering::SeqCst);
    let t = before["time"].as_f64().unwrap_or(0.0);
    // The history is oldest first: the origin's failure shows, then the switch, then
    // segments of the next source, while the video plays on.
    let position = |log: &[Value], from: usize, what: &str| {
        log.iter()
            .skip(from)
            .position(|l| l.as_str().unwrap_or_default().contains(what))
            .map(|i| from + i)
    };
    let after = wait_player(
        c,
        "the failure, a discontinuity after it and 2 more seconds played",
        |s| {
            let log = s["history"].as_array().cloned().unwrap_or_default();
            let segment = position(&log, 0, "HTTP 502")
                .and_then(|f| position(&log, f + 1, "discontinuity"))
                .and_then(|d| position(&log, d + 1, "loaded ("));
            segment.is_some() && s["time"].as_f64().unwrap_or(0.0) > t + 2.0
        },
    )
    .await;
    assert_eq!(after["error"], Value::Null, "{after:#}");
    assert_ne!(after["state"], "error", "{after:#}");
    let metrics = app.get_text_ok("/metrics").await;
    assert!(
        metrics.contains(&format!("freesky_failovers_total{{channel=\"{demo}\"}}")),
        "freesky counted no failover of {demo}:\nbefore:\n{hits_before}\nafter:\n{metrics}"
    );
    eprintln!("failover shown: {}", after["history"]);
}

/// f. a channel whose source is one endless MPEG-TS stream (no HLS upstream) plays in
/// the page's hls.js: its `.m3u8` is a live playlist cut from the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_player_plays_a_plain_mpeg_ts_channel_in_headless_chromium() {
    let clip = crate::common::mpeg_ts_clip(8);
    let origin = FakeUpstream::bind().await;
    let list = format!(
        "#EXTM3U\n#EXTINF:-1,Plain TS\n{}\n",
        origin.url("/tv/live.ts")
    );
    let origin = origin
        .text("/list.m3u", M3U_TYPE, list)
        .route("/tv/live.ts", crate::common::paced_mpeg_ts(clip, true))
        .start();
    let app = TestApp::spawn(&format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\n\n\
         [[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        origin.url("/list.m3u")
    ))
    .await;
    let driver = Driver::start().await;
    let browser = driver.player_session().await;
    let outcome = tokio::time::timeout(WHOLE_TEST, async {
        let id = app.channel_id("Plain TS").await;
        browser.goto(&app.url("/")).await.expect("load /");
        record_player_log(&browser).await;
        click_play(&browser, &id).await;
        let started = wait_player(&browser, "the TS channel playing", |s| {
            s["state"] == "playing" && s["time"].as_f64().unwrap_or(0.0) > 0.5
        })
        .await;
        let t0 = started["time"].as_f64().unwrap();
        // Past the first segments (two short ones, then about 4 s each): the playlist
        // was reloaded and the next segments cut and played.
        let playing = wait_player(&browser, "currentTime advancing by 5 s", |s| {
            s["time"].as_f64().unwrap_or(0.0) > t0 + 5.0
        })
        .await;
        assert_eq!(playing["error"], Value::Null, "{playing:#}");
        assert_eq!(playing["class"], "ok", "{playing:#}");
        let log = playing["history"].to_string();
        assert!(log.contains(&format!("hls.js {HLS_JS_VERSION}")), "{log}");
        assert!(
            playing["fragments"].as_u64().unwrap_or(0) >= 2,
            "{playing:#}"
        );
        eprintln!(
            "hls.js played the plain TS channel to {} s; log {log}",
            playing["time"]
        );
    })
    .await;
    let _ = browser.close().await;
    driver.finished(outcome.is_ok(), "the plain MPEG-TS player test");
}

async fn drive(app: &TestApp, origin: &FakeUpstream, c: &Client, progress: &Progress) {
    progress.at("the lineup from the API");
    // The lineup the page must show, from the API.
    let channels = wait_for!("the lineup of Demo + Origin (6 channels)", {
        let list = app.channels().await;
        if list.len() == CHANNELS.len() + 1 {
            Ok(list)
        } else {
            Err(format!("{} channels", list.len()))
        }
    });
    let id_of = |name: &str| -> String {
        channels
            .iter()
            .find(|ch| ch["name"] == name)
            .and_then(|ch| ch["id"].as_str())
            .unwrap_or_else(|| panic!("no channel {name:?} in {channels:#?}"))
            .to_string()
    };

    // a. load (again until the guide has been read: the page shows what's on)
    progress.at("a. load");
    set_viewport(c, 1280, 900).await;
    let alpha = format!("#channels tr[data-channel=\"{}\"]", id_of("Alpha News"));
    wait_for!("Alpha News's .now/.next from the guide after a reload", {
        c.goto(&app.url("/")).await.expect("load /");
        wait_channels_ready(c).await;
        let now = text_of(c, &format!("{alpha} .now")).await;
        let next = text_of(c, &format!("{alpha} .next")).await;
        if now.as_deref() == Some("Morning Briefing") && next.as_deref() == Some("Market Watch") {
            Ok(())
        } else {
            Err(format!(".now {now:?}, .next {next:?}"))
        }
    });
    let services: Vec<String> = serde_json::from_value(
        js(
            c,
            "return Array.from(document.querySelectorAll('#services tr[data-service]')).map(r => r.dataset.service);",
            vec![],
        )
        .await,
    )
    .unwrap();
    assert_eq!(
        sorted(services),
        names(&["Demo", "Origin"]),
        "#services rows"
    );
    for (service, count) in [("Demo", 1), ("Origin", CHANNELS.len())] {
        let row = format!("#services tr[data-service=\"{service}\"]");
        assert_eq!(
            text_of(c, &format!("{row} .channels")).await,
            Some(count.to_string())
        );
        let circuit = text_of(c, &format!("{row} .circuit"))
            .await
            .unwrap_or_default();
        assert!(
            ["closed", "open", "half_open"].contains(&circuit.as_str()),
            "{service} .circuit {circuit:?}"
        );
        let latency = text_of(c, &format!("{row} .latency"))
            .await
            .unwrap_or_default();
        let latency_ok = latency == "–"
            || latency
                .strip_suffix(" ms")
                .is_some_and(|n| n.parse::<u64>().is_ok());
        assert!(latency_ok, "{service} .latency {latency:?}");
        assert_eq!(
            text_of(c, &format!("{row} .name")).await.as_deref(),
            Some(service)
        );
        assert_eq!(
            text_of(c, &format!("{row} .state")).await.as_deref(),
            Some("enabled")
        );
        assert_eq!(
            text_of(c, &format!("{row} .toggle")).await.as_deref(),
            Some("disable")
        );
        for cell in [
            ".kind",
            ".circuit",
            ".latency",
            ".channels",
            ".last-error",
            ".priority-input",
            ".priority-save",
            "svg.chart[role=img][aria-label]",
        ] {
            find(c, &format!("{row} {cell}")).await;
        }
    }
    let row_ids: Vec<String> = serde_json::from_value(
        js(
            c,
            "return Array.from(document.querySelectorAll('#channels tr[data-channel]')).map(r => r.dataset.channel);",
            vec![],
        )
        .await,
    )
    .unwrap();
    let api_ids: Vec<String> = channels
        .iter()
        .map(|ch| ch["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        sorted(row_ids),
        sorted(api_ids),
        "#channels rows vs /api/channels/all"
    );
    let all: Vec<&str> = CHANNELS.iter().map(|c| c.0).chain(["Demo"]).collect();
    wait_visible(c, "the page as loaded", &all).await;
    assert_eq!(
        text_of(c, &format!("{alpha} .group")).await.as_deref(),
        Some("News")
    );
    assert_eq!(
        text_of(c, &format!("{alpha} .sources")).await.as_deref(),
        Some("Origin")
    );
    let alpha_api = channels
        .iter()
        .find(|ch| ch["name"] == "Alpha News")
        .unwrap();
    assert_eq!(
        text_of(c, &format!("{alpha} .number")).await,
        Some(alpha_api["number"].to_string()),
        "{alpha_api}"
    );
    assert_eq!(
        text_of(c, &format!("{alpha} .viewers")).await.as_deref(),
        Some("0")
    );
    let links: Vec<String> = serde_json::from_value(
        js(
            c,
            "return Array.from(document.querySelectorAll(arguments[0])).map(a => a.href);",
            vec![json!(format!("{alpha} .links a"))],
        )
        .await,
    )
    .unwrap();
    let alpha_id = id_of("Alpha News");
    for ext in ["m3u8", "ts"] {
        let want = app.url(&format!("/api/stream/{alpha_id}.{ext}"));
        assert!(links.contains(&want), "no link {want} in .links {links:?}");
    }
    let beta = format!("#channels tr[data-channel=\"{}\"]", id_of("Beta Sports"));
    assert_eq!(
        text_of(c, &format!("{beta} .now")).await.as_deref(),
        Some(""),
        "no guide for Beta"
    );
    for (input, suffix) in [
        ("#url-playlist", "/playlist.m3u"),
        ("#url-guide", "/epg.xml"),
        ("#url-tuner", ""),
    ] {
        let el = find(c, input).await;
        let value = el.prop("value").await.expect("value").unwrap_or_default();
        assert!(
            value.starts_with("http://")
                && value.ends_with(suffix)
                && value.contains(app.base.trim_start_matches("http://")),
            "{input} holds {value:?}, not an absolute URL of {} ending in {suffix:?}",
            app.base
        );
        assert!(
            el.attr("readonly").await.expect("attr").is_some(),
            "{input} is not readonly"
        );
        find(c, &format!("button.copy[data-target=\"{}\"]", &input[1..])).await;
    }

    // b. search as you type, then the group filter
    progress.at("b. search as you type, then the group filter");
    let search = find(c, "#search").await;
    search.send_keys("alpha").await.expect("type in #search");
    wait_visible(c, "typing `alpha` in #search", &["Alpha News"]).await;
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/",
        "typing must not navigate"
    );
    search
        .send_keys(&"\u{E003}".repeat(5))
        .await
        .expect("backspaces");
    wait_visible(c, "clearing #search", &all).await;
    search.send_keys("ECHO").await.expect("type in #search");
    wait_visible(c, "`ECHO` (case and accent insensitive)", &["Écho Culture"]).await;
    search
        .send_keys(&"\u{E003}".repeat(4))
        .await
        .expect("backspaces");
    wait_visible(c, "clearing #search", &all).await;
    let group = find(c, "#group").await;
    group
        .select_by_value("Sports")
        .await
        .expect("pick Sports in #group");
    wait_visible(c, "#group = Sports", &["Beta Sports", "Delta Goals"]).await;
    group.select_by_value("").await.expect("pick all groups");
    wait_visible(c, "#group = all", &all).await;
    let service = find(c, "#service").await;
    service
        .select_by_value("Demo")
        .await
        .expect("pick Demo in #service");
    wait_visible(c, "#service = Demo", &["Demo"]).await;
    service
        .select_by_value("")
        .await
        .expect("pick all services");
    wait_visible(c, "#service = all", &all).await;

    // c. toggle without the token: refused, nothing changes
    progress.at("c. toggle without the token: refused, nothing changes");
    let origin_row = "#services tr[data-service=\"Origin\"]";
    let refusal = {
        let resp = app.post("/api/services/Origin/disable").await;
        let (status, body) = json_of(resp).await;
        assert_eq!(status, 401, "{body}");
        body["error"].as_str().unwrap().to_string()
    };
    find(c, &format!("{origin_row} .toggle"))
        .await
        .click()
        .await
        .expect("click .toggle");
    wait_for!(format!("#message to show the API's refusal {refusal:?}"), {
        let msg = text_of(c, "#message").await.unwrap_or_default();
        if msg.contains(&refusal) {
            Ok(())
        } else {
            Err(format!("#message {msg:?}"))
        }
    });
    assert_eq!(
        find(c, "#message")
            .await
            .attr("role")
            .await
            .unwrap()
            .as_deref(),
        Some("status")
    );
    assert_eq!(
        text_of(c, &format!("{origin_row} .state")).await.as_deref(),
        Some("enabled")
    );
    assert_eq!(
        text_of(c, &format!("{origin_row} .toggle"))
            .await
            .as_deref(),
        Some("disable")
    );
    assert_eq!(app.service_status("Origin").await["enabled"], true);

    // d. with the token: disable, see it, enable again
    progress.at("d. with the token: disable, see it, enable again");
    find(c, "#admin-token")
        .await
        .send_keys(TOKEN)
        .await
        .expect("type the token");
    click_toggle_and_see(c, origin_row, "disabled", "the click").await;
    assert_eq!(
        app.service_status("Origin").await["enabled"],
        false,
        "the API after the click"
    );
    // The channel list follows: Origin's channels leave it, and come back.
    wait_visible(c, "the channels with Origin disabled", &["Demo"]).await;
    click_toggle_and_see(c, origin_row, "enabled", "the second click").await;
    assert_eq!(
        app.service_status("Origin").await["enabled"],
        true,
        "the API after the second click"
    );
    wait_visible(c, "the channels with Origin enabled again", &all).await;

    // A change made elsewhere (another admin, a script) shows without a reload: the
    // page refreshes the service rows every few seconds.
    let http = reqwest::Client::new();
    for (action, state) in [("disable", "disabled"), ("enable", "enabled")] {
        let resp = http
            .post(app.url(&format!("/api/services/Origin/{action}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{action} through the API: {e}"));
        assert_eq!(resp.status(), 200);
        wait_row_state(c, origin_row, state, &format!("`{action}` through the API")).await;
        let visible: &[&str] = if state == "disabled" { &["Demo"] } else { &all };
        wait_visible(
            c,
            &format!("the channels after `{action}` through the API"),
            visible,
        )
        .await;
    }

    // e. priority
    progress.at("e. priority");
    let input = find(c, &format!("{origin_row} .priority-input")).await;
    assert_eq!(input.prop("value").await.unwrap().as_deref(), Some("10"));
    // A number that is not whole is refused as typed, not cut to 1.
    input.clear().await.expect("clear .priority-input");
    input.send_keys("1.9").await.expect("type a priority");
    find(c, &format!("{origin_row} .priority-save"))
        .await
        .click()
        .await
        .expect("click .priority-save");
    wait_for!("the refusal of 1.9", {
        let message = text_of(c, "#message").await.unwrap_or_default();
        if message.contains("whole number") {
            Ok(())
        } else {
            Err(message)
        }
    });
    assert_eq!(app.service_status("Origin").await["priority"], 10);
    input.clear().await.expect("clear .priority-input");
    input.send_keys("7").await.expect("type a priority");
    find(c, &format!("{origin_row} .priority-save"))
        .await
        .click()
        .await
        .expect("click .priority-save");
    // The page says so once it has asked for the channels again (their sources' order
    // follows the priority); the test button below waits for that list.
    wait_for!("#message to say Origin's priority is 7", {
        let message = text_of(c, "#message").await.unwrap_or_default();
        if message.contains("Origin: priority 7") {
            Ok(())
        } else {
            Err(message)
        }
    });
    wait_for!("Origin's priority 7 in the API", {
        let p = app.service_status("Origin").await["priority"].clone();
        if p == 7 {
            Ok(())
        } else {
            Err(format!(
                "priority {p}, #message {:?}",
                text_of(c, "#message").await
            ))
        }
    });
    let shown = find(c, &format!("{origin_row} .priority-input"))
        .await
        .prop("value")
        .await
        .unwrap();
    assert_eq!(shown.as_deref(), Some("7"), "the row after the save");

    // f. the test button: a channel the local origin serves, then one it does not
    progress.at("f. the test button");
    let (class, text) = channel_test(c, &alpha).await;
    let segment = format!("({} bytes)", ts_segment(40).len());
    assert!(
        class.split_whitespace().any(|c| c == "ok")
            && text.starts_with("ok · Origin · resolve ")
            && text.contains(" ms · segment ")
            && text.ends_with(&segment),
        "the test of Alpha News: class {class:?}, text {text:?} (want `ok · Origin · resolve N ms · playlist N ms · segment N ms {segment}`)"
    );
    assert!(
        origin.hits("/hls/alpha-40.ts") > 0,
        "the test did not fetch Alpha's first segment: {:?}",
        origin.paths()
    );
    let offline = format!("#channels tr[data-channel=\"{}\"]", id_of("Zeta Offline"));
    let (class, text) = channel_test(c, &offline).await;
    assert!(
        class.split_whitespace().any(|c| c == "failed") && text.starts_with("failed: "),
        "the test of Zeta Offline (its playlist answers 404): class {class:?}, text {text:?}"
    );
    // The service rows follow without a reload: Origin's last error is that 404.
    wait_for!("Origin's .last-error to show the failed test", {
        let shown = text_of(c, &format!("{origin_row} .last-error")).await;
        match shown {
            Some(t) if t.contains("404") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    // g. screenshots: desktop, then phone width without horizontal overflow
    progress.at("g. screenshots: desktop, then phone width without horizontal overflow");
    // (Services, channels and both test results in view.)
    js(
        c,
        "document.querySelector(arguments[0]).scrollIntoView({block: 'end'});",
        vec![json!(format!("{offline} .test-result"))],
    )
    .await;
    let desktop = screenshot(c, "dashboard.png").await;
    set_viewport(c, 390, 844).await;
    c.goto(&app.url("/"))
        .await
        .expect("reload / at phone width");
    wait_for!(
        "#admin-token restored from sessionStorage after the reload",
        {
            let v = find(c, "#admin-token").await.prop("value").await.unwrap();
            if v.as_deref() == Some(TOKEN) {
                Ok(())
            } else {
                Err(format!("value {v:?}"))
            }
        }
    );
    let v = js(
        c,
        "return [window.innerWidth, document.documentElement.scrollWidth];",
        vec![],
    )
    .await;
    let (inner, scroll) = (v[0].as_i64().unwrap(), v[1].as_i64().unwrap());
    assert!(
        scroll <= inner + 1,
        "at phone width the page overflows horizontally: scrollWidth {scroll} > innerWidth {inner}"
    );
    let phone = screenshot(c, "dashboard-phone.png").await;
    eprintln!("screenshots: {} {}", desktop.display(), phone.display());
}

/// h. reading and searching with JavaScript off: the HTML itself holds the services and
/// the lineup's size, and the search form lists the matching channels from the server.
async fn without_javascript(app: &TestApp, c: &Client, progress: &Progress) {
    progress.at("h. plain HTTP searches");
    let alpha = app.channel_id("Alpha News").await;
    let beta = app.channel_id("Beta Sports").await;

    // Plain HTTP first: the server filters.
    let html = app.get_text_ok("/?q=alpha").await;
    assert!(
        html.contains(&format!("data-channel=\"{alpha}\"")),
        "/?q=alpha lacks Alpha News:\n{html}"
    );
    assert!(
        !html.contains(&format!("data-channel=\"{beta}\"")),
        "/?q=alpha still lists Beta Sports"
    );
    let html = app.get_text_ok("/?group=Sports").await;
    assert!(
        html.contains(&format!("data-channel=\"{beta}\"")),
        "/?group=Sports lacks Beta Sports"
    );
    assert!(
        !html.contains(&format!("data-channel=\"{alpha}\"")),
        "/?group=Sports still lists Alpha News"
    );

    // Then a browser with JavaScript disabled submits the form. (WebDriver's own
    // scripts still run: check that a page's scripts do not.)
    progress.at("h. the probe page without JavaScript");
    c.goto("data:text/html,<p id=probe>off</p><script>probe.textContent='on'</script>")
        .await
        .expect("load the probe page");
    let probe = find(c, "#probe").await.text().await.unwrap();
    assert_eq!(
        probe, "off",
        "page scripts still run in the JavaScript-off session"
    );
    progress.at("h. / without JavaScript");
    c.goto(&app.url("/")).await.expect("load /");
    let rows = c
        .find_all(Locator::Css("#services tr[data-service]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "#services rows without JavaScript");
    // No channel rows before a search (the script would list them), but the count.
    let rows = c
        .find_all(Locator::Css("#channels tr[data-channel]"))
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        0,
        "#channels rows without JavaScript nor a search"
    );
    assert_eq!(channel_count(c).await, Some(CHANNELS.len() + 1));
    find(
        c,
        "#channel-search [type=submit], #channel-search button:not([type])",
    )
    .await;
    // Enter in the field submits the form (implicit submission, no script).
    progress.at("h. the search form submitted without JavaScript");
    find(c, "#channel-search #search")
        .await
        .send_keys("alpha\u{E007}")
        .await
        .expect("type in #search");
    wait_for!("the submitted search (?q=alpha) to list only Alpha News", {
        let url = c.current_url().await.unwrap();
        let rows = c
            .find_all(Locator::Css("#channels tr[data-channel]"))
            .await
            .unwrap();
        let mut ids = Vec::new();
        for r in &rows {
            ids.push(r.attr("data-channel").await.unwrap().unwrap_or_default());
        }
        if url.query().is_some_and(|q| q.contains("q=alpha")) && ids == [alpha.clone()] {
            Ok(())
        } else {
            Err(format!("url {url}, rows {ids:?}"))
        }
    });
}

// ---------------------------------------------------------------------------------------
// a big lineup, paged

/// Channels of the big lineup.
const BIG: usize = 2000;

/// The names of the channel rows, in page order.
async fn row_names(c: &Client) -> Vec<String> {
    let v = js(
        c,
        "return Array.from(document.querySelectorAll('#channels tr[data-channel] .name')).map(n => n.textContent.trim());",
        vec![],
    )
    .await;
    serde_json::from_value(v).expect("a list of names")
}

/// Waits until `#channel-range`, `#channel-count` and the rows are `range`, `count`
/// and `names`.
async fn wait_page(c: &Client, what: &str, range: &str, count: &str, names: &[String]) {
    wait_for!(
        format!(
            "{what}: #channel-range {range:?}, #channel-count {count:?}, {} rows",
            names.len()
        ),
        {
            let shown = (
                text_of(c, "#channel-range").await.unwrap_or_default(),
                text_of(c, "#channel-count").await.unwrap_or_default(),
            );
            let rows = row_names(c).await;
            if shown == (range.to_string(), count.to_string()) && rows == names {
                Ok(())
            } else {
                Err(format!(
                    "{shown:?}, rows {:?}",
                    rows.iter().take(3).collect::<Vec<_>>()
                ))
            }
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_browser_pages_a_big_lineup_in_headless_chromium() {
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let mut list = String::from("#EXTM3U\n");
    for i in 0..BIG {
        list.push_str(&format!(
            "#EXTINF:-1 tvg-id=\"big{i}.example\" group-title=\"G{}\",{}\n{o}/live/{i}.m3u8\n",
            i % 7,
            big_name(i)
        ));
    }
    let _up = up.text("/big.m3u", M3U_TYPE, list).start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Big\"\nkind = \"m3u\"\nurl = \"{o}/big.m3u\"\n"
    ))
    .await;
    let driver = Driver::start().await;
    let browser = driver.session(1280, 900, true).await;
    let outcome = tokio::time::timeout(WHOLE_TEST, browse_big(&app, &browser)).await;
    let _ = browser.close().await;
    driver.finished(outcome.is_ok(), "the big lineup test");
}

/// The guide review's one-click pick names the guide its button shows: two extra
/// guides list one id, a channel already has the first guide's by an admin's pick,
/// and a click on the second guide's alternative for another channel gives that
/// channel the second guide's, leaving the first pick alone; the page then shows both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_review_picks_the_guide_its_button_names_in_headless_chromium() {
    let epg = |name: &str| {
        format!(
            "<?xml version=\"1.0\"?>\n<tv>\n<channel id=\"Sport.x\"><display-name>{name}</display-name></channel>\n\
             <channel id=\"ById.x\"><display-name>Kept By Id</display-name></channel>\n</tv>\n"
        )
    };
    let up = FakeUpstream::bind().await;
    let list = format!(
        "#EXTM3U\n#EXTINF:-1 tvg-id=\"p-1\",Sport Feed\n{0}/1.m3u8\n#EXTINF:-1 tvg-id=\"p-2\",Other\n{0}/2.m3u8\n\
         #EXTINF:-1 tvg-id=\"ById.x\",By Id\n{0}/3.m3u8\n",
        up.base()
    );
    let up = up
        .text("/list.m3u", M3U_TYPE, list)
        .text("/g1.xml", "application/xml", epg("Sport Feed Extra"))
        .text("/g2.xml", "application/xml", epg("Sport Feed Extra"))
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"{0}/list.m3u\"\n\n\
         [[guides]]\nname = \"g1\"\nurl = \"{0}/g1.xml\"\n\n[[guides]]\nname = \"g2\"\nurl = \"{0}/g2.xml\"\n",
        up.base()
    ))
    .await;
    let sport = app.channel_id("Sport Feed").await;
    let other = app.channel_id("Other").await;
    let by_id = app.channel_id("By Id").await;
    let decide = |channel: String, body: &'static str| {
        let app = &app;
        async move {
            let resp = app
                .send_json(
                    reqwest::Method::POST,
                    &format!("/api/guide/matches/{channel}"),
                    body,
                    None,
                )
                .await;
            assert_eq!(resp.status(), 200, "{body}");
        }
    };
    decide(
        other.clone(),
        r#"{"action":"pick","guide_id":"Sport.x","source":"g1"}"#,
    )
    .await;
    let line = |page: &Value, id: &str| {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["channel"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no line for {id} in {page}"))
    };
    let (_, page) = app.get_json("/api/guide/matches?state=all").await;
    let alternatives = line(&page, &sport)["alternatives"].to_string();
    assert!(alternatives.contains("\"g2\""), "{page}");

    let driver = Driver::start().await;
    let c = driver.session(1280, 900, true).await;
    let outcome = tokio::time::timeout(WHOLE_TEST, async {
        c.goto(&app.url("/")).await.expect("load /");
        let button = format!("#guide-matches tr[data-channel='{sport}'] button.pick");
        wait_for!("the g2 alternative's button on the Sport row", {
            let done = js(
                &c,
                "const b = [...document.querySelectorAll(arguments[0])]\
                   .find((b) => b.textContent.includes('· g2'));\
                 if (!b) return false; b.click(); return true;",
                vec![json!(button)],
            )
            .await;
            if done == json!(true) {
                Ok(())
            } else {
                Err("no such button yet".to_string())
            }
        });
        wait_for!("Sport picked from g2, Other still from g1", {
            let (_, page) = app.get_json("/api/guide/matches?state=all").await;
            let (s, o) = (line(&page, &sport), line(&page, &other));
            if s["state"] == "picked"
                && s["source"] == "g2"
                && o["state"] == "picked"
                && o["source"] == "g1"
            {
                Ok(())
            } else {
                Err(format!("{s}\n{o}"))
            }
        });
        // The listing was read again: the Sport row (unmatched, shown by default) has
        // left it, or shows its pick.
        wait_for!("the Sport row gone from the review, or picked", {
            let state = text_of(
                &c,
                &format!("#guide-matches tr[data-channel='{sport}'] .state"),
            )
            .await;
            match state.as_deref() {
                None | Some("picked") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        // A channel its guide lists by id offers no decision the API would refuse.
        js(
            &c,
            "const s = document.querySelector('#guide-review-state');\
             s.value = 'all'; s.dispatchEvent(new Event('change'));",
            vec![],
        )
        .await;
        wait_for!("the By Id row, without decisions", {
            let row = js(
                &c,
                "const r = document.querySelector(`#guide-matches tr[data-channel='${arguments[0]}']`);\
                 return r ? [r.querySelectorAll('button').length, r.textContent] : null;",
                vec![json!(by_id)],
            )
            .await;
            match row.as_array().map(|r| (r[0].as_u64(), r[1].as_str().unwrap_or(""))) {
                Some((Some(0), text)) if text.contains("by its guide id") => Ok(()),
                _ => Err(format!("{row}")),
            }
        });
    })
    .await;
    let _ = c.close().await;
    driver.finished(outcome.is_ok(), "the guide review test");
}

/// Right after a start, while a guide is still being read (no saved copy), the guide
/// review's call answers 503: the panel says so and asks again by itself, and shows
/// the review once the read has ended (here it fails after 14 s), without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_review_asks_again_while_the_guides_are_read_in_headless_chromium() {
    let up = FakeUpstream::bind().await;
    let list = format!(
        "#EXTM3U\n#EXTINF:-1 tvg-id=\"p-1\",Sport Feed\n{0}/1.m3u8\n",
        up.base()
    );
    let up = up
        .text("/list.m3u", M3U_TYPE, list)
        .hang("/slow.xml")
        .start();
    let app = TestApp::spawn(&format!(
        "[guide]\nread_timeout = \"60s\"\n\n[[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"{0}/list.m3u\"\n\n\
         [[guides]]\nname = \"slow\"\nurl = \"{0}/slow.xml\"\ntimeout = \"14s\"\n",
        up.base()
    ))
    .await;
    assert_eq!(app.channels().await.len(), 1);
    let driver = Driver::start().await;
    let c = driver.session(1280, 900, true).await;
    let outcome = tokio::time::timeout(WHOLE_TEST, async {
        c.goto(&app.url("/")).await.expect("load /");
        // The first answer comes after the call's 10 s wait.
        crate::common::eventually_within(WAIT * 2, "the review saying it asks again", || async {
            let count = text_of(&c, "#guide-review-count").await.unwrap_or_default();
            if count.contains("asking again") && count.contains("`slow`") {
                Ok(())
            } else {
                Err(count)
            }
        })
        .await;
        // The read fails at 14 s; the next try (10 s after the 503) loads the review.
        crate::common::eventually_within(
            WAIT * 3,
            "the review loaded, without a reload",
            || async {
                let count = text_of(&c, "#guide-review-count").await.unwrap_or_default();
                if count.contains(" of ") && !count.contains("could not load") {
                    Ok(())
                } else {
                    Err(count)
                }
            },
        )
        .await;
    })
    .await;
    let _ = c.close().await;
    driver.finished(outcome.is_ok(), "the guide review retry test");
}

async fn browse_big(app: &TestApp, c: &Client) {
    let all: Vec<String> = app
        .channels()
        .await
        .iter()
        .map(|ch| ch["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(all.len(), BIG, "the lineup");

    // The page loads with the count and the first page of channels, in number order.
    c.goto(&app.url("/")).await.expect("load /");
    wait_channels_ready(c).await;
    wait_page(c, "the first page", "1–50", "2,000", &all[..50]).await;
    assert_eq!(
        js(
            c,
            "return document.querySelector('#channel-prev').disabled;",
            vec![]
        )
        .await,
        true,
        "#channel-prev on the first page"
    );

    // Next: the second page.
    find(c, "#channel-next")
        .await
        .click()
        .await
        .expect("click next");
    wait_page(c, "after next", "51–100", "2,000", &all[50..100]).await;

    // Typing a search narrows it, on the server (accents and case ignored), from the
    // first page of the matches.
    find(c, "#search")
        .await
        .send_keys("TELE")
        .await
        .expect("type in #search");
    let tele: Vec<String> = (0..BIG)
        .filter(|i| i.is_multiple_of(10))
        .take(50)
        .map(big_name)
        .collect();
    wait_page(c, "typing `TELE`", "1–50", "200", &tele).await;
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/",
        "typing must not navigate"
    );
    let group = find(c, "#group").await;
    group
        .select_by_value("G0")
        .await
        .expect("pick G0 in #group");
    // Every tenth channel in G0 (i.is_multiple_of(7)): every seventieth.
    let tele_g0: Vec<String> = (0..BIG)
        .filter(|i| i.is_multiple_of(70))
        .map(big_name)
        .collect();
    let count = tele_g0.len().to_string();
    wait_page(
        c,
        "`TELE` in group G0",
        &format!("1–{count}"),
        &count,
        &tele_g0,
    )
    .await;

    // The catalogue views and the guide review follow what the server offers: a
    // server without a catalogue or guide matching says so, or hides the panel.
    let http = reqwest::Client::new();
    for (section, api) in [("#movies", "/api/movies"), ("#series", "/api/series")] {
        let status = http
            .get(app.url(api))
            .send()
            .await
            .expect("catalogue API")
            .status();
        // 404: no catalogue here; another refusal (a viewer login required): an error.
        let want = match status.as_u16() {
            404 => "none",
            200 => "ready",
            _ => "error",
        };
        wait_for!(
            format!("{section} in state {want} ({api} answers {status})"),
            {
                let state = js(
                    c,
                    "return document.querySelector(arguments[0]).dataset.state || '';",
                    vec![json!(section)],
                )
                .await;
                let text = text_of(c, &format!("{section} .cat-status")).await;
                if state == want && (want != "none" || text.as_deref() == Some("no catalogue")) {
                    Ok(())
                } else {
                    Err(format!("state {state}, .cat-status {text:?}"))
                }
            }
        );
    }
    let guide = http
        .get(app.url("/api/guide/matches?state=all"))
        .send()
        .await
        .expect("guide matches API")
        .status();
    if guide == 404 {
        let hidden = js(
            c,
            "return document.querySelector('#guide-review').hidden;",
            vec![],
        )
        .await;
        assert_eq!(hidden, true, "#guide-review shows without guide matching");
    }
}

/// With `require_account` and an admin token, the page a browser loads without the
/// token hides the services, the channels and the accounts, and the movie list says why
/// it cannot load (in the page: the script's requests carry no stored login, so no
/// login dialog). Typing the token shows them without a reload: the services' rows
/// (whose buttons work), the channel list, the accounts; and the player plays a channel
/// with it (hls.js sends the token on each request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_lineup_once_the_token_is_typed_with_require_account() {
    let origin = origin().await;
    let app = TestApp::spawn(&format!(
        r#"[server]
bind = "127.0.0.1:0"
state_dir = '{{state_dir}}'
admin_token = "{TOKEN}"
require_account = true

[[users]]
name = "alice"
password = "alice-secret-1"

[[services]]
name = "Demo"
kind = "demo"
priority = 50

[[services]]
name = "Origin"
kind = "m3u"
url = "{}"
priority = 10
"#,
        origin.url("/list.m3u"),
    ))
    .await;
    let driver = Driver::start().await;
    let browser = driver.player_session().await;
    let outcome = tokio::time::timeout(WHOLE_TEST, with_accounts(&app, &browser)).await;
    let _ = browser.close().await;
    driver.finished(outcome.is_ok(), "the require_account dashboard test");
}

async fn with_accounts(app: &TestApp, c: &Client) {
    let admin = reqwest::Client::new();
    wait_for!("the lineup of Demo + Origin through the admin API", {
        let resp = admin
            .get(app.url("/api/channels"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let page: Value = resp.json().await.map_err(|e| e.to_string())?;
        if page["total"] == CHANNELS.len() + 1 {
            Ok(())
        } else {
            Err(page.to_string())
        }
    });
    c.goto(&app.url("/")).await.expect("load /");
    let counts = "return { hidden: !!document.querySelector('#lineup-hidden'),
                           accountsHidden: !!document.querySelector('#accounts-hidden'),
                           services: document.querySelectorAll('#services tr[data-service]').length,
                           channels: document.querySelectorAll('#channels tr[data-channel]').length,
                           accounts: document.querySelectorAll('#accounts tr[data-account]').length,
                           names: Array.from(document.querySelectorAll('#channels tr[data-channel]')).map(r => r.dataset.channel),
                           total: document.querySelector('#channel-count').textContent,
                           service: document.querySelector('#service').value,
                           movies: document.querySelector('#movies').dataset.state || '',
                           moviesStatus: document.querySelector('#movies .cat-status').textContent };";
    let before = wait_for!("the movie list's answer without the token", {
        let seen = js(c, counts, vec![]).await;
        if seen["movies"] == "error" {
            Ok(seen)
        } else {
            Err(seen.to_string())
        }
    });
    assert_eq!(before["hidden"], true, "{before:#}");
    assert_eq!(before["accountsHidden"], true, "{before:#}");
    assert_eq!(before["services"], 0, "{before:#}");
    assert_eq!(before["channels"], 0, "{before:#}");
    assert!(
        before["moviesStatus"]
            .as_str()
            .unwrap_or_default()
            .contains("viewer account"),
        "{before:#}"
    );

    find(c, "#admin-token")
        .await
        .send_keys(&format!("{TOKEN}\u{E004}"))
        .await
        .expect("type the token and leave the field");
    let after = wait_for!("the services, channels and accounts after the token", {
        let seen = js(c, counts, vec![]).await;
        if seen["hidden"] == false
            && seen["services"] == 2
            && seen["channels"] == CHANNELS.len() + 1
            && seen["accounts"] == 1
            && seen["service"] == ""
            && seen["movies"] != "error"
        {
            Ok(seen)
        } else {
            Err(seen.to_string())
        }
    });
    assert_eq!(after["accountsHidden"], false, "{after:#}");
    // The rows put in work: a toggle is an admin call with the token.
    let origin_row = "#services tr[data-service=\"Origin\"]";
    click_toggle_and_see(c, origin_row, "disabled", "the click").await;
    click_toggle_and_see(c, origin_row, "enabled", "the second click").await;

    click_play(c, "demo").await;
    let playing = wait_player(c, "the demo channel plays with the token", |s| {
        s["time"].as_f64().unwrap_or(0.0) > 0.5 && s["state"] == "playing"
    })
    .await;
    assert_eq!(playing["error"], Value::Null, "{playing:#}");
}

/// On the channel list's second page, a service switched off elsewhere shrinks the
/// lineup under that page: the list follows (the page refreshes the services every
/// 3 s) and shows its last page, not an empty one (review 68 #7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_list_goes_back_to_its_last_page_when_the_lineup_shrinks_in_headless_chromium()
{
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let mut a = String::from("#EXTM3U\n");
    for i in 0..60 {
        a.push_str(&format!("#EXTINF:-1,A Channel {i:02}\n{o}/a/{i}.m3u8\n"));
    }
    let mut b = String::from("#EXTM3U\n");
    for i in 0..5 {
        b.push_str(&format!("#EXTINF:-1,B Channel {i}\n{o}/b/{i}.m3u8\n"));
    }
    let _up = up
        .text("/a.m3u", M3U_TYPE, a)
        .text("/b.m3u", M3U_TYPE, b)
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"A\"\nkind = \"m3u\"\npriority = 1\nurl = \"{o}/a.m3u\"\n\n\
         [[services]]\nname = \"B\"\nkind = \"m3u\"\npriority = 2\nurl = \"{o}/b.m3u\"\n"
    ))
    .await;
    assert_eq!(app.channels().await.len(), 65);
    let driver = Driver::start().await;
    let c = driver.session(1280, 900, true).await;
    let outcome = tokio::time::timeout(WHOLE_TEST, async {
        c.goto(&app.url("/")).await.expect("load /");
        wait_channels_ready(&c).await;
        find(&c, "#channel-next")
            .await
            .click()
            .await
            .expect("click #channel-next");
        wait_for!("the second page", {
            let shown = text_of(&c, "#channel-range").await.unwrap_or_default();
            if shown == "51–65" {
                Ok(())
            } else {
                Err(shown)
            }
        });
        let resp = app.post("/api/services/A/disable").await;
        assert_eq!(resp.status(), 200);
        let b: Vec<String> = (0..5).map(|i| format!("B Channel {i}")).collect();
        wait_page(&c, "the lineup without A", "1–5", "5", &b).await;
    })
    .await;
    let _ = c.close().await;
    driver.finished(outcome.is_ok(), "the shrinking lineup test");
}
