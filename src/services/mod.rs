//! Upstream services: the `Service` trait, the kinds of service and `build()`, which
//! turns a `[[services]]` entry into a running service.
//!
//! This module and its kind files are the only code that knows which kinds exist:
//! the `kinds!` declaration below is the one list of them. It generates the kind
//! modules, the `KindConfig` enum, the names accepted in `kind = "..."` (and listed
//! in the config check's messages), the parsing of a kind's own keys, the kind name
//! the status shows and the dispatch to each kind's `Kind` implementation. Adding a
//! kind means: its own file (a config struct implementing `Kind`, and the service),
//! one line in `kinds!`, an example in config/freesky.toml and its tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use regex::Regex;
use serde::{Deserialize, Deserializer};
use toml::de::ValueDeserializer;
use url::Url;

use crate::config::{KindError, ServiceConfig};
use crate::error::UpstreamError;
use crate::model::{Channel, Headers, ResolvedStream};
use crate::upstream::{Fetched, Http, ServiceHttp};

pub mod registry;

/// Declares every kind: `module::ConfigStruct => Variant = "name",`. The module is the
/// kind's file; its config struct is what `kind = "name"` entries deserialize into
/// and implements [`Kind`].
macro_rules! kinds {
    ($($module:ident :: $config:ident => $variant:ident = $name:literal,)+) => {
        $(pub mod $module;)+

        /// The kind-specific part of a `[[services]]` entry.
        #[derive(Debug, Clone)]
        pub enum KindConfig {
            $($variant($module::$config),)+
        }

        impl KindConfig {
            /// The kinds this build knows, as written in `kind = "..."`.
            pub const KINDS: &'static [&'static str] = &[$($name),+];

            /// Deserializes the kind's own keys (everything but the shared ones).
            pub fn parse(kind: &str, keys: ValueDeserializer<'_>) -> Result<Self, KindError> {
                match kind {
                    $($name => $module::$config::deserialize(keys)
                        .map(Self::$variant)
                        .map_err(KindError::Toml),)+
                    _ => Err(KindError::Unknown),
                }
            }

            /// The name written in `kind = "..."` (and shown in the service's status).
            pub fn kind_name(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $name,)+
                }
            }

            /// The kind's own behaviour, for the methods below.
            fn kind(&self) -> &dyn Kind {
                match self {
                    $(Self::$variant(c) => c,)+
                }
            }
        }
    };
}

kinds! {
    demo::DemoConfig => Demo = "demo",
    m3u::M3uConfig => M3u = "m3u",
    json_api::JsonApiConfig => JsonApi = "json_api",
    scrape::ScrapeConfig => Scrape = "scrape",
    xtream::XtreamConfig => Xtream = "xtream",
    acestream::AceStreamConfig => AceStream = "acestream",
}

/// The config used when no file is given: the built-in demo service only.
pub const BUILTIN_CONFIG: &str = r#"
[[services]]
name = "Demo"
kind = "demo"
description = "Built-in offline test channel"
"#;

/// What each kind's config struct does; `kinds!` dispatches `KindConfig`'s methods here.
pub trait Kind {
    /// Checks serde cannot express: `(field, message)` pairs, field relative to the
    /// service. Whatever `build` would refuse must be found here, so that the config
    /// check reports it at its line instead of the server failing at start.
    fn validate(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// The absolute http(s) URLs the config names (see `KindConfig::configured_urls`).
    fn configured_urls(&self) -> Vec<Url> {
        Vec::new()
    }

    /// The local files the config names, by field (a list or guide read from disk).
    fn configured_files(&self) -> Vec<(&'static str, &std::path::Path)> {
        Vec::new()
    }

    /// What is valid but will not work as configured: `(field, message)` pairs, field
    /// relative to the service (read at every load, so bounded and quick).
    /// `allow_private` is the service's.
    fn warnings(&self, allow_private: bool) -> Vec<(String, String)> {
        let _ = allow_private;
        Vec::new()
    }

    /// Why `[services.auth]` cannot be used with this config, or `None` when it can.
    fn auth_without_origin(&self) -> Option<String> {
        None
    }

    /// The running service of this config (`service` holds the shared keys).
    fn build(
        &self,
        service: &ServiceConfig,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Service>, BuildError>;
}

/// Why a kind could not build its service: a config value `validate` should have
/// refused. Reported like a config problem: `field` is relative to the service.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct BuildError {
    pub field: String,
    pub message: String,
}

impl BuildError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<BuildError> for (String, String) {
    fn from(e: BuildError) -> Self {
        (e.field, e.message)
    }
}

/// One upstream streaming service: lists its channels, resolves one to a stream,
/// and optionally has a guide.
#[async_trait]
pub trait Service: Send + Sync {
    /// Every channel the service offers now. Bad entries are skipped (and logged);
    /// an error means the listing as a whole could not be had.
    async fn channels(&self) -> Result<Vec<Channel>, UpstreamError>;

    /// Where `channel` (as listed by `channels`) plays now, with the headers every
    /// request for it must carry and how long the answer stays good.
    async fn resolve(&self, channel: &Channel) -> Result<ResolvedStream, UpstreamError>;

    /// The service's HTTP identity (headers, credentials, timeout).
    fn http(&self) -> &ServiceHttp;

    /// Where the service's XMLTV guide is, once known; `None` when it has none. Asked
    /// after `channels`, since an M3U list names its guide in its header.
    fn guide_source(&self) -> Option<GuideSource> {
        None
    }

    /// The guide its list named when that list was kept (`state_dir/lists/`), given
    /// back at a start, before the list is read again: a service whose list names its
    /// guide (an M3U header) and is down at a restart still has its guide read.
    fn take_back_guide(&self, _url: url::Url) {}

    /// What the upstream says about the account (expiry, connection limit), for
    /// `/api/services/status`; `None` for kinds without accounts.
    fn account(&self) -> Option<serde_json::Value> {
        None
    }

    /// `url` as error messages may show it: without credentials, including those a
    /// kind carries in the path (Xtream's `/live/{user}/{password}/...`).
    fn shown_url(&self, url: &Url) -> String {
        crate::error::redact(url)
    }

    /// Freesky stopped using `channel_id`'s stream: the last viewer of its shared
    /// `.ts` session left (after `streams.idle_stop`), or the session moved to another
    /// source. Kinds holding an upstream session per stream (acestream) end it here.
    async fn release(&self, _channel_id: &str) {}

    /// The service's movies and series, for kinds that list them; `None` (the default):
    /// the service has no catalogue. Asked when the catalogue refreshes.
    async fn vod(&self) -> Option<crate::vod::VodLists> {
        None
    }

    /// What the service says about its title `id` beyond its list entry (plot, a
    /// series' episodes), for kinds whose lists say little; `None`: nothing more.
    async fn vod_details(
        &self,
        _kind: crate::vod::VodKind,
        _id: &str,
    ) -> Option<Result<crate::vod::Details, UpstreamError>> {
        None
    }

    /// The media URL of a movie or episode the service listed without one (an Xtream
    /// panel builds it from the id and the container extension).
    fn vod_url(&self, _kind: crate::vod::VodKind, _id: &str, _ext: &str) -> Option<Url> {
        None
    }

    /// Fetches one URL of a resolved stream (playlist, segment, key). Services that
    /// serve streams themselves (demo) override this; everyone else goes over HTTP.
    async fn fetch(
        &self,
        url: &Url,
        headers: &Headers,
        range: Option<&str>,
    ) -> Result<Fetched, UpstreamError> {
        self.http().get(url, headers, range).await
    }
}

/// What `build` needs besides the service's own config.
pub struct BuildContext {
    pub http: Http,
    /// Default lifetime of a resolution (`cache.resolved_ttl`).
    pub resolved_ttl: Duration,
}

impl KindConfig {
    /// The absolute URLs the service's config names (its origin, engine, guide...).
    /// Their hosts are trusted: URLs that upstream data supplies may reach a private
    /// address on them (and on no other host, unless `allow_private`).
    pub fn configured_urls(&self) -> Vec<Url> {
        let mut urls = self.kind().configured_urls();
        urls.retain(|u| matches!(u.scheme(), "http" | "https"));
        urls
    }

    /// The local files the config names, by field relative to the service.
    pub fn configured_files(&self) -> Vec<(&'static str, &std::path::Path)> {
        self.kind().configured_files()
    }

    /// Why `[services.auth]` cannot be used with this config (it names no origin the
    /// credentials could be kept to), or `None` when it can.
    pub fn auth_without_origin(&self) -> Option<String> {
        self.kind().auth_without_origin()
    }

    /// Checks serde cannot express: `(field, message)` pairs, field relative to the service.
    pub fn validate(&self) -> Vec<(String, String)> {
        self.kind().validate()
    }

    /// What is valid but will not work as configured (`Kind::warnings`).
    pub fn warnings(&self, allow_private: bool) -> Vec<(String, String)> {
        self.kind().warnings(allow_private)
    }
}

/// Builds the running service of one config entry.
pub fn try_build(cfg: &ServiceConfig, ctx: &BuildContext) -> Result<Arc<dyn Service>, BuildError> {
    cfg.kind.kind().build(cfg, ctx)
}

/// Builds the running service of one config entry that the config check passed. Should
/// the kind still refuse it (a config made without the loader), the service is kept,
/// listed with the reason in its status, instead of failing every other service.
pub fn build(cfg: &ServiceConfig, ctx: &BuildContext) -> Arc<dyn Service> {
    try_build(cfg, ctx).unwrap_or_else(|error| {
        tracing::error!(service = %cfg.name, "cannot build the service: {error}");
        Arc::new(Unbuilt {
            http: ServiceHttp::new(ctx.http.clone(), cfg, None),
            error,
        })
    })
}

/// A service whose config its kind refused: every request fails with the reason.
struct Unbuilt {
    http: ServiceHttp,
    error: BuildError,
}

impl Unbuilt {
    fn refused(&self) -> UpstreamError {
        UpstreamError::Invalid(format!("the service's config is refused: {}", self.error))
    }
}

#[async_trait]
impl Service for Unbuilt {
    async fn channels(&self) -> Result<Vec<Channel>, UpstreamError> {
        Err(self.refused())
    }

    async fn resolve(&self, _channel: &Channel) -> Result<ResolvedStream, UpstreamError> {
        Err(self.refused())
    }

    fn http(&self) -> &ServiceHttp {
        &self.http
    }
}

/// Where a service's XMLTV guide comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum GuideSource {
    /// Fetched with the service's `fetch` (plain or gzipped).
    Url(Url),
    /// A local file (plain or gzipped).
    File(PathBuf),
    /// Made in-process by the service itself (the demo's, a JSON API's events): the
    /// XMLTV and what the guide status shows as its source.
    Inline { shown: String, xml: Bytes },
}

impl From<Location> for GuideSource {
    fn from(l: Location) -> Self {
        match l {
            Location::Url(u) => Self::Url(u),
            Location::File(p) => Self::File(p),
        }
    }
}

/// A config value naming an http(s) URL (it has `://`) or a local file (anything else);
/// parsed once at load.
#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    Url(Url),
    File(PathBuf),
}

impl Location {
    /// The file path, when it is one.
    pub fn file(&self) -> Option<&std::path::Path> {
        match self {
            Self::Url(_) => None,
            Self::File(p) => Some(p),
        }
    }

    /// The URL, when it is one.
    pub fn url(&self) -> Option<&Url> {
        match self {
            Self::Url(u) => Some(u),
            Self::File(_) => None,
        }
    }
}

/// A config value parsed once at load, kept with the reason when it does not parse:
/// the config check reports that reason among the service's other problems (one bad
/// URL hides nothing else), and `build` refuses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked<T> {
    /// As written (after `${VAR}` interpolation), for messages.
    raw: String,
    value: Result<T, String>,
}

impl<T> Checked<T> {
    fn parse(raw: String, parse: impl FnOnce(&str) -> Result<T, String>) -> Self {
        Self {
            value: parse(&raw),
            raw,
        }
    }

    /// The value, when it parsed.
    pub fn get(&self) -> Option<&T> {
        self.value.as_ref().ok()
    }

    /// The value as written in the config.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The value, or why config field `field` has none.
    pub fn value(&self, field: &str) -> Result<&T, BuildError> {
        self.value
            .as_ref()
            .map_err(|why| BuildError::new(field, why.clone()))
    }

    /// Adds why config field `field` did not parse to a kind's `validate` problems.
    pub(crate) fn report(&self, field: &str, out: &mut Vec<(String, String)>) {
        if let Err(e) = self.value(field) {
            out.push(e.into());
        }
    }
}

impl Checked<Url> {
    /// `raw` checked to be an absolute http(s) URL.
    pub fn http_url(raw: &str) -> Self {
        Self::parse(raw.to_string(), http_url)
    }

    /// The URL as a base to join paths to (see `base_url`), or why field `field` has none.
    pub fn base(&self, field: &str) -> Result<Url, BuildError> {
        self.value(field).cloned().map(with_slash)
    }
}

/// An absolute http(s) URL.
impl<'de> Deserialize<'de> for Checked<Url> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self::parse(s, http_url))
    }
}

/// An http(s) URL or a file path, not empty.
impl<'de> Deserialize<'de> for Checked<Location> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self::parse(s, location))
    }
}

fn location(s: &str) -> Result<Location, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else if let Some(path) = Url::parse(s)
        .ok()
        .filter(|u| u.scheme() == "file")
        .map(|u| {
            u.to_file_path().map_err(|()| {
                format!(
                    "`{}`: a file URL names a path on this machine (`file:///path`)",
                    crate::error::mask_secrets(s)
                )
            })
        })
    {
        path.map(Location::File)
    } else if s.contains("://") {
        http_url(s)
            .map(Location::Url)
            .map_err(|e| format!("{e} or a file path"))
    } else if let Some(host) = address_without_scheme(s) {
        Err(format!(
            "`{}` is an address without its scheme (`{host}` is a host and port): write \
             `http://{}`",
            crate::error::mask_secrets(s),
            crate::error::mask_secrets(s)
        ))
    } else if looks_like_a_url(s) {
        Err(format!(
            "`{}` is neither an http(s) URL (`http://host/path`) nor a file path",
            crate::error::mask_secrets(s)
        ))
    } else {
        Ok(Location::File(PathBuf::from(s)))
    }
}

/// The `host:port` `s` starts with (`127.0.0.1:8080/list.m3u`, `tv.lan:80`): an
/// address written without `http://`, never a file's path.
fn address_without_scheme(s: &str) -> Option<&str> {
    let first = s.split('/').next()?;
    let (host, port) = first.rsplit_once(':')?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c));
    let port_ok = (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit());
    (host_ok && port_ok).then_some(first)
}

/// A scheme of two letters or more and a colon, then a slash (`htp:/x`, `http:/x`,
/// `https:host`): a mistyped URL, not a path (`C:/x` has a one-letter "scheme").
fn looks_like_a_url(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    scheme.len() >= 2
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
        && (rest.starts_with('/')
            || scheme.eq_ignore_ascii_case("http")
            || scheme.eq_ignore_ascii_case("https"))
}

/// The text at `location`: fetched (with the final URL, after redirects) or read from
/// the file, bounded by the service's `max_body_bytes` either way.
pub(crate) async fn read_location(
    http: &ServiceHttp,
    location: &Location,
) -> Result<(Option<Url>, String), UpstreamError> {
    let path = match location {
        Location::Url(url) => {
            let (final_url, text) = http.get_text(url, &Vec::new()).await?;
            return Ok((Some(final_url), text));
        }
        Location::File(path) => path,
    };
    let limit = http.http.max_body;
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| UpstreamError::Invalid(format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() > limit {
        return Err(UpstreamError::TooLarge {
            url: path.display().to_string(),
            limit,
        });
    }
    Ok((None, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Deserializes an optional `Location` where `""` means none.
pub(crate) fn de_opt_location<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Checked<Location>>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.trim().is_empty()).then(|| Checked::parse(s, location)))
}

/// `value` as an absolute http(s) URL, or why it is not one.
fn http_url(value: &str) -> Result<Url, String> {
    match Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(u),
        Ok(_) => Err(format!(
            "`{}` must be an http(s) URL",
            crate::error::mask_secrets(value)
        )),
        Err(e) => Err(format!(
            "`{}` is not a URL ({e})",
            crate::error::mask_secrets(value)
        )),
    }
}

// ---- helpers shared by kinds ----

/// Compiles the regexes of config field `field` (a list), naming the bad one.
pub(crate) fn patterns_of(field: &str, patterns: &[String]) -> Result<Vec<Regex>, BuildError> {
    patterns
        .iter()
        .enumerate()
        .map(|(i, p)| pattern_of(&format!("{field}[{i}]"), p))
        .collect()
}

/// Compiles the regex of config field `field`.
pub(crate) fn pattern_of(field: &str, pattern: &str) -> Result<Regex, BuildError> {
    Regex::new(pattern).map_err(|e| {
        // regex draws the pattern over several lines, then says what is wrong on the
        // last; one line is kept, with where it went wrong.
        let e = e.to_string();
        let why = e.lines().last().unwrap_or(&e).trim();
        let why = why.strip_prefix("error: ").unwrap_or(why);
        let at = match position(&e, pattern) {
            Some(col) => format!(" (at character {col} of `{pattern}`)"),
            None => String::new(),
        };
        BuildError::new(field, format!("bad regex: {why}{at}"))
    })
}

/// The character of `pattern` that regex's message marks with `^` (1-based), when the
/// message draws the pattern on one line.
fn position(message: &str, pattern: &str) -> Option<usize> {
    let lines: Vec<&str> = message.lines().collect();
    // The pattern's own line (which may start with `^` itself), then the marks.
    let at = lines.iter().position(|l| l.trim_start() == pattern)?;
    let (drawn, marks) = (lines[at], *lines.get(at + 1)?);
    if !marks.trim_start().starts_with('^') {
        return None;
    }
    // The drawing counts characters (the indent is spaces).
    let indent = drawn.len() - drawn.trim_start().len();
    let col = marks.find('^')?.checked_sub(indent)?;
    (col < pattern.chars().count()).then_some(col + 1)
}

/// The first stream URL found in `body` by the first pattern that matches: capture
/// group 1 when the pattern has one, else the whole match. JSON and HTML escapes
/// (`\/`, `&amp;`) are undone and relative URLs resolve against `base`.
pub fn find_stream_url(body: &str, patterns: &[Regex], base: &Url) -> Option<Url> {
    // JSON may escape slashes (`https:\/\/cdn...`); patterns are written for plain URLs.
    let body: std::borrow::Cow<'_, str> = if body.contains("\\/") {
        body.replace("\\/", "/").into()
    } else {
        body.into()
    };
    patterns.iter().find_map(|re| {
        let caps = re.captures(&body)?;
        let m = caps.get(1).or_else(|| caps.get(0))?;
        let raw = m.as_str().replace("&amp;", "&");
        let url = base.join(raw.trim()).ok()?;
        matches!(url.scheme(), "http" | "https").then_some(url)
    })
}

/// `path` (possibly with `{channel_id}`) joined to `base`. The id is percent-encoded
/// so an upstream id cannot change the path's shape.
pub fn endpoint(base: &Url, path: &str, channel_id: Option<&str>) -> Result<Url, UpstreamError> {
    let path = match channel_id {
        // A whole segment of `.` or `..` would walk the path, encoded or not (URL
        // parsers read `%2e` as a dot): such an id names no channel.
        Some(id @ ("." | "..")) => {
            return Err(UpstreamError::Invalid(format!(
                "channel id `{id}` cannot be put in a path"
            )))
        }
        Some(id) => {
            // form encoding writes a space as `+` and a real `+` as `%2B`; paths want `%20`.
            let encoded: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
            path.replace("{channel_id}", &encoded.replace('+', "%20"))
        }
        None => path.to_string(),
    };
    base.join(&path)
        .map_err(|e| UpstreamError::Invalid(format!("cannot join `{path}` to the base URL: {e}")))
}

/// A base URL with a trailing slash, so `join("api/x")` appends instead of replacing
/// the last segment.
pub fn base_url(s: &str) -> Option<Url> {
    Url::parse(s).ok().map(with_slash)
}

/// `u` with a trailing slash on its path (see `base_url`).
pub(crate) fn with_slash(mut u: Url) -> Url {
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    u
}

/// Makes unique ids for entries that have none of their own: `slug`, `slug-2`, ...
/// (`lineup::unique_slug`).
#[derive(Default)]
pub(crate) struct UniqueIds {
    seen: std::collections::HashSet<String>,
    next: std::collections::HashMap<String, u32>,
}

impl UniqueIds {
    pub(crate) fn make(&mut self, wanted: &str) -> String {
        crate::lineup::unique_slug(wanted, &mut self.seen, &mut self.next)
    }
}

#[cfg(test)]
mod unique_id_tests {
    use super::UniqueIds;

    #[test]
    fn the_first_free_suffix_in_one_step() {
        let mut ids = UniqueIds::default();
        let got: Vec<String> = ["news", "news-3", "news", "news", "news", "", "", "news-2"]
            .iter()
            .map(|w| ids.make(w))
            .collect();
        assert_eq!(
            got,
            [
                "news",
                "news-3",
                "news-2",
                "news-4",
                "news-5",
                "channel",
                "channel-2",
                "news-2-2"
            ]
        );
        let mut many = UniqueIds::default();
        for _ in 0..100_000 {
            many.make("");
        }
        assert_eq!(many.make(""), "channel-100001");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_an_http_url_a_path_or_a_file_url() {
        assert!(
            matches!(location("/tmp/x.m3u"), Ok(Location::File(p)) if p == std::path::Path::new("/tmp/x.m3u"))
        );
        assert!(
            matches!(location("file:///tmp/x.m3u"), Ok(Location::File(p)) if p == std::path::Path::new("/tmp/x.m3u"))
        );
        assert!(matches!(location("https://h/x.m3u"), Ok(Location::Url(_))));
        let e = location("ftp://h/x.m3u").unwrap_err();
        assert!(e.contains("http(s) URL or a file path"), "{e}");
        assert!(location("file://remote-host/x.m3u").is_err());
    }

    /// A service entry with `kind`'s own keys, as deserialized without the loader's
    /// checks (the shared keys from the built-in config).
    fn entry(kind: KindConfig) -> ServiceConfig {
        let mut cfg = crate::config::Config::builtin().services.remove(0);
        cfg.kind = kind;
        cfg
    }

    fn ctx() -> BuildContext {
        BuildContext {
            http: Http::new(1 << 20),
            resolved_ttl: Duration::from_secs(60),
        }
    }

    /// Whatever `build` refuses, the config check (`validate`) reports with the same
    /// field and message, so a refused build never reaches a running server.
    #[tokio::test]
    async fn what_build_refuses_the_check_reports() {
        let refused = [
            KindConfig::Xtream(
                toml::from_str(
                    "base_url = \"ftp://panel.example\"\nusername = \"u\"\npassword = \"p\"",
                )
                .unwrap(),
            ),
            KindConfig::JsonApi(
                toml::from_str(
                    "base_url = \"http://api.example/\"\n[channels]\npath = \"c\"\n\
                     [stream]\npath = \"s/{channel_id}\"\npatterns = [\"ok\", \"(\"]",
                )
                .unwrap(),
            ),
            KindConfig::Scrape(
                toml::from_str(
                    "base_url = \"http://site.example/\"\n[channels]\nlist = []\n\
                     [[steps]]\nurl = \"/a\"\nregex = \"(?P<url>.+\"",
                )
                .unwrap(),
            ),
            KindConfig::M3u(toml::from_str("url = \"http://\"").unwrap()),
            KindConfig::AceStream(
                toml::from_str("engine_url = \"engine\"\nchannels_url = \"list.m3u\"").unwrap(),
            ),
        ];
        for kind in refused {
            let problems = kind.validate();
            let name = kind.kind_name();
            let Err(e) = try_build(&entry(kind.clone()), &ctx()) else {
                panic!("{name}: built");
            };
            assert!(
                problems.contains(&(e.field.clone(), e.message.clone())),
                "{name}: build refused `{e}`, the check said {problems:?}"
            );
            // `build` keeps the service, failing with the reason instead of guessing.
            let service = build(&entry(kind), &ctx());
            let Err(listing) = service.channels().await else {
                panic!("{name}: a refused service listed channels");
            };
            assert!(listing.to_string().contains(&e.message), "{listing}");
        }
    }

    fn check(body: &str, patterns: &[&str], expected: Option<&str>) {
        let pats: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        let res = patterns_of("patterns", &pats).unwrap();
        let base = Url::parse("https://site.example/watch/1").unwrap();
        let got = find_stream_url(body, &res, &base).map(|u| u.to_string());
        assert_eq!(got.as_deref(), expected, "body: {body}");
    }

    #[test]
    fn patterns_in_order_group_or_whole_match() {
        let defaults = [
            r#"https://[^"']*\.m3u8[^"']*"#,
            r#"https://[^"']*\.mp4[^"']*"#,
        ];
        check(
            r#"<source src="https://cdn.example/a.mp4"> "https://cdn.example/live.m3u8?t=1&amp;x=2""#,
            &defaults,
            Some("https://cdn.example/live.m3u8?t=1&x=2"),
        );
        check(
            r#"{"file":"https:\/\/cdn.example\/x\/index.m3u8"}"#,
            &defaults,
            Some("https://cdn.example/x/index.m3u8"),
        );
        check("nothing here", &defaults, None);
        check(
            r#"var src = '/hls/ch1.m3u8';"#,
            &[r#"src = '([^']+)'"#],
            Some("https://site.example/hls/ch1.m3u8"),
        );
        check(r#"src='javascript:alert(1)'"#, &[r#"src='([^']+)'"#], None);
    }

    #[test]
    fn endpoint_encodes_ids() {
        let base = base_url("http://api.example/v1").unwrap();
        assert_eq!(
            endpoint(&base, "stream/{channel_id}", Some("a/b c"))
                .unwrap()
                .as_str(),
            "http://api.example/v1/stream/a%2Fb%20c"
        );
        // Dots are a path walk, not an id (a fuzzed channel list found `..`).
        for id in [".", ".."] {
            assert!(endpoint(&base, "stream/{channel_id}/play", Some(id)).is_err());
        }
        assert_eq!(
            endpoint(&base, "stream/{channel_id}/play", Some("..."))
                .unwrap()
                .as_str(),
            "http://api.example/v1/stream/.../play"
        );
        assert_eq!(
            endpoint(&base, "channels", None).unwrap().as_str(),
            "http://api.example/v1/channels"
        );
    }
}

#[cfg(test)]
mod pattern_tests {
    #[test]
    fn a_bad_regex_says_what_and_where() {
        let e = super::pattern_of("stream.patterns[0]", "ab(cd")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "stream.patterns[0]: bad regex: unclosed group (at character 3 of `ab(cd`)"
        );
        let e = super::pattern_of("p", "^ab(").unwrap_err().to_string();
        assert!(
            e.ends_with("unclosed group (at character 4 of `^ab(`)"),
            "{e}"
        );
        let e = super::pattern_of("p", "é\\q").unwrap_err().to_string();
        assert!(
            e.ends_with("unrecognized escape sequence (at character 2 of `é\\q`)"),
            "{e}"
        );
    }
}
