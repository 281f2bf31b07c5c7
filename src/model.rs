//! Plain data shared by every layer: what a service offers (`Channel`), what the
//! lineup shows (`LineupChannel`), and what a resolution yields (`ResolvedStream`).
//! No IO and no behaviour beyond small accessors.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize};
use url::Url;

/// Upstream request headers, in order, names as given (HTTP names are case-insensitive).
pub type Headers = Vec<(String, String)>;

/// One channel as a single service lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Channel {
    /// The service's own id for the channel (what `resolve` takes).
    pub id: String,
    pub name: String,
    pub logo: String,
    pub group: String,
    pub tags: Vec<String>,
    /// The upstream's XMLTV id, empty when it has none.
    pub tvg_id: String,
    /// The channel's Gracenote station id (M3U `tvc-guide-stationid`, which Channels
    /// DVR reads to find its guide), empty when the upstream gives none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub station_id: String,
    /// The upstream's channel number (M3U `tvg-chno`, an Xtream panel's `num`), when it
    /// gives one: a new channel takes it when it is free (see `store::Wanted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    /// Name of the service that lists it.
    pub service: String,
    /// Headers every request for this channel's stream must carry (from `#EXTVLCOPT`,
    /// Kodi `|Referer=` suffixes...). Kept out of API output: they are upstream details.
    #[serde(skip)]
    pub headers: Headers,
    /// Where the stream is, when the listing already says it (M3U); `None` when the
    /// service must be asked (`resolve`).
    #[serde(skip)]
    pub url: Option<String>,
    /// How the service keeps past programmes of this channel (its archive), when it
    /// does. Kept out of API output: a template may hold upstream details.
    #[serde(skip)]
    pub catchup: Option<Catchup>,
}

/// The longest channel name or group kept whole, in bytes: a longer one (a list
/// gone wrong, or hostile) is cut there, at a character's edge, rather than written
/// into every playlist, guide and table.
pub const MAX_TEXT_BYTES: usize = 256;
/// The longest service channel id or tvg-id taken, in bytes: an id cut would name
/// another channel, so a channel whose id is longer is left out and a longer tvg-id
/// is read as none.
pub const MAX_ID_BYTES: usize = 512;

/// `list` as the lineup takes it (see [`MAX_TEXT_BYTES`], [`MAX_ID_BYTES`]; names and
/// groups without control characters), with the number of channels left out for
/// their id.
pub fn bounded(mut list: Vec<Channel>) -> (Vec<Channel>, usize) {
    let before = list.len();
    list.retain(|c| c.id.len() <= MAX_ID_BYTES);
    for c in &mut list {
        for text in [&mut c.name, &mut c.group] {
            // A line break or terminal control shows as a space, in every output
            // (JSON as well: players show it as it comes).
            if text.chars().any(|ch| crate::m3u::printable(ch) != ch) {
                *text = text.chars().map(crate::m3u::printable).collect();
            }
            if text.len() > MAX_TEXT_BYTES {
                let mut end = MAX_TEXT_BYTES;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
            }
        }
        for id in [&mut c.tvg_id, &mut c.station_id] {
            if id.len() > MAX_ID_BYTES {
                id.clear();
            }
        }
    }
    let dropped = before - list.len();
    (list, dropped)
}

/// The highest upstream channel number taken as given; a larger one is ignored (a
/// panel's internal id, not a number anyone dials).
pub const MAX_UPSTREAM_NUMBER: u32 = 999_999;

/// `n` as an upstream channel number (`Channel::number`): 1 to [`MAX_UPSTREAM_NUMBER`].
pub fn upstream_number(n: u64) -> Option<u32> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_UPSTREAM_NUMBER).contains(n))
}

/// How a source builds the address of its archive (catch-up, timeshift), as M3U lists
/// spell it in `catchup="..."`; see `crate::catchup` for each form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchupKind {
    /// `source` is the whole archive URL template; without one, like `Shift`.
    #[default]
    Default,
    /// `source` (a query or path template) is appended to the live URL.
    Append,
    /// `?utc={utc}&lutc={lutc}` appended to the live URL (SIPTV; also `timeshift="N"`).
    Shift,
    /// Flussonic: `index.m3u8` becomes `index-{utc}-{duration}.m3u8`, `mpegts` becomes
    /// `timeshift_abs-{utc}.ts`.
    Flussonic,
    /// Xtream Codes: `/live/U/P/ID.ext` becomes `/timeshift/U/P/{minutes}/{Y-m-d:H-M}/ID.ts`.
    Xtream,
}

/// A source's archive: how far back it reaches and how its address is made.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Catchup {
    pub kind: CatchupKind,
    /// Days of past programmes the archive keeps (at least 1).
    pub days: u32,
    /// The `catchup-source` template (placeholders such as `{utc}`, `${start}`,
    /// `{duration}`, `{Y}`...); empty when the kind builds the address alone.
    pub source: String,
    /// Seconds the archive's clock is ahead of UTC, for addresses that write the start
    /// as a date in the upstream's local time (Xtream panels do).
    pub utc_offset: i32,
}

/// An immutable, cheaply shared string: what the lineup's text fields hold. A lineup of
/// 150,000 channels is kept in several forms at once (the merged channels with their
/// ids and numbers, the mapped lineup every output reads, each channel's upstream
/// values for its detail), and a group, logo or service name repeats across thousands
/// of channels: one `Text` is one allocation however many of them point at it, and a
/// clone is a reference count. Reads as a `&str` (`Deref`, `as_str`, `==` with
/// strings), serializes as one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text(Arc<str>);

impl Text {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when both are the very same allocation (not only equal text).
    pub fn same(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl Default for Text {
    /// The empty text, shared: most channels have no logo or group.
    fn default() -> Self {
        static EMPTY: OnceLock<Text> = OnceLock::new();
        EMPTY.get_or_init(|| Text(Arc::from(""))).clone()
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Text {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, not `write_str`: widths and alignment (`{:<32}`) apply as to a `str`.
        f.pad(&self.0)
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        if s.is_empty() {
            return Self::default();
        }
        Self(Arc::from(s))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self::from(s.as_str())
    }
}

impl From<&String> for Text {
    fn from(s: &String) -> Self {
        Self::from(s.as_str())
    }
}

impl From<Text> for String {
    fn from(t: Text) -> Self {
        t.as_str().to_string()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        *self == *other.0
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        **self == *other.0
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        **self == *other.0
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Hands out one shared [`Text`] per distinct string: the lineup's groups, logos and
/// service names repeat across thousands of channels.
#[derive(Default)]
pub struct Interner(std::collections::HashSet<Text>);

impl Interner {
    pub fn get(&mut self, s: &str) -> Text {
        if let Some(t) = self.0.get(s) {
            return t.clone();
        }
        let t = Text::from(s);
        self.0.insert(t.clone());
        t
    }
}

/// One source of a lineup channel: a (service, channel id) pair.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Source {
    #[schema(value_type = String)]
    pub service: Text,
    #[schema(value_type = String)]
    pub channel_id: Text,
    #[schema(value_type = String)]
    pub name: Text,
    pub priority: i64,
    /// Days of programmes this source's archive keeps (0: none); the channel's
    /// `catchup_days` is the most of its sources'.
    #[serde(skip)]
    #[schema(ignore)]
    pub catchup_days: u32,
}

/// A channel of the merged lineup, as clients see it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LineupChannel {
    /// Stable slug, e.g. `bbc-one`; persisted so it never changes on refresh.
    #[schema(value_type = String)]
    pub id: Text,
    /// Stable channel number (tvg-chno, HDHomeRun GuideNumber); persisted.
    pub number: u32,
    #[schema(value_type = String)]
    pub name: Text,
    #[schema(value_type = String)]
    pub logo: Text,
    /// The service whose channel gave `logo` (its headers fetch it, `/logos/` links are
    /// sealed under it); empty for a logo an admin set, or none.
    #[serde(skip)]
    #[schema(ignore)]
    pub logo_from: Text,
    #[schema(value_type = String)]
    pub group: Text,
    pub tags: Vec<String>,
    /// The one id used as playlist `tvg-id` and XMLTV `<channel id>` (`name.domain` form).
    #[schema(value_type = String)]
    pub guide_id: Text,
    /// Gracenote station id, written as the playlist's `tvc-guide-stationid` (Channels
    /// DVR); empty when neither a source nor the mapping gives one.
    #[schema(value_type = String)]
    pub station_id: Text,
    /// Sources ordered by service priority: the order fallback tries them in.
    pub sources: Vec<Source>,
    /// Days of past programmes the channel can be watched from (catch-up): the
    /// longest archive among its sources; 0 when none has one.
    pub catchup_days: u32,
}

impl LineupChannel {
    /// The days of catch-up kept by this channel's sources of the services `uses` allows.
    pub fn catchup_days_of(&self, uses: impl Fn(&str) -> bool) -> u32 {
        self.sources
            .iter()
            .filter(|s| uses(&s.service))
            .map(|s| s.catchup_days)
            .max()
            .unwrap_or(0)
    }
}

/// A user's overrides of one lineup channel (`PATCH /api/channels/{id}`), persisted by
/// the store under the channel's slug. `None` (and `hidden: false`) means the merged
/// upstream value stands; the slug itself never changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ChannelMapping {
    pub name: Option<String>,
    /// Replaces the assigned number everywhere (tvg-chno, GuideNumber, `/auto/v{n}`).
    pub number: Option<u32>,
    pub group: Option<String>,
    /// Out of every listing (API, search, playlist, tuner lineup), still addressable by id.
    pub hidden: bool,
    /// Used verbatim as the guide id (playlist `tvg-id`, XMLTV channel id); `""`: the
    /// id derived from the slug.
    pub tvg_id: Option<String>,
    pub logo: Option<String>,
    /// The Gracenote station id (`tvc-guide-stationid`); `""`: none, whatever the
    /// sources give.
    pub station_id: Option<String>,
    /// Services whose sources come first, in this order (pinning); the rest follow in
    /// priority order. Never `Some(empty)`.
    pub sources: Option<Vec<String>>,
}

impl ChannelMapping {
    /// True when nothing is overridden (the store then keeps no row).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The body of `PATCH /api/channels/{id}`: a missing field keeps its override, `null`
/// resets it to the upstream value, a value sets it. Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelPatch {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, nullable)]
    pub number: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable)]
    pub group: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<bool>, nullable)]
    pub hidden: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable)]
    pub tvg_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable)]
    pub logo: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable)]
    pub station_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>, nullable)]
    pub sources: Option<Option<Vec<String>>>,
}

/// A field that is present: `Some(None)` for `null`, `Some(Some(v))` for a value (a
/// missing field never gets here: `#[serde(default)]` makes it `None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// What the services say about a lineup channel before the user's mapping.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct UpstreamChannel {
    /// The number assigned when the channel first appeared.
    pub number: u32,
    #[schema(value_type = String)]
    pub name: Text,
    #[schema(value_type = String)]
    pub logo: Text,
    #[schema(value_type = String)]
    pub group: Text,
    /// The merged upstream tvg-id, empty when no source has one.
    #[schema(value_type = String)]
    pub tvg_id: Text,
    #[schema(value_type = String)]
    pub guide_id: Text,
    /// The first source's station id that gives one, empty when none does.
    #[schema(value_type = String)]
    pub station_id: Text,
}

/// One lineup channel with its mapping, as `GET`/`PATCH /api/channels/{id}` show it:
/// the channel as every other output shows it, whether it is hidden, the overrides and
/// the upstream values they replace.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ChannelDetail {
    #[serde(flatten)]
    pub channel: LineupChannel,
    pub hidden: bool,
    pub mapping: ChannelMapping,
    pub upstream: UpstreamChannel,
}

/// The answer of `Service::resolve`: where the stream is and how to ask for it.
#[derive(Debug, Clone)]
pub struct ResolvedStream {
    pub url: Url,
    /// Headers that every later request for this stream (playlists, segments, keys) carries,
    /// on top of the service's own headers.
    pub headers: Headers,
    /// How long this resolution may be reused.
    pub valid_for: Duration,
}

impl ResolvedStream {
    /// A resolution valid for `ttl`, shortened when the URL itself says it expires sooner
    /// (`expires=`/`exp=`/`e=` unix-seconds query values, common in tokenised CDN links,
    /// or a JWT's `exp`; see [`url_expires_at`]).
    pub fn new(url: Url, headers: Headers, ttl: Duration) -> Self {
        let valid_for = url_expiry(&url).map_or(ttl, |left| left.min(ttl));
        Self {
            url,
            headers,
            valid_for,
        }
    }
}

/// Time left before a tokenised URL expires (10 s early), when its query says so.
fn url_expiry(url: &Url) -> Option<Duration> {
    let left = url_expires_at(url)?
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    Some(left.saturating_sub(Duration::from_secs(10)))
}

/// When a tokenised URL stops working, as its query says: the earliest of the
/// `expires`/`exp`/`e`/`expiry` unix-seconds values and of the `exp` claim of any query
/// value that is a JWT (`header.payload.signature`, base64url). `None` when it says
/// nothing (the signature is not checked: this is only a hint for refreshing early).
pub fn url_expires_at(url: &Url) -> Option<std::time::SystemTime> {
    url.query_pairs()
        .filter_map(|(k, v)| {
            if matches!(k.as_ref(), "expires" | "exp" | "e" | "expiry") {
                if let Ok(ts) = v.parse::<u64>() {
                    return Some(ts);
                }
            }
            jwt_exp(&v)
        })
        // Only plausible unix timestamps (after 2001, before 10000): `e=5` is not an
        // expiry, and `expires=9223372036854775808` must not overflow the clock.
        .filter(|&ts| (1_000_000_001..=253_402_300_799).contains(&ts))
        .min()
        .and_then(|ts| std::time::UNIX_EPOCH.checked_add(Duration::from_secs(ts)))
}

/// The `exp` claim of a JWT, unverified.
fn jwt_exp(value: &str) -> Option<u64> {
    use base64::Engine as _;
    let mut parts = value.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !value.starts_with("eyJ") {
        return None;
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    claims.get("exp")?.as_u64()
}

/// Health and counters of one service, as `/api/services/status` shows them.
#[derive(Debug, Clone, Serialize, Default, utoipa::ToSchema)]
pub struct ServiceStatus {
    pub name: String,
    pub kind: String,
    pub enabled: bool,
    pub priority: i64,
    pub description: String,
    /// Its circuit is closed, fewer than 3 calls in a row failed, and it has answered
    /// at least once (or not been asked yet).
    pub healthy: bool,
    /// The channels it gives the lineup: its last list that loaded, in this run or,
    /// after a restart, as kept in `state_dir/lists/` (while its list fails too).
    pub channel_count: usize,
    pub last_error: Option<String>,
    /// RFC 3339 time of the last upstream call, `None` before the first.
    pub last_checked: Option<String>,
    pub latency_ms: Option<u64>,
    pub successes: u64,
    pub failures: u64,
    /// Its streams' playlists and segments served through freesky (`.m3u8` links and
    /// `.ts` relays), cached ones included.
    pub stream_successes: u64,
    /// Its streams' playlists and segments that failed, and relay sources given up
    /// (each a failover): counted here, not in `success_rate` or the circuit.
    pub stream_failures: u64,
    /// Why its last stream failure failed (kept when its streams play again: see
    /// `last_stream_error_at`).
    pub last_stream_error: Option<String>,
    /// RFC 3339 time of `last_stream_error`.
    pub last_stream_error_at: Option<String>,
    /// The circuit breaker (`health`): `"closed"`, `"open"` (fallback skips the
    /// service, trying it only when no other source is left) or `"half_open"` (the
    /// next call is a trial).
    pub circuit: String,
    /// Successes among the last 20 outcomes, 0..=1; `None` before the first.
    pub success_rate: Option<f64>,
    /// Exponentially weighted latency of successful calls.
    pub latency_ewma_ms: Option<u64>,
    pub consecutive_failures: u32,
    /// RFC 3339 time an open circuit allows its next trial; `None` unless open.
    pub retry_at: Option<String>,
    /// The upstream account (expiry, connection limit), for kinds that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub account: Option<serde_json::Value>,
    /// The fields set through the API (`"enabled"`, `"priority"`), which win over the
    /// config's until reset (`POST /api/services/{name}/reset`).
    pub overridden: Vec<String>,
}

/// When a service operation started, for latency accounting.
#[derive(Debug, Clone, Copy)]
pub struct Started(pub Instant);

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(id: &str, name: &str, tvg_id: &str) -> Channel {
        Channel {
            id: id.into(),
            name: name.into(),
            logo: String::new(),
            group: name.into(),
            tags: Vec::new(),
            tvg_id: tvg_id.into(),
            station_id: String::new(),
            number: None,
            service: "A".into(),
            headers: Vec::new(),
            url: None,
            catchup: None,
        }
    }

    #[test]
    fn bounded_cuts_texts_at_a_characters_edge_and_leaves_out_overlong_ids() {
        // 'é' is two bytes: 255 of 'a' then 'é' would end inside it at 256.
        let long = format!("{}é{}", "a".repeat(255), "b".repeat(10));
        let (list, dropped) = bounded(vec![
            channel("ok", &long, &"t".repeat(MAX_ID_BYTES + 1)),
            channel("ctl", "Evil\nCat\u{1}<b>", ""),
            channel(&"i".repeat(MAX_ID_BYTES + 1), "Gone", ""),
            channel("plain", "Plain", "Plain.example"),
        ]);
        assert_eq!(dropped, 1);
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].name, "a".repeat(255));
        assert_eq!(list[0].group, "a".repeat(255));
        assert_eq!(list[0].tvg_id, "");
        assert_eq!(
            (&*list[1].name, &*list[1].group),
            ("Evil Cat <b>", "Evil Cat <b>")
        );
        assert_eq!(list[2], channel("plain", "Plain", "Plain.example"));
    }
}
