//! Guide reads through the surface, against real XMLTV upstreams on 127.0.0.1: a
//! display name never gives a lineup channel another country's guide channel, nor
//! one of several countries' when the channel's own country is unknown; the partial
//! refresh also reads again the extra guides (`[[guides]]`) that can give programmes
//! to channels new in the lineup; and a guide whose assignments change in a refresh
//! is downloaded once in it.

use serde_json::Value;

use crate::common::{xmltv_at as at, FakeUpstream, TestApp, M3U_TYPE};

const XML: &str = "application/xml";

/// An XMLTV document: `channels` as (id, display-name), one programme each, titled
/// "<id> show".
fn xmltv(channels: &[(&str, &str)]) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<tv>\n");
    for (id, name) in channels {
        s.push_str(&format!(
            "<channel id=\"{id}\"><display-name>{name}</display-name></channel>\n"
        ));
    }
    for (id, _) in channels {
        s.push_str(&format!(
            "<programme start=\"{}\" stop=\"{}\" channel=\"{id}\"><title>{id} show</title></programme>\n",
            at(0),
            at(1)
        ));
    }
    s.push_str("</tv>\n");
    s
}

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
