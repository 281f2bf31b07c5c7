//! The merged XMLTV guide: two services with overlapping channels, one guide gzipped
//! and named by `epg_url`, one plain and named by the list's `url-tvg`; validated by
//! Debian's `tv_validate_file`; a malformed refresh keeps the last good guide.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use axum::routing::get;
use serde_json::Value;

use crate::common::{
    assert_api_error, respond, tv_validate, xmltv_at as at, FakeUpstream, TestApp, M3U_TYPE,
};

/// An XMLTV document: `channels` as (id, display-name), `programmes` as
/// (channel id, hours from now, title).
fn xmltv(channels: &[(&str, &str)], programmes: &[(&str, i64, &str)]) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<tv>\n");
    for (id, name) in channels {
        s.push_str(&format!(
            "<channel id=\"{id}\"><display-name>{name}</display-name></channel>\n"
        ));
    }
    for (ch, h, title) in programmes {
        s.push_str(&format!(
            "<programme start=\"{}\" stop=\"{}\" channel=\"{ch}\"><title>{title}</title>\
             <desc></desc><episode-num system=\"xmltv_ns\">S1E2</episode-num>\
             <episode-num system=\"onscreen\">S1E2</episode-num><credits><actor>A</actor></credits></programme>\n",
            at(*h),
            at(*h + 1)
        ));
    }
    s.push_str("</tv>\n");
    s
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// (channel ids, (channel, title) of every programme) of a guide.
fn guide_facts(xml: &str) -> (BTreeSet<String>, Vec<(String, String)>) {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(xml);
    let (mut ids, mut progs) = (BTreeSet::new(), Vec::new());
    let mut current = String::new();
    let mut title: Option<String> = None;
    loop {
        match r.read_event().expect("well-formed guide") {
            Event::Start(e) | Event::Empty(e) => {
                let attr = |k: &str| e.try_get_attribute(k).unwrap().map(|a| a.value.to_string());
                match e.local_name().as_ref() {
                    "channel" => {
                        ids.insert(attr("id").unwrap());
                    }
                    "programme" => current = attr("channel").unwrap(),
                    "title" => title = Some(String::new()),
                    _ => {}
                }
            }
            Event::Text(t) => {
                if let Some(title) = title.as_mut() {
                    title.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(title) = title.as_mut() {
                    let name = r.xml10_content();
                    let entity = format!("&{name};");
                    title.push_str(&quick_xml::escape::unescape(&entity).unwrap());
                }
            }
            Event::End(e) if e.local_name().as_ref() == "title" => {
                progs.push((current.clone(), title.take().unwrap()));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    (ids, progs)
}

fn titles_of(progs: &[(String, String)], channel: &str) -> Vec<String> {
    progs
        .iter()
        .filter(|(c, _)| c == channel)
        .map(|(_, t)| t.clone())
        .collect()
}

#[tokio::test]
async fn merged_guide_of_two_services_validates_and_priority_decides_overlaps() {
    let guide_a = xmltv(
        &[
            ("One.example", "One"),
            ("Two.example", "Two"),
            ("Gone.example", "Unlisted"),
        ],
        &[
            ("One.example", 0, "A One now"),
            ("One.example", 1, "A One next"),
            ("Two.example", 0, "A Two now"),
            ("Gone.example", 0, "Not in the lineup"),
            ("One.example", -48, "Too old"),
        ],
    );
    let guide_b = xmltv(
        // B names channel Three by another id; its display name still matches.
        &[("one.example", "One"), ("b-three", "Three HD")],
        &[
            ("one.example", 0, "B One now"),
            ("b-three", 0, "B Three now"),
            ("b-three", 2, "B Three later"),
        ],
    );
    let a = FakeUpstream::bind()
        .await
        .text(
            "/a.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"One.example\",One\nhttp://127.0.0.1:9/1.m3u8\n\
             #EXTINF:-1 tvg-id=\"Two.example\",Two\nhttp://127.0.0.1:9/2.m3u8\n\
             #EXTINF:-1,No Guide\nhttp://127.0.0.1:9/4.m3u8\n",
        )
        .bytes(
            "/a-guide.xml.gz",
            "application/gzip",
            gzip(guide_a.as_bytes()),
        )
        .start();
    let b = FakeUpstream::bind().await;
    let b_header = format!("#EXTM3U url-tvg=\"{}\"\n", b.url("/b-guide.xml"));
    let b = b
        .text(
            "/b.m3u",
            M3U_TYPE,
            format!(
                "{b_header}#EXTINF:-1 tvg-id=\"One.example\",One HD\nhttp://127.0.0.1:9/b1.m3u8\n\
                 #EXTINF:-1,Three\nhttp://127.0.0.1:9/b3.m3u8\n"
            ),
        )
        .text("/b-guide.xml", "application/xml", guide_b)
        .start();
    let app = TestApp::spawn(&format!(
        r#"
[[services]]
name = "A"
kind = "m3u"
priority = 1
url = "{}/a.m3u"
epg_url = "{}/a-guide.xml.gz"

[[services]]
name = "B"
kind = "m3u"
priority = 2
url = "{}/b.m3u"
"#,
        a.base(),
        a.base(),
        b.base()
    ))
    .await;

    let resp = app.get("/epg.xml").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("xml"));
    let xml = resp.text().await.unwrap();
    tv_validate(xml.as_bytes());
    let (ids, progs) = guide_facts(&xml);

    // Channel ids are the playlist's tvg-ids (every channel that has a guide).
    let playlist = app.get_text_ok("/playlist.m3u").await;
    let tvg_of = |name: &str| {
        playlist
            .lines()
            .find(|l| l.ends_with(&format!(",{name}")))
            .and_then(|l| l.split("tvg-id=\"").nth(1))
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("{name} in playlist:\n{playlist}"))
            .to_string()
    };
    let want: BTreeSet<String> = ["One", "Two", "Three"].map(tvg_of).into();
    assert_eq!(ids, want, "\n{xml}");
    assert_eq!(tvg_of("One"), "One.example");

    // A (priority 1) wins One; B fills Three, matched by display name; the unlisted
    // channel and the programme two days old are gone.
    assert_eq!(
        titles_of(&progs, "One.example"),
        ["A One now", "A One next"]
    );
    assert_eq!(titles_of(&progs, "Two.example"), ["A Two now"]);
    assert_eq!(
        titles_of(&progs, &tvg_of("Three")),
        ["B Three now", "B Three later"]
    );
    assert!(!xml.contains("Not in the lineup") && !xml.contains("Too old"));
    // What tv_validate_file refuses was dropped: an empty desc, a bad xmltv_ns number.
    assert!(!xml.contains("<desc") && !xml.contains("xmltv_ns"), "{xml}");
    assert!(xml.contains("<episode-num system=\"onscreen\">S1E2</episode-num>"));
    assert!(!xml.contains("credits"));

    // The gzipped guide is the same document.
    let gz = app.get("/epg.xml.gz").await;
    assert_eq!(gz.status(), 200);
    let bytes = gz.bytes().await.unwrap();
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut unzipped)
        .expect("epg.xml.gz is gzip");
    assert_eq!(unzipped, xml);

    let (status, s) = app.get_json("/api/guide/status").await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["services"]["A"]["programmes"], 3, "{s}");
    assert_eq!(s["services"]["B"]["programmes"], 3, "{s}");
    assert!(s["services"]["A"]["last_error"].is_null());
}

#[tokio::test]
async fn a_malformed_refresh_is_reported_and_the_last_good_guide_stays() {
    let good = xmltv(
        &[("One.example", "One")],
        &[("One.example", 0, "Good show")],
    );
    let body = Arc::new(Mutex::new(good.clone().into_bytes()));
    let served = body.clone();
    let up = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"One.example\",One\nhttp://127.0.0.1:9/1.m3u8\n",
        )
        .text(
            "/other.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1,Other\nhttp://127.0.0.1:9/2.m3u8\n",
        )
        .route(
            "/guide.xml",
            get(move || {
                let bytes = served.lock().unwrap().clone();
                async move { respond(200, "application/xml", bytes) }
            }),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"{0}/list.m3u\"\nepg_url = \"{0}/guide.xml\"\n\n\
         [[services]]\nname = \"NoGuide\"\nkind = \"m3u\"\nurl = \"{0}/other.m3u\"\n",
        up.base()
    ))
    .await;
    let first = app.get_text_ok("/epg.xml").await;
    assert!(first.contains("Good show"), "{first}");
    // The service status carries the guide's: null for a service without one.
    let p = app.service_status("P").await;
    assert_eq!(p["guide"]["source"], up.url("/guide.xml"), "{p}");
    assert!(p["guide"]["last_ok"].is_string() && p["guide"]["last_error"].is_null());
    assert_eq!(p["guide"]["programmes"], 1, "{p}");
    assert_eq!(app.service_status("NoGuide").await["guide"], Value::Null);

    let truncated = good[..good.len() / 2].to_string();
    let latin1 = {
        // Declares ISO-8859-1 and sends Latin-1 bytes (é = 0xE9), not UTF-8.
        let mut v = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<tv><channel id=\"One.example\"><display-name>One</display-name></channel><programme start=\"".to_vec();
        v.extend_from_slice(at(0).as_bytes());
        v.extend_from_slice(b"\" channel=\"One.example\"><title>Caf\xe9</title></programme></tv>");
        v
    };
    for (what, bad) in [
        ("truncated", truncated.into_bytes()),
        (
            "html",
            b"<html><body>Service unavailable</body></html>".to_vec(),
        ),
    ] {
        *body.lock().unwrap() = bad;
        let r = app.post("/api/guide/refresh").await;
        let (status, s) = crate::common::json_of(r).await;
        assert_eq!(status, 200, "{what}: {s}");
        let err = s["services"]["P"]["last_error"]
            .as_str()
            .unwrap_or_default();
        assert!(!err.is_empty(), "{what}: no error reported: {s}");
        assert!(s["services"]["P"]["last_ok"].is_string(), "{what}: {s}");
        // ... and in the service status, the same.
        let p = app.service_status("P").await;
        assert_eq!(p["guide"]["last_error"], err, "{what}: {p}");
        assert_eq!(p["guide"]["last_ok"], s["services"]["P"]["last_ok"]);
        assert_eq!(p["guide"]["programmes"], 1, "{what}: {p}");
        let served = app.get_text_ok("/epg.xml").await;
        assert_eq!(served, first, "{what}: the last good guide was not kept");
    }

    // A guide in Latin-1 that says so is read as the text it is (it was refused as
    // not UTF-8), and the merged guide is UTF-8.
    *body.lock().unwrap() = latin1;
    let (_, s) = crate::common::json_of(app.post("/api/guide/refresh").await).await;
    assert!(s["services"]["P"]["last_error"].is_null(), "{s}");
    let served = app.get_text_ok("/epg.xml").await;
    assert!(served.contains("<title>Café</title>"), "{served}");
    tv_validate(served.as_bytes());

    // Bad dates lose only their programmes, and say so.
    *body.lock().unwrap() = xmltv(&[("One.example", "One")], &[("One.example", 1, "Later show")])
        .replace("</tv>", "<programme start=\"yesterday\" channel=\"One.example\"><title>Bad</title></programme></tv>")
        .into_bytes();
    let (_, s) = crate::common::json_of(app.post("/api/guide/refresh").await).await;
    assert!(s["services"]["P"]["last_error"].is_null(), "{s}");
    assert_eq!(s["services"]["P"]["skipped"], 1, "{s}");
    assert!(s["services"]["P"]["first_skip"]
        .as_str()
        .unwrap()
        .contains("yesterday"));
    let p = app.service_status("P").await;
    assert!(p["guide"]["last_error"].is_null(), "{p}");
    assert_eq!(p["guide"]["skipped"], 1, "{p}");
    assert_eq!(p["guide"]["first_skip"], s["services"]["P"]["first_skip"]);
    let now = app.get_text_ok("/epg.xml").await;
    assert!(now.contains("Later show") && !now.contains("Good show") && !now.contains(">Bad<"));
    tv_validate(now.as_bytes());
}

#[tokio::test]
async fn placeholders_and_folded_titles_when_configured() {
    let up = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"One.example\",One\nhttp://127.0.0.1:9/1.m3u8\n\
             #EXTINF:-1,Quiet & Co\nhttp://127.0.0.1:9/2.m3u8\n",
        )
        .text(
            "/guide.xml",
            "application/xml",
            xmltv(&[("One.example", "One")], &[("One.example", 0, "Show")])
                .replace("<desc></desc>", "<sub-title>Pilot</sub-title>"),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[guide]\nplaceholders = true\nplaceholder_length = \"2h\"\nfold_subtitle = true\ndays = 1\n\n\
         [[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"{0}/list.m3u\"\nepg_url = \"{0}/guide.xml\"\n",
        up.base()
    ))
    .await;
    let xml = app.get_text_ok("/epg.xml").await;
    tv_validate(xml.as_bytes());
    let (ids, progs) = guide_facts(&xml);
    assert_eq!(ids.len(), 2, "{xml}");
    assert_eq!(titles_of(&progs, "One.example"), ["Show - Pilot"]);
    let quiet: Vec<_> = progs.iter().filter(|(c, _)| c != "One.example").collect();
    // A day ahead (and the current block) in 2 h blocks.
    assert!((12..=14).contains(&quiet.len()), "{quiet:?}");
    assert!(quiet.iter().all(|(_, t)| t == "Quiet & Co"));
}

#[tokio::test]
async fn the_demo_has_a_guide_and_refresh_is_an_admin_call() {
    let app = TestApp::spawn(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{state_dir}'\nadmin_token = \"guide-token-7f3\"\n\n\
         [[services]]\nname = \"Demo\"\nkind = \"demo\"\n",
    )
    .await;
    let xml = app.get_text_ok("/epg.xml").await;
    tv_validate(xml.as_bytes());
    let (ids, progs) = guide_facts(&xml);
    assert_eq!(ids, BTreeSet::from(["demo.freesky".to_string()]));
    assert!(titles_of(&progs, "demo.freesky").len() >= 24);
    let refused = app.post("/api/guide/refresh").await;
    assert_eq!(
        refused.headers()[reqwest::header::WWW_AUTHENTICATE],
        "Bearer realm=\"freesky admin\""
    );
    assert_api_error(refused, 401).await;
    let r = app
        .post_auth("/api/guide/refresh", Some("Bearer guide-token-7f3"))
        .await;
    assert_eq!(r.status(), 200);
    // The scheme in any case, as HTTP has it.
    let r = app
        .post_auth("/api/guide/refresh", Some("bearer guide-token-7f3"))
        .await;
    assert_eq!(r.status(), 200);
}

/// An extra guide that never answers (its timeout far longer than the wait allowed
/// here): the first `/epg.xml` is answered with the guides read meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_guide_does_not_wait_for_a_guide_that_hangs() {
    let up = FakeUpstream::bind().await.hang("/slow.xml").start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Demo\"\nkind = \"demo\"\n\n\
         [[guides]]\nname = \"slow\"\nurl = \"{}\"\ntimeout = \"120s\"\n",
        up.url("/slow.xml")
    ))
    .await;
    let xml = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        app.get_text_ok("/epg.xml"),
    )
    .await
    .expect("the first guide is answered without the guide that hangs");
    tv_validate(xml.as_bytes());
    let (_, progs) = guide_facts(&xml);
    assert!(titles_of(&progs, "demo.freesky").len() >= 24, "{xml}");
    assert_eq!(up.hits("/slow.xml"), 1, "the slow guide is being read");
}

/// PATCH /api/channels/{id} that must answer 200.
async fn patch(app: &TestApp, id: &str, body: &'static str) {
    let resp = app
        .client
        .patch(app.url(&format!("/api/channels/{id}")))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{id} {body}");
}

#[tokio::test]
async fn mapping_edits_and_service_switches_show_in_the_guide_at_once_and_after_a_restart() {
    let guide = xmltv(
        &[
            ("One.example", "One"),
            ("Two.example", "Two"),
            ("Three.example", "Third"),
        ],
        &[
            ("One.example", 0, "One show"),
            ("Two.example", 0, "Two show"),
            ("Three.example", 0, "Three show"),
        ],
    );
    // `None`: the guide answers 500, so what the guide shows meanwhile was not read again.
    let body = Arc::new(Mutex::new(Some(guide.clone())));
    let served = body.clone();
    let up = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"One.example\",One\nhttp://127.0.0.1:9/1.m3u8\n\
             #EXTINF:-1 tvg-id=\"Two.example\",Two\nhttp://127.0.0.1:9/2.m3u8\n\
             #EXTINF:-1,Drei\nhttp://127.0.0.1:9/3.m3u8\n",
        )
        .route(
            "/guide.xml",
            get(move || {
                let body = served.lock().unwrap().clone();
                async move {
                    match body {
                        Some(xml) => respond(200, "application/xml", xml),
                        None => respond(500, "text/plain", "down"),
                    }
                }
            }),
        )
        .start();
    let mut app = TestApp::spawn(&format!(
        "[[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"{0}/list.m3u\"\nepg_url = \"{0}/guide.xml\"\n",
        up.base()
    ))
    .await;
    let (ids, progs) = guide_facts(&app.get_text_ok("/epg.xml").await);
    assert_eq!(
        ids,
        BTreeSet::from(["One.example".into(), "Two.example".into()])
    );
    assert_eq!(titles_of(&progs, "One.example"), ["One show"]);
    *body.lock().unwrap() = None;
    // A hidden channel, a new name and guide id: in the guide as soon as the PATCHes
    // answer, programmes kept (the guide cannot be read again meanwhile).
    patch(&app, "two", r#"{"hidden":true}"#).await;
    let (ids, _) = guide_facts(&app.get_text_ok("/epg.xml").await);
    assert_eq!(ids, BTreeSet::from(["One.example".to_string()]));
    patch(&app, "one", r#"{"tvg_id":"Uno.example","name":"Uno"}"#).await;
    let check = |xml: String| {
        let (ids, progs) = guide_facts(&xml);
        assert_eq!(ids, BTreeSet::from(["Uno.example".to_string()]), "{xml}");
        assert_eq!(titles_of(&progs, "Uno.example"), ["One show"]);
        assert!(xml.contains("<display-name>Uno</display-name>"), "{xml}");
        tv_validate(xml.as_bytes());
    };
    check(app.get_text_ok("/epg.xml").await);

    // Disabling the service empties the guide at once; enabling brings it back.
    assert_eq!(app.post("/api/services/P/disable").await.status(), 200);
    let (ids, _) = guide_facts(&app.get_text_ok("/epg.xml").await);
    assert!(ids.is_empty(), "{ids:?}");
    assert_eq!(app.post("/api/services/P/enable").await.status(), 200);
    check(app.get_text_ok("/epg.xml").await);

    // A guide id that links a guide channel the last read dropped: a new read, in
    // the background, soon.
    *body.lock().unwrap() = Some(guide);
    patch(&app, "drei", r#"{"tvg_id":"Three.example"}"#).await;
    crate::common::eventually("the linked guide channel to show", || async {
        let (_, progs) = guide_facts(&app.get_text_ok("/epg.xml").await);
        if titles_of(&progs, "Three.example") == ["Three show"] {
            Ok(())
        } else {
            Err(format!("{progs:?}"))
        }
    })
    .await;

    // After a restart (a fresh read), the same.
    app.restart().await;
    let xml = app.get_text_ok("/epg.xml").await;
    let (ids, progs) = guide_facts(&xml);
    assert_eq!(
        ids,
        BTreeSet::from(["Uno.example".to_string(), "Three.example".to_string()]),
        "{xml}"
    );
    assert_eq!(titles_of(&progs, "Uno.example"), ["One show"]);
    assert!(!xml.contains("Two show"), "{xml}");

    // Unhiding shows the kept programmes at once.
    patch(&app, "two", r#"{"hidden":false}"#).await;
    let (_, progs) = guide_facts(&app.get_text_ok("/epg.xml").await);
    assert_eq!(titles_of(&progs, "Two.example"), ["Two show"]);
}

/// An admin change reads again only the guides it may need: a new guide id, the
/// guides whose channels give it one (none when no guide lists it); an enabled
/// service, its own guide. A guide may be 100 MB, and providers limit downloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_change_reads_again_only_the_guides_it_needs() {
    let own = xmltv(&[("One.example", "One")], &[("One.example", 0, "One show")]);
    let extra = xmltv(
        &[("Three.example", "Third")],
        &[("Three.example", 0, "Three show")],
    );
    let up = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"One.example\",One\nhttp://127.0.0.1:9/1.m3u8\n\
             #EXTINF:-1,Drei\nhttp://127.0.0.1:9/3.m3u8\n",
        )
        .text("/own.xml", "application/xml", own)
        .text("/extra.xml", "application/xml", extra)
        .text(
            "/other.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1,Other\nhttp://127.0.0.1:9/o.m3u8\n",
        )
        .text("/other.xml", "application/xml", xmltv(&[], &[]))
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"{0}/list.m3u\"\nepg_url = \"{0}/own.xml\"\n\n\
         [[services]]\nname = \"Q\"\nkind = \"m3u\"\nurl = \"{0}/other.m3u\"\nepg_url = \"{0}/other.xml\"\n\n\
         [[guides]]\nname = \"X\"\nurl = \"{0}/extra.xml\"\n",
        up.base()
    ))
    .await;
    let (_, progs) = guide_facts(&app.get_text_ok("/epg.xml").await);
    assert_eq!(titles_of(&progs, "One.example"), ["One show"]);
    let reads = || {
        (
            up.hits("/own.xml"),
            up.hits("/extra.xml"),
            up.hits("/other.xml"),
        )
    };
    let before = reads();
    assert!(
        before.0 >= 1 && before.1 >= 1 && before.2 >= 1,
        "{before:?}"
    );

    // An id no guide lists: nothing to read. Then one the extra guide lists (its read
    // dropped that guide channel: no lineup channel had it): that guide only.
    patch(&app, "drei", r#"{"tvg_id":"Nowhere.example"}"#).await;
    // (Nothing to wait for: what would be read is read at once, well within this.)
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(reads(), before, "guides read (own, extra, other)");
    patch(&app, "drei", r#"{"tvg_id":"Three.example"}"#).await;
    crate::common::eventually("the linked guide channel to show", || async {
        let (_, progs) = guide_facts(&app.get_text_ok("/epg.xml").await);
        (titles_of(&progs, "Three.example") == ["Three show"])
            .then_some(())
            .ok_or(format!("{progs:?}"))
    })
    .await;
    assert_eq!(
        reads(),
        (before.0, before.1 + 1, before.2),
        "guides read (own, extra, other)"
    );

    // Q disabled, then enabled: its own guide is read again, and no other.
    assert_eq!(app.post("/api/services/Q/disable").await.status(), 200);
    assert_eq!(app.post("/api/services/Q/enable").await.status(), 200);
    crate::common::eventually("Q's guide to be read again", || async {
        (up.hits("/other.xml") == before.2 + 1)
            .then_some(())
            .ok_or(format!("{:?}", reads()))
    })
    .await;
    let (_, progs) = guide_facts(&app.get_text_ok("/epg.xml").await);
    assert_eq!(titles_of(&progs, "Three.example"), ["Three show"]);
    assert_eq!(
        reads(),
        (before.0, before.1 + 1, before.2 + 1),
        "guides read (own, extra, other)"
    );

    // Enabling it again while it is enabled changes nothing: nothing is read.
    assert_eq!(app.post("/api/services/Q/enable").await.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        reads(),
        (before.0, before.1 + 1, before.2 + 1),
        "guides read (own, extra, other)"
    );
}

/// The start times of `channel`'s programmes in a guide, in document order.
fn starts_of(xml: &str, channel: &str) -> Vec<String> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(xml);
    let mut starts = Vec::new();
    loop {
        match r.read_event().expect("well-formed guide") {
            Event::Start(e) if e.local_name().as_ref() == "programme" => {
                let attr = |k: &str| e.try_get_attribute(k).unwrap().map(|a| a.value.to_string());
                if attr("channel").as_deref() == Some(channel) {
                    starts.push(attr("start").unwrap());
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    starts
}

/// `(id, hour, "{id} {hour}")` for each id and hour: programmes that overlap id by id.
fn schedules(ids: &[&str], hours: std::ops::Range<i64>) -> Vec<(String, i64, String)> {
    ids.iter()
        .flat_map(|id| {
            hours
                .clone()
                .map(move |h| (id.to_string(), h, format!("{id} {h}")))
        })
        .collect()
}

fn xmltv_owned(channels: &[(&str, &str)], programmes: &[(String, i64, String)]) -> String {
    let borrowed: Vec<(&str, i64, &str)> = programmes
        .iter()
        .map(|(c, h, t)| (c.as_str(), *h, t.as_str()))
        .collect();
    xmltv(channels, &borrowed)
}

#[tokio::test]
async fn a_channel_listed_under_several_ids_takes_the_programmes_of_one() {
    // One channel under three ids, as guide sites list regional feeds and SD/HD copies:
    // every hour three overlapping programmes. The display name as written beats the
    // one equal only once normalised; among equals the first listed wins.
    let ids = ["news-sd", "news-hd", "news-east"];
    let guide = xmltv_owned(
        &[
            ("news-sd", "NEWS"),
            ("news-hd", "News"),
            ("news-east", "News"),
        ],
        &schedules(&ids, 0..3),
    );
    let up = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1,News\nhttp://127.0.0.1:9/1.m3u8\n",
        )
        .text("/guide.xml", "application/xml", guide)
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"{0}/list.m3u\"\nepg_url = \"{0}/guide.xml\"\n",
        up.base()
    ))
    .await;
    let xml = app.get_text_ok("/epg.xml").await;
    tv_validate(xml.as_bytes());
    let (channels, progs) = guide_facts(&xml);
    assert_eq!(channels.len(), 1, "{xml}");
    let news = channels.first().unwrap();
    let starts = starts_of(&xml, news);
    let slots: BTreeSet<&String> = starts.iter().collect();
    assert_eq!(starts.len(), 3, "one programme per hour: {xml}");
    assert_eq!(slots.len(), 3, "{starts:?}");
    assert_eq!(
        titles_of(&progs, news),
        ["news-hd 0", "news-hd 1", "news-hd 2"]
    );

    let (status, s) = app.get_json("/api/guide/status").await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["services"]["P"]["ignored_duplicate_channels"], 2, "{s}");
    assert_eq!(s["services"]["P"]["channels"], 1, "{s}");
    assert_eq!(s["services"]["P"]["programmes"], 3, "{s}");
    assert_eq!(s["ignored_duplicate_channels"], 2, "{s}");
}

#[tokio::test]
async fn a_guide_channel_matched_by_id_beats_one_matched_by_name() {
    // A (priority 1) knows the channel by name only; B (priority 2) by name and, listed
    // later, by the channel's tvg-id: B's id match wins over A's priority and over B's
    // own name match.
    let a = FakeUpstream::bind().await;
    let b = FakeUpstream::bind().await;
    let a = a
        .text(
            "/a.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"News.example\",News\nhttp://127.0.0.1:9/1.m3u8\n",
        )
        .text(
            "/a.xml",
            "application/xml",
            xmltv_owned(&[("a-news", "News")], &schedules(&["a-news"], 0..2)),
        )
        .start();
    let b = b
        .text(
            "/b.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1,Other\nhttp://127.0.0.1:9/2.m3u8\n",
        )
        .text(
            "/b.xml",
            "application/xml",
            xmltv_owned(
                &[("b-news", "News"), ("News.example", "Newsroom")],
                &schedules(&["b-news", "News.example"], 0..2),
            ),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"A\"\nkind = \"m3u\"\npriority = 1\nurl = \"{0}/a.m3u\"\nepg_url = \"{0}/a.xml\"\n\n\
         [[services]]\nname = \"B\"\nkind = \"m3u\"\npriority = 2\nurl = \"{1}/b.m3u\"\nepg_url = \"{1}/b.xml\"\n",
        a.base(),
        b.base()
    ))
    .await;
    let xml = app.get_text_ok("/epg.xml").await;
    tv_validate(xml.as_bytes());
    let (_, progs) = guide_facts(&xml);
    assert_eq!(
        titles_of(&progs, "News.example"),
        ["News.example 0", "News.example 1"],
        "{xml}"
    );
    let (_, s) = app.get_json("/api/guide/status").await;
    assert_eq!(s["services"]["A"]["ignored_duplicate_channels"], 0, "{s}");
    assert_eq!(s["services"]["B"]["ignored_duplicate_channels"], 1, "{s}");
    assert_eq!(s["ignored_duplicate_channels"], 1, "{s}");
}

#[tokio::test]
async fn the_guide_is_gzipped_for_a_client_that_accepts_it() {
    let app = TestApp::spawn(
        "[[services]]\nname = \"Demo\"\nkind = \"demo\"\n\n\
         [[users]]\nname = \"ann\"\npassword = \"ann-pw-1\"\n",
    )
    .await;
    // A client that unpacks nothing itself, so the bytes on the wire are seen.
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let get = |path: &str, encoding: Option<&'static str>| {
        let mut req = raw.get(app.url(path));
        if let Some(e) = encoding {
            req = req.header("accept-encoding", e);
        }
        req.send()
    };
    for path in ["/epg.xml", "/xmltv.php?username=ann&password=ann-pw-1"] {
        let plain = get(path, None).await.unwrap();
        assert_eq!(plain.status(), 200, "{path}");
        assert!(plain.headers().get("content-encoding").is_none(), "{path}");
        let plain = plain.bytes().await.unwrap();
        assert!(plain.starts_with(b"<?xml"), "{path}");
        for refused in ["identity", "gzip;q=0", "br, deflate", "gzip;q=0, *"] {
            let resp = get(path, Some(refused)).await.unwrap();
            assert!(
                resp.headers().get("content-encoding").is_none(),
                "{refused}"
            );
            assert_eq!(resp.bytes().await.unwrap(), plain, "{path} {refused}");
        }
        for accepted in ["gzip", "br, GZIP;q=0.5", "deflate, gzip, br", "*"] {
            let resp = get(path, Some(accepted)).await.unwrap();
            let h = resp.headers();
            assert_eq!(h["content-encoding"], "gzip", "{path} {accepted}");
            assert_eq!(h["vary"], "Accept-Encoding", "{path}");
            assert!(
                h["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("application/xml"),
                "{path}"
            );
            let gz = resp.bytes().await.unwrap();
            let mut xml = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut xml)
                .unwrap();
            assert_eq!(xml, plain, "{path} {accepted}: the same guide");
        }
    }
}

/// A guide that cannot be read at start (its server down) is read again within
/// minutes, not at the next full refresh hours later: its programmes come without a
/// manual refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guide_that_failed_at_start_is_read_again_soon() {
    let good = xmltv(
        &[("One.example", "One")],
        &[("One.example", 0, "Back show")],
    );
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let serving = down.clone();
    let up = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"One.example\",One\nhttp://127.0.0.1:9/1.m3u8\n",
        )
        .route(
            "/guide.xml",
            get(move || {
                let (good, down) = (good.clone(), serving.clone());
                async move {
                    if down.load(std::sync::atomic::Ordering::SeqCst) {
                        respond(503, "text/plain", "down for maintenance")
                    } else {
                        respond(200, "application/xml", good)
                    }
                }
            }),
        )
        .start();
    // A full refresh every 2 minutes: the retry comes after 30 s (a quarter of it).
    let app = TestApp::spawn(&format!(
        "[guide]\nrefresh = \"120s\"\n\n[cache]\nchannels_ttl = \"2s\"\n\n\
         [[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"{0}/list.m3u\"\nepg_url = \"{0}/guide.xml\"\n",
        up.base()
    ))
    .await;
    let first = app.get_text_ok("/epg.xml").await;
    assert!(!first.contains("Back show"), "{first}");
    assert!(app.service_status("P").await["guide"]["last_error"].is_string());
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    let mut guide = String::new();
    while started.elapsed() < std::time::Duration::from_secs(80) {
        guide = app.get_text_ok("/epg.xml").await;
        if guide.contains("Back show") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert!(
        guide.contains("Back show"),
        "the guide was not read again in {:?}",
        started.elapsed()
    );
}

/// The first guide request after a start does not get a guide made only of guides
/// without a programme (a panel's valid but empty `xmltv.php`, read first) while
/// another service's guide is still being read: players keep a guide for hours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_guide_is_not_one_without_programmes_while_another_is_read() {
    let empty = xmltv(&[("A.example", "A")], &[]);
    let full = xmltv(&[("B.example", "B")], &[("B.example", 0, "Slow show")]);
    let up = FakeUpstream::bind()
        .await
        .text(
            "/a.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"A.example\",A\nhttp://127.0.0.1:9/1.m3u8\n",
        )
        .text(
            "/b.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"B.example\",B\nhttp://127.0.0.1:9/2.m3u8\n",
        )
        .text("/a.xml", "application/xml", empty)
        .route(
            "/b.xml",
            get(move || {
                let full = full.clone();
                async move {
                    // Past the first request's 10 s wait.
                    tokio::time::sleep(std::time::Duration::from_secs(13)).await;
                    respond(200, "application/xml", full)
                }
            }),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"A\"\nkind = \"m3u\"\nurl = \"{0}/a.m3u\"\nepg_url = \"{0}/a.xml\"\n\n\
         [[services]]\nname = \"B\"\nkind = \"m3u\"\nurl = \"{0}/b.m3u\"\nepg_url = \"{0}/b.xml\"\ntimeout = \"30s\"\n",
        up.base()
    ))
    .await;
    let first = app.get_text_ok("/epg.xml").await;
    assert!(first.contains("Slow show"), "{first}");
}

/// A guide whose read failed is read again when its retry is due (a quarter of
/// `refresh`, here 15 s), not at the next minutely check after that: with `refresh =
/// "1m"` and a lineup kept an hour, its programmes are there well within 40 s of the
/// upstream's recovery, not up to a minute later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_guide_is_read_again_when_its_retry_is_due() {
    let good = xmltv(
        &[("One.example", "One")],
        &[("One.example", 0, "Back show")],
    );
    let ok = Arc::new(Mutex::new(false));
    let serving = ok.clone();
    let up = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"One.example\",One\nhttp://127.0.0.1:9/1.m3u8\n",
        )
        .route(
            "/guide.xml",
            get(move || {
                let up = *serving.lock().unwrap();
                let good = good.clone();
                async move {
                    if up {
                        respond(200, "application/xml", good.into_bytes())
                    } else {
                        respond(500, "text/plain", "down".as_bytes().to_vec())
                    }
                }
            }),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[cache]\nchannels_ttl = \"1h\"\n\n[guide]\nrefresh = \"1m\"\n\n\
         [[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"{0}/list.m3u\"\nepg_url = \"{0}/guide.xml\"\n",
        up.base()
    ))
    .await;
    let first = app.get_text_ok("/epg.xml").await;
    assert!(!first.contains("Back show"), "{first}");
    *ok.lock().unwrap() = true;
    let started = std::time::Instant::now();
    crate::common::eventually_within(
        std::time::Duration::from_secs(40),
        "the guide read again",
        || async {
            let now = app.get_text_ok("/epg.xml").await;
            if now.contains("Back show") {
                Ok(())
            } else {
                Err(format!("after {:?}", started.elapsed()))
            }
        },
    )
    .await;
}

/// A "+1" listed under its live channel's tvg-id (a common provider mistake) is a
/// channel of its own whose id the lineup dropped: it never takes the live channel's
/// programmes, and the live channel keeps them. Before, the "+1" (listed later) took
/// the tvg-id in the guide's mapping: the live channel had no programmes, and the "+1"
/// showed the live ones an hour off.
#[tokio::test]
async fn a_plus_one_under_its_live_channels_tvg_id_never_takes_the_live_programmes() {
    let up = FakeUpstream::bind().await;
    let up = up
        .text(
            "/l.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"BBCOne.uk\" group-title=\"UK\",BBC One\nhttp://127.0.0.1:9/1.m3u8\n\
             #EXTINF:-1 tvg-id=\"BBCOne.uk\" group-title=\"UK\",BBC One +1\nhttp://127.0.0.1:9/2.m3u8\n",
        )
        .text(
            "/g.xml",
            "application/xml",
            xmltv_owned(
                &[("BBCOne.uk", "BBC One"), ("BBCOnePlus1.uk", "BBC One +1")],
                &schedules(&["BBCOne.uk", "BBCOnePlus1.uk"], 0..2),
            ),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"A\"\nkind = \"m3u\"\nurl = \"{0}/l.m3u\"\nepg_url = \"{0}/g.xml\"\n",
        up.base()
    ))
    .await;
    let (_, channels) = app.get_json("/api/channels").await;
    let list = channels["items"].as_array().cloned().unwrap_or_default();
    let guide_id = |name: &str| -> String {
        list.iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["guide_id"].as_str())
            .unwrap_or_else(|| panic!("no guide id of {name}: {channels}"))
            .to_string()
    };
    let (live, plus) = (guide_id("BBC One"), guide_id("BBC One +1"));
    assert_ne!(live.to_lowercase(), plus.to_lowercase());
    let xml = app.get_text_ok("/epg.xml").await;
    tv_validate(xml.as_bytes());
    let (_, progs) = guide_facts(&xml);
    assert_eq!(
        titles_of(&progs, &live),
        ["BBCOne.uk 0", "BBCOne.uk 1"],
        "{xml}"
    );
    for t in titles_of(&progs, &plus) {
        assert!(t.starts_with("BBCOnePlus1.uk"), "the +1 shows {t}: {xml}");
    }
    // The review lists the +1 without the live channel's guide channel.
    let (_, page) = app.get_json("/api/guide/matches").await;
    let line = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "BBC One +1")
        .unwrap_or_else(|| panic!("{page}"));
    assert_ne!(line["guide_id"], "BBCOne.uk", "{line}");
}

/// The guide's outputs carry an `ETag` made from the guide's content and the form
/// sent: a client asking again with it gets a 304 without a body until the guide
/// changes, across a restart too (Plex and TiviMate ask for the guide every few
/// hours); the gzip and plain forms are told apart; a changed guide is a 200 with a
/// new tag.
#[tokio::test]
async fn the_guide_answers_304_to_its_etag_until_it_changes() {
    let guide = Arc::new(Mutex::new(xmltv(
        &[("One.uk", "One")],
        &[("One.uk", 0, "News")],
    )));
    let up = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"One.uk\",One\nhttp://127.0.0.1:9/1.m3u8\n",
        )
        .shared_text("/guide.xml", &guide)
        .start();
    let cfg = format!(
        "[[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"{}\"\nepg_url = \"{}\"\n",
        up.url("/list.m3u"),
        up.url("/guide.xml")
    );
    let mut app = TestApp::spawn(&cfg).await;
    let ask = |app: &TestApp, path: &str, encoding: &str, tag: Option<&str>| {
        let mut req = app
            .client
            .get(app.url(path))
            .header("accept-encoding", encoding);
        if let Some(tag) = tag {
            req = req.header("if-none-match", tag);
        }
        req.send()
    };
    let etag = |r: &reqwest::Response| {
        r.headers()
            .get("etag")
            .unwrap_or_else(|| panic!("no ETag: {:?}", r.headers()))
            .to_str()
            .unwrap()
            .to_string()
    };
    let first = ask(&app, "/epg.xml", "identity", None).await.unwrap();
    assert_eq!(first.status(), 200);
    let plain = etag(&first);
    assert!(first.text().await.unwrap().contains("News"));
    let zipped = etag(&ask(&app, "/epg.xml", "gzip", None).await.unwrap());
    let file = etag(&ask(&app, "/epg.xml.gz", "identity", None).await.unwrap());
    assert_ne!(plain, zipped, "the gzip form is another representation");
    assert_eq!(zipped, file, "the same bytes");
    // Asked again with the tag: 304, no body; the other form's tag is no match.
    for (path, encoding, tag) in [
        ("/epg.xml", "identity", &plain),
        ("/epg.xml", "gzip", &zipped),
        ("/epg.xml.gz", "identity", &file),
    ] {
        let again = ask(&app, path, encoding, Some(tag)).await.unwrap();
        assert_eq!(again.status(), 304, "{path} {encoding}");
        assert_eq!(etag(&again), *tag);
        assert!(again.bytes().await.unwrap().is_empty());
    }
    let other = ask(&app, "/epg.xml", "identity", Some(&zipped))
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    let listed = format!("\"x\", {plain}");
    let listed = ask(&app, "/epg.xml", "identity", Some(&listed))
        .await
        .unwrap();
    assert_eq!(listed.status(), 304, "one of a list");

    // The same guide after a restart: the same tag.
    app.restart().await;
    let again = ask(&app, "/epg.xml", "identity", Some(&plain))
        .await
        .unwrap();
    assert_eq!(again.status(), 304, "after a restart");

    // Changed upstream and read again: a 200 with another tag.
    *guide.lock().unwrap() = xmltv(&[("One.uk", "One")], &[("One.uk", 0, "Weather")]);
    let (code, body) = crate::common::json_of(app.post("/api/guide/refresh").await).await;
    assert_eq!(code, 200, "{body}");
    let changed = ask(&app, "/epg.xml", "identity", Some(&plain))
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    assert_ne!(etag(&changed), plain);
    assert!(changed.text().await.unwrap().contains("Weather"));
}
