//! The `freesky` binary keeps its secrets private: a state dir it creates is 0700 and
//! the proxy key it writes 0600; a state dir, key or admin token file that group or
//! others can open is used as it is, with a warning in the log naming the file and the
//! `chmod` that fixes it.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::{freesky_command, Process};

/// Starts `freesky serve` with a demo service and `state_dir`, and returns its log
/// lines once it serves.
fn log_until_serving(state_dir: &Path) -> Vec<String> {
    log_until_serving_with(state_dir, "")
}

/// Writes `freesky.toml` beside `state_dir`: a demo service, `state_dir`, and more
/// `[server]` lines (`server`, from line 4). Answers its path.
fn write_config(state_dir: &Path, server: &str) -> std::path::PathBuf {
    let parent = state_dir.parent().expect("the state dir has a parent");
    let config = parent.join("freesky.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{}'\n{server}\n[[services]]\nname = \"Demo\"\nkind = \"demo\"\n",
            state_dir.display()
        ),
    )
    .expect("write config");
    config
}

/// `log_until_serving` with more `[server]` lines.
fn log_until_serving_with(state_dir: &Path, server: &str) -> Vec<String> {
    let config = write_config(state_dir, server);
    let parent = state_dir.parent().expect("the state dir has a parent");
    let mut cmd = freesky_command();
    cmd.arg("--config").arg(&config).arg("serve");
    let server = Process::serve(cmd, &parent.join("freesky.log"));
    server.log_text().lines().map(str::to_string).collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn a_new_state_dir_is_owner_only_and_so_is_the_new_key() {
    let root = tempfile::tempdir().expect("temp dir");
    let state = root.path().join("state");
    let log = log_until_serving(&state);
    assert_eq!(mode(&state), 0o700, "{}", log.join("\n"));
    assert_eq!(mode(&state.join("proxy.key")), 0o600);
    assert!(
        !log.iter().any(|l| l.contains("chmod")),
        "no warning for what freesky made itself:\n{}",
        log.join("\n")
    );
}

#[test]
fn a_key_and_state_dir_open_to_others_are_warned_about_not_changed() {
    let root = tempfile::tempdir().expect("temp dir");
    let state = root.path().join("state");
    std::fs::create_dir(&state).expect("create state dir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let key = state.join("proxy.key");
    std::fs::write(&key, [7u8; 32]).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let log = log_until_serving(&state);
    let all = log.join("\n");
    let warned = |path: &Path, fix: &str| {
        log.iter().any(|l| {
            l.contains("WARN")
                && l.contains(&path.display().to_string())
                && l.contains(&format!("chmod {fix} {}", path.display()))
        })
    };
    assert!(warned(&key, "600"), "no warning naming the key:\n{all}");
    assert!(
        warned(&state, "700"),
        "no warning naming the state dir:\n{all}"
    );
    // The user's files: warned about, left as they were, and the key is used.
    assert_eq!(mode(&key), 0o644);
    assert_eq!(mode(&state), 0o755);
    assert_eq!(std::fs::read(&key).expect("key"), [7u8; 32]);
}

#[test]
fn an_admin_token_file_open_to_others_is_warned_about_not_changed() {
    let root = tempfile::tempdir().expect("temp dir");
    let token = root.path().join("admin.token");
    std::fs::write(&token, "s3cret-admin\n").expect("write token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let server = format!("admin_token_file = '{}'\n", token.display());

    let log = log_until_serving_with(&root.path().join("state"), &server);
    let all = log.join("\n");
    assert!(
        log.iter().any(|l| l.contains("WARN")
            && l.contains("admin_token_file")
            && l.contains(&format!("chmod 600 {}", token.display()))),
        "no warning naming the admin token file:\n{all}"
    );
    assert!(
        !all.contains("s3cret-admin"),
        "the token was logged:\n{all}"
    );
    assert_eq!(mode(&token), 0o644);
}

/// `check` says what a start would warn about: a shared `proxy_key_file` and a
/// `state_dir` open to others (it was silent, and `serve` said the key's twice).
#[test]
fn check_warns_of_a_shared_key_file_and_a_state_dir_open_to_others() {
    let root = tempfile::tempdir().expect("temp dir");
    let state = root.path().join("state");
    std::fs::create_dir(&state).expect("create state dir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let key = root.path().join("shared.key");
    std::fs::write(&key, [7u8; 32]).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let server = format!("proxy_key_file = '{}'\n", key.display());
    let config = write_config(&state, &server);
    let out = freesky_command()
        .arg("--config")
        .arg(&config)
        .arg("check")
        .output()
        .expect("run check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for (line, field, path, fix) in [
        (3, "server.state_dir", &state, "700"),
        (4, "server.proxy_key_file", &key, "600"),
    ] {
        let want = format!("warning: {}:{line}: {field}: ", config.display());
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&want)
                    && l.contains(&format!("chmod {fix} {}", path.display()))),
            "no `{want}` naming chmod {fix}:\n{stderr}"
        );
    }
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok (1 service, 2 warnings)"),
        "{stderr}"
    );
    // The folder's warning names what it holds: not the key, kept elsewhere.
    assert!(
        stderr.contains(&format!(
            "{} is open to group or others (mode 755) but holds secrets (viewer accounts, \
             the services' last channel lists (whose stream addresses may carry providers' \
             logins))",
            state.display()
        )),
        "{stderr}"
    );

    let log = log_until_serving_with(&state, &server);
    let said = log
        .iter()
        .filter(|l| l.contains(&format!("chmod 600 {}", key.display())))
        .count();
    assert_eq!(said, 1, "{}", log.join("\n"));
}
