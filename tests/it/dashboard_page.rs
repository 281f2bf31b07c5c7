//! The dashboard at `/` as a browser without JavaScript sees it: the server-rendered
//! HTML (DOM contract in the engineers' brief, docs/src/dashboard.md): every service row
//! with its chart, the copyable URLs, no channel rows until a search (`?q=`, `?group=`)
//! is submitted, then the matching channel rows with sources, guide now/next and
//! viewers, and upstream text escaped. Upstreams are real HTTP servers on 127.0.0.1 (an M3U list, its XMLTV
//! guide and an HLS origin) plus the built-in demo service.

use crate::common::{
    live_playlist, xmltv_around as at, FakeUpstream, TestApp, HANG_GUARD, HLS_TYPE, M3U_TYPE,
};

const EVIL: &str = "<script>alert(1)</script> TV";
/// A search without JavaScript that matches every channel of `setup` (each name holds
/// an "e"): the page then lists them all.
const ALL: &str = "/?q=e";

/// An M3U service with three channels in two groups (one named with markup) and a
/// guide for one of them, and the demo service.
async fn setup() -> (TestApp, FakeUpstream) {
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let list = format!(
        "#EXTM3U\n\
#EXTINF:-1 tvg-id=\"NewsOne.example\" group-title=\"News\",News One\n{o}/live/index.m3u8\n\
#EXTINF:-1 group-title=\"News\",Télé Deux\n{o}/live/index.m3u8\n\
#EXTINF:-1 group-title=\"Sport\",{EVIL}\n{o}/live/index.m3u8\n"
    );
    let guide = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<tv>\n\
<channel id=\"NewsOne.example\"><display-name>News One</display-name></channel>\n\
<programme start=\"{}\" stop=\"{}\" channel=\"NewsOne.example\"><title>Morning &amp; News</title></programme>\n\
<programme start=\"{}\" stop=\"{}\" channel=\"NewsOne.example\"><title>Noon News</title></programme>\n\
</tv>\n",
        at(0),
        at(1),
        at(1),
        at(2)
    );
    let up = up
        .text("/list.m3u", M3U_TYPE, list)
        .text("/guide.xml", "application/xml", guide)
        .text(
            "/live/index.m3u8",
            HLS_TYPE,
            live_playlist(&["s0.ts", "s1.ts", "s2.ts"]),
        )
        .bytes("/live/s0.ts", "video/mp2t", vec![0x47; 188 * 4])
        .bytes("/live/s1.ts", "video/mp2t", vec![0x47; 188 * 4])
        .bytes("/live/s2.ts", "video/mp2t", vec![0x47; 188 * 4])
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Demo\"\nkind = \"demo\"\n\n\
         [[services]]\nname = \"List\"\nkind = \"m3u\"\nurl = \"{o}/list.m3u\"\nepg_url = \"{o}/guide.xml\"\n"
    ))
    .await;
    (app, up)
}

/// Undoes askama's HTML escaping (and the named forms, for robustness).
fn unescape(s: &str) -> String {
    s.replace("&#60;", "<")
        .replace("&lt;", "<")
        .replace("&#62;", ">")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

/// The `<tr {attr}="...">` rows of `html`: (attribute value unescaped, row markup).
fn rows<'a>(html: &'a str, attr: &str) -> Vec<(String, &'a str)> {
    let open = format!("<tr {attr}=\"");
    html.match_indices(&open)
        .map(|(i, _)| {
            let rest = &html[i + open.len()..];
            let value = &rest[..rest.find('"').expect("attribute closes")];
            let row = &rest[..rest.find("</tr>").expect("row closes")];
            (unescape(value), row)
        })
        .collect()
}

/// The inner markup of the `<td class="{class}" ...>` cell of `row` (escaped as sent).
fn cell<'a>(row: &'a str, class: &str) -> &'a str {
    let open = format!("<td class=\"{class}");
    let start = row
        .find(&open)
        .unwrap_or_else(|| panic!("no .{class} cell in {row}"));
    let rest = &row[start..];
    let rest = &rest[rest.find('>').expect("tag closes") + 1..];
    &rest[..rest.find("</td>").expect("cell closes")]
}

/// A cell's text: tags removed, unescaped.
fn text(row: &str, class: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for ch in cell(row, class).chars() {
        match ch {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    unescape(out.trim())
}

/// The value of `<input ... id="{id}" ... value="...">`.
fn input_value(html: &str, id: &str) -> String {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let tag = &html[html[..start].rfind('<').unwrap()..];
    let tag = &tag[..tag.find('>').unwrap()];
    let v = tag.find("value=\"").expect("value") + 7;
    unescape(&tag[v..v + tag[v..].find('"').unwrap()])
}

async fn page(app: &TestApp, path: &str) -> String {
    let resp = app.get(path).await;
    assert_eq!(resp.status(), 200, "GET {path}");
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/html"), "{ctype}");
    resp.text().await.unwrap()
}

/// The `aria-label` of the service row's chart.
fn chart_label(html: &str, service: &str) -> String {
    let (_, row) = rows(html, "data-service")
        .into_iter()
        .find(|(n, _)| n == service)
        .unwrap_or_else(|| panic!("no row for {service}"));
    let svg = cell(row, "history");
    assert!(
        svg.starts_with("<svg class=\"chart\" role=\"img\""),
        "{svg}"
    );
    let l = svg.find("aria-label=\"").unwrap() + 12;
    svg[l..l + svg[l..].find('"').unwrap()].to_string()
}

/// The `N ok` count of a chart label.
fn ok_count(label: &str) -> u64 {
    label
        .strip_prefix("last hour: ")
        .and_then(|l| l.split(" ok").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_page_shows_services_channels_urls_and_guide_without_javascript() {
    let (app, _up) = setup().await;
    // The guide is read once (the page itself never fetches one).
    assert_eq!(app.get("/epg.xml").await.status(), 200);
    let html = page(&app, "/").await;

    // Services: one row each, with the contract's cells and a chart.
    let services = rows(&html, "data-service");
    let names: Vec<&str> = services.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Demo", "List"], "{html}");
    for (name, row) in &services {
        assert_eq!(text(row, "name"), *name);
        assert_eq!(text(row, "state"), "enabled");
        assert_eq!(text(row, "circuit"), "closed");
        assert!(
            row.contains("<button type=\"button\" class=\"toggle\">disable</button>"),
            "{row}"
        );
        assert!(row.contains("class=\"priority-input\""), "{row}");
        assert!(row.contains("class=\"priority-save\""), "{row}");
        assert!(text(row, "latency").ends_with(" ms"), "{row}");
        assert!(row.contains("<svg class=\"chart\" role=\"img\" aria-label=\"last hour: "));
    }
    let list = &services[1].1;
    assert_eq!(text(list, "kind"), "m3u");
    assert_eq!(text(list, "channels"), "3");
    assert_eq!(text(list, "last-error"), "");
    // The channel list and guide were fetched: the chart has data.
    assert!(ok_count(&chart_label(&html, "List")) >= 1, "{html}");

    // URLs, absolute, each with a copy button.
    assert_eq!(input_value(&html, "url-playlist"), app.url("/playlist.m3u"));
    assert_eq!(input_value(&html, "url-guide"), app.url("/epg.xml"));
    assert_eq!(input_value(&html, "url-tuner"), app.base);
    for id in ["url-playlist", "url-guide", "url-tuner"] {
        assert!(
            html.contains(&format!("class=\"copy\" data-target=\"{id}\"")),
            "{id}"
        );
    }
    // The plain search form and the message/token elements.
    assert!(html.contains("<form id=\"channel-search\" method=\"get\" action=\"/\">"));
    assert!(html.contains("<input id=\"search\" name=\"q\" type=\"search\""));
    assert!(html.contains("<select id=\"group\" name=\"group\""));
    assert!(html.contains("<option value=\"\">all groups</option>"));
    assert!(html.contains("<div id=\"message\" role=\"status\"></div>"));
    assert!(html.contains("<input id=\"admin-token\" type=\"password\" autocomplete=\"off\""));

    // No channel rows until a search: the script pages through them. Then every
    // matching channel, with its sources, guide and links.
    assert!(rows(&html, "data-channel").is_empty(), "{html}");
    assert!(
        html.contains("<span id=\"channel-count\">4</span>"),
        "{html}"
    );
    let html = page(&app, ALL).await;
    let lineup = app.channels().await;
    let channels = rows(&html, "data-channel");
    assert_eq!(channels.len(), 4, "{html}");
    for c in &lineup {
        let id = c["id"].as_str().unwrap();
        let (_, row) = channels
            .iter()
            .find(|(cid, _)| cid == id)
            .unwrap_or_else(|| panic!("no row for {id}"));
        assert_eq!(text(row, "name"), c["name"].as_str().unwrap());
        assert_eq!(text(row, "number"), c["number"].to_string());
        assert_eq!(text(row, "group"), c["group"].as_str().unwrap());
        assert!(
            row.contains(&format!("data-group=\"{}\"", c["group"].as_str().unwrap())),
            "{row}"
        );
        assert_eq!(text(row, "viewers"), "0");
        assert!(
            cell(row, "links").contains(&app.url(&format!("/api/stream/{id}.m3u8"))),
            "{row}"
        );
        assert!(row.contains("<button type=\"button\" class=\"test\">test</button>"));
        assert!(row.contains("<output class=\"test-result\"></output>"));
    }
    let row_named = |name: &str| {
        channels
            .iter()
            .find(|(_, r)| text(r, "name") == name)
            .unwrap_or_else(|| panic!("no row named {name}"))
            .1
    };
    let news = row_named("News One");
    assert_eq!(text(news, "sources"), "List");
    assert_eq!(text(news, "now"), "Morning & News");
    assert_eq!(text(news, "next"), "Noon News");
    let demo = row_named("Demo");
    assert_eq!(text(demo, "sources"), "Demo");
    assert_eq!(text(demo, "now"), "Demo loop");
    assert_eq!(text(row_named("Télé Deux"), "now"), "");
    assert_eq!(text(row_named(EVIL), "group"), "Sport");
    assert!(
        html.contains("<span id=\"channel-count\">4</span>"),
        "{html}"
    );

    // The assets the page names are served with their types.
    let css = app.get("/dashboard.css?v=1").await;
    assert_eq!(css.status(), 200);
    assert!(css.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let js = app.get("/dashboard.js").await;
    assert_eq!(js.status(), 200);
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(js.text().await.unwrap().contains("textContent"));
}

/// The player: every channel row has a play button, the page names the vendored
/// hls.js by its version, and freesky serves exactly that file (no CDN), cached long.
#[tokio::test]
async fn the_page_names_the_vendored_hls_js_and_freesky_serves_it() {
    let (app, _up) = setup().await;
    let html = page(&app, ALL).await;
    let channels = rows(&html, "data-channel");
    assert_eq!(channels.len(), 4, "{html}");
    for (id, row) in &channels {
        assert!(
            row.contains("<button type=\"button\" class=\"play\""),
            "channel {id} has no play button: {row}"
        );
    }
    let vendored: &[u8] = include_bytes!("../../assets/vendor/hls.js/hls.light.min.js");
    let version = "1.6.19";
    let src = format!("/assets/hls.light.min.js?v={version}");
    assert!(
        html.contains(&format!(
            "<section id=\"player\" hidden data-hls-js=\"{src}\">"
        )),
        "no hidden player naming {src}: {html}"
    );
    assert!(
        !html.contains("<script src=\"http"),
        "the page loads a script from elsewhere"
    );
    let resp = app.get(&src).await;
    assert_eq!(resp.status(), 200);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert!(header("content-type").starts_with("text/javascript"));
    assert_eq!(
        header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    let body = resp.bytes().await.expect("hls.js body");
    assert!(
        body == vendored,
        "/assets/hls.light.min.js is not the vendored file"
    );
    assert!(
        String::from_utf8_lossy(&body).contains(&format!("\"{version}\"")),
        "the vendored hls.js is not version {version}"
    );
    let licence = include_str!("../../assets/vendor/hls.js/LICENSE");
    assert!(
        licence.contains("Apache License"),
        "hls.js's licence is not kept beside it"
    );
}

#[tokio::test]
async fn upstream_markup_is_escaped_never_a_live_tag() {
    let (app, _up) = setup().await;
    let html = page(&app, ALL).await;
    assert!(!html.contains("<script>alert"), "{html}");
    // The page's only script is our own.
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    let evil = rows(&html, "data-channel")
        .into_iter()
        .find(|(_, r)| text(r, "name") == EVIL)
        .expect("the channel is listed, escaped");
    assert!(
        cell(evil.1, "name").contains("&#60;script&#62;")
            || cell(evil.1, "name").contains("&lt;script&gt;")
    );
    // A query echoed back into the search box is escaped as well.
    let html = page(&app, "/?q=%22%3E%3Cscript%3Ex").await;
    assert!(!html.contains("\"><script>x"), "{html}");
    assert_eq!(input_value(&html, "search"), "\"><script>x");
    // Were one to get through, the browser would not run it: only the page's own
    // script files run (the players in headless Chromium play under this policy).
    let resp = app.get("/").await;
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'self'",
        "script-src 'self';",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{part} not in {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
}

#[tokio::test]
async fn q_and_group_filter_the_channels_on_the_server() {
    let (app, _up) = setup().await;
    let names = |html: &str| -> Vec<String> {
        let mut n: Vec<String> = rows(html, "data-channel")
            .iter()
            .map(|(_, r)| text(r, "name"))
            .collect();
        n.sort();
        n
    };
    // Accents and case ignored; groups match too.
    assert_eq!(names(&page(&app, "/?q=TELE").await), ["Télé Deux"]);
    assert_eq!(
        names(&page(&app, "/?q=news").await),
        ["News One", "Télé Deux"]
    );
    let sport = page(&app, "/?group=Sport").await;
    assert_eq!(names(&sport), [EVIL]);
    assert!(
        sport.contains("<option value=\"Sport\" selected>Sport</option>"),
        "{sport}"
    );
    assert!(sport.contains("<span id=\"channel-count\">1</span>"));
    assert_eq!(names(&page(&app, "/?q=one&group=News").await), ["News One"]);
    assert!(names(&page(&app, "/?q=one&group=Sport").await).is_empty());
    // Every group is offered whatever the filter.
    for g in ["Demo", "News", "Sport"] {
        assert!(sport.contains(&format!("<option value=\"{g}\"")), "{g}");
    }
    // An empty filter is no search: no rows (the script lists them), the lineup's size.
    let unfiltered = page(&app, "/?q=&group=").await;
    assert!(names(&unfiltered).is_empty());
    assert!(unfiltered.contains("<span id=\"channel-count\">4</span>"));
}

/// The `.viewers` cell of channel `id` on the page.
fn viewers_of(html: &str, id: &str) -> String {
    rows(html, "data-channel")
        .into_iter()
        .find(|(cid, _)| *cid == id)
        .map(|(_, r)| text(r, "viewers"))
        .unwrap_or_else(|| panic!("no row of {id}"))
}

#[tokio::test]
async fn streaming_shows_in_the_chart_and_the_viewer_count() {
    let (app, up) = setup().await;
    let before = page(&app, "/").await;
    let demo_before = ok_count(&chart_label(&before, "Demo"));
    let id = app.channel_id("News One").await;

    // An HLS request is an upstream call of the Demo service: its chart counts it.
    let resp = app.get("/api/stream/demo.m3u8").await;
    assert_eq!(resp.status(), 200);
    let after = page(&app, "/").await;
    let label = chart_label(&after, "Demo");
    assert!(
        ok_count(&label) > demo_before,
        "{label} (before: {demo_before})"
    );
    assert!(after.contains("<rect class=\"lat\""), "{after}");

    // A `.ts` viewer of News One counts while it reads.
    let resp = app.get(&format!("/api/stream/{id}.ts")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    use futures::StreamExt;
    let first = tokio::time::timeout(HANG_GUARD, body.next())
        .await
        .expect("first bytes")
        .expect("a chunk")
        .expect("bytes");
    assert!(!first.is_empty());
    assert_eq!(viewers_of(&page(&app, ALL).await, &id), "1");
    assert!(up.hits("/live/index.m3u8") >= 1);

    // Gone once it stops reading.
    drop(body);
    crate::common::eventually("the viewer to leave", || async {
        match viewers_of(&page(&app, ALL).await, &id) {
            n if n == "0" => Ok(()),
            n => Err(format!("{n} viewers")),
        }
    })
    .await;
}

#[tokio::test]
async fn an_hls_player_counts_as_one_viewer_while_it_fetches_playlists() {
    let (app, _up) = setup().await;
    let id = app.channel_id("News One").await;
    assert_eq!(viewers_of(&page(&app, ALL).await, &id), "0");

    // A player loads the channel's playlist, and reloads it: one client address,
    // one viewer.
    for _ in 0..2 {
        let resp = app.get(&format!("/api/stream/{id}.m3u8")).await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(viewers_of(&page(&app, ALL).await, &id), "1");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(&format!("freesky_hls_viewers{{channel=\"{id}\"}} 1")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_failing_lineup_still_renders_the_page_with_the_error() {
    // The only service's list is unreachable: no channels, the service row says why.
    let up = FakeUpstream::bind().await.status("/list.m3u", 500).start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Broken\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        up.url("/list.m3u")
    ))
    .await;
    let html = page(&app, "/").await;
    let services = rows(&html, "data-service");
    assert_eq!(services.len(), 1);
    assert!(text(services[0].1, "last-error").contains("500"), "{html}");
    assert!(rows(&html, "data-channel").is_empty());
    let label = chart_label(&html, "Broken");
    assert!(
        label.starts_with("last hour: 0 ok, ") && !label.contains(" 0 failed"),
        "{label}"
    );
    assert!(html.contains("<rect class=\"fail\""), "{html}");
}

/// With an admin token, who watches what (and from where) is not on the public page:
/// only a request carrying the token sees the accounts, as `/api/users` does.
#[tokio::test]
async fn viewer_accounts_show_only_to_admin_callers() {
    let app = TestApp::spawn(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{state_dir}'\nadmin_token = \"dash-token-9q2\"\n\n\
         [[services]]\nname = \"Demo\"\nkind = \"demo\"\n\n\
         [[users]]\nname = \"alice\"\npassword = \"alice-pw-123\"\n",
    )
    .await;
    let public = page(&app, "/").await;
    assert!(!public.contains("data-account=\"alice\""), "{public}");
    assert!(public.contains("shown to admin callers only"), "{public}");
    let admin = app
        .client
        .get(app.url("/"))
        .header("Authorization", "Bearer dash-token-9q2")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(admin.contains("<tr data-account=\"alice\">"), "{admin}");
    assert!(!admin.contains("shown to admin callers only"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_require_account_only_the_admin_sees_services_and_channels() {
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let _up = up
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!("#EXTM3U\n#EXTINF:-1 group-title=\"Hidden Group\",Secret Channel\n{o}/live/index.m3u8\n"),
        )
        .text("/live/index.m3u8", HLS_TYPE, live_playlist(&["s0.ts"]))
        .status("/broken.m3u", 500)
        .start();
    let app = TestApp::spawn(&format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\n\
         require_account = true\nadmin_token = \"dash-token-9q2\"\n\n\
         [[services]]\nname = \"List\"\nkind = \"m3u\"\nurl = \"{o}/list.m3u\"\n\n\
         [[services]]\nname = \"Broken\"\nkind = \"m3u\"\nurl = \"{o}/broken.m3u\"\n\n\
         [[users]]\nname = \"alice\"\npassword = \"alice-pw-123\"\n"
    ))
    .await;
    let as_admin = |path: &'static str| {
        let req = app
            .client
            .get(app.url(path))
            .header("Authorization", "Bearer dash-token-9q2");
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    // The admin sees the lineup, the services and their errors (which the lineup API
    // shows the admin too).
    let admin = as_admin("/?q=secret").await;
    for shown in [
        "Secret Channel",
        "Hidden Group",
        "data-service=\"List\"",
        "data-service=\"Broken\"",
        "500",
    ] {
        assert!(admin.contains(shown), "{shown}: {admin}");
    }
    assert!(!admin.contains("id=\"lineup-hidden\""), "{admin}");
    // Anyone else (a viewer's login is not enough, as on /api/channels) gets the page
    // without them, whatever it asks.
    for path in [
        "/",
        "/?q=secret",
        "/?group=Hidden%20Group",
        "/?service=List",
        "/?q=e&group=Hidden%20Group&service=List",
        "/?username=alice&password=alice-pw-123&q=secret",
    ] {
        let public = page(&app, path).await;
        for hidden in [
            "Secret Channel",
            "Hidden Group",
            "data-service=",
            "List",
            "Broken",
            "500",
        ] {
            assert!(!public.contains(hidden), "{path} shows {hidden}: {public}");
        }
        assert!(public.contains("id=\"lineup-hidden\""), "{path}: {public}");
    }
    let viewer = app
        .client
        .get(app.url("/?q=secret"))
        .basic_auth("alice", Some("alice-pw-123"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!viewer.contains("Secret Channel"), "{viewer}");
    // The page's assets hold no lineup data.
    for asset in ["/dashboard.css", "/dashboard.js"] {
        let body = app.get_text_ok(asset).await;
        assert!(!body.contains("Secret Channel") && !body.contains("Hidden Group"));
    }
}

/// The extra guides (`[[guides]]`, which belong to no service) have a section of their
/// own: each one's address and what its last read gave, or why it failed.
#[tokio::test]
async fn extra_guides_show_with_their_state() {
    let (mut app, up) = setup().await;
    let o = up.base();
    // None configured: no section.
    assert!(!page(&app, "/").await.contains("extra-guides"));
    app.config_text.push_str(&format!(
        "\n[[guides]]\nname = \"Extra\"\nurl = \"{o}/guide.xml?token=secret\"\n\n\
         [[guides]]\nname = \"Broken\"\nurl = \"{o}/missing.xml\"\n"
    ));
    app.restart().await;
    assert_eq!(app.get("/epg.xml").await.status(), 200);
    let html = page(&app, "/").await;
    let section = html
        .split("<section id=\"extra-guides\">")
        .nth(1)
        .and_then(|s| s.split("</section>").next())
        .unwrap_or_else(|| panic!("no extra guides section: {html}"));
    let extra = section
        .split("<tr>")
        .find(|r| r.contains(">Extra<"))
        .unwrap();
    assert!(extra.contains("guide: 1 channels, 2 programmes"), "{extra}");
    assert!(
        !extra.contains("secret"),
        "the address's query is shown: {extra}"
    );
    let broken = section
        .split("<tr>")
        .find(|r| r.contains(">Broken<"))
        .unwrap();
    assert!(broken.contains("guide failed: "), "{broken}");
    assert!(broken.contains("404"), "{broken}");
}
