//! HDHomeRun tuner emulation as Plex, Jellyfin and Emby read it (SPEC section 4):
//! the JSON and XML they parse, a DeviceID that survives restarts, and tuner_count
//! enforced with 503.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::routing::get;
use futures::StreamExt;
use serde_json::Value;

use crate::common::{
    assert_api_error, json_of, media_playlist, respond, FakeUpstream, TestApp, HANG_GUARD,
    HLS_TYPE, M3U_TYPE,
};

async fn two_service_app(extra: &str) -> (TestApp, FakeUpstream) {
    let portal = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"One.example\",News & Weather\nhttp://127.0.0.1:9/one.m3u8\n\
             #EXTINF:-1 tvg-id=\"Two.example\",Sport <Two>\nhttp://127.0.0.1:9/two.m3u8\n",
        )
        .start();
    let app = TestApp::spawn(&format!(
        r#"{extra}
[hdhomerun]
enabled = true
friendly_name = "Living room"
tuner_count = 2

[[services]]
name = "Demo"
kind = "demo"
priority = 1

[[services]]
name = "Portal"
kind = "m3u"
priority = 2
url = "{}/list.m3u"
"#,
        portal.base()
    ))
    .await;
    (app, portal)
}

fn device_id_of(discover: &Value) -> u32 {
    let id = discover["DeviceID"].as_str().expect("DeviceID is a string");
    assert_eq!(id.len(), 8, "DeviceID `{id}` is not 8 hex digits");
    u32::from_str_radix(id, 16).unwrap_or_else(|_| panic!("DeviceID `{id}` is not hex"))
}

#[tokio::test]
async fn discover_and_lineup_carry_what_media_servers_read() {
    let (app, _portal) = two_service_app("").await;

    let (status, d) = app.get_json("/discover.json").await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["FriendlyName"], "Living room");
    for key in [
        "ModelNumber",
        "FirmwareName",
        "FirmwareVersion",
        "DeviceAuth",
    ] {
        assert!(
            d[key].as_str().is_some_and(|v| !v.is_empty()),
            "{key} missing or empty in {d}"
        );
    }
    // Jellyfin appends ?transcode= to stream URLs of "HDTC" models; we are not one.
    assert!(!d["ModelNumber"].as_str().unwrap().contains("HDTC"));
    assert!(freesky::hdhr::is_valid_device_id(device_id_of(&d)));
    // The device description says the same maker and model.
    let xml = app.get_text_ok("/device.xml").await;
    for (key, tag) in [
        ("Manufacturer", "manufacturer"),
        ("ModelNumber", "modelNumber"),
    ] {
        let said = format!("<{tag}>{}</{tag}>", d[key].as_str().unwrap());
        assert!(xml.contains(&said), "{said} not in {xml}");
    }
    assert_eq!(d["BaseURL"], app.base.as_str());
    assert_eq!(d["LineupURL"], app.url("/lineup.json"));
    assert_eq!(d["TunerCount"], 2);

    let (status, lineup) = app.get_json("/lineup.json").await;
    assert_eq!(status, 200, "{lineup}");
    let channels = app.channels().await;
    let entries = lineup.as_array().expect("lineup.json is an array");
    assert_eq!(entries.len(), channels.len());
    for (entry, channel) in entries.iter().zip(&channels) {
        let number = channel["number"].as_u64().expect("number");
        // GuideNumber is a string in real devices' JSON; Plex compares it as text.
        assert_eq!(entry["GuideNumber"], number.to_string(), "{entry}");
        assert_eq!(entry["GuideName"], channel["name"], "{entry}");
        assert_eq!(entry["URL"], app.url(&format!("/auto/v{number}")));
        for key in ["HD", "Favorite", "DRM"] {
            assert!(entry[key].is_boolean(), "{key} in {entry}");
        }
        assert_eq!(entry["DRM"], false);
        assert!(entry["VideoCodec"].is_string() && entry["AudioCodec"].is_string());
    }
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["GuideName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Demo", "News & Weather", "Sport <Two>"]);

    let (status, s) = app.get_json("/lineup_status.json").await;
    assert_eq!(status, 200);
    assert_eq!(s["ScanInProgress"], 0);
    assert_eq!(s["ScanPossible"], 1);
    assert!(s["Source"].is_string() && s["SourceList"].is_array(), "{s}");

    for scan in ["?scan=start", "?scan=abort", ""] {
        let r = app.post(&format!("/lineup.post{scan}")).await;
        assert_eq!(r.status(), 200, "lineup.post{scan}");
    }
    let bogus = app.post("/lineup.post?scan=bogus").await;
    let body = assert_api_error(bogus, 400).await;
    assert!(
        body["error"].as_str().unwrap().contains("`bogus`"),
        "{body}"
    );
}

#[tokio::test]
async fn device_xml_is_a_upnp_root_device_with_the_same_identity() {
    let (app, _portal) = two_service_app("").await;
    let (_, d) = app.get_json("/discover.json").await;
    let id = d["DeviceID"].as_str().unwrap().to_string();
    for path in ["/device.xml", "/capability"] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.contains("xml"), "{path}: content-type {ct}");
        let xml = r.text().await.unwrap();
        let (root, xmlns, texts) = parse_xml(&xml);
        assert_eq!(root, "root", "{path}:\n{xml}");
        assert_eq!(xmlns.as_deref(), Some("urn:schemas-upnp-org:device-1-0"));
        let text = |name: &str| {
            texts
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .unwrap_or_else(|| panic!("no <{name}> in {path}:\n{xml}"))
        };
        assert_eq!(text("friendlyName"), "Living room");
        assert_eq!(text("serialNumber"), id);
        assert_eq!(text("URLBase"), app.base);
    }
}

/// The root element's name and `xmlns`, and every element's (name, text); panics
/// when the document is not well-formed.
fn parse_xml(xml: &str) -> (String, Option<String>, Vec<(String, String)>) {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let (mut root, mut xmlns, mut texts) = (None, None, Vec::new());
    let mut open: Vec<String> = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = e.local_name().as_ref().to_string();
                if root.is_none() {
                    root = Some(name.clone());
                    xmlns = e
                        .try_get_attribute("xmlns")
                        .unwrap()
                        .map(|a| a.value.to_string());
                }
                open.push(name);
            }
            Ok(Event::Text(t)) => {
                if let Some(name) = open.last() {
                    let text = quick_xml::escape::unescape(&t.xml10_content())
                        .unwrap()
                        .trim()
                        .to_string();
                    if !text.is_empty() {
                        texts.push((name.clone(), text));
                    }
                }
            }
            Ok(Event::End(_)) => {
                open.pop();
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("not well-formed XML: {e}\n{xml}"),
        }
    }
    assert!(open.is_empty(), "unclosed elements {open:?}\n{xml}");
    (root.expect("no root element"), xmlns, texts)
}

#[tokio::test]
async fn public_url_is_used_for_every_tuner_url() {
    let (app, _portal) = two_service_app(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{state_dir}'\npublic_url = \"http://tv.example:8005/\"\n",
    )
    .await;
    let (_, d) = app.get_json("/discover.json").await;
    assert_eq!(d["BaseURL"], "http://tv.example:8005");
    assert_eq!(d["LineupURL"], "http://tv.example:8005/lineup.json");
    let (_, lineup) = app.get_json("/lineup.json").await;
    assert_eq!(lineup[0]["URL"], "http://tv.example:8005/auto/v1");
}

#[tokio::test]
async fn device_id_and_auth_survive_a_restart() {
    let (mut app, _portal) = two_service_app("").await;
    let (_, before) = app.get_json("/discover.json").await;
    app.restart().await;
    let (_, after) = app.get_json("/discover.json").await;
    assert_eq!(before["DeviceID"], after["DeviceID"]);
    assert_eq!(before["DeviceAuth"], after["DeviceAuth"]);

    // A different state_dir is a different tuner.
    let (other, _portal2) = two_service_app("").await;
    let (_, third) = other.get_json("/discover.json").await;
    assert_ne!(before["DeviceID"], third["DeviceID"]);
}

#[tokio::test]
async fn a_tuner_beyond_tuner_count_gets_503_and_frees_when_the_viewer_leaves() {
    let (app, _portal) = two_service_app("").await;
    let first = open_tuner(&app, "/auto/v1").await;
    let second = open_tuner(&app, "/auto/v1").await;
    // Both tuners are taken: a third viewer (any channel) is refused as busy.
    let busy = app.get("/auto/v1").await;
    assert_eq!(
        busy.headers()
            .get("x-hdhomerun-error")
            .map(|v| v.to_str().unwrap()),
        Some("805 All Tuners In Use"),
        "as a real tuner says it"
    );
    let body = assert_api_error(busy, 503).await;
    assert!(body["error"].as_str().unwrap().contains("tuners"), "{body}");
    // The operator sees them taken.
    let metrics = app.get_text_ok("/metrics").await;
    for line in ["freesky_tuners_in_use 2", "freesky_tuners 2"] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }

    // The tuner frees once a viewer disconnects (the server notices on its next write).
    drop(first);
    crate::common::eventually("the tuner to be freed after its viewer left", || async {
        let r = app.get("/auto/v1").await;
        match r.status().as_u16() {
            200 => Ok(()),
            503 => Err("503"),
            other => panic!("/auto/v1 answered {other}"),
        }
    })
    .await;
    drop(second);
}

/// Opens a tuner stream and reads its first bytes; the tuner stays taken until the
/// returned stream is dropped.
async fn open_tuner(
    app: &TestApp,
    path: &str,
) -> impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> {
    let resp = app.get(path).await;
    assert_eq!(resp.status(), 200, "{path}");
    assert_eq!(resp.headers()["content-type"], "video/MP2T");
    // Upstream bytes: a browser must neither sniff nor run them (endpoints.md).
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        resp.headers()["content-security-policy"],
        "sandbox; default-src 'none'"
    );
    let mut body = Box::pin(resp.bytes_stream());
    let chunk = tokio::time::timeout(HANG_GUARD, body.next())
        .await
        .expect("tuner stream sent nothing")
        .expect("tuner stream ended at once")
        .expect("tuner chunk");
    assert_eq!(chunk[0], 0x47, "not MPEG-TS (sync byte)");
    body
}

#[tokio::test]
async fn bad_tuner_paths_and_a_disabled_tuner_get_404() {
    let (app, _portal) = two_service_app("").await;
    let unknown = app.get("/auto/v999").await;
    assert_eq!(
        unknown.headers()["x-hdhomerun-error"],
        "801 Unknown Channel"
    );
    assert_api_error(unknown, 404).await;
    assert_api_error(app.get("/auto/ch1").await, 404).await;
    assert_api_error(app.get("/auto/v").await, 404).await;
    // No virtual tuners unless max_channels is set.
    let body = assert_api_error(app.get("/tuners/1/discover.json").await, 404).await;
    assert!(
        body["error"].as_str().unwrap().contains("max_channels"),
        "{body}"
    );
    assert_eq!(app.get_json("/api/tuners").await.1, serde_json::json!([]));

    let off = TestApp::spawn(
        "[hdhomerun]\nenabled = false\n\n[[services]]\nname = \"Demo\"\nkind = \"demo\"\n",
    )
    .await;
    for path in [
        "/discover.json",
        "/lineup.json",
        "/device.xml",
        "/auto/v1",
        "/tuners/1/discover.json",
        "/api/tuners",
    ] {
        let (status, body) = json_of(off.get(path).await).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("HDHomeRun"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn guide_numbers_stay_when_the_upstream_adds_and_removes_channels() {
    let list = Arc::new(Mutex::new(vec!["Alpha", "Bravo", "Charlie"]));
    let served = list.clone();
    let up = FakeUpstream::bind()
        .await
        .route(
            "/list.m3u",
            get(move || {
                let names = served.lock().unwrap().clone();
                async move {
                    let mut m3u = String::from("#EXTM3U\n");
                    for n in names {
                        m3u.push_str(&format!("#EXTINF:-1,{n}\nhttp://127.0.0.1:9/{n}.m3u8\n"));
                    }
                    respond(200, M3U_TYPE, m3u)
                }
            }),
        )
        .start();
    let mut app = TestApp::spawn(&format!(
        "[cache]\nchannels_ttl = \"1s\"\n\n[[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"{}/list.m3u\"\n",
        up.base()
    ))
    .await;
    let numbers = |lineup: &Value| -> Vec<(String, String)> {
        lineup
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["GuideName"].as_str().unwrap().to_string(),
                    e["GuideNumber"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (_, first) = app.get_json("/lineup.json").await;
    let first = numbers(&first);
    assert_eq!(first.len(), 3);
    let number_of = |list: &[(String, String)], name: &str| {
        list.iter()
            .find(|(n, _)| n == name)
            .map(|(_, g)| g.clone())
            .unwrap_or_else(|| panic!("{name} not in {list:?}"))
    };

    // Bravo leaves, Delta arrives: the others keep their numbers, Delta gets a new one.
    *list.lock().unwrap() = vec!["Delta", "Alpha", "Charlie"];
    let second = crate::common::eventually("the lineup to list Delta", || async {
        let (_, l) = app.get_json("/lineup.json").await;
        let l = numbers(&l);
        if l.iter().any(|(n, _)| n == "Delta") {
            Ok(l)
        } else {
            Err(format!("{l:?}"))
        }
    })
    .await;
    assert_eq!(second.len(), 3, "{second:?}");
    for name in ["Alpha", "Charlie"] {
        assert_eq!(number_of(&second, name), number_of(&first, name), "{name}");
    }
    let delta = number_of(&second, "Delta");
    assert!(
        first.iter().all(|(_, g)| *g != delta),
        "Delta reused a number: {first:?} {second:?}"
    );

    // Bravo comes back after a restart: its old number, everyone else's too.
    *list.lock().unwrap() = vec!["Bravo", "Charlie", "Alpha", "Delta"];
    app.restart().await;
    let (_, third) = app.get_json("/lineup.json").await;
    let third = numbers(&third);
    for name in ["Alpha", "Bravo", "Charlie"] {
        assert_eq!(number_of(&third, name), number_of(&first, name), "{name}");
    }
    assert_eq!(number_of(&third, "Delta"), delta);
}

/// 25 channels in three groups, listed out of group order (News 2 + Sports 12 + Movies
/// 9 + News 2), News 1 playable; tuners split at 10 channels.
/// With `require_account`, the virtual tuners split the channels the tuner's account
/// sees, not the whole lineup: none is listed with channels its lineup then leaves out.
#[tokio::test]
async fn virtual_tuners_split_only_what_the_tuner_account_sees() {
    let (plain, up) = split_app().await;
    let o = up.base();
    drop(plain);
    let app = TestApp::spawn(&format!(
        r#"
[server]
bind = "127.0.0.1:0"
state_dir = '{{state_dir}}'
require_account = true
admin_token = "tuner-admin-9"

[hdhomerun]
friendly_name = "Living room"
tuner_count = 2
max_channels = 3
account = "tv"

[[users]]
name = "tv"
password = "tv-pw-1"
groups = ["News"]

[[services]]
name = "P"
kind = "m3u"
url = "{o}/list.m3u"
"#
    ))
    .await;
    let admin = |path: &str| {
        app.client
            .get(app.url(path))
            .header("authorization", "Bearer tuner-admin-9")
            .send()
    };
    let list: Value = admin("/api/tuners").await.unwrap().json().await.unwrap();
    let list = list.as_array().unwrap_or_else(|| panic!("{list}"));
    // Four News channels, three to a tuner.
    let counts: Vec<u64> = list
        .iter()
        .map(|t| t["channels"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [3, 1], "{list:#?}");
    let mut seen = 0;
    for (i, t) in list.iter().enumerate() {
        assert_eq!(t["groups"], serde_json::json!(["News"]), "{t}");
        let (status, lineup) = app
            .get_json(&format!("/tuners/{}/lineup.json", i + 1))
            .await;
        assert_eq!(status, 200, "{lineup}");
        let entries = lineup.as_array().unwrap();
        assert_eq!(entries.len() as u64, counts[i], "tuner {}: {lineup}", i + 1);
        for e in entries {
            assert!(e["GuideName"].as_str().unwrap().starts_with("News "), "{e}");
        }
        seen += entries.len();
    }
    assert_eq!(seen, 4);
}

async fn split_app() -> (TestApp, FakeUpstream) {
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let mut m3u = String::from("#EXTM3U\n");
    let mut add = |group: &str, name: String| {
        m3u.push_str(&format!(
            "#EXTINF:-1 group-title=\"{group}\",{name}\n{o}/live/{}.m3u8\n",
            name.to_lowercase().replace(' ', "-")
        ));
    };
    for i in 1..=2 {
        add("News", format!("News {i}"));
    }
    for i in 1..=12 {
        add("Sports", format!("Sports {i}"));
    }
    for i in 1..=9 {
        add("Movies", format!("Movies {i}"));
    }
    for i in 3..=4 {
        add("News", format!("News {i}"));
    }
    let packet = {
        let mut p = [0u8; 188];
        p[0] = 0x47;
        p.repeat(50)
    };
    let up = up
        .text("/list.m3u", M3U_TYPE, m3u)
        .text(
            "/live/news-1.m3u8",
            HLS_TYPE,
            media_playlist(&["seg.ts"]).replace("#EXT-X-ENDLIST\n", ""),
        )
        .bytes("/live/seg.ts", "video/mp2t", packet)
        .start();
    let app = TestApp::spawn(&format!(
        r#"
[hdhomerun]
friendly_name = "Living room"
tuner_count = 2
max_channels = 10

[[services]]
name = "P"
kind = "m3u"
url = "{o}/list.m3u"
"#
    ))
    .await;
    (app, up)
}

#[tokio::test]
async fn a_big_lineup_is_split_by_group_into_virtual_tuners() {
    let (mut app, _up) = split_app().await;
    let channels = app.channels().await;
    assert_eq!(channels.len(), 25);
    let group_of: HashMap<String, String> = channels
        .iter()
        .map(|c| {
            (
                c["number"].to_string(),
                c["group"].as_str().unwrap().to_string(),
            )
        })
        .collect();

    // The top-level device stays the whole lineup.
    let (_, main) = app.get_json("/discover.json").await;
    assert_eq!(main["BaseURL"], app.base.as_str());
    let (_, whole) = app.get_json("/lineup.json").await;
    assert_eq!(whole.as_array().unwrap().len(), 25);

    let (status, list) = app.get_json("/api/tuners").await;
    assert_eq!(status, 200, "{list}");
    let list = list.as_array().unwrap().clone();
    assert!(list.len() >= 3, "{list:#?}");
    let mut tuner_of: HashMap<String, u64> = HashMap::new();
    let mut ids = HashSet::from([main["DeviceID"].as_str().unwrap().to_string()]);
    for (i, t) in list.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(t["n"], n, "{t}");
        let base = app.url(&format!("/tuners/{n}"));
        assert_eq!(t["url"], base.as_str());

        let (status, d) = app.get_json(&format!("/tuners/{n}/discover.json")).await;
        assert_eq!(status, 200, "{d}");
        assert_eq!(d["FriendlyName"], format!("Living room {n}"));
        assert!(freesky::hdhr::is_valid_device_id(device_id_of(&d)));
        assert_eq!(d["DeviceID"], t["device_id"]);
        assert!(
            ids.insert(d["DeviceID"].as_str().unwrap().to_string()),
            "DeviceID {} twice",
            d["DeviceID"]
        );
        assert_eq!(d["BaseURL"], base.as_str());
        assert_eq!(d["LineupURL"], format!("{base}/lineup.json"));
        assert_eq!(d["TunerCount"], 2);

        let (status, lineup) = app.get_json(&format!("/tuners/{n}/lineup.json")).await;
        assert_eq!(status, 200, "{lineup}");
        let entries = lineup.as_array().unwrap();
        assert!(
            !entries.is_empty() && entries.len() <= 10,
            "tuner {n}: {lineup}"
        );
        assert_eq!(t["channels"], entries.len());
        for e in entries {
            let number = e["GuideNumber"].as_str().unwrap().to_string();
            assert_eq!(e["URL"], format!("{base}/auto/v{number}"));
            assert!(
                tuner_of.insert(number.clone(), n).is_none(),
                "channel {number} in two tuners"
            );
        }

        // The rest of the device, under its base.
        let (status, _) = app
            .get_json(&format!("/tuners/{n}/lineup_status.json"))
            .await;
        assert_eq!(status, 200);
        let r = app
            .post(&format!("/tuners/{n}/lineup.post?scan=start"))
            .await;
        assert_eq!(r.status(), 200);
        for path in ["device.xml", "capability"] {
            let xml = app.get_text_ok(&format!("/tuners/{n}/{path}")).await;
            let (_, _, texts) = parse_xml(&xml);
            let text = |name: &str| texts.iter().find(|(k, _)| k == name).unwrap().1.clone();
            assert_eq!(text("URLBase"), base);
            assert_eq!(text("serialNumber"), d["DeviceID"].as_str().unwrap());
            assert_eq!(text("friendlyName"), format!("Living room {n}"));
        }
    }

    // Every channel in exactly one tuner; groups whole unless bigger than a tuner.
    assert_eq!(tuner_of.len(), 25);
    let mut tuners_of_group: HashMap<&str, HashSet<u64>> = HashMap::new();
    for (number, n) in &tuner_of {
        tuners_of_group
            .entry(group_of[number].as_str())
            .or_default()
            .insert(*n);
    }
    assert_eq!(tuners_of_group["News"].len(), 1, "{tuners_of_group:?}");
    assert_eq!(tuners_of_group["Movies"].len(), 1, "{tuners_of_group:?}");
    assert_eq!(tuners_of_group["Sports"].len(), 2, "{tuners_of_group:?}");

    // A virtual tuner plays (any channel: numbers are global); a missing one is 404.
    let news1 = app.channel_named("News 1").await["number"].to_string();
    let n = tuner_of[&news1];
    let resp = app.get(&format!("/tuners/{n}/auto/v{news1}")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "video/MP2T");
    drop(resp);
    for path in [
        "/tuners/99/discover.json".to_string(),
        "/tuners/0/lineup.json".into(),
        "/tuners/x/device.xml".into(),
        format!("/tuners/99/auto/v{news1}"),
    ] {
        let body = assert_api_error(app.get(&path).await, 404).await;
        assert!(
            body["error"].as_str().unwrap().contains("virtual tuner"),
            "{path}: {body}"
        );
    }

    // The same tuners, ids and channels after a restart (on another port).
    let without_url = |list: &[Value]| -> Vec<Value> {
        list.iter()
            .map(|t| {
                let mut t = t.clone();
                t.as_object_mut().unwrap().remove("url");
                t
            })
            .collect()
    };
    app.restart().await;
    let (_, again) = app.get_json("/api/tuners").await;
    assert_eq!(without_url(again.as_array().unwrap()), without_url(&list));
    assert_eq!(again[0]["url"], app.url("/tuners/1"));
}

#[tokio::test]
async fn a_tune_with_duration_ends_after_that_many_seconds() {
    let (app, _portal) = two_service_app("").await;
    // Ends by itself (an endless stream would run into the guard), whether or not its
    // first bytes came within the duration; the first of repeated durations counts, as
    // a tuner reads it.
    for path in ["/auto/v1?duration=1", "/auto/v1?duration=1&duration=1"] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), 200, "{path}");
        let mut body = Box::pin(resp.bytes_stream());
        tokio::time::timeout(HANG_GUARD, async {
            while let Some(chunk) = body.next().await {
                chunk.expect("a clean end, not an error");
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{path}: the stream ended after its duration"));
    }
    // Nonsense is refused before a tuner is taken: a recorder would record for ever.
    for bad in ["x", "-5", "0", "1.5", ""] {
        let path = format!("/auto/v1?duration={bad}");
        let body = assert_api_error(app.get(&path).await, 400).await;
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("whole seconds")),
            "{path}: {body}"
        );
    }
    // Without it the stream goes on.
    for path in ["/auto/v1", "/auto/v1?transcode=x"] {
        let mut body = open_tuner(&app, path).await;
        let more = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            while let Some(chunk) = body.next().await {
                chunk.expect("a chunk");
            }
        })
        .await;
        assert!(more.is_err(), "{path}: still streaming after 2 s");
    }
}

/// A `HEAD` on a tuner URL (a client probing it) is answered as the tune would be,
/// without taking a tuner or opening the channel: before, it tuned, and the upstream
/// was read until the session went idle.
#[tokio::test]
async fn a_head_on_a_tuner_url_probes_without_tuning() {
    let b = FakeUpstream::bind().await;
    let list = format!(
        "#EXTM3U\n#EXTINF:-1 tvg-chno=\"50\",Probed\n{}/live.m3u8\n",
        b.base()
    );
    let live = b
        .text("/list.m3u", M3U_TYPE, list)
        .text("/live.m3u8", HLS_TYPE, media_playlist(&["s1.ts", "s2.ts"]))
        .start();
    let (app, _portal) = two_service_app(&format!(
        "[[services]]\nname = \"Live\"\nkind = \"m3u\"\npriority = 3\nurl = \"{}\"\n",
        live.url("/list.m3u")
    ))
    .await;
    let number = app.channel_named("Probed").await["number"].clone();
    for _ in 0..3 {
        let head = app.head(&format!("/auto/v{number}")).await;
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["content-type"], "video/MP2T");
        // As the stream's answer: of no stated length (not an empty body).
        assert!(
            head.headers().get("content-length").is_none(),
            "{:?}",
            head.headers()
        );
    }
    assert_eq!(live.hits("/live.m3u8"), 0, "a HEAD opened the channel");
    let unknown = app.head("/auto/v999").await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.headers()["x-hdhomerun-error"],
        "801 Unknown Channel"
    );
    // With both tuners taken, a probe hears "busy", as a tune would.
    let first = open_tuner(&app, "/auto/v1").await;
    let second = open_tuner(&app, "/auto/v1").await;
    let busy = app.head(&format!("/auto/v{number}")).await;
    assert_eq!(busy.status(), 503);
    assert_eq!(busy.headers()["x-hdhomerun-error"], "805 All Tuners In Use");
    drop((first, second));
}
