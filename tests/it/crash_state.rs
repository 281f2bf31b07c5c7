//! The state store under `kill -9`: the real binary takes a burst of concurrent admin
//! changes (enable/disable, channel mappings) and is SIGKILLed while requests are in
//! flight, three times over. Every change answered 200 is there after each restart (a
//! change in flight at the kill may or may not be), and the store opens cleanly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{freesky_command, FakeUpstream, Process, HANG_GUARD};

const CHANNELS: usize = 6;
const TOGGLED: &[&str] = &["T1", "T2", "T3"];
const KILLS: usize = 3;

/// The binary on `127.0.0.1:0` with `config`; its stderr in `log` (`common::Process`:
/// SIGKILLed by `kill` or on drop).
fn start(config: &Path, log: &Path) -> Process {
    let mut cmd = freesky_command();
    cmd.arg("--config").arg(config).arg("serve");
    Process::serve(cmd, log)
}

/// What the test knows of one key: the value of the last change answered 200, and the
/// one sent but not answered when the server died.
#[derive(Debug, Clone)]
struct Known {
    acked: Value,
    in_flight: Option<Value>,
}

type Ledger = Arc<Mutex<HashMap<String, Known>>>;

/// The current value of every key: `service:NAME` (enabled) and `channel:ID` (name).
async fn read_state(
    client: &reqwest::Client,
    base: &str,
    ids: &[String],
) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    let status: Value = client
        .get(format!("{base}/api/services/status"))
        .send()
        .await
        .expect("status answers")
        .json()
        .await
        .expect("status json");
    for s in status.as_array().expect("status is an array") {
        let name = s["name"].as_str().expect("name");
        out.insert(format!("service:{name}"), s["enabled"].clone());
    }
    for id in ids {
        let c: Value = client
            .get(format!("{base}/api/channels/{id}"))
            .send()
            .await
            .expect("channel answers")
            .json()
            .await
            .expect("channel json");
        out.insert(format!("channel:{id}"), c["name"].clone());
    }
    out
}

/// Sends changes to `key` one after another until the server stops answering.
async fn changer(
    client: reqwest::Client,
    base: String,
    key: String,
    round: usize,
    ledger: Ledger,
    acked: Arc<AtomicUsize>,
) {
    for i in 0.. {
        let (req, value) = if let Some(name) = key.strip_prefix("service:") {
            let enable = i % 2 == 1;
            let action = if enable { "enable" } else { "disable" };
            (
                client.post(format!("{base}/api/services/{name}/{action}")),
                json!(enable),
            )
        } else {
            let id = key.strip_prefix("channel:").expect("a channel key");
            let name = format!("{id} r{round} #{i}");
            (
                client
                    .patch(format!("{base}/api/channels/{id}"))
                    .body(json!({ "name": name }).to_string()),
                json!(name),
            )
        };
        ledger
            .lock()
            .unwrap()
            .get_mut(&key)
            .expect("every key is in the ledger")
            .in_flight = Some(value.clone());
        match req.send().await {
            Ok(resp) if resp.status() == 200 => {
                let body = resp.text().await;
                // The answer reached us whole: acknowledged.
                if body.is_ok() {
                    let mut l = ledger.lock().unwrap();
                    let k = l.get_mut(&key).expect("key");
                    k.acked = value;
                    k.in_flight = None;
                    acked.fetch_add(1, Ordering::SeqCst);
                } else {
                    return;
                }
            }
            Ok(resp) => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                panic!("{key}: change #{i} answered {status}: {body}");
            }
            // The server died under this request.
            Err(_) => return,
        }
    }
}

#[tokio::test]
async fn acknowledged_changes_survive_kill_9_mid_burst() {
    let started = std::time::Instant::now();
    let mut list = String::from("#EXTM3U\n");
    for n in 1..=CHANNELS {
        list.push_str(&format!(
            "#EXTINF:-1 tvg-id=\"c{n}.example\",Chan {n}\nhttp://cdn.invalid/c{n}.m3u8\n"
        ));
    }
    let fake = FakeUpstream::bind()
        .await
        .text("/list.m3u", "audio/x-mpegurl", list)
        .start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("freesky.toml");
    let mut text = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{}'\n\n[[services]]\nname = \"List\"\nkind = \"m3u\"\nurl = \"{}\"\n",
        state.display(),
        fake.url("/list.m3u")
    );
    for t in TOGGLED {
        text.push_str(&format!(
            "\n[[services]]\nname = \"{t}\"\nkind = \"demo\"\n"
        ));
    }
    std::fs::write(&config, text).unwrap();
    let log: PathBuf = dir.path().join("freesky.log");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(HANG_GUARD)
        .build()
        .unwrap();

    let mut app = start(&config, &log);
    let all: Value = client
        .get(format!("{}/api/channels/all", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<String> = all
        .as_array()
        .expect("channels")
        .iter()
        .filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with("Chan ")))
        .map(|c| c["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids.len(), CHANNELS, "{all:#}");
    let keys: Vec<String> = TOGGLED
        .iter()
        .map(|t| format!("service:{t}"))
        .chain(ids.iter().map(|id| format!("channel:{id}")))
        .collect();
    let initial = read_state(&client, &app.base, &ids).await;
    let ledger: Ledger = Arc::new(Mutex::new(
        keys.iter()
            .map(|k| {
                let acked = initial.get(k).cloned().unwrap_or_else(|| panic!("no {k}"));
                (
                    k.clone(),
                    Known {
                        acked,
                        in_flight: None,
                    },
                )
            })
            .collect(),
    ));

    for round in 1..=KILLS {
        let acked = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = keys
            .iter()
            .map(|k| {
                tokio::spawn(changer(
                    client.clone(),
                    app.base.clone(),
                    k.clone(),
                    round,
                    ledger.clone(),
                    acked.clone(),
                ))
            })
            .collect();
        // Kill once the burst is well under way, at a different point each round.
        let target = 15 * round + 7;
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        while acked.load(Ordering::SeqCst) < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: only {} changes answered",
                acked.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Changes sent and not yet answered at the moment of the kill.
        let in_flight = ledger
            .lock()
            .unwrap()
            .values()
            .filter(|k| k.in_flight.is_some())
            .count();
        app.kill();
        assert!(
            in_flight > 0,
            "round {round}: nothing was in flight at the kill"
        );
        for t in tasks {
            tokio::time::timeout(HANG_GUARD, t)
                .await
                .expect("a changer hung after the kill")
                .expect("a changer panicked");
        }

        // The store opens (the server starts and answers) and holds every acknowledged
        // change; a change in flight at the kill is either there or not.
        app = start(&config, &log);
        let got = read_state(&client, &app.base, &ids).await;
        let mut l = ledger.lock().unwrap();
        for (key, known) in l.iter_mut() {
            let now = got
                .get(key)
                .unwrap_or_else(|| panic!("{key} missing: {got:#?}"));
            assert!(
                *now == known.acked || Some(now) == known.in_flight.as_ref(),
                "round {round}: {key} is {now} after the kill; the last acknowledged value was {} (in flight: {:?})",
                known.acked,
                known.in_flight
            );
            // The next round starts from what is stored.
            known.acked = now.clone();
            known.in_flight = None;
        }
    }
    app.kill();

    // SQLite agrees that the file is sound.
    let conn = rusqlite::Connection::open(state.join("freesky.db")).expect("db opens");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}
