//! Guide reads through the surface, against real XMLTV upstreams on 127.0.0.1: a
//! display name never gives a lineup channel another country's guide channel, nor
//! one of several countries' when the channel's own country is unknown; the partial
//! refresh also reads again the extra guides (`[[guides]]`) that can give programmes
//! to channels new in the lineup; and a guide whose assignments change in a refresh
//! is downloaded once in it; the match list follows a lineup change made while a
//! refresh still reads; a list down at a restart still gets its guide for the
//! channels last listed; a service with no guide whose list fails reports none; a
//! guide down at a restart is served from the copy of its last good read; a list that
//! names its guide and is down at a restart still gets that guide.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use serde_json::Value;

use crate::common::{
    eventually, eventually_true, eventually_within, json_of, respond, tv_validate, xmltv_at as at,
    xmltv_guide as xmltv, FakeUpstream, TestApp, M3U_TYPE,
};

const XML: &str = "application/xml";

/// An M3U of (tvg-id, name, group) entries.
fn m3u(entries: &[(&str, &str, &str)]) -> String {
    let mut s = String::from("#EXTM3U\n");
    for (i, (id, name, group)) in entries.iter().enumerate() {
        s.push_str(&format!(
            "#EXTINF:-1 tvg-id=\"{id}\" group-title=\"{group}\",{name}\nhttp://127.0.0.1:9/{i}.m3u8\n"
        ));
    }
    s
}

/// A service `P` reading `/list.m3u` of `up`, its guide `/guide.xml` there.
fn service(up: &FakeUpstream) -> String {
    format!(
        "[[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"{}\"\nepg_url = \"{}\"\n",
        up.url("/list.m3u"),
        up.url("/guide.xml")
    )
}

/// The programme titles of lineup channel `name` in `/epg.xml`.
async fn titles(app: &TestApp, name: &str) -> Vec<String> {
    let c = app.channel_named(name).await;
    let marker = format!("channel=\"{}\"", c["guide_id"].as_str().unwrap());
    let xml = app.get_text_ok("/epg.xml").await;
    xml.split("<programme ")
        .skip(1)
        .filter(|p| p.contains(&marker))
        .filter_map(|p| {
            let t = p.split_once("<title")?.1.split_once('>')?.1;
            Some(t.split_once("</title>")?.0.to_string())
        })
        .collect()
}

/// The line of `/api/guide/matches` of lineup channel `name`.
async fn match_of(app: &TestApp, name: &str) -> Value {
    let (status, page) = app.get_json("/api/guide/matches?limit=500").await;
    assert_eq!(status, 200, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no line for {name} in {page}"))
}

#[tokio::test]
async fn a_display_name_never_gives_a_channel_another_countrys_guide_channel() {
    // A US guide. The list's channels say their country by tvg-id, by group, or not
    // at all; "Nick Jr" is American by its group.
    let up = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            m3u(&[
                ("KidoodleTV.ca", "Kidoodle TV", "Kids"),
                ("p-2", "Toon Time", "CA | Kids"),
                ("p-3", "Retro Toons", "Kids"),
                ("p-4", "Nick Jr", "US | Kids"),
            ]),
        )
        .text(
            "/guide.xml",
            XML,
            xmltv(&[
                ("KidoodleTV.us", "Kidoodle TV"),
                ("ToonTime.us", "Toon Time"),
                ("RetroToons.us", "Retro Toons"),
                ("NickJr.us", "Nick Jr"),
            ]),
        )
        .start();
    let app = TestApp::spawn(&service(&up)).await;

    assert_eq!(
        titles(&app, "Kidoodle TV").await,
        Vec::<String>::new(),
        "Canadian by its tvg-id"
    );
    assert_eq!(
        titles(&app, "Toon Time").await,
        Vec::<String>::new(),
        "Canadian by its group"
    );
    assert_eq!(
        titles(&app, "Retro Toons").await,
        ["RetroToons.us show"],
        "no country known: the name matches"
    );
    assert_eq!(
        titles(&app, "Nick Jr").await,
        ["NickJr.us show"],
        "the same country: the name matches"
    );
    for name in ["Kidoodle TV", "Toon Time"] {
        let line = match_of(&app, name).await;
        assert_eq!(line["state"], "unmatched", "{line}");
        assert!(line["guide_id"].is_null(), "{line}");
    }
    assert_eq!(match_of(&app, "Nick Jr").await["state"], "exact");
}

#[tokio::test]
async fn a_name_guide_channels_of_two_countries_carry_is_left_to_guide_matching() {
    // One guide, one name, two countries; the US one listed first.
    let guide = xmltv(&[
        ("KidoodleTV.us", "Kidoodle TV"),
        ("KidoodleTV.ca", "Kidoodle TV"),
    ]);
    let up = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            m3u(&[("p-1", "Kidoodle TV", "Kids")]),
        )
        .text("/guide.xml", XML, guide.clone())
        .start();
    let app = TestApp::spawn(&service(&up)).await;
    assert_eq!(
        titles(&app, "Kidoodle TV").await,
        Vec::<String>::new(),
        "no country known: neither guide channel"
    );
    let line = match_of(&app, "Kidoodle TV").await;
    assert_eq!(line["state"], "unmatched", "{line}");
    let offered: Vec<&str> = line["alternatives"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["guide_id"].as_str())
        .collect();
    assert!(
        offered.contains(&"KidoodleTV.us") && offered.contains(&"KidoodleTV.ca"),
        "an admin is offered both: {line}"
    );

    // A Canadian list takes the Canadian one by its name, though listed second.
    let up = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            m3u(&[("p-1", "Kidoodle TV", "CA | Kids")]),
        )
        .text("/guide.xml", XML, guide)
        .start();
    let app = TestApp::spawn(&service(&up)).await;
    assert_eq!(titles(&app, "Kidoodle TV").await, ["KidoodleTV.ca show"]);
    assert_eq!(match_of(&app, "Kidoodle TV").await["state"], "exact");
}

/// A service `P` whose list (`/list.m3u`) is `lists[stage]`, its guide `/guide.xml`
/// `guide`; the upstream and the stage to move it on.
async fn changing_list(lists: Vec<String>, guide: String) -> (FakeUpstream, Arc<AtomicUsize>) {
    let stage = Arc::new(AtomicUsize::new(0));
    let up = FakeUpstream::bind()
        .await
        .route("/list.m3u", list_at(lists, stage.clone()))
        .text("/guide.xml", XML, guide)
        .start();
    (up, stage)
}

/// A list route answering `lists[stage]`.
fn list_at(lists: Vec<String>, stage: Arc<AtomicUsize>) -> axum::routing::MethodRouter {
    get(move || {
        let body = lists[stage.load(Ordering::SeqCst)].clone();
        async move { respond(200, M3U_TYPE, body) }
    })
}

/// Waits until lineup channel `name` has programmes `want` in `/epg.xml`.
async fn wait_titles(app: &TestApp, name: &str, want: &[&str]) {
    eventually(&format!("{name}'s programmes {want:?}"), || async {
        if !app.channel_names().await.iter().any(|n| n == name) {
            return Err(format!("{name} not in the lineup yet"));
        }
        let got = titles(app, name).await;
        (got == want).then_some(()).ok_or(format!("{got:?}"))
    })
    .await;
}

#[tokio::test]
async fn the_partial_refresh_reads_again_the_extra_guides_that_list_new_channels() {
    let one = ("One.uk", "One", "General");
    let shop = ("Qvc.uk", "Shopping", "General");
    let lists = vec![
        m3u(&[one]),
        // "ZDF" only a display name gives (too short a name for guide matching
        // without a country), and "Shopping", whose tvg-id a guide names only in its
        // programmes; then "Film 4", which guide matching gives "Film Four".
        m3u(&[one, ("p-2", "ZDF", "General"), shop]),
        m3u(&[
            one,
            ("p-2", "ZDF", "General"),
            shop,
            ("p-3", "Film 4", "UK | Films"),
        ]),
    ];
    let (up, stage) = changing_list(lists, xmltv(&[("One.uk", "One")])).await;
    let extra = FakeUpstream::bind()
        .await
        .text(
            "/extra.xml",
            XML,
            xmltv(&[("ZDF.de", "ZDF"), ("Film4.uk", "Film Four")]),
        )
        .text("/other.xml", XML, xmltv(&[("Other.uk", "Other Channel")]))
        .text(
            "/ids.xml",
            XML,
            format!(
                "<tv><programme start=\"{}\" stop=\"{}\" channel=\"Qvc.uk\">\
                 <title>Qvc.uk show</title></programme></tv>",
                at(0),
                at(1)
            ),
        )
        .start();
    // No full refresh during the test: only the partial one runs.
    let app = TestApp::spawn(&format!(
        "[cache]\nchannels_ttl = \"300ms\"\n\n[guide]\nrefresh = \"6h\"\n\n{}\n\
         [[guides]]\nname = \"extra\"\nurl = \"{}\"\n\n[[guides]]\nname = \"other\"\nurl = \"{}\"\n\n\
         [[guides]]\nname = \"ids\"\nurl = \"{}\"\n",
        service(&up),
        extra.url("/extra.xml"),
        extra.url("/other.xml"),
        extra.url("/ids.xml")
    ))
    .await;
    wait_titles(&app, "One", &["One.uk show"]).await;
    let reads = || {
        (
            extra.hits("/extra.xml"),
            extra.hits("/other.xml"),
            extra.hits("/ids.xml"),
        )
    };
    assert_eq!(reads(), (1, 1, 1));

    // A channel the extra guide gives by display name, and one another guide names
    // only by id.
    stage.store(1, Ordering::SeqCst);
    wait_titles(&app, "ZDF", &["ZDF.de show"]).await;
    wait_titles(&app, "Shopping", &["Qvc.uk show"]).await;
    assert_eq!(
        reads(),
        (2, 1, 2),
        "the guides listing them read once more, the other not"
    );
    assert_eq!(match_of(&app, "ZDF").await["state"], "exact");

    // A channel guide matching gives a channel of the extra guide.
    stage.store(2, Ordering::SeqCst);
    wait_titles(&app, "Film 4", &["Film4.uk show"]).await;
    assert_eq!(reads(), (3, 1, 2));
    let line = match_of(&app, "Film 4").await;
    assert_eq!(line["state"], "auto", "{line}");
    assert_eq!(line["source"], "extra", "{line}");
    // Nothing new: nothing read.
    let service_reads = up.hits("/list.m3u");
    eventually("the list read again", || async {
        (up.hits("/list.m3u") > service_reads + 1)
            .then_some(())
            .ok_or("not yet")
    })
    .await;
    assert_eq!(reads(), (3, 1, 2));
}

#[tokio::test]
async fn a_guide_whose_assignments_change_in_a_refresh_is_downloaded_once_in_it() {
    let one = ("One.uk", "One", "General");
    // Guide matching gives "BBCOne" the service's "BBC One HD" once the first read
    // has shown the guide's channels.
    let bbc = ("p-1", "BBCOne", "UK | General");
    let lists = vec![
        m3u(&[one, bbc]),
        // At once: "ZDF", which the extra guide gives by display name, and "Film 4",
        // which guide matching gives the extra guide's "Film Four".
        m3u(&[
            one,
            bbc,
            ("p-2", "ZDF", "General"),
            ("p-3", "Film 4", "UK | Films"),
        ]),
    ];
    let guide = xmltv(&[("One.uk", "One"), ("BBCOne.uk", "BBC One HD")]);
    let (up, stage) = changing_list(lists, guide).await;
    let extra = FakeUpstream::bind()
        .await
        .text(
            "/extra.xml",
            XML,
            xmltv(&[("ZDF.de", "ZDF"), ("Film4.uk", "Film Four")]),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[cache]\nchannels_ttl = \"300ms\"\n\n[guide]\nrefresh = \"6h\"\n\n{}\n\
         [[guides]]\nname = \"extra\"\nurl = \"{}\"\n",
        service(&up),
        extra.url("/extra.xml"),
    ))
    .await;
    let downloads = || (up.hits("/guide.xml"), extra.hits("/extra.xml"));

    // The first refresh: matched after the reads, applied without a second download.
    wait_titles(&app, "BBCOne", &["BBCOne.uk show"]).await;
    assert_eq!(match_of(&app, "BBCOne").await["state"], "auto");
    assert_eq!(downloads(), (1, 1));

    // A partial refresh reads the service's guide (its new channels) and the extra
    // one (a name it lists), then matches "Film 4" to the extra guide: no more reads.
    stage.store(1, Ordering::SeqCst);
    wait_titles(&app, "ZDF", &["ZDF.de show"]).await;
    wait_titles(&app, "Film 4", &["Film4.uk show"]).await;
    let line = match_of(&app, "Film 4").await;
    assert_eq!(line["state"], "auto", "{line}");
    assert_eq!(downloads(), (2, 2));
    assert_eq!(titles(&app, "BBCOne").await, ["BBCOne.uk show"]);
}

/// A service whose channel list fails at start is asked once: the guide, reading right
/// after the lineup asked, takes that failure for its answer instead of waiting for
/// the same failing upstream again.
#[tokio::test]
async fn a_list_that_failed_at_start_is_not_asked_again_by_the_guide() {
    let good = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, m3u(&[("One.uk", "One", "UK")]))
        .text(
            "/guide.xml",
            XML,
            xmltv(&[("One.uk", "One")]).replace("</tv>", &format!(
                "<programme start=\"{}\" stop=\"{}\" channel=\"One.uk\"><title>News</title></programme></tv>",
                at(0),
                at(1)
            )),
        )
        .start();
    let bad = FakeUpstream::bind()
        .await
        .route(
            "/list.m3u",
            get(|| async { respond(503, "text/plain", "down") }),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Good\"\nkind = \"m3u\"\nurl = \"{}\"\nepg_url = \"{}\"\n\n\
         [[services]]\nname = \"Bad\"\nkind = \"m3u\"\nurl = \"{}\"\nepg_url = \"{}\"\n",
        good.url("/list.m3u"),
        good.url("/guide.xml"),
        bad.url("/list.m3u"),
        good.url("/guide.xml"),
    ))
    .await;
    let epg = app.get_text_ok("/epg.xml").await;
    assert!(epg.contains("News"), "{epg}");
    let (_, status) = app.get_json("/api/guide/status").await;
    assert_eq!(bad.hits("/list.m3u"), 1, "{status}");
}

#[tokio::test]
async fn the_match_list_follows_a_lineup_change_made_while_a_refresh_still_reads() {
    // A refresh matches against the lineup of its start, and its table was kept until
    // its render. While it still reads (its guide hangs), a channel joins the list:
    // `/api/guide/matches` lists it at once, not after that refresh ends.
    let one = ("One.uk", "One", "General");
    let lists = vec![m3u(&[one]), m3u(&[one, ("p-2", "Two", "General")])];
    let stage = Arc::new(AtomicUsize::new(0));
    let (held_guide, hold, gate) = held(xmltv(&[("One.uk", "One")]));
    let up = FakeUpstream::bind()
        .await
        .route("/list.m3u", list_at(lists, stage.clone()))
        .route("/guide.xml", held_guide)
        .start();
    let app = TestApp::spawn(&format!(
        "[cache]\nchannels_ttl = \"300ms\"\n\n[guide]\nrefresh = \"6h\"\n\n{}",
        service(&up)
    ))
    .await;
    assert_eq!(match_of(&app, "One").await["state"], "exact");

    hold.store(true, Ordering::SeqCst);
    let reads = up.hits("/guide.xml");
    let refresh = tokio::spawn({
        let url = app.url("/api/guide/refresh");
        async move {
            reqwest::Client::new()
                .post(url)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    eventually("the refresh reading the guide", || async {
        (up.hits("/guide.xml") > reads)
            .then_some(())
            .ok_or("not yet")
    })
    .await;

    stage.store(1, Ordering::SeqCst);
    eventually("Two in the lineup", || async {
        let names = app.channel_names().await;
        names
            .iter()
            .any(|n| n == "Two")
            .then_some(())
            .ok_or(format!("{names:?}"))
    })
    .await;
    let two = match_of(&app, "Two").await;
    assert_eq!(two["state"], "unmatched", "{two}");
    assert!(!refresh.is_finished(), "the refresh ended before the check");

    gate.add_permits(16);
    assert_eq!(refresh.await.unwrap(), 200);
    assert_eq!(match_of(&app, "Two").await["state"], "unmatched");
}

#[tokio::test]
async fn a_list_down_at_a_restart_still_gets_its_guide_for_the_channels_last_listed() {
    // The lineup keeps a failing service's channels as last listed (across a restart,
    // from `state_dir/lists/`); its guide, whose URL answers, gives them programmes
    // too, rather than waiting for the list until the next full refresh.
    let down = Arc::new(AtomicUsize::new(0));
    let list = m3u(&[("One.uk", "One", "UK")]);
    let is_down = down.clone();
    let up = FakeUpstream::bind()
        .await
        .route(
            "/list.m3u",
            get(move || {
                let status = if is_down.load(Ordering::SeqCst) == 1 {
                    404
                } else {
                    200
                };
                let body = list.clone();
                async move { respond(status, M3U_TYPE, body) }
            }),
        )
        .text("/guide.xml", XML, xmltv(&[("One.uk", "One")]))
        .start();
    let mut app = TestApp::spawn(&format!("[guide]\nrefresh = \"6h\"\n\n{}", service(&up))).await;
    wait_titles(&app, "One", &["One.uk show"]).await;

    down.store(1, Ordering::SeqCst);
    let lists = up.hits("/list.m3u");
    app.restart().await;
    wait_titles(&app, "One", &["One.uk show"]).await;
    assert!(
        up.hits("/list.m3u") > lists,
        "the list was asked after the restart"
    );
    let (_, status) = app.get_json("/api/guide/status").await;
    // Its status counts the channels it gives the lineup, though its list is down.
    assert_eq!(app.service_status("P").await["channel_count"], 1);
    let p = &status["services"]["P"];
    assert_eq!(
        (&p["last_error"], &p["programmes"]),
        (&Value::Null, &Value::from(1)),
        "{status}"
    );
}

#[tokio::test]
async fn a_service_with_no_guide_whose_list_fails_reports_no_guide_failure() {
    // No `epg_url`, and its list (whose header could name a guide) never loaded: no
    // guide is known, so none failed; its guide status stays empty, not an error.
    let good = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, m3u(&[("One.uk", "One", "UK")]))
        .text("/guide.xml", XML, xmltv(&[("One.uk", "One")]))
        .start();
    let down = FakeUpstream::bind().await.status("/list.m3u", 503).start();
    let app = TestApp::spawn(&format!(
        "{}\n[[services]]\nname = \"Down\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        service(&good),
        down.url("/list.m3u")
    ))
    .await;
    wait_titles(&app, "One", &["One.uk show"]).await;
    let (_, status) = app.get_json("/api/guide/status").await;
    assert!(status["services"]["P"]["last_error"].is_null(), "{status}");
    assert!(status["services"].get("Down").is_none(), "{status}");
}

#[tokio::test]
async fn a_guide_id_set_by_an_admin_shows_in_the_next_listing() {
    // An edit answers before the guide follows it (`Guides::lineup_changed`); what is
    // on, asked right after (`/api/channels`' `live`, from `Guides::listings`, as the
    // Xtream short EPG), and `/epg.xml` already follow the lineup as it is now. A
    // guide id set by hand gives programmes once the guide listing it is read again
    // (in the background); then one no guide lists gives none at once, and either of
    // the first two gives its own again at once (their programmes kept): never those
    // of an id the channel had before, from either guide.
    let up = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, m3u(&[("", "Mine", "")]))
        .text("/guide.xml", XML, xmltv(&[("A.example", "Alpha")]))
        .text("/other.xml", XML, xmltv(&[("B.example", "Beta")]))
        .start();
    let cfg = format!(
        "{}\n[[guides]]\nname = \"X\"\nurl = \"{}\"\n",
        service(&up),
        up.url("/other.xml")
    );
    let app = TestApp::spawn(&cfg).await;
    let id = app.channel_id("Mine").await;
    assert_eq!(on_now(&app, &id).await, None);
    for guide_id in ["A.example", "B.example"] {
        set_guide_id(&app, &id, guide_id).await;
        wait_on_now(&app, &id, &format!("{guide_id} show")).await;
    }
    for (guide_id, want) in [
        ("Z.example", None),
        ("A.example", Some("A.example show")),
        ("B.example", Some("B.example show")),
        ("A.example", Some("A.example show")),
    ] {
        set_guide_id(&app, &id, guide_id).await;
        let want = want.map(str::to_string);
        assert_eq!(on_now(&app, &id).await, want, "{guide_id}");
        let matched = match_of(&app, "Mine").await;
        let took = want.as_ref().map(|_| guide_id);
        assert_eq!(matched["guide_id"].as_str(), took, "{matched}");
        assert_eq!(
            titles(&app, "Mine").await,
            Vec::from_iter(want),
            "{guide_id}"
        );
    }
}

#[tokio::test]
async fn a_guide_id_set_by_hand_wins_over_the_services_tvg_id_in_one_guide() {
    // The list says `A.example`; the admin says `B.example`; the guide lists both,
    // `A.example` first. The admin's id gives the programmes.
    let up = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, m3u(&[("A.example", "Mine", "")]))
        .text(
            "/guide.xml",
            XML,
            xmltv(&[("A.example", "Alpha"), ("B.example", "Beta")]),
        )
        .start();
    let app = TestApp::spawn(&service(&up)).await;
    let id = app.channel_id("Mine").await;
    assert_eq!(titles(&app, "Mine").await, ["A.example show"]);
    set_guide_id(&app, &id, "B.example").await;
    eventually("the guide to be read again", || async {
        match titles(&app, "Mine").await.as_slice() {
            [t] if t == "B.example show" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test]
async fn a_guide_read_in_progress_shows_in_the_status() {
    // Other guides' reads wait for a slow one (at most five minutes): the status says
    // which read goes on, and since when.
    let (held_guide, hold, gate) = held(xmltv(&[("One.uk", "One")]));
    let up = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, m3u(&[("One.uk", "One", "")]))
        .route("/guide.xml", held_guide)
        .start();
    let app = TestApp::spawn(&service(&up)).await;
    let reading = |s: &Value| {
        s["services"]["P"]["reading_since"]
            .as_str()
            .map(str::to_string)
    };
    let (_, status) = app.get_json("/api/guide/status").await;
    assert!(status["services"]["P"]["last_ok"].is_string(), "{status}");
    assert_eq!(reading(&status), None, "{status}");

    hold.store(true, Ordering::SeqCst);
    let refresh = tokio::spawn({
        let url = app.url("/api/guide/refresh");
        async move {
            reqwest::Client::new()
                .post(url)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let since = eventually("the read to show", || async {
        let (_, s) = app.get_json("/api/guide/status").await;
        reading(&s).ok_or(s)
    })
    .await;
    assert!(
        chrono::DateTime::parse_from_rfc3339(&since).is_ok(),
        "{since}"
    );
    gate.add_permits(1);
    assert_eq!(refresh.await.unwrap(), 200);
    let (_, status) = app.get_json("/api/guide/status").await;
    assert_eq!(reading(&status), None, "{status}");
}

/// A route answering `guide`, once `hold` is set only as `gate` gives permits.
fn held(
    guide: String,
) -> (
    axum::routing::MethodRouter,
    Arc<std::sync::atomic::AtomicBool>,
    Arc<tokio::sync::Semaphore>,
) {
    let hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (held, opened) = (hold.clone(), gate.clone());
    let route = get(move || {
        let (held, opened, guide) = (held.clone(), opened.clone(), guide.clone());
        async move {
            if held.load(Ordering::SeqCst) {
                drop(opened.acquire().await);
            }
            respond(200, XML, guide)
        }
    });
    (route, hold, gate)
}

#[tokio::test]
async fn a_new_guide_id_its_guide_lists_does_not_keep_the_old_one_by_name_meanwhile() {
    // "Mine" takes `Old.x` by the guide id set by hand; that guide channel also carries
    // its name. Set to `New.x`, which the same guide lists: while that guide is read
    // again (held here), the channel shows nothing, not the old programmes by name;
    // then the new ones.
    let (held_guide, hold, gate) = held(xmltv(&[("Old.x", "Mine"), ("New.x", "Other")]));
    let up = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, m3u(&[("", "Mine", "")]))
        .route("/guide.xml", held_guide)
        .start();
    let app = TestApp::spawn(&service(&up)).await;
    let id = app.channel_id("Mine").await;
    set_guide_id(&app, &id, "Old.x").await;
    wait_on_now(&app, &id, "Old.x show").await;
    hold.store(true, Ordering::SeqCst);
    set_guide_id(&app, &id, "New.x").await;
    assert_eq!(on_now(&app, &id).await, None);
    gate.add_permits(10);
    wait_on_now(&app, &id, "New.x show").await;
}

#[tokio::test]
async fn a_guide_id_set_by_hand_drops_a_match_by_name_at_once() {
    // "Mine" takes `Old.x` by its display name. Given the guide id `New.x`, which the
    // same guide lists, it shows nothing while that guide is read again (held here),
    // not the programmes it had by name; then the new ones. (A read that matched by
    // name is not a match the new id lets stand: a read now would match by the id.)
    let (held_guide, hold, gate) = held(xmltv(&[("Old.x", "Mine"), ("New.x", "Other")]));
    let up = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, m3u(&[("", "Mine", "")]))
        .route("/guide.xml", held_guide)
        .start();
    let app = TestApp::spawn(&service(&up)).await;
    let id = app.channel_id("Mine").await;
    wait_on_now(&app, &id, "Old.x show").await;
    hold.store(true, Ordering::SeqCst);
    set_guide_id(&app, &id, "New.x").await;
    assert_eq!(on_now(&app, &id).await, None);
    gate.add_permits(10);
    wait_on_now(&app, &id, "New.x show").await;
}

#[tokio::test]
async fn a_guide_read_longer_than_read_timeout_is_cut() {
    // `[guide] read_timeout` bounds one guide's read (default 5 minutes: a slow line's
    // big guide needs more, an impatient household less).
    let (held_guide, hold, gate) = held(xmltv(&[("One.uk", "One")]));
    hold.store(true, Ordering::SeqCst);
    let up = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, m3u(&[("One.uk", "One", "")]))
        .route("/guide.xml", held_guide)
        .start();
    let app = TestApp::spawn(&format!(
        "[guide]\nread_timeout = \"1s\"\n\n{}",
        service(&up)
    ))
    .await;
    let status = eventually("the read to be cut", || async {
        let (_, s) = app.get_json("/api/guide/status").await;
        match s["services"]["P"]["last_error"].as_str() {
            Some(e) if e.contains("took longer than 1s") => Ok(s),
            _ => Err(s),
        }
    })
    .await;
    assert!(
        status["services"]["P"]["reading_since"].is_null(),
        "{status}"
    );
    gate.add_permits(10);
}

/// Sets lineup channel `id`'s guide id by hand (`PATCH /api/channels/{id}`).
async fn set_guide_id(app: &TestApp, id: &str, guide_id: &str) {
    let resp = app
        .send_json(
            reqwest::Method::PATCH,
            &format!("/api/channels/{id}"),
            &format!("{{\"tvg_id\": \"{guide_id}\"}}"),
            None,
        )
        .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

/// The title on now for lineup channel `id`, as `/api/channels`' `live` says it.
async fn on_now(app: &TestApp, id: &str) -> Option<String> {
    let (status, page) = app.get_json("/api/channels").await;
    assert_eq!(status, 200, "{page}");
    page["live"][id]["now"].as_str().map(str::to_string)
}

/// Waits until `want` is on now for lineup channel `id` (a guide read in between).
async fn wait_on_now(app: &TestApp, id: &str, want: &str) {
    eventually(&format!("{want} on now"), || async {
        match on_now(app, id).await {
            Some(now) if now == want => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// `text` gzipped.
fn gzipped(text: &str) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap()
}

/// The files in `state_dir/guides/`.
fn copies(app: &TestApp) -> Vec<String> {
    // Beside the copies, the guide matches kept for the next start.
    let mut names: Vec<String> = std::fs::read_dir(app.state_dir().join("guides"))
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .filter(|name| name != "matches.json")
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `body` as `content_type`, or nothing ever (a host that hangs) while `hang` is 1.
fn hangs_when(
    hang: &Arc<AtomicUsize>,
    content_type: &'static str,
    body: String,
) -> axum::routing::MethodRouter {
    let hang = hang.clone();
    get(move || {
        let (hanging, body) = (hang.load(Ordering::SeqCst) == 1, body.clone());
        async move {
            if hanging {
                std::future::pending::<()>().await;
            }
            respond(200, content_type, body)
        }
    })
}

/// `service(up)` given a minute for each request and each guide read.
fn patient(up: &FakeUpstream) -> String {
    format!(
        "[guide]\nread_timeout = \"60s\"\n\n{}timeout = \"60s\"\n",
        service(up)
    )
}

/// Waits for the copy of the guide's last good read in `state_dir/guides/`.
async fn wait_copy(app: &TestApp) {
    eventually_true("a copy in state_dir/guides", || async {
        copies(app).len() == 1
    })
    .await;
}

#[tokio::test]
async fn a_guide_down_at_a_restart_is_served_from_the_copy_of_its_last_good_read() {
    // A gzipped guide read once is kept in `state_dir/guides/` as fetched. Down at a
    // restart, its copy gives the programmes and the status says so; a read that
    // fails half-way leaves the copy as it was; once the guide answers again, it is
    // read as usual.
    let down = Arc::new(AtomicUsize::new(0));
    let guide = gzipped(&xmltv(&[("One.uk", "One")]));
    let is_down = down.clone();
    let up = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, m3u(&[("One.uk", "One", "UK")]))
        .route(
            "/guide.xml",
            get(move || {
                let stage = is_down.load(Ordering::SeqCst);
                let body = guide.clone();
                async move {
                    match stage {
                        0 => respond(200, "application/gzip", body),
                        1 => respond(503, "text/plain", "down for maintenance"),
                        // Cut in the middle: the read fails once the copy has begun.
                        _ => respond(200, "application/gzip", body[..body.len() / 2].to_vec()),
                    }
                }
            }),
        )
        .start();
    let mut app = TestApp::spawn(&service(&up)).await;
    wait_titles(&app, "One", &["One.uk show"]).await;
    // Put in place in the background once the read worked.
    let kept = eventually("one copy in state_dir/guides", || async {
        let kept = copies(&app);
        (kept.len() == 1 && kept[0].ends_with(".xmltv"))
            .then_some(kept.clone())
            .ok_or(format!("{kept:?}"))
    })
    .await;
    let copy = app.state_dir().join("guides").join(&kept[0]);
    let bytes = std::fs::read(&copy).unwrap();
    assert!(
        bytes.starts_with(&[0x1f, 0x8b]),
        "the copy is the guide as fetched (gzip)"
    );
    // Owner-only, as everything in state_dir.
    use std::os::unix::fs::PermissionsExt;
    for path in [copy.clone(), app.state_dir().join("guides")] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
    }

    down.store(1, Ordering::SeqCst);
    let reads = up.hits("/guide.xml");
    app.restart().await;
    wait_titles(&app, "One", &["One.uk show"]).await;
    assert!(
        up.hits("/guide.xml") > reads,
        "the guide was asked after the restart"
    );
    let (_, status) = app.get_json("/api/guide/status").await;
    let p = &status["services"]["P"];
    assert!(
        p["last_error"].as_str().is_some_and(|e| e.contains("503"))
            && p["copy_saved"].is_string()
            && p["last_ok"] == p["copy_saved"]
            && p["programmes"] == 1,
        "the status says the copy is served and why: {status}"
    );
    // A read that fails half-way since left the copy as it was, and no part file.
    down.store(2, Ordering::SeqCst);
    let failed = up.hits("/guide.xml");
    let (code, status) = json_of(app.post("/api/guide/refresh").await).await;
    assert_eq!(code, 200, "{status}");
    assert!(up.hits("/guide.xml") > failed, "the refresh read the guide");
    let p = &status["services"]["P"];
    assert!(
        p["copy_saved"].is_string() && p["programmes"] == 1,
        "the copy is still served: {status}"
    );
    assert_eq!(copies(&app), kept, "state_dir/guides after a failed read");
    assert_eq!(std::fs::read(&copy).unwrap(), bytes);
    wait_titles(&app, "One", &["One.uk show"]).await;

    down.store(0, Ordering::SeqCst);
    let (code, status) = json_of(app.post("/api/guide/refresh").await).await;
    assert_eq!(code, 200, "{status}");
    let p = &status["services"]["P"];
    assert!(
        p["last_error"].is_null() && p["copy_saved"].is_null() && p["programmes"] == 1,
        "read as usual once it answers: {status}"
    );
    wait_titles(&app, "One", &["One.uk show"]).await;
}

#[tokio::test]
async fn a_guide_that_hangs_after_a_restart_has_its_copy_stand_in_for_the_first_request() {
    // After a restart, a guide whose read hangs (answers nothing until `read_timeout`,
    // here a minute) has the copy of its last good read stand in while the read goes
    // on: the first `/epg.xml` is answered with its programmes, not after the minute
    // (before, it waited for the read to be cut).
    let hang = Arc::new(AtomicUsize::new(0));
    let up = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, m3u(&[("One.uk", "One", "UK")]))
        .route(
            "/guide.xml",
            hangs_when(&hang, XML, xmltv(&[("One.uk", "One")])),
        )
        .start();
    let mut app = TestApp::spawn(&patient(&up)).await;
    wait_titles(&app, "One", &["One.uk show"]).await;
    wait_copy(&app).await;

    hang.store(1, Ordering::SeqCst);
    let reads = up.hits("/guide.xml");
    app.restart().await;
    // The first request, answered while the read hangs (`get` gives up after 20 s).
    assert_eq!(titles(&app, "One").await, ["One.uk show"], "from the copy");
    assert!(up.hits("/guide.xml") > reads, "the guide is being read");
    let (_, status) = app.get_json("/api/guide/status").await;
    let p = &status["services"]["P"];
    assert!(
        p["copy_saved"].is_string()
            && p["reading_since"].is_string()
            && p["last_error"].is_null()
            && p["programmes"] == 1,
        "the copy stands in while the read goes on: {status}"
    );
    tv_validate(app.get_text_ok("/epg.xml").await.as_bytes());
}

#[tokio::test]
async fn a_match_decision_made_while_a_copy_stands_in_shows_before_the_read_ends() {
    // Review 67 #4: after a restart the guide's read hangs (a minute) and its copy
    // stands in; an admin's pick for a channel the copy lists shows in `/epg.xml`
    // within seconds, from the copy read again, not once the hanging read is cut.
    let (up, hang) = one_and_two().await;
    let mut app = TestApp::spawn(&patient(&up)).await;
    wait_titles(&app, "One", &["One.uk show"]).await;
    assert!(titles(&app, "Two").await.is_empty(), "no match for Two");
    wait_copy(&app).await;

    hang.store(1, Ordering::SeqCst);
    app.restart().await;
    assert_eq!(titles(&app, "One").await, ["One.uk show"], "from the copy");
    pick(&app, "Two", "Second.uk").await;
    wait_titles(&app, "Two", &["Second.uk show"]).await;
    let (_, status) = app.get_json("/api/guide/status").await;
    assert!(
        status["services"]["P"]["reading_since"].is_string(),
        "the read still hangs: {status}"
    );
    tv_validate(app.get_text_ok("/epg.xml").await.as_bytes());
}

#[tokio::test]
async fn a_match_decision_for_a_guide_read_shows_while_another_guides_read_hangs() {
    // A refresh reads every guide; an extra guide's read hangs (a minute) while the
    // service's guide is read. Channel "BBCOne" is matched to its `BBCOne.uk`; the
    // admin's pick of `BBCOneB.uk` instead (whose programmes the read kept besides:
    // its name is made of the lineup's words) shows in `/epg.xml` at once, not once
    // the other read is cut (before, applying it waited for the refresh).
    let hang = Arc::new(AtomicUsize::new(0));
    let up = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            m3u(&[("One.uk", "One", "UK"), ("", "BBCOne", "UK")]),
        )
        .text(
            "/guide.xml",
            XML,
            xmltv(&[
                ("One.uk", "One"),
                ("BBCOne.uk", "BBC One HD"),
                ("BBCOneB.uk", "BBC One"),
            ]),
        )
        .route(
            "/extra.xml",
            hangs_when(&hang, XML, xmltv(&[("Other.uk", "Other")])),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "{}\n[[guides]]\nname = \"X\"\nurl = \"{}\"\n",
        patient(&up),
        up.url("/extra.xml")
    ))
    .await;
    wait_titles(&app, "One", &["One.uk show"]).await;
    wait_titles(&app, "BBCOne", &["BBCOne.uk show"]).await;

    hang.store(1, Ordering::SeqCst);
    let guide_reads = up.hits("/guide.xml");
    let refresh = tokio::spawn(
        reqwest::Client::new()
            .post(app.url("/api/guide/refresh"))
            .send(),
    );
    eventually_true(
        "the service's guide read again, X's read hanging",
        || async {
            let (_, status) = app.get_json("/api/guide/status").await;
            up.hits("/guide.xml") > guide_reads
                && status["services"]["P"]["reading_since"].is_null()
                && status["guides"]["X"]["reading_since"].is_string()
        },
    )
    .await;
    pick(&app, "BBCOne", "BBCOneB.uk").await;
    wait_titles(&app, "BBCOne", &["BBCOneB.uk show"]).await;
    assert!(!refresh.is_finished(), "the refresh still waits for X");
    refresh.abort();
}

#[tokio::test]
async fn a_match_decision_for_a_guide_whose_read_hangs_in_a_refresh_shows_from_its_copy() {
    // Review 69 #4: the guide was read; a refresh's read of it hangs (a minute). An
    // admin's pick of one of its channels shows at once, from the copy of its last
    // good read, not once the read is cut; and still after the cut.
    let (up, hang) = one_and_two().await;
    let app = TestApp::spawn(&format!(
        "[guide]\nread_timeout = \"40s\"\n\n{}timeout = \"40s\"\n",
        service(&up)
    ))
    .await;
    wait_titles(&app, "One", &["One.uk show"]).await;
    wait_copy(&app).await;
    hang.store(1, Ordering::SeqCst);
    let refresh = tokio::spawn(
        reqwest::Client::new()
            .post(app.url("/api/guide/refresh"))
            .send(),
    );
    eventually_true("the guide's read hanging", || async {
        let (_, status) = app.get_json("/api/guide/status").await;
        status["services"]["P"]["reading_since"].is_string()
    })
    .await;
    pick(&app, "Two", "Second.uk").await;
    wait_titles(&app, "Two", &["Second.uk show"]).await;
    assert!(
        !refresh.is_finished(),
        "the refresh still waits for the read"
    );
    // The read is cut: what it had kept stays, the pick with it.
    eventually_within(Duration::from_secs(60), "the read cut", || async {
        let (_, status) = app.get_json("/api/guide/status").await;
        let p = &status["services"]["P"];
        if p["last_error"].is_string() {
            Ok(())
        } else {
            Err(p.to_string())
        }
    })
    .await;
    assert_eq!(
        titles(&app, "Two").await,
        ["Second.uk show"],
        "after the cut"
    );
    assert_eq!(titles(&app, "One").await, ["One.uk show"], "after the cut");
}

#[tokio::test]
async fn a_match_decision_after_a_hanging_read_was_cut_shows_from_the_copy() {
    // Review 69 #3: after a restart the guide's read hangs and is cut (`read_timeout`);
    // its copy is served. A pick then shows at once, from the copy, not after one more
    // read of the hanging host (which would take `read_timeout` again).
    let (up, hang) = one_and_two().await;
    let mut app = TestApp::spawn(&format!(
        "[guide]\nread_timeout = \"25s\"\n\n{}timeout = \"25s\"\n",
        service(&up)
    ))
    .await;
    wait_titles(&app, "One", &["One.uk show"]).await;
    wait_copy(&app).await;
    hang.store(1, Ordering::SeqCst);
    app.restart().await;
    eventually_within(Duration::from_secs(60), "the first read cut", || async {
        let (_, status) = app.get_json("/api/guide/status").await;
        let p = &status["services"]["P"];
        if p["last_error"].is_string() && p["copy_saved"].is_string() {
            Ok(())
        } else {
            Err(p.to_string())
        }
    })
    .await;
    pick(&app, "Two", "Second.uk").await;
    eventually_within(
        Duration::from_secs(10),
        "Two's pick in /epg.xml, before a read could end",
        || async {
            let got = titles(&app, "Two").await;
            (got == ["Second.uk show"])
                .then_some(())
                .ok_or(format!("{got:?}"))
        },
    )
    .await;
    tv_validate(app.get_text_ok("/epg.xml").await.as_bytes());
}

/// An upstream listing One (`One.uk`) and Two (no tvg-id), and a guide of `One.uk` and
/// `Second.uk` ("Deuxieme": no match for Two) that hangs while the flag is 1.
async fn one_and_two() -> (FakeUpstream, Arc<AtomicUsize>) {
    let hang = Arc::new(AtomicUsize::new(0));
    let up = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            m3u(&[("One.uk", "One", "UK"), ("", "Two", "UK")]),
        )
        .route(
            "/guide.xml",
            hangs_when(
                &hang,
                XML,
                xmltv(&[("One.uk", "One"), ("Second.uk", "Deuxieme")]),
            ),
        )
        .start();
    (up, hang)
}

/// Picks guide channel `guide_id` for lineup channel `name` (admin).
async fn pick(app: &TestApp, name: &str, guide_id: &str) {
    let channel = app.channel_id(name).await;
    let (status, body) = json_of(
        app.send_json(
            reqwest::Method::POST,
            &format!("/api/guide/matches/{channel}"),
            &format!(r#"{{"action":"pick","guide_id":"{guide_id}"}}"#),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_host_that_hangs_after_a_restart_has_its_kept_list_and_guide_copy_stand_in() {
    // The provider's host hangs (channel list and guide) after a restart, each read
    // bounded by a minute: the list kept from before stands in for the guide's read
    // too (as for the lineup), and the guide's copy then stands in for its read, so
    // the first `/epg.xml` has the channel's programmes, not after the minute.
    let hang = Arc::new(AtomicUsize::new(0));
    let list = m3u(&[("One.uk", "One", "UK")]);
    let up = FakeUpstream::bind()
        .await
        .route("/list.m3u", hangs_when(&hang, M3U_TYPE, list))
        .route(
            "/guide.xml",
            hangs_when(&hang, XML, xmltv(&[("One.uk", "One")])),
        )
        .start();
    let mut app = TestApp::spawn(&patient(&up)).await;
    wait_titles(&app, "One", &["One.uk show"]).await;
    wait_copy(&app).await;

    hang.store(1, Ordering::SeqCst);
    app.restart().await;
    assert_eq!(titles(&app, "One").await, ["One.uk show"], "from the copy");
    let (_, status) = app.get_json("/api/guide/status").await;
    assert!(
        status["services"]["P"]["copy_saved"].is_string(),
        "{status}"
    );
}

#[tokio::test]
async fn a_copy_without_programmes_is_not_served_and_a_fresh_read_joins_at_once() {
    // A saved copy with no programme left (past, or none) does not make the first
    // `/epg.xml` an empty guide a client keeps for hours while the fresh read is
    // seconds away. And once a guide's fresh read ends, the guide served (from its
    // copy meanwhile) has it at once, not only when another guide that hangs is cut.
    let mode = Arc::new(AtomicUsize::new(0));
    let full = xmltv(&[("One.uk", "One")]);
    let empty = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<tv>\n\
                 <channel id=\"One.uk\"><display-name>One</display-name></channel>\n</tv>\n"
        .to_string();
    let later = full.replace("One.uk show", "One.uk news");
    let now = mode.clone();
    let up = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, m3u(&[("One.uk", "One", "UK")]))
        .route(
            "/guide.xml",
            get(move || {
                let (stage, empty, full, later) = (
                    now.load(Ordering::SeqCst),
                    empty.clone(),
                    full.clone(),
                    later.clone(),
                );
                async move {
                    match stage {
                        0 => respond(200, XML, empty),
                        1 => {
                            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                            respond(200, XML, full)
                        }
                        _ => {
                            tokio::time::sleep(std::time::Duration::from_secs(12)).await;
                            respond(200, XML, later)
                        }
                    }
                }
            }),
        )
        .hang("/hang.xml")
        .start();
    let mut app = TestApp::spawn(&patient(&up)).await;
    eventually_true("the copy of the guide without programmes", || async {
        copies(&app).len() == 1
            && app.get_json("/api/guide/status").await.1["services"]["P"]["last_ok"].is_string()
    })
    .await;

    // Slow after the restart: its copy has no programme, so the read is waited for.
    mode.store(1, Ordering::SeqCst);
    app.restart().await;
    assert_eq!(titles(&app, "One").await, ["One.uk show"], "the fresh read");

    // Slower still, beside an extra guide that hangs: served from the copy at 10 s,
    // then the fresh read joins when it ends (12 s), the other still hanging.
    mode.store(2, Ordering::SeqCst);
    app.stop().await;
    app.config_text.push_str(&format!(
        "\n[[guides]]\nname = \"slow\"\nurl = \"{}\"\ntimeout = \"60s\"\n",
        up.url("/hang.xml")
    ));
    app.start().await;
    assert_eq!(titles(&app, "One").await, ["One.uk show"], "from the copy");
    eventually("the fresh read joined", || async {
        let got = titles(&app, "One").await;
        (got == ["One.uk news"])
            .then_some(())
            .ok_or(format!("{got:?}"))
    })
    .await;
    let (_, status) = app.get_json("/api/guide/status").await;
    assert!(
        status["guides"]["slow"]["reading_since"].is_string()
            && status["services"]["P"]["copy_saved"].is_null(),
        "{status}"
    );
}

#[tokio::test]
async fn the_guide_status_shows_a_read_that_hangs_after_a_start() {
    // A lone guide that hangs, with no copy: `/api/guide/status` is not held until
    // `read_timeout` (a minute here) but says the read is going on, and since when.
    let up = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, m3u(&[("One.uk", "One", "UK")]))
        .hang("/guide.xml")
        .start();
    let app = TestApp::spawn(&patient(&up)).await;
    let (code, status) = app.get_json("/api/guide/status").await;
    assert_eq!(code, 200, "{status}");
    assert!(
        status["services"]["P"]["reading_since"].is_string()
            && status["programmes"].is_null()
            && status["channels"].is_null(),
        "{status}"
    );
    let source = status["services"]["P"]["source"]
        .as_str()
        .unwrap_or_default();
    assert!(
        source.ends_with("/guide.xml"),
        "its address while read: {status}"
    );
}

#[tokio::test]
async fn a_lineup_without_channels_gets_its_empty_guide_without_waiting_for_the_guides() {
    // No channel listed and a guide that hangs: no guide can give the lineup a
    // programme, so the first `/epg.xml` does not wait for the read (`read_timeout`,
    // a minute here).
    let up = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, "#EXTM3U\n")
        .hang("/guide.xml")
        .start();
    let app = TestApp::spawn(&patient(&up)).await;
    assert!(app.channels().await.is_empty());
    let xml = app.get_text_ok("/epg.xml").await;
    assert!(!xml.contains("<channel "), "{xml}");
    assert!(up.hits("/guide.xml") > 0, "the guide is being read");
    assert!(xml.contains("<tv ") && xml.ends_with("</tv>\n"), "{xml}");
}

#[tokio::test]
async fn a_list_that_names_its_guide_and_is_down_at_a_restart_still_gets_that_guide() {
    // No `epg_url`: the list's header names the guide (`url-tvg`). Down at a restart,
    // the list kept in `state_dir/lists/` names it still, so the guide is read for the
    // channels last listed (before, no guide was known until the list loaded again,
    // and then none was read until the next full refresh).
    let down = Arc::new(AtomicUsize::new(0));
    let is_down = down.clone();
    let builder = FakeUpstream::bind().await;
    let list = m3u(&[("One.uk", "One", "UK")]).replacen(
        "#EXTM3U\n",
        &format!("#EXTM3U url-tvg=\"{}\"\n", builder.url("/guide.xml")),
        1,
    );
    let up = builder
        .route(
            "/list.m3u",
            get(move || {
                let status = if is_down.load(Ordering::SeqCst) == 1 {
                    404
                } else {
                    200
                };
                let body = list.clone();
                async move { respond(status, M3U_TYPE, body) }
            }),
        )
        .text("/guide.xml", XML, xmltv(&[("One.uk", "One")]))
        .start();
    let mut app = TestApp::spawn(&format!(
        "[[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        up.url("/list.m3u")
    ))
    .await;
    wait_titles(&app, "One", &["One.uk show"]).await;

    down.store(1, Ordering::SeqCst);
    let guides = up.hits("/guide.xml");
    app.restart().await;
    wait_titles(&app, "One", &["One.uk show"]).await;
    assert!(
        up.hits("/guide.xml") > guides,
        "the guide was read after the restart"
    );
    let (_, status) = app.get_json("/api/guide/status").await;
    let p = &status["services"]["P"];
    assert!(
        p["last_error"].is_null() && p["copy_saved"].is_null() && p["programmes"] == 1,
        "read from its place, not from a copy: {status}"
    );
}
