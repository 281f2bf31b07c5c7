//! Scrape recipes (`[[services.steps]]`) end to end: a three-step fake site (page with a
//! cookie, embed page that checks cookie and Referer, token API), a CDN that checks the
//! configured stream Referer/Origin, and the config errors of bad recipes.

use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderMap};
use axum::response::{AppendHeaders, IntoResponse};
use axum::routing::get;
use serde_json::Value;

use crate::common::{
    assert_api_error, media_playlist, playlist_uris, respond, FakeUpstream, TestApp, HLS_TYPE,
};

const PLAYER: &str = "https://player.site.example/";
const PLAYER_ORIGIN: &str = "https://player.site.example";

const RECIPE: &str = r#"
[[services]]
name = "Demo"
kind = "demo"

[[services]]
name = "Site"
kind = "scrape"
base_url = "@WEB@/"
stream_referer = "https://player.site.example/"
stream_origin = "https://player.site.example"
[services.channels]
list = [{ id = "one", name = "Recipe One" }, { id = "two", name = "Recipe Two" }]
[services.stream]
page = "watch/{channel_id}"

[[services.steps]]
url = "{page}"
regex = '<iframe class="player" src="(?P<embed_url>[^"]+)"'

[[services.steps]]
url = "{embed_url}"
regex = 'var token = "(?P<token>[^"]+)"'

[[services.steps]]
url = "/api/source?t={token}&ch={channel}"
user_agent = "RecipeTest/1.0"
headers = { "X-Requested-With" = "XMLHttpRequest" }
regex = '"src":"(?P<url>[^"]+)"'
"#;

/// The site: `/watch/{id}` sets cookies and links the embed page; `/embed/{id}` wants
/// the session cookie and the watch page as Referer (403 otherwise) and holds the token
/// (except for `two`); `/api/source` turns the token into the CDN URL, JSON-escaped.
async fn fake_site(cdn: &str) -> FakeUpstream {
    let web = FakeUpstream::bind().await;
    let w = web.base();
    let cdn_escaped = cdn.replace('/', "\\/");
    web.route(
        "/watch/{id}",
        get(|Path(id): Path<String>| async move {
            (
                AppendHeaders([
                    (header::SET_COOKIE, format!("sess=s3ss-{id}; Path=/; HttpOnly")),
                    (header::SET_COOKIE, "lang=en; Max-Age=3600".to_string()),
                    (header::CONTENT_TYPE, "text/html".to_string()),
                ]),
                format!(
                    r#"<html><iframe class="player" src="/embed/{id}?autoplay=1&amp;v=2"></iframe></html>"#
                ),
            )
                .into_response()
        }),
    )
    .route(
        "/embed/{id}",
        get(move |Path(id): Path<String>, headers: HeaderMap| {
            let w = w.clone();
            async move {
                let h = |n| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
                let cookie_ok = h(header::COOKIE)
                    .split("; ")
                    .any(|c| c == format!("sess=s3ss-{id}"));
                let referer_ok = h(header::REFERER) == format!("{w}/watch/{id}");
                if !cookie_ok || !referer_ok {
                    return respond(403, "text/plain", "no session or wrong referer");
                }
                let body = if id == "one" {
                    r#"<script>var token = "tok-one-42"; player.load();</script>"#
                } else {
                    "<p>Player unavailable in your region</p>"
                };
                respond(200, "text/html", body)
            }
        }),
    )
    .route(
        "/api/source",
        get(move |RawQuery(q): RawQuery| {
            let cdn_escaped = cdn_escaped.clone();
            async move {
                if q.as_deref() != Some("t=tok-one-42&ch=one") {
                    return respond(403, "application/json", r#"{"ok":false}"#);
                }
                respond(
                    200,
                    "application/json",
                    format!(r#"{{"ok":true,"src":"{cdn_escaped}\/hls\/one\/index.m3u8?sig=9"}}"#),
                )
            }
        }),
    )
    .start()
}

async fn fake_cdn() -> FakeUpstream {
    FakeUpstream::bind()
        .await
        .require_header("referer", PLAYER)
        .require_header("origin", PLAYER_ORIGIN)
        .text(
            "/hls/one/index.m3u8",
            HLS_TYPE,
            media_playlist(&["seg0.ts"]),
        )
        .bytes("/hls/one/seg0.ts", "video/mp2t", b"SEGMENT ONE".to_vec())
        .start()
}

fn id_of(channel: &Value) -> String {
    channel["id"].as_str().expect("channel id").to_string()
}

#[tokio::test]
async fn a_three_step_recipe_plays_and_a_failing_step_is_named() {
    let cdn = fake_cdn().await;
    let web = fake_site(&cdn.base()).await;
    let w = web.base();
    let app = TestApp::spawn(&RECIPE.replace("@WEB@", &w)).await;

    // Channel one: the whole recipe, then the stream through the proxy.
    let one = app.channel_named("Recipe One").await;
    let playlist = app
        .get_text_ok(&format!("/api/stream/{}.m3u8", id_of(&one)))
        .await;
    assert!(playlist.starts_with("#EXTM3U"), "{playlist}");
    let uris = playlist_uris(&playlist);
    assert_eq!(uris.len(), 1, "{playlist}");
    assert!(
        uris[0].starts_with(&format!("{}/proxy/", app.base)),
        "{playlist}"
    );
    let seg = app.get(&uris[0]).await;
    assert_eq!(seg.status(), 200);
    assert_eq!(&seg.bytes().await.unwrap()[..], b"SEGMENT ONE");
    for path in ["/hls/one/index.m3u8", "/hls/one/seg0.ts"] {
        let r = &cdn.requests_to(path)[0];
        assert_eq!(r.header("referer"), Some(PLAYER), "{path}");
        assert_eq!(r.header("origin"), Some(PLAYER_ORIGIN), "{path}");
    }
    assert_eq!(
        cdn.requests_to("/hls/one/index.m3u8")[0].query.as_deref(),
        Some("sig=9")
    );

    // Step 1: no cookie yet, no Referer.
    let watch = &web.requests_to("/watch/one")[0];
    assert_eq!(watch.header("cookie"), None);
    assert_eq!(watch.header("referer"), None);
    // Step 2: the cookies of step 1 and step 1's page as Referer; `&amp;` undone and
    // the relative link resolved against step 1's page.
    let embed = &web.requests_to("/embed/one")[0];
    assert_eq!(embed.header("cookie"), Some("sess=s3ss-one; lang=en"));
    assert_eq!(embed.header("referer"), Some(&*format!("{w}/watch/one")));
    assert_eq!(embed.query.as_deref(), Some("autoplay=1&v=2"));
    // Step 3: built from the token and the channel, with its own headers.
    let api = &web.requests_to("/api/source")[0];
    assert_eq!(api.query.as_deref(), Some("t=tok-one-42&ch=one"));
    assert_eq!(api.header("user-agent"), Some("RecipeTest/1.0"));
    assert_eq!(api.header("x-requested-with"), Some("XMLHttpRequest"));
    assert_eq!(api.header("cookie"), Some("sess=s3ss-one; lang=en"));
    assert_eq!(
        api.header("referer"),
        Some(&*format!("{w}/embed/one?autoplay=1&v=2"))
    );

    // Channel two: step 2's page has no token. A 502 naming the step and its URL
    // (redacted: host and last path segment, no query), and step 3 is never tried.
    let two = app.channel_named("Recipe Two").await;
    let body = assert_api_error(
        app.get(&format!("/api/stream/{}.m3u8", id_of(&two))).await,
        502,
    )
    .await;
    let text = body.to_string();
    assert!(
        text.contains(&format!(
            "step 2 of 3 ({w}/…/two?…): pattern matched nothing"
        )),
        "{body:#}"
    );
    assert!(!text.contains("autoplay"), "the query leaked: {body:#}");
    assert_eq!(web.hits("/embed/two"), 1);
    assert_eq!(web.hits("/api/source"), 1, "{:?}", web.paths());
    let status = app.service_status("Site").await;
    assert!(
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("step 2 of 3")),
        "{status}"
    );

    // The other services keep serving.
    let demo = app.channel_named("Demo").await;
    let demo_playlist = app
        .get_text_ok(&format!("/api/stream/{}.m3u8", id_of(&demo)))
        .await;
    assert!(demo_playlist.starts_with("#EXTM3U"), "{demo_playlist}");
}

fn errors(text: &str) -> Vec<String> {
    match freesky::config::Config::parse(text, "recipe.toml", &|_| None) {
        Ok(_) => Vec::new(),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

/// 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the config"))
        + 1
}

#[test]
fn recipe_errors_name_file_line_and_step() {
    let text = RECIPE
        .replace("@WEB@", "http://site.example")
        .replace(r#"url = "{embed_url}""#, r#"url = "{embed}""#)
        .replace(
            r#"regex = 'var token = "(?P<token>[^"]+)"'"#,
            r#"regex = 'var token = "(?P<token>[^"]+"'"#,
        )
        .replace(
            r#"regex = '"src":"(?P<url>[^"]+)"'"#,
            r#"regex = '"src":"(?P<src>[^"]+)"'"#,
        );
    let e = errors(&text);
    let undefined = format!(
        "recipe.toml:{}: services[1].steps[1].url: `{{embed}}` is not defined",
        line_of(&text, r#"url = "{embed}""#)
    );
    assert!(e.iter().any(|l| l.starts_with(&undefined)), "{e:#?}");
    let bad_regex = format!(
        "recipe.toml:{}: services[1].steps[1].regex: bad regex",
        line_of(&text, "var token")
    );
    assert!(e.iter().any(|l| l.starts_with(&bad_regex)), "{e:#?}");
    // Step 3 uses {token}, whose step did not compile: also reported.
    assert!(
        e.iter()
            .any(|l| l.contains("services[1].steps[2].url: `{token}` is not defined")),
        "{e:#?}"
    );
    let no_url = format!(
        "recipe.toml:{}: services[1].steps[2].regex: the last step needs a named group `(?P<url>...)`",
        line_of(&text, "(?P<src>")
    );
    assert!(e.iter().any(|l| l.starts_with(&no_url)), "{e:#?}");
}

#[test]
fn inline_steps_parse_and_stream_keys_do_not_mix() {
    let inline = r#"
[[services]]
name = "Inline"
kind = "scrape"
base_url = "http://site.example/"
stream_referer = "{embed_url}"
channels = { list = [{ id = "a", name = "A" }] }
steps = [
  { url = "watch/{channel}", regex = 'src="(?P<embed_url>[^"]+)"' },
  { url = "{embed_url}", referer = "", regex = 'file: "(?P<url>[^"]+)"' },
]
"#;
    assert_eq!(errors(inline), Vec::<String>::new());

    // Without `[services.stream]` there is no `{page}`; stream.patterns is for
    // single-page services only.
    let mixed = r#"
[[services]]
name = "Mixed"
kind = "scrape"
base_url = "http://site.example/"
[services.channels]
list = [{ id = "a", name = "A" }]
[services.stream]
page = "watch/{channel_id}"
patterns = ['x']
[[services.steps]]
url = "{page}"
regex = 'file: "(?P<url>[^"]+)"'
"#;
    let e = errors(mixed);
    assert!(
        e.iter().any(|l| l.starts_with(&format!(
            "recipe.toml:{}: services[0].stream.patterns: not used with `steps`",
            line_of(mixed, "patterns")
        ))),
        "{e:#?}"
    );
    let no_page = inline.replace("watch/{channel}", "{page}");
    let e = errors(&no_page);
    assert!(
        e.iter()
            .any(|l| l.contains("steps[0].url: `{page}` is not defined here (`{page}` needs")),
        "{e:#?}"
    );
}

/// The commented recipe in the shipped config parses once uncommented.
#[test]
fn shipped_config_has_a_working_recipe_example() {
    let text: String =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/freesky.toml"))
            .expect("config/freesky.toml")
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
    let c = freesky::config::Config::parse(&text, "uncommented", &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let recipes = c
        .services
        .iter()
        .filter(|s| {
            matches!(&s.kind, freesky::services::KindConfig::Scrape(k)
                if k.steps.as_ref().is_some_and(|s| s.len() > 1))
        })
        .count();
    assert_eq!(
        recipes, 1,
        "no multi-step scrape example in config/freesky.toml"
    );
}
