//! `AppState`: the shared handles every part of the server reads (config, registry,
//! guides, caches, sessions, failovers, link sealer, tuner). A plain struct of `Arc`s,
//! cheap to clone; built by `crate::state` / `crate::build_state`. It sits below
//! `http`, so the listener limits, discovery, metrics and reload can take it without
//! importing the HTTP layer.

use std::sync::Arc;

use crate::cache::MediaCache;
use crate::config::Config;
use crate::guide::Guides;
use crate::proxy::Signer;
use crate::services::registry::Registry;
use crate::streams::failover::Failovers;
use crate::streams::session::Sessions;
use crate::tuner::Tuner;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    pub guides: Arc<Guides>,
    pub signer: Arc<Signer>,
    pub media: Arc<MediaCache>,
    pub sessions: Arc<Sessions>,
    pub failovers: Arc<Failovers>,
    pub tuner: Arc<Tuner>,
    /// Viewer accounts: logins, visibility, live connections (shared across reloads).
    pub accounts: Arc<crate::accounts::Accounts>,
    /// Where outputs point logos and guide icons, and the `/logos/` cache.
    pub logos: Arc<crate::logos::Logos>,
    /// The movie and series catalogue (kept across reloads until it refreshes).
    pub vod: Arc<crate::vod::Library>,
    /// Whether a balancer should send new viewers here (`GET /ready`; the process's,
    /// shared across reloads).
    pub readiness: Arc<crate::ready::Readiness>,
    /// Channel tests of the last seconds (`POST /api/channels/{id}/test`), shared by
    /// the tests of one channel asked meanwhile.
    pub channel_tests: Arc<crate::streams::RecentTests>,
}
