//! Whether this instance should be sent new viewers (`GET /ready`, for a load
//! balancer's health check), as opposed to whether it runs at all (`GET /health`).
//!
//! Not ready while starting (until the first lineup load has been tried, so a
//! balancer does not send players to an instance with no channels yet), while
//! draining (a stop signal arrived: requests that would open a new stream are refused
//! so the balancer sends them elsewhere, while streams already playing go on for the
//! shutdown grace), and while the state store does not answer (or its SQLite file was
//! deleted or replaced under the running process).

use std::sync::atomic::{AtomicBool, Ordering};

/// Shared by every state a config reload builds (it belongs to the process).
#[derive(Debug, Default)]
pub struct Readiness {
    started: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    /// The first lineup load has been tried (whatever it gave).
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// A stop signal arrived: not ready from now on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Whether a request path opens a new stream (a channel's playlist or `.ts`, the
/// tuner, the Xtream live path), which a draining instance refuses. Proxy links of
/// players already playing are not new streams: they keep being served.
pub fn opens_stream(path: &str) -> bool {
    path.starts_with("/api/stream/") || path.starts_with("/live/") || path.starts_with("/auto/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_channel_routes_open_streams() {
        for p in ["/api/stream/news.m3u8", "/live/u/p/1.ts", "/auto/v5"] {
            assert!(opens_stream(p), "{p}");
        }
        for p in [
            "/proxy/t/i/seg.ts",
            "/ready",
            "/playlist.m3u",
            "/api/streams",
        ] {
            assert!(!opens_stream(p), "{p}");
        }
    }
}
