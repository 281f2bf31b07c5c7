//! Time-bound events of a `json_api` service (`[services.events]`): sports fixtures and
//! the like. An event is a channel only from `lead` before its start until `tail` after
//! its end, under a channel id and tvg-id derived from the event's own id (so its lineup
//! slug and number persist like any channel's), and it has one programme in the
//! service's own guide. Pure: the listing's JSON and the clock come in, events, channels
//! and XMLTV go out; `json_api.rs` does the fetching.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::text_at;
use crate::config::de_duration;
use crate::lineup::slugify;
use crate::model::Channel;

/// `[services.events]`: where the event list is and how to read each event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Path of the event list, joined to `base_url`.
    pub path: String,
    /// Pointer to the array of events; `""` when the body is the array.
    #[serde(default)]
    pub list: String,
    #[serde(default = "ptr_id")]
    pub id: String,
    #[serde(default = "ptr_title")]
    pub title: String,
    /// RFC 3339 text, or unix seconds (number or digits; milliseconds are recognised).
    #[serde(default = "ptr_start")]
    pub start: String,
    #[serde(default = "ptr_end")]
    pub end: String,
    /// Shown before the title (`"{league}: {title}"`) and as the programme's category.
    #[serde(default)]
    pub league: Option<String>,
    #[serde(default)]
    pub logo: Option<String>,
    /// Pointer to the event's stream URL in the list; an event without one resolves
    /// through `[services.stream]` with its id as `{channel_id}`.
    #[serde(default)]
    pub stream: Option<String>,
    /// Group of every event channel.
    #[serde(default = "sports")]
    pub group: String,
    /// An event is listed this long before its start ...
    #[serde(default = "lead", deserialize_with = "de_duration")]
    pub lead: Duration,
    /// ... and kept this long after its end (overtime, delays).
    #[serde(default = "tail", deserialize_with = "de_duration")]
    pub tail: Duration,
}

fn ptr_id() -> String {
    "/id".into()
}
fn ptr_title() -> String {
    "/title".into()
}
fn ptr_start() -> String {
    "/start".into()
}
fn ptr_end() -> String {
    "/end".into()
}
fn sports() -> String {
    "Sports".into()
}
fn lead() -> Duration {
    Duration::from_secs(30 * 60)
}
fn tail() -> Duration {
    Duration::from_secs(15 * 60)
}

impl EventsConfig {
    /// The pointers, named as config fields, for `JsonApiConfig::validate`.
    pub fn pointers(&self) -> Vec<(&'static str, Option<&String>)> {
        vec![
            ("events.list", Some(&self.list)),
            ("events.id", Some(&self.id)),
            ("events.title", Some(&self.title)),
            ("events.start", Some(&self.start)),
            ("events.end", Some(&self.end)),
            ("events.league", self.league.as_ref()),
            ("events.logo", self.logo.as_ref()),
            ("events.stream", self.stream.as_ref()),
        ]
    }
}

/// One event as the upstream lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The upstream's id: `{channel_id}` of `[services.stream]`.
    pub id: String,
    pub title: String,
    pub league: String,
    pub logo: String,
    /// Unix seconds.
    pub start: i64,
    pub end: i64,
    /// From the list (`events.stream`), absolute.
    pub stream: Option<Url>,
}

impl Event {
    /// `"{league}: {title}"`, or the title.
    pub fn name(&self) -> String {
        if self.league.is_empty() {
            self.title.clone()
        } else {
            format!("{}: {}", self.league, self.title)
        }
    }

    /// Listed at `now`: within [start - lead, end + tail].
    pub fn listed_at(&self, now: i64, cfg: &EventsConfig) -> bool {
        let lead = i64::try_from(cfg.lead.as_secs()).unwrap_or(i64::MAX);
        let tail = i64::try_from(cfg.tail.as_secs()).unwrap_or(i64::MAX);
        self.start.saturating_sub(lead) <= now && now <= self.end.saturating_add(tail)
    }

    /// The channel id: the event id, prefixed so it cannot meet a fixed channel's.
    pub fn channel_id(&self) -> String {
        format!("event-{}", self.id)
    }

    /// A tvg-id in XMLTV's `name.domain` form that only this event of this service
    /// has, so the lineup keeps one slug and number per event.
    pub fn tvg_id(&self, service: &str) -> String {
        let plain = self
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
        let id = if plain {
            self.id.to_ascii_lowercase()
        } else {
            // Slugs of two different ids may be equal; the hash keeps them apart.
            format!("{}-{:08x}", slugify(&self.id), fnv1a(&self.id))
        };
        format!("{id}.{}.event", slugify(service))
    }

    pub fn channel(&self, service: &str, cfg: &EventsConfig) -> Channel {
        Channel {
            id: self.channel_id(),
            name: self.name(),
            logo: self.logo.clone(),
            group: cfg.group.clone(),
            tags: if self.league.is_empty() {
                Vec::new()
            } else {
                vec![self.league.clone()]
            },
            tvg_id: self.tvg_id(service),
            station_id: String::new(),
            number: None,
            service: service.to_string(),
            headers: Vec::new(),
            url: self.stream.as_ref().map(Url::to_string),
            catchup: None,
        }
    }
}

/// A small stable hash (unlike `std`'s, the same in every build).
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The events of a list answer, and one line per entry skipped (malformed, duplicate).
/// `Err` when the list itself is missing.
pub fn parse(
    json: &Value,
    cfg: &EventsConfig,
    base: &Url,
) -> Result<(Vec<Event>, Vec<String>), String> {
    let items = json
        .pointer(&cfg.list)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("events.list `{}` does not point to an array", cfg.list))?;
    let mut events: Vec<Event> = Vec::with_capacity(items.len());
    let mut skipped = Vec::new();
    let mut ids = std::collections::HashSet::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match event(item, cfg, base) {
            Ok(e) if !ids.insert(e.id.clone()) => {
                skipped.push(format!("event {i} (`{}`): duplicate id", e.id));
            }
            Ok(e) => events.push(e),
            Err(why) => skipped.push(format!("event {i}: {why}")),
        }
    }
    Ok((events, skipped))
}

fn event(item: &Value, cfg: &EventsConfig, base: &Url) -> Result<Event, String> {
    let field = |name: &str, p: &str| {
        text_at(item, p)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("no {name} (events.{name} `{p}`)"))
    };
    let id = field("id", &cfg.id)?;
    let title = field("title", &cfg.title)?;
    let time = |name: &str, p: &str| -> Result<i64, String> {
        let v = item
            .pointer(p)
            .filter(|v| !v.is_null())
            .ok_or_else(|| format!("`{id}`: no {name} (events.{name} `{p}`)"))?;
        parse_time(v)
            .ok_or_else(|| format!("`{id}`: {name} {v} is neither RFC 3339 nor unix seconds"))
    };
    let start = time("start", &cfg.start)?;
    let end = time("end", &cfg.end)?;
    if end <= start {
        return Err(format!("`{id}`: ends before it starts"));
    }
    let opt = |p: &Option<String>| {
        p.as_deref()
            .and_then(|p| text_at(item, p))
            .unwrap_or_default()
    };
    let stream = cfg
        .stream
        .as_deref()
        .and_then(|p| text_at(item, p))
        .filter(|s| !s.is_empty())
        .and_then(|s| base.join(&s).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"));
    Ok(Event {
        title,
        league: opt(&cfg.league),
        logo: opt(&cfg.logo),
        start,
        end,
        stream,
        id,
    })
}

/// Unix seconds from RFC 3339 text (`2026-05-01T19:45:00Z`, `...+02:00`) or a unix
/// timestamp, number or digits; values too large for seconds are milliseconds.
pub fn parse_time(v: &Value) -> Option<i64> {
    let n = match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))?,
        Value::String(s) => {
            let s = s.trim();
            match s.parse::<i64>() {
                Ok(n) => n,
                Err(_) => {
                    return chrono::DateTime::parse_from_rfc3339(s)
                        .ok()
                        .map(|t| t.timestamp())
                }
            }
        }
        _ => return None,
    };
    // Seconds reach 1e11 only in the year 5138: such values are milliseconds.
    let secs = if n.abs() >= 100_000_000_000 {
        n / 1000
    } else {
        n
    };
    // Only times an XMLTV guide can write (years 1 to 9999): past them the guide's
    // programme would stop in 1970 or carry a year of six digits.
    (-62_135_596_800..=253_402_300_799)
        .contains(&secs)
        .then_some(secs)
}

/// The XMLTV guide of `events` (those listed now): one channel and one programme each.
pub fn guide(events: &[Event], service: &str) -> String {
    use quick_xml::escape::escape;
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<tv>\n");
    for e in events {
        out.push_str(&format!(
            "  <channel id=\"{}\"><display-name>{}</display-name></channel>\n",
            escape(e.tvg_id(service)),
            escape(e.name())
        ));
    }
    for e in events {
        let category = if e.league.is_empty() {
            String::new()
        } else {
            format!("<category>{}</category>", escape(&e.league))
        };
        out.push_str(&format!(
            "  <programme start=\"{}\" stop=\"{}\" channel=\"{}\"><title>{}</title>{category}</programme>\n",
            crate::xmltv::format_time(e.start),
            crate::xmltv::format_time(e.end),
            escape(e.tvg_id(service)),
            escape(&e.title),
        ));
    }
    out.push_str("</tv>\n");
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cfg() -> EventsConfig {
        toml::from_str(
            "path = \"events\"\nlist = \"/events\"\nleague = \"/league\"\nstream = \"/hls\"",
        )
        .unwrap()
    }

    #[test]
    fn times_in_every_accepted_form() {
        let check = |v: Value, expected: Option<i64>| assert_eq!(parse_time(&v), expected, "{v}");
        check(json!("2026-05-01T19:45:00Z"), Some(1_777_664_700));
        check(json!("2026-05-01T21:45:00+02:00"), Some(1_777_664_700));
        check(json!(1_777_664_700), Some(1_777_664_700));
        check(json!("1777664700"), Some(1_777_664_700));
        check(json!(1_777_664_700_000_i64), Some(1_777_664_700));
        check(json!("tomorrow"), None);
        check(json!(true), None);
        // Past what a guide can write (a fuzzed event list found the first one).
        check(json!(1_777_611_111_111_172_800_i64), None);
        check(json!(-99_999_999_999_i64), None);
        check(json!("9999-12-31T23:59:59Z"), Some(253_402_300_799));
    }

    #[test]
    fn malformed_entries_are_skipped_and_the_window_applies() {
        let base = Url::parse("http://api.example/v1/").unwrap();
        let body = json!({"events": [
            {"id": 1, "title": "A v B", "league": "Cup", "start": 1000, "end": 2000, "hls": "live/1.m3u8"},
            {"id": "x/y", "title": "C v D", "start": "1970-01-01T00:50:00Z", "end": 9000},
            {"id": 3, "title": "No start", "end": 2000},
            {"id": 4, "title": "Bad time", "start": "soon", "end": 2000},
            {"id": 1, "title": "Duplicate", "start": 1000, "end": 2000},
        ]});
        let (events, skipped) = parse(&body, &cfg(), &base).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(skipped[0].contains("no start"), "{skipped:?}");
        assert!(skipped[1].contains("neither RFC 3339"), "{skipped:?}");
        assert!(skipped[2].contains("(`1`): duplicate id"), "{skipped:?}");
        let a = &events[0];
        assert_eq!(a.name(), "Cup: A v B");
        assert_eq!(
            a.stream.as_ref().map(Url::as_str),
            Some("http://api.example/v1/live/1.m3u8")
        );
        assert_eq!(a.tvg_id("My API"), "1.my-api.event");
        let c = &events[1];
        assert_eq!((c.start, c.name()), (3000, "C v D".to_string()));
        assert!(crate::lineup::guide_id(&c.tvg_id("S"), "x").ends_with(".s.event"));
        // lead 30 min, tail 15 min
        assert!(!a.listed_at(1000 - 1801, &cfg()));
        assert!(a.listed_at(1000 - 1800, &cfg()));
        assert!(a.listed_at(2000 + 900, &cfg()));
        assert!(!a.listed_at(2000 + 901, &cfg()));
        assert!(parse(&json!({}), &cfg(), &base).is_err());
    }
}
