//! Channel aliases: `5`, `05`, `+5`, the slug, `/auto/v05` and `SERVICE:ID` all name
//! one lineup channel, so their viewers share one `.ts` session (one upstream
//! follower), count as viewers of one channel and show under one metric label: the
//! lineup channel id.
//!
//! The viewer metrics are process-wide: each test here uses a channel of its own and
//! runs alone (`common::alone`), as `freesky_ts_sessions` counts every session.

use axum::extract::Path;
use axum::routing::get;
use futures::StreamExt;
use tokio::sync::watch;

use crate::common::{
    live_playlist, respond, FakeUpstream, TestApp, HANG_GUARD, HLS_TYPE, M3U_TYPE,
};

/// Reads from a streaming response until `want` bytes have arrived.
async fn read_at_least(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    want: usize,
) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        let chunk = tokio::time::timeout(HANG_GUARD, body.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {want} bytes arrived", got.len()))
            .unwrap_or_else(|| panic!("stream ended after {} bytes", got.len()))
            .expect("chunk");
        got.extend_from_slice(&chunk);
    }
    got
}

/// freesky on an M3U service listing channel `name`, whose origin has a live playlist
/// (`/live/index.m3u8`, four segments `<sN>`). The segments are held back until
/// `Origin::release`: every viewer joined before then gets them all.
async fn app_with_channel(name: &str) -> (TestApp, Origin, FakeUpstream) {
    let (gate, opened) = watch::channel(false);
    let origin = FakeUpstream::bind()
        .await
        .text(
            "/live/index.m3u8",
            HLS_TYPE,
            live_playlist(&["s0.ts", "s1.ts", "s2.ts", "s3.ts"]),
        )
        .route(
            "/live/{seg}",
            get(move |Path(seg): Path<String>| {
                let mut opened = opened.clone();
                async move {
                    let _ = tokio::time::timeout(HANG_GUARD, opened.wait_for(|o| *o)).await;
                    let name = seg.trim_end_matches(".ts");
                    respond(200, "video/mp2t", format!("<{name}>"))
                }
            }),
        )
        .start();
    let origin = Origin {
        upstream: origin,
        gate,
    };
    let list = FakeUpstream::bind()
        .await
        .text(
            "/list.m3u",
            M3U_TYPE,
            format!(
                "#EXTM3U\n#EXTINF:-1,{name}\n{}\n",
                origin.upstream.url("/live/index.m3u8")
            ),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[streams]\nidle_stop = \"1s\"\n\n[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        list.url("/list.m3u")
    ))
    .await;
    (app, origin, list)
}

struct Origin {
    upstream: FakeUpstream,
    gate: watch::Sender<bool>,
}

impl Origin {
    /// Lets the segments out.
    fn release(&self) {
        self.gate.send_replace(true);
    }
}

/// Opens every `.ts` stream of `paths`, then lets the segments out and checks that
/// each viewer got all three. Returns the open streams (the viewers stay while held).
async fn watch_all(
    app: &TestApp,
    origin: &Origin,
    paths: &[String],
) -> Vec<impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin> {
    // The answers come with the first bytes: every viewer asks at once, and the
    // segments are let out once all of them have joined the session.
    let asked: Vec<_> = paths
        .iter()
        .map(|path| {
            let client = reqwest::Client::new();
            let url = format!("{}{path}", app.base);
            tokio::spawn(async move { client.get(url).send().await })
        })
        .collect();
    let (_, one) = app
        .get_json(&format!(
            "/api/channels/{}",
            paths[0]
                .trim_start_matches("/api/stream/")
                .trim_end_matches(".ts")
        ))
        .await;
    let slug = one["id"].as_str().expect("the channel's id").to_string();
    crate::common::eventually("every viewer to join the session", || async {
        let (status, page) = app.get_json("/api/channels?limit=500").await;
        assert_eq!(status, 200, "{page}");
        let joined = page["live"][slug.as_str()]["viewers"].as_u64().unwrap_or(0);
        (joined as usize >= paths.len())
            .then_some(())
            .ok_or(format!("{joined} of {} joined", paths.len()))
    })
    .await;
    origin.release();
    let mut viewers = Vec::new();
    for (path, resp) in paths.iter().zip(asked) {
        let resp = resp.await.expect("the request ran").expect("an answer");
        assert_eq!(resp.status(), 200, "{path}");
        viewers.push(resp.bytes_stream());
    }
    for (path, v) in paths.iter().zip(&mut viewers) {
        let got = read_at_least(v, "<s1><s2><s3>".len()).await;
        assert_eq!(String::from_utf8_lossy(&got), "<s1><s2><s3>", "{path}");
    }
    viewers
}

/// The `/metrics` lines of metric `name` that carry a `channel` label, as
/// (channel, value).
async fn channel_samples(app: &TestApp, name: &str) -> Vec<(String, f64)> {
    let text = app.get_text_ok("/metrics").await;
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix("{channel=\"")?;
            let (channel, rest) = rest.split_once("\"}")?;
            let value = rest.trim().parse::<f64>().ok()?;
            Some((channel.to_string(), value))
        })
        .collect()
}

/// The value of the unlabelled gauge `name` in `/metrics`.
async fn gauge(app: &TestApp, name: &str) -> f64 {
    let text = app.get_text_ok("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_viewers_of_every_alias_share_one_session_and_one_label() {
    let _alone = crate::common::alone().await;
    let (app, origin, _list) = app_with_channel("Alias Ts").await;
    let channel = app.channel_named("Alias Ts").await;
    let slug = channel["id"].as_str().expect("id").to_string();
    let n = channel["number"].as_u64().expect("number");

    let paths = [
        format!("/api/stream/{n}.ts"),
        format!("/api/stream/0{n}.ts"),
        format!("/api/stream/+{n}.ts"),
        format!("/api/stream/{slug}.ts"),
        format!("/auto/v0{n}"),
        format!("/auto/v{n}"),
    ];
    let _viewers = watch_all(&app, &origin, &paths).await;

    assert_eq!(
        gauge(&app, "freesky_ts_sessions").await,
        1.0,
        "one session for every alias"
    );
    // One upstream fetch per segment.
    for seg in ["/live/s1.ts", "/live/s2.ts", "/live/s3.ts"] {
        assert_eq!(
            origin.upstream.hits(seg),
            1,
            "{:?}",
            origin.upstream.paths()
        );
    }
    let aliases = [
        slug.clone(),
        n.to_string(),
        format!("0{n}"),
        format!("+{n}"),
    ];
    let labels: Vec<_> = channel_samples(&app, "freesky_active_viewers")
        .await
        .into_iter()
        .filter(|(c, _)| aliases.contains(c))
        .collect();
    assert_eq!(
        labels,
        [(slug.clone(), paths.len() as f64)],
        "one label, the lineup channel id, counting every viewer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_id_and_the_channel_pinned_to_that_service_share_one_session() {
    let _alone = crate::common::alone().await;
    let (app, origin, _list) = app_with_channel("Alias Pinned").await;
    let (status, detail) = app.get_json("/api/channels/alias-pinned").await;
    assert_eq!(status, 200, "{detail}");
    let slug = detail["id"].as_str().expect("id").to_string();
    let source = detail["sources"][0]["channel_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a source with a channel_id: {detail}"))
        .to_string();

    let paths = [
        format!("/api/stream/Origin:{source}.ts"),
        format!("/api/stream/{slug}.ts?service=Origin"),
    ];
    let _viewers = watch_all(&app, &origin, &paths).await;
    assert_eq!(gauge(&app, "freesky_ts_sessions").await, 1.0);
    let labels: Vec<_> = channel_samples(&app, "freesky_active_viewers")
        .await
        .into_iter()
        .filter(|(c, _)| c.contains("alias-pinned") || c.starts_with("Origin:"))
        .collect();
    assert_eq!(labels, [(slug, 2.0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_players_of_every_alias_count_once_under_one_label() {
    let _alone = crate::common::alone().await;
    let (app, _origin, _list) = app_with_channel("Alias Hls").await;
    let channel = app.channel_named("Alias Hls").await;
    let slug = channel["id"].as_str().expect("id").to_string();
    let n = channel["number"].as_u64().expect("number");

    for path in [
        format!("/api/stream/{n}.m3u8"),
        format!("/api/stream/0{n}.m3u8"),
        format!("/api/stream/{slug}.m3u8"),
    ] {
        let resp = app.get(&path).await;
        assert_eq!(resp.status(), 200, "{path}");
        // The links name the lineup channel too (failover and viewer counts follow them).
        let body = resp.text().await.expect("playlist");
        assert!(body.contains("/proxy/"), "{body}");
    }
    // One client address, one channel: one player.
    let labels = channel_samples(&app, "freesky_hls_viewers").await;
    assert_eq!(labels, [(slug, 1.0)]);

    // A number no channel has is still unknown, however it is written.
    for path in [
        "/api/stream/0999.ts",
        "/api/stream/+999.m3u8",
        "/auto/v0999",
    ] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), 404, "{path}");
    }
    assert_eq!(gauge(&app, "freesky_ts_sessions").await, 0.0);
}
