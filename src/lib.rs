//! freesky: an IPTV bridge that merges many upstream streaming services into one
//! M3U playlist and one set of HLS streams.
//!
//! Code map (see ARCHITECTURE.md for the request path):
//! - `config`: the TOML file, interpolation, every problem with file:line.
//! - `services`: the `Service` trait, one file per kind, `registry` (the coordinator).
//! - `lineup`: merging channels across services (pure).
//! - `m3u`, `hls`: IPTV list parsing/rendering and HLS playlist rewriting (pure).
//! - `upstream`: bounded HTTP to upstreams; `proxy`: signed links; `store`: runtime state.
//! - `cache`: playlist and segment caches with one shared upstream fetch per key.
//! - `session`: continuous MPEG-TS, one shared upstream session per channel.
//! - `metrics`: Prometheus counters and gauges, rendered by `GET /metrics`.
//! - `failover`: switching a playing HLS link to the channel's next source.
//! - `xmltv` (streaming read, merged write; pure) and `guide` (sources, refresh, merge).
//! - `http`: the axum routes; `error`: the one place errors become statuses.
//! - `limits`: request target / header size limits and the connection cap.
//! - `discovery`: optional LAN discovery of the tuner (SiliconDust UDP discover, SSDP).
//! - `health`: each service's success rate, latency and circuit breaker (pure).

pub mod cache;
pub mod config;
pub mod discovery;
pub mod error;
pub mod failover;
pub mod guide;
pub mod health;
pub mod hls;
pub mod http;
pub mod limits;
pub mod lineup;
pub mod m3u;
pub mod metrics;
pub mod model;
pub mod proxy;
pub mod services;
pub mod session;
pub mod store;
pub mod upstream;
pub mod xmltv;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

pub use http::{app, AppState};

/// Builds the shared state from a loaded config: opens the store and the proxy key in
/// `state_dir` and builds every service.
pub fn state(config: config::Config) -> anyhow::Result<AppState> {
    let dir = &config.server.state_dir;
    let store = store::Store::open(dir)?;
    let signer = proxy::Signer::load_or_create(dir, config.server.link_ttl)?;
    let http = upstream::Http::new(config.server.max_body_bytes);
    let tuner = http::hdhr::Tuner::load(&store, config.hdhomerun.tuner_count)?;
    let registry = services::registry::Registry::new(&config, store, http);
    let media = cache::MediaCache::new(&config.cache);
    let registry = Arc::new(registry);
    let guides = guide::Guides::new(registry.clone(), config.guide.clone());
    Ok(AppState {
        config: Arc::new(config),
        registry,
        guides: Arc::new(guides),
        signer: Arc::new(signer),
        media: Arc::new(media),
        sessions: Arc::default(),
        failovers: Arc::default(),
        tuner: Arc::new(tuner),
    })
}

/// Serves `state` on `listener` until `shutdown` resolves. Loads the lineup once in
/// the background so the first client does not wait for every upstream.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let registry = state.registry.clone();
    let guides = state.guides.clone();
    tokio::spawn(async move {
        if let Err(e) = registry.lineup().await {
            tracing::warn!(error = %e, "initial lineup load failed");
        }
        // Then the guides, on their schedule.
        guides.spawn_refresh();
    });
    // LAN discovery when configured; its sockets close when serving ends.
    let http_addr = listener.local_addr()?;
    let _discovery = discovery::spawn(&state, http_addr);
    // Background health probes; they stop when serving ends.
    let _monitors = state.registry.spawn_monitors(state.config.health.interval);
    let max_connections = state.config.server.max_connections;
    let app = app(state).into_make_service_with_connect_info::<SocketAddr>();
    // `tap_io` adds nothing but gives any listener axum's `ConnectInfo<SocketAddr>`.
    let listener = limits::Limited::new(listener, max_connections).tap_io(|_| {});
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
