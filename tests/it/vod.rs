//! Movies and series: a fake Xtream panel and an M3U list with file entries, merged
//! into one catalogue; the API's search and paging; ids across a restart; bad panel
//! answers keeping the last good catalogue; accounts' visibility; and an Xtream client
//! library listing and playing movies and episodes through freesky.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query};
use axum::routing::get;
use serde_json::{json, Value};

use crate::common::{respond, FakeUpstream, TestApp, HLS_TYPE, M3U_TYPE};

/// The panel's own credentials (freesky's upstream account).
const PU: &str = "pu";
const PP: &str = "pp";

/// What the fake panel answers to its movie and series lists: `"good"`, or a bad
/// answer (`"html"`, `"{}"`, `"[]"`).
type Mode = Arc<Mutex<&'static str>>;

/// A fake Xtream panel: one live channel, two movies (Amélie with a TMDB id, Heat),
/// one series (The Wire, two episodes in its details), and their media.
async fn panel(mode: Mode, movie: Vec<u8>) -> FakeUpstream {
    let api = move |Query(q): Query<HashMap<String, String>>| {
        let mode = *mode.lock().unwrap();
        async move {
            if q.get("username").map(String::as_str) != Some(PU)
                || q.get("password").map(String::as_str) != Some(PP)
            {
                return respond(
                    200,
                    "application/json",
                    json!({"user_info": {"auth": 0}}).to_string(),
                );
            }
            let action = q.get("action").map(String::as_str).unwrap_or("");
            let bad = match (mode, action) {
                ("html", "get_vod_streams" | "get_series") => {
                    Some("<html><body>Suspended</body></html>")
                }
                ("{}", "get_vod_streams" | "get_series") => Some("{}"),
                ("[]", "get_vod_streams" | "get_series") => Some("[]"),
                _ => None,
            };
            if let Some(body) = bad {
                let ct = if body.starts_with('<') {
                    "text/html"
                } else {
                    "application/json"
                };
                return respond(200, ct, body);
            }
            let body = match action {
                "" => json!({
                    "user_info": {"username": PU, "password": PP, "auth": 1, "status": "Active",
                        "exp_date": null, "active_cons": "0", "max_connections": "5"},
                    "server_info": {"url": "panel.example", "port": "80"}
                }),
                "get_live_categories" => json!([{"category_id": "1", "category_name": "News"}]),
                "get_live_streams" => json!([{"num": 1, "name": "Panel News", "stream_id": 1,
                    "category_id": "1", "stream_type": "live"}]),
                "get_vod_categories" => json!([
                    {"category_id": "5", "category_name": "Drama", "parent_id": 0},
                    {"category_id": 6, "category_name": "Action", "parent_id": 0}
                ]),
                // Panels mix strings and numbers for the same fields.
                "get_vod_streams" => json!([
                    {"num": 1, "name": "Amélie (2001)", "stream_type": "movie", "stream_id": 101,
                     "stream_icon": "http://img.example/amelie.jpg", "rating": "8.3", "tmdb": "194",
                     "added": "1600000000", "category_id": "5", "container_extension": "mp4"},
                    {"num": "2", "name": "Heat", "year": 1995, "stream_type": "movie", "stream_id": "102",
                     "stream_icon": "", "rating": 8, "category_id": 6, "container_extension": "mkv"},
                    {"num": 3, "name": "", "stream_id": 103, "category_id": "5"}
                ]),
                "get_series_categories" => json!([{"category_id": "7", "category_name": "Crime"}]),
                "get_series" => json!([
                    {"num": 1, "name": "The Wire", "series_id": 201, "cover": "http://img.example/wire.jpg",
                     "category_id": "7", "releaseDate": "2002-06-02", "rating": "9.3",
                     "plot": "Baltimore, seen by its drug dealers and those who hunt them.",
                     "cast": "Dominic West, Idris Elba", "director": "David Simon", "genre": "Crime, Drama",
                     "episode_run_time": "59", "last_modified": "1700000000"}
                ]),
                "get_vod_info" if q.get("vod_id").map(String::as_str) == Some("101") => json!({
                    "info": {"name": "Amélie", "plot": "A shy waitress.", "duration_secs": 7320,
                             "genre": "Comedy", "tmdb_id": "194", "backdrop_path": ["http://img.example/b.jpg"]},
                    "movie_data": {"stream_id": 101, "container_extension": "mp4"}
                }),
                // Heat's list entry has no poster; its details do.
                "get_vod_info" if q.get("vod_id").map(String::as_str) == Some("102") => json!({
                    "info": {"name": "Heat", "movie_image": "http://img.example/heat.jpg"},
                    "movie_data": {"stream_id": 102, "container_extension": "mkv"}
                }),
                "get_vod_info" => json!({"info": [], "movie_data": []}),
                "get_series_info" if q.get("series_id").map(String::as_str) == Some("201") => {
                    json!({
                        "seasons": [],
                        "info": {"name": "The Wire", "plot": "Baltimore.", "rating": "9.3",
                                 "backdrop_path": "http://img.example/wire-b.jpg",
                                 "cast": "Dominic West, Idris Elba", "director": "David Simon",
                                 "genre": "Crime, Drama", "releaseDate": "2002-06-02", "episode_run_time": "59"},
                        "episodes": {"1": [
                            {"id": "3001", "episode_num": 1, "title": "The Target", "container_extension": "mp4", "season": 1,
                             "added": "1600000123",
                             "info": {"plot": "A murder trial.", "duration_secs": 3720, "duration": "01:02:00",
                                      "movie_image": "http://img.example/wire-1.jpg", "rating": 8.1,
                                      "releasedate": "2002-06-02"}},
                            {"id": 3002, "episode_num": "2", "title": "The\nDetail", "container_extension": "../../x?y"}
                        ]}
                    })
                }
                _ => json!([]),
            };
            respond(200, "application/json", body.to_string())
        }
    };
    let movie = Arc::new(movie);
    let media = move |Path((u, p, file)): Path<(String, String, String)>| {
        let movie = movie.clone();
        async move {
            if u != PU || p != PP {
                return respond(403, "text/plain", "bad credentials");
            }
            match file.as_str() {
                "101.mp4" => respond(200, "video/mp4", movie.to_vec()),
                "102.mkv" => respond(200, "video/x-matroska", "heat-bytes"),
                "3001.mp4" => respond(200, "video/mp4", "wire-s01e01-bytes"),
                "3002.mp4" => respond(200, "video/mp4", "wire-s01e02-bytes"),
                _ => respond(404, "text/plain", "no such file"),
            }
        }
    };
    FakeUpstream::bind()
        .await
        .route("/player_api.php", get(api))
        .route("/movie/{u}/{p}/{file}", get(media.clone()))
        .route("/series/{u}/{p}/{file}", get(media))
        .start()
}

/// An M3U list with two live channels (one in a "Movies" group: a group alone does
/// not make a movie), two movies (Amélie again, without TMDB id), two episodes of
/// "Show" and an entry without a usable URL.
async fn files() -> FakeUpstream {
    let fake = FakeUpstream::bind().await;
    let b = fake.base();
    let list = format!(
        "#EXTM3U\n\
         #EXTINF:-1 group-title=\"News\",News One\n{b}/news.m3u8\n\
         #EXTINF:-1 group-title=\"Movies\",Movies 24/7\n{b}/movies247.m3u8\n\
         #EXTINF:-1 tvg-logo=\"{b}/amelie.jpg\" group-title=\"Drama\",Amelie (2001)\n{b}/files/amelie.mp4\n\
         #EXTINF:-1 group-title=\"Sci-Fi\",Solaris (1972)\n{b}/files/solaris.mkv\n\
         #EXTINF:-1 group-title=\"Shows\",Show S01E01\n{b}/series/x/y/1.mp4\n\
         #EXTINF:-1 group-title=\"Shows\",Show S01E02\n{b}/files/show.s01e02.mp4\n\
         #EXTINF:-1 group-title=\"Movies\",Bad (2000)\nftp://files.example/bad.mp4\n"
    );
    fake.text("/list.m3u", M3U_TYPE, list)
        .text(
            "/news.m3u8",
            HLS_TYPE,
            crate::common::live_playlist(&["n0.ts"]),
        )
        .text(
            "/movies247.m3u8",
            HLS_TYPE,
            crate::common::live_playlist(&["m0.ts"]),
        )
        .bytes(
            "/files/amelie.mp4",
            "video/mp4",
            b"m3u-amelie-bytes".to_vec(),
        )
        .bytes(
            "/files/solaris.mkv",
            "video/x-matroska",
            b"solaris-bytes".to_vec(),
        )
        .bytes(
            "/series/x/y/1.mp4",
            "video/mp4",
            b"show-s01e01-bytes".to_vec(),
        )
        .bytes(
            "/files/show.s01e02.mp4",
            "video/mp4",
            b"show-s01e02-bytes".to_vec(),
        )
        .start()
}

fn config(panel: &FakeUpstream, files: &FakeUpstream) -> String {
    format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\n\n\
         [[services]]\nname = \"Panel\"\nkind = \"xtream\"\npriority = 1\nbase_url = \"{}\"\nusername = \"{PU}\"\npassword = \"{PP}\"\n\n\
         [[services]]\nname = \"Files\"\nkind = \"m3u\"\npriority = 2\nurl = \"{}/list.m3u\"\n\n\
         [[users]]\nname = \"carol\"\npassword = \"carol-pw\"\ngroups = [\"Drama\"]\nmax_connections = 0\n\n\
         [[users]]\nname = \"dave\"\npassword = \"dave-pw\"\nservices = [\"Files\"]\nmax_connections = 0\n\n\
         [[users]]\nname = \"erin\"\npassword = \"erin-pw\"\nmax_connections = 0\n",
        panel.base(),
        files.base()
    )
}

struct Setup {
    app: TestApp,
    mode: Mode,
    panel: FakeUpstream,
    files: FakeUpstream,
}

async fn setup_with(movie: Vec<u8>) -> Setup {
    let mode: Mode = Arc::new(Mutex::new("good"));
    let panel = panel(mode.clone(), movie).await;
    let files = files().await;
    let app = TestApp::spawn(&config(&panel, &files)).await;
    Setup {
        app,
        mode,
        panel,
        files,
    }
}

async fn setup() -> Setup {
    setup_with(b"panel-amelie-bytes".to_vec()).await
}

async fn ok_json(app: &TestApp, path: &str) -> Value {
    let (status, body) = app.get_json(path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

async fn bytes_of(app: &TestApp, path: &str) -> (u16, Vec<u8>) {
    let resp = app.get(path).await;
    let status = resp.status().as_u16();
    (status, resp.bytes().await.expect("body").to_vec())
}

/// `(title, sources)` of every item of a page.
fn titles(page: &Value) -> Vec<(String, Vec<String>)> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {page}"))
        .iter()
        .map(|i| {
            let sources = i["sources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            (i["title"].as_str().unwrap().to_string(), sources)
        })
        .collect()
}

fn id_of(page: &Value, title: &str) -> u64 {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["title"] == title)
        .unwrap_or_else(|| panic!("no {title:?} in {page}"))["id"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn movies_and_series_merge_across_a_panel_and_an_m3u_list_and_play() {
    let s = setup().await;
    let app = &s.app;
    // The lineup in first (the catalogue is loaded on its first request)...
    app.get_text_ok("/playlist.m3u").await;
    let movies = ok_json(app, "/api/movies").await;
    // ...then its read of the list served the catalogue too: one download.
    assert_eq!(s.files.hits("/list.m3u"), 1);
    assert_eq!(
        titles(&movies),
        [
            (
                "Amélie (2001)".to_string(),
                vec!["Panel".to_string(), "Files".to_string()]
            ),
            ("Heat".to_string(), vec!["Panel".to_string()]),
            ("Solaris (1972)".to_string(), vec!["Files".to_string()]),
        ]
    );
    assert_eq!(movies["total"], 3);
    let amelie = &movies["items"][0];
    assert_eq!(amelie["year"], 2001);
    assert_eq!(amelie["category"], "Drama");
    assert_eq!(amelie["poster"], "http://img.example/amelie.jpg");
    // File entries left the live lineup; a "Movies" group alone did not.
    assert_eq!(
        app.channel_names().await,
        ["Movies 24/7", "News One", "Panel News"]
    );

    let id = id_of(&movies, "Amélie (2001)");
    let detail = ok_json(app, &format!("/api/movies/{id}")).await;
    assert_eq!(detail["plot"], "A shy waitress.");
    assert_eq!(detail["duration"], 7320);
    assert_eq!(detail["tmdb"], 194);
    assert_eq!(detail["stream"], format!("/api/movie/{id}"));
    // The panel first (priority 1); the list's copy is the fallback.
    assert_eq!(
        bytes_of(app, &format!("/api/movie/{id}")).await,
        (200, b"panel-amelie-bytes".to_vec())
    );
    let solaris = id_of(&movies, "Solaris (1972)");
    assert_eq!(
        bytes_of(app, &format!("/api/movie/{solaris}.mkv")).await,
        (200, b"solaris-bytes".to_vec())
    );

    let series = ok_json(app, "/api/series").await;
    assert_eq!(
        titles(&series),
        [
            ("Show".to_string(), vec!["Files".to_string()]),
            ("The Wire".to_string(), vec!["Panel".to_string()]),
        ]
    );
    for (name, want) in [
        (
            "The Wire",
            [
                ("The Target", "wire-s01e01-bytes"),
                // Its title written on two lines and its extension a path in the
                // panel's details: one line, and `mp4` stands in.
                ("The Detail", "wire-s01e02-bytes"),
            ],
        ),
        (
            "Show",
            [
                ("Show S01E01", "show-s01e01-bytes"),
                ("Show S01E02", "show-s01e02-bytes"),
            ],
        ),
    ] {
        let id = id_of(&series, name);
        let detail = ok_json(app, &format!("/api/series/{id}")).await;
        let season = &detail["seasons"][0];
        assert_eq!(season["season"], 1, "{detail}");
        let episodes = season["episodes"].as_array().unwrap();
        assert_eq!(episodes.len(), 2, "{detail}");
        for (e, (title, bytes)) in episodes.iter().zip(want) {
            assert_eq!(e["title"], title);
            let stream = e["stream"].as_str().unwrap();
            assert_eq!(stream, format!("/api/episode/{}", e["id"]));
            assert_eq!(
                bytes_of(app, stream).await,
                (200, bytes.as_bytes().to_vec())
            );
        }
    }

    let files = app.service_status("Files").await;
    assert_eq!(files["movie_count"], 2, "{files}");
    assert_eq!(files["series_count"], 1, "{files}");
    assert!(files["vod_skipped"].as_u64().unwrap() >= 1, "{files}");
    let panel = app.service_status("Panel").await;
    assert_eq!(panel["movie_count"], 2, "{panel}");
    assert_eq!(panel["vod_error"], Value::Null, "{panel}");
    assert_eq!(panel["vod_skipped"], 1, "{panel}");

    let m3u = app.get_text_ok("/vod.m3u").await;
    assert!(m3u.starts_with("#EXTM3U\n"), "{m3u}");
    assert_eq!(m3u.matches("#EXTINF").count(), 3, "{m3u}");
    assert!(
        m3u.contains(&format!("{}/api/movie/{id}.mp4\n", app.url(""))),
        "{m3u}"
    );
    assert!(
        m3u.contains("group-title=\"Sci-Fi\",Solaris (1972)"),
        "{m3u}"
    );
    // A title without a poster has no tvg-logo (as /playlist.m3u), one with has it.
    assert!(!m3u.contains("tvg-logo=\"\""), "{m3u}");
    assert!(m3u.contains(" tvg-logo=\"http://"), "{m3u}");
    // Unknown titles are 404.
    assert_eq!(app.get("/api/movies/999999").await.status(), 404);
    assert_eq!(app.get("/api/episode/999999").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_ignores_case_and_accents_and_pages() {
    let s = setup().await;
    let app = &s.app;
    for q in ["amelie", "AMÉL", "amÉlie%202001"] {
        let page = ok_json(app, &format!("/api/movies?q={q}")).await;
        assert_eq!(titles(&page).len(), 1, "{q}: {page}");
        assert_eq!(page["items"][0]["title"], "Amélie (2001)");
    }
    let page = ok_json(app, "/api/movies?q=zzz").await;
    assert_eq!(page["total"], 0);
    let drama = ok_json(app, "/api/movies?category=drama").await;
    assert_eq!(titles(&drama).len(), 1, "{drama}");
    let cats: Vec<(String, u64)> = drama["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        cats,
        [
            ("Action".into(), 1),
            ("Drama".into(), 1),
            ("Sci-Fi".into(), 1)
        ]
    );
    let p1 = ok_json(app, "/api/movies?offset=0&limit=2").await;
    let p2 = ok_json(app, "/api/movies?offset=2&limit=2").await;
    assert_eq!(
        (p1["total"].as_u64(), p2["total"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(
        (p1["limit"].as_u64(), p2["offset"].as_u64()),
        (Some(2), Some(2))
    );
    let names: Vec<String> = titles(&p1)
        .into_iter()
        .chain(titles(&p2))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["Amélie (2001)", "Heat", "Solaris (1972)"]);
    let wire = ok_json(app, "/api/series?q=wire").await;
    assert_eq!(titles(&wire).len(), 1, "{wire}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_stay_the_same_after_a_restart() {
    let mut s = setup().await;
    let movies = ok_json(&s.app, "/api/movies").await;
    let series = ok_json(&s.app, "/api/series").await;
    let wire = id_of(&series, "The Wire");
    let detail = ok_json(&s.app, &format!("/api/series/{wire}")).await;
    let episode = detail["seasons"][0]["episodes"][1]["id"].as_u64().unwrap();
    s.app.restart().await;
    // The episode plays after the restart without its series being opened first.
    assert_eq!(
        bytes_of(&s.app, &format!("/api/episode/{episode}")).await,
        (200, b"wire-s01e02-bytes".to_vec())
    );
    assert_eq!(
        ok_json(&s.app, "/api/movies").await["items"],
        movies["items"]
    );
    assert_eq!(
        ok_json(&s.app, "/api/series").await["items"],
        series["items"]
    );
    let again = ok_json(&s.app, &format!("/api/series/{wire}")).await;
    assert_eq!(again["seasons"], detail["seasons"]);
}

/// A restart while the panel cannot list its titles starts with the movies and
/// series it last listed (kept in `state_dir/vod/`), as live channel lists are kept,
/// and answers at once: players do not show an empty catalogue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_the_panel_is_down_keeps_its_movies_and_series() {
    let mut s = setup().await;
    let movies = ok_json(&s.app, "/api/movies").await;
    let series = ok_json(&s.app, "/api/series").await;
    assert_eq!(movies["total"], 3, "{movies}");
    // Written in the background: each service's two lists.
    let kept = s.app.state_dir().join("vod");
    for _ in 0..50 {
        let files = std::fs::read_dir(&kept).map_or(0, |d| d.count());
        if files >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    *s.mode.lock().unwrap() = "html";
    s.app.restart().await;
    let again = ok_json(&s.app, "/api/movies").await;
    assert_eq!(again["items"], movies["items"]);
    assert_eq!(
        ok_json(&s.app, "/api/series").await["items"],
        series["items"]
    );
    // The refresh the first request started says why the panel's lists are old.
    let mut error = Value::Null;
    for _ in 0..50 {
        error = s.app.service_status("Panel").await["vod_error"].clone();
        if error.is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        error.as_str().is_some_and(|e| e.contains("HTML")),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_panel_answers_keep_the_last_good_catalogue_and_the_live_lineup() {
    let s = setup().await;
    let app = &s.app;
    let before = ok_json(app, "/api/movies").await;
    assert_eq!(before["total"], 3);
    for (mode, reason) in [
        ("html", "HTML"),
        ("{}", "an object where a list was expected"),
        ("[]", "an empty list"),
    ] {
        *s.mode.lock().unwrap() = mode;
        let resp = app.post("/api/vod/refresh").await;
        assert_eq!(resp.status(), 200);
        let panel = app.service_status("Panel").await;
        let error = panel["vod_error"]
            .as_str()
            .unwrap_or_else(|| panic!("{mode}: {panel}"));
        assert!(error.contains(reason), "{mode}: {error}");
        assert!(
            (error.contains("get_vod_streams") && error.contains("get_series"))
                || (error.contains("movie: ") && error.contains("series: ")),
            "{error}"
        );
        assert_eq!(panel["movie_count"], 2, "{panel}");
        let after = ok_json(app, "/api/movies").await;
        assert_eq!(after["items"], before["items"], "{mode}");
        assert_eq!(ok_json(app, "/api/series").await["total"], 2);
        assert_eq!(
            app.channel_names().await,
            ["Movies 24/7", "News One", "Panel News"]
        );
    }
    *s.mode.lock().unwrap() = "good";
    app.post("/api/vod/refresh").await;
    assert_eq!(app.service_status("Panel").await["vod_error"], Value::Null);
}

/// A panel with no titles at its first read is an empty catalogue, not an error; an
/// empty answer after a good one keeps the good one (the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panel_without_titles_is_an_empty_catalogue_not_an_error() {
    let s = setup().await;
    *s.mode.lock().unwrap() = "[]";
    let movies = ok_json(&s.app, "/api/movies").await;
    assert_eq!(
        movies["total"], 2,
        "the file service's movies only: {movies}"
    );
    let panel = s.app.service_status("Panel").await;
    assert_eq!(panel["vod_error"], Value::Null, "{panel}");
    assert_eq!(panel["movie_count"], 0, "{panel}");
    *s.mode.lock().unwrap() = "good";
    s.app.post("/api/vod/refresh").await;
    assert_eq!(s.app.service_status("Panel").await["movie_count"], 2);
}

async fn xtream(app: &TestApp, user: &str, action: &str) -> Value {
    ok_json(
        app,
        &format!("/player_api.php?username={user}&password={user}-pw&action={action}"),
    )
    .await
}

fn names(list: &Value, key: &str) -> Vec<String> {
    let mut out: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|v| v[key].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_see_only_their_groups_and_services() {
    let s = setup().await;
    let app = &s.app;
    let all = xtream(app, "erin", "get_vod_streams").await;
    assert_eq!(
        names(&all, "name"),
        ["Amélie (2001)", "Heat", "Solaris (1972)"]
    );
    let heat = all
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "Heat")
        .unwrap();
    let heat_id = heat["stream_id"].as_u64().unwrap();
    assert_eq!(heat["container_extension"], "mkv");
    assert_eq!(heat["direct_source"], "");
    assert_eq!(
        bytes_of(app, &format!("/movie/erin/erin-pw/{heat_id}.mkv")).await,
        (200, b"heat-bytes".to_vec())
    );

    // carol: only the Drama category.
    assert_eq!(
        names(&xtream(app, "carol", "get_vod_streams").await, "name"),
        ["Amélie (2001)"]
    );
    assert_eq!(
        names(
            &xtream(app, "carol", "get_vod_categories").await,
            "category_name"
        ),
        ["Drama"]
    );
    assert_eq!(xtream(app, "carol", "get_series").await, json!([]));
    let info = xtream(app, "carol", &format!("get_vod_info&vod_id={heat_id}")).await;
    assert_eq!(info, json!({"info": [], "movie_data": []}));
    assert_eq!(
        app.get(&format!("/movie/carol/carol-pw/{heat_id}.mkv"))
            .await
            .status(),
        404
    );

    // dave: only sources from Files; Amélie plays from the list's copy.
    let dave = xtream(app, "dave", "get_vod_streams").await;
    assert_eq!(names(&dave, "name"), ["Amélie (2001)", "Solaris (1972)"]);
    assert_eq!(
        app.get(&format!("/movie/dave/dave-pw/{heat_id}.mkv"))
            .await
            .status(),
        404
    );
    let amelie = dave
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "Amélie (2001)")
        .unwrap();
    assert_eq!(
        bytes_of(
            app,
            &format!("/movie/dave/dave-pw/{}.mp4", amelie["stream_id"])
        )
        .await,
        (200, b"m3u-amelie-bytes".to_vec())
    );
    assert_eq!(
        names(&xtream(app, "dave", "get_series").await, "name"),
        ["Show"]
    );
    // Only the categories of what dave sees: not the panel's Action (Heat) nor Crime
    // (The Wire), which erin sees.
    let categories = |user: &'static str, action: &'static str| async move {
        names(&xtream(app, user, action).await, "category_name")
    };
    assert_eq!(
        categories("dave", "get_vod_categories").await,
        ["Drama", "Sci-Fi"]
    );
    assert_eq!(categories("dave", "get_series_categories").await, ["Shows"]);
    assert!(categories("erin", "get_vod_categories")
        .await
        .contains(&"Action".to_string()));
    assert!(categories("erin", "get_series_categories")
        .await
        .contains(&"Crime".to_string()));
    // An episode path naming no episode says so.
    let body =
        crate::common::assert_api_error(app.get("/series/dave/dave-pw/-5.mp4").await, 404).await;
    assert_eq!(body["error"], "unknown episode `-5.mp4`", "{body}");
    // A wrong password is refused on the media paths.
    assert_eq!(
        app.get(&format!("/movie/dave/nope/{heat_id}.mkv"))
            .await
            .status(),
        401
    );
}

/// A one-second MP4 made by ffmpeg (moov first, so it probes without seeking).
fn tiny_mp4() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny.mp4");
    let status = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=1:size=64x48:rate=5",
        ])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "mpeg4",
            "-movflags",
            "+faststart",
        ])
        .arg(&out)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success());
    std::fs::read(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xtream_client_library_lists_and_plays_movies_and_episodes() {
    use base64::Engine;
    let mp4 = tiny_mp4();
    let s = setup_with(mp4.clone()).await;
    let app = &s.app;
    let out = crate::xtream_out::node(
        "xtream_vod.mjs",
        // The library names a movie by its `title`: the name without its year.
        &[&app.url(""), "erin", "erin-pw", "Amélie", "The Wire"],
        None,
    )
    .await;
    let cats: Vec<&str> = out["movieCategories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cats, ["Action", "Drama", "Sci-Fi"], "{out}");
    assert_eq!(out["movies"].as_array().unwrap().len(), 3, "{out}");
    assert_eq!(out["movie"]["plot"], "A shy waitress.", "{out}");
    assert_eq!(out["movie"]["tmdbId"], "194", "{out}");
    let play = &out["moviePlay"];
    assert_eq!(play["status"], 200, "{out}");
    let got = base64::engine::general_purpose::STANDARD
        .decode(play["base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        got, mp4,
        "the movie's bytes through freesky are the panel's"
    );
    let seasons = out["show"]["seasons"].as_array().unwrap();
    assert_eq!(seasons[0]["episodes"].as_array().unwrap().len(), 2, "{out}");
    assert_eq!(out["episodePlay"]["status"], 200, "{out}");
    let episode = base64::engine::general_purpose::STANDARD
        .decode(out["episodePlay"]["base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(episode, b"wire-s01e01-bytes");
    assert_eq!(out["unknownMovie"], "Movie Not Found", "{out}");

    // The movie URL the library built is a real video through freesky.
    let url = out["movie"]["url"].as_str().unwrap().to_string();
    let (probed, stderr) = probe_streams(&url).await;
    assert_eq!(
        probed["streams"][0]["codec_type"], "video",
        "{probed} {stderr}"
    );
    assert_eq!(probed["streams"][0]["width"], 64);
}

/// ffprobe's streams of `url` (`codec_type`, `width`; `null` when it could not open
/// it), and its stderr.
async fn probe_streams(url: &str) -> (Value, String) {
    let probe = tokio::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,width",
            "-of",
            "json",
        ])
        .arg(url)
        .kill_on_drop(true)
        .output();
    let probe = tokio::time::timeout(std::time::Duration::from_secs(60), probe)
        .await
        .expect("ffprobe hung")
        .expect("ffprobe runs");
    let probed = serde_json::from_slice(&probe.stdout).unwrap_or(Value::Null);
    (probed, String::from_utf8_lossy(&probe.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_api_movies_and_series_and_their_config_check() {
    let fake = FakeUpstream::bind().await;
    let b = fake.base();
    let fake = fake
        .text(
            "/v1/movies",
            "application/json",
            json!({"data": [
                {"id": 1, "title": "Heat", "file": "/media/heat.mp4", "year": 1995, "genre": "Action"},
                {"id": 2, "title": "No file"}
            ]})
            .to_string(),
        )
        .text(
            "/v1/series",
            "application/json",
            json!([{"id": "s", "title": "Show", "eps": [
                {"season": 1, "episode": 1, "file": format!("{b}/media/s1e1.mp4")}
            ]}])
            .to_string(),
        )
        .bytes("/media/heat.mp4", "video/mp4", b"api-heat".to_vec())
        .bytes("/media/s1e1.mp4", "video/mp4", b"api-s1e1".to_vec())
        .start();
    let service = format!(
        "[[services]]\nname = \"Api\"\nkind = \"json_api\"\nbase_url = \"{b}/v1/\"\n\
         [services.movies]\npath = \"movies\"\nlist = \"/data\"\nname = \"/title\"\nurl = \"/file\"\nyear = \"/year\"\ncategory = \"/genre\"\n\
         [services.series]\npath = \"series\"\nname = \"/title\"\nurl = \"/file\"\nepisodes = \"/eps\"\n"
    );
    let app = TestApp::spawn(&service).await;
    let movies = ok_json(&app, "/api/movies").await;
    assert_eq!(
        titles(&movies),
        [("Heat".to_string(), vec!["Api".to_string()])]
    );
    assert_eq!(movies["items"][0]["year"], 1995);
    let id = id_of(&movies, "Heat");
    assert_eq!(
        bytes_of(&app, &format!("/api/movie/{id}")).await,
        (200, b"api-heat".to_vec())
    );
    let series = ok_json(&app, "/api/series").await;
    let show = ok_json(&app, &format!("/api/series/{}", id_of(&series, "Show"))).await;
    let stream = show["seasons"][0]["episodes"][0]["stream"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(bytes_of(&app, &stream).await, (200, b"api-s1e1".to_vec()));
    assert_eq!(app.service_status("Api").await["vod_skipped"], 1);
    drop(fake);

    // The config check names the file and line of a bad pointer and a missing key.
    let bad =
        "[[services]]\nname = \"Api\"\nkind = \"json_api\"\nbase_url = \"http://127.0.0.1:1/\"\n\
               [services.series]\npath = \"series\"\nname = \"title\"\n";
    let err = freesky::config::Config::parse(bad, "f.toml", &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("f.toml:7: services[0].series.name: `title` is not a JSON pointer"),
        "{err}"
    );
    assert!(err.contains("services[0].series.url: is required"), "{err}");
    assert!(
        err.contains("services[0].series.episodes: is required"),
        "{err}"
    );
}

/// A live-only setup does not keep a list's movies: after the first read, a read made
/// before the catalogue was ever asked for drops them, and the first catalogue load
/// then reads the list itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lists_movies_are_kept_from_its_first_read_only_until_the_catalogue_asks() {
    let files = files().await;
    let app = TestApp::spawn(&format!(
        "[cache]\nchannels_ttl = \"1s\"\n\n[[services]]\nname = \"Files\"\nkind = \"m3u\"\nurl = \"{}/list.m3u\"\n",
        files.base()
    ))
    .await;
    app.get_text_ok("/playlist.m3u").await;
    assert_eq!(files.hits("/list.m3u"), 1);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    // Stale: answered, and read again in the background.
    app.get_text_ok("/playlist.m3u").await;
    crate::common::eventually_within(
        std::time::Duration::from_secs(10),
        "the second read",
        || async {
            match files.hits("/list.m3u") {
                2 => Ok(()),
                n => Err(format!("{n} reads")),
            }
        },
    )
    .await;
    let movies = ok_json(&app, "/api/movies").await;
    assert_eq!(movies["total"], 2, "{movies}");
    assert_eq!(
        files.hits("/list.m3u"),
        3,
        "the catalogue read the list itself"
    );
}

/// What a panel says about a series and its episodes reaches Xtream players and the
/// API: the list's cast, director, genre, full release date and run time; the
/// details' per-episode plot, duration, image, rating, date and `added`; ratings
/// out of 5 from ratings out of 10. An episode the panel says nothing about keeps
/// the series' cover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_and_episode_facts_pass_through() {
    let s = setup().await;
    let app = &s.app;
    let list = xtream(app, "erin", "get_series").await;
    let wire = list
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "The Wire")
        .unwrap_or_else(|| panic!("no The Wire in {list}"))
        .clone();
    assert_eq!(wire["cast"], "Dominic West, Idris Elba", "{wire}");
    assert_eq!(wire["director"], "David Simon");
    assert_eq!(wire["genre"], "Crime, Drama");
    assert_eq!(wire["releaseDate"], "2002-06-02");
    assert_eq!(wire["episode_run_time"], "59");
    assert_eq!(wire["rating"], "9.3");
    // One decimal, as written: no float noise (4.699999809265137).
    assert_eq!(wire["rating_5based"].as_f64(), Some(4.7), "{wire}");
    let id = wire["series_id"].as_u64().unwrap();

    let info = xtream(app, "erin", &format!("get_series_info&series_id={id}")).await;
    let i = &info["info"];
    assert_eq!(i["plot"], "Baltimore.", "{info}");
    assert_eq!(i["cast"], "Dominic West, Idris Elba");
    assert_eq!(i["director"], "David Simon");
    assert_eq!(i["genre"], "Crime, Drama");
    assert_eq!(i["releaseDate"], "2002-06-02");
    assert_eq!(i["episode_run_time"], "59");
    assert_eq!(i["rating_5based"].as_f64(), Some(4.7), "{info}");
    let eps = info["episodes"]["1"].as_array().unwrap();
    let (e1, e2) = (&eps[0], &eps[1]);
    assert_eq!(e1["info"]["plot"], "A murder trial.", "{e1}");
    assert_eq!(e1["info"]["duration_secs"], 3720);
    assert_eq!(e1["info"]["duration"], "01:02:00");
    assert_eq!(e1["info"]["movie_image"], "http://img.example/wire-1.jpg");
    assert!((e1["info"]["rating"].as_f64().unwrap() - 8.1).abs() < 0.01);
    assert_eq!(e1["info"]["releasedate"], "2002-06-02");
    assert_eq!(e1["added"], "1600000123");
    // The panel says nothing of the second: the series' cover, no plot.
    assert_eq!(
        e2["info"]["movie_image"], "http://img.example/wire.jpg",
        "{e2}"
    );
    assert_eq!(e2["info"]["plot"], "");
    assert_eq!(e2["info"]["duration_secs"], 0);

    let api = ok_json(app, &format!("/api/series/{id}")).await;
    assert_eq!(api["director"], "David Simon", "{api}");
    assert_eq!(api["release_date"], "2002-06-02");
    let e = &api["seasons"][0]["episodes"][0];
    assert_eq!(e["plot"], "A murder trial.", "{api}");
    assert_eq!(e["duration"], 3720);
    assert_eq!(e["image"], "http://img.example/wire-1.jpg");
}

/// The images a title's details carry (backdrops, a poster the list lacks) are
/// shown, and with `[logos] mode = "cache"` written as freesky's links, as posters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detail_images_are_shown_and_go_through_freesky_in_cache_mode() {
    let panel = panel(Arc::new(Mutex::new("good")), b"movie".to_vec()).await;
    let files = files().await;
    for cache in [false, true] {
        let mut config = config(&panel, &files);
        if cache {
            config = format!("[logos]\nmode = \"cache\"\n\n{config}");
        }
        let app = TestApp::spawn(&config).await;
        let mine = format!("{}/logos/", app.base);
        let image = |v: &Value, upstream: &str| {
            let v = v
                .as_str()
                .unwrap_or_else(|| panic!("no image for {upstream}: {v}"));
            if cache {
                assert!(v.starts_with(&mine), "{v} is not freesky's");
            } else {
                assert_eq!(v, upstream);
            }
        };
        let movies = xtream(&app, "erin", "get_vod_streams").await;
        let id_of = |name: &str| {
            movies
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == name)
                .unwrap_or_else(|| panic!("no {name} in {movies}"))["stream_id"]
                .as_u64()
                .unwrap()
        };
        let amelie = id_of("Amélie (2001)");
        let info = xtream(&app, "erin", &format!("get_vod_info&vod_id={amelie}")).await;
        image(
            &info["info"]["backdrop_path"][0],
            "http://img.example/b.jpg",
        );
        let api = ok_json(&app, &format!("/api/movies/{amelie}")).await;
        image(&api["backdrop"], "http://img.example/b.jpg");
        let heat = id_of("Heat");
        let info = xtream(&app, "erin", &format!("get_vod_info&vod_id={heat}")).await;
        image(&info["info"]["movie_image"], "http://img.example/heat.jpg");
        image(&info["info"]["cover_big"], "http://img.example/heat.jpg");
        let api = ok_json(&app, &format!("/api/movies/{heat}")).await;
        image(&api["poster"], "http://img.example/heat.jpg");

        let series = xtream(&app, "erin", "get_series").await;
        let wire = series
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "The Wire")
            .unwrap_or_else(|| panic!("no The Wire in {series}"))["series_id"]
            .as_u64()
            .unwrap();
        let info = xtream(&app, "erin", &format!("get_series_info&series_id={wire}")).await;
        image(
            &info["info"]["backdrop_path"][0],
            "http://img.example/wire-b.jpg",
        );
        let api = ok_json(&app, &format!("/api/series/{wire}")).await;
        image(&api["backdrop"], "http://img.example/wire-b.jpg");
    }
}

/// A title merged from a list that says nothing of when it was added and a panel
/// that does keeps the panel's date; Xtream `title` is the name without its year.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_title_keeps_a_sources_added_date_and_its_title_drops_the_year() {
    let panel = panel(Arc::new(Mutex::new("good")), b"movie".to_vec()).await;
    let files = files().await;
    // The M3U list first: its Amélie ("Amelie") has no date.
    let config = config(&panel, &files).replace("priority = 1\n", "priority = 3\n");
    let app = TestApp::spawn(&config).await;
    let movies = xtream(&app, "erin", "get_vod_streams").await;
    let amelie = movies
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "Amelie (2001)")
        .unwrap_or_else(|| panic!("no Amelie in {movies}"))
        .clone();
    assert_eq!(amelie["added"], "1600000000", "{amelie}");
    assert_eq!(amelie["title"], "Amelie", "{amelie}");
    let info = xtream(
        &app,
        "erin",
        &format!("get_vod_info&vod_id={}", amelie["stream_id"]),
    )
    .await;
    assert_eq!(info["movie_data"]["added"], "1600000000", "{info}");
    assert_eq!(info["movie_data"]["title"], "Amelie", "{info}");
    assert_eq!(info["movie_data"]["name"], "Amelie (2001)", "{info}");
}

/// How many times the panel was asked for its movie list.
fn movie_list_reads(panel: &FakeUpstream) -> usize {
    panel
        .requests_to("/player_api.php")
        .iter()
        .filter(|r| {
            r.query
                .as_deref()
                .is_some_and(|q| q.contains("action=get_vod_streams"))
        })
        .count()
}

/// Disabling a service takes its titles out of every list at once (a title another
/// service also has stays, from that one) and they no longer play; enabling it again
/// brings them back, same ids, from its kept lists without asking the panel again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_services_titles_leave_the_catalogue_at_once_and_come_back() {
    let s = setup().await;
    let app = &s.app;
    let movies = ok_json(app, "/api/movies").await;
    let (heat, amelie) = (id_of(&movies, "Heat"), id_of(&movies, "Amélie (2001)"));
    let wire = id_of(&ok_json(app, "/api/series").await, "The Wire");
    let reads = movie_list_reads(&s.panel);
    assert_eq!(reads, 1);

    let r = app.post("/api/services/Panel/disable").await;
    assert_eq!(r.status(), 200);
    let movies = ok_json(app, "/api/movies").await;
    // Amélie stays, named as its one source now names it.
    assert_eq!(
        titles(&movies),
        [
            ("Amelie (2001)".to_string(), vec!["Files".to_string()]),
            ("Solaris (1972)".to_string(), vec!["Files".to_string()]),
        ]
    );
    // Its id stays, though its TMDB id, which only the panel knew, is gone while the
    // panel is off: players' favourites and resume points hold.
    let amelie_files = id_of(&movies, "Amelie (2001)");
    assert_eq!(amelie_files, amelie);
    let series = ok_json(app, "/api/series").await;
    assert_eq!(
        titles(&series),
        [("Show".to_string(), vec!["Files".to_string()])]
    );
    assert_eq!(
        names(&xtream(app, "erin", "get_vod_streams").await, "name"),
        ["Amelie (2001)", "Solaris (1972)"]
    );
    assert_eq!(
        names(&xtream(app, "erin", "get_series").await, "name"),
        ["Show"]
    );
    let m3u = app.get_text_ok("/vod.m3u").await;
    assert!(!m3u.contains("Heat"), "{m3u}");
    assert!(m3u.contains("Solaris"), "{m3u}");
    // Not listed, not played: 404 as an unknown title, not a 502 from a dead source.
    assert_eq!(bytes_of(app, &format!("/api/movie/{heat}")).await.0, 404);
    assert_eq!(app.get(&format!("/api/series/{wire}")).await.status(), 404);
    assert_eq!(
        bytes_of(app, &format!("/api/movie/{amelie_files}")).await,
        (200, b"m3u-amelie-bytes".to_vec()),
        "from the source still enabled"
    );

    let r = app.post("/api/services/Panel/enable").await;
    assert_eq!(r.status(), 200);
    let movies = ok_json(app, "/api/movies").await;
    assert_eq!(
        titles(&movies)[0],
        (
            "Amélie (2001)".to_string(),
            vec!["Panel".to_string(), "Files".to_string()]
        )
    );
    assert_eq!(id_of(&movies, "Heat"), heat);
    assert_eq!(id_of(&movies, "Amélie (2001)"), amelie);
    assert_eq!(
        bytes_of(app, &format!("/api/movie/{heat}")).await,
        (200, b"heat-bytes".to_vec())
    );
    assert_eq!(id_of(&ok_json(app, "/api/series").await, "The Wire"), wire);
    assert_eq!(
        movie_list_reads(&s.panel),
        reads,
        "the kept list, not a new read"
    );
}

/// A service disabled when the catalogue first loaded, enabled later: its lists are
/// read then, and its titles join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_enabled_after_the_first_load_is_read_then() {
    let s = setup().await;
    let app = &s.app;
    assert_eq!(app.post("/api/services/Panel/disable").await.status(), 200);
    let movies = ok_json(app, "/api/movies").await;
    assert_eq!(movies["total"], 2, "{movies}");
    assert_eq!(movie_list_reads(&s.panel), 0);
    assert_eq!(app.post("/api/services/Panel/enable").await.status(), 200);
    let movies = ok_json(app, "/api/movies").await;
    assert_eq!(movies["total"], 3, "{movies}");
    assert_eq!(movie_list_reads(&s.panel), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hls_movie_plays_for_its_account_under_require_account() {
    // A movie whose file is an HLS master: the player reads the master from
    // `/movie/`, then the variant and segments through `/proxy/` links. With
    // `require_account` a playlist link must carry the account, or it is refused.
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    let fake = FakeUpstream::bind().await;
    let b = fake.base();
    let list = format!(
        "#EXTM3U\n#EXTINF:-1 group-title=\"Drama\",Film (2010)\n{b}/movies/film/master.m3u8\n"
    );
    let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nv.m3u8\n";
    let variant = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n\
                   #EXTINF:4.0,\n/demo/seg0.ts\n#EXTINF:4.0,\n/demo/seg1.ts\n#EXT-X-ENDLIST\n";
    let up = fake
        .text("/list.m3u", M3U_TYPE, list)
        .text("/movies/film/master.m3u8", HLS_TYPE, master)
        .text("/movies/film/v.m3u8", HLS_TYPE, variant)
        .dir("/demo", &demo)
        .start();
    let cfg = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\nrequire_account = true\nadmin_token = \"vod-admin-7f3\"\n\n\
         [[services]]\nname = \"Files\"\nkind = \"m3u\"\nurl = \"{}\"\n\n\
         [[users]]\nname = \"erin\"\npassword = \"erin-pw\"\n",
        up.url("/list.m3u")
    );
    let app = TestApp::spawn(&cfg).await;
    let movies = xtream(&app, "erin", "get_vod_streams").await;
    let id = movies[0]["stream_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("{movies}"));
    let url = app.url(&format!("/movie/erin/erin-pw/{id}.m3u8"));

    // The master's variant link carries the account; stripped of it, refused.
    let master = app
        .get(&format!("/movie/erin/erin-pw/{id}.m3u8"))
        .await
        .text()
        .await
        .expect("master");
    let variant = master
        .lines()
        .find(|l| l.contains("/proxy/"))
        .unwrap_or_else(|| panic!("no variant link in {master}"));
    assert!(variant.contains("?a=erin."), "{master}");
    let bare = variant.split_once('?').unwrap().0;
    let refused = reqwest::get(bare).await.expect("variant");
    assert_eq!(
        refused.status(),
        401,
        "an untagged variant link under require_account"
    );
    // The variant is read once: its segment links carry the account on, so the
    // player's segment fetches keep it counted.
    let segments = reqwest::get(variant)
        .await
        .expect("variant")
        .text()
        .await
        .expect("variant body");
    let links: Vec<&str> = segments.lines().filter(|l| l.contains("/proxy/")).collect();
    assert_eq!(links.len(), 2, "{segments}");
    assert!(links.iter().all(|l| l.contains("?a=erin.")), "{segments}");
    // Stripped of it, a segment link is refused too: else a movie would play to its end
    // for anyone given its playlist, and after the account is disabled.
    let bare = links[0].split_once('?').unwrap().0;
    assert_eq!(
        reqwest::get(bare).await.expect("segment").status(),
        401,
        "an untagged segment link under require_account"
    );
    // One account's link: no shared cache keeps it.
    let segment = reqwest::get(links[0]).await.expect("segment");
    assert_eq!(segment.status(), 200);
    assert_eq!(segment.headers()["cache-control"], "private, max-age=60");
    // Counted as the account's connection while the player fetches its links, not
    // only while the master's few bytes were sent.
    let (_, login) = app
        .get_json("/player_api.php?username=erin&password=erin-pw")
        .await;
    assert_eq!(login["user_info"]["active_cons"], "1", "{login}");
    // A title is not a live channel: no HLS viewer series of its own in the metrics.
    let metrics = app.get_text_ok("/metrics").await;
    assert!(
        !metrics.contains(&format!("channel=\"movie {id}\"")),
        "{metrics}"
    );

    // ffprobe reads it whole through freesky: from the Xtream route and from the API's.
    let api = app.url(&format!(
        "/api/movie/{id}.m3u8?username=erin&password=erin-pw"
    ));
    for url in [url, api] {
        let (probed, stderr) = probe_streams(&url).await;
        assert_eq!(
            probed["streams"][0]["codec_type"], "video",
            "{url}: {probed} {stderr}"
        );
    }
}

/// `/vod.m3u` writes upstream text as `/playlist.m3u` does: a title, category or
/// poster address with a line break of any reader's (NEL, U+2028, vertical tab) or a
/// terminal escape cannot begin a line or close an attribute, and a comma or a `"` in a
/// title stays (no attribute is open after the comma).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_movie_playlist_keeps_every_title_on_its_line() {
    let fake = FakeUpstream::bind().await;
    let b = fake.base();
    let list = format!(
        "#EXTM3U\n\
         #EXTINF:-1 tvg-logo=\"{b}/p\u{2028}x.jpg\" group-title=\"Dra\u{85}ma\",\
         Sep\u{2028}#EXTINF:-1,Injected\u{85}NEL\u{b}VT\u{1b}[31m \"q\", a (2004)\n\
         {b}/files/x.mp4\n"
    );
    let _fake = fake.text("/list.m3u", M3U_TYPE, list).start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"Files\"\nkind = \"m3u\"\nurl = \"{b}/list.m3u\"\n"
    ))
    .await;
    let m3u = app.get_text_ok("/vod.m3u").await;
    let lines: Vec<&str> = m3u
        .split(|c| {
            matches!(
                c,
                '\n' | '\r' | '\u{b}' | '\u{c}' | '\u{1c}'
                    ..='\u{1e}' | '\u{85}' | '\u{2028}' | '\u{2029}'
            )
        })
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 3, "{m3u:?}");
    assert_eq!(lines[0], "#EXTM3U");
    assert!(
        lines[1].starts_with("#EXTINF:-1 tvg-id=\"movie-"),
        "{m3u:?}"
    );
    assert!(
        lines[1].ends_with(
            " group-title=\"Dra ma\",Sep #EXTINF:-1,Injected NEL VT [31m \"q\", a (2004)"
        ),
        "{m3u:?}"
    );
    assert!(!m3u.chars().any(|c| c.is_control() && c != '\n'), "{m3u:?}");
    assert!(lines[2].ends_with(".mp4"), "{m3u:?}");
}
