//! The running server's lifecycle: live config reload and the connections it serves.
//!
//! `Reloader` owns the current `AppState` and the `Router` built on it. Every client
//! connection is served by a `Conn`, which for each request clones the *current*
//! Router: a reload builds a new state from the re-read config file (carrying over
//! what must outlive it: the store, the proxy key, the `.ts` sessions, the HLS
//! failovers, and the media cache and tuner when their settings did not change),
//! starts its background tasks, swaps the Router and stops the old tasks. Requests in
//! flight (a `.ts` body, a segment) keep the old state for as long as they run, so no
//! viewer sees a gap. An invalid file changes nothing.
//!
//! Settings bound at start (the listen address, the state directory, the connection
//! caps, LAN discovery) are kept as they are and named in `restart_required`. The
//! request-head and idle timeouts apply to connections opened after a reload.
//!
//! `Conn` also counts open connections and, once the shutdown grace is over (`stop`),
//! ends every response body still streaming so its connection closes cleanly.
//! This module must not know any route: it only swaps whole Routers.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};

use axum::body::{Body, HttpBody as _};
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use axum::Router;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tower_service::Service as TowerService;

use crate::app::AppState;
use crate::config::{Config, ConfigError};
use crate::services::registry::Monitors;

/// The current state and Router, swapped whole by `reload`.
pub struct Reloader {
    /// The current state and its background tasks; held while a reload builds the
    /// next one, so reloads run one at a time.
    live: Mutex<Live>,
    /// What each request is served with (a clone per request: cheap, `Arc`s inside).
    router: RwLock<Router>,
    /// The command line's overrides of the file (`serve --bind`), applied to each
    /// reloaded config too so they are not taken for changes.
    overrides: Box<dyn Fn(&mut Config) + Send + Sync>,
}

struct Live {
    state: AppState,
    /// The current registry's health probes: replaced (so stopped) by a reload.
    _monitors: Monitors,
}

/// What a reload applied (the JSON body of `POST /api/config/reload`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Reloaded {
    /// Always `true`.
    pub reloaded: bool,
    /// The file read again, or `<built-in>`.
    pub config: String,
    /// `true` when the server runs on the built-in default config (no file): it was
    /// applied again as it is.
    pub builtin: bool,
    /// The configured services now, in config order.
    pub services: Vec<String>,
    /// Settings whose new value differs from the running one but applies only at the
    /// next start (the running value is kept).
    pub restart_required: Vec<String>,
    /// Service settings of the file that a change made through the API or the
    /// dashboard overrides (`services.NAME.enabled`, `.priority`), where the two
    /// differ: the file's value shows after `POST /api/services/NAME/reset`.
    pub overridden: Vec<String>,
}

/// `Reloaded::overridden` of the services of `state`.
fn overridden_settings(state: &crate::AppState) -> Vec<String> {
    let store = state.registry.store();
    let mut out = Vec::new();
    for s in &state.config.services {
        let set = store.service_override(&s.name);
        if set.enabled.is_some_and(|e| e != s.enabled) {
            out.push(format!("services.{}.enabled", s.name));
        }
        if set.priority.is_some_and(|p| p != s.priority) {
            out.push(format!("services.{}.priority", s.name));
        }
    }
    out
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not load (or lists no service while some run): every problem,
    /// file:line: field: message.
    #[error("{0}")]
    Config(ConfigError),
    /// The new state could not be built (the proxy key or store could not be read).
    #[error("{0}")]
    Build(String),
}

impl Reloader {
    /// Takes over `state`: starts its background tasks (the first lineup load, then
    /// the guide refresh; the health probes). `overrides` changes each reloaded config
    /// as the command line changed the first. Must be called inside the runtime.
    pub fn start(
        state: AppState,
        overrides: impl Fn(&mut Config) + Send + Sync + 'static,
    ) -> Arc<Self> {
        let monitors = start_background(&state);
        Arc::new(Self {
            overrides: Box::new(overrides),
            router: RwLock::new(crate::http::app(state.clone())),
            live: Mutex::new(Live {
                state,
                _monitors: monitors,
            }),
        })
    }

    /// The current state.
    pub fn state(&self) -> AppState {
        self.live
            .lock()
            .expect("reload lock is never poisoned: nothing panics while held")
            .state
            .clone()
    }

    fn router(&self) -> Router {
        self.router
            .read()
            .expect("router lock is never poisoned: nothing panics while held")
            .clone()
    }

    /// Reads the config file the current state came from again (the built-in config
    /// when it came from none) and, if it loads, serves new requests with it at once.
    /// Logs a reload that took; a refusal is returned, for the caller to report once.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let mut live = self
            .live
            .lock()
            .expect("reload lock is never poisoned: nothing panics while held");
        let old = &live.state;
        let builtin = old.config.source == Config::builtin().source;
        let loaded = if builtin {
            Ok(Config::builtin())
        } else {
            Config::load_file(Path::new(&old.config.source))
        };
        let mut config = match loaded {
            Ok(c) => c,
            Err(e) => return Err(ReloadError::Config(e)),
        };
        (self.overrides)(&mut config);
        // A half-written file reads this way: taking it would empty every lineup.
        if config.services.is_empty() && !old.config.services.is_empty() {
            return Err(ReloadError::Config(crate::config::ConfigError {
                file: config.source.clone(),
                problems: vec![crate::config::Problem {
                    line: 1,
                    field: "services".into(),
                    message: format!(
                        "no [[services]] while {} are running (a half-written file?); a reload \
                         never empties the lineup: restart freesky to run without services",
                        old.config.services.len()
                    ),
                }],
                warnings: Vec::new(),
            }));
        }
        config.log_warnings();
        let restart_required = keep_fixed(&old.config, &mut config);
        let state = match crate::build_state(config, old.registry.store().clone(), Some(old)) {
            Ok(s) => s,
            Err(e) => return Err(ReloadError::Build(format!("{e:#}"))),
        };
        let monitors = start_background(&state);
        *self
            .router
            .write()
            .expect("router lock is never poisoned: nothing panics while held") =
            crate::http::app(state.clone());
        // Accounts the admin API wrote through the old state after the new one read
        // them, and before its follower (`start_background`) listened: read again.
        // Later ones reach it as changes (`Store::users_changed_here`).
        if let Err(e) = state.accounts.reload_stored() {
            tracing::warn!(error = %e, "cannot read the accounts again after the reload");
        }
        // Once the new accounts answer logins: a player reconnecting at once with the
        // old password is refused, not let in by the old state.
        state.accounts.end_new_passwords(&old.accounts);
        let reloaded = Reloaded {
            reloaded: true,
            config: state.config.source.clone(),
            builtin,
            services: state
                .config
                .services
                .iter()
                .map(|s| s.name.clone())
                .collect(),
            restart_required,
            overridden: overridden_settings(&state),
        };
        // The old probes stop here; the old state ends with the last request holding it,
        // and its guide reads now (the new state reads its own).
        let old = std::mem::replace(
            &mut *live,
            Live {
                state,
                _monitors: monitors,
            },
        );
        old.state.guides.retire();
        drop(old);
        if builtin {
            tracing::info!("config reloaded: no config file, the built-in default applied again");
        } else {
            tracing::info!(
                config = %reloaded.config,
                services = reloaded.services.len(),
                restart_required = ?reloaded.restart_required,
                "config reloaded"
            );
        }
        if !reloaded.overridden.is_empty() {
            tracing::warn!(settings = ?reloaded.overridden, "these services' settings in the file are overridden by changes made through the API or the dashboard; POST /api/services/NAME/reset gives each the file's value");
        }
        if !reloaded.restart_required.is_empty() {
            tracing::warn!(settings = ?reloaded.restart_required, "changed settings apply only after a restart");
        }
        Ok(reloaded)
    }

    /// The service serving one client connection from `remote`, counted in `open`
    /// while it lives; `stop` ends its streaming bodies.
    pub fn conn(
        self: &Arc<Self>,
        remote: SocketAddr,
        stop: CancellationToken,
        open: &OpenCount,
    ) -> Conn {
        open.0.fetch_add(1, Ordering::Relaxed);
        Conn {
            reloader: self.clone(),
            remote,
            stop,
            _open: Arc::new(Open(open.clone())),
        }
    }
}

/// The lineup loaded once in the background (so the first client does not wait for
/// every upstream), then the guides on their schedule; and the health probes.
fn start_background(state: &AppState) -> Monitors {
    // Before the first lineup: a service down at start lists what it last listed.
    state.registry.keep_lists_in(&state.config.server.state_dir);
    // Accounts made through the API that name a service renamed or removed since (the
    // config's own are checked with it): said once per start or reload.
    let known = state.registry.service_names();
    for (account, unknown) in state.accounts.unknown_services(&known) {
        tracing::warn!(
            account = %account,
            services = ?unknown,
            configured = ?known,
            "an account names services that are not configured (renamed or removed?): it sees nothing of them; rename them back, or change its `services` (PATCH /api/users/{account})"
        );
    }
    // The same for the state's service switches, priorities and channel pins.
    let (switched, pinned) = state.registry.store().unknown_services(&known);
    if !switched.is_empty() {
        tracing::warn!(
            services = ?switched,
            configured = ?known,
            "the state keeps a switch or priority for services that are not configured (renamed or removed?): it applies again only under that name"
        );
    }
    for (channel, unknown) in pinned {
        tracing::warn!(
            channel = %channel,
            services = ?unknown,
            configured = ?known,
            "a channel's pinned sources name services that are not configured (renamed or removed?): they are skipped; change its `sources` (PATCH /api/channels/{channel})"
        );
    }
    let registry = state.registry.clone();
    let guides = state.guides.clone();
    let readiness = state.readiness.clone();
    tokio::spawn(async move {
        if let Err(e) = registry.lineup().await {
            tracing::warn!(error = %e, "initial lineup load failed");
        }
        readiness.mark_started();
        // The refresh task holds the guides weakly: it ends once a reload dropped them.
        guides.spawn_refresh();
    });
    let mut monitors = state.registry.spawn_monitors(state.config.health.interval);
    monitors.push(state.registry.follow_store());
    monitors.push(follow_accounts(state));
    monitors.push(state.guides.follow_decisions());
    if !state.registry.store().is_shared() {
        monitors.push(watch_store_file(state));
    }
    if state.registry.store().is_shared() {
        monitors.push(crate::accounts::share_connections(
            &state.accounts.conns,
            state.registry.store().clone(),
            &state.config.server.state_dir,
        ));
    }
    monitors
}

/// How often the SQLite store's file is checked to be still there (`Store::ping`).
const STORE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Checks every `STORE_CHECK_EVERY` that the SQLite store's file was not deleted or
/// replaced (a removed state_dir): the store logs it at error level once, and `/ready`
/// answers 503 from then on (its own check is the same ping).
fn watch_store_file(state: &AppState) -> tokio::task::JoinHandle<()> {
    let registry = Arc::downgrade(&state.registry);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STORE_CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(registry) = registry.upgrade() else {
                return;
            };
            // The error is the store's to log (once).
            let _ = registry.store().ping().await;
        }
    })
}

/// How often open connections are checked against their accounts (expiry, lineup
/// changes); a change made through the API is enforced at once.
const ENFORCE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Viewer accounts another instance sharing the store made, changed or removed,
/// read again here (the accounts belong to the state, not to the registry); and the
/// open connections checked against their accounts every `ENFORCE_EVERY` and after
/// each such change (`Accounts::enforce`).
fn follow_accounts(state: &AppState) -> tokio::task::JoinHandle<()> {
    let mut changes = state.registry.store().subscribe();
    let accounts = Arc::downgrade(&state.accounts);
    let registry = Arc::downgrade(&state.registry);
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        let mut tick = tokio::time::interval(ENFORCE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let reread = tokio::select! {
                change = changes.recv() => match change {
                    Ok(crate::store::Change::Users) | Err(RecvError::Lagged(_)) => true,
                    Ok(_) => continue,
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => false,
            };
            let (Some(accounts), Some(registry)) = (accounts.upgrade(), registry.upgrade()) else {
                return;
            };
            if reread {
                if let Err(e) = accounts.reload_stored() {
                    tracing::warn!(error = %e, "cannot read the accounts another instance changed");
                }
            }
            accounts.enforce(registry.last_lineup().as_deref());
        }
    })
}

/// Keeps in `new` the running value of every setting bound at start; returns the
/// names of those the new file changed.
fn keep_fixed(old: &Config, new: &mut Config) -> Vec<String> {
    let mut changed = Vec::new();
    let mut keep = |name: &str, differs: bool| {
        if differs {
            changed.push(name.to_string());
        }
    };
    let (o, n) = (&old.server, &mut new.server);
    keep("server.bind", o.bind != n.bind);
    keep("server.state_dir", o.state_dir != n.state_dir);
    keep("server.state", o.state != n.state);
    keep(
        "server.max_connections",
        o.max_connections != n.max_connections,
    );
    keep(
        "server.max_connections_per_client",
        o.max_connections_per_client != n.max_connections_per_client,
    );
    n.bind.clone_from(&o.bind);
    n.state_dir.clone_from(&o.state_dir);
    n.max_connections = o.max_connections;
    n.max_connections_per_client = o.max_connections_per_client;
    // LAN discovery binds its sockets and builds its advert once, at start.
    let (o, n) = (&old.hdhomerun, &mut new.hdhomerun);
    keep("hdhomerun.discovery", o.discovery != n.discovery);
    keep(
        "hdhomerun.discovery_port",
        o.discovery_port != n.discovery_port,
    );
    keep("hdhomerun.ssdp_port", o.ssdp_port != n.ssdp_port);
    n.discovery = o.discovery;
    n.discovery_port = o.discovery_port;
    n.ssdp_port = o.ssdp_port;
    changed
}

/// How many client connections are open.
#[derive(Clone, Default)]
pub struct OpenCount(Arc<AtomicUsize>);

impl OpenCount {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counts one connection while any clone of its `Conn` lives.
struct Open(OpenCount);

impl Drop for Open {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one connection's requests, each with the Router current when it arrives.
#[derive(Clone)]
pub struct Conn {
    reloader: Arc<Reloader>,
    /// Given to handlers as `ConnectInfo<SocketAddr>` (the admin check reads it).
    remote: SocketAddr,
    stop: CancellationToken,
    _open: Arc<Open>,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Conn {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let mut req: Request = req.map(Body::new);
        collapse_leading_slashes(&mut req);
        req.extensions_mut().insert(ConnectInfo(self.remote));
        // For `POST /api/config/reload`.
        req.extensions_mut().insert(self.reloader.clone());
        let mut router = self.reloader.router();
        let stop = self.stop.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| TowerService::<Request>::poll_ready(&mut router, cx)).await?;
            let response = TowerService::call(&mut router, req).await?;
            Ok(end_on_stop(response, stop))
        })
    }
}

/// `//player_api.php` read as `/player_api.php`: what a player asks of a server URL
/// typed with a trailing slash (`http://host:8080/`), as the panels it is made for
/// answer it (behind nginx, which merges slashes). Only the leading ones: further on,
/// a path is taken as it is.
fn collapse_leading_slashes(req: &mut Request) {
    let uri = req.uri();
    if !uri.path().starts_with("//") {
        return;
    }
    let path = format!("/{}", uri.path().trim_start_matches('/'));
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    if let Ok(pq) = axum::http::uri::PathAndQuery::try_from(path_and_query) {
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// A body of unknown length (a `.ts` stream, a proxied segment) ends when `stop` is
/// cancelled: the client sees a clean end of the chunked body, and the connection,
/// already told to close, closes. Bodies of known length are left alone.
fn end_on_stop(response: Response, stop: CancellationToken) -> Response {
    if response.body().size_hint().exact().is_some() {
        return response;
    }
    response.map(|inner| {
        Body::new(EndOnStop {
            inner,
            stop: Box::pin(stop.cancelled_owned()),
        })
    })
}

/// `inner`, ended when `stop` resolves. A thin `http_body::Body` wrapper: frames pass
/// through as they are (`into_data_stream().take_until(..)` and `Body::from_stream`
/// re-framed every chunk of every proxied segment; BENCHMARKS.md, "Graceful stop").
struct EndOnStop {
    inner: Body,
    stop: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl axum::body::HttpBody for EndOnStop {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
