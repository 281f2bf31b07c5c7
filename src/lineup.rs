//! The lineup: channels of every enabled service merged into one list.
//!
//! Pure: takes the channel lists (already in priority order) and returns merged
//! channels with their sources; stable ids and numbers are assigned by the caller from
//! the store, keyed by `Merged::merge_key`. Two channels are the same when their
//! `tvg_id`s are equal, else when their normalised names are (case, accents,
//! punctuation and quality suffixes like "HD" ignored).
//!
//! The user's channel mapping (renames, numbers, groups, hidden channels, guide ids,
//! logos, pinned sources) is applied here too: `patch_mapping` checks a change,
//! `Lineup::mapped` applies every mapping to the merged channels.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use regex::Regex;

use crate::model::{
    Channel, ChannelDetail, ChannelMapping, ChannelPatch, Interner, LineupChannel, Source, Text,
    UpstreamChannel,
};

/// One service's channels, in the order the lineup should prefer them.
pub struct ServiceChannels<'a> {
    pub service: &'a str,
    pub priority: i64,
    pub channels: &'a [Channel],
}

/// A merged channel before it has its stable id and number.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// What identifies the channel across refreshes: `tvg:<tvg_id>` or `name:<normalised>`.
    pub merge_key: String,
    /// The slug it would like (made unique by the store).
    pub wanted_slug: String,
    pub name: Text,
    pub logo: Text,
    /// The service whose channel gave `logo`.
    pub logo_from: Text,
    pub group: Text,
    pub tags: Vec<String>,
    pub tvg_id: Text,
    /// The Gracenote station id of its first source that gives one.
    pub station_id: Text,
    /// The upstream channel number of its first source that gives one.
    pub number: Option<u32>,
    pub sources: Vec<Source>,
    /// The longest archive (days of catch-up) among the sources; 0: none has one.
    pub catchup_days: u32,
}

/// Quality and format suffixes that do not make a different channel.
const QUALITY_SUFFIXES: &[&str] = &[
    "hd", "fhd", "uhd", "4k", "sd", "hevc", "h265", "1080p", "720p", "backup",
];

/// Lowercase ASCII words of `name`, accents folded, punctuation dropped, quality
/// suffixes removed: `"Télé-Sport  HD"` → `"tele sport"`. A bracketed note that only
/// tells the format or state ("(720p)", "[Not 24/7]", "[Geo-blocked]", "(backup)") is
/// not part of the name; any other note is ("BBC One (Scotland)" → `"bbc one
/// scotland"`: another channel than "BBC One (Wales)").
///
/// Merge keys, and so every channel's stored id and number, are made of this: its
/// output must not change without a way back (`Store::follow_moved_keys` tries a new
/// `name:` key's [`former_readings`]).
/// `tests::normalise_is_the_regex_reading` holds it to a regex over the folded name.
/// One pass, no regex: it runs for every entry of every list.
pub fn normalise(name: &str) -> String {
    normalise_notes(name, true, true)
}

/// The readings channel merge keys had before [`normalise`]'s: a `+` joined to the word
/// before it (`"E4+1"` → `"e4+1"`, where `"E4 +1"` read `"e4 +1"`), with bracketed
/// notes kept, then dropped. A store written then holds `name:` keys made of one of
/// them (`Store::follow_moved_keys`).
pub fn former_readings(name: &str) -> [String; 2] {
    [
        normalise_notes(name, true, false),
        normalise_notes(name, false, false),
    ]
}

/// [`normalise`] with every bracketed note dropped (`"Heat (1995)"` → `"heat"`): titles'
/// keys and search words (a movie's year is its own field), and the reading channel
/// merge keys had until notes other than format notes counted.
pub fn normalise_without_notes(name: &str) -> String {
    normalise_notes(name, false, false)
}

/// Words of a bracketed note that say nothing of which channel it is.
const FORMAT_NOTE_WORDS: &[&str] = &["not", "24", "7", "geo", "blocked", "timeout", "offline"];

/// Whether a bracketed note's words all tell a format or state: quality words, a
/// resolution ("720p", "576i"), "Not 24/7", "Geo-blocked".
pub(crate) fn is_format_note(note: &[u8]) -> bool {
    note.split(|c| !c.is_ascii_alphanumeric() && *c != b'+')
        .filter(|w| !w.is_empty())
        .all(|w| {
            QUALITY_SUFFIXES
                .iter()
                .chain(FORMAT_NOTE_WORDS)
                .any(|q| q.as_bytes().eq_ignore_ascii_case(w))
                || matches!(w, [digits @ .., b'p' | b'P' | b'i' | b'I']
                    if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
        })
}

/// `split_plus`: a `+` right after a letter or digit begins a word of its own, so that
/// "E4+1" and "E4 +1", or "Canal+" and "Canal +", are one name.
fn normalise_notes(name: &str, keep_notes: bool, split_plus: bool) -> String {
    // ASCII stays as it is (borrowed); the rest becomes ASCII, "[?]" when unknown.
    let folded = deunicode::deunicode_with_tofu_cow(name, "[?]");
    let b = folded.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut gap = false;
    let word = |c: u8, gap: &mut bool, out: &mut String| {
        if c.is_ascii_alphanumeric() || c == b'+' {
            if c == b'+' && split_plus && out.ends_with(|p: char| p.is_ascii_alphanumeric()) {
                *gap = true;
            }
            if *gap && !out.is_empty() {
                out.push(' ');
            }
            *gap = false;
            out.push(char::from(c.to_ascii_lowercase()));
        } else {
            *gap = true;
        }
    };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        // A note runs to the first closing bracket; without one, the bracket is
        // punctuation like any other.
        let close = match c {
            b'(' => Some(b')'),
            b'[' => Some(b']'),
            _ => None,
        };
        if let Some(end) = close.and_then(|close| b[i + 1..].iter().position(|&x| x == close)) {
            let note = &b[i + 1..i + 1 + end];
            gap = true;
            if keep_notes && !is_format_note(note) {
                // Its words count; brackets inside it are punctuation.
                for &c in note {
                    word(c, &mut gap, &mut out);
                }
                gap = true;
            }
            i += end + 2;
            continue;
        }
        word(c, &mut gap, &mut out);
        i += 1;
    }
    while let Some(space) = out.rfind(' ') {
        if !QUALITY_SUFFIXES.contains(&&out[space + 1..]) {
            break;
        }
        out.truncate(space);
    }
    out
}

/// URL- and file-safe id from a name: `"BBC One HD"` → `"bbc-one"`. Made of the
/// reading where a `+` stays joined to the word before it (`"E4+1"` → `"e4plus1"`,
/// `"E4 +1"` → `"e4-plus1"`), as ids were made before `normalise` read it apart: an
/// M3U service's channel ids are slugs, and saved `SERVICE:ID` links must hold.
pub fn slugify(name: &str) -> String {
    let n = normalise_notes(name, true, false);
    let mut slug = String::with_capacity(n.len());
    for c in n.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if c == '+' {
            slug.push_str("plus");
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        "channel".to_string()
    } else {
        slug.chars().take(64).collect()
    }
}

/// `wanted` (`"channel"` when empty) made unique among `taken` with the first free
/// suffix (`news`, `news-2`, ...), and added to it. `next` keeps where each base's
/// suffixes stopped, so many entries of one name take one step each, not a count from
/// 2 each time (suffixes below it are all taken, and taken ones stay taken).
pub fn unique_slug(
    wanted: &str,
    taken: &mut HashSet<String>,
    next: &mut HashMap<String, u32>,
) -> String {
    let base = if wanted.is_empty() { "channel" } else { wanted };
    if taken.insert(base.to_string()) {
        return base.to_string();
    }
    let n = next.entry(base.to_string()).or_insert(2);
    loop {
        let slug = format!("{base}-{n}");
        *n += 1;
        if taken.insert(slug.clone()) {
            return slug;
        }
    }
}

/// The guide id: the upstream tvg-id when it already has XMLTV's `name.domain` form,
/// else one derived from it or the slug, under `.freesky`.
pub fn guide_id(tvg_id: &str, slug: &str) -> String {
    static FORM: OnceLock<Regex> = OnceLock::new();
    let form = FORM
        .get_or_init(|| Regex::new(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$").expect("static regex"));
    let tvg_id = tvg_id.trim();
    if form.is_match(tvg_id) {
        tvg_id.to_string()
    } else if !tvg_id.is_empty() && slugify(tvg_id) != "channel" {
        format!("{}.freesky", slugify(tvg_id))
    } else {
        format!("{slug}.freesky")
    }
}

/// Merges service channel lists, given in priority order (lowest `priority` first;
/// ties keep the given order). The first channel of a group names it; later ones
/// fill in a missing logo or group and add their tags.
///
/// Groups, logos and service names repeat across channels: each distinct one is one
/// shared [`Text`]. A source's id and name share the channel's slug-like id and name
/// when they are the same text.
///
/// `aside`: the last lists of services switched off. Their channels are not merged;
/// they only tell which tvg-ids a "+1" borrows (its live channel may be listed only
/// by a service switched off: the "+1" must not take the live channel's identity and
/// guide then).
pub fn merge(lists: &[ServiceChannels<'_>], aside: &[&[Channel]]) -> Vec<Merged> {
    let mut order: Vec<&ServiceChannels<'_>> = lists.iter().collect();
    order.sort_by_key(|l| l.priority); // stable: ties keep config order
    let mut merged: Vec<Merged> = Vec::new();
    let mut by_tvg: HashMap<String, usize> = HashMap::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut shared = Interner::default();
    // (merged channel, service, channel id) of every source given so far.
    let mut has: HashSet<(usize, Text, Text)> = HashSet::new();
    let borrowed = borrowed_tvg_ids(
        order
            .iter()
            .map(|l| l.channels)
            .chain(aside.iter().copied()),
    );
    for list in order {
        let service = shared.get(list.service);
        for ch in list.channels {
            let norm = normalise(&ch.name);
            let mut tvg = ch.tvg_id.trim().to_lowercase();
            // A "+1" listed under its live channel's tvg-id is another channel (the
            // same programmes an hour later): it merges by name, without the id. Its
            // live channel may be listed by no service known now (switched off from
            // the start, failing, removed): an id that does not say the shift is
            // taken for borrowed too.
            let shift = if tvg.is_empty() || !ch.name.contains('+') {
                0
            } else {
                shift_of(&norm)
            };
            let borrows = shift > 0 && (borrowed.contains(&tvg) || !marks_shift(&tvg, shift));
            if borrows {
                tvg.clear();
            }
            let found = if tvg.is_empty() {
                by_name.get(&norm).copied()
            } else {
                // Same tvg-id merges; a channel with a tvg-id also joins a name-only
                // group of the same name (one service may lack tvg-ids).
                by_tvg.get(&tvg).copied().or_else(|| {
                    by_name
                        .get(&norm)
                        .copied()
                        .filter(|&i| merged[i].tvg_id.is_empty())
                })
            };
            let source = Source {
                service: service.clone(),
                channel_id: Text::from(&ch.id),
                name: Text::from(&ch.name),
                priority: list.priority,
                catchup_days: catchup_days(ch),
            };
            let i = match found {
                Some(i) => {
                    let m = &mut merged[i];
                    // Two entries of one service with the same name are usually quality
                    // variants or backups: both stay, as sources tried in turn. A set,
                    // not a scan of the sources: 200,000 entries of one name must not
                    // take minutes.
                    if !has.insert((i, source.service.clone(), source.channel_id.clone())) {
                        continue;
                    }
                    m.catchup_days = m.catchup_days.max(source.catchup_days);
                    m.sources.push(source);
                    if m.logo.is_empty() && !ch.logo.is_empty() {
                        m.logo = shared.get(&ch.logo);
                        m.logo_from = service.clone();
                    }
                    if m.group.is_empty() {
                        m.group = shared.get(&ch.group);
                    }
                    if m.number.is_none() {
                        m.number = ch.number;
                    }
                    if m.tvg_id.is_empty() && !tvg.is_empty() {
                        m.tvg_id = Text::from(ch.tvg_id.trim());
                    }
                    if m.station_id.is_empty() {
                        m.station_id = Text::from(&ch.station_id);
                    }
                    for t in &ch.tags {
                        if !m.tags.contains(t) {
                            m.tags.push(t.clone());
                        }
                    }
                    i
                }
                None => {
                    let merge_key = if tvg.is_empty() {
                        format!("name:{norm}")
                    } else {
                        format!("tvg:{tvg}")
                    };
                    let name = ch.name.trim();
                    // Mostly the same text: then one allocation for both. A control
                    // character or line break (a terminal escape, NEL, U+2028) is a
                    // space, as the playlist writes it: every output shows this name.
                    let name = if name.chars().any(|c| crate::m3u::printable(c) != c) {
                        let clean: String = name.chars().map(crate::m3u::printable).collect();
                        Text::from(clean.trim())
                    } else if *source.name == *name {
                        source.name.clone()
                    } else {
                        Text::from(name)
                    };
                    has.insert((
                        merged.len(),
                        source.service.clone(),
                        source.channel_id.clone(),
                    ));
                    merged.push(Merged {
                        merge_key,
                        wanted_slug: slugify(&ch.name),
                        name,
                        logo: shared.get(&ch.logo),
                        logo_from: if ch.logo.is_empty() {
                            Text::default()
                        } else {
                            service.clone()
                        },
                        group: shared.get(&ch.group),
                        tags: ch.tags.clone(),
                        tvg_id: Text::from(if borrows { "" } else { ch.tvg_id.trim() }),
                        station_id: Text::from(&ch.station_id),
                        number: ch.number,
                        sources: vec![source],
                        catchup_days: catchup_days(ch),
                    });
                    merged.len() - 1
                }
            };
            if !tvg.is_empty() {
                by_tvg.entry(tvg).or_insert(i);
            }
            by_name.entry(norm).or_insert(i);
        }
    }
    // A group's key does not depend on which of its sources came first: a group that
    // began with a source without a tvg-id and was joined by one with a tvg-id is
    // keyed by that tvg-id, as it would be had that source come first (so a priority
    // change keeps the channel's id, number and mapping).
    for m in &mut merged {
        if !m.tvg_id.is_empty() && m.merge_key.starts_with("name:") {
            m.merge_key = format!("tvg:{}", m.tvg_id.to_lowercase());
        }
    }
    merged
}

/// The hours of a time-shifted channel's normalised name (`"e4 +1"` → 1), 0 for a live
/// one: a word `+1` to `+24`.
pub(crate) fn shift_of(norm: &str) -> u8 {
    norm.split(' ')
        .filter_map(|w| w.strip_prefix('+')?.parse::<u8>().ok())
        .find(|h| (1..=24).contains(h))
        .unwrap_or(0)
}

/// Whether tvg-id `tvg` (lowercase) says a shift of `hours`: `e4plus1.uk`,
/// `e4+1.uk`, `E4-Plus-1.uk`; `e4.uk` or `itv1.uk` (for "ITV1 +1") do not.
fn marks_shift(tvg: &str, hours: u8) -> bool {
    let joined: String = tvg
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | ' ' | '.'))
        .collect();
    let h = hours.to_string();
    [format!("plus{h}"), format!("+{h}")].iter().any(|mark| {
        joined.match_indices(mark.as_str()).any(|(at, m)| {
            // "+1" is not "+12".
            !joined[at + m.len()..].starts_with(|c: char| c.is_ascii_digit())
        })
    })
}

/// The tvg-ids (lowercase) that a time-shifted channel carries and a live one too,
/// in any of `lists`: the shifted one borrowed its live channel's.
fn borrowed_tvg_ids<'a>(lists: impl Iterator<Item = &'a [Channel]> + Clone) -> HashSet<String> {
    let entries = || lists.clone().flatten();
    let mut shifted: HashSet<String> = HashSet::new();
    // The byte lengths of those ids, as written and lowercased: only ids of such a
    // length are lowercased below (one allocation each).
    let mut lengths: HashSet<usize> = HashSet::new();
    for ch in entries() {
        let tvg = ch.tvg_id.trim();
        if ch.name.contains('+') && !tvg.is_empty() && shift_of(&normalise(&ch.name)) > 0 {
            let lower = tvg.to_lowercase();
            lengths.insert(tvg.len());
            lengths.insert(lower.len());
            shifted.insert(lower);
        }
    }
    if shifted.is_empty() {
        return shifted;
    }
    let live: HashSet<String> = entries()
        .filter(|ch| lengths.contains(&ch.tvg_id.trim().len()))
        .filter(|ch| !ch.name.contains('+') || shift_of(&normalise(&ch.name)) == 0)
        .map(|ch| ch.tvg_id.trim().to_lowercase())
        .filter(|tvg| shifted.contains(tvg))
        .collect();
    live
}

/// The channels one service now lists under another tvg-id than in its previous list
/// `old`, as (new merge key, old merge key): the same name (normalised, once in each
/// list) with a tvg-id in both, the old tvg-id no longer in `new` and the new one not
/// in `old`. A provider that renames its ids (`BBCOne.uk` to `bbc-one.uk`) thus keeps
/// the channel's identity (`Store::follow_moved_keys`); another service's channel of
/// the same name, a swap of two ids, or a name listed twice is no move.
pub fn moved_tvg_ids(old: &[Channel], new: &[Channel]) -> Vec<(String, String)> {
    fn ids(list: &[Channel]) -> HashSet<String> {
        list.iter()
            .map(|ch| ch.tvg_id.trim().to_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    }
    fn by_name(list: &[Channel]) -> HashMap<String, Option<String>> {
        let mut names: HashMap<String, Option<String>> = HashMap::with_capacity(list.len());
        for ch in list {
            let tvg = ch.tvg_id.trim().to_lowercase();
            names
                .entry(normalise(&ch.name))
                .and_modify(|t| *t = None)
                .or_insert((!tvg.is_empty()).then_some(tvg));
        }
        names
    }
    if old.is_empty() || new.is_empty() {
        return Vec::new();
    }
    // A move needs a tvg-id the old list did not have: the common refresh has none,
    // and costs no more than the two sets of ids.
    let before_ids = ids(old);
    let now_ids = ids(new);
    if now_ids.is_subset(&before_ids) {
        return Vec::new();
    }
    let before = by_name(old);
    let now = by_name(new);
    let mut moves: Vec<(String, String)> = now
        .iter()
        .filter_map(|(name, tvg)| {
            let tvg = tvg.as_ref()?;
            let was = before.get(name)?.as_ref()?;
            (was != tvg && !now_ids.contains(was) && !before_ids.contains(tvg))
                .then(|| (format!("tvg:{tvg}"), format!("tvg:{was}")))
        })
        .collect();
    moves.sort();
    moves
}

/// Days of archive a service channel has (0: none).
fn catchup_days(ch: &Channel) -> u32 {
    ch.catchup.as_ref().map_or(0, |c| c.days)
}

/// A merged channel with its stable id and number, before the user's mapping. The
/// registry keeps these so that a mapping change applies without fetching anything.
#[derive(Debug, Clone, PartialEq)]
pub struct Unmapped {
    pub channel: LineupChannel,
    /// The merged upstream tvg-id (the channel itself carries the guide id made from it).
    pub tvg_id: Text,
}

/// Longest name, group or tvg-id a mapping accepts, in characters.
const MAX_TEXT: usize = 200;
/// Longest logo URL a mapping accepts, in bytes.
const MAX_LOGO: usize = 2048;

/// `current` with `patch` applied, every new value checked. `services` are the
/// configured service names (what `sources` may name). `Err` says what is wrong.
pub fn patch_mapping(
    current: &ChannelMapping,
    patch: &ChannelPatch,
    services: &[&str],
) -> Result<ChannelMapping, String> {
    let mut m = current.clone();
    if let Some(v) = &patch.name {
        m.name = v.as_deref().map(|s| text("name", s, false)).transpose()?;
    }
    if let Some(v) = &patch.group {
        m.group = v.as_deref().map(|s| text("group", s, true)).transpose()?;
    }
    if let Some(v) = &patch.tvg_id {
        m.tvg_id = v.as_deref().map(tvg_id).transpose()?;
    }
    if let Some(v) = &patch.logo {
        m.logo = v.as_deref().map(logo).transpose()?;
    }
    if let Some(v) = &patch.station_id {
        m.station_id = v.as_deref().map(station_id).transpose()?;
    }
    if let Some(v) = patch.number {
        if v == Some(0) {
            return Err("`number` must be at least 1".into());
        }
        // A number people dial, which every player (Xtream's 32-bit `stream_id`,
        // Plex's guide numbers) holds.
        if v.is_some_and(|n| n > crate::model::MAX_UPSTREAM_NUMBER) {
            return Err(format!(
                "`number` must be at most {}",
                crate::model::MAX_UPSTREAM_NUMBER
            ));
        }
        m.number = v;
    }
    if let Some(v) = patch.hidden {
        m.hidden = v.unwrap_or(false);
    }
    if let Some(v) = &patch.sources {
        m.sources = match v {
            Some(list) => pins(list, services)?,
            None => None,
        };
    }
    Ok(m)
}

/// A trimmed, bounded text without control characters (they would break M3U lines).
fn text(field: &str, value: &str, may_be_empty: bool) -> Result<String, String> {
    let v = value.trim();
    if v.is_empty() && !may_be_empty {
        return Err(format!(
            "`{field}` must not be empty (null resets it to the upstream value)"
        ));
    }
    if v.chars().count() > MAX_TEXT {
        return Err(format!("`{field}` is longer than {MAX_TEXT} characters"));
    }
    if v.chars().any(char::is_control) {
        return Err(format!("`{field}` must not contain control characters"));
    }
    Ok(v.to_string())
}

/// A guide id is written inside `tvg-id="..."`: a quote would change it there.
fn tvg_id(value: &str) -> Result<String, String> {
    let v = text("tvg_id", value, true)?;
    if v.contains('"') {
        return Err("`tvg_id` must not contain `\"`".into());
    }
    Ok(v)
}

/// A station id is empty (none) or Gracenote's: digits, as Channels DVR's guide
/// search shows them.
fn station_id(value: &str) -> Result<String, String> {
    let v = value.trim();
    if v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(
            "`station_id` must be a Gracenote station id: digits only (\"\" for none)".into(),
        );
    }
    Ok(v.to_string())
}

/// A logo is empty (none) or an http(s) URL.
fn logo(value: &str) -> Result<String, String> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(String::new());
    }
    if v.len() > MAX_LOGO {
        return Err(format!("`logo` is longer than {MAX_LOGO} bytes"));
    }
    match url::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(v.to_string()),
        _ => Err(format!(
            "`logo` must be an http(s) URL or \"\" (no logo), not `{v}`"
        )),
    }
}

/// Pinned services: each configured, none twice; an empty list pins nothing.
fn pins(list: &[String], services: &[&str]) -> Result<Option<Vec<String>>, String> {
    for (i, name) in list.iter().enumerate() {
        if !services.contains(&name.as_str()) {
            return Err(format!(
                "`sources`: unknown service `{name}` (configured: {})",
                services.join(", ")
            ));
        }
        if list[..i].contains(name) {
            return Err(format!("`sources`: service `{name}` is listed twice"));
        }
    }
    Ok((!list.is_empty()).then(|| list.to_vec()))
}

/// The channel as clients see it: `base` with the overrides of `m` (except `hidden`,
/// which decides where the lineup keeps it). Its text is shared with `base`.
pub fn apply(base: &Unmapped, m: &ChannelMapping) -> LineupChannel {
    let mut c = base.channel.clone();
    if let Some(v) = &m.name {
        c.name = Text::from(v);
    }
    if let Some(v) = m.number {
        c.number = v;
    }
    if let Some(v) = &m.group {
        c.group = Text::from(v);
    }
    if let Some(v) = &m.logo {
        c.logo = Text::from(v);
        c.logo_from = Text::default();
    }
    if let Some(v) = &m.station_id {
        c.station_id = Text::from(v);
    }
    if let Some(v) = &m.tvg_id {
        c.guide_id = if v.is_empty() {
            Text::from(guide_id("", &c.id))
        } else {
            Text::from(v)
        };
    }
    if let Some(pinned) = &m.sources {
        pin(&mut c.sources, pinned);
    }
    c
}

/// One guide id per channel also when a mapping sets one (`tvg_id`) that another
/// channel has, or comes to have (a service enabled later lists it): the mapping's
/// channel keeps it (of two mappings, the lower number's), the other takes its
/// slug's form, as a clash of upstream ids does. Nothing to do without such mappings.
fn settle_guide_ids(
    listed: &mut [(LineupChannel, u32)],
    hidden: &mut [(LineupChannel, u32)],
    mappings: &HashMap<String, ChannelMapping>,
) {
    let sets = |m: &ChannelMapping| m.tvg_id.as_ref().is_some_and(|t| !t.is_empty());
    if !mappings.values().any(sets) {
        return;
    }
    let mapped = |c: &LineupChannel| mappings.get(c.id.as_str()).is_some_and(sets);
    let mut all: Vec<&mut LineupChannel> = listed
        .iter_mut()
        .chain(hidden.iter_mut())
        .map(|(c, _)| c)
        .collect();
    // Mapped ones first, by number: the first keeps an id two of them set.
    all.sort_by_key(|c| (!mapped(c), c.number));
    let mut every: HashSet<String> = all.iter().map(|c| c.guide_id.to_lowercase()).collect();
    let mut owned: HashSet<String> = HashSet::new();
    let mut clashing = Vec::new();
    for (i, c) in all.iter().enumerate() {
        let id = c.guide_id.to_lowercase();
        if mapped(c) {
            if !owned.insert(id) {
                clashing.push(i);
            }
        } else if owned.contains(&id) {
            clashing.push(i);
        }
    }
    for i in clashing {
        let c = &mut all[i];
        let mut id = guide_id("", &c.id);
        let mut n = 2;
        while every.contains(&id.to_lowercase()) {
            id = format!("{}-{n}.freesky", c.id);
            n += 1;
        }
        every.insert(id.to_lowercase());
        c.guide_id = Text::from(id);
    }
}

/// Puts the sources of the `pinned` services first, in that order; the others keep
/// their (priority) order after them, and several sources of one service theirs.
pub fn pin(sources: &mut [Source], pinned: &[String]) {
    // A stable sort: equal keys keep their order.
    sources.sort_by_key(|s| {
        pinned
            .iter()
            .position(|p| *p == s.service)
            .unwrap_or(pinned.len())
    });
}

/// The merged lineup with its lookups: one immutable snapshot, shared (`Arc`) by every
/// request that reads it; nothing copies it whole.
///
/// Per channel it holds the mapped channel (its text shared with the unmapped base it
/// was made from) and two 4-byte index entries; the upstream values of `detail` are
/// read from the base when asked for, and only channels with a mapping have one here.
#[derive(Debug, Default)]
pub struct Lineup {
    /// The listed channels (not hidden), ordered by number: what every listing shows.
    pub channels: Vec<LineupChannel>,
    /// Hidden channels, ordered by number: in no listing, but still found by `get`, so
    /// they can be shown, unhidden and played by id.
    hidden: Vec<LineupChannel>,
    /// The merged channels before mapping, and for each listed and hidden channel its
    /// place there (empty for `new`).
    base: Arc<Vec<Unmapped>>,
    listed_base: Vec<u32>,
    hidden_base: Vec<u32>,
    /// The overrides of the channels that have some, by slug.
    mappings: HashMap<String, ChannelMapping>,
    /// Every channel's slot, ordered by id (binary search), a listed channel after a
    /// hidden one of the same id: the last of equal ids is the one `get` finds.
    by_id: Vec<Slot>,
    /// Per listed channel, its name, group and tags folded (`fold`) and joined by NUL,
    /// all in one string, with where each channel's part ends: what `search` looks in,
    /// made at the first search of this lineup rather than at every one (a dashboard
    /// search folded every channel's text per request).
    search_text: std::sync::OnceLock<(String, Vec<u32>)>,
}

/// A channel's place: listed (`index`) or hidden (`HIDDEN | index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot(u32);

const HIDDEN: u32 = 1 << 31;

impl Slot {
    fn listed(i: usize) -> Self {
        Self(i as u32)
    }
    fn hidden(i: usize) -> Self {
        Self(i as u32 | HIDDEN)
    }
    fn is_hidden(self) -> bool {
        self.0 & HIDDEN != 0
    }
    fn index(self) -> usize {
        (self.0 & !HIDDEN) as usize
    }
}

impl Lineup {
    /// A lineup of `channels` as they are, none hidden.
    pub fn new(channels: Vec<LineupChannel>) -> Self {
        let mut channels = channels;
        channels.sort_by_key(|c| c.number);
        Self::build(
            channels,
            Vec::new(),
            Arc::default(),
            Vec::new(),
            Vec::new(),
            HashMap::new(),
        )
    }

    /// The lineup of `base` with each channel's mapping (by slug) applied.
    pub fn mapped(base: &Arc<Vec<Unmapped>>, mappings: &HashMap<String, ChannelMapping>) -> Self {
        let none = ChannelMapping::default();
        let mut listed = Vec::with_capacity(base.len());
        let mut hidden = Vec::new();
        for (i, b) in base.iter().enumerate() {
            let m = mappings.get(b.channel.id.as_str()).unwrap_or(&none);
            let c = apply(b, m);
            if m.hidden {
                hidden.push((c, i as u32));
            } else {
                listed.push((c, i as u32));
            }
        }
        settle_guide_ids(&mut listed, &mut hidden, mappings);
        // Stable: channels sharing a number keep the base's order, as before.
        listed.sort_by_key(|(c, _)| c.number);
        hidden.sort_by_key(|(c, _)| c.number);
        let (channels, listed_base) = listed.into_iter().unzip();
        let (hidden, hidden_base) = hidden.into_iter().unzip();
        Self::build(
            channels,
            hidden,
            base.clone(),
            listed_base,
            hidden_base,
            mappings.clone(),
        )
    }

    fn build(
        channels: Vec<LineupChannel>,
        hidden: Vec<LineupChannel>,
        base: Arc<Vec<Unmapped>>,
        listed_base: Vec<u32>,
        hidden_base: Vec<u32>,
        mappings: HashMap<String, ChannelMapping>,
    ) -> Self {
        let mut by_id: Vec<Slot> = (0..hidden.len())
            .map(Slot::hidden)
            .chain((0..channels.len()).map(Slot::listed))
            .collect();
        let id = |s: &Slot| {
            if s.is_hidden() {
                hidden[s.index()].id.as_str()
            } else {
                channels[s.index()].id.as_str()
            }
        };
        // Stable: hidden before listed, each in number order, among equal ids.
        by_id.sort_by(|a, b| id(a).cmp(id(b)));
        Self {
            channels,
            hidden,
            base,
            listed_base,
            hidden_base,
            mappings,
            by_id,
            search_text: std::sync::OnceLock::new(),
        }
    }

    fn at(&self, slot: Slot) -> &LineupChannel {
        if slot.is_hidden() {
            &self.hidden[slot.index()]
        } else {
            &self.channels[slot.index()]
        }
    }

    fn by_id(&self, id: &str) -> Option<Slot> {
        let end = self
            .by_id
            .partition_point(|&s| self.at(s).id.as_str() <= id);
        let last = *self.by_id.get(end.checked_sub(1)?)?;
        (self.at(last).id == id).then_some(last)
    }

    fn slot(&self, id: &str) -> Option<Slot> {
        self.by_id(id)
            .or_else(|| id.parse::<u32>().ok().and_then(|n| self.number_slot(n)))
    }

    /// The channel numbered `n`: a listed one before a hidden one, and of several the
    /// last in number order.
    fn number_slot(&self, n: u32) -> Option<Slot> {
        let last = |list: &[LineupChannel]| {
            let end = list.partition_point(|c| c.number <= n);
            end.checked_sub(1).filter(|&i| list[i].number == n)
        };
        last(&self.channels)
            .map(Slot::listed)
            .or_else(|| last(&self.hidden).map(Slot::hidden))
    }

    /// The hidden channels, ordered by number (in no listing; the guide keeps their
    /// programmes so that unhiding one shows them at once).
    pub fn hidden(&self) -> &[LineupChannel] {
        &self.hidden
    }

    /// A channel by slug, or by number (`"12"`), hidden ones included.
    pub fn get(&self, id: &str) -> Option<&LineupChannel> {
        self.slot(id).map(|s| self.at(s))
    }

    /// The channel (listed or hidden) that has source `channel_id` of `service`.
    pub fn by_source(&self, service: &str, channel_id: &str) -> Option<&LineupChannel> {
        self.channels.iter().chain(&self.hidden).find(|c| {
            c.sources
                .iter()
                .any(|s| s.service == service && s.channel_id == channel_id)
        })
    }

    /// A channel by its number only (tuner URLs: a numeric slug must not shadow it).
    pub fn by_number(&self, number: u32) -> Option<&LineupChannel> {
        self.number_slot(number).map(|s| self.at(s))
    }

    /// A channel (slug or number, hidden ones included) with its mapping.
    pub fn detail(&self, id: &str) -> Option<ChannelDetail> {
        let slot = self.slot(id)?;
        let c = self.at(slot);
        let origin = if slot.is_hidden() {
            self.hidden_base.get(slot.index())
        } else {
            self.listed_base.get(slot.index())
        };
        let upstream = match origin.and_then(|&i| self.base.get(i as usize)) {
            Some(b) => UpstreamChannel {
                number: b.channel.number,
                name: b.channel.name.clone(),
                logo: b.channel.logo.clone(),
                group: b.channel.group.clone(),
                tvg_id: b.tvg_id.clone(),
                guide_id: b.channel.guide_id.clone(),
                station_id: b.channel.station_id.clone(),
            },
            None => UpstreamChannel {
                number: c.number,
                name: c.name.clone(),
                logo: c.logo.clone(),
                group: c.group.clone(),
                tvg_id: Text::default(),
                guide_id: c.guide_id.clone(),
                station_id: c.station_id.clone(),
            },
        };
        let mapping = self
            .mappings
            .get(c.id.as_str())
            .cloned()
            .unwrap_or_default();
        Some(ChannelDetail {
            channel: c.clone(),
            hidden: slot.is_hidden(),
            mapping,
            upstream,
        })
    }

    /// Listed channels whose name, group or tags contain `query`, ignoring case and accents.
    pub fn search(&self, query: &str) -> Vec<&LineupChannel> {
        let q = fold(query);
        let q = q.trim();
        if q.is_empty() {
            return self.channels.iter().collect();
        }
        if q.contains('\0') {
            // The separator of the joined text: looked for field by field.
            return self
                .channels
                .iter()
                .filter(|c| searched_fields(c).any(|t| fold(t).contains(q)))
                .collect();
        }
        let (text, ends) = self.search_text.get_or_init(|| {
            let mut text = String::new();
            let mut ends = Vec::with_capacity(self.channels.len());
            for c in &self.channels {
                for (i, field) in searched_fields(c).enumerate() {
                    if i > 0 {
                        text.push('\0');
                    }
                    text.push_str(&fold(field));
                }
                ends.push(u32::try_from(text.len()).unwrap_or(u32::MAX));
            }
            (text, ends)
        });
        let mut start = 0;
        self.channels
            .iter()
            .zip(ends)
            .filter(|(_, &end)| {
                let part = text.get(start..end as usize).unwrap_or_default();
                start = end as usize;
                part.contains(q)
            })
            .map(|(c, _)| c)
            .collect()
    }
}

/// What a search looks in: a channel's name, group and tags.
fn searched_fields(c: &LineupChannel) -> impl Iterator<Item = &str> {
    [c.name.as_str(), c.group.as_str()]
        .into_iter()
        .chain(c.tags.iter().map(String::as_str))
}

/// Lowercase with accents folded, for matching.
fn fold(s: &str) -> String {
    deunicode::deunicode(s).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(service: &str, id: &str, name: &str, tvg: &str) -> Channel {
        Channel {
            id: id.into(),
            name: name.into(),
            logo: String::new(),
            group: String::new(),
            tags: vec![],
            tvg_id: tvg.into(),
            station_id: String::new(),
            number: None,
            service: service.into(),
            headers: vec![],
            url: None,
            catchup: None,
        }
    }

    #[test]
    fn a_services_renamed_tvg_id_is_a_move_and_nothing_else_is() {
        let list = |entries: &[(&str, &str)]| -> Vec<Channel> {
            entries
                .iter()
                .enumerate()
                .map(|(i, (name, tvg))| ch("S", &i.to_string(), name, tvg))
                .collect()
        };
        let old = list(&[
            ("BBC One HD", "BBCOne.uk"),
            ("Sport", "sport.a"),
            ("Film", "film.a"),
            ("Swap A", "swap.a"),
            ("Swap B", "swap.b"),
            ("Twice", "twice.1"),
            ("Twice", "twice.2"),
            ("Plain", ""),
            ("Gone", "gone.a"),
        ]);
        let new = list(&[
            // Renamed (and only the case of the name changed).
            ("BBC ONE HD", "bbc-one.uk"),
            // Unchanged, and the same id in another case: no move.
            ("Sport", "SPORT.A"),
            // The new id was listed before (under another name): no move.
            ("Film", "swap.a"),
            // Two ids swapped: each old id is still listed.
            ("Swap A", "swap.b"),
            ("Swap B", "film.a"),
            // A name listed twice: which is which is unknown.
            ("Twice", "twice.3"),
            ("Twice", "twice.4"),
            // Gaining an id is the existing name-to-tvg follow, not this.
            ("Plain", "plain.a"),
            ("New", "new.a"),
        ]);
        assert_eq!(
            moved_tvg_ids(&old, &new),
            vec![("tvg:bbc-one.uk".to_string(), "tvg:bbcone.uk".to_string())]
        );
        assert!(moved_tvg_ids(&[], &new).is_empty());
        assert!(moved_tvg_ids(&new, &new).is_empty());
    }

    /// `normalise` as a regex over the folded name; `keep_notes: false` is the first
    /// reading (`normalise_without_notes`), which stored merge keys were made with, and
    /// then with a `+` joined to the word before it (`former_readings`).
    fn normalise_by_regex(name: &str, keep_notes: bool) -> String {
        static PLUS: OnceLock<Regex> = OnceLock::new();
        let plus = PLUS.get_or_init(|| Regex::new(r"([a-z0-9])\+").unwrap());
        let joined = normalise_by_regex_joined(name, keep_notes);
        if keep_notes {
            plus.replace_all(&joined, "$1 +").into_owned()
        } else {
            joined
        }
    }

    fn normalise_by_regex_joined(name: &str, keep_notes: bool) -> String {
        static BRACKETS: OnceLock<Regex> = OnceLock::new();
        static FORMAT: OnceLock<Regex> = OnceLock::new();
        let brackets = BRACKETS.get_or_init(|| Regex::new(r"\(([^)]*)\)|\[([^\]]*)\]").unwrap());
        let format = FORMAT.get_or_init(|| {
            Regex::new(
                r"^(hd|fhd|uhd|4k|sd|hevc|h265|1080p|720p|backup|not|24|7|geo|blocked|timeout|offline|[0-9]+[pi])$",
            )
            .unwrap()
        });
        let folded = deunicode::deunicode(name).to_lowercase();
        let folded = brackets.replace_all(&folded, |c: &regex::Captures<'_>| {
            let note = c.get(1).or(c.get(2)).map_or("", |m| m.as_str());
            let only_format = note
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '+')
                .filter(|w| !w.is_empty())
                .all(|w| format.is_match(w));
            if keep_notes && !only_format {
                format!(" {note} ")
            } else {
                " ".to_string()
            }
        });
        let mut words: Vec<&str> = folded
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '+')
            .filter(|w| !w.is_empty())
            .collect();
        while words.len() > 1 && words.last().is_some_and(|w| QUALITY_SUFFIXES.contains(w)) {
            words.pop();
        }
        words.join(" ")
    }

    #[test]
    fn normalise_is_the_regex_reading() {
        let fixed = [
            "",
            " ",
            "HD",
            "hd hd",
            "News HD HD",
            "News (HD",
            "News HD)",
            "((a)b)",
            "[a(b]c)",
            "a[b",
            "]a[",
            "Canal+ 4K",
            "Télé-Sport  HD",
            "北京卫视",
            "\u{1F600} TV",
            "\u{E000}x",
            "a\u{E000}b (c)",
            "ÆØÅ!!",
            "x\ny\tz",
            "\u{7F}A",
            "BBC ONE FHD",
            "(only a note)",
            "[?]",
            "Sky Sports+ (UK) [720p] HD",
            "BBC One (Scotland)",
            "News (720p) [Not 24/7]",
            "X [Geo-blocked] (576i)",
            "Ch (+1)",
            "News (backup 2)",
            "a (b [c) d]",
            "tv (a) (b) hd",
        ];
        for name in fixed {
            assert_eq!(normalise(name), normalise_by_regex(name, true), "{name:?}");
            assert_eq!(
                normalise_without_notes(name),
                normalise_by_regex(name, false),
                "{name:?}"
            );
        }
        // Random names over what lists contain: letters, digits, spaces, punctuation,
        // brackets, accents, CJK, emoji and a private-use character (unknown: "[?]").
        let alphabet: Vec<char> = "aZ09 +-_.,:|/()[]HDhdfsuk4Kpi7éñø北京\u{1F4FA}\u{E000}\t"
            .chars()
            .collect();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..20_000 {
            let len = next(24);
            let name: String = (0..len).map(|_| alphabet[next(alphabet.len())]).collect();
            assert_eq!(
                normalise(&name),
                normalise_by_regex(&name, true),
                "{name:?}"
            );
            assert_eq!(
                normalise_without_notes(&name),
                normalise_by_regex(&name, false),
                "{name:?}"
            );
            assert_eq!(
                former_readings(&name),
                [
                    normalise_by_regex_joined(&name, true),
                    normalise_by_regex_joined(&name, false)
                ],
                "{name:?}"
            );
        }
        // Quality words as whole words only.
        for name in ["HD News", "news hdx", "news sd hd 4k", "4k"] {
            assert_eq!(normalise(name), normalise_by_regex(name, true), "{name:?}");
            assert_eq!(
                normalise_without_notes(name),
                normalise_by_regex(name, false),
                "{name:?}"
            );
        }
    }

    #[test]
    fn normalise_ignores_case_accents_punctuation_quality() {
        for (input, want) in [
            ("Télé-Sport  HD", "tele sport"),
            ("BBC ONE FHD", "bbc one"),
            ("bbc.one", "bbc one"),
            ("Canal+ 4K", "canal +"),
            ("News (backup)", "news"),
            ("News (720p) [Not 24/7] [Geo-blocked]", "news"),
            ("BBC One (Scotland)", "bbc one scotland"),
            ("Quran TV (Mecca) (1080p)", "quran tv mecca"),
            ("Movies (+1)", "movies +1"),
            ("HD", "hd"),
            // A "+" begins a word: two providers' spellings are one channel.
            ("E4+1", "e4 +1"),
            ("E4 +1", "e4 +1"),
            ("E4 (+1)", "e4 +1"),
            ("Canal+", "canal +"),
            ("Canal +", "canal +"),
            ("C++ (a+b)", "c ++ a +b"),
        ] {
            assert_eq!(normalise(input), want, "{input}");
        }
        // Ids keep the reading they had: a `+` joined stays joined.
        assert_eq!(slugify("Canal+ Sport HD"), "canalplus-sport");
        assert_eq!(slugify("Canal + Sport"), "canal-plus-sport");
        assert_eq!(slugify("E4+1 HD"), "e4plus1");
        assert_eq!(slugify("E4 (+1)"), "e4-plus1");
        assert_eq!(slugify("Sky Cinema +1"), "sky-cinema-plus1");
        assert_eq!(slugify("+1 Movies"), "plus1-movies");
        // What stores written before hold.
        assert_eq!(
            former_readings("E4+1 (Scotland)"),
            ["e4+1 scotland", "e4+1"]
        );
        assert_eq!(former_readings("E4 +1"), ["e4 +1", "e4 +1"]);
        assert_eq!(slugify("ÆØÅ!!"), "aeoa");
        assert_eq!(slugify("!!!"), "channel");
    }

    #[test]
    fn guide_ids() {
        assert_eq!(guide_id("BBCOne.uk", "bbc-one"), "BBCOne.uk");
        assert_eq!(guide_id("", "demo"), "demo.freesky");
        assert_eq!(guide_id("bbc one", "x"), "bbc-one.freesky");
    }

    #[test]
    fn a_channels_name_carries_no_control_character_or_line_break() {
        let a = [ch("A", "1", " \u{1b}[31mRed\u{85}One\u{2028}\u{b} ", "")];
        let m = merge(
            &[ServiceChannels {
                service: "A",
                priority: 1,
                channels: &a,
            }],
            &[],
        );
        assert_eq!(m[0].name, "[31mRed One");
    }

    /// A "+1" listed under its live channel's tvg-id (providers do) is a channel of
    /// its own, not a source of the live one (whose failover would play an hour late):
    /// it merges by name, without the id, whichever comes first. A "+1" with an id of
    /// its own keeps it.
    #[test]
    fn a_plus_one_under_its_live_channels_tvg_id_is_a_channel_of_its_own() {
        let a = [
            ch("A", "1", "Dave Real +1", "DaveReal.uk"),
            ch("A", "2", "Dave Real", "DaveReal.uk"),
            ch("A", "3", "E4 +1", "E4Plus1.uk"),
        ];
        let b = [ch("B", "x", "Dave Real (+1) HD", "davereal.uk")];
        let m = merge(
            &[
                ServiceChannels {
                    service: "A",
                    priority: 1,
                    channels: &a,
                },
                ServiceChannels {
                    service: "B",
                    priority: 2,
                    channels: &b,
                },
            ],
            &[],
        );
        let seen: Vec<(&str, &str, &str, usize)> = m
            .iter()
            .map(|c| (&*c.name, &*c.merge_key, &*c.tvg_id, c.sources.len()))
            .collect();
        assert_eq!(
            seen,
            [
                ("Dave Real +1", "name:dave real +1", "", 2),
                ("Dave Real", "tvg:davereal.uk", "DaveReal.uk", 1),
                ("E4 +1", "tvg:e4plus1.uk", "E4Plus1.uk", 1),
            ]
        );
    }

    /// The live channel listed only by a service switched off still makes the "+1"
    /// under its tvg-id a channel of its own (the "+1" must not take the live one's
    /// identity and guide while that service is off).
    #[test]
    fn a_plus_one_borrows_from_a_live_channel_of_a_service_switched_off() {
        let off = [ch("A", "1", "E4", "E4.uk")];
        let on = [ch("B", "x", "E4 +1", "E4.uk")];
        let lists = [ServiceChannels {
            service: "B",
            priority: 1,
            channels: &on,
        }];
        let keys = |aside: &[&[Channel]]| -> Vec<(String, String)> {
            merge(&lists, aside)
                .into_iter()
                .map(|m| (m.merge_key, m.tvg_id.to_string()))
                .collect()
        };
        assert_eq!(keys(&[&off]), [("name:e4 +1".to_string(), String::new())]);
        // Known nowhere: an id that does not say the shift is borrowed all the same.
        assert_eq!(keys(&[]), [("name:e4 +1".to_string(), String::new())]);
    }

    /// A "+1" keeps a tvg-id that says its shift (its own guide channel), and drops
    /// one that does not (its live channel's, whether or not a list shows that).
    #[test]
    fn a_plus_ones_own_tvg_id_says_its_shift() {
        for (id, own) in [
            ("E4Plus1.uk", true),
            ("E4+1.uk", true),
            ("e4-plus-1.uk", true),
            ("E4.uk", false),
            ("ITV1.uk", false),
            ("ITVPlus12.uk", false),
            ("ITVPlus2.uk", false),
        ] {
            assert_eq!(marks_shift(&id.to_lowercase(), 1), own, "{id}");
        }
        let list = [
            ch("B", "1", "E4 +1", "E4Plus1.uk"),
            ch("B", "2", "ITV1 +1", "ITV1.uk"),
        ];
        let m = merge(
            &[ServiceChannels {
                service: "B",
                priority: 1,
                channels: &list,
            }],
            &[],
        );
        let seen: Vec<(&str, &str)> = m.iter().map(|c| (&*c.merge_key, &*c.tvg_id)).collect();
        assert_eq!(
            seen,
            [("tvg:e4plus1.uk", "E4Plus1.uk"), ("name:itv1 +1", "")]
        );
    }

    #[test]
    fn merges_by_tvg_id_then_name_in_priority_order() {
        let a = [
            ch("A", "1", "BBC One HD", "BBCOne.uk"),
            ch("A", "2", "Sport", ""),
        ];
        let b = [
            ch("B", "x", "bbc one", ""),
            ch("B", "y", "SPORT fhd", ""),
            ch("B", "z", "Only B", ""),
            ch("B", "z2", "Only B (backup)", ""),
        ];
        let c = [ch("C", "q", "Whatever", "BBCOne.uk")];
        let lists = [
            ServiceChannels {
                service: "B",
                priority: 2,
                channels: &b,
            },
            ServiceChannels {
                service: "A",
                priority: 1,
                channels: &a,
            },
            ServiceChannels {
                service: "C",
                priority: 3,
                channels: &c,
            },
        ];
        let m = merge(&lists, &[]);
        assert_eq!(m.len(), 3, "{m:#?}");
        assert_eq!(m[0].name, "BBC One HD");
        assert_eq!(m[0].merge_key, "tvg:bbcone.uk");
        let srcs: Vec<_> = m[0].sources.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(srcs, ["A", "B", "C"]);
        assert_eq!(m[1].sources.len(), 2);
        assert_eq!(m[2].name, "Only B");
        // A backup entry of the same service is a second source, not a second channel.
        let ids: Vec<_> = m[2].sources.iter().map(|s| s.channel_id.as_str()).collect();
        assert_eq!(ids, ["z", "z2"]);
    }

    #[test]
    fn a_group_is_keyed_by_its_tvg_id_whichever_source_comes_first() {
        let with_id = [ch("M", "1", "News", "News.test")];
        let without = [ch("Ace", "n", "News HD", "")];
        let keys = |first: i64| {
            merge(
                &[
                    ServiceChannels {
                        service: "M",
                        priority: 10,
                        channels: &with_id,
                    },
                    ServiceChannels {
                        service: "Ace",
                        priority: first,
                        channels: &without,
                    },
                ],
                &[],
            )
            .into_iter()
            .map(|m| m.merge_key)
            .collect::<Vec<_>>()
        };
        assert_eq!(keys(50), ["tvg:news.test"]);
        assert_eq!(keys(1), ["tvg:news.test"], "the source without an id first");
        let alone = merge(
            &[ServiceChannels {
                service: "Ace",
                priority: 1,
                channels: &without,
            }],
            &[],
        );
        assert_eq!(alone[0].merge_key, "name:news");
    }

    #[test]
    fn search_folds_case_and_accents() {
        let chans = ["Télé Matin", "News"]
            .iter()
            .enumerate()
            .map(|(i, n)| LineupChannel {
                id: slugify(n).into(),
                number: i as u32 + 1,
                name: (*n).into(),
                logo: Text::default(),
                logo_from: Text::default(),
                group: if i == 1 {
                    "Actualités".into()
                } else {
                    Text::default()
                },
                tags: vec![],
                guide_id: Text::default(),
                sources: vec![],
                catchup_days: 0,
                station_id: Text::default(),
            })
            .collect();
        let l = Lineup::new(chans);
        assert_eq!(l.search("TELE").len(), 1);
        assert_eq!(l.search("actualites")[0].name, "News");
        // Asked again (from the text made at the first search), and never across
        // two fields: a name's end and a group's start are not one word.
        assert_eq!(l.search("actualites")[0].name, "News");
        assert!(l.search("newsactu").is_empty());
        assert!(l.search("news\0actu").is_empty());
        assert_eq!(l.search("  ").len(), 2);
        assert_eq!(l.get("2").map(|c| c.name.as_str()), Some("News"));
        assert_eq!(l.get("tele-matin").map(|c| c.number), Some(1));
    }

    fn patch(json: &str) -> ChannelPatch {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn patches_set_keep_and_reset_overrides() {
        let services = ["A", "B"];
        let m = patch_mapping(
            &ChannelMapping::default(),
            &patch(r#"{"name":" News 24 ","number":7,"hidden":true,"sources":["B"]}"#),
            &services,
        )
        .unwrap();
        assert_eq!(m.name.as_deref(), Some("News 24"));
        assert_eq!(m.number, Some(7));
        assert!(m.hidden);
        assert_eq!(m.sources, Some(vec!["B".to_string()]));
        // Missing fields keep their override; null resets.
        let m = patch_mapping(
            &m,
            &patch(r#"{"number":null,"hidden":null,"sources":[]}"#),
            &services,
        )
        .unwrap();
        assert_eq!(m.name.as_deref(), Some("News 24"));
        assert_eq!((m.number, m.hidden, m.sources.clone()), (None, false, None));
        let m = patch_mapping(&m, &patch(r#"{"name":null}"#), &services).unwrap();
        assert!(m.is_empty());

        for (body, why) in [
            (r#"{"name":"  "}"#, "empty"),
            (r#"{"name":"a\nb"}"#, "control"),
            (r#"{"number":0}"#, "at least 1"),
            (r#"{"logo":"javascript:alert(1)"}"#, "http(s)"),
            (r#"{"tvg_id":"a\"b"}"#, "tvg_id"),
            (r#"{"sources":["C"]}"#, "unknown service `C`"),
            (r#"{"sources":["A","A"]}"#, "twice"),
        ] {
            let err =
                patch_mapping(&ChannelMapping::default(), &patch(body), &services).expect_err(body);
            assert!(err.contains(why), "{body}: {err}");
        }
        assert!(serde_json::from_str::<ChannelPatch>(r#"{"nmae":"x"}"#).is_err());
        assert!(serde_json::from_str::<ChannelPatch>(r#"{"number":-1}"#).is_err());
    }

    #[test]
    fn mapping_applies_pins_and_hides() {
        let src = |service: &str, id: &str| Source {
            service: service.into(),
            channel_id: id.into(),
            name: id.into(),
            priority: 0,
            catchup_days: 0,
        };
        let base = |slug: &str, number: u32| Unmapped {
            channel: LineupChannel {
                id: slug.into(),
                number,
                name: slug.to_uppercase().into(),
                logo: Text::default(),
                logo_from: Text::default(),
                group: "G".into(),
                tags: vec![],
                guide_id: format!("{slug}.freesky").into(),
                sources: vec![
                    src("A", "a1"),
                    src("B", "b1"),
                    src("C", "c1"),
                    src("B", "b2"),
                ],
                catchup_days: 0,
                station_id: Text::default(),
            },
            tvg_id: Text::default(),
        };
        let mut maps = HashMap::new();
        maps.insert(
            "one".to_string(),
            ChannelMapping {
                number: Some(9),
                tvg_id: Some("One.tv".into()),
                sources: Some(vec!["C".into(), "B".into()]),
                ..Default::default()
            },
        );
        maps.insert(
            "two".to_string(),
            ChannelMapping {
                hidden: true,
                ..Default::default()
            },
        );
        let base = Arc::new(vec![base("one", 1), base("two", 2), base("three", 3)]);
        let l = Lineup::mapped(&base, &maps);
        let listed: Vec<_> = l
            .channels
            .iter()
            .map(|c| (c.id.as_str(), c.number))
            .collect();
        assert_eq!(listed, [("three", 3), ("one", 9)]);
        let one = l.get("9").unwrap();
        assert_eq!(one.guide_id, "One.tv");
        let order: Vec<_> = one.sources.iter().map(|s| s.channel_id.as_str()).collect();
        assert_eq!(order, ["c1", "b1", "b2", "a1"]);
        assert!(l.get("1").is_none(), "the old number is free");
        // Hidden: in no listing or search, but found by id and number.
        assert!(l.search("two").is_empty());
        assert_eq!(l.by_number(2).map(|c| c.id.as_str()), Some("two"));
        let d = l.detail("two").unwrap();
        assert!(d.hidden && d.mapping.hidden);
        let d = l.detail("one").unwrap();
        assert_eq!((d.upstream.number, d.channel.number), (1, 9));
        assert_eq!(d.upstream.guide_id, "one.freesky");
    }
}
