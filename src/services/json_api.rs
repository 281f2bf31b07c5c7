//! `kind = "json_api"`: a JSON API with configurable endpoints. The channel list is an
//! array found by a JSON pointer, each field of a channel another pointer; a stream is
//! resolved from `stream.path` either by a JSON pointer or by regexes over the body.
//! Credentials (`[services.auth]`) go to `base_url`'s origin only.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::{
    base_url, check_http_url, compile_patterns, endpoint, find_stream_url, BuildContext, Service,
};
use crate::config::ServiceConfig;
use crate::error::UpstreamError;
use crate::model::{Channel, Headers, ResolvedStream};
use crate::upstream::ServiceHttp;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonApiConfig {
    pub base_url: String,
    pub channels: ChannelsEndpoint,
    pub stream: StreamEndpoint,
}

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
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        check_http_url("base_url", &self.base_url, &mut out);
        let c = &self.channels;
        let pointers = [
            ("channels.list", Some(&c.list)),
            ("channels.id", Some(&c.id)),
            ("channels.name", Some(&c.name)),
            ("channels.logo", c.logo.as_ref()),
            ("channels.group", c.group.as_ref()),
            ("channels.tags", c.tags.as_ref()),
            ("channels.tvg_id", c.tvg_id.as_ref()),
            ("stream.url", self.stream.url.as_ref()),
        ];
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
        if !self.stream.path.contains("{channel_id}") {
            out.push(("stream.path".into(), "must contain `{channel_id}`".into()));
        }
        if self.stream.url.is_none() && self.stream.patterns.is_empty() {
            out.push((
                "stream".into(),
                "needs `url` (a JSON pointer) or `patterns`".into(),
            ));
        }
        if let Err((i, e)) = compile_patterns(&self.stream.patterns) {
            out.push((format!("stream.patterns[{i}]"), format!("bad regex: {e}")));
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
}

impl JsonApi {
    pub fn new(cfg: &ServiceConfig, kind: &JsonApiConfig, ctx: &BuildContext) -> Self {
        // validate() has checked both; fall back to harmless values rather than panic.
        let base = base_url(&kind.base_url)
            .unwrap_or_else(|| Url::parse("http://invalid./").expect("static URL"));
        Self {
            name: cfg.name.clone(),
            patterns: compile_patterns(&kind.stream.patterns).unwrap_or_default(),
            http: ServiceHttp::new(ctx.http.clone(), cfg, Some(&base)),
            cfg: kind.clone(),
            base,
            resolved_ttl: ctx.resolved_ttl,
        }
    }

    async fn get_json(&self, url: &Url) -> Result<(Url, String, Option<Value>), UpstreamError> {
        let (final_url, text) = self.http.get_text(url, &Vec::new()).await?;
        let json = serde_json::from_str(&text).ok();
        Ok((final_url, text, json))
    }
}

/// A pointer's value as text: strings as they are, numbers printed.
fn text_at(v: &Value, pointer: &str) -> Option<String> {
    match v.pointer(pointer)? {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
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
        let c = &self.cfg.channels;
        let url = endpoint(&self.base, &c.path, None)?;
        let (_, _, json) = self.get_json(&url).await?;
        let json =
            json.ok_or_else(|| UpstreamError::Invalid("channel list is not valid JSON".into()))?;
        let items = json
            .pointer(&c.list)
            .and_then(Value::as_array)
            .ok_or_else(|| {
                UpstreamError::Invalid(format!(
                    "channels.list `{}` does not point to an array",
                    c.list
                ))
            })?;
        let mut out = Vec::with_capacity(items.len());
        let mut ids = HashSet::new();
        let mut skipped = 0;
        for (i, item) in items.iter().enumerate() {
            let (Some(id), Some(name)) = (text_at(item, &c.id), text_at(item, &c.name)) else {
                tracing::warn!(service = %self.name, index = i, "skipped channel: no `{}` or `{}` in it", c.id, c.name);
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
                service: self.name.clone(),
                headers: Vec::new(),
                url: None,
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

    async fn resolve(&self, channel: &Channel) -> Result<ResolvedStream, UpstreamError> {
        let s = &self.cfg.stream;
        let url = endpoint(&self.base, &s.path, Some(&channel.id))?;
        let (final_url, body, json) = self.get_json(&url).await?;
        let found = match (&s.url, json) {
            (Some(p), Some(json)) => text_at(&json, p).and_then(|u| final_url.join(&u).ok()),
            (Some(p), None) if self.patterns.is_empty() => {
                return Err(UpstreamError::Invalid(format!(
                    "stream answer is not JSON, so stream.url `{p}` cannot apply"
                )))
            }
            _ => None,
        };
        let found = found.or_else(|| find_stream_url(&body, &self.patterns, &final_url));
        let stream = found
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                UpstreamError::Invalid(format!("no stream URL in the answer for `{}`", channel.id))
            })?;
        let mut headers: Headers = Vec::new();
        if let Some(r) = &s.referer {
            headers.push(("Referer".into(), r.clone()));
        }
        if let Some(o) = &s.origin {
            headers.push(("Origin".into(), o.clone()));
        }
        Ok(ResolvedStream::new(stream, headers, self.resolved_ttl))
    }

    fn http(&self) -> &ServiceHttp {
        &self.http
    }
}
