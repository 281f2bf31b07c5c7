//! The configuration schema: the serde structs of every section and service, their
//! defaults, and the value types (durations, rate limits) the file spells as strings.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::secrets::{Auth, AuthKeys, Secret};
use crate::services::KindConfig;

/// The config used when no file is given and `config/freesky.toml` does not exist:
/// the offline demo channel only.
pub const BUILTIN: &str = crate::services::BUILTIN_CONFIG;

/// The default config path, relative to the working directory.
pub const DEFAULT_PATH: &str = "config/freesky.toml";

#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from (`<built-in>` for the default), for messages.
    pub source: String,
    pub server: ServerConfig,
    pub cache: CacheConfig,
    pub streams: StreamsConfig,
    pub health: HealthConfig,
    pub guide: GuideConfig,
    pub hdhomerun: HdhrConfig,
    pub logos: LogosConfig,
    pub services: Vec<ServiceConfig>,
    /// Viewer accounts (`[[users]]`), their passwords read (inline, `${VAR}` or
    /// `password_file`) but not yet hashed: `accounts` hashes them at start.
    pub users: Vec<UserConfig>,
    /// Extra XMLTV guides that belong to no service (`[[guides]]`): their channels
    /// are matched to lineup channels by name.
    pub guides: Vec<ExtraGuideConfig>,
    /// What is valid but will not work as it is now (a file that does not exist):
    /// `check` prints these, `serve` logs them.
    pub warnings: Vec<super::problem::Problem>,
}

/// One `[[guides]]` entry: an XMLTV guide by URL or file, matched by name.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExtraGuideConfig {
    /// Shown in the status and the match reasons; default `guide-N` (1-based).
    #[serde(default)]
    pub name: String,
    /// An http(s) URL of the guide (plain or gzipped).
    #[serde(default)]
    pub url: Option<String>,
    /// A local file of the guide (plain or gzipped).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Bound on the response head and on each gap between body chunks.
    #[serde(default = "default_guide_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Decompressed bytes read at most.
    #[serde(default = "default_guide_max_bytes")]
    pub max_bytes: u64,
    /// The country this guide is made for (a two-letter code, "uk"): guide matching
    /// prefers its channels for lineup channels of that country, and lets a short or
    /// plain name ("ITV", "Canal 6") match them.
    #[serde(default)]
    pub country: Option<String>,
}

fn default_guide_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_guide_max_bytes() -> u64 {
    512 << 20
}

/// One `[[users]]` entry: a viewer account players log in with (Xtream Codes logins,
/// and the M3U, guide, stream and tuner routes when `server.require_account` is set).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// The password as written; with `password_file` the loader reads the file into it.
    #[serde(default)]
    pub password: Secret,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Streams this account may hold open at once; 0 = unlimited.
    #[serde(default = "one")]
    pub max_connections: u32,
    /// RFC 3339 date (`2027-12-31`, the end of that day UTC) or date-time; after it the
    /// account is refused. Written as a string or as a TOML date (unquoted).
    #[serde(default, deserialize_with = "date_text")]
    pub expires: Option<String>,
    /// Only channels of these lineup groups (case-insensitive); empty: every group.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Only channels with a source from these services; empty: every service.
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn one() -> u32 {
    1
}

/// A date or date-time written as a string (`"2027-12-31"`) or as a TOML date
/// (`2027-12-31`, unquoted), as its text.
fn date_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) => Ok(Some(s)),
        toml::Value::Datetime(t) => Ok(Some(t.to_string())),
        other => Err(serde::de::Error::custom(format!(
            "expected a date such as 2027-12-31 (or \"2027-12-31T18:00:00Z\"), found {}",
            other.type_str()
        ))),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub bind: String,
    /// Base of every URL freesky hands out; `None` derives it from the request's Host.
    pub public_url: Option<String>,
    /// Bearer token for admin calls; empty means admin calls from loopback only.
    pub admin_token: Secret,
    /// The admin token read from a file instead (a container secret); read at load,
    /// into `admin_token`.
    pub admin_token_file: Option<PathBuf>,
    /// Runtime state (SQLite store, proxy key). Relative paths are relative to the
    /// working directory.
    pub state_dir: PathBuf,
    /// How long a proxy URL handed to a client stays valid.
    #[serde(deserialize_with = "de_duration")]
    pub link_ttl: Duration,
    /// Largest upstream playlist, page or JSON body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest request target (path and query) accepted from a client, in bytes; longer: 414.
    pub max_uri_bytes: usize,
    /// Largest total of a request's header names and values (+4 bytes a line), in bytes;
    /// larger: 431.
    pub max_header_bytes: usize,
    /// Open client connections at most; beyond it new connections wait in the
    /// listen backlog until one closes.
    pub max_connections: usize,
    /// On SIGTERM/SIGINT, how long open connections (a `.ts` viewer never ends by
    /// itself) may keep running after new ones are refused; then their bodies end.
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_grace: Duration,
    /// How long a client has to send a complete request head, counted from the moment
    /// its connection opens (or from the first byte of a later request on a kept-alive
    /// one); then the connection is closed. Silent connections must not hold slots.
    #[serde(deserialize_with = "de_duration")]
    pub header_timeout: Duration,
    /// How long a kept-alive connection with no request in flight waits for the next
    /// request to begin before it is closed. A response still streaming is never idle.
    #[serde(deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// Open connections from one client address at most (0: no cap), so one client
    /// cannot take every `max_connections` slot; beyond it a new connection gets a
    /// 429 and is closed.
    pub max_connections_per_client: usize,
    /// Host names (`Host` header) freesky answers to besides its own names (IP
    /// literals, `localhost`, this machine's name, `public_url`'s host): `tv.example`,
    /// `*.example` for every subdomain, `*` for any name. Other names are refused, so
    /// a web page cannot reach freesky through a rebound DNS name.
    pub allowed_hosts: Vec<String>,
    /// Reverse proxies and balancers (addresses or CIDR blocks) whose
    /// `X-Forwarded-For` names the client: a request from one of them counts, logs in
    /// and is limited as the address it forwards for. Empty: the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
    /// Whether `/playlist.m3u`, `/epg.xml`, `/api/stream/...` and the tuner need a
    /// viewer account (`?username=&password=` or HTTP basic auth); off keeps them open on
    /// the LAN.
    pub require_account: bool,
    /// Where the runtime state lives: `"sqlite"` (`state_dir/freesky.db`, one
    /// instance) or a `postgres://` URL shared by several instances (kept out of Debug
    /// output: it may hold a password).
    pub state: Secret,
    /// The key that seals proxy links, read from this file (32 bytes, or 64 hex
    /// digits); instances sharing it accept each other's links. `None`:
    /// `state_dir/proxy.key`, made on first start.
    pub proxy_key_file: Option<PathBuf>,
    /// The key used before the current one (same format): links it sealed are still
    /// accepted until they expire, so a key rotation breaks no player.
    pub proxy_key_previous_file: Option<PathBuf>,
    /// On SIGTERM/SIGINT, how long the instance keeps accepting connections while
    /// `/ready` answers 503 (and new streams are refused), so a load balancer's health
    /// check takes it out before its listener closes. 0: close at once.
    #[serde(deserialize_with = "de_duration")]
    pub drain_delay: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "0.0.0.0:8005".into(),
            public_url: None,
            admin_token: Secret::default(),
            admin_token_file: None,
            state_dir: PathBuf::from("data"),
            link_ttl: Duration::from_secs(24 * 3600),
            max_body_bytes: 16 << 20,
            max_uri_bytes: 8 << 10,
            max_header_bytes: 16 << 10,
            max_connections: 4096,
            shutdown_grace: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            max_connections_per_client: 256,
            allowed_hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            require_account: false,
            state: Secret("sqlite".into()),
            proxy_key_file: None,
            proxy_key_previous_file: None,
            drain_delay: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    #[serde(deserialize_with = "de_duration")]
    pub resolved_ttl: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub playlist_ttl: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub segment_ttl: Duration,
    pub segment_cache_mb: u64,
    #[serde(deserialize_with = "de_duration")]
    pub channels_ttl: Duration,
    /// Bytes (in MiB) of playlist bodies kept at once; a few huge playlists must not
    /// hold the memory of thousands of small ones.
    pub playlist_cache_mb: u64,
    /// The most URIs (URI lines and `URI=` attributes) an upstream playlist may list:
    /// each becomes a sealed link many times its size, so a longer playlist is refused.
    pub max_playlist_uris: usize,
    /// The longest one segment, key or init map fetch may take, head to last byte;
    /// an upstream that never ends a segment is cut off after it.
    #[serde(deserialize_with = "de_duration")]
    pub segment_timeout: Duration,
    /// How old the movie and series catalogue may get before it is loaded again (in
    /// the background; answers meanwhile come from the one loaded).
    #[serde(deserialize_with = "de_duration")]
    pub vod_ttl: Duration,
    /// How long a title's details (plot, a series' episodes) are kept once asked for.
    #[serde(deserialize_with = "de_duration")]
    pub vod_info_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            resolved_ttl: Duration::from_secs(300),
            playlist_ttl: Duration::from_secs(2),
            segment_ttl: Duration::from_secs(120),
            segment_cache_mb: 256,
            channels_ttl: Duration::from_secs(900),
            playlist_cache_mb: 64,
            max_playlist_uris: 20_000,
            segment_timeout: Duration::from_secs(60),
            vod_ttl: Duration::from_secs(6 * 3600),
            vod_info_ttl: Duration::from_secs(3600),
        }
    }
}

/// How shared streams (`.ts` sessions) follow a channel and fail over.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    /// Consecutive failures of the current source (playlist reloads or segments)
    /// before the stream moves to the next source.
    pub failover_after: u32,
    /// How long a shared stream keeps its upstream going with no viewer left.
    #[serde(deserialize_with = "de_duration")]
    pub idle_stop: Duration,
    /// How many segments before the live edge a new stream starts with.
    pub live_edge_segments: usize,
    /// How many healthy sources (circuit closed) a stream is opened from at once; the
    /// first to answer wins and the others are dropped. 1: one after another.
    pub race: usize,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            failover_after: 3,
            idle_stop: Duration::from_secs(5),
            live_edge_segments: 3,
            race: 1,
        }
    }
}

/// How services are judged (`health`): the circuit breaker and the background probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How often each enabled service is probed in the background; 0 turns probes off.
    #[serde(deserialize_with = "de_duration")]
    pub interval: Duration,
    /// Consecutive failures that open a service's circuit (fallback then skips it).
    pub open_after: u32,
    /// How long a circuit first stays open; doubled after each failed trial.
    #[serde(deserialize_with = "de_duration")]
    pub backoff: Duration,
    /// The longest a circuit stays open before its next trial.
    #[serde(deserialize_with = "de_duration")]
    pub backoff_max: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        let p = crate::health::Policy::default();
        Self {
            interval: Duration::from_secs(60),
            open_after: p.open_after,
            backoff: p.backoff,
            backoff_max: p.backoff_max,
        }
    }
}

impl HealthConfig {
    pub fn policy(&self) -> crate::health::Policy {
        crate::health::Policy {
            open_after: self.open_after,
            backoff: self.backoff,
            backoff_max: self.backoff_max,
        }
    }
}

/// The merged XMLTV guide (`/epg.xml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuideConfig {
    /// How often every service's guide is fetched again.
    #[serde(deserialize_with = "de_duration")]
    pub refresh: Duration,
    /// Programmes kept: from a day back to this many days ahead.
    pub days: u32,
    /// Channels without guide data get blocks titled with the channel name (Plex
    /// hides channels that have no guide).
    pub placeholders: bool,
    #[serde(deserialize_with = "de_duration")]
    pub placeholder_length: Duration,
    /// "Title - Sub-title" in the title, for players that show titles only (Plex).
    pub fold_subtitle: bool,
    /// One guide's read (download and parse) is cut after this long; the last good
    /// guide stays. Other reads of guides wait for it.
    #[serde(deserialize_with = "de_duration")]
    pub read_timeout: Duration,
}

impl Default for GuideConfig {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(6 * 3600),
            days: 7,
            placeholders: false,
            placeholder_length: Duration::from_secs(3600),
            fold_subtitle: false,
            read_timeout: Duration::from_secs(300),
        }
    }
}

/// Where the channel logos and guide icons that outputs hand out point (`[logos]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogosConfig {
    /// `direct`: the upstream's URLs as they are; `proxy`: freesky's `/logos/` links,
    /// fetched on each request; `cache`: the same, kept on disk (players without
    /// internet access, such as Plex on a closed LAN, still get them).
    pub mode: LogoMode,
    /// Largest image accepted from an upstream, in bytes; a larger one is refused.
    pub max_bytes: usize,
    /// Disk space of the cache (`state_dir/logos/`), in MiB; the least recently used
    /// images go first beyond it.
    pub cache_max_mb: u64,
}

impl Default for LogosConfig {
    fn default() -> Self {
        Self {
            mode: LogoMode::Direct,
            max_bytes: 2 << 20,
            cache_max_mb: 200,
        }
    }
}

/// `[logos] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogoMode {
    Direct,
    Proxy,
    Cache,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HdhrConfig {
    pub enabled: bool,
    pub friendly_name: String,
    pub tuner_count: u32,
    /// Largest lineup one virtual tuner (`/tuners/{n}/...`) carries; 0 serves no
    /// virtual tuners. Plex struggles above about 420-480 channels per tuner.
    pub max_channels: u32,
    /// Answer LAN discovery (SiliconDust's UDP discover for Jellyfin, SSDP for Plex) so
    /// media servers find the tuner by themselves. Off by default: it binds
    /// well-known UDP ports on every interface (see `discovery`).
    pub discovery: bool,
    /// UDP port of SiliconDust's discover protocol (65001, what clients broadcast to);
    /// 0 turns that protocol off. Another port only for tests.
    pub discovery_port: u16,
    /// UDP port of SSDP (1900); 0 turns SSDP off. Another port only for tests.
    pub ssdp_port: u16,
    /// With `server.require_account`: the viewer account whose channels and connection
    /// limit the tuner serves; unset then turns the tuner off.
    pub account: Option<String>,
}

impl Default for HdhrConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            friendly_name: "freesky".into(),
            tuner_count: 4,
            max_channels: 0,
            discovery: false,
            discovery_port: 65001,
            ssdp_port: 1900,
            account: None,
        }
    }
}

/// One `[[services]]` entry.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub name: String,
    /// Enabled at start, unless the store remembers a runtime change.
    pub enabled: bool,
    /// Lower tries first; ties keep config order.
    pub priority: i64,
    /// Bound on each upstream request of this service until its response head (and on
    /// one resolve attempt; a body read whole shares it).
    pub timeout: Duration,
    /// Bound on opening the TCP (and TLS) connection: a dead host fails fast even when
    /// `timeout` is long for a slow API. Default min(`timeout`, 10 s).
    pub connect_timeout: Duration,
    /// Bound on each gap between body chunks (a trickling or hung upstream). Default
    /// `timeout`.
    pub idle_timeout: Duration,
    pub headers: BTreeMap<String, String>,
    /// A token bucket: a burst of `requests`, then `requests` per `per`.
    pub rate_limit: Option<RateLimit>,
    /// Upstream requests of this service in flight at once (head to end of body);
    /// 0: unlimited.
    pub max_concurrent: usize,
    pub description: String,
    pub auth: Option<Auth>,
    /// URLs that upstream data supplies (playlist lines, redirects, stream URLs) may
    /// reach loopback, private, link-local and CGNAT addresses on any host, not only on
    /// the hosts the service's config names (a LAN engine or panel). Default false.
    pub allow_private: bool,
    /// The country this service's guide is made for (two letters, lowercase), as
    /// `[[guides]] country` says it of an extra guide.
    pub guide_country: Option<String>,
    pub kind: KindConfig,
}

/// The keys every kind shares; the rest of the table belongs to the kind.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CommonKeys {
    pub(super) name: String,
    #[allow(dead_code)] // read before deserializing, kept here so it is a known key
    pub(super) kind: String,
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    #[serde(default = "default_priority")]
    pub(super) priority: i64,
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub(super) timeout: Duration,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub(super) connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub(super) idle_timeout: Option<Duration>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) rate_limit: Option<RateLimit>,
    #[serde(default = "default_max_concurrent")]
    pub(super) max_concurrent: usize,
    #[serde(default)]
    pub(super) description: String,
    #[serde(default)]
    pub(super) auth: Option<AuthKeys>,
    #[serde(default)]
    pub(super) allow_private: bool,
    #[serde(default)]
    pub(super) guide_country: Option<String>,
}

pub(super) const COMMON_KEYS: &[&str] = &[
    "name",
    "kind",
    "enabled",
    "priority",
    "timeout",
    "connect_timeout",
    "idle_timeout",
    "headers",
    "rate_limit",
    "max_concurrent",
    "description",
    "auth",
    "allow_private",
    "guide_country",
];

fn yes() -> bool {
    true
}
fn default_priority() -> i64 {
    100
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_concurrent() -> usize {
    16
}

/// `"10/s"`, `"100/m"`: upstream requests per period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_rate_limit(&s).map_err(serde::de::Error::custom)
    }
}

fn parse_rate_limit(s: &str) -> Result<RateLimit, String> {
    let bad = || format!("`{s}` is not a rate like \"10/s\" or \"100/m\"");
    let (n, unit) = s.split_once('/').ok_or_else(bad)?;
    let requests: u32 = n.trim().parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    if requests == 0 {
        return Err(format!("`{s}`: the rate must be at least 1"));
    }
    Ok(RateLimit { requests, per })
}

/// Like `de_duration`, for an optional key (`#[serde(default)]` gives `None`).
pub fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

/// Deserializes `"800ms"`, `"10s"`, `"5m"`, `"1h 30m"`; a bare number is refused
/// with the quoted form to write instead (`5` → `"5s"`).
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration like \"10s\" or \"5m\"")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<String, E> {
            Ok(s.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<String, E> {
            Err(E::custom(format!(
                "`{n}` is not a duration: give its unit, in quotes, like \"{n}s\" or \"{n}m\""
            )))
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<String, E> {
            self.visit_i64(n.min(i64::MAX as u64) as i64)
        }
        fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<String, E> {
            Err(E::custom(format!(
                "`{n}` is not a duration: give its unit, in quotes, like \"{n}s\""
            )))
        }
    }
    let s = d.deserialize_any(Text)?;
    let duration = humantime::parse_duration(s.trim()).map_err(|e| {
        // The parser's positions ("expected number at 0") say little to a reader.
        let why = match e {
            humantime::DurationError::UnknownUnit { unit, .. } => {
                format!(" (`{unit}` is no unit: ms, s, m, h, d...)")
            }
            humantime::DurationError::NumberOverflow => " (too long)".to_string(),
            _ => String::new(),
        };
        serde::de::Error::custom(format!(
            "`{s}` is not a duration like \"10s\" or \"5m\"{why}"
        ))
    })?;
    // Longer ones overflow clocks and caches (moka refuses TTLs over 1000 years); no
    // setting needs more.
    if duration > MAX_DURATION {
        return Err(serde::de::Error::custom(format!(
            "`{s}` is longer than the longest duration taken, 10 years (\"10y\")"
        )));
    }
    Ok(duration)
}

/// The longest duration any key takes.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600 + 10 * 6 * 3600);
