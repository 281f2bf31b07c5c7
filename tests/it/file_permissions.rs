//! The `freesky` binary keeps its secrets private: a state dir it creates is 0700 and
//! the proxy key it writes 0600; a state dir or key that group or others can open is
//! used as it is, with a warning in the log naming the file and the `chmod` that fixes
//! it.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the server gets to say it is serving.
const START_GUARD: Duration = Duration::from_secs(30);

/// A running `freesky serve`, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `freesky serve` with a demo service and `state_dir`, and returns its log
/// lines up to the one saying it serves.
fn log_until_serving(state_dir: &Path) -> Vec<String> {
    let config = state_dir
        .parent()
        .expect("the state dir has a parent")
        .join("freesky.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{}'\n\n[[services]]\nname = \"Demo\"\nkind = \"demo\"\n",
            state_dir.display()
        ),
    )
    .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_freesky"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env_remove("FREESKY_CONFIG")
        .env_remove("FREESKY_ADMIN_TOKEN")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the freesky binary starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let _server = Server(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + START_GUARD;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let serving = line.contains("serving on http://");
                lines.push(line);
                if serving {
                    return lines;
                }
            }
            Err(_) => panic!("freesky did not start serving:\n{}", lines.join("\n")),
        }
    }
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
