//! `GET /ready` and draining, on the real binary: ready once the first lineup load
//! was tried; on SIGTERM with `server.drain_delay`, not ready and refusing new streams
//! while still answering (so a load balancer's health check takes it out), and a
//! second signal stops it at once.

use std::time::Duration;

use serde_json::Value;

use crate::common::{eventually, freesky_command, json_of, Process};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn status_of(url: String) -> Result<(u16, Value), String> {
    let resp = client().get(&url).send().await.map_err(|e| e.to_string())?;
    let (status, body) = json_of(resp).await;
    Ok((status.as_u16(), body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_once_started_then_draining_refuses_new_streams_but_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("freesky.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{}'\ndrain_delay = \"60s\"\n\
             [hdhomerun]\ndiscovery_port = 0\nssdp_port = 0\n\
             [[services]]\nname = \"Demo\"\nkind = \"demo\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let mut cmd = freesky_command();
    cmd.args(["--config", config.to_str().unwrap(), "serve"]);
    let mut fs = Process::serve(cmd, &dir.path().join("freesky.log"));
    let base = fs.base.clone();

    eventually("/ready to answer 200", || async {
        match status_of(format!("{base}/ready")).await? {
            (200, body) if body["status"] == "ready" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let (_, channels) = status_of(format!("{base}/api/channels/all")).await.unwrap();
    let id = channels[0]["id"]
        .as_str()
        .expect("a demo channel")
        .to_string();
    let stream = format!("{base}/api/stream/{id}.m3u8");
    assert_eq!(client().get(&stream).send().await.unwrap().status(), 200);

    fs.signal("TERM");
    eventually("/ready to answer 503 draining", || async {
        match status_of(format!("{base}/ready")).await? {
            (503, body) if body["status"] == "draining" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let refused = client().get(&stream).send().await.unwrap();
    assert_eq!(
        refused.status(),
        503,
        "a new stream goes to another instance"
    );
    let (health, _) = status_of(format!("{base}/health")).await.unwrap();
    assert_eq!(health, 200, "still alive and answering while draining");

    // A second signal does not wait for the drain delay.
    fs.signal("TERM");
    eventually("the process to exit", || {
        let exited = fs.child.try_wait().ok().flatten().is_some();
        async move { exited.then_some(()).ok_or("still running") }
    })
    .await;
}
