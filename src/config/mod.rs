//! The configuration file: TOML with humane durations, `${VAR}` / `${VAR:-default}`
//! interpolation in every string, unknown keys rejected, and every problem reported at
//! once as `file:line: field: message`.
//!
//! Loading is two-phase so that one bad service does not hide the problems of the
//! others: the file is parsed into a spanned tree, strings are interpolated in place,
//! then each section and each service is deserialized on its own. Kind-specific keys
//! are handed to `services::KindConfig`, the only place that knows the kinds.
//! serde stops at the first unknown key (or bad value) of a table, so each key it
//! stops at is reported, taken out, and the rest deserialized again (`every_key`):
//! a file with five typos gets five lines, each with the keys that table accepts.
//! This module reads the file; it never writes it (runtime changes go to `store`).

mod interpolate;
pub(crate) mod loader;
mod problem;
mod schema;
mod secrets;

pub use interpolate::interpolate;
pub use loader::KindError;
pub use problem::{ConfigError, Problem};
pub use schema::{
    de_duration, de_opt_duration, CacheConfig, Config, ExtraGuideConfig, GuideConfig, HdhrConfig,
    HealthConfig, LogoMode, LogosConfig, RateLimit, ServerConfig, ServiceConfig, StreamsConfig,
    UserConfig, BUILTIN, DEFAULT_PATH,
};
pub use secrets::{Auth, Secret};
