//! Catch-up (archive, timeshift): what a source's listing says about its archive
//! (M3U `catchup`, `catchup-days`, `catchup-source`, `timeshift`; Xtream `tv_archive`,
//! `tv_archive_duration`), the address of a source's archive for a past time window,
//! and the checks a timeshift request passes first.
//!
//! Pure: no IO. Listing input is untrusted: a value that cannot be understood becomes
//! a warning for the caller to count and log, never a failed list.
//!
//! Archive address forms (`catchup="..."`):
//! - `default`: `catchup-source` is the whole URL template; without one, as `shift`.
//! - `append`: `catchup-source` is appended to the live URL (`?`/`&` fixed up).
//! - `shift` (SIPTV; also `timeshift="N"`): `?utc={utc}&lutc={lutc}` appended.
//! - `flussonic` (`fs`, `flussonic-hls`, `flussonic-ts`): `.../index.m3u8` becomes
//!   `.../index-{utc}-{duration}.m3u8`, `.../mpegts` becomes `.../timeshift_abs-{utc}.ts`.
//! - `xc` (Xtream Codes): `.../live/U/P/ID.ext` (or `.../U/P/ID`) becomes
//!   `.../timeshift/U/P/{minutes}/{Y-m-d:H-M}/ID.ts`, the start in the panel's local
//!   time (`Catchup::utc_offset`).
//!
//! Template placeholders (Kodi IPTV Simple and TiviMate spellings; times in UTC):
//! `{utc}` `${start}` `{start}` start (unix seconds); `{utcend}` `${end}` `{end}` end;
//! `{lutc}` `${now}` `${timestamp}` `{timestamp}` now; `{duration}` `${duration}`
//! seconds, `{duration:N}` seconds / N; `{offset}` now - start, `{offset:N}` / N;
//! `{Y}` `{m}` `{d}` `{H}` `{M}` `{S}` parts of the start; `{utc:FMT}` (and every
//! time placeholder with `:FMT`) the time written with `Y m d H M S` in FMT replaced.
//! Anything else in braces is left as written.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike, Utc};

use crate::model::{Catchup, CatchupKind};

/// Archives longer than this are taken as this long (a year of programmes is already
/// more than any guide keeps).
pub const MAX_DAYS: u32 = 365;
/// Days of archive assumed when a listing enables catch-up without saying how long.
pub const DEFAULT_DAYS: u32 = 1;
/// The longest window one timeshift request may ask for (the panels' own limit is
/// usually a few hours).
pub const MAX_MINUTES: u32 = 24 * 60;

/// Why an archive address cannot be made for a source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error("its live URL `{0}` does not have the {1} form, so its archive address is unknown")]
    UnknownForm(String, &'static str),
    #[error("its catch-up address `{0}` is not a valid URL")]
    BadUrl(String),
}

/// The catch-up of one M3U entry: the entry's attributes first, then the list
/// header's (lists put shared defaults on `#EXTM3U`). `Ok(None)`: the entry has no
/// catch-up. `Err`: something was written but not understood (the entry has no
/// catch-up then, or the default number of days, as the message says).
pub fn from_m3u<'a>(
    entry: impl Fn(&str) -> Option<&'a str>,
    header: impl Fn(&str) -> Option<&'a str>,
) -> (Option<Catchup>, Option<String>) {
    let get = |key: &str| entry(key).or_else(|| header(key)).map(str::trim);
    let mode = get("catchup").filter(|m| !m.is_empty());
    let source = get("catchup-source").unwrap_or_default().to_string();
    let timeshift = get("timeshift");
    let kind = match mode.map(str::to_ascii_lowercase).as_deref() {
        Some("default") => CatchupKind::Default,
        Some("append") => CatchupKind::Append,
        Some("shift") => CatchupKind::Shift,
        Some("flussonic" | "flussonic-hls" | "flussonic-ts" | "fs") => CatchupKind::Flussonic,
        Some("xc") => CatchupKind::Xtream,
        Some(other) => {
            return (
                None,
                Some(format!(
                    "catch-up mode `{other}` is not supported (default, append, shift, flussonic, xc); catch-up ignored"
                )),
            )
        }
        // The old SIPTV spelling: `timeshift="N"` alone is `shift` for N days.
        None if timeshift.is_some() => CatchupKind::Shift,
        None if !source.is_empty() => CatchupKind::Default,
        None => return (None, None),
    };
    let (days, warning) = match get("catchup-days").or(timeshift) {
        None | Some("") => (DEFAULT_DAYS, None),
        Some(v) => match parse_days(v) {
            Some(0) => return (None, None),
            Some(d) if d > MAX_DAYS => (
                MAX_DAYS,
                Some(format!(
                    "catch-up days `{v}` taken as {MAX_DAYS}, the longest kept"
                )),
            ),
            Some(d) => (d, None),
            None => (
                DEFAULT_DAYS,
                Some(format!(
                    "catch-up days `{v}` is not a number of days; {DEFAULT_DAYS} assumed"
                )),
            ),
        },
    };
    let catchup = Catchup {
        kind,
        days,
        source,
        ..Catchup::default()
    };
    (Some(catchup), warning)
}

/// A number of days as lists write it: `7`, `"7"`, `7.0`, ` 7 `. Negative, non-finite
/// or non-numeric: `None`.
fn parse_days(v: &str) -> Option<u32> {
    let v = v.trim();
    if let Ok(d) = v.parse::<u32>() {
        return Some(d);
    }
    let f: f64 = v.parse().ok()?;
    (f.is_finite() && f >= 0.0).then(|| f.ceil().min(f64::from(u32::MAX)) as u32)
}

/// The catch-up of an Xtream `get_live_streams` entry from its `tv_archive` (`1`,
/// `"1"`) and `tv_archive_duration` (days, a number or a string). `Err` when the panel
/// says there is an archive but its length is not a number (then `DEFAULT_DAYS`).
pub fn from_xtream(
    tv_archive: Option<&serde_json::Value>,
    duration: Option<&serde_json::Value>,
) -> (Option<Catchup>, Option<String>) {
    use serde_json::Value;
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    };
    if !tv_archive.and_then(number).is_some_and(|a| a >= 1.0) {
        return (None, None);
    }
    let (days, warning) = match duration {
        None | Some(Value::Null) => (DEFAULT_DAYS, None),
        Some(v) => match number(v).filter(|d| d.is_finite() && *d >= 0.0) {
            Some(0.0) => return (None, None),
            Some(d) => ((d.ceil() as u32).min(MAX_DAYS), None),
            None => (
                DEFAULT_DAYS,
                Some(format!(
                    "tv_archive_duration `{v}` is not a number of days; {DEFAULT_DAYS} assumed"
                )),
            ),
        },
    };
    let catchup = Catchup {
        kind: CatchupKind::Xtream,
        days,
        ..Catchup::default()
    };
    (Some(catchup), warning)
}

/// A past window of one channel: from `start` for `duration` seconds, asked at `now`
/// (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub duration: u32,
    pub now: i64,
}

impl Window {
    pub fn end(&self) -> i64 {
        self.start + i64::from(self.duration)
    }
}

/// Why a timeshift request is refused before any source is asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("`{0}` is not a start time (unix seconds, YYYY-MM-DD:HH-MM or RFC 3339, in UTC)")]
    BadStart(String),
    #[error("`{0}` is not an end time (unix seconds, YYYY-MM-DD:HH-MM or RFC 3339, in UTC)")]
    BadEnd(String),
    #[error("the end must be after the start")]
    EndNotAfterStart,
    #[error("the duration must be 1 to {MAX_MINUTES} minutes")]
    BadDuration,
    #[error("the start is in the future; catch-up plays past programmes")]
    Future,
}

/// A start time as players send it: unix seconds (`1764856800`), Xtream's
/// `YYYY-MM-DD:HH-MM` (seconds optional: `:HH-MM-SS`), `YYYY-MM-DD HH:MM[:SS]` or
/// RFC 3339. Times without a zone are UTC.
pub fn parse_start(s: &str) -> Result<i64, WindowError> {
    let t = s.trim();
    let bad = || WindowError::BadStart(s.chars().take(40).collect());
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = t.parse().map_err(|_| bad())?;
        // Milliseconds (13 digits) from players that count in them.
        return Ok(if n > 100_000_000_000 { n / 1000 } else { n });
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.timestamp());
    }
    for format in [
        "%Y-%m-%d:%H-%M-%S",
        "%Y-%m-%d:%H-%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, format) {
            return Ok(dt.and_utc().timestamp());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .map_or(0, |dt| dt.and_utc().timestamp()));
    }
    Err(bad())
}

/// The request's window: `duration_minutes`, else `end` (unix seconds or as
/// `parse_start`), else an hour. Refused when it starts in the future or is empty or
/// longer than `MAX_MINUTES`.
pub fn window(
    start: &str,
    duration_minutes: Option<u32>,
    end: Option<&str>,
    now: i64,
) -> Result<Window, WindowError> {
    let start = parse_start(start)?;
    let seconds = match (duration_minutes, end) {
        (Some(m), _) => i64::from(m) * 60,
        (None, Some(end)) => {
            let end = parse_start(end).map_err(|e| match e {
                WindowError::BadStart(v) => WindowError::BadEnd(v),
                other => other,
            })?;
            if end <= start {
                return Err(WindowError::EndNotAfterStart);
            }
            end - start
        }
        (None, None) => 3600,
    };
    if seconds <= 0 || seconds > i64::from(MAX_MINUTES) * 60 {
        return Err(WindowError::BadDuration);
    }
    if start > now {
        return Err(WindowError::Future);
    }
    Ok(Window {
        start,
        duration: seconds as u32,
        now,
    })
}

/// True when an archive of `days` still holds the programme starting at `w.start`.
pub fn covers(days: u32, w: &Window) -> bool {
    days > 0 && w.start >= w.now - i64::from(days) * 86_400
}

/// True when a programme from `start` to `stop` (unix seconds) can be replayed at
/// `now` from an archive of `days`: it has ended and its start is within the days
/// (Xtream's `has_archive` in a short guide).
pub fn has_archive(days: u32, start: i64, stop: i64, now: i64) -> bool {
    days > 0 && stop <= now && start >= now - i64::from(days) * 86_400
}

/// The address of `c`'s archive for window `w`, `live` being the source's live URL.
pub fn archive_url(c: &Catchup, live: &str, w: &Window) -> Result<String, ArchiveError> {
    let url = match c.kind {
        CatchupKind::Default if !c.source.trim().is_empty() => expand(c.source.trim(), w),
        CatchupKind::Default | CatchupKind::Shift => shift(live, w),
        CatchupKind::Append if c.source.trim().is_empty() => shift(live, w),
        CatchupKind::Append => append(live, &expand(c.source.trim(), w)),
        CatchupKind::Flussonic => flussonic(live, w)?,
        CatchupKind::Xtream => xtream(c, live, w)?,
    };
    url::Url::parse(&url).map_err(|_| ArchiveError::BadUrl(crate::error::redact_str(&url)))?;
    Ok(url)
}

/// SIPTV's form: the live URL with `utc` (start) and `lutc` (now) added.
fn shift(live: &str, w: &Window) -> String {
    append(live, &format!("?utc={}&lutc={}", w.start, w.now))
}

/// `live` + `tail`, where a tail's leading `?` or `&` is made right for `live`'s query.
fn append(live: &str, tail: &str) -> String {
    let has_query = live.contains('?');
    match tail.as_bytes().first() {
        Some(b'?') if has_query => format!("{live}&{}", &tail[1..]),
        Some(b'&') if !has_query => format!("{live}?{}", &tail[1..]),
        _ => format!("{live}{tail}"),
    }
}

fn flussonic(live: &str, w: &Window) -> Result<String, ArchiveError> {
    let unknown = || ArchiveError::UnknownForm(crate::error::redact_str(live), "Flussonic");
    let (path, query) = live
        .split_once('?')
        .map_or((live, None), |(p, q)| (p, Some(q)));
    let (dir, last) = path.rsplit_once('/').ok_or_else(unknown)?;
    let last = if let Some(stem) = last.strip_suffix(".m3u8") {
        format!("{stem}-{}-{}.m3u8", w.start, w.duration)
    } else if last == "mpegts" || last.ends_with(".ts") {
        format!("timeshift_abs-{}.ts", w.start)
    } else {
        return Err(unknown());
    };
    Ok(match query {
        Some(q) => format!("{dir}/{last}?{q}"),
        None => format!("{dir}/{last}"),
    })
}

fn xtream(c: &Catchup, live: &str, w: &Window) -> Result<String, ArchiveError> {
    let unknown = || ArchiveError::UnknownForm(crate::error::redact_str(live), "Xtream");
    let mut url = url::Url::parse(live).map_err(|_| unknown())?;
    let segments: Vec<String> = url
        .path_segments()
        .ok_or_else(unknown)?
        .map(str::to_string)
        .collect();
    let n = segments.len();
    let prefix = match n {
        _ if n >= 4 && segments[n - 4] == "live" => n - 4,
        _ if n >= 3 => n - 3,
        _ => return Err(unknown()),
    };
    let (user, pass, file) = (&segments[n - 3], &segments[n - 2], &segments[n - 1]);
    let id = file.split('.').next().unwrap_or_default();
    if user.is_empty() || pass.is_empty() || id.is_empty() {
        return Err(unknown());
    }
    let minutes = w.duration.div_ceil(60).max(1).to_string();
    let start = format_time(w.start + i64::from(c.utc_offset), "Y-m-d:H-M");
    let id = format!("{id}.ts");
    // The segments are kept as written (already percent-encoded), only re-joined.
    let mut path: Vec<&str> = segments[..prefix].iter().map(String::as_str).collect();
    path.extend(["timeshift", user, pass, &minutes, &start, &id]);
    url.set_query(None);
    url.set_path(&format!("/{}", path.join("/")));
    Ok(url.to_string())
}

/// `template` with every placeholder the module doc lists replaced.
pub fn expand(template: &str, w: &Window) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}').map(|c| open + c) else {
            break;
        };
        let dollar = rest[..open].ends_with('$');
        let inner = &rest[open + 1..close];
        match placeholder(inner, w) {
            Some(value) => {
                let keep = if dollar { open - 1 } else { open };
                out.push_str(&rest[..keep]);
                out.push_str(&value);
            }
            None => out.push_str(&rest[..=close]),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The value of one placeholder (what is between the braces), `None` when unknown.
fn placeholder(inner: &str, w: &Window) -> Option<String> {
    let (name, arg) = match inner.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (inner, None),
    };
    let time = match name {
        "utc" | "start" => Some(w.start),
        "utcend" | "end" => Some(w.end()),
        "lutc" | "now" | "timestamp" => Some(w.now),
        _ => None,
    };
    if let Some(t) = time {
        return Some(match arg {
            Some(fmt) => format_time(t, fmt),
            None => t.to_string(),
        });
    }
    let divided = |value: i64| {
        let by = arg.map_or(Some(1), |a| a.parse::<i64>().ok().filter(|&d| d >= 1))?;
        Some((value / by).to_string())
    };
    match (name, arg) {
        ("duration", _) => divided(i64::from(w.duration)),
        ("offset", _) => divided((w.now - w.start).max(0)),
        ("Y" | "m" | "d" | "H" | "M" | "S", None) => Some(format_time(w.start, name)),
        _ => None,
    }
}

/// `fmt` with each of `Y m d H M S` replaced by that part of `t` (UTC, zero-padded);
/// other characters as written.
fn format_time(t: i64, fmt: &str) -> String {
    let dt = DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default();
    let mut out = String::with_capacity(fmt.len() * 2);
    for c in fmt.chars() {
        match c {
            'Y' => out.push_str(&format!("{:04}", dt.year())),
            'm' => out.push_str(&format!("{:02}", dt.month())),
            'd' => out.push_str(&format!("{:02}", dt.day())),
            'H' => out.push_str(&format!("{:02}", dt.hour())),
            'M' => out.push_str(&format!("{:02}", dt.minute())),
            'S' => out.push_str(&format!("{:02}", dt.second())),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// 2025-12-04 13:05:09 UTC, an hour of it, asked at 15:00:00.
    const W: Window = Window {
        start: 1_764_853_509,
        duration: 3600,
        now: 1_764_860_400,
    };

    #[track_caller]
    fn check(kind: CatchupKind, source: &str, live: &str, expected: &str) {
        let c = Catchup {
            kind,
            days: 3,
            source: source.into(),
            ..Catchup::default()
        };
        assert_eq!(archive_url(&c, live, &W).unwrap(), expected);
    }

    #[test]
    fn placeholders_expand_in_every_spelling() {
        for (template, expected) in [
            ("{utc}|${start}|{start}", "1764853509|1764853509|1764853509"),
            ("{utcend}|${end}|{end}", "1764857109|1764857109|1764857109"),
            (
                "{lutc}|${now}|${timestamp}|{timestamp}",
                "1764860400|1764860400|1764860400|1764860400",
            ),
            ("{duration}|${duration}|{duration:60}", "3600|3600|60"),
            ("{offset}|{offset:60}", "6891|114"),
            ("{Y}-{m}-{d}T{H}:{M}:{S}", "2025-12-04T13:05:09"),
            (
                "{utc:YmdHM}|${end:Y-m-d H-M}",
                "202512041305|2025-12-04 14-05",
            ),
            (
                "{catchup-id}|{unknown}|{duration:0}|{",
                "{catchup-id}|{unknown}|{duration:0}|{",
            ),
            ("no placeholders", "no placeholders"),
            ("${start}{utc}", "17648535091764853509"),
        ] {
            assert_eq!(expand(template, &W), expected, "{template}");
        }
    }

    #[test]
    fn archive_address_of_each_form() {
        check(
            CatchupKind::Default,
            "http://a.example/arch/{utc}-{duration}.m3u8",
            "http://live.example/ch.m3u8",
            "http://a.example/arch/1764853509-3600.m3u8",
        );
        // Default without a source, and shift: the SIPTV query.
        for kind in [CatchupKind::Default, CatchupKind::Shift] {
            check(
                kind,
                "",
                "http://l.example/ch.ts",
                "http://l.example/ch.ts?utc=1764853509&lutc=1764860400",
            );
            check(
                kind,
                "",
                "http://l.example/ch.ts?token=1",
                "http://l.example/ch.ts?token=1&utc=1764853509&lutc=1764860400",
            );
        }
        check(
            CatchupKind::Append,
            "&cutv={Y}-{m}-{d}T{H}:{M}:{S}",
            "http://l.example/ch.ts",
            "http://l.example/ch.ts?cutv=2025-12-04T13:05:09",
        );
        check(
            CatchupKind::Append,
            "?utc=${start}",
            "http://l.example/ch.ts?t=1",
            "http://l.example/ch.ts?t=1&utc=1764853509",
        );
        check(
            CatchupKind::Flussonic,
            "",
            "http://f.example/ch1/index.m3u8?token=x",
            "http://f.example/ch1/index-1764853509-3600.m3u8?token=x",
        );
        check(
            CatchupKind::Flussonic,
            "",
            "http://f.example/ch1/mpegts",
            "http://f.example/ch1/timeshift_abs-1764853509.ts",
        );
        check(
            CatchupKind::Xtream,
            "",
            "http://p.example:8080/live/u%40x/p/1477.m3u8",
            "http://p.example:8080/timeshift/u%40x/p/60/2025-12-04:13-05/1477.ts",
        );
        check(
            CatchupKind::Xtream,
            "",
            "http://p.example/sub/u/p/1477",
            "http://p.example/sub/timeshift/u/p/60/2025-12-04:13-05/1477.ts",
        );
        // A panel an hour ahead of UTC reads the start in its own time.
        let ahead = Catchup {
            kind: CatchupKind::Xtream,
            days: 1,
            utc_offset: 3600,
            ..Catchup::default()
        };
        assert_eq!(
            archive_url(&ahead, "http://p.example/live/u/p/7.ts", &W).unwrap(),
            "http://p.example/timeshift/u/p/60/2025-12-04:14-05/7.ts"
        );
        let c = Catchup {
            kind: CatchupKind::Xtream,
            days: 1,
            source: String::new(),
            ..Catchup::default()
        };
        assert!(matches!(
            archive_url(&c, "http://p.example/x", &W),
            Err(ArchiveError::UnknownForm(..))
        ));
        let c = Catchup {
            kind: CatchupKind::Default,
            days: 1,
            source: "not a url {utc}".into(),
            ..Catchup::default()
        };
        assert!(matches!(
            archive_url(&c, "http://p.example/x", &W),
            Err(ArchiveError::BadUrl(_))
        ));
    }

    /// The catch-up an entry with `attrs` (and a header with `header`) gets.
    fn m3u(
        attrs: &[(&'static str, &'static str)],
        header: &[(&'static str, &'static str)],
    ) -> (Option<Catchup>, Option<String>) {
        let find = |list: &[(&'static str, &'static str)], key: &str| {
            list.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
        };
        from_m3u(|k| find(attrs, k), |k| find(header, k))
    }

    fn cu(kind: CatchupKind, days: u32, source: &str) -> Option<Catchup> {
        Some(Catchup {
            kind,
            days,
            source: source.into(),
            ..Catchup::default()
        })
    }

    #[test]
    fn m3u_attributes_are_read_leniently() {
        use CatchupKind::*;
        assert_eq!(m3u(&[], &[]), (None, None));
        assert_eq!(m3u(&[("catchup-days", "7")], &[]), (None, None));
        assert_eq!(
            m3u(&[("catchup", "default"), ("catchup-days", "7")], &[]),
            (cu(Default, 7, ""), None)
        );
        assert_eq!(
            m3u(
                &[("catchup", "APPEND"), ("catchup-source", "?u={utc}")],
                &[]
            ),
            (cu(Append, DEFAULT_DAYS, "?u={utc}"), None)
        );
        assert_eq!(m3u(&[("timeshift", "3")], &[]), (cu(Shift, 3, ""), None));
        assert_eq!(
            m3u(&[("catchup-source", "http://a/{utc}")], &[]),
            (cu(Default, DEFAULT_DAYS, "http://a/{utc}"), None)
        );
        assert_eq!(m3u(&[("catchup", "fs")], &[]), (cu(Flussonic, 1, ""), None));
        assert_eq!(
            m3u(&[("catchup", "xc"), ("catchup-days", "2.5")], &[]),
            (cu(Xtream, 3, ""), None)
        );
        // The header's values are defaults for every entry.
        assert_eq!(
            m3u(
                &[("catchup-days", "2")],
                &[("catchup", "shift"), ("catchup-days", "5")]
            ),
            (cu(Shift, 2, ""), None)
        );
        assert_eq!(
            m3u(&[("catchup", "default"), ("catchup-days", "0")], &[]),
            (None, None)
        );
        let (c, w) = m3u(&[("catchup", "default"), ("catchup-days", "a week")], &[]);
        assert_eq!(c, cu(Default, DEFAULT_DAYS, ""));
        assert!(w.unwrap().contains("`a week` is not a number"));
        let (c, w) = m3u(&[("catchup", "default"), ("catchup-days", "-2")], &[]);
        assert_eq!(c, cu(Default, DEFAULT_DAYS, ""));
        assert!(w.is_some());
        let (c, w) = m3u(&[("catchup", "default"), ("catchup-days", "99999")], &[]);
        assert_eq!(c, cu(Default, MAX_DAYS, ""));
        assert!(w.is_some());
        let (c, w) = m3u(&[("catchup", "vod")], &[]);
        assert_eq!(c, None);
        assert!(w.unwrap().contains("`vod` is not supported"));
    }

    #[test]
    fn xtream_fields_as_numbers_or_strings() {
        use CatchupKind::Xtream;
        let x = |a: serde_json::Value, d: serde_json::Value| from_xtream(Some(&a), Some(&d));
        assert_eq!(x(json!(1), json!(7)), (cu(Xtream, 7, ""), None));
        assert_eq!(x(json!("1"), json!("3")), (cu(Xtream, 3, ""), None));
        assert_eq!(x(json!(0), json!(7)), (None, None));
        assert_eq!(x(json!("0"), json!("7")), (None, None));
        assert_eq!(x(json!(null), json!(7)), (None, None));
        assert_eq!(x(json!(1), json!(0)), (None, None));
        assert_eq!(
            from_xtream(Some(&json!(1)), None),
            (cu(Xtream, 1, ""), None)
        );
        let (c, w) = x(json!(1), json!("lots"));
        assert_eq!(c, cu(Xtream, DEFAULT_DAYS, ""));
        assert!(w.unwrap().contains("tv_archive_duration"));
    }

    #[test]
    fn start_times_in_every_form() {
        for s in [
            "1764853500",
            "1764853500000",
            "2025-12-04:13-05",
            "2025-12-04:13-05-00",
            "2025-12-04 13:05",
            "2025-12-04T13:05:00Z",
            "2025-12-04T14:05:00+01:00",
        ] {
            assert_eq!(parse_start(s), Ok(1_764_853_500), "{s}");
        }
        assert!(matches!(
            parse_start("yesterday"),
            Err(WindowError::BadStart(_))
        ));
        assert!(matches!(parse_start(""), Err(WindowError::BadStart(_))));
    }

    #[test]
    fn windows_and_their_limits() {
        let now = 1_764_860_400;
        let w = window("1764853500", Some(30), None, now).unwrap();
        assert_eq!((w.start, w.duration), (1_764_853_500, 1800));
        let w = window("1764853500", None, Some("1764857100"), now).unwrap();
        assert_eq!(w.duration, 3600);
        assert_eq!(
            window("1764853500", None, None, now).unwrap().duration,
            3600
        );
        assert_eq!(
            window("1764853500", Some(0), None, now),
            Err(WindowError::BadDuration)
        );
        assert_eq!(
            window("1764853500", Some(MAX_MINUTES + 1), None, now),
            Err(WindowError::BadDuration)
        );
        assert_eq!(
            window("1764853500", None, Some("1764853400"), now),
            Err(WindowError::EndNotAfterStart)
        );
        assert_eq!(
            window("1764853500", None, Some("xyz"), now),
            Err(WindowError::BadEnd("xyz".into()))
        );
        assert_eq!(
            window("1764853500", None, Some("1764953500"), now),
            Err(WindowError::BadDuration)
        );
        assert_eq!(
            window("1764870000", Some(5), None, now),
            Err(WindowError::Future)
        );
        let w = window("1764853500", Some(5), None, now).unwrap();
        assert!(covers(1, &w));
        assert!(!covers(0, &w));
        let old = Window {
            start: now - 3 * 86_400 - 60,
            ..w
        };
        assert!(!covers(3, &old));
        assert!(covers(4, &old));
        assert!(has_archive(1, now - 7200, now - 3600, now));
        assert!(!has_archive(1, now - 600, now + 600, now), "still on");
        assert!(
            !has_archive(1, now - 2 * 86_400, now - 86_000, now),
            "too old"
        );
        assert!(!has_archive(0, now - 7200, now - 3600, now));
    }
}
