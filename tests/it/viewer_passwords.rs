//! A viewer's password never shows in freesky's log: the real binary at `trace` level
//! while a viewer logs in with the right and a wrong password on every Xtream route
//! that carries one (`player_api.php`, `get.php`, `xmltv.php`, `/live/U/P/N.ts|.m3u8`,
//! `/U/P/N`, `/timeshift/...`, `/streaming/timeshift.php`), with malformed ids beside
//! them, and for a host name it does not know (a refusal it logs with the path), and while the account API creates and changes an account's password.

use std::path::Path;

use crate::admin_safety::forms;
use crate::common::{freesky_command, Process, HANG_GUARD};

const USER: &str = "viewer";
const RIGHT: &str = "v13wer-Pw.q";
const WRONG: &str = "wr0ng-Pw.k";
/// Given to `/api/users` when creating an account, then when changing it.
const CREATED: &str = "n3w-Acct-Pw.j";
const CHANGED: &str = "ch4nged-Pw.h";

fn start(dir: &Path) -> Process {
    let config = dir.join("freesky.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
bind = "127.0.0.1:0"
state_dir = '{state}'

[[services]]
name = "Demo"
kind = "demo"

[[users]]
name = "{USER}"
password = "{RIGHT}"
max_connections = 2
"#,
            state = dir.join("state").display()
        ),
    )
    .expect("config");
    let mut cmd = freesky_command();
    cmd.arg("--config")
        .arg(&config)
        .arg("serve")
        .env("RUST_LOG", "trace");
    Process::serve(cmd, &dir.join("freesky.log"))
}

/// Every request a player makes with `password`: answers are not checked (a wrong
/// password's are refusals), only that they were answered; a stream is read a little
/// and dropped.
async fn log_in_everywhere(client: &reqwest::Client, base: &str, password: &str) {
    let login = format!("username={USER}&password={password}");
    let paths = [
        format!("/player_api.php?{login}"),
        format!("/player_api.php?{login}&action=get_live_streams"),
        format!("/player_api.php?{login}&action=get_short_epg&stream_id=abc"),
        format!("/get.php?{login}&type=m3u_plus&output=ts"),
        format!("/xmltv.php?{login}"),
        format!("/live/{USER}/{password}/1.m3u8"),
        format!("/live/{USER}/{password}/1.ts"),
        format!("/live/{USER}/{password}/abc.ts"),
        format!("/{USER}/{password}/1"),
        format!("/timeshift/{USER}/{password}/60/2026-01-01:10-00/1.ts"),
        format!("/streaming/timeshift.php?{login}&stream=1&start=2026-01-01:10-00&duration=60"),
    ];
    for path in paths {
        let mut resp = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        // One chunk is enough: a live stream does not end.
        let _ = resp.chunk().await;
    }
    // A host name freesky does not know (a player set up with a router's name): the
    // refusal is logged with the path, which must not carry the login.
    let foreign = [
        format!("/{USER}/{password}/1"),
        format!("/movie/{USER}/{password}/1.mp4"),
        format!("/series/{USER}/{password}/5.mkv"),
        format!("/timeshift/{USER}/{password}/60/2026-01-01:10-00/1.ts"),
    ];
    for (i, path) in foreign.iter().enumerate() {
        let resp = client
            .get(format!("{base}{path}"))
            .header("host", format!("tv{i}-{}.example", password.len()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(resp.status(), 403, "{path}");
    }
}

/// `player_api.php` accepts `user` with `password` (`auth: 1`).
async fn assert_logs_in(client: &reqwest::Client, base: &str, user: &str, password: &str) {
    let resp = client
        .get(format!(
            "{base}/player_api.php?username={user}&password={password}"
        ))
        .send()
        .await
        .expect("player_api.php");
    let body: serde_json::Value = resp.json().await.expect("JSON");
    assert_eq!(body["user_info"]["auth"], 1, "{user}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewers_password_never_shows_in_the_trace_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = start(dir.path());
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(HANG_GUARD)
        .build()
        .expect("client builds");
    let base = app.base.clone();

    // The right password works (the requests above are not all refusals).
    assert_logs_in(&client, &base, USER, RIGHT).await;

    log_in_everywhere(&client, &base, RIGHT).await;
    // Wrong logins last: freesky slows repeated ones from one address.
    log_in_everywhere(&client, &base, WRONG).await;

    let api = |method: reqwest::Method, path: &str, body: String| {
        client
            .request(method, format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let resp = api(
        reqwest::Method::POST,
        "/api/users",
        format!(r#"{{"name":"newbie","password":"{CREATED}"}}"#),
    )
    .await
    .expect("create");
    assert_eq!(
        resp.status(),
        200,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    // Refused bodies with a password in them: a taken name, a bad name, a bad field.
    for body in [
        format!(r#"{{"name":"newbie","password":"{CREATED}"}}"#),
        format!(r#"{{"name":"bad name!","password":"{CREATED}"}}"#),
        format!(r#"{{"name":"other","password":"{CREATED}","max_connections":"many"}}"#),
        format!(r#"{{"name":"other","password":"{CREATED}","expires":"someday"}}"#),
    ] {
        let resp = api(reqwest::Method::POST, "/api/users", body)
            .await
            .expect("create refused");
        assert_eq!(resp.status(), 400);
    }
    let resp = api(
        reqwest::Method::PATCH,
        "/api/users/newbie",
        format!(r#"{{"password":"{CHANGED}"}}"#),
    )
    .await
    .expect("change");
    assert_eq!(
        resp.status(),
        200,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    assert_logs_in(&client, &base, "newbie", CHANGED).await;

    let log = app.log_text();
    // The log saw the traffic at trace level (the check below is not vacuous).
    assert!(
        log.contains("TRACE") && log.contains("wrong user name or password"),
        "the trace log does not show the logins:\n{log}"
    );
    for secret in [RIGHT, WRONG, CREATED, CHANGED] {
        for form in forms(secret) {
            assert!(
                !log.contains(&form),
                "the log shows password {secret:?} (as {form:?}):\n{log}"
            );
        }
    }
}
