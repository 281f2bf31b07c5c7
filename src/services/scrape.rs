//! `kind = "scrape"`: web pages whose stream URL is found by regex. Channels come from
//! an inline list or from a page plus a regex with named groups; a channel's stream is
//! the first match of `stream.patterns` on its page (two built-in
//! defaults when none are configured). The page is sent as Referer of the stream's
//! own requests unless `referer` says otherwise.
//!
//! A *recipe* (`steps`) replaces the single page: each step fetches a templated URL
//! and its regex's named groups become variables of later steps; the last step's
//! `url` group is the stream. Cookies live in a jar for one resolve only: nothing
//! here keeps state between resolves.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use regex::Regex;
use serde::Deserialize;
use url::Url;

use super::{
    endpoint, find_stream_url, pattern_of, patterns_of, BuildContext, BuildError,
    Checked, Kind, Service,
};
use crate::config::ServiceConfig;
use crate::error::UpstreamError;
use crate::model::{Channel, Headers, ResolvedStream};
use crate::upstream::ServiceHttp;

/// The default patterns: an absolute HLS URL, else an absolute MP4 URL.
pub const DEFAULT_PATTERNS: [&str; 2] = [
    r#"https://[^"']*\.m3u8[^"']*"#,
    r#"https://[^"']*\.mp4[^"']*"#,
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    pub base_url: Checked<Url>,
    pub channels: ChannelSource,
    /// The channel's page: required without `steps`; with them it only defines `{page}`.
    #[serde(default)]
    pub stream: Option<StreamPage>,
    /// A recipe: pages fetched in order, each step's captures feeding the next.
    #[serde(default)]
    pub steps: Option<Vec<Step>>,
    /// Referer of the stream's own requests (a template); default the last step's page,
    /// `""` for none. Recipes only (`stream.referer` without steps).
    #[serde(default)]
    pub stream_referer: Option<String>,
    /// Origin of the stream's own requests (a template); none by default.
    #[serde(default)]
    pub stream_origin: Option<String>,
}

/// One request of a recipe. Every string but `regex` is a template (see `render`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Where to go; a relative result resolves against the previous step's page
    /// (`base_url` for the first step).
    pub url: String,
    /// Default: the previous step's page (only its origin when this step goes to
    /// another origin), as a browser would send; `""` for none.
    #[serde(default)]
    pub referer: Option<String>,
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    /// More headers for this step only (on top of the service's `headers`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Its named groups become variables; the last step's must have `url`.
    pub regex: String,
}

/// Either `path` + `pattern`, or an inline `list`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSource {
    #[serde(default)]
    pub path: Option<String>,
    /// Regex with named groups `id` and `name` (optional `logo`, `group`).
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub list: Option<Vec<InlineChannel>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineChannel {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub logo: String,
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub tvg_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamPage {
    /// Page path (joined to `base_url`) with `{channel_id}`.
    pub page: String,
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Referer for the stream's requests; default the page URL, `""` for none.
    #[serde(default)]
    pub referer: Option<String>,
    #[serde(default)]
    pub origin: Option<String>,
}

impl ScrapeConfig {
    /// `stream.patterns`, compiled, or the default patterns when none are given.
    fn stream_patterns(&self) -> Result<Vec<Regex>, BuildError> {
        match &self.stream {
            Some(s) if !s.patterns.is_empty() => patterns_of("stream.patterns", &s.patterns),
            _ => {
                let defaults = DEFAULT_PATTERNS.map(String::from);
                patterns_of("stream.patterns", &defaults)
            }
        }
    }

    /// The recipe's steps with their regexes compiled; empty without `steps`.
    fn recipe(&self) -> Result<Vec<RecipeStep>, BuildError> {
        self.steps
            .iter()
            .flatten()
            .enumerate()
            .map(|(j, s)| {
                Ok(RecipeStep {
                    regex: pattern_of(&format!("steps[{j}].regex"), &s.regex)?,
                    cfg: s.clone(),
                })
            })
            .collect()
    }
}

impl Kind for ScrapeConfig {
    /// `base_url` and the recipe steps' absolute URLs (a host that is a template
    /// placeholder names no host).
    fn configured_urls(&self) -> Vec<Url> {
        let steps = self
            .steps
            .iter()
            .flatten()
            .map(|s| s.url.as_str())
            .filter(|u| {
                u.split_once("://")
                    .is_some_and(|(_, rest)| !rest.split('/').next().unwrap_or("").contains('{'))
            })
            .filter_map(|u| Url::parse(u.trim()).ok());
        self.base_url.get().cloned().into_iter().chain(steps).collect()
    }

    fn build(
        &self,
        service: &ServiceConfig,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Service>, BuildError> {
        let list_pattern = match &self.channels.pattern {
            Some(p) => Some(pattern_of("channels.pattern", p)?),
            None => None,
        };
        let scrape = Scrape::new(
            service,
            self,
            self.base_url.base("base_url")?,
            list_pattern,
            self.stream_patterns()?,
            self.recipe()?,
            ctx,
        );
        Ok(Arc::new(scrape))
    }

    fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.base_url.report("base_url", &mut out);
        let c = &self.channels;
        match (&c.list, &c.path, &c.pattern) {
            (Some(_), None, None) => {}
            (None, Some(_), Some(p)) => match pattern_of("channels.pattern", p) {
                Ok(re) => {
                    let names: Vec<_> = re.capture_names().flatten().collect();
                    for g in ["id", "name"] {
                        if !names.contains(&g) {
                            out.push((
                                "channels.pattern".into(),
                                format!("needs a named group `(?P<{g}>...)`"),
                            ));
                        }
                    }
                }
                Err(e) => out.push(e.into()),
            },
            _ => out.push((
                "channels".into(),
                "give either `list`, or `path` and `pattern`".into(),
            )),
        }
        if let Some(s) = &self.stream {
            if !s.page.contains("{channel_id}") {
                out.push(("stream.page".into(), "must contain `{channel_id}`".into()));
            }
            if let Err(e) = patterns_of("stream.patterns", &s.patterns) {
                out.push(e.into());
            }
        }
        match (&self.steps, &self.stream) {
            // Said at `steps`: when steps were given but taken out for a bad value
            // (said there already), the loader keeps this quiet.
            (None, None) => out.push((
                "steps".into(),
                "missing: give `steps` or `[services.stream]`".into(),
            )),
            (None, Some(_)) => {
                for (field, v) in [
                    ("stream_referer", &self.stream_referer),
                    ("stream_origin", &self.stream_origin),
                ] {
                    if v.is_some() {
                        out.push((
                            field.into(),
                            "only used with `steps` (use `stream.referer`/`stream.origin`)".into(),
                        ));
                    }
                }
            }
            (Some(steps), stream) => {
                if let Some(s) = stream {
                    let unused = [
                        ("stream.patterns", !s.patterns.is_empty()),
                        ("stream.referer", s.referer.is_some()),
                        ("stream.origin", s.origin.is_some()),
                    ];
                    for (field, set) in unused {
                        if set {
                            out.push((
                                field.into(),
                                "not used with `steps` (the last step's regex finds the \
                                 stream; use `stream_referer`/`stream_origin`)"
                                    .into(),
                            ));
                        }
                    }
                }
                self.validate_steps(steps, &mut out);
            }
        }
        out
    }

}

impl ScrapeConfig {
    /// Regexes compile, every template variable is a built-in or a named group of an
    /// earlier step, and the last step captures `url`.
    fn validate_steps(&self, steps: &[Step], out: &mut Vec<(String, String)>) {
        if steps.is_empty() {
            out.push(("steps".into(), "needs at least one step".into()));
            return;
        }
        // Built-ins: `{channel}` (the channel id, percent-encoded) and, when
        // `[services.stream] page` is set, `{page}` (that page's absolute URL).
        let mut defined: Vec<String> = vec!["channel".into()];
        if self.stream.is_some() {
            defined.push("page".into());
        }
        let check = |field: String, template: &str, defined: &[String], out: &mut Vec<_>| {
            for var in template_vars(template) {
                if !defined.iter().any(|d| d == var) {
                    let known = defined
                        .iter()
                        .map(|d| format!("{{{d}}}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let hint = if var == "page" {
                        " (`{page}` needs `[services.stream] page`)"
                    } else {
                        ""
                    };
                    out.push((
                        field.clone(),
                        format!(
                            "`{{{var}}}` is not defined here{hint}; known: {known} \
                             (built-ins and named groups of earlier steps)"
                        ),
                    ));
                }
            }
        };
        for (j, step) in steps.iter().enumerate() {
            let f = |k: &str| format!("steps[{j}].{k}");
            if step.url.trim().is_empty() {
                out.push((f("url"), "must not be empty".into()));
            }
            check(f("url"), &step.url, &defined, out);
            for (k, v) in [
                ("referer", &step.referer),
                ("origin", &step.origin),
                ("user_agent", &step.user_agent),
            ] {
                if let Some(t) = v {
                    check(f(k), t, &defined, out);
                }
            }
            for (name, t) in &step.headers {
                check(f(&format!("headers.{name}")), t, &defined, out);
            }
            match pattern_of(&f("regex"), &step.regex) {
                Ok(re) => {
                    let names: Vec<String> =
                        re.capture_names().flatten().map(str::to_string).collect();
                    if j + 1 == steps.len() && !names.iter().any(|n| n == "url") {
                        out.push((
                            f("regex"),
                            "the last step needs a named group `(?P<url>...)`: the stream URL"
                                .into(),
                        ));
                    }
                    defined.extend(names);
                }
                Err(e) => out.push(e.into()),
            }
        }
        for (field, v) in [
            ("stream_referer", &self.stream_referer),
            ("stream_origin", &self.stream_origin),
        ] {
            if let Some(t) = v {
                check(field.into(), t, &defined, out);
            }
        }
    }
}

/// A step whose regex is compiled.
struct RecipeStep {
    cfg: Step,
    regex: Regex,
}

/// The `{name}` variables of a template, in order. `name` is a letter or `_` then
/// letters, digits or `_`; any other braces are literal text.
fn template_vars(t: &str) -> Vec<&str> {
    let mut out = Vec::new();
    render_with(t, &mut |var| {
        out.push(var);
        Some(String::new())
    })
    .ok();
    out
}

/// Fills a template from `vars`; `Err(name)` for the first variable without a value.
fn render(t: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    render_with(t, &mut |var| vars.get(var).cloned())
}

fn render_with<'t>(
    t: &'t str,
    value: &mut dyn FnMut(&'t str) -> Option<String>,
) -> Result<String, String> {
    let is_name = |s: &str| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let mut out = String::with_capacity(t.len());
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after
            .find('}')
            .map(|end| (&after[..end], &after[end + 1..]))
        {
            Some((name, tail)) if is_name(name) => {
                out.push_str(&value(name).ok_or_else(|| name.to_string())?);
                rest = tail;
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// What a captured value goes through: JSON's `\/` and HTML's `&amp;` are undone (the
/// two escapes that hide URLs in scripts and attributes). No percent-decoding: values
/// usually go back into URLs, where the encoding matters.
fn unescape_capture(s: &str) -> String {
    s.trim().replace("\\/", "/").replace("&amp;", "&")
}

/// Captures holding URLs (`url`, `*_url`) resolve against the page they came from.
fn is_url_capture(name: &str) -> bool {
    name == "url" || name.ends_with("_url")
}

/// Cookies of one resolve: `name=value` pairs from `Set-Cookie`, sent back to the
/// same host only. Path, Domain, Secure and Expires are ignored; `Max-Age=0` removes.
#[derive(Default)]
struct CookieJar {
    /// `(host, name, value)`, in the order they were set.
    cookies: Vec<(String, String, String)>,
}

impl CookieJar {
    fn store(&mut self, url: &Url, set_cookies: &[String]) {
        let Some(host) = url.host_str() else { return };
        for line in set_cookies {
            let mut parts = line.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if name.is_empty() {
                continue;
            }
            let removed = parts.any(|a| {
                let a = a.trim().to_ascii_lowercase();
                a.strip_prefix("max-age=")
                    .is_some_and(|n| n.trim().parse::<i64>().is_ok_and(|n| n <= 0))
            });
            self.cookies.retain(|(h, n, _)| !(h == host && n == name));
            if !removed {
                self.cookies
                    .push((host.to_string(), name.to_string(), value.to_string()));
            }
        }
    }

    /// The `Cookie` header value for a request to `url`, if any cookie applies.
    fn header(&self, url: &Url) -> Option<String> {
        let host = url.host_str()?;
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .filter(|(h, _, _)| h == host)
            .map(|(_, n, v)| format!("{n}={v}"))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }
}

pub struct Scrape {
    name: String,
    cfg: ScrapeConfig,
    base: Url,
    list_pattern: Option<Regex>,
    patterns: Vec<Regex>,
    /// The recipe's steps; empty without `steps`.
    steps: Vec<RecipeStep>,
    http: ServiceHttp,
    resolved_ttl: Duration,
}

impl Scrape {
    fn new(
        cfg: &ServiceConfig,
        kind: &ScrapeConfig,
        base: Url,
        list_pattern: Option<Regex>,
        patterns: Vec<Regex>,
        steps: Vec<RecipeStep>,
        ctx: &BuildContext,
    ) -> Self {
        Self {
            name: cfg.name.clone(),
            list_pattern,
            patterns,
            steps,
            http: ServiceHttp::new(ctx.http.clone(), cfg, Some(&base)),
            cfg: kind.clone(),
            base,
            resolved_ttl: ctx.resolved_ttl,
        }
    }

    fn channel(&self, id: String, name: String) -> Channel {
        Channel {
            id,
            name,
            logo: String::new(),
            group: String::new(),
            tags: Vec::new(),
            tvg_id: String::new(),
            station_id: String::new(),
            number: None,
            service: self.name.clone(),
            headers: Vec::new(),
            url: None,
            catchup: None,
        }
    }

    /// Runs the recipe for `channel`. Errors name the step (`step 2 of 3 (URL): ...`);
    /// timeouts stay timeouts so that they count as such.
    async fn resolve_recipe(&self, channel: &Channel) -> Result<ResolvedStream, UpstreamError> {
        let total = self.steps.len();
        let mut vars: HashMap<String, String> = HashMap::new();
        // Percent-encoded as `endpoint` does for `{channel_id}`.
        let encoded: String = url::form_urlencoded::byte_serialize(channel.id.as_bytes()).collect();
        vars.insert("channel".into(), encoded.replace('+', "%20"));
        if let Some(s) = &self.cfg.stream {
            let page = endpoint(&self.base, &s.page, Some(&channel.id))?;
            vars.insert("page".into(), page.to_string());
        }
        let mut jar = CookieJar::default();
        let mut prev: Option<Url> = None;
        let mut stream = None;
        for (i, step) in self.steps.iter().enumerate() {
            let no = i + 1;
            let plain =
                |msg: String| UpstreamError::Invalid(format!("step {no} of {total}: {msg}"));
            let fill = |t: &str| {
                render(t, &vars).map_err(|v| {
                    plain(format!(
                        "variable `{{{v}}}` has no value (its group did not take part in the match)"
                    ))
                })
            };
            let raw = fill(&step.cfg.url)?;
            let url = prev
                .as_ref()
                .unwrap_or(&self.base)
                .join(raw.trim())
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| plain("the url template did not give an http(s) URL".into()))?;
            let shown = crate::error::redact(&url);
            let fail = |msg: String| {
                UpstreamError::Invalid(format!("step {no} of {total} ({shown}): {msg}"))
            };

            let mut headers: Headers = Vec::new();
            let referer = match &step.cfg.referer {
                Some(t) => fill(t)?,
                // As browsers do by default: the whole page on the same origin, only
                // its origin elsewhere (the page's query may hold tokens).
                None => match &prev {
                    Some(p) if p.origin() == url.origin() => p.to_string(),
                    Some(p) => format!("{}/", p.origin().ascii_serialization()),
                    None => String::new(),
                },
            };
            let optional = [
                ("Referer", Some(referer)),
                ("Origin", step.cfg.origin.as_deref().map(fill).transpose()?),
                (
                    "User-Agent",
                    step.cfg.user_agent.as_deref().map(fill).transpose()?,
                ),
            ];
            for (name, value) in optional {
                if let Some(v) = value.filter(|v| !v.is_empty()) {
                    headers.push((name.into(), v));
                }
            }
            for (name, t) in &step.cfg.headers {
                headers.push((name.clone(), fill(t)?));
            }
            if let Some(jarred) = jar.header(&url) {
                match headers
                    .iter_mut()
                    .find(|(k, _)| k.eq_ignore_ascii_case("cookie"))
                {
                    Some((_, v)) => *v = format!("{v}; {jarred}"),
                    None => headers.push(("Cookie".into(), jarred)),
                }
            }

            let limit = self.http.http.max_body;
            let work = async {
                let f = self.http.get(&url, &headers, None).await?;
                let (page, cookies) = (f.url.clone(), f.set_cookies.clone());
                Ok((page, cookies, f.text(limit).await?))
            };
            let (page, cookies, body) = tokio::time::timeout(self.http.timeout, work)
                .await
                .unwrap_or(Err(UpstreamError::Timeout(self.http.timeout)))
                .map_err(|e| match e {
                    // Kept a timeout (health and metrics count it as one); the log names the step.
                    e if e.is_timeout() => {
                        tracing::warn!(step = no, of = total, url = %shown, "recipe step timed out");
                        e
                    }
                    UpstreamError::Status { status, .. } => fail(format!("HTTP {status}")),
                    UpstreamError::Request { reason, .. } => fail(reason),
                    UpstreamError::TooLarge { limit, .. } => {
                        fail(format!("the page is larger than {limit} bytes"))
                    }
                    other => fail(other.to_string()),
                })?;
            jar.store(&page, &cookies);

            let re = &step.regex;
            let caps = re
                .captures(&body)
                .ok_or_else(|| fail("pattern matched nothing".into()))?;
            for name in re.capture_names().flatten() {
                let Some(m) = caps.name(name) else { continue };
                let mut value = unescape_capture(m.as_str());
                if is_url_capture(name) {
                    value = page
                        .join(&value)
                        .map_err(|e| fail(format!("group `{name}` is not a URL ({e})")))?
                        .to_string();
                }
                vars.insert(name.to_string(), value);
            }
            if no == total {
                let found = caps
                    .name("url")
                    .and_then(|_| vars.get("url"))
                    .and_then(|u| Url::parse(u).ok())
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| fail("the `url` group gave no http(s) URL".into()))?;
                stream = Some(found);
            }
            prev = Some(page);
        }
        let (Some(stream), Some(last_page)) = (stream, prev) else {
            return Err(UpstreamError::Invalid("the recipe has no steps".into()));
        };
        let fill = |t: &str| {
            render(t, &vars).map_err(|v| {
                UpstreamError::Invalid(format!(
                    "stream_referer/stream_origin: variable `{{{v}}}` has no value"
                ))
            })
        };
        let mut headers: Headers = Vec::new();
        let referer = match &self.cfg.stream_referer {
            Some(t) => fill(t)?,
            None => last_page.to_string(),
        };
        if !referer.is_empty() {
            headers.push(("Referer".into(), referer));
        }
        if let Some(t) = &self.cfg.stream_origin {
            let origin = fill(t)?;
            if !origin.is_empty() {
                headers.push(("Origin".into(), origin));
            }
        }
        Ok(ResolvedStream::new(stream, headers, self.resolved_ttl))
    }
}

/// The few HTML entities that show up in names scraped from markup.
fn unescape_html(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
        .trim()
        .to_string()
}

#[async_trait]
impl Service for Scrape {
    async fn channels(&self) -> Result<Vec<Channel>, UpstreamError> {
        if let Some(list) = &self.cfg.channels.list {
            return Ok(list
                .iter()
                .map(|c| Channel {
                    logo: c.logo.clone(),
                    group: c.group.clone(),
                    tags: c.tags.clone(),
                    tvg_id: c.tvg_id.clone(),
                    station_id: String::new(),
                    number: None,
                    ..self.channel(c.id.clone(), c.name.clone())
                })
                .collect());
        }
        let (Some(path), Some(re)) = (&self.cfg.channels.path, &self.list_pattern) else {
            return Err(UpstreamError::Invalid(
                "channels: neither a list nor path and pattern".into(),
            ));
        };
        let url = endpoint(&self.base, path, None)?;
        let (page_url, body) = self.http.get_text(&url, &Vec::new()).await?;
        let mut ids = HashSet::new();
        let mut out = Vec::new();
        for caps in re.captures_iter(&body) {
            let get = |g: &str| {
                caps.name(g)
                    .map(|m| unescape_html(m.as_str()))
                    .unwrap_or_default()
            };
            let (id, name) = (get("id"), get("name"));
            if id.is_empty() || name.is_empty() || ids.contains(&id) {
                continue;
            }
            ids.insert(id.clone());
            let logo = get("logo");
            let logo = if logo.is_empty() {
                logo
            } else {
                page_url.join(&logo).map(|u| u.to_string()).unwrap_or(logo)
            };
            out.push(Channel {
                logo,
                group: get("group"),
                ..self.channel(id, name)
            });
        }
        if out.is_empty() {
            return Err(UpstreamError::Invalid(
                "channels.pattern matched nothing on the channel page".into(),
            ));
        }
        Ok(out)
    }

    async fn resolve(&self, channel: &Channel) -> Result<ResolvedStream, UpstreamError> {
        if !self.steps.is_empty() {
            return self.resolve_recipe(channel).await;
        }
        let Some(s) = &self.cfg.stream else {
            return Err(UpstreamError::Invalid(
                "neither `[services.stream]` nor `steps` is configured".into(),
            ));
        };
        let url = endpoint(&self.base, &s.page, Some(&channel.id))?;
        let (page_url, body) = self.http.get_text(&url, &Vec::new()).await?;
        let stream = find_stream_url(&body, &self.patterns, &page_url).ok_or_else(|| {
            let defaults = if s.patterns.is_empty() {
                " (the default stream.patterns find only https:// URLs ending in .m3u8 or \
                 .mp4; set stream.patterns for others)"
            } else {
                ""
            };
            UpstreamError::Invalid(format!(
                "no stream pattern matched the page of `{}`{defaults}",
                channel.id
            ))
        })?;
        let mut headers: Headers = Vec::new();
        let referer = s.referer.clone().unwrap_or_else(|| page_url.to_string());
        if !referer.is_empty() {
            headers.push(("Referer".into(), referer));
        }
        if let Some(o) = s.origin.as_ref().filter(|o| !o.is_empty()) {
            headers.push(("Origin".into(), o.clone()));
        }
        Ok(ResolvedStream::new(stream, headers, self.resolved_ttl))
    }

    fn http(&self) -> &ServiceHttp {
        &self.http
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(template: &str, expected: Result<&str, &str>) {
        let vars: HashMap<String, String> = [("token", "t/1"), ("channel", "a%20b")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            render(template, &vars).as_deref(),
            expected.map_err(|s| s.to_string()).as_deref(),
            "{template}"
        );
    }

    #[test]
    fn templates_fill_names_and_leave_other_braces() {
        check("/api?t={token}&c={channel}", Ok("/api?t=t/1&c=a%20b"));
        check("{token}{token}", Ok("t/1t/1"));
        check("{2}{ x }{}{", Ok("{2}{ x }{}{"));
        check("/x/{nope}/{token}", Err("nope"));
        assert_eq!(template_vars("{a}/{b_2}?{3}{"), ["a", "b_2"]);
    }

    #[test]
    fn cookie_jar_keeps_pairs_per_host() {
        let mut jar = CookieJar::default();
        let page = Url::parse("http://site.example/watch/1").unwrap();
        jar.store(
            &page,
            &[
                "sess=abc; Path=/; HttpOnly".into(),
                "lang=en".into(),
                "junk".into(),
            ],
        );
        assert_eq!(jar.header(&page).as_deref(), Some("sess=abc; lang=en"));
        jar.store(&page, &["sess=new".into(), "lang=; Max-Age=0".into()]);
        assert_eq!(jar.header(&page).as_deref(), Some("sess=new"));
        let other = Url::parse("http://cdn.example/x").unwrap();
        assert_eq!(jar.header(&other), None);
    }

    #[test]
    fn captures_lose_json_and_html_escapes_only() {
        assert_eq!(
            unescape_capture(r" https:\/\/cdn.example\/a.m3u8?x=1&amp;y=%20 "),
            "https://cdn.example/a.m3u8?x=1&y=%20"
        );
    }
}
