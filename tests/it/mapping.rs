//! Channel mapping (`GET`/`PATCH /api/channels/{id}`): renames, numbers, groups,
//! hidden channels, guide ids, logos and pinned sources show in every output, persist
//! in state_dir (restart and kill -9), and bad requests are JSON errors.

use futures::StreamExt;
use serde_json::{json, Value};

use crate::common::{
    assert_api_error, json_of, media_playlist, FakeUpstream, TestApp, HANG_GUARD, HLS_TYPE,
    M3U_TYPE,
};

/// A live media playlist (no ENDLIST: a finished one would be cached for long).
fn live(segment: &str) -> String {
    media_playlist(&[segment]).replace("#EXT-X-ENDLIST\n", "")
}

/// Services A (priority 1) and B (priority 2) both list "News" (tvg-id News.tv), A
/// also "Sport"; plus the offline Demo. Every stream URL answers a playlist.
async fn app() -> (TestApp, FakeUpstream) {
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let up = up
        .text(
            "/a.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n#EXTINF:-1 tvg-id=\"News.tv\" group-title=\"Info\",News\n{o}/a/news.m3u8\n\
                 #EXTINF:-1 group-title=\"Sports\",Sport\n{o}/a/sport.m3u8\n"
            ),
        )
        .text(
            "/b.m3u",
            M3U_TYPE,
            format!("#EXTM3U\n#EXTINF:-1 tvg-id=\"News.tv\",News HD\n{o}/b/news.m3u8\n"),
        )
        .text("/a/news.m3u8", HLS_TYPE, live("a.ts"))
        .text("/b/news.m3u8", HLS_TYPE, live("b.ts"))
        .text("/a/sport.m3u8", HLS_TYPE, live("s.ts"))
        .start();
    let app = TestApp::spawn(&format!(
        r#"
[cache]
playlist_ttl = "1ms"

[[services]]
name = "A"
kind = "m3u"
priority = 1
url = "{o}/a.m3u"

[[services]]
name = "B"
kind = "m3u"
priority = 2
url = "{o}/b.m3u"

[[services]]
name = "Demo"
kind = "demo"
priority = 3
"#
    ))
    .await;
    (app, up)
}

async fn patch(app: &TestApp, id: &str, body: &str) -> reqwest::Response {
    patch_auth(app, id, body, None).await
}

async fn patch_auth(
    app: &TestApp,
    id: &str,
    body: &str,
    authorization: Option<&str>,
) -> reqwest::Response {
    let path = format!("/api/channels/{id}");
    app.send_json(reqwest::Method::PATCH, &path, body, authorization)
        .await
}

/// PATCH that must answer 200; returns the channel.
async fn patch_ok(app: &TestApp, id: &str, body: Value) -> Value {
    let (status, got) = json_of(patch(app, id, &body.to_string()).await).await;
    assert_eq!(status, 200, "PATCH {id} {body}: {got:#}");
    got
}

async fn get_channel(app: &TestApp, id: &str) -> Value {
    let (status, got) = app.get_json(&format!("/api/channels/{id}")).await;
    assert_eq!(status, 200, "GET /api/channels/{id}: {got:#}");
    got
}

fn id_of(c: &Value) -> String {
    c["id"].as_str().expect("id").to_string()
}

/// Two M3U services of upstream `o`: A (`/a.m3u`, priority 1), then B (`/b.m3u`).
fn a_then_b(o: &str) -> String {
    format!(
        "[[services]]\nname = \"A\"\nkind = \"m3u\"\npriority = 1\nurl = \"{o}/a.m3u\"\n\n\
         [[services]]\nname = \"B\"\nkind = \"m3u\"\npriority = 2\nurl = \"{o}/b.m3u\"\n"
    )
}

fn services_of(c: &Value) -> Vec<String> {
    c["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|s| s["service"].as_str().unwrap().to_string())
        .collect()
}

/// The `#EXTINF` line of the playlist entry whose URL ends with `/{id}.m3u8`.
fn extinf_of(playlist: &str, id: &str) -> Option<String> {
    let lines: Vec<&str> = playlist.lines().collect();
    lines.windows(2).find_map(|w| {
        w[1].ends_with(&format!("/api/stream/{id}.m3u8"))
            .then(|| w[0].to_string())
    })
}

async fn lineup_json(app: &TestApp) -> Vec<Value> {
    let (status, body) = app.get_json("/lineup.json").await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

#[tokio::test]
async fn rename_regroup_logo_and_tvg_id_show_everywhere_and_reset_with_null() {
    let (app, _up) = app().await;
    let news = app.channel_named("News").await;
    let id = id_of(&news);

    // GET shows the channel, not hidden, no overrides, and the upstream values.
    let got = get_channel(&app, &id).await;
    assert_eq!(got["name"], "News");
    assert_eq!(got["hidden"], false);
    assert_eq!(got["mapping"]["name"], Value::Null);
    assert_eq!(got["upstream"]["tvg_id"], "News.tv");
    assert_eq!(got["guide_id"], "News.tv");
    // ... by number too.
    let by_number = get_channel(&app, &news["number"].to_string()).await;
    assert_eq!(by_number["id"], id.as_str());

    let got = patch_ok(
        &app,
        &id,
        json!({"name": "World News", "group": "News & Info", "logo": "https://img.example/n.png",
               "tvg_id": "WorldNews.example"}),
    )
    .await;
    assert_eq!(got["id"], id.as_str(), "the id never changes");
    assert_eq!(got["name"], "World News");
    assert_eq!(got["group"], "News & Info");
    assert_eq!(got["logo"], "https://img.example/n.png");
    assert_eq!(got["guide_id"], "WorldNews.example");
    assert_eq!(got["mapping"]["name"], "World News");
    assert_eq!(got["upstream"]["name"], "News");
    assert_eq!(got["upstream"]["group"], "Info");

    let listed = app.channel_named("World News").await;
    assert_eq!(listed["group"], "News & Info");
    assert_eq!(listed["guide_id"], "WorldNews.example");
    let (_, found) = app.get_json("/api/channels/search?query=world").await;
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");

    let playlist = app.get_text_ok("/playlist.m3u").await;
    let line = extinf_of(&playlist, &id).unwrap_or_else(|| panic!("{id} missing:\n{playlist}"));
    for part in [
        "tvg-id=\"WorldNews.example\"",
        "tvg-name=\"World News\"",
        "tvg-logo=\"https://img.example/n.png\"",
        "group-title=\"News & Info\"",
    ] {
        assert!(line.contains(part), "{part} not in {line}");
    }
    assert!(line.ends_with(",World News"), "{line}");
    let lineup = lineup_json(&app).await;
    assert!(
        lineup.iter().any(|e| e["GuideName"] == "World News"),
        "{lineup:?}"
    );
    // The guide (which lists channels that have programmes: here the demo's) follows
    // as soon as the PATCH answers, without a refresh; hidden channels leave it and
    // come back with their programmes.
    let guide = app.get_text_ok("/epg.xml").await;
    assert!(guide.contains("<channel id=\"demo.freesky\">"), "{guide}");
    patch_ok(
        &app,
        "demo",
        json!({"name": "Loop", "tvg_id": "Loop.example"}),
    )
    .await;
    let guide = app.get_text_ok("/epg.xml").await;
    assert!(
        guide.contains("<channel id=\"Loop.example\">")
            && guide.contains("<display-name>Loop</display-name>")
            && guide.contains("channel=\"Loop.example\"")
            && !guide.contains("demo.freesky"),
        "{guide}"
    );
    patch_ok(&app, "demo", json!({"hidden": true})).await;
    let guide = app.get_text_ok("/epg.xml").await;
    assert!(!guide.contains("Loop.example"), "{guide}");
    patch_ok(&app, "demo", json!({"hidden": null})).await;
    let guide = app.get_text_ok("/epg.xml").await;
    assert!(guide.contains("channel=\"Loop.example\""), "{guide}");

    // A missing field keeps its override, null resets one.
    let got = patch_ok(&app, &id, json!({"group": null, "tvg_id": null})).await;
    assert_eq!(got["name"], "World News");
    assert_eq!(got["group"], "Info");
    assert_eq!(got["guide_id"], "News.tv");
    let got = patch_ok(&app, &id, json!({"name": null, "logo": null})).await;
    assert_eq!(got["name"], "News");
    assert_eq!(got["logo"], "");
    assert_eq!(got["mapping"], get_channel(&app, &id).await["mapping"]);
    for field in ["name", "number", "group", "tvg_id", "logo", "sources"] {
        assert_eq!(got["mapping"][field], Value::Null, "{field}: {got:#}");
    }
    let line = extinf_of(&app.get_text_ok("/playlist.m3u").await, &id).unwrap();
    assert!(
        line.contains("tvg-id=\"News.tv\"") && line.ends_with(",News"),
        "{line}"
    );
}

#[tokio::test]
async fn renumbering_moves_the_tuner_channel_and_a_taken_number_is_refused() {
    let (app, _up) = app().await;
    let demo = app.channel_named("Demo").await;
    let sport = app.channel_named("Sport").await;
    let old = demo["number"].as_u64().unwrap();

    let got = patch_ok(&app, "demo", json!({"number": 42})).await;
    assert_eq!(got["number"], 42);
    assert_eq!(got["upstream"]["number"], old);
    assert_eq!(app.channel_named("Demo").await["number"], 42);
    let line = extinf_of(&app.get_text_ok("/playlist.m3u").await, "demo").unwrap();
    assert!(line.contains("tvg-chno=\"42\""), "{line}");

    let lineup = lineup_json(&app).await;
    let entry = lineup.iter().find(|e| e["GuideName"] == "Demo").unwrap();
    assert_eq!(entry["GuideNumber"], "42");
    assert_eq!(entry["URL"], app.url("/auto/v42"));
    // The channel list stays ordered by number.
    let numbers: Vec<u64> = lineup
        .iter()
        .map(|e| e["GuideNumber"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");

    // The tuner plays it under the new number only.
    let resp = app.get("/auto/v42").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "video/MP2T");
    let mut body = Box::pin(resp.bytes_stream());
    let chunk = tokio::time::timeout(HANG_GUARD, body.next())
        .await
        .expect("tuner sent nothing")
        .expect("tuner stream ended")
        .expect("tuner chunk");
    assert_eq!(chunk[0], 0x47, "not MPEG-TS");
    drop(body);
    assert_api_error(app.get(&format!("/auto/v{old}")).await, 404).await;
    // The channel is found by its new number.
    assert_eq!(get_channel(&app, "42").await["id"], "demo");

    // Another channel's number (current or assigned) is refused with a clear error.
    let sport_id = id_of(&sport);
    let body = assert_api_error(patch(&app, &sport_id, r#"{"number":42}"#).await, 400).await;
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("42") && error.contains("demo"), "{body}");
    let news_number = app.channel_named("News").await["number"].clone();
    assert_api_error(
        patch(
            &app,
            &sport_id,
            &json!({ "number": news_number }).to_string(),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(app.channel_named("Sport").await["number"], sport["number"]);

    // Demo's old number is free now; once Sport has it, Demo cannot go back.
    patch_ok(&app, &sport_id, json!({"number": old})).await;
    let body = assert_api_error(patch(&app, "demo", r#"{"number":null}"#).await, 400).await;
    assert!(
        body["error"].as_str().unwrap().contains(&sport_id),
        "{body}"
    );
    patch_ok(&app, &sport_id, json!({"number": null})).await;
    let got = patch_ok(&app, "demo", json!({"number": null})).await;
    assert_eq!(got["number"], old);
}

#[tokio::test]
async fn hidden_channels_leave_every_listing_but_stay_reachable() {
    let (app, _up) = app().await;
    let sport = app.channel_named("Sport").await;
    let id = id_of(&sport);
    let number = sport["number"].as_u64().unwrap();

    let got = patch_ok(&app, &id, json!({"hidden": true})).await;
    assert_eq!(got["hidden"], true);
    assert_eq!(got["mapping"]["hidden"], true);

    assert_eq!(app.channel_names().await, ["Demo", "News"]);
    let (_, found) = app.get_json("/api/channels/search?query=sport").await;
    assert_eq!(found, json!([]));
    let playlist = app.get_text_ok("/playlist.m3u").await;
    assert!(!playlist.contains("Sport"), "{playlist}");
    let lineup = lineup_json(&app).await;
    assert!(
        lineup.iter().all(|e| e["GuideName"] != "Sport"),
        "{lineup:?}"
    );
    assert_eq!(lineup.len(), 2);

    // Still shown (to be unhidden), by id and number; its number stays reserved.
    let got = get_channel(&app, &id).await;
    assert_eq!(
        (got["hidden"].clone(), got["name"].clone()),
        (json!(true), json!("Sport"))
    );
    assert_eq!(
        get_channel(&app, &number.to_string()).await["id"],
        id.as_str()
    );
    assert_api_error(
        patch(&app, "demo", &json!({ "number": number }).to_string()).await,
        400,
    )
    .await;

    let got = patch_ok(&app, &id, json!({"hidden": null})).await;
    assert_eq!(got["hidden"], false);
    assert_eq!(app.channel_names().await, ["Demo", "News", "Sport"]);
    assert!(app.get_text_ok("/playlist.m3u").await.contains(",Sport"));
}

#[tokio::test]
async fn pinned_sources_are_tried_first_and_reset_to_priority_order() {
    let (app, up) = app().await;
    let news = app.channel_named("News").await;
    let id = id_of(&news);
    assert_eq!(services_of(&news), ["A", "B"]);

    let play = |expect_a: usize, expect_b: usize| {
        let (app, up, id) = (&app, &up, &id);
        async move {
            let resp = app.get(&format!("/api/stream/{id}.m3u8")).await;
            assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
            assert_eq!(
                (up.hits("/a/news.m3u8"), up.hits("/b/news.m3u8")),
                (expect_a, expect_b),
                "{:?}",
                up.paths()
            );
        }
    };
    play(1, 0).await;

    let got = patch_ok(&app, &id, json!({"sources": ["B"]})).await;
    assert_eq!(services_of(&got), ["B", "A"]);
    assert_eq!(got["mapping"]["sources"], json!(["B"]));
    assert_eq!(services_of(&app.channel_named("News").await), ["B", "A"]);
    play(1, 1).await;
    // `?service=` still picks one service.
    let resp = app.get(&format!("/api/stream/{id}.m3u8?service=A")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.hits("/a/news.m3u8"), 2);

    // Listing every service works too; an empty list or null resets.
    let got = patch_ok(&app, &id, json!({"sources": ["B", "A"]})).await;
    assert_eq!(services_of(&got), ["B", "A"]);
    let got = patch_ok(&app, &id, json!({"sources": []})).await;
    assert_eq!(services_of(&got), ["A", "B"]);
    assert_eq!(got["mapping"]["sources"], Value::Null);
    patch_ok(&app, &id, json!({"sources": ["B"]})).await;
    let got = patch_ok(&app, &id, json!({"sources": null})).await;
    assert_eq!(services_of(&got), ["A", "B"]);
    play(3, 1).await;

    // A configured service that does not carry the channel may be pinned (it applies
    // when it does); an unknown one may not.
    let got = patch_ok(&app, &id, json!({"sources": ["Demo", "B"]})).await;
    assert_eq!(services_of(&got), ["B", "A"]);
    let body = assert_api_error(patch(&app, &id, r#"{"sources":["Nope"]}"#).await, 400).await;
    assert!(body["error"].as_str().unwrap().contains("Nope"), "{body}");
}

#[tokio::test]
async fn mappings_survive_a_restart_and_new_channels_get_the_next_free_number() {
    let (mut app, _up) = app().await;
    let numbers: Vec<u64> = app
        .channels()
        .await
        .iter()
        .map(|c| c["number"].as_u64().unwrap())
        .collect();
    let next = numbers.iter().max().unwrap() + 1;
    let news = id_of(&app.channel_named("News").await);
    let sport = id_of(&app.channel_named("Sport").await);
    patch_ok(
        &app,
        "demo",
        json!({"name": "My Demo", "number": next, "tvg_id": "MyDemo.tv", "group": "Tests"}),
    )
    .await;
    patch_ok(&app, &news, json!({"sources": ["B"]})).await;
    patch_ok(&app, &sport, json!({"hidden": true})).await;
    let before = get_channel(&app, "demo").await;
    let guide = app.get_text_ok("/epg.xml").await;
    assert!(
        guide.contains("<channel id=\"MyDemo.tv\">") && guide.contains("My Demo"),
        "{}",
        &guide[..guide.len().min(600)]
    );

    app.restart().await;
    assert_eq!(get_channel(&app, "demo").await, before);
    assert_eq!(services_of(&get_channel(&app, &news).await), ["B", "A"]);
    assert_eq!(get_channel(&app, &sport).await["hidden"], true);
    assert_eq!(app.channel_names().await, ["My Demo", "News"]);
    let line = extinf_of(&app.get_text_ok("/playlist.m3u").await, "demo").unwrap();
    assert!(
        line.contains(&format!("tvg-chno=\"{next}\"")) && line.ends_with(",My Demo"),
        "{line}"
    );
    let lineup = lineup_json(&app).await;
    let entry = lineup.iter().find(|e| e["GuideName"] == "My Demo").unwrap();
    assert_eq!(entry["GuideNumber"], next.to_string());
    // The guide, built after the restart, uses the mapped id and name.
    let guide = app.get_text_ok("/epg.xml").await;
    assert!(
        guide.contains("<channel id=\"MyDemo.tv\">") && guide.contains("My Demo"),
        "{}",
        &guide[..guide.len().min(600)]
    );
    assert!(!guide.contains("Sport"), "a hidden channel is in the guide");
}

/// `DELETE /api/channels/{id}/mapping` from loopback.
async fn forget(app: &TestApp, id: &str) -> reqwest::Response {
    reqwest::Client::new()
        .delete(app.url(&format!("/api/channels/{id}/mapping")))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_channel_that_leaves_upstream_keeps_its_mapping_and_new_ones_skip_mapped_numbers() {
    use std::sync::{Arc, Mutex};

    let list = Arc::new(Mutex::new(String::new()));
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let entry = |name: &str| format!("#EXTINF:-1,{name}\n{o}/{}.m3u8\n", name.to_lowercase());
    *list.lock().unwrap() = format!("#EXTM3U\n{}{}", entry("Alpha"), entry("Bravo"));
    let _up = up.shared_text("/list.m3u", &list).start();
    let mut app = TestApp::spawn(&format!(
        "[[services]]\nname = \"L\"\nkind = \"m3u\"\nurl = \"{o}/list.m3u\"\n"
    ))
    .await;
    assert_eq!(get_channel(&app, "alpha").await["number"], 1);
    assert_eq!(get_channel(&app, "bravo").await["number"], 2);
    // Alpha takes 3, the number the next new channel would have had.
    patch_ok(&app, "alpha", json!({"number": 3, "name": "Alpha One"})).await;

    // Alpha leaves the upstream, Charlie arrives.
    *list.lock().unwrap() = format!("#EXTM3U\n{}{}", entry("Bravo"), entry("Charlie"));
    app.restart().await;
    assert_api_error(app.get("/api/channels/alpha").await, 404).await;
    assert_api_error(patch(&app, "alpha", r#"{"name":"x"}"#).await, 404).await;
    assert_eq!(get_channel(&app, "charlie").await["number"], 4);
    // Alpha's number stays reserved while it is away.
    assert_api_error(patch(&app, "charlie", r#"{"number":3}"#).await, 400).await;
    // Its mapping is listed as a vanished channel's, and a listed channel's is not
    // forgotten this way.
    let (status, vanished) = app.get_json("/api/channels/vanished").await;
    assert_eq!(status, 200, "{vanished}");
    assert_eq!(vanished.as_array().map(Vec::len), Some(1), "{vanished}");
    assert_eq!(vanished[0]["id"], "alpha", "{vanished}");
    assert_eq!(vanished[0]["mapping"]["number"], 3, "{vanished}");
    assert_eq!(vanished[0]["mapping"]["name"], "Alpha One", "{vanished}");
    let body = assert_api_error(forget(&app, "charlie").await, 400).await;
    assert!(
        body["error"].as_str().unwrap().contains("is listed"),
        "{body}"
    );
    // Nothing to forget: done, as a DELETE repeated is.
    let (status, body) = crate::common::json_of(forget(&app, "nothing").await).await;
    assert_eq!(
        (status.as_u16(), body["forgotten"].clone()),
        (200, json!(false)),
        "{body}"
    );

    // Alpha comes back with its mapping.
    *list.lock().unwrap() = format!(
        "#EXTM3U\n{}{}{}",
        entry("Bravo"),
        entry("Charlie"),
        entry("Alpha")
    );
    app.restart().await;
    let alpha = get_channel(&app, "alpha").await;
    assert_eq!(
        (alpha["number"].clone(), alpha["name"].clone()),
        (json!(3), json!("Alpha One"))
    );
    let (_, vanished) = app.get_json("/api/channels/vanished").await;
    assert_eq!(vanished, json!([]));

    // Gone again and forgotten: its 3 is free, and Charlie takes it.
    *list.lock().unwrap() = format!("#EXTM3U\n{}{}", entry("Bravo"), entry("Charlie"));
    app.restart().await;
    let (status, body) = crate::common::json_of(forget(&app, "alpha").await).await;
    assert_eq!(
        (status.as_u16(), body["forgotten"].clone()),
        (200, json!(true)),
        "{body}"
    );
    let (_, vanished) = app.get_json("/api/channels/vanished").await;
    assert_eq!(vanished, json!([]));
    patch_ok(&app, "charlie", json!({"number": 3})).await;
}

#[tokio::test]
async fn bad_bodies_unknown_channels_and_fields_are_json_errors() {
    let (app, _up) = app().await;
    let news = id_of(&app.channel_named("News").await);
    for (body, hint) in [
        ("", "EOF"),
        ("{", "EOF"),
        ("[]", "got an array"),
        ("null", "got null"),
        ("not json", "expected"),
        (r#"{"nmae":"x"}"#, "unknown field `nmae`"),
        (
            r#"{"number":"7"}"#,
            "found string \"7\", expected a whole number, written without quotes",
        ),
        (r#"{"number":-1}"#, "found integer `-1`"),
        (r#"{"number":0}"#, "at least 1"),
        (r#"{"number":1000000}"#, "at most 999999"),
        (r#"{"number":4294967295}"#, "at most 999999"),
        (
            r#"{"hidden":"yes"}"#,
            "found string \"yes\", expected true or false",
        ),
        (r#"{"name":""}"#, "must not be empty"),
        (r#"{"name":"a\nb"}"#, "control characters"),
        (r#"{"logo":"ftp://x/y.png"}"#, "http(s)"),
        (r#"{"sources":"A"}"#, "found string \"A\""),
        (r#"{"sources":["A","A"]}"#, "twice"),
        (r#"{"sources":["a"]}"#, "unknown service `a`"),
    ] {
        let resp = patch(&app, &news, body).await;
        assert_eq!(resp.status(), 400, "{body:?} was accepted");
        let got = assert_api_error(resp, 400).await;
        let error = got["error"].as_str().unwrap();
        assert!(error.contains(hint), "{body:?}: {error}");
    }
    // Nothing was changed by the refused requests.
    assert_eq!(
        get_channel(&app, &news).await["mapping"]["name"],
        Value::Null
    );

    for id in ["nope", "999"] {
        assert_api_error(app.get(&format!("/api/channels/{id}")).await, 404).await;
        assert_api_error(patch(&app, id, r#"{"name":"x"}"#).await, 404).await;
    }
    // The listing routes are not channel ids.
    assert_eq!(app.get("/api/channels/all").await.status(), 200);
}

#[tokio::test]
async fn patch_is_an_admin_call() {
    let app = TestApp::spawn(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{state_dir}'\nadmin_token = \"s3cret\"\n\n\
         [[services]]\nname = \"Demo\"\nkind = \"demo\"\n",
    )
    .await;
    let body = r#"{"name":"Hacked"}"#;
    assert_api_error(patch(&app, "demo", body).await, 401).await;
    assert_api_error(
        patch_auth(&app, "demo", body, Some("Bearer wrong")).await,
        403,
    )
    .await;
    // Refused before the body is looked at.
    assert_api_error(patch(&app, "demo", "{").await, 401).await;
    assert_eq!(app.channel_named("Demo").await["name"], "Demo");
    // Reading is not an admin call.
    assert_eq!(get_channel(&app, "demo").await["name"], "Demo");

    let (status, got) = json_of(patch_auth(&app, "demo", body, Some("Bearer s3cret")).await).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(app.channel_named("Hacked").await["id"], "demo");
}

/// The real binary, killed with SIGKILL right after a PATCH answered: the change is
/// there when it starts again (the store commits before answering).
#[tokio::test]
async fn a_mapping_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dir.path().join("freesky.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\nstate_dir = '{}'\n\n[[services]]\nname = \"Demo\"\nkind = \"demo\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(HANG_GUARD)
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let start = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_freesky"))
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env_remove("FREESKY_ADMIN_TOKEN")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("the freesky binary starts")
    };
    let ready = |client: reqwest::Client, base: String| async move {
        crate::common::eventually("freesky to answer /health", || async {
            client.get(format!("{base}/health")).send().await.map(drop)
        })
        .await
    };

    let mut child = start();
    ready(client.clone(), base.clone()).await;
    let resp = client
        .patch(format!("{base}/api/channels/demo"))
        .body(r#"{"name":"Durable","number":7}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    child.kill().unwrap(); // SIGKILL: no shutdown, no flush
    child.wait().unwrap();

    let mut child = start();
    ready(client.clone(), base.clone()).await;
    let got: Value = client
        .get(format!("{base}/api/channels/demo"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(got["name"], "Durable", "{got:#}");
    assert_eq!(got["number"], 7, "{got:#}");
}

/// A channel listed with a tvg-id by one service and without one by another keeps its
/// id, number and mapping when the one without becomes its first source (a priority
/// change) and when the one with the id is switched off.
#[tokio::test]
async fn a_channel_keeps_its_identity_when_its_first_source_changes() {
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let _up = up
        .text(
            "/m.m3u",
            M3U_TYPE,
            format!("#EXTM3U\n#EXTINF:-1 tvg-id=\"news.test\",News\n{o}/m/news.m3u8\n"),
        )
        .text(
            "/n.m3u",
            M3U_TYPE,
            format!("#EXTM3U\n#EXTINF:-1,News HD\n{o}/n/news.m3u8\n"),
        )
        .text("/m/news.m3u8", HLS_TYPE, live("m.ts"))
        .text("/n/news.m3u8", HLS_TYPE, live("n.ts"))
        .start();
    let app = TestApp::spawn(&format!(
        r#"
[[services]]
name = "WithId"
kind = "m3u"
priority = 10
url = "{o}/m.m3u"

[[services]]
name = "NoId"
kind = "m3u"
priority = 50
url = "{o}/n.m3u"
"#
    ))
    .await;
    let news = get_channel(&app, "news").await;
    assert_eq!(services_of(&news), ["WithId", "NoId"]);
    patch_ok(&app, "news", json!({"number": 101, "name": "My News"})).await;

    let check = |why: &'static str| {
        let app = &app;
        async move {
            let c = get_channel(app, "news").await;
            assert_eq!(c["number"], 101, "{why}: {c:#}");
            assert_eq!(c["name"], "My News", "{why}: {c:#}");
            let lineup = lineup_json(app).await;
            assert_eq!(lineup.len(), 1, "{why}: one channel, not two: {lineup:#?}");
            assert_eq!(lineup[0]["GuideNumber"], "101", "{why}");
            c
        }
    };
    let put = |body: &'static str| {
        let app = &app;
        async move {
            let r = app
                .send_json(
                    reqwest::Method::PUT,
                    "/api/services/NoId/priority",
                    body,
                    None,
                )
                .await;
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        }
    };
    put(r#"{"priority":1}"#).await;
    let c = check("the source without a tvg-id first").await;
    assert_eq!(services_of(&c), ["NoId", "WithId"]);

    let r = app.post("/api/services/WithId/disable").await;
    assert_eq!(r.status(), 200);
    let c = check("the source with the tvg-id off").await;
    assert_eq!(services_of(&c), ["NoId"]);

    let r = app.post("/api/services/WithId/enable").await;
    assert_eq!(r.status(), 200);
    put(r#"{"priority":50}"#).await;
    let c = check("back as it was").await;
    assert_eq!(services_of(&c), ["WithId", "NoId"]);
}

/// A channel's guide id (playlist `tvg-id`, XMLTV channel id: what a player keys its
/// guide on) is sticky: two services spelling one tvg-id in two cases do not flip it
/// with their priorities; switching off the service that gives a channel its tvg-id
/// keeps the id instead of `<slug>.freesky`, also after a restart; a tvg-id the
/// upstream really changes is followed.
#[tokio::test]
async fn a_channels_guide_id_stays_through_priorities_switches_and_restarts() {
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let a_list = |film: &str| {
        format!(
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"News.test\",News\n{o}/a/news.m3u8\n\
             #EXTINF:-1 tvg-id=\"{film}\",Film\n{o}/a/film.m3u8\n"
        )
    };
    let a = std::sync::Arc::new(std::sync::Mutex::new(a_list("Film.test")));
    let _up = up
        .shared_text("/a.m3u", &a)
        .text(
            "/b.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n#EXTINF:-1 tvg-id=\"news.TEST\",News\n{o}/b/news.m3u8\n\
                 #EXTINF:-1,Film\n{o}/b/film.m3u8\n"
            ),
        )
        .start();
    let mut app = TestApp::spawn(&format!(
        r#"
[cache]
channels_ttl = "1ms"

[[services]]
name = "A"
kind = "m3u"
priority = 10
url = "{o}/a.m3u"

[[services]]
name = "B"
kind = "m3u"
priority = 50
url = "{o}/b.m3u"
"#
    ))
    .await;
    // The guide id in the API and in the playlist, which must agree.
    async fn ids(app: &TestApp) -> Vec<String> {
        let mut out = Vec::new();
        let playlist = app.get_text_ok("/playlist.m3u").await;
        for slug in ["news", "film"] {
            let c = get_channel(app, slug).await;
            let id = c["guide_id"].as_str().expect("guide_id").to_string();
            let line = extinf_of(&playlist, slug).unwrap_or_else(|| panic!("{slug} in {playlist}"));
            assert!(
                line.contains(&format!("tvg-id=\"{id}\"")),
                "{slug}: {id} in {line}"
            );
            out.push(id);
        }
        out
    }
    async fn priority(app: &TestApp, body: &'static str) {
        let r = app
            .send_json(reqwest::Method::PUT, "/api/services/B/priority", body, None)
            .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    assert_eq!(ids(&app).await, ["News.test", "Film.test"], "at first");

    priority(&app, r#"{"priority":1}"#).await;
    let c = get_channel(&app, "news").await;
    assert_eq!(services_of(&c), ["B", "A"], "{c:#}");
    assert_eq!(
        ids(&app).await,
        ["News.test", "Film.test"],
        "B first, its own case"
    );

    let r = app.post("/api/services/A/disable").await;
    assert_eq!(r.status(), 200);
    let c = get_channel(&app, "film").await;
    assert_eq!(services_of(&c), ["B"], "{c:#}");
    assert_eq!(
        ids(&app).await,
        ["News.test", "Film.test"],
        "A, which gives Film its tvg-id, off"
    );

    app.restart().await;
    assert_eq!(
        ids(&app).await,
        ["News.test", "Film.test"],
        "after a restart, A still off"
    );

    *a.lock().unwrap() = a_list("FilmFour.test");
    let r = app.post("/api/services/A/enable").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        ids(&app).await,
        ["News.test", "FilmFour.test"],
        "A back, its tvg-id for Film changed upstream"
    );
}

/// A "+1" listed under its live channel's tvg-id keeps its own identity (id, number)
/// and guide id when the service carrying the live channel is switched off, also after
/// a restart: the live channel's identity and guide are not handed to it (review 66 #2).
#[tokio::test]
async fn a_plus_one_keeps_its_identity_when_its_live_channels_service_is_off() {
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let _up = up
        .text(
            "/a.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n#EXTINF:-1 tvg-id=\"E4.uk\",E4\n{o}/a/e4.m3u8\n\
                 #EXTINF:-1 tvg-id=\"News.uk\",News\n{o}/a/news.m3u8\n"
            ),
        )
        .text(
            "/b.m3u",
            M3U_TYPE,
            format!("#EXTM3U\n#EXTINF:-1 tvg-id=\"E4.uk\",E4 +1\n{o}/b/e4.m3u8\n"),
        )
        .start();
    let mut app = TestApp::spawn(&format!(
        "[cache]\nchannels_ttl = \"1ms\"\n{}",
        a_then_b(&o)
    ))
    .await;
    // (id, number, guide id) of each channel in the API, checked against the playlist.
    async fn seen(app: &TestApp) -> Vec<(String, u64, String)> {
        let playlist = app.get_text_ok("/playlist.m3u").await;
        let mut out = Vec::new();
        for c in app.channels().await {
            let id = id_of(&c);
            let guide = c["guide_id"].as_str().expect("guide_id").to_string();
            let line = extinf_of(&playlist, &id).unwrap_or_else(|| panic!("{id} in {playlist}"));
            assert!(
                line.contains(&format!("tvg-id=\"{guide}\"")),
                "{id}: {guide} in {line}"
            );
            out.push((id, c["number"].as_u64().expect("number"), guide));
        }
        out.sort();
        out
    }
    let first = seen(&app).await;
    let plus: Vec<_> = first
        .iter()
        .filter(|c| c.0 == "e4-plus1")
        .cloned()
        .collect();
    assert_eq!(plus.len(), 1, "{first:?}");
    assert_ne!(plus[0].2, "E4.uk", "the +1 at first: {first:?}");
    assert!(
        first.iter().any(|c| c.0 == "e4" && c.2 == "E4.uk"),
        "{first:?}"
    );

    let r = app.post("/api/services/A/disable").await;
    assert_eq!(r.status(), 200);
    assert_eq!(seen(&app).await, plus, "A, with the live E4, off");

    app.restart().await;
    assert_eq!(seen(&app).await, plus, "after a restart, A still off");

    let r = app.post("/api/services/A/enable").await;
    assert_eq!(r.status(), 200);
    assert_eq!(seen(&app).await, first, "A back");
}

/// The same when the service carrying the live channel never listed (switched off in
/// the config from the first start): the "+1" under the live channel's tvg-id, which
/// does not say its shift, is a channel of its own from the start, and keeps its id,
/// number and mapping when the live channel comes (review 69 #1).
#[tokio::test]
async fn a_plus_one_is_its_own_channel_before_its_live_channel_was_ever_listed() {
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let _up = up
        .text(
            "/a.m3u",
            M3U_TYPE,
            format!("#EXTM3U\n#EXTINF:-1 tvg-id=\"E4.uk\",E4\n{o}/a/e4.m3u8\n"),
        )
        .text(
            "/b.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n#EXTINF:-1 tvg-id=\"E4.uk\",E4 +1\n{o}/b/e4.m3u8\n\
                 #EXTINF:-1 tvg-id=\"Film4Plus1.uk\",Film4 +1\n{o}/b/film.m3u8\n"
            ),
        )
        .start();
    let config = a_then_b(&o).replacen("priority = 1\n", "priority = 1\nenabled = false\n", 1);
    let app = TestApp::spawn(&format!("[cache]\nchannels_ttl = \"1ms\"\n{config}")).await;
    let plus = get_channel(&app, "e4-plus1").await;
    assert_ne!(plus["guide_id"], "E4.uk", "{plus:#}");
    // A +1 whose tvg-id says its shift keeps it.
    assert_eq!(
        get_channel(&app, "film4-plus1").await["guide_id"],
        "Film4Plus1.uk"
    );
    let r = app
        .send_json(
            reqwest::Method::PATCH,
            "/api/channels/e4-plus1",
            r#"{"name":"E4 Later","number":50}"#,
            None,
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let r = app.post("/api/services/A/enable").await;
    assert_eq!(r.status(), 200);
    let plus = get_channel(&app, "e4-plus1").await;
    assert_eq!(
        (&plus["name"], &plus["number"], services_of(&plus)),
        (&json!("E4 Later"), &json!(50), vec!["B".to_string()]),
        "{plus:#}"
    );
    let live = get_channel(&app, "e4").await;
    assert_eq!(services_of(&live), ["A"], "{live:#}");
    assert_eq!(live["guide_id"], "E4.uk", "{live:#}");
}

/// A provider's numbering (`tvg-chno`) is what a new user sees on first start: each
/// new channel takes its upstream number when free, the others the next free ones;
/// a later change of the upstream number does not renumber a known channel.
#[tokio::test]
async fn new_channels_take_the_upstream_channel_numbers() {
    let list = |sport: u32| {
        format!(
            "#EXTM3U\n#EXTINF:-1 tvg-chno=\"101\",News\nhttp://127.0.0.1:9/n.m3u8\n\
             #EXTINF:-1,Weather\nhttp://127.0.0.1:9/w.m3u8\n\
             #EXTINF:-1 tvg-chno=\"{sport}\",Sport\nhttp://127.0.0.1:9/s.m3u8\n\
             #EXTINF:-1 tvg-chno=\"101\",Music\nhttp://127.0.0.1:9/m.m3u8\n\
             #EXTINF:-1 channel-number=\"7\",Kids\nhttp://127.0.0.1:9/k.m3u8\n\
             #EXTINF:-1 tvg-chno=\"5.1\",Local\nhttp://127.0.0.1:9/l.m3u8\n"
        )
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("list.m3u");
    std::fs::write(&file, list(2)).expect("list file");
    let mut app = TestApp::spawn(&format!(
        "[cache]\nchannels_ttl = \"1ms\"\n\n[[services]]\nname = \"P\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        file.display()
    ))
    .await;
    let numbers = |all: Vec<Value>| {
        let mut n: Vec<(String, u64)> = all
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["number"].as_u64().unwrap(),
                )
            })
            .collect();
        n.sort();
        n
    };
    let want = |pairs: &[(&str, u64)]| {
        let mut w: Vec<(String, u64)> = pairs.iter().map(|(n, k)| (n.to_string(), *k)).collect();
        w.sort();
        w
    };
    let first = want(&[
        ("News", 101),
        ("Weather", 1),
        ("Sport", 2),
        ("Music", 3),
        ("Kids", 7),
        ("Local", 4),
    ]);
    assert_eq!(numbers(app.channels().await), first);
    let tuner = app.get_text_ok("/lineup.json").await;
    assert!(tuner.contains("\"GuideNumber\":\"101\""), "{tuner}");
    std::fs::write(&file, list(300)).expect("list file");
    app.restart().await;
    assert_eq!(
        numbers(app.channels().await),
        first,
        "known channels keep theirs"
    );
}

#[tokio::test]
async fn a_station_id_comes_from_the_list_can_be_set_and_survives_a_restart() {
    // Channels DVR finds a channel's guide by the playlist's `tvc-guide-stationid`.
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let up = up
        .text(
            "/a.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n#EXTINF:-1 tvg-id=\"News.tv\" tvc-guide-stationid=\" 10021 \",News\n\
                 {o}/a/news.m3u8\n#EXTINF:-1,Sport\n{o}/a/sport.m3u8\n"
            ),
        )
        .text(
            "/b.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n#EXTINF:-1 tvg-id=\"Sport.tv\" tvc-guide-stationid=\"30303\",Sport\n\
                 {o}/b/sport.m3u8\n"
            ),
        )
        .start();
    let mut app = TestApp::spawn(&a_then_b(&o)).await;
    let news = id_of(&app.channel_named("News").await);
    let sport = id_of(&app.channel_named("Sport").await);
    let line = |playlist: &str, id: &str| {
        extinf_of(playlist, id).unwrap_or_else(|| panic!("{id} missing:\n{playlist}"))
    };

    // From the list (trimmed); a channel whose first source has none takes the next's.
    let playlist = app.get_text_ok("/playlist.m3u").await;
    assert!(
        line(&playlist, &news).contains(" tvc-guide-stationid=\"10021\" "),
        "{playlist}"
    );
    assert!(
        line(&playlist, &sport).contains(" tvc-guide-stationid=\"30303\" "),
        "{playlist}"
    );
    let got = get_channel(&app, &news).await;
    assert_eq!(got["station_id"], "10021");
    assert_eq!(got["upstream"]["station_id"], "10021");
    assert_eq!(got["mapping"]["station_id"], Value::Null);

    // Set by hand: it wins, and after a restart.
    let got = patch_ok(&app, &news, json!({"station_id": "20456"})).await;
    assert_eq!(got["station_id"], "20456");
    assert_eq!(got["upstream"]["station_id"], "10021");
    patch_ok(&app, &sport, json!({"station_id": ""})).await;
    app.restart().await;
    let playlist = app.get_text_ok("/playlist.m3u").await;
    assert!(
        line(&playlist, &news).contains(" tvc-guide-stationid=\"20456\" "),
        "{playlist}"
    );
    assert!(
        !line(&playlist, &sport).contains("tvc-guide-stationid"),
        "\"\" is none, whatever the list gives: {playlist}"
    );

    // Not a Gracenote id: a JSON error naming the field, nothing changed.
    for bad in [r#"{"station_id": "abc"}"#, r#"{"station_id": "1\"2"}"#] {
        let resp = patch(&app, &news, bad).await;
        let body = assert_api_error(resp, 400).await;
        assert!(
            body["error"].as_str().unwrap().contains("station_id"),
            "{body}"
        );
    }
    assert_eq!(get_channel(&app, &news).await["station_id"], "20456");

    // `null` goes back to the list's.
    let got = patch_ok(&app, &news, json!({"station_id": null})).await;
    assert_eq!(got["station_id"], "10021");
    drop(up);
}

#[tokio::test]
async fn two_channels_never_share_a_guide_id() {
    // `a_b` and `a-b` both read `a-b.freesky`; tvg-id `sport` reads as the slug form
    // of the channel "Sport", which has none.
    let entries = [
        "#EXTINF:-1 tvg-id=\"a_b\",Chan AB\nhttp://127.0.0.1:9/1.m3u8\n",
        "#EXTINF:-1 tvg-id=\"a-b\",Chan A-B\nhttp://127.0.0.1:9/2.m3u8\n",
        "#EXTINF:-1,Sport\nhttp://127.0.0.1:9/3.m3u8\n",
        "#EXTINF:-1 tvg-id=\"sport\",Sport Extra\nhttp://127.0.0.1:9/4.m3u8\n",
    ];
    let lists = tempfile::tempdir().unwrap();
    let write = |order: &[usize]| {
        let body: String = order.iter().map(|&i| entries[i]).collect();
        std::fs::write(lists.path().join("l.m3u"), format!("#EXTM3U\n{body}")).unwrap();
    };
    write(&[0, 1, 2, 3]);
    let up = FakeUpstream::bind().await.dir("/d", lists.path()).start();
    let mut app = TestApp::spawn(&format!(
        "[[services]]\nname = \"L\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        up.url("/d/l.m3u")
    ))
    .await;
    let guide_ids = |channels: Vec<Value>| -> std::collections::BTreeMap<String, String> {
        channels
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["guide_id"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let ids = guide_ids(app.channels().await);
    assert_eq!(ids.len(), 4, "{ids:?}");
    let distinct: std::collections::BTreeSet<&String> = ids.values().collect();
    assert_eq!(distinct.len(), 4, "one guide id each: {ids:?}");
    // The lower number keeps the id its tvg-id (or slug) reads as; the other takes
    // its slug's.
    assert_eq!(ids["Chan AB"], "a-b.freesky");
    assert_eq!(ids["Chan A-B"], "chan-a-b.freesky");
    assert_eq!(ids["Sport"], "sport.freesky");
    assert_eq!(ids["Sport Extra"], "sport-extra.freesky");
    let playlist = app.get_text_ok("/playlist.m3u").await;
    assert_eq!(
        playlist.matches("tvg-id=\"a-b.freesky\"").count(),
        1,
        "{playlist}"
    );
    // The list in another order: each channel keeps its guide id (Plex and Jellyfin
    // map guide channels by it).
    write(&[3, 1, 2, 0]);
    app.restart().await;
    assert_eq!(guide_ids(app.channels().await), ids);
}

/// Guide ids are compared ignoring case, as players and guide matching do: a tvg-id
/// that is another channel's id in another case does not make two guide channels
/// that a player reads as one. And an id stays with the channel that holds it now:
/// one that had it before does not take it back when it returns.
#[tokio::test]
async fn a_guide_id_is_one_channels_whatever_its_case_and_stays_with_its_holder() {
    let entries = [
        "#EXTINF:-1 tvg-id=\"x_y\",Pee\nhttp://127.0.0.1:9/1.m3u8\n",
        "#EXTINF:-1 tvg-id=\"X-Y.freesky\",Queue\nhttp://127.0.0.1:9/2.m3u8\n",
        "#EXTINF:-1 tvg-id=\"x-y\",Arr\nhttp://127.0.0.1:9/3.m3u8\n",
    ];
    let lists = tempfile::tempdir().unwrap();
    let write = |listed: &[usize]| {
        let body: String = listed.iter().map(|&i| entries[i]).collect();
        std::fs::write(lists.path().join("l.m3u"), format!("#EXTM3U\n{body}")).unwrap();
    };
    write(&[0, 1, 2]);
    let up = FakeUpstream::bind().await.dir("/d", lists.path()).start();
    let app = TestApp::spawn(&format!(
        "[cache]\nchannels_ttl = \"1ms\"\n\n[[services]]\nname = \"L\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        up.url("/d/l.m3u")
    ))
    .await;
    async fn ids(app: &TestApp) -> std::collections::BTreeMap<String, String> {
        let ids: std::collections::BTreeMap<String, String> = app
            .channels()
            .await
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["guide_id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let distinct: std::collections::BTreeSet<String> =
            ids.values().map(|v| v.to_lowercase()).collect();
        assert_eq!(distinct.len(), ids.len(), "one each, case ignored: {ids:?}");
        ids
    }
    let all = ids(&app).await;
    assert_eq!(all["Queue"], "X-Y.freesky", "its tvg-id verbatim: {all:?}");
    assert_eq!(all["Pee"], "pee.freesky", "{all:?}");
    assert_eq!(all["Arr"], "arr.freesky", "{all:?}");

    // The lineup as listed now (a build answers the one before meanwhile).
    async fn listed(app: &TestApp, names: &[&str]) -> std::collections::BTreeMap<String, String> {
        let mut want: Vec<&str> = names.to_vec();
        want.sort_unstable();
        crate::common::eventually(&format!("the lineup listing {names:?}"), || async {
            let all = ids(app).await;
            (all.keys().map(String::as_str).collect::<Vec<_>>() == want)
                .then(|| all.clone())
                .ok_or(format!("{all:?}"))
        })
        .await
    }
    // Queue gone: the lower number (Pee) takes the id; Pee gone too: Arr takes it.
    write(&[0, 2]);
    assert_eq!(listed(&app, &["Pee", "Arr"]).await["Pee"], "x-y.freesky");
    write(&[2]);
    assert_eq!(listed(&app, &["Arr"]).await["Arr"], "x-y.freesky");
    // Pee back: Arr, which holds it now, keeps it.
    write(&[0, 2]);
    let all = listed(&app, &["Pee", "Arr"]).await;
    assert_eq!(all["Arr"], "x-y.freesky", "{all:?}");
    assert_eq!(all["Pee"], "pee.freesky", "{all:?}");
}

/// Each channel named `name`: (id, number), by id.
async fn ids_and_numbers_named(app: &TestApp, name: &str) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = app
        .channels()
        .await
        .into_iter()
        .filter(|c| c["name"] == name)
        .map(|c| (id_of(&c), c["number"].clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A provider that changes a channel's tvg-id (`BBCOne.uk` becomes `bbc-one.uk`, same
/// name) does not give it a new number: the channel keeps its id, number and mapping,
/// after the change and after later restarts. Another service's channel of the same
/// name is never taken for it: a service that starts listing "BBC One" under its own
/// id while the first is switched off gets a channel of its own.
#[tokio::test]
async fn a_providers_new_tvg_id_keeps_the_channels_number_and_mapping() {
    use std::sync::{Arc, Mutex};

    let up = FakeUpstream::bind().await;
    let o = up.base();
    let entry = |tvg: &str, name: &str, path: &str| {
        format!("#EXTINF:-1 tvg-id=\"{tvg}\",{name}\n{o}/{path}.m3u8\n")
    };
    let a_list = |bbc_id: &str| {
        format!(
            "#EXTM3U\n{}{}",
            entry(bbc_id, "BBC One", "a/bbc"),
            entry("sport.a", "Sport", "a/sport")
        )
    };
    let b_sport = format!("#EXTM3U\n{}", entry("sport.b", "Sport", "b/sport"));
    let a = Arc::new(Mutex::new(a_list("BBCOne.uk")));
    let b = Arc::new(Mutex::new(b_sport.clone()));
    let _up = up
        .shared_text("/a.m3u", &a)
        .shared_text("/b.m3u", &b)
        .start();
    let mut app = TestApp::spawn(&a_then_b(&o)).await;
    let number = get_channel(&app, "bbc-one").await["number"].clone();
    patch_ok(&app, "bbc-one", json!({"number": 101, "name": "My BBC"})).await;
    assert_ne!(number, json!(101));
    let sports = ids_and_numbers_named(&app, "Sport").await;
    assert_eq!(sports.len(), 2, "{sports:?}");

    // The provider renames the id; the next start reads the new list.
    *a.lock().unwrap() = a_list("bbc-one.uk");
    for why in ["the start that saw the new id", "a later start"] {
        app.restart().await;
        let channels = app.channels().await;
        assert_eq!(channels.len(), 3, "{why}: {channels:#?}");
        let c = get_channel(&app, "bbc-one").await;
        assert_eq!(c["number"], 101, "{why}: {c:#}");
        assert_eq!(c["name"], "My BBC", "{why}: {c:#}");
        assert!(c.to_string().contains("bbc-one.uk"), "{why}: {c:#}");
    }

    // A switched off; B starts listing "BBC One" under its own id: to a comparison of
    // the lineup before and after, A's channel moved to B's id. It is B's own channel.
    assert_eq!(app.post("/api/services/A/disable").await.status(), 200);
    *b.lock().unwrap() = format!("{b_sport}{}", entry("bbc.b", "BBC One", "b/bbc"));
    app.restart().await;
    let b_bbc = app.channel_named("BBC One").await;
    assert_ne!(b_bbc["number"], 101, "{b_bbc:#}");
    assert_ne!(id_of(&b_bbc), "bbc-one", "{b_bbc:#}");
    assert_api_error(app.get("/api/channels/bbc-one").await, 404).await;
    // A back: its channel is as it was, B's keeps its own.
    assert_eq!(app.post("/api/services/A/enable").await.status(), 200);
    let c = get_channel(&app, "bbc-one").await;
    assert_eq!(
        (c["number"].clone(), c["name"].clone()),
        (json!(101), json!("My BBC"))
    );
    let again = get_channel(&app, &id_of(&b_bbc)).await;
    assert_eq!(again["number"], b_bbc["number"], "{again:#}");
    for pair in ids_and_numbers_named(&app, "Sport").await {
        assert!(sports.contains(&pair), "{pair:?} vs {sports:?}");
    }
}

/// Two channels whose names differ only in a bracketed note that is not a format note
/// ("BBC One (Scotland)", "BBC One (Wales)") are two channels, while format notes
/// ("(1080p)", "[Geo-blocked]") still merge. A channel whose provider adds such a note
/// to its name keeps its id, number and mapping (its key's former reading).
#[tokio::test]
async fn a_regions_note_makes_another_channel_and_keeps_the_identity_it_had() {
    use std::sync::{Arc, Mutex};

    let up = FakeUpstream::bind().await;
    let o = up.base();
    let entry = |name: &str, path: &str| format!("#EXTINF:-1,{name}\n{o}/{path}.m3u8\n");
    let a = Arc::new(Mutex::new(format!(
        "#EXTM3U\n{}{}",
        entry("BBC One", "a/bbc"),
        entry("Sport", "a/sport")
    )));
    let b = format!(
        "#EXTM3U\n{}",
        entry("Sport (1080p) [Geo-blocked]", "b/sport")
    );
    let _up = up
        .shared_text("/a.m3u", &a)
        .text("/b.m3u", M3U_TYPE, b)
        .start();
    let mut app = TestApp::spawn(&a_then_b(&o)).await;
    let sport = get_channel(&app, "sport").await;
    assert_eq!(
        services_of(&sport),
        ["A", "B"],
        "format notes merge: {sport:#}"
    );
    patch_ok(&app, "bbc-one", json!({"number": 101, "name": "My BBC"})).await;

    *a.lock().unwrap() = format!(
        "#EXTM3U\n{}{}{}",
        entry("BBC One (Scotland)", "a/scotland"),
        entry("BBC One (Wales)", "a/wales"),
        entry("Sport", "a/sport")
    );
    for why in ["the start that saw the notes", "a later start"] {
        app.restart().await;
        let channels = app.channels().await;
        assert_eq!(channels.len(), 3, "{why}: {channels:#?}");
        let c = get_channel(&app, "bbc-one").await;
        assert_eq!(c["number"], 101, "{why}: {c:#}");
        assert_eq!(c["name"], "My BBC", "{why}: {c:#}");
        assert_eq!(c["sources"].as_array().unwrap().len(), 1, "{why}: {c:#}");
        assert_eq!(
            c["sources"][0]["name"], "BBC One (Scotland)",
            "{why}: {c:#}"
        );
        let wales = app.channel_named("BBC One (Wales)").await;
        assert_ne!(id_of(&wales), "bbc-one", "{why}: {wales:#}");
        assert_ne!(wales["number"], 101, "{why}: {wales:#}");
        let sport = get_channel(&app, "sport").await;
        assert_eq!(services_of(&sport), ["A", "B"], "{why}: {sport:#}");
    }
}

/// "E4+1" of one provider and "E4 +1" of another are one channel. A store written when
/// they read as two names (its key `name:e4+1`) keeps the channel's id, number and
/// mapping when the second provider joins it.
#[tokio::test]
async fn a_plus_joined_or_apart_is_one_channel_that_keeps_the_identity_it_had() {
    use std::sync::{Arc, Mutex};

    let up = FakeUpstream::bind().await;
    let o = up.base();
    let entry = |name: &str, path: &str| format!("#EXTINF:-1,{name}\n{o}/{path}.m3u8\n");
    let b = Arc::new(Mutex::new("#EXTM3U\n".to_string()));
    let _up = up
        .text(
            "/a.m3u",
            M3U_TYPE,
            format!("#EXTM3U\n{}", entry("E4+1", "a/e4")),
        )
        .shared_text("/b.m3u", &b)
        .start();
    let mut app = TestApp::spawn(&a_then_b(&o)).await;
    patch_ok(&app, "e4plus1", json!({"number": 401, "name": "My E4"})).await;
    app.stop().await;
    // As a store written before a "+" began a word holds it.
    let db = rusqlite::Connection::open(app.state_dir().join("freesky.db")).unwrap();
    let moved = db
        .execute(
            "UPDATE channel_identity SET merge_key = 'name:e4+1' WHERE merge_key = 'name:e4 +1'",
            [],
        )
        .unwrap();
    assert_eq!(moved, 1, "the channel's stored key");
    drop(db);

    *b.lock().unwrap() = format!("#EXTM3U\n{}", entry("E4 +1", "b/e4"));
    for why in ["the start that reads the old key", "a later start"] {
        app.start().await;
        let channels = app.channels().await;
        assert_eq!(channels.len(), 1, "{why}: {channels:#?}");
        let c = get_channel(&app, "e4plus1").await;
        assert_eq!(c["number"], 401, "{why}: {c:#}");
        assert_eq!(c["name"], "My E4", "{why}: {c:#}");
        assert_eq!(services_of(&c), ["A", "B"], "{why}: {c:#}");
        app.stop().await;
    }
}

/// A guide id override that another channel already has is refused, naming that
/// channel: two channels sharing one would leave one of them out of the XMLTV (Plex
/// and Jellyfin map the guide by number). The channel's own id, in another case, and
/// the other channel's after it moved away, are taken.
#[tokio::test]
async fn a_guide_id_another_channel_has_is_refused() {
    let (app, _up) = app().await;
    let news = id_of(&app.channel_named("News").await);
    let sport = id_of(&app.channel_named("Sport").await);
    let resp = patch(&app, &sport, r#"{"tvg_id": "news.TV"}"#).await;
    let body = assert_api_error(resp, 400).await;
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("`news.TV` is the guide id of channel") && error.contains(&news),
        "{body}"
    );
    assert_eq!(get_channel(&app, &sport).await["guide_id"], "sport.freesky");
    let got = patch_ok(&app, &news, json!({"tvg_id": "NEWS.tv"})).await;
    assert_eq!(got["guide_id"], "NEWS.tv");
    patch_ok(&app, &news, json!({"tvg_id": "Other.tv"})).await;
    let got = patch_ok(&app, &sport, json!({"tvg_id": "News.tv"})).await;
    assert_eq!(got["guide_id"], "News.tv");
}

/// A guide id a mapping set stays that channel's when a channel listing it comes back
/// (its service enabled again): the other takes its slug's form, and no two channels
/// of the lineup share one.
#[tokio::test]
async fn a_mapped_guide_id_stays_unique_when_its_holder_comes_back() {
    let (app, _up) = app().await;
    let sport = id_of(&app.channel_named("Sport").await);
    assert_eq!(app.post("/api/services/Demo/disable").await.status(), 200);
    let got = patch_ok(&app, &sport, json!({"tvg_id": "demo.freesky"})).await;
    assert_eq!(got["guide_id"], "demo.freesky");
    assert_eq!(app.post("/api/services/Demo/enable").await.status(), 200);
    let all = app.channels().await;
    let ids: Vec<(&str, &str)> = all
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["guide_id"].as_str().unwrap()))
        .collect();
    assert!(ids.contains(&(sport.as_str(), "demo.freesky")), "{ids:?}");
    assert!(ids.contains(&("demo", "demo-2.freesky")), "{ids:?}");
    let unique: std::collections::HashSet<&str> = ids.iter().map(|(_, g)| *g).collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}

/// A number held by a channel that is not in the lineup now (its service off) is
/// refused saying so: the API cannot show that channel, yet it keeps its number.
#[tokio::test]
async fn a_number_held_by_a_channel_out_of_the_lineup_is_refused_saying_so() {
    let (app, _up) = app().await;
    let demo = app.channel_named("Demo").await["number"].as_u64().unwrap();
    let sport = id_of(&app.channel_named("Sport").await);
    assert_eq!(app.post("/api/services/Demo/disable").await.status(), 200);
    let resp = patch(&app, &sport, &format!(r#"{{"number": {demo}}}"#)).await;
    let body = assert_api_error(resp, 400).await;
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("number {demo} is taken by channel `demo`"))
            && error.contains("not in the lineup now"),
        "{body}"
    );
}

/// One guide id asked for by several channels at once goes to one of them: the others
/// are refused, and nothing is stored for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guide_id_given_to_two_channels_at_once_goes_to_one() {
    let (app, _up) = app().await;
    let sport = id_of(&app.channel_named("Sport").await);
    let demo = id_of(&app.channel_named("Demo").await);
    for round in 0..10 {
        let body = format!(r#"{{"tvg_id": "Race{round}.tv"}}"#);
        let (a, b) = tokio::join!(patch(&app, &sport, &body), patch(&app, &demo, &body));
        let mut granted = Vec::new();
        for (resp, id) in [(a, &sport), (b, &demo)] {
            match resp.status().as_u16() {
                200 => granted.push(id.clone()),
                400 => {}
                other => panic!("round {round}: {id} answered {other}"),
            }
        }
        assert_eq!(granted.len(), 1, "round {round}: granted to {granted:?}");
        for id in [&sport, &demo] {
            let c = get_channel(&app, id).await;
            let mapped = &c["mapping"]["tvg_id"];
            assert_eq!(
                mapped == &json!(format!("Race{round}.tv")),
                granted[0] == *id,
                "round {round}: {c:#}"
            );
        }
    }
}
