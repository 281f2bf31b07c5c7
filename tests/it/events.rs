//! Sports and events (`json_api` `[services.events]`): a fake API lists events relative
//! to now; only those around their time are channels, in the configured group, under ids
//! and numbers that persist; they play through the proxy, have programmes in a guide
//! that `tv_validate_file` accepts, and malformed entries are skipped. An event listed
//! later reaches the guide soon, reading no other service's guide again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::Path;
use axum::routing::get;
use serde_json::{json, Value};

use crate::common::{
    media_playlist, playlist_uris, respond, tv_validate, FakeUpstream, TestApp, HLS_TYPE,
};

const MIN: i64 = 60;

/// XMLTV's form of unix time `t`.
fn xmltv_time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .format("%Y%m%d%H%M%S +0000")
        .to_string()
}

fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `/api/stream/{id}.m3u8`, which must answer 200 with HLS.
async fn open_stream(app: &TestApp, id: &str) -> String {
    let resp = app.get(&format!("/api/stream/{id}.m3u8")).await;
    let status = resp.status();
    let body = resp.text().await.expect("body");
    assert_eq!(status, 200, "stream {id}: {body}");
    assert!(body.starts_with("#EXTM3U"), "{body}");
    body
}

fn source_ids(channel: &Value) -> Vec<String> {
    channel["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|s| s["channel_id"].as_str().expect("channel_id").to_string())
        .collect()
}

#[tokio::test]
async fn events_are_channels_around_their_time_with_guide_and_streams() {
    let cdn = FakeUpstream::bind()
        .await
        .text("/live/final.m3u8", HLS_TYPE, media_playlist(&["s0.ts"]))
        .bytes("/live/s0.ts", "video/mp2t", b"final segment".to_vec())
        .text("/live/semi.m3u8", HLS_TYPE, media_playlist(&["t0.ts"]))
        .bytes("/live/t0.ts", "video/mp2t", b"semi segment".to_vec())
        .text("/live/news.m3u8", HLS_TYPE, media_playlist(&["n0.ts"]))
        .start();
    let cdn_base = cdn.base();
    let now = chrono::Utc::now().timestamp();
    let (live_start, live_end) = (now - 30 * MIN, now + 75 * MIN);
    let (soon_start, soon_end) = (now + 10 * MIN, now + 130 * MIN);
    // The second listing renames the live event: its channel id and number must stay.
    let listings = Arc::new(AtomicUsize::new(0));
    let events = {
        let cdn_base = cdn_base.clone();
        let listings = listings.clone();
        move || {
            let n = listings.fetch_add(1, Ordering::SeqCst);
            let live_title = if n == 0 {
                "Reds v Blues"
            } else {
                "Reds v Blues (delayed)"
            };
            json!({"data": {"events": [
                {"id": 101, "title": live_title, "league": "Premier",
                 "starts": rfc3339(live_start), "ends": rfc3339(live_end),
                 "hls": format!("{cdn_base}/live/final.m3u8")},
                {"id": "semi-2", "title": "Semi Final", "league": "Cup",
                 "starts": soon_start, "ends": soon_end.to_string()},
                {"id": 103, "title": "Tomorrow's Derby", "league": "Premier",
                 "starts": now + 24 * 3600, "ends": now + 26 * 3600},
                {"id": 104, "title": "Old Match", "starts": now - 4 * 3600, "ends": now - 2 * 3600},
                {"id": 105, "title": "No Start", "ends": now + 3600},
                {"id": 106, "title": "Bad Time", "starts": "half past nine", "ends": now + 3600},
            ]}})
            .to_string()
        }
    };
    let api = FakeUpstream::bind()
        .await
        .route(
            "/v1/events",
            get(move || {
                let body = events();
                async move { respond(200, "application/json", body) }
            }),
        )
        .text(
            "/v1/bad-events",
            "application/json",
            json!([{"id": 1, "title": "No start", "ends": now + 3600},
                   {"id": 2, "title": "Bad end", "starts": now, "ends": "later"}])
            .to_string(),
        )
        .text(
            "/v1/channels",
            "application/json",
            json!([{"id": "news", "name": "Sports News"}]).to_string(),
        )
        .route(
            "/v1/stream/{id}",
            get(move |Path(id): Path<String>| {
                let cdn_base = cdn_base.clone();
                async move {
                    let file = if id == "semi-2" { "semi" } else { "news" };
                    let body = json!({"url": format!("{cdn_base}/live/{file}.m3u8")});
                    respond(200, "application/json", body.to_string())
                }
            }),
        )
        .start();
    let config = r#"
[[services]]
name = "Event API"
kind = "json_api"
base_url = "@API@/v1/"
[services.channels]
path = "channels"
[services.stream]
path = "stream/{channel_id}"
url = "/url"
[services.events]
path = "events"
list = "/data/events"
start = "/starts"
end = "/ends"
league = "/league"
stream = "/hls"
group = "Live Sports"
lead = "30m"
tail = "15m"

[[services]]
name = "BadEvents"
kind = "json_api"
base_url = "@API@/v1/"
[services.events]
path = "bad-events"
[services.stream]
path = "stream/{channel_id}"
url = "/url"
"#
    .replace("@API@", &api.base());
    let mut app = TestApp::spawn(&config).await;

    // Only the live event and the one starting in 10 minutes, besides the fixed channel.
    assert_eq!(
        app.channel_names().await,
        ["Cup: Semi Final", "Premier: Reds v Blues", "Sports News"]
    );
    let live = app.channel_named("Premier: Reds v Blues").await;
    let soon = app.channel_named("Cup: Semi Final").await;
    for (ch, id, guide_id) in [
        (&live, "event-101", "101.event-api.event"),
        (&soon, "event-semi-2", "semi-2.event-api.event"),
    ] {
        assert_eq!(ch["group"], "Live Sports", "{ch}");
        assert_eq!(source_ids(ch), [id], "{ch}");
        assert_eq!(ch["guide_id"], guide_id, "{ch}");
    }
    let status = app.service_status("Event API").await;
    assert_eq!(status["channel_count"], 3, "{status}");
    assert_eq!(status["last_error"], Value::Null, "{status}");

    // A list of nothing but malformed entries says why; the other service still serves.
    let bad = app.service_status("BadEvents").await;
    let why = bad["last_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("none of the 2 event entries is usable") && why.contains("no start"),
        "{bad}"
    );

    let playlist = app.get_text_ok("/playlist.m3u").await;
    assert!(
        playlist.contains("group-title=\"Live Sports\",Premier: Reds v Blues"),
        "{playlist}"
    );
    assert!(!playlist.contains("Derby") && !playlist.contains("Old Match"));

    // The live event plays from the list's own URL, rewritten through the proxy.
    let hls = open_stream(&app, live["id"].as_str().unwrap()).await;
    let uris = playlist_uris(&hls);
    assert_eq!(uris.len(), 1, "{hls}");
    assert!(
        uris[0].starts_with(&format!("{}/proxy/", app.base)),
        "{hls}"
    );
    let seg = app.get(&uris[0]).await;
    assert_eq!(seg.status(), 200);
    assert_eq!(&seg.bytes().await.unwrap()[..], b"final segment");
    assert_eq!(api.hits("/v1/stream/101"), 0);
    // The soon one has no URL in the list: it resolves through [services.stream].
    let hls = open_stream(&app, soon["id"].as_str().unwrap()).await;
    let seg = app.get(&playlist_uris(&hls)[0]).await;
    assert_eq!(&seg.bytes().await.unwrap()[..], b"semi segment");
    assert_eq!(api.hits("/v1/stream/semi-2"), 1);

    // The guide has their programmes, at their times, and is valid XMLTV.
    let xml = app.get_text_ok("/epg.xml").await;
    tv_validate(xml.as_bytes());
    for (guide_id, start, stop, title, league) in [
        (
            "101.event-api.event",
            live_start,
            live_end,
            "Reds v Blues",
            "Premier",
        ),
        (
            "semi-2.event-api.event",
            soon_start,
            soon_end,
            "Semi Final",
            "Cup",
        ),
    ] {
        let programme = format!(
            "<programme start=\"{}\" stop=\"{}\" channel=\"{guide_id}\">",
            xmltv_time(start),
            xmltv_time(stop)
        );
        let at = xml
            .find(&programme)
            .unwrap_or_else(|| panic!("no {programme} in\n{xml}"));
        let rest = &xml[at..];
        let rest = &rest[..rest.find("</programme>").unwrap()];
        assert!(rest.contains(&format!("<title>{title}</title>")), "{rest}");
        assert!(
            rest.contains(&format!("<category>{league}</category>")),
            "{rest}"
        );
        assert!(
            xml.contains(&format!("<channel id=\"{guide_id}\">")),
            "{xml}"
        );
    }
    for absent in ["Derby", "Old Match", "No Start", "Bad Time"] {
        assert!(!xml.contains(absent), "{absent} in\n{xml}");
    }

    // After a restart (a fresh listing renames the live event) ids and numbers stay.
    app.restart().await;
    let renamed = app.channel_named("Premier: Reds v Blues (delayed)").await;
    assert_eq!(renamed["id"], live["id"]);
    assert_eq!(renamed["number"], live["number"]);
    assert_eq!(source_ids(&renamed), ["event-101"]);
    let soon_again = app.channel_named("Cup: Semi Final").await;
    assert_eq!(soon_again["id"], soon["id"]);
    assert_eq!(soon_again["number"], soon["number"]);
    assert!(listings.load(Ordering::SeqCst) >= 2);
}

/// An event listed after the guide was read gets its programme without waiting for
/// `guide.refresh`: only the events service's guide is read again (the other service's
/// external guide is not fetched twice), and an event that left the list leaves the guide.
#[tokio::test]
async fn an_event_listed_later_reaches_the_guide_without_reading_other_guides() {
    let now = chrono::Utc::now().timestamp();
    let (start, end) = (now - 10 * MIN, now + 80 * MIN);
    let later = Arc::new(AtomicUsize::new(0));
    let flag = later.clone();
    let api = FakeUpstream::bind()
        .await
        .route(
            "/v1/events",
            get(move || {
                let (id, title) = if flag.load(Ordering::SeqCst) == 0 {
                    (201, "Early Match")
                } else {
                    (202, "Late Match")
                };
                let body = json!([{"id": id, "title": title, "start": start, "end": end,
                                   "hls": "http://127.0.0.1:9/live.m3u8"}]);
                async move { respond(200, "application/json", body.to_string()) }
            }),
        )
        .start();
    let ext = FakeUpstream::bind()
        .await
        .text(
            "/ext.m3u",
            "audio/x-mpegurl",
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"ext.one\",Ext One\nhttp://127.0.0.1:9/1.m3u8\n",
        )
        .text(
            "/ext-guide.xml",
            "application/xml",
            format!(
                "<?xml version=\"1.0\"?>\n<tv><channel id=\"ext.one\"><display-name>Ext One</display-name></channel>\
                 <programme start=\"{}\" stop=\"{}\" channel=\"ext.one\"><title>Ext Show</title></programme></tv>\n",
                xmltv_time(now - 30 * MIN),
                xmltv_time(now + 30 * MIN)
            ),
        )
        .start();
    let app = TestApp::spawn(&format!(
        r#"
[cache]
channels_ttl = "1s"

[guide]
refresh = "6h"

[[services]]
name = "Event API"
kind = "json_api"
base_url = "{}/v1/"
[services.events]
path = "events"
stream = "/hls"

[[services]]
name = "Ext"
kind = "m3u"
url = "{}/ext.m3u"
epg_url = "{}/ext-guide.xml"
"#,
        api.base(),
        ext.base(),
        ext.base()
    ))
    .await;

    let xml = app.get_text_ok("/epg.xml").await;
    assert!(xml.contains("<title>Early Match</title>"), "{xml}");
    assert!(xml.contains("<title>Ext Show</title>"), "{xml}");
    let ext_reads = ext.hits("/ext-guide.xml");
    assert_eq!(ext_reads, 1);

    // The next listing has another event (and no longer the first): within a few
    // channel-list lifetimes the guide follows, with no request from anyone.
    later.store(1, Ordering::SeqCst);
    let xml = crate::common::eventually_within(
        std::time::Duration::from_secs(10),
        "the later event to reach the guide",
        || async {
            let xml = app.get_text_ok("/epg.xml").await;
            if xml.contains("<title>Late Match</title>") && !xml.contains("Early Match") {
                Ok(xml)
            } else {
                Err(xml)
            }
        },
    )
    .await;
    tv_validate(xml.as_bytes());
    let late = format!(
        "<programme start=\"{}\" stop=\"{}\" channel=\"202.event-api.event\">",
        xmltv_time(start),
        xmltv_time(end)
    );
    assert!(xml.contains(&late), "{xml}");
    assert!(!xml.contains("201.event-api.event"), "{xml}");
    // The other service's guide was kept, not fetched again.
    assert!(xml.contains("<title>Ext Show</title>"), "{xml}");
    assert_eq!(ext.hits("/ext-guide.xml"), ext_reads);
    assert!(
        ext.hits("/ext.m3u") >= 2,
        "its channel list was read again meanwhile"
    );
}
