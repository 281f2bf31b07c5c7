//! `kind = "xtream"` against a fake Xtream Codes panel: channels from player_api.php,
//! the category filter, HLS and `.ts` playback through freesky, a refused login, the
//! account in the status, credentials never shown, and the connection cap.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query};
use axum::routing::get;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::common::{
    assert_api_error, playlist_uris, respond, FakeUpstream, TestApp, HANG_GUARD, HLS_TYPE, M3U_TYPE,
};

const USER: &str = "alice";
const PASS: &str = "s3cret-pw";
/// 2027-01-01T00:00:00Z
const EXP: &str = "1798761600";

/// A fake panel for `USER`/`PASS` whose account allows `max_connections`. `/live/...`
/// serves a tiny HLS playlist (`.m3u8`) or an endless MPEG-TS stream (`.ts`); stream
/// 99 does not exist (404); 98 answers a page that is not HLS.
async fn panel(max_connections: u32) -> FakeUpstream {
    let api = move |Query(q): Query<HashMap<String, String>>| async move {
        let authed = q.get("username").map(String::as_str) == Some(USER)
            && q.get("password").map(String::as_str) == Some(PASS);
        let body = if !authed {
            json!({"user_info": {"auth": 0}})
        } else {
            match q.get("action").map(String::as_str) {
                None => json!({
                    "user_info": {"username": USER, "password": PASS, "auth": 1,
                        "status": "Active", "exp_date": EXP, "is_trial": "0",
                        "active_cons": "0", "max_connections": max_connections.to_string()},
                    "server_info": {"url": "provider.example", "port": "8080"}
                }),
                Some("get_live_categories") => json!([
                    {"category_id": "1", "category_name": "News", "parent_id": 0},
                    {"category_id": "2", "category_name": "Sport", "parent_id": 0}
                ]),
                Some("get_live_streams") => json!([
                    {"num": 2, "name": "Sport One", "stream_type": "live", "stream_id": 20,
                     "stream_icon": "http://logo.example/s1.png", "epg_channel_id": "SportOne.example",
                     "category_id": "2"},
                    {"num": 1, "name": "News One", "stream_type": "live", "stream_id": 10,
                     "stream_icon": "http://logo.example/n1.png", "epg_channel_id": "NewsOne.example",
                     "category_id": "1"},
                    {"num": 3, "name": "Missing", "stream_type": "live", "stream_id": 99,
                     "category_id": "1"},
                    {"num": 4, "name": "Broken", "stream_type": "live", "stream_id": 98,
                     "category_id": "1"}
                ]),
                Some(_) => json!([]),
            }
        };
        respond(200, "application/json", body.to_string())
    };
    let live = |Path((user, pass, file)): Path<(String, String, String)>| async move {
        if user != USER || pass != PASS {
            return respond(403, "text/plain", "bad credentials");
        }
        let Some((id, ext)) = file.rsplit_once('.') else {
            return respond(404, "text/plain", "no such stream");
        };
        if id == "99" {
            return respond(404, "text/plain", "no such stream");
        }
        if id == "98" {
            // A 200 that is neither HLS nor media: the error must not show the URL's
            // credentials either.
            return respond(200, "text/plain", "maintenance, come back later");
        }
        match ext {
            "m3u8" => respond(
                200,
                HLS_TYPE,
                crate::common::media_playlist(&[&format!("/hls/{id}/seg0.ts")]),
            ),
            "ts" => {
                // Endless MPEG-TS: null packets, a few per tick, until the client leaves.
                let packet = {
                    let mut p = vec![0xFFu8; 188];
                    p[0] = 0x47;
                    p
                };
                let chunks = futures::stream::unfold((), move |()| {
                    let chunk = bytes::Bytes::from(packet.repeat(4));
                    async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Some((Ok::<_, std::io::Error>(chunk), ()))
                    }
                });
                axum::response::Response::builder()
                    .header("content-type", "video/mp2t")
                    .body(Body::from_stream(chunks))
                    .expect("response builds")
            }
            _ => respond(404, "text/plain", "no such stream"),
        }
    };
    let segment = |Path((id, seg)): Path<(String, String)>| async move {
        respond(200, "video/mp2t", format!("SEGMENT {id} {seg}"))
    };
    FakeUpstream::bind()
        .await
        .route("/player_api.php", get(api))
        .route("/live/{user}/{pass}/{file}", get(live))
        .route("/hls/{id}/{seg}", get(segment))
        .text("/xmltv.php", "application/xml", guide())
        .start()
}

/// The panel's XMLTV: one programme of News One, now.
fn guide() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    format!(
        "<?xml version=\"1.0\"?>\n<tv><channel id=\"NewsOne.example\"><display-name>News One</display-name></channel>\
         <programme start=\"{}\" stop=\"{}\" channel=\"NewsOne.example\"><title>Panel news</title></programme></tv>\n",
        freesky::xmltv::format_time(now - 600),
        freesky::xmltv::format_time(now + 600)
    )
}

fn service(panel: &FakeUpstream, password: &str, extra: &str) -> String {
    format!(
        "[[services]]\nname = \"Xt\"\nkind = \"xtream\"\nbase_url = \"{}\"\nusername = \"{USER}\"\npassword = \"{password}\"\n{extra}\n",
        panel.base()
    )
}

/// No credential in `text`.
fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains(PASS), "{what} shows the password: {text}");
    assert!(
        !text.contains(&format!("/{USER}/")) && !text.contains(&format!("={USER}")),
        "{what} shows the username: {text}"
    );
}

#[tokio::test]
async fn channels_account_hls_playback_and_no_credentials_shown() {
    let up = panel(2).await;
    let app = TestApp::spawn(&service(&up, PASS, "")).await;

    // Channels in the panel's order, with group, logo and guide id.
    let all = app.channels().await;
    let names: Vec<_> = all.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["News One", "Sport One", "Missing", "Broken"]);
    let news = app.channel_named("News One").await;
    assert_eq!(news["group"], "News");
    assert_eq!(news["logo"], "http://logo.example/n1.png");
    assert_eq!(news["guide_id"], "NewsOne.example");
    assert_eq!(news["sources"][0]["channel_id"], "10");
    assert_eq!(app.channel_named("Sport One").await["group"], "Sport");

    // The account in the status.
    let status = app.service_status("Xt").await;
    assert_eq!(status["last_error"], Value::Null, "{status:#}");
    assert_eq!(status["channel_count"], 4, "{status:#}");
    assert_eq!(status["account"]["expires"], "2027-01-01T00:00:00Z");
    assert_eq!(status["account"]["max_connections"], 2);
    assert_eq!(status["account"]["status"], "Active");

    // HLS through freesky: the panel's playlist, rewritten; a segment through its link.
    let playlist = app.get_text_ok("/api/stream/Xt:10.m3u8").await;
    let uris = playlist_uris(&playlist);
    assert_eq!(uris.len(), 1, "{playlist}");
    assert!(
        uris[0].starts_with(&format!("{}/proxy/", app.base)),
        "{playlist}"
    );
    assert_no_secret("the rewritten playlist", &playlist);
    let seg = app.get(&uris[0]).await;
    assert_eq!(seg.status(), 200);
    assert_eq!(seg.text().await.unwrap(), "SEGMENT 10 seg0.ts");
    assert_eq!(up.hits(&format!("/live/{USER}/{PASS}/10.m3u8")), 1);
    assert_eq!(up.hits("/hls/10/seg0.ts"), 1);

    // A stream the panel does not have: the error names the URL without credentials
    // (host and last path segment only).
    let resp = app.get("/api/stream/Xt:99.m3u8").await;
    let body = assert_api_error(resp, 502).await;
    let text = body.to_string();
    assert!(
        text.contains("404") && text.contains(&format!("{}/…/99.m3u8", up.base())),
        "{text}"
    );
    assert_no_secret("the error body", &text);
    let resp = app.get("/api/stream/Xt:98.m3u8").await;
    let text = assert_api_error(resp, 502).await.to_string();
    assert!(
        text.contains("not an HLS playlist") && text.contains(&format!("{}/…/98.m3u8", up.base())),
        "{text}"
    );
    assert_no_secret("the not-HLS error body", &text);

    // Nothing clients can read shows the credentials.
    for path in ["/api/services/status", "/api/channels/all", "/playlist.m3u"] {
        let text = app.get_text_ok(path).await;
        assert_no_secret(path, &text);
    }
    // The guide is the panel's xmltv.php, asked with the credentials.
    let epg = app.get_text_ok("/epg.xml").await;
    assert!(epg.contains("Panel news"), "{epg}");
    let guide = up.requests_to("/xmltv.php");
    assert!(!guide.is_empty());
    let q = guide[0].query.clone().unwrap_or_default();
    assert!(
        q.contains(&format!("username={USER}")) && q.contains("password="),
        "{q}"
    );
}

#[tokio::test]
async fn category_filter_keeps_named_categories() {
    let up = panel(1).await;
    let app = TestApp::spawn(&service(&up, PASS, "categories = [\"sport\"]")).await;
    assert_eq!(app.channel_names().await, ["Sport One"]);
}

#[tokio::test]
async fn refused_login_is_clear_and_other_services_keep_serving() {
    let up = panel(1).await;
    let m3u = FakeUpstream::bind().await;
    let list = format!(
        "#EXTM3U\n#EXTINF:-1,Other Channel\n{}\n",
        m3u.url("/other.m3u8")
    );
    let m3u = m3u.text("/list.m3u", M3U_TYPE, list).start();
    let config = format!(
        "{}\n[[services]]\nname = \"List\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        service(&up, "wrong-pass-1234", ""),
        m3u.url("/list.m3u")
    );
    let app = TestApp::spawn(&config).await;

    assert_eq!(app.channel_names().await, ["Other Channel"]);
    let status = app.service_status("Xt").await;
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("auth=0"), "{status:#}");
    assert!(
        !status.to_string().contains("wrong-pass-1234"),
        "{status:#}"
    );
    assert_eq!(status["channel_count"], 0, "{status:#}");
    assert_eq!(app.service_status("List").await["last_error"], Value::Null);
}

/// Reads from a streaming response until `want` bytes have arrived.
async fn read_at_least(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    want: usize,
) {
    let mut got = 0;
    while got < want {
        let chunk = tokio::time::timeout(HANG_GUARD, body.next())
            .await
            .unwrap_or_else(|_| panic!("only {got} of {want} bytes arrived"))
            .unwrap_or_else(|| panic!("stream ended after {got} bytes"))
            .expect("chunk");
        got += chunk.len();
    }
}

#[tokio::test]
async fn connection_cap_refuses_a_second_channel_while_the_first_plays() {
    let up = panel(1).await;
    let app = TestApp::spawn(&service(&up, PASS, "output = \"ts\"")).await;
    assert_eq!(app.channels().await.len(), 4);

    let first = app.get("/api/stream/Xt:10.ts").await;
    assert_eq!(first.status(), 200);
    let mut first = first.bytes_stream();
    read_at_least(&mut first, 4 * 188 * 3).await;
    assert_eq!(
        app.service_status("Xt").await["account"]["connections_in_use"],
        1
    );

    let second = app.get("/api/stream/Xt:20.ts").await;
    let body = assert_api_error(second, 502).await;
    assert!(
        body.to_string()
            .contains("xtream account allows 1 connection, all in use"),
        "{body:#}"
    );
    assert_eq!(up.hits(&format!("/live/{USER}/{PASS}/20.ts")), 0);
    // Refused by freesky before asking the panel, again and again (a household with
    // more TVs than the line allows): not the panel's failure, so its circuit stays
    // closed and fallback keeps trying it (5 failures in a row would open it).
    for _ in 0..4 {
        let again = app.get("/api/stream/Xt:20.ts").await;
        assert_eq!(again.status(), 502);
    }
    let status = app.service_status("Xt").await;
    assert_eq!(status["circuit"], "closed", "{status:#}");
    assert_eq!(status["healthy"], true, "{status:#}");

    // The first keeps flowing.
    read_at_least(&mut first, 4 * 188 * 10).await;
}

/// A panel answering its API with a login page that echoes the account (as some do)
/// gets a clear error in the status, without the password or the username in it.
#[tokio::test]
async fn a_login_page_echoing_the_account_shows_no_credential() {
    let up = FakeUpstream::bind()
        .await
        .text(
            "/player_api.php",
            "text/html",
            // The password across the 60 characters the error shows.
            format!(
                "<html><body><p>Bad login for {USER}, the password typed: {PASS}, retry</p></body></html>"
            ),
        )
        .start();
    let app = TestApp::spawn(&service(&up, PASS, "")).await;
    assert!(app.channels().await.is_empty());
    let status = app.service_status("Xt").await;
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("did not answer JSON"), "{status:#}");
    assert!(
        !error.contains(&PASS[..4]),
        "the status shows the password, or a part: {error}"
    );
    let text = app.get_text_ok("/api/services/status").await;
    assert!(!text.contains(PASS), "{text}");
}
