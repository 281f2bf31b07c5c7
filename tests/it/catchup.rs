//! Catch-up end to end, against real local upstreams: an M3U list whose entries carry
//! `catchup`/`catchup-days`/`catchup-source`, and an Xtream panel whose streams carry
//! `tv_archive`/`tv_archive_duration` (as strings, as many panels send them). The facts
//! agree across `/api/channels`, `/playlist.m3u` and `/epg.xml`; a timeshift request
//! reaches the archive with the right time and headers, falls back to another source
//! with an archive, and ffmpeg plays it through freesky.

use std::collections::HashMap;
use std::path::Path as FsPath;
use std::process::Stdio;
use std::time::Duration;

use axum::extract::Query;
use axum::routing::get;
use serde_json::{json, Value};

use crate::common::{assert_api_error, respond, tv_validate, FakeUpstream, TestApp, M3U_TYPE};

const USER: &str = "alice";
const PASS: &str = "s3cret-pw";
const REFERER: &str = "http://player.example/embed";

/// Real MPEG-TS: the demo's first segment (2 s of video).
fn demo_ts() -> Vec<u8> {
    let assets = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    std::fs::read(assets.join("seg0.ts")).expect("demo asset")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A fake Xtream panel (its clock `PANEL_AHEAD` of UTC): News One (stream 10) has 3
/// days of archive, Sport One (20) none. `/timeshift/...` answers the demo's MPEG-TS. Its guide has, for both, a
/// programme two days ago and one now.
async fn panel() -> FakeUpstream {
    let api = |Query(q): Query<HashMap<String, String>>| async move {
        let authed = q.get("username").map(String::as_str) == Some(USER)
            && q.get("password").map(String::as_str) == Some(PASS);
        let body = if !authed {
            json!({"user_info": {"auth": 0}})
        } else {
            match q.get("action").map(String::as_str) {
                None => json!({
                    "user_info": {"username": USER, "password": PASS, "auth": 1,
                        "status": "Active", "exp_date": null, "max_connections": "2"},
                    "server_info": {"url": "provider.example", "port": "8080",
                        "timestamp_now": now(), "time_now": panel_time(now())}
                }),
                Some("get_live_categories") => json!([
                    {"category_id": "1", "category_name": "News", "parent_id": 0}
                ]),
                Some("get_live_streams") => json!([
                    {"num": 1, "name": "News One", "stream_id": 10, "category_id": "1",
                     "epg_channel_id": "NewsOne.example",
                     "tv_archive": "1", "tv_archive_duration": "3"},
                    {"num": 2, "name": "Sport One", "stream_id": 20, "category_id": "1",
                     "epg_channel_id": "SportOne.example",
                     "tv_archive": 0, "tv_archive_duration": 0}
                ]),
                Some(_) => json!([]),
            }
        };
        respond(200, "application/json", body.to_string())
    };
    let ts = demo_ts();
    FakeUpstream::bind()
        .await
        .route("/player_api.php", get(api))
        .route(
            "/timeshift/{user}/{pass}/{minutes}/{start}/{file}",
            get(move || {
                let ts = ts.clone();
                async move { respond(200, "video/mp2t", ts) }
            }),
        )
        .text("/xmltv.php", "application/xml", panel_guide())
        .start()
}

/// The panel's clock is an hour ahead of UTC: it writes and reads times as
/// `YYYY-MM-DD HH:MM` in its own zone.
const PANEL_AHEAD: i64 = 3600;

/// Unix time `t` as the panel's local time, in `format` (default: `time_now`'s).
fn panel_time_as(t: i64, format: &str) -> String {
    chrono::DateTime::from_timestamp(t + PANEL_AHEAD, 0)
        .unwrap()
        .format(format)
        .to_string()
}

fn panel_time(t: i64) -> String {
    panel_time_as(t, "%Y-%m-%d %H:%M:%S")
}

/// Two days ago and now, for each of the panel's channels.
fn panel_guide() -> String {
    let t = freesky::xmltv::format_time;
    let now = now();
    let mut xml = String::from("<?xml version=\"1.0\"?>\n<tv>\n");
    for id in ["NewsOne.example", "SportOne.example"] {
        xml.push_str(&format!(
            "<channel id=\"{id}\"><display-name>{id}</display-name></channel>\n"
        ));
    }
    for id in ["NewsOne.example", "SportOne.example"] {
        xml.push_str(&format!(
            "<programme start=\"{}\" stop=\"{}\" channel=\"{id}\"><title>Old {id}</title></programme>\n\
             <programme start=\"{}\" stop=\"{}\" channel=\"{id}\"><title>Now {id}</title></programme>\n",
            t(now - 2 * 86_400),
            t(now - 2 * 86_400 + 3600),
            t(now - 600),
            t(now + 600),
        ));
    }
    xml.push_str("</tv>\n");
    xml
}

/// An M3U list: News One with 7 days of archive at `/arch/news-{utc}-{duration}.ts`
/// (needing a Referer, from `#EXTVLCOPT`), Movies without catch-up. The archive answers
/// the demo's MPEG-TS, or 500 when `archive_ok` is false.
async fn m3u(archive_ok: bool) -> FakeUpstream {
    let up = FakeUpstream::bind().await;
    let list = format!(
        "#EXTM3U\n\
         #EXTINF:-1 tvg-id=\"NewsOne.example\" catchup=\"default\" catchup-days=\"7\" catchup-source=\"{base}/arch/news-{{utc}}-{{duration}}.ts?from=${{start}}\",News One\n\
         #EXTVLCOPT:http-referrer={REFERER}\n\
         {base}/live/news.m3u8\n\
         #EXTINF:-1 tvg-id=\"Movies.example\" catchup-days=\"bad\",Movies\n\
         {base}/live/movies.m3u8\n\
         #EXTINF:-1 tvg-id=\"Doc.example\" catchup=\"append\" catchup-days=\"2\" catchup-source=\"&utc={{utc}}&lutc={{lutc}}\",Doc One\n\
         {base}/live/doc.m3u8?token=abc\n",
        base = up.base()
    );
    let ts = demo_ts();
    let segment = ts.clone();
    // Doc One's archive is HLS: its live URL with the window appended.
    let doc = |Query(q): Query<HashMap<String, String>>| async move {
        match (q.get("token"), q.get("utc"), q.get("lutc")) {
            (Some(_), Some(_), Some(_)) => respond(
                200,
                crate::common::HLS_TYPE,
                crate::common::media_playlist(&["/arch-seg/0.ts"]),
            ),
            _ => respond(404, "text/plain", "no such window"),
        }
    };
    up.text("/list.m3u", M3U_TYPE, list)
        .route("/live/doc.m3u8", get(doc))
        .route(
            "/arch-seg/0.ts",
            get(move || {
                let ts = segment.clone();
                async move { respond(200, "video/mp2t", ts) }
            }),
        )
        .route(
            "/arch/{file}",
            get(move || {
                let ts = ts.clone();
                async move {
                    if archive_ok {
                        respond(200, "video/mp2t", ts)
                    } else {
                        respond(500, "text/plain", "archive down")
                    }
                }
            }),
        )
        .start()
}

/// The M3U list first (priority 1), the panel second.
fn config(list: &FakeUpstream, panel: &FakeUpstream) -> String {
    format!(
        "[[services]]\nname = \"List\"\nkind = \"m3u\"\npriority = 1\nurl = \"{}\"\n\n\
         [[services]]\nname = \"Xt\"\nkind = \"xtream\"\npriority = 2\nbase_url = \"{}\"\nusername = \"{USER}\"\npassword = \"{PASS}\"\n",
        list.url("/list.m3u"),
        panel.base()
    )
}

/// The list (its archive working or not), the panel, and freesky over both.
async fn setup(archive_ok: bool) -> (FakeUpstream, FakeUpstream, TestApp) {
    let (list, panel) = (m3u(archive_ok).await, panel().await);
    let app = TestApp::spawn(&config(&list, &panel)).await;
    (list, panel, app)
}

/// The lineup id of the channel named `name`.
async fn id_of(app: &TestApp, name: &str) -> String {
    app.channel_named(name).await["id"]
        .as_str()
        .expect("a channel has an id")
        .to_string()
}

/// `catchup`, `catchup-days` and `catchup-source` of one playlist entry.
type CatchupAttrs = (Option<String>, Option<String>, Option<String>);

/// The `catchup*` attributes of each playlist entry, by name.
fn playlist_catchup(text: &str) -> HashMap<String, CatchupAttrs> {
    let list = freesky::m3u::parse(text);
    list.entries
        .iter()
        .map(|e| {
            let a = |k: &str| e.attr(k).map(str::to_string);
            (
                e.name.clone(),
                (a("catchup"), a("catchup-days"), a("catchup-source")),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_same_catchup_facts_in_channels_playlist_and_guide() {
    let (_list, _panel, app) = setup(true).await;

    // The API: the longest archive of the sources (7 from the list, 3 from the panel).
    let days: HashMap<String, Value> = app
        .channels()
        .await
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["catchup_days"].clone(),
            )
        })
        .collect();
    assert_eq!(days["News One"], 7, "{days:?}");
    assert_eq!(days["Sport One"], 0, "{days:?}");
    assert_eq!(days["Movies"], 0, "{days:?}");
    let news = app.channel_named("News One").await;
    let id = news["id"].as_str().unwrap();
    let (_, detail) = app.get_json(&format!("/api/channels/{id}")).await;
    assert_eq!(detail["catchup_days"], 7, "{detail:#}");
    let (_, found) = app.get_json("/api/channels/search?query=news").await;
    assert_eq!(found[0]["catchup_days"], 7, "{found:#}");

    // The playlist: the same days, and a template pointing at freesky's own route.
    let text = app.get_text_ok("/playlist.m3u").await;
    let attrs = playlist_catchup(&text);
    let template = format!(
        "{}/api/timeshift/{id}.ts?start={{utc}}&end={{utcend}}",
        app.base
    );
    assert_eq!(
        attrs["News One"],
        (Some("default".into()), Some("7".into()), Some(template)),
        "{text}"
    );
    assert_eq!(attrs["Sport One"], (None, None, None), "{text}");
    assert_eq!(attrs["Movies"], (None, None, None), "{text}");
    // Nothing of the upstreams' archives or credentials shows.
    assert!(!text.contains("/arch/") && !text.contains(PASS), "{text}");

    // The guide keeps the programme of two days ago only on the catch-up channel.
    let resp = app.get("/epg.xml").await;
    assert_eq!(resp.status(), 200);
    let xml = resp.text().await.unwrap();
    assert!(xml.contains("Old NewsOne.example"), "{xml}");
    assert!(xml.contains("Now NewsOne.example"), "{xml}");
    assert!(!xml.contains("Old SportOne.example"), "{xml}");
    assert!(xml.contains("Now SportOne.example"), "{xml}");
    tv_validate(xml.as_bytes());

    // The bad `catchup-days` of Movies was skipped (it has no `catchup` either),
    // never failing the list.
    assert_eq!(app.service_status("List").await["channel_count"], 3);
    assert_eq!(days["Doc One"], 2, "{days:?}");
}

#[tokio::test]
async fn a_timeshift_reaches_the_archive_with_its_time_and_headers() {
    let (list, panel, app) = setup(true).await;
    let id = id_of(&app, "News One").await;
    let start = now() - 2 * 3600;

    // The list's archive first (its priority), its template filled in, its Referer sent.
    let resp = app
        .get(&format!("/api/timeshift/{id}.ts?start={start}&duration=30"))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "video/mp2t");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), demo_ts());
    let asked = list.requests_to(&format!("/arch/news-{start}-1800.ts"));
    assert_eq!(asked.len(), 1, "{:?}", list.paths());
    assert_eq!(
        asked[0].query.as_deref(),
        Some(format!("from={start}").as_str())
    );
    assert_eq!(asked[0].header("referer"), Some(REFERER));

    // The player's `{utc}`/`{utcend}` form, pinned to the panel: its timeshift path,
    // with minutes and the start in the panel's `YYYY-MM-DD:HH-MM` form, in its zone.
    let end = start + 45 * 60;
    let resp = app
        .get(&format!(
            "/api/timeshift/{id}.ts?start={start}&end={end}&service=Xt"
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), demo_ts());
    let when = panel_time_as(start, "%Y-%m-%d:%H-%M");
    let path = format!("/timeshift/{USER}/{PASS}/45/{when}/10.ts");
    assert_eq!(panel.hits(&path), 1, "{:?}", panel.paths());

    // The Xtream start form (UTC on freesky's route), and `SERVICE:ID`.
    let utc = chrono::DateTime::from_timestamp(start, 0)
        .unwrap()
        .format("%Y-%m-%d:%H-%M");
    let resp = app
        .get(&format!("/api/timeshift/Xt:10.ts?start={utc}&duration=15"))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        panel.hits(&format!("/timeshift/{USER}/{PASS}/15/{when}/10.ts")),
        1
    );

    // Out of the window: older than the longest archive, or only the panel's 3 days.
    let old = now() - 8 * 86_400;
    let resp = app
        .get(&format!("/api/timeshift/{id}.ts?start={old}"))
        .await;
    let body = assert_api_error(resp, 404).await;
    assert!(body.to_string().contains("keeps 7 day(s)"), "{body}");
    let five = now() - 5 * 86_400;
    let resp = app
        .get(&format!("/api/timeshift/{id}.ts?start={five}&service=Xt"))
        .await;
    let body = assert_api_error(resp, 404).await;
    assert!(body.to_string().contains("reaching back"), "{body}");
    let resp = app
        .get(&format!("/api/timeshift/{id}.ts?start={five}&service=Nope"))
        .await;
    let body = assert_api_error(resp, 404).await;
    assert_eq!(body["error"], "unknown service `Nope`");
    // Bad requests.
    let future = now() + 3600;
    let resp = app
        .get(&format!("/api/timeshift/{id}.ts?start={future}"))
        .await;
    assert_api_error(resp, 400).await;
    let resp = app
        .get(&format!("/api/timeshift/{id}.ts?start=yesterday"))
        .await;
    assert_api_error(resp, 400).await;
    let resp = app
        .get(&format!("/api/timeshift/{id}.ts?start={start}&duration=0"))
        .await;
    assert_api_error(resp, 400).await;
    // An HLS archive (`catchup="append"` on the live URL): its playlist with sealed
    // links, whose segment plays through freesky.
    let doc = id_of(&app, "Doc One").await;
    let resp = app
        .get(&format!("/api/timeshift/{doc}.ts?start={start}&duration=5"))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], crate::common::HLS_TYPE);
    let playlist = resp.text().await.unwrap();
    let uris = crate::common::playlist_uris(&playlist);
    assert_eq!(uris.len(), 1, "{playlist}");
    assert!(
        uris[0].starts_with(&format!("{}/proxy/", app.base)),
        "{playlist}"
    );
    let asked = list.requests_to("/live/doc.m3u8");
    let query = asked[0].query.clone().unwrap_or_default();
    assert!(
        query.starts_with(&format!("token=abc&utc={start}&lutc=")),
        "{query}"
    );
    let seg = app.get(&uris[0]).await;
    assert_eq!(seg.status(), 200);
    assert_eq!(seg.bytes().await.unwrap().to_vec(), demo_ts());

    // A channel without catch-up, an unknown one.
    let sport = id_of(&app, "Sport One").await;
    let resp = app
        .get(&format!("/api/timeshift/{sport}.ts?start={start}"))
        .await;
    let body = assert_api_error(resp, 404).await;
    assert!(body.to_string().contains("has no catch-up"), "{body}");
    let resp = app
        .get(&format!("/api/timeshift/nope.ts?start={start}"))
        .await;
    assert_api_error(resp, 404).await;
}

#[tokio::test]
async fn a_failing_archive_falls_back_to_the_next_source_with_one() {
    let (list, panel, app) = setup(false).await;
    let id = id_of(&app, "News One").await;
    let start = now() - 3600;

    let resp = app
        .get(&format!("/api/timeshift/{id}.ts?start={start}&duration=10"))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), demo_ts());
    assert_eq!(list.hits(&format!("/arch/news-{start}-600.ts")), 1);
    let when = panel_time_as(start, "%Y-%m-%d:%H-%M");
    assert_eq!(
        panel.hits(&format!("/timeshift/{USER}/{PASS}/10/{when}/10.ts")),
        1,
        "{:?}",
        panel.paths()
    );

    // Four days back only the list's archive reaches: it fails, so every source with
    // one failed (502, each named), and the panel (3 days) was not asked.
    let before = panel.requests().len();
    let four = now() - 4 * 86_400;
    let resp = app
        .get(&format!("/api/timeshift/{id}.ts?start={four}"))
        .await;
    let body = assert_api_error(resp, 502).await;
    let text = body.to_string();
    assert!(text.contains("List") && text.contains("500"), "{text}");
    assert!(!text.contains(PASS), "{text}");
    assert_eq!(panel.requests().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_plays_a_timeshift_through_freesky() {
    let (list, _panel, app) = setup(true).await;
    let id = id_of(&app, "News One").await;
    let start = now() - 1800;
    let url = app.url(&format!("/api/timeshift/{id}.ts?start={start}&duration=5"));
    let child = tokio::process::Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-v", "error", "-i", &url])
        .args(["-map", "0:v:0", "-f", "null", "-", "-progress", "pipe:1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("this test needs ffmpeg on PATH");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("ffmpeg finishes")
        .expect("ffmpeg output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or(0);
    assert!(frames > 0, "no video decoded from the timeshift:\n{stdout}");
    // ffmpeg may ask again with byte ranges while probing; each reached the archive.
    assert!(list.hits(&format!("/arch/news-{start}-300.ts")) >= 1);
}

/// The Xtream output tells the same catch-up facts (`tv_archive`, `has_archive`,
/// `get.php`'s `catchup-source`) and plays both Xtream timeshift forms, counted and
/// limited to what the account sees.
#[tokio::test]
async fn xtream_clients_see_the_same_catchup_and_play_it() {
    let (list, _panel, app) = {
        let (list, panel) = (m3u(true).await, panel().await);
        let cfg = format!(
            "{}\n[[users]]\nname = \"viewer\"\npassword = \"pw-1\"\nmax_connections = 0\n\n\
             [[users]]\nname = \"movies\"\npassword = \"pw-2\"\ngroups = [\"Nothing\"]\n",
            config(&list, &panel)
        );
        let app = TestApp::spawn(&cfg).await;
        (list, panel, app)
    };
    let news = app.channel_named("News One").await;
    let number = news["number"].as_u64().expect("a number");
    let days = news["catchup_days"].as_u64().expect("catchup_days");
    assert_eq!(days, 7);

    let streams: Value = app
        .get("/player_api.php?username=viewer&password=pw-1&action=get_live_streams")
        .await
        .json()
        .await
        .unwrap();
    let by_name = |n: &str| {
        streams
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} in {streams}"))
    };
    assert_eq!(by_name("News One")["tv_archive"], 1);
    assert_eq!(by_name("News One")["tv_archive_duration"], days);
    assert_eq!(by_name("Movies")["tv_archive"], 0);

    let table: Value = app
        .get(&format!(
            "/player_api.php?username=viewer&password=pw-1&action=get_simple_data_table&stream_id={number}"
        ))
        .await
        .json()
        .await
        .unwrap();
    let listings = table["epg_listings"].as_array().expect("listings");
    let old = listings
        .iter()
        .find(|l| {
            l["stop_timestamp"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .unwrap()
                < now() - 86_400
        })
        .unwrap_or_else(|| panic!("the programme of two days ago is kept: {table}"));
    assert_eq!(old["has_archive"], 1, "{old}");

    let m3u = app
        .get("/get.php?username=viewer&password=pw-1&type=m3u_plus&output=ts")
        .await
        .text()
        .await
        .unwrap();
    let attrs = playlist_catchup(&m3u);
    let (kind, d, source) = &attrs["News One"];
    assert_eq!(kind.as_deref(), Some("default"));
    assert_eq!(d.as_deref(), Some("7"));
    let source = source.as_deref().expect("a catchup-source");
    assert!(source.contains("username=viewer"), "{source}");
    assert_eq!(attrs["Movies"].1, None, "no catch-up on Movies");

    // The path form and the query form reach the list's archive.
    let start = now() - 3 * 3600;
    let when = chrono::DateTime::from_timestamp(start - start % 60, 0)
        .unwrap()
        .format("%Y-%m-%d:%H-%M")
        .to_string();
    let resp = app
        .get(&format!("/timeshift/viewer/pw-1/30/{when}/{number}.ts"))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), demo_ts());
    let minute = start - start % 60;
    assert_eq!(
        list.hits(&format!("/arch/news-{minute}-1800.ts")),
        1,
        "{:?}",
        list.paths()
    );
    let resp = app
        .get(&format!(
            "/streaming/timeshift.php?username=viewer&password=pw-1&stream={number}&start={when}&duration=20"
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(list.hits(&format!("/arch/news-{minute}-1200.ts")), 1);

    // A wrong login, a channel the account does not see, a bad duration.
    assert_api_error(
        app.get(&format!("/timeshift/viewer/nope/30/{when}/{number}.ts"))
            .await,
        401,
    )
    .await;
    assert_api_error(
        app.get(&format!("/timeshift/movies/pw-2/30/{when}/{number}.ts"))
            .await,
        404,
    )
    .await;
    assert_api_error(
        app.get(&format!(
            "/streaming/timeshift.php?username=viewer&password=pw-1&stream={number}&start={when}&duration=0"
        ))
        .await,
        400,
    )
    .await;
}

/// Makes the account `user` (a `POST /api/users` body with `name` and `password`),
/// opens Doc One's HLS catch-up of 3 hours ago for it through the Xtream timeshift
/// path: that path, and the first `/proxy/` segment link of the playlist.
async fn hls_catch_up_for(app: &TestApp, user: &str) -> (String, String) {
    let resp = app
        .send_json(reqwest::Method::POST, "/api/users", user, None)
        .await;
    assert_eq!(resp.status(), 200);
    let login: Value = serde_json::from_str(user).unwrap();
    let (name, password) = (
        login["name"].as_str().unwrap(),
        login["password"].as_str().unwrap(),
    );
    let number = app.channel_named("Doc One").await["number"]
        .as_u64()
        .unwrap();
    let start = now() - 3 * 3600;
    let when = chrono::DateTime::from_timestamp(start - start % 60, 0)
        .unwrap()
        .format("%Y-%m-%d:%H-%M")
        .to_string();
    let path = format!("/timeshift/{name}/{password}/30/{when}/{number}.m3u8");
    let playlist = app.get_text_ok(&path).await;
    let segment = crate::common::playlist_uris(&playlist)
        .into_iter()
        .find(|u| u.contains("/proxy/"))
        .unwrap_or_else(|| panic!("a proxied segment in {playlist}"));
    (path, segment)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hls_catch_up_counts_while_its_segments_play_and_stops_with_its_account() {
    let (_list, _panel, app) = setup(true).await;
    let (path, segment) = hls_catch_up_for(
        &app,
        r#"{"name":"hls","password":"pw-3","max_connections":1}"#,
    )
    .await;
    assert!(
        segment.contains("?a=hls."),
        "the catch-up's links carry the account: {segment}"
    );
    // Counted after the playlist was sent (not only while its few bytes were).
    let (_, login) = app
        .get_json("/player_api.php?username=hls&password=pw-3")
        .await;
    assert_eq!(login["user_info"]["active_cons"], "1", "{login}");
    assert_eq!(app.get(&segment).await.status(), 200);
    // Another player is over the limit of 1.
    let other = crate::common::client_from(crate::common::OTHER_PLAYER)
        .get(app.url(&path))
        .send()
        .await
        .unwrap();
    assert_api_error(other, 403).await;
    // Disabled: the segments it still holds are refused.
    let resp = app
        .send_json(
            reqwest::Method::PATCH,
            "/api/users/hls",
            r#"{"enabled":false}"#,
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body = assert_api_error(app.get(&segment).await, 403).await;
    assert!(
        body["error"].as_str().unwrap().contains("disabled"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hls_catch_up_stops_once_its_account_no_longer_sees_the_channel() {
    let (_list, _panel, app) = setup(true).await;
    let (_, segment) = hls_catch_up_for(&app, r#"{"name":"narrow","password":"pw-4"}"#).await;
    assert_eq!(app.get(&segment).await.status(), 200);
    // Limited to the panel, which has no Doc One: the catch-up it still holds is
    // refused at its next segment, as a live channel's playlist would be.
    let resp = app
        .send_json(
            reqwest::Method::PATCH,
            "/api/users/narrow",
            r#"{"services":["Xt"]}"#,
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body = assert_api_error(app.get(&segment).await, 403).await;
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("`narrow` may no longer watch"),
        "{body}"
    );
}

/// An account limited to some services plays catch-up only from their archives, and
/// is told only the days those keep: News One keeps 7 days in the list, 3 in the panel.
#[tokio::test]
async fn an_account_limited_to_a_service_plays_catch_up_from_its_archive_only() {
    let (list, panel) = (m3u(true).await, panel().await);
    let cfg = format!(
        "{}\n[[users]]\nname = \"xt-only\"\npassword = \"pw-x\"\nservices = [\"Xt\"]\n\n\
         [[users]]\nname = \"list-only\"\npassword = \"pw-l\"\nservices = [\"List\"]\n",
        config(&list, &panel)
    );
    let app = TestApp::spawn(&cfg).await;
    let number = app.channel_named("News One").await["number"]
        .as_u64()
        .expect("a number");
    let days_for = |user: &'static str, pass: &'static str| {
        let app = &app;
        async move {
            let streams: Value = app
                .get(&format!(
                    "/player_api.php?username={user}&password={pass}&action=get_live_streams"
                ))
                .await
                .json()
                .await
                .unwrap();
            let news = streams
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == "News One")
                .cloned()
                .unwrap_or_else(|| panic!("News One in {streams}"));
            let m3u = app
                .get(&format!(
                    "/get.php?username={user}&password={pass}&type=m3u_plus"
                ))
                .await
                .text()
                .await
                .unwrap();
            let told = playlist_catchup(&m3u)["News One"].1.clone();
            (news["tv_archive_duration"].clone(), told)
        }
    };
    assert_eq!(
        days_for("xt-only", "pw-x").await,
        (json!(3), Some("3".into()))
    );
    assert_eq!(
        days_for("list-only", "pw-l").await,
        (json!(7), Some("7".into()))
    );
    // A playlist of one service says what that service keeps.
    for (query, days) in [("service=Xt", "3"), ("service=List", "7"), ("", "7")] {
        let m3u = app
            .get(&format!("/playlist.m3u?{query}"))
            .await
            .text()
            .await
            .unwrap();
        let told = playlist_catchup(&m3u)["News One"].1.clone();
        assert_eq!(told.as_deref(), Some(days), "{query}");
    }

    let when = |ago: i64| {
        let t = now() - ago;
        chrono::DateTime::from_timestamp(t - t % 60, 0)
            .unwrap()
            .format("%Y-%m-%d:%H-%M")
            .to_string()
    };
    let archived = |up: &FakeUpstream, prefix: &str| {
        up.paths().iter().filter(|p| p.starts_with(prefix)).count()
    };
    // Three hours ago: each account reaches its own service's archive, never the other.
    let resp = app
        .get(&format!(
            "/timeshift/xt-only/pw-x/30/{}/{number}.ts",
            when(3 * 3600)
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), demo_ts());
    assert_eq!(
        (archived(&panel, "/timeshift/"), archived(&list, "/arch/")),
        (1, 0)
    );
    let resp = app
        .get(&format!(
            "/streaming/timeshift.php?username=list-only&password=pw-l&stream={number}&start={}&duration=20",
            when(3 * 3600)
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        (archived(&panel, "/timeshift/"), archived(&list, "/arch/")),
        (1, 1)
    );
    // Five days ago: the list keeps it, the panel does not.
    assert_api_error(
        app.get(&format!(
            "/timeshift/xt-only/pw-x/30/{}/{number}.ts",
            when(5 * 86_400)
        ))
        .await,
        404,
    )
    .await;
    let resp = app
        .get(&format!(
            "/timeshift/list-only/pw-l/30/{}/{number}.ts",
            when(5 * 86_400)
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        (archived(&panel, "/timeshift/"), archived(&list, "/arch/")),
        (1, 2)
    );
}
