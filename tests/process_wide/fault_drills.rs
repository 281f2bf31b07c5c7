//! Fault drills (issue 6): one misbehaving upstream on 127.0.0.1 with a route per
//! fault, and for each fault a freesky whose service points at it beside a healthy
//! service. Each drill checks that the client gets an answer within the service
//! `timeout` plus a margin (a JSON error, or a fallback to another source), that the
//! server still answers `/health` afterwards (no panic), that the healthy service's
//! channel still plays, and, for the drills with huge bodies, that the process's peak
//! memory (VmHWM) grew by less than `MEMORY_BOUND_MB`.
//!
//! One test runs every drill in turn and prints `N drills, N passed`; it fails at the
//! end listing every failed drill. RELIABILITY.md states what each drill promises.

use std::io::Write;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{json_of, respond, FakeUpstream, TestApp, HLS_TYPE, M3U_TYPE};

/// The faulty service's `timeout` (and so its `idle_timeout`).
const TIMEOUT: Duration = Duration::from_secs(2);
/// What a client may wait on top of `TIMEOUT` before a drill counts as a hang. A bound
/// on a wait, not a speed assertion.
const MARGIN: Duration = Duration::from_secs(8);
/// Growth of peak resident memory allowed during one big-body drill.
const MEMORY_BOUND_MB: u64 = 200;
/// Size of the lazily generated playlist.
const GIGABYTE: u64 = 1 << 30;
/// What the gzip bomb inflates to: members of 1 MiB of zeros.
const BOMB_MIB: usize = 8 * 1024;
/// The amplification playlist: exactly the default `max_body_bytes` of one-character
/// URI lines, served from a URL this long (every link would repeat it).
const AMPLIFY_BYTES: usize = 16 << 20;
const AMPLIFY_URL_BYTES: usize = 3000;

// ---------------------------------------------------------------------------------------
// the misbehaving upstream

/// A 64 KiB chunk of media playlist lines.
fn playlist_chunk() -> Bytes {
    let line = "#EXTINF:2.000,\nsegment-000000.ts\n";
    Bytes::from(line.repeat((64 << 10) / line.len()))
}

/// A playlist body of `total` bytes (`None`: endless), generated as it is sent.
fn lazy_playlist(total: Option<u64>) -> Body {
    let chunk = playlist_chunk();
    let head = Bytes::from_static(b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n");
    let stream = futures::stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        let head = head.clone();
        async move {
            let next = if sent == 0 { head } else { chunk };
            let next = match total {
                Some(t) if sent >= t => return None,
                Some(t) => next.slice(..next.len().min((t - sent) as usize)),
                None => next,
            };
            let len = next.len() as u64;
            Some((Ok::<_, std::io::Error>(next), sent + len))
        }
    });
    Body::from_stream(stream)
}

/// A gzip stream of many members, each 1 MiB of zeros: ~1 KB each on the wire.
fn gzip_bomb() -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&vec![0u8; 1 << 20]).expect("gzip");
    let member = enc.finish().expect("gzip");
    let mut out = Vec::with_capacity(member.len() * BOMB_MIB);
    for _ in 0..BOMB_MIB {
        out.extend_from_slice(&member);
    }
    Bytes::from(out)
}

/// A media playlist of `AMPLIFY_BYTES`: a head, then `a` lines (8 million URIs).
fn amplifying_playlist() -> Bytes {
    let mut body = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\n".to_vec();
    while body.len() + 2 <= AMPLIFY_BYTES {
        body.extend_from_slice(b"a\n");
    }
    body.resize(AMPLIFY_BYTES, b'\n');
    Bytes::from(body)
}

const GOOD_PLAYLIST: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n\
#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2.000,\nseg0.ts\n#EXT-X-ENDLIST\n";

/// The HTTP faults, one route each.
async fn faulty_router() -> FakeUpstream {
    let bomb = gzip_bomb();
    let amplify = amplifying_playlist();
    let mut bad_utf8 = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,caf\xe9 \xff\xfe\n".to_vec();
    bad_utf8.extend_from_slice(b"seg\xc3\x28.ts\n#EXT-X-ENDLIST\n");
    let bad_list = b"#EXTM3U\n#EXTINF:-1 tvg-id=\"\xff\xfe\",Caf\xe9 \xc3\x28 Channel\n\
http://127.0.0.1:9/x.m3u8\n#EXTINF:-1,Plain\nhttp://127.0.0.1:9/y.m3u8\n"
        .to_vec();
    FakeUpstream::bind()
        .await
        .text("/good.m3u8", HLS_TYPE, GOOD_PLAYLIST)
        .status("/status-500", 500)
        .status("/status-403", 403)
        .route(
            "/status-429",
            get(|| async {
                Response::builder()
                    .status(429)
                    .header(header::RETRY_AFTER, "1")
                    .body(Body::from("slow down"))
                    .expect("response")
            }),
        )
        .hang("/hang-head")
        .route(
            "/hang-body",
            get(|| async {
                let first = futures::stream::once(async {
                    Ok::<_, std::io::Error>(Bytes::from_static(b"#EXTM3U\n#EXT-X-TARGET"))
                });
                let body = futures::StreamExt::chain(first, futures::stream::pending());
                respond(200, HLS_TYPE, Body::from_stream(body))
            }),
        )
        .route(
            "/trickle",
            get(|| async {
                let bytes = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg0.ts\n";
                let stream = futures::stream::unfold(0usize, move |i| async move {
                    if i >= bytes.len() {
                        return None;
                    }
                    if i > 0 {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Some((
                        Ok::<_, std::io::Error>(Bytes::copy_from_slice(&bytes[i..=i])),
                        i + 1,
                    ))
                });
                respond(200, HLS_TYPE, Body::from_stream(stream))
            }),
        )
        .route(
            "/endless",
            get(|| async { respond(200, HLS_TYPE, lazy_playlist(None)) }),
        )
        .route(
            "/gigabyte",
            get(|| async {
                let mut r = respond(200, HLS_TYPE, lazy_playlist(Some(GIGABYTE)));
                r.headers_mut().insert(
                    header::CONTENT_LENGTH,
                    GIGABYTE.to_string().parse().unwrap(),
                );
                r
            }),
        )
        .route(
            "/endless-list",
            get(|| async {
                let line =
                    Bytes::from("#EXTINF:-1,Endless\nhttp://127.0.0.1:9/e.m3u8\n".repeat(1000));
                let stream = futures::stream::unfold(true, move |first| {
                    let line = line.clone();
                    async move {
                        let chunk = if first {
                            Bytes::from_static(b"#EXTM3U\n")
                        } else {
                            line
                        };
                        Some((Ok::<_, std::io::Error>(chunk), false))
                    }
                });
                respond(200, M3U_TYPE, Body::from_stream(stream))
            }),
        )
        .route(
            "/redirect-loop",
            get(|| async {
                Response::builder()
                    .status(302)
                    .header(header::LOCATION, "/redirect-loop")
                    .body(Body::empty())
                    .expect("response")
            }),
        )
        .route(
            "/amplify",
            get(|| async {
                // A redirect to a multi-KB URL: the base every link's context carries.
                let pad = "p".repeat(AMPLIFY_URL_BYTES);
                Response::builder()
                    .status(302)
                    .header(header::LOCATION, format!("/amplified.m3u8?pad={pad}"))
                    .body(Body::empty())
                    .expect("response")
            }),
        )
        .route(
            "/amplified.m3u8",
            get(move || {
                let body = amplify.clone();
                async move { respond(200, HLS_TYPE, body) }
            }),
        )
        .text(
            "/html",
            "text/html; charset=utf-8",
            "<!doctype html><html><body><h1>Welcome</h1><p>Please log in.</p></body></html>",
        )
        .bytes("/bad-utf8.m3u8", HLS_TYPE, bad_utf8)
        .bytes("/bad-utf8-list.m3u", M3U_TYPE, bad_list)
        .route(
            "/bomb.xml.gz",
            get(move || {
                let bomb = bomb.clone();
                async move { respond(200, "application/gzip", bomb) }
            }),
        )
        .start()
}

/// The faults that break HTTP framing, on a raw TCP listener: `/reset` (the
/// connection is reset after the request), `/short-length` (a Content-Length shorter
/// than the body), `/long-length` (longer than the body, then the connection closes).
async fn raw_upstream() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind raw");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(raw_answer(stream));
        }
    });
    (base, task)
}

async fn raw_answer(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let body = GOOD_PLAYLIST.as_bytes();
    match path.as_str() {
        "/reset" => {
            // SO_LINGER 0: closing sends RST instead of FIN.
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            drop(stream);
        }
        "/short-length" => {
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {HLS_TYPE}\r\nContent-Length: 12\r\n\r\n"
            );
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.write_all(body).await;
            let _ = stream.shutdown().await;
        }
        "/long-length" => {
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {HLS_TYPE}\r\nContent-Length: {}\r\n\r\n",
                body.len() + 10_000
            );
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.write_all(body).await;
            let _ = stream.shutdown().await;
        }
        _ => {
            let _ = stream
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// drills

/// Where the fault sits.
#[derive(Clone, Copy)]
enum Place {
    /// The stream URL of channel "Faulty" of the m3u service "Faulty".
    Stream,
    /// The same, and a second m3u service "Good" lists the channel too (fallback).
    StreamWithFallback,
    /// The M3U list of the service "Faulty" itself.
    List,
    /// The guide (`epg_url`) of the service "Faulty".
    Guide,
}

/// What the client must get.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    /// A JSON error `{"error", "detail"}` with this status.
    Error(u16),
    /// The same, and the body names this (the cap that refused it).
    ErrorNaming(u16, &'static str),
    /// A JSON error with a 5xx status (502 or 504, depending on how the fault ends).
    UpstreamError,
    /// 200 with an HLS playlist (a fallback, or a lossy but valid playlist).
    Playlist,
    /// `/api/channels/all` 200 (without the faulty service's channels unless listed here).
    Channels(&'static [&'static str]),
    /// `/epg.xml` 200, and the faulty service's guide status holds an error.
    GuideWithError,
}

struct Drill {
    name: &'static str,
    /// Path on the faulty router, or `raw:` + path on the raw TCP upstream.
    path: &'static str,
    place: Place,
    expect: Expect,
    /// Check VmHWM growth.
    big: bool,
}

struct Outcome {
    status: u16,
    waited: Duration,
    hwm_growth_kb: Option<u64>,
}

fn drills() -> Vec<Drill> {
    use Expect::*;
    use Place::*;
    let d = |name, path, place, expect, big| Drill {
        name,
        path,
        place,
        expect,
        big,
    };
    vec![
        d("http 500", "/status-500", Stream, Error(502), false),
        d("http 403", "/status-403", Stream, Error(502), false),
        d(
            "http 429 retry-after 1",
            "/status-429",
            Stream,
            Error(502),
            false,
        ),
        d(
            "hang before headers",
            "/hang-head",
            Stream,
            Error(504),
            false,
        ),
        d("hang mid-body", "/hang-body", Stream, Error(504), false),
        d("connection reset", "raw:/reset", Stream, Error(502), false),
        d("trickle 1 byte/s", "/trickle", Stream, Error(504), false),
        d("endless body", "/endless", Stream, UpstreamError, true),
        d("1 GB playlist", "/gigabyte", Stream, Error(502), true),
        d(
            "16 MiB URIs via long URL",
            "/amplify",
            Stream,
            ErrorNaming(502, "max_playlist_uris"),
            true,
        ),
        d("redirect loop", "/redirect-loop", Stream, Error(502), false),
        d("HTML with 200", "/html", Stream, Error(502), false),
        d(
            "invalid UTF-8 playlist",
            "/bad-utf8.m3u8",
            Stream,
            Playlist,
            false,
        ),
        d(
            "Content-Length short",
            "raw:/short-length",
            Stream,
            Error(502),
            false,
        ),
        d(
            "Content-Length long",
            "raw:/long-length",
            Stream,
            Error(502),
            false,
        ),
        d(
            "500 with a fallback",
            "/status-500",
            StreamWithFallback,
            Playlist,
            false,
        ),
        d(
            "hang with a fallback",
            "/hang-head",
            StreamWithFallback,
            Playlist,
            false,
        ),
        d("list: http 500", "/status-500", List, Channels(&[]), false),
        d("list: hang", "/hang-head", List, Channels(&[]), false),
        d(
            "list: endless body",
            "/endless-list",
            List,
            Channels(&[]),
            true,
        ),
        d(
            "list: redirect loop",
            "/redirect-loop",
            List,
            Channels(&[]),
            false,
        ),
        d("list: reset", "raw:/reset", List, Channels(&[]), false),
        d(
            "list: invalid UTF-8",
            "/bad-utf8-list.m3u",
            List,
            Channels(&["Plain"]),
            false,
        ),
        d(
            "guide: gzip bomb",
            "/bomb.xml.gz",
            Guide,
            GuideWithError,
            true,
        ),
    ]
}

/// The config of one drill: the faulty service (`timeout` 2 s), the demo service and,
/// for a fallback, a good m3u service listing the same channel.
fn config(place: Place, fault: &str, list: &FakeUpstream, good: &str) -> String {
    let t = format!("{}s", TIMEOUT.as_secs());
    let demo = "[health]\ninterval = \"0s\"\n\n[[services]]\nname = \"Demo\"\nkind = \"demo\"\npriority = 100\n\n";
    let faulty = match place {
        Place::List => format!(
            "[[services]]\nname = \"Faulty\"\nkind = \"m3u\"\npriority = 1\ntimeout = \"{t}\"\nurl = \"{fault}\"\n"
        ),
        Place::Guide => format!(
            "[[services]]\nname = \"Faulty\"\nkind = \"m3u\"\npriority = 1\ntimeout = \"{t}\"\nurl = \"{}\"\nepg_url = \"{fault}\"\n",
            list.url("/faulty.m3u")
        ),
        Place::Stream | Place::StreamWithFallback => format!(
            "[[services]]\nname = \"Faulty\"\nkind = \"m3u\"\npriority = 1\ntimeout = \"{t}\"\nurl = \"{}\"\n",
            list.url("/faulty.m3u")
        ),
    };
    let fallback = match place {
        Place::StreamWithFallback => format!(
            "\n[[services]]\nname = \"Good\"\nkind = \"m3u\"\npriority = 2\ntimeout = \"{t}\"\nurl = \"{}\"\n",
            list.url(good)
        ),
        _ => String::new(),
    };
    format!("{demo}{faulty}{fallback}")
}

/// Runs one drill; `Err` says what went wrong.
async fn run(drill: &Drill, faulty: &FakeUpstream, raw: &str) -> Result<Outcome, String> {
    let fault = match drill.path.strip_prefix("raw:") {
        Some(p) => format!("{raw}{p}"),
        None => faulty.url(drill.path),
    };
    // The lists of the faulty service (its channel at the fault) and of the good one.
    let good_stream = faulty.url("/good.m3u8");
    let list = FakeUpstream::bind()
        .await
        .text(
            "/faulty.m3u",
            M3U_TYPE,
            format!("#EXTM3U\n#EXTINF:-1 tvg-id=\"Faulty.example\",Faulty\n{fault}\n"),
        )
        .text(
            "/good.m3u",
            M3U_TYPE,
            format!("#EXTM3U\n#EXTINF:-1 tvg-id=\"Faulty.example\",Faulty\n{good_stream}\n"),
        )
        .start();
    let app = TestApp::spawn(&config(drill.place, &fault, &list, "/good.m3u")).await;
    let bound = TIMEOUT + MARGIN;

    crate::common::reset_vm_hwm();
    let hwm_before = crate::common::vm_hwm_kb();
    let started = Instant::now();
    let path = match drill.place {
        Place::Stream | Place::StreamWithFallback => "/api/stream/faulty.m3u8",
        Place::List => "/api/channels/all",
        Place::Guide => "/epg.xml",
    };
    let answer = async {
        let resp = app
            .client
            .get(app.url(path))
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("GET {path} body: {e}"))?;
        Ok::<_, String>((status, ctype, body))
    };
    let (status, ctype, body) = tokio::time::timeout(bound, answer)
        .await
        .map_err(|_| format!("no answer to {path} within {bound:?}"))??;
    let waited = started.elapsed();
    let text = String::from_utf8_lossy(&body);
    let short = |t: &str| t.chars().take(300).collect::<String>();
    match drill.expect {
        Expect::Error(_) | Expect::ErrorNaming(..) | Expect::UpstreamError => {
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|_| format!("{status} is not JSON ({ctype}): {}", short(&text)))?;
            let wanted = match drill.expect {
                Expect::Error(s) => status == s,
                Expect::ErrorNaming(s, named) => status == s && text.contains(named),
                _ => matches!(status, 502 | 504),
            };
            if !wanted
                || json["error"].as_str().is_none_or(str::is_empty)
                || json.get("detail").is_none()
            {
                return Err(format!("expected {:?}, got {status}: {json}", drill.expect));
            }
        }
        Expect::Playlist => {
            if status != 200 || !text.starts_with("#EXTM3U") {
                return Err(format!(
                    "expected a playlist, got {status}: {}",
                    short(&text)
                ));
            }
        }
        Expect::Channels(listed) => {
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|_| format!("{status} is not JSON: {}", short(&text)))?;
            let names: Vec<&str> = json
                .as_array()
                .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
                .unwrap_or_default();
            if status != 200 || !names.contains(&"Demo") {
                return Err(format!("expected the demo channel, got {status}: {json}"));
            }
            for n in listed {
                if !names.contains(n) {
                    return Err(format!("{n} missing from {names:?}"));
                }
            }
            if listed.is_empty() && names.len() != 1 {
                return Err(format!("only the demo channel expected: {names:?}"));
            }
            if listed.is_empty() {
                let s = app.service_status("Faulty").await;
                if s["last_error"].is_null() {
                    return Err(format!("the faulty service's status names no error: {s}"));
                }
            }
        }
        Expect::GuideWithError => {
            if status != 200 || !text.contains("<tv") {
                return Err(format!(
                    "expected the guide, got {status}: {}",
                    short(&text)
                ));
            }
            let s = app.service_status("Faulty").await;
            if s["guide"]["last_error"].as_str().is_none_or(str::is_empty) {
                return Err(format!("the guide status names no error: {s}"));
            }
            println!("  guide error: {}", s["guide"]["last_error"]);
        }
    }
    let hwm_growth_kb = drill
        .big
        .then(|| crate::common::vm_hwm_kb().saturating_sub(hwm_before));
    if let Some(g) = hwm_growth_kb {
        if g > MEMORY_BOUND_MB << 10 {
            return Err(format!(
                "VmHWM grew by {} MB (bound {MEMORY_BOUND_MB} MB)",
                g >> 10
            ));
        }
    }

    // Still alive, and the healthy service still plays.
    let after = async {
        let (s, health) = json_of(app.get("/health").await).await;
        if s != 200 || health["status"] != "ok" {
            return Err(format!("/health after the drill: {s} {health}"));
        }
        let resp = app.get("/api/stream/demo.m3u8").await;
        let s = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        if s != 200 || !body.starts_with("#EXTM3U") {
            return Err(format!(
                "the demo channel after the drill: {s} {}",
                short(&body)
            ));
        }
        Ok(())
    };
    tokio::time::timeout(bound, after)
        .await
        .map_err(|_| format!("/health or the demo channel did not answer within {bound:?}"))??;
    Ok(Outcome {
        status,
        waited,
        hwm_growth_kb,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_drill() {
    let _alone = crate::common::alone().await;
    let faulty = faulty_router().await;
    let (raw, raw_task) = raw_upstream().await;
    let drills = drills();
    let mut failures = Vec::new();
    let mut max_wait = Duration::ZERO;
    let mut max_growth_kb = 0;
    for drill in &drills {
        match run(drill, &faulty, &raw).await {
            Ok(o) => {
                max_wait = max_wait.max(o.waited);
                max_growth_kb = max_growth_kb.max(o.hwm_growth_kb.unwrap_or(0));
                let mem = o
                    .hwm_growth_kb
                    .map(|g| format!(", VmHWM +{} MB", g >> 10))
                    .unwrap_or_default();
                println!(
                    "drill {:<26} ok: {} in {:.2} s{mem}",
                    drill.name,
                    o.status,
                    o.waited.as_secs_f64()
                );
            }
            Err(e) => {
                println!("drill {:<26} FAILED: {e}", drill.name);
                failures.push(format!("{}: {e}", drill.name));
            }
        }
    }
    raw_task.abort();
    println!(
        "max wait {:.2} s (bound {:?}), max VmHWM growth {} MB (bound {MEMORY_BOUND_MB} MB)",
        max_wait.as_secs_f64(),
        TIMEOUT + MARGIN,
        max_growth_kb >> 10
    );
    println!(
        "{} drills, {} passed",
        drills.len(),
        drills.len() - failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed drills:\n{}",
        failures.join("\n")
    );
}
