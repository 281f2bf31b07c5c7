//! The state_dir under the real binary: one server owns a SQLite state_dir (a second
//! one is refused, naming the first), and a one-shot command beside it numbers new
//! channels for display only, writing nothing (SPEC §3: numbers never change).

use serde_json::Value;
use std::path::{Path, PathBuf};

use crate::common::{
    freesky_command, freesky_command_via, run_within, FakeUpstream, Process, HANG_GUARD,
};

/// An M3U list of channels `names`.
fn list(names: &[&str]) -> String {
    let mut s = String::from("#EXTM3U\n");
    for n in names {
        s.push_str(&format!("#EXTINF:-1,{n}\nhttp://127.0.0.1:9/{n}.m3u8\n"));
    }
    s
}

/// A config on `127.0.0.1:0` with state in `dir/state`, one m3u service reading `url`.
fn config(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("freesky.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{}'\n\n\
             [[services]]\nname = \"L\"\nkind = \"m3u\"\nurl = \"{url}\"\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

/// The merge keys stored in `state/freesky.db`, read without writing.
fn stored_keys(dir: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("state/freesky.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut q = conn
        .prepare("SELECT merge_key FROM channel_identity ORDER BY number")
        .unwrap();
    let keys = q.query_map([], |r| r.get(0)).unwrap();
    keys.collect::<Result<_, _>>().unwrap()
}

/// A temp dir whose `lists/list.m3u` (served by the returned upstream) lists channel
/// "One", and a config there naming it: (dir, lists folder, upstream, config file).
async fn one_channel() -> (tempfile::TempDir, PathBuf, FakeUpstream, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let lists = dir.path().join("lists");
    std::fs::create_dir(&lists).unwrap();
    std::fs::write(lists.join("list.m3u"), list(&["One"])).unwrap();
    let origin = FakeUpstream::bind().await.dir("/l", &lists).start();
    let config = config(dir.path(), &origin.url("/l/list.m3u"));
    (dir, lists, origin, config)
}

/// A config in `dir` and the store a first run (`freesky channels`) made there.
async fn first_run(dir: &Path) -> (PathBuf, PathBuf) {
    let config = config(dir, "http://127.0.0.1:9/list.m3u");
    let mut cmd = freesky_command();
    cmd.arg("--config").arg(&config).arg("channels");
    let out = run(cmd).await;
    let db = dir.join("state/freesky.db");
    assert!(db.exists(), "{}", String::from_utf8_lossy(&out.stderr));
    (config, db)
}

/// `freesky serve` with `config` through `cmd`, which must fail: its stderr.
async fn refused_start(mut cmd: std::process::Command, config: &Path) -> String {
    cmd.arg("--config").arg(config).arg("serve");
    let out = run(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    stderr
}

async fn run(cmd: std::process::Command) -> std::process::Output {
    let mut cmd = tokio::process::Command::from(cmd);
    run_within(&mut cmd, HANG_GUARD, "the freesky binary").await
}

#[tokio::test]
async fn a_second_server_is_refused_and_a_command_beside_one_writes_no_number() {
    let (dir, lists, _origin, config) = one_channel().await;

    let mut cmd = freesky_command();
    cmd.arg("--config").arg(&config).arg("serve");
    let server = Process::serve(cmd, &dir.path().join("server.log"));
    let created = format!(
        "created a new state store at {}",
        dir.path().join("state/freesky.db").display()
    );
    assert!(
        server.log_text().contains(&created),
        "{}",
        server.log_text()
    );
    let all: Value = reqwest::get(format!("{}/api/channels/all", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all[0]["number"], 1, "{all}");

    // Nothing new: the command beside the server has nothing to say of numbers.
    let mut cmd = freesky_command();
    cmd.arg("--config")
        .arg(&config)
        .args(["channels", "--json"]);
    let out = run(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("display only"), "{stderr}");

    // A new channel upstream, seen first by a one-shot command.
    std::fs::write(lists.join("list.m3u"), list(&["One", "New"])).unwrap();
    let mut cmd = freesky_command();
    cmd.arg("--config")
        .arg(&config)
        .args(["channels", "--json"]);
    let out = run(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let pid = format!("pid {}", server.child.id());
    assert!(
        stderr.contains(&pid)
            && stderr
                .contains("1 channel(s) it has not seen yet are numbered here for display only"),
        "{stderr}"
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    let new = shown
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "New")
        .expect("the new channel is shown");
    assert_eq!(new["number"], 2, "{shown}");
    assert_eq!(
        stored_keys(dir.path()),
        ["name:one"],
        "the command wrote no identity: the server numbers `New` itself"
    );

    // A second server on the same state_dir is refused, naming the dir and the first.
    let mut cmd = freesky_command();
    cmd.arg("--config").arg(&config).arg("serve");
    let out = run(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let state = dir.path().join("state");
    assert!(
        stderr.contains(&format!("state_dir {} is in use", state.display()))
            && stderr.contains(&pid),
        "{stderr}"
    );
    assert!(!stderr.contains("serving on"), "{stderr}");
}

#[tokio::test]
async fn a_write_past_the_file_size_limit_fails_and_the_server_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let lists = dir.path().join("lists");
    std::fs::create_dir(&lists).unwrap();
    // Thousands of channels: their identities are far more than the limit allows.
    let names: Vec<String> = (0..8000)
        .map(|i| format!("Channel number {i} of a long list"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    std::fs::write(lists.join("list.m3u"), list(&names)).unwrap();
    let origin = FakeUpstream::bind().await.dir("/l", &lists).start();
    let config = config(dir.path(), &origin.url("/l/list.m3u"));

    // 400 KiB per file written, the log included.
    let mut cmd = freesky_command_via(&["bash", "-c", "ulimit -f 400 && exec \"$0\" \"$@\""]);
    cmd.arg("--config").arg(&config).arg("serve");
    let mut server = Process::serve(cmd, &dir.path().join("server.log"));
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(HANG_GUARD)
        .build()
        .unwrap();
    let playlist = client
        .get(format!("{}/playlist.m3u", server.base))
        .send()
        .await
        .expect("answered, not cut by the process dying");
    assert_eq!(playlist.status(), 500, "{}", server.log_text());
    assert!(server.running(), "{}", server.log_text());
    let health = client
        .get(format!("{}/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let log = server
        .wait_log("past the file-size limit", HANG_GUARD)
        .await;
    assert!(
        log.contains("state store: disk I/O error"),
        "the failed write is logged: {log}"
    );
}

#[tokio::test]
async fn a_state_dir_that_is_a_file_is_one_error_line_naming_it_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "http://127.0.0.1:9/list.m3u");
    let state = dir.path().join("state");
    std::fs::write(&state, "not a folder").unwrap();
    // Found by the config check, at the line that sets it: `check` fails too.
    for command in ["serve", "playlist", "check"] {
        let mut cmd = freesky_command();
        cmd.arg("--config").arg(&config).arg(command);
        let out = run(cmd).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines,
            [format!(
                "{}:3: server.state_dir: {} exists and is not a folder: give a folder (made \
                 when missing), or move this file away",
                config.display(),
                state.display()
            )],
            "{command}: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_state_dir_under_a_file_is_found_by_check_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "http://127.0.0.1:9/list.m3u");
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, "not a folder").unwrap();
    let state = blocker.join("state");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &dir.path().join("state").display().to_string(),
        &state.display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    // A problem, whoever runs `check`: no start can make it; `serve` cannot start.
    let problem = format!(
        "{}:3: server.state_dir: {} cannot be made: {} is a file, not a folder",
        config.display(),
        state.display(),
        blocker.display()
    );
    let mut cmd = freesky_command();
    cmd.arg("--config").arg(&config).arg("check");
    let out = run(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.lines().any(|l| l == problem), "{stderr}");
    let mut cmd = freesky_command();
    cmd.arg("--config").arg(&config).arg("serve");
    let out = run(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("server.state_dir") && stderr.contains("cannot be made"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_built_in_configs_state_dir_that_is_a_file_is_an_error_not_a_panic() {
    // No config file: the built-in one keeps its state in ./data.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data"), "not a folder").unwrap();
    for command in ["check", "serve"] {
        let mut cmd = freesky_command();
        cmd.current_dir(dir.path()).arg(command);
        let out = run(cmd).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines,
            [
                "<built-in>: server.state_dir: data exists and is not a folder: give a folder \
                 (made when missing), or move this file away (the built-in config keeps its \
                 state in ./data of the folder freesky runs in)"
            ],
            "{command}: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_state_dir_deleted_under_the_server_is_an_error_once_and_not_ready() {
    let (dir, _lists, _origin, config) = one_channel().await;
    let mut cmd = freesky_command();
    cmd.arg("--config").arg(&config).arg("serve");
    let server = Process::serve(cmd, &dir.path().join("server.log"));
    let ready = || async {
        let resp = reqwest::get(format!("{}/ready", server.base))
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    crate::common::eventually("ready", || async {
        match ready().await {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let state = dir.path().join("state");
    std::fs::remove_dir_all(&state).unwrap();
    let db = state.join("freesky.db");
    // Noticed by the periodic check (every 10 s), before anyone asks.
    server.wait_log("was deleted or replaced", HANG_GUARD).await;
    for _ in 0..2 {
        let (status, body) = ready().await;
        assert_eq!(status, 503, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["status"], "store_unavailable", "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("state store {}: was deleted", db.display())),
            "{error}"
        );
    }
    let log = server.log_text();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("was deleted or replaced"))
        .collect();
    assert_eq!(errors.len(), 1, "logged once: {log}");
    assert!(errors[0].contains(&db.display().to_string()), "{log}");

    // A change asked for now would be acknowledged and lost at the next start: it is
    // refused, and the running state is as it was.
    let http = reqwest::Client::new();
    let gone = format!("state store {}: was deleted", db.display());
    let refused = |resp: reqwest::Response| {
        let gone = gone.clone();
        async move {
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            assert_eq!(status, 503, "{body}");
            let error = body["error"].as_str().unwrap();
            assert!(
                error.starts_with(&gone) && error.ends_with("nothing was changed"),
                "{error}"
            );
        }
    };
    let resp = http
        .post(format!("{}/api/services/L/disable", server.base))
        .send()
        .await
        .unwrap();
    refused(resp).await;
    let resp = http
        .patch(format!("{}/api/channels/one", server.base))
        .json(&serde_json::json!({ "number": 42 }))
        .send()
        .await
        .unwrap();
    refused(resp).await;
    let status: Value = http
        .get(format!("{}/api/services/status", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status[0]["enabled"], true, "{status}");
    let channel: Value = http
        .get(format!("{}/api/channels/one", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(channel["number"], 1, "{channel}");
}

/// A store that cannot number new channels (here a write past the file-size limit;
/// PostgreSQL down is the same) does not take the lineup down with them: after a
/// reload that brings thousands of new channels, the channel numbered before is still
/// served, and the new ones wait, said in the log.
#[tokio::test]
async fn a_store_that_cannot_number_new_channels_keeps_the_numbered_ones_served() {
    let (dir, lists, _origin, config) = one_channel().await;
    // 400 KiB per file written, the log included.
    let mut cmd = freesky_command_via(&["bash", "-c", "ulimit -f 400 && exec \"$0\" \"$@\""]);
    cmd.arg("--config").arg(&config).arg("serve");
    let server = Process::serve(cmd, &dir.path().join("server.log"));
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(HANG_GUARD)
        .build()
        .unwrap();
    let playlist = || async {
        let resp = client
            .get(format!("{}/playlist.m3u", server.base))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    let (status, body) = playlist().await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(",One\n"), "{body}");

    let names: Vec<String> = std::iter::once("One".to_string())
        .chain((0..8000).map(|i| format!("Channel number {i} of a long list")))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    std::fs::write(lists.join("list.m3u"), list(&names)).unwrap();
    let reload = client
        .post(format!("{}/api/config/reload", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200, "{}", server.log_text());
    let (status, body) = playlist().await;
    assert_eq!(status, 200, "{body}\n{}", server.log_text());
    assert!(body.contains(",One\n"), "{body}");
    assert!(
        !body.contains("Channel number 0 of"),
        "not numbered, so not listed yet"
    );
    server
        .wait_log("the state store cannot number new channels now", HANG_GUARD)
        .await;
}

#[tokio::test]
async fn a_busy_port_is_named_and_leaves_no_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "http://127.0.0.1:9/list.m3u");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = taken.local_addr().unwrap().to_string();
    let mut cmd = freesky_command();
    cmd.arg("--config")
        .arg(&config)
        .args(["serve", "--bind", &bind]);
    let out = run(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {bind} (another server there?")),
        "{stderr}"
    );
    assert!(!dir.path().join("state").exists(), "{stderr}");
}

/// A start that fails on its shared proxy key makes nothing in state_dir first.
#[tokio::test]
async fn a_start_refused_for_its_proxy_key_leaves_no_state_behind() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "http://127.0.0.1:9/list.m3u");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[server]\n",
        &format!(
            "[server]\nproxy_key_file = '{}'\n",
            dir.path().join("missing.key").display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let mut cmd = freesky_command();
    cmd.arg("--config").arg(&config).arg("serve");
    let out = run(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("cannot read the proxy key"), "{stderr}");
    assert!(!dir.path().join("state").exists(), "{stderr}");
}

/// A `freesky.db` its user may read but not write: the start says so (SQLite would
/// open it read-only, silently, and every change would fail later).
#[tokio::test]
async fn a_store_file_the_user_cannot_write_stops_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (config, db) = first_run(dir.path()).await;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    // As root, the start runs as `nobody`, who owns the folder and may only read the file.
    let as_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let wrapper: &[&str] = if as_root {
        &[
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
        ]
    } else {
        &[]
    };
    if as_root {
        let nobody = 65534;
        for entry in std::fs::read_dir(dir.path().join("state")).unwrap() {
            std::os::unix::fs::chown(entry.unwrap().path(), Some(nobody), Some(nobody)).unwrap();
        }
        std::os::unix::fs::chown(dir.path().join("state"), Some(nobody), Some(nobody)).unwrap();
    }
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o400)).unwrap();
    let stderr = refused_start(crate::common::freesky_command_via(wrapper), &config).await;
    assert!(
        stderr.contains(&format!(
            "state store {}: cannot open it for writing (the file is not writable by this user)",
            db.display()
        )),
        "{stderr}"
    );
}

/// Stored viewer accounts that cannot be read stop a start: serving as if there
/// were none would refuse every viewer who has one, with no word why.
#[tokio::test]
async fn stored_accounts_that_cannot_be_read_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (config, db) = first_run(dir.path()).await;
    // A row whose connection limit is a word, as a hand edit might leave it.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO viewer_account
         (name, hash, max_connections, expires, groups, services, enabled, created_at)
         VALUES ('amy', 'x', 'lots', NULL, '[]', '[]', 1, 0)",
        [],
    )
    .unwrap();
    drop(conn);
    let stderr = refused_start(freesky_command(), &config).await;
    assert!(
        stderr.contains("the stored viewer accounts cannot be read")
            && stderr.contains("max_connections"),
        "{stderr}"
    );
}
