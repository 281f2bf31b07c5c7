//! Logos that work offline (`[logos] mode = "cache"`): every logo and guide icon in
//! every output points at freesky's `/logos/`, a logo is served from the disk cache
//! once the upstream is gone (also after a restart on the same state dir), HTML,
//! oversized images and private addresses are refused (and counted), and a tampered
//! link is a 403.

use std::io::Read;

use crate::common::{xmltv_at, FakeUpstream, TestApp};

/// A tiny PNG: the bytes are what matters, not that it decodes.
fn png() -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    b.extend((0..200).map(|i| i as u8));
    b
}

const HTML: &str = "<!DOCTYPE html><html><body>Not found, sorry</body></html>";

/// An M3U service whose channels have a PNG logo, an HTML "logo", an oversized one
/// and one on a private address that is not the service's host; its guide has channel
/// and programme icons.
async fn upstream() -> FakeUpstream {
    let b = FakeUpstream::bind().await;
    let base = b.base();
    let port = b
        .url("")
        .trim_start_matches("http://127.0.0.1:")
        .to_string();
    let m3u = format!(
        "#EXTM3U\n\
         #EXTINF:-1 tvg-id=\"One.uk\" tvg-logo=\"{base}/logo/one.png\" group-title=\"News\",One\n{base}/one.m3u8\n\
         #EXTINF:-1 tvg-id=\"Two.uk\" tvg-logo=\"{base}/logo/page.png\" group-title=\"News\",Two\n{base}/two.m3u8\n\
         #EXTINF:-1 tvg-id=\"Three.uk\" tvg-logo=\"{base}/logo/huge.png\" group-title=\"News\",Three\n{base}/three.m3u8\n\
         #EXTINF:-1 tvg-id=\"Four.uk\" tvg-logo=\"http://127.0.0.2:{port}/logo/one.png\" group-title=\"News\",Four\n{base}/four.m3u8\n\
         #EXTINF:-1 tvg-logo=\"{base}/logo/poster.png\" group-title=\"Films\",A Film (2020)\n{base}/films/a-film.mp4\n\
         #EXTINF:-1 tvg-logo=\"{base}/logo/cover.png\" group-title=\"Shows\",A Show S01E01\n{base}/shows/a-show-s01e01.mp4\n"
    );
    let (a, z) = (xmltv_at(-1), xmltv_at(2));
    let epg = format!(
        "<?xml version=\"1.0\"?>\n<tv>\n\
         <channel id=\"One.uk\"><display-name>One</display-name><icon src=\"{base}/logo/guide-one.png\"/></channel>\n\
         <channel id=\"Two.uk\"><display-name>Two</display-name></channel>\n\
         <programme start=\"{a}\" stop=\"{z}\" channel=\"One.uk\"><title>News</title><icon src=\"{base}/logo/show.png\"/></programme>\n\
         <programme start=\"{a}\" stop=\"{z}\" channel=\"Two.uk\"><title>Film</title></programme>\n\
         </tv>\n"
    );
    b.text("/list.m3u", "audio/x-mpegurl", m3u)
        .text("/epg.xml", "application/xml", epg)
        .bytes("/logo/one.png", "image/png", png())
        .bytes("/logo/show.png", "image/png", png())
        .text("/logo/page.png", "text/html", HTML)
        .bytes("/logo/huge.png", "image/png", {
            let mut big = png();
            big.resize(10_000, 7);
            big
        })
        .start()
}

fn config(up: &FakeUpstream) -> String {
    format!(
        "[logos]\nmode = \"cache\"\nmax_bytes = 4096\ncache_max_mb = 1\n\n\
         [[services]]\nname = \"LogoUp\"\nkind = \"m3u\"\nurl = \"{0}/list.m3u\"\nepg_url = \"{0}/epg.xml\"\n\
         headers = {{ \"User-Agent\" = \"logo-agent\" }}\n\n\
         [[users]]\nname = \"alice\"\npassword = \"pw\"\nmax_connections = 0\n",
        up.base()
    )
}

/// Every logo and icon URL an output writes (values of `tvg-logo="..."`,
/// `<icon src="...">`, JSON `"logo"` and `"stream_icon"`), non-empty ones.
fn logo_urls(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (start, end) in [
        ("tvg-logo=\"", '"'),
        ("<icon src=\"", '"'),
        ("\"logo\":\"", '"'),
        ("\"stream_icon\":\"", '"'),
        ("\"poster\":\"", '"'),
        ("\"cover\":\"", '"'),
    ] {
        for part in text.split(start).skip(1) {
            let v = part.split(end).next().unwrap_or_default();
            if !v.is_empty() {
                out.push(v.replace("\\/", "/").replace("&amp;", "&"));
            }
        }
    }
    out
}

fn gunzip(bytes: &[u8]) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut s)
        .expect("gzip");
    s
}

/// The freesky link of the logo whose channel is `name`, from `/api/channels/all`.
async fn logo_of(app: &TestApp, name: &str) -> String {
    app.channel_named(name).await["logo"]
        .as_str()
        .expect("logo")
        .to_string()
}

#[tokio::test]
async fn cache_mode_points_every_logo_and_icon_at_freesky() {
    let up = upstream().await;
    let app = TestApp::spawn(&config(&up)).await;
    assert_eq!(app.channels().await.len(), 4);

    let creds = "username=alice&password=pw";
    let mut outputs = Vec::new();
    for path in [
        "/playlist.m3u".to_string(),
        "/api/channels/all".to_string(),
        "/api/channels/search?q=o".to_string(),
        "/api/channels?limit=10".to_string(),
        "/epg.xml".to_string(),
        format!("/get.php?{creds}&type=m3u_plus"),
        format!("/player_api.php?{creds}&action=get_live_streams"),
        format!("/xmltv.php?{creds}"),
        // Posters of movies and series.
        "/api/movies".to_string(),
        "/api/series".to_string(),
        format!("/vod.m3u?{creds}"),
        format!("/player_api.php?{creds}&action=get_vod_streams"),
        format!("/player_api.php?{creds}&action=get_series"),
    ] {
        outputs.push((path.clone(), app.get_text_ok(&path).await));
    }
    let gz = app.get("/epg.xml.gz").await;
    assert_eq!(gz.status(), 200);
    outputs.push(("/epg.xml.gz".into(), gunzip(&gz.bytes().await.expect("gz"))));
    let one = app.channel_named("One").await;
    let detail = app
        .get_text_ok(&format!(
            "/api/channels/{}",
            one["id"].as_str().expect("id")
        ))
        .await;
    // Whole: the upstream logo a mapping would replace is shown through freesky too.
    outputs.push(("/api/channels/{id}".into(), detail));

    let ours = format!("{}/logos/", app.base);
    for (path, text) in &outputs {
        let urls = logo_urls(text);
        assert!(!urls.is_empty(), "{path} shows no logo:\n{text}");
        for u in &urls {
            assert!(
                u.starts_with(&ours),
                "{path} points a logo outside freesky: {u}"
            );
        }
        assert!(
            !text.contains(&format!("{}/logo/", up.base())),
            "{path} still names the upstream's logo:\n{text}"
        );
    }
    // The guide's programme icon too.
    let epg = &outputs
        .iter()
        .find(|(path, _)| path == "/epg.xml")
        .expect("the guide was read")
        .1;
    assert_eq!(logo_urls(epg).len(), 3, "{epg}");

    // And the links serve the images (One's logo, the programme's icon; Two's logo
    // is the HTML page, refused), fetched with the service's headers.
    let mut served = 0;
    for link in logo_urls(epg) {
        let resp = app.get(&link).await;
        if resp.status() == 200 {
            assert_eq!(resp.headers()["content-type"], "image/png");
            assert_eq!(
                resp.bytes().await.expect("image").as_ref(),
                png().as_slice()
            );
            served += 1;
        } else {
            assert_eq!(resp.status(), 502, "{link}");
        }
    }
    assert_eq!(served, 2);
    assert_eq!(up.hits("/logo/show.png"), 1);
    for r in up.requests_to("/logo/one.png") {
        assert_eq!(r.header("user-agent"), Some("logo-agent"));
    }
}

#[tokio::test]
async fn a_cached_logo_is_served_after_the_upstream_stops_and_after_a_restart() {
    let up = upstream().await;
    let mut app = TestApp::spawn(&config(&up)).await;
    let link = logo_of(&app, "One").await;
    let path = link
        .strip_prefix(&app.base)
        .expect("freesky link")
        .to_string();

    let first = app.get(&path).await;
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(
        first.bytes().await.expect("image").as_ref(),
        png().as_slice()
    );
    assert_eq!(up.hits("/logo/one.png"), 1);
    // A player that has it asks again with its tag: 304, no body; another tag, or a
    // tag list without it, gets the image.
    let http = reqwest::Client::new();
    for (given, status) in [
        (etag.clone(), 304),
        (format!("\"other\", W/{etag}"), 304),
        ("*".to_string(), 304),
        ("\"other\"".to_string(), 200),
    ] {
        let resp = http
            .get(app.url(&path))
            .header("if-none-match", &given)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{given}");
        assert_eq!(resp.headers()["etag"], etag.as_str(), "{given}");
        let body = resp.bytes().await.unwrap();
        assert_eq!(body.is_empty(), status == 304, "{given}");
    }
    // The list as listed (its logos on this upstream's address), for later.
    let listed = reqwest::get(up.url("/list.m3u"))
        .await
        .expect("list")
        .text()
        .await
        .expect("list text");
    let old_base = up.base();
    drop(up);

    let again = app.get(&path).await;
    assert_eq!(again.status(), 200, "not served from the cache");
    assert_eq!(
        again.bytes().await.expect("image").as_ref(),
        png().as_slice()
    );

    app.restart().await;
    let after = app.get(&path).await;
    assert_eq!(after.status(), 200, "the cache did not survive the restart");
    assert_eq!(after.headers()["content-type"], "image/png");
    assert_eq!(
        after.bytes().await.expect("image").as_ref(),
        png().as_slice()
    );
    assert!(app.state_dir().join("logos/index.json").exists());

    // An index a crash left unreadable loses no image: the files on disk are taken
    // back (a stray temporary file is removed).
    app.stop().await;
    let dir = app.state_dir().join("logos");
    std::fs::write(dir.join("index.json"), b"{\"entries\":{\"broken").expect("write");
    std::fs::write(dir.join(".x.1.2.tmp"), b"half").expect("write");
    app.start().await;
    // The index is written again as it now is (read whole by the next start), before
    // any request.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index"))
            .expect("the index was written again");
    assert_eq!(
        index["entries"].as_object().map(|e| e.len()),
        Some(1),
        "{index}"
    );
    let after = app.get(&path).await;
    assert_eq!(
        after.status(),
        200,
        "the image on disk was lost with its index"
    );
    assert_eq!(after.headers()["content-type"], "image/png");
    assert_eq!(
        after.bytes().await.expect("image").as_ref(),
        png().as_slice()
    );
    assert!(!dir.join(".x.1.2.tmp").exists());

    // The service renamed (its logos now come through new links): the copy on disk is
    // the URL's, and still answers while the image host is down.
    // Its list served from elsewhere; the logos' host stays down.
    let lists = FakeUpstream::bind()
        .await
        .text("/list.m3u", "audio/x-mpegurl", listed)
        .start();
    app.stop().await;
    app.config_text = app
        .config_text
        .replace("name = \"LogoUp\"", "name = \"LogoRenamed\"")
        .replace(&format!("{old_base}/list.m3u"), &lists.url("/list.m3u"));
    app.start().await;
    let renamed = logo_of(&app, "One").await;
    assert_ne!(renamed, link, "a link is sealed with its service");
    let path = renamed
        .strip_prefix(&app.base)
        .expect("freesky link")
        .to_string();
    let after = app.get(&path).await;
    assert_eq!(
        after.status(),
        200,
        "the renamed service's logo lost its copy"
    );
    assert_eq!(
        after.bytes().await.expect("image").as_ref(),
        png().as_slice()
    );
}

/// A channel two services list, whose logo only the second gives: its link is sealed
/// under that service (fetched with its headers, not the first source's), and stays
/// the same when an admin pins or reorders the sources (a link that changed would
/// miss the disk copy while the image host is down).
#[tokio::test]
async fn a_logo_is_fetched_through_the_service_that_gave_it_and_its_link_stays() {
    let up = upstream().await;
    let plain = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            "audio/x-mpegurl",
            format!(
                "#EXTM3U\n#EXTINF:-1 tvg-id=\"One.uk\" group-title=\"News\",One\n{}/one.m3u8\n",
                up.base()
            ),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[logos]\nmode = \"cache\"\n\n\
         [[services]]\nname = \"First\"\nkind = \"m3u\"\npriority = 1\nurl = \"{}/list.m3u\"\n\
         headers = {{ \"User-Agent\" = \"first-agent\" }}\n\n\
         [[services]]\nname = \"Up\"\nkind = \"m3u\"\npriority = 2\nurl = \"{}/list.m3u\"\n\
         headers = {{ \"User-Agent\" = \"logo-agent\" }}\n",
        plain.base(),
        up.base()
    ))
    .await;
    let id = app.channel_named("One").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let link = logo_of(&app, "One").await;
    let path = link
        .strip_prefix(&app.base)
        .expect("freesky link")
        .to_string();
    assert_eq!(app.get(&path).await.status(), 200);
    let fetched: Vec<_> = up
        .requests()
        .into_iter()
        .filter(|r| r.path == "/logo/one.png")
        .collect();
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].header("user-agent"), Some("logo-agent"));
    // The channel's own page gives the same link.
    let (_, detail) = app.get_json(&format!("/api/channels/{id}")).await;
    assert_eq!(detail["logo"], link.as_str(), "{detail}");

    let resp = app
        .send_json(
            reqwest::Method::PATCH,
            &format!("/api/channels/{id}"),
            r#"{"sources":["Up"]}"#,
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(logo_of(&app, "One").await, link, "pinning changed the link");
    let resp = app
        .send_json(
            reqwest::Method::PATCH,
            &format!("/api/channels/{id}"),
            r#"{"sources":null}"#,
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(logo_of(&app, "One").await, link);
}

#[tokio::test]
async fn html_oversized_and_private_logos_are_refused_and_counted() {
    let up = upstream().await;
    let app = TestApp::spawn(&config(&up)).await;
    for (name, why) in [
        ("Two", "not an image"),
        ("Three", "larger than 4096"),
        ("Four", "127.0.0.2"),
    ] {
        let link = logo_of(&app, name).await;
        let resp = app.get(&link).await;
        assert_eq!(resp.status(), 502, "{name}");
        let body: serde_json::Value = resp.json().await.expect("json error");
        assert!(
            body["error"].as_str().unwrap_or_default().contains(why),
            "{name}: {body}"
        );
    }
    // A refusal is remembered: asked again, the HTML "logo" is not fetched again.
    let link = logo_of(&app, "Two").await;
    for _ in 0..3 {
        let resp = app.get(&link).await;
        assert_eq!(resp.status(), 502);
        let body: serde_json::Value = resp.json().await.expect("json error");
        assert!(
            body["error"].as_str().unwrap().contains("not an image"),
            "{body}"
        );
    }
    assert_eq!(up.hits("/logo/page.png"), 1);
    // The private address was refused before any connection.
    assert!(up.requests().iter().all(|r| r
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .is_none_or(|h| !h.starts_with("127.0.0.2"))));
    let metrics = app.get_text_ok("/metrics").await;
    for reason in ["html", "too_large"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "freesky_logo_refused_total{{reason=\"{reason}\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("no refusal counted for {reason}:\n{metrics}"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse().expect("a number");
        assert!(n >= 1.0, "{line}");
    }
    // The private address's refusal is counted under its service (named only here).
    let line = metrics
        .lines()
        .find(|l| l.starts_with("freesky_upstream_refused_total{service=\"LogoUp\"}"))
        .unwrap_or_else(|| panic!("no private refusal counted:\n{metrics}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().expect("a number");
    assert!(n >= 1.0, "{line}");
    // Nothing refused went to the cache.
    let index =
        std::fs::read_to_string(app.state_dir().join("logos/index.json")).unwrap_or_default();
    assert!(!index.contains("\"size\""), "{index}");
}

#[tokio::test]
async fn a_tampered_logo_link_is_refused() {
    let up = upstream().await;
    let app = TestApp::spawn(&config(&up)).await;
    let link = logo_of(&app, "One").await;
    let (head, sealed) = link.rsplit_once('/').expect("a /logos/ link");
    let mut bytes = sealed.as_bytes().to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{head}/{}", String::from_utf8(bytes).unwrap());
    for bad in [
        tampered,
        format!("{head}/AAAA"),
        format!("{head}/{sealed}x"),
    ] {
        let resp = app.get(&bad).await;
        assert_eq!(resp.status(), 403, "{bad}");
    }
    // Another server's link (another key) does not open here either.
    let other = TestApp::spawn(&config(&up)).await;
    let foreign = logo_of(&other, "One").await;
    let path = foreign.strip_prefix(&other.base).unwrap();
    assert_eq!(app.get(path).await.status(), 403);
    assert_eq!(
        up.hits("/logo/one.png"),
        0,
        "a refused link reached the upstream"
    );
}

#[tokio::test]
async fn proxy_mode_serves_through_freesky_without_a_disk_cache() {
    let up = upstream().await;
    let app = TestApp::spawn(&config(&up).replace("mode = \"cache\"", "mode = \"proxy\"")).await;
    let link = logo_of(&app, "One").await;
    assert!(link.starts_with(&format!("{}/logos/", app.base)), "{link}");
    for _ in 0..2 {
        let resp = app.get(&link).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.bytes().await.expect("image").as_ref(),
            png().as_slice()
        );
    }
    // Each request went upstream; nothing was kept.
    assert_eq!(up.hits("/logo/one.png"), 2);
    assert!(!app.state_dir().join("logos").exists());
    drop(up);
    assert_eq!(app.get(&link).await.status(), 502);
}

#[tokio::test]
async fn direct_mode_keeps_the_upstream_urls() {
    let up = upstream().await;
    let app = TestApp::spawn(&config(&up).replace("mode = \"cache\"", "mode = \"direct\"")).await;
    assert_eq!(
        logo_of(&app, "One").await,
        format!("{}/logo/one.png", up.base())
    );
    let m3u = app.get_text_ok("/playlist.m3u").await;
    assert!(
        m3u.contains(&format!("tvg-logo=\"{}/logo/one.png\"", up.base())),
        "{m3u}"
    );
    assert!(!m3u.contains("/logos/"), "{m3u}");
}

#[tokio::test]
async fn a_logo_many_clients_ask_for_at_once_is_fetched_once() {
    // A player loading its channel list asks for every logo at once, several clients
    // too. The upstream answers slowly, so the 20 requests overlap; proxy mode keeps
    // nothing, so only the shared fetch can make it one upstream request.
    let b = FakeUpstream::bind().await;
    let base = b.base();
    let up = b
        .text(
            "/list.m3u",
            "audio/x-mpegurl",
            format!(
                "#EXTM3U\n#EXTINF:-1 tvg-logo=\"{base}/logo/slow.png\",Slow\n{base}/slow.m3u8\n"
            ),
        )
        .route(
            "/logo/slow.png",
            axum::routing::get(|| async {
                tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
                ([("content-type", "image/png")], png())
            }),
        )
        .start();
    let cfg = format!(
        "[logos]\nmode = \"proxy\"\n\n[[services]]\nname = \"Up\"\nkind = \"m3u\"\nurl = \"{}/list.m3u\"\n",
        up.base()
    );
    let app = TestApp::spawn(&cfg).await;
    let link = logo_of(&app, "Slow").await;
    let answers = futures::future::join_all((0..20).map(|_| async {
        let resp = app.get(&link).await;
        (resp.status(), resp.bytes().await.expect("body"))
    }))
    .await;
    for (status, body) in &answers {
        assert_eq!(*status, 200);
        assert_eq!(body.as_ref(), png().as_slice());
    }
    assert_eq!(
        up.hits("/logo/slow.png"),
        1,
        "one fetch for 20 overlapping requests"
    );
    // Done: the next request is a fetch of its own (proxy mode keeps nothing).
    assert_eq!(app.get(&link).await.status(), 200);
    assert_eq!(up.hits("/logo/slow.png"), 2);
}

/// An image is told by its bytes, not by the type its upstream gives: a panel's
/// script serving PNG bytes as `text/html` is a logo (served as `image/png`). A logo
/// URL too long for its link to be a URL freesky or a player takes is left out.
#[tokio::test]
async fn a_logo_is_told_by_its_bytes_and_an_overlong_one_is_left_out() {
    let b = FakeUpstream::bind().await;
    let base = b.base();
    let long = |n: usize| format!("/logo/{}.png", "a".repeat(n));
    let (fits, over) = (long(3_900), long(freesky::logos::MAX_URL_BYTES));
    let m3u = format!(
        "#EXTM3U\n\
         #EXTINF:-1 tvg-logo=\"{base}/logo.php?id=5\",Five\n{base}/five.m3u8\n\
         #EXTINF:-1 tvg-logo=\"{base}{fits}\",Six\n{base}/six.m3u8\n\
         #EXTINF:-1 tvg-logo=\"{base}{over}\",Seven\n{base}/seven.m3u8\n"
    );
    let up = b
        .text("/list.m3u", "audio/x-mpegurl", m3u)
        .bytes("/logo.php", "text/html; charset=UTF-8", png())
        .bytes(&fits, "image/png", png())
        .bytes(&over, "image/png", png())
        .start();
    let app = TestApp::spawn(&format!(
        "[logos]\nmode = \"cache\"\n\n\
         [[services]]\nname = \"LogoUp\"\nkind = \"m3u\"\nurl = \"{}/list.m3u\"\n",
        up.base()
    ))
    .await;
    for name in ["Five", "Six"] {
        let link = logo_of(&app, name).await;
        assert!(link.starts_with(&app.url("/logos/")), "{name}: {link}");
        let resp = app.get(&link).await;
        assert_eq!(resp.status(), 200, "{name}: {} bytes", link.len());
        assert_eq!(resp.headers()["content-type"], "image/png", "{name}");
        assert_eq!(resp.bytes().await.unwrap().to_vec(), png(), "{name}");
    }
    assert_eq!(logo_of(&app, "Seven").await, "");
    let playlist = app.get_text_ok("/playlist.m3u").await;
    let seven = playlist
        .lines()
        .find(|l| l.ends_with(",Seven"))
        .expect("Seven is listed");
    assert!(!seven.contains("tvg-logo"), "{seven}");
    assert_eq!(up.hits(&over), 0);
}

/// A channel without a logo of its own shows the icon of the guide channel it takes
/// programmes from (matched by id or by name); a channel with a logo keeps its own. In
/// `cache` mode that icon, too, is served by freesky.
#[tokio::test]
async fn a_channel_without_a_logo_shows_its_guide_channels_icon() {
    let b = FakeUpstream::bind().await;
    let base = b.base();
    let (a, z) = (xmltv_at(-1), xmltv_at(2));
    let m3u = format!(
        "#EXTM3U\n\
         #EXTINF:-1 tvg-id=\"One.uk\" tvg-logo=\"{base}/logo/one.png\",One\n{base}/one.m3u8\n\
         #EXTINF:-1 tvg-id=\"Five.uk\",Five\n{base}/five.m3u8\n\
         #EXTINF:-1,Sixth Sense TV\n{base}/six.m3u8\n\
         #EXTINF:-1 tvg-id=\"Seven.uk\",Seven\n{base}/seven.m3u8\n"
    );
    let epg = format!(
        "<?xml version=\"1.0\"?>\n<tv>\n\
         <channel id=\"One.uk\"><display-name>One</display-name><icon src=\"{base}/logo/guide-one.png\"/></channel>\n\
         <channel id=\"Five.uk\"><display-name>Five</display-name><icon src=\"{base}/logo/five.png\" width=\"64\"/></channel>\n\
         <channel id=\"six.guide\"><icon src=\"{base}/logo/six.png\"></icon><display-name>Sixth Sense TV</display-name></channel>\n\
         <channel id=\"Seven.uk\"><display-name>Seven</display-name><icon src=\"data:image/png;base64,AAAA\"/></channel>\n\
         <programme start=\"{a}\" stop=\"{z}\" channel=\"One.uk\"><title>News</title></programme>\n\
         <programme start=\"{a}\" stop=\"{z}\" channel=\"Five.uk\"><title>Quiz</title></programme>\n\
         <programme start=\"{a}\" stop=\"{z}\" channel=\"six.guide\"><title>Ghosts</title></programme>\n\
         <programme start=\"{a}\" stop=\"{z}\" channel=\"Seven.uk\"><title>Film</title></programme>\n\
         </tv>\n"
    );
    let up = b
        .text("/list.m3u", "audio/x-mpegurl", m3u)
        .text("/epg.xml", "application/xml", epg)
        .bytes("/logo/five.png", "image/png", png())
        .start();
    let service = format!(
        "[[services]]\nname = \"IconUp\"\nkind = \"m3u\"\nurl = \"{0}/list.m3u\"\nepg_url = \"{0}/epg.xml\"\n",
        up.base()
    );
    // The icon of the guide channel each of ours shows, by our channel's name.
    let icons = |epg: &str| -> Vec<(String, String)> {
        epg.split("<channel id=\"")
            .skip(1)
            .filter_map(|c| {
                let c = c.split("</channel>").next()?;
                let name = c.split("<display-name>").nth(1)?.split('<').next()?;
                let icon = c.split("<icon src=\"").nth(1)?.split('"').next()?;
                Some((name.to_string(), icon.to_string()))
            })
            .collect()
    };

    let direct = TestApp::spawn(&service).await;
    let epg = direct.get_text_ok("/epg.xml").await;
    let ups = up.base();
    assert_eq!(
        icons(&epg),
        vec![
            ("One".to_string(), format!("{ups}/logo/one.png")),
            ("Five".to_string(), format!("{ups}/logo/five.png")),
            ("Sixth Sense TV".to_string(), format!("{ups}/logo/six.png")),
        ],
        "{epg}"
    );

    let cache = TestApp::spawn(&format!("[logos]\nmode = \"cache\"\n\n{service}")).await;
    let epg = cache.get_text_ok("/epg.xml").await;
    let shown = icons(&epg);
    assert_eq!(shown.len(), 3, "{epg}");
    let (_, five) = shown
        .iter()
        .find(|(name, _)| name == "Five")
        .expect("Five has an icon");
    assert!(
        five.starts_with(&format!("{}/logos/", cache.base)),
        "{five}"
    );
    let resp = cache.get(&five.replace("&amp;", "&")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.expect("icon").as_ref(), png().as_slice());
}
