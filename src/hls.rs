//! HLS playlists: deciding whether a body is one (and which kind), and rewriting every URI in it.
//!
//! This module owns the line-based rewriter that points a playlist's variants, segments, keys and
//! init sections at freesky's proxy. It is pure: it takes text and a base URL and returns text. It
//! must not do IO, and it must never panic, whatever an upstream sends.
//!
//! We rewrite line by line instead of parsing into `m3u8-rs` and writing back out. m3u8-rs
//! re-orders unknown tags, drops tags after the last segment (all of LL-HLS: `EXT-X-PART`,
//! `EXT-X-PRELOAD-HINT`, `EXT-X-RENDITION-REPORT`) and drops comments, and players depend on all
//! of those. Only [`media_info`] uses m3u8-rs, and only to read facts.

use std::ops::Range;

use url::Url;

/// What a URI in a playlist points at; decides how freesky proxies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UriKind {
    /// Another playlist (a variant, a rendition, an I-frame playlist): it must be rewritten too.
    Playlist,
    /// Media bytes (segments, LL-HLS parts, session data): streamed through untouched.
    Segment,
    /// A decryption key (`EXT-X-KEY`, `EXT-X-SESSION-KEY`).
    Key,
    /// An init section (`EXT-X-MAP`, or a `PRELOAD-HINT` of `TYPE=MAP`).
    Map,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RewriteError {
    #[error("not an HLS playlist")]
    NotHls,
    /// A sequence number that is not one: a player reads it as 0 (or wraps it) at
    /// every reload and waits for ever for a new segment.
    #[error("its #EXT-X-MEDIA-SEQUENCE `{0}` is not a whole number from 0")]
    BadSequence(String),
}

/// The value of an `#EXT-X-MEDIA-SEQUENCE` line, when it is a whole number from 0
/// (decimal digits only: not `-5`, `+5`, `1.5`); else what it says, cut short.
fn media_sequence(value: &str) -> Result<u64, String> {
    let value = value.trim();
    value
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| value.parse().ok())
        .flatten()
        .ok_or_else(|| value.chars().take(24).collect())
}

/// Minimal facts about a media playlist, enough for a stream session to follow a live window.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaInfo {
    /// `EXT-X-TARGETDURATION`: how often a live playlist is worth reloading.
    pub target_duration: f64,
    /// `EXT-X-MEDIA-SEQUENCE`: the sequence number of `segments[0]`, to tell new segments from seen ones.
    pub media_sequence: u64,
    /// The segments in playlist order, resolved against the playlist's URL.
    pub segments: Vec<Segment>,
    /// `EXT-X-ENDLIST` was present: no more segments will come, so stop reloading.
    pub ended: bool,
}

/// One segment of a media playlist: its URL and the tags that say how to read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub url: Url,
    /// `EXT-X-BYTERANGE`: the segment is only these bytes of `url`.
    pub range: Option<ByteRange>,
    /// The `EXT-X-KEY` in effect: how its bytes are encrypted (`None`: they are not).
    pub key: Option<Encryption>,
    /// The `EXT-X-MAP` in effect: the init section it needs (fMP4).
    pub map: Option<Map>,
}

/// An init section (`EXT-X-MAP`): the resource, or a byte range of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Map {
    pub url: Url,
    pub range: Option<ByteRange>,
}

impl Map {
    /// The `EXT-X-MAP` attribute list `list`; `None` without a usable (http/https) URI.
    fn parse(list: &str, base: &Url) -> Option<Self> {
        let attrs = parse_attributes(list);
        let get = |name: &str| attrs.iter().find(|a| a.name == name).map(|a| a.value);
        Some(Self {
            url: resolve(base, get("URI")?)?,
            range: get("BYTERANGE").and_then(|r| ByteRange::parse(r, 0)),
        })
    }
}

/// How a segment's bytes are encrypted (`EXT-X-KEY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// AES-128-CBC of the whole segment, PKCS#7 padded: the key's URL, and the IV when
    /// the tag gives one (else it is the segment's media sequence number, big-endian).
    Aes128 { key: Url, iv: Option<[u8; 16]> },
    /// What freesky cannot decrypt (SAMPLE-AES, a DRM key format, a key that is not
    /// fetched over HTTP, a malformed IV): what it is.
    Unsupported(String),
}

impl Encryption {
    /// The `EXT-X-KEY` attribute list `list`; `None` for `METHOD=NONE`.
    fn parse(list: &str, base: &Url) -> Option<Self> {
        let attrs = parse_attributes(list);
        let get = |name: &str| {
            attrs
                .iter()
                .find(|a| a.name == name)
                .map(|a| a.value.trim())
        };
        let method = get("METHOD").unwrap_or_default();
        if method == "NONE" {
            return None;
        }
        let unsupported = |what: String| Some(Self::Unsupported(what));
        if let Some(format) = get("KEYFORMAT").filter(|f| *f != "identity") {
            return unsupported(format!("{method} (KEYFORMAT {format:?})"));
        }
        if method != "AES-128" {
            return unsupported(if method.is_empty() {
                "a key without METHOD".into()
            } else {
                method.to_string()
            });
        }
        let Some(key) = get("URI").and_then(|u| resolve(base, u)) else {
            return unsupported("AES-128 with a key URI that is not http(s)".into());
        };
        let iv = match get("IV") {
            None => None,
            Some(v) => match parse_iv(v) {
                Some(iv) => Some(iv),
                None => return unsupported(format!("AES-128 with a malformed IV {v:?}")),
            },
        };
        Some(Self::Aes128 { key, iv })
    }
}

/// An `IV` attribute: `0x` and up to 32 hex digits, a 128-bit big-endian number.
fn parse_iv(value: &str) -> Option<[u8; 16]> {
    let hex = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))?;
    if hex.is_empty() || hex.len() > 32 {
        return None;
    }
    u128::from_str_radix(hex, 16).ok().map(u128::to_be_bytes)
}

/// A sub-range of a resource (`EXT-X-BYTERANGE`, an `EXT-X-MAP`'s `BYTERANGE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    pub offset: u64,
    pub length: u64,
}

impl ByteRange {
    /// The HTTP `Range` header asking for it (`bytes=first-last`); `None` for an empty range.
    pub fn header(&self) -> Option<String> {
        let last = self.offset.checked_add(self.length.checked_sub(1)?)?;
        Some(format!("bytes={}-{last}", self.offset))
    }

    /// `<length>[@<offset>]`; without an offset it starts at `next` (where the
    /// previous one ended). `None` when malformed.
    fn parse(value: &str, next: u64) -> Option<Self> {
        let value = value.trim().trim_matches('"');
        let (length, offset) = match value.split_once('@') {
            Some((l, o)) => (l, Some(o.trim().parse().ok()?)),
            None => (value, None),
        };
        Some(Self {
            length: length.trim().parse().ok()?,
            offset: offset.unwrap_or(next),
        })
    }
}

/// Some origins (and editors on Windows) put a UTF-8 byte order mark before `#EXTM3U`.
const BOM: char = '\u{feff}';

/// True when the body is an HLS playlist: first non-blank line (after an optional UTF-8 BOM and
/// whitespace) starts with `#EXTM3U` AND the body contains at least one `#EXT-X-` tag or `#EXTINF`.
///
/// An IPTV channel list with only `#EXTINF:-1` entries is still "HLS-looking"; that's fine,
/// because the proxy treats its entries like segments and sniffs what comes back.
pub fn is_hls(body: &str) -> bool {
    let mut lines = body
        .trim_start_matches(BOM)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty());
    match lines.next() {
        Some(first) if first.starts_with("#EXTM3U") => {}
        _ => return false,
    }
    lines.any(|l| l.starts_with("#EXT-X-") || l.starts_with("#EXTINF"))
}

/// True when the playlist has ended (`#EXT-X-ENDLIST`): a player reads it once.
pub fn is_ended(body: &str) -> bool {
    body.lines()
        .any(|l| l.trim_matches(is_pad) == "#EXT-X-ENDLIST")
}

/// True when the playlist is a master (multivariant) playlist: it is HLS (see [`is_hls`]), has an
/// `#EXT-X-STREAM-INF`, `#EXT-X-I-FRAME-STREAM-INF` or `#EXT-X-MEDIA` tag, and no `#EXTINF`
/// (a master never lists segments, so an `#EXTINF` means media playlist whatever else is there).
pub fn is_master(body: &str) -> bool {
    if !is_hls(body) {
        return false;
    }
    let mut has_master_tag = false;
    for line in body.lines() {
        match tag_name(line.trim_matches(is_pad)) {
            Some("#EXTINF") => return false,
            Some("#EXT-X-STREAM-INF" | "#EXT-X-I-FRAME-STREAM-INF" | "#EXT-X-MEDIA") => {
                has_master_tag = true;
            }
            _ => {}
        }
    }
    has_master_tag
}

/// Rewrites every URI in `body`: URI lines (non-blank lines not starting with '#') and every
/// `URI="..."` attribute inside `#EXT` tag lines.
///
/// Each URI is resolved against `base` (the playlist's final URL after redirects) with
/// [`Url::join`], then passed to `f` with its kind; the returned string replaces it (so it must not
/// contain a `"` or a line break, which a serialized [`Url`] never does). Lines are kept
/// byte for byte (tag order, unknown tags, blank lines; the padding around a line, which
/// RFC 8216 allows none of, is left out) but for those [`kept_tag`] takes
/// out (comments, low-latency tags, content steering, interstitial asset lists), which
/// become blank lines, so every line keeps its number; line endings are kept (CRLF stays CRLF, LF stays LF; a missing final newline stays
/// missing).
///
/// URIs that do not resolve to http/https (e.g. `skd://` FairPlay keys, `data:` URIs) are kept
/// unchanged and `f` is not called: the player handles those itself.
pub fn rewrite(
    body: &str,
    base: &Url,
    mut f: impl FnMut(&Url, UriKind) -> String,
) -> Result<String, RewriteError> {
    rewrite_refs(body, |out, raw, kind| match resolve(base, raw) {
        Some(url) => {
            out.push_str(&f(&url, kind));
            true
        }
        None => false,
    })
}

/// [`rewrite`] without resolving: `f` gets the output so far, and each URI reference
/// exactly as written in the playlist (relative or absolute); it appends the
/// replacement and returns true, or returns false to keep the reference as it is.
/// Resolution can then wait until a link is followed; rewriting a long playlist does
/// no URL parsing and no allocation per URI.
pub fn rewrite_refs(
    body: &str,
    f: impl FnMut(&mut String, &str, UriKind) -> bool,
) -> Result<String, RewriteError> {
    // Proxy URLs are longer than most upstream URIs; avoid regrowing for typical playlists.
    rewrite_refs_sized(body, body.len() * 4, f)
}

/// [`rewrite_refs`] writing into a buffer of `capacity` bytes, for callers that know
/// how long their replacements are (regrowing a megabyte of output is a copy of it).
pub fn rewrite_refs_sized(
    body: &str,
    capacity: usize,
    mut f: impl FnMut(&mut String, &str, UriKind) -> bool,
) -> Result<String, RewriteError> {
    if !is_hls(body) {
        return Err(RewriteError::NotHls);
    }
    let master = is_master(body);
    let mut out = String::with_capacity(capacity);
    // A URI line right after EXT-X-STREAM-INF is a variant playlist even in a body that also has
    // #EXTINF (and so is not a "master" by is_master); trust the tag over the whole-body guess.
    let mut after_stream_inf = false;

    for piece in body.split_inclusive('\n') {
        let (content, ending) = split_ending(piece);
        // Padding around a line (spaces, tabs, a byte-order mark before `#EXTM3U`) is
        // not copied: RFC 8216 allows none, and players that trip on it (ffmpeg reads
        // "  http://..." as a file name, a BOM as no playlist) would still trip.
        let (_, core, _) = split_pad(content);
        if core.is_empty() {
            // Blank (or whitespace-only) line: nothing to do.
        } else if core.starts_with('#') {
            if core.starts_with("#EXT-X-STREAM-INF") && tag_name(core) == Some("#EXT-X-STREAM-INF")
            {
                after_stream_inf = true;
            }
            if let Some(n) = core.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                media_sequence(n).map_err(RewriteError::BadSequence)?;
            }
            match kept_tag(core) {
                Kept::Line => rewrite_tag(core, &mut f, &mut out),
                Kept::As(line) => rewrite_tag(&line, &mut f, &mut out),
                // A blank line (which players skip): lines keep their numbers.
                Kept::Dropped => {
                    out.push_str(ending);
                    continue;
                }
            }
        } else {
            let kind = if master || after_stream_inf {
                UriKind::Playlist
            } else {
                UriKind::Segment
            };
            after_stream_inf = false;
            let mark = out.len();
            if !f(&mut out, core, kind) {
                out.truncate(mark);
                out.push_str(core);
            }
        }
        out.push_str(ending);
    }
    Ok(out)
}

/// `body` with its `#EXT-X-DEFINE` variables substituted (`{$name}` in every later
/// line), for playlists that define any: a `NAME` with its `VALUE`, or a `QUERYPARAM`
/// taken from `url`'s query (RFC 8216bis 4.4.2.3). Proxy links carry each URI sealed, so
/// a player could no longer substitute in them. The definitions become blank lines (so
/// lines keep their numbers); an `IMPORT` (a value from the master playlist, which
/// freesky does not keep) stays as it is, with its references, and so does a
/// definition whose value holds a quote or a control character. One pass per line: an
/// inserted value is never read again for references. `Ok(None)` when nothing is
/// defined; an error when the result would pass `limit` bytes.
pub fn substitute_defines(body: &str, url: &Url, limit: usize) -> Result<Option<String>, String> {
    if !body.contains("#EXT-X-DEFINE:") {
        return Ok(None);
    }
    let mut vars: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut out = String::with_capacity(body.len());
    for piece in body.split_inclusive('\n') {
        let (content, ending) = split_ending(piece);
        let trimmed = content.trim_matches(is_pad);
        if let Some(list) = trimmed.strip_prefix("#EXT-X-DEFINE:") {
            let attrs = parse_attributes(list);
            let attr = |n: &str| attrs.iter().find(|a| a.name == n).map(|a| a.value);
            let defined = match (attr("NAME"), attr("VALUE"), attr("QUERYPARAM")) {
                (Some(name), Some(value), _) => Some((name.to_string(), value.to_string())),
                (_, _, Some(param)) => url
                    .query_pairs()
                    .find(|(k, _)| k == param)
                    .map(|(_, v)| (param.to_string(), v.into_owned())),
                _ => None,
            };
            match defined {
                Some((name, value)) if !value.chars().any(|c| c == '"' || c.is_control()) => {
                    vars.insert(name, value);
                    out.push_str(ending);
                }
                _ => out.push_str(piece),
            }
        } else if vars.is_empty() || !piece.contains("{$") {
            out.push_str(piece);
        } else {
            let mut rest = piece;
            while let Some(at) = rest.find("{$") {
                out.push_str(&rest[..at]);
                let after = &rest[at + 2..];
                match after
                    .find('}')
                    .and_then(|end| vars.get(&after[..end]).map(|v| (end, v)))
                {
                    Some((end, value)) => {
                        out.push_str(value);
                        rest = &after[end + 1..];
                    }
                    None => {
                        out.push_str("{$");
                        rest = after;
                    }
                }
                if out.len() > limit {
                    break;
                }
            }
            out.push_str(rest);
        }
        if out.len() > limit {
            return Err(format!(
                "its EXT-X-DEFINE variables make it longer than {limit} bytes"
            ));
        }
    }
    Ok(Some(out))
}

/// How many URIs `body` lists (URI lines, and `URI=` attributes of tag lines other than
/// `#EXTINF`), counting no further than `stop_after + 1`: enough to tell whether a
/// playlist is over a cap without reading the rest. Each URI becomes a proxy link many
/// times its size, so this is what bounds a rewrite's output.
pub fn count_uris(body: &str, stop_after: usize) -> usize {
    let mut n = 0usize;
    for line in body.lines() {
        let line = line.trim_matches(is_pad);
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            n += 1;
        } else if line.starts_with("#EXT") && !line.starts_with("#EXTINF") {
            n += line.matches("URI=").count();
        }
        if n > stop_after {
            return n;
        }
    }
    n
}

/// True when a URI reference, resolved against an http(s) playlist URL, is something
/// freesky fetches: not blank, and relative or with an http/https scheme (`skd://`
/// FairPlay keys and `data:` URIs are the player's business).
pub fn is_fetchable_ref(raw: &str) -> bool {
    let raw = raw.trim();
    if is_blank_uri(raw) {
        return false;
    }
    // RFC 3986: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then ':'.
    let bytes = raw.as_bytes();
    let scheme_len = bytes
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')))
        .unwrap_or(bytes.len());
    if scheme_len == 0 || bytes.get(scheme_len) != Some(&b':') || !bytes[0].is_ascii_alphabetic() {
        return true; // relative
    }
    let scheme = &raw[..scheme_len];
    scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
}

/// True for a URI reference a player may be handed as the upstream wrote it when
/// freesky does not fetch it: `data:` (inline keys and maps) and `skd:` (FairPlay
/// keys). Any other scheme (`file:`, `gopher:`, `ftp:`...) in an upstream playlist
/// could make the player read its own files or reach hosts on its own network: such
/// a URI is replaced (`proxy::rewrite_playlist`).
pub fn is_passed_ref(raw: &str) -> bool {
    let raw = raw.trim();
    let lower = |n: usize| raw.get(..n).map(str::to_ascii_lowercase);
    is_blank_uri(raw) || lower(5).as_deref() == Some("data:") || lower(4).as_deref() == Some("skd:")
}

/// Minimal facts about a media playlist, read with `m3u8-rs` (reading is what it does well; see
/// the module doc for why it is not used for rewriting).
///
/// Two facts are read from the lines instead, because m3u8-rs 6 gets them wrong on real input:
/// it reads the target duration as an integer, and on `#EXT-X-TARGETDURATION:6.5` it keeps `6`
/// and turns the leftover `.5` into a bogus segment. So the duration comes from the tag itself,
/// and the segments are the URI lines, exactly the lines [`rewrite`] treats as segments, so a
/// session can match what it sees here with what the player was sent.
///
/// Each segment comes with its `EXT-X-BYTERANGE` (an offset left out goes on from the previous
/// range of the same resource; a malformed one is left out) and the `EXT-X-KEY` and `EXT-X-MAP`
/// in effect.
///
/// Fails on a body that is not HLS, on a master playlist, on a body m3u8-rs rejects, and on a
/// segment URI that cannot be resolved against `base` (skipping one would shift every later
/// sequence number).
pub fn media_info(body: &str, base: &Url) -> Result<MediaInfo, String> {
    if !is_hls(body) {
        return Err("not an HLS playlist".to_owned());
    }
    if is_master(body) {
        return Err("a master playlist has no segments".to_owned());
    }
    // A sequence number that is not one (`-5`, `1.5`): m3u8-rs reads it as 0 at every
    // reload, and a follower would wait for ever for a segment numbered past it.
    // Read here, not by m3u8-rs (which also reads ` 7` as 0).
    let media_sequence = match body.lines().find_map(|l| {
        l.trim_matches(is_pad)
            .strip_prefix("#EXT-X-MEDIA-SEQUENCE:")
            .map(str::trim)
    }) {
        None => 0,
        Some(n) => media_sequence(n).map_err(|n| RewriteError::BadSequence(n).to_string())?,
    };
    // m3u8-rs wants `#EXTM3U` as the very first bytes.
    let text = body.trim_start_matches(BOM).trim_start();
    let playlist = m3u8_rs::parse_media_playlist_res(parse_view(text, Kind::Media).as_bytes())
        .map_err(|e| describe_parse_error(&e.to_string()))?;
    let segments = read_segments(body, base)?;
    Ok(MediaInfo {
        // m3u8-rs's value is whole seconds, which any f64 holds exactly.
        target_duration: declared_target_duration(body).unwrap_or(playlist.target_duration as f64),
        media_sequence,
        segments,
        ended: playlist.end_list,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Media,
    Master,
}

/// Of the per-item tags without a URI line of their own (`EXT-X-MEDIA`,
/// `EXT-X-I-FRAME-STREAM-INF`), how many of each `parse_view` keeps.
const MAX_ITEM_TAGS: usize = 10_000;

/// The lines of playlist `text` that m3u8-rs reads for what freesky takes from it, in
/// order: `#EXTM3U`, the first of each playlist-wide tag, the tags of each item (of a
/// URI line, only the last of each before it) and the URI lines. Comments, blank lines,
/// unknown tags and the segment tags freesky reads itself (`read_segments`) are left
/// out: m3u8-rs keeps an object for every line it reads, some 450 bytes, and a live
/// playlist of 16 MB of `#` lines, under `max_body_bytes`, held 3.6 GB at each poll
/// (review 34). URI lines are capped before this (`max_playlist_uris`).
fn parse_view(text: &str, kind: Kind) -> String {
    const MEDIA_WIDE: &[&str] = &[
        "#EXT-X-VERSION",
        "#EXT-X-TARGETDURATION",
        "#EXT-X-MEDIA-SEQUENCE",
        "#EXT-X-DISCONTINUITY-SEQUENCE",
        "#EXT-X-PLAYLIST-TYPE",
        "#EXT-X-ENDLIST",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        "#EXT-X-I-FRAMES-ONLY",
    ];
    const MASTER_WIDE: &[&str] = &["#EXT-X-VERSION", "#EXT-X-INDEPENDENT-SEGMENTS"];
    let (wide, before_uri, standalone): (&[&str], &str, &[&str]) = match kind {
        Kind::Media => (MEDIA_WIDE, "#EXTINF", &[]),
        Kind::Master => (
            MASTER_WIDE,
            "#EXT-X-STREAM-INF",
            &["#EXT-X-MEDIA", "#EXT-X-I-FRAME-STREAM-INF"],
        ),
    };
    let mut out = String::with_capacity(text.len().min(1 << 20));
    let mut seen = vec![false; wide.len()];
    let mut standalone_kept = vec![0usize; standalone.len()];
    let mut pending: Option<&str> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_matches(is_pad);
        if i == 0 {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            if let Some(tag) = pending.take() {
                out.push_str(tag);
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let name = tag_name(line).unwrap_or(line);
        if name == before_uri {
            pending = Some(line);
        } else if let Some(w) = wide.iter().position(|t| *t == name) {
            if !std::mem::replace(&mut seen[w], true) {
                out.push_str(line);
                out.push('\n');
            }
        } else if let Some(k) = standalone.iter().position(|t| *t == name) {
            if standalone_kept[k] < MAX_ITEM_TAGS {
                standalone_kept[k] += 1;
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The URI lines of a media playlist, each with the tags that apply to it.
fn read_segments(body: &str, base: &Url) -> Result<Vec<Segment>, String> {
    let mut segments: Vec<Segment> = Vec::new();
    // `EXT-X-BYTERANGE` applies to the next URI; kept unparsed until its URL is known
    // (a range without an offset goes on from the previous one of the same resource).
    let mut range: Option<&str> = None;
    // `EXT-X-KEY` applies until the next one. Of several before one segment (one per
    // KEYFORMAT, for different players), the plain (identity) key is the one read.
    let mut key: Option<Encryption> = None;
    let mut identity_key = false;
    // `EXT-X-MAP` applies until the next one.
    let mut map: Option<Map> = None;
    for line in body.lines() {
        let line = line.trim_matches(is_pad);
        if let Some(value) = line.strip_prefix("#EXT-X-BYTERANGE:") {
            range = Some(value);
            continue;
        }
        if let Some(list) = line.strip_prefix("#EXT-X-MAP:") {
            map = Map::parse(list, base);
            continue;
        }
        if let Some(list) = line.strip_prefix("#EXT-X-KEY:") {
            let identity = parse_attributes(list)
                .iter()
                .find(|a| a.name == "KEYFORMAT")
                .is_none_or(|a| a.value.trim() == "identity");
            if identity || !identity_key {
                key = Encryption::parse(list, base);
                identity_key |= identity;
            }
            continue;
        }
        if line.starts_with('#') || is_blank_uri(line) {
            continue;
        }
        identity_key = false;
        let url = base
            .join(line)
            .map_err(|e| format!("segment URI {line:?} does not resolve: {e}"))?;
        let range = range.take().and_then(|value| {
            let next = match segments.last() {
                Some(Segment {
                    url: prev,
                    range: Some(r),
                    ..
                }) if *prev == url => r.offset.saturating_add(r.length),
                _ => 0,
            };
            ByteRange::parse(value, next)
        });
        segments.push(Segment {
            url,
            range,
            key: key.clone(),
            map: map.clone(),
        });
    }
    Ok(segments)
}

/// Where a media playlist's live window ends: the sequence number the next segment
/// will get and the last segment's URL. The same facts [`media_info`] gives
/// (`media_sequence + segments.len()`, `segments.last()`), read by one pass over the
/// lines, without m3u8-rs and without resolving every segment: for a player's every
/// poll of a long playlist. `None` for what is not a media playlist, or a last segment
/// that does not resolve.
pub fn live_edge(body: &str, base: &Url) -> Option<(u64, Option<Url>)> {
    if !is_hls(body) || is_master(body) {
        return None;
    }
    let mut sequence = 0u64;
    let mut count = 0u64;
    let mut last = None;
    for line in body.lines() {
        let line = line.trim_matches(is_pad);
        if let Some(n) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            sequence = n.trim().parse().ok()?;
        } else if !line.starts_with('#') && !is_blank_uri(line) {
            count += 1;
            last = Some(line);
        }
    }
    let last = match last {
        Some(uri) => Some(base.join(uri).ok()?),
        None => None,
    };
    Some((sequence.checked_add(count)?, last))
}

/// A media playlist's `EXT-X-DISCONTINUITY-SEQUENCE` (0 when it has none), and the
/// discontinuity sequence a playlist listing none of its segments would carry: that
/// plus its `EXT-X-DISCONTINUITY` tags. A line scan.
pub fn discontinuities(body: &str) -> (u64, u64) {
    let mut first = 0u64;
    let mut tags = 0u64;
    for line in body.lines() {
        let line = line.trim_matches(is_pad);
        if let Some(n) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
            first = n.trim().parse().unwrap_or(0);
        } else if line == "#EXT-X-DISCONTINUITY" {
            tags += 1;
        }
    }
    (first, first.saturating_add(tags))
}

/// `#EXT-X-TARGETDURATION` as a duration, when the playlist declares a sane one.
pub fn target_duration(body: &str) -> Option<std::time::Duration> {
    declared_target_duration(body)
        .filter(|d| *d < 86_400.0)
        .map(std::time::Duration::from_secs_f64)
}

/// The variant of a master playlist with the highest bandwidth (what a single
/// continuous stream should carry), resolved against `base`. `None` when the body
/// is not a master or lists no usable variant.
pub fn best_variant(body: &str, base: &Url) -> Option<Url> {
    if !is_master(body) {
        return None;
    }
    let text = body.trim_start_matches(BOM).trim_start();
    let master =
        m3u8_rs::parse_master_playlist_res(parse_view(text, Kind::Master).as_bytes()).ok()?;
    master
        .variants
        .iter()
        .filter(|v| !v.is_i_frame)
        .filter_map(|v| resolve(base, &v.uri).map(|u| (v.bandwidth, u)))
        .max_by_key(|(bandwidth, _)| *bandwidth)
        .map(|(_, u)| u)
}

/// The variant of a master playlist a single continuous stream (a `.ts` session)
/// should follow, resolved against `base`: the highest-bandwidth one among those that
/// carry their audio in their own segments (no `AUDIO` group, or one whose renditions
/// have no `URI`), since a session follows one media playlist and a variant whose
/// audio is a separate `EXT-X-MEDIA TYPE=AUDIO` rendition plays silent. When every
/// variant needs a separate audio rendition, the highest-bandwidth one, and `true`
/// (it will be silent). `None` when the body is not a master or lists no usable variant.
pub fn muxed_variant(body: &str, base: &Url) -> Option<(Url, bool)> {
    if !is_master(body) {
        return None;
    }
    let text = body.trim_start_matches(BOM).trim_start();
    let master =
        m3u8_rs::parse_master_playlist_res(parse_view(text, Kind::Master).as_bytes()).ok()?;
    let separate_audio = |v: &m3u8_rs::VariantStream| {
        v.audio.as_deref().is_some_and(|group| {
            master.alternatives.iter().any(|m| {
                m.media_type == m3u8_rs::AlternativeMediaType::Audio
                    && m.group_id == group
                    && m.uri.is_some()
            })
        })
    };
    let best = |muxed_only: bool| {
        master
            .variants
            .iter()
            .filter(|v| !v.is_i_frame)
            .filter(|v| !muxed_only || !separate_audio(v))
            .filter_map(|v| resolve(base, &v.uri).map(|u| (v.bandwidth, u)))
            .max_by_key(|(bandwidth, _)| *bandwidth)
            .map(|(_, u)| u)
    };
    match best(true) {
        Some(url) => Some((url, false)),
        None => best(false).map(|url| (url, true)),
    }
}

/// The value of `#EXT-X-TARGETDURATION`, fractional or not, when it is a sane number.
fn declared_target_duration(body: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.trim().strip_prefix("#EXT-X-TARGETDURATION:"))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .filter(|d| d.is_finite() && *d >= 0.0)
}

/// m3u8-rs's error borrows the input and its text dumps the unparsed bytes as a number list,
/// which can be the whole playlist. nom is not our dependency, so we cannot match on it; keep
/// the error code from the text (it comes last) and drop the byte dump.
fn describe_parse_error(text: &str) -> String {
    match text.rsplit_once("code: ") {
        Some((_, code)) => format!(
            "media playlist does not parse (nom error {})",
            code.trim_end_matches(|c: char| c == '}' || c.is_whitespace())
        ),
        None => {
            let short: String = text.chars().take(200).collect();
            format!("media playlist does not parse: {short}")
        }
    }
}

/// What becomes of a `#` line in a rewritten playlist.
enum Kept {
    Line,
    /// Kept with some attributes taken out.
    As(String),
    Dropped,
}

/// Which tags a rewritten playlist keeps. Out: comments (not `#EXT`: they may name
/// upstream URLs); low-latency tags (parts, preload hints, rendition reports, skips)
/// and the server-control attributes that promise them, since freesky serves
/// playlists from its cache and does not hold a reload until a part exists
/// (`CAN-BLOCK-RELOAD`): it serves the segments, as regular-latency HLS, which every
/// LL-HLS player also plays; content steering (its manifest lists other hosts'
/// addresses for the player to use), and interstitials given as an asset list (a
/// JSON document of URIs freesky does not rewrite). An interstitial's `X-ASSET-URI`
/// is kept and rewritten like a `URI`.
fn kept_tag(line: &str) -> Kept {
    if !line.starts_with("#EXT") {
        return Kept::Dropped;
    }
    // The line of every segment: decided without looking further.
    if line.starts_with("#EXTINF") {
        return Kept::Line;
    }
    let name = tag_name(line).unwrap_or(line);
    let list = line.split_once(':').map_or("", |(_, list)| list);
    match name {
        "#EXT-X-PART"
        | "#EXT-X-PART-INF"
        | "#EXT-X-PRELOAD-HINT"
        | "#EXT-X-RENDITION-REPORT"
        | "#EXT-X-SKIP"
        | "#EXT-X-CONTENT-STEERING" => Kept::Dropped,
        "#EXT-X-DATERANGE"
            if parse_attributes(list)
                .iter()
                .any(|a| a.name == "X-ASSET-LIST") =>
        {
            Kept::Dropped
        }
        "#EXT-X-SERVER-CONTROL" => {
            const PROMISES: &[&str] = &[
                "CAN-BLOCK-RELOAD",
                "CAN-SKIP-UNTIL",
                "CAN-SKIP-DATERANGES",
                "PART-HOLD-BACK",
            ];
            let attrs = parse_attributes(list);
            if !attrs.iter().any(|a| PROMISES.contains(&a.name)) {
                return Kept::Line;
            }
            let kept: Vec<&str> = attrs
                .iter()
                .filter(|a| !PROMISES.contains(&a.name))
                .filter_map(|a| {
                    let start = list[..a.span.start].rfind(a.name)?;
                    list.get(start..a.span.end)
                })
                .collect();
            if kept.is_empty() {
                Kept::Dropped
            } else {
                Kept::As(format!("{name}:{}", kept.join(",")))
            }
        }
        _ => Kept::Line,
    }
}

/// Rewrites the `URI` attributes of one tag line (already trimmed) into `out`.
fn rewrite_tag(
    line: &str,
    f: &mut impl FnMut(&mut String, &str, UriKind) -> bool,
    out: &mut String,
) {
    // #EXTINF's value is "duration,title", not an attribute list: a title may say anything,
    // including `URI="..."`. Tags without ':' (#EXTM3U, #EXT-X-ENDLIST, comments) have no attributes.
    if line.starts_with("#EXTINF:") {
        out.push_str(line);
        return;
    }
    let Some((name, list)) = line.split_once(':') else {
        out.push_str(line);
        return;
    };
    if name == "#EXTINF" || !name.starts_with("#EXT") {
        out.push_str(line);
        return;
    }
    let attrs = parse_attributes(list);
    let kind = tag_kind(name, &attrs);

    out.push_str(name);
    out.push(':');
    let mut copied = 0;
    let is_uri =
        |a: &&Attr<'_>| a.name == "URI" || (a.name == "X-ASSET-URI" && name == "#EXT-X-DATERANGE");
    for attr in attrs.iter().filter(is_uri) {
        let Some(before) = list.get(copied..attr.span.start) else {
            continue;
        };
        let mark = out.len();
        out.push_str(before);
        out.push('"');
        if !f(out, attr.value, kind) {
            out.truncate(mark);
            continue;
        }
        out.push('"');
        copied = attr.span.end;
    }
    out.push_str(list.get(copied..).unwrap_or_default());
}

/// Which kind of resource a tag's `URI` attribute names.
fn tag_kind(name: &str, attrs: &[Attr<'_>]) -> UriKind {
    match name {
        // SESSION-DATA names a JSON file: served as bytes (`key.bin`,
        // `application/octet-stream`), not as a segment.
        "#EXT-X-KEY" | "#EXT-X-SESSION-KEY" | "#EXT-X-SESSION-DATA" => UriKind::Key,
        "#EXT-X-DATERANGE" => UriKind::Playlist,
        "#EXT-X-MAP" => UriKind::Map,
        "#EXT-X-PRELOAD-HINT"
            if attrs
                .iter()
                .any(|a| a.name == "TYPE" && a.value.trim() == "MAP") =>
        {
            UriKind::Map
        }
        "#EXT-X-MEDIA" | "#EXT-X-RENDITION-REPORT" => UriKind::Playlist,
        // I-FRAME-STREAM-INF, and vendor variants such as Roku's IMAGE-STREAM-INF: all playlists.
        n if n.ends_with("STREAM-INF") => UriKind::Playlist,
        // PRELOAD-HINT of TYPE=PART (kept only by `rewrite_refs` callers that keep
        // LL-HLS tags) and tags we don't know: fetched as bytes, and the proxy sniffs
        // bodies anyway.
        _ => UriKind::Segment,
    }
}

/// One `NAME=value` pair of an HLS attribute list.
#[derive(Debug, PartialEq)]
struct Attr<'a> {
    /// The attribute name, surrounding whitespace removed.
    name: &'a str,
    /// The value without its quotes.
    value: &'a str,
    /// Byte range of the value in the list, quotes included: what a rewrite replaces.
    span: Range<usize>,
}

/// Parses an attribute list (`NAME=value,NAME="quoted, value"`) as far as it is well formed.
///
/// Quoted values may contain commas and `=` (so `VALUE="a, URI=x"` holds no URI attribute).
/// On malformed input we stop and keep the attributes read so far: rewriting those is still right,
/// and guessing past the error could rewrite text that is not a URI. Whitespace around names and
/// commas is tolerated because some origins emit it.
fn parse_attributes(list: &str) -> Vec<Attr<'_>> {
    let mut attrs = Vec::new();
    let mut pos = 0;
    while let Some((attr, next)) = parse_attribute(list, pos) {
        attrs.push(attr);
        match next {
            Some(next) => pos = next,
            None => break,
        }
    }
    attrs
}

/// Parses the attribute starting at `pos`; returns it and where the next one starts (None at the end).
fn parse_attribute(list: &str, pos: usize) -> Option<(Attr<'_>, Option<usize>)> {
    let rest = list.get(pos..)?;
    let eq = rest.find('=')?;
    let name = rest.get(..eq)?.trim();
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_name {
        return None;
    }

    let after_eq = pos + eq + 1;
    let raw = list.get(after_eq..)?;
    let value_start = after_eq + (raw.len() - raw.trim_start().len());
    let raw = raw.trim_start();
    let (value, span) = match raw.strip_prefix('"') {
        Some(quoted) => {
            // HLS quoted strings cannot contain '"', so the next one closes it.
            let close = quoted.find('"')?;
            (quoted.get(..close)?, value_start..value_start + close + 2)
        }
        None => {
            let end = raw.find(',').unwrap_or(raw.len());
            let value = raw.get(..end)?.trim_end();
            (value, value_start..value_start + value.len())
        }
    };
    let attr = Attr { name, value, span };

    let tail = list.get(attr.span.end..)?;
    let trimmed = tail.trim_start();
    let next = if trimmed.is_empty() {
        None
    } else if trimmed.starts_with(',') {
        Some(attr.span.end + (tail.len() - trimmed.len()) + 1)
    } else {
        // Junk after a value (e.g. `A="x"y`): keep this attribute, read no further.
        None
    };
    Some((attr, next))
}

/// Resolves a playlist URI against the playlist's URL; None when it should be left alone
/// (empty, unparsable, or not http/https such as `skd://` and `data:`).
fn resolve(base: &Url, raw: &str) -> Option<Url> {
    let raw = raw.trim();
    if is_blank_uri(raw) {
        return None;
    }
    let url = base.join(raw).ok()?;
    matches!(url.scheme(), "http" | "https").then_some(url)
}

/// True for a URI with nothing in it. The URL parser strips control characters and spaces at the
/// ends, so `join` of such a URI would silently give the playlist's own URL.
fn is_blank_uri(raw: &str) -> bool {
    raw.chars().all(|c| c.is_whitespace() || c.is_control())
}

/// The tag name of a trimmed line (`#EXT-X-KEY` of `#EXT-X-KEY:METHOD=NONE`), if it is a tag or comment.
fn tag_name(line: &str) -> Option<&str> {
    if !line.starts_with('#') {
        return None;
    }
    Some(line.split_once(':').map_or(line, |(name, _)| name))
}

/// Splits a piece from `split_inclusive('\n')` into its content and its line ending.
fn split_ending(piece: &str) -> (&str, &str) {
    if let Some(content) = piece.strip_suffix("\r\n") {
        (content, "\r\n")
    } else if let Some(content) = piece.strip_suffix('\n') {
        (content, "\n")
    } else {
        (piece, "")
    }
}

/// Padding around a line's meaning: whitespace, and the BOM that may precede `#EXTM3U`.
fn is_pad(c: char) -> bool {
    c.is_whitespace() || c == BOM
}

/// Splits a line into leading padding, the meaningful text and trailing padding.
fn split_pad(content: &str) -> (&str, &str, &str) {
    // The usual line starts and ends with a visible ASCII character: nothing to split.
    let visible = |b: Option<&u8>| b.is_some_and(|&c| c > b' ' && c < 0x7f);
    if visible(content.as_bytes().first()) && visible(content.as_bytes().last()) {
        return ("", content, "");
    }
    let lead_len = content.len() - content.trim_start_matches(is_pad).len();
    let (lead, rest) = content.split_at_checked(lead_len).unwrap_or(("", content));
    let core_len = rest.trim_end_matches(is_pad).len();
    let (core, trail) = rest.split_at_checked(core_len).unwrap_or((rest, ""));
    (lead, core, trail)
}

#[cfg(test)]
mod tests {
    #[test]
    fn best_variant_is_the_highest_bandwidth() {
        let base = Url::parse("http://o.example/live/master.m3u8").unwrap();
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nlo.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=2400000\nhi/index.m3u8\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=9000000,URI=\"if.m3u8\"\n";
        assert_eq!(
            best_variant(master, &base).unwrap().as_str(),
            "http://o.example/live/hi/index.m3u8"
        );
        assert_eq!(best_variant("#EXTM3U\n#EXTINF:2,\na.ts\n", &base), None);
    }

    #[test]
    fn the_muxed_variant_is_preferred_to_one_with_separate_audio() {
        let base = Url::parse("http://o.example/live/master.m3u8").unwrap();
        let master = "#EXTM3U\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"English\",DEFAULT=YES,URI=\"audio/en.m3u8\"\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"in\",NAME=\"Main\",DEFAULT=YES\n\
#EXT-X-STREAM-INF:BANDWIDTH=5000000,AUDIO=\"aud\"\nvideo-only.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=800000\nlo.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=1600000,AUDIO=\"in\"\nmid.m3u8\n";
        let (url, silent) = muxed_variant(master, &base).unwrap();
        assert_eq!(url.as_str(), "http://o.example/live/mid.m3u8");
        assert!(!silent);
        let only_separate = "#EXTM3U\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"English\",URI=\"en.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=500,AUDIO=\"aud\"\nlo.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=900,AUDIO=\"aud\"\nhi.m3u8\n";
        let (url, silent) = muxed_variant(only_separate, &base).unwrap();
        assert_eq!(url.as_str(), "http://o.example/live/hi.m3u8");
        assert!(silent);
        assert_eq!(muxed_variant("#EXTM3U\n#EXTINF:2,\na.ts\n", &base), None);
    }

    use super::*;

    const BASE: &str = "https://cdn.example.com/live/chan/index.m3u8";

    fn base() -> Url {
        Url::parse(BASE).expect("test base URL is valid")
    }

    fn tag(u: &Url, k: UriKind) -> String {
        format!("P[{k:?}]{u}")
    }

    /// Rewrites `input` against [`BASE`] with a marker `f` and compares the whole output.
    #[track_caller]
    fn check(input: &str, expected: &str) {
        let got = rewrite(input, &base(), tag).expect("input is HLS");
        assert_eq!(
            got, expected,
            "\n--- got ---\n{got}\n--- expected ---\n{expected}"
        );
    }

    #[test]
    fn master_playlist() {
        check(
            r#"#EXTM3U
#EXT-X-VERSION:6
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,URI="keys/session.key",KEYFORMAT="identity"
#EXT-X-SESSION-DATA:DATA-ID="com.example.lyrics",URI="lyrics.json"
#EXT-X-SESSION-DATA:DATA-ID="com.example.title",VALUE="News, URI=fake.ts, more"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English",DEFAULT=YES,URI="audio/en.m3u8"
#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",NAME="English",URI="/subs/en.m3u8"
#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID="cc",NAME="CC1",INSTREAM-ID="CC1"

#EXT-X-STREAM-INF:BANDWIDTH=1280000,CODECS="avc1.4d401f,mp4a.40.2",AUDIO="aud",SUBTITLES="subs"
low/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=2560000,RESOLUTION=1280x720
https://other.example.net/hi/index.m3u8?token=abc
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=86000,CODECS="avc1.4d401f",URI="iframe/low.m3u8"
"#,
            r#"#EXTM3U
#EXT-X-VERSION:6
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,URI="P[Key]https://cdn.example.com/live/chan/keys/session.key",KEYFORMAT="identity"
#EXT-X-SESSION-DATA:DATA-ID="com.example.lyrics",URI="P[Key]https://cdn.example.com/live/chan/lyrics.json"
#EXT-X-SESSION-DATA:DATA-ID="com.example.title",VALUE="News, URI=fake.ts, more"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English",DEFAULT=YES,URI="P[Playlist]https://cdn.example.com/live/chan/audio/en.m3u8"
#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",NAME="English",URI="P[Playlist]https://cdn.example.com/subs/en.m3u8"
#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID="cc",NAME="CC1",INSTREAM-ID="CC1"

#EXT-X-STREAM-INF:BANDWIDTH=1280000,CODECS="avc1.4d401f,mp4a.40.2",AUDIO="aud",SUBTITLES="subs"
P[Playlist]https://cdn.example.com/live/chan/low/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=2560000,RESOLUTION=1280x720
P[Playlist]https://other.example.net/hi/index.m3u8?token=abc
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=86000,CODECS="avc1.4d401f",URI="P[Playlist]https://cdn.example.com/live/chan/iframe/low.m3u8"
"#,
        );
    }

    #[test]
    fn media_playlist_with_keys_maps_byteranges_and_unknown_tags() {
        check(
            r#"#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:6
#EXT-X-MEDIA-SEQUENCE:1042
#EXT-X-DISCONTINUITY-SEQUENCE:3
## a comment with URI="comment.ts"
#EXT-X-MAP:URI="init.mp4",BYTERANGE="720@0"
#EXT-X-KEY:METHOD=AES-128,URI="https://keys.example.com/k?id=7",IV=0x0123456789abcdef0123456789abcdef
#EXT-X-PROGRAM-DATE-TIME:2024-05-01T12:00:00.000Z
#EXTINF:6.006,
seg1042.m4s
#EXT-X-FOO-VENDOR:ID=1,X-URI="vendor.bin"
#EXTINF:6.006,title with URI="not-me.ts"
#EXT-X-BYTERANGE:1000@720
/abs/path/seg1043.m4s
#EXT-X-DISCONTINUITY
#EXT-X-KEY:METHOD=SAMPLE-AES,URI="../keys/k2.bin",KEYFORMAT="identity",KEYFORMATVERSIONS="1"
#EXT-X-DATERANGE:ID="ad1",START-DATE="2024-05-01T12:00:12Z",X-COM-NOTE="a, URI=evil.ts"
#EXTINF:6.006,
../other/seg1044.ts
#EXT-X-KEY:METHOD=NONE
#EXTINF:6.006,
http://plain.example.org/seg1045.ts
#EXT-X-ENDLIST
"#,
            r#"#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:6
#EXT-X-MEDIA-SEQUENCE:1042
#EXT-X-DISCONTINUITY-SEQUENCE:3

#EXT-X-MAP:URI="P[Map]https://cdn.example.com/live/chan/init.mp4",BYTERANGE="720@0"
#EXT-X-KEY:METHOD=AES-128,URI="P[Key]https://keys.example.com/k?id=7",IV=0x0123456789abcdef0123456789abcdef
#EXT-X-PROGRAM-DATE-TIME:2024-05-01T12:00:00.000Z
#EXTINF:6.006,
P[Segment]https://cdn.example.com/live/chan/seg1042.m4s
#EXT-X-FOO-VENDOR:ID=1,X-URI="vendor.bin"
#EXTINF:6.006,title with URI="not-me.ts"
#EXT-X-BYTERANGE:1000@720
P[Segment]https://cdn.example.com/abs/path/seg1043.m4s
#EXT-X-DISCONTINUITY
#EXT-X-KEY:METHOD=SAMPLE-AES,URI="P[Key]https://cdn.example.com/live/keys/k2.bin",KEYFORMAT="identity",KEYFORMATVERSIONS="1"
#EXT-X-DATERANGE:ID="ad1",START-DATE="2024-05-01T12:00:12Z",X-COM-NOTE="a, URI=evil.ts"
#EXTINF:6.006,
P[Segment]https://cdn.example.com/live/other/seg1044.ts
#EXT-X-KEY:METHOD=NONE
#EXTINF:6.006,
P[Segment]http://plain.example.org/seg1045.ts
#EXT-X-ENDLIST
"#,
        );
    }

    #[test]
    fn low_latency_tags_are_taken_out() {
        check(
            r#"#EXTM3U
#EXT-X-TARGETDURATION:4
#EXT-X-VERSION:9
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0,CAN-SKIP-UNTIL=24.0
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES, HOLD-BACK=12.0,CAN-SKIP-DATERANGES=YES
#EXT-X-PART-INF:PART-TARGET=0.33334
#EXT-X-MEDIA-SEQUENCE:266
#EXT-X-MAP:URI="init.mp4"
#EXT-X-SKIP:SKIPPED-SEGMENTS=3
#EXTINF:4.00008,
fileSequence266.mp4
#EXT-X-PART:DURATION=0.33334,URI="filePart267.0.mp4",INDEPENDENT=YES
  #EXT-X-PART:DURATION=0.33334,URI="filePart267.1.mp4",BYTERANGE=1000@0
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="filePart267.2.mp4"
#EXT-X-PRELOAD-HINT:TYPE=MAP,URI="init2.mp4"
#EXT-X-RENDITION-REPORT:URI="../1M/waitForMSN.php",LAST-MSN=273,LAST-PART=2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES"#,
            r#"#EXTM3U
#EXT-X-TARGETDURATION:4
#EXT-X-VERSION:9

#EXT-X-SERVER-CONTROL:HOLD-BACK=12.0

#EXT-X-MEDIA-SEQUENCE:266
#EXT-X-MAP:URI="P[Map]https://cdn.example.com/live/chan/init.mp4"

#EXTINF:4.00008,
P[Segment]https://cdn.example.com/live/chan/fileSequence266.mp4





"#,
        );
    }

    #[test]
    fn steering_asset_lists_and_comments_are_taken_out_and_asset_uris_rewritten() {
        check(
            r#"#EXTM3U
#EXT-X-CONTENT-STEERING:SERVER-URI="http://192.168.1.1/steer.json",PATHWAY-ID="CDN"
# made by http://origin.example/packager
#EXT-X-TARGETDURATION:4
#EXT-X-DATERANGE:ID="ad",CLASS="com.apple.hls.interstitial",START-DATE="2026-01-01T00:00:00Z",X-ASSET-URI="ad/ad.m3u8"
#EXT-X-DATERANGE:ID="ad2",START-DATE="2026-01-01T00:00:00Z",X-ASSET-URI="http://192.168.1.1/a",X-ASSET-LIST="http://192.168.1.1/list"
#EXTINF:4,
s.ts
"#,
            r#"#EXTM3U


#EXT-X-TARGETDURATION:4
#EXT-X-DATERANGE:ID="ad",CLASS="com.apple.hls.interstitial",START-DATE="2026-01-01T00:00:00Z",X-ASSET-URI="P[Playlist]https://cdn.example.com/live/chan/ad/ad.m3u8"

#EXTINF:4,
P[Segment]https://cdn.example.com/live/chan/s.ts
"#,
        );
    }

    #[test]
    fn defined_variables_are_substituted() {
        let url =
            Url::parse("https://cdn.example.com/live/index.m3u8?tok=a%20b&x=1&bad=%0A").unwrap();
        let body = "#EXTM3U\n#EXT-X-DEFINE:NAME=\"p\",VALUE=\"s00\"\n\
                    #EXT-X-DEFINE:QUERYPARAM=\"tok\"\n#EXT-X-DEFINE:IMPORT=\"m\"\n\
                    #EXT-X-DEFINE:QUERYPARAM=\"bad\"\n\
                    #EXT-X-MAP:URI=\"{$p}-init.mp4?t={$tok}\"\n#EXTINF:2,\n{$p}0.ts?m={$m}&b={$bad}\n";
        assert_eq!(
            substitute_defines(body, &url, 1 << 20).unwrap().unwrap(),
            "#EXTM3U\n\n\n#EXT-X-DEFINE:IMPORT=\"m\"\n#EXT-X-DEFINE:QUERYPARAM=\"bad\"\n\
             #EXT-X-MAP:URI=\"s00-init.mp4?t=a b\"\n#EXTINF:2,\ns000.ts?m={$m}&b={$bad}\n"
        );
        assert_eq!(
            substitute_defines("#EXTM3U\n#EXTINF:2,\na.ts\n", &url, 1 << 20),
            Ok(None)
        );
    }

    #[test]
    fn defined_variables_never_grow_past_the_limit() {
        let url = Url::parse("https://cdn.example.com/live/index.m3u8").unwrap();
        // Each value refers to the next: read again, it would double 40 times.
        let mut chain = String::from("#EXTM3U\n");
        for i in 0..40 {
            chain.push_str(&format!(
                "#EXT-X-DEFINE:NAME=\"v{i}\",VALUE=\"{{$v{}}}{{$v{}}}\"\n",
                i + 1,
                i + 1
            ));
        }
        chain.push_str("#EXTINF:2,\n{$v0}.ts\n");
        let out = substitute_defines(&chain, &url, 1 << 20).unwrap().unwrap();
        assert!(out.ends_with("{$v1}{$v1}.ts\n"), "{out}");
        // One long value referred to many times.
        let big = format!(
            "#EXTM3U\n#EXT-X-DEFINE:NAME=\"a\",VALUE=\"{}\"\n#EXTINF:2,\n{}.ts\n",
            "x".repeat(20_000),
            "{$a}".repeat(5_000)
        );
        let err = substitute_defines(&big, &url, 1 << 20).unwrap_err();
        assert!(err.contains("longer than 1048576 bytes"), "{err}");
    }

    #[test]
    fn line_endings_are_kept_and_padding_left_out() {
        check(
            "\u{feff}#EXTM3U\r\n#EXT-X-TARGETDURATION:2\r\n\r\n#EXTINF:2,\r\n  seg1.ts \r\n\t#EXTINF:2, \nseg2.ts\r\n",
            "#EXTM3U\r\n#EXT-X-TARGETDURATION:2\r\n\r\n#EXTINF:2,\r\nP[Segment]https://cdn.example.com/live/chan/seg1.ts\r\n#EXTINF:2,\nP[Segment]https://cdn.example.com/live/chan/seg2.ts\r\n",
        );
    }

    #[test]
    fn non_http_uris_are_left_alone() {
        let input = r#"#EXTM3U
#EXT-X-TARGETDURATION:6
#EXT-X-KEY:METHOD=SAMPLE-AES,URI="skd://key-id-1234",KEYFORMAT="com.apple.streamingkeydelivery",KEYFORMATVERSIONS="1"
#EXT-X-KEY:METHOD=SAMPLE-AES-CTR,URI="data:text/plain;base64,AAAAPnBzc2g=",KEYFORMAT="urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"
#EXT-X-MAP:URI=""
#EXTINF:6,
seg.ts
"#;
        let mut calls = Vec::new();
        let out = rewrite(input, &base(), |u, k| {
            calls.push((u.to_string(), k));
            "X".to_owned()
        })
        .expect("input is HLS");
        assert_eq!(out, input.replace("\nseg.ts", "\nX"));
        assert_eq!(
            calls,
            vec![(
                "https://cdn.example.com/live/chan/seg.ts".to_owned(),
                UriKind::Segment
            )]
        );
    }

    #[test]
    fn attribute_parsing_edge_cases() {
        check(
            r#"#EXTM3U
#EXT-X-MEDIA:TYPE=AUDIO, NAME="a,URI=b" , URI="a.m3u8"
#EXT-X-KEY:METHOD=AES-128,URI=unquoted.key,IV=0x01
#EXT-X-MAP:URI="ok.mp4",BYTERANGE="1@0",BROKEN="never closed
#EXT-X-FOO:junk without attributes URI="x"
#EXT-X-SESSION-DATA:DATA-ID="d",URI="one.json",URI="two.json"
#EXT-X-IMAGE-STREAM-INF:BANDWIDTH=1,URI="thumbs.m3u8"
#EXT-X-CUSTOM:URI="custom.bin"
#EXTINF:5,
s.ts
"#,
            r#"#EXTM3U
#EXT-X-MEDIA:TYPE=AUDIO, NAME="a,URI=b" , URI="P[Playlist]https://cdn.example.com/live/chan/a.m3u8"
#EXT-X-KEY:METHOD=AES-128,URI="P[Key]https://cdn.example.com/live/chan/unquoted.key",IV=0x01
#EXT-X-MAP:URI="P[Map]https://cdn.example.com/live/chan/ok.mp4",BYTERANGE="1@0",BROKEN="never closed
#EXT-X-FOO:junk without attributes URI="x"
#EXT-X-SESSION-DATA:DATA-ID="d",URI="P[Key]https://cdn.example.com/live/chan/one.json",URI="P[Key]https://cdn.example.com/live/chan/two.json"
#EXT-X-IMAGE-STREAM-INF:BANDWIDTH=1,URI="P[Playlist]https://cdn.example.com/live/chan/thumbs.m3u8"
#EXT-X-CUSTOM:URI="P[Segment]https://cdn.example.com/live/chan/custom.bin"
#EXTINF:5,
P[Segment]https://cdn.example.com/live/chan/s.ts
"#,
        );
    }

    #[test]
    fn chained_m3u8_in_media_playlist_is_a_segment() {
        check(
            "#EXTM3U\n#EXTINF:10,\nnext.m3u8\n",
            "#EXTM3U\n#EXTINF:10,\nP[Segment]https://cdn.example.com/live/chan/next.m3u8\n",
        );
    }

    #[test]
    fn iptv_channel_list_is_hls_looking() {
        check(
            "#EXTM3U x-tvg-url=\"http://epg.example.com/guide.xml\"\n#EXTINF:-1 tvg-id=\"bbc1\" group-title=\"UK, News\",BBC One\nhttp://iptv.example.com/bbc1\n",
            "#EXTM3U x-tvg-url=\"http://epg.example.com/guide.xml\"\n#EXTINF:-1 tvg-id=\"bbc1\" group-title=\"UK, News\",BBC One\nP[Segment]http://iptv.example.com/bbc1\n",
        );
    }

    #[test]
    fn stream_inf_wins_in_a_mixed_body() {
        // Not a master by is_master (it has #EXTINF), yet the variant line is still a playlist.
        check(
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n#EXTINF:2,\ns.ts\n",
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nP[Playlist]https://cdn.example.com/live/chan/v.m3u8\n#EXTINF:2,\nP[Segment]https://cdn.example.com/live/chan/s.ts\n",
        );
    }

    #[test]
    fn playlist_without_uris_is_unchanged() {
        let input = "#EXTM3U\r\n#EXT-X-TARGETDURATION:6\r\n#EXT-X-ENDLIST";
        check(input, input);
    }

    #[test]
    fn not_hls_is_refused() {
        for body in [
            "",
            "\n\n",
            "<!DOCTYPE html>\n<html><body>#EXTM3U\n#EXTINF:1,\n</body></html>\n",
            "#EXTM3U\n",
            "#EXTM3U\nhttp://example.com/a.ts\n",
            "seg.ts\n#EXTM3U\n#EXTINF:1,\n",
            "{\"error\":\"forbidden\"}",
        ] {
            assert_eq!(
                rewrite(body, &base(), tag),
                Err(RewriteError::NotHls),
                "{body:?}"
            );
            assert!(!is_hls(body), "{body:?}");
            assert!(!is_master(body), "{body:?}");
        }
    }

    #[test]
    fn classification() {
        assert!(is_hls("\u{feff}  \n #EXTM3U\n#EXT-X-VERSION:3\n"));
        assert!(is_hls("#EXTM3U\r\n#EXTINF:-1,Channel\r\nhttp://x/y\r\n"));
        assert!(!is_master(
            "#EXTM3U\r\n#EXTINF:-1,Channel\r\nhttp://x/y\r\n"
        ));
        assert!(is_master(
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n"
        ));
        assert!(is_master(
            "#EXTM3U\n#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI=\"i.m3u8\"\n"
        ));
        assert!(is_master(
            "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"a\"\n"
        ));
        // MEDIA-SEQUENCE is a media tag, not EXT-X-MEDIA.
        assert!(!is_master(
            "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-TARGETDURATION:2\n"
        ));
        assert!(!is_master(
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n#EXTINF:2,\ns.ts\n"
        ));
    }

    #[test]
    fn attributes_parse() {
        let attrs = parse_attributes(r#"A=1,B="x,y=z",C=0x1F"#);
        let names: Vec<_> = attrs.iter().map(|a| (a.name, a.value)).collect();
        assert_eq!(names, vec![("A", "1"), ("B", "x,y=z"), ("C", "0x1F")]);
        assert_eq!(attrs.get(1).map(|a| a.span.clone()), Some(6..13));
        assert!(parse_attributes("2024-05-01T12:00:00Z").is_empty());
        assert!(parse_attributes("").is_empty());
        assert_eq!(parse_attributes("A=\"unterminated").len(), 0);
        assert_eq!(parse_attributes("A=1,,B=2").len(), 1);
    }

    #[test]
    fn media_info_reads_the_live_window() {
        let body = "#EXTM3U\r\n#EXT-X-VERSION:3\r\n#EXT-X-TARGETDURATION:6\r\n#EXT-X-MEDIA-SEQUENCE:1042\r\n\
                    #EXT-X-KEY:METHOD=AES-128,URI=\"k.key\"\r\n#EXTINF:6.0,\r\nseg1042.ts\r\n\
                    #EXT-X-FOO:bar\r\n#EXTINF:6.0,\r\n/abs/seg1043.ts\r\n#EXTINF:6.0,\r\nhttps://o.example.net/seg1044.ts\r\n\
                    #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p.ts\"\r\n";
        let info = media_info(body, &base()).expect("valid media playlist");
        assert_eq!(
            info,
            MediaInfo {
                target_duration: 6.0,
                media_sequence: 1042,
                segments: [
                    "https://cdn.example.com/live/chan/seg1042.ts",
                    "https://cdn.example.com/abs/seg1043.ts",
                    "https://o.example.net/seg1044.ts",
                ]
                .map(|u| Segment {
                    url: Url::parse(u).expect("valid"),
                    range: None,
                    key: Some(Encryption::Aes128 {
                        key: Url::parse("https://cdn.example.com/live/chan/k.key").unwrap(),
                        iv: None,
                    }),
                    map: None,
                })
                .to_vec(),
                ended: false,
            }
        );
    }

    #[test]
    fn live_edge_agrees_with_media_info() {
        let base = Url::parse("https://cdn.example/live/ch/index.m3u8?t=1").unwrap();
        for body in [
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:41\n#EXTINF:2,\na.ts\n\
             #EXT-X-DISCONTINUITY\n#EXTINF:2,\n../b/c.ts?x=1\n",
            "\u{feff}#EXTM3U\r\n#EXT-X-TARGETDURATION:6\r\n#EXTINF:6,\r\n  seg 1.ts \r\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-ENDLIST\n",
        ] {
            let info = media_info(body, &base).unwrap();
            assert_eq!(
                live_edge(body, &base),
                Some((
                    info.media_sequence + info.segments.len() as u64,
                    info.segments.last().map(|s| s.url.clone())
                )),
                "{body}"
            );
        }
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n";
        assert_eq!(live_edge(master, &base), None);
        assert_eq!(live_edge("not hls", &base), None);
    }

    #[test]
    fn media_info_sees_the_end_and_a_bom() {
        let body =
            "\u{feff}#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:9.5,\na.ts\n#EXT-X-ENDLIST\n";
        let info = media_info(body, &base()).expect("valid media playlist");
        assert!(info.ended);
        assert_eq!(info.media_sequence, 0);
        assert_eq!(info.target_duration, 10.0);
        assert_eq!(info.segments.len(), 1);
    }

    #[test]
    fn media_info_refuses_a_media_sequence_that_is_no_whole_number() {
        for bad in ["-5", "+5", "1.5", "x", ""] {
            let body = format!(
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{bad}\n#EXTINF:2,\na.ts\n"
            );
            let e = media_info(&body, &base())
                .err()
                .unwrap_or_else(|| panic!("{bad}"));
            assert!(e.contains(&format!("#EXT-X-MEDIA-SEQUENCE `{bad}`")), "{e}");
        }
        let body = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE: 18446744073709551615\n#EXTINF:2,\na.ts\n";
        assert_eq!(media_info(body, &base()).unwrap().media_sequence, u64::MAX);
    }

    #[test]
    fn media_info_reads_a_fractional_target_duration_without_bogus_segments() {
        // m3u8-rs alone says 6 and invents a segment named ".5".
        let body = "#EXTM3U\n#EXT-X-TARGETDURATION:6.5\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:6.4,\na.ts\n\u{0}\n";
        let info = media_info(body, &base()).expect("valid media playlist");
        assert_eq!(info.target_duration, 6.5);
        assert_eq!(info.media_sequence, 7);
        assert_eq!(
            info.segments[0].url.as_str(),
            "https://cdn.example.com/live/chan/a.ts"
        );
        assert_eq!(info.segments.len(), 1);
    }

    #[test]
    fn media_info_reads_keys_and_their_rotation() {
        let body = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:9\n\
            #EXT-X-KEY:METHOD=AES-128,URI=\"a.key\",IV=0x000102030405060708090A0B0C0D0E0F\n#EXTINF:1,\n0.ts\n\
            #EXT-X-KEY:METHOD=AES-128,URI=\"/b.key\"\n#EXTINF:1,\n1.ts\n#EXTINF:1,\n2.ts\n\
            #EXT-X-KEY:METHOD=NONE\n#EXTINF:1,\n3.ts\n\
            #EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"c.key\"\n#EXTINF:1,\n4.ts\n\
            #EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"skd://x\",KEYFORMAT=\"com.apple.streamingkeydelivery\"\n\
            #EXT-X-KEY:METHOD=AES-128,URI=\"d.key\",IV=0x1\n#EXTINF:1,\n5.ts\n\
            #EXT-X-KEY:METHOD=AES-128,URI=\"e.key\",IV=0xZZ\n#EXTINF:1,\n6.ts\n";
        let info = media_info(body, &base()).expect("valid media playlist");
        let aes = |key: &str, iv: Option<[u8; 16]>| {
            Some(Encryption::Aes128 {
                key: base().join(key).unwrap(),
                iv,
            })
        };
        let mut one = [0u8; 16];
        one[15] = 1;
        let keys: Vec<_> = info.segments.iter().map(|s| s.key.clone()).collect();
        assert_eq!(
            keys,
            [
                aes("a.key", Some(std::array::from_fn(|i| i as u8))),
                aes("/b.key", None),
                aes("/b.key", None),
                None,
                Some(Encryption::Unsupported("SAMPLE-AES".into())),
                aes("d.key", Some(one)),
                Some(Encryption::Unsupported(
                    "AES-128 with a malformed IV \"0xZZ\"".into()
                )),
            ]
        );
    }

    #[test]
    fn media_info_reads_byte_ranges() {
        let body = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n#EXT-X-BYTERANGE:100@0\nall.ts\n\
                    #EXTINF:1,\n#EXT-X-BYTERANGE:50\nall.ts\n#EXTINF:1,\n#EXT-X-BYTERANGE:7\nother.ts\n\
                    #EXTINF:1,\nwhole.ts\n#EXT-X-BYTERANGE:x@1\n#EXTINF:1,\nbad.ts\n";
        let info = media_info(body, &base()).expect("valid media playlist");
        let ranges: Vec<_> = info
            .segments
            .iter()
            .map(|s| s.range.map(|r| (r.length, r.offset)))
            .collect();
        assert_eq!(
            ranges,
            [Some((100, 0)), Some((50, 100)), Some((7, 0)), None, None]
        );
        let maps = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\na.m4s\n\
                    #EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"720@8\"\n#EXTINF:1,\nb.m4s\n\
                    #EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"other.mp4\"\n#EXTINF:1,\nc.m4s\n";
        let info_maps = media_info(maps, &base()).expect("valid media playlist");
        let got: Vec<_> = info_maps
            .segments
            .iter()
            .map(|s| s.map.as_ref().map(|m| (m.url.path().to_string(), m.range)))
            .collect();
        assert_eq!(
            got,
            [
                None,
                Some((
                    "/live/chan/init.mp4".into(),
                    Some(ByteRange {
                        offset: 8,
                        length: 720
                    })
                )),
                Some(("/live/chan/other.mp4".into(), None)),
            ]
        );
        let r = info.segments[1].range.unwrap();
        assert_eq!(r.header().as_deref(), Some("bytes=100-149"));
        let empty = ByteRange {
            offset: 5,
            length: 0,
        };
        assert_eq!(empty.header(), None);
    }

    #[test]
    fn control_characters_are_not_a_uri() {
        let input = "#EXTM3U\n#EXTINF:1,\n\u{0}\u{7}\n";
        check(input, input);
    }

    #[test]
    fn media_info_refuses_masters_and_junk() {
        assert!(media_info("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n", &base()).is_err());
        assert!(media_info("<html></html>", &base()).is_err());
        assert!(media_info("", &base()).is_err());
    }

    #[test]
    fn parse_error_text_is_short() {
        let text = "Parsing Error: Error { input: [35, 69, 88, 84], code: Tag }";
        assert_eq!(
            describe_parse_error(text),
            "media playlist does not parse (nom error Tag)"
        );
        let long = "x".repeat(5000);
        assert!(describe_parse_error(&long).len() < 300);
    }

    #[test]
    fn never_panics_on_truncated_or_odd_input() {
        let sample = "\u{feff}#EXTM3U\r\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI=\"i.mp4\",BYTERANGE=\"1@0\"\n\
                      #EXT-X-KEY:METHOD=AES-128,URI=\"k\u{e9}y\",IV=0x00\n#EXTINF:4.0,\u{1F4FA}\nseg \u{e9}1.ts\n\
                      #EXT-X-PART:DURATION=1,URI=\"p.mp4\"\n#EXT-X-STREAM-INF:BANDWIDTH=1\n\u{0}\u{7f}\n\
                      #EXT-X-MEDIA:URI=\"\"\",=,\"\n#EXTINF:1.5.5,\n://\n#EXT-X-ENDLIST\r";
        let base = base();
        let boundaries = (0..=sample.len()).filter(|&i| sample.is_char_boundary(i));
        for end in boundaries {
            let body = sample.get(..end).unwrap_or_default();
            let _ = is_hls(body);
            let _ = is_master(body);
            let _ = rewrite(body, &base, |u, _| u.to_string());
            let _ = media_info(body, &base);
        }
    }

    #[test]
    fn comments_and_unknown_tags_by_the_million_never_reach_m3u8_rs() {
        let junk =
            "#\n# a comment\n#EXT-X-UNKNOWN:1\n#EXTINF:9,\n#EXT-X-VERSION:3\n\n".repeat(200_000);
        let body = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n\
             {junk}#EXTINF:2,\na.ts\n{junk}#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n#EXTINF:2,\nb.ts\n"
        );
        let view = parse_view(&body, Kind::Media);
        assert_eq!(
            view,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n\
             #EXTINF:2,\na.ts\n#EXTINF:2,\nb.ts\n"
        );
        let info = media_info(&body, &base()).expect("valid media playlist");
        assert_eq!(info.media_sequence, 7);
        assert_eq!(info.target_duration, 2.0);
        let uris: Vec<&str> = info.segments.iter().map(|s| s.url.as_str()).collect();
        assert_eq!(uris.len(), 2, "{uris:?}");
        assert!(
            info.segments[1].key.is_some(),
            "keys are read by read_segments"
        );

        let media = "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"x\"\n".repeat(50_000);
        let junk = "#\n# a comment\n#EXT-X-UNKNOWN:1\n#EXT-X-VERSION:3\n\n".repeat(200_000);
        let master = format!(
            "#EXTM3U\n{junk}{media}#EXT-X-STREAM-INF:BANDWIDTH=1\n#EXT-X-STREAM-INF:BANDWIDTH=9\nhi.m3u8\n"
        );
        let view = parse_view(&master, Kind::Master);
        assert_eq!(view.matches("#EXT-X-MEDIA:").count(), MAX_ITEM_TAGS);
        assert!(
            view.ends_with("\n#EXT-X-STREAM-INF:BANDWIDTH=9\nhi.m3u8\n"),
            "{}",
            &view[view.len() - 80..]
        );
        assert_eq!(
            best_variant(&master, &base()).map(|u| u.to_string()),
            Some(base().join("hi.m3u8").unwrap().to_string())
        );
    }

    #[test]
    fn count_uris_counts_uri_lines_and_attributes_and_stops_past_the_cap() {
        let body = "#EXTM3U\n#EXT-X-MAP:URI=\"i.mp4\"\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n\
                    #EXTINF:2,URI=\"a title, not a URI\"\na.ts\n\n  b.ts  \n# URI=\"comment\"\n";
        assert_eq!(count_uris(body, 100), 4);
        assert_eq!(count_uris(body, 1), 2, "stops one past the cap");
        let huge = "#EXTM3U\n#EXTINF:1,\n".to_string() + &"a\n".repeat(1_000_000);
        assert_eq!(count_uris(&huge, 20_000), 20_001);
    }
}
