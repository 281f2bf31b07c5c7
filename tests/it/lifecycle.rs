//! The real binary's lifecycle: SIGHUP and `POST /api/config/reload` apply a changed
//! config file without cutting a running `.ts` viewer or an HLS player's links; an
//! invalid file is refused with every problem and the old config keeps serving;
//! SIGTERM/SIGINT refuse new connections at once, let a viewer run until
//! `server.shutdown_grace`, end its stream and exit 0; a second signal exits at once;
//! a streaming response is never cut by `server.idle_timeout` or `header_timeout`; a
//! reload cuts the guide reads of the config it replaces.
//!
//! Signals are sent with `kill(1)`; the upstream is a live HLS origin on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Path as UrlPath;
use axum::routing::get;
use futures::StreamExt;
use serde_json::Value;

use crate::common::{
    eventually, eventually_true, freesky_command, json_of, playlist_uris, respond, FakeUpstream,
    Process, TestApp, HANG_GUARD, HLS_TYPE, M3U_TYPE,
};

/// MPEG-TS packets per fake segment.
const PACKETS: usize = 8;
const SEGMENT_BYTES: usize = 188 * PACKETS;

/// A live HLS origin: a new 1 s segment every second, a window of the last three
/// (no ENDLIST), each segment `PACKETS` MPEG-TS packets. `/list.m3u` lists it as
/// channel "Live", `/list2.m3u` as channel "Second Live".
async fn live_origin() -> FakeUpstream {
    let started = Instant::now();
    let builder = FakeUpstream::bind().await;
    let index = builder.url("/live/index.m3u8");
    builder
        .route(
            "/live/index.m3u8",
            get(move || async move {
                let now = started.elapsed().as_secs() + 3;
                let mut body = format!(
                    "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{}\n",
                    now - 3
                );
                for n in now - 3..now {
                    body.push_str(&format!("#EXTINF:1.0,\ns{n}.ts\n"));
                }
                respond(200, HLS_TYPE, body)
            }),
        )
        .route(
            "/live/{seg}",
            get(|UrlPath(_seg): UrlPath<String>| async move {
                let mut bytes = vec![0u8; SEGMENT_BYTES];
                for p in bytes.chunks_mut(188) {
                    p[0] = 0x47;
                }
                respond(200, "video/mp2t", bytes)
            }),
        )
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!("#EXTM3U\n#EXTINF:-1 tvg-id=\"Live.example\",Live\n{index}\n"),
        )
        .text(
            "/list2.m3u",
            M3U_TYPE,
            format!("#EXTM3U\n#EXTINF:-1 tvg-id=\"Second.example\",Second Live\n{index}\n"),
        )
        .start()
}

/// The config file's text: `[server]` lines (`extra`) and one m3u service per
/// `(name, list URL, description)`.
fn config_text(dir: &Path, extra: &str, services: &[(&str, String, &str)]) -> String {
    let mut s = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{}'\n{extra}\n[streams]\nidle_stop = \"1s\"\n",
        dir.join("state").display()
    );
    for (name, url, description) in services {
        s.push_str(&format!(
            "\n[[services]]\nname = \"{name}\"\nkind = \"m3u\"\nurl = \"{url}\"\ndescription = \"{description}\"\n"
        ));
    }
    s
}

/// `config_text` with one service, "Origin" (the list at `list`), whose guide is at
/// `guide`.
fn with_guide(dir: &Path, list: String, description: &str, guide: &str) -> String {
    format!(
        "{}epg_url = \"{guide}\"\n",
        config_text(dir, "", &[("Origin", list, description)])
    )
}

/// The binary serving `--config <dir>/freesky.toml` (or no config at all), its stderr
/// in `<dir>/freesky.log` (`common::Process`: killed on drop).
struct Freesky {
    process: Process,
    config: PathBuf,
}

impl std::ops::Deref for Freesky {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.process
    }
}

impl std::ops::DerefMut for Freesky {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

impl Freesky {
    fn start(dir: &Path, config: &str) -> Freesky {
        let path = dir.join("freesky.toml");
        std::fs::write(&path, config).expect("write config");
        Self::spawn(
            dir,
            &["--config", path.to_str().expect("utf-8 path"), "serve"],
        )
    }

    /// `args` from `dir` as the working directory.
    fn spawn(dir: &Path, args: &[&str]) -> Freesky {
        let mut cmd = freesky_command();
        cmd.args(args).current_dir(dir);
        Freesky {
            process: Process::serve(cmd, &dir.join("freesky.log")),
            config: dir.join("freesky.toml"),
        }
    }

    fn log(&self) -> String {
        self.process.log_text()
    }

    fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("rewrite config");
    }
}

/// A client for short exchanges (bounded), and one for a stream that runs as long as
/// a test watches it (each read bounded instead).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(HANG_GUARD)
        .build()
        .expect("client")
}

async fn get_json(url: String) -> (reqwest::StatusCode, Value) {
    let resp = client().get(&url).send().await.expect("GET");
    let (status, body) = json_of(resp).await;
    (
        reqwest::StatusCode::from_u16(status.as_u16()).unwrap(),
        body,
    )
}

/// POST /api/config/reload with an optional bearer token.
async fn reload(fs: &Freesky, token: Option<&str>) -> (u16, Value) {
    let mut req = client().post(format!("{}/api/config/reload", fs.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let (status, body) = json_of(req.send().await.expect("POST reload")).await;
    (status.as_u16(), body)
}

/// The `ok` count of service `name`'s chart on the dashboard ("last hour: N ok, ...").
async fn chart_ok(fs: &Freesky, name: &str) -> u64 {
    let html = client()
        .get(format!("{}/", fs.base))
        .send()
        .await
        .expect("GET /")
        .text()
        .await
        .unwrap();
    let row = &html[html
        .find(&format!("data-service=\"{name}\""))
        .unwrap_or_else(|| panic!("no row of {name} in {html}"))..];
    let label = &row[row.find("aria-label=\"last hour: ").expect("a chart label")..];
    label["aria-label=\"last hour: ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `/api/services/status` as (name, description) pairs.
async fn services(fs: &Freesky) -> Vec<(String, String)> {
    let (status, body) = get_json(format!("{}/api/services/status", fs.base)).await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .expect("an array")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["description"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The lineup id of channel `name`, waiting for the lineup to list it.
async fn channel_id(fs: &Freesky, name: &str) -> String {
    eventually(&format!("the lineup to list {name:?}"), || async {
        let (status, body) = get_json(format!("{}/api/channels/all", fs.base)).await;
        body.as_array()
            .filter(|_| status == 200)
            .and_then(|all| all.iter().find(|c| c["name"] == name))
            .map(|c| c["id"].as_str().expect("channel id").to_string())
            .ok_or(body)
    })
    .await
}

/// A `.ts` viewer reading in the background: bytes so far, and how the stream ended.
struct Viewer {
    bytes: Arc<AtomicUsize>,
    ended: Arc<Mutex<Option<String>>>,
}

impl Viewer {
    async fn open(fs: &Freesky, id: &str) -> Viewer {
        Self::open_at(fs, &format!("/api/stream/{id}.ts")).await
    }

    /// A viewer of `path` (a `.ts` URL).
    async fn open_at(fs: &Freesky, path: &str) -> Viewer {
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("{}{path}", fs.base))
            .send()
            .await
            .expect("GET .ts");
        assert_eq!(resp.status(), 200);
        let bytes = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(Mutex::new(None));
        let (b, e) = (bytes.clone(), ended.clone());
        tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let outcome = loop {
                match tokio::time::timeout(HANG_GUARD, body.next()).await {
                    Err(_) => break "stalled".to_string(),
                    Ok(None) => break "clean end".to_string(),
                    Ok(Some(Err(err))) => break format!("error: {err}"),
                    Ok(Some(Ok(chunk))) => {
                        b.fetch_add(chunk.len(), Ordering::SeqCst);
                    }
                }
            };
            *e.lock().unwrap() = Some(outcome);
        });
        Viewer { bytes, ended }
    }

    fn bytes(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }

    fn ended(&self) -> Option<String> {
        self.ended.lock().unwrap().clone()
    }

    /// Waits until more than `n` bytes have arrived; panics if the stream ends first.
    async fn wait_past(&self, n: usize) {
        eventually(&format!("bytes past {n}"), || async {
            if let Some(how) = self.ended() {
                panic!("the stream ended ({how}) after {} bytes", self.bytes());
            }
            match self.bytes() {
                got if got > n => Ok(()),
                got => Err(got),
            }
        })
        .await
    }

    /// Waits (bounded) until the stream ended; returns how.
    async fn wait_end(&self) -> String {
        eventually("the stream to end", || async {
            self.ended()
                .ok_or_else(|| format!("{} bytes so far", self.bytes()))
        })
        .await
    }
}

/// freesky serving the live origin as service `Origin`, with `server.shutdown_grace`
/// = `grace`. The origin and the directory live as long as the caller keeps them.
async fn start_with_grace(grace: &str) -> (FakeUpstream, tempfile::TempDir, Freesky) {
    let origin = live_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let one = [("Origin", origin.url("/list.m3u"), "first")];
    let extra = format!("shutdown_grace = \"{grace}\"");
    let fs = Freesky::start(dir.path(), &config_text(dir.path(), &extra, &one));
    (origin, dir, fs)
}

/// A `.ts` viewer of the live channel that has received its first bytes.
async fn watch_live(fs: &Freesky) -> Viewer {
    let id = channel_id(fs, "Live").await;
    let viewer = Viewer::open(fs, &id).await;
    viewer.wait_past(0).await;
    viewer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_changed_file_while_viewers_keep_playing() {
    let origin = live_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let one = [("Origin", origin.url("/list.m3u"), "first")];
    let fs = Freesky::start(dir.path(), &config_text(dir.path(), "", &one));
    let id = channel_id(&fs, "Live").await;

    // A .ts viewer, and an HLS player holding a proxied segment link.
    let viewer = Viewer::open(&fs, &id).await;
    viewer.wait_past(0).await;
    let resp = client()
        .get(format!("{}/api/stream/{id}.m3u8", fs.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let media = resp.text().await.unwrap();
    let segment_link = playlist_uris(&media)
        .into_iter()
        .find(|u| u.contains("/proxy/"))
        .unwrap_or_else(|| panic!("no proxied link in {media}"));

    let charted = chart_ok(&fs, "Origin").await;
    assert!(charted > 0, "the dashboard charted no call of Origin");

    fs.write_config(&config_text(
        dir.path(),
        "",
        &[
            ("Origin", origin.url("/list.m3u"), "renamed"),
            ("Second", origin.url("/list2.m3u"), "added"),
        ],
    ));
    fs.signal("HUP");
    let want = [
        ("Origin".to_string(), "renamed".to_string()),
        ("Second".to_string(), "added".to_string()),
    ];
    eventually("the reloaded services", || async {
        let now = services(&fs).await;
        if now == want {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await;
    fs.wait_log("config reloaded", HANG_GUARD).await;

    // The viewer kept receiving across the reload, with no end of stream.
    let at_reload = viewer.bytes();
    viewer.wait_past(at_reload + SEGMENT_BYTES).await;
    assert_eq!(viewer.ended(), None);
    // The HLS link issued before the reload still plays.
    let resp = client().get(&segment_link).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{segment_link}");
    assert_eq!(resp.bytes().await.unwrap().len(), SEGMENT_BYTES);
    // Origin's chart of the last hour carried over.
    assert!(chart_ok(&fs, "Origin").await >= charted);
    // The new service's channel is served.
    let second = channel_id(&fs, "Second Live").await;
    let resp = client()
        .get(format!("{}/api/stream/{second}.m3u8", fs.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// A household throws out a leaked login by giving the account a new password in the
/// file: a reload ends that account's running `.ts` streams at once (as the API's
/// change does), and no other account's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_password_in_the_file_ends_that_accounts_streams_at_the_reload() {
    let origin = live_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let one = [("Origin", origin.url("/list.m3u"), "first")];
    let users = |alice: &str| {
        format!(
            "{}\n[[users]]\nname = \"alice\"\npassword = \"{alice}\"\n\n\
             [[users]]\nname = \"bob\"\npassword = \"bob-pw\"\n",
            config_text(dir.path(), "", &one)
        )
    };
    let fs = Freesky::start(dir.path(), &users("old-pw"));
    let id = channel_id(&fs, "Live").await;
    let (_, all) = get_json(format!("{}/api/channels/all", fs.base)).await;
    let number = all
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == id.as_str()))
        .and_then(|c| c["number"].as_u64())
        .unwrap_or_else(|| panic!("no number for {id} in {all}"));
    let alice = Viewer::open_at(&fs, &format!("/live/alice/old-pw/{number}.ts")).await;
    let bob = Viewer::open_at(&fs, &format!("/live/bob/bob-pw/{number}.ts")).await;
    alice.wait_past(0).await;
    bob.wait_past(0).await;

    fs.write_config(&users("new-pw"));
    assert_eq!(reload(&fs, None).await.0, 200);
    assert_eq!(alice.wait_end().await, "clean end");
    let at_reload = bob.bytes();
    bob.wait_past(at_reload + SEGMENT_BYTES).await;
    assert_eq!(bob.ended(), None);
    fs.wait_log("password changed in the config", HANG_GUARD)
        .await;
}

/// A reload keeps each service's last good guide: when the guide's upstream fails at
/// the reload (or after it), the channels keep their programmes, as at a refresh.
/// Before, a reload of even the same file emptied them until a read succeeded (6 h).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_last_good_guide_of_a_guide_that_fails() {
    let origin = live_origin().await;
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fails = failing.clone();
    let guide = FakeUpstream::bind()
        .await
        .route(
            "/guide.xml",
            get(move || {
                let fail = fails.load(Ordering::SeqCst);
                async move {
                    if fail {
                        respond(500, "text/plain", "down")
                    } else {
                        respond(
                            200,
                            "application/xml",
                            crate::common::xmltv_guide(&[("Live.example", "Live")]),
                        )
                    }
                }
            }),
        )
        .start();
    let dir = tempfile::tempdir().unwrap();
    let text = with_guide(
        dir.path(),
        origin.url("/list.m3u"),
        "first",
        &guide.url("/guide.xml"),
    );
    let fs = Freesky::start(dir.path(), &text);
    channel_id(&fs, "Live").await;
    let programmes = || async {
        let epg = client()
            .get(format!("{}/epg.xml", fs.base))
            .send()
            .await
            .expect("GET /epg.xml")
            .text()
            .await
            .unwrap();
        epg.matches("<programme ").count()
    };
    assert_eq!(programmes().await, 1);
    failing.store(true, Ordering::SeqCst);
    assert_eq!(reload(&fs, None).await.0, 200);
    let refresh = || async {
        let resp = client()
            .post(format!("{}/api/guide/refresh", fs.base))
            .send()
            .await
            .expect("POST /api/guide/refresh");
        json_of(resp).await
    };
    let (status, body) = refresh().await;
    assert_eq!(status.as_u16(), 200, "{body}");
    assert!(
        body["services"]["Origin"]["last_error"].is_string(),
        "the read after the reload failed: {body}"
    );
    assert_eq!(
        programmes().await,
        1,
        "the last good guide went with the reload"
    );

    // A guide read from another place now is not the old one: nothing carried over.
    fs.write_config(&text.replace("/guide.xml", "/moved.xml"));
    assert_eq!(reload(&fs, None).await.0, 200);
    assert_eq!(refresh().await.0.as_u16(), 200);
    assert_eq!(programmes().await, 0, "the old place's guide was kept");
}

/// Counts a response body open until it is dropped (the client went away).
struct OpenBody(Arc<AtomicUsize>);

impl Drop for OpenBody {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reloads while a guide's read hangs do not pile up reads: each reload cuts the
/// replaced config's reads (each would hold a whole guide in memory), so one is open
/// however many reloads came (before, every reload added one until `read_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_during_a_guide_read_cut_the_replaced_reads() {
    let origin = live_origin().await;
    let open = Arc::new(AtomicUsize::new(0));
    let opened = open.clone();
    let guide = FakeUpstream::bind()
        .await
        .route(
            "/guide.xml",
            get(move || {
                opened.fetch_add(1, Ordering::SeqCst);
                let guard = OpenBody(opened.clone());
                async move {
                    // The head of a guide, then a line break every 200 ms, for ever:
                    // never idle long enough for the service's timeout to cut it.
                    let head = futures::stream::once(async {
                        Ok::<_, std::io::Error>(bytes::Bytes::from_static(
                            b"<?xml version=\"1.0\"?>\n<tv>\n",
                        ))
                    });
                    let trickle = futures::stream::unfold((), |()| async {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Some((Ok(bytes::Bytes::from_static(b"\n")), ()))
                    });
                    let body = head.chain(trickle).map(move |chunk| {
                        let _held = &guard;
                        chunk
                    });
                    axum::response::Response::builder()
                        .header("content-type", "application/xml")
                        .body(axum::body::Body::from_stream(body))
                        .unwrap()
                }
            }),
        )
        .start();
    let dir = tempfile::tempdir().unwrap();
    let text = with_guide(
        dir.path(),
        origin.url("/list.m3u"),
        "first",
        &guide.url("/guide.xml"),
    );
    let fs = Freesky::start(dir.path(), &text);
    channel_id(&fs, "Live").await;
    eventually_true("the first read of the guide to hang", || async {
        guide.hits("/guide.xml") == 1
    })
    .await;
    for _ in 0..3 {
        assert_eq!(reload(&fs, None).await.0, 200);
    }
    eventually_true("each reloaded config to read the guide", || async {
        guide.hits("/guide.xml") == 4
    })
    .await;
    eventually(
        "the replaced configs' reads to be cut, the last one's open",
        || async {
            let now = open.load(Ordering::SeqCst);
            (now == 1).then_some(()).ok_or(format!("{now} reads open"))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_is_refused_with_every_problem_and_the_old_config_stays() {
    let origin = live_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let one = [("Origin", origin.url("/list.m3u"), "first")];
    let good = config_text(dir.path(), "", &one);
    let fs = Freesky::start(dir.path(), &good);
    channel_id(&fs, "Live").await;

    // Two problems: a bad duration in [server], a bad one in the service.
    let bad = config_text(dir.path(), "shutdown_grace = \"soon\"", &one)
        .replace("kind = \"m3u\"", "kind = \"m3u\"\ntimeout = \"fast\"");
    let line_of = |needle: &str| bad.lines().position(|l| l.contains(needle)).unwrap() + 1;
    fs.write_config(&bad);
    let (status, body) = reload(&fs, None).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("unchanged"),
        "{body}"
    );
    let detail: Vec<&str> = body["detail"]
        .as_array()
        .unwrap_or_else(|| panic!("detail is a list: {body}"))
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    // Exactly what `freesky check` prints for the file.
    let check = Command::new(env!("CARGO_BIN_EXE_freesky"))
        .arg("--config")
        .arg(&fs.config)
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(2));
    let printed = String::from_utf8(check.stderr).unwrap();
    assert_eq!(detail, printed.lines().collect::<Vec<_>>());
    let file = fs.config.display().to_string();
    let grace_at = format!("{file}:{}: server.shutdown_grace:", line_of("soon"));
    let timeout_at = format!("{file}:{}: services[0].timeout:", line_of("fast"));
    assert_eq!(detail.len(), 2, "{detail:?}");
    assert!(detail[0].starts_with(&grace_at), "{detail:?} / {grace_at}");
    assert!(
        detail[1].starts_with(&timeout_at),
        "{detail:?} / {timeout_at}"
    );
    // The old config still serves.
    assert_eq!(
        services(&fs).await,
        [("Origin".to_string(), "first".to_string())]
    );
    channel_id(&fs, "Live").await;

    // SIGHUP with the same file: still serving, the problem logged at error level.
    fs.signal("HUP");
    let log = fs.wait_log("services[0].timeout", HANG_GUARD).await;
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains(&grace_at)),
        "{log}"
    );
    let (status, _) = get_json(format!("{}/health", fs.base)).await;
    assert_eq!(status, 200);
    assert_eq!(
        services(&fs).await,
        [("Origin".to_string(), "first".to_string())]
    );

    // Fixed, it applies.
    fs.write_config(&good.replace("first", "fixed"));
    let (status, body) = reload(&fs, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        services(&fs).await,
        [("Origin".to_string(), "fixed".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_is_an_admin_call_and_names_what_needs_a_restart() {
    let origin = live_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let one = [("Origin", origin.url("/list.m3u"), "first")];
    let with_token = config_text(dir.path(), "admin_token = \"s3cret\"", &one);
    let fs = Freesky::start(dir.path(), &with_token);

    // From loopback, but a token is set: the token is needed.
    let (status, body) = reload(&fs, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let (status, body) = reload(&fs, Some("wrong")).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = reload(&fs, Some("s3cret")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reloaded"], true, "{body}");
    assert_eq!(body["builtin"], false, "{body}");
    assert_eq!(body["config"], fs.config.display().to_string(), "{body}");
    assert_eq!(body["services"], serde_json::json!(["Origin"]), "{body}");
    assert_eq!(body["restart_required"], serde_json::json!([]), "{body}");
    assert_eq!(body["overridden"], serde_json::json!([]), "{body}");

    // A priority set through the API overrides the file's: a reload says so.
    let set = client()
        .put(format!("{}/api/services/Origin/priority", fs.base))
        .bearer_auth("s3cret")
        .json(&serde_json::json!({"priority": 7}))
        .send()
        .await
        .expect("PUT priority");
    assert_eq!(set.status(), 200);
    let (status, body) = reload(&fs, Some("s3cret")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["overridden"],
        serde_json::json!(["services.Origin.priority"]),
        "{body}"
    );
    let reset = client()
        .post(format!("{}/api/services/Origin/reset", fs.base))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("POST reset");
    assert_eq!(reset.status(), 200);

    // A new listen address and state dir wait for a restart; the rest applies.
    fs.write_config(
        &with_token
            .replace("127.0.0.1:0", "127.0.0.1:1")
            .replace("first", "second")
            .replace(
                &format!("{}", dir.path().join("state").display()),
                "/nonexistent/elsewhere",
            ),
    );
    let (status, body) = reload(&fs, Some("s3cret")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["restart_required"],
        serde_json::json!(["server.bind", "server.state_dir"]),
        "{body}"
    );
    assert_eq!(
        services(&fs).await,
        [("Origin".to_string(), "second".to_string())]
    );
    assert!(!Path::new("/nonexistent/elsewhere").exists());

    // The new token applies at once.
    fs.write_config(&with_token.replace("s3cret", "n3w"));
    let (status, body) = reload(&fs, Some("s3cret")).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = reload(&fs, Some("s3cret")).await;
    assert_eq!(status, 403);
    let (status, _) = reload(&fs, Some("n3w")).await;
    assert_eq!(status, 200);
}

/// A reload that lowers `tuner_count` holds for the tuner streams playing then: no
/// new one while they fill the new count, and the new count once they end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_tuner_count_at_a_reload_counts_the_streams_already_playing() {
    let origin = live_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let one = [("Origin", origin.url("/list.m3u"), "first")];
    let with = |n: u32| {
        format!(
            "{}\n[hdhomerun]\nenabled = true\ntuner_count = {n}\n",
            config_text(dir.path(), "", &one)
        )
    };
    let fs = Freesky::start(dir.path(), &with(2));
    eventually("the lineup", || async {
        let (_, all) = get_json(format!("{}/api/channels/all", fs.base)).await;
        all.as_array()
            .filter(|a| !a.is_empty())
            .map(|_| ())
            .ok_or("empty")
    })
    .await;
    let (_, all) = get_json(format!("{}/api/channels/all", fs.base)).await;
    let tune = format!("{}/auto/v{}", fs.base, all[0]["number"]);
    let open = || async {
        let mut resp = client().get(&tune).send().await.expect("tune");
        let status = resp.status().as_u16();
        if status == 200 {
            resp.chunk()
                .await
                .expect("first bytes")
                .expect("some bytes");
        }
        (status, resp)
    };
    let (a, first) = open().await;
    let (b, second) = open().await;
    assert_eq!((a, b), (200, 200));

    fs.write_config(&with(1));
    let (status, body) = reload(&fs, None).await;
    assert_eq!(status, 200, "{body}");
    // Two play on a one-tuner device now: a third is refused, and so is one after
    // the first of them ends.
    assert_eq!(open().await.0, 503, "a third stream on one tuner");
    drop(first);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(open().await.0, 503, "a second stream on one tuner");
    // Both ended: one plays, not two.
    drop(second);
    let playing = eventually("a tuner freed", || async {
        let (status, resp) = open().await;
        if status == 200 {
            Ok(resp)
        } else {
            Err(status)
        }
    })
    .await;
    assert_eq!(open().await.0, 503, "a second stream on one tuner");
    drop(playing);
}

/// `/list.m3u`: `#EXTM3U`, then `entry`'s lines and a stream URL; 503 once the flag
/// returned is set.
async fn list_that_goes_down(entry: &str) -> (FakeUpstream, Arc<std::sync::atomic::AtomicBool>) {
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = down.clone();
    let list = FakeUpstream::bind().await;
    let body = format!("#EXTM3U\n{entry}\n{}\n", list.url("/live/index.m3u8"));
    let list = list
        .route(
            "/list.m3u",
            get(move || {
                let down = flag.load(Ordering::SeqCst);
                let body = body.clone();
                async move {
                    if down {
                        respond(503, "text/plain", "down")
                    } else {
                        respond(200, M3U_TYPE, body)
                    }
                }
            }),
        )
        .start();
    (list, down)
}

/// A service down during a reload keeps its last listed channels (as it does between
/// reloads), and a file that lists no service (a half-written one reads so) is refused
/// rather than emptying the lineup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_a_down_services_channels_and_refuses_a_file_without_services() {
    let (list, down) = list_that_goes_down("#EXTINF:-1,Live").await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_text(dir.path(), "", &[("Origin", list.url("/list.m3u"), "one")]);
    let fs = Freesky::start(dir.path(), &config);
    let names = || async {
        let (status, body) = get_json(format!("{}/api/channels/all", fs.base)).await;
        assert_eq!(status, 200, "{body}");
        body.as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names().await, ["Live"]);

    down.store(true, Ordering::SeqCst);
    let (status, body) = reload(&fs, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        names().await,
        ["Live"],
        "the channel left the lineup on reload"
    );

    fs.write_config(config.split("[[services]]").next().unwrap());
    let (status, body) = reload(&fs, None).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"][0]
            .as_str()
            .unwrap()
            .contains("services: no [[services]] while 1 are running"),
        "{body}"
    );
    assert_eq!(
        services(&fs).await,
        [("Origin".to_string(), "one".to_string())]
    );
    assert_eq!(names().await, ["Live"]);
}

/// A service down at start lists what it last listed before the restart (kept in
/// `state_dir/lists/`), unless it now lists from elsewhere (another URL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_down_at_a_restart_keeps_its_last_listed_channels() {
    let (list, down) = list_that_goes_down(
        "#EXTINF:-1 tvg-id=\"Live.example\" catchup=\"shift\" catchup-days=\"2\",Live\n\
         #EXTVLCOPT:http-referrer=http://ref.example/",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_text(dir.path(), "", &[("Origin", list.url("/list.m3u"), "one")]);
    let channels = |fs: &Freesky| {
        let url = format!("{}/api/channels/all", fs.base);
        async move {
            let (status, body) = get_json(url).await;
            assert_eq!(status, 200, "{body}");
            body.as_array().unwrap().clone()
        }
    };
    let fs = Freesky::start(dir.path(), &config);
    let before = channels(&fs).await;
    assert_eq!(before.len(), 1);
    let lists = dir.path().join("state").join("lists");
    eventually("the list kept in state_dir/lists", || {
        let lists = lists.clone();
        async move {
            let kept = std::fs::read_dir(&lists)
                .map(|d| {
                    d.flatten()
                        .any(|f| f.file_name().to_string_lossy().ends_with(".json"))
                })
                .unwrap_or(false);
            if kept {
                Ok(())
            } else {
                Err("no list file yet")
            }
        }
    })
    .await;
    drop(fs);

    down.store(true, Ordering::SeqCst);
    let fs = Freesky::start(dir.path(), &config);
    assert_eq!(
        channels(&fs).await,
        before,
        "the channel left the lineup on restart"
    );
    let (status, detail) = get_json(format!(
        "{}/api/channels/{}",
        fs.base,
        before[0]["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(status, 200, "{detail}");
    drop(fs);

    // The same name listing from another URL starts without the old list.
    let elsewhere = config.replace("/list.m3u", "/list.m3u?v=2");
    let fs = Freesky::start(dir.path(), &elsewhere);
    assert_eq!(channels(&fs).await, Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_file_reload_applies_the_builtin_config_again() {
    let dir = tempfile::tempdir().unwrap();
    // No --config and no config/freesky.toml in the working directory.
    let fs = Freesky::spawn(dir.path(), &["serve", "--bind", "127.0.0.1:0"]);
    let (status, body) = reload(&fs, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["builtin"], true, "{body}");
    assert_eq!(body["config"], "<built-in>", "{body}");
    assert_eq!(body["services"], serde_json::json!(["Demo"]), "{body}");
    // `--bind` is applied again, not taken for a change of the file.
    assert_eq!(body["restart_required"], serde_json::json!([]), "{body}");
    fs.wait_log("built-in default applied again", HANG_GUARD)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_connections_ends_streams_after_the_grace_and_exits_0() {
    let (_origin, _dir, mut fs) = start_with_grace("3s").await;
    let viewer = watch_live(&fs).await;

    fs.signal("TERM");
    let at_signal = viewer.bytes();
    // New connections are refused while the process still runs (the grace is not over).
    eventually("new connections to be refused", || async {
        let refused = std::net::TcpStream::connect_timeout(&fs.addr, Duration::from_secs(1))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
        if refused {
            Ok(())
        } else {
            Err(format!("still accepted; the log:\n{}", fs.log()))
        }
    })
    .await;
    assert!(fs.running(), "exited before the grace:\n{}", fs.log());
    // The viewer kept receiving during the grace, then its stream ended cleanly.
    let how = viewer.wait_end().await;
    assert_eq!(how, "clean end", "{}", fs.log());
    assert!(
        viewer.bytes() > at_signal,
        "nothing arrived during the grace ({at_signal} bytes)"
    );
    let status = fs.wait_exit(HANG_GUARD).await;
    assert_eq!(status.code(), Some(0), "{}", fs.log());
    let log = fs.log();
    let line = log
        .lines()
        .find(|l| l.contains("shutting down"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("grace=3s"), "{line}");
    let open: usize = line
        .split("open_connections=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(open >= 1, "{line}");
    assert!(log.contains("shutdown grace over"), "{log}");
    assert!(log.trim_end().ends_with("stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_without_viewers_exits_0_without_waiting_for_the_grace() {
    // A grace far beyond the hang guard: waiting for it would fail the test.
    let (_origin, _dir, mut fs) = start_with_grace("1h").await;
    // An idle keep-alive connection must not hold the shutdown.
    let keep = client();
    let resp = keep
        .get(format!("{}/health", fs.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();

    fs.signal("INT");
    let status = fs.wait_exit(HANG_GUARD).await;
    assert_eq!(status.code(), Some(0), "{}", fs.log());
    let log = fs.log();
    assert!(
        log.contains("signal=\"SIGINT\"") || log.contains("signal=SIGINT"),
        "{log}"
    );
    assert!(log.trim_end().ends_with("stopped"), "{log}");
    drop(keep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_during_the_grace_exits_at_once() {
    let (_origin, _dir, mut fs) = start_with_grace("1h").await;
    let viewer = watch_live(&fs).await;

    fs.signal("TERM");
    fs.wait_log("shutting down", HANG_GUARD).await;
    // The viewer holds the server in its (hour-long) grace.
    assert!(fs.running());
    fs.signal("TERM");
    let status = fs.wait_exit(HANG_GUARD).await;
    assert_eq!(status.code(), Some(0), "{}", fs.log());
    assert!(fs.log().contains("second signal"), "{}", fs.log());
    viewer.wait_end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_response_outlives_the_idle_and_head_timeouts() {
    // The live origin adds a segment a second: the `.ts` body has gaps of about a
    // second, each several times both timeouts. Neither may cut the open response.
    let origin = live_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let one = [("Origin", origin.url("/list.m3u"), "first")];
    let extra = "header_timeout = \"200ms\"\nidle_timeout = \"200ms\"";
    let fs = Freesky::start(dir.path(), &config_text(dir.path(), extra, &one));
    let viewer = watch_live(&fs).await;
    let first = viewer.bytes();
    // Three more segments: three gaps of about a second each.
    viewer.wait_past(first + 3 * SEGMENT_BYTES).await;
    assert_eq!(viewer.ended(), None);
}

/// A service renamed in the config: the state's switch for its old name and a
/// channel's pinned sources naming it are said at the reload (and at a start), each
/// with what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_naming_a_renamed_service_is_warned_about() {
    let origin = live_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let two = [
        ("A", origin.url("/list.m3u"), "a"),
        ("B", origin.url("/list.m3u"), "b"),
    ];
    let fs = Freesky::start(dir.path(), &config_text(dir.path(), "", &two));
    let (status, body) = get_json(format!("{}/api/channels/all", fs.base)).await;
    assert_eq!(status, 200, "{body}");
    let id = body[0]["id"].as_str().unwrap().to_string();
    let resp = client()
        .patch(format!("{}/api/channels/{id}", fs.base))
        .body(r#"{"sources":["B"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client()
        .post(format!("{}/api/services/B/disable", fs.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let renamed = [
        ("A", origin.url("/list.m3u"), "a"),
        ("B2", origin.url("/list.m3u"), "b"),
    ];
    fs.write_config(&config_text(dir.path(), "", &renamed));
    let (status, body) = reload(&fs, None).await;
    assert_eq!(status, 200, "{body}");
    let log = fs
        .wait_log(
            "pinned sources name services that are not configured",
            HANG_GUARD,
        )
        .await;
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in:\n{log}"))
            .to_string()
    };
    let pin = line("pinned sources name services");
    assert!(pin.contains(&id) && pin.contains("\"B\""), "{pin}");
    let switch = line("keeps a switch or priority for services");
    assert!(switch.contains("[\"B\"]"), "{switch}");
}

/// At a start, a service whose list hangs, with channels kept from before
/// (`state_dir/lists/`), does not hold the first lineup for its whole timeout: its
/// kept channels stand in, and the playlist answers long before that timeout.
#[tokio::test]
async fn a_service_hanging_at_a_restart_does_not_hold_the_first_lineup() {
    let hang = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hangs = hang.clone();
    let list = FakeUpstream::bind().await;
    let body = format!(
        "#EXTM3U\n#EXTINF:-1,Live\n{}\n",
        list.url("/live/index.m3u8")
    );
    let list = list
        .route(
            "/list.m3u",
            get(move || {
                let (hangs, body) = (hangs.load(Ordering::SeqCst), body.clone());
                async move {
                    if hangs {
                        std::future::pending::<()>().await;
                    }
                    respond(200, M3U_TYPE, body)
                }
            }),
        )
        .start();
    let mut app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\ntimeout = \"2m\"\n",
        list.url("/list.m3u")
    ))
    .await;
    assert_eq!(app.channel_names().await, ["Live"]);
    let lists = app.state_dir().join("lists");
    eventually_true("the list kept in state_dir/lists", || {
        let lists = lists.clone();
        async move { std::fs::read_dir(&lists).is_ok_and(|mut d| d.next().is_some()) }
    })
    .await;

    hang.store(true, Ordering::SeqCst);
    app.restart().await;
    // Well under the service's 2 minutes (its kept channels stand in after 5 s).
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let resp = client
        .get(app.url("/playlist.m3u"))
        .send()
        .await
        .expect("the first lineup waited for the hanging service");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains(",Live\n"), "{text}");
}

/// Accounts made through the API while the config is reloaded again and again are all
/// there afterwards: each one answered 200 is listed, shown and logs in (before, one
/// written on the state a reload was replacing was in the store but missing from the
/// running accounts until the next reload, and its name could be created over).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accounts_made_during_reloads_are_all_there() {
    let origin = live_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let fs = Freesky::start(
        dir.path(),
        &config_text(dir.path(), "", &[("Origin", origin.url("/list.m3u"), "x")]),
    );
    channel_id(&fs, "Live").await;
    let base = fs.base.clone();
    let creating = (0..8).map(|worker| {
        let base = base.clone();
        tokio::spawn(async move {
            let mut made = Vec::new();
            for i in 0..12 {
                let name = format!("u{worker}x{i}");
                let resp = client()
                    .post(format!("{base}/api/users"))
                    .json(&serde_json::json!({"name": name, "password": format!("{name}-pw")}))
                    .send()
                    .await
                    .expect("POST /api/users");
                if resp.status() == 200 {
                    made.push(name);
                }
            }
            made
        })
    });
    let creating: Vec<_> = creating.collect();
    // Reloads back to back for as long as accounts are being made.
    let mut made = Vec::new();
    let mut reloads = 0;
    for task in creating {
        tokio::pin!(task);
        loop {
            tokio::select! {
                done = &mut task => {
                    made.extend(done.unwrap());
                    break;
                }
                (status, _) = reload(&fs, None) => {
                    assert_eq!(status, 200);
                    reloads += 1;
                }
            }
        }
    }
    assert!(reloads >= 10, "{reloads} reloads");
    assert_eq!(made.len(), 96, "every create answered 200: {made:?}");
    for name in &made {
        let (status, body) = get_json(format!("{base}/api/users/{name}")).await;
        assert_eq!(status, 200, "{name}: {body}");
        let (_, info) = get_json(format!(
            "{base}/player_api.php?username={name}&password={name}-pw"
        ))
        .await;
        assert_eq!(info["user_info"]["auth"], 1, "{name}: {info}");
        let again = client()
            .post(format!("{base}/api/users"))
            .json(&serde_json::json!({"name": name, "password": "other-pw"}))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 400, "{name} made twice");
    }
}

/// A reload while the state store cannot be read keeps the admin's guide match
/// decisions the running guide has (it does not match as if none were made).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_while_the_store_is_unreadable_keeps_the_guide_decisions() {
    let origin = live_origin().await;
    let guide = FakeUpstream::bind()
        .await
        .text(
            "/guide.xml",
            "application/xml",
            // Another id than the list's: matched by display name, so a decision
            // applies.
            crate::common::xmltv_guide(&[("LiveTV.example", "Live")]),
        )
        .start();
    let dir = tempfile::tempdir().unwrap();
    let text = with_guide(
        dir.path(),
        origin.url("/list.m3u"),
        "x",
        &guide.url("/guide.xml"),
    );
    let fs = Freesky::start(dir.path(), &text);
    let live = channel_id(&fs, "Live").await;
    let state_of = || async {
        let (status, page) = get_json(format!("{}/api/guide/matches", fs.base)).await;
        assert_eq!(status, 200, "{page}");
        page["items"][0]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(state_of().await, "exact");
    let resp = client()
        .post(format!("{}/api/guide/matches/{live}", fs.base))
        .json(&serde_json::json!({"action": "reject"}))
        .send()
        .await
        .expect("POST decision");
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(state_of().await, "rejected");

    // The decisions' table is away (a database being repaired, moved...).
    let db = rusqlite::Connection::open(dir.path().join("state").join("freesky.db")).unwrap();
    db.execute_batch("ALTER TABLE record RENAME TO record_away")
        .unwrap();
    let (status, body) = reload(&fs, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        state_of().await,
        "rejected",
        "the decision went with the reload"
    );
    db.execute_batch("ALTER TABLE record_away RENAME TO record")
        .unwrap();
}

/// A config reload keeps the movie details it had read (`vod_info_ttl`): players show
/// them without asking the panel again, also while the panel is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_movie_details_already_read() {
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let is_down = down.clone();
    let panel = FakeUpstream::bind()
        .await
        .route(
            "/player_api.php",
            get(
                move |axum::extract::Query(q): axum::extract::Query<
                    std::collections::HashMap<String, String>,
                >| {
                    let down = is_down.load(Ordering::SeqCst);
                    async move {
                        if down {
                            return respond(503, "text/plain", "down");
                        }
                        let body = match q.get("action").map(String::as_str) {
                            Some("get_vod_streams") => serde_json::json!([{"num": 1,
                                "name": "Amélie", "stream_id": 7, "category_id": "1",
                                "container_extension": "mp4"}]),
                            Some("get_vod_info") => serde_json::json!({
                                "info": {"plot": "A waitress in Paris.", "duration_secs": 7320},
                                "movie_data": {"stream_id": 7, "name": "Amélie",
                                    "container_extension": "mp4"}}),
                            Some(_) => serde_json::json!([]),
                            None => serde_json::json!({"user_info": {"auth": 1,
                                "status": "Active"}, "server_info": {}}),
                        };
                        respond(200, "application/json", body.to_string())
                    }
                },
            ),
        )
        .start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n\n\
         [[services]]\nname = \"Panel\"\nkind = \"xtream\"\nbase_url = \"{}\"\n\
         username = \"u\"\npassword = \"p\"\n\n\
         [[users]]\nname = \"mum\"\npassword = \"mum-pw\"\n",
        dir.path().join("state").display(),
        panel.base()
    );
    let fs = Freesky::start(dir.path(), &config);
    let api = |action: &str| {
        get_json(format!(
            "{}/player_api.php?username=mum&password=mum-pw&action={action}",
            fs.base
        ))
    };
    let (status, movies) = api("get_vod_streams").await;
    assert_eq!(status, 200, "{movies}");
    let id = movies[0]["stream_id"].as_u64().expect("a movie listed");
    let info = |id: u64| api(&format!("get_vod_info&vod_id={id}"));
    let (_, before) = info(id).await;
    assert_eq!(before["info"]["plot"], "A waitress in Paris.", "{before}");
    let asked = panel
        .requests()
        .iter()
        .filter(|r| {
            r.query
                .as_deref()
                .is_some_and(|q| q.contains("get_vod_info"))
        })
        .count();
    assert_eq!(asked, 1);

    down.store(true, Ordering::SeqCst);
    let (status, body) = reload(&fs, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, after) = info(id).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["info"], before["info"], "details lost at the reload");
}
