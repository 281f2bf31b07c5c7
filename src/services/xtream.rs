//! `kind = "xtream"`: an Xtream Codes panel through `player_api.php`. The account is
//! checked first (a refused login or an inactive account is an error), then the live
//! categories and streams become channels; a stream plays from
//! `{base_url}/live/{username}/{password}/{stream_id}.{ts|m3u8}` and the guide is
//! `xmltv.php`.
//!
//! The credentials are in every URL of this kind (query or path), so every error this
//! service returns is scrubbed of them, and the panel's `max_connections` caps how many
//! stream requests freesky has open to it at once (`Slots`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use url::Url;

use super::{BuildContext, BuildError, Checked, GuideSource, Kind, Service};
use crate::config::{Secret, ServiceConfig};
use crate::error::UpstreamError;
use crate::model::{Channel, Headers, ResolvedStream};
use crate::slots::Slots;
use crate::upstream::{Fetched, ServiceHttp};
use crate::vod::{Listed, VodKind, VodLists};

/// Largest movie or series list accepted from a panel: far above `max_body_bytes`,
/// since 200,000 titles are tens of megabytes of JSON (read once a refresh, dropped
/// once parsed).
const VOD_LIST_MAX: usize = 512 << 20;
/// A movie or series list may take this many service timeouts to arrive.
const VOD_LIST_TIMEOUTS: u32 = 6;

/// How long a stream request waits for a free connection slot before failing.
const SLOT_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XtreamConfig {
    /// The panel, e.g. `http://provider.example:8080`.
    pub base_url: Checked<Url>,
    pub username: Secret,
    pub password: Secret,
    /// What `resolve` asks the panel for: continuous MPEG-TS or HLS.
    #[serde(default)]
    pub output: Output,
    /// Category names to keep (case-insensitive); empty keeps all.
    #[serde(default)]
    pub categories: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    Ts,
    #[default]
    M3u8,
}

impl Output {
    fn ext(self) -> &'static str {
        match self {
            Self::Ts => "ts",
            Self::M3u8 => "m3u8",
        }
    }
}

impl Kind for XtreamConfig {
    fn configured_urls(&self) -> Vec<Url> {
        self.base_url.get().cloned().into_iter().collect()
    }

    fn build(
        &self,
        service: &ServiceConfig,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Service>, BuildError> {
        let base = self.base_url.base("base_url")?;
        Ok(Arc::new(Xtream::new(service, self, base, ctx)))
    }

    fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.base_url.report("base_url", &mut out);
        if self.username.is_empty() {
            out.push(("username".into(), "must not be empty".into()));
        }
        if self.password.is_empty() {
            out.push(("password".into(), "must not be empty".into()));
        }
        out
    }
}

/// The account as the panel last described it.
#[derive(Debug, Clone, Default)]
pub struct Account {
    status: String,
    /// Unix seconds; `None`: never expires (or not said).
    exp_date: Option<u64>,
    /// `None` or 0 from the panel: no cap.
    max_connections: Option<usize>,
    active_cons: Option<u64>,
}

pub struct Xtream {
    name: String,
    base: Url,
    username: Secret,
    password: Secret,
    output: Output,
    /// Lowercased category names to keep; empty keeps all.
    categories: Vec<String>,
    http: ServiceHttp,
    resolved_ttl: Duration,
    /// The last account info, for the status page.
    account: Mutex<Option<Account>>,
    /// Stream connections open to the panel, capped by `max_connections`.
    slots: Arc<Slots>,
    scrubber: Arc<Scrubber>,
}

impl Xtream {
    fn new(cfg: &ServiceConfig, kind: &XtreamConfig, base: Url, ctx: &BuildContext) -> Self {
        Self {
            name: cfg.name.clone(),
            http: ServiceHttp::new(ctx.http.clone(), cfg, Some(&base)),
            base,
            username: kind.username.clone(),
            password: kind.password.clone(),
            output: kind.output,
            categories: kind
                .categories
                .iter()
                .map(|c| c.trim().to_lowercase())
                .collect(),
            resolved_ttl: ctx.resolved_ttl,
            account: Mutex::new(None),
            slots: Arc::new(Slots::default()),
            scrubber: Arc::new(Scrubber {
                username: kind.username.clone(),
                password: kind.password.clone(),
            }),
        }
    }

    /// `{base}/{file}?username=..&password=..` plus `extra` query pairs.
    fn api_url(&self, file: &str, extra: &[(&str, &str)]) -> Result<Url, UpstreamError> {
        let mut url = self
            .base
            .join(file)
            .map_err(|e| UpstreamError::Invalid(format!("cannot join `{file}`: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("username", self.username.expose());
            q.append_pair("password", self.password.expose());
            for (k, v) in extra {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// GET one `player_api.php` answer as JSON.
    async fn api(&self, action: Option<&str>) -> Result<Value, UpstreamError> {
        self.api_with(action, &[]).await
    }

    /// GET one `player_api.php` answer as JSON, with more query pairs.
    async fn api_with(
        &self,
        action: Option<&str>,
        more: &[(&str, &str)],
    ) -> Result<Value, UpstreamError> {
        let mut extra: Vec<(&str, &str)> = action.map(|a| ("action", a)).into_iter().collect();
        extra.extend_from_slice(more);
        let url = self.api_url("player_api.php", &extra)?;
        let what = action.unwrap_or("account info");
        let (_, text) = self
            .http
            .get_text(&url, &Vec::new())
            .await
            .map_err(|e| self.scrub(e))?;
        serde_json::from_str(&text).map_err(|_| {
            // How the answer starts, not its URL: that carries the account's password.
            // A login page may echo the account too: scrubbed before it is cut short
            // (a password across the cut would show in part).
            let head: String = text.chars().take(1024).collect();
            let why = crate::upstream::not_json_start(&self.scrubber.text(&head));
            UpstreamError::Invalid(format!("player_api.php ({what}) did not answer JSON{why}"))
        })
    }

    /// One movie or series list (`get_vod_streams`, `get_series`) with its categories'
    /// names. The list is read up to `VOD_LIST_MAX` within several service timeouts
    /// (it can be tens of megabytes), then parsed element by element off the async
    /// threads; HTML, `{}` or `[]` instead of a list is an error naming it.
    async fn vod_list(&self, kind: VodKind) -> Result<Vec<Listed>, UpstreamError> {
        let (categories, list) = match kind {
            VodKind::Movie => ("get_vod_categories", "get_vod_streams"),
            VodKind::Series => ("get_series_categories", "get_series"),
        };
        // Without category names the titles still list, uncategorised.
        let names = match self.api(Some(categories)).await {
            Ok(v) => category_names(&v),
            Err(e) => {
                tracing::warn!(service = %self.name, "{categories}: {e}");
                HashMap::new()
            }
        };
        let url = self.api_url("player_api.php", &[("action", list)])?;
        let work = async {
            let fetched = self.http.get(&url, &Vec::new(), None).await?;
            fetched.bytes(VOD_LIST_MAX).await
        };
        let body = tokio::time::timeout(self.http.timeout * VOD_LIST_TIMEOUTS, work)
            .await
            .unwrap_or(Err(UpstreamError::Timeout(self.http.timeout * VOD_LIST_TIMEOUTS)))
            .map_err(|e| self.scrub(e))?;
        let parsed = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            crate::vod::xtream::read_list(&body, list, |v| {
                out.push(match kind {
                    VodKind::Movie => crate::vod::xtream::movie(&v, &names),
                    VodKind::Series => crate::vod::xtream::series(&v, &names),
                })
            })
            .map(|_| out)
        })
        .await
        .map_err(|e| UpstreamError::Invalid(format!("{list}: {e}")))?;
        parsed.map_err(|e| self.scrub(UpstreamError::Invalid(e)))
    }

    /// Checks the login and the account, remembering what the panel says about it;
    /// answers the panel's clock offset (see [`clock_offset`]).
    async fn check_account(&self) -> Result<i32, UpstreamError> {
        let info = self.api(None).await;
        let offset = info.as_ref().map_or(0, clock_offset);
        let account = info.and_then(|v| parse_account(&v));
        let mut slot = self
            .account
            .lock()
            .expect("account lock is never poisoned: no panics while held");
        match account {
            Ok(a) => {
                self.slots.set_limit(a.max_connections);
                *slot = Some(a);
                Ok(offset)
            }
            Err(e) => {
                *slot = None;
                Err(e)
            }
        }
    }

    /// The same error without the credentials (stream URLs carry them in the path).
    fn scrub(&self, e: UpstreamError) -> UpstreamError {
        self.scrubber.scrub(e)
    }

    fn is_guide(&self, url: &Url) -> bool {
        url.path().ends_with("/xmltv.php")
    }
}

/// The account facts of a `player_api.php` answer without `action`, or why it refuses.
pub fn parse_account(v: &Value) -> Result<Account, UpstreamError> {
    let user = v.get("user_info").ok_or_else(|| {
        UpstreamError::Invalid(
            "xtream login refused: player_api.php has no user_info (check username and password)"
                .into(),
        )
    })?;
    if user.get("auth").and_then(as_u64) == Some(0) {
        return Err(UpstreamError::Invalid(
            "xtream login refused (auth=0): check username and password".into(),
        ));
    }
    let status = user
        .get("status")
        .and_then(as_text)
        .unwrap_or_else(|| "Active".into());
    if !status.eq_ignore_ascii_case("active") {
        return Err(UpstreamError::Invalid(format!(
            "xtream account is not active (status `{status}`)"
        )));
    }
    Ok(Account {
        status,
        exp_date: user.get("exp_date").and_then(as_u64).filter(|&t| t > 0),
        max_connections: user
            .get("max_connections")
            .and_then(as_u64)
            .map(|n| n as usize)
            .filter(|&n| n > 0),
        active_cons: user.get("active_cons").and_then(as_u64),
    })
}

/// Seconds the panel's clock is ahead of UTC, from its `server_info` (`time_now`, its
/// local time as `YYYY-MM-DD HH:MM:SS`, against `timestamp_now`), rounded to a quarter
/// hour: panels read the start of a timeshift URL in their local time. 0 when it does
/// not say, or says something no time zone is.
pub fn clock_offset(v: &Value) -> i32 {
    let info = v.get("server_info");
    let field = |k: &str| info.and_then(|i| i.get(k));
    let (Some(utc), Some(local)) = (
        field("timestamp_now").and_then(as_u64),
        field("time_now").and_then(as_text),
    ) else {
        return 0;
    };
    let Ok(local) = chrono::NaiveDateTime::parse_from_str(&local, "%Y-%m-%d %H:%M:%S") else {
        return 0;
    };
    let diff = local.and_utc().timestamp() - utc as i64;
    let rounded = (diff as f64 / 900.0).round() as i64 * 900;
    if rounded.abs() <= 14 * 3600 {
        rounded as i32
    } else {
        0
    }
}

/// A number the panel may send as a number or as a string.
pub(crate) fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A text the panel may send as a string or as a number.
pub(crate) fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `get_live_categories`: category id → name.
pub fn category_names(v: &Value) -> HashMap<String, String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some((
                c.get("category_id").and_then(as_text)?,
                c.get("category_name").and_then(as_text)?,
            ))
        })
        .collect()
}

/// `get_live_streams` as channels (with their `num`, for ordering), skipping entries
/// without an id or a name and those outside `keep` (lowercased names; empty: all).
pub fn live_channels(
    service: &str,
    streams: &Value,
    categories: &HashMap<String, String>,
    keep: &[String],
) -> Result<Vec<Channel>, UpstreamError> {
    let items = streams.as_array().ok_or_else(|| {
        UpstreamError::Invalid("get_live_streams did not answer a JSON array".into())
    })?;
    let mut out: Vec<(Option<u64>, Channel)> = Vec::with_capacity(items.len());
    let mut seen = std::collections::HashSet::new();
    for item in items {
        let (Some(id), Some(name)) = (
            item.get("stream_id").and_then(as_text),
            item.get("name").and_then(as_text),
        ) else {
            tracing::warn!(service, "skipped xtream stream without stream_id or name");
            continue;
        };
        if id.is_empty() || name.is_empty() || !seen.insert(id.clone()) {
            continue;
        }
        let category_id = item.get("category_id").and_then(as_text).or_else(|| {
            item.get("category_ids")
                .and_then(Value::as_array)
                .and_then(|ids| ids.first())
                .and_then(as_text)
        });
        let group = category_id
            .and_then(|c| categories.get(&c).cloned())
            .unwrap_or_default();
        if !keep.is_empty() && !keep.contains(&group.to_lowercase()) {
            continue;
        }
        let text = |key: &str| item.get(key).and_then(as_text).unwrap_or_default();
        let (catchup, problem) =
            crate::catchup::from_xtream(item.get("tv_archive"), item.get("tv_archive_duration"));
        if let Some(problem) = problem {
            tracing::warn!(service, stream_id = %id, "xtream stream: {problem}");
        }
        let num = item.get("num").and_then(as_u64);
        out.push((
            num,
            Channel {
                id,
                name,
                logo: text("stream_icon"),
                group,
                tags: Vec::new(),
                tvg_id: text("epg_channel_id"),
                station_id: String::new(),
                number: num.and_then(crate::model::upstream_number),
                service: service.to_string(),
                headers: Vec::new(),
                url: None,
                catchup,
            },
        ));
    }
    // The panel's numbering is its intended order; entries without one go last.
    out.sort_by_key(|(num, _)| num.unwrap_or(u64::MAX));
    Ok(out.into_iter().map(|(_, c)| c).collect())
}

#[async_trait]
impl Service for Xtream {
    async fn channels(&self) -> Result<Vec<Channel>, UpstreamError> {
        let offset = self.check_account().await?;
        let categories = category_names(&self.api(Some("get_live_categories")).await?);
        let streams = self.api(Some("get_live_streams")).await?;
        let mut channels = live_channels(&self.name, &streams, &categories, &self.categories)?;
        for archive in channels.iter_mut().filter_map(|c| c.catchup.as_mut()) {
            archive.utc_offset = offset;
        }
        Ok(channels)
    }

    async fn resolve(&self, channel: &Channel) -> Result<ResolvedStream, UpstreamError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| UpstreamError::Invalid("base_url cannot take a path".into()))?
            .pop_if_empty()
            .push("live")
            .push(self.username.expose())
            .push(self.password.expose())
            .push(&format!("{}.{}", channel.id, self.output.ext()));
        Ok(ResolvedStream::new(url, Vec::new(), self.resolved_ttl))
    }

    fn http(&self) -> &ServiceHttp {
        &self.http
    }

    async fn vod(&self) -> Option<VodLists> {
        let (movies, series) = tokio::join!(
            self.vod_list(VodKind::Movie),
            self.vod_list(VodKind::Series)
        );
        Some(VodLists {
            movies: Some(movies),
            series: Some(series),
            skipped: 0,
        })
    }

    async fn vod_details(
        &self,
        kind: VodKind,
        id: &str,
    ) -> Option<Result<crate::vod::Details, UpstreamError>> {
        let (action, key) = match kind {
            VodKind::Movie => ("get_vod_info", "vod_id"),
            VodKind::Series => ("get_series_info", "series_id"),
        };
        let answer = self.api_with(Some(action), &[(key, id)]).await;
        Some(answer.and_then(|v| {
            match kind {
                VodKind::Movie => crate::vod::xtream::vod_info(&v),
                VodKind::Series => crate::vod::xtream::series_info(&v),
            }
            .ok_or_else(|| UpstreamError::Invalid(format!("{action}: the panel does not know `{id}`")))
        }))
    }

    fn vod_url(&self, kind: VodKind, id: &str, ext: &str) -> Option<Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .ok()?
            .pop_if_empty()
            .push(match kind {
                VodKind::Movie => "movie",
                VodKind::Series => "series",
            })
            .push(self.username.expose())
            .push(self.password.expose())
            .push(&format!("{id}.{ext}"));
        Some(url)
    }

    fn guide_source(&self) -> Option<GuideSource> {
        self.api_url("xmltv.php", &[]).ok().map(GuideSource::Url)
    }

    fn shown_url(&self, url: &Url) -> String {
        self.scrubber.text(&crate::error::redact(url))
    }

    fn account(&self) -> Option<Value> {
        let account = self
            .account
            .lock()
            .expect("account lock is never poisoned: no panics while held")
            .clone()?;
        let expires = account
            .exp_date
            // A date a clock can hold (a panel's huge `exp_date` panicked the addition).
            .filter(|&t| t <= 253_402_300_799)
            .and_then(|t| UNIX_EPOCH.checked_add(Duration::from_secs(t)))
            .map(humantime::format_rfc3339_seconds)
            .map(|t| t.to_string());
        Some(json!({
            "status": account.status,
            "expires": expires,
            "max_connections": account.max_connections,
            "active_connections": account.active_cons,
            "connections_in_use": self.slots.in_use(),
        }))
    }

    /// Every stream request (not the guide) holds one connection slot until its body
    /// is finished or dropped: a `.ts` relay for as long as it plays, an HLS playlist
    /// or segment while in flight.
    async fn fetch(
        &self,
        url: &Url,
        headers: &Headers,
        range: Option<&str>,
    ) -> Result<Fetched, UpstreamError> {
        if self.is_guide(url) {
            return self
                .http
                .get(url, headers, range)
                .await
                .map_err(|e| self.scrub(e));
        }
        let slot = self
            .slots
            .take(SLOT_WAIT.min(self.http.timeout))
            .await
            .map_err(|limit| {
                UpstreamError::Busy(format!(
                    "xtream account allows {limit} connection{}, all in use",
                    if limit == 1 { "" } else { "s" }
                ))
            })?;
        let fetched = self
            .http
            .get(url, headers, range)
            .await
            .map_err(|e| self.scrub(e))?;
        let is_html = fetched
            .content_type
            .as_deref()
            .is_some_and(|t| t.to_ascii_lowercase().contains("html"));
        if is_html {
            // Said here, without the URL: the generic message would show the path,
            // which holds the credentials.
            return Err(UpstreamError::Invalid(
                "the xtream panel answered an HTML page instead of a stream".into(),
            ));
        }
        let scrubber = self.scrubber.clone();
        let body = fetched.body.map(move |chunk| {
            // The slot is released when the body is dropped (read to the end or not).
            let _held = &slot;
            chunk.map_err(|e| scrubber.scrub(e))
        });
        Ok(Fetched {
            body: Box::pin(body),
            ..fetched
        })
    }
}

/// Takes the credentials out of error messages; shared with body streams, whose
/// errors come later.
struct Scrubber {
    username: Secret,
    password: Secret,
}

impl Scrubber {
    /// `text` with the credentials (as written, query-encoded or path-encoded)
    /// replaced by `***`.
    fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in [&self.password, &self.username] {
            let raw = secret.expose();
            if raw.is_empty() {
                continue;
            }
            let query: String = url::form_urlencoded::byte_serialize(raw.as_bytes()).collect();
            // As a page shows it: `&` `<` `>` `"` `'` written as entities.
            let html = raw
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
                .replace('\'', "&#39;");
            for form in [raw.to_string(), query, path_segment(raw), html] {
                // Short values are replaced only as whole path segments, so a short
                // username does not mangle the rest of the message.
                if form.len() >= 4 {
                    out = out.replace(&form, "***");
                } else {
                    out = out.replace(&format!("/{form}/"), "/***/");
                }
            }
        }
        out
    }

    fn scrub(&self, e: UpstreamError) -> UpstreamError {
        match e {
            UpstreamError::Status { status, url } => UpstreamError::Status {
                status,
                url: self.text(&url),
            },
            UpstreamError::Request { url, reason } => UpstreamError::Request {
                url: self.text(&url),
                reason: self.text(&reason),
            },
            UpstreamError::TooLarge { url, limit } => UpstreamError::TooLarge {
                url: self.text(&url),
                limit,
            },
            UpstreamError::Invalid(m) => UpstreamError::Invalid(self.text(&m)),
            other => other,
        }
    }
}

/// `raw` as `resolve` writes it into a URL path.
fn path_segment(raw: &str) -> String {
    let mut u = Url::parse("http://x./").expect("static URL");
    if let Ok(mut segments) = u.path_segments_mut() {
        segments.pop_if_empty().push(raw);
    }
    u.path().trim_start_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_offset_of_the_panel() {
        // 2025-12-04 15:00:00 UTC, shown as 16:00:02 local: one hour ahead.
        let info =
            |time: &str| json!({"server_info": {"timestamp_now": 1_764_860_400, "time_now": time}});
        assert_eq!(clock_offset(&info("2025-12-04 16:00:02")), 3600);
        assert_eq!(clock_offset(&info("2025-12-04 09:30:00")), -5 * 3600 - 1800);
        assert_eq!(clock_offset(&info("2025-12-04 15:00:00")), 0);
        assert_eq!(
            clock_offset(&info("2025-12-06 15:00:00")),
            0,
            "no zone is 2 days off"
        );
        assert_eq!(clock_offset(&info("soon")), 0);
        assert_eq!(clock_offset(&json!({"user_info": {}})), 0);
        // Strings for numbers, as panels send them.
        let v = json!({"server_info": {"timestamp_now": "1764860400", "time_now": "2025-12-04 17:00:00"}});
        assert_eq!(clock_offset(&v), 7200);
    }

    #[test]
    fn account_refusals_are_clear() {
        let e = parse_account(&json!({"user_info": {"auth": 0}})).unwrap_err();
        assert!(e.to_string().contains("auth=0"), "{e}");
        let e = parse_account(&json!([])).unwrap_err();
        assert!(e.to_string().contains("login refused"), "{e}");
        let e = parse_account(&json!({"user_info": {"auth": 1, "status": "Expired"}})).unwrap_err();
        assert!(e.to_string().contains("Expired"), "{e}");
        let a = parse_account(&json!({"user_info": {"auth": 1, "status": "Active",
            "exp_date": "1798761600", "max_connections": "2", "active_cons": "0"}}))
        .unwrap();
        assert_eq!(a.exp_date, Some(1_798_761_600));
        assert_eq!(a.max_connections, Some(2));
        assert_eq!(a.active_cons, Some(0));
    }

    #[test]
    fn streams_become_channels_in_panel_order() {
        let cats = category_names(&json!([
            {"category_id": "1", "category_name": "News"},
            {"category_id": 2, "category_name": "Sport"}
        ]));
        let streams = json!([
            {"num": 2, "name": "Sport 1", "stream_id": 20, "category_id": "2"},
            {"num": 1, "name": "News 1", "stream_id": "10", "stream_icon": "http://l/n.png",
             "epg_channel_id": "news1.example", "category_id": "1"},
            {"name": "no id"},
            {"num": 3, "name": "Dup", "stream_id": 10}
        ]);
        let all = live_channels("X", &streams, &cats, &[]).unwrap();
        let ids: Vec<_> = all.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["10", "20"]);
        assert_eq!(all[0].group, "News");
        assert_eq!(all[0].logo, "http://l/n.png");
        assert_eq!(all[0].tvg_id, "news1.example");
        // The panel's number goes with the channel (a new channel takes it when free).
        assert_eq!((all[0].number, all[1].number), (Some(1), Some(2)));
        let news = live_channels("X", &streams, &cats, &["news".into()]).unwrap();
        assert_eq!(news.len(), 1);
    }

    #[test]
    fn errors_lose_the_credentials() {
        let scrubber = Scrubber {
            username: Secret("al".into()),
            password: Secret("p@ss word".into()),
        };
        let e = scrubber.scrub(UpstreamError::Status {
            status: 404,
            url: "http://panel.example/live/al/p@ss%20word/1.m3u8".into(),
        });
        assert_eq!(
            e.to_string(),
            "HTTP 404 from http://panel.example/live/***/***/1.m3u8"
        );
        let e = scrubber.scrub(UpstreamError::Invalid("bad p@ss word, also".into()));
        assert_eq!(e.to_string(), "bad ***, also");
        // As a page writes it.
        let scrubber = Scrubber {
            username: Secret("al".into()),
            password: Secret("Pa&ss<W0rd!".into()),
        };
        assert_eq!(scrubber.text("you typed Pa&amp;ss&lt;W0rd!"), "you typed ***");
    }

    #[tokio::test]
    async fn slots_cap_and_free() {
        let slots = Arc::new(Slots::default());
        slots.set_limit(Some(1));
        let first = slots.take(Duration::from_millis(10)).await.unwrap();
        assert_eq!(slots.take(Duration::from_millis(10)).await.err(), Some(1));
        let waiter = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.take(Duration::from_secs(5)).await.is_ok() })
        };
        drop(first);
        assert!(waiter.await.unwrap());
        assert_eq!(slots.in_use(), 0);
    }
}
