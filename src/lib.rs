//! freesky: an IPTV bridge that merges many upstream streaming services into one
//! M3U playlist and one set of HLS streams.
//!
//! Code map (see ARCHITECTURE.md for the request path):
//! - `config`: the TOML file, interpolation, every problem with file:line.
//! - `services`: the `Service` trait, one file per kind, `registry` (the coordinator).
//! - `lineup`: merging channels across services (pure).
//! - `m3u`, `hls`: IPTV list parsing/rendering and HLS playlist rewriting (pure).
//! - `ts`: joined MPEG-TS segments made one continuous stream (pure), for `.ts` sessions.
//! - `upstream`: bounded HTTP to upstreams; `proxy`: signed links; `store`: runtime state
//!   (SQLite, or PostgreSQL shared by several instances).
//! - `cache`: playlist and segment caches with one shared upstream fetch per key.
//! - `streams`: the stream engine: opening a channel, serving sealed links, HLS failover
//!   (`streams::failover`), the shared `.ts` sessions (`streams::session`), the channel test.
//! - `app`: `AppState`, the shared handles; `tuner`: the HDHomeRun identity and tuner slots.
//! - `metrics`: Prometheus counters and gauges, rendered by `GET /metrics`.
//! - `xmltv` (streaming read, merged write; pure) and `guide` (sources, refresh, merge).
//! - `http`: the axum routes (`http::access`: who may call what); `error`: the one place
//!   errors become statuses.
//! - `limits`: request target / header size limits, the connection caps (in all, per
//!   client address) and the request-head / idle timeouts of a connection.
//! - `discovery`: optional LAN discovery of the tuner (SiliconDust UDP discover, SSDP).
//! - `hdhr`: HDHomeRun DeviceIDs, virtual-tuner packing and `device.xml` (pure); served by `http::hdhr`.
//! - `health`: each service's success rate, latency and circuit breaker (pure).
//! - `history`: each service's last hour of outcomes per minute and its SVG chart (pure).
//! - `accounts`: viewer accounts (logins, what each sees, live connections).
//! - `reload`: live config reload (the Router swapped whole) and the served connections.
//! - `ready`: whether a balancer should send new viewers here (`GET /ready`), draining.
//! - `link_key`: the link key shared by several instances (`proxy_key_file`) and its predecessor.

#![forbid(unsafe_code)]

pub mod accounts;
pub mod app;
pub mod cache;
pub mod catchup;
pub mod clock;
pub mod config;
pub mod discovery;
pub mod error;
pub mod guide;
pub mod guide_match;
pub mod hdhr;
pub mod health;
pub mod history;
pub mod hls;
pub mod http;
pub mod limits;
pub mod lineup;
pub mod link_key;
pub mod logos;
pub mod m3u;
pub mod metrics;
pub mod model;
pub mod proxy;
pub mod ready;
pub mod reload;
pub mod segmenter;
pub mod services;
pub mod slots;
pub mod store;
pub mod streams;
pub mod ts;
pub mod tuner;
pub mod upstream;
pub mod vod;
pub mod xmltv;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use app::AppState;
pub use http::app;

/// The pure readers of upstream answers (Xtream `player_api.php`, `json_api` lists and
/// stream answers), for the fuzz targets (`fuzz/`, `tests/fuzz_support`) that feed them
/// arbitrary bytes without an HTTP round trip. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::services::json_api::events::{guide as events_guide, parse as parse_events};
    pub use crate::services::json_api::{channel_list, stream_in_answer};
    pub use crate::services::xtream::{category_names, live_channels, parse_account};
    pub use crate::services::{base_url, endpoint, find_stream_url};
}

/// After the shutdown grace, how long the connections whose bodies were ended get to
/// close before serving returns anyway (the process exit then closes them).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Builds the shared state from a loaded config: opens the store and the proxy key in
/// `state_dir` and builds every service.
pub fn state(config: config::Config) -> anyhow::Result<AppState> {
    let store =
        store::Store::open_configured(config.server.state.expose(), &config.server.state_dir)?;
    build_state(config, store, None)
}

/// `state` for a one-shot command (`channels`, `playlist`, `guide`) while a server owns
/// the SQLite store of `state_dir` (holds `store::StateLock`): the store is opened
/// read-only and channels it has never seen are numbered in memory only, so the
/// command never gives out a number the server does not know of.
pub fn state_display_only(config: config::Config) -> anyhow::Result<AppState> {
    let store = store::Store::open_display_only(&config.server.state_dir)?;
    build_state(config, store, None)
}

/// What stops a start that can be known before anything is made in `state_dir`: a
/// shared proxy key file that cannot be read or is no key (`state` reads it again).
pub fn preflight(config: &config::Config) -> anyhow::Result<()> {
    if config.server.proxy_key_file.is_some() {
        signer(&config.server)?;
    }
    Ok(())
}

/// The link sealer of `server`: the shared key file when one is named, else the
/// instance's own key in `state_dir` (made on first start).
fn signer(server: &config::ServerConfig) -> anyhow::Result<proxy::Signer> {
    Ok(match &server.proxy_key_file {
        Some(file) => link_key::load(
            file,
            server.proxy_key_previous_file.as_deref(),
            server.link_ttl,
        )?,
        None => proxy::Signer::load_or_create(&server.state_dir, server.link_ttl)?,
    })
}

/// `state`, with link expiry and upstream token lifetimes measured against `clock`
/// (tests move a `clock::TestClock` forward instead of waiting). A config reload keeps
/// the clock with the signer and the failovers it carries over.
pub fn state_with_clock(
    config: config::Config,
    clock: Arc<dyn clock::Clock>,
) -> anyhow::Result<AppState> {
    let server = config.server.clone();
    let mut state = state(config)?;
    state.signer = Arc::new(signer(&server)?.with_clock(clock.clone()));
    state.failovers = Arc::new(streams::failover::Failovers::with_clock(clock));
    Ok(state)
}

/// The state of `config` on `store`. With `prev` (a config reload), the parts that
/// must outlive a reload are carried over: the `.ts` sessions and HLS failovers (so
/// viewers continue), the proxy key (so issued links stay valid), each service's
/// chart history, the tuner and its slots (a new `tuner_count` applied to them), and
/// the media cache when its settings are unchanged.
pub(crate) fn build_state(
    config: config::Config,
    store: store::Store,
    prev: Option<&AppState>,
) -> anyhow::Result<AppState> {
    let same = |f: &dyn Fn(&config::Config) -> bool| prev.filter(|p| f(&p.config));
    let same_key = |c: &config::Config| {
        c.server.link_ttl == config.server.link_ttl
            && c.server.proxy_key_file == config.server.proxy_key_file
            && c.server.proxy_key_previous_file == config.server.proxy_key_previous_file
    };
    let signer = match same(&same_key) {
        Some(p) => p.signer.clone(),
        None => Arc::new(signer(&config.server)?),
    };
    // The tuner and its slots outlive a reload: streams holding a slot go on, and a
    // new count applies to them too (`Tuner::resize`).
    let tuner = match prev {
        Some(p) => {
            p.tuner.resize(config.hdhomerun.tuner_count);
            p.tuner.clone()
        }
        None => Arc::new(tuner::Tuner::load(&store, config.hdhomerun.tuner_count)?),
    };
    let media = match same(&|c| c.cache == config.cache) {
        Some(p) => p.media.clone(),
        None => Arc::new(cache::MediaCache::new(&config.cache)),
    };
    let logos =
        match same(&|c| c.logos == config.logos && c.server.state_dir == config.server.state_dir) {
            Some(p) if Arc::ptr_eq(&p.signer, &signer) => p.logos.clone(),
            _ => Arc::new(logos::Logos::new(
                &config.logos,
                &config.server.state_dir,
                signer.clone(),
            )),
        };
    let http = upstream::Http::new(config.server.max_body_bytes);
    let registry = services::registry::Registry::new(&config, store, http.clone()).shared();
    if let Some(p) = prev {
        registry.keep_history_of(&p.registry);
    }
    let mut guides = guide::Guides::new(registry.clone(), config.guide.clone())
        .with_extra_guides(&config.guides, &http)
        .with_service_countries(&config.services);
    // A one-shot command beside a running server writes nothing in its `state_dir`.
    if !registry.store().display_only() {
        guides = guides.with_copies(config.server.state_dir.join("guides"));
    }
    if let Some(p) = prev {
        guides = guides.keep_guides_of(&p.guides, &p.config.services, &config.services);
    }
    let accounts = Arc::new(
        accounts::Accounts::new(
            &config.users,
            registry.store().clone(),
            prev.map(|p| &*p.accounts),
        )
        .map_err(|e| anyhow::anyhow!("the stored viewer accounts cannot be read: {e}"))?
        .with_tag_key(signer.account_tag_key()),
    );
    let vod = Arc::new(vod::Library::new(
        registry.clone(),
        &config.cache,
        prev.map(|p| &*p.vod),
    ));
    Ok(AppState {
        vod,
        config: Arc::new(config),
        registry,
        guides: Arc::new(guides),
        signer,
        media,
        sessions: prev.map(|p| p.sessions.clone()).unwrap_or_default(),
        failovers: prev.map(|p| p.failovers.clone()).unwrap_or_default(),
        tuner,
        accounts,
        logos,
        readiness: prev.map(|p| p.readiness.clone()).unwrap_or_default(),
        channel_tests: Arc::default(),
    })
}

/// Serves `state` on `listener` until `shutdown` resolves, then stops as `serve` does.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve(
        listener,
        reload::Reloader::start(state, |_| {}),
        shutdown,
        std::future::pending(),
    )
    .await
}

/// Serves through `reloader` (whose config can change while serving) until
/// `shutdown` resolves; then new connections are refused at once, requests in flight
/// finish, and connections still open after `server.shutdown_grace` (a `.ts` viewer)
/// have their bodies ended and close. `force` resolving after `shutdown` returns at
/// once.
pub async fn serve(
    listener: TcpListener,
    reloader: Arc<reload::Reloader>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    force: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // Upstream data pointing at freesky's own port on loopback is refused.
    let _own = upstream::serving_on(listener.local_addr()?);
    let served = serve_until_stopped(listener, reloader.clone(), shutdown, force).await;
    // The other instances stop counting this one's viewers now, not when its record
    // has gone stale.
    let state = reloader.state();
    if state.registry.store().is_shared() {
        accounts::leave_shared_counts(&state.accounts.conns).await;
    }
    served
}

async fn serve_until_stopped(
    listener: TcpListener,
    reloader: Arc<reload::Reloader>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    force: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let state = reloader.state();
    // LAN discovery when configured; its sockets close when serving ends.
    let _discovery = discovery::spawn_with(&state, listener.local_addr()?, {
        let r = reloader.clone();
        move || r.state()
    });
    let server = &state.config.server;
    let mut listener = limits::Limited::new(
        listener,
        server.max_connections,
        server.max_connections_per_client,
    );
    drop(state);
    // `stop`: the grace is over, streaming bodies end; `closing`: no new requests on
    // open connections (each closes once its response in flight is done).
    let stop = CancellationToken::new();
    let closing = CancellationToken::new();
    let open = reload::OpenCount::default();
    // Every connection task holds a receiver: all are gone when `closed()` resolves.
    let (all_closed, conn_rx) = tokio::sync::watch::channel(());
    tokio::pin!(shutdown, force);
    let accept = |io, remote| {
        let conn = reloader.conn(remote, stop.clone(), &open);
        let config = reloader.state().config;
        tokio::spawn(serve_connection(
            io,
            conn,
            config,
            closing.clone(),
            conn_rx.clone(),
        ));
    };
    loop {
        tokio::select! {
            (io, remote) = listener.accept() => accept(io, remote),
            () = &mut shutdown => break,
        }
    }
    // Draining: `/ready` answers 503 and new streams are refused, while connections
    // are still taken for `drain_delay`, so a load balancer sees the instance leave
    // through its health check rather than through refused connections.
    let state = reloader.state();
    state.readiness.drain();
    let delay = state.config.server.drain_delay;
    drop(state);
    if !delay.is_zero() {
        tracing::info!(delay = %humantime::format_duration(delay), "draining: not ready, new streams refused");
        let until = tokio::time::sleep(delay);
        tokio::pin!(until);
        loop {
            tokio::select! {
                (io, remote) = listener.accept() => accept(io, remote),
                () = &mut until => break,
                () = &mut force => return Ok(()),
            }
        }
    }
    drop(listener);
    drop(conn_rx);
    closing.cancel();
    let grace = reloader.state().config.server.shutdown_grace;
    tracing::info!(
        open_connections = open.get(),
        grace = %humantime::format_duration(grace),
        "shutting down: no new connections; open ones may run until the grace is over"
    );
    let closed = all_closed.closed();
    tokio::pin!(closed);
    tokio::select! {
        () = &mut closed => return Ok(()),
        () = &mut force => {
            tracing::warn!(open_connections = open.get(), "second signal: stopping at once");
            return Ok(());
        }
        () = tokio::time::sleep(grace) => {}
    }
    tracing::info!(
        open_connections = open.get(),
        "shutdown grace over: ending the streams still open"
    );
    stop.cancel();
    tokio::select! {
        () = &mut closed => {}
        () = &mut force => {}
        () = tokio::time::sleep(CLOSE_WAIT) => {
            tracing::warn!(open_connections = open.get(), "connections still open; they close with the process");
        }
    }
    Ok(())
}

/// Serves one client connection over HTTP/1.1 (hyper's server directly: it is what
/// bounds the wait for a request head) until it closes, or until `closing` and its
/// response in flight is done.
async fn serve_connection(
    io: limits::Counted,
    conn: reload::Conn,
    config: Arc<config::Config>,
    closing: CancellationToken,
    _alive: tokio::sync::watch::Receiver<()>,
) {
    let timer = io.timer(config.server.idle_timeout);
    let served = hyper::server::conn::http1::Builder::new()
        .timer(timer)
        .header_read_timeout(config.server.header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(io), conn);
    drop(config);
    tokio::pin!(served);
    let result = tokio::select! {
        result = served.as_mut() => result,
        () = closing.cancelled() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = result {
        tracing::trace!(error = %e, "client connection ended with an error");
    }
}
