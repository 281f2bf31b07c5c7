//! freesky's integration tests, one module per area, linked into one test binary
//! (`cargo test --test it`; one area: `cargo test --test it hls_proxy::`).
//!
//! Each module talks to freesky through its surface only: a `common::TestApp` on
//! 127.0.0.1:0 and `common::FakeUpstream`s, or the real binary (`common::Process`).
//! Tests of all modules run at once in this process, so a test owns what it creates
//! (its temp dir, ports, channel names) and never asserts on process-wide state: tests
//! that read the process's peak memory or its process-wide metrics live in the
//! `process_wide` binary instead.

#[path = "../common/mod.rs"]
mod common;
#[path = "../fuzz_support/mod.rs"]
mod fuzz_support;

mod acestream;
mod admin_safety;
mod api;
mod api_ops;
mod catchup;
mod cli;
mod crash_state;
mod dashboard;
mod dashboard_page;
mod dashboard_paging;
mod discovery;
mod docs;
mod e2e_ffmpeg;
mod events;
mod file_permissions;
mod fuzz_random;
mod fuzz_replay;
mod guide;
mod guide_fixes;
mod guide_match;
mod hdhr;
mod health;
mod hls_proxy;
mod kinds_invariant;
mod lifecycle;
mod limits;
mod lineup;
mod logos;
mod mapping;
mod media;
mod openapi;
mod players;
mod politeness;
mod postgres;
mod quick_start;
mod ready;
mod scrape_recipe;
mod snapshots;
mod ssrf;
mod state_dir;
mod token_refresh;
mod ts_stream;
mod viewer_passwords;
mod vod;
mod xtream;
mod xtream_out;
