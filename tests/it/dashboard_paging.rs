//! The dashboard at scale: with a lineup of thousands of channels (an M3U list served by
//! a local upstream), `/` stays small and holds no channel rows, and the paged channel
//! API (`GET /api/channels`) answers totals, offsets, the search (accents and case
//! ignored), the group and service filters and the group counts, with the very channel
//! objects `/api/channels/all` lists; bad paging parameters are JSON 400s.

use serde_json::Value;

use crate::common::{assert_api_error, FakeUpstream, TestApp, M3U_TYPE};

/// Channels of the big list.
const BIG: usize = 3000;
/// Its groups, one per channel in turn.
const GROUPS: [&str; 4] = ["News", "Sports", "Kids", "Culture"];
/// Channels of the small list (its own group and service).
const SMALL: usize = 5;
/// The page size when `limit` is not given.
const DEFAULT_LIMIT: usize = 50;

/// Channel `i` of a big list: every tenth is named with accents (the browser test
/// of the dashboard lists the same names).
pub(crate) fn big_name(i: usize) -> String {
    if i.is_multiple_of(10) {
        format!("Télé Matin {i:04}")
    } else {
        format!("Channel {i:04}")
    }
}

/// Two M3U services: `Big` (`BIG` channels in `GROUPS`) and `Small` (`SMALL` in
/// "Extras").
async fn setup() -> (TestApp, FakeUpstream) {
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let mut big = String::from("#EXTM3U\n");
    for i in 0..BIG {
        big.push_str(&format!(
            "#EXTINF:-1 tvg-id=\"big{i}.example\" group-title=\"{}\",{}\n{o}/live/{i}.m3u8\n",
            GROUPS[i % GROUPS.len()],
            big_name(i)
        ));
    }
    let mut small = String::from("#EXTM3U\n");
    for i in 0..SMALL {
        small.push_str(&format!(
            "#EXTINF:-1 tvg-id=\"small{i}.example\" group-title=\"Extras\",Small Extra {i}\n{o}/small/{i}.m3u8\n"
        ));
    }
    let up = up
        .text("/big.m3u", M3U_TYPE, big)
        .text("/small.m3u", M3U_TYPE, small)
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Big\"\nkind = \"m3u\"\nurl = \"{o}/big.m3u\"\npriority = 1\n\n\
         [[services]]\nname = \"Small\"\nkind = \"m3u\"\nurl = \"{o}/small.m3u\"\npriority = 2\n"
    ))
    .await;
    (app, up)
}

/// `GET /api/channels{query}`, which must answer 200 with a page object.
async fn page(app: &TestApp, query: &str) -> Value {
    let path = format!("/api/channels{query}");
    let (status, body) = app.get_json(&path).await;
    assert_eq!(status, 200, "{path}: {body}");
    for key in ["total", "offset", "limit", "items", "groups"] {
        assert!(body.get(key).is_some(), "{path}: no `{key}` in the page");
    }
    body
}

fn total(p: &Value) -> u64 {
    p["total"].as_u64().expect("total is a number")
}

fn items(p: &Value) -> &Vec<Value> {
    p["items"].as_array().expect("items is an array")
}

fn names(p: &Value) -> Vec<&str> {
    items(p)
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect()
}

#[tokio::test]
async fn the_page_stays_small_and_holds_no_channel_rows() {
    let (app, _up) = setup().await;
    let all = app.channels().await;
    assert_eq!(all.len(), BIG + SMALL, "the lineup");

    let resp = app.get("/").await;
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.expect("body");
    assert!(
        html.len() < 200 * 1024,
        "/ is {} bytes with {} channels: the page must stay under 200 KB",
        html.len(),
        all.len()
    );
    assert!(
        !html.contains("<tr data-channel="),
        "/ holds channel rows: the script fetches them"
    );
    for i in [1, 1234, BIG - 1] {
        let name = big_name(i);
        assert!(!html.contains(&name), "/ names the channel {name:?}");
    }
    // What the script needs is there: the browser's controls and the lineup's size.
    for needle in [
        "id=\"channels\"",
        "id=\"search\"",
        "id=\"group\"",
        "id=\"channel-count\"",
        "id=\"channel-next\"",
        "/dashboard.js?v=",
    ] {
        assert!(html.contains(needle), "/ lacks {needle}");
    }
    assert!(
        html.contains(&format!(">{}</span>", BIG + SMALL)),
        "/ does not show the lineup's size {}",
        BIG + SMALL
    );

    // A search without JavaScript (a submitted form) gets the first page of matches,
    // not all of them.
    let html = app.get_text_ok("/?q=channel").await;
    let rows = html.matches("<tr data-channel=").count();
    assert_eq!(rows, DEFAULT_LIMIT, "rows of /?q=channel");
    assert!(
        html.len() < 200 * 1024,
        "/?q=channel is {} bytes",
        html.len()
    );
    let html = app.get_text_ok("/?service=Small").await;
    assert_eq!(
        html.matches("<tr data-channel=").count(),
        SMALL,
        "rows of /?service=Small"
    );
    assert!(
        html.contains("<option value=\"Small\" selected>"),
        "the service is kept"
    );
}

#[tokio::test]
async fn channels_are_paged_searched_filtered_and_counted_on_the_server() {
    let (app, _up) = setup().await;
    let all = app.channels().await;
    let n = all.len();
    assert_eq!(n, BIG + SMALL, "the lineup");

    // The first page, by default 50 channels: the objects of /api/channels/all.
    let first = page(&app, "").await;
    assert_eq!(total(&first), n as u64);
    assert_eq!(first["offset"], 0);
    assert_eq!(first["limit"], DEFAULT_LIMIT);
    assert_eq!(items(&first)[..], all[..DEFAULT_LIMIT]);

    // Any page, and the end of the list.
    let p = page(&app, "?offset=1200&limit=100").await;
    assert_eq!(
        (p["offset"].clone(), p["limit"].clone()),
        (1200.into(), 100.into())
    );
    assert_eq!(items(&p)[..], all[1200..1300]);
    let p = page(&app, &format!("?offset={}&limit=500", n - 7)).await;
    assert_eq!(items(&p)[..], all[n - 7..]);
    let p = page(&app, &format!("?offset={}", n + 10)).await;
    assert_eq!(total(&p), n as u64, "past the end");
    assert!(items(&p).is_empty(), "past the end");
    let p = page(&app, "?limit=0").await;
    assert_eq!((total(&p), items(&p).len()), (n as u64, 0), "counts only");

    // The group counts of the whole lineup, sorted by name.
    let groups: Vec<(String, u64)> = first["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["name"].as_str().expect("name").to_string(),
                g["count"].as_u64().expect("count"),
            )
        })
        .collect();
    let per_group = (BIG / GROUPS.len()) as u64;
    let want: Vec<(String, u64)> = [
        ("Culture", per_group),
        ("Extras", SMALL as u64),
        ("Kids", per_group),
        ("News", per_group),
        ("Sports", per_group),
    ]
    .into_iter()
    .map(|(g, c)| (g.to_string(), c))
    .collect();
    assert_eq!(groups, want, "groups");

    // The search ignores case and accents, in names as in groups.
    let tele = (BIG / 10) as u64;
    for q in ["t%C3%A9l%C3%A9", "TELE", "Tele%20matin", "T%C3%89L%C3%89"] {
        let p = page(&app, &format!("?q={q}&limit=500")).await;
        assert_eq!(total(&p), tele, "?q={q}");
        assert!(
            names(&p).iter().all(|n| n.starts_with("Télé Matin")),
            "?q={q}: {:?}",
            names(&p)
        );
    }
    let p = page(&app, "?q=extras").await;
    assert_eq!(total(&p), SMALL as u64, "?q=extras matches the group");
    let p = page(&app, "?q=nothing-like-this").await;
    assert_eq!((total(&p), items(&p).len()), (0, 0));

    // Group and service filters, alone and with the search; the group counts follow
    // the search and the service but not the group filter.
    let p = page(&app, "?group=Kids&limit=500").await;
    assert_eq!(total(&p), per_group);
    assert!(items(&p).iter().all(|c| c["group"] == "Kids"));
    assert_eq!(p["groups"].as_array().expect("groups").len(), want.len());
    let p = page(&app, "?q=tele&group=News&offset=10&limit=20").await;
    assert_eq!(
        total(&p),
        (BIG / 20) as u64,
        "Télé in News: every twentieth"
    );
    let expected: Vec<String> = (0..BIG)
        .filter(|i| i.is_multiple_of(20))
        .skip(10)
        .take(20)
        .map(big_name)
        .collect();
    assert_eq!(names(&p), expected);
    // Every tenth channel is even, so in News (i % 4 == 0) or Kids (i % 4 == 2).
    assert_eq!(
        p["groups"],
        serde_json::json!([
            {"name": "Kids", "count": BIG / 20},
            {"name": "News", "count": BIG / 20}
        ]),
        "?q=tele counts each group's Télé channels"
    );
    let p = page(&app, "?service=Small").await;
    assert_eq!(total(&p), SMALL as u64);
    assert!(names(&p).iter().all(|n| n.starts_with("Small Extra")));
    assert_eq!(p["groups"][0]["name"], "Extras");
    let p = page(&app, "?service=Nobody").await;
    assert_eq!(total(&p), 0);

    // The page carries what is on and who watches, by id, for its channels only.
    let live = first["live"].as_object().expect("live");
    assert_eq!(live.len(), DEFAULT_LIMIT);
    let id = all[0]["id"].as_str().expect("id");
    assert_eq!(live[id]["viewers"], 0);
}

#[tokio::test]
async fn bad_paging_parameters_are_json_400s() {
    let (app, _up) = setup().await;
    for (query, word) in [
        ("?limit=501", "limit"),
        ("?limit=100000", "limit"),
        ("?limit=-1", "limit"),
        ("?limit=ten", "limit"),
        ("?offset=-5", "offset"),
        ("?offset=1.5", "offset"),
        ("?offset=99999999999999999999999", "offset"),
    ] {
        let body = assert_api_error(app.get(&format!("/api/channels{query}")).await, 400).await;
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(word),
            "{query}: the error does not name `{word}`: {error}"
        );
    }
    // The largest page is fine.
    let p = page(&app, "?limit=500").await;
    assert_eq!(items(&p).len(), 500);
}

#[tokio::test]
async fn many_long_group_names_do_not_grow_the_page() {
    // 400 groups of 1,000-character names: the page offers the first ones only (the
    // script fills the list from the API).
    let up = FakeUpstream::bind().await;
    let o = up.base();
    let mut list = String::from("#EXTM3U\n");
    for i in 0..400 {
        let group = format!("{i:03}{}", "g".repeat(997));
        list.push_str(&format!(
            "#EXTINF:-1 tvg-id=\"long{i}.example\" group-title=\"{group}\",Long {i}\n{o}/live/{i}.m3u8\n"
        ));
    }
    let _up = up.text("/long.m3u", M3U_TYPE, list).start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Long\"\nkind = \"m3u\"\nurl = \"{o}/long.m3u\"\n"
    ))
    .await;
    assert_eq!(app.channels().await.len(), 400, "the lineup");
    let html = app.get_text_ok("/").await;
    assert!(
        html.len() < 100 * 1024,
        "/ is {} bytes with 400 groups of 1,000 characters",
        html.len()
    );
    assert!(
        html.contains("<option value=\"000ggg"),
        "the first groups are offered"
    );
    let p = page(&app, "?limit=0").await;
    assert_eq!(
        p["groups"].as_array().expect("groups").len(),
        400,
        "the API lists them all"
    );
}

/// Channels without a group are counted and chosen under "Uncategorized", the name
/// players are shown them under: `total` is the sum of the group counts.
#[tokio::test]
async fn channels_without_a_group_are_counted_and_chosen_as_uncategorized() {
    let up = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1 group-title=\"News\",Grouped\nhttp://127.0.0.1:9/a.m3u8\n\
             #EXTINF:-1,Loose One\nhttp://127.0.0.1:9/b.m3u8\n\
             #EXTINF:-1 group-title=\"\",Loose Two\nhttp://127.0.0.1:9/c.m3u8\n",
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"L\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        up.url("/list.m3u")
    ))
    .await;
    let p = page(&app, "").await;
    assert_eq!(
        p["groups"],
        serde_json::json!([
            {"name": "News", "count": 1},
            {"name": "Uncategorized", "count": 2}
        ]),
        "{p}"
    );
    let p = page(&app, "?group=Uncategorized").await;
    let names: Vec<&str> = p["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["Loose One", "Loose Two"]);
}
