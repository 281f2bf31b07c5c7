//! SPEC 5, admin safety, against the real binary: without an `admin_token` a client on
//! another address cannot change anything; with a token every admin call needs it,
//! loopback included; every state-changing route is an admin call or listed here as
//! harmless; another site's page cannot call them (`Origin`, `Sec-Fetch-Site`), nor
//! reach freesky through a name that is not its own (`Host`), nor frame its pages; and
//! no secret of the config (admin token, every `[services.auth]` kind, an Xtream
//! password; from `${VAR}` and from `*_file`) ever shows in an answer, a link or the
//! debug log.
//!
//! Test traffic stays on this machine's loopback, or inside a pair of network
//! namespaces a test creates itself (`ip netns`, joined by a veth pair) to have a
//! client on another address; where namespaces cannot be made, those tests say so on
//! stderr and check nothing (the in-process test proves the same rule everywhere).

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Path as UrlPath, Query};
use axum::http::HeaderMap;
use axum::routing::get;
use base64::Engine;
use serde_json::Value;

use crate::common::{
    assert_api_error, freesky_command, freesky_command_via, json_of, media_playlist, playlist_uris,
    respond, FakeUpstream, Process, TestApp, HANG_GUARD, HLS_TYPE,
};

/// Every state-changing route of `src/http/*.rs` (the routers' `post`/`put`/`patch`),
/// with a body that would be accepted. `/lineup.post` (HDHomeRun) is a no-op and
/// `/api/channels/{id}/test` only plays a channel as any viewer may: not listed.
const ADMIN_CALLS: &[(&str, &str, &str)] = &[
    ("POST", "/api/services/Demo/disable", ""),
    ("POST", "/api/services/Demo/enable", ""),
    (
        "PATCH",
        "/api/channels/demo",
        r#"{"name":"Hijacked","number":77}"#,
    ),
    ("POST", "/api/services/Demo/reset", ""),
    ("PUT", "/api/services/Demo/priority", r#"{"priority":3}"#),
    ("POST", "/api/guide/refresh", ""),
    ("POST", "/api/config/reload", ""),
    (
        "POST",
        "/api/users",
        r#"{"name":"intruder","password":"x"}"#,
    ),
    ("PATCH", "/api/users/intruder", r#"{"enabled":true}"#),
    ("DELETE", "/api/users/intruder", ""),
    ("POST", "/api/guide/matches/demo", r#"{"action":"confirm"}"#),
    ("POST", "/api/vod/refresh", ""),
    // No channel `gone` was ever mapped: with the token, nothing to forget.
    ("DELETE", "/api/channels/gone/mapping", ""),
];

/// The freesky binary serving `config`, its stderr in a file (`common::Process`:
/// SIGKILLed on drop).
struct Freesky {
    process: Process,
    /// The port of its `serving on http://ADDR:PORT` log line.
    port: u16,
}

impl Freesky {
    fn start(config: &Path, bind: &str, env: &[(&str, &str)], rust_log: &str) -> Freesky {
        Self::start_in(None, config, bind, env, rust_log)
    }

    /// `start`, inside the network namespace `netns` when given.
    fn start_in(
        netns: Option<&str>,
        config: &Path,
        bind: &str,
        env: &[(&str, &str)],
        rust_log: &str,
    ) -> Freesky {
        let log = config.with_extension(format!("{}.log", rand_suffix()));
        let mut cmd = match netns {
            // `ip netns exec` execs the binary: the child is freesky itself.
            Some(ns) => freesky_command_via(&["ip", "netns", "exec", ns]),
            None => freesky_command(),
        };
        cmd.arg("--config")
            .arg(config)
            .arg("serve")
            .arg("--bind")
            .arg(bind)
            .env("RUST_LOG", rust_log)
            .envs(env.iter().copied());
        let process = Process::serve(cmd, &log);
        Freesky {
            port: process.addr.port(),
            process,
        }
    }

    fn log_text(&self) -> String {
        self.process.log_text()
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HANG_GUARD)
        .build()
        .expect("client builds")
}

async fn call(
    client: &reqwest::Client,
    base: &str,
    (method, path, body): (&str, &str, &str),
    token: Option<&str>,
) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client
        .request(method, format!("{base}{path}"))
        .body(body.to_string());
    if let Some(t) = token {
        req = req.header("authorization", t);
    }
    req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Asserts a JSON error with `status` (SPEC 5: `{"error", "detail"}`).
async fn assert_refused(resp: reqwest::Response, status: u16, what: &str) {
    let (got, body) = json_of(resp).await;
    assert_eq!(got.as_u16(), status, "{what}: {body:#}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()) && body.get("detail").is_some(),
        "{what}: not an API error body: {body}"
    );
}

/// What an admin call could change: Demo's enabled flag, Demo's priority and the demo
/// channel.
async fn snapshot(client: &reqwest::Client, base: &str) -> (Value, Value, Value) {
    let status: Value = client
        .get(format!("{base}/api/services/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("status json");
    let demo = status
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "Demo"))
        .cloned()
        .unwrap_or_else(|| panic!("no Demo in {status:#}"));
    let channel: Value = client
        .get(format!("{base}/api/channels/demo"))
        .send()
        .await
        .expect("channel")
        .json()
        .await
        .expect("channel json");
    (demo["enabled"].clone(), demo["priority"].clone(), channel)
}

fn demo_config(dir: &Path, extra_server: &str) -> PathBuf {
    let config = dir.join("freesky.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nstate_dir = '{}'\n{extra_server}\n\n[[services]]\nname = \"Demo\"\nkind = \"demo\"\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    config
}

#[tokio::test]
async fn with_a_token_every_admin_call_needs_it_from_loopback_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path(), "admin_token = \"${FS_AS_ADMIN}\"");
    let token = "t0ken-for-admin-safety";
    let app = Freesky::start(&config, "127.0.0.1:0", &[("FS_AS_ADMIN", token)], "info");
    let local = client();
    let local_base = format!("http://127.0.0.1:{}", app.port);
    let right = format!("Bearer {token}");

    let before = snapshot(&local, &local_base).await;
    for (i, &c) in ADMIN_CALLS.iter().enumerate() {
        let what = format!("{} {}", c.0, c.1);
        assert_refused(call(&local, &local_base, c, None).await, 401, &what).await;
        // Each route's guesses from an address of their own: three wrong tokens from one
        // address are free, more make it wait (`wrong_admin_tokens_make_...`).
        let octet = u8::try_from(10 + i).expect("fewer than 245 admin calls");
        let local = crate::common::client_from([127, 0, 0, octet]);
        for wrong in [
            "Bearer wrong",
            &format!("Bearer {token}x"),
            &format!("Bearer {}", &token[..token.len() - 1]),
            token, // without the scheme
        ] {
            let resp = call(&local, &local_base, c, Some(wrong)).await;
            // A header without `Bearer ` is no token at all: 401; a wrong one 403.
            let want = if wrong.starts_with("Bearer ") {
                403
            } else {
                401
            };
            assert_refused(resp, want, &format!("{what} with {wrong:?}")).await;
        }
        assert_eq!(
            snapshot(&local, &local_base).await,
            before,
            "{what} changed state"
        );
    }
    for &c in ADMIN_CALLS {
        let resp = call(&local, &local_base, c, Some(&right)).await;
        let status = resp.status();
        assert_eq!(
            status,
            200,
            "{} {}: {}",
            c.0,
            c.1,
            resp.text().await.unwrap()
        );
    }
}

/// The loopback rule itself, on any machine: freesky's real router, with the peer
/// address a connection would have put in the request set to a LAN address (and, as
/// the control, to loopback). Every admin call from the LAN peer is a 403 and changes
/// nothing; from loopback it is accepted.
#[tokio::test]
async fn a_non_loopback_peer_is_refused_in_process() {
    use axum::extract::{ConnectInfo, Request};

    async fn serve(dir: &Path, peer: SocketAddr) -> String {
        let config = demo_config(dir, "");
        let config = freesky::config::Config::load(Some(&config)).expect("config loads");
        let state = freesky::state(config).expect("state opens");
        let app = freesky::app(state).layer(axum::middleware::map_request(
            move |mut req: Request| async move {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    }

    let client = client();
    let dir = tempfile::tempdir().unwrap();
    let lan = serve(dir.path(), SocketAddr::from(([192, 168, 1, 50], 40_000))).await;
    let before = snapshot(&client, &lan).await;
    for &c in ADMIN_CALLS {
        let what = format!("{} {} from a LAN peer", c.0, c.1);
        assert_refused(call(&client, &lan, c, None).await, 403, &what).await;
        assert_eq!(
            snapshot(&client, &lan).await,
            before,
            "{what} changed state"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let local = serve(dir.path(), SocketAddr::from(([127, 0, 0, 1], 40_000))).await;
    for &c in ADMIN_CALLS {
        let resp = call(&client, &local, c, None).await;
        if c.1 == "/api/config/reload" {
            // Past the admin check: only a server started with `freesky::serve` can
            // reload (tests/lifecycle.rs and the real-connection test above do).
            assert_refused(resp, 500, "reload from loopback, in-process").await;
            continue;
        }
        assert_eq!(resp.status(), 200, "{} {} from loopback", c.0, c.1);
    }
}

/// Routes that change state and are not admin calls, with why: `/lineup.post`
/// (HDHomeRun's scan trigger, a no-op) and the channel test (plays a channel as any
/// viewer may).
const NOT_ADMIN: &[&str] = &[
    "/lineup.post",
    "/tuners/{n}/lineup.post",
    "/api/channels/{id}/test",
    // The Xtream panel calls, POSTed by some players: the GET calls' form, a viewer's
    // login and reads; nothing changes.
    "/player_api.php",
    "/get.php",
    "/xmltv.php",
];

/// Whether `path` is an instance of the route template `template` (`{x}` segments).
fn matches_template(template: &str, path: &str) -> bool {
    let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')))
}

/// A new state-changing route cannot go unchecked: every `post`/`put`/`patch`/`delete`
/// route in `src/http/` is in `ADMIN_CALLS` (which the tests here prove refused to
/// anyone but the admin) or in `NOT_ADMIN`.
#[test]
fn every_state_changing_route_is_an_admin_call_or_listed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut found = Vec::new();
    // src/http/*.rs and the files of its module folders (src/http/xtream/...).
    let mut files = Vec::new();
    let mut dirs = vec![dir];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("src/http") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                files.push(path);
            }
        }
    }
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read source");
        // `.route("PATH", get(a).post(b))` may span lines: read each call to its `)`.
        for (i, _) in text.match_indices(".route(\"") {
            let rest = &text[i + ".route(\"".len()..];
            let Some((route, call)) = rest.split_once('"') else {
                continue;
            };
            let call = &call[..call.find(")\n").unwrap_or(call.len())];
            for method in ["post(", "put(", "patch(", "delete("] {
                if call.contains(method) {
                    found.push((
                        method.trim_end_matches('(').to_uppercase(),
                        route.to_string(),
                    ));
                }
            }
        }
    }
    assert!(found.len() >= ADMIN_CALLS.len(), "{found:?}");
    for (method, route) in &found {
        let admin = ADMIN_CALLS
            .iter()
            .any(|(m, p, _)| *m == method && matches_template(route, p));
        assert!(
            admin || NOT_ADMIN.contains(&route.as_str()),
            "{method} {route} changes state: take `Admin` in its handler and add it to \
             ADMIN_CALLS, or list it in NOT_ADMIN with why"
        );
    }
}

const DEMO: &str = "[[services]]\nname = \"Demo\"\nkind = \"demo\"\n";

/// `method path` on `app` with extra request headers.
async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = app
        .client
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            app.url(path),
        )
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

#[tokio::test]
async fn another_sites_page_cannot_change_state() {
    let app = TestApp::spawn(DEMO).await;
    let own = app.base.clone();
    let other_port = format!(
        "http://127.0.0.1:{}",
        1 + app.base.rsplit(':').next().unwrap().parse::<u16>().unwrap()
    );
    let before = snapshot(&app.client, &app.base).await;
    let mut calls: Vec<(&str, &str, &str)> = ADMIN_CALLS.to_vec();
    calls.push(("POST", "/api/channels/demo/test", ""));
    for &(method, path, body) in &calls {
        for headers in [
            vec![("origin", "http://evil.example")],
            vec![
                ("origin", "http://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
            vec![("sec-fetch-site", "cross-site")],
            // A sandboxed frame or a file page; another port on the same host.
            vec![("origin", "null")],
            vec![
                ("origin", other_port.as_str()),
                ("sec-fetch-site", "same-site"),
            ],
        ] {
            let what = format!("{method} {path} with {headers:?}");
            let body = assert_api_error(send(&app, method, path, body, &headers).await, 403).await;
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("cross-site request refused"),
                "{what}: {body}"
            );
            assert_eq!(
                snapshot(&app.client, &app.base).await,
                before,
                "{what} changed state"
            );
        }
    }
    // freesky's own pages (the dashboard: same origin) and tools that send neither
    // header pass. Reload answers 422 here: the test config is not a file.
    // (Each header set runs the calls in order: an account is created, changed, deleted.)
    for headers in [
        vec![("origin", own.as_str()), ("sec-fetch-site", "same-origin")],
        vec![("sec-fetch-site", "none")],
        vec![],
    ] {
        for &(method, path, body) in &calls {
            let resp = send(&app, method, path, body, &headers).await;
            let status = resp.status().as_u16();
            assert!(
                status == 200 || (path == "/api/config/reload" && status == 422),
                "{method} {path} with {headers:?}: {status} {}",
                resp.text().await.unwrap()
            );
        }
    }
    // Reading stays open to any page's simple requests (CORS keeps their answers
    // from the page).
    let resp = send(
        &app,
        "GET",
        "/api/services/status",
        "",
        &[
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
}

/// GET `path` on `app` with the `Host` header `host`.
async fn get_as(app: &TestApp, host: &str, path: &str) -> reqwest::Response {
    send(app, "GET", path, "", &[("host", host)]).await
}

#[tokio::test]
async fn a_name_that_is_not_freeskys_own_is_refused() {
    let server = "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{state_dir}'\n\
        public_url = \"http://freesky.example:8005/\"\nallowed_hosts = [\"tv.example.lan\", \"*.home.arpa\"]\n\n";
    let app = TestApp::spawn(&format!("{server}{DEMO}")).await;
    let port = app.base.rsplit(':').next().unwrap().to_string();
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let mut own = vec![
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_string(),
        format!("[::1]:{port}"),
        format!("192.168.1.20:{port}"),
        format!("localhost:{port}"),
        format!("Freesky.LOCALHOST:{port}"),
        "freesky.example:8005".to_string(),
        format!("tv.example.lan:{port}"),
        "box.home.arpa".to_string(),
    ];
    if !machine.is_empty() {
        own.push(format!("{machine}:{port}"));
        own.push(format!("{machine}.local:{port}"));
    }
    for host in &own {
        for path in ["/api/services/status", "/", "/playlist.m3u"] {
            let resp = get_as(&app, host, path).await;
            assert_eq!(resp.status(), 200, "Host {host}, {path}");
        }
    }
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        format!("localhost.evil.example:{port}"),
        format!("tv.example.lan.evil.example:{port}"),
        "home.arpa".to_string(),
    ] {
        for path in [
            "/api/services/status",
            "/",
            "/playlist.m3u",
            "/epg.xml",
            "/nope",
        ] {
            let body = assert_api_error(get_as(&app, &host, path).await, 403).await;
            let error = body["error"].as_str().unwrap();
            assert!(
                error.contains("host not allowed") && error.contains("allowed_hosts"),
                "Host {host}, {path}: {body}"
            );
        }
        // State-changing calls too, even from loopback.
        let resp = send(
            &app,
            "POST",
            "/api/services/Demo/disable",
            "",
            &[("host", host.as_str())],
        )
        .await;
        assert_api_error(resp, 403).await;
    }
    assert_eq!(snapshot(&app.client, &app.base).await.0, Value::Bool(true));
    // The media routes players fetch are not checked (see `access`).
    let resp = get_as(&app, "evil.example", "/api/stream/demo.m3u8").await;
    assert_eq!(resp.status(), 200);
    // A Host no client was given is refused on every route, not written into links;
    // the message shows it as it came (escaped once, by JSON).
    for path in ["/playlist.m3u", "/api/stream/demo.m3u8", "/"] {
        for host in ["127.0.0.1:99999", "127.0.0.1:1\"><x"] {
            let body = assert_api_error(get_as(&app, host, path).await, 400).await;
            assert_eq!(
                body["error"],
                format!(
                    "malformed Host header `{host}`: a host name or address, and a port up \
                     to 65535"
                ),
                "{path}"
            );
        }
    }
    let body = assert_api_error(get_as(&app, "evil\"x", "/").await, 400).await;
    assert!(body.to_string().contains(r#"`evil\"x`"#), "{body}");
}

#[tokio::test]
async fn pages_and_api_answers_cannot_be_framed() {
    let app = TestApp::spawn(DEMO).await;
    for path in [
        "/",
        "/api/services/status",
        "/api/channels/nope",
        "/playlist.m3u",
        "/api/openapi.json",
    ] {
        let resp = app.get(path).await;
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert!(
            header("content-security-policy").contains("frame-ancestors 'none'"),
            "{path}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// a client on another address: a pair of network namespaces

/// Two network namespaces joined by a veth pair: freesky serves in `server`
/// (10.77.0.1), the client runs in `client` (10.77.0.2). Deleted on drop.
struct NetnsPair {
    server: String,
    client: String,
}

const SERVER_IP: &str = "10.77.0.1";

impl NetnsPair {
    /// The pair, or why it cannot be made here (not root, no `ip`, no curl).
    fn create() -> Result<NetnsPair, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::SeqCst)
        );
        let pair = NetnsPair {
            server: format!("fss{id}"),
            client: format!("fsc{id}"),
        };
        let (vs, vc) = (format!("fvs{id}"), format!("fvc{id}"));
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &pair.server],
            vec!["netns", "add", &pair.client],
            vec![
                "link",
                "add",
                &vs,
                "netns",
                &pair.server,
                "type",
                "veth",
                "peer",
                "name",
                &vc,
                "netns",
                &pair.client,
            ],
            vec![
                "-n",
                &pair.server,
                "addr",
                "add",
                "10.77.0.1/24",
                "dev",
                &vs,
            ],
            vec![
                "-n",
                &pair.client,
                "addr",
                "add",
                "10.77.0.2/24",
                "dev",
                &vc,
            ],
            vec!["-n", &pair.server, "link", "set", &vs, "up"],
            vec!["-n", &pair.client, "link", "set", &vc, "up"],
            vec!["-n", &pair.server, "link", "set", "lo", "up"],
            vec!["-n", &pair.client, "link", "set", "lo", "up"],
        ];
        for step in steps {
            let out = Command::new("ip")
                .args(&step)
                .output()
                .map_err(|e| format!("cannot run `ip`: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "`ip {}` failed: {}",
                    step.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        let curl = Command::new("curl").arg("--version").output();
        if !curl.is_ok_and(|o| o.status.success()) {
            return Err("no curl to be the client".into());
        }
        Ok(pair)
    }

    /// `method url` with curl inside namespace `ns`: (status, body).
    fn curl(
        &self,
        ns: &str,
        method: &str,
        url: &str,
        body: &str,
        token: Option<&str>,
    ) -> (u16, String) {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            ns,
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-X",
            method,
        ])
        .args([
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--data-binary",
            body,
            url,
        ]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("authorization: {t}")]);
        }
        let out = cmd.output().expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        let status = status.trim().parse().unwrap_or_else(|_| {
            panic!(
                "{method} {url}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (status, body.to_string())
    }

    /// Demo's enabled flag and priority and the demo channel, read from loopback
    /// inside the server's namespace.
    fn snapshot(&self, port: u16) -> (Value, Value, Value) {
        let base = format!("http://127.0.0.1:{port}");
        let get = |path: &str| -> Value {
            // A disabled service's channel answers a 404 body: compared like any other.
            let (_, body) = self.curl(&self.server, "GET", &format!("{base}{path}"), "", None);
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
        };
        let status = get("/api/services/status");
        let demo = status
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == "Demo"))
            .cloned()
            .unwrap_or_else(|| panic!("no Demo in {status:#}"));
        (
            demo["enabled"].clone(),
            demo["priority"].clone(),
            get("/api/channels/demo"),
        )
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// The namespace pair, or `None` after saying on the test output (not captured) why
/// the test checks nothing here.
fn netns_or_skip(test: &str) -> Option<NetnsPair> {
    match NetnsPair::create() {
        Ok(pair) => Some(pair),
        Err(why) => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: network namespaces cannot be made here ({why}); it checked \
                 nothing (a_non_loopback_peer_is_refused_in_process covers the rule)"
            );
            None
        }
    }
}

#[tokio::test]
async fn a_client_on_another_address_changes_nothing_without_the_token() {
    let Some(net) = netns_or_skip("a_client_on_another_address_changes_nothing_without_the_token")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path(), "");
    let app = Freesky::start_in(Some(&net.server), &config, "0.0.0.0:0", &[], "info");
    let remote = format!("http://{SERVER_IP}:{}", app.port);
    let local = format!("http://127.0.0.1:{}", app.port);

    // Reading works from there: the refusals below are about the peer, not reachability.
    let (status, body) = net.curl(
        &net.client,
        "GET",
        &format!("{remote}/api/services/status"),
        "",
        None,
    );
    assert_eq!(status, 200, "{body}");
    let before = net.snapshot(app.port);
    assert_eq!(before.0, Value::Bool(true), "{before:?}");

    for &(method, path, body) in ADMIN_CALLS {
        for token in [None, Some("Bearer anything")] {
            // A bearer header is no way around it while no token is configured.
            let (status, answer) =
                net.curl(&net.client, method, &format!("{remote}{path}"), body, token);
            assert_eq!(
                status, 403,
                "{method} {path} from {} with {token:?}: {answer}",
                "10.77.0.2"
            );
            assert!(answer.contains("loopback only"), "{answer}");
            assert_eq!(
                net.snapshot(app.port),
                before,
                "{method} {path} changed state"
            );
        }
    }
    assert!(
        !app.log_text().contains("config reloaded"),
        "{}",
        app.log_text()
    );

    // The same calls from loopback are accepted (the control).
    for &(method, path, body) in ADMIN_CALLS {
        let (status, answer) = net.curl(&net.server, method, &format!("{local}{path}"), body, None);
        assert_eq!(status, 200, "{method} {path} from loopback: {answer}");
    }
    let after = net.snapshot(app.port);
    assert_eq!(after.2["name"], "Hijacked");
    assert_eq!(after.1, 3);
    assert!(app.log_text().contains("config reloaded"));
}

#[tokio::test]
async fn with_a_token_a_client_on_another_address_needs_it_and_may_use_it() {
    let Some(net) =
        netns_or_skip("with_a_token_a_client_on_another_address_needs_it_and_may_use_it")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path(), "admin_token = \"${FS_AS_ADMIN}\"");
    let token = "t0ken-for-admin-safety";
    let app = Freesky::start_in(
        Some(&net.server),
        &config,
        "0.0.0.0:0",
        &[("FS_AS_ADMIN", token)],
        "info",
    );
    let url = format!("http://{SERVER_IP}:{}{}", app.port, ADMIN_CALLS[0].1);
    let (status, body) = net.curl(&net.client, "POST", &url, "", None);
    assert_eq!(status, 401, "{body}");
    let (status, body) = net.curl(&net.client, "POST", &url, "", Some("Bearer wrong"));
    assert_eq!(status, 403, "{body}");
    assert_eq!(net.snapshot(app.port).0, Value::Bool(true));
    // The token, not the address, decides.
    let (status, body) = net.curl(
        &net.client,
        "POST",
        &url,
        "",
        Some(&format!("Bearer {token}")),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(net.snapshot(app.port).0, Value::Bool(false));
}

// ---------------------------------------------------------------------------------------
// secrets

const ADMIN: &str = "adm1n-Tok3n-zq";
const BEARER_ENV: &str = "b3arer-Env-Tok-xq";
const BEARER_FILE: &str = "b3arer-File-Tok-wq";
const BASIC_USER: &str = "basicuser";
const BASIC_PW: &str = "bas1c Pw/File+vq";
const HEADER_FILE: &str = "h3ader-Val-File-uq";
const QUERY_ENV: &str = "qu3ry Val/Env+tq&x=1";
const QUERY_FILE: &str = "qu3ry-Val-File-rq";
const XUSER: &str = "xuser";
const XPASS: &str = "xtr3am Pw/Env+sq";
/// A panel's M3U export carries its account in every stream path
/// (`/live/{user}/{password}/1.ts`, `/movie/...`, `/series/...`, `/{user}/{password}/7`).
const PUSER: &str = "pan3luser-pq";
const PPASS: &str = "pan3l-Pw-oq";

/// Every form a secret could leak in: as is, percent- and form-encoded, base64.
pub(crate) fn forms(secret: &str) -> Vec<String> {
    let b64 = |s: &str| {
        [
            base64::engine::general_purpose::STANDARD.encode(s),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s),
        ]
    };
    let pct: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let mut out = vec![secret.to_string(), pct.clone(), pct.to_lowercase(), form];
    out.extend(b64(secret));
    out
}

fn all_forms() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for s in [
        ADMIN,
        BEARER_ENV,
        BEARER_FILE,
        BASIC_PW,
        HEADER_FILE,
        QUERY_ENV,
        QUERY_FILE,
        XPASS,
        PUSER,
        PPASS,
    ] {
        for f in forms(s) {
            out.push((s.to_string(), f));
        }
    }
    // The Basic header as sent.
    for f in forms(&format!("{BASIC_USER}:{BASIC_PW}")) {
        out.push((BASIC_PW.to_string(), f));
    }
    out
}

fn assert_clean(what: &str, text: &str) {
    for (secret, form) in all_forms() {
        assert!(
            !text.contains(&form),
            "{what} shows secret {secret:?} (as {form:?}):\n{text}"
        );
    }
}

/// One origin for every service: each list answers only with its service's
/// credentials; `/hls/{name}.m3u8` plays, `/missing/...` is a 404.
async fn upstream() -> FakeUpstream {
    let fake = FakeUpstream::bind().await;
    let base = fake.base();
    let list = move |UrlPath(file): UrlPath<String>,
                     Query(q): Query<HashMap<String, String>>,
                     h: HeaderMap| {
        let base = base.clone();
        async move {
            let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
            let basic = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{BASIC_USER}:{BASIC_PW}"))
            );
            let name = file.trim_end_matches(".m3u");
            let ok = match name {
                "bearerenv" => header("authorization") == Some(format!("Bearer {BEARER_ENV}")),
                "bearerfile" => header("authorization") == Some(format!("Bearer {BEARER_FILE}")),
                "basic" => header("authorization") == Some(basic),
                "header" => header("x-api-key").as_deref() == Some(HEADER_FILE),
                "queryenv" => q.get("key").map(String::as_str) == Some(QUERY_ENV),
                "queryfile" => q.get("key").map(String::as_str) == Some(QUERY_FILE),
                _ => false,
            };
            if !ok {
                return respond(401, "text/plain", format!("no credentials for {name}"));
            }
            respond(
                200,
                "audio/x-mpegurl",
                format!(
                    "#EXTM3U\n#EXTINF:-1 tvg-id=\"{name}.ok\",Ok {name}\n{base}/hls/{name}.m3u8\n\
                     #EXTINF:-1 tvg-id=\"{name}.missing\",Missing {name}\n{base}/missing/{name}.m3u8\n"
                ),
            )
        }
    };
    let xapi = |Query(q): Query<HashMap<String, String>>| async move {
        let authed = q.get("username").map(String::as_str) == Some(XUSER)
            && q.get("password").map(String::as_str) == Some(XPASS);
        let body = if !authed {
            serde_json::json!({"user_info": {"auth": 0}})
        } else {
            match q.get("action").map(String::as_str) {
                None => serde_json::json!({
                    "user_info": {"username": XUSER, "password": XPASS, "auth": 1,
                        "status": "Active", "exp_date": "1798761600", "is_trial": "0",
                        "active_cons": "0", "max_connections": "5"},
                    "server_info": {"url": "provider.example", "port": "8080"}
                }),
                Some("get_live_categories") => serde_json::json!([
                    {"category_id": "1", "category_name": "News", "parent_id": 0}
                ]),
                Some("get_live_streams") => serde_json::json!([
                    {"num": 1, "name": "X News", "stream_type": "live", "stream_id": 10,
                     "epg_channel_id": "XNews.example", "category_id": "1"},
                    {"num": 2, "name": "X Missing", "stream_type": "live", "stream_id": 99,
                     "category_id": "1"}
                ]),
                Some(_) => serde_json::json!([]),
            }
        };
        respond(200, "application/json", body.to_string())
    };
    let xlive = |UrlPath((user, pass, file)): UrlPath<(String, String, String)>| async move {
        if user == PUSER && pass == PPASS {
            // The panel's channel 1 plays, its segments under the same credentials; the
            // second ends inside a packet (the `.ts` relay logs that, at debug).
            return match file.as_str() {
                "1.m3u8" => respond(200, HLS_TYPE, media_playlist(&["1_0.ts", "1_1.ts"])),
                "1_0.ts" => respond(200, "video/mp2t", vec![0x47u8; 188]),
                "1_1.ts" => respond(200, "video/mp2t", vec![0x47u8; 100]),
                _ => respond(404, "text/plain", "no such stream"),
            };
        }
        if user != XUSER || pass != XPASS {
            return respond(403, "text/plain", "bad credentials");
        }
        if file.starts_with("10.") {
            respond(200, HLS_TYPE, media_playlist(&["/seg/x/0.ts"]))
        } else {
            respond(404, "text/plain", "no such stream")
        }
    };
    let panel_base = fake.base();
    let panel = move || {
        let o = panel_base.clone();
        async move {
            let mut list = String::from("#EXTM3U\n");
            for (name, path) in [
                ("Panel Live", format!("/live/{PUSER}/{PPASS}/1.m3u8")),
                ("Panel Gone", format!("/live/{PUSER}/{PPASS}/404.ts")),
                ("Panel Movie", format!("/movie/{PUSER}/{PPASS}/7.mp4")),
                ("Panel Series", format!("/series/{PUSER}/{PPASS}/8.mkv")),
                ("Panel Short", format!("/{PUSER}/{PPASS}/123")),
            ] {
                list.push_str(&format!("#EXTINF:-1,{name}\n{o}{path}\n"));
            }
            respond(200, "audio/x-mpegurl", list)
        }
    };
    fake.route("/list/{file}", get(list))
        .route("/get.php", get(panel))
        .route(
            "/hls/{file}",
            get(|| async {
                respond(
                    200,
                    HLS_TYPE,
                    media_playlist(&["/seg/a/0.ts", "/seg/a/1.ts"]),
                )
            }),
        )
        .route(
            "/seg/{a}/{b}",
            get(|| async { respond(200, "video/mp2t", vec![0x47u8; 188]) }),
        )
        .route("/player_api.php", get(xapi))
        .route("/live/{user}/{pass}/{file}", get(xlive))
        .status("/xmltv.php", 500)
        .start()
}

#[tokio::test]
async fn secrets_never_show_in_answers_links_or_logs() {
    let fake = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = |name: &str, value: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("{value}\n")).unwrap();
        p.display().to_string()
    };
    let bearer_file = secret_file("bearer", BEARER_FILE);
    let basic_file = secret_file("basic", BASIC_PW);
    let header_file = secret_file("header", HEADER_FILE);
    let query_file = secret_file("query", QUERY_FILE);
    let o = fake.base();
    let config = dir.path().join("freesky.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
state_dir = '{state}'
admin_token = "${{FS_SEC_ADMIN}}"

[[services]]
name = "BearerEnv"
kind = "m3u"
url = "{o}/list/bearerenv.m3u"
[services.auth]
bearer = "${{FS_SEC_BEARER}}"

[[services]]
name = "BearerFile"
kind = "m3u"
url = "{o}/list/bearerfile.m3u"
[services.auth]
bearer = {{ token_file = '{bearer_file}' }}

[[services]]
name = "Basic"
kind = "m3u"
url = "{o}/list/basic.m3u"
[services.auth.basic]
user = "{BASIC_USER}"
password_file = '{basic_file}'

[[services]]
name = "Header"
kind = "m3u"
url = "{o}/list/header.m3u"
[services.auth]
header = {{ name = "X-Api-Key", value_file = '{header_file}' }}

[[services]]
name = "QueryEnv"
kind = "m3u"
url = "{o}/list/queryenv.m3u"
[services.auth]
query = {{ name = "key", value = "${{FS_SEC_QUERY}}" }}

[[services]]
name = "QueryFile"
kind = "m3u"
url = "{o}/list/queryfile.m3u"
[services.auth]
query = {{ name = "key", value_file = '{query_file}' }}

[[services]]
name = "Panel"
kind = "m3u"
url = "{o}/get.php?username={PUSER}&password={PPASS}&type=m3u_plus"

[[services]]
name = "Xtream"
kind = "xtream"
base_url = "{o}"
username = "{XUSER}"
password = "${{FS_SEC_XPASS}}"
"#,
            state = dir.path().join("state").display(),
        ),
    )
    .unwrap();
    let app = Freesky::start(
        &config,
        "127.0.0.1:0",
        &[
            ("FS_SEC_ADMIN", ADMIN),
            ("FS_SEC_BEARER", BEARER_ENV),
            ("FS_SEC_QUERY", QUERY_ENV),
            ("FS_SEC_XPASS", XPASS),
        ],
        "debug",
    );
    let client = client();
    let base = format!("http://127.0.0.1:{}", app.port);
    let mut seen: Vec<(String, String)> = Vec::new();
    let get = |path: String| {
        let client = client.clone();
        let url = if path.starts_with("http") {
            path.clone()
        } else {
            format!("{base}{path}")
        };
        async move {
            let resp = client
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            let status = resp.status().as_u16();
            (status, resp.text().await.expect("body"))
        }
    };

    // Every service's channels are there: each credential reached its upstream.
    let (status, all) = get("/api/channels/all".into()).await;
    assert_eq!(status, 200, "{all}");
    let channels: Vec<Value> = serde_json::from_str(&all).unwrap();
    let names: Vec<&str> = channels.iter().filter_map(|c| c["name"].as_str()).collect();
    for want in [
        "Ok bearerenv",
        "Ok bearerfile",
        "Ok basic",
        "Ok header",
        "Ok queryenv",
        "Ok queryfile",
        "X News",
        "Panel Live",
        "Panel Short",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    seen.push(("/api/channels/all".into(), all));
    for path in [
        "/api/services/status",
        "/api/guide/status",
        "/playlist.m3u",
        "/epg.xml",
        "/lineup.json",
        "/discover.json",
        "/api/tuners",
        "/api/channels/search?q=ok",
        "/metrics",
        "/api/movies",
        "/api/series",
        "/vod.m3u",
    ] {
        let (status, body) = get(path.into()).await;
        assert!(status < 500, "{path}: {status} {body}");
        seen.push((path.into(), body));
    }

    // Each channel's stream: playable ones give rewritten playlists whose links are
    // followed; the missing ones give error bodies.
    let mut played = 0;
    let mut failed = 0;
    for c in &channels {
        let id = c["id"].as_str().expect("id");
        let (status, body) = get(format!("/api/stream/{id}.m3u8")).await;
        seen.push((format!("/api/stream/{id}.m3u8 ({status})"), body.clone()));
        if status != 200 {
            failed += 1;
            continue;
        }
        played += 1;
        for uri in playlist_uris(&body) {
            seen.push((format!("a link of {id}"), uri.clone()));
            let (status, seg) = get(uri.clone()).await;
            assert_eq!(status, 200, "{uri}: {seg}");
        }
    }
    // The panel's `/movie/` and `/series/` entries are its catalogue, not channels:
    // their media answers (the upstream refuses them) are checked as well.
    let (_, movies) = get("/api/movies".into()).await;
    let movies: Value = serde_json::from_str(&movies).unwrap_or(Value::Null);
    for m in movies["items"].as_array().into_iter().flatten() {
        let (status, body) = get(format!("/api/movie/{}", m["id"])).await;
        seen.push((format!("/api/movie/{} ({status})", m["id"]), body));
    }
    assert!(
        played >= 8 && failed >= 9,
        "played {played}, failed {failed}"
    );
    // The panel channel as one `.ts` stream: both segments relayed (the session ends
    // after the playlist's ENDLIST).
    let (status, ts) = get("/api/stream/panel-live.ts".into()).await;
    assert_eq!(
        (status, ts.len()),
        (200, 288),
        "the .ts relay of the panel channel"
    );
    // Tampered links, wrong admin tokens: error bodies too.
    for path in ["/proxy/AAAA/BBBB/seg.ts", "/api/stream/nope.m3u8"] {
        let (_, body) = get(path.into()).await;
        seen.push((path.into(), body));
    }
    let admin = ("POST", "/api/services/BearerEnv/disable", "");
    for t in [None, Some("Bearer wrong")] {
        let resp = call(&client, &base, admin, t).await;
        seen.push((format!("admin with {t:?}"), resp.text().await.unwrap()));
    }
    let resp = call(
        &client,
        &base,
        ("POST", "/api/guide/refresh", ""),
        Some(&format!("Bearer {ADMIN}")),
    )
    .await;
    assert_eq!(resp.status(), 200);
    seen.push(("/api/guide/refresh".into(), resp.text().await.unwrap()));
    let resp = call(&client, &base, admin, Some(&format!("Bearer {ADMIN}"))).await;
    assert_eq!(resp.status(), 200);
    seen.push(("disable".into(), resp.text().await.unwrap()));
    let (_, body) = get("/api/services/status".into()).await;
    seen.push(("/api/services/status after".into(), body));
    for path in ["/", "/metrics"] {
        let (status, body) = get(path.into()).await;
        assert_eq!(status, 200, "{path}");
        seen.push((format!("{path} after"), body));
    }

    for (what, text) in &seen {
        assert_clean(what, text);
    }
    // The debug log saw the traffic and none of the secrets.
    let log = app.log_text();
    assert!(
        log.contains("DEBUG")
            && log.contains("Xtream")
            && log.contains("QueryEnv")
            && log.contains("segment ended inside an MPEG-TS packet"),
        "the debug log does not show the traffic:\n{log}"
    );
    assert_clean("the debug log", &log);
    // The upstream did get them (the checks above are not vacuous).
    assert!(fake
        .requests()
        .iter()
        .any(|r| r.query.as_deref().is_some_and(|q| q.contains("key="))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_forwarded_client_from_a_trusted_loopback_proxy_is_no_admin() {
    // A loopback reverse proxy, no admin token: only loopback clients are admins.
    let app = TestApp::spawn(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{state_dir}'\ntrusted_proxies = [\"127.0.0.1\"]\n\n\
         [[services]]\nname = \"Demo\"\nkind = \"demo\"\n",
    )
    .await;
    let users = |xff: Option<&'static str>| {
        let mut req = app.client.get(app.url("/api/users"));
        if let Some(v) = xff {
            req = req.header("x-forwarded-for", v);
        }
        async move { req.send().await.unwrap().status() }
    };
    // The proxy's own requests, and a loopback client it names, are the admin's.
    assert_eq!(users(None).await, 200);
    assert_eq!(users(Some("127.0.0.1")).await, 200);
    // A client it cannot name is not the proxy itself.
    for xff in ["unknown", "unix:", "10.1.1.1 127.0.0.1", "fe80::1%eth0"] {
        assert_eq!(users(Some(xff)).await, 403, "{xff}");
    }
    assert_eq!(users(Some("[2001:db8::1]")).await, 403);
}

#[tokio::test]
async fn a_refused_host_name_is_logged_once_not_per_request() {
    // A player that is refused shows "login failed": the operator reads why in the log.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("freesky.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{}'\n\n{DEMO}",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let mut cmd = freesky_command();
    cmd.arg("--config").arg(&config).arg("serve");
    let server = Process::serve(cmd, &dir.path().join("server.log"));
    let client = reqwest::Client::new();
    let get = |host: &'static str| {
        client
            .get(format!(
                "{}/player_api.php?username=a&password=b",
                server.base
            ))
            .header("host", host)
            .send()
    };
    for host in ["tv.example.lan", "tv.example.lan:8005", "other.example"] {
        assert_eq!(get(host).await.unwrap().status(), 403, "{host}");
    }
    let log = server.wait_log("host=other.example", HANG_GUARD).await;
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused a request for a host name"))
        .collect();
    assert_eq!(refusals.len(), 2, "one line per name: {log}");
    assert!(
        refusals[0].contains("host=tv.example.lan")
            && refusals[0].contains("path=/player_api.php")
            && refusals[0].contains("allowed_hosts"),
        "{log}"
    );
}

#[tokio::test]
async fn wrong_admin_tokens_make_the_next_tries_from_there_wait() {
    let app = TestApp::spawn(&format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\nadmin_token = \"right-one\"\n\n{DEMO}"
    ))
    .await;
    let path = "/api/services/Demo/enable";
    // Three are free (a typo or two).
    for _ in 0..3 {
        assert_api_error(app.post_auth(path, Some("Bearer guess")).await, 403).await;
    }
    // The next guess waits its turn first: a quarter of a second, doubling.
    let start = std::time::Instant::now();
    assert_api_error(app.post_auth(path, Some("Bearer guess")).await, 403).await;
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(240),
        "waited {:?}",
        start.elapsed()
    );
    // The right token still works (after its turn).
    assert_eq!(
        app.post_auth(path, Some("Bearer right-one")).await.status(),
        200
    );
    assert_api_error(app.post_auth(path, None).await, 401).await;
}

/// Guesses sent all at once from a fresh address go no faster than one after another:
/// each still being checked counts as a failure for the ones after it.
#[tokio::test]
async fn a_first_burst_of_password_guesses_waits_in_turn() {
    let app = TestApp::spawn(&format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\n\n{DEMO}\n\
         [[users]]\nname = \"viewer\"\npassword = \"the-right-one\"\n"
    ))
    .await;
    let start = std::time::Instant::now();
    let guesses = (0..6).map(|i| {
        let app = &app;
        async move {
            app.get(&format!(
                "/player_api.php?username=viewer&password=guess-{i}"
            ))
            .await
            .json::<serde_json::Value>()
            .await
            .unwrap()
        }
    });
    for answer in futures::future::join_all(guesses).await {
        assert_eq!(answer["user_info"]["auth"], 0, "{answer}");
    }
    // Three go at once; then 0.25 s, 0.5 s more, 1 s more: the sixth 1.75 s in.
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(1700),
        "six guesses at once took {:?}",
        start.elapsed()
    );
}
