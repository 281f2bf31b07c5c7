//! URLs that upstream data supplies (playlist lines, redirects) may reach a loopback,
//! private, link-local, CGNAT or unspecified address only on the host the service's
//! config names, or with `allow_private = true`. A refused request is a JSON error
//! naming the address and `allow_private`, and no connection is ever opened: the
//! forbidden host here is a raw listener that counts the connections it accepts.
//!
//! The configured origin of every service here is `127.0.0.1` (the fake upstreams);
//! the forbidden hosts are another loopback address (`127.0.0.2`) and `localhost`,
//! which only DNS turns into a loopback address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common::{media_playlist, playlist_uris, FakeUpstream, TestApp, HLS_TYPE, M3U_TYPE};

/// A bare HTTP server that counts every connection it accepts and answers each with a
/// 188-byte MPEG-TS packet.
struct Counting {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Counting {
    async fn bind(addr: &str) -> Counting {
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind counting listener");
        Self::serve(vec![listener])
    }

    /// Listens on 127.0.0.1 and, where the machine has IPv6, on ::1 with the same port:
    /// every address `localhost` may resolve to.
    async fn bind_localhost() -> Counting {
        let v4 = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let port = v4.local_addr().expect("addr").port();
        let mut listeners = vec![v4];
        if let Ok(v6) = TcpListener::bind(("::1", port)).await {
            listeners.push(v6);
        }
        Self::serve(listeners)
    }

    fn serve(listeners: Vec<TcpListener>) -> Counting {
        let addr = listeners[0].local_addr().expect("counting addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let tasks = listeners
            .into_iter()
            .map(|listener| {
                let count = accepted.clone();
                tokio::spawn(async move {
                    while let Ok((conn, _)) = listener.accept().await {
                        count.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(answer(conn));
                    }
                })
            })
            .collect();
        Counting {
            addr,
            accepted,
            tasks,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Reads a request head and answers it with one MPEG-TS packet.
async fn answer(mut conn: tokio::net::TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let mut resp = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nContent-Length: 188\r\nConnection: close\r\n\r\n".to_vec();
    resp.extend_from_slice(&[0x47u8; 188]);
    let _ = conn.write_all(&resp).await;
}

impl Drop for Counting {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// An m3u service "Origin" on a fake upstream at 127.0.0.1 whose channel "Live" plays
/// `media` (a media playlist on the same fake). `routes` adds more routes to the fake.
async fn app_with(
    media: String,
    service_extra: &str,
    routes: impl FnOnce(crate::common::FakeBuilder) -> crate::common::FakeBuilder,
) -> (TestApp, FakeUpstream, String) {
    let fake = FakeUpstream::bind().await;
    let list = format!(
        "#EXTM3U\n#EXTINF:-1 tvg-id=\"Live.example\",Live\n{}\n",
        fake.url("/live.m3u8")
    );
    let fake = routes(
        fake.text("/list.m3u", M3U_TYPE, list)
            .text("/live.m3u8", HLS_TYPE, media),
    )
    .start();
    let app = m3u_app(&fake.url("/list.m3u"), service_extra).await;
    let id = id_of(&app, "Live").await;
    (app, fake, id)
}

/// Freesky with one m3u service "Origin" reading `list`.
async fn m3u_app(list: &str, service_extra: &str) -> TestApp {
    TestApp::spawn(&format!(
        "[[services]]\nname = \"Origin\"\nkind = \"m3u\"\nurl = \"{list}\"\n{service_extra}\n"
    ))
    .await
}

async fn id_of(app: &TestApp, channel: &str) -> String {
    app.channel_named(channel).await["id"]
        .as_str()
        .expect("channel id")
        .to_string()
}

/// The freesky links of the channel's (rewritten) media playlist.
async fn segment_links(app: &TestApp, id: &str) -> Vec<String> {
    let playlist = app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    let links = playlist_uris(&playlist);
    assert!(!links.is_empty(), "{playlist}");
    links
}

/// The segment link answers a JSON 502 whose error names `host`, `why` and the key that
/// would allow it.
async fn assert_refused(app: &TestApp, link: &str, host: &str, why: &str) {
    let resp = app.get(link).await;
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.expect("a JSON error body");
    let error = body["error"].as_str().unwrap_or_default();
    assert_eq!(status, 502, "{body}");
    for want in [host, why, "allow_private = true"] {
        assert!(
            error.contains(want),
            "`{want}` missing from the error: {error}"
        );
    }
}

#[tokio::test]
async fn a_segment_on_another_loopback_host_is_refused_without_a_connection() {
    let other = Counting::bind("127.0.0.2:0").await;
    let seg = format!("http://{}/seg0.ts", other.addr);
    let (app, _fake, id) = app_with(media_playlist(&[&seg]), "", |f| f).await;
    let links = segment_links(&app, &id).await;
    assert_refused(&app, &links[0], "127.0.0.2", "loopback").await;
    assert_eq!(other.accepted(), 0, "a connection reached the refused host");
}

#[tokio::test]
async fn a_listed_stream_on_a_private_host_fails_the_open_and_says_why() {
    let other = Counting::bind("127.0.0.2:0").await;
    let fake = FakeUpstream::bind().await;
    let list = format!(
        "#EXTM3U\n#EXTINF:-1,Elsewhere\nhttp://{}/live.m3u8\n",
        other.addr
    );
    let fake = fake.text("/list.m3u", M3U_TYPE, list).start();
    let app = m3u_app(&fake.url("/list.m3u"), "").await;
    let id = id_of(&app, "Elsewhere").await;
    let resp = app.get(&format!("/api/stream/{id}.m3u8")).await;
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.expect("a JSON error body");
    let why = body["detail"][0]["error"].as_str().unwrap_or_default();
    for want in ["127.0.0.2", "loopback", "allow_private = true"] {
        assert!(why.contains(want), "`{want}` missing: {body}");
    }
    let status = app.service_status("Origin").await;
    let last = status["last_error"].as_str().unwrap_or_default();
    assert!(last.contains("allow_private"), "{status}");
    assert_eq!(other.accepted(), 0, "a connection reached the refused host");
}

#[tokio::test]
async fn with_allow_private_a_segment_on_another_loopback_host_plays() {
    let other = Counting::bind("127.0.0.2:0").await;
    let seg = format!("http://{}/seg0.ts", other.addr);
    let (app, _fake, id) = app_with(media_playlist(&[&seg]), "allow_private = true", |f| f).await;
    let links = segment_links(&app, &id).await;
    let resp = app.get(&links[0]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.expect("segment").len(), 188);
    assert_eq!(other.accepted(), 1);
}

#[tokio::test]
async fn a_redirect_hop_to_a_private_host_is_refused_without_a_connection() {
    let other = Counting::bind("127.0.0.2:0").await;
    let target = format!("http://{}/seg0.ts", other.addr);
    let (app, fake, id) = app_with(media_playlist(&["/hop.ts"]), "", |f| {
        f.route(
            "/hop.ts",
            get(move || {
                let target = target.clone();
                async move {
                    (axum::http::StatusCode::FOUND, [(header::LOCATION, target)]).into_response()
                }
            }),
        )
    })
    .await;
    let links = segment_links(&app, &id).await;
    assert_refused(&app, &links[0], "127.0.0.2", "loopback").await;
    assert_eq!(fake.hits("/hop.ts"), 1, "the first hop is the origin's own");
    assert_eq!(other.accepted(), 0, "the redirect reached the refused host");
}

/// A redirect to a URL freesky does not fetch (`file:`, `gopher:`) is refused, and the
/// error names its scheme: not "without a usable Location", which reads as a broken
/// upstream. No part of the target is shown.
#[tokio::test]
async fn a_redirect_to_a_file_or_gopher_url_is_refused_by_its_scheme() {
    let to = |target: &'static str| {
        get(move || async move {
            (axum::http::StatusCode::FOUND, [(header::LOCATION, target)]).into_response()
        })
    };
    let (app, fake, id) = app_with(media_playlist(&["/file.ts", "/gopher.ts"]), "", |f| {
        f.route("/file.ts", to("file:///etc/passwd"))
            .route("/gopher.ts", to("gopher://127.0.0.1:70/1secret"))
    })
    .await;
    let links = segment_links(&app, &id).await;
    for (link, scheme) in links.iter().zip(["file", "gopher"]) {
        let resp = app.get(link).await;
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.expect("a JSON error body");
        assert_eq!(status, 502, "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!(
                "HTTP 302 redirect to a non-HTTP URL (`{scheme}:`) refused"
            )),
            "{error}"
        );
        assert!(
            !error.contains("passwd") && !error.contains("secret"),
            "{error}"
        );
    }
    assert_eq!(fake.hits("/file.ts") + fake.hits("/gopher.ts"), 2);
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused_after_dns() {
    // `localhost` is a name, not an address: only the resolver sees it is loopback.
    let local = Counting::bind_localhost().await;
    let seg = format!("http://localhost:{}/seg0.ts", local.addr.port());
    let (app, _fake, id) = app_with(media_playlist(&[&seg]), "", |f| f).await;
    let links = segment_links(&app, &id).await;
    assert_refused(&app, &links[0], "`localhost` resolves only to", "loopback").await;
    assert_eq!(local.accepted(), 0, "a connection reached localhost");
}

#[tokio::test]
async fn a_list_read_from_a_file_sends_credentials_to_its_origin_only() {
    let panel = FakeUpstream::bind()
        .await
        .text("/live.m3u8", HLS_TYPE, media_playlist(&["a.ts"]))
        .start();
    let cdn = FakeUpstream::bind()
        .await
        .text("/live.m3u8", HLS_TYPE, media_playlist(&["b.ts"]))
        .start();
    let dir = tempfile::tempdir().expect("temp dir");
    let list = dir.path().join("list.m3u");
    std::fs::write(
        &list,
        format!(
            "#EXTM3U\n#EXTINF:-1,Panel\n{}\n#EXTINF:-1,Cdn\n{}\n",
            panel.url("/live.m3u8"),
            cdn.url("/live.m3u8")
        ),
    )
    .expect("write list");
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"File\"\nkind = \"m3u\"\nurl = '{}'\norigin = \"{}\"\n[services.auth]\nbearer = \"s3cret-tok\"\n",
        list.display(),
        panel.base()
    ))
    .await;
    for name in ["Panel", "Cdn"] {
        let id = id_of(&app, name).await;
        app.get_text_ok(&format!("/api/stream/{id}.m3u8")).await;
    }
    let auth = |fake: &FakeUpstream| {
        fake.requests_to("/live.m3u8")
            .iter()
            .map(|r| r.header("authorization").map(str::to_string))
            .collect::<Vec<_>>()
    };
    assert_eq!(auth(&panel), [Some("Bearer s3cret-tok".to_string())]);
    assert_eq!(auth(&cdn), [None]);
}

/// A segment link pointing at freesky's own port on the service's own host (the fake
/// upstream's 127.0.0.1): refused, so upstream data cannot make freesky fetch its own
/// admin routes from loopback (which, without an admin token, would pass as an admin).
#[tokio::test]
async fn a_segment_on_freesky_itself_is_refused() {
    let fake = FakeUpstream::bind().await;
    let list = format!(
        "#EXTM3U\n#EXTINF:-1 tvg-id=\"Live.example\",Live\n{}\n",
        fake.url("/live.m3u8")
    );
    let fake = fake
        .text("/list.m3u", M3U_TYPE, list)
        .route(
            "/live.m3u8",
            get(|| async {
                let port = OWN_PORT.load(Ordering::SeqCst);
                let body = media_playlist(&[
                    &format!("http://127.0.0.1:{port}/api/users"),
                    &format!("http://localhost:{port}/api/services/status"),
                ]);
                ([(header::CONTENT_TYPE, HLS_TYPE)], body).into_response()
            }),
        )
        .start();
    let app = m3u_app(&fake.url("/list.m3u"), "").await;
    let port: u16 = app
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the app's port");
    OWN_PORT.store(port, Ordering::SeqCst);
    let id = id_of(&app, "Live").await;
    let links = segment_links(&app, &id).await;
    assert_eq!(links.len(), 2);
    for link in &links {
        let resp = app.get(link).await;
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.expect("a JSON error body");
        assert_eq!(status, 502, "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains("freesky's own address"), "{error}");
    }
}

/// The port of the app under test in `a_segment_on_freesky_itself_is_refused` (its
/// upstream's playlist names it; the app starts after the upstream).
static OWN_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
