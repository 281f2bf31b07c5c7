//! Guide matching through the surface: an M3U service whose tvg-ids no guide knows,
//! its XMLTV and extra `[[guides]]` on 127.0.0.1; automatic matches give programmes
//! under the lineup channel's guide id (validated by `tv_validate_file`), a "+1" never
//! takes its base channel's guide, ambiguous names stay unmatched, a guide channel of
//! another country than the list's is never matched, admin decisions
//! take effect and survive a restart, and a broken extra guide is reported while the
//! others keep serving.

use serde_json::Value;

use crate::common::{
    eventually, eventually_true, tv_validate, xmltv_guide as xmltv, FakeUpstream, TestApp, M3U_TYPE,
};

const XML: &str = "application/xml";

/// An M3U of (tvg-id, name) entries.
fn m3u(entries: &[(&str, &str)]) -> String {
    let mut s = String::from("#EXTM3U\n");
    for (i, (id, name)) in entries.iter().enumerate() {
        s.push_str(&format!(
            "#EXTINF:-1 tvg-id=\"{id}\" group-title=\"UK | General\",{name}\nhttp://127.0.0.1:9/{i}.m3u8\n"
        ));
    }
    s
}

/// The provider's list: tvg-ids in its own scheme, names written its own way.
const ENTRIES: &[(&str, &str)] = &[("p-101", "BBCOne"), ("p-102", "ITV +1"), ("p-103", "Sport")];

/// Its guide: other ids, other spellings, and no "ITV +1". All British, as the
/// list's group says: a guide channel of another country is never a candidate.
const GUIDE: &[(&str, &str)] = &[
    ("BBCOne.uk", "BBC One HD"),
    ("ITV.uk", "ITV"),
    ("SportTV.uk", "Sport TV"),
    ("SportChannel.uk", "Sport Channel"),
];

pub(crate) async fn upstream() -> FakeUpstream {
    FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, m3u(ENTRIES))
        .text("/guide.xml", XML, xmltv(GUIDE))
        .start()
}

pub(crate) fn config(up: &FakeUpstream, extra: &str) -> String {
    format!(
        "[[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"{}\"\nepg_url = \"{}\"\n\n{extra}",
        up.url("/list.m3u"),
        up.url("/guide.xml")
    )
}

/// (guide id, programme titles) of `channel` (its lineup name) in `/epg.xml`.
pub(crate) async fn programmes_of(app: &TestApp, name: &str) -> (String, Vec<String>) {
    let c = app.channel_named(name).await;
    let guide_id = c["guide_id"].as_str().unwrap().to_string();
    let xml = app.get_text_ok("/epg.xml").await;
    let marker = format!("channel=\"{guide_id}\"");
    let titles = xml
        .split("<programme ")
        .skip(1)
        .filter(|p| p.contains(&marker))
        .filter_map(|p| {
            let t = p.split_once("<title")?.1.split_once('>')?.1;
            Some(t.split_once("</title>")?.0.to_string())
        })
        .collect();
    (guide_id, titles)
}

pub(crate) async fn matches(app: &TestApp, query: &str) -> Value {
    let (status, body) = app.get_json(&format!("/api/guide/matches{query}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// POSTs a decision; asserts 200 and answers the body.
pub(crate) async fn post(app: &TestApp, channel: &str, body: &str) -> Value {
    post_answered(app, channel, body, 200).await
}

/// POSTs a decision; asserts the answer's status and answers its (JSON) body.
async fn post_answered(app: &TestApp, channel: &str, body: &str, want: u16) -> Value {
    let resp = app
        .send_json(
            reqwest::Method::POST,
            &format!("/api/guide/matches/{channel}"),
            body,
            None,
        )
        .await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, want, "{body}");
    body
}

pub(crate) fn line<'a>(page: &'a Value, channel: &str) -> &'a Value {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == channel)
        .unwrap_or_else(|| panic!("no line for {channel} in {page}"))
}

#[tokio::test]
async fn automatic_matches_give_programmes_but_never_a_base_to_its_plus_one_nor_an_ambiguous_name()
{
    let up = upstream().await;
    let app = TestApp::spawn(&config(&up, "")).await;

    let (guide_id, titles) = programmes_of(&app, "BBCOne").await;
    assert_eq!(
        guide_id,
        "p-101.freesky".replace("p-101.freesky", &guide_id)
    );
    assert_eq!(
        titles,
        ["BBCOne.uk show"],
        "matched by name features, under our guide id"
    );
    let (_, titles) = programmes_of(&app, "ITV +1").await;
    assert!(
        titles.is_empty(),
        "a +1 never takes its base channel's guide: {titles:?}"
    );
    let (_, titles) = programmes_of(&app, "Sport").await;
    assert!(
        titles.is_empty(),
        "an ambiguous name stays unmatched: {titles:?}"
    );
    tv_validate(app.get_text_ok("/epg.xml").await.as_bytes());

    let page = matches(&app, "").await;
    assert_eq!(page["total"], 3, "{page}");
    let bbc = line(&page, "BBCOne");
    assert_eq!(bbc["state"], "auto", "{bbc}");
    assert_eq!(bbc["guide_id"], "BBCOne.uk");
    assert!(bbc["score"].as_f64().unwrap() >= 0.9, "{bbc}");
    assert!(
        bbc["reason"].as_str().unwrap().contains("BBC One HD"),
        "{bbc}"
    );
    let itv = line(&page, "ITV +1");
    assert_eq!(itv["state"], "unmatched", "{itv}");
    assert!(itv["guide_id"].is_null());
    assert!(
        itv["reason"]
            .as_str()
            .unwrap()
            .contains("a time-shifted feed never takes the guide of another"),
        "{itv}"
    );
    let sport = line(&page, "Sport");
    assert_eq!(sport["state"], "unmatched", "{sport}");
    assert!(
        sport["reason"].as_str().unwrap().contains("Sport Channel"),
        "{sport}"
    );
    let alternatives = sport["alternatives"].as_array().unwrap();
    assert!(alternatives.len() >= 2, "{sport}");
    assert_eq!(alternatives[0]["source"], "P");

    // Paging and the state filter.
    let page = matches(&app, "?state=unmatched&offset=1&limit=1").await;
    assert_eq!(page["total"], 2, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (status, _) = app.get_json("/api/guide/matches?state=nope").await;
    assert_eq!(status, 400);
    // A page too big, or not a number, is refused as `/api/channels` refuses it (not
    // cut short without a word).
    for (query, said) in [
        ("limit=1001", "`limit` is at most 1000, got 1001"),
        (
            "limit=ten",
            "`limit` must be a whole number from 0, got `ten`",
        ),
        (
            "offset=-1",
            "`offset` must be a whole number from 0, got `-1`",
        ),
    ] {
        let body = crate::common::assert_api_error(
            app.get(&format!("/api/guide/matches?{query}")).await,
            400,
        )
        .await;
        assert_eq!(body["error"], said, "{query}: {body}");
    }
    let page = matches(&app, "?limit=1000").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3, "{page}");
}

#[tokio::test]
async fn admin_decisions_take_effect_and_survive_a_restart() {
    let up = upstream().await;
    let mut app = TestApp::spawn(&config(&up, "")).await;
    matches(&app, "").await;
    let itv_id = app.channel_id("ITV +1").await;
    let bbc_id = app.channel_id("BBCOne").await;

    let picked = post(&app, &itv_id, r#"{"action":"pick","guide_id":"ITV.uk"}"#).await;
    assert_eq!(picked["state"], "picked", "{picked}");
    assert_eq!(picked["guide_id"], "ITV.uk");
    let rejected = post(&app, &bbc_id, r#"{"action":"reject"}"#).await;
    assert_eq!(rejected["state"], "rejected", "{rejected}");

    // Both decisions reach the guide in the background (each re-reads and renders).
    eventually(
        "the picked guide channel's programmes, none for the rejected",
        || async {
            let (_, itv) = programmes_of(&app, "ITV +1").await;
            let (_, bbc) = programmes_of(&app, "BBCOne").await;
            (itv == ["ITV.uk show"] && bbc.is_empty())
                .then_some(())
                .ok_or(format!("{itv:?} {bbc:?}"))
        },
    )
    .await;

    // A pick of a guide channel no guide lists, and a bad action, are refused.
    post_answered(
        &app,
        &itv_id,
        r#"{"action":"pick","guide_id":"Nope.uk"}"#,
        400,
    )
    .await; // One a guide lists, named with another guide: the error says which lists it.
    let body = post_answered(
        &app,
        &itv_id,
        r#"{"action":"pick","guide_id":"ITV.uk","source":"elsewhere"}"#,
        400,
    )
    .await;
    assert_eq!(
        body["error"],
        "no guide is named `elsewhere`: a pick's `source` is an enabled service or an extra guide (there is `P`)",
        "{body}"
    );
    // A channel named by one of its sources (`SERVICE:ID`) is that channel.
    let (_, itv) = app.get_json(&format!("/api/channels/{itv_id}")).await;
    let source = itv["sources"][0]["channel_id"].as_str().unwrap();
    let by_source = post(
        &app,
        &format!("P:{source}"),
        r#"{"action":"pick","guide_id":"ITV.uk"}"#,
    )
    .await;
    assert_eq!(by_source["channel"], itv_id.as_str(), "{by_source}");
    assert_eq!(by_source["state"], "picked", "{by_source}");

    app.restart().await;
    let page = matches(&app, "").await;
    assert_eq!(line(&page, "ITV +1")["state"], "picked", "{page}");
    assert_eq!(line(&page, "BBCOne")["state"], "rejected", "{page}");
    eventually(
        "programmes after a restart follow the decisions",
        || async {
            let (_, itv) = programmes_of(&app, "ITV +1").await;
            let (_, bbc) = programmes_of(&app, "BBCOne").await;
            (itv == ["ITV.uk show"] && bbc.is_empty())
                .then_some(())
                .ok_or(format!("{itv:?} {bbc:?}"))
        },
    )
    .await;

    // Reset: the automatic match is back; its alternatives are the other guide
    // channels, not its own.
    let reset = post(&app, &bbc_id, r#"{"action":"reset"}"#).await;
    assert_eq!(reset["state"], "auto", "{reset}");
    let score = reset["score"].as_f64().unwrap();
    let own = |e: &Value| {
        e["alternatives"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["guide_id"] == e["guide_id"])
    };
    assert!(!own(&reset), "{reset}");
    eventually("the automatic match's programmes again", || async {
        let (_, titles) = programmes_of(&app, "BBCOne").await;
        (titles == ["BBCOne.uk show"])
            .then_some(())
            .ok_or(format!("{titles:?}"))
    })
    .await;
    // Confirmed, it keeps its score.
    let confirmed = post(&app, &bbc_id, r#"{"action":"confirm"}"#).await;
    assert_eq!(confirmed["state"], "confirmed", "{confirmed}");
    assert_eq!(confirmed["score"].as_f64(), Some(score), "{confirmed}");
    assert!(!own(&confirmed), "{confirmed}");

    // A hidden channel is no line of the table: a decision about it says so.
    let sport = app.channel_id("Sport").await;
    let resp = app
        .send_json(
            reqwest::Method::PATCH,
            &format!("/api/channels/{sport}"),
            r#"{"hidden":true}"#,
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body = post_answered(&app, &sport, r#"{"action":"reject"}"#, 404).await;
    assert!(
        body["error"].as_str().unwrap().contains("is hidden"),
        "{body}"
    );
}

/// A guide channel goes to one lineup channel: a pick takes it from the channel an
/// earlier confirmation or pick gave it to, wherever the two stand in the lineup, and
/// that channel's line names the taker. Kept across a restart.
#[tokio::test]
async fn a_pick_takes_a_guide_channel_from_an_earlier_decision() {
    let up = upstream().await;
    let mut app = TestApp::spawn(&config(&up, "")).await;
    matches(&app, "").await;
    let bbc = app.channel_id("BBCOne").await;
    let itv = app.channel_id("ITV +1").await;
    let sport = app.channel_id("Sport").await;

    // BBCOne's match confirmed, then its guide channel picked for "ITV +1" (later):
    // BBCOne's line names the taker.
    let confirmed = post(&app, &bbc, r#"{"action":"confirm"}"#).await;
    assert_eq!(confirmed["guide_id"], "BBCOne.uk", "{confirmed}");
    let picked = post(&app, &itv, r#"{"action":"pick","guide_id":"BBCOne.uk"}"#).await;
    assert_eq!(picked["state"], "picked", "{picked}");
    let page = matches(&app, "?state=all").await;
    let bbc_line = line(&page, "BBCOne");
    assert_eq!(bbc_line["state"], "unmatched", "{bbc_line}");
    assert!(
        bbc_line["reason"].as_str().unwrap().contains(itv.as_str()),
        "the taker is named: {bbc_line}"
    );
    // "ITV.uk" picked for Sport, then for "ITV +1" (earlier in the lineup), which lets
    // "BBCOne.uk" go back to BBCOne.
    post(&app, &sport, r#"{"action":"pick","guide_id":"ITV.uk"}"#).await;
    let picked = post(&app, &itv, r#"{"action":"pick","guide_id":"ITV.uk"}"#).await;
    assert_eq!(picked["state"], "picked", "{picked}");

    for round in ["before", "after"] {
        let page = matches(&app, "?state=all").await;
        let sport_line = line(&page, "Sport");
        assert_ne!(sport_line["state"], "picked", "{round} a restart: {page}");
        assert!(sport_line["guide_id"].is_null(), "{round}: {sport_line}");
        assert_eq!(line(&page, "ITV +1")["guide_id"], "ITV.uk", "{round}");
        assert_eq!(line(&page, "BBCOne")["guide_id"], "BBCOne.uk", "{round}");
        eventually(
            "each guide channel's programmes on its taker only",
            || async {
                let got = (
                    programmes_of(&app, "BBCOne").await.1,
                    programmes_of(&app, "ITV +1").await.1,
                    programmes_of(&app, "Sport").await.1,
                );
                (got.0 == ["BBCOne.uk show"] && got.1 == ["ITV.uk show"] && got.2.is_empty())
                    .then_some(())
                    .ok_or(format!("{got:?}"))
            },
        )
        .await;
        if round == "before" {
            app.restart().await;
        }
    }
}

#[tokio::test]
async fn extra_guides_supply_programmes_and_a_broken_one_is_reported() {
    let up = upstream().await;
    let extra = FakeUpstream::bind()
        .await
        .text(
            "/extra.xml",
            XML,
            xmltv(&[("ITVPlus1.uk", "ITV+1"), ("Film4.uk", "Film Four")]),
        )
        .text("/broken.xml", XML, "<tv><channel id=\"x\"><display-name>X")
        .start();
    let list = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            m3u(&[("p-102", "ITV +1"), ("p-104", "Film 4")]),
        )
        .start();
    let guides = format!(
        "[[guides]]\nname = \"extra\"\nurl = \"{}\"\n\n[[guides]]\nurl = \"{}\"\n",
        extra.url("/extra.xml"),
        extra.url("/broken.xml")
    );
    let cfg = format!(
        "[[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"{}\"\n\n{guides}",
        list.url("/list.m3u")
    );
    let app = TestApp::spawn(&cfg).await;
    drop(up);

    let (_, titles) = programmes_of(&app, "Film 4").await;
    assert_eq!(titles, ["Film4.uk show"]);
    let (_, titles) = programmes_of(&app, "ITV +1").await;
    assert_eq!(titles, ["ITVPlus1.uk show"], "the +1 of the extra guide");
    tv_validate(app.get_text_ok("/epg.xml").await.as_bytes());

    let (status, body) = app.get_json("/api/guide/status").await;
    assert_eq!(status, 200);
    let good = &body["guides"]["extra"];
    assert!(good["last_error"].is_null(), "{body}");
    let broken = &body["guides"]["guide-2"];
    assert!(
        broken["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("XMLTV")
            || broken["last_error"]
                .as_str()
                .unwrap_or_default()
                .contains("ended"),
        "{body}"
    );
    let page = matches(&app, "").await;
    assert_eq!(line(&page, "Film 4")["source"], "extra", "{page}");
}

#[tokio::test]
async fn extra_guide_config_problems_are_reported_at_their_line() {
    let text = "[[guides]]\nname = \"a\"\n\n[[guides]]\nurl = \"ftp://x/y.xml\"\nfile = \"/tmp/x.xml\"\n\n[[guides]]\nurl = \"http://h/g.xml\"\ntimeout = \"0s\"\nsize = 1\n";
    let err = freesky::config::Config::parse(text, "f.toml", &|_| None)
        .map(drop)
        .expect_err("refused")
        .to_string();
    for needle in [
        "f.toml:1: guides[0]",
        "guides[1].file",
        "guides[2].timeout",
        "guides[2].size",
    ] {
        assert!(err.contains(needle), "{needle} missing in:\n{err}");
    }
}

#[tokio::test]
async fn the_mapping_guide_id_override_beats_the_matcher() {
    // The guide answers its first read; later ones wait until `open` says so, so
    // that what the guide shows before a new read is seen.
    let (open, gate) = tokio::sync::watch::channel(false);
    let body = xmltv(GUIDE);
    let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let up = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, m3u(ENTRIES))
        .route(
            "/guide.xml",
            axum::routing::get(move || {
                let (body, mut gate, reads) = (body.clone(), gate.clone(), reads.clone());
                async move {
                    if reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
                        let _ = gate.wait_for(|open| *open).await;
                    }
                    ([(axum::http::header::CONTENT_TYPE, XML)], body)
                }
            }),
        )
        .start();
    let app = TestApp::spawn(&config(&up, "")).await;
    let bbc = app.channel_id("BBCOne").await;
    assert_eq!(line(&matches(&app, "").await, "BBCOne")["state"], "auto");
    let (_, page) = app.get_json("/api/channels?q=BBCOne").await;
    assert_eq!(page["live"][&bbc]["now"], "BBCOne.uk show", "{page}");

    let patch = |tvg: &'static str| {
        let app = &app;
        let path = format!("/api/channels/{bbc}");
        async move {
            let body = format!("{{\"tvg_id\":\"{tvg}\"}}");
            let resp = app
                .send_json(reqwest::Method::PATCH, &path, &body, None)
                .await;
            assert_eq!(resp.status(), 200);
        }
    };
    // A guide id set by hand that no guide lists: no automatic match any more, in
    // the table and in the guide as soon as the change is answered (the guides are
    // read again meanwhile; the programmes that read kept for the old match go).
    patch("Custom.id").await;
    let l = line(&matches(&app, "").await, "BBCOne").clone();
    assert_eq!(l["state"], "unmatched", "{l}");
    assert!(l["reason"].as_str().unwrap().contains("mapping"), "{l}");
    let (guide_id, titles) = programmes_of(&app, "BBCOne").await;
    assert_eq!(guide_id, "Custom.id");
    assert!(titles.is_empty(), "{titles:?}");
    // Nor the channel list's now/next (the dashboard's; the Xtream short EPG reads
    // the same listings).
    let (_, page) = app.get_json("/api/channels?q=BBCOne").await;
    assert!(page["live"][&bbc]["now"].is_null(), "{page}");

    // One a guide lists: matched by id once the guide is read again.
    open.send_replace(true);
    patch("SportTV.uk").await;
    eventually("the override's guide channel", || async {
        let (_, titles) = programmes_of(&app, "BBCOne").await;
        (titles == ["SportTV.uk show"])
            .then_some(())
            .ok_or(format!("{titles:?}"))
    })
    .await;
    let l = line(&matches(&app, "").await, "BBCOne").clone();
    assert_eq!(l["state"], "exact", "{l}");
}

#[tokio::test]
async fn a_guide_channel_of_another_country_is_never_matched() {
    // The list is British (its group); the guide's "Kidoodle TV" (spelt otherwise,
    // so found by the matcher, not by display name) is the US one (its id's
    // domain): no candidate. Its "Kidoodle Kids" has no country and matches.
    let up = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            m3u(&[("p-1", "KidoodleTV"), ("p-2", "KidoodleKids")]),
        )
        .text(
            "/guide.xml",
            XML,
            xmltv(&[
                ("KidoodleTV.us", "Kidoodle TV"),
                ("KidoodleKids", "Kidoodle Kids"),
            ]),
        )
        .start();
    let app = TestApp::spawn(&config(&up, "")).await;
    let page = matches(&app, "").await;
    let us = line(&page, "KidoodleTV");
    assert_eq!(us["state"], "unmatched", "{us}");
    assert!(us["guide_id"].is_null(), "{us}");
    let (_, titles) = programmes_of(&app, "KidoodleTV").await;
    assert!(titles.is_empty(), "another country's guide: {titles:?}");
    let kids = line(&page, "KidoodleKids");
    assert_eq!(kids["state"], "auto", "{kids}");
    assert_eq!(kids["guide_id"], "KidoodleKids", "{kids}");
}

#[tokio::test]
async fn an_extra_guides_country_places_short_names_and_is_preferred() {
    // "Canal 6" is a name channels of many countries use. Two extra guides list it
    // (spelt "Canal 06", so found by the matcher, not by display name) under ids
    // without a country; the list says Honduras (its group). With no guide
    // saying where it is watched, the name stays unmatched; the guide made for
    // Honduras (`country = "hn"`) takes it, though it is listed second.
    let guides = FakeUpstream::bind()
        .await
        .text("/sv.xml", XML, xmltv(&[("first", "Canal 06")]))
        .text("/hn.xml", XML, xmltv(&[("second", "Canal 06")]))
        .text(
            "/list.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"p-6\" group-title=\"HN | Nacional\",Canal 6\nhttp://127.0.0.1:9/6.m3u8\n",
        )
        .start();
    let service = format!(
        "[[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"{}\"\n\n",
        guides.url("/list.m3u")
    );
    let unplaced = format!(
        "{service}[[guides]]\nname = \"sv\"\nurl = \"{}\"\n\n[[guides]]\nname = \"hn\"\nurl = \"{}\"\n",
        guides.url("/sv.xml"),
        guides.url("/hn.xml")
    );
    let app = TestApp::spawn(&unplaced).await;
    let l = line(&matches(&app, "").await, "Canal 6").clone();
    assert_eq!(l["state"], "unmatched", "{l}");
    assert!(
        l["reason"]
            .as_str()
            .unwrap()
            .contains("no guide places it in hn"),
        "{l}"
    );
    drop(app);

    let placed = format!(
        "{service}[[guides]]\nname = \"sv\"\nurl = \"{}\"\ncountry = \"SV\"\n\n[[guides]]\nname = \"hn\"\nurl = \"{}\"\ncountry = \"hn\"\n",
        guides.url("/sv.xml"),
        guides.url("/hn.xml")
    );
    let app = TestApp::spawn(&placed).await;
    let l = line(&matches(&app, "").await, "Canal 6").clone();
    assert_eq!(l["state"], "auto", "{l}");
    assert_eq!(l["source"], "hn", "{l}");
    let (_, titles) = programmes_of(&app, "Canal 6").await;
    assert_eq!(titles, ["second show"]);

    refuses_country(
        "[[guides]]\nurl = \"http://h/g.xml\"\ncountry = \"Honduras\"\n",
        "guides[0].country",
    );
}

#[tokio::test]
async fn one_name_in_guides_of_two_languages_waits_for_a_country() {
    // "Telemax" (one word of its own) in a German guide and a Spanish one, read from
    // `<display-name lang>`; ids without a country. A list entry "Tele Max" (spelt
    // otherwise, so found by the matcher, not by display name) without a country
    // cannot say which is meant: unmatched, both offered to an admin.
    let (app, _up) = telemax_app("http://127.0.0.1:9/1.m3u8").await;
    let l = line(&matches(&app, "").await, "Tele Max").clone();
    assert_eq!(l["state"], "unmatched", "{l}");
    assert!(
        l["reason"].as_str().unwrap().contains("another language"),
        "{l}"
    );
    assert_eq!(l["alternatives"].as_array().unwrap().len(), 2, "{l}");
}

#[tokio::test]
async fn a_services_guide_country_places_its_short_names() {
    // The service's own guide lists "Canal 06" under an id without a country; its
    // list says Honduras. Unplaced, the plain name stays unmatched; with the service's
    // `guide_country = "hn"` its guide's channel matches.
    let up = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"p-6\" group-title=\"HN | Nacional\",Canal 6\nhttp://127.0.0.1:9/6.m3u8\n",
        )
        .text("/guide.xml", XML, xmltv(&[("first", "Canal 06")]))
        .start();
    let service = |extra: &str| {
        format!(
            "[[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"{}\"\nepg_url = \"{}\"\n{extra}",
            up.url("/list.m3u"),
            up.url("/guide.xml")
        )
    };
    let app = TestApp::spawn(&service("")).await;
    let l = line(&matches(&app, "").await, "Canal 6").clone();
    assert_eq!(l["state"], "unmatched", "{l}");
    drop(app);
    let app = TestApp::spawn(&service("guide_country = \"HN\"\n")).await;
    let l = line(&matches(&app, "").await, "Canal 6").clone();
    assert_eq!(l["state"], "auto", "{l}");
    let (_, titles) = programmes_of(&app, "Canal 6").await;
    assert_eq!(titles, ["first show"]);

    refuses_country(
        "[[services]]\nname = \"D\"\nkind = \"demo\"\nguide_country = \"Honduras\"\n",
        "services[0].guide_country",
    );
}

/// Asserts that `config` is refused with a problem at `field` saying what a country
/// code is.
fn refuses_country(config: &str, field: &str) {
    let err = freesky::config::Config::parse(config, "f.toml", &|_| None)
        .map(drop)
        .expect_err("refused")
        .to_string();
    assert!(err.contains(field) && err.contains("two-letter"), "{err}");
}

/// A guide channel its guide gives to another lineup channel by id cannot be picked:
/// the pick is refused naming that channel and the way out (before, it answered
/// "picked" and did nothing).
#[tokio::test]
async fn a_pick_of_a_guide_channel_another_channel_has_by_id_is_refused_saying_whose() {
    let up = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            m3u(&[("BBCOne.uk", "BBC One"), ("p-2", "Site News")]),
        )
        .text("/guide.xml", XML, xmltv(GUIDE))
        .start();
    let app = TestApp::spawn(&config(&up, "")).await;
    let page = matches(&app, "").await;
    assert_eq!(line(&page, "BBC One")["state"], "exact", "{page}");
    let holder = app.channel_id("BBC One").await;
    let other = app.channel_id("Site News").await;
    let body = post_answered(
        &app,
        &other,
        r#"{"action":"pick","guide_id":"BBCOne.uk"}"#,
        400,
    )
    .await;
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "guide `P` gives `BBCOne.uk` to channel `{holder}` by id"
        )) && error.contains(&format!("PATCH /api/channels/{holder}")),
        "{body}"
    );
    let page = matches(&app, "").await;
    assert_eq!(line(&page, "Site News")["state"], "unmatched", "{page}");
    // A free guide channel is still picked.
    let picked = post(&app, &other, r#"{"action":"pick","guide_id":"ITV.uk"}"#).await;
    assert_eq!(picked["state"], "picked", "{picked}");

    // The holder itself takes its guide channel by id whatever is decided: a pick of
    // another one or a reject is refused (it was kept and did nothing), saying how to
    // change it; a pick of the one it has, or a confirm, is taken.
    for body in [
        r#"{"action":"pick","guide_id":"SportTV.uk"}"#,
        r#"{"action":"reject"}"#,
    ] {
        let refused = post_answered(&app, &holder, body, 400).await;
        let error = refused["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!(
                "channel `{holder}` takes `BBCOne.uk` from guide `P` by id"
            )) && error.contains(&format!("PATCH /api/channels/{holder}")),
            "{refused}"
        );
    }
    let page = matches(&app, "").await;
    assert_eq!(line(&page, "BBC One")["state"], "exact", "{page}");
    post(&app, &holder, r#"{"action":"pick","guide_id":"BBCOne.uk"}"#).await;
    post(&app, &holder, r#"{"action":"confirm"}"#).await;
}

#[tokio::test]
async fn a_renamed_channel_takes_the_guide_its_new_name_matches_without_a_refresh() {
    // "Sport" is ambiguous (Sport TV, Sport Channel): unmatched. Renamed "Sport TV",
    // the matcher gives it that guide channel, whose programmes the last read dropped:
    // the guide is read again (or remapped from what it kept) for it, not left to the
    // next full refresh hours later.
    let up = upstream().await;
    let app = TestApp::spawn(&config(&up, "")).await;
    let sport = app.channel_id("Sport").await;
    assert_eq!(
        line(&matches(&app, "").await, "Sport")["state"],
        "unmatched"
    );
    let resp = app
        .send_json(
            reqwest::Method::PATCH,
            &format!("/api/channels/{sport}"),
            r#"{"name":"Sport TV"}"#,
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    eventually("the renamed channel's programmes", || async {
        let (_, titles) = programmes_of(&app, "Sport TV").await;
        (titles == ["SportTV.uk show"])
            .then_some(())
            .ok_or(format!("{titles:?}"))
    })
    .await;
    let l = line(&matches(&app, "").await, "Sport TV").clone();
    assert_eq!(l["state"], "auto", "{l}");
    assert_eq!(l["guide_id"], "SportTV.uk", "{l}");
}

#[tokio::test]
async fn a_hand_set_guide_id_lifts_an_old_decision_and_keeps_the_display_name_match() {
    // "Film Four" is in the guide under that display name. An admin rejected the
    // match; then the channel is given a guide id by hand that no guide lists. The
    // hand-set id beats decisions (channels.md): the display name gives it its
    // programmes again, at the next read.
    let up = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, m3u(&[("p-1", "Film Four")]))
        .text("/guide.xml", XML, xmltv(&[("Film4.uk", "Film Four")]))
        .start();
    let app = TestApp::spawn(&config(&up, "")).await;
    let film = app.channel_id("Film Four").await;
    assert_eq!(
        line(&matches(&app, "").await, "Film Four")["state"],
        "exact"
    );
    post(&app, &film, r#"{"action":"reject"}"#).await;
    let resp = app
        .send_json(
            reqwest::Method::PATCH,
            &format!("/api/channels/{film}"),
            r#"{"tvg_id":"Custom.example"}"#,
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(app.post("/api/guide/refresh").await.status(), 200);
    eventually(
        "the display name's programmes under the hand-set id",
        || async {
            let (guide_id, titles) = programmes_of(&app, "Film Four").await;
            (guide_id == "Custom.example" && titles == ["Film4.uk show"])
                .then_some(())
                .ok_or(format!("{guide_id}: {titles:?}"))
        },
    )
    .await;
    let l = line(&matches(&app, "").await, "Film Four").clone();
    assert_eq!(l["state"], "exact", "{l}");
}

/// A stream's address says where the channel is from when nothing else does: "Tele
/// Max" (spelt otherwise than the guides, so found by the matcher), which a German
/// guide and a Spanish one list as "Telemax", streamed from a `.es` host takes the
/// Spanish listing; from a `.com` host it stays unmatched, both offered.
#[tokio::test]
async fn a_streams_country_domain_hints_which_listing_it_is() {
    for (host, state) in [
        ("live.example.es", "auto"),
        ("live.example.com", "unmatched"),
    ] {
        let (app, _up) = telemax_app(&format!("http://{host}/1.m3u8")).await;
        let l = line(&matches(&app, "").await, "Tele Max").clone();
        assert_eq!(l["state"], state, "{host}: {l}");
        if state == "auto" {
            assert_eq!(l["guide_id"], "second", "{l}");
            assert!(
                l["reason"]
                    .as_str()
                    .unwrap()
                    .contains("its stream's address hints es"),
                "{l}"
            );
            let (_, titles) = programmes_of(&app, "Tele Max").await;
            assert_eq!(titles, ["second show"]);
        } else {
            assert_eq!(l["alternatives"].as_array().unwrap().len(), 2, "{l}");
        }
    }
}

/// freesky with a list "Tele Max" streamed from `stream` (spelt otherwise than the
/// guides, so found by the matcher, not by display name) and two extra guides listing
/// "Telemax": `de` (id `first`, in German) and `es` (id `second`, in Spanish).
async fn telemax_app(stream: &str) -> (TestApp, FakeUpstream) {
    let up = FakeUpstream::bind()
        .await
        .text("/de.xml", XML, telemax("first", "de"))
        .text("/es.xml", XML, telemax("second", "es"))
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!("#EXTM3U\n#EXTINF:-1 tvg-id=\"p-1\",Tele Max\n{stream}\n"),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"{}\"\n\n\
         [[guides]]\nname = \"de\"\nurl = \"{}\"\n\n[[guides]]\nname = \"es\"\nurl = \"{}\"\n",
        up.url("/list.m3u"),
        up.url("/de.xml"),
        up.url("/es.xml")
    ))
    .await;
    (app, up)
}

/// A guide listing one channel `id`, "Telemax" in language `lang`, with one programme
/// on now, titled "<id> show".
fn telemax(id: &str, lang: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<tv><channel id=\"{id}\"><display-name lang=\"{lang}\">Telemax</display-name></channel>\
         <programme start=\"{}\" stop=\"{}\" channel=\"{id}\"><title>{id} show</title></programme></tv>\n",
        crate::common::xmltv_around(0),
        crate::common::xmltv_around(1)
    )
}

/// A regional feed written with its region in brackets is not the national channel:
/// it gets no guide by name, while a format note ("(720p)") is no part of a name.
#[tokio::test]
async fn a_region_in_brackets_never_takes_the_national_channels_guide() {
    let served = |name: &'static str| async move {
        let up = FakeUpstream::bind()
            .await
            .text("/list.m3u", M3U_TYPE, m3u(&[("p-201", name)]))
            .text("/guide.xml", XML, xmltv(&[("BBCOne.uk", "BBC One")]))
            .start();
        let app = TestApp::spawn(&config(&up, "")).await;
        (up, app)
    };
    let (_up, app) = served("BBC One (720p)").await;
    let (_, titles) = programmes_of(&app, "BBC One (720p)").await;
    assert_eq!(titles, ["BBCOne.uk show"]);
    let (_up, app) = served("BBC One (Scotland)").await;
    let (_, titles) = programmes_of(&app, "BBC One (Scotland)").await;
    assert!(
        titles.is_empty(),
        "the national guide for a region: {titles:?}"
    );
    let page = matches(&app, "?state=all").await;
    assert_eq!(
        line(&page, "BBC One (Scotland)")["state"],
        "unmatched",
        "{page}"
    );
}

/// A decision whose guide channel its guide stops listing is shown as `gone`, and the
/// `low` filter (what the dashboard offers to look at) lists it.
#[tokio::test]
async fn a_decision_whose_guide_channel_is_gone_is_listed_as_low() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("extra.xml");
    std::fs::write(&file, xmltv(&[("Other.uk", "Other")])).unwrap();
    let extra = format!(
        "[[guides]]\nname = \"extra\"\nfile = \"{}\"\n",
        file.display()
    );
    let mut app = TestApp::spawn(&config(&up, &extra)).await;
    matches(&app, "").await;
    let itv = app.channel_id("ITV +1").await;
    let picked = post(
        &app,
        &itv,
        r#"{"action":"pick","guide_id":"Other.uk","source":"extra"}"#,
    )
    .await;
    assert_eq!(picked["gone"], false, "{picked}");
    let low = matches(&app, "?state=low").await;
    let listed = |page: &Value| {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["channel"] == itv.as_str())
    };
    assert!(!listed(&low), "{low}");

    std::fs::write(&file, xmltv(&[("Another.uk", "Another")])).unwrap();
    app.restart().await;
    let page = matches(&app, "").await;
    let line = line(&page, "ITV +1");
    assert_eq!(line["state"], "picked", "{line}");
    assert_eq!(line["gone"], true, "{line}");
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .contains("does not list it now"),
        "{line}"
    );
    let low = matches(&app, "?state=low").await;
    assert!(listed(&low), "{low}");
}

/// Right after a start the match table needs every guide read once. A guide whose
/// read hangs (until `read_timeout`, a minute here) does not hold the admin's calls
/// that long: with the copy of its last good read standing in, they answer from a
/// table matched with it; without one, after a bounded wait, a 503 says which guide is
/// still being read.
#[tokio::test]
async fn the_admins_match_calls_are_not_held_by_a_guide_that_hangs_after_a_restart() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let hang = std::sync::Arc::new(AtomicBool::new(false));
    let hangs = hang.clone();
    let guide = xmltv(GUIDE);
    let up = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, m3u(ENTRIES))
        .route(
            "/guide.xml",
            axum::routing::get(move || {
                let (hanging, guide) = (hangs.load(Ordering::SeqCst), guide.clone());
                async move {
                    if hanging {
                        std::future::pending::<()>().await;
                    }
                    crate::common::respond(200, XML, guide)
                }
            }),
        )
        .hang("/hang.xml")
        .start();
    let mut app = TestApp::spawn(&config(
        &up,
        "timeout = \"60s\"\n\n[guide]\nread_timeout = \"60s\"\n",
    ))
    .await;
    let page = matches(&app, "").await;
    assert_eq!(line(&page, "BBCOne")["state"], "auto", "{page}");
    let guides = app.state_dir().join("guides");
    eventually_true("a copy of the guide in state_dir/guides", || async {
        std::fs::read_dir(&guides).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".xmltv"))
        })
    })
    .await;

    // Its read hangs after the restart: the copy stands in.
    hang.store(true, Ordering::SeqCst);
    app.restart().await;
    let page = matches(&app, "").await;
    assert_eq!(line(&page, "BBCOne")["state"], "auto", "{page}");
    let status = app.get_json("/api/guide/status").await.1;
    assert!(
        status["services"]["P"]["reading_since"].is_string(),
        "answered while the read goes on: {status}"
    );

    // An extra guide never read (no copy) hangs too: a 503 naming it.
    app.stop().await;
    app.config_text.push_str(&format!(
        "\n[[guides]]\nname = \"slow\"\nurl = \"{}\"\ntimeout = \"60s\"\n",
        up.url("/hang.xml")
    ));
    app.start().await;
    let resp = app.get("/api/guide/matches").await;
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("10"),
        "when to ask again"
    );
    let body = crate::common::assert_api_error(resp, 503).await;
    let why = body["error"].as_str().unwrap();
    assert!(
        why.contains("`slow`") && why.contains("read_timeout"),
        "{body}"
    );
    assert!(!why.contains("`P`"), "P's copy stands in: {body}");
    let sport = app.channel_id("Sport").await;
    let resp = app
        .send_json(
            reqwest::Method::POST,
            &format!("/api/guide/matches/{sport}"),
            r#"{"action":"reject"}"#,
            None,
        )
        .await;
    crate::common::assert_api_error(resp, 503).await;
    let (_, lines) = app.get_json("/api/guide/status").await;
    assert!(
        lines["guides"]["slow"]["reading_since"].is_string(),
        "{lines}"
    );
}

/// After a restart the first guide served follows the admin's decisions, before the
/// table is matched again (which waits for every guide): with the guide's upstream
/// down, its saved copy gives the picked guide channel; and with another guide that
/// hangs, the guide served meanwhile has it. The pick is of a guide channel whose
/// name shares no word with the lineup, which a read keeps only when told to.
#[tokio::test]
async fn decisions_are_in_the_first_guide_after_a_restart() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let down = std::sync::Arc::new(AtomicBool::new(false));
    let guide = xmltv(&[
        ("BBCOne.uk", "BBC One HD"),
        ("ITV.uk", "ITV"),
        ("Zebra.uk", "Zebra Telly"),
        ("Kids.uk", "Kids"),
        ("Yak.uk", "Yak Network"),
    ]);
    let mut entries = ENTRIES.to_vec();
    entries.push(("Kids.uk", "Kids"));
    let list = std::sync::Arc::new(std::sync::Mutex::new(m3u(&entries)));
    let answer = down.clone();
    let up = FakeUpstream::bind()
        .await
        .shared_text("/list.m3u", &list)
        .text(
            "/other.xml",
            XML,
            xmltv(&[("BBCOne.uk", "BBC One HD"), ("Kids.uk", "Kids")]),
        )
        .route(
            "/guide.xml",
            axum::routing::get(move || {
                let (down, guide) = (answer.load(Ordering::SeqCst), guide.clone());
                async move {
                    if down {
                        crate::common::respond(503, "text/plain", "down")
                    } else {
                        crate::common::respond(200, XML, guide)
                    }
                }
            }),
        )
        .hang("/hang.xml")
        .start();
    let mut app = TestApp::spawn(&config(&up, "")).await;
    matches(&app, "").await;
    let sport = app.channel_id("Sport").await;
    let picked = post(&app, &sport, r#"{"action":"pick","guide_id":"Zebra.uk"}"#).await;
    assert_eq!(picked["state"], "picked", "{picked}");
    eventually("the picked guide channel's programmes", || async {
        let (_, titles) = programmes_of(&app, "Sport").await;
        (titles == ["Zebra.uk show"])
            .then_some(())
            .ok_or(format!("{titles:?}"))
    })
    .await;
    let page = matches(&app, "").await;
    assert_eq!(line(&page, "BBCOne")["state"], "auto", "{page}");
    let (_, bbc) = programmes_of(&app, "BBCOne").await;
    assert_eq!(bbc, ["BBCOne.uk show"], "the automatic match");
    // What matching assigned is kept for the next start; the decisions are the
    // store's (a reset one must not come back from this file).
    let kept = app.state_dir().join("guides/matches.json");
    eventually_true("the assignments kept in the state dir", || async {
        std::fs::read_to_string(&kept).is_ok_and(|t| t.contains("bbcone.uk"))
    })
    .await;
    let text = std::fs::read_to_string(&kept).unwrap();
    assert!(!text.contains("zebra.uk"), "{text}");

    // Down: the first guide after a restart is the saved copy, read with the pick.
    down.store(true, Ordering::SeqCst);
    let asked = up.hits("/guide.xml");
    app.restart().await;
    let (_, titles) = programmes_of(&app, "Sport").await;
    assert_eq!(titles, ["Zebra.uk show"], "from the saved copy");
    let (_, bbc) = programmes_of(&app, "BBCOne").await;
    assert_eq!(
        bbc,
        ["BBCOne.uk show"],
        "the automatic match, from the saved copy"
    );
    let (_, itv) = programmes_of(&app, "ITV +1").await;
    assert!(itv.is_empty(), "a +1 never takes its base: {itv:?}");
    assert!(up.hits("/guide.xml") > asked, "the guide was asked again");
    let status = app.get_json("/api/guide/status").await.1;
    assert!(
        status["services"]["P"]["copy_saved"].is_string(),
        "{status}"
    );
    tv_validate(app.get_text_ok("/epg.xml").await.as_bytes());
    // A decision made while only the copy is there is read from the copy.
    let itv = app.channel_id("ITV +1").await;
    post(&app, &itv, r#"{"action":"pick","guide_id":"Yak.uk"}"#).await;
    eventually("a pick made while the upstream is down", || async {
        let (_, titles) = programmes_of(&app, "ITV +1").await;
        (titles == ["Yak.uk show"])
            .then_some(())
            .ok_or(format!("{titles:?}"))
    })
    .await;

    // Up, with an extra guide that hangs: the guide served while it is read has the
    // pick and the automatic match (the table is matched again only once every guide
    // is read).
    down.store(false, Ordering::SeqCst);
    app.stop().await;
    app.config_text.push_str(&format!(
        "\n[[guides]]\nname = \"slow\"\nurl = \"{}\"\n",
        up.url("/hang.xml")
    ));
    app.start().await;
    let (_, titles) = programmes_of(&app, "Sport").await;
    assert_eq!(titles, ["Zebra.uk show"], "while a guide hangs");
    let (_, bbc) = programmes_of(&app, "BBCOne").await;
    assert_eq!(
        bbc,
        ["BBCOne.uk show"],
        "the automatic match, while a guide hangs"
    );
    let status = app.get_json("/api/guide/status").await.1;
    assert!(status["services"]["P"]["copy_saved"].is_null(), "{status}");
    assert!(
        status["guides"]["slow"]["reading_since"].is_string(),
        "{status}"
    );

    // Renamed while stopped: what was matched to the old name is not given to the
    // new one (a "+1" would show its live channel's programmes).
    app.stop().await;
    let renamed: Vec<(&str, &str)> = (entries.iter())
        .map(|&(id, name)| (id, if name == "BBCOne" { "BBCOne +1" } else { name }))
        .collect();
    *list.lock().unwrap() = m3u(&renamed);
    app.start().await;
    let (_, bbc) = programmes_of(&app, "BBCOne +1").await;
    assert!(bbc.is_empty(), "renamed to a +1: {bbc:?}");
    let (_, titles) = programmes_of(&app, "Sport").await;
    assert_eq!(titles, ["Zebra.uk show"], "the decision stands");

    // The guide read from another place: nothing remembered of the old one is used,
    // though its ids and names are the same (a provider's other guide may give the
    // same ids to other channels).
    app.stop().await;
    *list.lock().unwrap() = m3u(&entries);
    app.config_text = app
        .config_text
        .replace(&up.url("/guide.xml"), &up.url("/other.xml"));
    app.start().await;
    let (_, bbc) = programmes_of(&app, "BBCOne").await;
    assert!(bbc.is_empty(), "another guide's: {bbc:?}");
}

/// A decision whose guide is gone (its service renamed in the config) says so and is
/// listed with the low ones, rather than waiting for ever for a read.
#[tokio::test]
async fn a_decision_whose_guide_is_no_more_says_so() {
    let up = upstream().await;
    let mut app = TestApp::spawn(&config(&up, "")).await;
    matches(&app, "").await;
    let itv = app.channel_id("ITV +1").await;
    let picked = post(&app, &itv, r#"{"action":"pick","guide_id":"ITV.uk"}"#).await;
    assert_eq!(picked["source"], "P", "{picked}");
    app.stop().await;
    app.config_text = app.config_text.replace("name = \"P\"", "name = \"Q\"");
    app.start().await;
    let page = matches(&app, "?state=low").await;
    let line = line(&page, "ITV +1");
    assert_eq!(line["gone"], true, "{page}");
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .contains("`P`, which is not an enabled service's or an extra guide's now"),
        "{page}"
    );
    let (_, titles) = programmes_of(&app, "ITV +1").await;
    assert!(titles.is_empty(), "{titles:?}");
}
