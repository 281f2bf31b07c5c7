//! The lineup at scale, as a user meets it: a channel list over `max_body_bytes`
//! names its size, the limit and the key that raises it, whether it is a file, a
//! response that announces its length, or one that does not.

use axum::body::Body;
use axum::routing::get;

use std::sync::{Arc, Mutex};

use crate::common::{eventually, respond, FakeUpstream, TestApp, M3U_TYPE};

const LIMIT: usize = 1024;

/// An M3U list of `n` channels (about 60 bytes each).
fn list(n: usize) -> String {
    let mut text = String::from("#EXTM3U\n");
    for i in 0..n {
        text.push_str(&format!(
            "#EXTINF:-1,Channel {i}\nhttp://127.0.0.1:9/{i}.m3u8\n"
        ));
    }
    text
}

#[tokio::test]
async fn a_list_over_max_body_bytes_names_its_size_the_limit_and_the_key() {
    let text = list(100);
    let size = text.len();
    assert!(size > LIMIT);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("list.m3u");
    std::fs::write(&file, &text).expect("list file");
    let chunked = text.clone();
    let up = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, text.clone())
        .route(
            "/chunked.m3u",
            get(move || {
                let pieces: Vec<Result<String, std::io::Error>> = chunked
                    .as_bytes()
                    .chunks(100)
                    .map(|c| Ok(String::from_utf8_lossy(c).into_owned()))
                    .collect();
                async move {
                    let mut r = respond(200, M3U_TYPE, "");
                    *r.body_mut() = Body::from_stream(futures::stream::iter(pieces));
                    r
                }
            }),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\nmax_body_bytes = {LIMIT}\n\n\
         [[services]]\nname = \"Http\"\nkind = \"m3u\"\nurl = \"{0}/list.m3u\"\n\n\
         [[services]]\nname = \"File\"\nkind = \"m3u\"\nurl = \"{1}\"\n\n\
         [[services]]\nname = \"Chunked\"\nkind = \"m3u\"\nurl = \"{0}/chunked.m3u\"\n",
        up.base(),
        file.display()
    ))
    .await;
    // The lineup still answers (each failing service just has no channels).
    assert!(app.channels().await.is_empty());
    for name in ["Http", "File"] {
        let status = app.service_status(name).await;
        let error = status["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let want = format!(
            "is {size} bytes, more than the {LIMIT} that `max_body_bytes` allows: \
             raise `max_body_bytes` in [server] above {size}"
        );
        assert!(error.contains(&want), "{name}: {error}\nwanted: {want}");
    }
    let status = app.service_status("Chunked").await;
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "is larger than the {LIMIT} bytes that `max_body_bytes` allows (reading stopped at "
        )) && error.ends_with("): raise `max_body_bytes` in [server]"),
        "{error}"
    );
    // Under the limit, the same lists load.
    let mut roomy = app;
    roomy.stop().await;
    drop(roomy);
    let app = TestApp::spawn(&format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\nmax_body_bytes = {}\n\n\
         [[services]]\nname = \"Chunked\"\nkind = \"m3u\"\nurl = \"{}/chunked.m3u\"\n",
        size + 1,
        up.base()
    ))
    .await;
    assert_eq!(app.channels().await.len(), 100);
}

/// A service whose list starts to hang once the lineup is built: requests go on
/// getting the last lineup at once while the next is built in the background, and
/// never wait for the hanging upstream (its timeout is far longer than the wait
/// allowed here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lineup_is_served_while_a_hanging_service_is_asked_again() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let hanging = Arc::new(AtomicBool::new(false));
    let flag = hanging.clone();
    let up = FakeUpstream::bind()
        .await
        .text("/good.m3u", M3U_TYPE, list(3))
        .route(
            "/slow.m3u",
            get(move || {
                let flag = flag.clone();
                async move {
                    if flag.load(Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                    respond(
                        200,
                        M3U_TYPE,
                        "#EXTM3U\n#EXTINF:-1,Slow One\nhttp://127.0.0.1:9/s.m3u8\n",
                    )
                }
            }),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[cache]\nchannels_ttl = \"1s\"\n\n\
         [[services]]\nname = \"Good\"\nkind = \"m3u\"\nurl = \"{}\"\n\n\
         [[services]]\nname = \"Slow\"\nkind = \"m3u\"\nurl = \"{}\"\ntimeout = \"60s\"\n",
        up.url("/good.m3u"),
        up.url("/slow.m3u")
    ))
    .await;
    let first = app.get_text_ok("/playlist.m3u").await;
    assert!(
        first.contains(",Slow One\n") && first.contains(",Channel 2\n"),
        "{first}"
    );

    hanging.store(true, Ordering::SeqCst);
    // Past channels_ttl the lineup is stale: each request below finds it so (the build
    // it starts hangs on Slow for a minute) and is answered from it.
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(15),
            app.get_text_ok("/playlist.m3u"),
        )
        .await
        .expect("the playlist is answered without waiting for the hanging service");
        assert_eq!(answer, first);
    }
    assert!(
        up.hits("/slow.m3u") >= 2,
        "the stale lineup was rebuilt in the background"
    );

    // The admin disables the hanging service while a build still waits for it: the
    // next request builds the lineup without it at once, not after that build.
    let resp = app.post("/api/services/Slow/disable").await;
    assert_eq!(resp.status(), 200);
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        app.get_text_ok("/playlist.m3u"),
    )
    .await
    .expect("a switch is not queued behind the build stuck on the hanging service");
    assert!(
        !answer.contains("Slow One") && answer.contains(",Channel 2\n"),
        "{answer}"
    );
}

/// While a service switch rebuilds the lineup (here: the enabled service's list is
/// held back by the test), other requests are answered from the lineup of before it
/// instead of waiting; the switch's own call answers once the new lineup is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_rebuilds_the_lineup_while_other_requests_get_the_one_before() {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let held = release.clone();
    let up = FakeUpstream::bind()
        .await
        .text(
            "/a.m3u",
            M3U_TYPE,
            "#EXTM3U\n#EXTINF:-1,Alpha\nhttp://127.0.0.1:9/a.m3u8\n".to_string(),
        )
        .route(
            "/b.m3u",
            get(move || {
                let held = held.clone();
                async move {
                    held.notified().await;
                    respond(
                        200,
                        M3U_TYPE,
                        "#EXTM3U\n#EXTINF:-1,Beta\nhttp://127.0.0.1:9/b.m3u8\n",
                    )
                }
            }),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"A\"\nkind = \"m3u\"\nurl = \"{0}/a.m3u\"\n\n\
         [[services]]\nname = \"B\"\nkind = \"m3u\"\nenabled = false\ntimeout = \"60s\"\nurl = \"{0}/b.m3u\"\n",
        up.base()
    ))
    .await;
    assert_eq!(app.channel_names().await, ["Alpha"]);
    let switch = {
        let client = reqwest::Client::new();
        let url = format!("{}/api/services/B/enable", app.base);
        tokio::spawn(async move { client.post(url).send().await.map(|r| r.status()) })
    };
    // The switch is under way (B's list is asked for), and waits for it.
    crate::common::eventually("the switch to ask for B's list", || async {
        (up.hits("/b.m3u") > 0).then_some(()).ok_or("not yet")
    })
    .await;
    assert!(!switch.is_finished(), "the switch waits for its lineup");
    // Meanwhile a request is answered at once, from the lineup of before.
    let names = tokio::time::timeout(crate::common::HANG_GUARD, app.channel_names())
        .await
        .expect("a request during a switch is not held up by it");
    assert_eq!(names, ["Alpha"]);
    release.notify_waiters();
    release.notify_one();
    let status = switch.await.unwrap().expect("the switch answered");
    assert_eq!(status, 200);
    assert_eq!(
        app.channel_names().await,
        ["Alpha", "Beta"],
        "right after the switch"
    );
}

/// A list whose entry carries a name, group and tvg-id of 300,000 bytes each (a list
/// gone wrong, or hostile) gives a lineup channel of a bounded name and group and no
/// tvg-id, not megabytes in every playlist line; the other entries are untouched.
#[tokio::test]
async fn a_channel_with_huge_texts_is_cut_to_size() {
    let huge = "é".repeat(150_000);
    let text = format!(
        "#EXTM3U\n#EXTINF:-1 tvg-id=\"{huge}\" group-title=\"{huge}\",{huge}\nhttp://127.0.0.1:9/a.m3u8\n\
         #EXTINF:-1 tvg-id=\"Plain.example\" group-title=\"News\",Plain\nhttp://127.0.0.1:9/b.m3u8\n"
    );
    let upstream = FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, text)
        .start();
    let app = TestApp::spawn(&format!(
        "[server]\nstate_dir = '{{state_dir}}'\nmax_body_bytes = 2000000\n\n[[services]]\nname = \"A\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        upstream.url("/list.m3u")
    ))
    .await;
    let playlist = app.get("/playlist.m3u").await.text().await.unwrap();
    assert!(playlist.len() < 4096, "{} bytes", playlist.len());
    let cut = "é".repeat(128);
    assert!(
        playlist.contains(&format!("group-title=\"{cut}\",{cut}\n")),
        "name and group cut at 256 bytes: {playlist}"
    );
    assert!(
        playlist.contains("tvg-id=\"Plain.example\" ") && playlist.contains(",Plain\n"),
        "{playlist}"
    );
}

/// A list that comes back with no channel at all, where it listed some (an overloaded
/// panel's `[]`, a list cut short), is a failure like HTML would be: its last list
/// stands in and the status says why, rather than every channel leaving the lineup.
/// Once it lists channels again, they are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_that_comes_back_empty_keeps_the_last_one() {
    let text = Arc::new(Mutex::new(
        "#EXTM3U\n#EXTINF:-1,One\nhttp://127.0.0.1:9/1.m3u8\n#EXTINF:-1,Two\nhttp://127.0.0.1:9/2.m3u8\n"
            .to_string(),
    ));
    let served = text.clone();
    let upstream = FakeUpstream::bind()
        .await
        .route(
            "/list.m3u",
            get(move || {
                let body = served.lock().unwrap().clone();
                async move { respond(200, M3U_TYPE, body) }
            }),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[cache]\nchannels_ttl = \"1s\"\n\n[[services]]\nname = \"A\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        upstream.url("/list.m3u")
    ))
    .await;
    assert_eq!(app.channel_names().await, ["One", "Two"]);
    *text.lock().unwrap() = "#EXTM3U\n".to_string();
    let status = eventually("the empty list said in the status", || async {
        let s = app.service_status("A").await;
        match s["last_error"].as_str() {
            Some(e) if e.contains("listed no channel") => Ok(s),
            _ => Err(s.to_string()),
        }
    })
    .await;
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("where it listed 2 before"),
        "{status}"
    );
    assert_eq!(app.channel_names().await, ["One", "Two"]);
    *text.lock().unwrap() = "#EXTM3U\n#EXTINF:-1,Three\nhttp://127.0.0.1:9/3.m3u8\n".to_string();
    eventually("the new list taken", || async {
        let names = app.channel_names().await;
        if names == ["Three"] {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;
}
