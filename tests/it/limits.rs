//! SPEC 5, request limits: an over-long request target gets 414 and oversized headers
//! 431, both with the JSON error body; at `server.max_connections` new connections
//! wait (in the listen backlog) until one closes, while open ones keep being served;
//! one client address holds at most `max_connections_per_client` (the next gets 429);
//! a connection that sends no complete request head within `header_timeout`, or sits
//! idle between requests for `idle_timeout`, is closed.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::common::{assert_api_error, TestApp};

const DEMO: &str = "\n[[services]]\nname = \"Demo\"\nkind = \"demo\"\n";

fn config(server_extra: &str) -> String {
    format!("[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\n{server_extra}\n{DEMO}")
}

/// Sends one HTTP/1.1 request on `stream` and reads one response: (status, body).
async fn exchange(stream: &mut TcpStream, target: &str, headers: &str) -> (u16, String) {
    let req = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .expect("write request");
    read_response(stream).await
}

async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.expect("read response");
        assert!(
            n > 0,
            "connection closed before a response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no content-length in {head:?}"));
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
    (status, body)
}

fn assert_error_body(body: &str, mentions: &str) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let error = v["error"].as_str().unwrap_or_default();
    assert!(error.contains(mentions), "{body}");
    assert!(
        v.as_object().is_some_and(|o| o.contains_key("detail")),
        "{body}"
    );
}

#[tokio::test]
async fn long_uri_gets_414_and_large_headers_431_with_json_bodies() {
    // The defaults: 8 KiB request target, 16 KiB of headers.
    let app = TestApp::spawn(&config("")).await;

    let long = format!("/health?pad={}", "a".repeat(9 * 1024));
    let body = assert_api_error(app.get(&long).await, 414).await;
    assert!(
        body["error"].as_str().unwrap().contains("max_uri_bytes"),
        "{body}"
    );
    // Just under the limit is served.
    let fits = format!("/health?pad={}", "a".repeat(8 * 1024 - 20));
    assert_eq!(app.get(&fits).await.status(), 200);
    // Also on unknown routes: the limit applies before routing.
    let long404 = format!("/nope/{}", "b".repeat(9 * 1024));
    assert_api_error(app.get(&long404).await, 414).await;

    // Headers over raw TCP: one large header, and many small ones.
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let big = format!("X-Pad: {}\r\n", "c".repeat(17 * 1024));
    let (status, body) = timeout(Duration::from_secs(10), exchange(&mut s, "/health", &big))
        .await
        .expect("answer in time");
    assert_eq!(status, 431, "{body}");
    assert_error_body(&body, "max_header_bytes");

    let mut s = TcpStream::connect(&addr).await.unwrap();
    let many: String = (0..60)
        .map(|i| format!("X-Pad-{i}: {}\r\n", "d".repeat(300)))
        .collect();
    let (status, body) = timeout(Duration::from_secs(10), exchange(&mut s, "/health", &many))
        .await
        .expect("answer in time");
    assert_eq!(status, 431, "{body}");
    assert_error_body(&body, "max_header_bytes");

    // Headers within the limit are served.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let ok = format!("X-Pad: {}\r\n", "e".repeat(8 * 1024));
    let (status, _) = timeout(Duration::from_secs(10), exchange(&mut s, "/health", &ok))
        .await
        .expect("answer in time");
    assert_eq!(status, 200);
}

#[tokio::test]
async fn smaller_configured_limits_apply() {
    let app = TestApp::spawn(&config("max_uri_bytes = 512\nmax_header_bytes = 2048")).await;
    let long = format!("/health?pad={}", "a".repeat(600));
    assert_api_error(app.get(&long).await, 414).await;
    let resp = app
        .client
        .get(app.url("/health"))
        .header("x-pad", "p".repeat(2100))
        .send()
        .await
        .unwrap();
    assert_api_error(resp, 431).await;
    assert_eq!(app.get("/health").await.status(), 200);
}

#[test]
fn limits_below_their_minimum_are_config_errors() {
    let text = "[server]\nmax_connections = 0\nmax_uri_bytes = 10\n";
    let err = freesky::config::Config::parse(text, "bad.toml", &|_| None)
        .expect_err("must not load")
        .to_string();
    assert!(
        err.contains("bad.toml:2: server.max_connections: must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:3: server.max_uri_bytes: must be at least 256"),
        "{err}"
    );
    let text = "[server]\nheader_timeout = \"0s\"\nidle_timeout = \"2h\"\n\
                allowed_hosts = [\"http://tv.example:8005/\", \"ok.example\", \"*.ok.example\"]\n";
    let err = freesky::config::Config::parse(text, "bad.toml", &|_| None)
        .expect_err("must not load")
        .to_string();
    for want in [
        "bad.toml:2: server.header_timeout: must be more than 0 and at most 1h",
        "bad.toml:3: server.idle_timeout: must be more than 0 and at most 1h",
        "server.allowed_hosts: `http://tv.example:8005/` is not a host name",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
    assert_eq!(err.matches("allowed_hosts").count(), 1, "{err}");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let app = TestApp::spawn(&config("max_connections = 4")).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let step = Duration::from_secs(10);

    // Four idle keep-alive connections, each served once.
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut s = timeout(step, TcpStream::connect(&addr))
            .await
            .unwrap()
            .unwrap();
        let (status, _) = timeout(step, exchange(&mut s, "/health", ""))
            .await
            .unwrap();
        assert_eq!(status, 200);
        open.push(s);
    }

    // The fifth connects (the kernel's backlog takes it) but is not served yet.
    let mut fifth = timeout(step, TcpStream::connect(&addr))
        .await
        .unwrap()
        .unwrap();
    let req = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    fifth.write_all(req.as_bytes()).await.unwrap();
    let mut byte = [0u8; 1];
    assert!(
        timeout(Duration::from_millis(700), fifth.peek(&mut byte))
            .await
            .is_err(),
        "the fifth connection was served while four were open"
    );

    // Open connections keep working.
    let (status, _) = timeout(step, exchange(&mut open[0], "/health", ""))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, _) = timeout(step, exchange(&mut open[3], "/health", ""))
        .await
        .unwrap();
    assert_eq!(status, 200);

    // One closes: the waiting connection is taken and answered.
    drop(open.remove(1));
    let (status, _) = timeout(step, read_response(&mut fifth))
        .await
        .expect("the waiting connection is served once a slot frees");
    assert_eq!(status, 200);

    // All close: new connections work again, several at once.
    drop(open);
    drop(fifth);
    for _ in 0..4 {
        let mut s = timeout(step, TcpStream::connect(&addr))
            .await
            .unwrap()
            .unwrap();
        let (status, _) = timeout(step, exchange(&mut s, "/health", ""))
            .await
            .unwrap();
        assert_eq!(status, 200);
    }
    assert_eq!(
        timeout(step, app.get("/health")).await.unwrap().status(),
        200
    );
}

/// `GET /health` on `stream` answers 200 (bounded).
async fn health_ok(stream: &mut TcpStream) {
    let (status, body) = timeout(Duration::from_secs(10), exchange(stream, "/health", ""))
        .await
        .expect("answer in time");
    assert_eq!(status, 200, "{body}");
}

/// Reads until the server closes `stream` (end of file or a reset), bounded by `bound`;
/// returns what was read, or `None` if it was still open when the bound passed.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    timeout(bound, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| got)
}

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.x).
async fn connect_from(from: [u8; 4], addr: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from((from, 0)))
        .unwrap_or_else(|e| panic!("bind {from:?}: {e}"));
    timeout(
        Duration::from_secs(10),
        socket.connect(addr.parse().unwrap()),
    )
    .await
    .expect("connect in time")
    .expect("connect")
}

#[tokio::test]
async fn a_client_sending_no_complete_head_is_closed_after_header_timeout() {
    // The idle timeout is long: what closes these connections is the head timeout.
    let app = TestApp::spawn(&config("header_timeout = \"300ms\"\nidle_timeout = \"1h\"")).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    // The default is 30 s: a close within 10 s is this setting's doing.
    let bound = Duration::from_secs(10);

    // Connects and sends nothing.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let got = closed_within(&mut silent, bound)
        .await
        .expect("a silent connection is closed");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));

    // Sends half a request head, then nothing.
    let mut half = TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0")
        .await
        .unwrap();
    closed_within(&mut half, bound)
        .await
        .expect("a half-sent head is closed");

    // The control: a complete head in time is served.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    health_ok(&mut s).await;
}

/// A client that sends a request head and then stalls mid-body (an admin JSON body, an
/// Xtream form) is answered 408 once `header_timeout` has passed, and its connection
/// is let go: it holds no slot for longer. A body sent in time is read as before.
#[tokio::test]
async fn a_body_that_stalls_is_answered_408_after_header_timeout() {
    let app = TestApp::spawn(&config("header_timeout = \"1s\"\nidle_timeout = \"1h\"")).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    for (target, ctype) in [
        ("/api/users", "application/json"),
        ("/player_api.php", "application/x-www-form-urlencoded"),
    ] {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n\
             Content-Length: 100\r\n\r\n{{\"name\":"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        // The default is 30 s: an answer within 10 s is this setting's doing.
        let (status, body) = timeout(Duration::from_secs(10), read_response(&mut s))
            .await
            .unwrap_or_else(|_| panic!("{target}: no answer to a stalled body"));
        assert_eq!(status, 408, "{target}: {body}");
        assert_error_body(&body, "did not arrive within 1 s (server.header_timeout)");
        closed_within(&mut s, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{target}: the connection is let go"));
    }
    // The control: the same call with its whole body is read.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let body = "{\"name\":\"ann\",\"password\":\"a-Fine-pw.1\"}";
    let req = format!(
        "POST /api/users HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let (status, answer) = timeout(Duration::from_secs(10), read_response(&mut s))
        .await
        .expect("an answer");
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let app = TestApp::spawn(&config("header_timeout = \"1h\"\nidle_timeout = \"300ms\"")).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let bound = Duration::from_secs(10);
    let mut s = TcpStream::connect(&addr).await.unwrap();
    health_ok(&mut s).await;
    let got = closed_within(&mut s, bound)
        .await
        .expect("an idle kept-alive connection is closed");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
}

#[tokio::test]
async fn idle_and_head_timeouts_are_separate() {
    // A short head timeout does not close a kept-alive connection that is merely idle
    // for longer than it (nginx's client_header_timeout / keepalive_timeout split).
    let app = TestApp::spawn(&config("header_timeout = \"200ms\"\nidle_timeout = \"1h\"")).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let bound = Duration::from_secs(10);
    let mut s = TcpStream::connect(&addr).await.unwrap();
    health_ok(&mut s).await;
    // Several head timeouts long, idle: still open (a bounded wait for something
    // that must not happen).
    assert!(
        closed_within(&mut s, Duration::from_millis(1200))
            .await
            .is_none(),
        "an idle connection was closed by the head timeout"
    );
    health_ok(&mut s).await;
    // The next head, begun and not finished, is held to the head timeout.
    s.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    closed_within(&mut s, bound)
        .await
        .expect("a half-sent second head is closed");
}

#[tokio::test]
async fn a_client_address_over_its_cap_is_refused_while_others_are_served() {
    let app = TestApp::spawn(&config("max_connections_per_client = 2")).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let bound = Duration::from_secs(10);

    // Two kept-alive connections from 127.0.0.1, each served.
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = connect_from([127, 0, 0, 1], &addr).await;
        health_ok(&mut s).await;
        open.push(s);
    }

    // A third from the same address: 429 with the JSON error body, then closed.
    let mut third = connect_from([127, 0, 0, 1], &addr).await;
    let (status, body) = timeout(bound, exchange(&mut third, "/health", ""))
        .await
        .unwrap();
    assert_eq!(status, 429, "{body}");
    assert_error_body(&body, "max_connections_per_client");
    closed_within(&mut third, bound)
        .await
        .expect("the refused connection is closed");

    // Another address is served meanwhile, and the two open ones keep working.
    let mut other = connect_from([127, 0, 0, 2], &addr).await;
    health_ok(&mut other).await;
    health_ok(&mut open[1]).await;

    // One of the two closes: the address is served again (once the server has seen
    // the close).
    drop(open.remove(0));
    crate::common::eventually_within(
        bound,
        "the address to be served again after a connection closed",
        || async {
            let mut s = connect_from([127, 0, 0, 1], &addr).await;
            let (status, body) = timeout(bound, exchange(&mut s, "/health", ""))
                .await
                .unwrap();
            match status {
                200 => Ok(()),
                429 => Err(format!("{status} {body}")),
                _ => panic!("{status}: {body}"),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn one_request_tries_a_bounded_number_of_a_channels_sources() {
    // A list that gives one channel 30 entries, every one of them dead.
    let mut list = String::from("#EXTM3U\n");
    let up = crate::common::FakeUpstream::bind().await;
    let base = up.base();
    for i in 0..30 {
        list.push_str(&format!("#EXTINF:-1,Same\n{base}/dead/{i}.m3u8\n"));
    }
    let up = up
        .text("/list.m3u", crate::common::M3U_TYPE, list)
        .route(
            "/dead/{n}",
            axum::routing::get(|| async { axum::http::StatusCode::NOT_FOUND }),
        )
        .start();
    let app = TestApp::spawn(&format!(
        "[[services]]\nname = \"L\"\nkind = \"m3u\"\nurl = \"{base}/list.m3u\"\n"
    ))
    .await;
    let id = app.channel_id("Same").await;
    let body = assert_api_error(app.get(&format!("/api/stream/{id}.m3u8")).await, 502).await;
    let dead = || {
        up.paths()
            .iter()
            .filter(|p| p.starts_with("/dead/"))
            .count()
    };
    assert_eq!(dead(), 8, "8 of one service's sources a request: {body}");
    assert_eq!(
        body["detail"].as_array().map(Vec::len),
        Some(8),
        "the answer lists what was tried: {body}"
    );
}
