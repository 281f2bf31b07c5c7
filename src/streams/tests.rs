//! The engine over the built-in demo service (served in-process: no network): a
//! channel opens to a rewritten playlist whose links serve the variant playlist and
//! the segments; bad links and gone services are refused; the channel test times a
//! whole open; and, with two local upstreams, a failing playlist link fails over.

use super::{Engine, Opened, Served, StreamError};
use crate::cache;
use crate::services::registry::RegistryError;

const BASE: &str = "http://freesky.test";

/// The engine of a config with one demo service, on a fresh state directory that
/// lives as long as the returned guard.
fn engine() -> (Engine, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let text = format!(
        "[server]\nstate_dir = {:?}\n\n[[services]]\nname = \"Demo\"\nkind = \"demo\"\n",
        dir.path().display().to_string()
    );
    let cfg = crate::config::Config::parse(&text, "test.toml", &|_| None)
        .expect("the test config parses");
    let state = crate::state(cfg).expect("the state builds");
    (Engine::of(&state), dir)
}

/// The context and item of the first link in `playlist`.
fn first_link(playlist: &str) -> (String, String) {
    let line = playlist
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .expect("the playlist lists a URI");
    let path = line
        .strip_prefix(&format!("{BASE}/proxy/"))
        .unwrap_or_else(|| panic!("not a proxy link under the base: {line}"));
    let mut parts = path.split('/');
    let context = parts.next().expect("a context").to_string();
    let item = parts.next().expect("an item").to_string();
    (context, item)
}

#[tokio::test]
async fn a_channel_opens_to_links_that_serve_its_playlist_and_segments() {
    let (engine, _dir) = engine();
    let Opened::Playlist(master) = engine
        .open_playlist("demo", None, BASE, None)
        .await
        .unwrap()
    else {
        panic!("the demo is HLS");
    };
    assert!(master.starts_with("#EXTM3U"), "{master}");
    // The master's variant: a media playlist, its URIs links again.
    let (context, item) = first_link(&master);
    let link = engine.open_link(&context, &item).unwrap();
    assert_eq!(link.target.service, "Demo");
    assert_eq!(link.target.channel, "demo", "unpinned links can fail over");
    let Served::Playlist(media) = engine.serve_link(link, None, BASE).await.unwrap() else {
        panic!("a variant link serves a playlist");
    };
    assert!(media.contains("#EXTINF"), "{media}");
    // A segment: MPEG-TS bytes.
    let (context, item) = first_link(&media);
    let link = engine.open_link(&context, &item).unwrap();
    let first = match engine.serve_link(link, None, BASE).await.unwrap() {
        Served::Segment(cache::Body::Cached(seg)) => seg.bytes,
        Served::Segment(cache::Body::Streaming { mut body, .. }) => {
            futures::StreamExt::next(&mut body)
                .await
                .expect("a first chunk")
                .unwrap()
        }
        _ => panic!("a segment link serves a segment"),
    };
    assert_eq!(first.first(), Some(&0x47), "an MPEG-TS sync byte");
}

#[tokio::test]
async fn a_pinned_open_hands_out_links_that_name_the_channel_but_do_not_fail_over() {
    let (engine, _dir) = engine();
    let Opened::Playlist(master) = engine
        .open_playlist("demo", Some("Demo"), BASE, None)
        .await
        .unwrap()
    else {
        panic!("the demo is HLS");
    };
    let (context, item) = first_link(&master);
    let target = engine.open_link(&context, &item).unwrap().target;
    // The channel is named (an account's `?a=` tag is checked against it), but the
    // links stay on the pinned service.
    assert_eq!((target.channel.as_str(), target.failover), ("demo", false));
}

#[tokio::test]
async fn links_that_do_not_open_are_refused_before_any_upstream() {
    let (engine, _dir) = engine();
    let Opened::Playlist(master) = engine
        .open_playlist("demo", None, BASE, None)
        .await
        .unwrap()
    else {
        panic!("the demo is HLS");
    };
    let (context, item) = first_link(&master);
    // Another first character than the seal's own (which is random: 'A' one time in 64).
    let other = if context.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{other}{}", &context[1..]);
    assert!(matches!(
        engine.open_link(&tampered, &item),
        Err(StreamError::BadLink(_))
    ));
    engine
        .registry
        .set_enabled("Demo", Some(false))
        .await
        .unwrap();
    // A playlist link that fails over opens, and is answered from the channel's next
    // source: the demo has none.
    let link = engine
        .open_link(&context, &item)
        .expect("a failing-over playlist link");
    let err = engine
        .serve_link(link, None, BASE)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.to_string(), "service `Demo` is unknown or disabled");
}

#[tokio::test]
async fn the_channel_test_times_a_whole_open() {
    let (engine, _dir) = engine();
    let test = engine.test_channel("demo").await.unwrap();
    assert!(test.ok, "{test:?}");
    assert_eq!(test.service.as_deref(), Some("Demo"));
    assert_eq!(test.url_kind.as_deref(), Some("hls"));
    assert!(test.segment_bytes.is_some_and(|n| n > 0), "{test:?}");
    assert!(matches!(
        engine.test_channel("nope").await,
        Err(StreamError::Registry(RegistryError::UnknownChannel(_)))
    ));
}

/// An upstream on 127.0.0.1: `/list.m3u` lists channel "News" at `/master.m3u8`, a
/// master whose one variant `/live.m3u8` is a live media playlist (sequence 7), or a
/// 500 while `down` is set.
async fn upstream(
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (String, tokio::task::JoinHandle<()>) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let list = format!("#EXTM3U\n#EXTINF:-1,News\n{base}/master.m3u8\n");
    let app = axum::Router::new()
        .route("/list.m3u", get(move || async move { list }))
        .route(
            "/master.m3u8",
            get(|| async { "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\nlive.m3u8\n" }),
        )
        .route(
            "/live.m3u8",
            get(move || async move {
                if down.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(StatusCode::INTERNAL_SERVER_ERROR);
                }
                Ok(
                    "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n\
                    #EXTINF:2.0,\na.ts\n#EXTINF:2.0,\nb.ts\n",
                )
            }),
        );
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (base, task)
}

#[tokio::test]
async fn a_failing_playlist_link_switches_to_the_next_source_after_its_strikes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let down_a = Arc::new(AtomicBool::new(false));
    let (a, _a) = upstream(down_a.clone()).await;
    let (b, _b) = upstream(Arc::new(AtomicBool::new(false))).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nstate_dir = {:?}\n[cache]\nplaylist_ttl = \"0s\"\n\
         [streams]\nfailover_after = 2\n\n\
         [[services]]\nname = \"A\"\nkind = \"m3u\"\npriority = 1\nurl = \"{a}/list.m3u\"\n\n\
         [[services]]\nname = \"B\"\nkind = \"m3u\"\npriority = 2\nurl = \"{b}/list.m3u\"\n",
        dir.path().display().to_string()
    );
    let cfg = crate::config::Config::parse(&text, "test.toml", &|_| None).unwrap();
    let engine = Engine::of(&crate::state(cfg).unwrap());
    let Opened::Playlist(master) = engine
        .open_playlist("news", None, BASE, None)
        .await
        .unwrap()
    else {
        panic!("the channel is HLS");
    };
    let (context, item) = first_link(&master);
    let serve = || async {
        let link = engine.open_link(&context, &item).unwrap();
        engine.serve_link(link, None, BASE).await
    };
    let Ok(Served::Playlist(first)) = serve().await else {
        panic!("A serves the variant");
    };
    assert!(!first.contains("DISCONTINUITY"), "{first}");
    down_a.store(true, Ordering::SeqCst);
    // One strike: the error is the player's.
    assert!(matches!(serve().await, Err(StreamError::Upstream(_))));
    // The second: the link switches to B, numbered on from where A stopped.
    let Ok(Served::Playlist(switched)) = serve().await else {
        panic!("B answers the switched link");
    };
    assert!(switched.contains("#EXT-X-DISCONTINUITY\n"), "{switched}");
    let (context, item) = first_link(&switched);
    assert_eq!(
        engine.open_link(&context, &item).unwrap().target.service,
        "B"
    );
}
