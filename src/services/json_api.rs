//! `kind = "json_api"`: a JSON API with configurable endpoints. The channel list is an
//! array found by a JSON pointer, each field of a channel another pointer; a stream is
//! resolved from `stream.path` either by a JSON pointer or by regexes over the body.
//! Credentials (`[services.auth]`) go to `base_url`'s origin only.
//!
//! Besides (or instead of) fixed channels, `[services.events]` lists time-bound events
//! (`events.rs`): each is a channel only around its time, and the service serves their
//! programmes as its own guide, in-process like the demo's (`GuideSource::Inline`).

pub(crate) mod events;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::{
    endpoint, find_stream_url, patterns_of, BuildContext, BuildError, Checked,
    GuideSource, Kind, Service,
};
use crate::config::ServiceConfig;
use crate::error::UpstreamError;
use crate::model::{Channel, Headers, ResolvedStream};
use crate::upstream::ServiceHttp;
pub use events::EventsConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonApiConfig {
    pub base_url: Checked<Url>,
    /// Fixed channels; optional when `events` lists everything.
    #[serde(default)]
    pub channels: Option<ChannelsEndpoint>,
    /// How a channel (or an event without its own stream URL) resolves; optional only
    /// when every stream comes from the event list (`events.stream`, no `channels`).
    #[serde(default)]
    pub stream: Option<StreamEndpoint>,
    /// Time-bound events listed as channels around their time (boxed: most services
    /// have none, and the kind enum stays small).
    #[serde(default)]
    pub events: Option<Box<EventsConfig>>,
    /// The service's movies (boxed, like `events`).
    #[serde(default)]
    pub movies: Option<Box<crate::vod::json_api::VodEndpoint>>,
    /// The service's series, each with its episodes.
    #[serde(default)]
    pub series: Option<Box<crate::vod::json_api::VodEndpoint>>,
}

/// What the guide status shows as the source of the events' guide (made in-process).
const EVENTS_GUIDE: &str = "http://events.freesky.invalid/guide.xml";

/// Where the channel list is and how to read each channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelsEndpoint {
    pub path: String,
    /// Pointer to the array of channels; `""` when the body is the array.
    #[serde(default)]
    pub list: String,
    #[serde(default = "ptr_id")]
    pub id: String,
    #[serde(default = "ptr_name")]
    pub name: String,
    #[serde(default)]
    pub logo: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// An array of strings, or one comma-separated string.
    #[serde(default)]
    pub tags: Option<String>,
    #[serde(default)]
    pub tvg_id: Option<String>,
}

fn ptr_id() -> String {
    "/id".into()
}
fn ptr_name() -> String {
    "/name".into()
}

/// How to resolve one channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamEndpoint {
    /// Path (joined to `base_url`) with `{channel_id}`.
    pub path: String,
    /// Pointer to the stream URL in the JSON response.
    #[serde(default)]
    pub url: Option<String>,
    /// Regexes over the response body, tried in order (group 1, else the whole match).
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Sent with every request of the stream itself (playlists, segments).
    #[serde(default)]
    pub referer: Option<String>,
    #[serde(default)]
    pub origin: Option<String>,
}

impl JsonApiConfig {
    /// `stream.patterns`, compiled.
    fn patterns(&self) -> Result<Vec<Regex>, BuildError> {
        match &self.stream {
            Some(s) => patterns_of("stream.patterns", &s.patterns),
            None => Ok(Vec::new()),
        }
    }
}

impl Kind for JsonApiConfig {
    fn configured_urls(&self) -> Vec<Url> {
        self.base_url.get().cloned().into_iter().collect()
    }

    fn build(
        &self,
        service: &ServiceConfig,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Service>, BuildError> {
        let base = self.base_url.base("base_url")?;
        let patterns = self.patterns()?;
        Ok(Arc::new(JsonApi::new(service, self, base, patterns, ctx)))
    }

    fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.base_url.report("base_url", &mut out);
        let mut pointers = Vec::new();
        if let Some(c) = &self.channels {
            pointers.extend([
                ("channels.list", Some(&c.list)),
                ("channels.id", Some(&c.id)),
                ("channels.name", Some(&c.name)),
                ("channels.logo", c.logo.as_ref()),
                ("channels.group", c.group.as_ref()),
                ("channels.tags", c.tags.as_ref()),
                ("channels.tvg_id", c.tvg_id.as_ref()),
            ]);
        }
        if let Some(e) = &self.events {
            pointers.extend(e.pointers());
        }
        if let Some(s) = &self.stream {
            pointers.push(("stream.url", s.url.as_ref()));
        }
        if let Some(m) = &self.movies {
            out.extend(m.validate(crate::vod::VodKind::Movie, "movies"));
        }
        if let Some(m) = &self.series {
            out.extend(m.validate(crate::vod::VodKind::Series, "series"));
        }
        let has_vod = self.movies.is_some() || self.series.is_some();
        match (&self.channels, &self.events, &self.stream) {
            (None, None, _) if has_vod => {}
            (None, None, _) => out.push((
                "channels".into(),
                "needs `[services.channels]`, `[services.events]` or both".into(),
            )),
            (Some(_), _, None) => out.push((
                "stream".into(),
                "`[services.stream]` is needed to resolve the channels".into(),
            )),
            (None, Some(e), None) if e.stream.is_none() => out.push((
                "stream".into(),
                "`[services.stream]` (or `events.stream`) is needed to resolve the events".into(),
            )),
            _ => {}
        }
        for (field, p) in pointers {
            if let Some(p) = p {
                if !p.is_empty() && !p.starts_with('/') {
                    out.push((
                        field.into(),
                        format!("`{p}` is not a JSON pointer (it must start with `/`)"),
                    ));
                }
            }
        }
        let Some(stream) = &self.stream else {
            return out;
        };
        if !stream.path.contains("{channel_id}") {
            out.push(("stream.path".into(), "must contain `{channel_id}`".into()));
        }
        if stream.url.is_none() && stream.patterns.is_empty() {
            out.push((
                "stream".into(),
                "needs `url` (a JSON pointer) or `patterns`".into(),
            ));
        }
        if let Err(e) = self.patterns() {
            out.push(e.into());
        }
        out
    }
}

pub struct JsonApi {
    name: String,
    cfg: JsonApiConfig,
    base: Url,
    patterns: Vec<Regex>,
    http: ServiceHttp,
    resolved_ttl: Duration,
    /// The events of the last listing that are channels now: what the guide shows and
    /// how an event channel's id maps back to the upstream's event id.
    listed_events: Mutex<Vec<events::Event>>,
}

impl JsonApi {
    fn new(
        cfg: &ServiceConfig,
        kind: &JsonApiConfig,
        base: Url,
        patterns: Vec<Regex>,
        ctx: &BuildContext,
    ) -> Self {
        Self {
            name: cfg.name.clone(),
            patterns,
            http: ServiceHttp::new(ctx.http.clone(), cfg, Some(&base)),
            cfg: kind.clone(),
            base,
            resolved_ttl: ctx.resolved_ttl,
            listed_events: Mutex::default(),
        }
    }

    /// The fixed channels of `[services.channels]`.
    async fn fixed_channels(
        &self,
        c: &ChannelsEndpoint,
        ids: &mut HashSet<String>,
    ) -> Result<Vec<Channel>, UpstreamError> {
        let url = endpoint(&self.base, &c.path, None)?;
        let (final_url, text, json) = self.get_json(&url).await?;
        let json = json.ok_or_else(|| {
            UpstreamError::Invalid(format!(
                "channel list is not valid JSON{}",
                crate::upstream::not_json(&final_url, &text)
            ))
        })?;
        channel_list(&json, c, &self.name, ids)
    }

    /// The events of `[services.events]` that are channels now; remembers them for
    /// the guide and for `resolve`.
    async fn event_channels(
        &self,
        e: &EventsConfig,
        ids: &mut HashSet<String>,
    ) -> Result<Vec<Channel>, UpstreamError> {
        let url = endpoint(&self.base, &e.path, None)?;
        let (final_url, text, json) = self.get_json(&url).await?;
        let json = json.ok_or_else(|| {
            UpstreamError::Invalid(format!(
                "event list is not valid JSON{}",
                crate::upstream::not_json(&final_url, &text)
            ))
        })?;
        let (all, skipped) = events::parse(&json, e, &final_url).map_err(UpstreamError::Invalid)?;
        for why in &skipped {
            tracing::warn!(service = %self.name, "skipped {why}");
        }
        if all.is_empty() && !skipped.is_empty() {
            return Err(UpstreamError::Invalid(format!(
                "none of the {} event entries is usable; first: {}",
                skipped.len(),
                skipped[0]
            )));
        }
        let now = chrono::Utc::now().timestamp();
        let listed: Vec<events::Event> = all
            .into_iter()
            .filter(|ev| ev.listed_at(now, e))
            .filter(|ev| ids.insert(ev.channel_id()))
            .collect();
        let out = listed.iter().map(|ev| ev.channel(&self.name, e)).collect();
        *self
            .listed_events
            .lock()
            .expect("events lock is never poisoned") = listed;
        Ok(out)
    }

    /// One `[services.movies]` / `[services.series]` list and how many entries it skipped.
    async fn vod_list(
        &self,
        kind: crate::vod::VodKind,
        ep: &crate::vod::json_api::VodEndpoint,
    ) -> Result<(Vec<crate::vod::Listed>, usize), UpstreamError> {
        let url = endpoint(&self.base, &ep.path, None)?;
        let (final_url, text, json) = self.get_json(&url).await?;
        let json = json.ok_or_else(|| {
            UpstreamError::Invalid(format!(
                "the {} list is not valid JSON{}",
                kind.as_str(),
                crate::upstream::not_json(&final_url, &text)
            ))
        })?;
        let (listed, skipped) = crate::vod::json_api::listed(&json, ep, kind, &final_url)
            .map_err(|e| UpstreamError::Invalid(format!("{}.list: {e}", kind.as_str())))?;
        if listed.is_empty() {
            return Err(UpstreamError::Invalid(format!(
                "the {} list has no usable entry",
                kind.as_str()
            )));
        }
        Ok((listed, skipped))
    }

    async fn get_json(&self, url: &Url) -> Result<(Url, String, Option<Value>), UpstreamError> {
        let (final_url, text) = self.http.get_text(url, &Vec::new()).await?;
        let json = serde_json::from_str(&text).ok();
        Ok((final_url, text, json))
    }
}

/// The channels of a channel-list answer, read with `c`'s pointers; entries without an
/// id or a name, or whose id is in `ids` already, are skipped (`ids` gains the rest).
pub fn channel_list(
    json: &Value,
    c: &ChannelsEndpoint,
    service: &str,
    ids: &mut HashSet<String>,
) -> Result<Vec<Channel>, UpstreamError> {
    let items = json
        .pointer(&c.list)
        .and_then(Value::as_array)
        .ok_or_else(|| {
            let keys = match json {
                Value::Object(o) if !o.is_empty() => format!(
                    " (the answer's top-level keys: {})",
                    o.keys()
                        .take(12)
                        .map(|k| format!("/{k}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Value::Array(_) => " (the answer itself is an array: use \"\")".to_string(),
                _ => String::new(),
            };
            UpstreamError::Invalid(format!(
                "channels.list `{}` does not point to an array{keys}",
                c.list
            ))
        })?;
    let mut out = Vec::with_capacity(items.len());
    let mut skipped = 0;
    for (i, item) in items.iter().enumerate() {
        let (Some(id), Some(name)) = (text_at(item, &c.id), text_at(item, &c.name)) else {
            tracing::warn!(
                service,
                index = i,
                "skipped channel: no `{}` or `{}` in it",
                c.id,
                c.name
            );
            skipped += 1;
            continue;
        };
        if id.is_empty() || name.is_empty() || !ids.insert(id.clone()) {
            skipped += 1;
            continue;
        }
        let opt = |p: &Option<String>| {
            p.as_deref()
                .and_then(|p| text_at(item, p))
                .unwrap_or_default()
        };
        out.push(Channel {
            id,
            name,
            logo: opt(&c.logo),
            group: opt(&c.group),
            tags: c
                .tags
                .as_deref()
                .map(|p| tags_at(item, p))
                .unwrap_or_default(),
            tvg_id: opt(&c.tvg_id),
            station_id: String::new(),
            number: None,
            service: service.to_string(),
            headers: Vec::new(),
            url: None,
            catchup: None,
        });
    }
    if out.is_empty() && skipped > 0 {
        return Err(UpstreamError::Invalid(format!(
            "none of the {skipped} channel entries has both channels.id `{}` and channels.name `{}`",
            c.id, c.name
        )));
    }
    Ok(out)
}

/// The stream URL in a stream answer (`body`, read from `final_url`; `json` when it
/// parsed): at `s.url` in the JSON, else the first match of `patterns`; http(s) only.
pub fn stream_in_answer(
    s: &StreamEndpoint,
    patterns: &[Regex],
    final_url: &Url,
    body: &str,
    json: Option<Value>,
    upstream_id: &str,
) -> Result<Url, UpstreamError> {
    let found = match (&s.url, json) {
        // Only a non-empty string is a URL: an empty one, a number or `true` would
        // join as a relative URL naming the answer itself.
        (Some(p), Some(json)) => json
            .pointer(p)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .and_then(|u| final_url.join(u).ok()),
        (Some(p), None) if patterns.is_empty() => {
            return Err(UpstreamError::Invalid(format!(
                "stream answer is not JSON, so stream.url `{p}` cannot apply"
            )))
        }
        _ => None,
    };
    let found = found.or_else(|| find_stream_url(body, patterns, final_url));
    found
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| {
            let looked = match (&s.url, patterns.is_empty()) {
                (Some(p), true) => format!(": nothing usable at stream.url `{p}` (an http(s) URL)"),
                (Some(p), false) => format!(
                    ": nothing usable at stream.url `{p}` (an http(s) URL), and no stream.patterns matched"
                ),
                (None, _) => ": no stream.patterns matched".to_string(),
            };
            UpstreamError::Invalid(format!(
                "no stream URL in the answer for `{upstream_id}`{looked}"
            ))
        })
}

/// A pointer's value as text: strings as they are, numbers printed.
fn text_at(v: &Value, pointer: &str) -> Option<String> {
    match v.pointer(pointer)? {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        // `true` is no id, name or logo.
        _ => None,
    }
}

fn tags_at(v: &Value, pointer: &str) -> Vec<String> {
    match v.pointer(pointer) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|t| t.as_str())
            .map(|t| t.trim().to_string())
            .collect(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

#[async_trait]
impl Service for JsonApi {
    async fn channels(&self) -> Result<Vec<Channel>, UpstreamError> {
        let mut ids = HashSet::new();
        let mut out = match &self.cfg.channels {
            Some(c) => self.fixed_channels(c, &mut ids).await?,
            None => Vec::new(),
        };
        if let Some(e) = &self.cfg.events {
            out.extend(self.event_channels(e, &mut ids).await?);
        }
        Ok(out)
    }

    async fn resolve(&self, channel: &Channel) -> Result<ResolvedStream, UpstreamError> {
        let mut headers: Headers = Vec::new();
        if let Some(s) = &self.cfg.stream {
            if let Some(r) = &s.referer {
                headers.push(("Referer".into(), r.clone()));
            }
            if let Some(o) = &s.origin {
                headers.push(("Origin".into(), o.clone()));
            }
        }
        // An event's own stream URL, from the event list.
        if let Some(url) = channel.url.as_deref().and_then(|u| Url::parse(u).ok()) {
            return Ok(ResolvedStream::new(url, headers, self.resolved_ttl));
        }
        let event_id = self
            .listed_events
            .lock()
            .expect("events lock is never poisoned")
            .iter()
            .find(|e| e.channel_id() == channel.id)
            .map(|e| e.id.clone());
        let upstream_id = event_id.as_deref().unwrap_or(&channel.id);
        let s = self.cfg.stream.as_ref().ok_or_else(|| {
            UpstreamError::Invalid(format!(
                "`{}` has no stream URL in the event list and there is no [services.stream]",
                channel.id
            ))
        })?;
        let url = endpoint(&self.base, &s.path, Some(upstream_id))?;
        let (final_url, body, json) = self.get_json(&url).await?;
        let stream = stream_in_answer(s, &self.patterns, &final_url, &body, json, upstream_id)?;
        Ok(ResolvedStream::new(stream, headers, self.resolved_ttl))
    }

    fn http(&self) -> &ServiceHttp {
        &self.http
    }

    async fn vod(&self) -> Option<crate::vod::VodLists> {
        if self.cfg.movies.is_none() && self.cfg.series.is_none() {
            return None;
        }
        let mut lists = crate::vod::VodLists::default();
        for (kind, ep) in [
            (crate::vod::VodKind::Movie, &self.cfg.movies),
            (crate::vod::VodKind::Series, &self.cfg.series),
        ] {
            let Some(ep) = ep else {
                continue;
            };
            let got = self.vod_list(kind, ep).await.map(|(listed, skipped)| {
                lists.skipped += skipped;
                listed
            });
            match kind {
                crate::vod::VodKind::Movie => lists.movies = Some(got),
                crate::vod::VodKind::Series => lists.series = Some(got),
            }
        }
        Some(lists)
    }

    fn guide_source(&self) -> Option<GuideSource> {
        self.cfg.events.as_ref()?;
        let listed = self
            .listed_events
            .lock()
            .expect("events lock is never poisoned")
            .clone();
        Some(GuideSource::Inline {
            shown: EVENTS_GUIDE.into(),
            xml: events::guide(&listed, &self.name).into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(toml_text: &str) -> Vec<String> {
        let cfg: JsonApiConfig = toml::from_str(toml_text).unwrap();
        cfg.validate().into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn a_stream_answer_without_a_usable_url_names_where_it_looked() {
        let s = StreamEndpoint {
            path: "s/{channel_id}".into(),
            url: Some("/data/url".into()),
            patterns: vec![],
            referer: None,
            origin: None,
        };
        let at = Url::parse("http://api.example/s/7").unwrap();
        for body in [
            r#"{"data": {}}"#,
            r#"{"data": {"url": "rtmp://x/y"}}"#,
            r#"{"data": {"url": ""}}"#,
            r#"{"data": {"url": 12345}}"#,
            r#"{"data": {"url": true}}"#,
        ] {
            let json = serde_json::from_str(body).ok();
            let e = stream_in_answer(&s, &[], &at, body, json, "7").unwrap_err();
            assert_eq!(
                e.to_string(),
                UpstreamError::Invalid(
                    "no stream URL in the answer for `7`: nothing usable at stream.url `/data/url` (an http(s) URL)"
                        .into()
                )
                .to_string(),
                "{body}"
            );
        }
        let found = stream_in_answer(
            &s,
            &[],
            &at,
            "",
            Some(serde_json::json!({"data": {"url": "/live/7.m3u8"}})),
            "7",
        )
        .unwrap();
        assert_eq!(found.as_str(), "http://api.example/live/7.m3u8");
        // Nothing usable at the pointer: the patterns are tried.
        let patterns = [Regex::new("src='([^']+)'").unwrap()];
        let body = r#"{"data": {"url": ""}, "html": "<video src='http://cdn.example/7.m3u8'>"}"#;
        let json = serde_json::from_str(body).ok();
        let found = stream_in_answer(&s, &patterns, &at, body, json, "7").unwrap();
        assert_eq!(found.as_str(), "http://cdn.example/7.m3u8");
    }

    #[test]
    fn events_channels_and_stream_combinations() {
        let base = "base_url = \"http://api.example/\"\n";
        let events = "[events]\npath = \"events\"\n";
        let stream = "[stream]\npath = \"s/{channel_id}\"\nurl = \"/url\"\n";
        let channels = "[channels]\npath = \"channels\"\n";
        assert_eq!(problems(base), ["channels"]);
        assert_eq!(problems(&format!("{base}{channels}")), ["stream"]);
        assert_eq!(problems(&format!("{base}{events}")), ["stream"]);
        assert!(problems(&format!("{base}{events}stream = \"/hls\"\n")).is_empty());
        assert!(problems(&format!("{base}{events}{stream}{channels}")).is_empty());
        assert_eq!(
            problems(&format!(
                "{base}{stream}[events]\npath = \"e\"\nstart = \"when\"\n"
            )),
            ["events.start"]
        );
    }
}
