//! `Registry::open` with upstream doubles: `Fake` stands in for an upstream service
//! (it lists one channel and resolves it, or fails as told), so source order,
//! fallback, the attempt list, the error cases and the resolution cache are checked
//! without a network.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use url::Url;

use super::{Registry, RegistryError, SourceCtx};
use crate::config::Config;
use crate::error::UpstreamError;
use crate::model::{Channel, ResolvedStream};
use crate::services::Service;
use crate::store::Store;
use crate::upstream::{Http, ServiceHttp};

/// One upstream: lists channel `news` ("News"); resolves it to
/// `http://NAME.test/news.m3u8` unless told to fail.
struct Fake {
    name: String,
    http: ServiceHttp,
    fail_resolve: AtomicBool,
    fail_channels: AtomicBool,
    resolves: AtomicUsize,
}

#[async_trait]
impl Service for Fake {
    async fn channels(&self) -> Result<Vec<Channel>, UpstreamError> {
        if self.fail_channels.load(Ordering::SeqCst) {
            return Err(UpstreamError::Invalid(format!("{} cannot list", self.name)));
        }
        Ok(vec![Channel {
            id: "news".into(),
            name: "News".into(),
            logo: String::new(),
            group: String::new(),
            tags: Vec::new(),
            tvg_id: String::new(),
            station_id: String::new(),
            number: None,
            service: self.name.clone(),
            headers: Vec::new(),
            url: None,
            catchup: None,
        }])
    }

    async fn resolve(&self, _channel: &Channel) -> Result<ResolvedStream, UpstreamError> {
        self.resolves.fetch_add(1, Ordering::SeqCst);
        if self.fail_resolve.load(Ordering::SeqCst) {
            return Err(UpstreamError::Invalid(format!("{} is down", self.name)));
        }
        Ok(ResolvedStream {
            url: Url::parse(&format!("http://{}.test/news.m3u8", self.name))
                .expect("a valid test URL"),
            headers: Vec::new(),
            valid_for: Duration::from_secs(60),
        })
    }

    fn http(&self) -> &ServiceHttp {
        &self.http
    }
}

/// A registry of services `a` (priority 1) and `b` (priority 2), both `Fake`, on a
/// fresh store; the store's directory lives as long as the returned guard.
fn registry() -> (Registry, Vec<Arc<Fake>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let text = format!(
        "[server]\nstate_dir = {:?}\n\n\
         [[services]]\nname = \"a\"\nkind = \"demo\"\npriority = 1\n\n\
         [[services]]\nname = \"b\"\nkind = \"demo\"\npriority = 2\n",
        dir.path().display().to_string()
    );
    let cfg = Config::parse(&text, "test.toml", &|_| None).expect("the test config parses");
    let store = Store::open(dir.path()).expect("the store opens");
    let http = Http::new(cfg.server.max_body_bytes);
    let fakes: Vec<Arc<Fake>> = cfg
        .services
        .iter()
        .map(|s| {
            Arc::new(Fake {
                name: s.name.clone(),
                http: ServiceHttp::new(http.clone(), s, None),
                fail_resolve: AtomicBool::new(false),
                fail_channels: AtomicBool::new(false),
                resolves: AtomicUsize::new(0),
            })
        })
        .collect();
    let services = fakes
        .iter()
        .map(|f| f.clone() as Arc<dyn Service>)
        .collect();
    (Registry::with_services(&cfg, store, services), fakes, dir)
}

/// The attempt of every `open` below: the resolved URL, or a failure for service
/// `failing`.
async fn attempt(src: SourceCtx, failing: &str) -> Result<(String, Url), UpstreamError> {
    if src.service_name == failing {
        return Err(UpstreamError::Invalid("HTML instead of a playlist".into()));
    }
    Ok((src.service_name, src.resolved.url.clone()))
}

#[tokio::test]
async fn open_takes_the_first_source_in_priority_order() {
    let (r, _fakes, _dir) = registry();
    let (service, url) = r.open("news", None, |src| attempt(src, "")).await.unwrap();
    assert_eq!(service, "a");
    assert_eq!(url.as_str(), "http://a.test/news.m3u8");
}

#[tokio::test]
async fn open_falls_back_to_the_next_source_when_one_fails() {
    let (r, fakes, _dir) = registry();
    let (service, _) = r.open("news", None, |src| attempt(src, "a")).await.unwrap();
    assert_eq!(service, "b");
    // A resolve failure is a failed source too.
    fakes[0].fail_resolve.store(true, Ordering::SeqCst);
    let (service, _) = r.open("news", None, |src| attempt(src, "")).await.unwrap();
    assert_eq!(service, "b");
}

#[tokio::test]
async fn when_every_source_fails_each_is_listed_in_the_order_tried() {
    let (r, fakes, _dir) = registry();
    fakes[1].fail_resolve.store(true, Ordering::SeqCst);
    let err = r
        .open("news", None, |src| attempt(src, "a"))
        .await
        .unwrap_err();
    let RegistryError::AllSourcesFailed { channel, tried } = err else {
        panic!("expected AllSourcesFailed, got {err:?}");
    };
    assert_eq!(channel, "news");
    let tried: Vec<(&str, &str, &str)> = tried
        .iter()
        .map(|a| (a.service.as_str(), a.channel_id.as_str(), a.error.as_str()))
        .collect();
    assert_eq!(
        tried,
        [
            ("a", "news", "HTML instead of a playlist"),
            ("b", "news", "b is down")
        ]
    );
}

#[tokio::test]
async fn a_resolution_is_reused_until_its_source_fails() {
    let (r, fakes, _dir) = registry();
    for _ in 0..2 {
        r.open("news", None, |src| attempt(src, "")).await.unwrap();
    }
    assert_eq!(fakes[0].resolves.load(Ordering::SeqCst), 1);
    // A failed attempt drops the cached resolution: the next open resolves afresh.
    let _ = r.open("news", Some("a"), |src| attempt(src, "a")).await;
    r.open("news", None, |src| attempt(src, "")).await.unwrap();
    assert_eq!(fakes[0].resolves.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn open_names_what_it_cannot_find() {
    let (r, _fakes, _dir) = registry();
    let err = |id: &'static str, only: Option<&'static str>| {
        let r = &r;
        async move {
            r.open(id, only, |src| attempt(src, ""))
                .await
                .unwrap_err()
                .to_string()
        }
    };
    assert_eq!(err("nope", None).await, "unknown channel `nope`");
    assert_eq!(err("news", Some("zz")).await, "unknown service `zz`");
    assert_eq!(
        err("a:news", Some("b")).await,
        "`a:news` names service `a`, not `b`"
    );
    r.set_enabled("b", Some(false)).await.unwrap();
    assert_eq!(err("b:news", None).await, "service `b` is disabled");
    assert_eq!(
        err("news", Some("b")).await,
        "channel `news` has no source from service `b`"
    );
    r.set_enabled("a", Some(false)).await.unwrap();
    // Both disabled: the lineup is empty, so the channel is unknown.
    assert_eq!(err("news", None).await, "unknown channel `news`");
}

#[tokio::test]
async fn service_id_opens_that_source_only() {
    let (r, _fakes, _dir) = registry();
    let (service, _) = r
        .open("b:news", None, |src| attempt(src, ""))
        .await
        .unwrap();
    assert_eq!(service, "b");
    // Pinned: no fallback to `a` when `b` fails.
    let err = r
        .open("b:news", None, |src| attempt(src, "b"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::AllSourcesFailed { ref tried, .. } if tried.len() == 1));
}

#[tokio::test]
async fn a_service_that_has_only_failed_is_not_healthy() {
    let (reg, fakes, _dir) = registry();
    fakes[1].fail_channels.store(true, Ordering::SeqCst);
    reg.lineup().await.expect("a lineup of the other service");
    let status = reg.status();
    let b = status.iter().find(|s| s.name == "b").unwrap();
    assert_eq!(
        (b.failures, b.consecutive_failures, b.circuit.as_str()),
        (1, 1, "closed")
    );
    assert!(!b.healthy, "{b:?}");
    assert!(status.iter().find(|s| s.name == "a").unwrap().healthy);
}

#[tokio::test]
async fn a_reload_carries_the_last_listed_channels_of_a_service_listing_from_the_same_place() {
    let (prev, _, _dir) = registry();
    let before = prev.lineup().await.expect("a lineup").channels.len();
    assert!(before > 0);
    let (next, fakes, _dir2) = registry();
    for f in &fakes {
        f.fail_channels.store(true, Ordering::SeqCst);
    }
    next.keep_history_of(&prev);
    let after = next.lineup().await.expect("a lineup");
    assert_eq!(
        after.channels.len(),
        before,
        "the down services' channels stay"
    );
}
