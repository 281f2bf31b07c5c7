//! The HTTP API end to end: a real freesky on 127.0.0.1:0 in front of real (fake)
//! upstreams that record what they receive. See SPEC sections 2 to 5.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::{json, Value};

use crate::common::{
    assert_api_error, json_of, media_playlist, playlist_uris, respond, FakeBuilder, FakeUpstream,
    TestApp, HLS_TYPE, M3U_TYPE,
};

/// `text` with each `(placeholder, value)` replaced (config templates stay readable TOML,
/// with their `{channel_id}` and `${VAR}` untouched).
fn fill(text: &str, subs: &[(&str, &str)]) -> String {
    subs.iter()
        .fold(text.to_string(), |t, (k, v)| t.replace(k, v))
}

/// Opens `/api/stream/{id}.m3u8` (plus `query`), which must answer 200 with an HLS
/// playlist; returns the playlist.
async fn open_stream(app: &TestApp, id: &str, query: &str) -> String {
    let resp = app.get(&format!("/api/stream/{id}.m3u8{query}")).await;
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp.text().await.expect("body");
    assert_eq!(status, 200, "stream {id}{query}: {body}");
    assert_eq!(ctype, HLS_TYPE, "stream {id}: {body}");
    assert!(body.starts_with("#EXTM3U"), "{body}");
    body
}

/// GETs a URL freesky handed out (must be 200) and returns the bytes.
async fn fetch_bytes(app: &TestApp, url: &str) -> Vec<u8> {
    assert!(
        url.starts_with(&format!("{}/proxy/", app.base)),
        "not a freesky proxy URL: {url}"
    );
    let resp = app.get(url).await;
    let status = resp.status();
    let bytes = resp.bytes().await.expect("body").to_vec();
    assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&bytes));
    bytes
}

fn id_of(channel: &Value) -> String {
    channel["id"].as_str().expect("channel id").to_string()
}

fn source_services(channel: &Value) -> Vec<String> {
    channel["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|s| s["service"].as_str().expect("service").to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------
// service kinds

#[tokio::test]
async fn m3u_list_quirks_are_parsed_and_the_malformed_entry_is_skipped() {
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let entry = |url: &str| format!("{o}{url}");
    let lines = [
        "#EXTM3U url-tvg=\"http://guide.example/epg.xml\"".to_string(),
        // Commas inside quoted attribute values and in the name itself.
        "#EXTINF:-1 tvg-id=\"NewsWeather.fr\" tvg-name=\"News, Weather\" tvg-logo=\"http://logo.example/nw.png\" group-title=\"Info, Actu\",News, Weather".into(),
        "#EXTVLCOPT:http-referrer=http://portal.example/news".into(),
        "#EXTVLCOPT:http-user-agent=PortalPlayer/2.0 (X11; Linux)".into(),
        entry("/hls/news.m3u8"),
        // No attributes at all.
        "#EXTINF:-1,Bare Channel".into(),
        entry("/hls/bare.m3u8"),
        // Quotes in the name.
        "#EXTINF:-1 tvg-id=\"Film.fr\" group-title=\"Films\",Le \"Grand\" Film".into(),
        entry("/hls/film.m3u8"),
        // The same entry twice.
        "#EXTINF:-1 tvg-id=\"Dup.fr\" group-title=\"Misc\",Dup Channel".into(),
        entry("/hls/dup.m3u8"),
        "#EXTINF:-1 tvg-id=\"Dup.fr\" group-title=\"Misc\",Dup Channel".into(),
        entry("/hls/dup.m3u8"),
        // Malformed: an #EXTINF with neither a name nor a tvg-name.
        "#EXTINF:-1 tvg-id=\"Broken.fr\" group-title=\"Broken\"".into(),
        entry("/hls/broken.m3u8"),
        // A stray line with no #EXTINF before it.
        "this line is not part of any entry".into(),
    ];
    let list = lines.join("\r\n") + "\r\n";
    assert!(list.contains("\r\n") && !list.replace("\r\n", "").contains('\n'));
    let up = up
        .text("/list.m3u", M3U_TYPE, list)
        .text("/hls/news.m3u8", HLS_TYPE, media_playlist(&["n0.ts"]))
        .text("/hls/bare.m3u8", HLS_TYPE, media_playlist(&["b0.ts"]))
        .start();
    let app = TestApp::spawn(&fill(
        r#"
[[services]]
name = "List"
kind = "m3u"
url = "@UP@/list.m3u"
"#,
        &[("@UP@", &o)],
    ))
    .await;

    assert_eq!(
        app.channel_names().await,
        [
            "Bare Channel",
            "Dup Channel",
            "Le \"Grand\" Film",
            "News, Weather"
        ]
    );
    let news = app.channel_named("News, Weather").await;
    assert_eq!(news["group"], "Info, Actu");
    assert_eq!(news["logo"], "http://logo.example/nw.png");
    assert_eq!(news["guide_id"], "NewsWeather.fr");
    assert_eq!(source_services(&news), ["List"]);
    let bare = app.channel_named("Bare Channel").await;
    assert_eq!(bare["group"], "");
    assert_eq!(bare["logo"], "");
    let dup = app.channel_named("Dup Channel").await;
    assert_eq!(dup["sources"].as_array().unwrap().len(), 1, "{dup}");
    let status = app.service_status("List").await;
    assert_eq!(status["channel_count"], 4, "{status}");
    assert_eq!(status["last_error"], Value::Null, "{status}");

    // The #EXTVLCOPT headers travel with that channel's requests, and only with them.
    open_stream(&app, &id_of(&news), "").await;
    open_stream(&app, &id_of(&bare), "").await;
    let news_req = &up.requests_to("/hls/news.m3u8")[0];
    assert_eq!(
        news_req.header("referer"),
        Some("http://portal.example/news")
    );
    assert_eq!(
        news_req.header("user-agent"),
        Some("PortalPlayer/2.0 (X11; Linux)")
    );
    let bare_req = &up.requests_to("/hls/bare.m3u8")[0];
    assert_eq!(bare_req.header("referer"), None);
    assert_ne!(
        bare_req.header("user-agent"),
        Some("PortalPlayer/2.0 (X11; Linux)")
    );
}

#[tokio::test]
async fn json_api_uses_the_bearer_from_the_environment_and_never_shows_it() {
    const TOKEN: &str = "it-bearer-3c9f0a71e5";
    // A name no other test (or the machine) uses.
    std::env::set_var("FREESKY_IT_JSON_API_BEARER_3C9F", TOKEN);

    let cdn = FakeUpstream::bind()
        .await
        .text("/live/a1.m3u8", HLS_TYPE, media_playlist(&["s0.ts"]))
        .bytes("/live/s0.ts", "video/mp2t", b"alpha segment".to_vec())
        .start();
    let cdn_base = cdn.base();
    let authorized = |h: &HeaderMap| {
        h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&*format!("Bearer {TOKEN}"))
    };
    let api = FakeUpstream::bind()
        .await
        .route(
            "/v1/channels",
            get(move |h: HeaderMap| async move {
                if !authorized(&h) {
                    return respond(401, "application/json", r#"{"error":"unauthorized"}"#);
                }
                let body = json!({"data": {"items": [
                    {"id": "a1", "title": "Alpha One", "category": "News", "tags": ["live", "hd"],
                     "epg": "AlphaOne.us", "logo": "http://logo.example/a1.png"},
                    {"id": 2, "title": "Beta", "category": "Kids", "tags": "cartoons, fun"},
                    {"title": "No id, skipped"}
                ]}});
                respond(200, "application/json", body.to_string())
            }),
        )
        .route(
            "/v1/stream/{id}",
            get(move |h: HeaderMap, Path(id): Path<String>| {
                let cdn_base = cdn_base.clone();
                async move {
                    if !authorized(&h) {
                        return respond(401, "application/json", "{}");
                    }
                    let body = json!({"hls": format!("{cdn_base}/live/{id}.m3u8")});
                    respond(200, "application/json", body.to_string())
                }
            }),
        )
        .start();
    let service = r#"
kind = "json_api"
base_url = "@API@/v1"
[services.channels]
path = "channels"
list = "/data/items"
name = "/title"
group = "/category"
tags = "/tags"
tvg_id = "/epg"
logo = "/logo"
[services.stream]
path = "stream/{channel_id}"
url = "/hls"
"#;
    let config = fill(
        &format!(
            r#"
[[services]]
name = "Api"
priority = 1
{service}
[services.auth]
bearer = "${{FREESKY_IT_JSON_API_BEARER_3C9F}}"

[[services]]
name = "ApiWrongToken"
priority = 2
{service}
[services.auth]
bearer = "${{FREESKY_IT_UNSET_VARIABLE_3C9F:-not-the-right-token}}"
"#
        ),
        &[("@API@", &api.base())],
    );
    let app = TestApp::spawn(&config).await;

    assert_eq!(app.channel_names().await, ["Alpha One", "Beta"]);
    let alpha = app.channel_named("Alpha One").await;
    assert_eq!(alpha["group"], "News");
    assert_eq!(alpha["tags"], json!(["live", "hd"]));
    assert_eq!(alpha["guide_id"], "AlphaOne.us");
    assert_eq!(alpha["logo"], "http://logo.example/a1.png");
    assert_eq!(source_services(&alpha), ["Api"]);
    let beta = app.channel_named("Beta").await;
    assert_eq!(beta["tags"], json!(["cartoons", "fun"]));
    assert_eq!(beta["sources"][0]["channel_id"], "2");

    let bearers: Vec<_> = api
        .requests_to("/v1/channels")
        .iter()
        .map(|r| r.header("authorization").unwrap_or_default().to_string())
        .collect();
    assert!(bearers.contains(&format!("Bearer {TOKEN}")), "{bearers:?}");
    assert!(
        bearers.contains(&"Bearer not-the-right-token".to_string()),
        "{bearers:?}"
    );

    let ok = app.service_status("Api").await;
    assert_eq!(ok["channel_count"], 2, "{ok}");
    assert_eq!(ok["last_error"], Value::Null, "{ok}");
    let wrong = app.service_status("ApiWrongToken").await;
    assert!(
        wrong["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("401"),
        "{wrong}"
    );
    assert!(wrong["failures"].as_u64().unwrap() >= 1, "{wrong}");

    // Streams resolve with credentials, but the CDN never sees them.
    let playlist = open_stream(&app, &id_of(&alpha), "").await;
    let uris = playlist_uris(&playlist);
    assert_eq!(uris.len(), 1, "{playlist}");
    assert_eq!(fetch_bytes(&app, &uris[0]).await, b"alpha segment");
    let stream_req = &api.requests_to("/v1/stream/a1")[0];
    assert_eq!(
        stream_req.header("authorization"),
        Some(&*format!("Bearer {TOKEN}"))
    );
    assert!(cdn.hits("/live/a1.m3u8") >= 1 && cdn.hits("/live/s0.ts") >= 1);
    for r in cdn.requests() {
        assert_eq!(
            r.header("authorization"),
            None,
            "credentials leaked to {}",
            r.path
        );
    }

    // The token is in no answer.
    let status_text = app.get_text_ok("/api/services/status").await;
    let channels_text = app.get_text_ok("/api/channels/all").await;
    for text in [&status_text, &channels_text, &playlist] {
        assert!(!text.contains(TOKEN), "token leaked: {text}");
        assert!(
            !text.contains("not-the-right-token"),
            "token leaked: {text}"
        );
    }
}

/// SPEC: `[services.auth]` credentials go to `base_url`'s origin only. An API that
/// redirects its channel list to another host (a mirror, a CDN) must not receive the
/// key there.
#[tokio::test]
async fn json_api_header_credentials_do_not_follow_a_redirect_to_another_origin() {
    const KEY: &str = "it-api-key-51d0";
    let mirror = FakeUpstream::bind()
        .await
        .text(
            "/mirror/channels.json",
            "application/json",
            r#"[{"id": "m1", "name": "Mirrored One"}]"#,
        )
        .start();
    let target = mirror.url("/mirror/channels.json");
    let api = FakeUpstream::bind()
        .await
        .route(
            "/v1/channels",
            get(move |h: HeaderMap| {
                let target = target.clone();
                async move {
                    if h.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(KEY) {
                        return respond(401, "text/plain", "no key");
                    }
                    axum::response::IntoResponse::into_response(
                        axum::response::Redirect::temporary(&target),
                    )
                }
            }),
        )
        .start();
    let app = TestApp::spawn(&fill(
        r#"
[[services]]
name = "KeyApi"
kind = "json_api"
base_url = "@API@/v1/"
[services.auth]
header = { name = "X-Api-Key", value = "it-api-key-51d0" }
[services.channels]
path = "channels"
[services.stream]
path = "stream/{channel_id}"
url = "/url"
"#,
        &[("@API@", &api.base())],
    ))
    .await;
    assert_eq!(app.channel_names().await, ["Mirrored One"]);
    assert_eq!(
        api.requests_to("/v1/channels")[0].header("x-api-key"),
        Some(KEY)
    );
    let mirrored = mirror.requests_to("/mirror/channels.json");
    assert_eq!(mirrored.len(), 1);
    assert_eq!(
        mirrored[0].header("x-api-key"),
        None,
        "the API key was sent to another origin after a redirect"
    );
}

#[tokio::test]
async fn scrape_with_an_inline_list_finds_the_stream_url_in_the_page() {
    let web = FakeUpstream::bind().await;
    let w = web.base();
    let escaped = w.replace('/', "\\/");
    let web = web
        .text(
            "/site/watch/one.html",
            "text/html",
            format!(
                r#"<html><script>player.setup({{"file":"{escaped}\/hls\/one.m3u8?token=abc","autostart":true}});</script></html>"#
            ),
        )
        .text(
            "/site/watch/two.html",
            "text/html",
            r#"<html><script>var cfg = {"file": "/hls/two.m3u8"};</script></html>"#,
        )
        .text("/hls/one.m3u8", HLS_TYPE, media_playlist(&["one0.ts"]))
        .text("/hls/two.m3u8", HLS_TYPE, media_playlist(&["two0.ts"]))
        .start();
    let app = TestApp::spawn(&fill(
        r#"
[[services]]
name = "Web"
kind = "scrape"
base_url = "@WEB@/site/"
[services.channels]
list = [
  { id = "one", name = "Web One", group = "Web", tags = ["scraped"], tvg_id = "WebOne.example" },
  { id = "two", name = "Web Two" },
]
[services.stream]
page = "watch/{channel_id}.html"
patterns = ['"file":\s*"([^"]+\.m3u8[^"]*)"']
"#,
        &[("@WEB@", &w)],
    ))
    .await;

    assert_eq!(app.channel_names().await, ["Web One", "Web Two"]);
    let one = app.channel_named("Web One").await;
    assert_eq!(one["group"], "Web");
    assert_eq!(one["tags"], json!(["scraped"]));
    assert_eq!(one["guide_id"], "WebOne.example");

    open_stream(&app, &id_of(&one), "").await;
    let hls = &web.requests_to("/hls/one.m3u8")[0];
    assert_eq!(hls.query.as_deref(), Some("token=abc"));
    // The page is the Referer of the stream's requests by default.
    assert_eq!(
        hls.header("referer"),
        Some(&*format!("{w}/site/watch/one.html"))
    );
    let two = app.channel_named("Web Two").await;
    open_stream(&app, &id_of(&two), "").await;
    assert_eq!(web.hits("/hls/two.m3u8"), 1, "{:?}", web.paths());
}

#[tokio::test]
async fn scrape_with_a_channel_page_and_pattern() {
    let web = FakeUpstream::bind().await;
    let w = web.base();
    let web = web
        .text(
            "/channels.html",
            "text/html",
            r#"<ul>
<li><a class="ch" href="/watch/alpha"><img src="/logos/alpha.png"/>Alpha &amp; Co</a></li>
<li><a class="ch" href="/watch/beta"><img src="/logos/beta.png"/>Beta TV</a></li>
<li><a class="ch" href="/watch/alpha"><img src="/logos/alpha.png"/>Alpha listed twice</a></li>
</ul>"#,
        )
        .text(
            "/watch/alpha",
            "text/html",
            format!(r#"<video><source src="{w}/cdn/alpha/index.m3u8" type="application/x-mpegURL"></video>"#),
        )
        .text("/cdn/alpha/index.m3u8", HLS_TYPE, media_playlist(&["a.ts"]))
        .start();
    let app = TestApp::spawn(&fill(
        r#"
[[services]]
name = "Pages"
kind = "scrape"
base_url = "@WEB@"
[services.channels]
path = "channels.html"
pattern = '<a class="ch" href="/watch/(?P<id>[a-z0-9-]+)"><img src="(?P<logo>[^"]*)"/>(?P<name>[^<]+)</a>'
[services.stream]
page = "watch/{channel_id}"
patterns = ['src="(http://[^"]+\.m3u8)"']
referer = "http://override.example/"
"#,
        &[("@WEB@", &w)],
    ))
    .await;

    assert_eq!(app.channel_names().await, ["Alpha & Co", "Beta TV"]);
    let alpha = app.channel_named("Alpha & Co").await;
    assert_eq!(alpha["logo"], format!("{w}/logos/alpha.png"));
    assert_eq!(alpha["sources"][0]["channel_id"], "alpha");
    open_stream(&app, &id_of(&alpha), "").await;
    let hls = &web.requests_to("/cdn/alpha/index.m3u8")[0];
    assert_eq!(hls.header("referer"), Some("http://override.example/"));
}

/// A scraped channel whose markup has no logo must not get one: SPEC's `logo` is the
/// channel's logo, not the URL of the page the list was scraped from.
#[tokio::test]
async fn scrape_pattern_without_a_logo_gives_no_logo() {
    let web = FakeUpstream::bind()
        .await
        .text(
            "/channels.html",
            "text/html",
            r#"<a href="/watch/gamma">Gamma</a> <a href="/watch/delta"><img src=""/>Delta</a>"#,
        )
        .start();
    let app = TestApp::spawn(&fill(
        r#"
[[services]]
name = "NoLogos"
kind = "scrape"
base_url = "@WEB@"
[services.channels]
path = "channels.html"
pattern = '<a href="/watch/(?P<id>[a-z]+)">(?:<img src="(?P<logo>[^"]*)"/>)?(?P<name>[^<]+)</a>'
[services.stream]
page = "watch/{channel_id}"
"#,
        &[("@WEB@", &web.base())],
    ))
    .await;
    assert_eq!(app.channel_names().await, ["Delta", "Gamma"]);
    for name in ["Gamma", "Delta"] {
        let ch = app.channel_named(name).await;
        assert_eq!(
            ch["logo"], "",
            "{name} has no logo in the page, yet got one: {}",
            ch["logo"]
        );
    }
}

// ---------------------------------------------------------------------------------------
// lineup

#[tokio::test]
async fn channels_merge_across_services_by_tvg_id_and_normalised_name() {
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let a = format!(
        "#EXTM3U\n\
#EXTINF:-1 tvg-id=\"Shared.fr\" tvg-logo=\"http://logo.example/shared.png\" group-title=\"General\",Shared From A\n{o}/a/shared.m3u8\n\
#EXTINF:-1 group-title=\"Sport\",Télé-Sport HD\n{o}/a/sport.m3u8\n\
#EXTINF:-1,Only A\n{o}/a/only.m3u8\n"
    );
    let b = format!(
        "#EXTM3U\n\
#EXTINF:-1 tvg-id=\"Shared.fr\",Shared Channel B\n{o}/b/shared.m3u8\n\
#EXTINF:-1,tele sport\n{o}/b/sport.m3u8\n\
#EXTINF:-1,Only B\n{o}/b/only.m3u8\n"
    );
    let _up = up
        .text("/a.m3u", M3U_TYPE, a)
        .text("/b.m3u", M3U_TYPE, b)
        .start();
    // A comes first in the file but B has the lower priority number, so B is tried first.
    let app = TestApp::spawn(&fill(
        r#"
[[services]]
name = "A"
kind = "m3u"
priority = 20
url = "@UP@/a.m3u"

[[services]]
name = "B"
kind = "m3u"
priority = 10
url = "@UP@/b.m3u"
"#,
        &[("@UP@", &o)],
    ))
    .await;

    let all = app.channels().await;
    assert_eq!(all.len(), 4, "{all:#?}");
    let shared: Vec<_> = all
        .iter()
        .filter(|c| c["guide_id"] == "Shared.fr")
        .collect();
    assert_eq!(shared.len(), 1, "{all:#?}");
    let shared = shared[0];
    assert_eq!(source_services(shared), ["B", "A"], "{shared}");
    let prios: Vec<_> = shared["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["priority"].as_i64().unwrap())
        .collect();
    assert_eq!(prios, [10, 20]);
    // B has no logo: the merged channel takes A's.
    assert_eq!(shared["logo"], "http://logo.example/shared.png");

    let sport: Vec<_> = all
        .iter()
        .filter(|c| c["name"].as_str().unwrap().to_lowercase().contains("sport"))
        .collect();
    assert_eq!(
        sport.len(),
        1,
        "accents and the HD suffix must not split it: {all:#?}"
    );
    assert_eq!(source_services(sport[0]), ["B", "A"]);
    assert_eq!(sport[0]["group"], "Sport");

    for (name, service) in [("Only A", "A"), ("Only B", "B")] {
        assert_eq!(source_services(&app.channel_named(name).await), [service]);
    }
}

#[tokio::test]
async fn search_ignores_case_and_accents_and_looks_at_group_and_tags() {
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let list = format!(
        "#EXTM3U\n\
#EXTINF:-1 group-title=\"Matin\",Télé Matin\n{o}/1.m3u8\n\
#EXTINF:-1 group-title=\"Télévision Sport\",Sport Direct\n{o}/2.m3u8\n\
#EXTINF:-1 group-title=\"Radio\",Radio Clásica\n{o}/3.m3u8\n"
    );
    let _up = up.text("/list.m3u", M3U_TYPE, list).start();
    let app = TestApp::spawn(&fill(
        r#"
[[services]]
name = "List"
kind = "m3u"
url = "@UP@/list.m3u"

[[services]]
name = "Inline"
kind = "scrape"
base_url = "http://127.0.0.1:9/"
[services.channels]
list = [
  { id = "cine", name = "Ciné Club", tags = ["TÉLÉfilms", "cinema"] },
  { id = "kids", name = "Kids", group = "Jeunesse", tags = ["cartoons"] },
]
[services.stream]
page = "watch/{channel_id}"
"#,
        &[("@UP@", &o)],
    ))
    .await;
    assert_eq!(app.channels().await.len(), 5);

    async fn names(app: &TestApp, query: &str) -> Vec<String> {
        let (status, body) = app.get_json(&format!("/api/channels/search?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        let mut names: Vec<String> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }
    // Name, group and tag matches; case and accents ignored on both sides.
    assert_eq!(
        names(&app, "query=TELE").await,
        ["Ciné Club", "Sport Direct", "Télé Matin"]
    );
    assert_eq!(names(&app, "query=clasica").await, ["Radio Clásica"]);
    assert_eq!(names(&app, "query=CIN%C3%89").await, ["Ciné Club"]);
    assert_eq!(names(&app, "query=jeunesse").await, ["Kids"]);
    assert_eq!(names(&app, "query=cartoon").await, ["Kids"]);
    assert!(names(&app, "query=nothing-like-this").await.is_empty());

    let body = assert_api_error(app.get("/api/channels/search").await, 400).await;
    assert!(body["error"].as_str().unwrap().contains("query"), "{body}");
}

#[tokio::test]
async fn channel_numbers_and_ids_survive_a_restart_and_a_reordered_upstream() {
    let list = Arc::new(Mutex::new(String::new()));
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let entry = |name: &str| format!("#EXTINF:-1,{name}\n{o}/{}.m3u8\n", name.to_lowercase());
    *list.lock().unwrap() = format!(
        "#EXTM3U\n{}{}{}",
        entry("Alpha"),
        entry("Bravo"),
        entry("Charlie")
    );
    let _up = up.shared_text("/list.m3u", &list).start();
    let mut app = TestApp::spawn(&fill(
        r#"
[[services]]
name = "List"
kind = "m3u"
url = "@UP@/list.m3u"
"#,
        &[("@UP@", &o)],
    ))
    .await;
    let numbers = |chs: &[Value]| -> Vec<(String, String, u64)> {
        let mut v: Vec<_> = chs
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    id_of(c),
                    c["number"].as_u64().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = numbers(&app.channels().await);
    assert_eq!(before.len(), 3);
    let mut nums: Vec<u64> = before.iter().map(|x| x.2).collect();
    nums.sort();
    nums.dedup();
    assert_eq!(nums.len(), 3, "numbers must be unique: {before:?}");

    // Upstream reorders and gains a channel at the top; freesky restarts.
    *list.lock().unwrap() = format!(
        "#EXTM3U\n{}{}{}{}",
        entry("Delta"),
        entry("Charlie"),
        entry("Alpha"),
        entry("Bravo")
    );
    app.restart().await;
    let after = numbers(&app.channels().await);
    assert_eq!(after.len(), 4, "{after:?}");
    for old in &before {
        assert!(after.contains(old), "{old:?} changed: {after:?}");
    }
    let delta = after.iter().find(|x| x.0 == "Delta").unwrap();
    assert!(
        before.iter().all(|b| b.2 != delta.2 && b.1 != delta.1),
        "the new channel took an existing id or number: {after:?}"
    );
}

// ---------------------------------------------------------------------------------------
// switches and admin

const DEMO_AND_INLINE: &str = r#"
[[services]]
name = "Demo"
kind = "demo"

[[services]]
name = "Inline"
kind = "scrape"
base_url = "http://127.0.0.1:9/"
[services.channels]
list = [{ id = "x1", name = "Inline One" }, { id = "x2", name = "Inline Two" }]
[services.stream]
page = "watch/{channel_id}"
"#;

#[tokio::test]
async fn disabling_a_service_hides_its_channels_and_persists_across_restart() {
    let mut app = TestApp::spawn(DEMO_AND_INLINE).await;
    assert_eq!(
        app.channel_names().await,
        ["Demo", "Inline One", "Inline Two"]
    );

    // Names are matched as written; one in another case is a 404 naming the service.
    let body = assert_api_error(app.post("/api/services/inline/disable").await, 404).await;
    assert_eq!(
        body["error"],
        "unknown service `inline`: service names are matched as written; did you mean \
         `Inline`?"
    );
    let body = assert_api_error(app.post("/api/services/Other/disable").await, 404).await;
    assert_eq!(body["error"], "unknown service `Other`");
    assert_eq!(app.service_status("Inline").await["enabled"], true);

    let (status, body) = json_of(app.post("/api/services/Inline/disable").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "Inline");
    assert_eq!(body["enabled"], false, "{body}");
    assert_eq!(app.service_status("Inline").await["enabled"], false);
    assert_eq!(app.service_status("Demo").await["enabled"], true);
    assert_eq!(app.channel_names().await, ["Demo"]);
    // Its channels cannot be streamed by `SERVICE:ID` either.
    assert_api_error(app.get("/api/stream/Inline:x1.m3u8").await, 404).await;

    app.restart().await;
    assert_eq!(app.service_status("Inline").await["enabled"], false);
    assert_eq!(app.channel_names().await, ["Demo"]);

    let (status, body) = json_of(app.post("/api/services/Inline/enable").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enabled"], true, "{body}");
    assert_eq!(app.service_status("Inline").await["enabled"], true);
    assert_eq!(
        app.channel_names().await,
        ["Demo", "Inline One", "Inline Two"]
    );

    app.restart().await;
    assert_eq!(app.service_status("Inline").await["enabled"], true);

    for action in ["enable", "disable"] {
        let body =
            assert_api_error(app.post(&format!("/api/services/Nope/{action}")).await, 404).await;
        assert!(body["error"].as_str().unwrap().contains("Nope"), "{body}");
    }
}

#[tokio::test]
async fn admin_token_guards_the_switches() {
    let config = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\nadmin_token = \"s3cret-admin\"\n{DEMO_AND_INLINE}"
    );
    let app = TestApp::spawn(&config).await;

    assert_api_error(app.post("/api/services/Inline/disable").await, 401).await;
    assert_api_error(
        app.post_auth("/api/services/Inline/disable", Some("Bearer wrong-token"))
            .await,
        403,
    )
    .await;
    assert_api_error(
        app.post_auth("/api/services/Inline/disable", Some("s3cret-admin"))
            .await,
        401,
    )
    .await;
    assert_eq!(app.service_status("Inline").await["enabled"], true);

    let (status, body) = json_of(
        app.post_auth("/api/services/Inline/disable", Some("Bearer s3cret-admin"))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enabled"], false);
    assert_eq!(app.channel_names().await, ["Demo"]);
    // The token is not shown anywhere.
    assert!(!app
        .get_text_ok("/api/services/status")
        .await
        .contains("s3cret-admin"));
}

// ---------------------------------------------------------------------------------------
// streams: fallback and errors

/// A channel (tvg-id `Fall.fr`) offered by the service in `bad_service` (priority 1)
/// and by a working m3u service "Good" (priority 2): the stream must come from Good.
/// Returns the bad upstream's request paths for further checks.
async fn assert_falls_back(bad_service: &str, bad: FakeUpstream) -> (TestApp, FakeUpstream) {
    let good = FakeUpstream::bind().await;
    let g = good.base();
    let good = good
        .text(
            "/good.m3u",
            M3U_TYPE,
            format!("#EXTM3U\n#EXTINF:-1 tvg-id=\"Fall.fr\",Fallback Good\n{g}/good/index.m3u8\n"),
        )
        .text("/good/index.m3u8", HLS_TYPE, media_playlist(&["seg0.ts"]))
        .bytes("/good/seg0.ts", "video/mp2t", b"GOOD SEGMENT".to_vec())
        .start();
    let config = format!(
        "{}\n[[services]]\nname = \"Good\"\nkind = \"m3u\"\npriority = 2\nurl = \"{g}/good.m3u\"\n",
        fill(bad_service, &[("@BAD@", &bad.base())])
    );
    let app = TestApp::spawn(&config).await;
    let all = app.channels().await;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(source_services(&all[0]), ["Bad", "Good"]);

    let playlist = open_stream(&app, &id_of(&all[0]), "").await;
    let uris = playlist_uris(&playlist);
    assert_eq!(uris.len(), 1, "{playlist}");
    assert_eq!(fetch_bytes(&app, &uris[0]).await, b"GOOD SEGMENT");
    assert_eq!(good.hits("/good/index.m3u8"), 1);
    let status = app.service_status("Bad").await;
    assert!(status["failures"].as_u64().unwrap() >= 1, "{status}");
    assert!(status["last_error"].is_string(), "{status}");
    (app, bad)
}

/// One way for the first source of a channel to fail: the failing upstream's routes,
/// its service's config, and what its status and requests show afterwards.
struct FailingSource {
    case: &'static str,
    /// Routes of the failing upstream, given its base URL (for the lists naming it).
    routes: fn(FakeBuilder, &str) -> FakeBuilder,
    /// The failing service's config (`@BAD@`: the failing upstream's base URL).
    service: &'static str,
    /// What its `last_error` must say.
    error: &'static str,
    /// Requests the failing upstream must have received: paths starting with this,
    /// counted within the range.
    requests: Option<(&'static str, std::ops::RangeInclusive<usize>)>,
    /// With only the failing source allowed (`?service=Bad`): the status answered.
    alone: Option<u16>,
}

/// An m3u list of channel `Fall.fr` at `{base}{path}`.
fn bad_list(b: FakeBuilder, base: &str, path: &str) -> FakeBuilder {
    b.text(
        "/bad.m3u",
        M3U_TYPE,
        format!("#EXTM3U\n#EXTINF:-1 tvg-id=\"Fall.fr\",Fallback Bad\n{base}{path}\n"),
    )
}

const BAD_M3U: &str =
    "[[services]]\nname = \"Bad\"\nkind = \"m3u\"\npriority = 1\nurl = \"@BAD@/bad.m3u\"\n";
const BAD_M3U_500MS: &str = "[[services]]\nname = \"Bad\"\nkind = \"m3u\"\npriority = 1\ntimeout = \"500ms\"\nurl = \"@BAD@/bad.m3u\"\n";

/// A scrape service `Bad` whose channel `fall` plays the page `@BAD@/page/fall`; the
/// literal given adds keys of its own.
macro_rules! bad_scrape {
    ($keys:literal) => {
        concat!(
            "[[services]]\nname = \"Bad\"\nkind = \"scrape\"\npriority = 1\n",
            $keys,
            "base_url = \"@BAD@\"\n[services.channels]\n",
            "list = [{ id = \"fall\", name = \"Fallback Bad\", tvg_id = \"Fall.fr\" }]\n",
            "[services.stream]\npage = \"page/{channel_id}\"\n"
        )
    };
}

fn failing_sources() -> Vec<FailingSource> {
    vec![
        FailingSource {
            case: "answers 500",
            routes: |b, base| bad_list(b, base, "/bad/index.m3u8").status("/bad/index.m3u8", 500),
            service: BAD_M3U,
            error: "500",
            requests: Some(("/bad/index.m3u8", 1..=1)),
            alone: None,
        },
        FailingSource {
            case: "hangs past its timeout",
            routes: |b, base| bad_list(b, base, "/bad/index.m3u8").hang("/bad/index.m3u8"),
            service: BAD_M3U_500MS,
            // Naming what did not answer.
            error: "/…/index.m3u8 timed out after 500ms",
            requests: Some(("/bad/index.m3u8", 1..=1)),
            // Every try timed out: 504, not 502.
            alone: Some(504),
        },
        FailingSource {
            case: "redirects forever",
            routes: |b, base| {
                bad_list(b, base, "/loop/0").route(
                    "/loop/{n}",
                    get(|Path(n): Path<u32>| async move {
                        (
                            StatusCode::FOUND,
                            [(header::LOCATION, format!("/loop/{}", n + 1))],
                        )
                    }),
                )
            },
            service: BAD_M3U,
            error: "redirects",
            // The chain is cut after a bounded number of hops.
            requests: Some(("/loop/", 2..=10)),
            alone: None,
        },
        FailingSource {
            case: "trickles its playlist",
            routes: |b, base| {
                bad_list(b, base, "/bad/index.m3u8").route(
                    "/bad/index.m3u8",
                    get(|| async {
                        // One byte every 100 ms, forever: never idle long, never finished.
                        let body = futures::stream::unfold(0u64, |n| async move {
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            Some((
                                Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"#")),
                                n + 1,
                            ))
                        });
                        respond(200, HLS_TYPE, Body::from_stream(body))
                    }),
                )
            },
            service: BAD_M3U_500MS,
            error: "/…/index.m3u8 timed out after 500ms",
            requests: None,
            alone: None,
        },
        FailingSource {
            case: "is a scraped page with no stream URL",
            routes: |b, _| {
                b.text(
                    "/page/fall",
                    "text/html",
                    "<html><body>Stream offline, come back later</body></html>",
                )
            },
            service: bad_scrape!(""),
            error: "pattern",
            requests: Some(("/page/fall", 1..=1)),
            alone: None,
        },
        FailingSource {
            case: "is a scraped page that hangs",
            routes: |b, _| b.hang("/page/fall"),
            service: bad_scrape!("timeout = \"500ms\"\n"),
            error: "timed out after 500ms",
            requests: Some(("/page/fall", 1..=1)),
            // A timeout, as any other kind's: 504, not 502.
            alone: Some(504),
        },
    ]
}

/// Each way a first source fails, all at once (each with its own upstreams and
/// freesky): the stream comes from the second source, and the failing service's status
/// says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_when_the_first_source_fails() {
    futures::future::join_all(failing_sources().into_iter().map(|c| async move {
        let bad = FakeUpstream::bind().await;
        let base = bad.base();
        let bad = (c.routes)(bad, &base).start();
        let (app, bad) = assert_falls_back(c.service, bad).await;
        let case = c.case;
        let status = app.service_status("Bad").await;
        assert!(
            status["last_error"].as_str().unwrap().contains(c.error),
            "first source {case}: {status}"
        );
        if let Some((prefix, range)) = c.requests {
            let n = bad
                .requests()
                .iter()
                .filter(|r| r.path.starts_with(prefix))
                .count();
            assert!(range.contains(&n), "first source {case}: {:?}", bad.paths());
        }
        if let Some(want) = c.alone {
            let id = id_of(&app.channels().await[0]);
            let body = assert_api_error(
                app.get(&format!("/api/stream/{id}.m3u8?service=Bad")).await,
                want,
            )
            .await;
            let tried = body["detail"].as_array().expect("detail lists the tries");
            assert_eq!(tried.len(), 1, "first source {case}: {body:#}");
            assert_eq!(tried[0]["service"], "Bad", "first source {case}: {body:#}");
            assert!(
                tried[0]["error"].as_str().unwrap().contains(c.error),
                "first source {case}: {body:#}"
            );
        }
    }))
    .await;
}

#[tokio::test]
async fn all_sources_failing_is_a_502_naming_every_try_and_service_restricts() {
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let list = |svc: &str, chans: &[(&str, &str)]| {
        let mut s = String::from("#EXTM3U\n");
        for (tvg, name) in chans {
            s.push_str(&format!(
                "#EXTINF:-1 tvg-id=\"{tvg}\",{name}\n{o}/{svc}/{tvg}.m3u8\n"
            ));
        }
        s
    };
    let up = up
        .text(
            "/a.m3u",
            M3U_TYPE,
            list("a", &[("All.fr", "Everything"), ("Mixed.fr", "Mixed")]),
        )
        .text("/b.m3u", M3U_TYPE, list("b", &[("All.fr", "Everything")]))
        .text("/c.m3u", M3U_TYPE, list("c", &[("Mixed.fr", "Mixed")]))
        .status("/a/All.fr.m3u8", 500)
        .status("/a/Mixed.fr.m3u8", 500)
        .status("/b/All.fr.m3u8", 403)
        .text("/c/Mixed.fr.m3u8", HLS_TYPE, media_playlist(&["c.ts"]))
        .start();
    let app = TestApp::spawn(&fill(
        r#"
[[services]]
name = "A"
kind = "m3u"
priority = 1
url = "@UP@/a.m3u"

[[services]]
name = "B"
kind = "m3u"
priority = 2
url = "@UP@/b.m3u"

[[services]]
name = "C"
kind = "m3u"
priority = 3
url = "@UP@/c.m3u"
"#,
        &[("@UP@", &o)],
    ))
    .await;
    let everything = id_of(&app.channel_named("Everything").await);
    let mixed = id_of(&app.channel_named("Mixed").await);

    // Every source fails: 502, and the detail says who was tried and why.
    let body = assert_api_error(
        app.get(&format!("/api/stream/{everything}.m3u8")).await,
        502,
    )
    .await;
    let tried = body["detail"].as_array().expect("detail lists the tries");
    let services: Vec<_> = tried
        .iter()
        .map(|t| t["service"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["A", "B"], "{body:#}");
    assert!(
        tried[0]["error"].as_str().unwrap().contains("500"),
        "{body:#}"
    );
    assert!(
        tried[1]["error"].as_str().unwrap().contains("403"),
        "{body:#}"
    );

    // `?service=` restricts to one service: no fallback to the working C.
    let c_hits = up.hits("/c/Mixed.fr.m3u8");
    let body = assert_api_error(
        app.get(&format!("/api/stream/{mixed}.m3u8?service=A"))
            .await,
        502,
    )
    .await;
    let services: Vec<_> = body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["service"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["A"], "{body:#}");
    assert_eq!(
        up.hits("/c/Mixed.fr.m3u8"),
        c_hits,
        "C was tried despite ?service=A"
    );
    // ... and to C it works without trying A.
    let a_hits = up.hits("/a/Mixed.fr.m3u8");
    open_stream(&app, &mixed, "?service=C").await;
    assert_eq!(
        up.hits("/a/Mixed.fr.m3u8"),
        a_hits,
        "A was tried despite ?service=C"
    );
    // Without a restriction it falls back from A to C.
    open_stream(&app, &mixed, "").await;
    assert_eq!(up.hits("/a/Mixed.fr.m3u8"), a_hits + 1);

    // Unknown channel, unknown service, a service that does not offer the channel.
    let body = assert_api_error(app.get("/api/stream/no-such-channel.m3u8").await, 404).await;
    assert!(
        body["error"].as_str().unwrap().contains("no-such-channel"),
        "{body}"
    );
    let body = assert_api_error(
        app.get(&format!("/api/stream/{mixed}.m3u8?service=Nope"))
            .await,
        404,
    )
    .await;
    assert!(body["error"].as_str().unwrap().contains("Nope"), "{body}");
    assert_api_error(
        app.get(&format!("/api/stream/{mixed}.m3u8?service=B"))
            .await,
        404,
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// HLS proxying

#[tokio::test]
async fn hls_is_proxied_with_the_channel_headers_and_links_are_signed() {
    const REFERER: &str = "http://portal.example/player";
    let seg0: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let seg1: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    let key: Vec<u8> = (100..116u8).collect();
    let origin = FakeUpstream::bind()
        .await
        .require_header("referer", REFERER)
        .text(
            "/live/master.m3u8",
            HLS_TYPE,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\nlow/index.m3u8\n",
        )
        .text(
            "/live/low/index.m3u8",
            HLS_TYPE,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n\
#EXT-X-KEY:METHOD=AES-128,URI=\"../keys/k1.bin\",IV=0x00000000000000000000000000000007\n\
#EXTINF:2.000,\nseg0.ts\n#EXTINF:2.000,\nseg1.ts\n#EXT-X-ENDLIST\n",
        )
        .bytes("/live/low/seg0.ts", "video/mp2t", seg0.clone())
        .bytes("/live/low/seg1.ts", "video/mp2t", seg1.clone())
        .bytes("/live/keys/k1.bin", "application/octet-stream", key.clone())
        .start();
    let portal = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n#EXTINF:-1 tvg-id=\"Proxied.example\",Proxied\n#EXTVLCOPT:http-referrer={REFERER}\n{}\n",
                origin.url("/live/master.m3u8")
            ),
        )
        .start();
    let app = TestApp::spawn(&fill(
        r#"
[[services]]
name = "Portal"
kind = "m3u"
url = "@PORTAL@/list.m3u"
"#,
        &[("@PORTAL@", &portal.base())],
    ))
    .await;
    let id = id_of(&app.channel_named("Proxied").await);
    let origin_host = origin.addr.to_string();

    let master = open_stream(&app, &id, "").await;
    assert!(
        master.contains("#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360"),
        "{master}"
    );
    assert!(
        !master.contains(&origin_host),
        "upstream URL leaked: {master}"
    );
    let variants = playlist_uris(&master);
    assert_eq!(variants.len(), 1, "{master}");

    let media = String::from_utf8(fetch_bytes(&app, &variants[0]).await).unwrap();
    assert!(media.contains("#EXT-X-MEDIA-SEQUENCE:7"), "{media}");
    assert!(
        media.contains("IV=0x00000000000000000000000000000007"),
        "{media}"
    );
    assert!(
        !media.contains(&origin_host),
        "upstream URL leaked: {media}"
    );
    let uris = playlist_uris(&media);
    assert_eq!(uris.len(), 3, "key and two segments: {media}");
    assert!(
        media
            .lines()
            .any(|l| l.starts_with("#EXT-X-KEY:METHOD=AES-128,URI=\"")),
        "{media}"
    );
    assert_eq!(fetch_bytes(&app, &uris[0]).await, key);
    assert_eq!(fetch_bytes(&app, &uris[1]).await, seg0);
    assert_eq!(fetch_bytes(&app, &uris[2]).await, seg1);

    // The origin saw every resource, each with the configured Referer.
    let requests = origin.requests();
    for path in [
        "/live/master.m3u8",
        "/live/low/index.m3u8",
        "/live/keys/k1.bin",
        "/live/low/seg0.ts",
        "/live/low/seg1.ts",
    ] {
        assert!(
            origin.hits(path) >= 1,
            "{path} never requested: {:?}",
            origin.paths()
        );
    }
    for r in &requests {
        assert_eq!(
            r.header("referer"),
            Some(REFERER),
            "{} without Referer",
            r.path
        );
    }

    // One changed character in a token: refused.
    let seg_url = &uris[1];
    let start = seg_url.find("/proxy/").unwrap() + "/proxy/".len();
    let end = start + seg_url[start..].find('/').unwrap();
    let mid = (start + end) / 2;
    let mut tampered = seg_url.clone().into_bytes();
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_ne!(&tampered, seg_url);
    let before = origin.requests().len();
    assert_api_error(app.get(&tampered).await, 403).await;
    // An unsigned link: refused.
    assert_api_error(app.get("/proxy/abc/seg.ts").await, 403).await;
    assert_eq!(
        origin.requests().len(),
        before,
        "a refused link reached the origin"
    );
}

/// Upstreams often redirect a stream to an edge server that checks the Referer too. The
/// channel's configured Referer must reach the redirect target, not be replaced by the
/// URL that redirected (and relative URIs resolve against the final URL).
#[tokio::test]
async fn a_redirected_stream_keeps_the_channel_referer() {
    const REFERER: &str = "http://portal.example/watch";
    let edge = FakeUpstream::bind()
        .await
        .require_header("referer", REFERER)
        .text(
            "/edge/ch/index.m3u8",
            HLS_TYPE,
            media_playlist(&["seg0.ts"]),
        )
        .bytes("/edge/ch/seg0.ts", "video/mp2t", b"EDGE SEGMENT".to_vec())
        .start();
    let target = edge.url("/edge/ch/index.m3u8");
    let balancer = FakeUpstream::bind()
        .await
        .route(
            "/go/ch.m3u8",
            get(move || {
                let target = target.clone();
                async move { axum::response::Redirect::temporary(&target) }
            }),
        )
        .start();
    let portal = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n#EXTVLCOPT:http-referrer={REFERER}\n#EXTINF:-1,Redirected\n{}\n",
                balancer.url("/go/ch.m3u8")
            ),
        )
        .start();
    let app = TestApp::spawn(&fill(
        "[[services]]\nname = \"Portal\"\nkind = \"m3u\"\nurl = \"@P@/list.m3u\"\n",
        &[("@P@", &portal.base())],
    ))
    .await;
    let id = id_of(&app.channel_named("Redirected").await);

    let resp = app.get(&format!("/api/stream/{id}.m3u8")).await;
    let status = resp.status();
    let body = resp.text().await.unwrap();
    let seen: Vec<_> = edge
        .requests()
        .iter()
        .map(|r| (r.path.clone(), r.header("referer").map(str::to_string)))
        .collect();
    assert_eq!(
        balancer.requests_to("/go/ch.m3u8")[0].header("referer"),
        Some(REFERER)
    );
    assert_eq!(
        status, 200,
        "the edge saw {seen:?}; freesky answered {body}"
    );
    let uris = playlist_uris(&body);
    assert_eq!(fetch_bytes(&app, &uris[0]).await, b"EDGE SEGMENT");
    for r in edge.requests() {
        assert_eq!(r.header("referer"), Some(REFERER), "{}", r.path);
    }
}

// ---------------------------------------------------------------------------------------
// playlist

#[tokio::test]
async fn playlist_m3u_lists_every_channel_with_freesky_stream_urls() {
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let list = format!(
        "#EXTM3U\n\
#EXTINF:-1 tvg-id=\"NewsOne.fr\" tvg-logo=\"http://logo.example/n1.png\" group-title=\"News\",News One\n{o}/n1.m3u8\n\
#EXTINF:-1 group-title=\"News\",News Two\n{o}/n2.m3u8\n\
#EXTINF:-1 group-title=\"Sport\",Sport One\n{o}/s1.m3u8\n"
    );
    let _up = up.text("/list.m3u", M3U_TYPE, list).start();
    let app = TestApp::spawn(&fill(
        r#"
[[services]]
name = "Demo"
kind = "demo"

[[services]]
name = "List"
kind = "m3u"
url = "@UP@/list.m3u"
"#,
        &[("@UP@", &o)],
    ))
    .await;
    let lineup = app.channels().await;
    assert_eq!(lineup.len(), 4);
    let base = app.base.clone();

    /// (attributes, name, url) of each entry.
    fn entries(text: &str) -> Vec<(String, String, String)> {
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if let Some(rest) = line.strip_prefix("#EXTINF:-1 ") {
                let (attrs, name) = rest.rsplit_once("\",").expect("attributes then name");
                out.push((
                    format!("{attrs}\""),
                    name.to_string(),
                    lines.get(i + 1).expect("url line").to_string(),
                ));
            }
        }
        out
    }
    fn attr(attrs: &str, key: &str) -> String {
        let start = attrs
            .find(&format!(" {key}=\""))
            .map(|i| i + key.len() + 3)
            .or_else(|| {
                attrs
                    .starts_with(&format!("{key}=\""))
                    .then_some(key.len() + 2)
            })
            .unwrap_or_else(|| panic!("no {key} in {attrs}"));
        let end = start + attrs[start..].find('"').unwrap();
        attrs[start..end].to_string()
    }

    let resp = app.get("/playlist.m3u").await;
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.contains("mpegurl"), "{ctype}");
    let text = resp.text().await.unwrap();
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("#EXTM3U url-tvg=\"{base}/epg.xml\"")),
        "{first}"
    );
    let got = entries(&text);
    assert_eq!(got.len(), lineup.len(), "{text}");
    for c in &lineup {
        let (attrs, _, url) = got
            .iter()
            .find(|(_, name, _)| name == c["name"].as_str().unwrap())
            .unwrap_or_else(|| panic!("{} missing: {text}", c["name"]));
        assert_eq!(
            attr(attrs, "tvg-id"),
            c["guide_id"].as_str().unwrap(),
            "{attrs}"
        );
        assert_eq!(
            attr(attrs, "tvg-name"),
            c["name"].as_str().unwrap(),
            "{attrs}"
        );
        // A channel without a logo has no `tvg-logo` at all, not an empty one.
        match c["logo"].as_str().unwrap() {
            "" => assert!(!attrs.contains("tvg-logo"), "{attrs}"),
            logo => assert_eq!(attr(attrs, "tvg-logo"), logo, "{attrs}"),
        }
        assert_eq!(attr(attrs, "tvg-chno"), c["number"].to_string(), "{attrs}");
        assert_eq!(
            attr(attrs, "group-title"),
            c["group"].as_str().unwrap(),
            "{attrs}"
        );
        assert_eq!(url, &format!("{base}/api/stream/{}.m3u8", id_of(c)));
    }
    let news_one = got.iter().find(|e| e.1 == "News One").unwrap();
    assert_eq!(attr(&news_one.0, "tvg-id"), "NewsOne.fr");
    assert_eq!(attr(&news_one.0, "tvg-logo"), "http://logo.example/n1.png");
    let news_two = got.iter().find(|e| e.1 == "News Two").unwrap();
    assert!(!news_two.0.contains("tvg-logo"), "{text}");

    // The URLs in it really play.
    let demo_url = &got.iter().find(|e| e.1 == "Demo").unwrap().2;
    assert!(app.get_text_ok(demo_url).await.starts_with("#EXTM3U"));

    let news = app.get_text_ok("/playlist.m3u?group=news").await;
    let mut names: Vec<_> = entries(&news).into_iter().map(|e| e.1).collect();
    names.sort();
    assert_eq!(names, ["News One", "News Two"], "{news}");
    assert!(news.starts_with("#EXTM3U url-tvg=\""));

    let demo_only = app.get_text_ok("/playlist.m3u?service=Demo").await;
    let e = entries(&demo_only);
    assert_eq!(e.len(), 1, "{demo_only}");
    assert_eq!(e[0].1, "Demo");
    assert!(e[0].2.ends_with("?service=Demo"), "{demo_only}");
    assert_api_error(app.get("/playlist.m3u?service=Nope").await, 404).await;

    // `output=ts`: the channels' continuous MPEG-TS, what Jellyfin's M3U tuner shares.
    let ts = app
        .get_text_ok("/playlist.m3u?output=ts&service=Demo")
        .await;
    let e = entries(&ts);
    assert_eq!(
        e[0].2,
        format!("{base}/api/stream/demo.ts?service=Demo"),
        "{ts}"
    );
    let mut demo_ts = app.get(&e[0].2).await;
    assert_eq!(demo_ts.status(), 200);
    assert_eq!(demo_ts.headers()["content-type"], "video/MP2T");
    let first = demo_ts.chunk().await.unwrap().unwrap();
    assert_eq!(first[0], 0x47, "MPEG-TS");
    drop(demo_ts);
    for output in ["m3u8", "", "HLS"] {
        let m3u8 = app
            .get_text_ok(&format!("/playlist.m3u?output={output}"))
            .await;
        assert_eq!(m3u8, text, "output={output}");
    }
    let upper = app
        .get_text_ok("/playlist.m3u?output=TS&service=Demo")
        .await;
    assert_eq!(upper, ts);
    let body = assert_api_error(app.get("/playlist.m3u?output=mp4").await, 400).await;
    assert!(body["error"].as_str().unwrap().contains("`ts`"), "{body}");
}

// ---------------------------------------------------------------------------------------
// health

#[tokio::test]
async fn garbage_upstreams_are_reported_while_others_keep_serving() {
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let _up = up
        .text(
            "/html-instead.m3u",
            "text/html",
            "<!doctype html><html><body><h1>Welcome!</h1><p>Please log in.</p></body></html>",
        )
        .text(
            "/api/channels",
            "application/json",
            "{\"channels\": [1, 2, 3",
        )
        .text(
            "/good.m3u",
            M3U_TYPE,
            format!("#EXTM3U\n#EXTINF:-1,Still Here\n{o}/good.m3u8\n"),
        )
        .start();
    // A short channels_ttl so every lineup request asks the upstreams again.
    let app = TestApp::spawn(&fill(
        r#"
[cache]
channels_ttl = "1ms"

[[services]]
name = "HtmlList"
kind = "m3u"
url = "@UP@/html-instead.m3u"

[[services]]
name = "BrokenJson"
kind = "json_api"
base_url = "@UP@/api"
[services.channels]
path = "channels"
list = "/channels"
[services.stream]
path = "stream/{channel_id}"
url = "/url"

[[services]]
name = "Good"
kind = "m3u"
url = "@UP@/good.m3u"
"#,
        &[("@UP@", &o)],
    ))
    .await;

    // Three lineups in a row, each asking every upstream again (the ttl is 1 ms).
    for _ in 0..3 {
        assert_eq!(app.channel_names().await, ["Still Here"]);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    let html = app.service_status("HtmlList").await;
    assert!(
        html["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("not an M3U playlist"),
        "{html:#}"
    );
    let json = app.service_status("BrokenJson").await;
    // Where from (no query) and how it starts, so a cut or foreign answer is plain.
    let why = json["last_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("not valid JSON (from http://127.0.0.1:")
            && why.contains("): it starts with `{\"channels\": [1, 2, 3`")
            && !why.contains("/api/channels"),
        "{json:#}"
    );
    for s in [&html, &json] {
        assert!(s["failures"].as_u64().unwrap() >= 3, "{s:#}");
        assert_eq!(s["successes"], 0, "{s:#}");
        assert_eq!(s["channel_count"], 0, "{s:#}");
        assert_eq!(s["healthy"], false, "three failures in a row: {s:#}");
        assert!(s["last_checked"].is_string(), "{s:#}");
    }
    let good = app.service_status("Good").await;
    assert_eq!(good["healthy"], true, "{good:#}");
    assert_eq!(good["last_error"], Value::Null, "{good:#}");
    assert_eq!(good["failures"], 0, "{good:#}");
    assert!(good["successes"].as_u64().unwrap() >= 1, "{good:#}");
    assert_eq!(good["channel_count"], 1, "{good:#}");
    let (status, health) = app.get_json("/health").await;
    assert_eq!(status, 200, "{health}");
}

/// The errors axum would answer by itself are JSON like every other: a query string
/// that does not parse, a method a path does not take.
#[tokio::test]
async fn a_bad_query_and_a_wrong_method_get_the_json_error_body() {
    let app = TestApp::spawn("[[services]]\nname = \"Demo\"\nkind = \"demo\"\n").await;
    let body = crate::common::assert_api_error(
        app.get("/api/timeshift/demo.ts?start=2026-01-01T00:00:00Z&duration=abc")
            .await,
        400,
    )
    .await;
    assert!(
        body["error"].as_str().unwrap().contains("duration"),
        "{body}"
    );
    for (method, path) in [
        (reqwest::Method::GET, "/api/config/reload"),
        (reqwest::Method::DELETE, "/api/services/Demo/enable"),
    ] {
        let resp = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers()[reqwest::header::ALLOW],
            "POST",
            "{method} {path}"
        );
        let body = crate::common::assert_api_error(resp, 405).await;
        assert_eq!(
            body["error"],
            format!("this path does not take {method} (the Allow header lists what it takes)"),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn service_and_id_name_a_source_on_every_channel_route_and_an_unlisted_one_is_404() {
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let list = format!("#EXTM3U\n#EXTINF:-1 group-title=\"News\",News One\n{o}/n1.m3u8\n");
    let _up = up
        .text("/list.m3u", M3U_TYPE, list)
        .text("/n1.m3u8", HLS_TYPE, media_playlist(&["a.ts"]))
        .start();
    let app = TestApp::spawn(&fill(
        "[[services]]\nname = \"List\"\nkind = \"m3u\"\nurl = \"@UP@/list.m3u\"\n",
        &[("@UP@", &o)],
    ))
    .await;
    let news = app.channel_named("News One").await;
    let source = format!(
        "List:{}",
        news["sources"][0]["channel_id"].as_str().unwrap()
    );
    let (status, by_source) = app.get_json(&format!("/api/channels/{source}")).await;
    assert_eq!(status, 200, "{by_source}");
    assert_eq!(by_source["name"], "News One", "{by_source}");

    // An id the service does not list: an unknown channel (404), not an upstream
    // failure, and no mark against the service's health.
    let before = app.service_status("List").await;
    let body = assert_api_error(app.get("/api/stream/List:no-such-id.m3u8").await, 404).await;
    assert_eq!(
        body["error"], "service `List` lists no channel `no-such-id`",
        "{body}"
    );
    assert_api_error(app.get("/api/channels/List:no-such-id").await, 404).await;
    let after = app.service_status("List").await;
    assert_eq!(before["failures"], after["failures"], "{after}");
    assert_eq!(after["healthy"], true, "{after}");
}

/// Channels without a group are "Uncategorized" in the playlist's group filter, as the
/// channel API and players list them.
#[tokio::test]
async fn the_playlists_group_filter_names_channels_without_a_group_as_the_api_does() {
    let up = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1 group-title=\"News\",News One\nhttp://127.0.0.1:9/n.m3u8\n\
             #EXTINF:-1,Loose One\nhttp://127.0.0.1:9/l.m3u8\n",
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"L\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        up.url("/list.m3u")
    ))
    .await;
    let (_, api) = app.get_json("/api/channels?group=Uncategorized").await;
    let listed: Vec<&str> = api["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{api}"))
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(listed, ["Loose One"], "{api}");
    let m3u = app.get_text_ok("/playlist.m3u?group=uncategorized").await;
    assert!(m3u.contains(",Loose One\n"), "{m3u}");
    assert!(!m3u.contains("News One"), "{m3u}");
}
