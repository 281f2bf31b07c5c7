//! Snapshots (insta) of what clients read: `/playlist.m3u`, `/epg.xml` and a channel's
//! rewritten HLS playlists, served from fixed upstreams. What differs from run to run
//! is normalised first: freesky's and the upstreams' addresses, each sealed link
//! (everything after `/proxy/` up to the end of the URI, whatever its format: numbered
//! by first appearance, so a repeated link shows as the same number) and programme
//! times (hours from now).
//!
//! After an intended change of an output: `INSTA_UPDATE=always cargo test --test it
//! snapshots::`, then review the diff of `tests/it/snapshots/*.snap` and commit it.

use std::collections::HashMap;

use regex::Regex;

use crate::common::{playlist_uris, xmltv_at, FakeUpstream, TestApp, HLS_TYPE, M3U_TYPE};

/// `text` with each `(from, to)` replaced, then every proxy link numbered.
fn normalise(text: &str, replace: &[(String, &str)]) -> String {
    let mut text = replace.iter().fold(text.to_string(), |t, (from, to)| {
        t.replace(from.as_str(), to)
    });
    let link = Regex::new(r#"/proxy/[^"\s]+"#).expect("link pattern");
    let mut seen: HashMap<String, usize> = HashMap::new();
    text = link
        .replace_all(&text, |m: &regex::Captures| {
            let next = seen.len() + 1;
            let n = *seen.entry(m[0].to_string()).or_insert(next);
            format!("/proxy/[link {n}]")
        })
        .into_owned();
    text
}

/// An m3u list of three channels in two groups, one with a logo, and a guide of
/// two of them with programmes an hour ago, now and in an hour.
async fn upstream(hours: &[(i64, String)]) -> FakeUpstream {
    let builder = FakeUpstream::bind().await;
    let o = builder.base();
    let list = format!(
        "#EXTM3U\n\
#EXTINF:-1 tvg-id=\"NewsOne.example\" tvg-logo=\"{o}/logo/n1.png\" group-title=\"News\",News One\n{o}/n1/index.m3u8\n\
#EXTINF:-1 tvg-id=\"NewsTwo.example\" group-title=\"News\",News Two\n{o}/n2/index.m3u8\n\
#EXTINF:-1 group-title=\"Sport\",Sport & Co\n{o}/s1/index.m3u8\n"
    );
    let mut guide = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<tv>\n\
<channel id=\"NewsOne.example\"><display-name>News One</display-name></channel>\n\
<channel id=\"NewsTwo.example\"><display-name>News Two</display-name></channel>\n",
    );
    for channel in ["NewsOne.example", "NewsTwo.example"] {
        for pair in hours.windows(2) {
            let ((h, start), (_, stop)) = (&pair[0], &pair[1]);
            guide.push_str(&format!(
                "<programme start=\"{start}\" stop=\"{stop}\" channel=\"{channel}\">\
<title>{channel} at {h:+}h</title><desc>News &amp; weather</desc></programme>\n"
            ));
        }
    }
    guide.push_str("</tv>\n");
    let master = "#EXTM3U\n#EXT-X-VERSION:6\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"English\",DEFAULT=YES,URI=\"audio/en.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,AUDIO=\"aud\"\nlow/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=2400000,RESOLUTION=1280x720,AUDIO=\"aud\"\nhttps://cdn.example/high/index.m3u8?token=abc\n";
    let media = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:120\n\
#EXT-X-KEY:METHOD=AES-128,URI=\"../keys/k1.bin\",IV=0x00000000000000000000000000000001\n\
#EXT-X-MAP:URI=\"init.mp4\"\n\
#EXTINF:4.000,\nseg120.m4s\n#EXTINF:4.000,\nseg121.m4s\n#EXT-X-DISCONTINUITY\n#EXTINF:3.500,\n/abs/seg122.m4s\n";
    builder
        .text("/list.m3u", M3U_TYPE, list)
        .text("/guide.xml", "application/xml", guide)
        .text("/n1/index.m3u8", HLS_TYPE, master)
        .text("/n1/low/index.m3u8", HLS_TYPE, media)
        .start()
}

/// The programme times used, by hours from now: -1, 0, 1, 2.
fn hours() -> Vec<(i64, String)> {
    (-1..=2).map(|h| (h, xmltv_at(h))).collect()
}

async fn app_for(up: &FakeUpstream) -> TestApp {
    TestApp::spawn(&format!(
        "[[services]]\nname = \"List\"\nkind = \"m3u\"\nurl = \"{0}/list.m3u\"\nepg_url = \"{0}/guide.xml\"\n",
        up.base()
    ))
    .await
}

/// The replacements of one run: freesky's base, the upstream's, and each time.
fn unstable(
    app: &TestApp,
    up: &FakeUpstream,
    hours: &[(i64, String)],
) -> Vec<(String, &'static str)> {
    const NOW: [&str; 4] = ["{now-1h}", "{now}", "{now+1h}", "{now+2h}"];
    let mut out = vec![(app.base.clone(), "{freesky}"), (up.base(), "{upstream}")];
    out.extend(
        hours
            .iter()
            .zip(NOW)
            .map(|((_, t), name)| (t.clone(), name)),
    );
    out
}

#[tokio::test]
async fn playlist_m3u() {
    let hours = hours();
    let up = upstream(&hours).await;
    let app = app_for(&up).await;
    let text = app.get_text_ok("/playlist.m3u").await;
    insta::assert_snapshot!(normalise(&text, &unstable(&app, &up, &hours)));
}

#[tokio::test]
async fn epg_xml() {
    let hours = hours();
    let up = upstream(&hours).await;
    let app = app_for(&up).await;
    // The guide is read in the background after the lineup.
    assert_eq!(app.channels().await.len(), 3);
    let status = crate::common::eventually("the guide to be read", || async {
        let (code, s) = app.get_json("/api/guide/status").await;
        if code == 200 && s["programmes"].as_u64().unwrap_or(0) > 0 {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await;
    assert!(
        status["services"]["List"]["last_error"].is_null(),
        "{status}"
    );
    let text = app.get_text_ok("/epg.xml").await;
    insta::assert_snapshot!(normalise(&text, &unstable(&app, &up, &hours)));
}

#[tokio::test]
async fn rewritten_hls_playlists() {
    let hours = hours();
    let up = upstream(&hours).await;
    let app = app_for(&up).await;
    let id = app.channel_named("News One").await["id"]
        .as_str()
        .expect("channel id")
        .to_string();
    let master = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let replace = unstable(&app, &up, &hours);
    insta::assert_snapshot!("rewritten_master", normalise(&master, &replace));
    // The low variant, through its link.
    let low = playlist_uris(&master)
        .into_iter()
        .nth(1)
        .expect("the low variant's link");
    let media = app.get_text_ok(&low).await;
    insta::assert_snapshot!("rewritten_media", normalise(&media, &replace));
}
