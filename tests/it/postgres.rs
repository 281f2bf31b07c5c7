//! The PostgreSQL state backend against a real server: `FREESKY_TEST_POSTGRES` names a
//! database URL (scripts/cluster-test.sh starts a throwaway cluster and sets it; CI
//! runs that script). Without it each test prints why it skipped and passes.
//!
//! Several stores on one database stand for several instances. The database outlives
//! a test, so each test names its own services, channels and namespaces.

use std::time::Duration;

use freesky::model::ChannelMapping;
use freesky::store::{Change, Store, Wanted};

use crate::common::eventually_within;

/// How long a change through one store may take to reach another (the promise is
/// "within a second"; the bound leaves room for a loaded CI machine).
const PROPAGATION: Duration = Duration::from_secs(5);

pub(crate) fn database() -> Option<String> {
    match std::env::var("FREESKY_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "skipped: FREESKY_TEST_POSTGRES is not set (scripts/cluster-test.sh sets it)"
            );
            None
        }
    }
}

/// A name no other test run used.
fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-{nanos}-{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_meeting_new_channels_at_once_give_each_one_number() {
    let Some(url) = database() else { return };
    let (a, b) = (
        Store::postgres(&url).unwrap(),
        Store::postgres(&url).unwrap(),
    );
    let run = unique("race");
    // Half bring an upstream number (taken when above every number given so far).
    let keys: Vec<Wanted> = (0..200)
        .map(|i| Wanted {
            number: (i % 2 == 0).then_some(900_000 + i),
            ..Wanted::new(format!("{run}:{i}"), format!("{run}-{i}"))
        })
        .collect();
    // Both see the same new channels at the same moment, many times over.
    let mut tasks = Vec::new();
    for chunk in 0..4 {
        let part: Vec<_> = keys[chunk * 50..(chunk + 1) * 50].to_vec();
        for store in [a.clone(), b.clone()] {
            let part = part.clone();
            tasks.push(tokio::spawn(async move { store.identities(&part).await }));
        }
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let from_a = a.identities(&keys).await.unwrap();
    let from_b = b.identities(&keys).await.unwrap();
    assert_eq!(from_a, from_b, "both instances agree on every identity");
    let mut numbers: Vec<u32> = from_a.iter().map(|i| i.number).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), keys.len(), "no number given twice");
    // A third instance starting now reads the same.
    let c = Store::postgres(&url).unwrap();
    assert_eq!(c.identities(&keys).await.unwrap(), from_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_and_a_mapping_made_through_one_instance_reach_the_others() {
    let Some(url) = database() else { return };
    let (a, b) = (
        Store::postgres(&url).unwrap(),
        Store::postgres(&url).unwrap(),
    );
    let mut heard = b.subscribe();
    let service = unique("svc");
    let started = std::time::Instant::now();
    a.set_enabled(&service, Some(false)).await.unwrap();
    a.set_priority(&service, Some(7)).await.unwrap();
    eventually_within(PROPAGATION, "the switch reaches instance b", || async {
        let o = b.service_override(&service);
        (o.enabled == Some(false) && o.priority == Some(7))
            .then_some(())
            .ok_or(format!("{o:?}"))
    })
    .await;
    // A figure for BENCHMARKS.md, not an assertion.
    eprintln!(
        "two switches reached instance b {:?} after the first write began",
        started.elapsed()
    );
    let change = tokio::time::timeout(PROPAGATION, heard.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        change,
        Change::Services,
        "subscribers are told what changed"
    );

    let slug = unique("chan");
    a.identities(&[Wanted::new(&slug, &slug)]).await.unwrap();
    a.update_mapping(&slug, |m| {
        Ok(ChannelMapping {
            name: Some("Renamed".into()),
            hidden: true,
            station_id: Some("10021".into()),
            ..m.clone()
        })
    })
    .await
    .unwrap();
    eventually_within(PROPAGATION, "the mapping reaches instance b", || async {
        match b.mappings().get(&slug) {
            Some(m)
                if m.name.as_deref() == Some("Renamed")
                    && m.hidden
                    && m.station_id.as_deref() == Some("10021") =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Accounts are read from the database on use; their subscribers hear of changes.
    let mut heard = b.subscribe();
    let user = unique("viewer");
    a.put_user(freesky::store::StoredUser {
        name: user.clone(),
        hash: "$argon2id$not-a-real-hash".into(),
        max_connections: 1,
        expires: None,
        groups: vec![],
        services: vec![],
        enabled: true,
        created_at: 0,
    })
    .await
    .unwrap();
    assert!(b.users().unwrap().iter().any(|u| u.name == user));
    eventually_within(PROPAGATION, "instance b to hear of the account", || {
        let got = heard.try_recv();
        async move {
            match got {
                Ok(Change::Users) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_records_and_ids_are_shared() {
    let Some(url) = database() else { return };
    let (a, b) = (
        Store::postgres(&url).unwrap(),
        Store::postgres(&url).unwrap(),
    );
    let key = unique("setting");
    let first = a.setting_or_init(&key, || "from-a".into()).unwrap();
    let second = b.setting_or_init(&key, || "from-b".into()).unwrap();
    assert_eq!(
        (first.as_str(), second.as_str()),
        ("from-a", "from-a"),
        "the first instance's identity wins"
    );

    let ns = unique("ns");
    a.put_record(&ns, "k", &serde_json::json!({"v": 1}))
        .await
        .unwrap();
    assert_eq!(
        b.records(&ns).unwrap(),
        vec![("k".to_string(), serde_json::json!({"v": 1}))]
    );
    b.delete_record(&ns, "k").await.unwrap();
    assert!(a.records(&ns).unwrap().is_empty());
    // Many in one call, one replacing what another instance wrote.
    b.put_record(&ns, "r2", &serde_json::json!("before"))
        .await
        .unwrap();
    let rows: Vec<(String, serde_json::Value)> = (1..=3)
        .map(|i| (format!("r{i}"), serde_json::json!(format!("v{i}"))))
        .collect();
    a.write_records(&ns, &rows, &[]).await.unwrap();
    assert_eq!(b.records(&ns).unwrap(), rows);
    // Put and removed in one transaction.
    let r4 = ("r4".to_string(), serde_json::json!("v4"));
    a.write_records(
        &ns,
        std::slice::from_ref(&r4),
        &["r1".to_string(), "r2".to_string()],
    )
    .await
    .unwrap();
    assert_eq!(b.records(&ns).unwrap(), vec![rows[2].clone(), r4.clone()]);
    for k in ["r3", "r4"] {
        a.delete_record(&ns, k).await.unwrap();
    }

    let (ids_a, ids_b) = tokio::join!(
        a.ids(&ns, vec!["x".into(), "y".into()]),
        b.ids(&ns, vec!["y".into(), "z".into()])
    );
    let (ids_a, ids_b) = (ids_a.unwrap(), ids_b.unwrap());
    assert_eq!(ids_a[1], ids_b[0], "one id for `y` whoever asked first");
    let mut all = vec![ids_a[0], ids_a[1], ids_b[1]];
    all.sort_unstable();
    assert_eq!(all, vec![1, 2, 3]);
    // A title known by two keys keeps one id by either, through any instance.
    let sep = freesky::store::ALIAS_SEPARATOR;
    let both = a
        .ids(&ns, vec![format!("t:9{sep}n:heat|1995")])
        .await
        .unwrap();
    assert_eq!(b.ids(&ns, vec!["n:heat|1995".into()]).await.unwrap(), both);
    assert_eq!(b.ids(&ns, vec!["t:9".into()]).await.unwrap(), both);
    assert!(b.ping().await.is_ok());
}

/// One viewer account with a limit of one connection, watched through two instances
/// sharing the database: the second instance counts the first one's connection, and
/// lets the account in again once it closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_accounts_connection_limit_counts_every_instance() {
    let Some(url) = database() else { return };
    let user = unique("viewer");
    let config = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\nstate = \"{url}\"\n\
         shutdown_grace = \"1s\"\ntrusted_proxies = [\"127.0.0.1\"]\n\n\
         [[services]]\nname = \"Demo\"\nkind = \"demo\"\n\n\
         [[users]]\nname = \"{user}\"\npassword = \"limit-pw-1\"\nmax_connections = 1\n"
    );
    let mut a = crate::common::TestApp::spawn(&config).await;
    let b = crate::common::TestApp::spawn(&config).await;
    let path = demo_ts_path(&a, &user, "limit-pw-1").await;
    // A's viewer and B's are two players: two addresses (the same address on another
    // instance is the same player going on there, which takes its connection over).
    let on_a = |app| from(app, &path, "192.0.2.10");
    let on_b = |app| from(app, &path, "192.0.2.20");

    // A .ts stream held open on instance A...
    let mut held = on_a(&a).await;
    assert_eq!(held.status(), 200);
    held.chunk().await.expect("stream bytes");
    // ...is counted by instance B once A has published it.
    eventually_within(PROPAGATION, "B refusing the second connection", || async {
        let resp = on_b(&b).await;
        match resp.status().as_u16() {
            403 => {
                let body = resp.text().await.unwrap_or_default();
                assert!(body.contains("allows 1 connection"), "{body}");
                Ok(())
            }
            other => Err(format!("B answered {other}")),
        }
    })
    .await;
    let (_, info) = b
        .get_json(&format!(
            "/player_api.php?username={user}&password=limit-pw-1"
        ))
        .await;
    assert_eq!(info["user_info"]["active_cons"], "1", "{info}");

    // Closed on A: B lets the account in again.
    drop(held);
    eventually_within(PROPAGATION, "B admitting the account again", || async {
        match on_b(&b).await.status().as_u16() {
            200 => Ok(()),
            other => Err(format!("B answered {other}")),
        }
    })
    .await;

    // A stops cleanly while its viewer watches (a rolling restart): B lets the
    // account in at once, not once A's record has gone stale (30 s). (B's admission
    // above counts until B publishes its close: A may refuse until then.)
    let mut held = eventually_within(PROPAGATION, "A admitting the account", || async {
        let resp = on_a(&a).await;
        match resp.status().as_u16() {
            200 => Ok(resp),
            other => Err(format!("A answered {other}")),
        }
    })
    .await;
    held.chunk().await.expect("stream bytes");
    eventually_within(
        PROPAGATION,
        "B refusing while A's viewer watches",
        || async {
            match on_b(&b).await.status().as_u16() {
                403 => Ok(()),
                other => Err(format!("B answered {other}")),
            }
        },
    )
    .await;
    a.stop().await;
    drop(held);
    eventually_within(PROPAGATION, "B admitting once A has stopped", || async {
        match on_b(&b).await.status().as_u16() {
            200 => Ok(()),
            other => Err(format!("B answered {other}")),
        }
    })
    .await;
}

/// Two viewers of a one-connection account let in at the same moment by two
/// instances (before either published): within seconds the instances agree and the
/// stream that started last ends; the other plays on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_letting_one_account_in_at_once_end_one_of_the_streams() {
    let Some(url) = database() else { return };
    let user = unique("viewer");
    let config = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\nstate = \"{url}\"\n\
         trusted_proxies = [\"127.0.0.1\"]\n\n\
         [[services]]\nname = \"Demo\"\nkind = \"demo\"\n\n\
         [[users]]\nname = \"{user}\"\npassword = \"limit-pw-2\"\nmax_connections = 1\n"
    );
    let a = crate::common::TestApp::spawn(&config).await;
    let b = crate::common::TestApp::spawn(&config).await;
    let path = demo_ts_path(&a, &user, "limit-pw-2").await;
    let open = |app, viewer| from(app, &path, viewer);
    // Both let in: the instances publish once a second, so opened together they are.
    let (mut one, mut two) = tokio::join!(open(&a, "192.0.2.1"), open(&b, "192.0.2.2"));
    assert_eq!((one.status().as_u16(), two.status().as_u16()), (200, 200));
    // Read both until one ends (the instances settle within about 2 s).
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            tokio::select! {
                c = one.chunk() => if !matches!(c, Ok(Some(_))) { return 1 },
                c = two.chunk() => if !matches!(c, Ok(Some(_))) { return 2 },
            }
        }
    })
    .await
    .expect("one of the two streams ends within 15 s");
    let survivor = if ended == 1 { &mut two } else { &mut one };
    // The other plays on, well past the moment the instances settled.
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < until {
        let chunk = tokio::time::timeout(Duration::from_secs(5), survivor.chunk())
            .await
            .expect("the other stream keeps sending");
        assert!(matches!(chunk, Ok(Some(_))), "the other stream ended too");
    }
}

/// GET `path` of `app` for a viewer at `viewer`, as a trusted proxy names it.
async fn from(app: &crate::common::TestApp, path: &str, viewer: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .header("x-forwarded-for", viewer)
        .send()
        .await
        .expect("the instance answers")
}

/// The Xtream `.ts` path of the demo channel for account `user`.
async fn demo_ts_path(app: &crate::common::TestApp, user: &str, password: &str) -> String {
    let (_, streams) = app
        .get_json(&format!(
            "/player_api.php?username={user}&password={password}&action=get_live_streams"
        ))
        .await;
    let id = streams[0]["stream_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no stream in {streams}"));
    format!("/live/{user}/{password}/{id}.ts")
}

/// A new, empty database on the test server: its URL.
pub(crate) async fn fresh_database(url: &str) -> String {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    let task = tokio::spawn(conn);
    let name = unique("copy").replace('-', "_");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a database");
    drop(client);
    task.abort();
    let (before, after) = url.split_once('?').map_or((url, ""), |(b, a)| (b, a));
    let base = before.rsplit_once('/').expect("a database in the URL").0;
    if after.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{after}")
    }
}

/// A household's SQLite state (numbers, a mapping, a switched service, an account
/// made through the API, the tuner's identity) moves into PostgreSQL with
/// `freesky copy-state`; a second copy into the same database is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_state_moves_a_households_sqlite_state_into_postgres() {
    let Some(url) = database() else { return };
    let services = "[[services]]\nname = \"Demo\"\nkind = \"demo\"\n\n\
                    [[services]]\nname = \"Spare\"\nkind = \"demo\"\npriority = 5\n";
    let mut home = crate::common::TestApp::spawn(services).await;
    let r = home
        .send_json(
            reqwest::Method::PATCH,
            "/api/channels/demo",
            r#"{"number": 77, "name": "Home Demo", "station_id": "10021"}"#,
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(home.post("/api/services/Spare/disable").await.status(), 200);
    let r = home
        .send_json(
            reqwest::Method::POST,
            "/api/users",
            r#"{"name": "kid", "password": "kid-pw-123"}"#,
            None,
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let (_, discover) = home.get_json("/discover.json").await;
    home.stop().await;

    let target = fresh_database(&url).await;
    let config = home.state_dir().join("copy.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nstate_dir = '{}'\nstate = \"{target}\"\n\n{services}",
            home.state_dir().display()
        ),
    )
    .unwrap();
    let copy = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_freesky"))
            .args(["--config", config.to_str().unwrap(), "copy-state"])
            .output()
            .expect("run freesky copy-state")
    };
    let out = copy();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("1 viewer accounts"), "{said}");

    let shared = crate::common::TestApp::spawn(&format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\nstate = \"{target}\"\n\n{services}"
    ))
    .await;
    let (_, demo) = shared.get_json("/api/channels/demo").await;
    assert_eq!(demo["number"], 77, "{demo}");
    assert_eq!(demo["name"], "Home Demo", "{demo}");
    assert_eq!(demo["station_id"], "10021", "{demo}");
    assert_eq!(shared.service_status("Spare").await["enabled"], false);
    let (_, info) = shared
        .get_json("/player_api.php?username=kid&password=kid-pw-123")
        .await;
    assert_eq!(info["user_info"]["auth"], 1, "{info}");
    let (_, again) = shared.get_json("/discover.json").await;
    assert_eq!(
        again["DeviceID"], discover["DeviceID"],
        "the same tuner for Plex"
    );

    let out = copy();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already holds freesky state"), "{err}");
}

/// Two instances sharing PostgreSQL: a decision made through one reaches the other's
/// matches and guide (as a local decision does), within the store's propagation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_made_through_one_instance_reaches_the_others() {
    let Some(url) = database() else {
        return;
    };
    let url = fresh_database(&url).await;
    let up = crate::guide_match::upstream().await;
    let cfg = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\nstate = \"{url}\"\n\n{}",
        crate::guide_match::config(&up, "")
    );
    let a = crate::common::TestApp::spawn(&cfg).await;
    let b = crate::common::TestApp::spawn(&cfg).await;
    crate::guide_match::matches(&b, "").await;
    let itv_id = a.channel_id("ITV +1").await;
    assert_eq!(b.channel_id("ITV +1").await, itv_id);
    let picked =
        crate::guide_match::post(&a, &itv_id, r#"{"action":"pick","guide_id":"ITV.uk"}"#).await;
    assert_eq!(picked["state"], "picked", "{picked}");
    eventually_within(
        PROPAGATION,
        "B showing A's pick and its programmes",
        || async {
            let page = crate::guide_match::matches(&b, "").await;
            let seen = crate::guide_match::line(&page, "ITV +1").clone();
            let (_, itv) = crate::guide_match::programmes_of(&b, "ITV +1").await;
            (seen["state"] == "picked" && itv == ["ITV.uk show"])
                .then_some(())
                .ok_or(format!("{seen} {itv:?}"))
        },
    )
    .await;
}

/// A service switched and a channel renumbered through one instance: another
/// instance's very next playlist has the switch (before, its first request after the
/// change got the lineup of before it, however long after), and its guide the new
/// number (before, only its next full guide refresh, hours later, showed it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_instances_switch_and_mapping_show_in_the_next_playlist_and_the_guide() {
    let Some(url) = database() else {
        return;
    };
    let url = fresh_database(&url).await;
    let up = crate::guide_match::upstream().await;
    let cfg = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\nstate = \"{url}\"\n\n{}",
        crate::guide_match::config(
            &up,
            "[[services]]\nname = \"Demo\"\nkind = \"demo\"\npriority = 9\n"
        )
    );
    let a = crate::common::TestApp::spawn(&cfg).await;
    let b = crate::common::TestApp::spawn(&cfg).await;
    // B has served its lineup and its guide.
    assert!(b.get_text_ok("/playlist.m3u").await.contains(",Demo\n"));
    let (_, titles) = crate::guide_match::programmes_of(&b, "BBCOne").await;
    assert_eq!(titles, ["BBCOne.uk show"]);

    assert_eq!(a.post("/api/services/Demo/disable").await.status(), 200);
    eventually_within(PROPAGATION, "B to hear of the switch", || async {
        let status = b.service_status("Demo").await;
        (status["enabled"] == false)
            .then_some(())
            .ok_or(status.to_string())
    })
    .await;
    // A moment for B to build its lineup again, as a local switch does before it
    // answers; then one request, as a player polling once makes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let playlist = b.get_text_ok("/playlist.m3u").await;
    assert!(!playlist.contains(",Demo\n"), "{playlist}");

    let id = a.channel_id("BBCOne").await;
    let r = a
        .send_json(
            reqwest::Method::PATCH,
            &format!("/api/channels/{id}"),
            r#"{"number": 777}"#,
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    eventually_within(PROPAGATION, "B's guide showing the new number", || async {
        let xml = b.get_text_ok("/epg.xml").await;
        xml.contains("<display-name>777</display-name>")
            .then_some(())
            .ok_or(xml)
    })
    .await;
}

/// A channel new in a service's list, seen first by one instance (its channel list
/// cache ran out first), is listed by another soon after, not up to that one's
/// `channels_ttl` later: behind a balancer, lineups flipped and links one instance did
/// not know were 404s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_channel_one_instance_sees_first_is_soon_listed_by_the_others() {
    use axum::routing::get;
    use std::sync::{Arc, Mutex};
    let Some(url) = database() else {
        return;
    };
    let url = fresh_database(&url).await;
    let list = Arc::new(Mutex::new(
        "#EXTM3U\n#EXTINF:-1,Chan One\nhttp://127.0.0.1:9/one.m3u8\n".to_string(),
    ));
    let served = list.clone();
    let up = crate::common::FakeUpstream::bind()
        .await
        .route(
            "/list.m3u",
            get(move || {
                let body = served.lock().unwrap().clone();
                async move { crate::common::respond(200, crate::common::M3U_TYPE, body) }
            }),
        )
        .start();
    let cfg = |ttl: &str| {
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\nstate = \"{url}\"\n\n\
             [cache]\nchannels_ttl = \"{ttl}\"\n\n\
             [[services]]\nname = \"L\"\nkind = \"m3u\"\nurl = \"{}\"\n",
            up.url("/list.m3u")
        )
    };
    let a = crate::common::TestApp::spawn(&cfg("1s")).await;
    let b = crate::common::TestApp::spawn(&cfg("1h")).await;
    assert_eq!(b.channel_names().await, ["Chan One"]);
    list.lock()
        .unwrap()
        .push_str("#EXTINF:-1,Chan Two\nhttp://127.0.0.1:9/two.m3u8\n");
    eventually_within(PROPAGATION, "A listing the new channel", || async {
        let names = a.channel_names().await;
        names
            .contains(&"Chan Two".to_string())
            .then_some(())
            .ok_or(format!("{names:?}"))
    })
    .await;
    eventually_within(PROPAGATION, "B listing it too", || async {
        let names = b.channel_names().await;
        names
            .contains(&"Chan Two".to_string())
            .then_some(())
            .ok_or(format!("{names:?}"))
    })
    .await;
    assert_eq!(
        a.channel_id("Chan Two").await,
        b.channel_id("Chan Two").await
    );
}

/// Edits of one account and of one channel's mapping made at the same moment through
/// two instances sharing PostgreSQL: both are kept (the second is made again on the
/// row the first wrote), and a name two instances create at once is given once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edits_of_one_row_through_two_instances_at_once_are_all_kept() {
    let Some(url) = database() else { return };
    let url = fresh_database(&url).await;
    let config = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\nstate = \"{url}\"\n\n\
         [[services]]\nname = \"Demo\"\nkind = \"demo\"\n"
    );
    let a = crate::common::TestApp::spawn(&config).await;
    let b = crate::common::TestApp::spawn(&config).await;
    let created = send(
        &a,
        "POST",
        "/api/users",
        r#"{"name":"both","password":"both-pw-1"}"#.into(),
    )
    .await;
    assert_eq!(created.status(), 200);
    for round in 1..=10u32 {
        let (one, two, three, four) = tokio::join!(
            send(
                &a,
                "PATCH",
                "/api/users/both",
                format!(r#"{{"max_connections":{round}}}"#)
            ),
            send(
                &b,
                "PATCH",
                "/api/users/both",
                format!(r#"{{"enabled":{}}}"#, round % 2 == 0)
            ),
            send(
                &a,
                "PATCH",
                "/api/channels/demo",
                format!(r#"{{"name":"Demo {round}"}}"#)
            ),
            send(
                &b,
                "PATCH",
                "/api/channels/demo",
                format!(r#"{{"group":"Group {round}"}}"#)
            ),
        );
        for r in [one, two, three, four] {
            assert_eq!(
                r.status(),
                200,
                "round {round}: {}",
                r.text().await.unwrap()
            );
        }
        for app in [&a, &b] {
            eventually_within(PROPAGATION, "both edits everywhere", || async {
                let (_, user) = app.get_json("/api/users/both").await;
                let (_, demo) = app.get_json("/api/channels/demo").await;
                let want_enabled = round % 2 == 0;
                (user["max_connections"] == round
                    && user["enabled"] == want_enabled
                    && demo["name"] == format!("Demo {round}")
                    && demo["group"] == format!("Group {round}"))
                .then_some(())
                .ok_or(format!("round {round}: {user} {demo}"))
            })
            .await;
        }
    }
    let (one, two) = tokio::join!(
        send(
            &a,
            "POST",
            "/api/users",
            r#"{"name":"twice","password":"twice-pw-a"}"#.into()
        ),
        send(
            &b,
            "POST",
            "/api/users",
            r#"{"name":"twice","password":"twice-pw-b"}"#.into()
        ),
    );
    let mut statuses = [one.status().as_u16(), two.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 400],
        "one instance makes it, the other is told it exists"
    );
}

/// An account made through one instance is there for the admin's very next call
/// through another (HAProxy may send it anywhere), before the news of it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_account_made_through_one_instance_is_there_at_once_through_another() {
    let Some(url) = database() else { return };
    let url = fresh_database(&url).await;
    let config = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\nstate = \"{url}\"\n\n\
         [[services]]\nname = \"Demo\"\nkind = \"demo\"\n"
    );
    let a = crate::common::TestApp::spawn(&config).await;
    let b = crate::common::TestApp::spawn(&config).await;
    for i in 0..8 {
        let name = format!("at-once-{i}");
        let body = format!(r#"{{"name":"{name}","password":"pw-{i}-long"}}"#);
        let created = send(&a, "POST", "/api/users", body).await;
        assert_eq!(created.status(), 200, "{}", created.text().await.unwrap());
        let path = format!("/api/users/{name}");
        let (status, shown) = b.get_json(&path).await;
        assert_eq!(status, 200, "{i}: {shown}");
        let changed = send(&b, "PATCH", &path, r#"{"max_connections":3}"#.into()).await;
        assert_eq!(
            changed.status(),
            200,
            "{i}: {}",
            changed.text().await.unwrap()
        );
        let other = format!("gone-{i}");
        let body = format!(r#"{{"name":"{other}","password":"pw-{i}-long"}}"#);
        assert_eq!(send(&a, "POST", "/api/users", body).await.status(), 200);
        let deleted = send(&b, "DELETE", &format!("/api/users/{other}"), String::new()).await;
        assert_eq!(
            deleted.status(),
            200,
            "{i}: {}",
            deleted.text().await.unwrap()
        );
    }
}

/// Two instances give one number to two channels at the same moment: one is set, the
/// other told the number is taken (400), as one instance would say, never a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_number_given_to_two_channels_through_two_instances_is_one_400() {
    let Some(url) = database() else { return };
    let url = fresh_database(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.m3u");
    std::fs::write(
        &list,
        "#EXTM3U\n#EXTINF:-1,Left\nhttp://127.0.0.1:9/l.m3u8\n\
         #EXTINF:-1,Right\nhttp://127.0.0.1:9/r.m3u8\n",
    )
    .unwrap();
    let config = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\nstate = \"{url}\"\n\n\
         [[services]]\nname = \"L\"\nkind = \"m3u\"\nurl = '{}'\n",
        list.display()
    );
    let a = crate::common::TestApp::spawn(&config).await;
    let b = crate::common::TestApp::spawn(&config).await;
    for round in 0..10u32 {
        let number = 500 + round;
        let (one, two) = tokio::join!(
            send(
                &a,
                "PATCH",
                "/api/channels/left",
                format!(r#"{{"number":{number}}}"#)
            ),
            send(
                &b,
                "PATCH",
                "/api/channels/right",
                format!(r#"{{"number":{number}}}"#)
            ),
        );
        let (s1, s2) = (one.status().as_u16(), two.status().as_u16());
        let bodies = (one.text().await.unwrap(), two.text().await.unwrap());
        let mut statuses = [s1, s2];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 400], "round {round}: {bodies:?}");
        let refusal = if s1 == 400 { &bodies.0 } else { &bodies.1 };
        assert!(
            refusal.contains(&number.to_string()),
            "round {round}: {refusal}"
        );
    }
}

async fn send(
    app: &crate::common::TestApp,
    method: &str,
    path: &str,
    body: String,
) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    app.send_json(method, path, &body, None).await
}

/// A password changed through one instance ends the account's `.ts` streams on every
/// instance, as on the one that changed it: a leaked login is thrown out everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_password_changed_through_one_instance_ends_the_streams_on_another() {
    let Some(url) = database() else { return };
    let url = fresh_database(&url).await;
    let config = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\nstate = \"{url}\"\n\n\
         [[services]]\nname = \"Demo\"\nkind = \"demo\"\n"
    );
    let a = crate::common::TestApp::spawn(&config).await;
    let b = crate::common::TestApp::spawn(&config).await;
    let body = r#"{"name":"leaked","password":"old-password-1"}"#.to_string();
    let created = send(&a, "POST", "/api/users", body).await;
    assert_eq!(created.status(), 200, "{}", created.text().await.unwrap());
    let path = demo_ts_path(&a, "leaked", "old-password-1").await;
    let mut held = a.get(&path).await;
    assert_eq!(held.status(), 200);
    held.chunk().await.expect("stream bytes");

    let changed = send(
        &b,
        "PATCH",
        "/api/users/leaked",
        r#"{"password":"new-password-2"}"#.into(),
    )
    .await;
    assert_eq!(changed.status(), 200, "{}", changed.text().await.unwrap());
    // The stream on A ends (a .ts stream sends a chunk at least every few seconds).
    tokio::time::timeout(PROPAGATION + Duration::from_secs(5), async {
        while let Ok(Some(_)) = held.chunk().await {}
    })
    .await
    .expect("the stream on the other instance ended");
    assert_eq!(a.get(&path).await.status(), 401, "the old password");
}

/// Two instances editing one channel's mapping at the same moment, many times over
/// HTTP: after each round both serve what the database holds. (Review 36 saw an
/// instance keep an older row, 3 times in 80 rounds, with three release builds on a
/// loaded machine: it wrote its own edit into its copy after its change listener had
/// taken in another instance's later edit. This run does not hit that window, which
/// is a few milliseconds wide, in process; it holds the instances to agreeing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_editing_one_mapping_at_once_end_up_serving_what_is_stored() {
    let Some(url) = database() else { return };
    let url = fresh_database(&url).await;
    let config = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\nstate = \"{url}\"\n\n\
         [[services]]\nname = \"Demo\"\nkind = \"demo\"\n"
    );
    let a = crate::common::TestApp::spawn(&config).await;
    let b = crate::common::TestApp::spawn(&config).await;
    for round in 0..ROUNDS {
        let (one, two) = tokio::join!(
            send(
                &a,
                "PATCH",
                "/api/channels/demo",
                format!(r#"{{"name":"Q{round}"}}"#)
            ),
            send(
                &b,
                "PATCH",
                "/api/channels/demo",
                format!(r#"{{"group":"R{round}"}}"#)
            ),
        );
        for r in [one, two] {
            assert_eq!(
                r.status(),
                200,
                "round {round}: {}",
                r.text().await.unwrap()
            );
        }
        for (which, app) in [("a", &a), ("b", &b)] {
            eventually_within(PROPAGATION, "both edits on both instances", || async {
                let (_, demo) = app.get_json("/api/channels/demo").await;
                (demo["name"] == format!("Q{round}") && demo["group"] == format!("R{round}"))
                    .then_some(())
                    .ok_or(format!("round {round}, instance {which}: {demo}"))
            })
            .await;
        }
    }
}

const ROUNDS: u32 = 200;

/// Instances sharing a database need a state_dir each (it holds the instance's id,
/// under which its viewers' connections are counted for the others): a second server
/// on one state_dir is refused, naming the first, as with SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_one_state_dir_is_refused() {
    let Some(url) = database() else { return };
    let url = fresh_database(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("freesky.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{}'\nstate = \"{url}\"\n\n\
             [[services]]\nname = \"Demo\"\nkind = \"demo\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let serve = || {
        let mut cmd = crate::common::freesky_command();
        cmd.arg("--config").arg(&config).arg("serve");
        cmd
    };
    let first = crate::common::Process::serve(serve(), &dir.path().join("first.log"));
    let mut second = tokio::process::Command::from(serve());
    let out = crate::common::run_within(&mut second, crate::common::HANG_GUARD, "the second").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("is in use by another server")
            && stderr.contains(&format!("pid {}", first.child.id()))
            && stderr.contains("a state_dir of its own"),
        "{stderr}"
    );
    assert!(!stderr.contains("serving on"), "{stderr}");
}

/// A player of a one-connection account that goes on on another instance (it switched
/// to a channel the balancer sends there, or a round-robin balancer moved it) takes
/// its own connection over, as on one instance: let in at once, and its stream on the
/// first instance ends. Another address is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_player_moving_to_another_instance_takes_its_own_connection_over() {
    let Some(url) = database() else { return };
    let user = unique("zapper");
    let config = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\nstate = \"{url}\"\n\
         trusted_proxies = [\"127.0.0.1\"]\n\n\
         [[services]]\nname = \"Demo\"\nkind = \"demo\"\n\n\
         [[users]]\nname = \"{user}\"\npassword = \"zap-pw-1\"\nmax_connections = 1\n"
    );
    let a = crate::common::TestApp::spawn(&config).await;
    let b = crate::common::TestApp::spawn(&config).await;
    let path = demo_ts_path(&a, &user, "zap-pw-1").await;
    let open = |app, viewer| from(app, &path, viewer);
    let mut held = open(&a, "192.0.2.1").await;
    assert_eq!(held.status(), 200);
    held.chunk().await.expect("stream bytes");
    // Once B has read A's record, another player is refused there...
    eventually_within(PROPAGATION, "B refusing another address", || async {
        match open(&b, "192.0.2.2").await.status().as_u16() {
            403 => Ok(()),
            other => Err(format!("B answered {other}")),
        }
    })
    .await;
    // ...and the same player is let in at once,
    let mut moved = open(&b, "192.0.2.1").await;
    assert_eq!(moved.status(), 200, "{:?}", moved.text().await);
    moved.chunk().await.expect("stream bytes");
    // while its stream on A ends.
    tokio::time::timeout(PROPAGATION + Duration::from_secs(5), async {
        while let Ok(Some(_)) = held.chunk().await {}
    })
    .await
    .expect("the stream on A ended");
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let chunk = tokio::time::timeout(Duration::from_secs(5), moved.chunk())
            .await
            .expect("the moved stream keeps sending");
        assert!(matches!(chunk, Ok(Some(_))), "the moved stream ended too");
    }
}

/// A TCP relay to `target` (host:port) on a free loopback port that stops passing
/// bytes either way while frozen, connections kept open: a database host that hangs,
/// or a network that drops packets, rather than one that refuses. It freezes when
/// told (`frozen`), or when the client sends bytes holding the pattern put in `on`.
struct Relay {
    addr: String,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    on: std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

async fn freezable_relay(target: String) -> Relay {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let frozen = Arc::new(AtomicBool::new(false));
    let on: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let (flag, pattern) = (frozen.clone(), on.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let ways: [(
                tokio::net::tcp::OwnedReadHalf,
                tokio::net::tcp::OwnedWriteHalf,
                bool,
            ); 2] = [(cr, sw, true), (sr, cw, false)];
            for (mut from, mut to, from_client) in ways {
                let (flag, pattern) = (flag.clone(), pattern.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match from.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if from_client {
                            let mut on = pattern.lock().unwrap();
                            if on
                                .as_ref()
                                .is_some_and(|p| buf[..n].windows(p.len()).any(|w| w == &p[..]))
                            {
                                *on = None;
                                flag.store(true, Ordering::SeqCst);
                            }
                        }
                        while flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        if to.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    Relay { addr, frozen, on }
}

/// A database that takes a call and then hangs (not one that refuses) answers within
/// `STORE_WAIT` with `NoAnswer`, which the API answers 503 saying the change may
/// still be made. A numbering it hangs in the middle of (its INSERT sent) ends once
/// the database answers again, in its own task: the new channel is numbered once,
/// with its own slug and the next number, and this instance knows it (no `-2` slug,
/// no number skipped, no second INSERT of the same key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_hangs_is_no_answer_in_bounded_time() {
    use std::sync::atomic::Ordering;
    let Some(url) = database() else { return };
    let mut relayed = url::Url::parse(&url).unwrap();
    let target = format!(
        "{}:{}",
        relayed.host_str().unwrap(),
        relayed.port().unwrap_or(5432)
    );
    let relay = freezable_relay(target).await;
    let port: u16 = relay.addr.rsplit(':').next().unwrap().parse().unwrap();
    relayed.set_port(Some(port)).unwrap();
    let store = Store::postgres(relayed.as_str()).unwrap();
    let run = unique("hang");
    let keys = |n: usize| -> Vec<Wanted> {
        (0..n)
            .map(|i| Wanted::new(format!("{run}:{i}"), format!("{run}-{i}")))
            .collect()
    };
    let first = store.identities(&keys(1)).await.expect("through the relay");

    *relay.on.lock().unwrap() = Some(b"INSERT INTO channel_identity".to_vec());
    let started = std::time::Instant::now();
    let hung = tokio::time::timeout(
        freesky::store::STORE_WAIT + Duration::from_secs(15),
        store.identities(&keys(2)),
    )
    .await
    .expect("answered in bounded time");
    let err = hung.expect_err("a hung database is an error");
    assert!(relay.frozen.load(Ordering::SeqCst), "frozen at the INSERT");
    assert!(
        matches!(err, freesky::store::StoreError::NoAnswer(_)),
        "{err}"
    );
    assert!(started.elapsed() >= freesky::store::STORE_WAIT, "{err}");
    let answer = freesky::http::error::AppError::from(err);
    assert_eq!(answer.status(), 503);
    assert!(
        answer.to_string().contains("no answer within 20 s")
            && answer.to_string().contains("the change may still be made"),
        "{answer}"
    );

    relay.frozen.store(false, Ordering::SeqCst);
    let now = eventually_within(PROPAGATION * 8, "the store answers again", || async {
        store.identities(&keys(3)).await.map_err(|e| e.to_string())
    })
    .await;
    let slugs: Vec<&str> = now.iter().map(|i| i.slug.as_str()).collect();
    assert_eq!(
        slugs,
        [format!("{run}-0"), format!("{run}-1"), format!("{run}-2")],
        "{now:?}"
    );
    let numbers: Vec<u32> = now.iter().map(|i| i.number).collect();
    assert_eq!(numbers[0], first[0].number);
    assert!(
        numbers[1] > numbers[0] && numbers[2] > numbers[1],
        "{now:?}"
    );
    // As stored: another instance reads the same.
    let other = Store::postgres(&url).unwrap();
    assert_eq!(other.identities(&keys(3)).await.unwrap(), now);
}

/// Two instances whose state_dirs hold one `instance.id` (a state_dir copied from
/// another): one of them sees the other publish under its id, takes a new one and keeps
/// it in its state_dir, so each instance's viewers count on their own again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copied_instance_id_is_replaced_by_one_of_the_two() {
    let Some(url) = database() else { return };
    let config = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{{state_dir}}'\nstate = \"{url}\"\n\
         shutdown_grace = \"1s\"\n\n[[services]]\nname = \"Demo\"\nkind = \"demo\"\n\n\
         [[users]]\nname = \"{}\"\npassword = \"clone-pw-1\"\n",
        unique("clone")
    );
    let a = crate::common::TestApp::spawn(&config).await;
    let mut b = crate::common::TestApp::spawn(&config).await;
    let id_file = |app: &crate::common::TestApp| {
        std::fs::read_to_string(app.state_dir().join("instance.id"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    eventually_within(PROPAGATION, "A's instance.id written", || async {
        if id_file(&a).is_empty() {
            Err("none yet")
        } else {
            Ok(())
        }
    })
    .await;
    b.stop().await;
    let copied = id_file(&a);
    std::fs::write(b.state_dir().join("instance.id"), format!("{copied}\n")).unwrap();
    b.start().await;
    assert_eq!(id_file(&b), copied);
    eventually_within(PROPAGATION * 4, "one instance taking a new id", || async {
        let (ia, ib) = (id_file(&a), id_file(&b));
        if ia != ib && !ia.is_empty() && !ib.is_empty() {
            Ok(())
        } else {
            Err(format!("A {ia}, B {ib}"))
        }
    })
    .await;
}
