//! Tests that read what the whole test process did: its peak resident memory (VmHWM)
//! while a big guide, endless segments or misbehaving upstreams are served, and the
//! process-wide Prometheus metrics. Their own binary, so the many tests of `it` running
//! at the same time do not blur those figures, and within it each test holds
//! `common::alone()` for its whole run (and resets VmHWM before it measures).
//! `cargo test --test process_wide`; one area: `cargo test --test process_wide metrics::`.

#[path = "../common/mod.rs"]
mod common;

mod channel_aliases;
mod fault_drills;
mod guide_memory;
mod lineup_memory;
mod metrics;
mod segment_pump;

/// The allocator the `freesky` binary ships with, so memory figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
