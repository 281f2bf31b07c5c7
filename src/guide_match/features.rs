//! What a channel name says, as the matcher compares it: its words (accents folded,
//! lowercase, bracketed notes and quality marks dropped), its time shift (`+1`, also
//! written as a note: `(+2)`), its country (a trailing code, a tvg-id's domain, a
//! group's leading code) and a US/CA callsign; the country a stream's address hints
//! (`country_of_url`) and the languages a name's script hints (`languages_of_script`).
//! Pure functions of strings.

use std::collections::{HashMap, HashSet};

/// Words that say how a channel is delivered, not which channel it is.
const QUALITY: &[&str] = &[
    "hd", "fhd", "uhd", "sd", "4k", "8k", "hdr", "hevc", "h264", "h265", "1080p", "1080i", "720p",
    "576p", "576i", "540p", "480p", "360p", "240p", "2160p", "backup", "hq", "lq",
];

/// Country codes (and a few names) recognised as a trailing word or tvg-id domain.
/// Two-letter codes that are common words in channel names ("tv", "in", "me", "no",
/// "be", "at", "is", "my", "do", "go", "so", "to", "am", "id") are left out on purpose:
/// "Watch Me" must stay one name.
const COUNTRIES: &[&str] = &[
    "uk", "gb", "us", "usa", "ca", "au", "nz", "ie", "de", "ch", "fr", "nl", "es", "pt", "it",
    "pl", "cz", "sk", "hu", "ro", "bg", "gr", "tr", "ru", "ua", "by", "rs", "hr", "si", "ba", "mk",
    "al", "se", "dk", "fi", "ee", "lv", "lt", "br", "ar", "mx", "cl", "co", "pe", "ve", "ec", "uy",
    "py", "bo", "cr", "pa", "gt", "hn", "sv", "ni", "pr", "cu", "pk", "bd", "lk", "np", "za", "ng",
    "ke", "gh", "eg", "ma", "dz", "tn", "ae", "sa", "qa", "kw", "bh", "om", "jo", "lb", "iq", "ir",
    "il", "cn", "hk", "tw", "jp", "kr", "th", "vn", "ph", "sg", "kz", "uz", "az", "ge", "cy", "mt",
    "lu", "af", "ksa", "uae",
];

/// Every ISO 3166-1 code, read where a country code is all a part can be: a tvg-id's
/// domain (`Formula.ge`) and a group's code written in capitals ("AD | News"). "tv" is
/// left out (a tvg-id domain and a group word far more often than Tuvalu).
const ISO_CODES: &[&str] = &[
    "ad", "ae", "af", "ag", "ai", "al", "am", "ao", "aq", "ar", "as", "at", "au", "aw", "ax", "az",
    "ba", "bb", "bd", "be", "bf", "bg", "bh", "bi", "bj", "bl", "bm", "bn", "bo", "bq", "br", "bs",
    "bt", "bv", "bw", "by", "bz", "ca", "cc", "cd", "cf", "cg", "ch", "ci", "ck", "cl", "cm", "cn",
    "co", "cr", "cu", "cv", "cw", "cx", "cy", "cz", "de", "dj", "dk", "dm", "do", "dz", "ec", "ee",
    "eg", "eh", "er", "es", "et", "fi", "fj", "fk", "fm", "fo", "fr", "ga", "gb", "gd", "ge", "gf",
    "gg", "gh", "gi", "gl", "gm", "gn", "gp", "gq", "gr", "gs", "gt", "gu", "gw", "gy", "hk", "hm",
    "hn", "hr", "ht", "hu", "id", "ie", "il", "im", "in", "io", "iq", "ir", "is", "it", "je", "jm",
    "jo", "jp", "ke", "kg", "kh", "ki", "km", "kn", "kp", "kr", "kw", "ky", "kz", "la", "lb", "lc",
    "li", "lk", "lr", "ls", "lt", "lu", "lv", "ly", "ma", "mc", "md", "me", "mf", "mg", "mh", "mk",
    "ml", "mm", "mn", "mo", "mp", "mq", "mr", "ms", "mt", "mu", "mv", "mw", "mx", "my", "mz", "na",
    "nc", "ne", "nf", "ng", "ni", "nl", "no", "np", "nr", "nu", "nz", "om", "pa", "pe", "pf", "pg",
    "ph", "pk", "pl", "pm", "pn", "pr", "ps", "pt", "pw", "py", "qa", "re", "ro", "rs", "ru", "rw",
    "sa", "sb", "sc", "sd", "se", "sg", "sh", "si", "sj", "sk", "sl", "sm", "sn", "so", "sr", "ss",
    "st", "sv", "sx", "sy", "sz", "tc", "td", "tf", "tg", "th", "tj", "tk", "tl", "tm", "tn", "to",
    "tr", "tt", "tw", "tz", "ua", "ug", "uk", "um", "us", "uy", "uz", "va", "vc", "ve", "vg", "vi",
    "vn", "vu", "wf", "ws", "xk", "ye", "yt", "za", "zm", "zw",
];

/// Spelled-out numbers read as digits, so "BBC One" and "BBC 1" are the same words.
const NUMBERS: &[(&str, &str)] = &[
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
];

/// The features of one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features {
    /// Words in order, normalised (see the module doc).
    pub words: Vec<String>,
    /// Hours of a time-shifted copy (`+1` → 1); 0 for the live channel.
    pub shift: u8,
    /// Lowercase country code, when the name or its context says one.
    pub country: Option<String>,
    /// A US or Canadian callsign (`WABC`), lowercase, without `-DT`/`-TV` suffixes.
    pub callsign: Option<String>,
    compact: String,
    /// `compact` with the quality marks (and a country suffix) kept: "Band" and
    /// "Band HD" differ here only.
    marked: String,
}

impl Features {
    /// The words as written (numbers not rewritten) joined without spaces: "BBCOne",
    /// "BBC One" and "bbc-one" agree.
    pub fn compact(&self) -> String {
        self.compact.clone()
    }

    /// The words as written, quality marks ("HD") kept, joined without spaces.
    pub fn marked(&self) -> &str {
        &self.marked
    }
}

/// The features of a display name.
pub fn of_name(name: &str) -> Features {
    of_name_placed(name, None)
}

/// The features of a display name whose channel something surer than its name places
/// in country `placed` (canonical: a tvg-id's domain, a group): a trailing code of
/// another country is then a word of the name, not its country ("5 USA" of the UK,
/// `5USA.uk`, is "5 usa").
pub fn of_name_placed(name: &str, placed: Option<&str>) -> Features {
    let callsign = callsign(name);
    let folded = deunicode::deunicode(name).to_lowercase();
    // "A&E" and "A and E", "Food & Drink" and "Food and Drink" are one spelling.
    let folded = drop_brackets(&folded).replace('&', " and ");
    let (folded, shift) = take_shift(&folded);
    let mut words: Vec<String> = Vec::new();
    let mut raw_words: Vec<String> = Vec::new();
    for raw in folded.split(|c: char| !c.is_ascii_alphanumeric() && c != '+') {
        // A `+` left (no hours after it) is part of the name: "Canal+" is "canal plus".
        for (i, part) in raw.split('+').enumerate() {
            if i > 0 {
                words.push("plus".into());
                raw_words.push("plus".into());
            }
            // "BBC1" is "BBC 1": letters and digits are separate words.
            let runs: Vec<&str> = if QUALITY.contains(&part) {
                vec![part]
            } else {
                digit_runs(part).collect()
            };
            for run in runs {
                words.push(word(run));
                raw_words.push(run.into());
            }
        }
    }
    let marked = raw_words.concat();
    if words.len() > 1 {
        words.retain(|w| !QUALITY.contains(&w.as_str()));
        raw_words.retain(|w| !QUALITY.contains(&w.as_str()));
    }
    let mut country = None;
    if words.len() > 1 {
        if let Some(last) = words.last().filter(|w| COUNTRIES.contains(&w.as_str())) {
            let code = canonical_country(last);
            if placed.is_none_or(|p| p == code) {
                country = Some(code);
                words.pop();
                raw_words.pop();
            }
        }
    }
    Features {
        words,
        shift,
        country,
        callsign,
        compact: raw_words.concat(),
        marked,
    }
}

/// The features of a channel's name as a playlist writes it: as [`of_name`], and a
/// leading country code set apart ("UK: BBC One", "DE | Das Erste") is its country
/// (unless a country suffix says another). Not for a guide's display names: a guide
/// that writes "UA:Перший" beside "Перший" names two listings with it.
pub fn of_listed_name(name: &str) -> Features {
    of_listed_name_placed(name, None)
}

/// [`of_listed_name`] of a channel placed in country `placed` (see [`of_name_placed`]).
pub fn of_listed_name_placed(name: &str, placed: Option<&str>) -> Features {
    match country_prefix(name) {
        Some((country, rest)) => {
            let mut f = of_name_placed(rest, placed);
            f.country.get_or_insert(country);
            f
        }
        None => of_name_placed(name, placed),
    }
}

/// A country code that a name starts with, set apart by a colon or a bar ("UK: BBC
/// One", "de | Das Erste"), and the name after it; as a group's country is read
/// (`country_of_group`), and only with more of a name after it.
pub fn country_prefix(name: &str) -> Option<(String, &str)> {
    let (head, rest) = name.split_once([':', '|'])?;
    let head = head.trim();
    let short = (2..=3).contains(&head.len()) && head.bytes().all(|b| b.is_ascii_alphabetic());
    let rest = rest.trim();
    if !short || !rest.chars().any(char::is_alphanumeric) {
        return None;
    }
    Some((country_of_group(head)?, rest))
}

/// Free streaming platforms whose name a playlist puts before the channel's ("Pluto TV
/// Forensic Files") where a guide of that platform's channels lists "Forensic Files".
const PLATFORMS: &[&str] = &[
    "pluto tv",
    "samsung tv plus",
    "stirr",
    "xumo",
    "plex",
    "roku",
    "rakuten tv",
    "local now",
    "distrotv",
    "redbox",
    "tubi",
    "lg channels",
];

/// `name` without a leading platform name, when it has one and more words follow.
pub fn without_platform(name: &str) -> Option<&str> {
    let lower = name.to_ascii_lowercase();
    PLATFORMS.iter().find_map(|p| {
        let rest = lower.strip_prefix(p)?;
        let cut = rest.starts_with([' ', ':', '-', '|']);
        let rest = name[p.len()..].trim_start_matches([' ', ':', '-', '|']);
        (cut && rest.chars().any(char::is_alphanumeric)).then_some(rest)
    })
}

/// The features of a tvg-id (`BBCOne.uk`, `BBCOne.uk@HD`): its name part split at
/// case changes, its domain as the country when it is one.
pub fn of_tvg_id(id: &str) -> Option<Features> {
    let id = id.split('@').next().unwrap_or_default().trim();
    let (base, domain) = match id.rsplit_once('.') {
        Some(("", _)) => return None,
        Some((b, d)) => (b, Some(d.to_ascii_lowercase())),
        _ => (id, None),
    };
    if base.is_empty() {
        return None;
    }
    let placed = domain
        .filter(|d| ISO_CODES.contains(&d.as_str()) || d == "usa")
        .map(|d| canonical_country(&d));
    let mut f = of_name_placed(&split_case(base), placed.as_deref());
    if f.words.is_empty() {
        return None;
    }
    if placed.is_some() {
        f.country = placed;
    }
    Some(f)
}

/// The country a group name starts or ends with ("UK | Sport", "Sport (DE)",
/// "US: News", "AD"), when it is a code this module knows: the common ones in any
/// case, any other ISO code written in capitals and set apart, by punctuation or by
/// being all the group says ("MY | Sport" is Malaysia, "MY LIST" and "SPORTS SD" name
/// no country).
pub fn country_of_group(group: &str) -> Option<String> {
    let folded = deunicode::deunicode(group);
    let words: Vec<&str> = folded
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let (&first, &last) = (words.first()?, words.last()?);
    // What stands next to the first word's end and the last word's start, spaces
    // skipped: a word, or punctuation (or nothing).
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let first_end = folded.find(alnum).unwrap_or(0) + first.len();
    let last_start = folded.rfind(alnum).map_or(0, |i| i + 1) - last.len();
    let apart = |next: Option<char>| !next.is_some_and(alnum);
    let found = [
        (
            first,
            apart(folded[first_end..].trim_start().chars().next()),
        ),
        (
            last,
            apart(folded[..last_start].trim_end().chars().next_back()),
        ),
    ]
    .into_iter()
    .find_map(|(w, set_apart)| {
        let lower = w.to_ascii_lowercase();
        let capitals = w.len() == 2 && w.bytes().all(|b| b.is_ascii_uppercase());
        (COUNTRIES.contains(&lower.as_str())
            || (capitals && set_apart && ISO_CODES.contains(&lower.as_str())))
        .then(|| canonical_country(&lower))
    });
    found
}

/// Country-code domains sold to anyone as words ("twitch.tv", "radio.fm", "app.io"),
/// or given away free: a stream served under one says nothing of where it is from.
const VANITY_DOMAINS: &[&str] = &[
    "ac", "ag", "ai", "am", "bz", "cc", "cf", "co", "cx", "fm", "ga", "gg", "gq", "gs", "im", "io",
    "is", "la", "li", "ly", "md", "me", "ml", "ms", "nu", "pw", "sh", "st", "tk", "to", "tv", "vc",
    "ws",
];

/// The country a stream's address hints, from its host's country-code domain
/// (`videos.rtva.ad` → ad, `x.com.br` → br, `cdn.co.uk` → uk): a hint, not the
/// channel's country (a Kazakh channel served from a Russian host). None for a generic
/// domain (`.com`), a vanity one (`.tv`, `.me`, `.io`: `VANITY_DOMAINS`), an IP address
/// or no host.
pub fn country_of_url(url: &str) -> Option<String> {
    let host = host_of(url)?;
    let tld = host.rsplit_once('.')?.1.to_ascii_lowercase();
    (tld.len() == 2 && ISO_CODES.contains(&tld.as_str()) && !VANITY_DOMAINS.contains(&tld.as_str()))
        .then(|| canonical_country(&tld))
}

/// The host of a stream's address, as written (no port, no user); None for an IPv6
/// address or none.
pub fn host_of(url: &str) -> Option<&str> {
    let rest = url.trim().split_once("://").map_or(url.trim(), |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.starts_with('[') {
        return None;
    }
    let host = host.split(':').next()?.trim_end_matches('.');
    (!host.is_empty()).then_some(host)
}

/// The site a host belongs to, as a reseller's servers share it: its last two labels
/// (`s1.provider.de` → `provider.de`), three under a country's second level
/// (`tv.provider.co.uk` → `provider.co.uk`); an IP address whole. Lowercase.
pub fn site_of(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return host;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let second_level = |l: &str| {
        matches!(
            l,
            "co" | "com" | "net" | "org" | "gov" | "edu" | "ac" | "or" | "ne" | "go" | "gob"
        )
    };
    let keep = match labels.as_slice() {
        [.., sld, tld] if tld.len() == 2 && second_level(sld) => 3,
        _ => 2,
    };
    labels[labels.len().saturating_sub(keep)..].join(".")
}

/// Of one playlist's stream addresses, the sites (`site_of`) serving more than half of
/// them (of 20 or more): a reseller's servers, not each channel's broadcaster, so
/// their domain hints nothing of the channels' countries (`country_of_url`).
#[derive(Debug, Default)]
pub struct Providers(HashSet<String>);

impl Providers {
    pub fn of<'a>(urls: impl IntoIterator<Item = &'a str>) -> Self {
        let mut count: HashMap<String, usize> = HashMap::new();
        let mut total = 0;
        for u in urls {
            total += 1;
            if let Some(h) = host_of(u) {
                *count.entry(site_of(h)).or_default() += 1;
            }
        }
        Self(
            count
                .into_iter()
                .filter(|&(_, n)| total >= 20 && 2 * n > total)
                .map(|(site, _)| site)
                .collect(),
        )
    }

    /// Whether `url`'s host may hint a country: it has one, and no reseller serves it.
    pub fn hints(&self, url: &str) -> bool {
        host_of(url).is_some_and(|h| !self.0.contains(&site_of(h)))
    }
}

/// The languages (as `<display-name lang>` writes them) written in the script most of
/// a name's letters are in, when that script is used by few languages: "Рен ТВ" is
/// Cyrillic (ru, uk, be, bg, sr, mk, kk...), "Ελληνικά" Greek (el). None for the Latin
/// script, a mix, or no letters.
pub fn languages_of_script(name: &str) -> &'static [&'static str] {
    const SCRIPTS: &[(u32, u32, &[&str])] = &[
        (0x0370, 0x03FF, &["el"]),
        (
            0x0400,
            0x052F,
            &["ru", "uk", "be", "bg", "sr", "mk", "kk", "ky", "mn", "tg"],
        ),
        (0x0530, 0x058F, &["hy"]),
        (0x0590, 0x05FF, &["he", "yi"]),
        (0x0600, 0x06FF, &["ar", "fa", "ur", "ps", "ku"]),
        (0x0900, 0x097F, &["hi", "mr", "ne"]),
        (0x0E00, 0x0E7F, &["th"]),
        (0x10A0, 0x10FF, &["ka"]),
        (0x3040, 0x30FF, &["ja"]),
        (0x4E00, 0x9FFF, &["zh", "ja"]),
        (0xAC00, 0xD7AF, &["ko"]),
    ];
    let mut letters = 0;
    let mut counts = [0usize; SCRIPTS.len()];
    for c in drop_brackets(name).chars().filter(|c| c.is_alphabetic()) {
        letters += 1;
        if let Some(i) = SCRIPTS
            .iter()
            .position(|&(lo, hi, _)| (lo..=hi).contains(&(c as u32)))
        {
            counts[i] += 1;
        }
    }
    counts
        .iter()
        .position(|&n| n > 0 && 2 * n > letters)
        .map_or(&[], |i| SCRIPTS[i].2)
}

/// A country code as compared: "gb" is "uk", "usa" is "us", "ksa" is "sa", "uae" is "ae".
pub fn canonical_country(code: &str) -> String {
    match code {
        "gb" => "uk".into(),
        "usa" => "us".into(),
        "ksa" => "sa".into(),
        "uae" => "ae".into(),
        other => other.into(),
    }
}

/// A word as compared: spelled-out numbers as digits, leading zeros dropped.
fn word(w: &str) -> String {
    // The long forms of "TV" in the languages guides use most.
    if matches!(
        w,
        "television" | "televisao" | "televizija" | "televizyon" | "telewizja" | "televisione"
    ) {
        return "tv".into();
    }
    if let Some((_, digit)) = NUMBERS.iter().find(|(n, _)| *n == w) {
        return (*digit).into();
    }
    if w.len() > 1 && w.bytes().all(|b| b.is_ascii_digit()) {
        let trimmed = w.trim_start_matches('0');
        return if trimmed.is_empty() { "0" } else { trimmed }.into();
    }
    w.into()
}

/// `part` cut where letters meet digits: "film4" → "film", "4".
fn digit_runs(part: &str) -> impl Iterator<Item = &str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = part.as_bytes();
    for i in 1..bytes.len() {
        if bytes[i].is_ascii_digit() != bytes[i - 1].is_ascii_digit() {
            out.push(&part[start..i]);
            start = i;
        }
    }
    if start < part.len() {
        out.push(&part[start..]);
    }
    out.into_iter()
}

/// Removes `(...)` and `[...]` notes that tell a format or state ("(720p)",
/// "[Geo-blocked]", `lineup::is_format_note`); a time shift written as one ("Звезда
/// (+2)" is "Звезда +2", another feed than "Звезда") and any other note ("BBC One
/// (Scotland)": a regional feed, not BBC One) stay words of the name, as the lineup
/// keeps them apart.
fn drop_brackets(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    let mut note = String::new();
    for c in s.chars() {
        match c {
            '(' | '[' => {
                depth += 1;
                note.clear();
            }
            ')' | ']' if depth > 0 => {
                depth -= 1;
                out.push(' ');
                // A `+N` that is no shift is the base feed's or an age mark: dropped.
                let kept = is_shift(&note)
                    || !(crate::lineup::is_format_note(note.as_bytes())
                        || note.trim().starts_with('+'));
                if depth == 0 && kept {
                    out.push_str(note.trim());
                    out.push(' ');
                }
            }
            _ if depth == 0 => out.push(c),
            _ => note.push(c),
        }
    }
    out
}

/// Whether a bracketed note is a time shift only: `+1` to `+12` (`+ 2`). Not `+0` (the
/// base feed, as Russian lists mark it) nor `+16`, `+18` (age marks).
fn is_shift(note: &str) -> bool {
    note.trim()
        .strip_prefix('+')
        .map(str::trim_start)
        .is_some_and(|h| {
            h.len() <= 2
                && h.bytes().all(|b| b.is_ascii_digit())
                && h.parse::<u8>().is_ok_and(|h| (1..=12).contains(&h))
        })
}

/// Finds a time shift (`+1`, `+ 2`, `+24`) and removes it.
fn take_shift(s: &str) -> (String, u8) {
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'+' {
            continue;
        }
        let mut j = i + 1;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        let start = j;
        while j < bytes.len() && bytes[j].is_ascii_digit() {
            j += 1;
        }
        let digits = &s[start..j];
        let ends = j == bytes.len() || !bytes[j].is_ascii_alphanumeric();
        if !digits.is_empty() && digits.len() <= 2 && ends {
            if let Ok(h) = digits.parse::<u8>() {
                if h > 0 {
                    let rest = format!("{} {}", &s[..i], &s[j..]);
                    return (rest, h);
                }
            }
        }
    }
    (s.to_string(), 0)
}

/// `BBCOne` → `BBC One`, `DasErste` → `Das Erste`, `Channel9` → `Channel 9`.
fn split_case(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        if i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let boundary = (prev.is_lowercase() && c.is_uppercase())
                || (prev.is_uppercase() && c.is_uppercase() && next_lower)
                || (prev.is_alphabetic() && c.is_ascii_digit())
                || (prev.is_ascii_digit() && c.is_alphabetic());
            if boundary {
                out.push(' ');
            }
        }
        out.push(c);
    }
    out
}

/// A US/Canadian callsign as written in capitals: K or W (C for Canada) and 2–3 more
/// letters, optionally followed by `-DT`, `-TV`, `-HD`, `-LD`, `-CD`.
fn callsign(name: &str) -> Option<String> {
    name.split(|c: char| !c.is_ascii_alphanumeric() && c != '-')
        .filter_map(|w| {
            let base = w.split('-').next()?;
            let first = base.chars().next()?;
            let ok = matches!(first, 'K' | 'W' | 'C')
                && (4..=4).contains(&base.len())
                && base.chars().all(|c| c.is_ascii_uppercase());
            let suffix_ok = w
                .split_once('-')
                .is_none_or(|(_, s)| matches!(s, "DT" | "TV" | "HD" | "LD" | "CD" | "DT1" | "DT2"));
            (ok && suffix_ok).then(|| base.to_ascii_lowercase())
        })
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(name: &str) -> String {
        of_name(name).words.join(" ")
    }

    #[test]
    fn names_lose_quality_and_notes_but_keep_shift_and_country() {
        assert_eq!(words("BBC One HD"), "bbc 1");
        assert_eq!(words("ATV (720p) [Not 24/7]"), "atv");
        assert_eq!(words("Film4 4K 1080p"), "film 4");
        assert_eq!(words("Télé-Sport FHD"), "tele sport");
        let f = of_name("ITV+1");
        assert_eq!((f.words.join(" "), f.shift), ("itv".into(), 1));
        // A shift written as a note is still a shift.
        let f = of_name("Звезда (+2)");
        assert_eq!((f.words.join(" "), f.shift), ("zvezda".into(), 2));
        assert_eq!(of_name("Win (Win+)").shift, 0);
        // Any other note is part of the name: a regional feed is not the national one.
        assert_eq!(words("BBC One (Scotland)"), "bbc 1 scotland");
        assert_eq!(words("BBC One (Scotland)"), words("BBC One Scotland HD"));
        // The base feed's mark and an age mark are notes, dropped.
        assert_eq!(of_name("Первый канал (+0)").words, ["pervyi", "kanal"]);
        let f = of_name("Playboy TV (+18)");
        assert_eq!((f.words.join(" "), f.shift), ("playboy tv".into(), 0));
        let f = of_name("Film4 +2 UK");
        assert_eq!(f.shift, 2);
        assert_eq!(f.country.as_deref(), Some("uk"));
        let f = of_name("MBC Drama KSA");
        assert_eq!(
            (words("MBC Drama KSA"), f.country.as_deref()),
            ("mbc drama".into(), Some("sa"))
        );
        assert_eq!(of_name("Canal+ Sport").words, ["canal", "plus", "sport"]);
        assert_eq!(of_name("Channel 005").words, ["channel", "5"]);
        assert_eq!(words("Food & Drink"), words("Food and Drink"));
        assert_eq!(words("Nepal Television"), "nepal tv");
        // A single word is kept even when it looks like a mark.
        assert_eq!(words("HD"), "hd");
    }

    #[test]
    fn a_listed_names_country_prefix_is_its_country() {
        // A guide's display name keeps it as words.
        assert_eq!(of_name("UA:Перший").words, ["ua", "pershii"]);
        assert_eq!(of_name("UA:Перший").country, None);
        let words = |name| of_listed_name(name).words.join(" ");
        let of_name = of_listed_name;
        for name in [
            "UK: BBC One",
            "UK | BBC One HD",
            "uk:BBC One",
            "GB: BBC One",
        ] {
            let f = of_name(name);
            assert_eq!(
                (f.words.join(" "), f.country.as_deref()),
                ("bbc 1".into(), Some("uk")),
                "{name}"
            );
        }
        // An ISO code in capitals counts; a word that is no country code does not,
        // nor a code with nothing after it.
        assert_eq!(of_name("AD: ATV").country.as_deref(), Some("ad"));
        assert_eq!(of_name("ad: ATV").country, None);
        assert_eq!(words("ad: ATV"), "ad atv");
        assert_eq!(words("TNT: Drama"), "tnt drama");
        assert_eq!(of_name("TNT: Drama").country, None);
        assert_eq!(of_name("UK:").country, None);
        // A country suffix says it too; the suffix wins when both do.
        assert_eq!(of_name("DE: Sky Sport UK").country.as_deref(), Some("uk"));
    }

    #[test]
    fn platform_names_come_off() {
        assert_eq!(
            without_platform("Pluto TV Forensic Files (720p)"),
            Some("Forensic Files (720p)")
        );
        assert_eq!(without_platform("STIRR: CineLife"), Some("CineLife"));
        assert_eq!(without_platform("Pluto TV"), None);
        assert_eq!(without_platform("Plexus TV"), None);
    }

    #[test]
    fn tvg_ids_give_words_and_country() {
        let f = of_tvg_id("BBCOne.uk").unwrap();
        assert_eq!(f.words, ["bbc", "1"]);
        assert_eq!(f.country.as_deref(), Some("uk"));
        let f = of_tvg_id("DasErste.de@HD").unwrap();
        assert_eq!(f.words, ["das", "erste"]);
        assert_eq!(of_tvg_id("Channel9.il").unwrap().compact(), "channel9");
        assert!(of_tvg_id(".uk").is_none());
    }

    #[test]
    fn groups_and_callsigns() {
        assert_eq!(
            country_of_group("UK | Entertainment").as_deref(),
            Some("uk")
        );
        assert_eq!(country_of_group("Sport (DE)").as_deref(), Some("de"));
        assert_eq!(country_of_group("Movies"), None);
        assert_eq!(country_of_group("AD").as_deref(), Some("ad"));
        assert_eq!(country_of_group("Kids TV"), None);
        assert_eq!(country_of_group("Music in"), None);
        // A rare code that is also a word counts only when set apart.
        assert_eq!(country_of_group("MY LIST"), None);
        assert_eq!(country_of_group("SPORTS SD"), None);
        assert_eq!(country_of_group("IN CINEMAS NOW"), None);
        assert_eq!(country_of_group("MY | Sport").as_deref(), Some("my"));
        assert_eq!(country_of_group("Sport (SD)").as_deref(), Some("sd"));
        assert_eq!(country_of_group("[IN] Hindi").as_deref(), Some("in"));
        assert_eq!(country_of_group("  MY  ").as_deref(), Some("my"));
        assert_eq!(country_of_group("UK Sport").as_deref(), Some("uk"));
        assert_eq!(country_of_group(""), None);
        assert_eq!(
            of_tvg_id("Formula.ge").unwrap().country.as_deref(),
            Some("ge")
        );
        assert_eq!(of_name("ABC 7 (WABC-DT)").callsign.as_deref(), Some("wabc"));
        assert_eq!(of_name("WABC-DT ABC 7").callsign.as_deref(), Some("wabc"));
        assert_eq!(of_name("CBS WCBS").callsign.as_deref(), Some("wcbs"));
        assert_eq!(of_name("CNN").callsign, None);
    }

    #[test]
    fn a_site_serving_most_of_a_playlist_is_a_providers() {
        // One reseller's servers, under one site; ten broadcasters' own.
        let mut urls: Vec<String> = (0..15)
            .map(|i| format!("http://S{}.Example.de:8080/{i}", i % 3))
            .collect();
        urls.extend((0..10).map(|i| format!("https://tv{i}.example{i}.fr/live")));
        let providers = Providers::of(urls.iter().map(String::as_str));
        assert!(!providers.hints("http://s7.example.de/x"));
        assert!(providers.hints("https://tv1.example1.fr/live"));
        assert!(!providers.hints("http://[::1]/x"));
        // Half or fewer, or a short list: broadcasters' own hosts.
        assert!(Providers::of(urls[5..].iter().map(String::as_str)).hints(&urls[0]));
        assert!(Providers::of(urls[..15].iter().map(String::as_str)).hints(&urls[0]));
        assert_eq!(site_of("tv.provider.co.uk"), "provider.co.uk");
        assert_eq!(site_of("a.b.provider.com.br"), "provider.com.br");
        assert_eq!(site_of("provider.de"), "provider.de");
        assert_eq!(site_of("10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn a_names_script_gives_its_languages() {
        assert!(languages_of_script("Рен ТВ (540p)").contains(&"ru"));
        assert!(languages_of_script("НТВ HD").contains(&"bg"));
        assert_eq!(languages_of_script("Ελληνική Τηλεόραση 1"), ["el"]);
        assert_eq!(
            languages_of_script("قناة الجزيرة"),
            ["ar", "fa", "ur", "ps", "ku"]
        );
        // Latin, a Latin name with a note in another script, no letters: none.
        assert!(languages_of_script("REN TV").is_empty());
        assert!(languages_of_script("TVBS News (TVBS新聞台)").is_empty());
        assert!(languages_of_script("24").is_empty());
    }

    #[test]
    fn a_stream_address_hints_its_country_domain() {
        let hint = |u: &str| country_of_url(u);
        assert_eq!(
            hint("https://videos.rtva.ad/live/rtva/playlist.m3u8").as_deref(),
            Some("ad")
        );
        assert_eq!(
            hint("http://cdn.example.com.br:8080/a.m3u8").as_deref(),
            Some("br")
        );
        assert_eq!(
            hint("https://user:pw@live.bbc.co.uk/x").as_deref(),
            Some("uk")
        );
        assert_eq!(hint("https://stream.example.gb./x").as_deref(), Some("uk"));
        assert_eq!(hint("rtmp://live.fm100.gr/hls").as_deref(), Some("gr"));
        // Generic and vanity domains, addresses and no host say nothing.
        assert_eq!(hint("https://cdn.example.com/live.m3u8"), None);
        assert_eq!(hint("https://live.example.tv/a.m3u8"), None);
        assert_eq!(hint("https://stream.radio.fm/a"), None);
        assert_eq!(hint("https://my.channel.me/a"), None);
        assert_eq!(hint("https://app.io/x"), None);
        assert_eq!(hint("http://10.0.0.1:8000/live"), None);
        assert_eq!(hint("http://[::1]:80/live"), None);
        assert_eq!(hint("localhost"), None);
        assert_eq!(hint(""), None);
    }
}
