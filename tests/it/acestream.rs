//! `kind = "acestream"` against a fake AceStream engine: channels from the config and
//! from an M3U of `acestream://` ids, the engine's JSON API, MPEG-TS through the shared
//! `.ts` session, exactly one `method=stop` once nobody watches (after the last `.ts`
//! viewer, and by lease for HLS viewers), engine errors, and content id validation.

use std::time::Duration;

use axum::extract::{Path, Query};
use axum::routing::get;
use futures::StreamExt;

use crate::common::{
    assert_api_error, respond, FakeUpstream, TestApp, HANG_GUARD, HLS_TYPE, M3U_TYPE,
};

const SPORT: &str = "0123456789abcdef0123456789abcdef01234567";
const NEWS: &str = "89abcdef0123456789abcdef0123456789abcdef";
const MOVIES: &str = "fedcba9876543210fedcba9876543210fedcba98";
/// The engine refuses this one.
const DEAD: &str = "dead00000000000000000000000000000000beef";
const DEAD_ERROR: &str = "failed to load content: no peers";

/// MPEG-TS packets: sync byte 0x47, then `tag` as filler.
fn ts_packets(count: usize, tag: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(188 * count);
    for _ in 0..count {
        out.push(0x47);
        out.extend(std::iter::repeat_n(tag, 187));
    }
    out
}

/// A fake AceStream engine: `format=json` session answers on `/ace/manifest.m3u8` and
/// `/ace/getstream`, a live HLS stream per content id under `/ace/m/{id}/`, an endless
/// MPEG-TS stream under `/ace/r/{id}`, and commands on `/ace/cmd/{id}`.
async fn engine() -> FakeUpstream {
    let builder = FakeUpstream::bind().await;
    let base = builder.base();
    let session = move |kind: &'static str| {
        let base = base.clone();
        get(
            move |Query(q): Query<std::collections::HashMap<String, String>>| {
                let base = base.clone();
                async move {
                    let id = q.get("id").cloned().unwrap_or_default();
                    let json = if id == DEAD {
                        serde_json::json!({"response": null, "error": DEAD_ERROR})
                    } else {
                        let playback = match kind {
                            "hls" => format!("{base}/ace/m/{id}/sess-{id}.m3u8"),
                            _ => format!("{base}/ace/r/{id}/sess-{id}"),
                        };
                        serde_json::json!({
                            "response": {
                                "playback_url": playback,
                                "stat_url": format!("{base}/ace/stat/{id}"),
                                "command_url": format!("{base}/ace/cmd/{id}"),
                                "playback_session_id": format!("sess-{id}"),
                                "is_live": 1,
                            },
                            "error": null,
                        })
                    };
                    respond(200, "application/json", json.to_string())
                }
            },
        )
    };
    builder
        .route("/ace/manifest.m3u8", session("hls"))
        .route("/ace/getstream", session("ts"))
        .route(
            "/ace/m/{id}/{file}",
            get(|Path((_id, file)): Path<(String, String)>| async move {
                if file.ends_with(".m3u8") {
                    // Live: a new one-second segment every second, so a viewer joining
                    // late still gets bytes.
                    let seq = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .expect("clock after 1970")
                        .as_secs();
                    let mut p = format!(
                        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{seq}\n"
                    );
                    for n in seq..seq + 3 {
                        p.push_str(&format!("#EXTINF:1.0,\nseg{n}.ts\n"));
                    }
                    return respond(200, HLS_TYPE, p);
                }
                match file
                    .strip_prefix("seg")
                    .and_then(|s| s.strip_suffix(".ts"))
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    Some(n) => respond(200, "video/mp2t", ts_packets(20, (n % 251) as u8)),
                    None => respond(404, "text/plain", "no such file"),
                }
            }),
        )
        .route(
            "/ace/r/{id}/{sess}",
            get(|| async {
                let chunks = futures::stream::unfold(0u8, |n| async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Some((Ok::<_, std::io::Error>(ts_packets(10, n)), n.wrapping_add(1)))
                });
                respond(200, "video/mp2t", axum::body::Body::from_stream(chunks))
            }),
        )
        .route("/ace/cmd/{id}", get(|| async { respond(200, "application/json", r#"{"response": "ok", "error": null}"#) }))
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n#EXTINF:-1 group-title=\"News\" tvg-id=\"News.example\",Ace News\nacestream://{NEWS}\n\
                 #EXTINF:-1 group-title=\"Movies\",Ace Movies\n{}\n\
                 #EXTINF:-1,Broken\nacestream://not-an-id\n",
                MOVIES.to_uppercase()
            ),
        )
        .start()
}

/// `method=stop` commands the engine received for `id`.
fn stops(engine: &FakeUpstream, id: &str) -> usize {
    engine
        .requests_to(&format!("/ace/cmd/{id}"))
        .iter()
        .filter(|r| r.query.as_deref() == Some("method=stop"))
        .count()
}

/// Waits (at most 10 s) until the engine has received `want` stops for `id`.
async fn wait_for_stops(engine: &FakeUpstream, id: &str, want: usize) {
    for _ in 0..100 {
        if stops(engine, id) >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stops(engine, id), want, "{:?}", engine.paths());
}

fn service(engine: &FakeUpstream, extra: &str) -> String {
    format!(
        "[[services]]\nname = \"Ace\"\nkind = \"acestream\"\nengine_url = \"{}\"\n\
         channels = [{{ name = \"Ace Sport\", id = \"acestream://{SPORT}\", group = \"Sport\", tvg_id = \"Sport.example\" }}]\n{extra}\n",
        engine.base()
    )
}

async fn read_at_least(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    want: usize,
) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        let chunk = tokio::time::timeout(HANG_GUARD, body.next())
            .await
            .expect("bytes in time")
            .unwrap_or_else(|| panic!("stream ended after {} bytes", got.len()))
            .expect("chunk");
        got.extend_from_slice(&chunk);
    }
    got
}

fn assert_mpegts(bytes: &[u8]) {
    assert!(bytes.len() >= 188 * 4, "{} bytes", bytes.len());
    for (i, packet) in bytes.chunks(188).take(bytes.len() / 188).enumerate() {
        assert_eq!(packet[0], 0x47, "packet {i} lacks the MPEG-TS sync byte");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_come_from_the_inline_list_and_the_m3u() {
    let engine = engine().await;
    let app = TestApp::spawn(&service(
        &engine,
        &format!("channels_url = \"{}\"", engine.url("/list.m3u")),
    ))
    .await;
    let mut names = app.channel_names().await;
    names.sort();
    assert_eq!(names, ["Ace Movies", "Ace News", "Ace Sport"]);
    let news = app.channel_named("Ace News").await;
    assert_eq!(news["group"], "News");
    assert_eq!(news["sources"][0]["channel_id"], NEWS, "{news}");
    let movies = app.channel_named("Ace Movies").await;
    assert_eq!(movies["sources"][0]["channel_id"], MOVIES, "{movies}");
    let sport = app.channel_named("Ace Sport").await;
    assert_eq!(sport["sources"][0]["channel_id"], SPORT, "{sport}");
    assert_eq!(app.service_status("Ace").await["channel_count"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_viewer_gets_mpegts_and_the_engine_is_stopped_once_after_the_last_viewer() {
    let engine = engine().await;
    // The lease is long: the stop must come from the end of the .ts session.
    let app = TestApp::spawn(&format!(
        "[streams]\nidle_stop = \"1s\"\n\n{}",
        service(&engine, "idle_stop = \"5m\"")
    ))
    .await;
    let id = app.channel_id("Ace Sport").await;

    let resp = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(resp.status(), 200);
    let mut a = resp.bytes_stream();
    let resp = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(resp.status(), 200);
    let mut b = resp.bytes_stream();
    assert_mpegts(&read_at_least(&mut a, 188 * 20).await);
    assert_mpegts(&read_at_least(&mut b, 188 * 20).await);

    // One engine session for both viewers, asked for in JSON with this instance's pid.
    let asked = engine.requests_to("/ace/manifest.m3u8");
    assert_eq!(asked.len(), 1, "{:?}", engine.paths());
    let query = asked[0].query.clone().unwrap_or_default();
    assert!(query.contains(&format!("id={SPORT}")), "{query}");
    assert!(query.contains("format=json"), "{query}");
    assert!(query.contains("pid=freesky-"), "{query}");
    assert_eq!(stops(&engine, SPORT), 0);
    // The command URL stays inside freesky.
    let status = app.get_text_ok("/api/services/status").await;
    let channels = app.get_text_ok("/api/channels/all").await;
    assert!(!status.contains("/ace/cmd") && !channels.contains("/ace/cmd"));

    drop(a);
    assert_eq!(stops(&engine, SPORT), 0, "one viewer still watches");
    drop(b);
    wait_for_stops(&engine, SPORT, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stops(&engine, SPORT), 1, "exactly one stop");

    // Tuning in again starts a fresh engine session (the stopped one is not reused).
    let resp = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(resp.status(), 200);
    let mut c = resp.bytes_stream();
    assert_mpegts(&read_at_least(&mut c, 188 * 20).await);
    assert_eq!(engine.hits("/ace/manifest.m3u8"), 2);
    drop(c);
    wait_for_stops(&engine, SPORT, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_mode_relays_the_engine_stream_and_stops_it() {
    let engine = engine().await;
    let app = TestApp::spawn(&format!(
        "[streams]\nidle_stop = \"1s\"\n\n{}",
        service(&engine, "mode = \"ts\"\nidle_stop = \"5m\"")
    ))
    .await;
    let resp = app.get(&format!("/api/stream/Ace:{SPORT}.ts")).await;
    assert_eq!(resp.status(), 200);
    let mut a = resp.bytes_stream();
    assert_mpegts(&read_at_least(&mut a, 188 * 30).await);
    assert_eq!(engine.hits("/ace/getstream"), 1, "{:?}", engine.paths());
    assert_eq!(engine.hits("/ace/manifest.m3u8"), 0);
    drop(a);
    wait_for_stops(&engine, SPORT, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_viewers_hold_a_lease_that_stops_the_engine_when_they_go() {
    let engine = engine().await;
    let app = TestApp::spawn(&service(&engine, "idle_stop = \"2s\"")).await;
    // A player reloads the live playlist and fetches segments, for longer than the lease.
    for _ in 0..8 {
        let resp = app.get(&format!("/api/stream/Ace:{SPORT}.m3u8")).await;
        assert_eq!(resp.status(), 200);
        let playlist = resp.text().await.unwrap();
        let segment = crate::common::playlist_uris(&playlist)
            .into_iter()
            .next()
            .expect("a segment link");
        let resp = app.client.get(&segment).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_mpegts(&resp.bytes().await.unwrap());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(stops(&engine, SPORT), 0, "stopped while watched");
    // Then it goes quiet.
    wait_for_stops(&engine, SPORT, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stops(&engine, SPORT), 1, "exactly one stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_error_is_named_and_other_services_keep_serving() {
    let engine = engine().await;
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Demo\"\nkind = \"demo\"\n\n[[services]]\nname = \"Ace\"\nkind = \"acestream\"\nengine_url = \"{}\"\n\
         channels = [{{ name = \"Ace Dead\", id = \"{DEAD}\" }}]\n",
        engine.base()
    ))
    .await;
    let body = assert_api_error(app.get(&format!("/api/stream/Ace:{DEAD}.m3u8")).await, 502).await;
    let text = body.to_string();
    assert!(text.contains(DEAD_ERROR), "{text}");
    assert!(text.contains("AceStream engine"), "{text}");
    assert!(text.contains("Ace"), "{text}");
    let resp = app.get("/api/stream/demo.m3u8").await;
    assert_eq!(resp.status(), 200);
    let resp = app.get("/playlist.m3u").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("Ace Dead"));
}

#[test]
fn invalid_content_ids_are_config_errors_with_file_line_and_field() {
    let text = format!(
        "[[services]]\nname = \"Ace\"\nkind = \"acestream\"\nchannels = [\n  {{ name = \"Good\", id = \"{SPORT}\" }},\n  {{ name = \"Short\", id = \"acestream://0123abc\" }},\n  {{ name = \"Twice\", id = \"{SPORT}\" }},\n]\nmode = \"hls\"\n\n\
         [[services]]\nname = \"Empty\"\nkind = \"acestream\"\nengine_url = \"ftp://engine\"\n"
    );
    let err = freesky::config::Config::parse(&text, "ace.toml", &|_| None)
        .expect_err("bad ids must not load")
        .to_string();
    let lines: Vec<&str> = err.lines().collect();
    let has = |prefix: &str, words: &[&str]| {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(prefix) && words.iter().all(|w| l.contains(w))),
            "no `{prefix}` {words:?} in:\n{err}"
        )
    };
    has(
        "ace.toml:6: services[0].channels[1].id:",
        &["acestream://0123abc", "40 hex"],
    );
    has("ace.toml:7: services[0].channels[2].id:", &["twice"]);
    has("ace.toml:", &["services[1].engine_url", "http(s)"]);
    has("ace.toml:", &["services[1].channels", "channels_url"]);

    let bad_mode = "[[services]]\nname = \"Ace\"\nkind = \"acestream\"\nmode = \"dash\"\nchannels_url = \"list.m3u\"\n";
    let err = freesky::config::Config::parse(bad_mode, "ace.toml", &|_| None)
        .expect_err("bad mode")
        .to_string();
    assert!(err.contains("ace.toml:4:") && err.contains("dash"), "{err}");
}
