//! The stream engine: opening a channel's stream (`open_playlist`), serving the
//! sealed links of a rewritten playlist (`open_link`, `serve_link`, with HLS failover
//! and token refresh), the channel test (`test_channel`) and the shared `.ts` sessions
//! (`session`). Everything works on one context, [`Engine`]. No HTTP here: the
//! handlers in `http::stream` parse requests and build responses around it, and
//! `crate::error` alone turns a [`StreamError`] into a status.

use std::sync::Arc;
use std::time::Duration;

use crate::app::AppState;
use crate::cache::MediaCache;
use crate::error::UpstreamError;
use crate::proxy::Signer;
use crate::services::registry::{Registry, RegistryError};

pub mod failover;
mod link;
pub mod media;
mod open;
pub mod packaged;
mod segment;
pub mod session;
mod test;
#[cfg(test)]
mod tests;

pub use failover::Failovers;
pub use link::{Link, Served};
pub use open::Opened;
pub use test::{ChannelTest, RecentTests};

/// What opening or serving a stream can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    /// Finding or opening the channel's sources failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The one upstream asked failed (a link is served from its own source only).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A proxy link that does not open: tampered, mixed, expired or malformed. No
    /// upstream is asked.
    #[error("{0}")]
    BadLink(String),
    /// The service a link was sealed for is gone from the config or disabled.
    #[error("service `{0}` is unknown or disabled")]
    ServiceUnavailable(String),
    /// A `.ts` session's task ended before it had a source.
    #[error("the stream session ended before it started")]
    SessionGone,
}

/// The settings the engine reads, copied out of the config once per request.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Largest playlist body accepted (`server.max_body_bytes`).
    pub max_body_bytes: usize,
    /// Failures of a source before a stream moves on (`streams.failover_after`, at least 1).
    pub failover_after: u32,
    /// Where a stream starts (or a switched link resumes) in a live playlist:
    /// this many segments before its end (`streams.live_edge_segments`).
    pub live_edge_segments: usize,
    /// How long a `.ts` session outlives its last viewer (`streams.idle_stop`).
    pub idle_stop: Duration,
}

/// The stream engine's context: the shared handles it works with. Cheap to clone
/// (a `.ts` session's task keeps one).
#[derive(Clone)]
pub struct Engine {
    /// Sources of a channel, opened with fallback.
    pub registry: Arc<Registry>,
    /// Playlists and segments, one upstream fetch per key.
    pub media: Arc<MediaCache>,
    /// Seals and opens the `/proxy/` links.
    pub signer: Arc<Signer>,
    /// Which HLS links failed over or were refreshed, and their strikes.
    pub failovers: Arc<Failovers>,
    pub settings: Settings,
}

impl Engine {
    /// The engine over `state`'s handles and settings.
    pub fn of(state: &AppState) -> Self {
        let streams = &state.config.streams;
        Self {
            registry: state.registry.clone(),
            media: state.media.clone(),
            signer: state.signer.clone(),
            failovers: state.failovers.clone(),
            settings: Settings {
                max_body_bytes: state.config.server.max_body_bytes,
                failover_after: streams.failover_after.max(1),
                live_edge_segments: streams.live_edge_segments,
                idle_stop: streams.idle_stop,
            },
        }
    }
}
