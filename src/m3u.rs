//! IPTV channel lists in the M3U / M3U Plus format: parsing what upstreams publish
//! ([`parse`]) and writing the one merged playlist freesky serves ([`render`]).
//!
//! This module owns the messy real-world dialect: `#EXTINF` attributes whose quoted
//! values hold commas, the request headers a channel needs (`#EXTVLCOPT`, `#KODIPROP`,
//! Kodi `url|Referer=...` suffixes, header-like attributes), BOMs, CR, LF and CRLF
//! line ends (mixed in one file), missing headers. It is pure: no IO, no network, no
//! async. It is not about HLS media playlists (`#EXT-X-...`); those belong to `hls.rs`.
//!
//! Input is untrusted and never fails as a whole: a bad entry becomes a [`Warning`]
//! naming its line, and parsing goes on. No input may panic, and the work is linear in
//! the input (real lists have 10k entries), so attributes are hand-parsed, not regexed.

use std::fmt::Write as _;

/// One parsed upstream playlist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Playlist {
    /// Attributes of the `#EXTM3U` header line, keys lowercased, e.g. ("url-tvg",
    /// "http://..."), ("x-tvg-url", ...). Empty when the list has no header. Kept
    /// because the header is where a list says where its guide is.
    pub header: Vec<(String, String)>,
    /// The channels, in list order.
    pub entries: Vec<Entry>,
    /// Problems found, each naming its 1-based line; the entry is skipped, parsing goes
    /// on. Surfaced so a service's status can say why its list came out shorter.
    pub warnings: Vec<Warning>,
}

impl Playlist {
    /// `url-tvg`, else `x-tvg-url` (else the rarer `tvg-url`) of the header, if any
    /// and non-empty. Lists put several guides there comma-separated; this is the first.
    pub fn guide_url(&self) -> Option<&str> {
        ["url-tvg", "x-tvg-url", "tvg-url"].iter().find_map(|key| {
            self.header
                .iter()
                .filter(|(k, _)| k == key)
                .find_map(|(_, value)| value.split(',').map(str::trim).find(|u| !u.is_empty()))
        })
    }
}

/// One channel of an upstream list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    /// 1-based line number of the `#EXTINF` line, so problems found later (by the
    /// service, the lineup) can point at the source.
    pub line: usize,
    /// Display name: the text after the comma that ends the attributes, trimmed. Commas
    /// inside quoted attribute values don't count (iptv-org's `user-agent="..."` values
    /// hold commas), and neither do commas in the name itself (`News, Weather`). When
    /// there is no such text, the `tvg-name` attribute.
    pub name: String,
    /// Attributes of `#EXTINF` (`key="value"`), keys lowercased, in order. Header-like
    /// attributes stay here too; their effect is in `headers`.
    pub attrs: Vec<(String, String)>,
    /// The stream URL with any Kodi `|Header=Value&...` suffix removed, trimmed. Any
    /// scheme (http, rtsp, mmsh, acestream, file paths) is kept as given.
    pub url: String,
    /// Upstream request headers this channel needs, with canonical names ("Referer",
    /// "User-Agent", "Origin", "Cookie", or the name as given), each name once. Without
    /// them many upstreams answer 403; Jellyfin and Plex never send them themselves.
    pub headers: Vec<(String, String)>,
    /// The channel's archive (`catchup`, `catchup-days`, `catchup-source`,
    /// `timeshift`; the header's values are defaults), see `crate::catchup`.
    pub catchup: Option<crate::model::Catchup>,
}

impl Entry {
    /// The first value of attribute `key` (case-insensitive) that is non-empty: an
    /// empty `tvg-logo=""` means "none" to every client.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, v)| k.eq_ignore_ascii_case(key) && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

/// A problem in an upstream list, for the service's status page.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    /// 1-based line the problem is on.
    pub line: usize,
    pub message: String,
}

/// Parses an M3U / M3U Plus channel list. Never fails: what cannot be understood is
/// skipped with a [`Warning`].
pub fn parse(text: &str) -> Playlist {
    let mut reader = Reader::new();
    reader.push(text.as_bytes());
    reader.finish()
}

/// An M3U list read as it arrives: [`Reader::push`] takes each chunk of bytes, an entry
/// is ready (in [`Reader::drain`]) as soon as its URL line is read, and
/// [`Reader::finish`] ends the list. Only the line being read and the entries not yet
/// drained are held, so a list of many megabytes never sits whole in memory next to
/// its parsed form. The result is the same as [`parse`] of the whole text.
#[derive(Default)]
pub struct Reader {
    parser: Parser,
    /// The bytes of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// Lines passed to the parser so far.
    lines: usize,
    /// The last chunk ended in a CR. A line ends at CR, LF or CRLF wherever it is (lists
    /// edited by hand mix classic-Mac, Unix and DOS ends in one file), so an LF opening
    /// the next chunk is the rest of that CRLF, not an empty line.
    after_cr: bool,
}

impl Reader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the next `chunk` of the list (any split: a line or a UTF-8 character may
    /// straddle two chunks).
    pub fn push(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            rest = rest.strip_prefix(b"\n").unwrap_or(rest);
        }
        while let Some(i) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (line, end) = rest.split_at(i);
            if self.partial.is_empty() {
                self.line(line);
            } else {
                self.partial.extend_from_slice(line);
                let line = std::mem::take(&mut self.partial);
                self.line(&line);
                // Keep the buffer's capacity for the next straddling line.
                self.partial = line;
                self.partial.clear();
            }
            rest = match end {
                [b'\r', b'\n', tail @ ..] => tail,
                [b'\r'] => {
                    self.after_cr = true;
                    &[]
                }
                [_, tail @ ..] => tail,
                [] => &[],
            };
        }
        self.partial.extend_from_slice(rest);
    }

    /// One line without its end: UTF-8 decoded lossily (upstream bytes are untrusted; a
    /// CR or LF never falls inside a UTF-8 sequence, so line by line decodes as the
    /// whole would), a leading BOM dropped.
    fn line(&mut self, bytes: &[u8]) {
        let bytes = match self.lines {
            0 => bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes),
            _ => bytes,
        };
        self.lines += 1;
        let text = String::from_utf8_lossy(bytes);
        self.parser.line(self.lines, &text);
    }

    /// The entries read so far and not yet drained, in list order.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Entry> {
        self.parser.playlist.entries.drain(..)
    }

    /// The header's guide URL, once the header line was read (see [`Playlist::guide_url`]).
    pub fn guide_url(&self) -> Option<&str> {
        self.parser.playlist.guide_url()
    }

    /// Ends the list: its last line is read. The playlist holds the header, the entries
    /// not drained, and every warning.
    pub fn finish(mut self) -> Playlist {
        let rest = std::mem::take(&mut self.partial);
        self.line(&rest);
        self.parser.finish()
    }
}

/// The state between lines: an `#EXTINF` only becomes an [`Entry`] at its URL line, and
/// option lines may come on either side of the `#EXTINF` they belong with.
#[derive(Default)]
struct Parser {
    playlist: Playlist,
    /// The `#EXTINF` waiting for its URL line.
    pending: Option<Pending>,
    /// Headers from `#EXTVLCOPT` / `#KODIPROP` since the last URL line. They belong to the
    /// next URL whether they were written before or after its `#EXTINF`, as in VLC.
    option_headers: Vec<(String, String)>,
    /// `#EXTGRP` since the last URL line; same placement rule as `option_headers`.
    group: Option<String>,
}

struct Pending {
    line: usize,
    /// Empty when the line had neither a name nor a `tvg-name`.
    name: String,
    attrs: Vec<(String, String)>,
}

impl Parser {
    fn warn(&mut self, line: usize, message: impl Into<String>) {
        self.playlist.warnings.push(Warning {
            line,
            message: message.into(),
        });
    }

    fn line(&mut self, number: usize, raw: &str) {
        let line = raw.trim();
        if line.is_empty() {
            return;
        }
        if let Some(rest) = strip_tag(line, "#EXTINF") {
            self.extinf(number, rest);
        } else if let Some(rest) = strip_tag(line, "#EXTM3U") {
            // Other text glued to the tag (`#EXTM3UX`) is an unknown tag, not a header.
            if rest.is_empty() || rest.starts_with(char::is_whitespace) {
                let (attrs, _) = scan_attributes(rest, false);
                self.playlist.header.extend(attrs);
            }
        } else if let Some(rest) = strip_tag(line, "#EXTVLCOPT:") {
            self.vlc_option(number, rest);
        } else if let Some(rest) = strip_tag(line, "#KODIPROP:") {
            self.kodi_property(number, rest);
        } else if let Some(rest) = strip_tag(line, "#EXTGRP:") {
            let group = rest.trim();
            if !group.is_empty() {
                self.group = Some(group.to_string());
            }
        } else if line.starts_with('#') {
            // Comments and tags we don't use (#EXTIMG, #EXT-X-..., #PLAYLIST...).
        } else {
            self.url(number, line);
        }
    }

    fn extinf(&mut self, number: usize, rest: &str) {
        if let Some(previous) = self.pending.take() {
            self.warn(previous.line, "#EXTINF without a URL line; entry skipped");
        }
        // `#EXTINF-1 ...` (no colon) is in real lists; it means `#EXTINF:-1 ...`.
        let rest = rest.strip_prefix(':').unwrap_or(rest).trim_start();
        // The duration (`-1`, `0`, `123.5`) carries nothing for live channels.
        let rest =
            rest.trim_start_matches(|c: char| c.is_ascii_digit() || matches!(c, '-' | '+' | '.'));
        let (attrs, name) = scan_attributes(rest, true);
        // Control characters at the ends are no name (a name of only those, rendered,
        // is spaces: `push_clean`).
        let mut name = name.map(trim_name).unwrap_or_default();
        if name.is_empty() {
            name = attrs
                .iter()
                .find(|(k, v)| k == "tvg-name" && !trim_name(v).is_empty())
                .map(|(_, v)| trim_name(v))
                .unwrap_or_default();
        }
        self.pending = Some(Pending {
            line: number,
            name: name.to_string(),
            attrs,
        });
    }

    fn vlc_option(&mut self, number: usize, rest: &str) {
        let Some((key, value)) = rest.split_once('=') else {
            return;
        };
        let name = match key.trim().to_ascii_lowercase().as_str() {
            // VLC spells it `http-referrer`; lists also use the HTTP spelling.
            "http-referrer" | "http-referer" => "Referer",
            "http-user-agent" => "User-Agent",
            "http-origin" => "Origin",
            "http-cookie" => "Cookie",
            // Caching, deinterlacing... are player settings, not upstream needs.
            _ => return,
        };
        self.option_header(number, name, value);
    }

    fn kodi_property(&mut self, number: usize, rest: &str) {
        let Some((key, value)) = rest.split_once('=') else {
            return;
        };
        let key = key.trim().to_ascii_lowercase();
        if !matches!(
            key.as_str(),
            "inputstream.adaptive.stream_headers"
                | "inputstream.adaptive.common_headers"
                | "inputstream.adaptive.manifest_headers"
        ) {
            // DRM licence keys, manifest types...: nothing a plain HTTP proxy can use.
            return;
        }
        for (name, value) in url::form_urlencoded::parse(value.trim().as_bytes()) {
            self.option_header(number, &name, &value);
        }
    }

    fn option_header(&mut self, number: usize, name: &str, value: &str) {
        let mut headers = std::mem::take(&mut self.option_headers);
        if let Err(message) = set_header(&mut headers, name, value) {
            self.warn(number, message);
        }
        self.option_headers = headers;
    }

    fn url(&mut self, number: usize, line: &str) {
        // Options and groups apply to this URL even when it is skipped, so they must
        // not leak onto the next channel.
        let option_headers = std::mem::take(&mut self.option_headers);
        let group = self.group.take();
        let Some(pending) = self.pending.take() else {
            self.warn(number, "URL without #EXTINF; line skipped");
            return;
        };
        // Kodi's `url|Header=Value&...`: a raw `|` cannot be part of a valid URL.
        let (url, pipe) = match line.split_once('|') {
            Some((url, pipe)) => (url.trim(), Some(pipe)),
            None => (line, None),
        };
        if url.is_empty() {
            self.warn(number, "empty URL; entry skipped");
            return;
        }
        if pending.name.is_empty() {
            self.warn(
                pending.line,
                "#EXTINF has no channel name (no text after the attributes, no tvg-name); entry skipped",
            );
            return;
        }

        let mut attrs = pending.attrs;
        if let Some(group) = group {
            match attrs.iter_mut().find(|(k, _)| k == "group-title") {
                Some((_, value)) if value.is_empty() => *value = group,
                Some(_) => {}
                None => attrs.push(("group-title".to_string(), group)),
            }
        }

        // Precedence, weakest first: attributes, then option lines, then the pipe suffix.
        let mut headers = Vec::new();
        let mut problems = Vec::new();
        for (key, value) in &attrs {
            let name = match key.as_str() {
                "http-referrer" | "http-referer" | "referrer" | "referer" => "Referer",
                "http-user-agent" | "user-agent" => "User-Agent",
                "http-origin" => "Origin",
                _ => continue,
            };
            if let Err(message) = set_header(&mut headers, name, value) {
                problems.push((pending.line, message));
            }
        }
        for (name, value) in &option_headers {
            // Already checked when its line was read.
            let _ = set_header(&mut headers, name, value);
        }
        if let Some(pipe) = pipe {
            for (name, value) in url::form_urlencoded::parse(pipe.trim().as_bytes()) {
                if let Err(message) = set_header(&mut headers, &name, &value) {
                    problems.push((number, message));
                }
            }
        }
        for (line, message) in problems {
            self.warn(line, message);
        }

        let header = &self.playlist.header;
        let (catchup, problem) =
            crate::catchup::from_m3u(|k| non_empty(&attrs, k), |k| non_empty(header, k));
        if let Some(message) = problem {
            self.warn(pending.line, message);
        }

        self.playlist.entries.push(Entry {
            line: pending.line,
            name: pending.name,
            attrs,
            url: url.to_string(),
            headers,
            catchup,
        });
    }

    fn finish(mut self) -> Playlist {
        if let Some(pending) = self.pending.take() {
            self.warn(pending.line, "#EXTINF without a URL line; entry skipped");
        }
        self.playlist
    }
}

/// The first non-empty value of attribute `key` (lowercase) in `attrs`.
fn non_empty<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, v)| k == key && !v.trim().is_empty())
        .map(|(_, v)| v.as_str())
}

/// `line` without `tag` at its start, compared ASCII case-insensitively (`#extinf`).
fn strip_tag<'a>(line: &'a str, tag: &str) -> Option<&'a str> {
    let head = line.get(..tag.len())?;
    if head.eq_ignore_ascii_case(tag) {
        line.get(tag.len()..)
    } else {
        None
    }
}

/// Reads `key="value"` attributes (also `key='value'` and `key=value`) from the start
/// of `text`, keys lowercased. With `name_after_comma`, a comma between attributes ends
/// them and the rest of the text is returned as the name; commas inside quoted values
/// don't count. Bare words that are not `key=value` are skipped.
///
/// Every delimiter looked for is ASCII, so every split lands on a char boundary.
fn scan_attributes(text: &str, name_after_comma: bool) -> (Vec<(String, String)>, Option<&str>) {
    let mut attrs = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return (attrs, None);
        }
        if let Some(after) = rest.strip_prefix(',') {
            if name_after_comma {
                return (attrs, Some(after));
            }
            rest = after;
            continue;
        }
        let key_end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let (key, after_key) = rest.split_at(key_end);
        let Some(after_eq) = after_key.strip_prefix('=') else {
            // A bare word (free text before the comma): not an attribute.
            rest = after_key;
            continue;
        };
        let quote = after_eq.chars().next().filter(|c| matches!(c, '"' | '\''));
        let (value, after_value) = match quote.and_then(|q| Some((q, after_eq.strip_prefix(q)?))) {
            Some((q, body)) => match body.split_once(q) {
                Some(closed) => closed,
                // An unclosed quote: the value runs to the last comma, so the name
                // after it survives.
                None => match body.rfind(',').filter(|_| name_after_comma) {
                    Some(comma) => body.split_at(comma),
                    None => (body, ""),
                },
            },
            None => {
                let end = after_eq
                    .find(|c: char| c.is_whitespace() || (name_after_comma && c == ','))
                    .unwrap_or(after_eq.len());
                after_eq.split_at(end)
            }
        };
        if !key.is_empty() {
            attrs.push((key.to_ascii_lowercase(), value.to_string()));
        }
        rest = after_value;
    }
}

/// `s` without white space or control characters at its ends.
fn trim_name(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || c.is_control())
}

/// The usual spelling of the headers upstreams ask for; other names are kept as given.
fn canonical_header(name: &str) -> &str {
    if name.eq_ignore_ascii_case("referer") || name.eq_ignore_ascii_case("referrer") {
        "Referer"
    } else if name.eq_ignore_ascii_case("user-agent") {
        "User-Agent"
    } else if name.eq_ignore_ascii_case("origin") {
        "Origin"
    } else if name.eq_ignore_ascii_case("cookie") {
        "Cookie"
    } else {
        name
    }
}

/// Sets header `name` (replacing an earlier value of the same name, so later sources
/// win and no name appears twice). Empty values are ignored. Names and values that an
/// HTTP client would refuse are rejected here, naming the header, rather than failing
/// every later request for the stream (a decoded `%0D%0A` must not reach a request).
fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: &str) -> Result<(), String> {
    let name = canonical_header(name.trim());
    let value = value.trim();
    if value.is_empty() {
        return Ok(());
    }
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(format!("invalid header name {name:?}; header dropped"));
    }
    if !crate::upstream::forwardable(name) {
        return Err(format!(
            "{name} header not forwarded (freesky's HTTP client sets it); header dropped"
        ));
    }
    if value
        .chars()
        .any(|c| (c.is_control() && c != '\t') || c == '\u{7f}')
    {
        return Err(format!(
            "control character in {name} header; header dropped"
        ));
    }
    match headers
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
    {
        Some(existing) => *existing = (name.to_string(), value.to_string()),
        None => headers.push((name.to_string(), value.to_string())),
    }
    Ok(())
}

/// RFC 9110 `tchar`: what a header name may be made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// One line of the merged playlist freesky serves.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OutEntry<'a> {
    pub tvg_id: &'a str,
    pub tvg_name: &'a str,
    pub tvg_logo: &'a str,
    pub tvg_chno: u32,
    /// `tvc-guide-stationid` (Channels DVR), written only when not empty.
    pub station_id: &'a str,
    pub group: &'a str,
    pub name: &'a str,
    pub url: &'a str,
}

/// The catch-up attributes of one line of the merged playlist.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OutCatchup<'a> {
    /// Days of catch-up (0: none, and no catch-up attributes are written).
    pub days: u32,
    /// The URL template players fill in (`catchup-source`).
    pub source: &'a str,
}

/// `#EXTM3U url-tvg="..." x-tvg-url="..."` (header attrs only when `url_tvg` is Some)
/// then per entry `#EXTINF:-1 tvg-id="" tvg-name="" tvg-logo="" tvg-chno="N"
/// tvc-guide-stationid="" group-title="",Name` (`tvg-logo` and `tvc-guide-stationid`
/// only when there is one; `catchup="default" catchup-days="N" catchup-source="..."`
/// only with catch-up) and the URL line.
/// Lines end with "\n".
///
/// Values come from upstreams, so they are made unable to break the format: `"`
/// becomes `'` and CR/LF become spaces in attributes and names. URLs are written as
/// given, except that a raw CR/LF (never valid in a URL) is percent-encoded so it cannot
/// start a line of its own.
pub fn render<'a>(
    url_tvg: Option<&str>,
    entries: impl IntoIterator<Item = OutEntry<'a>>,
) -> String {
    render_with_catchup(url_tvg, entries.into_iter().map(|e| (e, None)))
}

/// [`render`] with each entry's catch-up attributes, when it has some.
pub fn render_with_catchup<'a>(
    url_tvg: Option<&str>,
    entries: impl IntoIterator<Item = (OutEntry<'a>, Option<OutCatchup<'a>>)>,
) -> String {
    let entries = entries.into_iter();
    // About 200 bytes per entry in practice; avoids most regrowth on 10k entries.
    let mut out = String::with_capacity(64 + entries.size_hint().0 * 200);
    render_header(&mut out, url_tvg);
    for (entry, catchup) in entries {
        render_entry(&mut out, &entry, catchup);
    }
    out
}

/// The first line of [`render`]: `#EXTM3U`, with the guide when there is one.
pub fn render_header(out: &mut String, url_tvg: Option<&str>) {
    out.push_str("#EXTM3U");
    if let Some(url) = url_tvg {
        out.push_str(" url-tvg=\"");
        push_clean(out, url);
        out.push_str("\" x-tvg-url=\"");
        push_clean(out, url);
        out.push('"');
    }
    out.push('\n');
}

/// One entry of [`render_with_catchup`]: its `#EXTINF` line and its URL line, so that a
/// long playlist can be written (and sent) a part at a time.
pub fn render_entry(out: &mut String, entry: &OutEntry<'_>, catchup: Option<OutCatchup<'_>>) {
    out.push_str("#EXTINF:-1 tvg-id=\"");
    push_clean(out, entry.tvg_id);
    out.push_str("\" tvg-name=\"");
    push_clean(out, entry.tvg_name);
    out.push('"');
    // No logo, no attribute: some players show an empty `tvg-logo=""` as a
    // broken image instead of their own placeholder.
    if !entry.tvg_logo.trim().is_empty() {
        out.push_str(" tvg-logo=\"");
        push_clean(out, entry.tvg_logo);
        out.push('"');
    }
    // Writing to a String cannot fail.
    let _ = write!(out, " tvg-chno=\"{}\"", entry.tvg_chno);
    if !entry.station_id.is_empty() {
        out.push_str(" tvc-guide-stationid=\"");
        push_clean(out, entry.station_id);
        out.push('"');
    }
    if let Some(c) = catchup.filter(|c| c.days > 0) {
        let _ = write!(
            out,
            " catchup=\"default\" catchup-days=\"{}\" catchup-source=\"",
            c.days
        );
        push_clean(out, c.source);
        out.push('"');
    }
    out.push_str(" group-title=\"");
    push_clean(out, entry.group);
    out.push_str("\",");
    push_title(out, entry.name);
    out.push('\n');
    for c in entry.url.chars() {
        match c {
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
    out.push('\n');
}

/// Appends `value` so that it can neither close an attribute nor end the line, for
/// any reader: CR, LF and the other characters some split lines on (NEL, U+2028,
/// U+2029, vertical tab, form feed; all white space to the parser, which trims them)
/// become spaces, and so does every other control character (an upstream's terminal
/// escapes would reach `freesky playlist`'s terminal).
pub(crate) fn push_clean(out: &mut String, value: &str) {
    for c in value.chars() {
        out.push(if c == '"' { '\'' } else { printable(c) });
    }
}

/// Appends a title, after the attributes' comma: as `push_clean`, but a `"` stays
/// (no attribute is open there; Jellyfin takes this title as the channel's name and
/// matches guides by it).
pub(crate) fn push_title(out: &mut String, value: &str) {
    out.extend(value.chars().map(printable));
}

/// `c`, or a space for a character that ends a line for some reader or controls a
/// terminal: what upstream text may show as (`freesky channels`' table too).
pub fn printable(c: char) -> char {
    if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
        ' '
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line-per-fact summary of a parse, so expectations read like the input.
    fn summary(playlist: &Playlist) -> String {
        let mut out = String::new();
        for (k, v) in &playlist.header {
            let _ = writeln!(out, "header {k}={v}");
        }
        for e in &playlist.entries {
            let _ = writeln!(out, "entry {} {:?} {}", e.line, e.name, e.url);
            for (k, v) in &e.attrs {
                let _ = writeln!(out, "attr {k}={v}");
            }
            for (k, v) in &e.headers {
                let _ = writeln!(out, "hdr {k}: {v}");
            }
        }
        for w in &playlist.warnings {
            let _ = writeln!(out, "warning {}: {}", w.line, w.message);
        }
        out
    }

    /// Parses `input` and compares its summary with `expected` (indentation and blank
    /// lines in `expected` are ignored).
    #[track_caller]
    fn check(input: &str, expected: &str) {
        let expected: String = expected
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(summary(&parse(input)), expected, "input:\n{input}");
    }

    #[test]
    fn simple_list() {
        check(
            "#EXTM3U\n#EXTINF:-1 tvg-id=\"a.us\" group-title=\"News\",Channel A\nhttp://h/a.m3u8\n",
            r#"
            entry 2 "Channel A" http://h/a.m3u8
            attr tvg-id=a.us
            attr group-title=News
            "#,
        );
    }

    #[test]
    fn crlf_bom_blank_lines_and_no_header() {
        check(
            "\u{feff}\r\n#EXTINF:-1,One \r\n\r\n  http://h/1  \r\n#extinf:0 tvg-id=x,Two\r\nrtsp://h/2",
            r#"
            entry 2 "One" http://h/1
            entry 5 "Two" rtsp://h/2
            attr tvg-id=x
            "#,
        );
        // Classic-Mac line ends.
        check(
            "#EXTM3U\r#EXTINF:-1,One\rhttp://h/1\r",
            r#"entry 2 "One" http://h/1"#,
        );
    }

    #[test]
    fn commas_and_quotes_in_attribute_values_and_names() {
        // iptv-org's trap: splitting at the first comma cuts the user-agent.
        check(
            "#EXTINF:-1 tvg-id=\"21TV.am\" user-agent=\"Mozilla/5.0 (iPhone; like Gecko) x, y\",21TV (480p)\nhttp://h/1",
            r#"
            entry 1 "21TV (480p)" http://h/1
            attr tvg-id=21TV.am
            attr user-agent=Mozilla/5.0 (iPhone; like Gecko) x, y
            hdr User-Agent: Mozilla/5.0 (iPhone; like Gecko) x, y
            "#,
        );
        check(
            "#EXTINF:-1 tvg-name=\"A=B, C\" group-title='Kids, Family' tvg-chno=7,News, Weather \"Live\" | HD \nhttp://h/1",
            r#"
            entry 1 "News, Weather \"Live\" | HD" http://h/1
            attr tvg-name=A=B, C
            attr group-title=Kids, Family
            attr tvg-chno=7
            "#,
        );
        // Unquoted value ended by the comma; a bare word is not an attribute; an
        // unclosed quote still leaves the name.
        check(
            "#EXTINF:-1 radio group-title=Music,Jazz FM\nhttp://h/1\n#EXTINF:-1 tvg-logo=\"http://l/x.png,Broken\nhttp://h/2",
            r#"
            entry 1 "Jazz FM" http://h/1
            attr group-title=Music
            entry 3 "Broken" http://h/2
            attr tvg-logo=http://l/x.png
            "#,
        );
    }

    #[test]
    fn missing_attributes_and_missing_name() {
        check(
            "#EXTINF:-1,Plain\nhttp://h/1\n#EXTINF:-1 tvg-name=\"  From Attr\"\nhttp://h/2\n#EXTINF:-1 tvg-id=\"x\"\nhttp://h/3\n#EXTINF:-1 tvg-id=\"y\",  \nhttp://h/4",
            r#"
            entry 1 "Plain" http://h/1
            entry 3 "From Attr" http://h/2
            attr tvg-name=  From Attr
            warning 5: #EXTINF has no channel name (no text after the attributes, no tvg-name); entry skipped
            warning 7: #EXTINF has no channel name (no text after the attributes, no tvg-name); entry skipped
            "#,
        );
    }

    #[test]
    fn attr_lookup() {
        let p = parse("#EXTINF:-1 TVG-Logo=\"\" tvg-logo=\"l.png\" tvg-id=\"\",N\nhttp://h");
        let e = &p.entries[0];
        assert_eq!(e.attr("tvg-logo"), Some("l.png"));
        assert_eq!(e.attr("TVG-LOGO"), Some("l.png"));
        assert_eq!(e.attr("tvg-id"), None);
        assert_eq!(e.attr("group-title"), None);
    }

    #[test]
    fn extinf_without_colon() {
        check(
            "#EXTINF-1 tvg-id=\"NosTVBonaire.bq\",Nos TV Bonaire \nhttp://h/1",
            r#"
            entry 1 "Nos TV Bonaire" http://h/1
            attr tvg-id=NosTVBonaire.bq
            "#,
        );
    }

    #[test]
    fn extvlcopt_before_and_after_extinf() {
        check(
            "#EXTVLCOPT:http-referrer=https://before/\n#EXTINF:-1,A\n#EXTVLCOPT:http-user-agent=Agent 1.0 (X, Y)\n#EXTVLCOPT:network-caching=1000\nhttp://h/a\n#EXTINF:-1,B\n#EXTVLCOPT:HTTP-ORIGIN=https://o\n#EXTVLCOPT:http-cookie=k=v\nhttp://h/b\n#EXTINF:-1,C\nhttp://h/c",
            r#"
            entry 2 "A" http://h/a
            hdr Referer: https://before/
            hdr User-Agent: Agent 1.0 (X, Y)
            entry 6 "B" http://h/b
            hdr Origin: https://o
            hdr Cookie: k=v
            entry 10 "C" http://h/c
            "#,
        );
    }

    #[test]
    fn kodiprop_headers() {
        check(
            "#EXTINF:-1,K\n#KODIPROP:inputstream.adaptive.stream_headers=Referer=https%3A%2F%2Fa.b%2F&user-agent=Foo%20Bar&X-Token=abc\n#KODIPROP:inputstream.adaptive.license_type=com.widevine.alpha\nhttp://h/k\n#KODIPROP:inputstream.adaptive.common_headers=origin=https://o\n#EXTINF:-1,L\nhttp://h/l",
            r#"
            entry 1 "K" http://h/k
            hdr Referer: https://a.b/
            hdr User-Agent: Foo Bar
            hdr X-Token: abc
            entry 6 "L" http://h/l
            hdr Origin: https://o
            "#,
        );
    }

    #[test]
    fn kodi_pipe_headers_and_precedence() {
        check(
            "#EXTINF:-1 http-referrer=\"https://attr/\" user-agent=\"AttrAgent\" tvg-id=\"p\",P\n#EXTVLCOPT:http-user-agent=VlcAgent\n#EXTVLCOPT:http-referrer=https://vlc/\nhttp://host/x.m3u8|Referer=https%3A%2F%2Fa.b%2F&USER-AGENT=Pipe&X-Forwarded-For=1.2.3.4",
            r#"
            entry 1 "P" http://host/x.m3u8
            attr http-referrer=https://attr/
            attr user-agent=AttrAgent
            attr tvg-id=p
            hdr Referer: https://a.b/
            hdr User-Agent: Pipe
            hdr X-Forwarded-For: 1.2.3.4
            "#,
        );
        check(
            "#EXTINF:-1,Q\n  http://h/q.ts | referrer=https://r/ \n#EXTINF:-1,R\n|Referer=x",
            r#"
            entry 1 "Q" http://h/q.ts
            hdr Referer: https://r/
            warning 4: empty URL; entry skipped
            "#,
        );
    }

    #[test]
    fn headers_a_client_would_refuse_are_dropped_with_a_warning() {
        check(
            "#EXTINF:-1,A\n#KODIPROP:inputstream.adaptive.stream_headers=Bad Name=1&Cookie=a%0D%0AX: y\nhttp://h/a|Referer=ok&Referer=also%0Abad",
            r#"
            entry 1 "A" http://h/a
            hdr Referer: ok
            warning 2: invalid header name "Bad Name"; header dropped
            warning 2: control character in Cookie header; header dropped
            warning 3: control character in Referer header; header dropped
            "#,
        );
    }

    #[test]
    fn url_without_extinf_and_extinf_without_url() {
        check(
            "#EXTM3U\nhttp://h/orphan\n#EXTINF:-1,NoUrl\n#EXTINF:-1,Good\nhttp://h/good\nhttp://h/second\n#EXTINF:-1,Last\n",
            r#"
            entry 4 "Good" http://h/good
            warning 2: URL without #EXTINF; line skipped
            warning 3: #EXTINF without a URL line; entry skipped
            warning 6: URL without #EXTINF; line skipped
            warning 7: #EXTINF without a URL line; entry skipped
            "#,
        );
        // Options read before an orphan URL die with it.
        check(
            "#EXTVLCOPT:http-referrer=r\nhttp://h/orphan\n#EXTINF:-1,A\nhttp://h/a",
            r#"
            entry 3 "A" http://h/a
            warning 2: URL without #EXTINF; line skipped
            "#,
        );
    }

    #[test]
    fn any_scheme_is_kept() {
        check(
            "#EXTINF:-1,A\nacestream://0123abcd\n#EXTINF:-1,B\nmmsh://h/b?x=1\n#EXTINF:-1,C\n/srv/media/c.ts",
            r#"
            entry 1 "A" acestream://0123abcd
            entry 3 "B" mmsh://h/b?x=1
            entry 5 "C" /srv/media/c.ts
            "#,
        );
    }

    #[test]
    fn header_guide_url() {
        let p = parse("#EXTM3U url-tvg=\"http://g/1.xml, http://g/2.xml\" x-tvg-url=\"http://g/x.xml\" refresh=3600\n");
        assert_eq!(p.guide_url(), Some("http://g/1.xml"));
        check(
            "#EXTM3U URL-TVG=\"\" x-tvg-url=http://g/x.xml,http://g/y.xml\n",
            r#"
            header url-tvg=
            header x-tvg-url=http://g/x.xml,http://g/y.xml
            "#,
        );
        let p = parse("#EXTM3U url-tvg=\"\" x-tvg-url=\" http://g/x.xml \"\n");
        assert_eq!(p.guide_url(), Some("http://g/x.xml"));
        assert_eq!(parse("#EXTM3U\n").guide_url(), None);
        assert_eq!(parse("#EXTINF:-1,A\nhttp://h").guide_url(), None);
        assert_eq!(parse("#EXTM3Ux url-tvg=\"g\"").header, vec![]);
    }

    #[test]
    fn extgrp() {
        check(
            "#EXTINF:-1,A\n#EXTGRP:Sports\nhttp://h/a\n#EXTGRP:Ignored\n#EXTINF:-1 group-title=\"News\",B\nhttp://h/b\n#EXTINF:-1 group-title=\"\",C\n#EXTGRP: Kids \nhttp://h/c\n#EXTINF:-1,D\nhttp://h/d",
            r#"
            entry 1 "A" http://h/a
            attr group-title=Sports
            entry 5 "B" http://h/b
            attr group-title=News
            entry 7 "C" http://h/c
            attr group-title=Kids
            entry 10 "D" http://h/d
            "#,
        );
    }

    #[test]
    fn catchup_attributes_with_header_defaults_and_bad_values() {
        use crate::model::{Catchup, CatchupKind};
        let list = parse(
            "#EXTM3U catchup=\"shift\" catchup-days=\"2\"\n\
             #EXTINF:-1 catchup=\"default\" catchup-days=\"7\" catchup-source=\"http://a/{utc}\",A\nhttp://h/a\n\
             #EXTINF:-1,B\nhttp://h/b\n\
             #EXTINF:-1 catchup-days=\"lots\",C\nhttp://h/c\n\
             #EXTINF:-1 catchup=\"vod\",D\nhttp://h/d\n",
        );
        let got: Vec<_> = list.entries.iter().map(|e| e.catchup.clone()).collect();
        let c = |kind, days, source: &str| {
            Some(Catchup {
                kind,
                days,
                source: source.into(),
                ..Catchup::default()
            })
        };
        assert_eq!(
            got,
            [
                c(CatchupKind::Default, 7, "http://a/{utc}"),
                c(CatchupKind::Shift, 2, ""),
                c(CatchupKind::Shift, crate::catchup::DEFAULT_DAYS, ""),
                None,
            ]
        );
        // Bad values are warnings on their line; every entry stays.
        let lines: Vec<_> = list.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [6, 8], "{:?}", list.warnings);
    }

    #[test]
    fn no_value_can_start_a_line_for_any_reader() {
        let entry = OutEntry {
            tvg_chno: 1,
            station_id: "",
            name: "A\u{85}#EXTINF:-1,Forged\u{2028}http://x/\u{2029}\u{b}\u{c}B\tC\u{1b}[31mD\u{7}",
            group: "G\r\nH",
            url: "http://f/a.m3u8",
            ..OutEntry::default()
        };
        let out = render_with_catchup(None, [(entry, None)]);
        assert_eq!(out.lines().count(), 3, "{out:?}");
        assert!(
            !out.chars()
                .any(|c| matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}')
                    || (c.is_control() && c != '\n')),
            "no control character but the line ends (a terminal's escapes neither): {out:?}"
        );
        assert!(
            out.contains(",A #EXTINF:-1,Forged http://x/   B C [31mD \n"),
            "{out:?}"
        );
    }

    #[test]
    fn render_with_catchup_attributes() {
        let entry = OutEntry {
            tvg_chno: 4,
            station_id: "",
            name: "A",
            url: "http://f/a.m3u8",
            ..OutEntry::default()
        };
        let out = render_with_catchup(
            None,
            [
                (
                    entry,
                    Some(OutCatchup {
                        days: 3,
                        source: "http://f/t/a.ts?start={utc}&end={utcend}",
                    }),
                ),
                (
                    entry,
                    Some(OutCatchup {
                        days: 0,
                        source: "x",
                    }),
                ),
            ],
        );
        assert_eq!(
            out,
            "#EXTM3U\n\
             #EXTINF:-1 tvg-id=\"\" tvg-name=\"\" tvg-chno=\"4\" catchup=\"default\" catchup-days=\"3\" catchup-source=\"http://f/t/a.ts?start={utc}&end={utcend}\" group-title=\"\",A\n\
             http://f/a.m3u8\n\
             #EXTINF:-1 tvg-id=\"\" tvg-name=\"\" tvg-chno=\"4\" group-title=\"\",A\n\
             http://f/a.m3u8\n"
        );
    }

    #[test]
    fn render_exact() {
        let out = render(
            Some("http://freesky/epg.xml"),
            [
                OutEntry {
                    tvg_id: "CNN.us",
                    tvg_name: "CNN",
                    tvg_logo: "http://l/cnn.png",
                    tvg_chno: 1,
                    station_id: "",
                    group: "News",
                    name: "CNN",
                    url: "http://freesky/stream/1",
                },
                OutEntry {
                    tvg_chno: 20,
                    station_id: "",
                    name: "Empty",
                    url: "http://freesky/stream/20",
                    ..OutEntry::default()
                },
            ],
        );
        assert_eq!(
            out,
            "#EXTM3U url-tvg=\"http://freesky/epg.xml\" x-tvg-url=\"http://freesky/epg.xml\"\n\
             #EXTINF:-1 tvg-id=\"CNN.us\" tvg-name=\"CNN\" tvg-logo=\"http://l/cnn.png\" tvg-chno=\"1\" group-title=\"News\",CNN\n\
             http://freesky/stream/1\n\
             #EXTINF:-1 tvg-id=\"\" tvg-name=\"\" tvg-chno=\"20\" group-title=\"\",Empty\n\
             http://freesky/stream/20\n"
        );
        assert_eq!(render(None, []), "#EXTM3U\n");
    }

    #[test]
    fn render_escaping() {
        let out = render(
            None,
            [OutEntry {
                tvg_id: "a\"b",
                tvg_name: "x\r\ny",
                tvg_logo: "",
                tvg_chno: 3,
                station_id: "",
                group: "G \"1\"",
                name: "Name, \"quoted\"\n#EXTINF:-1,Injected",
                url: "http://h/a?b=\"c\"\nhttp://evil",
            }],
        );
        assert_eq!(
            out,
            "#EXTM3U\n\
             #EXTINF:-1 tvg-id=\"a'b\" tvg-name=\"x  y\" tvg-chno=\"3\" group-title=\"G '1'\",Name, \"quoted\" #EXTINF:-1,Injected\n\
             http://h/a?b=\"c\"%0Ahttp://evil\n"
        );
        // What we render, we parse back to the same channel.
        let back = parse(&out);
        assert_eq!(back.warnings, vec![]);
        assert_eq!(back.entries.len(), 1);
        assert_eq!(back.entries[0].name, "Name, \"quoted\" #EXTINF:-1,Injected");
        assert_eq!(back.entries[0].attr("group-title"), Some("G '1'"));
    }

    #[test]
    fn no_panic_on_any_input() {
        let tricky = "\u{feff}#EXTM3U url-tvg=\"\u{e9}\n#EXTINF-1 k=\"v,\u{1F600}\" 'x'=y =z ,\r\n#EXTVLCOPT:http-referrer\n#KODIPROP:inputstream.adaptive.stream_headers=%FF%00=&=&&\n\u{e9}|a=%\n#EXTINF:\u{e9}\"\n#EXTGRP:\nhttp://h|||\n";
        for (cut, _) in tricky.char_indices() {
            let _ = parse(&tricky[..cut]);
            let _ = parse(&tricky[cut..]);
        }
        // Deterministic soup of the pieces the parser reacts to.
        let pieces = [
            "#EXTINF",
            ":",
            "-1",
            " ",
            "\"",
            "'",
            "=",
            ",",
            "|",
            "&",
            "%",
            "%2",
            "\n",
            "\r",
            "#EXTVLCOPT:",
            "#KODIPROP:",
            "#EXTGRP:",
            "#EXTM3U",
            "http://h",
            "\u{e9}",
            "key",
            "\t",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2_000 {
            let mut input = String::new();
            for _ in 0..40 {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let piece = pieces[(seed >> 33) as usize % pieces.len()];
                input.push_str(piece);
            }
            let playlist = parse(&input);
            for e in &playlist.entries {
                assert!(!e.name.is_empty() && !e.url.is_empty(), "{input:?}");
            }
        }
        let huge = format!(
            "#EXTINF:-1 a=\"{}\",N\n{}\n",
            ",".repeat(1 << 20),
            "x".repeat(1 << 20)
        );
        assert_eq!(parse(&huge).entries.len(), 1);
    }

    /// The whole iptv-org list of 2023-01-31 (public domain, see tests/data/LICENSE.iptv-org).
    #[test]
    fn real_iptv_org_list() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/iptv-org-sample.m3u"
        );
        let text = std::fs::read_to_string(path).expect("test data file is in the repository");
        let playlist = parse(&text);
        assert_eq!(playlist.warnings, vec![]);
        assert!(
            playlist.entries.len() >= 9_900,
            "{}",
            playlist.entries.len()
        );
        for e in &playlist.entries {
            assert!(!e.name.is_empty() && !e.url.is_empty(), "line {}", e.line);
            assert_eq!(e.name.trim(), e.name, "line {}", e.line);
            assert!(
                !e.name.to_lowercase().contains("user-agent="),
                "line {}",
                e.line
            );
        }
        let with_header = |name: &str| {
            playlist
                .entries
                .iter()
                .filter(|e| e.headers.iter().any(|(k, _)| k == name))
                .count()
        };
        assert!(with_header("User-Agent") >= 271);
        assert!(with_header("Referer") >= 20);
        let bonaire = playlist.entries.iter().find(|e| e.line == 1151);
        assert_eq!(bonaire.map(|e| e.name.as_str()), Some("Nos TV Bonaire"));
    }

    /// A list whose first entries end in CR alone and later ones in LF or CRLF (an
    /// edited file) keeps every entry: each CR, LF or CRLF ends a line wherever it is,
    /// and a CRLF split between two chunks is one line end, not an empty line.
    #[test]
    fn mixed_line_ends_keep_every_entry() {
        let text = "#EXTM3U\r#EXTINF:-1,One\rhttp://h/1\r#EXTINF:-1,Two\rhttp://h/2\r\
                    #EXTINF:-1,Three\nhttp://h/3\n#EXTINF:-1,Four\r\nhttp://h/4\r\n\
                    #EXTINF:-1,Five\rhttp://h/5\n#EXTINF:-1,Six\r\nhttp://h/6";
        let want = [
            (2, "One", "http://h/1"),
            (4, "Two", "http://h/2"),
            (6, "Three", "http://h/3"),
            (8, "Four", "http://h/4"),
            (10, "Five", "http://h/5"),
            (12, "Six", "http://h/6"),
        ];
        let entries = |playlist: &Playlist| {
            assert_eq!(playlist.warnings, vec![]);
            playlist
                .entries
                .iter()
                .map(|e| (e.line, e.name.clone(), e.url.clone()))
                .collect::<Vec<_>>()
        };
        let want: Vec<_> = want
            .iter()
            .map(|&(line, name, url)| (line, name.to_string(), url.to_string()))
            .collect();
        assert_eq!(entries(&parse(text)), want);
        for size in 1..text.len() {
            assert_eq!(
                entries(&read_chunked(text.as_bytes(), size)),
                want,
                "by {size}"
            );
        }
    }

    /// The whole-text parse the reader replaced: the oracle chunked reading must match.
    /// CR, LF and CRLF each end a line.
    fn parse_whole(text: &str) -> Playlist {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        let mut parser = Parser::default();
        for (index, line) in text.split('\n').enumerate() {
            parser.line(index + 1, line);
        }
        parser.finish()
    }

    /// `bytes` read in chunks of `size`, the entries drained after every chunk.
    fn read_chunked(bytes: &[u8], size: usize) -> Playlist {
        let mut reader = Reader::new();
        let mut entries = Vec::new();
        for chunk in bytes.chunks(size.max(1)) {
            reader.push(chunk);
            entries.extend(reader.drain());
        }
        let mut playlist = reader.finish();
        entries.append(&mut playlist.entries);
        playlist.entries = entries;
        playlist
    }

    #[test]
    fn reading_in_chunks_parses_as_the_whole_text() {
        let inputs = [
            "\u{feff}#EXTM3U url-tvg=\"http://g/x.xml\"\r\n#EXTINF:-1 tvg-id=\"A.a\" group-title=\"Né,ws\",Chaîne \u{1F600}\r\n#EXTVLCOPT:http-referrer=http://r/\r\nhttp://h/1.m3u8|User-Agent=UA\r\n\r\n#EXTINF:-1,Two\r\nhttp://h/2\r\n#EXTINF:-1,Lost\r\n",
            "#EXTM3U\r#EXTINF:-1,Mac\rhttp://h/mac\r#EXTINF:-1,Mac 2\rhttp://h/mac2",
            "#EXTM3U\r#EXTINF:-1,Mac\rhttp://h/mac\r\r\n#EXTINF:-1,Dos\r\nhttp://h/dos\n\r#EXTINF:-1,Unix\nhttp://h/unix\r",
            "#EXTINF:-1,No header\nhttp://h/x\nhttp://orphan\n#EXTGRP:G\n#EXTINF:-1,Grouped\nhttp://h/g",
            "",
            "\n\n",
            "#EXTM3U",
        ];
        for input in inputs {
            let want = parse_whole(input);
            assert_eq!(parse(input), want, "{input:?}");
            for size in [1, 2, 3, 5, 7, 64] {
                assert_eq!(
                    read_chunked(input.as_bytes(), size),
                    want,
                    "{input:?} by {size}"
                );
            }
        }
        // Bytes that are not UTF-8 decode as the whole text would, wherever a chunk ends.
        let bytes = b"#EXTINF:-1,Bad \xC3\x28 \xE2\x82 name \xC3\xA9\nhttp://h/\xFF\n";
        let want = parse_whole(&String::from_utf8_lossy(bytes));
        assert_eq!(want.entries.len(), 1);
        for size in 1..bytes.len() {
            assert_eq!(read_chunked(bytes, size), want, "by {size}");
        }
        // The real list, read in uneven chunks, entries drained as they come.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/iptv-org-sample.m3u"
        );
        let text = std::fs::read_to_string(path).expect("test data file is in the repository");
        let want = parse_whole(&text);
        assert!(want.entries.len() > 9_000);
        assert_eq!(read_chunked(text.as_bytes(), 4093), want);
    }
}
