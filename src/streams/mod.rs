//! The stream engine: opening a channel's stream, serving its sealed links, HLS
//! failover and the shared `.ts` sessions. No HTTP here: the handlers in
//! `http::stream` parse requests and build responses around it, and `crate::error`
//! turns a `StreamError` into a status.

use crate::error::UpstreamError;
use crate::services::registry::RegistryError;

/// What opening or serving a stream can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    /// Finding or opening the channel's sources failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The one upstream asked failed (a link is served from its own source only).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A `.ts` session's task ended before it had a source.
    #[error("the stream session ended before it started")]
    SessionGone,
}
