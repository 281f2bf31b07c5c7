//! The dashboard's operations, end to end against real local origins:
//! `PUT /api/services/{name}/priority` (admin; persisted; the lineup's source order and
//! the stream fallback follow at once) and `POST /api/channels/{id}/test` (a viewer-like
//! open of the channel: playlist, first segment, times).

use std::net::SocketAddr;
use std::path::Path;

use serde_json::{json, Value};

use crate::common::{
    assert_api_error, json_of, media_playlist, FakeUpstream, TestApp, HLS_TYPE, M3U_TYPE,
};

fn source_services(channel: &Value) -> Vec<String> {
    channel["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|s| s["service"].as_str().expect("service").to_string())
        .collect()
}

async fn put_priority(
    app: &TestApp,
    name: &str,
    body: &str,
    auth: Option<&str>,
) -> reqwest::Response {
    let path = format!("/api/services/{name}/priority");
    app.send_json(reqwest::Method::PUT, &path, body, auth).await
}

/// An origin listing one channel (tvg-id `Same.fr`) whose playlist is `{tag}/index.m3u8`
/// with one segment whose bytes are `{tag} SEGMENT`.
async fn origin(tag: &str) -> FakeUpstream {
    let o = FakeUpstream::bind().await;
    let b = o.base();
    o.text(
        "/list.m3u",
        M3U_TYPE,
        format!("#EXTM3U\n#EXTINF:-1 tvg-id=\"Same.fr\",Same Channel\n{b}/{tag}/index.m3u8\n"),
    )
    .text(
        &format!("/{tag}/index.m3u8"),
        HLS_TYPE,
        media_playlist(&["seg0.ts"]),
    )
    .bytes(
        &format!("/{tag}/seg0.ts"),
        "video/mp2t",
        format!("{tag} SEGMENT").into_bytes(),
    )
    .start()
}

fn two_services(a: &FakeUpstream, b: &FakeUpstream) -> String {
    format!(
        "[[services]]\nname = \"A\"\nkind = \"m3u\"\npriority = 1\nurl = \"{}/list.m3u\"\n\n\
         [[services]]\nname = \"B\"\nkind = \"m3u\"\npriority = 2\nurl = \"{}/list.m3u\"\n",
        a.base(),
        b.base()
    )
}

#[tokio::test]
async fn a_priority_change_reorders_sources_at_once_and_survives_a_restart() {
    let (a, b) = (origin("a").await, origin("b").await);
    let mut app = TestApp::spawn(&two_services(&a, &b)).await;
    let all = app.channels().await;
    assert_eq!(all.len(), 1, "{all:#?}");
    let id = all[0]["id"].as_str().expect("id").to_string();
    assert_eq!(source_services(&all[0]), ["A", "B"]);

    let (status, body) = json_of(put_priority(&app, "B", r#"{"priority": 0}"#, None).await).await;
    assert_eq!(status, 200, "{body}");
    // The same status object as enable/disable answer.
    assert_eq!(body["name"], "B");
    assert_eq!(body["priority"], 0);
    assert_eq!(body["enabled"], true);
    assert!(body.as_object().unwrap().contains_key("guide"), "{body}");
    assert_eq!(app.service_status("B").await["priority"], 0);

    // At once: the lineup's order, the channel's detail, and what a viewer gets.
    assert_eq!(source_services(&app.channels().await[0]), ["B", "A"]);
    let (_, detail) = app.get_json(&format!("/api/channels/{id}")).await;
    assert_eq!(source_services(&detail), ["B", "A"]);
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    assert!(playlist.contains("/proxy/"), "{playlist}");
    assert_eq!(b.hits("/b/index.m3u8"), 1, "B is tried first now");
    assert_eq!(a.hits("/a/index.m3u8"), 0);

    app.restart().await;
    assert_eq!(app.service_status("B").await["priority"], 0);
    assert_eq!(app.service_status("A").await["priority"], 1);
    assert_eq!(source_services(&app.channels().await[0]), ["B", "A"]);

    // Back above A: the order follows again (negative and large values are integers too).
    let (status, body) =
        json_of(put_priority(&app, "B", r#"{"priority": 1000000}"#, None).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(source_services(&app.channels().await[0]), ["A", "B"]);
    let (status, _) = json_of(put_priority(&app, "A", r#"{"priority": -5}"#, None).await).await;
    assert_eq!(status, 200);
    assert_eq!(app.service_status("A").await["priority"], -5);
}

/// What the API set wins over the config until reset: `{"priority": null}` gives the
/// config's priority back, `POST .../reset` the config's priority and `enabled`; the
/// status lists what is overridden, and a reset survives a restart.
#[tokio::test]
async fn api_overrides_are_listed_and_reset_to_the_config() {
    let (a, b) = (origin("a").await, origin("b").await);
    let mut app = TestApp::spawn(&two_services(&a, &b)).await;
    assert_eq!(app.service_status("B").await["overridden"], json!([]));

    let (status, _) = json_of(put_priority(&app, "B", r#"{"priority": 0}"#, None).await).await;
    assert_eq!(status, 200);
    assert_eq!(source_services(&app.channels().await[0]), ["B", "A"]);
    let (status, body) =
        json_of(put_priority(&app, "B", r#"{"priority": null}"#, None).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["priority"], 2, "the config's");
    assert_eq!(body["overridden"], json!([]));
    assert_eq!(source_services(&app.channels().await[0]), ["A", "B"]);

    put_priority(&app, "B", r#"{"priority": 0}"#, None).await;
    assert_eq!(app.post("/api/services/B/disable").await.status(), 200);
    let status = app.service_status("B").await;
    assert_eq!(
        status["overridden"],
        json!(["enabled", "priority"]),
        "{status}"
    );
    app.restart().await;
    assert_eq!(
        app.service_status("B").await["overridden"],
        json!(["enabled", "priority"])
    );

    let (code, body) = json_of(app.post("/api/services/B/reset").await).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["enabled"], true);
    assert_eq!(body["priority"], 2);
    assert_eq!(body["overridden"], json!([]));
    assert_eq!(source_services(&app.channels().await[0]), ["A", "B"]);
    app.restart().await;
    let status = app.service_status("B").await;
    assert_eq!(
        (status["enabled"].clone(), status["priority"].clone()),
        (json!(true), json!(2))
    );
    assert_api_error(app.post("/api/services/Nope/reset").await, 404).await;
}

#[tokio::test]
async fn a_bad_priority_body_is_a_400_and_an_unknown_service_a_404() {
    let (a, b) = (origin("a").await, origin("b").await);
    let app = TestApp::spawn(&two_services(&a, &b)).await;
    for body in [
        "",
        "not json",
        "{}",
        "[5]",
        "5",
        r#"{"priority": "high"}"#,
        r#"{"priority": 1.5}"#,
        r#"{"priority": 1, "extra": true}"#,
    ] {
        let err = assert_api_error(put_priority(&app, "B", body, None).await, 400).await;
        assert!(
            err["error"].as_str().unwrap().contains("priority"),
            "{body}: {err}"
        );
    }
    assert_eq!(app.service_status("B").await["priority"], 2, "unchanged");
    let err = assert_api_error(
        put_priority(&app, "Nope", r#"{"priority": 1}"#, None).await,
        404,
    )
    .await;
    assert!(err["error"].as_str().unwrap().contains("Nope"), "{err}");
}

#[tokio::test]
async fn priority_needs_the_admin_token_when_one_is_set() {
    let (a, b) = (origin("a").await, origin("b").await);
    let config = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\nadmin_token = \"s3cret-admin\"\n\n{}",
        two_services(&a, &b)
    );
    let app = TestApp::spawn(&config).await;
    let body = r#"{"priority": 0}"#;
    assert_api_error(put_priority(&app, "B", body, None).await, 401).await;
    assert_api_error(
        put_priority(&app, "B", body, Some("Bearer wrong")).await,
        403,
    )
    .await;
    assert_eq!(app.service_status("B").await["priority"], 2, "unchanged");
    let (status, got) =
        json_of(put_priority(&app, "B", body, Some("Bearer s3cret-admin")).await).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(app.service_status("B").await["priority"], 0);
    // Testing a channel is not an admin call.
    let id = app.channels().await[0]["id"].as_str().unwrap().to_string();
    let (status, test) = json_of(app.post(&format!("/api/channels/{id}/test")).await).await;
    assert_eq!(status, 200, "{test}");
    assert_eq!(test["ok"], true, "{test}");
}

/// The router as a remote peer (192.0.2.10, TEST-NET-1) reaches it, no token set: the
/// peer address is what `check_admin` reads (see tests/admin_safety.rs).
#[tokio::test]
async fn priority_is_refused_to_a_non_loopback_peer_without_a_token() {
    use axum::extract::{ConnectInfo, Request};

    let (a, b) = (origin("a").await, origin("b").await);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nstate_dir = '{}'\n\n{}",
        dir.path().display(),
        two_services(&a, &b)
    );
    let serve = |peer: SocketAddr, dir: &Path| {
        let config = freesky::config::Config::parse(&text, "test.toml", &|k| std::env::var(k).ok())
            .expect("config loads");
        assert_eq!(config.server.state_dir, dir);
        let state = freesky::state(config).expect("state opens");
        freesky::app(state).layer(axum::middleware::map_request(
            move |mut req: Request| async move {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            },
        ))
    };
    let remote: SocketAddr = "192.0.2.10:40000".parse().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = serve(remote, dir.path());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let resp = client
        .put(format!("{base}/api/services/B/priority"))
        .body(r#"{"priority": 0}"#)
        .send()
        .await
        .unwrap();
    let err = assert_api_error(resp, 403).await;
    assert!(err["error"].as_str().unwrap().contains("loopback"), "{err}");
    let status: Value = client
        .get(format!("{base}/api/services/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b_status = status
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "B")
        .cloned()
        .unwrap();
    assert_eq!(b_status["priority"], 2, "unchanged: {b_status}");
    // The control: the same call from a loopback peer is accepted.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local_base = format!("http://{}", listener.local_addr().unwrap());
    server.abort();
    let _ = server.await;
    let router = serve("127.0.0.1:40000".parse().unwrap(), dir.path());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let resp = client
        .put(format!("{local_base}/api/services/B/priority"))
        .body(r#"{"priority": 0}"#)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["priority"], 0);
}

/// One m3u service "Origin" reading `{origin}/list.m3u`.
fn one_service(origin: &FakeUpstream) -> String {
    format!(
        "[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}/list.m3u\"\n",
        origin.base()
    )
}

async fn run_test(app: &TestApp, id: &str) -> Value {
    let (status, body) = json_of(app.post(&format!("/api/channels/{id}/test")).await).await;
    assert_eq!(status, 200, "{body}");
    for key in [
        "channel",
        "ok",
        "service",
        "url_kind",
        "resolve_ms",
        "playlist_ms",
        "segment_ms",
        "segment_bytes",
        "total_ms",
        "error",
    ] {
        assert!(body.get(key).is_some(), "no `{key}` in {body}");
    }
    assert_eq!(body["channel"], id);
    assert!(
        body["resolve_ms"].is_u64() && body["total_ms"].is_u64(),
        "{body}"
    );
    body
}

/// An origin whose list names `stream` (a path on it, query included) for the channel.
async fn listing(
    stream: &str,
    build: impl FnOnce(crate::common::FakeBuilder) -> crate::common::FakeBuilder,
) -> FakeUpstream {
    let o = FakeUpstream::bind().await;
    let b = o.base();
    build(o.text(
        "/list.m3u",
        M3U_TYPE,
        format!("#EXTM3U\n#EXTINF:-1 tvg-id=\"Test.fr\",Test Channel\n{b}{stream}\n"),
    ))
    .start()
}

#[tokio::test]
async fn a_channel_test_follows_the_master_playlist_to_the_first_segment() {
    let segment: Vec<u8> = (0..188 * 50).map(|i| (i % 251) as u8).collect();
    let seg = segment.clone();
    let origin = listing("/live/master.m3u8", move |o| {
        o.text(
            "/live/master.m3u8",
            HLS_TYPE,
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nlow/index.m3u8\n\
             #EXT-X-STREAM-INF:BANDWIDTH=3000000\nhigh/index.m3u8\n",
        )
        .text(
            "/live/low/index.m3u8",
            HLS_TYPE,
            media_playlist(&["s0.ts", "s1.ts"]),
        )
        .bytes("/live/low/s0.ts", "video/mp2t", seg)
        .status("/live/high/index.m3u8", 500)
    })
    .await;
    let app = TestApp::spawn(&one_service(&origin)).await;
    let id = app.channels().await[0]["id"].as_str().unwrap().to_string();

    let test = run_test(&app, &id).await;
    assert_eq!(test["ok"], true, "{test:#}");
    assert_eq!(test["service"], "Origin");
    assert_eq!(test["url_kind"], "hls");
    assert_eq!(test["error"], Value::Null);
    assert_eq!(test["segment_bytes"], json!(segment.len()), "{test:#}");
    assert!(
        test["playlist_ms"].is_u64() && test["segment_ms"].is_u64(),
        "{test:#}"
    );
    // The first variant, its first segment; nothing else.
    assert_eq!(origin.hits("/live/master.m3u8"), 1);
    assert_eq!(origin.hits("/live/low/index.m3u8"), 1);
    assert_eq!(origin.hits("/live/low/s0.ts"), 1);
    assert_eq!(origin.hits("/live/low/s1.ts"), 0);
    assert_eq!(origin.hits("/live/high/index.m3u8"), 0);

    // A burst of tests of the channel (anyone on the LAN may ask) gets that result:
    // the upstream is not asked again within 5 s.
    let burst = futures::future::join_all((0..20).map(|_| run_test(&app, &id))).await;
    for t in &burst {
        assert_eq!(t["ok"], true, "{t:#}");
        assert_eq!(t["total_ms"], test["total_ms"], "the same test: {t:#}");
    }
    assert_eq!(origin.hits("/live/low/s0.ts"), 1);
    // However the channel is named: its number, with a leading zero or a `+`.
    let number = app.channels().await[0]["number"].as_u64().unwrap();
    for asked in [
        format!("{number}"),
        format!("0{number}"),
        format!("+{number}"),
    ] {
        let t = run_test(&app, &asked).await;
        assert_eq!(t["total_ms"], test["total_ms"], "{asked}: {t:#}");
    }
    assert_eq!(origin.hits("/live/low/s0.ts"), 1);

    // Unknown channels are not a test result.
    let err = assert_api_error(app.post("/api/channels/no-such-channel/test").await, 404).await;
    assert!(
        err["error"].as_str().unwrap().contains("no-such-channel"),
        "{err}"
    );
}

#[tokio::test]
async fn a_channel_test_of_a_direct_ts_stream_reads_its_first_bytes() {
    let origin = listing("/direct/stream.ts", |o| {
        o.bytes("/direct/stream.ts", "video/mp2t", vec![0x47; 188 * 4])
    })
    .await;
    let app = TestApp::spawn(&one_service(&origin)).await;
    let id = app.channels().await[0]["id"].as_str().unwrap().to_string();
    let test = run_test(&app, &id).await;
    assert_eq!(test["ok"], true, "{test:#}");
    assert_eq!(test["url_kind"], "ts", "{test:#}");
    assert!(test["segment_bytes"].as_u64().unwrap() > 0, "{test:#}");
}

#[tokio::test]
async fn a_channel_test_against_an_origin_answering_500_is_ok_false_with_the_error() {
    let origin = listing("/live/index.m3u8?token=SECRET-TOKEN", |o| {
        o.status("/live/index.m3u8", 500)
    })
    .await;
    let app = TestApp::spawn(&one_service(&origin)).await;
    let id = app.channels().await[0]["id"].as_str().unwrap().to_string();
    let test = run_test(&app, &id).await;
    assert_eq!(test["ok"], false, "{test:#}");
    let error = test["error"].as_str().expect("an error");
    assert!(error.contains("500") && error.contains("Origin"), "{error}");
    assert!(!error.contains("SECRET-TOKEN"), "credentials leak: {error}");
    assert_eq!(test["service"], Value::Null);
    assert_eq!(test["segment_bytes"], Value::Null);
    assert!(origin.hits("/live/index.m3u8") >= 1);
}

/// A segment that trickles (a byte every 200 ms: never idle, never done within the
/// service's timeout) is a failed test: such a source cannot be played live.
#[tokio::test]
async fn a_channel_test_whose_segment_trickles_is_not_ok() {
    let origin = listing("/live/index.m3u8", |o| {
        o.text("/live/index.m3u8", HLS_TYPE, media_playlist(&["s0.ts"]))
            .route(
                "/live/s0.ts",
                axum::routing::get(|| async {
                    let chunks = futures::stream::unfold(0u8, |n| async move {
                        if n > 0 {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        }
                        Some((
                            Ok::<_, std::convert::Infallible>(vec![0x47u8]),
                            n.wrapping_add(1).max(1),
                        ))
                    });
                    axum::response::Response::builder()
                        .header("content-type", "video/mp2t")
                        .body(axum::body::Body::from_stream(chunks))
                        .unwrap()
                }),
            )
    })
    .await;
    let app = TestApp::spawn(&format!("{}timeout = \"1s\"\n", one_service(&origin))).await;
    let id = app.channels().await[0]["id"].as_str().unwrap().to_string();
    let test = run_test(&app, &id).await;
    assert_eq!(test["ok"], false, "{test:#}");
    let error = test["error"].as_str().expect("an error");
    assert!(error.contains("too slow"), "{error}");
}

#[tokio::test]
async fn a_channel_test_whose_segment_answers_500_names_the_segment() {
    let origin = listing("/live/index.m3u8?token=SECRET-TOKEN", |o| {
        o.text(
            "/live/index.m3u8",
            HLS_TYPE,
            media_playlist(&["s0.ts?token=SECRET-TOKEN"]),
        )
        .status("/live/s0.ts", 500)
    })
    .await;
    let app = TestApp::spawn(&one_service(&origin)).await;
    let id = app.channels().await[0]["id"].as_str().unwrap().to_string();
    let test = run_test(&app, &id).await;
    assert_eq!(test["ok"], false, "{test:#}");
    assert_eq!(test["service"], "Origin");
    assert_eq!(test["url_kind"], "hls");
    assert!(test["playlist_ms"].is_u64(), "{test:#}");
    let error = test["error"].as_str().expect("an error");
    assert!(
        error.contains("segment") && error.contains("500"),
        "{error}"
    );
    assert!(!error.contains("SECRET-TOKEN"), "credentials leak: {error}");
    assert_eq!(origin.hits("/live/s0.ts"), 1);
}
