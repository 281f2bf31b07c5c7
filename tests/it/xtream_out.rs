//! The Xtream Codes output and viewer accounts, driven by real clients: the npm client
//! library `@iptv/xtream-api` (unmodified) logs in, browses and builds stream URLs;
//! ffmpeg decodes `/live/U/P/N.ts` and `.m3u8`; `tv_validate_file` checks `xmltv.php`;
//! the npm parser `iptv-playlist-parser` reads `get.php`. Accounts' visibility,
//! connection limits, wrong logins and bad input are checked on every route.
//!
//! node (with tests/clients' packages, installed by scripts/test.sh), ffmpeg and
//! tv_validate_file must be installed: without them these tests fail (they do not skip).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::{
    assert_api_error, client_from, json_of, xmltv_around, FakeUpstream, TestApp, HANG_GUARD,
    M3U_TYPE, OTHER_PLAYER,
};
use serde_json::Value;

/// Bound on one external client run; reaching it means a hang, not slowness.
const CLIENT_GUARD: Duration = Duration::from_secs(60);

const ALICE: (&str, &str) = ("alice", "alice-pw");
/// A password that needs escaping in URLs (not `&`: the client library puts
/// credentials into its query strings unescaped).
const BOB: (&str, &str) = ("bob", "b0b pw");

/// An m3u service with a News and a Sport channel (guide included) beside the demo.
async fn upstream() -> FakeUpstream {
    let fake = FakeUpstream::bind().await;
    let base = fake.base();
    let list = format!(
        "#EXTM3U\n\
         #EXTINF:-1 tvg-id=\"NewsOne.example\" group-title=\"News\",News One\n{base}/news.m3u8\n\
         #EXTINF:-1 tvg-id=\"SportOne.example\" group-title=\"Sport\",Sport One\n{base}/sport.m3u8\n\
         #EXTINF:-1 tvg-id=\"Gone.example\" group-title=\"Gone\",Gone TV\n{base}/gone.m3u8\n"
    );
    let mut guide = String::from("<?xml version=\"1.0\"?>\n<tv>\n");
    for (id, title) in [
        ("NewsOne.example", "Headlines"),
        ("SportOne.example", "Match"),
    ] {
        guide.push_str(&format!(
            "<channel id=\"{id}\"><display-name>{id}</display-name></channel>\n"
        ));
        for h in -1..3 {
            guide.push_str(&format!(
                "<programme start=\"{}\" stop=\"{}\" channel=\"{id}\"><title lang=\"en\">{title} {h}</title><desc>About {title} é {h}</desc></programme>\n",
                xmltv_around(h),
                xmltv_around(h + 1)
            ));
        }
    }
    guide.push_str("</tv>\n");
    fake.text("/list.m3u", M3U_TYPE, list)
        .text("/epg.xml", "application/xml", guide)
        .text(
            "/news.m3u8",
            crate::common::HLS_TYPE,
            crate::common::live_playlist(&["n0.ts"]),
        )
        .bytes("/n0.ts", "video/mp2t", [0x47; 188 * 20].to_vec())
        .text(
            "/sport.m3u8",
            crate::common::HLS_TYPE,
            crate::common::live_playlist(&["s0.ts"]),
        )
        .start()
}

fn config(upstream: &FakeUpstream, extra_server: &str) -> String {
    format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\n{extra_server}\n\n\
         [[services]]\nname = \"Demo\"\nkind = \"demo\"\npriority = 1\n\n\
         [[services]]\nname = \"IPTV\"\nkind = \"m3u\"\npriority = 2\nurl = \"{0}/list.m3u\"\nepg_url = \"{0}/epg.xml\"\n\n\
         [[users]]\nname = \"alice\"\npassword = \"alice-pw\"\nmax_connections = 1\nexpires = \"2999-12-31\"\n\n\
         [[users]]\nname = \"bob\"\npassword = \"b0b pw\"\ngroups = [\"News\"]\nmax_connections = 0\n",
        upstream.base()
    )
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A path segment for a credential (`/live/U/P/...`).
fn seg(s: &str) -> String {
    enc(s).replace('+', "%20")
}

async fn api(app: &TestApp, (u, p): (&str, &str), action: &str) -> Value {
    let (status, body) = app
        .get_json(&format!(
            "/player_api.php?username={}&password={}&action={action}",
            enc(u),
            enc(p)
        ))
        .await;
    assert_eq!(status, 200, "{action}: {body}");
    body
}

/// Field `key` of every object of the array `v`.
fn strings(v: &Value, key: &str) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|c| c[key].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The lineup number of the channel named `name`, from alice's get_live_streams.
async fn number_of(app: &TestApp, name: &str) -> u64 {
    let streams = api(app, ALICE, "get_live_streams").await;
    streams
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` in {streams}"))["stream_id"]
        .as_u64()
        .unwrap()
}

/// Runs `node tests/clients/SCRIPT args...` (stdin from `input`); its stdout as JSON.
pub(crate) async fn node(script: &str, args: &[&str], input: Option<&[u8]>) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    assert!(
        dir.join("node_modules/@iptv/xtream-api").is_dir()
            && dir.join("node_modules/iptv-playlist-parser").is_dir(),
        "tests/clients/node_modules is missing: run scripts/test.sh (it runs `npm ci` there)"
    );
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `node` ({e}): these tests need Node.js on PATH"));
    if let Some(bytes) = input {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(bytes).await.unwrap();
        drop(stdin);
    }
    let out = tokio::time::timeout(CLIENT_GUARD, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("node {script} did not finish within {CLIENT_GUARD:?}"))
        .unwrap();
    assert!(
        out.status.success(),
        "node {script} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "node {script} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xtream_client_library_logs_in_browses_and_builds_stream_urls() {
    let up = upstream().await;
    let app = TestApp::spawn(&config(&up, "")).await;
    let news = number_of(&app, "News One").await;

    // bob sees only News: the library lists what the account sees.
    let out = node(
        "xtream_client.mjs",
        &[&app.base, BOB.0, BOB.1, "m3u8"],
        None,
    )
    .await;
    let profile = &out["profile"];
    assert_eq!(profile["username"], "bob");
    assert_eq!(profile["status"], "Active");
    assert_eq!(profile["maxConnections"], 0);
    assert_eq!(
        profile["allowedOutputFormats"],
        serde_json::json!(["m3u8", "ts"])
    );
    assert_eq!(out["serverInfo"]["serverProtocol"], "http");
    let cats = out["categories"].as_array().unwrap();
    assert_eq!(cats.len(), 1, "{cats:?}");
    assert_eq!(cats[0]["name"], "News");
    let channels = out["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 1, "{channels:?}");
    assert_eq!(channels[0]["name"], "News One");
    assert_eq!(channels[0]["id"], news.to_string());
    assert_eq!(channels[0]["epgId"], "NewsOne.example");
    assert_eq!(channels[0]["tvArchive"], false);
    assert_eq!(out["byCategory"], out["channels"]);
    // The short EPG: base64 titles decoded by the library, from the one on now.
    let epg = out["shortEpg"].as_array().unwrap();
    assert_eq!(epg.len(), 2, "{epg:?}");
    assert_eq!(epg[0]["title"], "Headlines 0");
    assert_eq!(epg[1]["title"], "Headlines 1");
    let full = out["fullEpg"].as_array().unwrap();
    assert_eq!(full.len(), 4, "{full:?}");
    assert_eq!(full.iter().filter(|p| p["nowPlaying"] == true).count(), 1);
    assert_eq!(out["movieCategories"], serde_json::json!([]));
    assert_eq!(out["showCategories"], serde_json::json!([]));
    // The URLs it builds play.
    // (in the preferred format; the library writes the password into the path as is)
    let url = out["streamUrlM3u8"].as_str().unwrap();
    assert_eq!(url, format!("{}/live/bob/{}/{news}.m3u8", app.base, BOB.1));
    let resp = app.get(url).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("/proxy/"));

    // The raw answers carry the types real panels send (numbers as strings here,
    // numbers there) that players parse.
    let raw = &out["rawChannels"][0];
    assert!(raw["num"].is_u64() && raw["stream_id"].is_u64(), "{raw}");
    assert!(
        raw["category_id"].is_string() && raw["category_ids"][0].is_u64(),
        "{raw}"
    );
    assert_eq!(raw["stream_type"], "live");
    assert_eq!(raw["tv_archive"], 0);
    assert_eq!(raw["tv_archive_duration"], 0);
    assert_eq!(raw["direct_source"], "");
    let login = api(&app, ALICE, "").await;
    let u = &login["user_info"];
    assert_eq!(u["auth"], 1);
    assert_eq!(
        u["password"], ALICE.1,
        "a viewer's own answer echoes its login, as panels do"
    );
    assert!(
        u["exp_date"]
            .as_str()
            .is_some_and(|e| e.parse::<i64>().is_ok()),
        "{u}"
    );
    assert_eq!(u["max_connections"], "1");
    assert_eq!(u["is_trial"], "0");
    assert_eq!(u["active_cons"], "0", "a string, as panels send it");
    assert!(u["created_at"].is_string());
    let s = &login["server_info"];
    assert!(s["port"].is_string() && s["timestamp_now"].is_i64(), "{s}");
    let cats = api(&app, ALICE, "get_live_categories").await;
    let cats = cats.as_array().unwrap();
    assert_eq!(cats.len(), 4, "Demo, Gone, News, Sport: {cats:?}");
    assert!(cats
        .iter()
        .all(|c| c["category_id"].is_string() && c["parent_id"] == 0));
    let short = api(&app, ALICE, &format!("get_short_epg&stream_id={news}")).await;
    let first = &short["epg_listings"][0];
    for key in [
        "id",
        "epg_id",
        "start",
        "end",
        "start_timestamp",
        "stop_timestamp",
    ] {
        assert!(first[key].is_string(), "{key}: {first}");
    }
    use base64::Engine;
    let desc = base64::engine::general_purpose::STANDARD
        .decode(first["description"].as_str().unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(desc).unwrap(), "About Headlines é 0");
    assert_eq!(first["lang"], "en", "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_account_does_not_see_it_cannot_list_guide_or_stream() {
    let up = upstream().await;
    let app = TestApp::spawn(&config(&up, "")).await;
    let sport = number_of(&app, "Sport One").await;
    let demo = number_of(&app, "Demo").await;

    let streams = api(&app, BOB, "get_live_streams").await;
    assert_eq!(strings(&streams, "name"), ["News One"]);
    let epg = api(&app, BOB, &format!("get_short_epg&stream_id={sport}")).await;
    assert_eq!(epg, serde_json::json!({ "epg_listings": [] }));
    let creds = format!("username={}&password={}", enc(BOB.0), enc(BOB.1));
    let m3u = app
        .get_text_ok(&format!("/get.php?{creds}&type=m3u_plus&output=ts"))
        .await;
    assert!(
        m3u.contains("News One") && !m3u.contains("Sport One") && !m3u.contains("Demo"),
        "{m3u}"
    );
    let xml = app.get_text_ok(&format!("/xmltv.php?{creds}")).await;
    assert!(
        xml.contains("NewsOne.example") && !xml.contains("SportOne.example"),
        "{xml}"
    );
    // Refused as a number no channel has: the answer names no hidden channel.
    let timeshift = |number: u64| {
        [
            format!("/timeshift/bob/{}/60/2026-12-06:10-00/{number}.ts", seg(BOB.1)),
            format!(
                "/streaming/timeshift.php?{creds}&stream={number}&start=2026-12-06:10-00&duration=60"
            ),
        ]
    };
    let paths = [
        (format!("/live/bob/{}/{sport}.ts", seg(BOB.1)), sport),
        (format!("/live/bob/{}/{demo}.m3u8", seg(BOB.1)), demo),
        (format!("/bob/{}/{sport}", seg(BOB.1)), sport),
    ]
    .into_iter()
    .chain(timeshift(sport).map(|p| (p, sport)));
    for (path, number) in paths {
        let body = assert_api_error(app.get(&path).await, 404).await;
        assert_eq!(
            body["error"],
            format!("unknown channel `{number}`"),
            "{path}: {body}"
        );
    }
    for path in timeshift(9999) {
        let body = assert_api_error(app.get(&path).await, 404).await;
        assert_eq!(body["error"], "unknown channel `9999`", "{path}: {body}");
    }
    // Written with a leading zero, both are named as written.
    for number in [sport, 9999] {
        let path = format!("/live/bob/{}/0{number}.ts", seg(BOB.1));
        let body = assert_api_error(app.get(&path).await, 404).await;
        assert_eq!(
            body["error"],
            format!("unknown channel `0{number}`"),
            "{path}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_logins_unknown_actions_and_malformed_ids() {
    let up = upstream().await;
    let app = TestApp::spawn(&config(&up, "")).await;
    for (u, p) in [("alice", "bad-pw-1"), ("nobody", "alice-pw"), ("alice", "")] {
        let body = api(&app, (u, p), "get_live_streams").await;
        assert_eq!(
            body,
            serde_json::json!({ "user_info": { "auth": 0 } }),
            "{u}/{p}"
        );
    }
    let (status, body) = app.get_json("/player_api.php").await;
    assert_eq!(
        (status.as_u16(), body),
        (200, serde_json::json!({ "user_info": { "auth": 0 } }))
    );
    for path in [
        "/get.php?username=alice&password=bad-pw-1",
        "/xmltv.php?username=nobody&password=bad-pw-1",
        "/live/alice/bad-pw-1/1.ts",
        "/live/nobody/bad-pw-1/1.m3u8",
        "/alice/bad-pw-1/1",
    ] {
        let body = assert_api_error(app.get(path).await, 401).await;
        assert!(
            !body.to_string().contains("bad-pw-1"),
            "the password must not be echoed: {body}"
        );
    }
    assert_eq!(
        api(&app, ALICE, "no_such_action").await,
        serde_json::json!([])
    );
    for action in ["get_vod_streams", "get_series", "get_vod_categories"] {
        assert_eq!(
            api(&app, ALICE, action).await,
            serde_json::json!([]),
            "{action}"
        );
    }
    let vod = api(&app, ALICE, "get_vod_info&vod_id=5").await;
    assert_eq!(vod["info"], serde_json::json!([]));
    // Parameters as panels read them (PHP's intval): lenient, never an error shape.
    let epg = api(&app, ALICE, "get_short_epg&stream_id=abc").await;
    assert_eq!(epg, serde_json::json!({"epg_listings": []}));
    let epg = api(&app, ALICE, "get_short_epg").await;
    assert_eq!(epg, serde_json::json!({"epg_listings": []}));
    for action in ["get_live_streams", "get_vod_streams", "get_series"] {
        assert_eq!(
            api(&app, ALICE, &format!("{action}&category_id=x")).await,
            api(&app, ALICE, action).await,
            "{action}"
        );
    }
    let news = number_of(&app, "News One").await;
    for limit in ["0", "x"] {
        let epg = api(
            &app,
            ALICE,
            &format!("get_short_epg&stream_id={news}&limit={limit}"),
        )
        .await;
        let n = epg["epg_listings"].as_array().map_or(0, Vec::len);
        assert!(n >= 2, "limit={limit} reads as the default 4: {epg}");
    }
    for bad in [
        "/player_api.php?username=alice&password=alice-pw&action=get_vod_info&vod_id=-",
        "/live/alice/alice-pw/1x.ts",
        "/live/alice/alice-pw/1.mkv",
    ] {
        assert_api_error(app.get(bad).await, 400).await;
    }
    // The short form `/U/P/{stream_id}` takes numbers only: other three-part paths stay
    // unknown endpoints.
    assert_api_error(app.get("/alice/alice-pw/abc").await, 404).await;
    assert_api_error(app.get("/api/no/such").await, 404).await;
}

/// GET `path` from the local address `ip`.
async fn get_from(app: &TestApp, path: &str, ip: [u8; 4]) -> reqwest::Response {
    client_from(ip).get(app.url(path)).send().await.unwrap()
}

/// Waits (bounded) until `alice`'s `active_cons` is `n`.
async fn wait_active_cons(app: &TestApp, n: u64) {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let login = api(app, ALICE, "").await;
        if login["user_info"]["active_cons"].as_str() == Some(&n.to_string()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "active_cons never became {n}: {login}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_limit_counts_players_not_requests() {
    let up = upstream().await;
    let app = TestApp::spawn(&config(&up, "")).await;
    let demo = number_of(&app, "Demo").await;
    let news = number_of(&app, "News One").await;

    // A stream that does not open is no connection.
    let gone = number_of(&app, "Gone TV").await;
    let status = app
        .get(&format!("/live/alice/alice-pw/{gone}.m3u8"))
        .await
        .status();
    assert!(status.is_server_error(), "{status}");
    assert_eq!(api(&app, ALICE, "").await["user_info"]["active_cons"], "0");

    // An HLS player: its playlist and the playlists it links count once.
    let m3u8 = format!("/live/alice/alice-pw/{demo}.m3u8");
    let body = app.get_text_ok(&m3u8).await;
    wait_active_cons(&app, 1).await;
    let body2 = app.get_text_ok(&m3u8).await;
    assert_eq!(body, body2);
    for link in crate::common::playlist_uris(&body) {
        let resp = app.get(&link).await;
        assert_eq!(resp.status(), 200, "{link}");
        if link.contains(".m3u8") {
            assert!(
                link.contains("?a=alice."),
                "playlist links carry the account: {link}"
            );
            for seg_link in crate::common::playlist_uris(&resp.text().await.unwrap()) {
                assert!(
                    !seg_link.contains("?a="),
                    "segment links stay shared: {seg_link}"
                );
            }
        }
    }
    wait_active_cons(&app, 1).await;
    // One more player (another address) is over alice's limit of 1, on every stream route.
    for path in [
        format!("/live/alice/alice-pw/{news}.ts"),
        format!("/live/alice/alice-pw/{news}.m3u8"),
    ] {
        let body = assert_api_error(get_from(&app, &path, OTHER_PLAYER).await, 403).await;
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("allows 1 connection"),
            "{body}"
        );
    }
    // The admin API shows the connection and what it watches.
    let (_, users) = app.get_json("/api/users").await;
    let alice = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "alice")
        .unwrap();
    assert_eq!(alice["active_cons"], 1, "{alice}");
    assert_eq!(alice["connections"][0]["kind"], "hls");
    assert_eq!(alice["connections"][0]["channel"], "demo");
    assert!(!users.to_string().contains("alice-pw") && !users.to_string().contains("argon2"));
    // So does the dashboard's Accounts panel.
    let page = app.get_text_ok("/").await;
    let row = page
        .split("<tr data-account=\"alice\">")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_else(|| panic!("no account row for alice in the dashboard"));
    assert!(
        row.contains("1 / 1") && row.contains("demo (hls, 127.0.0.1)"),
        "{row}"
    );
    assert!(!page.contains("alice-pw"));

    // The same player switching channels takes its own connection over (zapping on a
    // one-connection account); a second request of the same channel from it (a
    // reconnect overlapping the old one) is the same player.
    let alice_conns = |users: &Value| {
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == "alice")
            .unwrap()
            .clone()
    };
    let mut zapped = app.get(&format!("/live/alice/alice-pw/{news}.ts")).await;
    assert_eq!(zapped.status(), 200);
    let first = zapped.chunk().await.unwrap();
    assert!(first.is_some_and(|c| !c.is_empty()));
    let (_, users) = app.get_json("/api/users").await;
    let a = alice_conns(&users);
    assert_eq!(a["active_cons"], 1, "{a}");
    assert_eq!(a["connections"].as_array().unwrap().len(), 1, "{a}");
    assert_eq!(
        a["connections"][0]["kind"], "ts",
        "the HLS player was taken over: {a}"
    );
    assert_eq!(a["connections"][0]["channel"], "news-one", "{a}");
    // The old channel's playlist link, polled again from that address, does not take the
    // connection back (two players behind one address would take turns): over the limit.
    let old_link = crate::common::playlist_uris(&body)
        .into_iter()
        .find(|l| l.contains("?a="))
        .expect("a tagged playlist link");
    let refused = assert_api_error(app.get(&old_link).await, 403).await;
    assert!(
        refused["error"].as_str().unwrap().contains("allows 1"),
        "{refused}"
    );
    // (Without an extension, or with `.TS`, it is the stream too, as panels take it.)
    let overlapping = app.get(&format!("/live/alice/alice-pw/{news}")).await;
    assert_eq!(overlapping.status(), 200);
    assert_eq!(overlapping.headers()["content-type"], "video/MP2T");
    let upper = app.get(&format!("/live/alice/alice-pw/{news}.TS")).await;
    assert_eq!(upper.status(), 200);
    // A `HEAD` of the short form announces a stream, not an empty file, as `/live/` does.
    for path in [
        format!("/alice/alice-pw/{news}"),
        format!("/live/alice/alice-pw/{news}.ts"),
    ] {
        let head = app.client.head(app.url(&path)).send().await.unwrap();
        assert_eq!(head.status(), 200, "{path}");
        assert_eq!(head.headers()["content-type"], "video/MP2T", "{path}");
        assert!(
            head.headers().get("content-length").is_none(),
            "{path}: {:?}",
            head.headers()
        );
    }
    let (_, users) = app.get_json("/api/users").await;
    assert_eq!(alice_conns(&users)["active_cons"], 1);
    drop(upper);
    // ...and another address is still one too many.
    let body = assert_api_error(
        get_from(
            &app,
            &format!("/live/alice/alice-pw/{demo}.ts"),
            OTHER_PLAYER,
        )
        .await,
        403,
    )
    .await;
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("allows 1 connection"));
    drop((zapped, overlapping));

    // bob (unlimited): a .ts stream counts while open, and no longer once closed.
    let ts = app
        .get(&format!("/live/bob/{}/{news}.ts", seg(BOB.1)))
        .await;
    assert_eq!(ts.status(), 200);
    let bob_cons = |users: &Value| {
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == "bob")
            .unwrap()["active_cons"]
            .clone()
    };
    let (_, users) = app.get_json("/api/users").await;
    assert_eq!(bob_cons(&users), 1);
    drop(ts);
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let (_, users) = app.get_json("/api/users").await;
        if bob_cons(&users) == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed .ts still counts: {users}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Decodes up to 3 s of `url` with ffmpeg; the video frames decoded.
async fn ffmpeg_frames(url: &str) -> u64 {
    let child = tokio::process::Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-v", "error", "-i", url])
        .args([
            "-t",
            "3",
            "-map",
            "0:v:0",
            "-f",
            "null",
            "-",
            "-progress",
            "pipe:1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `ffmpeg` ({e}): this test needs ffmpeg on PATH"));
    let out = tokio::time::timeout(CLIENT_GUARD, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("ffmpeg did not finish on {url}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ffmpeg failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .filter_map(|n| n.trim().parse().ok())
        .next_back()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_plays_live_urls_tv_validate_file_accepts_xmltv_php_and_get_php_parses() {
    let up = upstream().await;
    let app = TestApp::spawn(&config(&up, "")).await;
    let demo = number_of(&app, "Demo").await;
    for ext in ["ts", "m3u8"] {
        let url = app.url(&format!("/live/alice/alice-pw/{demo}.{ext}"));
        let frames = ffmpeg_frames(&url).await;
        assert!(frames > 0, "no frames decoded from {url}");
        if ext == "ts" {
            // The closed .ts frees alice's one connection for the HLS try (an HLS
            // player counts until it has not polled for a while).
            wait_active_cons(&app, 0).await;
        }
    }

    let xml = app.get("/xmltv.php?username=alice&password=alice-pw").await;
    assert_eq!(xml.status(), 200);
    crate::common::tv_validate(&xml.bytes().await.unwrap());
    let bob_xml = app
        .get_text_ok(&format!("/xmltv.php?username=bob&password={}", enc(BOB.1)))
        .await;
    crate::common::tv_validate(bob_xml.as_bytes());

    for output in ["ts", "m3u8"] {
        let text = app
            .get_text_ok(&format!(
                "/get.php?username=bob&password={}&type=m3u_plus&output={output}",
                enc(BOB.1)
            ))
            .await;
        let parsed = node("m3u_parse.mjs", &[], Some(text.as_bytes())).await;
        let tvg = parsed["header"]["attrs"]["url-tvg"].as_str().unwrap();
        assert_eq!(
            tvg,
            format!(
                "{}/xmltv.php?username=bob&password={}",
                app.base,
                seg(BOB.1)
            )
        );
        let items = parsed["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{parsed}");
        assert_eq!(items[0]["name"], "News One");
        assert_eq!(items[0]["tvg"]["id"], "NewsOne.example");
        assert_eq!(items[0]["group"]["title"], "News");
        let url = items[0]["url"].as_str().unwrap();
        assert!(url.ends_with(&format!(".{output}")), "{url}");
        assert!(url.starts_with(&format!("{}/live/bob/", app.base)), "{url}");
        // The guide URL the playlist names serves the same account's guide.
        assert!(app.get_text_ok(tvg).await.contains("NewsOne.example"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_account_guards_the_playlist_guide_streams_and_tuner() {
    let up = upstream().await;
    let cfg = config(&up, "require_account = true").replacen(
        "\n\n[[services]]",
        "\n\n[hdhomerun]\naccount = \"bob\"\n\n[[services]]",
        1,
    );
    let app = TestApp::spawn(&cfg).await;
    for path in [
        "/playlist.m3u",
        "/epg.xml",
        "/epg.xml.gz",
        "/api/stream/demo.m3u8",
        "/api/stream/demo.ts",
    ] {
        assert_api_error(app.get(path).await, 401).await;
    }
    let creds = format!("username=bob&password={}", enc(BOB.1));
    let m3u = app.get_text_ok(&format!("/playlist.m3u?{creds}")).await;
    assert!(
        m3u.contains("News One") && !m3u.contains("Sport One"),
        "{m3u}"
    );
    assert!(m3u.contains(&format!("/epg.xml?{creds}")), "{m3u}");
    let stream_url = m3u.lines().find(|l| l.contains("/api/stream/")).unwrap();
    assert!(stream_url.contains(&creds), "{stream_url}");
    assert_eq!(app.get(stream_url).await.status(), 200);
    let basic = app
        .client
        .get(app.url("/epg.xml"))
        .basic_auth("bob", Some(BOB.1))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);
    let xml = basic.text().await.unwrap();
    assert!(xml.contains("NewsOne.example") && !xml.contains("SportOne.example"));
    // Players given `http://user:password@host/...` send the login only once
    // challenged: the 401 says how (ffprobe then plays).
    let challenge = app.get("/api/stream/demo.m3u8").await;
    assert_eq!(
        challenge.headers()[reqwest::header::WWW_AUTHENTICATE],
        "Basic realm=\"freesky\", charset=\"UTF-8\""
    );
    let url = app
        .url("/api/stream/demo.m3u8")
        .replacen("http://", "http://alice:alice-pw@", 1);
    let probe = tokio::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type",
            "-of",
            "csv=p=0",
        ])
        .arg(&url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), probe)
        .await
        .expect("ffprobe hung")
        .expect("ffprobe runs");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("video"),
        "ffprobe with the login in the URL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_api_error(
        app.get(&format!("/api/stream/demo.m3u8?{creds}")).await,
        404,
    )
    .await;
    // The tuner serves bob's channels only.
    let (_, lineup) = app.get_json("/lineup.json").await;
    assert_eq!(strings(&lineup, "GuideName"), ["News One"]);

    // Without an account for the tuner, it is off.
    let up = upstream().await;
    let app = TestApp::spawn(&config(&up, "require_account = true")).await;
    assert_api_error(app.get("/lineup.json").await, 404).await;
    assert_api_error(app.get("/discover.json").await, 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_api_creates_changes_and_deletes_and_keeps_only_hashes() {
    let up = upstream().await;
    let mut app = TestApp::spawn(&config(&up, "")).await;
    let post = |body: &'static str| app.send_json(reqwest::Method::POST, "/api/users", body, None);
    let resp = post(
        r#"{"name":"carol","password":"carol-secret-1","groups":["Sport"],"max_connections":2}"#,
    )
    .await;
    let (status, carol) = json_of(resp).await;
    assert_eq!(status, 200, "{carol}");
    assert_eq!(carol["origin"], "api");
    assert!(!carol.to_string().contains("carol-secret-1"));
    assert_api_error(post(r#"{"name":"carol","password":"x"}"#).await, 400).await;
    assert_api_error(post(r#"{"name":"bad name","password":"x"}"#).await, 400).await;
    assert_api_error(post(r#"{"name":"dave"}"#).await, 400).await;
    assert_api_error(post(r#"[]"#).await, 400).await;
    // Config accounts are read only here.
    let resp = app
        .send_json(
            reqwest::Method::PATCH,
            "/api/users/alice",
            r#"{"enabled":false}"#,
            None,
        )
        .await;
    assert_api_error(resp, 403).await;

    let carol_login = ("carol", "carol-secret-1");
    let names = |v: Value| strings(&v, "name");
    assert_eq!(
        names(api(&app, carol_login, "get_live_streams").await),
        ["Sport One"]
    );

    // Survives a restart; the store holds a salted hash, never the password.
    app.restart().await;
    assert_eq!(
        names(api(&app, carol_login, "get_live_streams").await),
        ["Sport One"]
    );
    let db = std::fs::read(app.state_dir().join("freesky.db")).unwrap();
    let wal = std::fs::read(app.state_dir().join("freesky.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains("carol-secret-1") && !text.contains("alice-pw"));
    }
    assert!(
        String::from_utf8_lossy(&db).contains("$argon2id$")
            || String::from_utf8_lossy(&wal).contains("$argon2id$")
    );

    // Expired: logs in with its status, lists nothing, streams nothing.
    let resp = app
        .send_json(
            reqwest::Method::PATCH,
            "/api/users/carol",
            r#"{"expires":"2000-01-01"}"#,
            None,
        )
        .await;
    assert_eq!(json_of(resp).await.1["status"], "Expired");
    let expired = api(&app, carol_login, "").await;
    assert_eq!(expired["user_info"]["status"], "Expired");
    assert_eq!(expired["user_info"]["exp_date"], "946771199");
    assert_eq!(
        api(&app, carol_login, "get_live_categories").await,
        serde_json::json!([])
    );
    assert_api_error(app.get("/live/carol/carol-secret-1/1.ts").await, 403).await;
    let resp = app
        .send_json(
            reqwest::Method::PATCH,
            "/api/users/carol",
            r#"{"expires":null}"#,
            None,
        )
        .await;
    assert_eq!(json_of(resp).await.1["status"], "Active");

    // A name is not changed by a PATCH: refused, not ignored.
    let resp = app
        .send_json(
            reqwest::Method::PATCH,
            "/api/users/carol",
            r#"{"name":"dave","enabled":false}"#,
            None,
        )
        .await;
    let body = assert_api_error(resp, 400).await;
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("name cannot be changed"),
        "{body}"
    );
    assert_eq!(
        api(&app, carol_login, "").await["user_info"]["status"],
        "Active"
    );
    let resp = app
        .send_json(
            reqwest::Method::PATCH,
            "/api/users/carol",
            r#"{"password":"new-pass-2","enabled":false}"#,
            None,
        )
        .await;
    let (status, changed) = json_of(resp).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["status"], "Disabled");
    assert_eq!(api(&app, carol_login, "").await["user_info"]["auth"], 0);
    let disabled = api(&app, ("carol", "new-pass-2"), "").await;
    assert_eq!(disabled["user_info"]["status"], "Disabled");
    assert_eq!(
        api(&app, ("carol", "new-pass-2"), "get_live_streams").await,
        serde_json::json!([])
    );
    assert_api_error(app.get("/live/carol/new-pass-2/1.ts").await, 403).await;

    let resp = app
        .client
        .delete(app.url("/api/users/carol"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        api(&app, ("carol", "new-pass-2"), "").await["user_info"]["auth"],
        0
    );
    let resp = app
        .client
        .delete(app.url("/api/users/carol"))
        .send()
        .await
        .unwrap();
    assert_api_error(resp, 404).await;
}

/// A `[[users]]` account's `created_at` is when its name first appeared in the config:
/// the same after a restart (it was the start time of each run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_accounts_created_at_survives_a_restart() {
    let up = upstream().await;
    let mut app = TestApp::spawn(&config(&up, "")).await;
    let created = |v: Value| v["user_info"]["created_at"].clone();
    let first = created(api(&app, ALICE, "").await);
    assert!(first.is_string(), "{first}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    app.restart().await;
    assert_eq!(created(api(&app, ALICE, "").await), first);
}

/// With `require_account`, the lineup API (every channel, whatever an account may
/// see; the services; the guide's state; a channel test that plays upstream) is the
/// admin's: 401 without the admin token, a viewer's login is not enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_account_keeps_the_lineup_api_for_the_admin() {
    let up = upstream().await;
    let app = TestApp::spawn(&config(
        &up,
        "require_account = true\nadmin_token = \"admin-secret-1\"",
    ))
    .await;
    let calls = [
        ("GET", "/api/channels/all"),
        ("GET", "/api/channels?limit=2"),
        ("GET", "/api/channels/search?query=news"),
        ("GET", "/api/channels/demo"),
        ("GET", "/api/services/status"),
        ("GET", "/api/guide/status"),
        ("GET", "/api/guide/matches"),
        ("GET", "/api/tuners"),
        ("POST", "/api/channels/demo/test"),
    ];
    let send = |method: &'static str, path: &'static str, auth: Option<&'static str>| {
        let app = &app;
        async move {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            app.send_json(method, path, "", auth).await
        }
    };
    for (method, path) in calls {
        assert_api_error(send(method, path, None).await, 401).await;
        let viewer = format!(
            "{path}{}username=alice&password=alice-pw",
            if path.contains('?') { "&" } else { "?" }
        );
        let viewer: &'static str = Box::leak(viewer.into_boxed_str());
        assert_api_error(send(method, viewer, None).await, 401).await;
        let resp = send(method, path, Some("Bearer admin-secret-1")).await;
        // The tuner list answers 404 here (no [hdhomerun] account): not a refusal.
        let want = if path == "/api/tuners" { 404 } else { 200 };
        assert_eq!(
            resp.status(),
            want,
            "{method} {path}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    // The viewer's own routes stay theirs.
    let resp = app
        .get("/playlist.m3u?username=alice&password=alice-pw")
        .await;
    assert_eq!(resp.status(), 200);
    // The admin token plays and lists every channel there too (the dashboard's player
    // and lists); a wrong one is refused as an admin call, with no login challenge.
    for path in ["/api/stream/demo.m3u8", "/playlist.m3u", "/api/movies"] {
        let resp = send("GET", path, Some("Bearer admin-secret-1")).await;
        assert_eq!(resp.status(), 200, "{path}: {}", resp.text().await.unwrap());
        let resp = send("GET", path, Some("Bearer wrong")).await;
        assert!(resp.headers().get("www-authenticate").is_none(), "{path}");
        assert_api_error(resp, 403).await;
        let resp = send("GET", path, None).await;
        let challenge = resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(challenge.starts_with("Basic "), "{path}: {challenge}");
        assert_api_error(resp, 401).await;
    }
}

/// The tuner's account allows fewer connections than `tuner_count`: the tuner says so
/// (`TunerCount`) and, at the account's limit, answers as a busy tuner (503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tuner_account_limit_is_the_tuner_count_and_busy_at_it() {
    let up = upstream().await;
    let ports = crate::discovery::free_udp_ports();
    let cfg = config(&up, "require_account = true").replacen(
        "\n\n[[services]]",
        &format!(
            "\n\n[hdhomerun]\naccount = \"alice\"\ntuner_count = 3\ndiscovery = true\n\
             discovery_port = {}\nssdp_port = {}\n\n[[services]]",
            ports.hdhr, ports.ssdp
        ),
        1,
    );
    let app = TestApp::spawn(&cfg).await;
    let (_, discover) = app.get_json("/discover.json").await;
    assert_eq!(discover["TunerCount"], 1, "{discover}");
    // The LAN discovery reply says the same.
    let sock = crate::discovery::client().await;
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], ports.hdhr));
    let reply = crate::discovery::ask(&sock, to, &crate::discovery::JELLYFIN_REQUEST).await;
    let reply = freesky::discovery::parse_discover_reply(&reply).expect("a discover reply");
    assert_eq!(reply.tuner_count, 1);
    let (_, lineup) = app.get_json("/lineup.json").await;
    let url = lineup[0]["URL"].as_str().expect("a tuner URL").to_string();
    let mut held = app.get(&url).await;
    assert_eq!(held.status(), 200);
    held.chunk().await.expect("stream bytes");
    let body = assert_api_error(app.get(&url).await, 503).await;
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("the tuner is busy: connection limit reached"),
        "{body}"
    );
}

/// Reads `resp`'s body to its end; panics if it has not ended within `HANG_GUARD`.
/// The bytes read.
async fn read_to_end(mut resp: reqwest::Response, what: &str) -> usize {
    let mut read = 0;
    tokio::time::timeout(HANG_GUARD, async {
        // An error (the client's own timeout, a reset) is no end.
        while let Some(chunk) = resp
            .chunk()
            .await
            .unwrap_or_else(|e| panic!("{what}: the stream broke instead of ending: {e}"))
        {
            read += chunk.len();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: the stream went on after its access was taken away"));
    read
}

/// The first playlist link (`?a=` tagged) of an account's HLS answer for `path`.
async fn tagged_playlist_link(app: &TestApp, path: &str) -> String {
    let body = app.get_text_ok(path).await;
    crate::common::playlist_uris(&body)
        .into_iter()
        .find(|l| l.contains(".m3u8") && l.contains("?a="))
        .unwrap_or_else(|| panic!("no tagged playlist link in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taking_an_accounts_access_away_ends_what_it_watches() {
    let up = upstream().await;
    let app = TestApp::spawn(&config(&up, "")).await;
    let demo = number_of(&app, "Demo").await;
    let news = number_of(&app, "News One").await;
    let resp = app
        .send_json(
            reqwest::Method::POST,
            "/api/users",
            r#"{"name":"carol","password":"carol-pw","max_connections":0}"#,
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let app = &app;
    let patch = |body: String| async move {
        app.send_json(reqwest::Method::PATCH, "/api/users/carol", &body, None)
            .await
    };
    let open_ts = |n: u64| async move { app.get(&format!("/live/carol/carol-pw/{n}.ts")).await };
    let streaming = |resp: reqwest::Response| async move {
        assert_eq!(resp.status(), 200);
        let mut resp = resp;
        let first = tokio::time::timeout(HANG_GUARD, resp.chunk())
            .await
            .expect("the first bytes")
            .unwrap()
            .expect("a first chunk");
        assert!(!first.is_empty());
        resp
    };

    // Disabled: the open .ts ends, the HLS player's next playlist fetch is refused.
    let ts = streaming(open_ts(demo).await).await;
    let link = tagged_playlist_link(app, &format!("/live/carol/carol-pw/{demo}.m3u8")).await;
    assert_eq!(app.get(&link).await.status(), 200);
    assert_eq!(patch(r#"{"enabled":false}"#.into()).await.status(), 200);
    read_to_end(ts, "disabled").await;
    let body = assert_api_error(app.get(&link).await, 403).await;
    assert!(
        body["error"].as_str().unwrap().contains("disabled"),
        "{body}"
    );
    assert_eq!(
        api(app, ("carol", "carol-pw"), "").await["user_info"]["active_cons"],
        "0"
    );

    // Its groups changed: a channel it still sees goes on, one it no longer sees ends.
    assert_eq!(patch(r#"{"enabled":true}"#.into()).await.status(), 200);
    let mut demo_ts = streaming(open_ts(demo).await).await;
    let link = tagged_playlist_link(app, &format!("/live/carol/carol-pw/{demo}.m3u8")).await;
    assert_eq!(
        patch(r#"{"groups":["Demo","News"]}"#.into()).await.status(),
        200
    );
    for _ in 0..3 {
        let more = tokio::time::timeout(HANG_GUARD, demo_ts.chunk()).await;
        assert!(
            matches!(more, Ok(Ok(Some(ref c))) if !c.is_empty()),
            "a channel the account still sees goes on: {more:?}"
        );
    }
    assert_eq!(app.get(&link).await.status(), 200);
    assert_eq!(patch(r#"{"groups":["News"]}"#.into()).await.status(), 200);
    read_to_end(demo_ts, "groups").await;
    let body = assert_api_error(app.get(&link).await, 403).await;
    assert!(
        body["error"].as_str().unwrap().contains("no longer watch"),
        "{body}"
    );
    assert_eq!(
        app.get(&format!("/live/carol/carol-pw/{news}.m3u8"))
            .await
            .status(),
        200
    );

    // `null` is no value for a list (it would read as "unchanged"): refused, nothing
    // changed; `[]` is every group.
    for field in [
        "groups",
        "services",
        "max_connections",
        "enabled",
        "password",
    ] {
        let body = assert_api_error(patch(format!(r#"{{"{field}":null}}"#)).await, 400).await;
        assert!(
            body["error"].as_str().unwrap().contains("null"),
            "{field}: {body}"
        );
    }
    let (_, carol) = app.get_json("/api/users/carol").await;
    assert_eq!(carol["groups"], serde_json::json!(["News"]), "{carol}");
    // Expiring while it watches: ended by the periodic check, with no API call.
    assert_eq!(patch(r#"{"groups":[]}"#.into()).await.status(), 200);
    let demo_ts = streaming(open_ts(demo).await).await;
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    assert_eq!(
        patch(format!(r#"{{"expires":"{soon}"}}"#)).await.status(),
        200
    );
    read_to_end(demo_ts, "expired").await;

    // A new password (even the same one) throws out whoever watches: the open .ts
    // ends; the account plays again at once.
    assert_eq!(patch(r#"{"expires":null}"#.into()).await.status(), 200);
    let ts = streaming(open_ts(demo).await).await;
    assert_eq!(
        patch(r#"{"password":"carol-pw"}"#.into()).await.status(),
        200
    );
    read_to_end(ts, "a new password").await;

    // Removed: its links are refused.
    let ts = streaming(open_ts(demo).await).await;
    let link = tagged_playlist_link(app, &format!("/live/carol/carol-pw/{demo}.m3u8")).await;
    let resp = app
        .send_json(reqwest::Method::DELETE, "/api/users/carol", "", None)
        .await;
    assert_eq!(resp.status(), 200);
    read_to_end(ts, "removed").await;
    let body = assert_api_error(app.get(&link).await, 403).await;
    assert!(
        body["error"].as_str().unwrap().contains("removed"),
        "{body}"
    );
}

/// POSTs `form` (a URL-encoded form) to `path`.
async fn post_form(app: &TestApp, path: &str, form: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_panel_calls_also_take_a_posted_form() {
    let up = upstream().await;
    let app = TestApp::spawn(&config(&up, "")).await;
    let login = format!("username=bob&password={}", enc(BOB.1));
    // The login and an action, as the IPTV Smarters family posts them.
    let (status, posted) = json_of(post_form(&app, "/player_api.php", &login).await).await;
    assert_eq!(status, 200);
    assert_eq!(posted["user_info"]["auth"], 1, "{posted}");
    assert_eq!(posted["user_info"]["username"], "bob");
    let (_, streams) = json_of(
        post_form(
            &app,
            "/player_api.php",
            &format!("{login}&action=get_live_streams"),
        )
        .await,
    )
    .await;
    assert_eq!(streams, api(&app, BOB, "get_live_streams").await);
    // A form field wins over the query; a wrong posted password is a wrong login.
    let (_, refused) = json_of(
        post_form(
            &app,
            &format!("/player_api.php?username=bob&password={}", enc(BOB.1)),
            "password=wrong-pw",
        )
        .await,
    )
    .await;
    assert_eq!(refused, serde_json::json!({"user_info": {"auth": 0}}));
    // get.php and xmltv.php.
    let m3u = post_form(
        &app,
        "/get.php",
        &format!("{login}&type=m3u_plus&output=ts"),
    )
    .await;
    assert_eq!(m3u.status(), 200);
    let m3u = m3u.text().await.unwrap();
    assert!(
        m3u.starts_with("#EXTM3U") && m3u.contains("News One"),
        "{m3u}"
    );
    let guide = post_form(&app, "/xmltv.php", &login).await;
    assert_eq!(guide.status(), 200);
    let guide = guide.bytes().await.unwrap();
    crate::common::tv_validate(&guide);
    assert!(String::from_utf8_lossy(&guide).contains("NewsOne.example"));
    // A form is a login and a few fields: a huge one is refused as too large.
    let huge = format!("{login}&junk={}", "x".repeat(40 * 1024));
    let body = assert_api_error(post_form(&app, "/player_api.php", &huge).await, 413).await;
    assert!(body["error"].as_str().unwrap().contains("larger"), "{body}");
    // So is a huge admin body (a JSON 413, not a 400). Just over the 64 KiB limit: a body
    // of megabytes would be cut off by the refusal while the client still writes it.
    let big = format!(r#"{{"name":"x","password":"{}"}}"#, "p".repeat(100 * 1024));
    let resp = app
        .send_json(reqwest::Method::POST, "/api/users", &big, None)
        .await;
    assert_api_error(resp, 413).await;
}

/// A channel whose source is plain MPEG-TS: its `.m3u8` is a live HLS playlist cut
/// from the stream (players that take `.m3u8` as HLS only can play it), counted as an
/// HLS player of the account while it polls. A direct stream that is not MPEG-TS
/// cannot be cut: an account's `.m3u8` is the stream itself, counted as a `.ts`
/// connection while it plays (a redirect would play uncounted once the player stopped
/// polling); without an account it redirects to the stream's sealed link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_m3u8_of_a_direct_stream_is_hls_when_it_is_mpeg_ts_else_the_stream_counted_as_ts() {
    let fake = FakeUpstream::bind().await;
    let base = fake.base();
    let list = format!(
        "#EXTM3U\n#EXTINF:-1 group-title=\"News\",Direct TV\n{base}/direct.ts\n\
         #EXTINF:-1 group-title=\"News\",Direct Other\n{base}/direct.bin\n"
    );
    let up = fake
        .text("/list.m3u", M3U_TYPE, list)
        .route(
            "/direct.ts",
            crate::common::paced_mpeg_ts(crate::common::mpeg_ts_clip(8), true),
        )
        .route(
            "/direct.bin",
            axum::routing::get(|| async {
                // An endless stream of something else, a burst every 50 ms.
                let chunks = futures::stream::unfold(0u32, |i| async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let bytes: Vec<u8> = (0..188 * 40u32).map(|b| ((i + b) % 253) as u8).collect();
                    Some((
                        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(bytes)),
                        i + 1,
                    ))
                });
                (
                    [("content-type", "video/mp2t")],
                    axum::body::Body::from_stream(chunks),
                )
            }),
        )
        .start();
    let config = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\n\n\
         [[services]]\nname = \"IPTV\"\nkind = \"m3u\"\nurl = \"{}/list.m3u\"\n\n\
         [[users]]\nname = \"alice\"\npassword = \"alice-pw\"\nmax_connections = 1\n\n\
         [[users]]\nname = \"bob\"\npassword = \"bob-pw\"\nmax_connections = 1\n",
        up.base()
    );
    let app = TestApp::spawn(&config).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // MPEG-TS: HLS, for an account and without one.
    let n = number_of(&app, "Direct TV").await;
    let playlist = app
        .get_text_ok(&format!("/live/alice/alice-pw/{n}.m3u8"))
        .await;
    let segments: Vec<&str> = playlist.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(playlist.contains("#EXTINF:"), "{playlist}");
    // Each segment link names the channel as the playlist's URL did (its number), which
    // the shipped balancers hash: the instance that cut it serves it.
    assert!(
        !segments.is_empty()
            && segments
                .iter()
                .all(|l| l.contains(&format!("/packaged/{n}/"))),
        "{playlist}"
    );
    let segment = app.get(segments[0]).await;
    assert_eq!(segment.status(), 200);
    assert_eq!(segment.bytes().await.unwrap()[0], 0x47);
    let (_, users) = app.get_json("/api/users").await;
    let alice = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "alice")
        .unwrap();
    assert_eq!(alice["active_cons"], 1, "{alice}");
    assert_eq!(alice["connections"][0]["kind"], "hls", "{alice}");
    let body = assert_api_error(
        get_from(&app, &format!("/live/alice/alice-pw/{n}.ts"), OTHER_PLAYER).await,
        403,
    )
    .await;
    assert!(body["error"].as_str().unwrap().contains("allows 1"));
    let plain = no_redirects
        .get(app.url("/api/stream/direct-tv.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    assert!(plain.text().await.unwrap().contains("/packaged/"));

    // Something else: the stream's link without an account, the stream itself with one.
    let plain = no_redirects
        .get(app.url("/api/stream/direct-other.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 307);
    let m = number_of(&app, "Direct Other").await;
    let mut resp = app.get(&format!("/live/bob/bob-pw/{m}.m3u8")).await;
    assert_eq!(resp.status(), 200);
    // Bytes that are no MPEG-TS (nor another known format) are not labelled as such,
    // whatever the upstream's type said.
    assert!(resp
        .headers()
        .get("content-type")
        .is_some_and(|t| t.to_str().unwrap() == "application/octet-stream"));
    let first = tokio::time::timeout(HANG_GUARD, resp.chunk())
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_some_and(|c| !c.is_empty()));
    let (_, users) = app.get_json("/api/users").await;
    let bob = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "bob")
        .unwrap();
    assert_eq!(bob["active_cons"], 1, "{bob}");
    assert_eq!(bob["connections"][0]["kind"], "ts", "{bob}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_limited_to_services_plays_only_their_sources() {
    let fake = FakeUpstream::bind().await;
    let base = fake.base();
    let entry = |path: &str| {
        format!("#EXTM3U\n#EXTINF:-1 tvg-id=\"Shared.example\" group-title=\"News\",Shared\n{base}{path}\n")
    };
    let up = fake
        .text("/a.m3u", M3U_TYPE, entry("/a/live.m3u8"))
        .text("/b.m3u", M3U_TYPE, entry("/b/live.m3u8"))
        .text("/c.m3u", M3U_TYPE, entry("/c/live.m3u8"))
        .text(
            "/a/live.m3u8",
            crate::common::HLS_TYPE,
            crate::common::live_playlist(&["s.ts"]),
        )
        .status("/b/live.m3u8", 500)
        .text(
            "/c/live.m3u8",
            crate::common::HLS_TYPE,
            crate::common::live_playlist(&["s.ts"]),
        )
        .start();
    let mut config = "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{state_dir}'\n".to_string();
    for (i, name) in ["A", "B", "C"].iter().enumerate() {
        config.push_str(&format!(
            "\n[[services]]\nname = \"{name}\"\nkind = \"m3u\"\npriority = {}\nurl = \"{}/{}.m3u\"\n",
            i + 1,
            up.base(),
            name.to_lowercase()
        ));
    }
    config.push_str(
        "\n[[users]]\nname = \"onlyb\"\npassword = \"pw\"\nservices = [\"B\"]\nmax_connections = 0\n\
         \n[[users]]\nname = \"bc\"\npassword = \"pw\"\nservices = [\"B\", \"C\"]\nmax_connections = 0\n",
    );
    let app = TestApp::spawn(&config).await;
    let n = app.channel_named("Shared").await["number"]
        .as_u64()
        .unwrap();
    // Only B's source, which fails: not A's (the account may not use A). The viewer
    // is not told which service failed: the upstream's hits say it.
    let body = assert_api_error(app.get(&format!("/live/onlyb/pw/{n}.m3u8")).await, 502).await;
    assert_eq!(body["error"], "every source of `shared` failed", "{body}");
    assert!(up.hits("/b/live.m3u8") >= 1, "B is the account's");
    assert_eq!(up.hits("/a/live.m3u8"), 0, "A is not the account's");
    // B then C, both the account's: plays from C.
    let playlist = app.get_text_ok(&format!("/live/bc/pw/{n}.m3u8")).await;
    assert!(playlist.starts_with("#EXTM3U"), "{playlist}");
    assert!(up.hits("/c/live.m3u8") >= 1);
    assert_eq!(up.hits("/a/live.m3u8"), 0);
    // An account limited to a service that is not configured (names are
    // case-sensitive) is refused, not made to see nothing.
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            "/api/users",
            r#"{"name":"lower","password":"pw","services":["b"]}"#,
        ),
        (
            reqwest::Method::PATCH,
            "/api/users/api-made",
            r#"{"services":["B","Nope"]}"#,
        ),
    ] {
        if method == reqwest::Method::PATCH {
            let made = app
                .send_json(
                    reqwest::Method::POST,
                    "/api/users",
                    r#"{"name":"api-made","password":"pw"}"#,
                    None,
                )
                .await;
            assert_eq!(made.status(), 200);
        }
        let body = assert_api_error(app.send_json(method, path, body, None).await, 400).await;
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("`services`: unknown service `"),
            "{body}"
        );
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("(configured: A, B, C;"),
            "{body}"
        );
    }
}

/// A wrong login is a 401 whatever else the path holds (a bad stream id, extension,
/// duration or start), as the query form answers; with the right one, those are 400s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_login_is_refused_before_the_rest_of_the_path_is_read() {
    let up = upstream().await;
    let app = TestApp::spawn(&config(&up, "")).await;
    for (i, tail) in [
        "/live/{u}/{p}/abc.ts",
        "/live/{u}/{p}/1.mp4",
        "/timeshift/{u}/{p}/0/2026-01-01:00-00/1.ts",
        "/timeshift/{u}/{p}/30/not-a-time/1.ts",
        "/timeshift/{u}/{p}/30/2026-01-01:00-00/x.ts",
    ]
    .iter()
    .enumerate()
    {
        // (Each wrong login adds to the address's guess penalty: one per path.)
        let (user, pass) = [("nobody", "x"), ("alice", "wrong")][i % 2];
        let path = tail.replace("{u}", user).replace("{p}", pass);
        assert_api_error(app.get(&path).await, 401).await;
        let path = tail.replace("{u}", "alice").replace("{p}", "alice-pw");
        assert_api_error(app.get(&path).await, 400).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_require_account_a_playlist_link_plays_only_with_its_accounts_tag() {
    let up = upstream().await;
    let app = TestApp::spawn(&config(
        &up,
        "require_account = true\nadmin_token = \"admin-tok\"",
    ))
    .await;
    let demo = number_of(&app, "Demo").await;
    let link = tagged_playlist_link(&app, &format!("/live/alice/alice-pw/{demo}.m3u8")).await;
    assert_eq!(app.get(&link).await.status(), 200);
    let (bare, tag) = link.split_once("?a=").unwrap();
    // Stripped of its tag, or with a forged one, it would play uncounted for anyone and
    // outlive the account.
    for stolen in [
        bare.to_string(),
        format!("{bare}?a=alice.{}", "0".repeat(24)),
    ] {
        let body = assert_api_error(app.get(&stolen).await, 401).await;
        assert!(
            body["error"].as_str().unwrap().contains("viewer account"),
            "{body}"
        );
    }
    assert!(tag.starts_with("alice."));
    // The admin (the dashboard) may open it.
    let admin = app
        .client
        .get(app.url(bare))
        .header("authorization", "Bearer admin-tok")
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 200);
    // Its segment links carry the account too: stripped of it, each is refused as well
    // (with the admin token it plays).
    let media = app.get(&link).await.text().await.unwrap();
    let segments = crate::common::playlist_uris(&media);
    assert!(!segments.is_empty(), "{media}");
    for segment in &segments {
        assert!(segment.contains(&format!("?a={tag}")), "{media}");
        assert_eq!(app.get(segment).await.status(), 200, "{segment}");
        let bare = segment.split_once("?a=").unwrap().0;
        let body = assert_api_error(app.get(bare).await, 401).await;
        assert!(
            body["error"].as_str().unwrap().contains("viewer account"),
            "{body}"
        );
        let admin = app
            .client
            .get(app.url(bare))
            .header("authorization", "Bearer admin-tok")
            .send()
            .await
            .unwrap();
        assert_eq!(admin.status(), 200, "{bare} with the admin token");
    }
}

/// A new password ends the links handed out with the old one: a shared password is
/// revoked by changing it, and a player that kept an old playlist link must log in
/// again (with `require_account` or without).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_the_links_tagged_before_it() {
    for required in ["true", "false"] {
        password_change_ends_links(required).await;
    }
}

async fn password_change_ends_links(required: &str) {
    let up = upstream().await;
    let app = TestApp::spawn(&config(
        &up,
        &format!("require_account = {required}\nadmin_token = \"admin-tok\""),
    ))
    .await;
    let admin = |method: reqwest::Method, path: &'static str, body: &'static str| {
        app.client
            .request(method, app.url(path))
            .header("authorization", "Bearer admin-tok")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let resp = admin(
        reqwest::Method::POST,
        "/api/users",
        r#"{"name":"dave","password":"old-pw","max_connections":0}"#,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let demo = number_of(&app, "Demo").await;
    let old = tagged_playlist_link(&app, &format!("/live/dave/old-pw/{demo}.m3u8")).await;
    assert_eq!(app.get(&old).await.status(), 200);
    // Other changes keep the links.
    let resp = admin(
        reqwest::Method::PATCH,
        "/api/users/dave",
        r#"{"max_connections":3}"#,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(app.get(&old).await.status(), 200);
    let resp = admin(
        reqwest::Method::PATCH,
        "/api/users/dave",
        r#"{"password":"new-pw"}"#,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let body = assert_api_error(app.get(&old).await, 403).await;
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("password has changed"),
        "{body}"
    );
    assert_eq!(
        app.get(&format!("/live/dave/old-pw/{demo}.m3u8"))
            .await
            .status(),
        401
    );
    let new = tagged_playlist_link(&app, &format!("/live/dave/new-pw/{demo}.m3u8")).await;
    assert_ne!(new, old);
    assert_eq!(app.get(&new).await.status(), 200);
    // A garbled tag names no account, as before: with `require_account` refused as
    // untagged, without it played (uncounted).
    let (bare, _) = new.split_once("?a=").unwrap();
    let garbled = format!("{bare}?a=nobody.{}", "0".repeat(40));
    let expected = if required == "true" { 401 } else { 200 };
    assert_eq!(app.get(&garbled).await.status(), expected);
}

/// Instances sharing the link key (`proxy_key_file`, behind a load balancer) accept
/// each other's account-tagged playlist links: a player's next playlist fetch may go to
/// another instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_tagged_link_plays_on_every_instance_sharing_the_link_key() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("link.key");
    std::fs::write(&key, "11".repeat(32)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let extra = format!(
        "require_account = true\nadmin_token = \"admin-tok\"\nproxy_key_file = '{}'",
        key.display()
    );
    let one = TestApp::spawn(&config(&up, &extra)).await;
    let two = TestApp::spawn(&config(&up, &extra)).await;
    let demo = number_of(&one, "Demo").await;
    let link = tagged_playlist_link(&one, &format!("/live/alice/alice-pw/{demo}.m3u8")).await;
    assert_eq!(one.get(&link).await.status(), 200);
    let on_two = link.replacen(&one.base, &two.base, 1);
    assert_ne!(on_two, link);
    let resp = two.get(&on_two).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_forwarded_client_is_its_own_player() {
    let up = upstream().await;
    let app = TestApp::spawn(&config(&up, "trusted_proxies = [\"127.0.0.1\"]")).await;
    let news = number_of(&app, "News One").await;
    let open = |client: &'static str| {
        app.client
            .get(app.url(&format!("/live/alice/alice-pw/{news}.ts")))
            .header("x-forwarded-for", client)
            .send()
    };
    let mut first = open("198.51.100.1").await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.chunk().await.unwrap().is_some());
    let (_, users) = app.get_json("/api/users").await;
    let alice = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "alice")
        .unwrap();
    assert_eq!(alice["connections"][0]["client"], "198.51.100.1", "{alice}");
    // Another viewer behind the same proxy is another player: over alice's limit of 1
    // (not the same player taking its connection over).
    let body = assert_api_error(open("198.51.100.2").await.unwrap(), 403).await;
    assert!(
        body["error"].as_str().unwrap().contains("allows 1"),
        "{body}"
    );
    // A peer that is not a trusted proxy cannot choose its address.
    let direct = client_from(OTHER_PLAYER)
        .get(app.url(&format!("/live/alice/alice-pw/{news}.ts")))
        .header("x-forwarded-for", "198.51.100.1")
        .send()
        .await
        .unwrap();
    assert_api_error(direct, 403).await;
    drop(first);
}

/// An m3u service whose one channel is a master playlist of two variants (each in its
/// own directory), with real MPEG-TS segments.
async fn master_upstream() -> FakeUpstream {
    let fake = FakeUpstream::bind().await;
    let base = fake.base();
    let list = format!(
        "#EXTM3U\n#EXTINF:-1 tvg-id=\"Multi.example\" group-title=\"News\",Multi\n{base}/multi/master.m3u8\n"
    );
    let master = "#EXTM3U\n#EXT-X-VERSION:3\n\
                  #EXT-X-STREAM-INF:BANDWIDTH=200000,RESOLUTION=320x180\nlow/index.m3u8\n\
                  #EXT-X-STREAM-INF:BANDWIDTH=400000,RESOLUTION=320x180\nhigh/index.m3u8\n";
    let seg = |i: usize| {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("assets/demo/seg{i}.ts")))
            .unwrap()
    };
    fake.text("/list.m3u", M3U_TYPE, list)
        .text("/multi/master.m3u8", crate::common::HLS_TYPE, master)
        .text(
            "/multi/low/index.m3u8",
            crate::common::HLS_TYPE,
            crate::common::live_playlist(&["s0.ts", "s1.ts"]),
        )
        .text(
            "/multi/high/index.m3u8",
            crate::common::HLS_TYPE,
            crate::common::live_playlist(&["s0.ts", "s1.ts"]),
        )
        .bytes("/multi/low/s0.ts", "video/mp2t", seg(0))
        .bytes("/multi/low/s1.ts", "video/mp2t", seg(1))
        .bytes("/multi/high/s0.ts", "video/mp2t", seg(0))
        .bytes("/multi/high/s1.ts", "video/mp2t", seg(1))
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_require_account_a_masters_variant_links_play_pinned_or_not() {
    // With an admin token and without one: loopback without the token is not the
    // admin here (behind a reverse proxy on the same box every viewer is loopback).
    for token in ["admin_token = \"admin-tok\"\n", ""] {
        variant_links_play_pinned_or_not(token).await;
    }
}

async fn variant_links_play_pinned_or_not(token: &str) {
    let up = master_upstream().await;
    let app = TestApp::spawn(&format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\n\
         require_account = true\n{token}\n\
         [[services]]\nname = \"IPTV\"\nkind = \"m3u\"\nurl = \"{0}/list.m3u\"\n\n\
         [[users]]\nname = \"alice\"\npassword = \"alice-pw\"\nmax_connections = 0\n\n\
         [[users]]\nname = \"carol\"\npassword = \"carol-pw\"\nmax_connections = 0\nservices = [\"IPTV\"]\n",
        up.base()
    ))
    .await;
    let number = number_of(&app, "Multi").await;
    // Every way a viewer opens the master: unpinned, pinned by `service`, pinned by an
    // account limited to services (Xtream and /api/stream alike).
    let masters = [
        format!("/live/alice/alice-pw/{number}.m3u8"),
        format!("/api/stream/{number}.m3u8?username=alice&password=alice-pw&service=IPTV"),
        format!("/live/carol/carol-pw/{number}.m3u8"),
        format!("/api/stream/{number}.m3u8?username=carol&password=carol-pw"),
    ];
    for master in &masters {
        let body = app.get_text_ok(master).await;
        let variants: Vec<String> = crate::common::playlist_uris(&body);
        assert_eq!(variants.len(), 2, "{master}: {body}");
        for variant in &variants {
            let (bare, tag) = variant
                .split_once("?a=")
                .unwrap_or_else(|| panic!("{master}: an untagged variant link in {body}"));
            let media = app.get(variant).await;
            assert_eq!(media.status(), 200, "{master}: {variant}");
            let media = media.text().await.unwrap();
            let segments = crate::common::playlist_uris(&media);
            assert_eq!(segments.len(), 2, "{media}");
            for segment in segments {
                let resp = app.get(&segment).await;
                assert_eq!(resp.status(), 200, "{segment}");
                assert_eq!(resp.bytes().await.unwrap().first(), Some(&0x47));
            }
            // Stripped of its tag, or with a forged one, it is still refused.
            let (name, _) = tag.split_once('.').unwrap();
            for stolen in [
                bare.to_string(),
                format!("{bare}?a={name}.{}", "0".repeat(24)),
            ] {
                let body = assert_api_error(app.get(&stolen).await, 401).await;
                assert!(
                    body["error"].as_str().unwrap().contains("viewer account"),
                    "{body}"
                );
            }
        }
    }
    // A player follows the master into its variants and decodes them.
    if !token.is_empty() {
        for master in [&masters[0], &masters[2]] {
            assert!(ffmpeg_frames(&app.url(master)).await > 0, "{master}");
        }
        // A stripped link takes the admin token in place of the tag: the right one
        // plays; wrong ones are guesses, and after three free ones the next waits its
        // turn (as on the admin routes); a wrong one is a 403, as on the viewer routes.
        let body = app.get_text_ok(&masters[0]).await;
        let variant = crate::common::playlist_uris(&body).remove(0);
        let bare = variant.split_once("?a=").unwrap().0.to_string();
        let with = |t: &'static str| {
            app.client
                .get(app.url(&bare))
                .header("Authorization", format!("Bearer {t}"))
                .send()
        };
        assert_eq!(with("admin-tok").await.unwrap().status(), 200);
        for _ in 0..3 {
            assert_api_error(with("guess").await.unwrap(), 403).await;
        }
        let start = std::time::Instant::now();
        assert_api_error(with("guess").await.unwrap(), 403).await;
        assert!(
            start.elapsed() >= std::time::Duration::from_millis(240),
            "a fourth wrong token did not wait: {:?}",
            start.elapsed()
        );
    }
}

#[tokio::test]
async fn a_stream_id_is_the_channel_number_even_when_a_channel_is_named_like_one() {
    // Channel 5 is "Real Five"; the channel named "5" (its id `5`) is number 7.
    let fake = FakeUpstream::bind().await;
    let base = fake.base();
    let up = fake
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n#EXTINF:-1 tvg-chno=\"5\",Real Five\n{base}/real.m3u8\n\
                 #EXTINF:-1 tvg-chno=\"7\",5\n{base}/named.m3u8\n"
            ),
        )
        .text(
            "/real.m3u8",
            crate::common::HLS_TYPE,
            crate::common::live_playlist(&["real-five.ts"]),
        )
        .text(
            "/named.m3u8",
            crate::common::HLS_TYPE,
            crate::common::live_playlist(&["named-five.ts"]),
        )
        .bytes("/real-five.ts", "video/mp2t", b"real-five".to_vec())
        .bytes("/named-five.ts", "video/mp2t", b"named-five".to_vec())
        .start();
    let app = TestApp::spawn(&format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\n\n\
         [[services]]\nname = \"IPTV\"\nkind = \"m3u\"\nurl = \"{base}/list.m3u\"\n\n\
         [[users]]\nname = \"alice\"\npassword = \"alice-pw\"\n"
    ))
    .await;
    assert_eq!(number_of(&app, "Real Five").await, 5);
    assert_eq!(number_of(&app, "5").await, 7);
    // What a stream id plays: its playlist's segment, through freesky.
    let segment = |number: u32| {
        let app = &app;
        async move {
            let body = app
                .get_text_ok(&format!("/live/alice/alice-pw/{number}.m3u8"))
                .await;
            let link = body.lines().rfind(|l| l.starts_with("http")).unwrap();
            let path = &link[link.find("/proxy/").unwrap()..];
            app.get_text_ok(path).await
        }
    };
    assert_eq!(segment(5).await, "real-five");
    assert_eq!(segment(7).await, "named-five");
    // Renumbered, the channel named "5" plays as its new number; its old one is
    // nobody's.
    let r = app
        .send_json(
            reqwest::Method::PATCH,
            "/api/channels/5",
            r#"{"number": 9}"#,
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(segment(9).await, "named-five");
    assert_api_error(app.get("/live/alice/alice-pw/7.m3u8").await, 404).await;
    drop(up);
}

/// A server URL typed with a trailing slash (`http://host:port/`) makes players ask
/// `//player_api.php`, `//get.php`, `//live/...`: answered as the single-slash paths,
/// as panels behind nginx answer them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_a_trailing_slash_doubled_are_answered() {
    let up = upstream().await;
    let app = TestApp::spawn(&config(&up, "")).await;
    let (status, body) = app
        .get_json("//player_api.php?username=alice&password=alice-pw")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_info"]["auth"], 1, "{body}");
    let m3u = app
        .get("//get.php?username=alice&password=alice-pw&type=m3u_plus")
        .await;
    assert_eq!(m3u.status(), 200);
    let m3u = m3u.text().await.unwrap();
    assert!(m3u.starts_with("#EXTM3U"), "{m3u}");
    let news = number_of(&app, "News One").await;
    let playlist = app
        .get(&format!("///live/alice/alice-pw/{news}.m3u8"))
        .await;
    assert_eq!(playlist.status(), 200);
    assert!(playlist.text().await.unwrap().starts_with("#EXTM3U"));
}

/// With `require_account`, the segments cut from a plain MPEG-TS stream are an
/// account's links too: each carries its tag, plays with it (kept by no shared cache),
/// and stripped of it only for the admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_require_account_segments_cut_from_mpeg_ts_carry_the_accounts_tag() {
    let fake = FakeUpstream::bind().await;
    let base = fake.base();
    let up = fake
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!("#EXTM3U\n#EXTINF:-1 group-title=\"News\",Direct TV\n{base}/direct.ts\n"),
        )
        .route(
            "/direct.ts",
            crate::common::paced_mpeg_ts(crate::common::mpeg_ts_clip(8), true),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\n\
         require_account = true\nadmin_token = \"admin-tok\"\n\n\
         [[services]]\nname = \"IPTV\"\nkind = \"m3u\"\nurl = \"{}/list.m3u\"\n\n\
         [[users]]\nname = \"alice\"\npassword = \"alice-pw\"\n",
        up.base()
    ))
    .await;
    let n = number_of(&app, "Direct TV").await;
    let playlist = app
        .get_text_ok(&format!("/live/alice/alice-pw/{n}.m3u8"))
        .await;
    let segments = crate::common::playlist_uris(&playlist);
    assert!(!segments.is_empty(), "{playlist}");
    for segment in &segments {
        assert!(
            segment.contains("/packaged/") && segment.contains("?a=alice."),
            "{playlist}"
        );
        let resp = app.get(segment).await;
        assert_eq!(resp.status(), 200, "{segment}");
        assert_eq!(resp.headers()["cache-control"], "private, max-age=60");
        let bare = segment.split_once("?a=").unwrap().0;
        let body = assert_api_error(app.get(bare).await, 401).await;
        assert!(
            body["error"].as_str().unwrap().contains("viewer account"),
            "{body}"
        );
        let admin = app
            .client
            .get(app.url(bare))
            .header("authorization", "Bearer admin-tok")
            .send()
            .await
            .unwrap();
        assert_eq!(admin.status(), 200, "{bare} with the admin token");
    }
}

/// A viewer account whose channel fails upstream is told that it failed, not which
/// services and upstream hosts are behind it (a provider a viewer should not learn);
/// the admin's answer and the log keep them.
#[tokio::test]
async fn a_viewer_is_told_a_channel_failed_without_the_upstreams_behind_it() {
    let up = upstream().await;
    let host = up.base().trim_start_matches("http://").to_string();
    // The lineup API is the admin's with require_account: the id is read without it.
    let mut id = String::new();
    for required in [
        "",
        "require_account = true\nadmin_token = \"admin-token-0123456789\"",
    ] {
        let app = TestApp::spawn(&config(&up, required)).await;
        let gone = number_of(&app, "Gone TV").await;
        if required.is_empty() {
            id = app.channel_id("Gone TV").await;
        }
        let pass = format!("{}/{}", ALICE.0, seg(ALICE.1));
        let creds = format!("username={}&password={}", enc(ALICE.0), enc(ALICE.1));
        for path in [
            format!("/live/{pass}/{gone}.ts"),
            format!("/live/{pass}/{gone}.m3u8"),
            format!("/{pass}/{gone}"),
            format!("/api/stream/{id}.m3u8?{creds}"),
        ] {
            if required.is_empty() && path.starts_with("/api/") {
                continue;
            }
            let resp = app.get(&path).await;
            let status = resp.status();
            let text = resp.text().await.unwrap();
            assert_eq!(status, 502, "{path}: {text}");
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                body,
                serde_json::json!({
                    "error": format!("every source of `{id}` failed"),
                    "detail": null
                }),
                "{path}"
            );
            assert!(
                !text.contains(&host) && !text.contains("IPTV"),
                "{path}: {text}"
            );
        }
        // The admin (loopback; with require_account, the token) is told every try.
        let admin = reqwest::Client::new()
            .get(app.url(&format!("/api/stream/{id}.m3u8")))
            .bearer_auth("admin-token-0123456789")
            .send()
            .await
            .unwrap();
        let body = assert_api_error(admin, 502).await;
        let tried = body["detail"].as_array().unwrap();
        assert_eq!(tried.len(), 1, "{body}");
        assert_eq!(tried[0]["service"], "IPTV", "{body}");
        assert!(
            tried[0]["error"].as_str().unwrap().contains(&host),
            "{body}"
        );
    }
}

/// A `HEAD` of a channel's `.ts` (a player's or a monitor's probe) is answered as the
/// stream would begin, without opening the channel upstream or taking a connection;
/// a channel the asker may not see is still a 404.
#[tokio::test]
async fn a_head_of_a_ts_stream_opens_nothing_upstream() {
    let up = upstream().await;
    let app = TestApp::spawn(&config(&up, "")).await;
    let news = number_of(&app, "News One").await;
    let sport = number_of(&app, "Sport One").await;
    let id = app.channel_id("News One").await;
    let pass = format!("{}/{}", ALICE.0, seg(ALICE.1));
    for path in [
        format!("/api/stream/{id}.ts"),
        format!("/live/{pass}/{news}.ts"),
        format!("/live/{pass}/{news}"),
        format!("/{pass}/{news}"),
    ] {
        let resp = app.head(&path).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], "video/MP2T", "{path}");
        assert!(
            resp.headers().get("content-length").is_none(),
            "{path}: {:?}",
            resp.headers()
        );
    }
    assert_eq!(
        up.hits("/news.m3u8"),
        0,
        "a HEAD opened the channel upstream"
    );
    // bob sees News only; unknown channels are 404 too.
    let bob = format!("bob/{}", seg(BOB.1));
    for path in [
        format!("/live/{bob}/{sport}.ts"),
        "/api/stream/nope.ts".to_string(),
        "/api/stream/IPTV:nope.ts".to_string(),
    ] {
        assert_eq!(app.head(&path).await.status(), 404, "{path}");
    }
    assert_eq!(up.hits("/sport.m3u8"), 0);
    // alice's one connection was not taken by the probes: she plays.
    let resp = app.get(&format!("/live/{pass}/{news}.ts")).await;
    assert_eq!(resp.status(), 200);
    assert!(up.hits("/news.m3u8") >= 1);
}
